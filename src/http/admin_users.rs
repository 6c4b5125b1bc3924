//! Operators change an account's roles and status (`PUT /api/v1/admin/users/{id}/access`).
//! Admins only. The change ends every session the account holds, on every node: a demoted admin
//! or a disabled account is refused on its next request, not when its token expires.

use super::error::ApiError;
use super::extractor::{AdminUser, ApiJson};
use super::{AppState, limits};
use crate::store::users::{self, Access, role};
use axum::extract::{Path, State};
use axum::routing::put;
use axum::{Json, Router, middleware};
use serde::{Deserialize, Serialize};

/// Routes of this module, with the `admin` rate limit.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/users/{id}/access", put(set_access))
        .route_layer(middleware::from_fn_with_state(state.clone(), limits::admin))
}

/// `PUT /api/v1/admin/users/{id}/access` body and answer.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct AccessChange {
    /// Every role the account keeps: `buyer`, `admin`.
    roles: Vec<String>,
    /// `active`, or `disabled` (cannot sign in).
    #[schema(pattern = "^(active|disabled)$")]
    status: String,
}

/// Sets an account's roles and status and ends its sessions everywhere (audit-logged).
#[utoipa::path(put, path = "/api/v1/admin/users/{id}/access", tag = "admin", request_body = AccessChange,
    params(("id" = i64, Path, description = "The account")),
    responses((status = 200, description = "The access now in force", body = AccessChange),
        (status = 404, description = "No such account"), (status = 422, description = "Unknown role or status")))]
pub async fn set_access(
    State(st): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<i64>,
    ApiJson(change): ApiJson<AccessChange>,
) -> Result<Json<AccessChange>, ApiError> {
    if let Some(unknown) = change
        .roles
        .iter()
        .find(|r| ![role::BUYER, role::ADMIN].contains(&r.as_str()))
    {
        return Err(ApiError::validation(
            "roles",
            format!("unknown role {unknown}"),
        ));
    }
    let active = match change.status.as_str() {
        "active" => true,
        "disabled" => false,
        _ => return Err(ApiError::validation("status", "is active or disabled")),
    };
    let access = Access {
        roles: &change.roles,
        active,
    };
    users::set_access(&st.stores.pg, admin.0.sub, id, &access).await?;
    let ttl = st.settings.accounts.token_ttl_secs as i64;
    st.sessions.sign_out_everywhere(id, ttl).await?;
    Ok(Json(change))
}
