//! Operations endpoints: liveness, readiness, Prometheus metrics.

use super::AppState;
use super::error::ApiError;
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

/// 200 only when PostgreSQL, Redis and Pulsar all answer; 503 naming those that did not.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "All stores answer", body = Readiness),
              (status = 503, description = "At least one store is down; details name it")))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let stores = &state.stores;
    let pg_timeout = state.settings.database.connect_timeout();
    let (pg, redis, pulsar) = tokio::join!(
        crate::store::postgres::ping(&stores.pg, pg_timeout),
        stores.redis.ping(),
        stores.pulsar.ping(),
    );
    let word = |ok: bool| if ok { "up" } else { "down" };
    let report = Readiness {
        status: if pg.is_ok() && redis.is_ok() && pulsar.is_ok() {
            "ready"
        } else {
            "not_ready"
        },
        postgres: word(pg.is_ok()),
        redis: word(redis.is_ok()),
        pulsar: word(pulsar.is_ok()),
    };
    if report.status == "ready" {
        return Ok(Json(report));
    }
    let down: Vec<&str> = [
        ("postgres", &pg.err()),
        ("redis", &redis.err()),
        ("pulsar", &pulsar.err()),
    ]
    .into_iter()
    .filter_map(|(name, err)| {
        err.as_ref().map(|e| {
            tracing::warn!(store = name, error = %e, "readiness check failed");
            name
        })
    })
    .collect();
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
