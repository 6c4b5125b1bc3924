//! The `Supervisor`: activates one `CategoryActor` per ticket category on first use, spreads them
//! over one arbiter per core, passivates idle ones and replaces dead ones.
//!
//! - **One actor per category, always.** Activation goes through a per-category `OnceCell`, so
//!   concurrent first requests load and start exactly one actor.
//! - **Restart.** An actor that panicked is noticed on the next call (its mailbox is closed): the
//!   request that was in flight gets [`ActorError::Restarted`], the registry entry is dropped and
//!   the next call loads the category afresh from Postgres.
//! - **Backpressure.** Each actor has an in-flight budget (`actors.mailbox_capacity`); past it a
//!   call fails at once with [`ActorError::Overloaded`] instead of queueing without bound.

use super::category::{CategoryActor, Channels};
use super::messages::*;
use crate::clock::Clock;
use crate::config::ActorSettings;
use crate::domain::inventory::{Delta, Inventory};
use crate::store::StoreError;
use crate::store::inventory::InventoryStore;
use actix::dev::ToEnvelope;
use actix::prelude::*;
use actix_rt::ArbiterHandle;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, broadcast, watch};

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
    next_arbiter: AtomicUsize,
    slots: DashMap<i64, Arc<Slot>>,
    started: Instant,
}

#[derive(Default)]
struct Slot {
    live: OnceCell<Arc<Live>>,
}

/// A running actor and what callers need without messaging it.
struct Live {
    addr: Addr<CategoryActor>,
    in_flight: AtomicUsize,
    last_used_ms: AtomicU64,
    passivating: AtomicBool,
    snapshot: watch::Receiver<Arc<CategorySnapshot>>,
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
        let inner = Arc::new(Inner {
            store,
            clock,
            arbiters: require_arbiters(spawn_arbiters(threads)),
            settings,
            next_arbiter: AtomicUsize::new(0),
            slots: DashMap::new(),
            started: Instant::now(),
        });
        tokio::spawn(sweep_idle(Arc::downgrade(&inner)));
        Supervisor { inner }
    }

    /// Sends `msg` to the category's actor, activating it if needed.
    pub async fn call<M>(&self, category_id: i64, msg: M) -> Result<M::Result, ActorError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        CategoryActor: Handler<M>,
        <CategoryActor as Actor>::Context: ToEnvelope<CategoryActor, M>,
    {
        // One retry: only when the actor we reached was passivating, i.e. never saw the message.
        for _ in 0..2 {
            let (slot, live) = self.live(category_id).await?;
            if live.in_flight.fetch_add(1, Ordering::AcqRel) >= self.inner.settings.mailbox_capacity
            {
                live.in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(ActorError::Overloaded);
            }
            let _guard = InFlight(&live.in_flight);
            live.last_used_ms
                .store(self.inner.elapsed_ms(), Ordering::Relaxed);
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

    /// Holds tickets (see [`Hold`]).
    pub async fn hold(&self, category_id: i64, hold: Hold) -> Result<Held, ActorError> {
        self.call(category_id, hold).await?
    }

    /// Releases, confirms or returns an order's tickets (see [`Transition`]).
    pub async fn transition(&self, category_id: i64, t: Transition) -> Result<bool, ActorError> {
        self.call(category_id, t).await?
    }

    /// Tells the category about a transition already committed by the caller (see [`Applied`]).
    pub async fn applied(&self, category_id: i64, t: Transition) -> Result<bool, ActorError> {
        self.call(category_id, Applied(t)).await
    }

    /// The latest published seat map, read without messaging the actor.
    pub async fn snapshot(&self, category_id: i64) -> Result<Arc<CategorySnapshot>, ActorError> {
        let (_, live) = self.live(category_id).await?;
        let snapshot = live.snapshot.borrow().clone();
        Ok(snapshot)
    }

    /// Snapshot plus every committed delta after it.
    pub async fn subscribe(
        &self,
        category_id: i64,
    ) -> Result<(Arc<CategorySnapshot>, broadcast::Receiver<Arc<Delta>>), ActorError> {
        self.call(category_id, Subscribe).await
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
        if let Some(live) = slot.live.get() {
            live.passivating.store(true, Ordering::Release);
            let _ = live.addr.send(Unload).await;
        }
        self.inner.forget(category_id, &slot);
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
        self.slots
            .remove_if(&category_id, |_, current| Arc::ptr_eq(current, slot));
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
    let inv = Inventory::load(spec, orders, 0).map_err(ActorError::Load)?;
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
    let channels = Channels {
        snapshot: snapshot_tx,
        deltas,
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

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Arbiters on the running actix System, or on a System of our own when there is none (tests,
/// tools): actors then live on their own threads whatever runtime the caller uses.
fn spawn_arbiters(n: usize) -> Vec<ArbiterHandle> {
    if actix_rt::System::try_current().is_some() {
        return (0..n).map(|_| Arbiter::new().handle()).collect();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("actor-system".into())
        .spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                let _ = tx.send((0..n).map(|_| Arbiter::new().handle()).collect::<Vec<_>>());
            });
            let _ = system.run();
        })
        .map(|_| rx.recv().unwrap_or_default())
        .unwrap_or_default()
}

/// At least one arbiter, or startup stops here: actors cannot live anywhere else.
fn require_arbiters(arbiters: Vec<ArbiterHandle>) -> Vec<ArbiterHandle> {
    assert!(
        !arbiters.is_empty(),
        "could not start any actix arbiter thread"
    );
    arbiters
}
