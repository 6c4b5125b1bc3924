//! MQ message records for operators (API.md, "Admin"): every order event with its send,
//! consume and reconcile status; mark one handled, or publish it again. Admins only.

use super::error::ApiError;
use super::extractor::{AdminUser, ApiQuery};
use super::limits;
use super::{AppState, Listing};
use crate::store::outbox::{self, Action, MqMessage};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Routes of this module, with the `admin` rate limit.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/programs/{id}/mq-messages", get(list))
        .route(
            "/api/v1/admin/mq-messages/{event_id}/handled",
            post(handled),
        )
        .route(
            "/api/v1/admin/mq-messages/{event_id}/republish",
            post(republish),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), limits::admin))
}

/// Filters of the message list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MqQuery {
    /// A send status (`pending`, `sent`, `failed`) or reconcile status (`unreconciled`, `ok`,
    /// `problem`, `handled`).
    status: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
}

/// `GET /api/v1/admin/programs/{id}/mq-messages`.
#[utoipa::path(get, path = "/api/v1/admin/programs/{id}/mq-messages", tag = "admin", operation_id = "list_mq_messages",
    params(("id" = i64, Path, description = "Program id"), MqQuery),
    responses((status = 200, description = "The program's messages, newest first", body = Listing<MqMessage>), (status = 403, description = "Not an admin")))]
pub async fn list(
    State(st): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<i64>,
    ApiQuery(q): ApiQuery<MqQuery>,
) -> Result<Json<Listing<MqMessage>>, ApiError> {
    let (page, per_page) = super::paging(q.page, q.per_page);
    let (items, total) =
        outbox::page_for_program(&st.stores.pg, id, q.status.as_deref(), page, per_page).await?;
    Ok(Json(Listing {
        items,
        total,
        page,
        per_page,
    }))
}

/// The message an operator's action applied to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageActedOn {
    /// The event's id.
    event_id: Uuid,
}

async fn act(
    st: &AppState,
    admin: &AdminUser,
    id: &str,
    action: Action,
) -> Result<Json<MessageActedOn>, ApiError> {
    let event_id: Uuid = id.parse().map_err(|_| ApiError::not_found("message"))?;
    if !outbox::act(&st.stores.pg, admin.0.id(), event_id, action).await? {
        return Err(ApiError::not_found("message"));
    }
    Ok(Json(MessageActedOn { event_id }))
}

/// `POST /api/v1/admin/mq-messages/{event_id}/handled` (audit-logged).
#[utoipa::path(post, path = "/api/v1/admin/mq-messages/{event_id}/handled", tag = "admin",
    params(("event_id" = String, Path, description = "Event id")),
    responses((status = 200, description = "Marked handled", body = MessageActedOn), (status = 404, description = "No such message")))]
pub async fn handled(
    State(st): State<AppState>,
    admin: AdminUser,
    Path(event_id): Path<String>,
) -> Result<Json<MessageActedOn>, ApiError> {
    act(&st, &admin, &event_id, Action::Handled).await
}

/// `POST /api/v1/admin/mq-messages/{event_id}/republish` (audit-logged).
#[utoipa::path(post, path = "/api/v1/admin/mq-messages/{event_id}/republish", tag = "admin",
    params(("event_id" = String, Path, description = "Event id")),
    responses((status = 200, description = "Queued for the relay again", body = MessageActedOn), (status = 404, description = "No such message")))]
pub async fn republish(
    State(st): State<AppState>,
    admin: AdminUser,
    Path(event_id): Path<String>,
) -> Result<Json<MessageActedOn>, ApiError> {
    act(&st, &admin, &event_id, Action::Republish).await
}
