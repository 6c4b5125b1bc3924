//! Messages a `CategoryActor` answers, and what it answers with.

use crate::domain::inventory::{
    ChangeKind, Counts, InventoryError, OrderNo, SeatId, SeatInfo, SeatStatus,
};
use actix::Message;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;

/// Why an actor call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    /// The inventory refused (seat taken, sold out, price mismatch, ...).
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The store did not confirm the write; the change was rolled back in memory.
    #[error("the change could not be made durable: {0}")]
    CommitFailed(String),
    /// Too many requests queued for this category; retry shortly (503 + Retry-After).
    #[error("category is overloaded; retry shortly")]
    Overloaded,
    /// The actor stopped while handling this request; its state is reloaded from Postgres.
    #[error("category actor restarted during the request; its outcome is unknown, check and retry")]
    Restarted,
    /// No such ticket category.
    #[error("ticket category {0} not found")]
    NotFound(i64),
    /// Loading the category from the store failed.
    #[error("category could not be loaded: {0}")]
    Load(String),
}

/// Which seats a hold takes.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Chosen seats, each with the price the client saw.
    Seats(Vec<(SeatId, i64)>),
    /// The best `n` seats, or `n` general-admission tickets.
    Best(u32),
}

/// What a reservation takes: tickets for an order until `expires_at`.
#[derive(Debug, Clone)]
pub struct Hold {
    /// The order taking the tickets.
    pub order_no: OrderNo,
    /// What to take.
    pub selection: Selection,
    /// When the hold expires unless paid.
    pub expires_at: DateTime<Utc>,
}

/// Take tickets for an order without writing them: the hold stays pending (blocking its seats,
/// invisible to buyers) until [`Settle`] says whether the caller's own transaction — which
/// writes the order and these seats together — committed. Unsettled reservations are abandoned
/// after `actors.reservation_timeout_ms`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Reserved, ActorError>")]
pub struct Reserve(pub Hold);

/// A pending reservation and the change the caller must persist.
#[derive(Debug, Clone)]
pub struct Reserved {
    /// What was taken.
    pub held: Held,
    /// The seat/GA change to write in the order's transaction.
    pub change: crate::domain::inventory::Change,
}

/// What became of a reservation's transaction, as far as its caller knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed: the hold becomes real (timer armed, delta published).
    Committed,
    /// Certainly not committed, for a reason that says nothing about the seats (a limit, a
    /// ticket buyer already holding a ticket): the seats are free again.
    NotCommitted,
    /// Memory cannot be trusted for this order: the commit may have happened after all (the
    /// connection broke around `COMMIT`), or Postgres refused seats the actor believed free.
    /// The actor drops the reservation and reloads itself from Postgres, which knows.
    Unknown,
}

/// The outcome of a reservation's transaction (see [`Outcome`]). Answers whether it was still
/// pending. Never refused for backpressure: see [`Supervisor::report`](super::Supervisor::report).
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct Settle {
    /// The order.
    pub order_no: OrderNo,
    /// What became of its transaction.
    pub outcome: Outcome,
    /// The reserved change, so that an actor which replaced the reserving one (it loaded before
    /// the order committed) can take the committed hold into memory instead of reloading —
    /// reloads during a rush would otherwise chain, each replacement missing the commits in
    /// flight.
    pub change: Option<crate::domain::inventory::Change>,
}

/// What a reservation holds (durable once its order committed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Seats taken (empty for general admission).
    pub seats: Vec<SeatInfo>,
    /// Tickets taken.
    pub quantity: u32,
    /// Deadline.
    pub expires_at: DateTime<Utc>,
}

/// Release (cancel), confirm (paid) or return (refund) an order's tickets.
/// Answers `true` if something changed, `false` if it had already happened.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<bool, ActorError>")]
pub struct Transition {
    /// `Release`, `Confirm` or `Return` (not `Hold`).
    pub kind: ChangeKind,
    /// The order.
    pub order_no: OrderNo,
}

/// A transition the caller already made durable in its own transaction, so the actor only
/// updates memory, re-arms nothing and publishes the delta. Payments use it: the order turning
/// `paid` and its seats turning `sold` must commit together across every category of the order,
/// which no single actor can do. Answers whether memory changed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub struct Applied(pub Transition);

/// The committed seat map of one category, built once and shared.
#[derive(Debug, Clone, Serialize)]
pub struct CategorySnapshot {
    /// The category.
    pub category_id: i64,
    /// Sequence number of the last change included.
    pub seq: u64,
    /// Counts at that point (pending holds count as held).
    pub counts: Counts,
    /// Orders mid-change at that point ([`Inventory::in_flight`]).
    ///
    /// [`Inventory::in_flight`]: crate::domain::inventory::Inventory::in_flight
    pub in_flight: usize,
    /// Seat facts in grid order (shared, never copied per request).
    pub seats: Arc<[SeatInfo]>,
    /// Status per seat, same order.
    pub statuses: Vec<SeatStatus>,
}

/// Ask for the current snapshot.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Arc<CategorySnapshot>")]
pub struct GetSnapshot;

/// Counters since the actor started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Durable holds.
    pub holds: u64,
    /// Releases by request (cancel) or timer.
    pub releases: u64,
    /// Releases by timer.
    pub expiries: u64,
    /// Confirmed sales.
    pub sales: u64,
    /// Returns (refunds).
    pub returns: u64,
}

/// Ask for statistics.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "CategoryStats")]
pub struct GetStats;

/// What an actor reports about itself.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryStats {
    /// The category.
    pub category_id: i64,
    /// Tickets in total.
    pub capacity: u32,
    /// Available/held/sold.
    pub counts: Counts,
    /// Last committed sequence number.
    pub seq: u64,
    /// Hold timers armed.
    pub armed_timers: usize,
    /// Counters since start.
    pub totals: Totals,
}

/// Stop if idle (no holds or changes in flight); answers whether it stopped.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub struct Passivate;

/// Stop now, whatever the actor holds: its durable state stays in the store and the next call
/// loads it again. Used to unload a category (and by benchmarks to drop finished ones).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Unload;

/// Fault injection for restart tests and drills: the actor panics.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Crash(pub String);
