//! Extractors that turn requests into typed, checked inputs — or into the API's error format:
//! a JSON body ([`ApiJson`]), query parameters ([`ApiQuery`]), the signed-in user
//! ([`AuthUser`]) and an admin ([`AdminUser`]).
//! Authorization lives here, so handlers never see an unauthenticated or unauthorized caller.

use super::AppState;
use super::error::ApiError;
use crate::auth::Claims;
use crate::store::users::role;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A JSON body; malformed JSON is a 400, a wrong or missing field a 422 naming the field (the
/// path serde reports, e.g. `seats[0].price_cents`), and a string holding a NUL character a 422
/// naming its field too — Postgres refuses NUL in text, and a client's bad input must never
/// look like a store outage.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), status_code_name(e.status()), e.body_text()))?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

/// Parses `bytes` as `T`: 400 when it is not JSON, 422 naming the field otherwise.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Some(field) = field_with_nul(bytes) {
        return Err(ApiError::validation(
            &field,
            "must not contain NUL characters",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        (path, e.into_inner())
    });
    // Trailing characters after the value are not JSON either.
    let parsed = parsed.and_then(|v| de.end().map(|_| v).map_err(|e| (".".to_string(), e)));
    parsed.map_err(|(path, inner)| match inner.classify() {
        serde_json::error::Category::Data => {
            let field = if path == "." {
                missing_field(&inner, "body")
            } else {
                path
            };
            ApiError::validation(&field, inner)
        }
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            format!("not valid JSON: {inner}"),
        ),
    })
}

/// Query parameters; one that does not parse (`per_page=x`, a number too large for its type)
/// is a 422 naming that parameter, the way a body field is named — not a bare 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// Parses a query string as `T`: 422 naming the parameter serde stopped at.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let pairs = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(pairs).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." {
            missing_field(&inner, "query")
        } else {
            path
        };
        ApiError::validation(&field, inner)
    })
}

/// serde reports a missing field at the path of its parent ("." at the top) and names it in
/// backticks: "missing field `password`".
/// `whole` names the input when the message names no field.
fn missing_field(e: &impl std::fmt::Display, whole: &str) -> String {
    e.to_string().split('`').nth(1).unwrap_or(whole).to_string()
}

/// The path of the first string (or key) in the body that holds a NUL character, if any. JSON
/// can only carry NUL escaped, so bodies without `\u0000` are not parsed twice.
fn field_with_nul(bytes: &[u8]) -> Option<String> {
    let escaped = bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000"));
    if !escaped {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    nul_path(&value, String::new())
}

fn nul_path(value: &serde_json::Value, at: String) -> Option<String> {
    let here = || {
        if at.is_empty() {
            "body".to_string()
        } else {
            at.clone()
        }
    };
    match value {
        serde_json::Value::String(s) => s.contains('\0').then(here),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, format!("{}[{i}]", here()))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if k.contains('\0') {
                Some(path)
            } else {
                nul_path(v, path)
            }
        }),
        _ => None,
    }
}

/// The envelope code of a status the framework answers with.
pub fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::UNPROCESSABLE_ENTITY => "VALIDATION",
        s if s.is_server_error() => "INTERNAL",
        _ => "BAD_REQUEST",
    }
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
        if state.sessions.is_signed_out(&claims).await? {
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
