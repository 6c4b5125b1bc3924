//! Admin catalog management (API.md, "Admin"): create a program with its show times, tiers and
//! seat layout; edit it. Every change writes an audit row in its own transaction and invalidates
//! the catalog cache on every node.

use super::AppState;
use super::error::ApiError;
use super::extractor::{AdminUser, ApiJson};
use super::limits;
use crate::store::catalog::{
    self, Layout, NewProgram, NewTicketCategory, PatchError, ProgramPatch,
};
use crate::store::catalog_read::{self, ProgramDetail};
use crate::store::{StoreError, audit};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{patch, post};
use axum::{Json, Router, middleware};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

/// Rows or seats per row above this are refused: a typo must not create a billion seats.
const MAX_GRID_SIDE: i32 = 1_000;
/// General-admission capacity above this is refused for the same reason.
const MAX_GA_CAPACITY: i32 = 1_000_000;

/// Routes of this module, with the `admin` rate limit.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/programs", post(create))
        .route("/api/v1/admin/programs/{id}", patch(edit))
        .route_layer(middleware::from_fn_with_state(state.clone(), limits::admin))
}

/// `POST /api/v1/admin/programs` body. Every tier in `ticket_categories` is created for every
/// show time in `show_times`: each show time sells its own seats.
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct CreateProgram {
    slug: Option<String>,
    title: String,
    area: String,
    category: String,
    parent_category: Option<String>,
    venue: String,
    #[serde(default)]
    description: String,
    #[serde(default = "yes")]
    choose_seats: bool,
    per_order_limit: i32,
    per_account_limit: i32,
    on_sale_at: DateTime<Utc>,
    show_times: Vec<DateTime<Utc>>,
    ticket_categories: Vec<NewTier>,
}

fn yes() -> bool {
    true
}

/// One price tier: `rows` × `seats_per_row`, or a general-admission `capacity`.
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct NewTier {
    name: String,
    price_cents: i64,
    rows: Option<i32>,
    seats_per_row: Option<i32>,
    capacity: Option<i32>,
}

fn tier(t: &NewTier) -> Result<NewTicketCategory, ApiError> {
    if t.name.trim().is_empty() {
        return Err(ApiError::validation(
            "ticket_categories.name",
            "must not be empty",
        ));
    }
    if t.price_cents < 0 {
        return Err(ApiError::validation(
            "ticket_categories.price_cents",
            "must not be negative",
        ));
    }
    let side = 1..=MAX_GRID_SIDE;
    let layout = match (t.rows, t.seats_per_row, t.capacity) {
        (Some(rows), Some(seats_per_row), None)
            if side.contains(&rows) && side.contains(&seats_per_row) =>
        {
            Layout::Seated {
                rows,
                seats_per_row,
            }
        }
        (None, None, Some(capacity)) if (1..=MAX_GA_CAPACITY).contains(&capacity) => {
            Layout::General { capacity }
        }
        _ => {
            return Err(ApiError::validation(
                "ticket_categories",
                format!(
                    "give rows and seats_per_row (1..={MAX_GRID_SIDE}) or a capacity (1..={MAX_GA_CAPACITY})"
                ),
            ));
        }
    };
    Ok(NewTicketCategory {
        name: t.name.trim().to_string(),
        price_cents: t.price_cents,
        layout,
    })
}

fn validate(body: &CreateProgram) -> Result<Vec<NewTicketCategory>, ApiError> {
    for (field, value) in [
        ("title", &body.title),
        ("area", &body.area),
        ("category", &body.category),
        ("venue", &body.venue),
    ] {
        if value.trim().is_empty() {
            return Err(ApiError::validation(field, "must not be empty"));
        }
    }
    if body.per_order_limit < 1 || body.per_account_limit < body.per_order_limit {
        return Err(ApiError::validation(
            "per_account_limit",
            "per_order_limit must be at least 1 and per_account_limit at least per_order_limit",
        ));
    }
    validate_show_times(&body.show_times)?;
    if body.ticket_categories.is_empty() {
        return Err(ApiError::validation(
            "ticket_categories",
            "give at least one ticket category",
        ));
    }
    let tiers = body
        .ticket_categories
        .iter()
        .map(tier)
        .collect::<Result<Vec<_>, _>>()?;
    let mut names: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(ApiError::validation(
            "ticket_categories.name",
            "names must differ",
        ));
    }
    Ok(tiers)
}

/// At least one show time and no two alike: every show time gets its own copy of every tier,
/// and a repeated one would otherwise reach the database's unique constraint and answer 503
/// instead of naming the field.
fn validate_show_times(show_times: &[DateTime<Utc>]) -> Result<(), ApiError> {
    if show_times.is_empty() {
        return Err(ApiError::validation(
            "show_times",
            "give at least one show time",
        ));
    }
    let mut sorted = show_times.to_vec();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(ApiError::validation("show_times", "show times must differ"));
    }
    Ok(())
}

fn slug_of(body: &CreateProgram) -> String {
    body.slug.clone().unwrap_or_else(|| {
        let base: String = body
            .title
            .to_lowercase()
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { '-' })
            .collect();
        let short = &uuid::Uuid::new_v4().simple().to_string()[..8];
        format!("{}-{short}", base.trim_matches('-'))
    })
}

/// Creates a program with show times, tiers and seat layout; every tier is created once per
/// show time, so the answer lists (show times × tiers) ticket categories.
#[utoipa::path(post, path = "/api/v1/admin/programs", tag = "admin", operation_id = "create_program",
    request_body = CreateProgram,
    responses((status = 201, description = "The program", body = ProgramDetail), (status = 403, description = "Not an admin"),
        (status = 422, description = "A field is invalid")))]
pub async fn create(
    State(st): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiJson(body): ApiJson<CreateProgram>,
) -> Result<(StatusCode, Json<ProgramDetail>), ApiError> {
    let categories = validate(&body)?;
    let pg = &st.stores.pg;
    let parent = match &body.parent_category {
        Some(name) => Some(catalog::ensure_program_category(pg, None, name.trim()).await?),
        None => None,
    };
    let program = NewProgram {
        slug: slug_of(&body),
        title: body.title.trim().to_string(),
        area_id: catalog::ensure_area(pg, body.area.trim()).await?,
        category_id: catalog::ensure_program_category(pg, parent, body.category.trim()).await?,
        venue: body.venue.trim().to_string(),
        description: body.description.clone(),
        choose_seats: body.choose_seats,
        per_order_limit: body.per_order_limit,
        per_account_limit: body.per_account_limit,
        on_sale_at: body.on_sale_at,
        show_times: body.show_times.clone(),
        categories,
    };
    let mut client = pg.get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await.map_err(StoreError::from)?;
    let Some(id) = catalog::create_program_in(&tx, &program).await? else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "DUPLICATE",
            "a program with this slug exists",
        )
        .with_details(json!({ "field": "slug" })));
    };
    let detail = commit_audited(&st, tx, admin.id(), "program.create", id, json!(body)).await?;
    Ok((StatusCode::CREATED, Json(detail)))
}

/// Records the admin's change in the audit log inside its transaction, commits, drops every
/// node's cached copy of the program and answers the program as it now stands.
async fn commit_audited(
    st: &AppState,
    tx: deadpool_postgres::Transaction<'_>,
    admin_id: i64,
    action: &str,
    id: i64,
    change: Value,
) -> Result<ProgramDetail, ApiError> {
    audit::record(&tx, admin_id, action, &format!("program:{id}"), &change).await?;
    // Durable backstop of the Redis broadcast below: every node's catalog consumer drops its
    // copy when this event arrives, also a node that missed the fire-and-forget broadcast.
    crate::store::outbox::emit_catalog_changed(&tx, id, action).await?;
    tx.commit().await.map_err(StoreError::from)?;
    st.catalog.invalidate(id).await?;
    // Only a concurrent delete could take it away between the commit and this read.
    catalog_read::program_detail(&st.stores.pg, id)
        .await?
        .ok_or_else(|| ApiError::not_found("program"))
}

/// Edits a program; every node drops its cached copy.
#[utoipa::path(patch, path = "/api/v1/admin/programs/{id}", tag = "admin", request_body = ProgramPatch,
    params(("id" = i64, Path, description = "Program id")),
    responses((status = 200, description = "The program", body = ProgramDetail), (status = 403, description = "Not an admin"),
        (status = 404, description = "No such program")))]
pub async fn edit(
    State(st): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<i64>,
    ApiJson(patch): ApiJson<ProgramPatch>,
) -> Result<Json<ProgramDetail>, ApiError> {
    if patch.title.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(ApiError::validation("title", "must not be empty"));
    }
    let pg = &st.stores.pg;
    let mut client = pg.get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await.map_err(StoreError::from)?;
    catalog::update_program_in(&tx, id, &patch)
        .await
        .map_err(|e| match e {
            PatchError::NotFound => ApiError::not_found("program"),
            PatchError::Limits => ApiError::validation("per_account_limit", e),
            PatchError::Store(e) => e.into(),
        })?;
    let detail = commit_audited(&st, tx, admin.id(), "program.update", id, json!(patch)).await?;
    Ok(Json(detail))
}
