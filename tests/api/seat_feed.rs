//! The seat-map feed over real actors and Postgres, without HTTP: subscribers never message the
//! actor, `seq` runs on by one across an actor's reload, and a seeded simulation of holds,
//! releases, reloads and late subscribers ends with every subscriber's map equal to Postgres.
//!
//! Reproduce a simulation run with `SIM_SEED=<seed printed on failure> dev/test.sh -- seat_feed`.

use crate::helpers::{TestDb, actor_settings, create_program, hold_via, poll_until};
use boxoffice::actors::{Hold, Selection, Supervisor, Transition};
use boxoffice::clock::SystemClock;
use boxoffice::domain::inventory::ChangeKind;
use boxoffice::realtime::feed::{FeedCategory, FeedSettings, SeatFeeds, Subscription};
use boxoffice::store::PgPool;
use boxoffice::store::catalog::Layout;
use boxoffice::store::inventory::PgInventoryStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

struct Rig {
    pool: PgPool,
    store: Arc<PgInventoryStore>,
    supervisor: Supervisor,
    feeds: SeatFeeds,
    program: i64,
    category: i64,
    shown: Vec<FeedCategory>,
    _db: TestDb,
}

async fn rig(coalesce_ms: u64) -> Rig {
    let (db, pool, _) = TestDb::migrated().await;
    let layout = Layout::Seated {
        rows: 4,
        seats_per_row: 6,
    };
    let (program, cats) = create_program(&pool, "feed", &[("Seated", 5_000, layout)]).await;
    let store = Arc::new(PgInventoryStore::new(
        pool.clone(),
        tokio::runtime::Handle::current(),
    ));
    let supervisor = Supervisor::new(store.clone(), Arc::new(SystemClock), actor_settings());
    let feeds = SeatFeeds::new(
        supervisor.clone(),
        FeedSettings {
            coalesce: Duration::from_millis(coalesce_ms),
            max_lag_frames: 1024,
            linger: Duration::from_secs(60),
        },
    );
    let shown = vec![FeedCategory {
        id: cats[0],
        show_time_id: 0,
        name: "Seated".into(),
        price_cents: 5_000,
        seated: true,
    }];
    Rig {
        pool,
        store,
        supervisor,
        feeds,
        program,
        category: cats[0],
        shown,
        _db: db,
    }
}

impl Rig {
    async fn subscribe(&self) -> Follower {
        let s = self
            .feeds
            .subscribe(self.program, &self.shown)
            .await
            .unwrap();
        Follower::from(s)
    }

    async fn hold(&self, order_no: i64, seat: i64) {
        let hold = Hold {
            order_no,
            selection: Selection::Seats(vec![(seat, 5_000)]),
            expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        };
        hold_via(&self.supervisor, &*self.store, self.category, hold)
            .await
            .unwrap();
    }

    async fn release(&self, order_no: i64) {
        let t = Transition {
            kind: ChangeKind::Release,
            order_no,
        };
        assert!(self.supervisor.transition(self.category, t).await.unwrap());
    }

    async fn postgres(&self) -> BTreeMap<i64, String> {
        let rows = self
            .pool
            .get()
            .await
            .unwrap()
            .query(
                "SELECT id, status::text FROM seats WHERE ticket_category_id = $1",
                &[&self.category],
            )
            .await
            .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }
}

/// A subscriber applying frames as a client does.
struct Follower {
    frames: tokio::sync::broadcast::Receiver<bytes::Bytes>,
    seq: u64,
    seats: BTreeMap<i64, String>,
}

impl From<Subscription> for Follower {
    fn from(s: Subscription) -> Self {
        let snapshot: Value = serde_json::from_slice(&s.snapshot).unwrap();
        assert_eq!(snapshot["seq"], s.seq);
        let seats = snapshot["categories"][0]["seats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_i64().unwrap(),
                    s["status"].as_str().unwrap().into(),
                )
            })
            .collect();
        Follower {
            frames: s.frames,
            seq: s.seq,
            seats,
        }
    }
}

impl Follower {
    /// Applies the next frame; answers it.
    async fn next(&mut self) -> Value {
        let bytes = tokio::time::timeout(Duration::from_secs(10), self.frames.recv())
            .await
            .expect("a frame within 10 s")
            .expect("no lag at this rate");
        let frame: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(frame["seq"], self.seq + 1, "frames follow by one: {frame}");
        self.seq += 1;
        for c in frame["changes"].as_array().unwrap() {
            let status = c["status"].as_str().unwrap().to_string();
            self.seats.insert(c["seat_id"].as_i64().unwrap(), status);
        }
        frame
    }

    /// Applies frames until the map equals `wanted`.
    async fn until_equal(&mut self, wanted: &BTreeMap<i64, String>) {
        while &self.seats != wanted {
            self.next().await;
        }
    }
}

#[tokio::test]
async fn subscribers_never_message_the_actor_and_seq_runs_on_across_a_reload() {
    let rig = rig(5).await;
    let mut first = rig.subscribe().await;
    let mut others = Vec::new();
    for _ in 0..50 {
        others.push(rig.subscribe().await);
    }
    assert_eq!(
        rig.supervisor.messages_delivered(rig.category),
        0,
        "51 subscriptions sent the actor nothing"
    );
    let seats: Vec<i64> = first.seats.keys().copied().collect();
    let start = first.seq;
    rig.hold(1, seats[0]).await;
    let frame = first.next().await;
    assert_eq!(frame["changes"].as_array().unwrap().len(), 1);
    assert_eq!(first.seats[&seats[0]], "held");

    // The actor stops; the next change comes from a fresh one whose own seq jumped ahead.
    rig.supervisor.unload(rig.category).await;
    rig.hold(2, seats[1]).await;
    first.until_equal(&rig.postgres().await).await;
    assert_eq!(
        first.seq,
        start + 2,
        "one frame per change, numbered on by one"
    );
    for other in &mut others {
        other.until_equal(&rig.postgres().await).await;
        assert_eq!(other.seq, first.seq, "every subscriber got the same frames");
    }
}

#[tokio::test]
async fn seeded_holds_releases_reloads_and_late_subscribers_all_end_equal_to_postgres() {
    let seed: u64 = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("simulation seed {seed} (SIM_SEED={seed} reproduces)");
    let mut rng = StdRng::seed_from_u64(seed);
    let rig = rig(rng.gen_range(0..8)).await;
    let mut followers = vec![rig.subscribe().await];
    let seats: Vec<i64> = followers[0].seats.keys().copied().collect();
    let mut held: BTreeMap<i64, i64> = BTreeMap::new(); // seat → order
    for order_no in 1..=150 {
        match rng.gen_range(0..10) {
            0 => rig.supervisor.unload(rig.category).await,
            1 => followers.push(rig.subscribe().await),
            2..=5 if !held.is_empty() => {
                let seat = *held.keys().nth(rng.gen_range(0..held.len())).unwrap();
                rig.release(held.remove(&seat).unwrap()).await;
            }
            _ => {
                let free: Vec<i64> = seats
                    .iter()
                    .copied()
                    .filter(|s| !held.contains_key(s))
                    .collect();
                if let Some(&seat) = free.get(rng.gen_range(0..free.len().max(1))) {
                    rig.hold(order_no, seat).await;
                    held.insert(seat, order_no);
                }
            }
        }
        // Let frames out now and then, so some changes share a frame and some do not.
        if rng.gen_bool(0.2) {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..10))).await;
        }
    }
    let truth = rig.postgres().await;
    let expected: BTreeMap<i64, String> = seats
        .iter()
        .map(|s| {
            (
                *s,
                if held.contains_key(s) {
                    "held"
                } else {
                    "available"
                }
                .to_string(),
            )
        })
        .collect();
    assert_eq!(
        truth, expected,
        "the model and Postgres agree (seed {seed})"
    );
    for f in &mut followers {
        f.until_equal(&truth).await;
    }
    // A subscriber arriving now starts from the same map.
    let late = poll_until(
        Duration::from_secs(5),
        async || rig.subscribe().await.seats,
        |s| *s == truth,
    )
    .await;
    assert_eq!(late, truth, "seed {seed}");
}
