//! Operations endpoints: liveness, readiness, Prometheus metrics.

use super::AppState;
use super::error::ApiError;
use crate::store::health::Store;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use serde_json::json;

/// Routes of this module.
pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Liveness answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
}

/// Readiness answer: each store and whether it answered.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    status: &'static str,
    postgres: &'static str,
    redis: &'static str,
    pulsar: &'static str,
}

/// The process is alive; says nothing about its stores.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Process alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// 200 only when PostgreSQL, Redis and Pulsar all answered the background probe's last round;
/// 503 naming those that did not. Answers at once from the probe's flags
/// ([`crate::store::health`]): a load balancer asking every second must not wait on a store
/// that is down, nor add to the load of one that is struggling.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "All stores answer", body = Readiness),
              (status = 503, description = "At least one store is down; details name it")))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let health = &state.stores.health;
    let word = |store: Store| if health.is_up(store) { "up" } else { "down" };
    let stores = [Store::Postgres, Store::Redis, Store::Pulsar];
    let down: Vec<&str> = stores
        .into_iter()
        .filter(|s| !health.is_up(*s))
        .map(Store::name)
        .collect();
    let report = Readiness {
        status: if down.is_empty() {
            "ready"
        } else {
            "not_ready"
        },
        postgres: word(Store::Postgres),
        redis: word(Store::Redis),
        pulsar: word(Store::Pulsar),
    };
    if down.is_empty() {
        return Ok(Json(report));
    }
    Err(ApiError::unavailable("NOT_READY", format!("down: {}", down.join(", "))).with_details(json!({
        "postgres": report.postgres, "redis": report.redis, "pulsar": report.pulsar, "down": down,
    })))
}

/// Prometheus text exposition of every metric this process records.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
