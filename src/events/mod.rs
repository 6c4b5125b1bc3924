//! Order events on Pulsar (ARCHITECTURE.md, "Events on Pulsar").
//!
//! Every order state change writes one `outbox` row in its own transaction (invariant 6). The
//! [`relay`] publishes those rows to the `order-events` topic — one process at a time, by a
//! Postgres advisory lock — and marks each `sent` after the broker's receipt. [`consumer`] runs
//! one subscription per purpose, each applying an event at most once through its inbox
//! (`consumer_inbox`), retrying failures with backoff and dead-lettering poison messages.
//! Purposes: user notifications through the per-user [`hub`], and MQ bookkeeping (consume and
//! reconcile status of every outbox row, shown to operators as "MQ message records").

pub mod bookkeeping;
pub mod consumer;
pub mod hub;
pub mod relay;
pub mod tail;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

/// One order event as it travels on Pulsar (message key = order number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per state change; consumers dedupe on it.
    pub event_id: Uuid,
    /// `OrderCreated`, `OrderPaid`, `OrderCancelled`, `OrderExpired`, `OrderRefunded`, or
    /// `CatalogChanged` (an admin edit of a program).
    #[serde(rename = "type")]
    pub event_type: String,
    /// The order, as a string (63-bit numbers lose precision in JSON); empty for events that
    /// are not about an order (`CatalogChanged`).
    pub order_no: String,
    /// The buyer.
    pub user_id: Option<i64>,
    /// The program.
    pub program_id: Option<i64>,
    /// When the state change committed (the outbox row's time).
    pub occurred_at: DateTime<Utc>,
    /// The event's own data, as written to the outbox.
    pub data: serde_json::Value,
}

impl Event {
    /// Whether the event is about an order (rather than, say, the catalog).
    pub fn is_order_event(&self) -> bool {
        self.event_type.starts_with("Order")
    }

    /// The order status this event leaves its order in.
    pub fn status(&self) -> &'static str {
        match self.event_type.as_str() {
            "OrderCreated" => "pending_payment",
            "OrderPaid" => "paid",
            "OrderCancelled" => "cancelled",
            "OrderExpired" => "expired",
            "OrderRefunded" => "refunded",
            _ => "unknown",
        }
    }
}

/// Whether a background task should end: told to, or its owner (the server) is gone — a
/// dropped sender must never leave a loop spinning on `changed()`.
pub(crate) fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}
