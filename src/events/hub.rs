//! The per-user notification hub: every order event of a user reaches each of that user's
//! open channels (several browser tabs, several devices). The buyer's WebSocket (`/ws/me`)
//! subscribes here; the notifications consumer publishes.

use super::Event;
use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Notices a slow subscriber may fall behind before it misses some (bounded memory; the
/// client reloads its orders then).
const PER_USER_BUFFER: usize = 64;

/// An order change as a buyer's channel shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OrderNotice {
    /// Always `"order"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The order.
    pub order_no: String,
    /// Its status after the change.
    pub status: &'static str,
    /// The event behind it.
    pub event: String,
    /// When it happened.
    pub occurred_at: chrono::DateTime<chrono::Utc>,
}

/// Cheap to clone; all clones share the channels.
#[derive(Clone, Default)]
pub struct Hub {
    users: Arc<DashMap<i64, broadcast::Sender<Arc<OrderNotice>>>>,
}

impl Hub {
    /// A receiver of the user's notices from now on.
    pub fn subscribe(&self, user_id: i64) -> broadcast::Receiver<Arc<OrderNotice>> {
        self.users
            .entry(user_id)
            .or_insert_with(|| broadcast::channel(PER_USER_BUFFER).0)
            .subscribe()
    }

    /// Hands the event to the user's open channels; answers how many received it. A user with
    /// none costs nothing, and the entry of a user whose last channel closed is dropped.
    pub fn publish(&self, event: &Event) -> usize {
        let Some(user_id) = event.user_id else {
            return 0;
        };
        let notice = Arc::new(OrderNotice {
            kind: "order",
            order_no: event.order_no.clone(),
            status: event.status(),
            event: event.event_type.clone(),
            occurred_at: event.occurred_at,
        });
        let delivered = match self.users.get(&user_id) {
            Some(sender) => sender.send(notice).unwrap_or(0),
            None => return 0,
        };
        if delivered == 0 {
            self.users
                .remove_if(&user_id, |_, s| s.receiver_count() == 0);
        }
        delivered
    }
}
