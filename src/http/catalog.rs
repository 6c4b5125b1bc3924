//! The catalog (API.md, "Catalog"): program list and detail through the read cache, and the seat
//! map from the category actors. Live figures (`remaining`, seat statuses, `seq`) come from the
//! running actors' published snapshots, which cost neither Postgres nor a mailbox round trip;
//! an anonymous read never starts an actor.

use super::AppState;
use super::error::ApiError;
use super::extractor::ApiQuery;
use super::limits;
use super::seat_map::{self, SeatMap};
use crate::store::catalog_read::{CategoryInfo, ProgramDetail, ProgramPage, ProgramQuery};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
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

/// One program with its show times, the tiers of every show time (live `remaining`) and limits.
#[utoipa::path(get, path = "/api/v1/programs/{id}", tag = "catalog",
    params(("id" = i64, Path, description = "Program id")),
    responses((status = 200, description = "The program; `ticket_categories` are grouped by show time", body = ProgramDetail),
        (status = 404, description = "No such program")))]
pub async fn detail(
    State(st): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<ProgramDetail>, ApiError> {
    let cached = cached_detail(&st, id).await?;
    let mut detail = cached.as_ref().clone();
    // The seat map's figures: a running actor's published counts (no seat map serialized for
    // them), or Postgres's while none runs (the cached detail may predate sales); no actor is
    // started for an anonymous read.
    for (c, shown) in cached
        .ticket_categories
        .iter()
        .zip(&mut detail.ticket_categories)
    {
        let remaining = match st.supervisor.published(c.id) {
            Some(snapshot) => snapshot.counts.available,
            None => {
                st.seat_maps
                    .part(c, &st.supervisor, &st.catalog)
                    .await?
                    .remaining
            }
        };
        shown.remaining = i64::from(remaining);
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

/// The live seat map of every tier, or of one show time's tiers with `?show_time_id=`: each
/// category's part pre-serialized from its actor's published snapshot, or from Postgres while
/// no actor runs ([`seat_map`](super::seat_map)).
#[utoipa::path(get, path = "/api/v1/programs/{id}/seats", tag = "catalog",
    params(("id" = i64, Path, description = "Program id"), SeatMapQuery),
    responses((status = 200, description = "The live seat map", body = SeatMap),
        (status = 404, description = "No such program, or no such show time of it"),
        (status = 422, description = "`show_time_id` is not an integer")))]
pub async fn seats(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    ApiQuery(query): ApiQuery<SeatMapQuery>,
) -> Result<Response, ApiError> {
    let d = cached_detail(&st, id).await?;
    let shown = seat_map_categories(&d, query.show_time_id)?;
    let mut parts = Vec::with_capacity(shown.len());
    for c in shown {
        parts.push(st.seat_maps.part(c, &st.supervisor, &st.catalog).await?);
    }
    let body = seat_map::assemble(id, &parts);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
