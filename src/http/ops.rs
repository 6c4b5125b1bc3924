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

/// Routes of this module. `/readyz` and `/metrics` take from the `ops` bucket: they are public
/// and each answer costs a little (a metrics render is the whole registry), so one client may
/// not flood them. `/healthz` is free: it costs nothing, and liveness probes must never be
/// refused.
pub fn router(state: &AppState) -> axum::Router<AppState> {
    let limited = axum::Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::limits::ops,
        ));
    limited.route("/healthz", get(healthz))
}

/// Liveness answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
}

/// Readiness answer: `ready`, or `degraded` (Pulsar away, orders still taken), and each store
/// and whether it answered the probe.
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

/// 200 while PostgreSQL and Redis answered the background probe's last round — everything a
/// buyer does needs them — with `status: "degraded"` when only Pulsar is away (orders still
/// commit; their events wait in the outbox and are published when it returns, so taking the
/// node out of rotation would help nobody); 503 naming the stores that are down otherwise.
/// Answers at once from the probe's flags ([`crate::store::health`]): a load balancer asking
/// every second must not wait on a store that is down, nor add to the load of one that struggles.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Postgres and Redis answer; `degraded` if Pulsar does not", body = Readiness),
              (status = 503, description = "Postgres or Redis is down; details name every store down")))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let health = &state.stores.health;
    let word = |store: Store| if health.is_up(store) { "up" } else { "down" };
    let stores = [Store::Postgres, Store::Redis, Store::Pulsar];
    let down: Vec<&str> = stores
        .into_iter()
        .filter(|s| !health.is_up(*s))
        .map(Store::name)
        .collect();
    let serving = health.is_up(Store::Postgres) && health.is_up(Store::Redis);
    let report = Readiness {
        status: match (serving, down.is_empty()) {
            (true, true) => "ready",
            (true, false) => "degraded",
            (false, _) => "not_ready",
        },
        postgres: word(Store::Postgres),
        redis: word(Store::Redis),
        pulsar: word(Store::Pulsar),
    };
    if serving {
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
