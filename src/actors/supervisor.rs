//! The `Supervisor`: activates one `CategoryActor` per ticket category on first use, spreads them
//! over one arbiter per core, passivates idle ones and replaces dead ones.
//!
//! - **One actor per category, always.** Activation goes through a per-category `OnceCell`, so
//!   concurrent first requests load and start exactly one actor.
//! - **Restart.** An actor that panicked is noticed on the next call (its mailbox is closed): the
//!   request that was in flight gets [`ActorError::Restarted`], the registry entry is dropped and
//!   the next call loads the category afresh from Postgres.
//! - **Backpressure.** Each actor has an in-flight budget (`actors.mailbox_capacity`); past it a
//!   new request ([`Supervisor::call`]) fails at once with [`ActorError::Overloaded`] instead of
//!   queueing without bound. Messages that report an outcome ([`Supervisor::report`]: settle,
//!   applied, release) are exempt: refusing one would leave memory contradicting Postgres, and
//!   each is bounded by a request that already passed the budget.
//! - **Holds never wait for a buyer.** Every category with live holds in Postgres has an actor:
//!   the keeper activates them at startup and every `actors.live_holds_sweep_secs`, and an
//!   actor that stopped to reload is started again at once, so expiry timers always run.

use super::category::{CategoryActor, Channels, ReloadRequest};
use super::messages::*;
use crate::clock::Clock;
use crate::config::ActorSettings;
use crate::domain::inventory::{Delta, Inventory, SeatId};
use crate::reconcile::mirror::MirrorSink;
use crate::store::StoreError;
use crate::store::inventory::InventoryStore;
use actix::dev::ToEnvelope;
use actix::prelude::*;
use actix_rt::ArbiterHandle;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, broadcast, mpsc, watch};

/// Deltas a slow subscriber may fall behind before it is told to resync (bounded memory).
const DELTA_BUFFER: usize = 1024;

/// Cheap to clone; all clones share one registry.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn InventoryStore>,
    clock: Arc<dyn Clock>,
    settings: ActorSettings,
    arbiters: Vec<ArbiterHandle>,
    /// The actix System started for these arbiters when there was none; stopped (with its
    /// threads) when the last clone of the supervisor goes.
    _own_system: Option<OwnSystem>,
    next_arbiter: AtomicUsize,
    slots: DashMap<i64, Arc<Slot>>,
    /// Which category each seat of an active category belongs to, so an order naming seats
    /// finds its categories in time proportional to the seats it names.
    seat_categories: DashMap<SeatId, i64>,
    reloads: mpsc::UnboundedSender<ReloadRequest>,
    started: Instant,
    /// Set once at startup when the server keeps a Redis mirror; actors started afterwards
    /// report to it.
    mirror: std::sync::OnceLock<MirrorSink>,
    /// How long holds took per category (reservation round trips), for the admin stream.
    hold_latency: DashMap<i64, Arc<HoldLatency>>,
}

#[derive(Default)]
struct Slot {
    live: OnceCell<Arc<Live>>,
}

/// One category's hold latencies: the admin stream's summary and the Prometheus histogram.
struct HoldLatency {
    summary: crate::monitor::LatencySummary,
    histogram: metrics::Histogram,
}

/// A running actor and what callers need without messaging it.
struct Live {
    addr: Addr<CategoryActor>,
    in_flight: AtomicUsize,
    last_used_ms: AtomicU64,
    passivating: AtomicBool,
    snapshot: watch::Receiver<Arc<CategorySnapshot>>,
    /// Weak, so the channel closes when the actor (the only strong sender) ends: a watcher then
    /// knows to attach to its replacement.
    deltas: broadcast::WeakSender<Arc<Delta>>,
    /// Messages delivered to the actor (requests and reports), for the admin stream and to show
    /// that readers never message it.
    messages: AtomicU64,
}

/// A category's published seat map and its committed deltas, from [`Supervisor::watch`].
pub struct Watched {
    /// The latest published snapshot; changes at most every `actors.snapshot_interval_ms`.
    pub snapshot: watch::Receiver<Arc<CategorySnapshot>>,
    /// Every committed delta from the moment of the call.
    pub deltas: broadcast::Receiver<Arc<Delta>>,
}

impl Live {
    /// Someone follows this actor's deltas (a live seat map is open), so it is not idle.
    fn watched(&self) -> bool {
        self.deltas
            .upgrade()
            .is_some_and(|sender| sender.receiver_count() > 0)
    }
}

/// Decrements the in-flight count when the call ends, however it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Supervisor {
    /// A supervisor whose actors load from and write to `store`. Must be called inside a tokio
    /// runtime (the idle sweeper runs there).
    pub fn new(
        store: Arc<dyn InventoryStore>,
        clock: Arc<dyn Clock>,
        settings: ActorSettings,
    ) -> Self {
        let threads = if settings.arbiters == 0 {
            num_cpus()
        } else {
            settings.arbiters
        };
        let (reloads, reload_requests) = mpsc::unbounded_channel();
        let (arbiters, own_system) = spawn_arbiters(threads);
        let inner = Arc::new(Inner {
            store,
            clock,
            arbiters: require_arbiters(arbiters),
            _own_system: own_system,
            settings,
            next_arbiter: AtomicUsize::new(0),
            slots: DashMap::new(),
            seat_categories: DashMap::new(),
            reloads,
            started: Instant::now(),
            mirror: std::sync::OnceLock::new(),
            hold_latency: DashMap::new(),
        });
        tokio::spawn(sweep_idle(Arc::downgrade(&inner)));
        tokio::spawn(keep_holds_live(Arc::downgrade(&inner), reload_requests));
        Supervisor { inner }
    }

    /// Sends a request to the category's actor, activating it if needed; refused with
    /// [`ActorError::Overloaded`] when the actor's in-flight budget is spent.
    pub async fn call<M>(&self, category_id: i64, msg: M) -> Result<M::Result, ActorError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        CategoryActor: Handler<M>,
        <CategoryActor as Actor>::Context: ToEnvelope<CategoryActor, M>,
    {
        self.send(category_id, msg, Budget::Limited).await
    }

    /// Tells the category's actor an outcome it must learn (a reservation settled, a transition
    /// committed elsewhere, a release): never refused for backpressure, and delivered once more
    /// to the replacement if the actor died meanwhile (the message is idempotent, and a
    /// replacement that loaded before the outcome committed reloads when it sees it).
    pub async fn report<M>(&self, category_id: i64, msg: M) -> Result<M::Result, ActorError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        CategoryActor: Handler<M>,
        <CategoryActor as Actor>::Context: ToEnvelope<CategoryActor, M>,
    {
        match self.send(category_id, msg.clone(), Budget::Exempt).await {
            Err(ActorError::Restarted) => self.send(category_id, msg, Budget::Exempt).await,
            other => other,
        }
    }

    async fn send<M>(
        &self,
        category_id: i64,
        msg: M,
        budget: Budget,
    ) -> Result<M::Result, ActorError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        CategoryActor: Handler<M>,
        <CategoryActor as Actor>::Context: ToEnvelope<CategoryActor, M>,
    {
        // One retry: only when the actor we reached was passivating, i.e. never saw the message.
        for _ in 0..2 {
            let (slot, live) = self.live(category_id).await?;
            let before = live.in_flight.fetch_add(1, Ordering::AcqRel);
            if budget == Budget::Limited && before >= self.inner.settings.mailbox_capacity {
                live.in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(ActorError::Overloaded);
            }
            let _guard = InFlight(&live.in_flight);
            live.last_used_ms
                .store(self.inner.elapsed_ms(), Ordering::Relaxed);
            live.messages.fetch_add(1, Ordering::Relaxed);
            match live.addr.send(msg.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(_) => {
                    self.inner.forget(category_id, &slot);
                    if !live.passivating.load(Ordering::Acquire) {
                        tracing::error!(
                            category_id,
                            "category actor died during a request; it will be reloaded"
                        );
                        return Err(ActorError::Restarted);
                    }
                }
            }
        }
        Err(ActorError::Restarted)
    }

    /// Releases, confirms or returns an order's tickets (see [`Transition`]); an outcome the
    /// actor must learn, so not refused for backpressure.
    pub async fn transition(&self, category_id: i64, t: Transition) -> Result<bool, ActorError> {
        self.report(category_id, t).await?
    }

    /// Tells the category about a transition already committed by the caller (see [`Applied`]).
    pub async fn applied(&self, category_id: i64, t: Transition) -> Result<bool, ActorError> {
        self.report(category_id, Applied(t)).await
    }

    /// Tells the category how a reservation's transaction ended (see [`Settle`]).
    pub async fn settle(&self, category_id: i64, settle: Settle) -> Result<bool, ActorError> {
        self.report(category_id, settle).await
    }

    /// The category of `seat_id` if its category's actor is active (see `seat_categories`).
    pub fn category_of_seat(&self, seat_id: SeatId) -> Option<i64> {
        self.inner.seat_categories.get(&seat_id).map(|c| *c)
    }

    /// Starts the actor of every category that has live holds in the store and none running.
    /// Answers how many were started.
    pub async fn activate_live_holds(&self) -> Result<usize, ActorError> {
        let categories = self
            .inner
            .store
            .live_categories()
            .await
            .map_err(|e| ActorError::Load(e.to_string()))?;
        let mut started = 0;
        for category_id in categories {
            let running = self
                .inner
                .slots
                .get(&category_id)
                .is_some_and(|s| s.live.get().is_some_and(|l| l.addr.connected()));
            if !running && self.live(category_id).await.is_ok() {
                started += 1;
            }
        }
        Ok(started)
    }

    /// The latest published seat map, read without messaging the actor.
    pub async fn snapshot(&self, category_id: i64) -> Result<Arc<CategorySnapshot>, ActorError> {
        let (_, live) = self.live(category_id).await?;
        let snapshot = live.snapshot.borrow().clone();
        Ok(snapshot)
    }

    /// The running actor's latest published seat map, or `None` when no actor runs for the
    /// category: never starts one. For anonymous reads (catalog pages, REST seat maps), which
    /// must not let a crawler load every category of the catalog into memory.
    pub fn published(&self, category_id: i64) -> Option<Arc<CategorySnapshot>> {
        let slot = self.inner.slots.get(&category_id)?;
        let live = slot.live.get()?;
        live.addr
            .connected()
            .then(|| live.snapshot.borrow().clone())
    }

    /// The category's published snapshots and every committed delta from now on, without
    /// messaging the actor (activating it if needed). The snapshot may be older than the first
    /// delta received; deltas carry `seq` so the watcher can tell (see `realtime::feed`). Both
    /// close when this actor ends; the watcher then calls again for its replacement. An actor
    /// with watchers is not passivated.
    pub async fn watch(&self, category_id: i64) -> Result<Watched, ActorError> {
        loop {
            let (slot, live) = self.live(category_id).await?;
            if let Some(sender) = live.deltas.upgrade() {
                let deltas = sender.subscribe();
                return Ok(Watched {
                    snapshot: live.snapshot.clone(),
                    deltas,
                });
            }
            self.inner.forget(category_id, &slot);
        }
    }

    /// Messages delivered to the category's current actor so far (0 when none is active).
    pub fn messages_delivered(&self, category_id: i64) -> u64 {
        self.inner
            .slots
            .get(&category_id)
            .and_then(|s| s.live.get().map(|l| l.messages.load(Ordering::Relaxed)))
            .unwrap_or(0)
    }

    /// Calls queued at or running in the category's actor right now (its mailbox depth as the
    /// admin stream shows it); 0 when the actor is not active.
    pub fn queue_depth(&self, category_id: i64) -> usize {
        self.inner
            .slots
            .get(&category_id)
            .and_then(|s| s.live.get().map(|l| l.in_flight.load(Ordering::Relaxed)))
            .unwrap_or(0)
    }

    /// Stops the category's actor if it runs; the next call loads the category afresh. Calls in
    /// flight at that moment may get [`ActorError::Restarted`].
    pub async fn unload(&self, category_id: i64) {
        let Some(slot) = self.inner.slots.get(&category_id).map(|s| s.clone()) else {
            return;
        };
        // An activation in progress finishes first: dropping its slot meanwhile would orphan the
        // actor it starts — running, unreachable, and beside the next one for the category.
        let activation = activate(self.inner.clone(), category_id);
        if let Ok(live) = slot.live.get_or_try_init(|| activation).await {
            live.passivating.store(true, Ordering::Release);
            let _ = live.addr.send(Unload).await;
        }
        self.inner.forget(category_id, &slot);
    }

    /// Counts one hold's round trip to `category_id`'s actor (request to reservation answer).
    /// On the order path: a read lock and two counters; the map entry and the labelled
    /// Prometheus histogram are made once per category, not per hold.
    pub fn record_hold(&self, category_id: i64, took: std::time::Duration) {
        let known = self.inner.hold_latency.get(&category_id).map(|h| h.clone());
        let latency = known.unwrap_or_else(|| {
            let made = self.inner.hold_latency.entry(category_id).or_insert_with(|| {
                Arc::new(HoldLatency {
                    summary: Default::default(),
                    histogram: metrics::histogram!("hold_latency_seconds", "category" => category_id.to_string()),
                })
            });
            made.clone()
        });
        latency.summary.record(took);
        latency.histogram.record(took.as_secs_f64());
    }

    /// Holds' round trips to `category_id` so far, per latency bucket (None: no hold yet).
    pub fn hold_latency_counts(
        &self,
        category_id: i64,
    ) -> Option<[u64; crate::monitor::LATENCY_BUCKETS]> {
        self.inner
            .hold_latency
            .get(&category_id)
            .map(|h| h.summary.counts())
    }

    /// Makes every actor started from now on report its committed changes to `sink` (the
    /// Redis mirror); a second call is ignored.
    pub fn mirror_to(&self, sink: MirrorSink) {
        let _ = self.inner.mirror.set(sink);
    }

    /// Categories whose actor is running here (the admin stream's and the reconciler's list of
    /// hot categories), in id order.
    pub fn active_categories(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .inner
            .slots
            .iter()
            .filter(|s| s.live.get().is_some_and(|l| l.addr.connected()))
            .map(|s| *s.key())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Number of live actors.
    pub fn active(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter(|s| s.live.get().is_some_and(|l| l.addr.connected()))
            .count()
    }

    /// The category's live actor, activating (or re-activating a dead one) as needed.
    async fn live(&self, category_id: i64) -> Result<(Arc<Slot>, Arc<Live>), ActorError> {
        loop {
            let slot = self.inner.slots.entry(category_id).or_default().clone();
            let inner = self.inner.clone();
            let live = slot
                .live
                .get_or_try_init(|| activate(inner, category_id))
                .await?
                .clone();
            if live.addr.connected() {
                return Ok((slot, live));
            }
            self.inner.forget(category_id, &slot);
        }
    }
}

impl Inner {
    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Drops the registry entry if it is still `slot` (a newer actor may already be there).
    fn forget(&self, category_id: i64, slot: &Arc<Slot>) {
        let removed = self
            .slots
            .remove_if(&category_id, |_, current| Arc::ptr_eq(current, slot));
        if let Some((_, slot)) = removed
            && let Some(live) = slot.live.get()
        {
            for seat in live.snapshot.borrow().seats.iter() {
                self.seat_categories.remove(&seat.id);
            }
        }
    }

    /// Drops the registry entry if it still names the actor at `addr`.
    fn forget_actor(&self, category_id: i64, addr: &Addr<CategoryActor>) {
        let slot = self.slots.get(&category_id).map(|s| s.clone());
        if let Some(slot) = slot
            && slot.live.get().is_some_and(|l| l.addr == *addr)
        {
            self.forget(category_id, &slot);
        }
    }

    fn next_arbiter(&self) -> &ArbiterHandle {
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed);
        &self.arbiters[i % self.arbiters.len()]
    }
}

async fn activate(inner: Arc<Inner>, category_id: i64) -> Result<Arc<Live>, ActorError> {
    let (spec, orders) = inner.store.load(category_id).await.map_err(|e| match e {
        StoreError::NotFound(_) => ActorError::NotFound(category_id),
        other => ActorError::Load(other.to_string()),
    })?;
    let seq_base = spec.seq_base;
    let inv = Inventory::load(spec, orders, seq_base).map_err(ActorError::Load)?;
    for seat in &inv.spec().seats {
        inner.seat_categories.insert(seat.id, category_id);
    }
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(CategoryActor::snapshot_of(
        &inv,
        inv.spec().seats.clone().into(),
    )));
    let (deltas, _) = broadcast::channel(DELTA_BUFFER);
    let (store, clock, settings) = (
        inner.store.clone(),
        inner.clock.clone(),
        inner.settings.clone(),
    );
    let weak_deltas = deltas.downgrade();
    let channels = Channels {
        snapshot: snapshot_tx,
        deltas,
        reloads: inner.reloads.clone(),
        mirror: inner.mirror.get().cloned(),
    };
    let addr = CategoryActor::start_in_arbiter(inner.next_arbiter(), move |_| {
        CategoryActor::new(inv, store, clock, settings, channels)
    });
    tracing::info!(category_id, "category actor started");
    Ok(Arc::new(Live {
        addr,
        in_flight: AtomicUsize::new(0),
        last_used_ms: AtomicU64::new(inner.elapsed_ms()),
        passivating: AtomicBool::new(false),
        snapshot: snapshot_rx,
        deltas: weak_deltas,
        messages: AtomicU64::new(0),
    }))
}

/// Stops actors that hold nothing and saw no call for `idle_passivate_secs`.
async fn sweep_idle(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let idle_ms = strong.settings.idle_passivate_secs * 1000;
        let period = Duration::from_millis((idle_ms / 4).clamp(100, 60_000));
        drop(strong);
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else { return };
        let now = inner.elapsed_ms();
        let idle: Vec<(i64, Arc<Slot>)> = inner
            .slots
            .iter()
            .filter(|e| {
                e.live.get().is_some_and(|l| {
                    now.saturating_sub(l.last_used_ms.load(Ordering::Relaxed)) >= idle_ms
                        && !l.watched()
                })
            })
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        for (category_id, slot) in idle {
            let Some(live) = slot.live.get() else {
                continue;
            };
            live.passivating.store(true, Ordering::Release);
            if matches!(live.addr.send(Passivate).await, Ok(true)) {
                inner.forget(category_id, &slot);
                tracing::info!(category_id, "category actor passivated");
            } else {
                live.passivating.store(false, Ordering::Release);
            }
        }
    }
}

/// Restarts actors that stopped to reload, at once, and every `live_holds_sweep_secs` (and at
/// startup) starts the actor of any category with live holds and none running: expiry timers
/// live in the actors, so a category with holds must always have one.
async fn keep_holds_live(
    inner: std::sync::Weak<Inner>,
    mut reloads: mpsc::UnboundedReceiver<ReloadRequest>,
) {
    let Some(period) = inner.upgrade().map(|i| i.settings.live_holds_sweep_secs) else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(period.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let request = tokio::select! {
            request = reloads.recv() => request,
            _ = tick.tick() => None,
        };
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let supervisor = Supervisor { inner: strong };
        match request {
            Some((category_id, addr)) => {
                supervisor.inner.forget_actor(category_id, &addr);
                if let Err(e) = supervisor.live(category_id).await {
                    tracing::warn!(category_id, error = %e, "reload failed; the sweep tries again");
                }
            }
            None if period == 0 => {}
            None => match supervisor.activate_live_holds().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(started = n, "actors started for categories with holds"),
                Err(e) => {
                    tracing::warn!(error = %e, "live-hold sweep failed; next round tries again")
                }
            },
        }
    }
}

/// Whether a message counts against the actor's in-flight budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    /// New work: refused once the budget is spent.
    Limited,
    /// An outcome the actor must learn: always delivered.
    Exempt,
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// An actix System this process started itself, stopped when dropped: its thread and its
/// arbiters' threads end (a test's server must not leave them behind).
struct OwnSystem(actix_rt::System);

impl Drop for OwnSystem {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Arbiters on the running actix System, or on a System of our own when there is none (tests,
/// tools): actors then live on their own threads whatever runtime the caller uses.
fn spawn_arbiters(n: usize) -> (Vec<ArbiterHandle>, Option<OwnSystem>) {
    if actix_rt::System::try_current().is_some() {
        return ((0..n).map(|_| Arbiter::new().handle()).collect(), None);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let started = std::thread::Builder::new()
        .name("actor-system".into())
        .spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                let arbiters = (0..n).map(|_| Arbiter::new().handle()).collect::<Vec<_>>();
                let _ = tx.send((arbiters, actix_rt::System::current()));
            });
            let _ = system.run();
        });
    match started.map(|_| rx.recv()) {
        Ok(Ok((arbiters, system))) => (arbiters, Some(OwnSystem(system))),
        _ => (Vec::new(), None),
    }
}

/// At least one arbiter, or startup stops here: actors cannot live anywhere else.
fn require_arbiters(arbiters: Vec<ArbiterHandle>) -> Vec<ArbiterHandle> {
    assert!(
        !arbiters.is_empty(),
        "could not start any actix arbiter thread"
    );
    arbiters
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every server a test starts outside an actix System gets a System of its own; dropping
    /// the supervisor must end it and its arbiters' threads, or each test leaks them.
    #[test]
    fn an_own_system_ends_its_arbiters_when_dropped() {
        let (arbiters, own) = spawn_arbiters(2);
        assert!(own.is_some(), "no System was running, so one was started");
        assert!(arbiters.iter().all(|a| a.spawn(async {})), "arbiters run");
        drop(own);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while arbiters.iter().any(|a| a.spawn(async {})) {
            assert!(
                Instant::now() < deadline,
                "arbiters still run 5 s after the drop"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
