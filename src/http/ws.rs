//! The WebSocket endpoints' HTTP side: the handshake (RFC 6455 §4.2), the origin check,
//! connection limits and authentication all happen before the upgrade, so a refusal is an
//! ordinary API error. The connections themselves live in `crate::realtime`.
//!
//! - `GET /ws/programs/{id}/seats` — the live seat map (anyone).
//! - `GET /ws/me?token=…` — the buyer's own order events; the token may instead come as a
//!   `Sec-WebSocket-Protocol` entry `bearer.<token>` (browsers cannot set headers on sockets),
//!   offered beside `boxoffice`, which the server then selects.

use super::AppState;
use super::error::ApiError;
use super::extractor::AuthUser;
use crate::realtime::buyer::BuyerChannel;
use crate::realtime::connections::{Refusal, Slot};
use crate::realtime::feed::{FeedCategory, SeatMapSource};
use crate::realtime::socket::{self, Source, Ws};
use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The sub-protocol a client offers beside its `bearer.<token>` entry.
const PROTOCOL: &str = "boxoffice";
const BEARER_PREFIX: &str = "bearer.";

/// The WebSocket routes.
pub fn router(_state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/ws/programs/{id}/seats", get(seat_map))
        .route("/ws/me", get(me))
}

/// The live seat map of a program: a snapshot, then coalesced deltas of committed changes.
pub async fn seat_map(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::not_found("program"))?;
    let handshake = Handshake::check(&st, peer, &mut req)?;
    let detail = st
        .catalog
        .detail(id)
        .await?
        .ok_or_else(|| ApiError::not_found("program"))?;
    let categories: Arc<[FeedCategory]> = detail
        .ticket_categories
        .iter()
        .map(|c| FeedCategory {
            id: c.id,
            show_time_id: c.show_time_id,
            name: c.name.clone(),
            price_cents: c.price_cents,
            seated: c.seated,
        })
        .collect();
    let feeds = st.realtime.feeds.clone();
    let subscription = feeds.subscribe(id, &categories).await.map_err(|_| {
        ApiError::unavailable(
            "SEAT_MAP_UNAVAILABLE",
            "seat map not available; retry shortly",
        )
    })?;
    let source = SeatMapSource::new(feeds, id, categories, subscription);
    Ok(handshake.accept(&st, source))
}

/// `?token=` of `/ws/me`.
#[derive(serde::Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// The buyer's own order events, on every open tab of theirs.
pub async fn me(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<TokenQuery>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let from_protocol = bearer_protocol(req.headers());
    let token = query
        .token
        .or(from_protocol)
        .ok_or_else(|| ApiError::unauthenticated("sign in first (?token=…)"))?;
    let AuthUser(claims) = AuthUser::from_token(&st, &token).await?;
    let handshake = Handshake::check(&st, peer, &mut req)?;
    let remaining = (claims.exp - chrono::Utc::now().timestamp()).max(0) as u64;
    let source = BuyerChannel {
        notices: st.hub.subscribe(claims.sub),
        revoked: st.realtime.sessions.watch(&claims),
        expires_at: tokio::time::Instant::now() + std::time::Duration::from_secs(remaining),
    };
    Ok(handshake.accept(&st, source))
}

/// The token in a `bearer.<token>` entry of `Sec-WebSocket-Protocol`, if any.
fn bearer_protocol(headers: &HeaderMap) -> Option<String> {
    offered_protocols(headers).find_map(|p| p.strip_prefix(BEARER_PREFIX).map(str::to_owned))
}

fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// A checked upgrade request with its place among the open sockets (shared with `/ws/admin`).
pub(super) struct Handshake {
    accept_key: String,
    on_upgrade: OnUpgrade,
    protocol: Option<HeaderValue>,
    slot: Slot,
}

impl Handshake {
    /// Checks the request is a WebSocket handshake from an allowed origin and admits it.
    pub(super) fn check(
        st: &AppState,
        peer: SocketAddr,
        req: &mut Request,
    ) -> Result<Self, ApiError> {
        let headers = req.headers();
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|_| is_websocket_upgrade(headers))
            .ok_or_else(not_a_websocket)?;
        let accept_key = derive_accept_key(key.as_bytes());
        check_origin(st, headers)?;
        let protocol = chosen_protocol(headers);
        let on_upgrade = req
            .extensions_mut()
            .remove::<OnUpgrade>()
            .ok_or_else(not_a_websocket)?;
        let slot = st.realtime.connections.admit(peer.ip()).map_err(refused)?;
        Ok(Handshake {
            accept_key,
            on_upgrade,
            protocol,
            slot,
        })
    }

    /// Answers 101 and runs the connection with `source` once the upgrade completes.
    pub(super) fn accept(self, st: &AppState, source: impl Source + 'static) -> Response {
        let realtime = st.realtime.clone();
        let Handshake {
            accept_key,
            on_upgrade,
            protocol,
            slot,
        } = self;
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(upgraded) = on_upgrade.await else {
                tracing::debug!("WebSocket upgrade did not complete");
                return;
            };
            let config = socket::config(&realtime.settings);
            let ws: Ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            metrics::gauge!("ws_connections_open").increment(1.0);
            let shutdown = realtime.connections.shutdown_signal();
            socket::drive(ws, source, &realtime.settings, shutdown).await;
            metrics::gauge!("ws_connections_open").decrement(1.0);
        });
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept_key) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Some(p) = protocol {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        response
    }
}

/// `Upgrade: websocket`, `Connection: upgrade` and version 13, as RFC 6455 §4.2.1 requires.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13")
}

/// The sub-protocol the server answers with: `boxoffice` when offered; otherwise the offered
/// bearer entry itself (a browser fails the socket unless one offered protocol is echoed).
fn chosen_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let offered: Vec<&str> = offered_protocols(headers).collect();
    let chosen = offered
        .iter()
        .find(|p| **p == PROTOCOL)
        .or_else(|| offered.first())?;
    HeaderValue::from_str(chosen).ok()
}

/// Browsers send `Origin`; a page from an origin not in `ws.allowed_origins` gets 403, so
/// another site cannot open a buyer's channel with the buyer's cookies or stored token.
fn check_origin(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let allowed = origin.to_str().is_ok_and(|o| {
        st.settings
            .ws
            .origin_allowed(o, &st.settings.server.public_url)
    });
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ORIGIN_NOT_ALLOWED",
            "sockets may not be opened from this origin",
        ))
    }
}

fn not_a_websocket() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "NOT_A_WEBSOCKET",
        "this endpoint takes a WebSocket handshake (Upgrade: websocket, version 13)",
    )
}

fn refused(r: Refusal) -> ApiError {
    match r {
        Refusal::PerAddress => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_CONNECTIONS",
            r.to_string(),
        ),
        Refusal::Full | Refusal::ShuttingDown => {
            ApiError::unavailable("TOO_MANY_CONNECTIONS", r.to_string()).retry_after(5)
        }
    }
}
