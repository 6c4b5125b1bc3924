//! Extractors that turn requests into typed, checked inputs — or into the API's error format:
//! a JSON body ([`ApiJson`]), the signed-in user ([`AuthUser`]) and an admin ([`AdminUser`]).
//! Authorization lives here, so handlers never see an unauthenticated or unauthorized caller.

use super::AppState;
use super::error::ApiError;
use crate::auth::Claims;
use crate::store::users::role;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A JSON body; malformed JSON is a 400, a wrong or missing field a 422 naming the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::JsonDataError(e)) => Err(invalid_body(e.body_text())),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                e.body_text(),
            )),
        }
    }
}

/// A 422 for a body that is JSON but not the expected shape, naming the field serde named
/// (serde quotes it in backticks: "missing field `password`").
pub fn invalid_body(text: String) -> ApiError {
    let field = text.split('`').nth(1).unwrap_or("body").to_string();
    ApiError::validation(&field, text)
}

/// The `Bearer` token of a request, if any.
pub fn bearer(parts: &axum::http::HeaderMap) -> Option<&str> {
    parts
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// A signed-in caller: a valid, unexpired, unrevoked token.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Claims);

impl AuthUser {
    /// The caller's user id.
    pub fn id(&self) -> i64 {
        self.0.sub
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthenticated("sign in first (Authorization: Bearer …)"))?;
        AuthUser::from_token(state, token).await
    }
}

impl AuthUser {
    /// The holder of `token` if it is valid, unexpired and not signed out; 401 otherwise.
    /// Also used where the token does not come as a header (WebSockets).
    pub async fn from_token(state: &AppState, token: &str) -> Result<Self, ApiError> {
        let claims = state
            .tokens
            .verify(token)
            .map_err(|_| ApiError::unauthenticated("the token is invalid or expired"))?;
        if state.sessions.is_revoked(&claims.jti).await? {
            return Err(ApiError::unauthenticated("the token was signed out"));
        }
        Ok(AuthUser(claims))
    }
}

/// A signed-in caller with the `admin` role; others get 403.
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if !user.0.has_role(role::ADMIN) {
            return Err(ApiError::forbidden());
        }
        Ok(AdminUser(user))
    }
}
