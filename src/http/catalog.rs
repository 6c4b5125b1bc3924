//! The catalog (API.md, "Catalog"): program list and detail through the read cache, and the seat
//! map straight from the category actors. Live figures (`remaining`, seat statuses, `seq`) come
//! from the actors' published snapshots, which cost neither Postgres nor a mailbox round trip.

use super::AppState;
use super::error::ApiError;
use super::extractor::ApiQuery;
use super::limits;
use crate::actors::CategorySnapshot;
use crate::domain::inventory::SeatStatus;
use crate::store::catalog_read::{CategoryInfo, ProgramDetail, ProgramPage, ProgramQuery};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde::Serialize;
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
    responses((status = 200, description = "A page of programs", body = ProgramPage)))]
pub async fn list(
    State(st): State<AppState>,
    ApiQuery(query): ApiQuery<ProgramQuery>,
) -> Result<Json<ProgramPage>, ApiError> {
    let page = st.catalog.list(&query).await?;
    Ok(Json(page.as_ref().clone()))
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

/// One program with its show times, the tiers of every show time (live `remaining`) and limits.
#[utoipa::path(get, path = "/api/v1/programs/{id}", tag = "catalog",
    params(("id" = i64, Path, description = "Program id")),
    responses((status = 200, description = "The program; `ticket_categories` are grouped by show time", body = ProgramDetail),
        (status = 404, description = "No such program")))]
pub async fn detail(
    State(st): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<ProgramDetail>, ApiError> {
    let mut detail = cached_detail(&st, id).await?.as_ref().clone();
    for c in &mut detail.ticket_categories {
        if let Some(snapshot) = live(&st, c.id).await {
            c.remaining = i64::from(snapshot.counts.available);
        }
    }
    Ok(Json(detail))
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

/// The live seat map of a program (or of one of its show times).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeatMap {
    /// The program.
    program_id: i64,
    /// The highest `seq` of its categories: compare with WebSocket deltas.
    seq: u64,
    /// One entry per ticket category shown.
    categories: Vec<SeatMapCategory>,
}

/// One category of the seat map, from its actor's snapshot.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeatMapCategory {
    /// Ticket category id.
    id: i64,
    /// The show time it sells.
    show_time_id: i64,
    /// Tier name.
    name: String,
    /// Price in minor units.
    price_cents: i64,
    /// Seated (seats listed) or general admission (no seats).
    seated: bool,
    /// Tickets available now.
    remaining: u32,
    /// Sequence number of the category's last change.
    seq: u64,
    /// Every seat with its status, in grid order.
    seats: Vec<SeatOnMap>,
}

/// One seat of the map.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeatOnMap {
    /// Seat id.
    id: i64,
    /// Row, 1 nearest the stage.
    row: i32,
    /// Column, from 1.
    col: i32,
    /// `available`, `held` or `sold`.
    status: SeatStatus,
}

/// One category of the seat map from its actor's snapshot.
fn seat_map_entry(c: &CategoryInfo, snapshot: &CategorySnapshot) -> SeatMapCategory {
    let seats = snapshot
        .seats
        .iter()
        .zip(&snapshot.statuses)
        .map(|(s, status)| SeatOnMap {
            id: s.id,
            row: s.row,
            col: s.col,
            status: *status,
        })
        .collect();
    SeatMapCategory {
        id: c.id,
        show_time_id: c.show_time_id,
        name: c.name.clone(),
        price_cents: c.price_cents,
        seated: c.seated,
        remaining: snapshot.counts.available,
        seq: snapshot.seq,
        seats,
    }
}

/// The live seat map of every tier, or of one show time's tiers with `?show_time_id=`.
#[utoipa::path(get, path = "/api/v1/programs/{id}/seats", tag = "catalog",
    params(("id" = i64, Path, description = "Program id"), SeatMapQuery),
    responses((status = 200, description = "The live seat map", body = SeatMap),
        (status = 404, description = "No such program, or no such show time of it"),
        (status = 422, description = "`show_time_id` is not an integer")))]
pub async fn seats(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    ApiQuery(query): ApiQuery<SeatMapQuery>,
) -> Result<Json<SeatMap>, ApiError> {
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
    Ok(Json(SeatMap {
        program_id: id,
        seq,
        categories,
    }))
}
