//! `boxoffice bench events`: what publishing order events costs and how fast they travel.
//!
//! 1. **Relay throughput.** A scratch outbox is filled with `rows` rows (two events per order,
//!    set-based) and drained to a fresh topic, alternating (A) the real relay
//!    ([`Relay`](crate::events::relay::Relay): up to 100 messages in flight before their
//!    receipts are awaited) and (B) the same selection and marking with one message in flight
//!    at a time ([`drain_one_at_a_time`]).
//! 2. **Ordering with events running vs stopped.** The `bench ordering` workload (group
//!    commit) against servers each on a scratch database of its own: with the relay and
//!    consumers running, with both switched off, and with the relay alone (to tell the two
//!    costs apart). Rotating rounds; after a round the server's event work must finish before
//!    the next round starts.
//! 3. **Commit-to-consumer delay.** During the running rounds a subscription of the benchmark's
//!    own on the running server's topic records, per event, arrival time − `occurred_at` (the
//!    outbox row's `created_at`).

use super::ordering::{self, ModeRun, Racer, Totals};
use super::{Latencies, Scratch, Server, Target, ratio, render_targets};
use crate::config::Settings;
use crate::events::Event;
use crate::events::relay::{self, Relay};
use crate::store::pulsar::ORDER_EVENTS;
use crate::store::{PgPool, PulsarStore, postgres};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Outbox rows drained per relay round.
    pub rows: i64,
    /// Rounds per mode, in both parts.
    pub rounds: u32,
    /// Buyers racing per ordering round (one seat each).
    pub buyers: usize,
    /// Rows of 40 seats in each ordering round's hot category.
    pub seat_rows: i32,
    /// Concurrent HTTP clients of the ordering part.
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rows: 20_000,
            rounds: 3,
            buyers: 2_000,
            seat_rows: 25,
            concurrency: 64,
        }
    }
}

/// The JSON summary (`bench-results/events.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Parameters.
    pub config: BTreeMap<String, f64>,
    /// Relay throughput per mode, rounds summed.
    pub relay: Vec<RelayRun>,
    /// Ordering throughput with events running, stopped, and the relay alone, rounds summed.
    pub ordering: Vec<ModeRun>,
    /// Per ordering mode with a relay: mean seconds after a round's last answer until every
    /// row was sent and, with consumers, applied by each and seen by the test subscription —
    /// how far event work trails the orders.
    pub catch_up_secs: BTreeMap<String, f64>,
    /// Commit-to-consumer delay over the running rounds.
    pub delay: Delay,
    /// `relay_batched_vs_one_at_a_time`, `ordering_running_vs_stopped` and
    /// `ordering_relay_only_vs_stopped`.
    pub ratios: BTreeMap<String, f64>,
    /// The targets and whether this run met them.
    pub targets: Vec<Target>,
    /// Every row was published and marked, no ordering round oversold or lost an order, every
    /// event reached the test subscription.
    pub valid: bool,
}

/// One relay mode, rounds summed.
#[derive(Debug, Clone, Serialize)]
pub struct RelayRun {
    /// `batched` (the relay as built) or `one_at_a_time` (the baseline).
    pub mode: String,
    /// Rows published and marked sent.
    pub rows: i64,
    /// Seconds from start to an empty backlog, summed over rounds.
    pub secs: f64,
    /// `rows / secs`.
    pub rows_per_sec: f64,
    /// Invariant violations, if any.
    pub violations: Vec<String>,
}

/// Commit-to-consumer delay of the events seen by the test subscription.
#[derive(Debug, Clone, Serialize)]
pub struct Delay {
    /// Distinct events measured.
    pub events: u64,
    /// Events received again (at-least-once delivery), not measured again.
    pub duplicates: u64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Largest, milliseconds.
    pub max_ms: f64,
}

/// (A) the relay as built; (B) the baseline, alternated in this order from round to round.
const RELAY_MODES: [&str; 2] = ["batched", "one_at_a_time"];
/// A drain that makes no progress for this long has failed (the broker is away, say).
const STALL: Duration = Duration::from_secs(30);

/// Runs both parts on scratch databases (dropped at the end).
pub async fn run(settings: &Settings, opts: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        opts.rows > 0 && opts.rounds > 0,
        "rows and rounds must be positive"
    );
    let relay = relay_part(settings, opts).await?;
    let ordering = ordering_part(settings, opts).await?;
    Ok(report(settings, opts, relay, ordering))
}

// ---------------------------------------------------------------------------------------------
// Part 1: relay throughput

/// Alternates the two relay modes, `rounds` each, on fresh rows and a fresh topic per round.
async fn relay_part(settings: &Settings, opts: &Options) -> anyhow::Result<Vec<RelayRun>> {
    let scratch = Scratch::create(settings, "bench_events_relay").await?;
    let pool = postgres::connect(&scratch.settings.database).await?;
    let mut runs: Vec<RelayRun> = RELAY_MODES.iter().map(|m| RelayRun::new(m)).collect();
    for round in 0..opts.rounds as usize {
        for k in 0..RELAY_MODES.len() {
            let m = (k + round) % RELAY_MODES.len();
            fill_outbox(&pool, opts.rows, round).await?;
            let pulsar = fresh_topic(&scratch.settings, &format!("relay-{round}-{m}")).await?;
            let secs = match m {
                0 => drain_with_relay(&scratch.settings, &pool, pulsar).await?,
                _ => drain_one_at_a_time(&scratch.settings, &pulsar).await?,
            };
            let violations = check_sent(&pool, opts.rows).await?;
            eprintln!(
                "round {} relay {:<14} {:>7} rows in {:>6.2}s = {:>8.0} rows/s, violations: {}",
                round + 1,
                RELAY_MODES[m],
                opts.rows,
                secs,
                ratio(opts.rows as f64, secs),
                violations.len()
            );
            runs[m].add(opts.rows, secs, violations);
        }
    }
    pool.close();
    scratch.remove().await;
    Ok(runs)
}

impl RelayRun {
    fn new(mode: &str) -> RelayRun {
        RelayRun {
            mode: mode.to_string(),
            rows: 0,
            secs: 0.0,
            rows_per_sec: 0.0,
            violations: Vec::new(),
        }
    }

    fn add(&mut self, rows: i64, secs: f64, violations: Vec<String>) {
        self.rows += rows;
        self.secs += secs;
        self.rows_per_sec = ratio(self.rows as f64, self.secs);
        self.violations.extend(violations);
    }
}

/// Replaces the outbox with `rows` unsent rows: two events per order (created, then paid), on
/// order numbers of this round's own, with a payload shaped like the real one. `ANALYZE`d, so
/// every round plans the relay's query on the same statistics.
async fn fill_outbox(pool: &PgPool, rows: i64, round: usize) -> anyhow::Result<()> {
    let first_order = (round as i64 + 1) * 10_000_000;
    let client = pool.get().await?;
    client.batch_execute("TRUNCATE outbox").await?;
    client
        .execute(
            "INSERT INTO outbox (event_id, topic, message_key, event_type, order_no, program_id, payload)
             SELECT gen_random_uuid(), 'order-events', o::text,
                    CASE WHEN i % 2 = 1 THEN 'OrderCreated' ELSE 'OrderPaid' END, o, 1,
                    jsonb_build_object('order_no', o::text, 'user_id', o % 100000, 'program_id', 1,
                                       'total_cents', 68000, 'tickets', 1,
                                       'expires_at', now() + interval '15 minutes')
             FROM generate_series(1, $1::bigint) AS i, LATERAL (SELECT $2::bigint + (i + 1) / 2 AS o) AS n
             ORDER BY i",
            &[&rows, &first_order],
        )
        .await?;
    client.batch_execute("ANALYZE outbox").await?;
    Ok(())
}

/// A broker client whose `order-events` is a topic nobody used before.
async fn fresh_topic(settings: &Settings, tag: &str) -> anyhow::Result<PulsarStore> {
    let mut pulsar = settings.pulsar.clone();
    pulsar.topic_prefix = format!("bench-events-{}-{tag}-", uuid::Uuid::new_v4().simple());
    Ok(PulsarStore::connect(&pulsar).await?)
}

/// (A) The real relay, from its start (connection, lease, producer) until the backlog is 0.
async fn drain_with_relay(
    settings: &Settings,
    pool: &PgPool,
    pulsar: PulsarStore,
) -> anyhow::Result<f64> {
    let mut pg_config = postgres::pg_config(&settings.database)?;
    pg_config.application_name("boxoffice-bench-relay");
    let relay = Relay {
        settings: settings.events,
        pg_config,
        pulsar,
    };
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(relay.run(stopped));
    let drained = wait_until_sent(pool).await;
    let secs = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    // The relay's connection (and with it the lease) is gone once it returns.
    let _ = task.await;
    drained.map(|()| secs)
}

/// Polls the backlog every 10 ms until it is empty; fails after [`STALL`] without progress.
async fn wait_until_sent(pool: &PgPool) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let (mut last, mut progressed) = (i64::MAX, Instant::now());
    loop {
        let backlog: i64 = client
            .query_one(
                "SELECT count(*) FROM outbox WHERE send_status <> 'sent'",
                &[],
            )
            .await?
            .get(0);
        if backlog == 0 {
            return Ok(());
        }
        if backlog < last {
            (last, progressed) = (backlog, Instant::now());
        }
        anyhow::ensure!(
            progressed.elapsed() < STALL,
            "relay stalled at a backlog of {backlog}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// (B) The baseline: one message in flight at a time — each send's receipt awaited before the
/// next send. It models the common outbox poller (`send(msg).await` per row in a loop), whose
/// throughput is one broker round trip per row. Everything else is the relay's own: the same
/// selection of rows (`relay::pending`, `events.relay_batch` at a time), the same messages, and
/// the same marking (one `relay::mark` statement per batch), so the comparison measures only
/// how many messages are in flight. It skips the relay's lease and backlog gauge, which only
/// makes the baseline a little faster.
async fn drain_one_at_a_time(settings: &Settings, pulsar: &PulsarStore) -> anyhow::Result<f64> {
    let pg_config = postgres::pg_config(&settings.database)?;
    let started = Instant::now();
    let (client, connection) = pg_config.connect(tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let mut producer = pulsar
        .client()
        .producer()
        .with_topic(pulsar.topic(ORDER_EVENTS))
        .build()
        .await?;
    loop {
        let batch = relay::pending(&client, settings.events.relay_batch).await?;
        if batch.is_empty() {
            break;
        }
        let mut sent = Vec::with_capacity(batch.len());
        for out in &batch {
            let receipt = producer
                .send_non_blocking(relay::message(out))
                .await?
                .await?;
            sent.push((out.id, relay::message_id(&receipt)));
        }
        relay::mark(&client, &sent, &[]).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(client);
    let _ = connection.await;
    Ok(secs)
}

/// Every row sent, with the broker's message id.
async fn check_sent(pool: &PgPool, rows: i64) -> anyhow::Result<Vec<String>> {
    let row = pool
        .get()
        .await?
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE send_status = 'sent' AND message_id <> '')
             FROM outbox",
            &[],
        )
        .await?;
    let (total, sent): (i64, i64) = (row.get(0), row.get(1));
    Ok(match (total, sent) {
        (t, s) if t == rows && s == rows => Vec::new(),
        (t, s) => vec![format!(
            "{s} of {t} rows sent with a message id, {rows} written"
        )],
    })
}

// ---------------------------------------------------------------------------------------------
// Part 2 and 3: ordering with events running vs stopped, and the delay

/// An ordering server's event switches.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// Name in the report.
    name: &'static str,
    /// Scratch database and prefix suffix.
    tag: &'static str,
    /// `events.relay`.
    relay: bool,
    /// `events.consumers`.
    consumers: bool,
}

/// (A) relay and consumers running, as deployed; (B) both stopped; (C) the relay alone — not
/// judged: it tells the relay's share of the cost from the consumers'.
const ORDERING_MODES: [Mode; 3] = [
    Mode {
        name: "events_running",
        tag: "on",
        relay: true,
        consumers: true,
    },
    Mode {
        name: "events_stopped",
        tag: "off",
        relay: false,
        consumers: false,
    },
    Mode {
        name: "relay_only",
        tag: "relay",
        relay: true,
        consumers: false,
    },
];

/// The consumers a server with `events.consumers` runs (`lib.rs`, `start_events`): MQ
/// bookkeeping and this process's notifications.
const CONSUMERS: i64 = 2;

/// A server on a scratch database of its own, with its buyers: the servers must not share an
/// outbox, or one server's relay would publish another's events.
struct Side {
    mode: Mode,
    scratch: Scratch,
    pool: PgPool,
    racers: Arc<Vec<Racer>>,
    server: Server,
}

impl Side {
    /// Scratch database `<database>_bench_events_<tag>`, `buyers` racers, and a server with
    /// the mode's switches, on a topic prefix of its own.
    async fn start(settings: &Settings, mode: Mode, buyers: usize) -> anyhow::Result<Side> {
        let tag = mode.tag;
        let mut scratch = Scratch::create(settings, &format!("bench_events_{tag}")).await?;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        scratch.settings.pulsar.topic_prefix = format!("bench-events-{suffix}-{tag}-");
        let pool = postgres::connect(&scratch.settings.database).await?;
        let racers = Arc::new(ordering::mint_racers(&pool, &scratch.settings, buyers).await?);
        let prefix = format!("bench-events:{suffix}:{tag}:");
        let server = Server::start(scratch.settings.clone(), &prefix, |s| {
            s.events.relay = mode.relay;
            s.events.consumers = mode.consumers;
        })
        .await?;
        Ok(Side {
            mode,
            scratch,
            pool,
            racers,
            server,
        })
    }

    /// One round of the `bench ordering` workload on this server.
    async fn sell_out(
        &self,
        http: &reqwest::Client,
        workload: &ordering::Options,
        round: usize,
    ) -> anyhow::Result<(ordering::RaceOutcome, Vec<String>)> {
        let (base, mode) = (&self.server.base, self.mode.name);
        ordering::sell_out(&self.pool, http, base, &self.racers, workload, mode, round).await
    }

    /// Waits until the event work for `published` orders is done (see [`Side::lag`]); a
    /// violation if it is not within [`STALL`].
    async fn catch_up(&self, tap: Option<&Tap>, published: u64) -> anyhow::Result<Option<String>> {
        let client = self.pool.get().await?;
        let deadline = Instant::now() + STALL;
        loop {
            match self.lag(&client, tap, published).await? {
                None => return Ok(None),
                Some(lag) if Instant::now() > deadline => return Ok(Some(lag)),
                Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// What is still missing after `published` orders, or `None`: the relay has sent every
    /// outbox row; with consumers, each of the [`CONSUMERS`] has applied `published` events
    /// and the test subscription (if any) has seen as many.
    async fn lag(
        &self,
        client: &deadpool_postgres::Client,
        tap: Option<&Tap>,
        published: u64,
    ) -> anyhow::Result<Option<String>> {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM outbox WHERE send_status <> 'sent'),
                        (SELECT count(*) FROM (SELECT 1 FROM consumer_inbox GROUP BY consumer
                                               HAVING count(*) >= $1) AS done)",
                &[&(published as i64)],
            )
            .await?;
        let (unsent, applied): (i64, i64) = (row.get(0), row.get(1));
        let wanted = if self.mode.consumers { CONSUMERS } else { 0 };
        let seen = tap.map_or(published, Tap::distinct);
        Ok(
            (unsent > 0 || applied < wanted || seen < published).then(|| {
                format!(
                    "after {published} orders: {unsent} outbox rows unsent, {applied} of {wanted} \
                 consumers applied every event, {seen} events reached the test subscription"
                )
            }),
        )
    }

    async fn stop(self) {
        self.server.stop().await;
        self.pool.close();
        self.scratch.remove().await;
    }
}

/// What the ordering part measured.
struct OrderingPart {
    runs: Vec<ModeRun>,
    delay: Delay,
    /// Per mode with a relay: mean seconds after a round until its event work was done.
    catch_up_secs: BTreeMap<String, f64>,
}

/// Starts the servers and the test subscription (on the running server), alternates them,
/// stops them.
async fn ordering_part(settings: &Settings, opts: &Options) -> anyhow::Result<OrderingPart> {
    let mut sides = Vec::with_capacity(ORDERING_MODES.len());
    for mode in ORDERING_MODES {
        sides.push(Side::start(settings, mode, opts.buyers).await?);
    }
    let tap = Tap::start(&sides[0].scratch.settings).await?;
    let alternated = alternate(&sides, &tap, opts).await;
    let delay = tap.delay();
    drop(tap);
    for side in sides {
        side.stop().await;
    }
    let rounds = f64::from(opts.rounds);
    let mut catch_up_secs = BTreeMap::new();
    let mut runs = Vec::with_capacity(ORDERING_MODES.len());
    for ((totals, catch_up), mode) in alternated?.into_iter().zip(ORDERING_MODES) {
        if mode.relay {
            catch_up_secs.insert(mode.name.to_string(), catch_up / rounds);
        }
        runs.push(totals.into_run(mode.name));
    }
    Ok(OrderingPart {
        runs,
        delay,
        catch_up_secs,
    })
}

/// `rounds` sell-outs per server, rotating which goes first. After every round on a server with
/// a relay it waits until that server's event work is done, so that no round's event work
/// spills into the next round (and a lost event shows as a violation). Answers, per mode, the
/// totals and the seconds spent catching up.
async fn alternate(
    sides: &[Side],
    tap: &Tap,
    opts: &Options,
) -> anyhow::Result<Vec<(Totals, f64)>> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    for side in sides {
        ordering::wait_ready(&http, &side.server.base).await?;
    }
    let workload = ordering::Options {
        buyers: opts.buyers,
        rows: opts.seat_rows,
        rounds: opts.rounds,
        concurrency: opts.concurrency,
        trivial_secs: 0.0,
        ..Default::default()
    };
    let mut out: Vec<(Totals, f64)> = sides.iter().map(|_| Default::default()).collect();
    let mut published = vec![0u64; sides.len()];
    for round in 0..opts.rounds as usize {
        for k in 0..sides.len() {
            let m = (k + round) % sides.len();
            let (outcome, mut violations) = sides[m].sell_out(&http, &workload, round).await?;
            published[m] += outcome.ok;
            if sides[m].mode.relay {
                let started = Instant::now();
                let tap = (m == 0).then_some(tap);
                violations.extend(sides[m].catch_up(tap, published[m]).await?);
                out[m].1 += started.elapsed().as_secs_f64();
            }
            out[m].0.add(outcome, violations);
        }
    }
    Ok(out)
}

/// A subscription of the benchmark's own on a server's `order-events`, recording each event's
/// delay from its commit (`occurred_at`) to its first arrival here. Delivery is at least once:
/// a repeated event id is counted as a duplicate, not measured again.
struct Tap {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the tap received.
#[derive(Default)]
struct Seen {
    ids: HashSet<uuid::Uuid>,
    delays: Latencies,
    duplicates: u64,
}

impl Seen {
    fn record(&mut self, event: &Event) {
        if !self.ids.insert(event.event_id) {
            self.duplicates += 1;
            return;
        }
        let delay = chrono::Utc::now() - event.occurred_at;
        self.delays.record(delay.to_std().unwrap_or_default());
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tap {
    /// Subscribes (from the earliest message, before anything is published) and starts
    /// recording.
    async fn start(settings: &Settings) -> anyhow::Result<Tap> {
        let store = PulsarStore::connect(&settings.pulsar).await?;
        let mut consumer: pulsar::Consumer<Vec<u8>, pulsar::TokioExecutor> = store
            .client()
            .consumer()
            .with_topic(store.topic(ORDER_EVENTS))
            .with_subscription(format!("bench-tap-{}", uuid::Uuid::new_v4().simple()))
            .with_subscription_type(pulsar::SubType::Exclusive)
            .with_options(pulsar::ConsumerOptions {
                initial_position: pulsar::consumer::InitialPosition::Earliest,
                ..Default::default()
            })
            .build()
            .await?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let _client = store; // the subscription lives on its connection
            while let Some(Ok(message)) = consumer.next().await {
                if let Ok(event) = serde_json::from_slice::<Event>(&message.payload.data)
                    && let Ok(mut seen) = sink.lock()
                {
                    seen.record(&event);
                }
                let _ = consumer.ack(&message).await;
            }
        });
        Ok(Tap { seen, task })
    }

    /// Distinct events received so far.
    fn distinct(&self) -> u64 {
        self.seen.lock().map_or(0, |s| s.ids.len() as u64)
    }

    fn delay(&self) -> Delay {
        let (mut d, duplicates) = self
            .seen
            .lock()
            .map(|s| (s.delays.clone(), s.duplicates))
            .unwrap_or_default();
        let ms = |us: u32| f64::from(us) / 1000.0;
        Delay {
            events: d.len() as u64,
            duplicates,
            p50_ms: ms(d.percentile(50.0)),
            p99_ms: ms(d.percentile(99.0)),
            max_ms: ms(d.percentile(100.0)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report

fn report(settings: &Settings, opts: &Options, relay: Vec<RelayRun>, part: OrderingPart) -> Report {
    let ratios = ratios(&relay, &part.runs);
    let targets = [
        ("relay_batched_vs_one_at_a_time", 10.0),
        ("ordering_running_vs_stopped", 0.9),
    ]
    .into_iter()
    .map(|(key, required)| Target::judge(format!("ratios.{key}"), required, ratios[key]))
    .collect();
    let config = [
        ("rows", opts.rows as f64),
        ("rounds", f64::from(opts.rounds)),
        ("relay_batch", settings.events.relay_batch as f64),
        ("buyers", opts.buyers as f64),
        ("seats", f64::from(opts.seat_rows * ordering::SEATS_PER_ROW)),
        ("concurrency", opts.concurrency as f64),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let valid = relay.iter().all(|r| r.violations.is_empty())
        && part.runs.iter().all(|r| r.violations.is_empty());
    Report {
        config,
        relay,
        ordering: part.runs,
        catch_up_secs: part.catch_up_secs,
        delay: part.delay,
        ratios,
        targets,
        valid,
    }
}

/// Batched ÷ one at a time (rows/s); running and relay-only ÷ stopped (orders/s).
fn ratios(relay: &[RelayRun], ordering: &[ModeRun]) -> BTreeMap<String, f64> {
    let rows = |mode: &str| {
        relay
            .iter()
            .find(|r| r.mode == mode)
            .map_or(0.0, |r| r.rows_per_sec)
    };
    let orders = |mode: &str| {
        ordering
            .iter()
            .find(|r| r.mode == mode)
            .map_or(0.0, |r| r.orders_per_sec)
    };
    let [running, stopped, relay_only] = ORDERING_MODES.map(|m| orders(m.name));
    [
        (
            "relay_batched_vs_one_at_a_time",
            ratio(rows(RELAY_MODES[0]), rows(RELAY_MODES[1])),
        ),
        ("ordering_running_vs_stopped", ratio(running, stopped)),
        ("ordering_relay_only_vs_stopped", ratio(relay_only, stopped)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A human-readable table of the report.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "relay:    {:<23} {:>7} {:>9} {:>10} {:>6}\n",
        "mode", "rows", "rows/s", "secs", "valid"
    );
    for r in &report.relay {
        out += &format!(
            "          {:<23} {:>7} {:>9.0} {:>10.2} {:>6}\n",
            r.mode,
            r.rows,
            r.rows_per_sec,
            r.secs,
            r.violations.is_empty()
        );
    }
    out += &ordering::render_runs(&report.ordering);
    for (mode, secs) in &report.catch_up_secs {
        out += &format!("{mode}: event work done {secs:.2} s after a round's last answer\n");
    }
    let d = &report.delay;
    out += &format!(
        "commit → consumer delay over {} events ({} duplicates): p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms\n",
        d.events, d.duplicates, d.p50_ms, d.p99_ms, d.max_ms
    );
    for (k, v) in &report.ratios {
        out += &format!("ratio {k}: {v:.2}\n");
    }
    out += &render_targets(&report.targets);
    out
}
