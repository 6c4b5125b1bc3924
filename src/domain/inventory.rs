//! The seat state of one ticket category as a plain state machine, owned by its `CategoryActor`.
//!
//! Every operation that must be durable is split in two: `begin` computes a [`Change`] and marks
//! the order as in transition (seats stay blocked); the caller persists the change and then calls
//! [`Inventory::finish`] with the outcome. Seats are never handed to another order while a change
//! that involves them is unconfirmed, so memory can run ahead of Postgres but never contradict it.

use super::seating::{Grid, best_available};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;

/// 63-bit order number.
pub type OrderNo = i64;
/// Seat row id in Postgres.
pub type SeatId = i64;

/// A seat as buyers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeatStatus {
    /// Free to take.
    Available,
    /// In an unpaid order.
    Held,
    /// In a paid order.
    Sold,
}

/// Fixed facts of a seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeatInfo {
    /// Postgres id.
    pub id: SeatId,
    /// Row, 1 nearest the stage.
    pub row: i32,
    /// Column, from 1.
    pub col: i32,
    /// Price in minor units.
    pub price_cents: i64,
}

/// Where an order is in its life inside this category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Seats taken in memory, commit not yet confirmed. Invisible to buyers.
    PendingHold,
    /// Durable hold, waiting for payment; expires at `expires_at`.
    Held,
    /// Held, release (cancel/expiry) being persisted.
    Releasing,
    /// Held, sale (payment) being persisted.
    Confirming,
    /// Paid.
    Sold,
    /// Sold, return (refund) being persisted.
    Returning,
}

impl Stage {
    fn counts_as_sold(self) -> bool {
        matches!(self, Stage::Sold | Stage::Returning)
    }
}

/// What a durable change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// available → held.
    Hold,
    /// held → available (cancel or expiry).
    Release,
    /// held → sold.
    Confirm,
    /// sold → available (refund).
    Return,
}

/// A change that must be persisted before it takes effect for buyers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What happens.
    pub kind: ChangeKind,
    /// Program of the category.
    pub program_id: i64,
    /// The category.
    pub category_id: i64,
    /// The order concerned.
    pub order_no: OrderNo,
    /// Seats concerned (empty for general admission).
    pub seats: Vec<SeatInfo>,
    /// Tickets concerned.
    pub quantity: u32,
    /// Hold deadline (holds only).
    pub expires_at: Option<DateTime<Utc>>,
}

/// One seat's new status in a committed delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeatChange {
    /// The seat.
    pub seat_id: SeatId,
    /// The category it belongs to.
    pub ticket_category_id: i64,
    /// Its new status.
    pub status: SeatStatus,
}

/// Committed changes under one sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delta {
    /// Sequence number after these changes.
    pub seq: u64,
    /// Seat statuses that changed (empty for general admission).
    pub changes: Vec<SeatChange>,
    /// Counts after the change.
    pub counts: Counts,
}

/// available + held + sold = capacity, always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default, utoipa::ToSchema)]
pub struct Counts {
    /// Free tickets.
    pub available: u32,
    /// Tickets in unpaid orders (including holds not yet durable).
    pub held: u32,
    /// Tickets in paid orders.
    pub sold: u32,
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// Some chosen seats are not available.
    #[error("seats not available: {0:?}")]
    SeatUnavailable(Vec<SeatId>),
    /// Not enough tickets left for the quantity (or no block fits without splitting).
    #[error("sold out: {remaining} left")]
    SoldOut {
        /// Tickets still available.
        remaining: u32,
    },
    /// The price the client saw differs from the real one.
    #[error("price mismatch for seat {seat_id}: actual {actual_cents}")]
    PriceMismatch {
        /// The seat.
        seat_id: SeatId,
        /// Its real price.
        actual_cents: i64,
    },
    /// A seat id that is not in this category.
    #[error("unknown seat {0}")]
    UnknownSeat(SeatId),
    /// Empty, duplicated or otherwise malformed request.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// The order already has tickets in this category.
    #[error("order {0} already holds tickets here")]
    DuplicateOrder(OrderNo),
    /// The order is not in a state that allows this (e.g. confirming an unknown order).
    #[error("order {0} is not in a state that allows this")]
    WrongState(OrderNo),
    /// Another change of this order is being persisted; retry shortly.
    #[error("order {0} is changing; retry")]
    Busy(OrderNo),
}

#[derive(Debug, Clone)]
struct OrderEntry {
    seats: Vec<usize>,
    quantity: u32,
    expires_at: DateTime<Utc>,
    stage: Stage,
}

/// Static description of a category, as loaded from Postgres.
#[derive(Debug, Clone)]
pub struct CategorySpec {
    /// Program id.
    pub program_id: i64,
    /// Category id.
    pub category_id: i64,
    /// Price of GA tickets (seated seats carry their own).
    pub price_cents: i64,
    /// Tickets in total.
    pub capacity: u32,
    /// Seat grid (row-major, `rows × cols`), empty for general admission.
    pub seats: Vec<SeatInfo>,
    /// Rows of the grid.
    pub rows: usize,
    /// Seats per row.
    pub cols: usize,
    /// Whether best-available may split a party across rows.
    pub allow_split: bool,
    /// First sequence number of this load. Seat-map clients drop deltas whose `seq` is not
    /// above what they saw, so it must exceed every number an earlier load of the category
    /// handed out (here or on another node): the store derives it from a counter it bumps on
    /// every load (`ticket_categories.loads << 32`).
    pub seq_base: u64,
}

/// A persisted order as loaded on start.
#[derive(Debug, Clone)]
pub struct LoadedOrder {
    /// The order.
    pub order_no: OrderNo,
    /// Its seat ids (empty for GA).
    pub seat_ids: Vec<SeatId>,
    /// Tickets.
    pub quantity: u32,
    /// Hold deadline.
    pub expires_at: DateTime<Utc>,
    /// Held or sold.
    pub sold: bool,
}

/// All seats and orders of one category.
#[derive(Debug, Clone)]
pub struct Inventory {
    spec: CategorySpec,
    owner: Vec<Option<OrderNo>>,
    /// `owner[i].is_none()`, kept alongside so best-available reads the grid without building
    /// it per request (a 100,000-seat category would allocate 100 KB per order otherwise).
    free: Vec<bool>,
    by_id: HashMap<SeatId, usize>,
    orders: HashMap<OrderNo, OrderEntry>,
    held: u32,
    sold: u32,
    seq: u64,
}

impl Inventory {
    /// Rebuilds state from what Postgres holds (every persisted order is durable).
    pub fn load(spec: CategorySpec, orders: Vec<LoadedOrder>, seq: u64) -> Result<Self, String> {
        let by_id = spec
            .seats
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id, i))
            .collect();
        let mut inv = Inventory {
            owner: vec![None; spec.seats.len()],
            free: vec![true; spec.seats.len()],
            spec,
            by_id,
            orders: HashMap::new(),
            held: 0,
            sold: 0,
            seq,
        };
        for o in orders {
            let seats = o
                .seat_ids
                .iter()
                .map(|id| inv.index_of(*id))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let stage = if o.sold { Stage::Sold } else { Stage::Held };
            inv.take(o.order_no, seats, o.quantity, o.expires_at, stage)
                .map_err(|e| e.to_string())?;
        }
        Ok(inv)
    }

    /// Static facts of the category.
    pub fn spec(&self) -> &CategorySpec {
        &self.spec
    }

    /// Committed-change sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Current counts (holds not yet durable count as held).
    pub fn counts(&self) -> Counts {
        Counts {
            available: self.spec.capacity - self.held - self.sold,
            held: self.held,
            sold: self.sold,
        }
    }

    /// The stage of an order, if it has tickets here.
    pub fn stage(&self, order: OrderNo) -> Option<Stage> {
        self.orders.get(&order).map(|o| o.stage)
    }

    /// Orders waiting for payment with their deadlines (timers are armed from this).
    pub fn holds(&self) -> impl Iterator<Item = (OrderNo, DateTime<Utc>)> + '_ {
        self.orders
            .iter()
            .filter(|(_, o)| o.stage == Stage::Held)
            .map(|(n, o)| (*n, o.expires_at))
    }

    /// Orders whose change is on its way to Postgres (a hold not yet durable, a release, sale
    /// or return not yet committed): while there are any, counts differ from Postgres's by
    /// design, so the reconciler does not judge them.
    pub fn in_flight(&self) -> usize {
        self.orders
            .values()
            .filter(|o| !matches!(o.stage, Stage::Held | Stage::Sold))
            .count()
    }

    /// Whether any order is mid-change or holding (an actor with such state must stay alive).
    pub fn has_live_holds(&self) -> bool {
        self.orders
            .values()
            .any(|o| !matches!(o.stage, Stage::Sold))
    }

    /// Buyer-visible status of every seat, in grid order. Pending holds show as available:
    /// they are not committed and may still vanish.
    pub fn seat_statuses(&self) -> Vec<SeatStatus> {
        self.owner
            .iter()
            .map(|o| o.map_or(SeatStatus::Available, |n| self.visible_status(n)))
            .collect()
    }

    fn visible_status(&self, order: OrderNo) -> SeatStatus {
        match self.orders.get(&order).map(|o| o.stage) {
            Some(Stage::Sold | Stage::Returning) => SeatStatus::Sold,
            Some(Stage::PendingHold) | None => SeatStatus::Available,
            Some(_) => SeatStatus::Held,
        }
    }

    fn index_of(&self, id: SeatId) -> Result<usize, InventoryError> {
        self.by_id
            .get(&id)
            .copied()
            .ok_or(InventoryError::UnknownSeat(id))
    }

    /// Takes the chosen seats for `order` (pending until [`finish`](Self::finish)).
    /// `seats` pairs each seat id with the price the client saw.
    pub fn hold_seats(
        &mut self,
        order: OrderNo,
        seats: &[(SeatId, i64)],
        expires_at: DateTime<Utc>,
    ) -> Result<Change, InventoryError> {
        self.check_new_order(order, seats.len())?;
        let mut idx = Vec::with_capacity(seats.len());
        for &(id, price) in seats {
            let i = self.index_of(id)?;
            if idx.contains(&i) {
                return Err(InventoryError::Invalid("a seat is listed twice"));
            }
            let actual = self.spec.seats[i].price_cents;
            if actual != price {
                return Err(InventoryError::PriceMismatch {
                    seat_id: id,
                    actual_cents: actual,
                });
            }
            idx.push(i);
        }
        let taken: Vec<SeatId> = idx
            .iter()
            .filter(|&&i| self.owner[i].is_some())
            .map(|&i| self.spec.seats[i].id)
            .collect();
        if !taken.is_empty() {
            return Err(InventoryError::SeatUnavailable(taken));
        }
        let quantity = idx.len() as u32;
        self.take(order, idx, quantity, expires_at, Stage::PendingHold)?;
        Ok(self.change(ChangeKind::Hold, order))
    }

    /// Takes the best `quantity` seats (or GA tickets) for `order`, pending until committed.
    pub fn hold_best(
        &mut self,
        order: OrderNo,
        quantity: u32,
        expires_at: DateTime<Utc>,
    ) -> Result<Change, InventoryError> {
        self.check_new_order(order, quantity as usize)?;
        let remaining = self.counts().available;
        if remaining < quantity {
            return Err(InventoryError::SoldOut { remaining });
        }
        let idx = if self.spec.seats.is_empty() {
            Vec::new()
        } else {
            let grid = Grid {
                available: &self.free,
                rows: self.spec.rows,
                cols: self.spec.cols,
            };
            best_available(grid, quantity as usize, self.spec.allow_split)
                .ok_or(InventoryError::SoldOut { remaining })?
        };
        self.take(order, idx, quantity, expires_at, Stage::PendingHold)?;
        Ok(self.change(ChangeKind::Hold, order))
    }

    fn check_new_order(&self, order: OrderNo, quantity: usize) -> Result<(), InventoryError> {
        if quantity == 0 {
            return Err(InventoryError::Invalid("nothing to hold"));
        }
        if self.orders.contains_key(&order) {
            return Err(InventoryError::DuplicateOrder(order));
        }
        Ok(())
    }

    fn take(
        &mut self,
        order: OrderNo,
        seats: Vec<usize>,
        quantity: u32,
        expires_at: DateTime<Utc>,
        stage: Stage,
    ) -> Result<(), InventoryError> {
        if let Some(&i) = seats.iter().find(|&&i| self.owner[i].is_some()) {
            return Err(InventoryError::SeatUnavailable(vec![self.spec.seats[i].id]));
        }
        if self.counts().available < quantity {
            return Err(InventoryError::SoldOut {
                remaining: self.counts().available,
            });
        }
        for &i in &seats {
            self.owner[i] = Some(order);
            self.free[i] = false;
        }
        if stage.counts_as_sold() {
            self.sold += quantity;
        } else {
            self.held += quantity;
        }
        self.orders.insert(
            order,
            OrderEntry {
                seats,
                quantity,
                expires_at,
                stage,
            },
        );
        Ok(())
    }

    fn change(&self, kind: ChangeKind, order: OrderNo) -> Change {
        let entry = &self.orders[&order];
        Change {
            kind,
            program_id: self.spec.program_id,
            category_id: self.spec.category_id,
            order_no: order,
            seats: entry.seats.iter().map(|&i| self.spec.seats[i]).collect(),
            quantity: entry.quantity,
            expires_at: (kind == ChangeKind::Hold).then_some(entry.expires_at),
        }
    }

    /// Takes into memory a hold that Postgres already has (committed through another actor of
    /// this category) if its tickets are free here; answers the delta to publish.
    pub fn adopt(&mut self, change: &Change) -> Result<Delta, InventoryError> {
        let expires_at = change
            .expires_at
            .ok_or(InventoryError::Invalid("not a hold"))?;
        self.check_new_order(change.order_no, change.quantity as usize)?;
        let idx = change
            .seats
            .iter()
            .map(|s| self.index_of(s.id))
            .collect::<Result<Vec<_>, _>>()?;
        self.take(
            change.order_no,
            idx,
            change.quantity,
            expires_at,
            Stage::Held,
        )?;
        Ok(self.delta(change.order_no, SeatStatus::Held))
    }

    /// Starts a release (cancel/expiry), confirm (payment) or return (refund) of `order`.
    /// `Ok(None)` means there is nothing to do because it already happened (idempotent retry).
    pub fn begin(
        &mut self,
        kind: ChangeKind,
        order: OrderNo,
    ) -> Result<Option<Change>, InventoryError> {
        let Some(entry) = self.orders.get_mut(&order) else {
            return match kind {
                ChangeKind::Release | ChangeKind::Return => Ok(None),
                _ => Err(InventoryError::WrongState(order)),
            };
        };
        let next = match (kind, entry.stage) {
            (ChangeKind::Release, Stage::Held) => Stage::Releasing,
            (ChangeKind::Confirm, Stage::Held) => Stage::Confirming,
            (ChangeKind::Return, Stage::Sold) => Stage::Returning,
            (ChangeKind::Confirm, Stage::Sold) => return Ok(None),
            (_, Stage::PendingHold | Stage::Releasing | Stage::Confirming | Stage::Returning) => {
                return Err(InventoryError::Busy(order));
            }
            _ => return Err(InventoryError::WrongState(order)),
        };
        entry.stage = next;
        Ok(Some(self.change(kind, order)))
    }

    /// Applies the outcome of persisting `change`. On success returns the buyer-visible delta
    /// (and bumps the sequence number); on failure puts the order back where it was.
    pub fn finish(&mut self, change: &Change, persisted: bool) -> Option<Delta> {
        let order = change.order_no;
        let stage = self.orders.get(&order)?.stage;
        match (stage, persisted) {
            (Stage::PendingHold, true)
            | (Stage::Returning, false)
            | (Stage::Releasing | Stage::Confirming, false) => {
                let restored = if stage == Stage::Returning {
                    Stage::Sold
                } else {
                    Stage::Held
                };
                self.set_stage(order, restored);
                (stage == Stage::PendingHold).then(|| self.delta(order, SeatStatus::Held))
            }
            (Stage::PendingHold, false) => {
                self.remove(order);
                None
            }
            (Stage::Confirming, true) => {
                self.set_stage(order, Stage::Sold);
                Some(self.delta(order, SeatStatus::Sold))
            }
            (Stage::Releasing | Stage::Returning, true) => {
                let seats = self.orders[&order].seats.clone();
                self.remove(order);
                Some(self.delta_for(&seats, SeatStatus::Available))
            }
            (Stage::Held | Stage::Sold, _) => None,
        }
    }

    fn set_stage(&mut self, order: OrderNo, stage: Stage) {
        let Some(entry) = self.orders.get_mut(&order) else {
            return;
        };
        let (was_sold, now_sold) = (entry.stage.counts_as_sold(), stage.counts_as_sold());
        entry.stage = stage;
        let q = entry.quantity;
        match (was_sold, now_sold) {
            (false, true) => {
                self.held -= q;
                self.sold += q;
            }
            (true, false) => {
                self.sold -= q;
                self.held += q;
            }
            _ => {}
        }
    }

    fn remove(&mut self, order: OrderNo) {
        let Some(entry) = self.orders.remove(&order) else {
            return;
        };
        for &i in &entry.seats {
            self.owner[i] = None;
            self.free[i] = true;
        }
        if entry.stage.counts_as_sold() {
            self.sold -= entry.quantity;
        } else {
            self.held -= entry.quantity;
        }
    }

    fn delta(&mut self, order: OrderNo, status: SeatStatus) -> Delta {
        let seats = self.orders[&order].seats.clone();
        self.delta_for(&seats, status)
    }

    fn delta_for(&mut self, seats: &[usize], status: SeatStatus) -> Delta {
        self.seq += 1;
        let category = self.spec.category_id;
        let changes = seats
            .iter()
            .map(|&i| SeatChange {
                seat_id: self.spec.seats[i].id,
                ticket_category_id: category,
                status,
            })
            .collect();
        Delta {
            seq: self.seq,
            changes,
            counts: self.counts(),
        }
    }

    /// Checks the internal invariants; the simulation calls it after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        let c = self.counts();
        if c.available + c.held + c.sold != self.spec.capacity {
            return Err(format!(
                "counts {c:?} do not add up to {}",
                self.spec.capacity
            ));
        }
        let (mut held, mut sold) = (0, 0);
        for (order, entry) in &self.orders {
            for &i in &entry.seats {
                if self.owner[i] != Some(*order) {
                    return Err(format!(
                        "seat {} of order {order} owned by {:?}",
                        self.spec.seats[i].id, self.owner[i]
                    ));
                }
            }
            if entry.stage.counts_as_sold() {
                sold += entry.quantity
            } else {
                held += entry.quantity
            }
        }
        if let Some(i) = (0..self.owner.len()).find(|&i| self.free[i] != self.owner[i].is_none()) {
            return Err(format!(
                "seat {} free flag disagrees with its owner",
                self.spec.seats[i].id
            ));
        }
        let owned = self.owner.iter().filter(|o| o.is_some()).count();
        let in_orders: usize = self.orders.values().map(|o| o.seats.len()).sum();
        if owned != in_orders || held != self.held || sold != self.sold {
            return Err(format!(
                "owned {owned} vs in orders {in_orders}; held {held}/{}; sold {sold}/{}",
                self.held, self.sold
            ));
        }
        Ok(())
    }
}
