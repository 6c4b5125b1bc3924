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

/// The body of every 4xx/5xx answer: `{"error": {...}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

/// What went wrong: a stable code, a human message and structured details.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorInner<'a> {
    /// Stable UPPER_SNAKE identifier, e.g. `SEAT_UNAVAILABLE`.
    #[schema(pattern = "^[A-Z][A-Z0-9_]*$")]
    code: &'a str,
    /// Human text.
    message: &'a str,
    /// Field names, counts, …; an empty object when there is nothing more to say.
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
            // The request's own data broke a rule of the database (class 22: a value it cannot
            // take, class 23: a constraint): the client's doing, not an outage.
            Db { ref sqlstate, .. } if sqlstate.code().starts_with("22") => {
                tracing::warn!(error = %e, "request data refused by Postgres");
                ApiError::validation("body", "a value is not acceptable")
            }
            Db { ref sqlstate, .. } if sqlstate.code().starts_with("23") => {
                tracing::warn!(error = %e, "request conflicts with a constraint");
                ApiError::new(
                    StatusCode::CONFLICT,
                    "CONFLICT",
                    "the request conflicts with existing data",
                )
            }
            Postgres(_) | Pool(_) | Db { .. } | CommitUnknown(_) | Writer(_) | Migration(_) => {
                store_unavailable(&e)
            }
            Timeout {
                store: crate::store::Store::Postgres,
                ..
            }
            | KnownDown(crate::store::Store::Postgres) => store_unavailable(&e),
            NotFound(_) => ApiError::not_found("resource"),
            Conflict(_) => ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "CONFLICT",
                "the resource changed; retry",
            ),
            Refused { reason, message } => refused(reason, message),
            Busy(code) => {
                ApiError::unavailable(code, "too many requests like this at once; retry shortly")
                    .retry_after(1)
            }
            Redis(_) | Pulsar(_) | PulsarSends { .. } | Timeout { .. } | KnownDown(_) => {
                tracing::warn!(error = %e, "dependency failure");
                ApiError::unavailable(
                    "DEPENDENCY_UNAVAILABLE",
                    "a dependency is unavailable; retry shortly",
                )
            }
            // Faults of this server (a panicked task, a key that opens nothing, a constraint
            // the writer does not know, a bad setting): opaque 500, full cause in the log.
            Task(_) | Crypto { .. } | UnknownRefusal { .. } | Config { .. } => {
                ApiError::internal(e)
            }
        }
    }
}

/// 503 `STORE_UNAVAILABLE`: PostgreSQL (or the writer in front of it) did not answer.
fn store_unavailable(e: &crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store failure");
    ApiError::unavailable("STORE_UNAVAILABLE", "a store is unavailable; retry shortly")
}

/// A business rule's refusal: its code from the [`Refusal`](crate::store::Refusal), its
/// status from what kind of rule it is (a conflict with others' state, or the request itself).
fn refused(reason: crate::store::Refusal, message: String) -> ApiError {
    use crate::store::Refusal::*;
    match reason {
        SeatUnavailable | SoldOut | BuyerHasTicket | InFlight => {
            ApiError::new(StatusCode::CONFLICT, reason.code(), message)
        }
        LimitExceeded => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, reason.code(), message),
        Validation { field } => ApiError::validation(field, message),
    }
}

/// Every error answer in the API's envelope: rejections the framework produces itself (405,
/// 413, a path segment that does not parse, …) come as plain text; they are rewrapped here with
/// a stable code and their text as the message.
pub async fn envelope(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json || status == StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Framework rejections are a sentence; anything longer is not one of them.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_string();
    let mut wrapped =
        ApiError::new(status, super::extractor::status_code_name(status), message).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        wrapped.headers_mut().insert(header::ALLOW, allow.clone());
    }
    wrapped
}

/// A query string carrying a NUL character (`%00`) is refused before any handler sees it, with
/// the parameter named: Postgres cannot store NUL, and bad input must never look like an outage.
pub async fn refuse_nul_in_query(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let nul = req.uri().query().and_then(|q| {
        q.split('&')
            .find(|pair| pair.to_ascii_lowercase().contains("%00"))
            .map(|pair| pair.split('=').next().unwrap_or("query").to_string())
    });
    match nul {
        Some(field) => {
            ApiError::validation(&field, "must not contain NUL characters").into_response()
        }
        None => next.run(req).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use tokio_postgres::error::SqlState;

    fn db(sqlstate: SqlState) -> ApiError {
        StoreError::Db {
            sqlstate,
            message: "refused".into(),
        }
        .into()
    }

    #[test]
    fn data_the_database_refuses_is_the_clients_error_not_an_outage() {
        assert_eq!(
            db(SqlState::CHARACTER_NOT_IN_REPERTOIRE).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            db(SqlState::UNIQUE_VIOLATION).status(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            db(SqlState::CONNECTION_FAILURE).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    fn body_code(e: ApiError) -> (StatusCode, &'static str) {
        (e.status(), e.code)
    }

    #[test]
    fn each_refusal_answers_its_own_code() {
        use crate::store::Refusal::*;
        let cases = [
            (SeatUnavailable, StatusCode::CONFLICT, "SEAT_UNAVAILABLE"),
            (SoldOut, StatusCode::CONFLICT, "SOLD_OUT"),
            (BuyerHasTicket, StatusCode::CONFLICT, "BUYER_HAS_TICKET"),
            (InFlight, StatusCode::CONFLICT, "IN_FLIGHT"),
            (
                LimitExceeded,
                StatusCode::UNPROCESSABLE_ENTITY,
                "LIMIT_EXCEEDED",
            ),
            (
                Validation {
                    field: "show_times",
                },
                StatusCode::UNPROCESSABLE_ENTITY,
                "VALIDATION",
            ),
        ];
        for (reason, status, code) in cases {
            let e: ApiError = StoreError::refused(reason, "refused").into();
            assert_eq!(body_code(e), (status, code), "{reason:?}");
        }
    }

    #[test]
    fn an_unknown_refusal_is_a_server_fault_not_a_seat_refusal() {
        let cause = StoreError::Db {
            sqlstate: SqlState::UNIQUE_VIOLATION,
            message: "duplicate key value violates unique constraint \"new_thing\"".into(),
        };
        let e: ApiError = StoreError::UnknownRefusal {
            constraint: "new_thing".into(),
            source: std::sync::Arc::new(cause),
        }
        .into();
        assert_eq!(
            body_code(e),
            (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL")
        );
    }

    #[test]
    fn a_silent_store_is_unavailable_with_its_kind_in_the_code() {
        use crate::store::Store;
        let after = std::time::Duration::from_secs(3);
        let pg: ApiError = StoreError::Timeout {
            store: Store::Postgres,
            after,
        }
        .into();
        assert_eq!(
            body_code(pg),
            (StatusCode::SERVICE_UNAVAILABLE, "STORE_UNAVAILABLE")
        );
        let redis: ApiError = StoreError::Timeout {
            store: Store::Redis,
            after,
        }
        .into();
        assert_eq!(
            body_code(redis),
            (StatusCode::SERVICE_UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")
        );
    }
}
