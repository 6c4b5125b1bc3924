//! The caller's ticket buyers (real-name holders). Names and id numbers are masked in every
//! response; another user's ticket buyer is 404, as if it did not exist.

use super::AppState;
use super::error::ApiError;
use super::extractor::{ApiJson, AuthUser};
use super::limits;
use crate::domain::identity::{self, mask_id_number, mask_name};
use crate::store::ticket_buyers::{self, AddError, TicketBuyer};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router, middleware};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Routes of this module, with the `account` rate limit.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/me/ticket-buyers", get(list).post(create))
        .route("/api/v1/me/ticket-buyers/{id}", delete(remove))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limits::account,
        ))
}

/// `POST /api/v1/me/ticket-buyers` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewTicketBuyer {
    /// Name on the document, 1 to 64 characters once trimmed.
    #[schema(min_length = 1)]
    name: String,
    /// Kind of document: one of `identity::ID_TYPES`.
    #[schema(pattern = "^(id_card|passport|hk_macau_permit|taiwan_permit)$")]
    id_type: String,
    /// Its number, checked for its kind.
    #[schema(min_length = 1)]
    id_number: String,
}

/// A ticket buyer as every answer shows it: name and id number masked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MaskedTicketBuyer {
    /// Id (for orders and removal).
    id: i64,
    /// Name, masked.
    name_masked: String,
    /// `id_card` or `passport`.
    id_type: String,
    /// Id number, masked.
    id_number_masked: String,
    /// Added at.
    created_at: DateTime<Utc>,
}

/// The caller's ticket buyers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TicketBuyerList {
    /// Oldest first.
    items: Vec<MaskedTicketBuyer>,
}

fn masked(b: &TicketBuyer) -> MaskedTicketBuyer {
    MaskedTicketBuyer {
        id: b.id,
        name_masked: mask_name(&b.name),
        id_type: b.id_type.clone(),
        id_number_masked: mask_id_number(&b.id_number),
        created_at: b.created_at,
    }
}

/// Adds a real-name ticket buyer.
#[utoipa::path(post, path = "/api/v1/me/ticket-buyers", tag = "accounts", request_body = NewTicketBuyer,
    responses((status = 201, description = "The ticket buyer, masked", body = MaskedTicketBuyer), (status = 409, description = "Same person twice"),
        (status = 422, description = "Invalid document or limit reached")))]
pub async fn create(
    State(st): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<NewTicketBuyer>,
) -> Result<(StatusCode, Json<MaskedTicketBuyer>), ApiError> {
    let name = body.name.trim();
    if !(1..=64).contains(&name.chars().count()) {
        return Err(ApiError::validation("name", "must be 1 to 64 characters"));
    }
    let id_number = identity::normalize_id_number(&body.id_type, &body.id_number)?;
    let max = st.settings.accounts.max_ticket_buyers;
    let added = ticket_buyers::add(
        &st.stores.pg,
        &st.cipher,
        user.id(),
        name,
        &body.id_type,
        &id_number,
        max,
    )
    .await
    .map_err(|e| match e {
        AddError::Limit(max) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "LIMIT_EXCEEDED",
            format!("an account keeps at most {max} ticket buyers"),
        )
        .with_details(json!({ "max": max })),
        AddError::Duplicate => ApiError::new(
            StatusCode::CONFLICT,
            "DUPLICATE",
            "this person is already one of your ticket buyers",
        ),
        AddError::Store(e) => e.into(),
    })?;
    Ok((StatusCode::CREATED, Json(masked(&added))))
}

/// The caller's ticket buyers, masked.
#[utoipa::path(get, path = "/api/v1/me/ticket-buyers", tag = "accounts", operation_id = "list_ticket_buyers",
    responses((status = 200, description = "The caller's ticket buyers, masked", body = TicketBuyerList)))]
pub async fn list(
    State(st): State<AppState>,
    user: AuthUser,
) -> Result<Json<TicketBuyerList>, ApiError> {
    let buyers = ticket_buyers::list(&st.stores.pg, &st.cipher, user.id()).await?;
    Ok(Json(TicketBuyerList {
        items: buyers.iter().map(masked).collect(),
    }))
}

/// Removes one of the caller's ticket buyers.
#[utoipa::path(delete, path = "/api/v1/me/ticket-buyers/{id}", tag = "accounts",
    params(("id" = i64, Path, description = "Ticket buyer id")),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such ticket buyer of the caller")))]
pub async fn remove(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if ticket_buyers::delete(&st.stores.pg, user.id(), id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("ticket buyer"))
    }
}
