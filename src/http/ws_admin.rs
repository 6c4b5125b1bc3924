//! `GET /ws/admin?token=…`: the operators' monitoring stream (API.md, "WebSockets"). Admins
//! only: no or a bad token → 401, a signed-in account without the `admin` role → 403, both
//! before the upgrade.
//!
//! The frames come from one [`Monitor`] per server, started with the router: it builds a
//! `{type: "stats", …}` frame once per tick and every socket here sends those same bytes.
//! A socket only ever has the newest frame waiting (a `watch`), so a slow operator's browser
//! skips frames instead of growing a queue. The socket closes when the token expires or is
//! signed out (1008), like a buyer's channel.
//!
//! The handshake mirrors `ws.rs`'s (upgrade headers, origin, connection limits), whose helpers
//! are private to that module.

use super::AppState;
use super::error::ApiError;
use super::extractor::AuthUser;
use super::ws::Handshake;
use crate::monitor::{self, Monitor, Sources};
use crate::realtime::socket::{Close, Source, close, raised};
use crate::store::users::role;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The route, with this server's [`Monitor`] (started here: the router is built once per
/// server, and the monitor's task ends when the router is dropped with the server).
pub fn router(state: &AppState) -> Router<AppState> {
    let sources = Sources {
        supervisor: state.supervisor.clone(),
        writer: state.writer.clone(),
        pg: state.stores.pg.clone(),
        redis: state.stores.redis.clone(),
    };
    let monitor = Monitor::start(sources, monitor::PERIOD);
    Router::new()
        .route("/ws/admin", get(stream))
        .layer(Extension(monitor))
}

/// `?token=` of `/ws/admin`.
#[derive(serde::Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// Opens an admin's monitoring stream.
pub async fn stream(
    State(st): State<AppState>,
    Extension(monitor): Extension<Arc<Monitor>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<TokenQuery>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let token = query
        .token
        .ok_or_else(|| ApiError::unauthenticated("sign in first (?token=…)"))?;
    let AuthUser(claims) = AuthUser::from_token(&st, &token).await?;
    if !claims.has_role(role::ADMIN) {
        return Err(ApiError::forbidden());
    }
    let handshake = Handshake::check(&st, peer, &mut req)?;
    let remaining = (claims.exp - chrono::Utc::now().timestamp()).max(0) as u64;
    let source = AdminStream {
        frames: monitor.subscribe(),
        revoked: st.realtime.sessions.watch(&claims),
        expires_at: Instant::now() + std::time::Duration::from_secs(remaining),
    };
    Ok(handshake.accept(&st, source))
}

/// One admin socket's source: the monitor's newest frame, until the token ends.
struct AdminStream {
    /// `None` until the monitor built its first frame.
    frames: watch::Receiver<Option<Bytes>>,
    /// Raised when the token is found signed out.
    revoked: watch::Receiver<bool>,
    /// When the token expires.
    expires_at: Instant,
}

impl Source for AdminStream {
    async fn next(&mut self) -> Result<Bytes, Close> {
        loop {
            tokio::select! {
                changed = self.frames.changed() => {
                    if changed.is_err() {
                        return Err(close(CloseCode::Away, "monitor stopped"));
                    }
                    // Clone of a `Bytes`: the frame's buffer is shared, not copied.
                    if let Some(frame) = self.frames.borrow_and_update().clone() {
                        return Ok(frame);
                    }
                }
                _ = raised(&mut self.revoked) => return Err(close(CloseCode::Policy, "token revoked")),
                _ = tokio::time::sleep_until(self.expires_at) => {
                    return Err(close(CloseCode::Policy, "token expired"));
                }
            }
        }
    }

    /// The stream only talks.
    fn on_text(&mut self, _text: &str) -> Result<(), Close> {
        Err(close(
            CloseCode::Unsupported,
            "this channel takes no messages",
        ))
    }
}
