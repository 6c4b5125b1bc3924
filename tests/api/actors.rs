//! Category actors against real Postgres: a seeded simulation against a simple model, restarts,
//! commit failures, backpressure and multi-category rollback.
//!
//! Reproduce a simulation run with `SIM_SEED=<seed printed on failure> dev/test.sh -- actors`.

use crate::helpers::{TestDb, actor_settings, create_program, hold_via, poll_until, within};
use boxoffice::actors::{
    ActorError, CategorySnapshot, Crash, GetSnapshot, GetStats, Held, Hold, Outcome, Reserve,
    Selection, Settle, Supervisor, Transition,
};
use boxoffice::clock::SystemClock;
use boxoffice::domain::inventory::{
    CategorySpec, Change, ChangeKind, InventoryError, LoadedOrder, SeatStatus,
};
use boxoffice::store::catalog::Layout;
use boxoffice::store::inventory::{InventoryStore, PgInventoryStore};
use boxoffice::store::{PgPool, Store, StoreError};
use chrono::{Duration, Utc};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The real Postgres store with a switch that makes the next write fail without writing.
struct FlakyStore {
    inner: PgInventoryStore,
    fail_next: AtomicBool,
}

impl InventoryStore for FlakyStore {
    fn load(
        &self,
        category_id: i64,
    ) -> BoxFuture<'static, Result<(CategorySpec, Vec<LoadedOrder>), StoreError>> {
        self.inner.load(category_id)
    }
    fn apply(&self, change: Change) -> BoxFuture<'static, Result<(), StoreError>> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            // What a Postgres outage looks like to the actor: no answer in time.
            let outage = StoreError::Timeout {
                store: Store::Postgres,
                after: std::time::Duration::from_secs(3),
            };
            return Box::pin(async { Err(outage) });
        }
        self.inner.apply(change)
    }
}

struct Rig {
    pool: PgPool,
    store: Arc<FlakyStore>,
    supervisor: Supervisor,
    seated: i64,
    ga: i64,
    _db: TestDb,
}

const ROWS: i32 = 6;
const COLS: i32 = 8;
const GA_CAPACITY: u32 = 30;
const PRICE: i64 = 5_000;

async fn rig() -> Rig {
    rig_with(actor_settings()).await
}

async fn rig_with(settings: boxoffice::config::ActorSettings) -> Rig {
    let (db, pool, _) = TestDb::migrated().await;
    let (_, cats) = create_program(
        &pool,
        "actors",
        &[
            (
                "Seated",
                PRICE,
                Layout::Seated {
                    rows: ROWS,
                    seats_per_row: COLS,
                },
            ),
            (
                "Standing",
                2_000,
                Layout::General {
                    capacity: GA_CAPACITY as i32,
                },
            ),
        ],
    )
    .await;
    let store = Arc::new(FlakyStore {
        inner: PgInventoryStore::new(pool.clone(), tokio::runtime::Handle::current()),
        fail_next: AtomicBool::new(false),
    });
    let supervisor = Supervisor::new(store.clone(), Arc::new(SystemClock), settings);
    Rig {
        pool,
        store,
        supervisor,
        seated: cats[0],
        ga: cats[1],
        _db: db,
    }
}

impl Rig {
    /// Holds through reserve → write → settle (see `helpers::hold_via`).
    async fn hold(&self, category: i64, hold: Hold) -> Result<Held, ActorError> {
        hold_via(&self.supervisor, &*self.store, category, hold).await
    }

    /// The category's seat map, asked of its actor.
    async fn snapshot(&self, category: i64) -> Arc<CategorySnapshot> {
        self.supervisor.call(category, GetSnapshot).await.unwrap()
    }
}

fn hold(order_no: i64, selection: Selection, expires_in: Duration) -> Hold {
    Hold {
        order_no,
        selection,
        expires_at: Utc::now() + expires_in,
    }
}

/// What the actor should hold, kept by the simplest possible bookkeeping.
#[derive(Default)]
struct Model {
    seat_owner: HashMap<i64, i64>,
    orders: HashMap<i64, ModelOrder>,
    ga_taken: u32,
}

#[derive(Clone)]
struct ModelOrder {
    category: i64,
    seats: Vec<i64>,
    quantity: u32,
    sold: bool,
}

impl Model {
    fn add(&mut self, order: i64, o: ModelOrder, ga: i64) {
        for s in &o.seats {
            assert!(
                self.seat_owner.insert(*s, order).is_none(),
                "seat {s} given to two orders"
            );
        }
        if o.category == ga {
            self.ga_taken += o.quantity;
        }
        self.orders.insert(order, o);
    }

    fn remove(&mut self, order: i64, ga: i64) {
        let o = self.orders.remove(&order).expect("model order");
        for s in &o.seats {
            self.seat_owner.remove(s);
        }
        if o.category == ga {
            self.ga_taken -= o.quantity;
        }
    }

    fn status(&self, seat: i64) -> SeatStatus {
        match self.seat_owner.get(&seat).map(|o| self.orders[o].sold) {
            None => SeatStatus::Available,
            Some(false) => SeatStatus::Held,
            Some(true) => SeatStatus::Sold,
        }
    }

    fn orders_in(&self, category: i64, sold: bool) -> Vec<i64> {
        let mut v: Vec<i64> = self
            .orders
            .iter()
            .filter(|(_, o)| o.category == category && o.sold == sold)
            .map(|(n, _)| *n)
            .collect();
        v.sort();
        v
    }
}

async fn assert_actor_matches(rig: &Rig, model: &Model, step: usize, seed: u64) {
    let snap = rig.snapshot(rig.seated).await;
    for (seat, status) in snap.seats.iter().zip(&snap.statuses) {
        assert_eq!(
            *status,
            model.status(seat.id),
            "seat {} at step {step} (seed {seed})",
            seat.id
        );
    }
    let c = snap.counts;
    assert_eq!(
        c.available + c.held + c.sold,
        (ROWS * COLS) as u32,
        "seated counts at step {step} (seed {seed})"
    );
    let ga = rig.snapshot(rig.ga).await.counts;
    assert_eq!(
        ga.available + ga.held + ga.sold,
        GA_CAPACITY,
        "GA counts at step {step} (seed {seed})"
    );
    assert_eq!(
        ga.held + ga.sold,
        model.ga_taken,
        "GA taken at step {step} (seed {seed})"
    );
}

async fn assert_postgres_matches(rig: &Rig, model: &Model, seed: u64) {
    let client = rig.pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT id, status, order_no FROM seats WHERE ticket_category_id = $1",
            &[&rig.seated],
        )
        .await
        .unwrap();
    for r in rows {
        let (id, status, order): (i64, &str, Option<i64>) = (r.get(0), r.get(1), r.get(2));
        let want = model.status(id);
        assert_eq!(
            status,
            serde_json::to_value(want).unwrap().as_str().unwrap(),
            "pg seat {id} (seed {seed})"
        );
        assert_eq!(
            order,
            model.seat_owner.get(&id).copied(),
            "pg seat {id} order (seed {seed})"
        );
    }
    let taken: i32 = client
        .query_one(
            "SELECT ga_taken FROM ticket_categories WHERE id = $1",
            &[&rig.ga],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(taken as u32, model.ga_taken, "pg ga_taken (seed {seed})");
}

/// Waits (bounded) until the category's actor has released `n` holds by timer in total.
async fn await_expiries(rig: &Rig, category: i64, n: u64) {
    for _ in 0..2_000 {
        if rig
            .supervisor
            .call(category, GetStats)
            .await
            .is_ok_and(|s| s.totals.expiries >= n)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("expiry did not happen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulation_actor_agrees_with_model_and_postgres() {
    let seed: u64 = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("simulation seed {seed} (SIM_SEED={seed} reproduces)");
    let rig = rig().await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::default();
    let seat_ids: Vec<i64> = rig
        .snapshot(rig.seated)
        .await
        .seats
        .iter()
        .map(|s| s.id)
        .collect();
    let mut expiries: HashMap<i64, u64> = HashMap::new();
    const STEPS: usize = 1_500;
    for step in 0..STEPS {
        let order = 1_000 + step as i64;
        match rng.gen_range(0..100) {
            0..=29 => hold_chosen(&rig, &mut model, &mut rng, &seat_ids, order, seed).await,
            30..=44 => hold_best(&rig, &mut model, &mut rng, order, seed).await,
            45..=59 => finish_some(&rig, &mut model, &mut rng, ChangeKind::Release, seed).await,
            60..=71 => finish_some(&rig, &mut model, &mut rng, ChangeKind::Confirm, seed).await,
            72..=79 => finish_some(&rig, &mut model, &mut rng, ChangeKind::Return, seed).await,
            80..=86 => {
                let category = if rng.gen_bool(0.5) {
                    rig.seated
                } else {
                    rig.ga
                };
                let quantity = rng.gen_range(1..=2);
                if rig
                    .hold(
                        category,
                        hold(order, Selection::Best(quantity), Duration::seconds(-1)),
                    )
                    .await
                    .is_ok()
                {
                    let n = expiries.entry(category).or_default();
                    *n += 1;
                    await_expiries(&rig, category, *n).await;
                }
            }
            87..=92 => {
                rig.store.fail_next.store(true, Ordering::SeqCst);
                let category = if rng.gen_bool(0.5) {
                    rig.seated
                } else {
                    rig.ga
                };
                let r = rig
                    .hold(
                        category,
                        hold(order, Selection::Best(1), Duration::minutes(15)),
                    )
                    .await;
                let sold_out = matches!(
                    r,
                    Err(ActorError::Inventory(InventoryError::SoldOut { .. }))
                );
                assert!(
                    matches!(r, Err(ActorError::CommitFailed(_))) || sold_out,
                    "step {step}: {r:?} (seed {seed})"
                );
                rig.store.fail_next.store(false, Ordering::SeqCst);
            }
            _ => {
                let category = if rng.gen_bool(0.5) {
                    rig.seated
                } else {
                    rig.ga
                };
                let r = rig
                    .supervisor
                    .call(category, Crash(format!("step {step}")))
                    .await;
                assert_eq!(r, Err(ActorError::Restarted), "step {step} (seed {seed})");
                expiries.remove(&category);
            }
        }
        assert_actor_matches(&rig, &model, step, seed).await;
        if step % 100 == 99 {
            assert_postgres_matches(&rig, &model, seed).await;
        }
    }
    assert_postgres_matches(&rig, &model, seed).await;
}

async fn hold_chosen(
    rig: &Rig,
    model: &mut Model,
    rng: &mut StdRng,
    seat_ids: &[i64],
    order: i64,
    seed: u64,
) {
    let n = rng.gen_range(1..=3);
    let chosen: Vec<i64> = seat_ids.choose_multiple(rng, n).copied().collect();
    let wrong_price = rng.gen_bool(0.1);
    let seats: Vec<(i64, i64)> = chosen
        .iter()
        .map(|s| (*s, if wrong_price { PRICE + 1 } else { PRICE }))
        .collect();
    let result = rig
        .hold(
            rig.seated,
            hold(order, Selection::Seats(seats), Duration::minutes(15)),
        )
        .await;
    let free = chosen.iter().all(|s| !model.seat_owner.contains_key(s));
    match result {
        Ok(held) => {
            assert!(
                free && !wrong_price,
                "hold of {chosen:?} should have failed (seed {seed})"
            );
            assert_eq!(held.seats.iter().map(|s| s.id).collect::<Vec<_>>(), chosen);
            model.add(
                order,
                ModelOrder {
                    category: rig.seated,
                    seats: chosen,
                    quantity: n as u32,
                    sold: false,
                },
                rig.ga,
            );
        }
        Err(ActorError::Inventory(InventoryError::PriceMismatch { .. })) => {
            assert!(wrong_price, "seed {seed}")
        }
        Err(ActorError::Inventory(InventoryError::SeatUnavailable(_))) => {
            assert!(!free && !wrong_price, "seed {seed}")
        }
        Err(e) => panic!("unexpected {e:?} (seed {seed})"),
    }
}

async fn hold_best(rig: &Rig, model: &mut Model, rng: &mut StdRng, order: i64, seed: u64) {
    let quantity = rng.gen_range(1..=4u32);
    let ga = rng.gen_bool(0.4);
    let category = if ga { rig.ga } else { rig.seated };
    let result = rig
        .hold(
            category,
            hold(order, Selection::Best(quantity), Duration::minutes(15)),
        )
        .await;
    match result {
        Ok(held) => {
            let seats: Vec<i64> = held.seats.iter().map(|s| s.id).collect();
            if ga {
                assert!(
                    model.ga_taken + quantity <= GA_CAPACITY,
                    "GA oversold (seed {seed})"
                );
            } else {
                assert_eq!(seats.len() as u32, quantity);
                assert!(
                    held.seats
                        .windows(2)
                        .all(|w| w[0].row == w[1].row && w[1].col == w[0].col + 1),
                    "adjacent (seed {seed})"
                );
            }
            model.add(
                order,
                ModelOrder {
                    category,
                    seats,
                    quantity,
                    sold: false,
                },
                rig.ga,
            );
        }
        Err(ActorError::Inventory(InventoryError::SoldOut { .. })) => {
            if ga {
                assert!(
                    model.ga_taken + quantity > GA_CAPACITY,
                    "GA refused with room (seed {seed})"
                );
            } else {
                assert!(
                    !row_fits(model, rig, quantity).await,
                    "seated refused with a block free (seed {seed})"
                );
            }
        }
        Err(e) => panic!("unexpected {e:?} (seed {seed})"),
    }
}

async fn row_fits(model: &Model, rig: &Rig, quantity: u32) -> bool {
    let snap = rig.snapshot(rig.seated).await;
    snap.seats.chunks(COLS as usize).any(|row| {
        let mut run = 0;
        row.iter().any(|s| {
            run = if model.seat_owner.contains_key(&s.id) {
                0
            } else {
                run + 1
            };
            run >= quantity
        })
    })
}

async fn finish_some(rig: &Rig, model: &mut Model, rng: &mut StdRng, kind: ChangeKind, seed: u64) {
    let category = if rng.gen_bool(0.5) {
        rig.seated
    } else {
        rig.ga
    };
    let from_sold = kind == ChangeKind::Return;
    let candidates = model.orders_in(category, from_sold);
    let (order_no, known) = match candidates.choose(rng) {
        Some(o) if rng.gen_bool(0.9) => (*o, true),
        _ => (rng.gen_range(1..500), false),
    };
    let result = rig
        .supervisor
        .transition(category, Transition { kind, order_no })
        .await;
    match (known, kind, result) {
        (true, ChangeKind::Confirm, Ok(true)) => {
            model.orders.get_mut(&order_no).unwrap().sold = true
        }
        (true, _, Ok(true)) => model.remove(order_no, rig.ga),
        (false, ChangeKind::Release | ChangeKind::Return, Ok(false)) => {}
        (false, ChangeKind::Confirm, Err(ActorError::Inventory(InventoryError::WrongState(_)))) => {
        }
        (k, kind, r) => panic!("{kind:?} of order {order_no} (known {k}) gave {r:?} (seed {seed})"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_actor_has_identical_state() {
    let rig = rig().await;
    let mut orders = Vec::new();
    for n in 0..10 {
        let category = if n % 2 == 0 { rig.seated } else { rig.ga };
        rig.hold(
            category,
            hold(5_000 + n, Selection::Best(2), Duration::minutes(15)),
        )
        .await
        .unwrap();
        orders.push((category, 5_000 + n));
    }
    for (category, order_no) in orders.iter().take(3) {
        rig.supervisor
            .transition(
                *category,
                Transition {
                    kind: ChangeKind::Confirm,
                    order_no: *order_no,
                },
            )
            .await
            .unwrap();
    }
    let before = rig.snapshot(rig.seated).await;
    let ga_before = rig.snapshot(rig.ga).await.counts;

    assert_eq!(
        rig.supervisor.call(rig.seated, Crash("test".into())).await,
        Err(ActorError::Restarted)
    );
    assert_eq!(
        rig.supervisor.call(rig.ga, Crash("test".into())).await,
        Err(ActorError::Restarted)
    );

    let after = rig.snapshot(rig.seated).await;
    assert_eq!(after.statuses, before.statuses);
    assert_eq!(after.counts, before.counts);
    assert_eq!(rig.snapshot(rig.ga).await.counts, ga_before);
    let stats = rig.supervisor.call(rig.seated, GetStats).await.unwrap();
    assert_eq!(
        stats.armed_timers, 3,
        "unpaid holds re-armed: 5 seated orders, 2 of them paid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_holds_never_share_a_seat_and_stop_at_capacity() {
    let rig = rig().await;
    let calls = (0..200).map(|n| {
        let (sup, store) = (rig.supervisor.clone(), rig.store.clone());
        let seated = rig.seated;
        tokio::spawn(async move {
            let wanted = hold(10_000 + n, Selection::Best(1), Duration::minutes(15));
            hold_via(&sup, &*store, seated, wanted).await
        })
    });
    let results = futures::future::join_all(calls).await;
    let seats: Vec<i64> = results
        .iter()
        .filter_map(|r| r.as_ref().unwrap().as_ref().ok())
        .flat_map(|h| h.seats.iter().map(|s| s.id))
        .collect();
    let unique: std::collections::HashSet<_> = seats.iter().collect();
    assert_eq!(unique.len(), seats.len(), "a seat was held twice");
    for r in &results {
        match r.as_ref().unwrap() {
            Ok(_)
            | Err(ActorError::Overloaded)
            | Err(ActorError::Inventory(InventoryError::SoldOut { .. })) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(seats.len() <= (ROWS * COLS) as usize);
    let snap = rig.snapshot(rig.seated).await;
    assert_eq!(snap.counts.held as usize, seats.len());
}

/// The real Postgres store behind a gate: while it is closed, writes wait (they stay in flight
/// in their actor, filling its budget).
struct Gated {
    inner: PgInventoryStore,
    open: tokio::sync::watch::Receiver<bool>,
}

impl InventoryStore for Gated {
    fn load(
        &self,
        c: i64,
    ) -> BoxFuture<'static, Result<(CategorySpec, Vec<LoadedOrder>), StoreError>> {
        self.inner.load(c)
    }
    fn apply(&self, change: Change) -> BoxFuture<'static, Result<(), StoreError>> {
        let (mut open, inner) = (self.open.clone(), self.inner.clone());
        Box::pin(async move {
            let _ = open.wait_for(|open| *open).await;
            inner.apply(change).await
        })
    }
}

/// Releases of `orders` whose writes wait at the gate: each keeps one place of the actor's
/// budget until the gate opens.
fn stuck_releases(
    supervisor: &Supervisor,
    category: i64,
    orders: std::ops::Range<i64>,
) -> Vec<tokio::task::JoinHandle<Result<bool, ActorError>>> {
    orders
        .map(|order_no| {
            let sup = supervisor.clone();
            let release = Transition {
                kind: ChangeKind::Release,
                order_no,
            };
            tokio::spawn(async move { sup.transition(category, release).await })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_refuses_new_work_but_never_a_settle() {
    let rig = rig().await;
    let (gate, open) = tokio::sync::watch::channel(true);
    let gated = Arc::new(Gated {
        inner: PgInventoryStore::new(rig.pool.clone(), tokio::runtime::Handle::current()),
        open,
    });
    let mut settings = actor_settings();
    settings.mailbox_capacity = 8; // below GA capacity, so stuck calls, not sell-out, fill it
    let capacity = settings.mailbox_capacity as i64;
    let supervisor = Supervisor::new(gated.clone(), Arc::new(SystemClock), settings);
    for order in 1..=capacity {
        let one = hold(order, Selection::Best(1), Duration::minutes(15));
        hold_via(&supervisor, &*gated, rig.ga, one).await.unwrap();
    }
    // An order reserves two tickets; its transaction is about to commit.
    let reserved = supervisor
        .call(
            rig.ga,
            Reserve(hold(500, Selection::Best(2), Duration::minutes(15))),
        )
        .await
        .unwrap()
        .unwrap();
    gate.send_replace(false);
    let waiting = stuck_releases(&supervisor, rig.ga, 1..capacity + 1);
    let (sup, ga) = (supervisor.clone(), rig.ga);
    let depth = poll_until(
        std::time::Duration::from_secs(5),
        async || sup.queue_depth(ga),
        |d| *d == capacity as usize,
    )
    .await;
    assert_eq!(
        depth, capacity as usize,
        "the stuck releases fill the budget"
    );
    let probe = hold(20_000, Selection::Best(1), Duration::minutes(1));
    let limit = std::time::Duration::from_secs(10);
    // Waits only if the budget let the probe in, behind the stuck releases: that is the failure.
    let refused = within(limit, "the probe", supervisor.call(rig.ga, Reserve(probe))).await;
    assert!(
        matches!(refused, Err(ActorError::Overloaded)),
        "{refused:?}"
    );

    // The order commits; its settle must reach the actor however full the mailbox is.
    gated.inner.apply(reserved.change.clone()).await.unwrap();
    let settle = Settle {
        order_no: 500,
        outcome: Outcome::Committed,
        change: None,
    };
    let settled = within(limit, "the settle", supervisor.settle(rig.ga, settle)).await;
    assert_eq!(settled, Ok(true));
    gate.send_replace(true);
    for w in waiting {
        assert_eq!(within(limit, "a stuck release", w).await.unwrap(), Ok(true));
    }
    let stats = supervisor.call(rig.ga, GetStats).await.unwrap();
    assert_eq!(stats.counts.held, 2, "the acknowledged order stays held");
    assert_eq!(stats.armed_timers, 1, "with its expiry timer");
    let others = hold(501, Selection::Best(GA_CAPACITY - 1), Duration::minutes(1));
    let taken = supervisor.call(rig.ga, Reserve(others)).await.unwrap();
    assert!(
        matches!(
            taken,
            Err(ActorError::Inventory(InventoryError::SoldOut {
                remaining: 28
            }))
        ),
        "its tickets are unavailable to others: {taken:?}"
    );
    let cancel = Transition {
        kind: ChangeKind::Release,
        order_no: 500,
    };
    assert_eq!(
        supervisor.transition(rig.ga, cancel).await,
        Ok(true),
        "and it can be cancelled"
    );
    assert_eq!(
        supervisor.call(rig.ga, GetStats).await.unwrap().counts.held,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actor_without_holds_is_passivated_and_reloads_on_next_use() {
    let mut settings = actor_settings();
    settings.idle_passivate_secs = 1;
    let rig = rig_with(settings).await;
    // Seated: a sale, no unpaid hold. GA: an unpaid hold, which must keep its actor alive.
    rig.hold(
        rig.seated,
        hold(1, Selection::Best(2), Duration::minutes(15)),
    )
    .await
    .unwrap();
    let confirm = Transition {
        kind: ChangeKind::Confirm,
        order_no: 1,
    };
    assert!(
        rig.supervisor
            .transition(rig.seated, confirm)
            .await
            .unwrap()
    );
    rig.hold(rig.ga, hold(2, Selection::Best(3), Duration::minutes(15)))
        .await
        .unwrap();
    let before = rig.snapshot(rig.seated).await;
    assert_eq!(rig.supervisor.active(), 2);

    let active = poll_until(
        std::time::Duration::from_secs(10),
        async || rig.supervisor.active(),
        |n| *n == 1,
    )
    .await;
    assert_eq!(active, 1, "the idle seated actor was never passivated");
    // The GA actor is the one still running: its stats come back without a reload.
    let ga = rig.supervisor.call(rig.ga, GetStats).await.unwrap();
    assert_eq!(ga.counts.held, 3);
    assert_eq!(
        ga.totals.holds, 1,
        "same actor instance, not a reloaded one"
    );

    let after = rig.snapshot(rig.seated).await;
    assert_eq!(rig.supervisor.active(), 2, "reactivated on use");
    assert_eq!(after.statuses, before.statuses);
    assert_eq!(after.counts.sold, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloaded_actor_keeps_its_holds_in_postgres() {
    let rig = rig().await;
    rig.hold(
        rig.seated,
        hold(7, Selection::Best(4), Duration::minutes(15)),
    )
    .await
    .unwrap();
    assert_eq!(rig.supervisor.active(), 1);
    rig.supervisor.unload(rig.seated).await;
    assert_eq!(rig.supervisor.active(), 0);
    let stats = rig.supervisor.call(rig.seated, GetStats).await.unwrap();
    assert_eq!(stats.counts.held, 4);
    assert_eq!(stats.totals.holds, 0, "a fresh actor, loaded from Postgres");
    assert_eq!(stats.armed_timers, 1, "its hold timer re-armed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_committed_after_it_was_abandoned_makes_the_actor_reload() {
    let mut settings = actor_settings();
    settings.reservation_timeout_ms = 50;
    let rig = rig_with(settings).await;
    let reserved = rig
        .supervisor
        .call(
            rig.seated,
            Reserve(hold(9, Selection::Best(2), Duration::minutes(15))),
        )
        .await
        .unwrap()
        .unwrap();
    let sup = rig.supervisor.clone();
    let seated = rig.seated;
    let held = poll_until(
        std::time::Duration::from_millis(2_500),
        async || sup.call(seated, GetStats).await.unwrap().counts.held,
        |held| *held == 0,
    )
    .await;
    assert_eq!(held, 0, "the unsettled reservation was never released");
    // The slow transaction commits after all.
    rig.store
        .inner
        .apply(reserved.change.clone())
        .await
        .unwrap();
    let settled = rig
        .supervisor
        .call(
            rig.seated,
            Settle {
                order_no: 9,
                outcome: Outcome::Committed,
                change: None,
            },
        )
        .await;
    assert!(
        matches!(settled, Ok(false) | Err(ActorError::Restarted)),
        "nothing was pending any more, and the actor stops to reload: {settled:?}"
    );
    // A call racing the stop may still see the old actor go away (Restarted); reads just retry.
    let mut stats = rig.supervisor.call(rig.seated, GetStats).await;
    for _ in 0..3 {
        if stats.is_ok() {
            break;
        }
        stats = rig.supervisor.call(rig.seated, GetStats).await;
    }
    assert_eq!(
        stats.unwrap().counts.held,
        2,
        "the reloaded actor shows what Postgres has"
    );
}

/// Moves the order's seat rows the way another transaction (a payment, a refund) would.
async fn move_seats_behind_the_actors_back(rig: &Rig, order_no: i64, sql: &str) {
    let moved = rig
        .pool
        .get()
        .await
        .unwrap()
        .execute(sql, &[&order_no])
        .await
        .unwrap();
    assert_eq!(moved, 2);
}

const SELL: &str = "UPDATE seats SET status = 'sold', hold_expires_at = NULL WHERE order_no = $1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transition_committed_by_the_caller_only_changes_memory() {
    let rig = rig().await;
    let held = rig
        .hold(
            rig.seated,
            hold(11, Selection::Best(2), Duration::minutes(15)),
        )
        .await
        .unwrap();
    move_seats_behind_the_actors_back(&rig, 11, SELL).await;
    let confirm = Transition {
        kind: ChangeKind::Confirm,
        order_no: 11,
    };
    assert_eq!(rig.supervisor.applied(rig.seated, confirm).await, Ok(true));
    assert_eq!(
        rig.supervisor.applied(rig.seated, confirm).await,
        Ok(false),
        "once"
    );
    let stats = rig.supervisor.call(rig.seated, GetStats).await.unwrap();
    assert_eq!((stats.counts.sold, stats.counts.held), (2, 0));
    assert_eq!(stats.armed_timers, 0, "a sold order has no deadline");
    let map = rig.snapshot(rig.seated).await;
    let seat = map
        .seats
        .iter()
        .position(|s| s.id == held.seats[0].id)
        .unwrap();
    assert_eq!(map.statuses[seat], SeatStatus::Sold);

    let back = "UPDATE seats SET status = 'available', order_no = NULL WHERE order_no = $1";
    move_seats_behind_the_actors_back(&rig, 11, back).await;
    let give_back = Transition {
        kind: ChangeKind::Return,
        order_no: 11,
    };
    assert_eq!(
        rig.supervisor.applied(rig.seated, give_back).await,
        Ok(true)
    );
    let stats = rig.supervisor.call(rig.seated, GetStats).await.unwrap();
    assert_eq!(stats.counts.available, (ROWS * COLS) as u32);
    assert_eq!(stats.totals.returns, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_finds_its_rows_moved_makes_the_actor_reload() {
    let rig = rig().await;
    rig.hold(
        rig.seated,
        hold(12, Selection::Best(2), Duration::minutes(15)),
    )
    .await
    .unwrap();
    // A payment committed, and its message to the actor was lost.
    move_seats_behind_the_actors_back(&rig, 12, SELL).await;
    let release = Transition {
        kind: ChangeKind::Release,
        order_no: 12,
    };
    let refused = rig.supervisor.transition(rig.seated, release).await;
    assert!(
        matches!(
            refused,
            Err(ActorError::CommitFailed(_) | ActorError::Restarted)
        ),
        "the release wrote nothing: {refused:?}"
    );
    let sup = rig.supervisor.clone();
    let seated = rig.seated;
    let stats = poll_until(
        std::time::Duration::from_secs(3),
        async || sup.call(seated, GetStats).await.ok(),
        |s| s.as_ref().is_some_and(|s| s.counts.sold == 2),
    )
    .await
    .expect("the actor answers after reloading");
    assert_eq!(
        (stats.counts.sold, stats.counts.held),
        (2, 0),
        "reloaded from Postgres"
    );
    assert_eq!(stats.totals.releases, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_reservation_is_republished_in_the_counts() {
    let rig = rig().await;
    rig.supervisor
        .call(
            rig.ga,
            Reserve(hold(21, Selection::Best(2), Duration::minutes(15))),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rig.snapshot(rig.ga).await.counts.held,
        2,
        "pending holds count as held"
    );
    let settled = Settle {
        order_no: 21,
        outcome: Outcome::NotCommitted,
        change: None,
    };
    assert!(rig.supervisor.call(rig.ga, settled).await.unwrap());
    // Read what readers see (the published snapshot), without messaging the actor.
    let sup = rig.supervisor.clone();
    let ga = rig.ga;
    let published = poll_until(
        std::time::Duration::from_secs(3),
        async || sup.snapshot(ga).await.unwrap().counts.available,
        |available| *available == GA_CAPACITY,
    )
    .await;
    assert_eq!(
        published, GA_CAPACITY,
        "the freed tickets reach the published seat map"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_actor_adopts_a_hold_committed_for_its_predecessor() {
    let rig = rig().await;
    let reserved = rig
        .supervisor
        .call(
            rig.seated,
            Reserve(hold(31, Selection::Best(2), Duration::minutes(15))),
        )
        .await
        .unwrap()
        .unwrap();
    // The reserving actor goes away; its replacement loads before the order commits.
    rig.supervisor.unload(rig.seated).await;
    assert_eq!(rig.snapshot(rig.seated).await.counts.held, 0);
    rig.store
        .inner
        .apply(reserved.change.clone())
        .await
        .unwrap();
    let settle = Settle {
        order_no: 31,
        outcome: Outcome::Committed,
        change: Some(reserved.change.clone()),
    };
    assert_eq!(rig.supervisor.settle(rig.seated, settle).await, Ok(false));
    let stats = rig.supervisor.call(rig.seated, GetStats).await.unwrap();
    assert_eq!(stats.counts.held, 2, "the committed hold is in memory");
    assert_eq!(
        stats.totals.holds, 1,
        "adopted by the running actor, not found by a reload"
    );
    assert_eq!(stats.armed_timers, 1, "with its expiry timer");
}
