//! Inventory view and reconciliation findings for operators (API.md, "Admin"). Admins only.
//!
//! - `GET /api/v1/admin/programs/{id}/inventory[?seats=true]`: per category the actor's, Postgres's
//!   and the Redis mirror's counts, `consistent`, and the seats on which they differ (every seat
//!   with `seats=true`).
//! - `POST /api/v1/admin/reconciliations/run[?program_id=]`: one pass now; answers its figures.
//! - `GET /api/v1/admin/reconciliations?status=&page=&per_page=`: findings, newest first.
//! - `POST /api/v1/admin/reconciliations/{id}/handled` `{note}`: an operator resolves a problem
//!   (audit-logged).

use super::error::ApiError;
use super::extractor::{AdminUser, ApiJson, ApiQuery};
use super::limits;
use super::{AppState, Listing};
use crate::reconcile::findings::{self, Finding, PassReport};
use crate::reconcile::inventory::CategoryView;
use crate::store::StoreError;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::{Deserialize, Serialize};

/// Routes of this module, with the `admin` rate limit.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/programs/{id}/inventory", get(inventory))
        .route("/api/v1/admin/reconciliations", get(list))
        .route("/api/v1/admin/reconciliations/run", post(run))
        .route("/api/v1/admin/reconciliations/{id}/handled", post(handled))
        .route_layer(middleware::from_fn_with_state(state.clone(), limits::admin))
}

/// `?seats=true` lists every seat, not only the differing ones.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InventoryQuery {
    seats: Option<bool>,
}

/// A program's inventory in the actor, Postgres and the Redis mirror.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProgramInventory {
    /// The program.
    program_id: i64,
    /// Every category is consistent.
    consistent: bool,
    /// One entry per ticket category.
    categories: Vec<CategoryView>,
}

/// `GET /api/v1/admin/programs/{id}/inventory`.
#[utoipa::path(get, path = "/api/v1/admin/programs/{id}/inventory", tag = "admin", operation_id = "program_inventory",
    params(("id" = i64, Path, description = "Program id"), InventoryQuery),
    responses((status = 200, description = "Each category in every store", body = ProgramInventory),
        (status = 403, description = "Not an admin"), (status = 404, description = "No such program")))]
pub async fn inventory(
    State(st): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<i64>,
    ApiQuery(q): ApiQuery<InventoryQuery>,
) -> Result<Json<ProgramInventory>, ApiError> {
    let categories = st
        .reconciler
        .program_view(id, q.seats.unwrap_or(false))
        .await?;
    if categories.is_empty() {
        return Err(StoreError::NotFound(format!("program {id}")).into());
    }
    let consistent = categories.iter().all(|c| c.consistent);
    Ok(Json(ProgramInventory {
        program_id: id,
        consistent,
        categories,
    }))
}

/// Filters of the findings list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindingsQuery {
    /// `unreconciled`, `reconciled_with_problem`, `reconciled_ok` or `problem_handled`.
    status: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
}

/// `GET /api/v1/admin/reconciliations`.
#[utoipa::path(get, path = "/api/v1/admin/reconciliations", tag = "admin", operation_id = "list_reconciliations",
    params(FindingsQuery),
    responses((status = 200, description = "Findings, newest first", body = Listing<Finding>), (status = 422, description = "Unknown status"),
        (status = 403, description = "Not an admin")))]
pub async fn list(
    State(st): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<FindingsQuery>,
) -> Result<Json<Listing<Finding>>, ApiError> {
    if let Some(status) = q.status.as_deref()
        && !findings::STATUSES.contains(&status)
    {
        return Err(ApiError::validation(
            "status",
            "unknown reconciliation status",
        ));
    }
    let (page, per_page) = super::paging(q.page, q.per_page);
    let (items, total) = findings::page(&st.stores.pg, q.status.as_deref(), page, per_page).await?;
    Ok(Json(Listing {
        items,
        total,
        page,
        per_page,
    }))
}

/// Which program's categories to include besides the hot ones.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    program_id: Option<i64>,
}

/// `POST /api/v1/admin/reconciliations/run`.
#[utoipa::path(post, path = "/api/v1/admin/reconciliations/run", tag = "admin", operation_id = "run_reconciliation",
    params(RunQuery),
    responses((status = 200, description = "The pass's figures", body = PassReport),
        (status = 403, description = "Not an admin")))]
pub async fn run(
    State(st): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<RunQuery>,
) -> Result<Json<PassReport>, ApiError> {
    let report = st.reconciler.pass("on_demand", q.program_id).await?;
    Ok(Json(report))
}

/// An operator's resolution.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Handled {
    /// What was done, 1 to 2000 characters once trimmed.
    #[schema(min_length = 1)]
    note: String,
}

/// `POST /api/v1/admin/reconciliations/{id}/handled`.
#[utoipa::path(post, path = "/api/v1/admin/reconciliations/{id}/handled", tag = "admin", operation_id = "handle_reconciliation",
    params(("id" = i64, Path, description = "Finding id")), request_body = Handled,
    responses((status = 200, description = "The finding, `problem_handled`", body = Finding), (status = 403, description = "Not an admin"),
        (status = 404, description = "No open finding with this id")))]
pub async fn handled(
    State(st): State<AppState>,
    admin: AdminUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<Handled>,
) -> Result<Json<Finding>, ApiError> {
    let note = body.note.trim();
    if note.is_empty() || note.len() > 2000 {
        return Err(ApiError::validation("note", "1 to 2000 characters"));
    }
    let finding = findings::mark_handled(&st.stores.pg, id, admin.0.0.sub, note).await?;
    Ok(Json(finding))
}
