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
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};

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
    /// The payment providers' callbacks (per address only: a provider has no user).
    Notify,
    /// `/readyz` and `/metrics` (per address only).
    Ops,
}

impl Group {
    fn name(self) -> &'static str {
        match self {
            Group::Auth => "auth",
            Group::Catalog => "catalog",
            Group::Account => "account",
            Group::Admin => "admin",
            Group::Notify => "notify",
            Group::Ops => "ops",
        }
    }

    /// The per-address bucket, and the per-user one where the group has users.
    fn limits(self, state: &AppState) -> (BucketSettings, Option<BucketSettings>) {
        let r = &state.settings.rate_limit;
        let both = |g: GroupLimits| (g.per_ip, Some(g.per_user));
        match self {
            Group::Auth => both(r.auth),
            Group::Catalog => both(r.catalog),
            Group::Account => both(r.account),
            Group::Admin => both(r.admin),
            Group::Notify => (r.notify, None),
            Group::Ops => (r.ops, None),
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

/// Middleware for [`Group::Notify`] routes.
pub async fn notify(State(st): State<AppState>, req: Request, next: Next) -> Response {
    enforce(st, Group::Notify, req, next).await
}

/// Middleware for [`Group::Ops`] routes.
pub async fn ops(State(st): State<AppState>, req: Request, next: Next) -> Response {
    enforce(st, Group::Ops, req, next).await
}

/// The client as rate limits and login throttling name it: its address, an IPv6 address
/// reduced to its /64 (one subscriber's whole allocation, which rotating addresses within would
/// otherwise escape), and behind a trusted proxy the address the proxy saw ("unknown" without
/// connection info, as in tests that call the router directly).
pub struct ClientIp(pub String);

impl axum::extract::FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        st: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_of(st, &parts.extensions, &parts.headers)))
    }
}

/// [`ClientIp`] of a request.
fn client_of(st: &AppState, extensions: &axum::http::Extensions, headers: &HeaderMap) -> String {
    let Some(peer) = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    else {
        return "unknown".to_string();
    };
    let trusted = &st.settings.server.trusted_proxies;
    bucket_of(forwarded_client(peer, headers, trusted))
}

/// The address a trusted proxy says it forwarded for: `X-Forwarded-For` read from the right
/// (the nearest hop first), skipping our own proxies; the first address not ours is the client.
/// From a peer that is not a trusted proxy the header is ignored: anyone can write it.
pub fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| hop.trim().parse::<IpAddr>())
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        match hop {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => break,
        }
    }
    peer
}

/// The bucket an address counts in: itself for IPv4, its /64 for IPv6.
pub fn bucket_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
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
    let (per_ip, per_user) = group.limits(st);
    let mut buckets = vec![(format!("{}:ip:{ip}", group.name()), per_ip)];
    if let (Some(user), Some(per_user)) = (user_id, per_user) {
        buckets.push((format!("{}:user:{user}", group.name()), per_user));
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
    let client = client_of(&st, req.extensions(), req.headers());
    let buckets = buckets(&st, group, &client, user.map(|c| c.sub));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn the_forwarded_client_counts_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let headers = forwarded("203.0.113.9, 198.51.100.7, 10.0.0.2");
        let trusted = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert_eq!(
            forwarded_client(proxy, &headers, &trusted).to_string(),
            "198.51.100.7",
            "the rightmost address not ours; what the client wrote further left is ignored"
        );
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            forwarded_client(stranger, &headers, &trusted),
            stranger,
            "anyone can write the header"
        );
        assert_eq!(forwarded_client(proxy, &forwarded("junk"), &trusted), proxy);
    }

    #[test]
    fn an_ipv6_client_counts_as_its_64() {
        let a = bucket_of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = bucket_of("2001:db8:1:2:ffff:1:2:3".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_ne!(a, bucket_of("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(bucket_of("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1");
    }
}
