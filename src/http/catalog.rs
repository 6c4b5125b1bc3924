//! The catalog (API.md, "Catalog"): program list and detail through the read cache, and the seat
//! map straight from the category actors. Live figures (`remaining`, seat statuses, `seq`) come
//! from the actors' published snapshots, which cost neither Postgres nor a mailbox round trip.

use super::AppState;
use super::error::ApiError;
use super::limits;
use crate::actors::CategorySnapshot;
use crate::store::catalog_read::{CategoryInfo, ProgramDetail, ProgramQuery};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde_json::{Value, json};
use std::sync::Arc;

/// Routes of this module, with the `catalog` rate limit.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/programs", get(list))
        .route("/api/v1/programs/{id}", get(detail))
        .route("/api/v1/programs/{id}/seats", get(seats))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limits::catalog,
        ))
}

/// Programs matching the filters, a page at a time.
#[utoipa::path(get, path = "/api/v1/programs", tag = "catalog", params(ProgramQuery),
    responses((status = 200, description = "`{items, total, page, per_page}`")))]
pub async fn list(
    State(st): State<AppState>,
    query: Result<Query<ProgramQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::validation("query", e.body_text()))?;
    let page = st.catalog.list(&query).await?;
    Ok(Json(json!(page.as_ref())))
}

/// The cached detail of program `id`, or 404.
async fn cached_detail(st: &AppState, id: i64) -> Result<Arc<ProgramDetail>, ApiError> {
    st.catalog
        .detail(id)
        .await?
        .ok_or_else(|| ApiError::not_found("program"))
}

/// The category actor's latest snapshot; `None` if the actor cannot be reached right now (the
/// cached figures are shown instead).
async fn live(st: &AppState, category_id: i64) -> Option<Arc<CategorySnapshot>> {
    match st.supervisor.snapshot(category_id).await {
        Ok(snapshot) => Some(snapshot),
        Err(e) => {
            tracing::warn!(category_id, error = %e, "no live figures for category");
            None
        }
    }
}

fn category_json(c: &CategoryInfo, snapshot: Option<&CategorySnapshot>) -> Value {
    let mut v = json!(c);
    if let Some(s) = snapshot {
        v["remaining"] = json!(s.counts.available);
    }
    v
}

/// One program with show times, tiers (live `remaining`) and limits.
#[utoipa::path(get, path = "/api/v1/programs/{id}", tag = "catalog",
    params(("id" = i64, Path, description = "Program id")),
    responses((status = 200, description = "The program"), (status = 404, description = "No such program")))]
pub async fn detail(
    State(st): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let d = cached_detail(&st, id).await?;
    let mut categories = Vec::with_capacity(d.ticket_categories.len());
    for c in &d.ticket_categories {
        categories.push(category_json(c, live(&st, c.id).await.as_deref()));
    }
    let mut body = json!(d.as_ref());
    body["ticket_categories"] = Value::Array(categories);
    Ok(Json(body))
}

/// The live seat map of every tier.
#[utoipa::path(get, path = "/api/v1/programs/{id}/seats", tag = "catalog",
    params(("id" = i64, Path, description = "Program id")),
    responses((status = 200, description = "`{seq, categories: [...]}`"), (status = 404, description = "No such program")))]
pub async fn seats(
    State(st): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let d = cached_detail(&st, id).await?;
    let mut seq = 0;
    let mut categories = Vec::with_capacity(d.ticket_categories.len());
    for c in &d.ticket_categories {
        let snapshot = live(&st, c.id).await.ok_or_else(|| {
            ApiError::unavailable(
                "SEAT_MAP_UNAVAILABLE",
                "seat map not available; retry shortly",
            )
        })?;
        seq += snapshot.seq;
        let seats: Vec<Value> = snapshot
            .seats
            .iter()
            .zip(&snapshot.statuses)
            .map(|(s, status)| json!({"id": s.id, "row": s.row, "col": s.col, "status": status}))
            .collect();
        categories.push(json!({
            "id": c.id, "name": c.name, "price_cents": c.price_cents, "seated": c.seated,
            "remaining": snapshot.counts.available, "seq": snapshot.seq, "seats": seats,
        }));
    }
    Ok(Json(
        json!({ "program_id": id, "seq": seq, "categories": categories }),
    ))
}
