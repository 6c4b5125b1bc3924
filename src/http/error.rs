//! The one error type of the HTTP layer and its JSON shape (API.md, "Errors"):
//! `{"error": {"code": "UPPER_SNAKE", "message": "...", "details": {...}}}`.
//!
//! Client errors carry their details; server errors are opaque to the client (code `INTERNAL`)
//! while the full cause goes to the log with the request id.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// An error answer: status, stable code, human message, optional details and retry hint.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
    retry_after_secs: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

/// The body of every 4xx/5xx answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorInner<'a> {
    code: &'a str,
    message: &'a str,
    #[schema(value_type = Object)]
    details: &'a Value,
}

impl ApiError {
    /// A client-visible error with an empty `details` object.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Object(Default::default()),
            retry_after_secs: None,
        }
    }

    /// Adds structured details (field names, counts, ...).
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Adds a `Retry-After` header (429 and 503).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 404 for missing objects and for other users' objects alike (do not leak existence).
    pub fn not_found(what: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{what} not found"),
        )
    }

    /// 422 naming the offending field.
    pub fn validation(field: &str, reason: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION",
            format!("{field}: {reason}"),
        )
        .with_details(serde_json::json!({ "field": field }))
    }

    /// 401: no token, a bad one, or a revoked one.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    /// 403: signed in, but the role does not allow this.
    pub fn forbidden() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "your role does not allow this",
        )
    }

    /// 503 with `Retry-After`: a dependency is down or we are overloaded.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retry_after(1)
    }

    /// Opaque 500: logs `cause` in full, tells the client nothing about it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "internal error; see server log",
        )
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorInner {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError::*;
        match e {
            Postgres(_) | Db { .. } | CommitUnknown(_) | Migration(_) => {
                tracing::error!(error = %e, "store failure");
                ApiError::unavailable("STORE_UNAVAILABLE", "a store is unavailable; retry shortly")
            }
            NotFound(_) => ApiError::not_found("resource"),
            Conflict(_) => ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "CONFLICT",
                "the resource changed; retry",
            ),
            Refused { code, message } => {
                let status = match code {
                    "SEAT_UNAVAILABLE" | "SOLD_OUT" | "BUYER_HAS_TICKET" | "IN_FLIGHT" => {
                        StatusCode::CONFLICT
                    }
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                ApiError::new(status, code, message)
            }
            Redis(_) | Pulsar(_) => {
                tracing::warn!(error = %e, "dependency failure");
                ApiError::unavailable(
                    "DEPENDENCY_UNAVAILABLE",
                    "a dependency is unavailable; retry shortly",
                )
            }
        }
    }
}

/// Answers unknown routes in the API's error format instead of an empty 404.
pub async fn fallback() -> ApiError {
    ApiError::not_found("route")
}

/// Maps a handler panic to an opaque 500 in the API format; the panic itself is logged.
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    ApiError::internal(format!("handler panicked: {detail}")).into_response()
}

impl From<crate::domain::identity::Invalid> for ApiError {
    fn from(e: crate::domain::identity::Invalid) -> Self {
        ApiError::validation(e.field, e.reason)
    }
}
