//! The four ways `bench seat-hold` holds two seats. Each keeps its own copy of one seated
//! category (`seats` seats, ids `1..=seats`, one price) and can reset it to all-available between
//! rounds, hold a pair for an order, and check its own invariants afterwards.

use super::Scratch;
use crate::actors::{ActorError, GetStats, Hold, Outcome, Reserve, Selection, Settle, Supervisor};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::domain::inventory::{CategorySpec, Change, LoadedOrder, SeatInfo};
use crate::store::inventory::InventoryStore;
use crate::store::postgres::{PgPool, describe, pg_config, pool_from_config};
use crate::store::{StoreError, redis::RedisStore};
use fred::prelude::*;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Price of every benchmark seat, in cents.
const PRICE_CENTS: i64 = 68_000;
/// Seats per row of the benchmark grid.
const SEATS_PER_ROW: u32 = 400;

/// How one hold attempt ended.
pub enum HoldOutcome {
    /// Both seats are now held by the order.
    Held,
    /// A seat was taken; nothing changed.
    Refused,
    /// The design failed (timeout, deadlock, connection...); nothing is assumed.
    Error(String),
}

/// One design under test.
pub trait HoldTarget: Send + Sync + 'static {
    /// Name used in the report.
    fn name(&self) -> &'static str;
    /// Makes every seat available again.
    fn reset(&self) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Holds both seats for `order`, or neither.
    fn hold(&self, order: i64, seats: [i64; 2]) -> BoxFuture<'_, HoldOutcome>;
    /// Server-side invariants after a round with `held` successful holds; violations, if any.
    fn check(&self, seats: u32, held: u64) -> BoxFuture<'_, anyhow::Result<Vec<String>>>;
}

fn count_violations(label: &str, measured: i64, expected: i64) -> Option<String> {
    (measured != expected).then(|| format!("{label}: {measured}, expected {expected}"))
}

// ---------------------------------------------------------------------------------------------
// (A) the category actor

/// The real actor and supervisor over a store that acknowledges every change at once: this
/// measures the in-memory hot path, as the Redis design (no persistence configured) is measured.
pub struct ActorTarget {
    supervisor: Supervisor,
    category: AtomicI64,
}

/// Hands out a fresh all-available grid for any category id and keeps nothing.
struct VolatileStore {
    seats: u32,
}

impl InventoryStore for VolatileStore {
    fn load(
        &self,
        category_id: i64,
    ) -> BoxFuture<'static, Result<(CategorySpec, Vec<LoadedOrder>), StoreError>> {
        let spec = grid_spec(category_id, self.seats);
        Box::pin(futures::future::ready(Ok((spec, vec![]))))
    }

    fn apply(&self, _: Change) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(futures::future::ready(Ok(())))
    }
}

/// `seats` seats in rows of [`SEATS_PER_ROW`] (one row if fewer).
fn grid_spec(category_id: i64, seats: u32) -> CategorySpec {
    let cols = SEATS_PER_ROW.min(seats).max(1);
    let seat_list = (0..seats)
        .map(|i| SeatInfo {
            id: i as i64 + 1,
            row: (i / cols) as i32 + 1,
            col: (i % cols) as i32 + 1,
            price_cents: PRICE_CENTS,
        })
        .collect();
    CategorySpec {
        program_id: 1,
        category_id,
        price_cents: PRICE_CENTS,
        capacity: seats,
        seats: seat_list,
        rows: seats.div_ceil(cols) as usize,
        cols: cols as usize,
        allow_split: false,
        seq_base: 0,
    }
}

impl ActorTarget {
    /// A supervisor with the configured actor settings.
    pub fn new(settings: &Settings, seats: u32) -> Self {
        let store = Arc::new(VolatileStore { seats });
        ActorTarget {
            supervisor: Supervisor::new(store, Arc::new(SystemClock), settings.actors.clone()),
            category: AtomicI64::new(0),
        }
    }

    fn current(&self) -> i64 {
        self.category.load(Ordering::Acquire)
    }
}

impl HoldTarget for ActorTarget {
    fn name(&self) -> &'static str {
        "actor"
    }

    /// A new category id: the supervisor activates a fresh actor (before the clock starts).
    fn reset(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        let next = self.category.fetch_add(1, Ordering::AcqRel) + 1;
        Box::pin(async move {
            self.supervisor.unload(next - 1).await;
            self.supervisor.call(next, GetStats).await?;
            Ok(())
        })
    }

    fn hold(&self, order: i64, seats: [i64; 2]) -> BoxFuture<'_, HoldOutcome> {
        let hold = Hold {
            order_no: order,
            selection: Selection::Seats(seats.iter().map(|s| (*s, PRICE_CENTS)).collect()),
            expires_at: SystemClock.now() + chrono::Duration::minutes(15),
        };
        // The ordering service's two messages: reserve, then settle as committed (here nothing
        // is written: the actor's in-memory hot path is what this target measures).
        Box::pin(async move {
            let category = self.current();
            let reserved = self.supervisor.call(category, Reserve(hold)).await;
            match reserved.and_then(|r| r) {
                Ok(_) => {}
                Err(ActorError::Inventory(_)) => return HoldOutcome::Refused,
                Err(e) => return HoldOutcome::Error(e.to_string()),
            }
            let settle = Settle {
                order_no: order,
                outcome: Outcome::Committed,
                change: None,
            };
            match self.supervisor.settle(category, settle).await {
                Ok(true) => HoldOutcome::Held,
                Ok(false) => HoldOutcome::Error("reservation vanished before settling".into()),
                Err(e) => HoldOutcome::Error(e.to_string()),
            }
        })
    }

    fn check(&self, seats: u32, held: u64) -> BoxFuture<'_, anyhow::Result<Vec<String>>> {
        Box::pin(async move {
            let stats = self.supervisor.call(self.current(), GetStats).await?;
            let c = stats.counts;
            Ok([
                count_violations("held seats", c.held as i64, 2 * held as i64),
                count_violations("holds committed", stats.totals.holds as i64, held as i64),
                count_violations(
                    "available + held + sold",
                    (c.available + c.held + c.sold) as i64,
                    seats as i64,
                ),
            ]
            .into_iter()
            .flatten()
            .collect())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// (B) Redis + Lua, the design boxoffice replaces

/// Check-and-hold over a hash of JSON seat objects plus a remaining counter, atomically because
/// Redis runs one script at a time.
const HOLD_SCRIPT: &str = r#"
local n = #ARGV - 1
local remaining = tonumber(redis.call('GET', KEYS[2]) or '0')
if remaining < n then return 0 end
local seats = {}
for i = 2, #ARGV do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  if not raw then return -1 end
  local seat = cjson.decode(raw)
  if seat.status ~= 'available' then return 0 end
  seats[i] = seat
end
for i = 2, #ARGV do
  local seat = seats[i]
  seat.status = 'held'
  seat.order = ARGV[1]
  redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(seat))
end
redis.call('DECRBY', KEYS[2], n)
return 1
"#;

/// The Redis-Lua design on the configured Redis, under the configured key prefix.
pub struct RedisLuaTarget {
    client: Client,
    seats_key: String,
    remaining_key: String,
    sha: String,
    seats: u32,
}

impl RedisLuaTarget {
    /// Connects and loads the script.
    pub async fn connect(settings: &Settings, seats: u32) -> anyhow::Result<Self> {
        let store = RedisStore::connect(&settings.redis).await?;
        let client = store.client().clone();
        let sha: String = client.script_load(HOLD_SCRIPT).await?;
        Ok(RedisLuaTarget {
            client,
            seats_key: store.key("bench:seat-hold:seats"),
            remaining_key: store.key("bench:seat-hold:remaining"),
            sha,
            seats,
        })
    }

    fn seat_json(&self, i: u32) -> String {
        let cols = SEATS_PER_ROW.min(self.seats).max(1);
        serde_json::json!({
            "id": i + 1, "row": i / cols + 1, "col": i % cols + 1,
            "price": PRICE_CENTS, "status": "available", "order": null,
        })
        .to_string()
    }
}

impl HoldTarget for RedisLuaTarget {
    fn name(&self) -> &'static str {
        "redis_lua"
    }

    fn reset(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let keys = vec![self.seats_key.clone(), self.remaining_key.clone()];
            self.client.del::<(), _>(keys).await?;
            let ids: Vec<u32> = (0..self.seats).collect();
            for chunk in ids.chunks(2000) {
                let fields: Vec<(String, String)> = chunk
                    .iter()
                    .map(|i| ((i + 1).to_string(), self.seat_json(*i)))
                    .collect();
                self.client
                    .hset::<(), _, _>(&self.seats_key, fields)
                    .await?;
            }
            self.client
                .set::<(), _, _>(&self.remaining_key, self.seats as i64, None, None, false)
                .await?;
            Ok(())
        })
    }

    fn hold(&self, order: i64, seats: [i64; 2]) -> BoxFuture<'_, HoldOutcome> {
        Box::pin(async move {
            let keys = vec![self.seats_key.clone(), self.remaining_key.clone()];
            let args = vec![order, seats[0], seats[1]];
            match self
                .client
                .evalsha::<i64, _, _, _>(&self.sha, keys, args)
                .await
            {
                Ok(1) => HoldOutcome::Held,
                Ok(0) => HoldOutcome::Refused,
                Ok(other) => HoldOutcome::Error(format!("script answered {other}")),
                Err(e) => HoldOutcome::Error(e.to_string()),
            }
        })
    }

    fn check(&self, seats: u32, held: u64) -> BoxFuture<'_, anyhow::Result<Vec<String>>> {
        Box::pin(async move {
            let values: Vec<String> = self.client.hvals(&self.seats_key).await?;
            let mut held_seats = 0i64;
            for v in &values {
                let seat: serde_json::Value = serde_json::from_str(v)?;
                held_seats += i64::from(seat["status"] == "held");
            }
            let remaining: i64 = self.client.get(&self.remaining_key).await?;
            Ok([
                count_violations("seats in the hash", values.len() as i64, seats as i64),
                count_violations("held seats", held_seats, 2 * held as i64),
                count_violations("remaining", remaining, seats as i64 - held_seats),
            ]
            .into_iter()
            .flatten()
            .collect())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// (C, D) Postgres row locks

/// A scratch database `<database>_bench` with a copy of our `seats` table's shape (same columns,
/// CHECKs and indexes) and a category row with a remaining counter.
pub struct PgBench {
    pool: PgPool,
    scratch: Scratch,
    seats: u32,
}

const PG_SCHEMA: &str = "
CREATE TABLE bench_category (
    id        BIGINT PRIMARY KEY,
    capacity  INT NOT NULL,
    remaining INT NOT NULL CHECK (remaining >= 0)
);
CREATE TABLE bench_seat (
    id               BIGINT PRIMARY KEY,
    category_id      BIGINT NOT NULL REFERENCES bench_category (id),
    row_no           INT NOT NULL,
    col_no           INT NOT NULL,
    price_cents      BIGINT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'held', 'sold')),
    order_no         BIGINT,
    hold_expires_at  TIMESTAMPTZ,
    CHECK ((status = 'available') = (order_no IS NULL))
);
CREATE INDEX bench_seat_category_status ON bench_seat (category_id, status);
CREATE INDEX bench_seat_order ON bench_seat (order_no) WHERE order_no IS NOT NULL;
";

impl PgBench {
    /// Creates the scratch database afresh and fills it; the pool allows `connections` clients.
    pub async fn create(
        settings: &Settings,
        seats: u32,
        connections: usize,
    ) -> anyhow::Result<Arc<Self>> {
        let scratch = Scratch::empty(settings, "bench").await?;
        let pool = pool_from_config(
            pg_config(&scratch.settings.database)?,
            connections,
            settings.database.connect_timeout(),
        )?;
        let client = pool.get().await?;
        client.batch_execute(PG_SCHEMA).await?;
        let cols = SEATS_PER_ROW.min(seats).max(1) as i32;
        client
            .execute(
                "INSERT INTO bench_category VALUES (1, $1, $1)",
                &[&(seats as i32)],
            )
            .await?;
        client
            .execute(
                "INSERT INTO bench_seat (id, category_id, row_no, col_no, price_cents)
                 SELECT i + 1, 1, i / $2 + 1, i % $2 + 1, $3 FROM generate_series(0, $1 - 1) i",
                &[&(seats as i32), &cols, &PRICE_CENTS],
            )
            .await?;
        Ok(Arc::new(PgBench {
            pool,
            scratch,
            seats,
        }))
    }

    /// Drops the scratch database (best effort: it is recreated on the next run anyway).
    pub async fn drop_database(&self) {
        self.pool.close();
        self.scratch.remove().await;
    }

    async fn reset(&self) -> anyhow::Result<()> {
        let client = self.pool.get().await?;
        client
            .batch_execute(
                "UPDATE bench_seat SET status = 'available', order_no = NULL, hold_expires_at = NULL
                 WHERE status <> 'available';
                 UPDATE bench_category SET remaining = capacity;",
            )
            .await?;
        // Without it every round would start on more dead tuples than the one before.
        client.batch_execute("VACUUM (ANALYZE) bench_seat").await?;
        client.batch_execute("VACUUM bench_category").await?;
        Ok(())
    }

    async fn check(&self, held: u64) -> anyhow::Result<Vec<String>> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'held'), count(DISTINCT order_no),
                        count(*), (SELECT remaining FROM bench_category WHERE id = 1)::bigint
                 FROM bench_seat",
                &[],
            )
            .await?;
        let (held_seats, orders, total, remaining): (i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        Ok([
            count_violations("seats", total, self.seats as i64),
            count_violations("held seats", held_seats, 2 * held as i64),
            count_violations("orders holding seats", orders, held as i64),
            count_violations("remaining", remaining, self.seats as i64 - held_seats),
        ]
        .into_iter()
        .flatten()
        .collect())
    }
}

/// Which Postgres design.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgMode {
    /// Conditional `UPDATE`s only.
    Atomic,
    /// `SELECT … FOR UPDATE` first, then `UPDATE`s.
    ForUpdate,
}

/// Holds through one Postgres transaction per attempt.
pub struct PgHoldTarget {
    bench: Arc<PgBench>,
    mode: PgMode,
}

impl PgHoldTarget {
    /// A design over the shared scratch database.
    pub fn new(bench: Arc<PgBench>, mode: PgMode) -> Self {
        PgHoldTarget { bench, mode }
    }
}

impl HoldTarget for PgHoldTarget {
    fn name(&self) -> &'static str {
        match self.mode {
            PgMode::Atomic => "pg_atomic",
            PgMode::ForUpdate => "pg_for_update",
        }
    }

    fn reset(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(self.bench.reset())
    }

    fn hold(&self, order: i64, seats: [i64; 2]) -> BoxFuture<'_, HoldOutcome> {
        Box::pin(async move {
            let result = match self.mode {
                PgMode::Atomic => pg_hold_atomic(&self.bench.pool, order, seats).await,
                PgMode::ForUpdate => pg_hold_for_update(&self.bench.pool, order, seats).await,
            };
            match result {
                Ok(true) => HoldOutcome::Held,
                Ok(false) => HoldOutcome::Refused,
                Err(PgFail(e)) => HoldOutcome::Error(e),
            }
        })
    }

    fn check(&self, _seats: u32, held: u64) -> BoxFuture<'_, anyhow::Result<Vec<String>>> {
        Box::pin(self.bench.check(held))
    }
}

const PG_HOLD_SEATS: &str = "UPDATE bench_seat
     SET status = 'held', order_no = $2, hold_expires_at = now() + interval '15 minutes'
     WHERE category_id = 1 AND id = ANY($1) AND status = 'available'";
const PG_TAKE_REMAINING: &str =
    "UPDATE bench_category SET remaining = remaining - $1 WHERE id = 1 AND remaining >= $1";

/// Why a Postgres attempt failed, as text for the report.
struct PgFail(String);

impl From<tokio_postgres::Error> for PgFail {
    fn from(e: tokio_postgres::Error) -> Self {
        PgFail(describe(&e))
    }
}

impl From<deadpool_postgres::PoolError> for PgFail {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgFail(e.to_string())
    }
}

/// The two writes both designs end with; answers (seat rows, counter rows) updated.
async fn write_hold(
    tx: &deadpool_postgres::Transaction<'_>,
    ids: &Vec<i64>,
    order: i64,
) -> Result<(u64, u64), PgFail> {
    let hold = tx.prepare_cached(PG_HOLD_SEATS).await?;
    let take = tx.prepare_cached(PG_TAKE_REMAINING).await?;
    let seats = tx.execute(&hold, &[ids, &order]).await?;
    if seats != 2 {
        return Ok((seats, 0));
    }
    Ok((seats, tx.execute(&take, &[&2i32]).await?))
}

/// (C): both updates are conditional; a short count means someone else got there first.
/// Returning without commit drops the transaction, which rolls it back.
async fn pg_hold_atomic(pool: &PgPool, order: i64, seats: [i64; 2]) -> Result<bool, PgFail> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if write_hold(&tx, &seats.to_vec(), order).await? != (2, 1) {
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// (D): lock the seat rows (in id order) and the category row, check, then write.
async fn pg_hold_for_update(pool: &PgPool, order: i64, seats: [i64; 2]) -> Result<bool, PgFail> {
    let mut client = pool.get().await?;
    let ids = seats.to_vec();
    let tx = client.transaction().await?;
    let lock_seats = tx
        .prepare_cached(
            "SELECT status FROM bench_seat WHERE category_id = 1 AND id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .await?;
    let lock_category = tx
        .prepare_cached("SELECT remaining FROM bench_category WHERE id = 1 FOR UPDATE")
        .await?;
    let rows = tx.query(&lock_seats, &[&ids]).await?;
    if rows.len() != 2 || rows.iter().any(|r| r.get::<_, &str>(0) != "available") {
        return Ok(false);
    }
    let remaining: i32 = tx.query_one(&lock_category, &[]).await?.get(0);
    if remaining < 2 || write_hold(&tx, &ids, order).await? != (2, 1) {
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}
