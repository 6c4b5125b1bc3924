//! `CategoryActor`: the single writer of one ticket category's seats, holds and hold timers.
//!
//! Handlers change the [`Inventory`] synchronously, hand durable changes to the
//! [`InventoryStore`] and keep serving other messages while the write is in flight
//! (`ResponseActFuture` runs beside the mailbox, not in front of it). Only a confirmed write makes
//! a change visible: then the delta is broadcast, the snapshot marked dirty and timers adjusted.

use super::deadlines::Deadlines;
use super::messages::*;
use crate::clock::Clock;
use crate::config::ActorSettings;
use crate::domain::inventory::{
    Change, ChangeKind, Delta, Inventory, InventoryError, OrderNo, SeatInfo,
};
use crate::reconcile::mirror::{MirrorSink, MirrorUpdate};
use crate::store::StoreError;
use crate::store::inventory::InventoryStore;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// Owns one category. Created by the [`Supervisor`](super::Supervisor) with state loaded from
/// Postgres.
pub struct CategoryActor {
    inv: Inventory,
    seats: Arc<[SeatInfo]>,
    store: Arc<dyn InventoryStore>,
    clock: Arc<dyn Clock>,
    settings: ActorSettings,
    deadlines: Deadlines,
    /// The single timer, armed for this deadline (see [`Deadlines`] for why only one).
    wakeup: Option<(DateTime<Utc>, SpawnHandle)>,
    snapshot: watch::Sender<Arc<CategorySnapshot>>,
    deltas: broadcast::Sender<Arc<Delta>>,
    reloads: mpsc::UnboundedSender<ReloadRequest>,
    mirror: Option<MirrorSink>,
    dirty: bool,
    totals: Totals,
    /// Reservations waiting for [`Settle`], with the timer that abandons them.
    reserved: HashMap<OrderNo, (Change, SpawnHandle)>,
}

/// The channels an actor publishes on; created by the supervisor so readers never need to
/// message the actor.
pub struct Channels {
    /// Latest committed seat map.
    pub snapshot: watch::Sender<Arc<CategorySnapshot>>,
    /// Every committed delta.
    pub deltas: broadcast::Sender<Arc<Delta>>,
    /// Where an actor that stopped to reload asks to be started again at once (its holds'
    /// timers must not wait for the next buyer to touch the category).
    pub reloads: mpsc::UnboundedSender<ReloadRequest>,
    /// The Redis read-model mirror, told of every committed change (None: no mirror).
    pub mirror: Option<MirrorSink>,
}

/// "Category `.0`, whose actor was `.1`, stopped to reload from Postgres: start it again."
/// The address lets the supervisor replace exactly that actor and not a newer one.
pub type ReloadRequest = (i64, Addr<CategoryActor>);

impl CategoryActor {
    /// An actor over loaded state.
    pub fn new(
        inv: Inventory,
        store: Arc<dyn InventoryStore>,
        clock: Arc<dyn Clock>,
        settings: ActorSettings,
        channels: Channels,
    ) -> Self {
        CategoryActor {
            seats: inv.spec().seats.clone().into(),
            inv,
            store,
            clock,
            settings,
            deadlines: Deadlines::default(),
            wakeup: None,
            snapshot: channels.snapshot,
            deltas: channels.deltas,
            reloads: channels.reloads,
            mirror: channels.mirror,
            dirty: true,
            totals: Totals::default(),
            reserved: HashMap::new(),
        }
    }

    /// The snapshot a fresh subscriber or seat-map request gets.
    pub fn snapshot_of(inv: &Inventory, seats: Arc<[SeatInfo]>) -> CategorySnapshot {
        CategorySnapshot {
            category_id: inv.spec().category_id,
            seq: inv.seq(),
            counts: inv.counts(),
            in_flight: inv.in_flight(),
            seats,
            statuses: inv.seat_statuses(),
        }
    }

    /// Hands the mirror everything this actor loaded from Postgres: the mirror starts over
    /// from the truth whenever an actor (re)starts.
    fn mirror_whole_state(&self) {
        let Some(mirror) = &self.mirror else { return };
        let seats = self
            .seats
            .iter()
            .zip(self.inv.seat_statuses())
            .map(|(seat, status)| (seat.id, status))
            .collect();
        mirror.note(MirrorUpdate::Reset {
            category_id: self.inv.spec().category_id,
            counts: self.inv.counts(),
            seats,
        });
    }

    fn publish_snapshot_if_dirty(&mut self) {
        if self.dirty {
            self.dirty = false;
            self.snapshot
                .send_replace(Arc::new(Self::snapshot_of(&self.inv, self.seats.clone())));
        }
    }

    fn arm_timer(&mut self, order: OrderNo, expires_at: DateTime<Utc>, ctx: &mut Context<Self>) {
        self.deadlines.insert(order, expires_at);
        self.schedule_wakeup(ctx);
    }

    /// A cancelled deadline may leave the wakeup armed early; it then finds nothing due.
    fn cancel_timer(&mut self, order: OrderNo) {
        self.deadlines.remove(order);
    }

    /// Makes sure the one timer fires no later than the earliest deadline.
    fn schedule_wakeup(&mut self, ctx: &mut Context<Self>) {
        let Some(next) = self.deadlines.next() else {
            return;
        };
        if let Some((armed_for, handle)) = self.wakeup.take() {
            if armed_for <= next {
                self.wakeup = Some((armed_for, handle));
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = (next - self.clock.now()).to_std().unwrap_or(Duration::ZERO);
        let handle = ctx.run_later(wait, |act, ctx| {
            act.wakeup = None;
            act.expire_due(ctx);
        });
        self.wakeup = Some((next, handle));
    }

    fn expire_due(&mut self, ctx: &mut Context<Self>) {
        for order in self.deadlines.pop_due(self.clock.now()) {
            self.expire(order, ctx);
        }
        self.schedule_wakeup(ctx);
    }

    /// Deadline passed: release the hold. If the order is mid-change (e.g. a payment being
    /// confirmed) or the write fails, look again after `expiry_retry_ms`.
    fn expire(&mut self, order: OrderNo, ctx: &mut Context<Self>) {
        let change = match self.inv.begin(ChangeKind::Release, order) {
            Ok(Some(change)) => change,
            Err(InventoryError::Busy(_)) => return self.retry_expiry(order, ctx),
            Ok(None) | Err(_) => return,
        };
        ctx.spawn(self.persist(change).map(move |res, act, ctx| {
            if res.is_ok() {
                act.totals.expiries += 1;
            } else {
                act.retry_expiry(order, ctx);
            }
        }));
    }

    fn retry_expiry(&mut self, order: OrderNo, ctx: &mut Context<Self>) {
        let retry = chrono::Duration::milliseconds(self.settings.expiry_retry_ms as i64);
        self.arm_timer(order, self.clock.now() + retry, ctx);
    }

    /// Writes `change`, then applies the outcome to memory and publishes what became visible.
    fn persist(
        &mut self,
        change: Change,
    ) -> impl ActorFuture<Self, Output = Result<(), ActorError>> + 'static {
        let write = self.store.apply(change.clone());
        write.into_actor(self).map(move |res, act, ctx| {
            act.finish(&change, res.is_ok(), ctx);
            res.map_err(|e| {
                tracing::warn!(order_no = change.order_no, kind = ?change.kind, error = %e, "inventory write failed");
                if matches!(e, StoreError::Conflict(_)) {
                    act.reload(change.order_no, "rows were not in the state memory expected", ctx);
                }
                ActorError::CommitFailed(e.to_string())
            })
        })
    }

    /// Applies the outcome of persisting `change` to memory and publishes what changed: a
    /// committed delta, or just counts (a dropped pending hold frees tickets the published
    /// counts still include).
    fn finish(&mut self, change: &Change, persisted: bool, ctx: &mut Context<Self>) {
        match self.inv.finish(change, persisted) {
            Some(delta) => self.committed(change, delta, ctx),
            None => self.counts_changed(),
        }
    }

    /// The published snapshot is stale: counts include pending holds, so taking or dropping one
    /// changes them even when no seat changes colour.
    fn counts_changed(&mut self) {
        self.dirty = true;
        if self.settings.snapshot_interval_ms == 0 {
            self.publish_snapshot_if_dirty();
        }
    }

    /// Memory no longer matches Postgres (another transaction moved this order's rows, e.g. a
    /// payment committed while the hold was expiring). Stop; the supervisor loads the truth on
    /// the next call. Memory was stricter than Postgres meanwhile, so nothing was sold twice.
    fn reload(&mut self, order: OrderNo, why: &str, ctx: &mut Context<Self>) {
        tracing::error!(
            order_no = order,
            why,
            "category diverged from Postgres; reloading it"
        );
        if ctx.state() == ActorState::Running {
            // Unbounded: at most one request per stopping actor, drained by the supervisor.
            let _ = self
                .reloads
                .send((self.inv.spec().category_id, ctx.address()));
        }
        ctx.stop();
    }

    /// Applies a transition the caller has already committed; see [`Applied`].
    fn apply_committed(&mut self, msg: Applied, ctx: &mut Context<Self>) -> bool {
        let Transition { kind, order_no } = msg.0;
        match self.inv.begin(kind, order_no) {
            Ok(Some(change)) => {
                self.finish(&change, true, ctx);
                true
            }
            Ok(None) => false,
            Err(InventoryError::Busy(_)) => {
                // Its own write for this order is in flight (it will find the rows moved and
                // fail): look again once it has settled.
                let retry = Duration::from_millis(self.settings.expiry_retry_ms);
                ctx.notify_later(msg, retry);
                false
            }
            Err(_) => {
                self.reload(
                    order_no,
                    "a committed transition found the order elsewhere",
                    ctx,
                );
                false
            }
        }
    }

    fn committed(&mut self, change: &Change, delta: Delta, ctx: &mut Context<Self>) {
        match change.kind {
            ChangeKind::Hold => {
                self.totals.holds += 1;
                if let Some(at) = change.expires_at {
                    self.arm_timer(change.order_no, at, ctx);
                }
            }
            ChangeKind::Release => {
                self.totals.releases += 1;
                self.cancel_timer(change.order_no);
            }
            ChangeKind::Confirm => {
                self.totals.sales += 1;
                self.cancel_timer(change.order_no);
            }
            ChangeKind::Return => self.totals.returns += 1,
        }
        self.counts_changed();
        if let Some(mirror) = &self.mirror {
            mirror.note(MirrorUpdate::Changed {
                category_id: change.category_id,
                kind: change.kind,
                quantity: change.quantity,
                seats: delta.changes.clone(),
            });
        }
        // No subscribers is fine: the send only fails when nobody listens.
        let _ = self.deltas.send(Arc::new(delta));
    }
}

impl Actor for CategoryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.mirror_whole_state();
        let holds: Vec<_> = self.inv.holds().collect();
        for (order, expires_at) in holds {
            self.arm_timer(order, expires_at, ctx);
        }
        self.publish_snapshot_if_dirty();
        // 0 = publish on every change (no coalescing timer; tests with paused time use it).
        if self.settings.snapshot_interval_ms > 0 {
            let every = Duration::from_millis(self.settings.snapshot_interval_ms);
            ctx.run_interval(every, |act, _| act.publish_snapshot_if_dirty());
        }
    }
}

impl CategoryActor {
    fn take(&mut self, hold: &Hold) -> Result<Change, ActorError> {
        let taken = match &hold.selection {
            Selection::Seats(seats) => self.inv.hold_seats(hold.order_no, seats, hold.expires_at),
            Selection::Best(quantity) => {
                self.inv
                    .hold_best(hold.order_no, *quantity, hold.expires_at)
            }
        };
        taken.map_err(ActorError::Inventory)
    }

    /// A settle for a reservation this actor does not have: it timed out, or another actor
    /// (which this one replaced) took it. A committed one is adopted when its tickets are free
    /// here; otherwise memory cannot be trusted and the actor reloads.
    fn settle_unknown_reservation(
        &mut self,
        order: OrderNo,
        outcome: Outcome,
        adopt: Option<Change>,
        ctx: &mut Context<Self>,
    ) {
        if outcome == Outcome::NotCommitted || self.inv.stage(order).is_some() {
            return;
        }
        if outcome == Outcome::Committed
            && let Some(change) = adopt
            && let Ok(delta) = self.inv.adopt(&change)
        {
            tracing::info!(
                order_no = order,
                "adopted a hold committed by a previous actor"
            );
            self.committed(&change, delta, ctx);
            return;
        }
        self.reload(order, "a reservation it never saw may have committed", ctx);
    }

    fn settle(
        &mut self,
        order: OrderNo,
        outcome: Outcome,
        adopt: Option<Change>,
        ctx: &mut Context<Self>,
    ) -> bool {
        let Some((change, timer)) = self.reserved.remove(&order) else {
            self.settle_unknown_reservation(order, outcome, adopt, ctx);
            return false;
        };
        ctx.cancel_future(timer);
        self.finish(&change, outcome == Outcome::Committed, ctx);
        if outcome == Outcome::Unknown {
            self.reload(
                order,
                "the store's answer contradicts memory or is unknown",
                ctx,
            );
        }
        true
    }
}

impl Handler<Reserve> for CategoryActor {
    type Result = Result<Reserved, ActorError>;

    fn handle(&mut self, msg: Reserve, ctx: &mut Context<Self>) -> Self::Result {
        let hold = msg.0;
        let change = self.take(&hold)?;
        self.counts_changed();
        let order = hold.order_no;
        let timeout = Duration::from_millis(self.settings.reservation_timeout_ms);
        let timer = ctx.run_later(timeout, move |act, ctx| {
            if act.settle(order, Outcome::NotCommitted, None, ctx) {
                tracing::warn!(order_no = order, "reservation never settled; released");
            }
        });
        self.reserved.insert(order, (change.clone(), timer));
        let held = Held {
            seats: change.seats.clone(),
            quantity: change.quantity,
            expires_at: hold.expires_at,
        };
        Ok(Reserved { held, change })
    }
}

impl Handler<Settle> for CategoryActor {
    type Result = bool;

    fn handle(&mut self, msg: Settle, ctx: &mut Context<Self>) -> bool {
        self.settle(msg.order_no, msg.outcome, msg.change, ctx)
    }
}

impl Handler<Transition> for CategoryActor {
    type Result = ResponseActFuture<Self, Result<bool, ActorError>>;

    fn handle(&mut self, msg: Transition, _: &mut Context<Self>) -> Self::Result {
        match self.inv.begin(msg.kind, msg.order_no) {
            Ok(Some(change)) => Box::pin(self.persist(change).map(|res, _, _| res.map(|_| true))),
            Ok(None) => Box::pin(fut::ready(Ok(false))),
            Err(e) => Box::pin(fut::ready(Err(ActorError::Inventory(e)))),
        }
    }
}

impl Handler<Applied> for CategoryActor {
    type Result = bool;

    fn handle(&mut self, msg: Applied, ctx: &mut Context<Self>) -> bool {
        self.apply_committed(msg, ctx)
    }
}

impl Handler<GetSnapshot> for CategoryActor {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Context<Self>) -> Self::Result {
        self.publish_snapshot_if_dirty();
        MessageResult(self.snapshot.borrow().clone())
    }
}

impl Handler<GetStats> for CategoryActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(CategoryStats {
            category_id: self.inv.spec().category_id,
            capacity: self.inv.spec().capacity,
            counts: self.inv.counts(),
            seq: self.inv.seq(),
            armed_timers: self.deadlines.len(),
            totals: self.totals,
        })
    }
}

impl Handler<Passivate> for CategoryActor {
    type Result = bool;

    fn handle(&mut self, _: Passivate, ctx: &mut Context<Self>) -> bool {
        if self.inv.has_live_holds() {
            return false;
        }
        ctx.stop();
        true
    }
}

impl Handler<Unload> for CategoryActor {
    type Result = ();

    fn handle(&mut self, _: Unload, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Crash> for CategoryActor {
    type Result = ();

    fn handle(&mut self, msg: Crash, _: &mut Context<Self>) {
        panic!(
            "fault injected into category {}: {}",
            self.inv.spec().category_id,
            msg.0
        );
    }
}
