//! Hold timers with paused tokio time. The actor runs on this test's (paused) runtime; Postgres
//! I/O runs on a runtime of its own, so database waits never let paused time jump ahead.
//!
//! "Exactly" means to tokio's timer granularity: never before the deadline, and by the next
//! millisecond tick after it.

use crate::helpers::{TestDb, actor_settings, create_program};
use actix::prelude::*;
use boxoffice::actors::category::Channels;
use boxoffice::actors::{
    CategoryActor, Crash, GetSnapshot, GetStats, Hold, Outcome, Reserve, Selection, Settle,
};
use boxoffice::clock::{Clock, TokioClock};
use boxoffice::domain::inventory::{Counts, Inventory};
use boxoffice::store::catalog::Layout;
use boxoffice::store::inventory::{InventoryStore, PgInventoryStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// A runtime for database I/O, shut down without blocking when dropped.
struct IoRuntime(Option<tokio::runtime::Runtime>);

impl IoRuntime {
    fn new() -> Self {
        IoRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap(),
        ))
    }
    fn handle(&self) -> tokio::runtime::Handle {
        self.0.as_ref().unwrap().handle().clone()
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

struct TimerRig {
    store: Arc<PgInventoryStore>,
    clock: Arc<TokioClock>,
    category: i64,
    _db: TestDb,
    _io: IoRuntime,
}

async fn timer_rig() -> TimerRig {
    let io = IoRuntime::new();
    let (db, pool, category) = io
        .handle()
        .spawn(async {
            let (db, pool, _) = TestDb::migrated().await;
            let (_, cats) = create_program(
                &pool,
                "timers",
                &[("GA", 1_000, Layout::General { capacity: 10 })],
            )
            .await;
            (db, pool, cats[0])
        })
        .await
        .unwrap();
    tokio::time::pause();
    let store = Arc::new(PgInventoryStore::new(pool, io.handle()));
    TimerRig {
        store,
        clock: Arc::new(TokioClock::new()),
        category,
        _db: db,
        _io: io,
    }
}

impl TimerRig {
    /// Loads the category from Postgres and starts its actor on this thread's (paused) runtime.
    async fn start_actor(&self) -> Addr<CategoryActor> {
        let (spec, orders) = self.store.load(self.category).await.unwrap();
        let inv = Inventory::load(spec, orders, 0).unwrap();
        let (snapshot, _) = watch::channel(Arc::new(CategoryActor::snapshot_of(
            &inv,
            Arc::from(vec![]),
        )));
        let (deltas, _) = broadcast::channel(16);
        let mut settings = actor_settings();
        settings.snapshot_interval_ms = 0; // no periodic timer: only hold timers exist
        let (store, clock) = (
            self.store.clone() as Arc<dyn InventoryStore>,
            self.clock.clone() as Arc<dyn Clock>,
        );
        let (reloads, _) = tokio::sync::mpsc::unbounded_channel();
        let channels = Channels {
            snapshot,
            deltas,
            reloads,
            mirror: None,
        };
        CategoryActor::new(inv, store, clock, settings, channels).start()
    }

    /// Holds the way the ordering service does: reserve, write, settle as committed.
    async fn hold(&self, actor: &Addr<CategoryActor>, hold: Hold) {
        let order_no = hold.order_no;
        let reserved = actor.send(Reserve(hold)).await.unwrap().unwrap();
        // Waited for with this thread blocked: awaiting it would leave the paused runtime idle,
        // and tokio would jump time to the reservation's timeout before the settle arrives.
        let write = self.store.apply(reserved.change);
        std::thread::spawn(move || futures::executor::block_on(write))
            .join()
            .unwrap()
            .unwrap();
        let settle = Settle {
            order_no,
            outcome: Outcome::Committed,
            change: None,
        };
        assert!(
            actor.send(settle).await.unwrap(),
            "the reservation was pending"
        );
    }
}

async fn counts(actor: &Addr<CategoryActor>) -> Counts {
    actor.send(GetSnapshot).await.unwrap().counts
}

/// Counts after every timer due at the current (paused) instant has run; time does not move.
async fn counts_now(actor: &Addr<CategoryActor>) -> Counts {
    // A zero sleep makes the runtime poll its timer driver, so anything due has fired.
    for _ in 0..10 {
        tokio::time::sleep(Duration::ZERO).await;
    }
    counts(actor).await
}

/// Waits (bounded) until `held` tickets remain; the store write of an expiry runs on the I/O
/// runtime, so this polls, letting paused time move by 1 ms per round.
async fn settle(actor: &Addr<CategoryActor>, want_held: u32) -> Counts {
    for _ in 0..10_000 {
        let c = counts_now(actor).await;
        if c.held == want_held {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    counts(actor).await
}

#[actix_rt::test]
async fn a_hold_expires_exactly_at_its_time() {
    let rig = timer_rig().await;
    let actor = rig.start_actor().await;
    let expires_at = rig.clock.now() + chrono::Duration::minutes(15);
    let hold = Hold {
        order_no: 1,
        selection: Selection::Best(3),
        expires_at,
    };
    rig.hold(&actor, hold).await;
    assert_eq!(counts(&actor).await.held, 3);

    tokio::time::advance(Duration::from_secs(15 * 60) - Duration::from_millis(1)).await;
    assert_eq!(
        counts_now(&actor).await.held,
        3,
        "still held 1 ms before the deadline"
    );
    // Polling lets paused time auto-advance to the next timer, so the clock may have reached
    // the deadline by now; what must never happen is a release begun before it.
    let stats = actor.send(GetStats).await.unwrap();
    assert!(
        stats.armed_timers == 1 || rig.clock.now() >= expires_at,
        "release begun at {} before the deadline {expires_at}",
        rig.clock.now()
    );

    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        settle(&actor, 0).await,
        Counts {
            available: 10,
            held: 0,
            sold: 0
        },
        "released at the deadline"
    );
    let (_, orders) = rig.store.load(rig.category).await.unwrap();
    assert!(orders.is_empty(), "the release is in Postgres too");
}

#[actix_rt::test]
async fn a_restarted_actor_rearms_the_timer() {
    let rig = timer_rig().await;
    let first = rig.start_actor().await;
    let expires_at = rig.clock.now() + chrono::Duration::minutes(15);
    rig.hold(
        &first,
        Hold {
            order_no: 2,
            selection: Selection::Best(2),
            expires_at,
        },
    )
    .await;
    tokio::time::advance(Duration::from_secs(5 * 60)).await;
    assert!(first.send(Crash("restart test".into())).await.is_err());

    let second = rig.start_actor().await;
    assert_eq!(
        counts(&second).await.held,
        2,
        "the hold survives the restart"
    );
    tokio::time::advance(Duration::from_secs(10 * 60) - Duration::from_millis(1)).await;
    assert_eq!(
        counts_now(&second).await.held,
        2,
        "still held 1 ms before the original deadline"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        settle(&second, 0).await.held,
        0,
        "released at the original deadline"
    );
}

#[actix_rt::test]
async fn holds_already_past_are_released_on_start() {
    let rig = timer_rig().await;
    let first = rig.start_actor().await;
    let expires_at = rig.clock.now() + chrono::Duration::minutes(1);
    rig.hold(
        &first,
        Hold {
            order_no: 3,
            selection: Selection::Best(1),
            expires_at,
        },
    )
    .await;
    let _ = first.send(Crash("stop before the deadline".into())).await;
    tokio::time::advance(Duration::from_secs(120)).await;
    let second = rig.start_actor().await;
    assert_eq!(
        settle(&second, 0).await.held,
        0,
        "a hold past its deadline is released on start"
    );
}
