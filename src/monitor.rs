//! The operators' monitoring figures: one frame per tick, shared by every `/ws/admin` client,
//! and the same figures as Prometheus metrics.
//!
//! One task per server ([`Monitor::start`]) wakes every [`PERIOD`] and gathers:
//! - **per hot category** (every category whose actor runs here): capacity, the actor's
//!   available/held/sold and mailbox depth, holds/s, sales/s and expiries/s (differences of the
//!   actor's [`Totals`] between ticks), and — while someone watches — the same counts from
//!   Postgres and from the Redis mirror;
//! - **the pipeline**: the group-commit writer's batches, jobs and commit latency (p50/p99 of
//!   the tick), the outbox backlog, relay lag (age of the oldest unsent row), consumer lag (age
//!   of the oldest sent row the MQ bookkeeping consumer has not reconciled), discarded orders,
//!   open reconciliation findings and dead letters;
//! - **alerts**: findings that turned up open (`unreconciled` or `reconciled_with_problem`) and
//!   dead letters that appeared since the previous tick.
//!
//! Reading an actor never costs it a message when nothing changed: its published snapshot
//! (`Supervisor::snapshot`, no message) gives counts and `seq`, and the actor is asked for its
//! totals (`GetStats`) only when `seq` moved since the last tick. An idle category therefore
//! still passivates while operators watch.
//!
//! The frame is serialized once per tick into [`Bytes`] and published on a `watch` channel:
//! every admin socket sends those same bytes, and a slow socket simply skips to the newest
//! frame (a `watch` keeps one value), so nothing queues per client. The task keeps running with
//! nobody watching, because the Prometheus figures must be current whenever they are scraped;
//! it then skips the per-category Postgres counts and the serialization, which only the stream
//! needs. It ends with the last handle to its [`Monitor`] (the server's router).

use crate::actors::Supervisor;
use crate::actors::messages::{GetStats, Totals};
use crate::domain::inventory::Counts;
use crate::store::writer::{GroupCommitWriter, WriterStats};
use crate::store::{PgPool, RedisStore, StoreError};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often a frame is built: "about once a second" (API.md). Tests may pass another period
/// to [`Monitor::start`].
pub const PERIOD: Duration = Duration::from_secs(1);

/// Longest wait for one actor's answer: a category with a full mailbox must not hold up the
/// frame of every other category (its rates, or all its actor figures, wait for a later tick).
const ACTOR_TIMEOUT: Duration = Duration::from_millis(250);

/// Longest wait for Postgres per tick: an overloaded database shows as `null` figures on time
/// rather than as a stream that falls silent.
const DB_TIMEOUT: Duration = Duration::from_millis(750);

/// Open findings read per tick to spot new ones: the reconciler keeps one open finding per
/// subject, so this is far above a healthy count; past it only the newest are watched.
const OPEN_FINDINGS_SCAN: i64 = 10_000;

/// Alerts in one frame: a burst (a reconciler pass finding a broken category seat by seat)
/// is summed up by `findings_open`; the frame stays small.
const MAX_ALERTS: i64 = 100;

/// How far back dead letters are looked for: a consumer writes one in a short transaction, so
/// a row commits well within this of its `created_at`; ids already alerted are remembered
/// for as long.
const DEAD_LETTER_LOOKBACK: Duration = Duration::from_secs(60);

/// What the monitor reads; handles only, cheap to clone.
#[derive(Clone)]
pub struct Sources {
    /// The category actors.
    pub supervisor: Supervisor,
    /// The group-commit writer (its counters).
    pub writer: GroupCommitWriter,
    /// Postgres (request handlers' pool: a few small queries per tick).
    pub pg: PgPool,
    /// Redis, for the read-model mirror's counts.
    pub redis: RedisStore,
}

/// The latest frame, shared by every admin socket. Dropping the last handle ends the task.
pub struct Monitor {
    /// `None` until the first frame is built. A `watch`, so a slow reader skips frames.
    frames: watch::Sender<Option<Bytes>>,
}

impl Monitor {
    /// Starts the tick task on the current runtime; it builds a frame every `period`.
    pub fn start(sources: Sources, period: Duration) -> Arc<Monitor> {
        let (frames, _) = watch::channel(None);
        let monitor = Arc::new(Monitor { frames });
        tokio::spawn(run(Arc::downgrade(&monitor), sources, period));
        monitor
    }

    /// The frames from now on. The current frame, if there is one, counts as new, so a client
    /// gets a frame at once instead of waiting up to a period.
    pub fn subscribe(&self) -> watch::Receiver<Option<Bytes>> {
        let mut frames = self.frames.subscribe();
        frames.mark_changed();
        frames
    }
}

/// The tick loop: ends when the [`Monitor`] is gone.
async fn run(monitor: Weak<Monitor>, sources: Sources, period: Duration) {
    let mut every = tokio::time::interval(period);
    // A slow tick (Postgres at its timeout) delays the next one instead of bunching them.
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticker = Ticker::default();
    // What is already open when the monitor starts is history, not an alert; taken before the
    // first frame so a finding raised after a client's first frame is never mistaken for it.
    while new_alerts(
        &sources.pg,
        &mut ticker.findings,
        &mut ticker.dead_letters,
        Instant::now(),
    )
    .await
    .is_err()
    {
        if monitor.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(period).await;
    }
    loop {
        every.tick().await;
        let Some(monitor) = monitor.upgrade() else {
            return;
        };
        let watched = monitor.frames.receiver_count() > 0;
        let frame = ticker.tick(&sources, watched, period).await;
        if watched {
            publish(&monitor, &frame);
        }
    }
}

/// Serializes the frame once and hands the bytes to every socket.
fn publish(monitor: &Monitor, frame: &Frame) {
    match serde_json::to_vec(frame) {
        Ok(json) => {
            monitor.frames.send_replace(Some(Bytes::from(json)));
        }
        Err(e) => tracing::error!(error = %e, "monitoring frame not serialized"),
    }
}

// ---- the frame ----

/// One `{type: "stats"}` message of `/ws/admin`.
#[derive(Debug, Serialize)]
pub struct Frame {
    /// Always `"stats"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Frame number, one higher per tick of this server's monitor.
    pub seq: u64,
    /// When the frame was built.
    pub at: DateTime<Utc>,
    /// The tick period, so a client knows when to expect the next frame.
    pub interval_ms: u64,
    /// Hot categories (actor running here), in id order.
    pub categories: Vec<CategoryFigures>,
    /// Writer, outbox, relay, consumers, discarded orders, findings.
    pub pipeline: Pipeline,
    /// What went wrong since the previous frame.
    pub alerts: Vec<Alert>,
}

/// One hot category's figures.
#[derive(Debug, Serialize)]
pub struct CategoryFigures {
    /// Ticket category id.
    pub id: i64,
    /// Its program (from Postgres; `null` when Postgres did not answer).
    pub program_id: Option<i64>,
    /// Its name (from Postgres).
    pub name: Option<String>,
    /// Seats (`true`) or general admission (from Postgres).
    pub seated: Option<bool>,
    /// Tickets in total (from the actor).
    pub capacity: Option<u32>,
    /// What the actor holds in memory; reservations not yet committed count as held.
    pub actor: Option<ActorCounts>,
    /// What Postgres holds (committed only).
    pub postgres: Option<StoreCounts>,
    /// What the Redis mirror holds (`null` when it has nothing or Redis did not answer).
    pub redis: Option<StoreCounts>,
    /// Calls queued at or running in the actor.
    pub mailbox_depth: usize,
    /// Committed holds per second over the last tick (`null` when not known yet).
    pub holds_per_sec: Option<f64>,
    /// Sales (payments confirmed) per second.
    pub sales_per_sec: Option<f64>,
    /// Holds released by their timer per second.
    pub expiries_per_sec: Option<f64>,
    /// Hold latency since the previous tick: a reservation's round trip to the actor, from the
    /// order path (`null` when no hold was taken).
    pub hold_latency_ms: Option<Percentiles>,
}

/// An actor's counts with the sequence number they belong to.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ActorCounts {
    /// Free tickets.
    pub available: u32,
    /// Tickets in unpaid orders.
    pub held: u32,
    /// Tickets in paid orders.
    pub sold: u32,
    /// Last committed change included.
    pub seq: u64,
}

/// Counts kept by a store (Postgres, the Redis mirror).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    /// Free tickets.
    pub available: i64,
    /// Tickets in unpaid orders.
    pub held: i64,
    /// Tickets in paid orders.
    pub sold: i64,
}

/// Median and 99th percentile.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The order pipeline after the actors.
#[derive(Debug, Default, Serialize)]
pub struct Pipeline {
    /// The group-commit writer over the last tick.
    pub writer: WriterFigures,
    /// Outbox rows not yet sent to Pulsar.
    pub outbox_backlog: Option<i64>,
    /// Age of the oldest unsent outbox row (0 when none).
    pub relay_lag_seconds: Option<f64>,
    /// Age, since it was sent, of the oldest event the MQ bookkeeping consumer has not
    /// reconciled yet (0 when none).
    pub consumer_lag_seconds: Option<f64>,
    /// Orders a commit set aside (`discarded_orders`), ever.
    pub discarded_orders: Option<i64>,
    /// Reconciliation findings `unreconciled` or `reconciled_with_problem`.
    pub findings_open: Option<i64>,
    /// Events consumers gave up on, ever.
    pub dead_letters: Option<i64>,
}

/// The writer's work over the last tick.
#[derive(Debug, Default, Serialize)]
pub struct WriterFigures {
    /// Transactions committed per second.
    pub batches_per_sec: Option<f64>,
    /// Jobs (orders, changes) committed per second.
    pub jobs_per_sec: Option<f64>,
    /// Jobs per committed transaction (`null` when none committed this tick).
    pub mean_batch_size: Option<f64>,
    /// Commit latency in ms, from BEGIN to the COMMIT's answer (`null` when none committed
    /// this tick). Bucket upper bounds: at most ~41 % above the true value.
    pub commit_ms: Option<Percentiles>,
    /// Transactions committed since start.
    pub batches_total: u64,
    /// Jobs refused alone since start (the rest of their batch committed).
    pub refused_total: u64,
    /// Jobs failed with their batch since start.
    pub failed_total: u64,
}

/// Something an operator should look at now.
#[derive(Debug, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Alert {
    /// A reconciliation finding that turned up open.
    Finding {
        /// Finding id.
        id: i64,
        /// What kind of divergence.
        kind: String,
        /// What it is about (a seat, an order, a category).
        subject: String,
        /// `unreconciled` or `reconciled_with_problem`.
        status: String,
        /// The reconciler's evidence.
        details: serde_json::Value,
        /// Program, if the finding names one.
        program_id: Option<i64>,
        /// Ticket category, if the finding names one.
        ticket_category_id: Option<i64>,
        /// Order number (a string: 63-bit), if the finding names one.
        order_no: Option<String>,
        /// When the finding was recorded.
        created_at: DateTime<Utc>,
    },
    /// An event a consumer gave up on.
    DeadLetter {
        /// Dead-letter id.
        id: i64,
        /// The consumer that gave up.
        consumer: String,
        /// The event.
        event_id: String,
        /// Attempts made.
        attempts: i32,
        /// The last error.
        last_error: String,
        /// When it was dead-lettered.
        created_at: DateTime<Utc>,
    },
}

// ---- one tick ----

/// What the monitor remembers between ticks.
#[derive(Default)]
struct Ticker {
    seq: u64,
    /// The previous tick, and the categories active then: a category that was not started
    /// since, so all of its totals are that interval's.
    last_tick: Option<(Instant, Vec<i64>)>,
    categories: HashMap<i64, Seen>,
    writer: Option<WriterMark>,
    /// Open findings (id, status) seen so far; `None` before the first tick, which only
    /// takes note (what was open before the monitor started is history, not an alert).
    findings: Option<HashSet<(i64, String)>>,
    /// Dead letters alerted, with when they were first seen; `None` before the first tick.
    dead_letters: Option<HashMap<i64, Instant>>,
    /// Each category's hold-latency bucket counts at the previous tick.
    holds_seen: HashMap<i64, [u64; LATENCY_BUCKETS]>,
}

/// A category's totals as last read.
struct Seen {
    /// The published snapshot's `seq` when the totals were read: unchanged `seq` means
    /// unchanged totals, so the actor is not asked again.
    seq: u64,
    totals: Totals,
    /// The last tick at which `totals` were known to be current.
    at: Instant,
}

/// The writer's counters at a tick.
struct WriterMark {
    batches: u64,
    jobs: u64,
    commits: [u64; LATENCY_BUCKETS],
    at: Instant,
}

/// What one actor read gave.
struct ActorRead {
    id: i64,
    capacity: u32,
    counts: Counts,
    seq: u64,
    totals: TotalsRead,
}

/// An actor's totals this tick.
enum TotalsRead {
    /// Its `seq` did not move, so neither did its totals: not asked.
    Unchanged,
    /// Asked and answered.
    Fresh(Totals),
    /// Asked, but busy or restarting: known next time.
    Missing,
}

/// A category's committed counts and catalog facts in Postgres.
struct PgCategory {
    program_id: i64,
    name: String,
    seated: bool,
    counts: StoreCounts,
}

/// Holds, sales and expiries per second.
#[derive(Default)]
struct Rates {
    holds: Option<f64>,
    sales: Option<f64>,
    expiries: Option<f64>,
}

impl Ticker {
    /// Gathers one frame and updates the Prometheus figures.
    async fn tick(&mut self, sources: &Sources, watched: bool, period: Duration) -> Frame {
        let now = Instant::now();
        self.seq += 1;
        let ids = sources.supervisor.active_categories();
        let known: Vec<Option<u64>> = ids
            .iter()
            .map(|id| self.categories.get(id).map(|s| s.seq))
            .collect();
        let actors = ids
            .iter()
            .zip(known)
            .map(|(&id, known)| read_actor(&sources.supervisor, id, known));
        let (reads, postgres, pipeline, alerts) = tokio::join!(
            futures::future::join_all(actors),
            async {
                match watched {
                    true => bounded(postgres_counts(&sources.pg, &ids)).await,
                    false => None,
                }
            },
            bounded(pipeline_figures(&sources.pg)),
            bounded(new_alerts(
                &sources.pg,
                &mut self.findings,
                &mut self.dead_letters,
                now
            )),
        );
        let redis = tokio::time::timeout(DB_TIMEOUT, redis_counts(&sources.redis, &ids))
            .await
            .ok()
            .flatten();
        self.categories
            .retain(|id, _| ids.binary_search(id).is_ok());
        self.holds_seen
            .retain(|id, _| ids.binary_search(id).is_ok());
        let postgres = postgres.unwrap_or_default();
        let redis = redis.unwrap_or_default();
        let categories = reads
            .into_iter()
            .zip(&ids)
            .map(|(read, &id)| {
                let rates = read
                    .as_ref()
                    .map(|r| self.rates(r, now))
                    .unwrap_or_default();
                let depth = sources.supervisor.queue_depth(id);
                let holds = self.hold_latency(&sources.supervisor, id);
                let mut figures = category_figures(id, read, rates, depth, &postgres, &redis);
                figures.hold_latency_ms = holds;
                record_category(&figures);
                figures
            })
            .collect();
        let mut pipeline = pipeline.unwrap_or_default();
        pipeline.writer = self.writer_figures(sources.writer.stats(), now);
        record_pipeline(&pipeline);
        self.last_tick = Some((now, ids));
        Frame {
            kind: "stats",
            seq: self.seq,
            at: Utc::now(),
            interval_ms: period.as_millis() as u64,
            categories,
            pipeline,
            alerts: alerts.unwrap_or_default(),
        }
    }

    /// p50/p99 of the holds taken in `id` since the previous tick (None: none taken).
    fn hold_latency(&mut self, supervisor: &Supervisor, id: i64) -> Option<Percentiles> {
        let now = supervisor.hold_latency_counts(id)?;
        let before = self
            .holds_seen
            .insert(id, now)
            .unwrap_or([0; LATENCY_BUCKETS]);
        let window: Vec<u64> = now
            .iter()
            .zip(before)
            .map(|(n, b)| n.saturating_sub(b))
            .collect();
        percentiles(&window)
    }

    /// Rates from the totals read this tick, and the Prometheus counters' increments.
    fn rates(&mut self, read: &ActorRead, now: Instant) -> Rates {
        let totals = match read.totals {
            TotalsRead::Fresh(totals) => totals,
            TotalsRead::Missing => return Rates::default(),
            TotalsRead::Unchanged => {
                // Nothing happened since the totals were read: they are current as of now.
                if let Some(seen) = self.categories.get_mut(&read.id) {
                    seen.at = now;
                }
                return Rates {
                    holds: Some(0.0),
                    sales: Some(0.0),
                    expiries: Some(0.0),
                };
            }
        };
        let previous = self.categories.insert(
            read.id,
            Seen {
                seq: read.seq,
                totals,
                at: now,
            },
        );
        let (added, since) = match previous {
            Some(previous) => (added_since(&previous.totals, &totals), Some(previous.at)),
            // First sight: the whole of the actor's totals is new to the counters, and it
            // happened since the previous tick if the actor was not running then.
            None => (totals, self.started_since_last_tick(read.id)),
        };
        count_totals(read.id, &added);
        let Some(since) = since else {
            return Rates::default();
        };
        let secs = now.duration_since(since).as_secs_f64();
        if secs <= 0.0 {
            return Rates::default();
        }
        Rates {
            holds: Some(added.holds as f64 / secs),
            sales: Some(added.sales as f64 / secs),
            expiries: Some(added.expiries as f64 / secs),
        }
    }

    /// The previous tick's time if category `id` was not active then.
    fn started_since_last_tick(&self, id: i64) -> Option<Instant> {
        let (at, active) = self.last_tick.as_ref()?;
        active.binary_search(&id).is_err().then_some(*at)
    }

    /// The writer's work since the previous tick.
    fn writer_figures(&mut self, stats: &WriterStats, now: Instant) -> WriterFigures {
        let mark = WriterMark {
            batches: stats.batches.load(Ordering::Relaxed),
            jobs: stats.jobs.load(Ordering::Relaxed),
            commits: stats.commit_latency.counts(),
            at: now,
        };
        let mut figures = WriterFigures {
            batches_total: mark.batches,
            refused_total: stats.refused.load(Ordering::Relaxed),
            failed_total: stats.failed.load(Ordering::Relaxed),
            ..WriterFigures::default()
        };
        if let Some(previous) = &self.writer {
            let secs = now.duration_since(previous.at).as_secs_f64().max(1e-3);
            let batches = mark.batches.saturating_sub(previous.batches);
            let jobs = mark.jobs.saturating_sub(previous.jobs);
            figures.batches_per_sec = Some(batches as f64 / secs);
            figures.jobs_per_sec = Some(jobs as f64 / secs);
            figures.mean_batch_size = (batches > 0).then(|| jobs as f64 / batches as f64);
            let window: Vec<u64> = mark
                .commits
                .iter()
                .zip(&previous.commits)
                .map(|(now, before)| now.saturating_sub(*before))
                .collect();
            figures.commit_ms = percentiles(&window);
        }
        self.writer = Some(mark);
        figures
    }
}

/// What happened between two reads of an actor's totals. An actor that restarted in between
/// counts from zero again; then everything it counted is new.
fn added_since(before: &Totals, now: &Totals) -> Totals {
    let restarted = now.holds < before.holds
        || now.releases < before.releases
        || now.expiries < before.expiries
        || now.sales < before.sales
        || now.returns < before.returns;
    if restarted {
        return *now;
    }
    Totals {
        holds: now.holds - before.holds,
        releases: now.releases - before.releases,
        expiries: now.expiries - before.expiries,
        sales: now.sales - before.sales,
        returns: now.returns - before.returns,
    }
}

/// Waits at most [`DB_TIMEOUT`] for a Postgres read; a failure is logged and shows as `null`.
async fn bounded<T>(read: impl Future<Output = Result<T, StoreError>>) -> Option<T> {
    match tokio::time::timeout(DB_TIMEOUT, read).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "monitoring figures not read from Postgres");
            None
        }
        Err(_) => {
            tracing::warn!("monitoring figures not read: Postgres did not answer in time");
            None
        }
    }
}

/// A category's counts from its published snapshot (no message), and its totals from the
/// actor only when `seq` moved since `known`. `None` when the actor did not answer in time.
async fn read_actor(supervisor: &Supervisor, id: i64, known: Option<u64>) -> Option<ActorRead> {
    // `snapshot` and `call` activate a category that stopped since it was listed a moment
    // ago; rare, and then it simply runs again until it is idle long enough.
    let snapshot = tokio::time::timeout(ACTOR_TIMEOUT, supervisor.snapshot(id))
        .await
        .ok()?
        .ok()?;
    let counts = snapshot.counts;
    let capacity = counts.available + counts.held + counts.sold;
    if known == Some(snapshot.seq) {
        return Some(ActorRead {
            id,
            capacity,
            counts,
            seq: snapshot.seq,
            totals: TotalsRead::Unchanged,
        });
    }
    let stats = tokio::time::timeout(ACTOR_TIMEOUT, supervisor.call(id, GetStats)).await;
    match stats {
        Ok(Ok(stats)) => Some(ActorRead {
            id,
            capacity: stats.capacity,
            counts: stats.counts,
            seq: snapshot.seq,
            totals: TotalsRead::Fresh(stats.totals),
        }),
        // Busy or restarting: counts from the snapshot, totals next time.
        _ => Some(ActorRead {
            id,
            capacity,
            counts,
            seq: snapshot.seq,
            totals: TotalsRead::Missing,
        }),
    }
}

/// One category's entry of the frame.
fn category_figures(
    id: i64,
    read: Option<ActorRead>,
    rates: Rates,
    mailbox_depth: usize,
    postgres: &HashMap<i64, PgCategory>,
    redis: &HashMap<i64, StoreCounts>,
) -> CategoryFigures {
    let pg = postgres.get(&id);
    CategoryFigures {
        id,
        program_id: pg.map(|p| p.program_id),
        name: pg.map(|p| p.name.clone()),
        seated: pg.map(|p| p.seated),
        capacity: read.as_ref().map(|r| r.capacity),
        actor: read.as_ref().map(|r| ActorCounts {
            available: r.counts.available,
            held: r.counts.held,
            sold: r.counts.sold,
            seq: r.seq,
        }),
        postgres: pg.map(|p| p.counts),
        redis: redis.get(&id).copied(),
        mailbox_depth,
        holds_per_sec: rates.holds,
        sales_per_sec: rates.sales,
        expiries_per_sec: rates.expiries,
        hold_latency_ms: None,
    }
}

// ---- Postgres ----

/// Committed counts of `ids` in one statement: seated categories count their seats by status;
/// general-admission ones read `ga_holds` and the `ga_taken` counter (available = capacity −
/// ga_taken, so a counter that drifted from its holds shows as counts not adding up).
async fn postgres_counts(pg: &PgPool, ids: &[i64]) -> Result<HashMap<i64, PgCategory>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let client = pg.get().await?;
    let rows = client
        .query(
            "SELECT tc.id, tc.program_id, tc.name, tc.seated,
                    CASE WHEN tc.seated THEN s.available ELSE (tc.capacity - tc.ga_taken)::bigint END,
                    CASE WHEN tc.seated THEN s.held ELSE g.held END,
                    CASE WHEN tc.seated THEN s.sold ELSE g.sold END
             FROM ticket_categories tc
             CROSS JOIN LATERAL (
                 SELECT count(*) FILTER (WHERE status = 'available') AS available,
                        count(*) FILTER (WHERE status = 'held') AS held,
                        count(*) FILTER (WHERE status = 'sold') AS sold
                 FROM seats WHERE ticket_category_id = tc.id) s
             CROSS JOIN LATERAL (
                 SELECT coalesce(sum(quantity) FILTER (WHERE status = 'held'), 0)::bigint AS held,
                        coalesce(sum(quantity) FILTER (WHERE status = 'sold'), 0)::bigint AS sold
                 FROM ga_holds WHERE ticket_category_id = tc.id) g
             WHERE tc.id = ANY($1)",
            &[&ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let category = PgCategory {
                program_id: r.get(1),
                name: r.get(2),
                seated: r.get(3),
                counts: StoreCounts {
                    available: r.get(4),
                    held: r.get(5),
                    sold: r.get(6),
                },
            };
            (r.get::<_, i64>(0), category)
        })
        .collect())
}

/// The Redis mirror's counts of `ids` (`reconcile::mirror`), one pipeline; None when Redis does
/// not answer (the frame shows `"redis": null` rather than arriving late).
async fn redis_counts(redis: &RedisStore, ids: &[i64]) -> Option<HashMap<i64, StoreCounts>> {
    let counts = crate::reconcile::mirror::counts(redis, ids).await.ok()?;
    Some(
        counts
            .into_iter()
            .map(|(id, c)| {
                let counts = StoreCounts {
                    available: i64::from(c.available),
                    held: i64::from(c.held),
                    sold: i64::from(c.sold),
                };
                (id, counts)
            })
            .collect(),
    )
}

/// Outbox, relay and consumer lag, discarded orders, open findings, dead letters: one
/// statement. The outbox figures read the partial indexes `outbox_unsent` and
/// `outbox_unreconciled`, so they cost what the backlog is, not what the outbox is.
async fn pipeline_figures(pg: &PgPool) -> Result<Pipeline, StoreError> {
    let client = pg.get().await?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM outbox WHERE send_status <> 'sent'),
                    (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
                     FROM outbox WHERE send_status <> 'sent'),
                    (SELECT coalesce(extract(epoch FROM now() - min(sent_at)), 0)::float8
                     FROM outbox WHERE reconcile_status = 'unreconciled' AND send_status = 'sent'),
                    (SELECT count(*) FROM discarded_orders),
                    (SELECT count(*) FROM reconciliation_findings
                     WHERE status IN ('unreconciled', 'reconciled_with_problem')),
                    (SELECT count(*) FROM dead_letters)",
            &[],
        )
        .await?;
    Ok(Pipeline {
        outbox_backlog: Some(row.get(0)),
        relay_lag_seconds: Some(row.get::<_, f64>(1).max(0.0)),
        consumer_lag_seconds: Some(row.get::<_, f64>(2).max(0.0)),
        discarded_orders: Some(row.get(3)),
        findings_open: Some(row.get(4)),
        dead_letters: Some(row.get(5)),
        ..Pipeline::default()
    })
}

/// New open findings and new dead letters since the previous tick. Findings are spotted by
/// comparing the set of open (id, status) pairs, not by a high-water mark of ids or times: a
/// reconciler pass is a long transaction whose rows commit well after their `created_at` and
/// out of id order, and a mark would skip them.
async fn new_alerts(
    pg: &PgPool,
    findings: &mut Option<HashSet<(i64, String)>>,
    dead_letters: &mut Option<HashMap<i64, Instant>>,
    now: Instant,
) -> Result<Vec<Alert>, StoreError> {
    let client = pg.get().await?;
    let open: HashSet<(i64, String)> = client
        .query(
            "SELECT id, status FROM reconciliation_findings
             WHERE status IN ('unreconciled', 'reconciled_with_problem') ORDER BY id DESC LIMIT $1",
            &[&OPEN_FINDINGS_SCAN],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let new: Vec<i64> = match findings.as_ref() {
        Some(known) => open.difference(known).map(|(id, _)| *id).collect(),
        None => Vec::new(),
    };
    let mut alerts = finding_alerts(&client, &new).await?;
    alerts.extend(dead_letter_alerts(&client, dead_letters, now).await?);
    // Only now: a tick cut short by its timeout leaves the new findings to the next one.
    *findings = Some(open);
    Ok(alerts)
}

/// The findings `ids` as alerts, oldest first.
async fn finding_alerts(
    client: &deadpool_postgres::Client,
    ids: &[i64],
) -> Result<Vec<Alert>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT id, kind, subject, status, details, program_id, ticket_category_id, order_no,
                    created_at
             FROM reconciliation_findings WHERE id = ANY($1) ORDER BY id LIMIT $2",
            &[&ids, &MAX_ALERTS],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Alert::Finding {
            id: r.get(0),
            kind: r.get(1),
            subject: r.get(2),
            status: r.get(3),
            details: r.get(4),
            program_id: r.get(5),
            ticket_category_id: r.get(6),
            order_no: r.get::<_, Option<i64>>(7).map(|n| n.to_string()),
            created_at: r.get(8),
        })
        .collect())
}

/// Dead letters of the last [`DEAD_LETTER_LOOKBACK`] not alerted yet.
async fn dead_letter_alerts(
    client: &deadpool_postgres::Client,
    seen: &mut Option<HashMap<i64, Instant>>,
    now: Instant,
) -> Result<Vec<Alert>, StoreError> {
    let lookback = DEAD_LETTER_LOOKBACK.as_secs_f64();
    let rows = client
        .query(
            "SELECT id, consumer, event_id::text, attempts, last_error, created_at FROM dead_letters
             WHERE created_at > now() - make_interval(secs => $1) ORDER BY id LIMIT $2",
            &[&lookback, &MAX_ALERTS],
        )
        .await?;
    let first_tick = seen.is_none();
    let known = seen.get_or_insert_with(HashMap::new);
    // Forgotten only after the lookback (and a margin): by then the query no longer finds them.
    known.retain(|_, at| now.duration_since(*at) < DEAD_LETTER_LOOKBACK * 2);
    let mut alerts = Vec::new();
    for r in &rows {
        let id: i64 = r.get(0);
        if known.insert(id, now).is_some() || first_tick {
            continue;
        }
        alerts.push(Alert::DeadLetter {
            id,
            consumer: r.get(1),
            event_id: r.get(2),
            attempts: r.get(3),
            last_error: r.get(4),
            created_at: r.get(5),
        });
    }
    Ok(alerts)
}

// ---- Prometheus ----

/// Per-category gauges (label `category`) of what the frame shows.
fn record_category(c: &CategoryFigures) {
    let category = c.id.to_string();
    let gauge = |name: &'static str, value: f64| {
        metrics::gauge!(name, "category" => category.clone()).set(value);
    };
    if let Some(a) = c.actor {
        gauge("category_available", f64::from(a.available));
        gauge("category_held", f64::from(a.held));
        gauge("category_sold", f64::from(a.sold));
    }
    if let Some(capacity) = c.capacity {
        gauge("category_capacity", f64::from(capacity));
    }
    gauge("category_mailbox_depth", c.mailbox_depth as f64);
}

/// Counters of holds, sales and expiries per category, so Prometheus computes rates itself
/// (`rate(category_holds_total[1m])`) over any window.
fn count_totals(category_id: i64, added: &Totals) {
    let category = category_id.to_string();
    let counter = |name: &'static str, n: u64| {
        if n > 0 {
            metrics::counter!(name, "category" => category.clone()).increment(n);
        }
    };
    counter("category_holds_total", added.holds);
    counter("category_sales_total", added.sales);
    counter("category_expiries_total", added.expiries);
}

/// Pipeline gauges the rest of the code does not export already (the relay exports
/// `outbox_backlog` and `outbox_oldest_unsent_seconds`, the consumers
/// `events_consumer_lag_seconds{consumer}`).
fn record_pipeline(p: &Pipeline) {
    let gauges = [
        ("findings_open", p.findings_open.map(|n| n as f64)),
        ("discarded_orders", p.discarded_orders.map(|n| n as f64)),
        ("dead_letters", p.dead_letters.map(|n| n as f64)),
        ("events_unreconciled_oldest_seconds", p.consumer_lag_seconds),
    ];
    for (name, value) in gauges {
        if let Some(value) = value {
            metrics::gauge!(name).set(value);
        }
    }
}

// ---- an in-process latency summary ----

/// Buckets of [`LatencySummary`]: upper bounds 0.1 ms × √2^i, the last open-ended (≥ ~74 s).
pub const LATENCY_BUCKETS: usize = 40;

/// Smallest bucket's upper bound, in ms.
const LATENCY_BASE_MS: f64 = 0.1;

/// Counts of durations in logarithmic buckets (√2 apart), for percentiles over any window
/// (difference of two [`counts`](Self::counts)). Recording is one relaxed atomic increment, so
/// the writer can afford it per batch; Prometheus has its own histogram of the same figure.
pub struct LatencySummary {
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for LatencySummary {
    fn default() -> Self {
        LatencySummary {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl std::fmt::Debug for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencySummary")
            .field("count", &self.counts().iter().sum::<u64>())
            .finish()
    }
}

impl LatencySummary {
    /// Counts one duration.
    pub fn record(&self, took: Duration) {
        self.buckets[bucket_of(took)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts per bucket so far.
    pub fn counts(&self) -> [u64; LATENCY_BUCKETS] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }
}

/// The bucket of a duration: the first whose upper bound it does not exceed.
fn bucket_of(took: Duration) -> usize {
    let ms = took.as_secs_f64() * 1000.0;
    if ms <= LATENCY_BASE_MS {
        return 0;
    }
    let steps = (2.0 * (ms / LATENCY_BASE_MS).log2()).ceil();
    (steps as usize).min(LATENCY_BUCKETS - 1)
}

/// Upper bound of bucket `i`, in ms.
fn bucket_bound_ms(i: usize) -> f64 {
    LATENCY_BASE_MS * 2f64.powf(i as f64 / 2.0)
}

/// p50 and p99 (bucket upper bounds, in ms) of per-bucket counts; `None` when empty.
fn percentiles(counts: &[u64]) -> Option<Percentiles> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let at = |q: f64| {
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_bound_ms(i);
            }
        }
        bucket_bound_ms(counts.len() - 1)
    };
    Some(Percentiles {
        p50: at(0.50),
        p99: at(0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_bucket_bounding_them() {
        for ms in [0.05, 0.1, 0.3, 1.0, 2.5, 17.0, 999.0, 60_000.0] {
            let i = bucket_of(Duration::from_secs_f64(ms / 1000.0));
            assert!(
                ms <= bucket_bound_ms(i) * 1.000_001,
                "{ms} ms above bucket {i}"
            );
            assert!(
                i == 0 || ms > bucket_bound_ms(i - 1),
                "{ms} ms fits bucket {}",
                i - 1
            );
        }
        assert_eq!(bucket_of(Duration::from_secs(3600)), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn percentiles_of_a_window() {
        let summary = LatencySummary::default();
        let before = summary.counts();
        for _ in 0..98 {
            summary.record(Duration::from_millis(2));
        }
        summary.record(Duration::from_millis(50));
        summary.record(Duration::from_millis(400));
        let window: Vec<u64> = summary
            .counts()
            .iter()
            .zip(before)
            .map(|(a, b)| a - b)
            .collect();
        let p = percentiles(&window).unwrap();
        assert!((2.0..2.9).contains(&p.p50), "{p:?}");
        assert!((50.0..71.0).contains(&p.p99), "{p:?}");
        assert!(percentiles(&[0; LATENCY_BUCKETS]).is_none());
    }

    #[test]
    fn a_restarted_actor_counts_from_zero() {
        let before = Totals {
            holds: 10,
            sales: 4,
            ..Totals::default()
        };
        let later = Totals {
            holds: 13,
            sales: 4,
            expiries: 1,
            ..Totals::default()
        };
        assert_eq!(added_since(&before, &later).holds, 3);
        assert_eq!(added_since(&before, &later).expiries, 1);
        let restarted = Totals {
            holds: 2,
            ..Totals::default()
        };
        assert_eq!(added_since(&before, &restarted), restarted);
    }
}
