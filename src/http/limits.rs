//! Rate limiting per route group: a token bucket per client IP and one per signed-in user, both
//! in Redis (so limits hold across nodes). An empty bucket answers 429 with `Retry-After`.
//!
//! If Redis cannot be asked, the request goes through (and a warning is logged): a limiter
//! outage must not take the whole site down with it.

use super::AppState;
use super::error::ApiError;
use super::extractor::bearer;
use crate::config::{BucketSettings, GroupLimits};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

/// Route groups with their own limits (`rate_limit.*` in the configuration).
#[derive(Debug, Clone, Copy)]
pub enum Group {
    /// Sign-up, login, captcha.
    Auth,
    /// Catalog reads.
    Catalog,
    /// The caller's account and ticket buyers.
    Account,
    /// Admin endpoints.
    Admin,
}

impl Group {
    fn name(self) -> &'static str {
        match self {
            Group::Auth => "auth",
            Group::Catalog => "catalog",
            Group::Account => "account",
            Group::Admin => "admin",
        }
    }

    fn limits(self, state: &AppState) -> GroupLimits {
        let r = &state.settings.rate_limit;
        match self {
            Group::Auth => r.auth,
            Group::Catalog => r.catalog,
            Group::Account => r.account,
            Group::Admin => r.admin,
        }
    }
}

/// Middleware for [`Group::Auth`] routes.
pub async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    enforce(st, Group::Auth, req, next).await
}

/// Middleware for [`Group::Catalog`] routes.
pub async fn catalog(State(st): State<AppState>, req: Request, next: Next) -> Response {
    enforce(st, Group::Catalog, req, next).await
}

/// Middleware for [`Group::Account`] routes.
pub async fn account(State(st): State<AppState>, req: Request, next: Next) -> Response {
    enforce(st, Group::Account, req, next).await
}

/// Middleware for [`Group::Admin`] routes.
pub async fn admin(State(st): State<AppState>, req: Request, next: Next) -> Response {
    enforce(st, Group::Admin, req, next).await
}

/// The client's IP address as the rate limits name it ("unknown" without connection info,
/// as in tests that call the router directly).
pub struct ClientIp(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(ip_of(&parts.extensions)))
    }
}

fn ip_of(extensions: &axum::http::Extensions) -> String {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or("unknown".to_string(), |c| c.0.ip().to_string())
}

/// The buckets a request of `group` takes from: its IP's, and its user's if signed in.
fn buckets(
    st: &AppState,
    group: Group,
    ip: &str,
    user_id: Option<i64>,
) -> Vec<(String, BucketSettings)> {
    if !st.settings.rate_limit.enabled {
        return Vec::new();
    }
    let limits = group.limits(st);
    let mut buckets = vec![(format!("{}:ip:{ip}", group.name()), limits.per_ip)];
    if let Some(user) = user_id {
        buckets.push((format!("{}:user:{user}", group.name()), limits.per_user));
    }
    buckets
}

/// The `account` group's buckets of a signed-in request (the order gate takes from them).
pub fn account_buckets(
    st: &AppState,
    ip: &ClientIp,
    user_id: i64,
) -> Vec<(String, BucketSettings)> {
    buckets(st, Group::Account, &ip.0, Some(user_id))
}

async fn enforce(st: AppState, group: Group, req: Request, next: Next) -> Response {
    let user = st
        .settings
        .rate_limit
        .enabled
        .then(|| bearer(req.headers()).and_then(|t| st.tokens.verify(t).ok()))
        .flatten();
    let buckets = buckets(&st, group, &ip_of(req.extensions()), user.map(|c| c.sub));
    for (bucket, settings) in buckets {
        match st.limiter.take(&bucket, settings).await {
            Ok(None) => {}
            Ok(Some(wait_ms)) => return too_many(wait_ms),
            Err(e) => {
                tracing::warn!(error = %e, bucket, "rate limiter unavailable; request let through")
            }
        }
    }
    next.run(req).await
}

/// 429 with `Retry-After`.
pub fn too_many(wait_ms: u64) -> Response {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        "too many requests; slow down",
    )
    .retry_after(wait_ms.div_ceil(1000).max(1))
    .into_response()
}
