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
#[utoipa::path(get, path = "/api/v1/programs", tag = "catalog", operation_id = "list_programs", params(ProgramQuery),
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

/// One program with its show times, the tiers of every show time (live `remaining`) and limits.
#[utoipa::path(get, path = "/api/v1/programs/{id}", tag = "catalog",
    params(("id" = i64, Path, description = "Program id")),
    responses((status = 200, description = "The program; `ticket_categories` are grouped by show time", body = ProgramDetail),
        (status = 404, description = "No such program")))]
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

/// Query of `GET /api/v1/programs/{id}/seats`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeatMapQuery {
    /// Only this show time's categories (each show time sells its own seats); all show times
    /// when absent. A show time of another program answers 404.
    pub show_time_id: Option<i64>,
}

/// The categories the seat map shows: those of one show time of the program, or all of them.
fn seat_map_categories(
    d: &ProgramDetail,
    show_time_id: Option<i64>,
) -> Result<Vec<&CategoryInfo>, ApiError> {
    match show_time_id {
        None => Ok(d.ticket_categories.iter().collect()),
        Some(st) => match d.show_time(st) {
            Some(_) => Ok(d.categories_of(st).collect()),
            None => Err(ApiError::not_found("show time")),
        },
    }
}

/// One category of the seat map from its actor's snapshot.
fn seat_map_entry(c: &CategoryInfo, snapshot: &CategorySnapshot) -> Value {
    let seats: Vec<Value> = snapshot
        .seats
        .iter()
        .zip(&snapshot.statuses)
        .map(|(s, status)| json!({"id": s.id, "row": s.row, "col": s.col, "status": status}))
        .collect();
    json!({
        "id": c.id, "show_time_id": c.show_time_id, "name": c.name,
        "price_cents": c.price_cents, "seated": c.seated,
        "remaining": snapshot.counts.available, "seq": snapshot.seq, "seats": seats,
    })
}

/// The live seat map of every tier, or of one show time's tiers with `?show_time_id=`.
#[utoipa::path(get, path = "/api/v1/programs/{id}/seats", tag = "catalog",
    params(("id" = i64, Path, description = "Program id"), SeatMapQuery),
    responses((status = 200, description = "`{seq, categories: [{id, show_time_id, name, price_cents, remaining, seq, seats}]}`"),
        (status = 404, description = "No such program, or no such show time of it"),
        (status = 422, description = "`show_time_id` is not an integer")))]
pub async fn seats(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    query: Result<Query<SeatMapQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::validation("query", e.body_text()))?;
    let d = cached_detail(&st, id).await?;
    let shown = seat_map_categories(&d, query.show_time_id)?;
    let mut seq = 0;
    let mut categories = Vec::with_capacity(shown.len());
    for c in shown {
        let snapshot = live(&st, c.id).await.ok_or_else(|| {
            ApiError::unavailable(
                "SEAT_MAP_UNAVAILABLE",
                "seat map not available; retry shortly",
            )
        })?;
        // The highest category seq: it never goes backwards (each category's starts every load
        // above all earlier ones), and unlike a sum it stays a safe JSON integer.
        seq = seq.max(snapshot.seq);
        categories.push(seat_map_entry(c, &snapshot));
    }
    Ok(Json(
        json!({ "program_id": id, "seq": seq, "categories": categories }),
    ))
}
