//! The buyer's own channel (`/ws/me`): their order notices from the notification hub, closed
//! when their token expires or is signed out.
//!
//! Open channels (buyers' and operators') and their tokens. A token signed out — itself
//! revoked, or its holder signed out everywhere, demoted or disabled (the per-user stamp), on
//! any node — must close its sockets within seconds: one task checks every open token in a few
//! batched Redis reads per `ws.auth_recheck_secs`, instead of each socket asking alone.

use super::socket::{Close, Source, close, raised};
use crate::events::hub::OrderNotice;
use crate::store::sessions::{SessionGuard, TokenRef};
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Sent when a buyer's channel fell more than the hub's buffer behind: notices were skipped,
/// so the client reloads its orders over REST.
const RESYNC: &[u8] = br#"{"type":"resync","reason":"lagged"}"#;

/// One open `/ws/me` socket's source: the user's notices, until the token ends.
pub struct BuyerChannel {
    /// The user's notices from the hub.
    pub notices: broadcast::Receiver<Arc<OrderNotice>>,
    /// Raised when the token is found revoked.
    pub revoked: watch::Receiver<bool>,
    /// When the token expires.
    pub expires_at: Instant,
}

impl Source for BuyerChannel {
    async fn next(&mut self) -> Result<Bytes, Close> {
        tokio::select! {
            notice = self.notices.recv() => match notice {
                Ok(notice) => serde_json::to_vec(&*notice)
                    .map(Bytes::from)
                    .map_err(|_| close(CloseCode::Error, "notice could not be sent")),
                Err(RecvError::Lagged(_)) => Ok(Bytes::from_static(RESYNC)),
                Err(RecvError::Closed) => Err(close(CloseCode::Again, "channel closed; reconnect")),
            },
            _ = raised(&mut self.revoked) => Err(close(CloseCode::Policy, "token revoked")),
            _ = tokio::time::sleep_until(self.expires_at) => Err(close(CloseCode::Policy, "token expired")),
        }
    }

    /// Buyers' channels only listen.
    fn on_text(&mut self, _text: &str) -> Result<(), Close> {
        Err(close(
            CloseCode::Unsupported,
            "this channel takes no messages",
        ))
    }
}

/// Tokens (by `jti`) with open sockets; each socket watches its token's flag. Cheap to clone.
#[derive(Clone, Default)]
pub struct OpenSessions {
    // One entry per open token: several tabs of one session share it.
    tokens: Arc<DashMap<String, OpenToken>>,
}

struct OpenToken {
    flag: watch::Sender<bool>,
    /// The holder and when the token was issued, to compare with the holder's stamp.
    user_id: i64,
    iat_ms: i64,
}

impl OpenSessions {
    /// A flag that turns true when the token of `claims` is found signed out.
    pub fn watch(&self, claims: &crate::auth::Claims) -> watch::Receiver<bool> {
        self.tokens
            .entry(claims.jti.clone())
            .or_insert_with(|| OpenToken {
                flag: watch::channel(false).0,
                user_id: claims.sub,
                iat_ms: claims.iat_ms,
            })
            .flag
            .subscribe()
    }

    /// Tokens with at least one open socket; forgets the others.
    fn open_tokens(&self) -> Vec<TokenRef> {
        self.tokens.retain(|_, t| t.flag.receiver_count() > 0);
        self.tokens
            .iter()
            .map(|e| TokenRef {
                jti: e.key().clone(),
                user_id: e.user_id,
                iat_ms: e.iat_ms,
            })
            .collect()
    }

    /// Raises the flag of each revoked token and forgets it.
    fn revoked(&self, jtis: impl IntoIterator<Item = String>) {
        for jti in jtis {
            if let Some((_, token)) = self.tokens.remove(&jti) {
                token.flag.send_replace(true);
            }
        }
    }
}

/// Every `every`, asks Redis which open tokens were signed out. A failed check is logged and tried
/// again next round (sockets stay open meanwhile: Redis being away must not drop every buyer).
pub async fn recheck(sessions: OpenSessions, guard: SessionGuard, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let open = sessions.open_tokens();
        if open.is_empty() {
            continue;
        }
        match guard.signed_out_among(&open).await {
            Ok(revoked) => sessions.revoked(revoked),
            Err(e) => tracing::warn!(error = %e, "open buyer channels' tokens not re-checked"),
        }
    }
}
