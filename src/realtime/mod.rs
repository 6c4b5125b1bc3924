//! Real-time channels over WebSockets (tokio-tungstenite): live seat maps and each buyer's
//! own order events.
//!
//! - [`feed`] — one task per watched program turns its actors' committed deltas into coalesced
//!   frames, serialized once and shared by every subscriber.
//! - [`socket`] — one connection's loop: keepalive, idle timeout, write timeout, close codes,
//!   frames cut into small fragments so a connection's buffers stay small.
//! - [`connections`] — per-address and global connection limits, and closing every socket
//!   cleanly on shutdown.
//! - [`buyer`] — the buyer's channel: order notices; open channels re-check their tokens, so a revoked one is closed within
//!   `ws.auth_recheck_secs`.
//!
//! The HTTP side (handshake, origin check, authentication) is `http::ws`.

pub mod buyer;
pub mod connections;
pub mod feed;
pub mod socket;

use crate::actors::Supervisor;
use crate::config::WsSettings;
use crate::store::sessions::SessionGuard;
use std::sync::Arc;
use std::time::Duration;

/// Everything the WebSocket endpoints share. Cheap to clone.
#[derive(Clone)]
pub struct Realtime {
    /// `[ws]` settings.
    pub settings: Arc<WsSettings>,
    /// One seat-map feed per watched program.
    pub feeds: feed::SeatFeeds,
    /// Open sockets, their limits, and shutdown.
    pub connections: connections::Connections,
    /// Tokens of open buyer channels, re-checked for revocation.
    pub sessions: buyer::OpenSessions,
}

impl Realtime {
    /// Starts the session re-check task; feeds start with their first subscriber.
    pub fn new(settings: WsSettings, supervisor: Supervisor, guard: SessionGuard) -> Self {
        let feed_settings = feed::FeedSettings {
            coalesce: Duration::from_millis(settings.coalesce_ms),
            max_lag_frames: settings.max_lag_frames,
            linger: Duration::from_secs(settings.feed_linger_secs),
        };
        let sessions = buyer::OpenSessions::default();
        let every = Duration::from_secs(settings.auth_recheck_secs.max(1));
        tokio::spawn(buyer::recheck(sessions.clone(), guard, every));
        Realtime {
            feeds: feed::SeatFeeds::new(supervisor, feed_settings),
            connections: connections::Connections::new(
                settings.max_connections,
                settings.max_per_ip,
            ),
            sessions,
            settings: Arc::new(settings),
        }
    }
}
