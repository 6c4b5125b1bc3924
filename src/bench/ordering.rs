//! `boxoffice bench ordering`: N buyers race over HTTP for one hot seated category until it is
//! sold out, against (A) boxoffice as built (group commit), (B) the same server with the writer
//! committing each order in its own transaction on every pool connection in parallel, and (B′)
//! the same with the single writer committing each order in its own transaction (see `MODES`).
//! Alternating rounds, a fresh program per round, one process. The same server's requests/s on a
//! trivial JSON endpoint (`/healthz`) is measured as the HTTP ceiling.

use super::{Latencies, Scratch, Server, get_load, ratio};
use crate::auth::TokenKeys;
use crate::config::Settings;
use crate::crypto::IdNumberCipher;
use crate::store::catalog::{self, Layout, NewProgram, NewTicketCategory};
use crate::store::{PgPool, postgres};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Buyers racing (each wants one seat).
    pub buyers: usize,
    /// Seat rows of the hot category (40 seats per row).
    pub rows: i32,
    /// Rounds per mode.
    pub rounds: u32,
    /// Concurrent HTTP clients.
    pub concurrency: usize,
    /// Seconds of the trivial-endpoint measurement.
    pub trivial_secs: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            buyers: 2_000,
            rows: 25,
            rounds: 2,
            concurrency: 64,
            trivial_secs: 3.0,
        }
    }
}

/// Seats per row of the hot category.
pub(super) const SEATS_PER_ROW: i32 = 40;

/// The JSON summary (`bench-results/ordering.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Parameters.
    pub config: BTreeMap<String, f64>,
    /// One entry per mode, rounds summed.
    pub runs: Vec<ModeRun>,
    /// Requests/s of `GET /healthz` on the group-commit server at the same concurrency.
    pub trivial_requests_per_sec: f64,
    /// `group_vs_per_order` (durable orders/s) and `orders_vs_trivial`.
    pub ratios: BTreeMap<String, f64>,
    /// No round oversold or lost an acknowledged order.
    pub valid: bool,
}

/// One mode, rounds summed.
#[derive(Debug, Clone, Serialize)]
pub struct ModeRun {
    /// `group_commit`, `per_order_tx` or `per_order_tx_one_writer` (see `MODES`).
    pub mode: String,
    /// 201s.
    pub orders: u64,
    /// 409 SOLD_OUT answers.
    pub sold_out: u64,
    /// Anything else.
    pub errors: u64,
    /// Durable orders per second, from the first request to the last seat sold.
    pub orders_per_sec: f64,
    /// Mean time from the start of a round to its last seat sold, seconds.
    pub sellout_secs: f64,
    /// Median `POST /orders` latency (all answers), µs.
    pub p50_us: u32,
    /// 99th percentile, µs.
    pub p99_us: u32,
    /// Invariant violations, if any.
    pub violations: Vec<String>,
}

/// A buyer: token and their ticket buyers (the first is the one `bench ordering` uses).
pub(super) struct Racer {
    pub(super) token: String,
    pub(super) ticket_buyer: i64,
    pub(super) ticket_buyers: Vec<i64>,
}

/// Runs the benchmark on a scratch database (dropped at the end).
pub async fn run(settings: &Settings, opts: &Options) -> anyhow::Result<Report> {
    let scratch = Scratch::create(settings, "bench_ordering").await?;
    let pool = postgres::connect(&scratch.settings.database).await?;
    let racers = Arc::new(mint_racers(&pool, &scratch.settings, opts.buyers).await?);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let group = Server::start(
        scratch.settings.clone(),
        &format!("bench-ordering:{suffix}:group:"),
        |_| {},
    )
    .await?;
    let per_order = Server::start(
        scratch.settings.clone(),
        &format!("bench-ordering:{suffix}:single:"),
        |s| {
            s.writer.max_batch = 1;
            s.writer.max_wait_ms = 0;
            s.writer.writers = s.database.pool_size;
            s.writer.shards = 1;
        },
    )
    .await?;
    let one_writer = Server::start(
        scratch.settings.clone(),
        &format!("bench-ordering:{suffix}:one-writer:"),
        |s| {
            s.writer.max_batch = 1;
            s.writer.max_wait_ms = 0;
            s.writer.shards = 1;
        },
    )
    .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    wait_ready(&http, &group.base).await?;
    wait_ready(&http, &per_order.base).await?;
    wait_ready(&http, &one_writer.base).await?;
    let modes = [
        (MODES[0], group.base.clone()),
        (MODES[1], per_order.base.clone()),
        (MODES[2], one_writer.base.clone()),
    ];
    let mut totals: BTreeMap<usize, Totals> = BTreeMap::new();
    for round in 0..opts.rounds as usize {
        for k in 0..modes.len() {
            let m = (k + round) % modes.len();
            let (mode, base) = (modes[m].0, &modes[m].1);
            let (outcome, violations) =
                sell_out(&pool, &http, base, &racers, opts, mode, round).await?;
            totals.entry(m).or_default().add(outcome, violations);
        }
    }
    let trivial = trivial_rps(&http, &group.base, opts).await;
    group.stop().await;
    per_order.stop().await;
    one_writer.stop().await;
    pool.close();
    scratch.remove().await;
    Ok(report(opts, &MODES, totals, trivial))
}

/// (A) as built; (B) one transaction per order on every pool connection in parallel, the
/// conventional design; (B′) one transaction per order through the single writer, the issue's
/// literal baseline ("the writer committing each order in its own transaction").
const MODES: [&str; 3] = ["group_commit", "per_order_tx", "per_order_tx_one_writer"];

/// Waits until the server at `base` answers `GET /healthz`.
pub(super) async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("benchmark server at {base} did not start")
}

/// `n` accounts with one passport-holder each and tokens signed with the server's key, written
/// in bulk (the accounts API is not what is measured).
pub(super) async fn mint_racers(
    pool: &PgPool,
    settings: &Settings,
    n: usize,
) -> anyhow::Result<Vec<Racer>> {
    mint_racers_with(pool, settings, n, 1).await
}

/// `n` accounts with `holders` passport-holders each (see [`mint_racers`]).
pub(super) async fn mint_racers_with(
    pool: &PgPool,
    settings: &Settings,
    n: usize,
    holders: usize,
) -> anyhow::Result<Vec<Racer>> {
    let keys = TokenKeys::new(&settings.secrets.jwt_key, 24 * 3600);
    let cipher = IdNumberCipher::new(settings.secrets.id_number_key_bytes()?);
    let client = pool.get().await?;
    let ids: Vec<i64> = client
        .query("INSERT INTO users (password_hash) SELECT 'x' FROM generate_series(1, $1::int) RETURNING id", &[&(n as i32)])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    client
        .execute(
            "INSERT INTO user_roles SELECT unnest($1::bigint[]), 'buyer'",
            &[&ids],
        )
        .await?;
    let owners: Vec<i64> = ids
        .iter()
        .flat_map(|id| std::iter::repeat_n(*id, holders))
        .collect();
    let numbers: Vec<String> = owners
        .iter()
        .enumerate()
        .map(|(i, id)| format!("B{id:08}{}", i % holders))
        .collect();
    let sealed: Vec<Vec<u8>> = numbers.iter().map(|n| cipher.encrypt(n)).collect();
    let prints: Vec<Vec<u8>> = numbers.iter().map(|n| cipher.fingerprint(n)).collect();
    let ticket_buyers: Vec<i64> = client
        .query(
            "INSERT INTO ticket_buyers (user_id, name, id_type, id_number_enc, id_number_hash, id_number_last4)
             SELECT u, 'Racer', 'passport', e, h, right(u::text, 4)
             FROM unnest($1::bigint[], $2::bytea[], $3::bytea[]) AS t(u, e, h) RETURNING id",
            &[&owners, &sealed, &prints],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let now = chrono::Utc::now();
    ids.iter()
        .zip(ticket_buyers.chunks(holders))
        .map(|(id, theirs)| {
            let (token, _) = keys.issue(*id, vec!["buyer".into()], now)?;
            Ok(Racer {
                token,
                ticket_buyer: theirs[0],
                ticket_buyers: theirs.to_vec(),
            })
        })
        .collect()
}

/// A program on sale with one seated category of `rows` × 40 seats.
pub(super) async fn hot_program(pool: &PgPool, rows: i32, tag: &str) -> anyhow::Result<(i64, i64)> {
    let area = catalog::ensure_area(pool, "Bench City").await?;
    let genre = catalog::ensure_program_category(pool, None, "Concert").await?;
    let program = NewProgram {
        slug: format!("bench-{tag}-{}", uuid::Uuid::new_v4().simple()),
        title: format!("Bench {tag}"),
        area_id: area,
        category_id: genre,
        venue: "Arena".into(),
        description: String::new(),
        choose_seats: true,
        per_order_limit: 4,
        per_account_limit: 4,
        on_sale_at: chrono::Utc::now() - chrono::Duration::minutes(1),
        show_times: vec![chrono::Utc::now() + chrono::Duration::days(30)],
        categories: vec![NewTicketCategory {
            name: "Hot".into(),
            price_cents: 68_000,
            layout: Layout::Seated {
                rows,
                seats_per_row: SEATS_PER_ROW,
            },
        }],
    };
    let id = catalog::create_program(pool, &program).await?;
    let category: i64 = pool
        .get()
        .await?
        .query_one(
            "SELECT id FROM ticket_categories WHERE program_id = $1",
            &[&id],
        )
        .await?
        .get(0);
    Ok((id, category))
}

/// One round of the workload on the server at `base`: a fresh hot program (named after `mode`
/// and `round`), every racer once, then the invariant check; logs a line to stderr. Answers
/// the race and its violations.
pub(super) async fn sell_out(
    pool: &PgPool,
    http: &reqwest::Client,
    base: &str,
    racers: &Arc<Vec<Racer>>,
    opts: &Options,
    mode: &str,
    round: usize,
) -> anyhow::Result<(RaceOutcome, Vec<String>)> {
    let (program, category) = hot_program(pool, opts.rows, &format!("{mode}-{round}")).await?;
    let outcome = race(http, base, racers, program, category, opts, round).await;
    let violations = check(pool, category, opts.rows * SEATS_PER_ROW, &outcome).await?;
    eprintln!(
        "round {} {:<23} {:>6} orders in {:>6.2}s = {:>7.0} orders/s, violations: {}",
        round + 1,
        mode,
        outcome.ok,
        outcome.sellout_secs,
        ratio(outcome.ok as f64, outcome.sellout_secs),
        violations.len()
    );
    Ok((outcome, violations))
}

/// What one race did.
#[derive(Default)]
pub(super) struct RaceOutcome {
    /// 201s.
    pub(super) ok: u64,
    sold_out: u64,
    errors: u64,
    sellout_secs: f64,
    latencies: Latencies,
}

/// Every racer once, `concurrency` at a time, best available × 1.
async fn race(
    http: &reqwest::Client,
    base: &str,
    racers: &Arc<Vec<Racer>>,
    program: i64,
    category: i64,
    opts: &Options,
    round: usize,
) -> RaceOutcome {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..opts.concurrency)
        .map(|_| {
            let (http, url, racers, next) = (http.clone(), format!("{base}/api/v1/orders"), racers.clone(), next.clone());
            tokio::spawn(async move {
                let (mut out, mut last_sale) = (RaceOutcome::default(), 0f64);
                while let Some(r) = racers.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let body = json!({"program_id": program, "ticket_buyer_ids": [r.ticket_buyer], "ticket_category_id": category, "quantity": 1});
                    let t0 = Instant::now();
                    let sent = http.post(&url).bearer_auth(&r.token).header("Idempotency-Key", format!("round-{round}-{program}")).json(&body).send().await;
                    let status = match sent {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let _ = resp.bytes().await;
                            status
                        }
                        Err(_) => 0,
                    };
                    out.latencies.record(t0.elapsed());
                    match status {
                        201 => {
                            out.ok += 1;
                            last_sale = started.elapsed().as_secs_f64();
                        }
                        409 => out.sold_out += 1,
                        _ => out.errors += 1,
                    }
                }
                (out, last_sale)
            })
        })
        .collect();
    let mut total = RaceOutcome::default();
    for t in tasks {
        if let Ok((out, last_sale)) = t.await {
            total.ok += out.ok;
            total.sold_out += out.sold_out;
            total.errors += out.errors;
            total.latencies.merge(out.latencies);
            total.sellout_secs = total.sellout_secs.max(last_sale);
        }
    }
    total
}

/// Zero oversell and nothing acknowledged lost: Postgres holds exactly the acknowledged orders'
/// seats, each in one order, never more than capacity.
async fn check(
    pool: &PgPool,
    category: i64,
    capacity: i32,
    race: &RaceOutcome,
) -> anyhow::Result<Vec<String>> {
    let row = pool
        .get()
        .await?
        .query_one(
            "SELECT count(*) FILTER (WHERE s.status = 'held'), count(DISTINCT s.order_no),
                    (SELECT count(*) FROM seat_claims c JOIN seats x ON x.id = c.seat_id WHERE x.ticket_category_id = $1)
             FROM seats s WHERE s.ticket_category_id = $1",
            &[&category],
        )
        .await?;
    let (held, orders, claims): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let ok = race.ok as i64;
    let mut v = Vec::new();
    if held > i64::from(capacity) {
        v.push(format!("oversold: {held} held of {capacity}"));
    }
    if held != ok || orders != ok || claims != ok {
        v.push(format!(
            "{ok} acknowledged, but {held} seats held in {orders} orders with {claims} claims"
        ));
    }
    if race.errors > 0 {
        v.push(format!("{} requests failed", race.errors));
    }
    Ok(v)
}

/// Requests/s of `GET /healthz`: what this server does when the handler does nothing.
async fn trivial_rps(http: &reqwest::Client, base: &str, opts: &Options) -> f64 {
    let duration = Duration::from_secs_f64(opts.trivial_secs);
    let load = get_load(http, &format!("{base}/healthz"), opts.concurrency, duration).await;
    ratio(load.ok as f64, load.secs)
}

/// One mode's rounds, summed.
#[derive(Default)]
pub(super) struct Totals {
    rounds: u32,
    race: RaceOutcome,
    violations: Vec<String>,
}

impl Totals {
    /// Adds a round.
    pub(super) fn add(&mut self, r: RaceOutcome, violations: Vec<String>) {
        self.rounds += 1;
        self.race.ok += r.ok;
        self.race.sold_out += r.sold_out;
        self.race.errors += r.errors;
        self.race.sellout_secs += r.sellout_secs;
        self.race.latencies.merge(r.latencies);
        self.violations.extend(violations);
    }

    /// The summary of these rounds as `mode`.
    pub(super) fn into_run(mut self, mode: &str) -> ModeRun {
        ModeRun {
            mode: mode.to_string(),
            orders: self.race.ok,
            sold_out: self.race.sold_out,
            errors: self.race.errors,
            orders_per_sec: ratio(self.race.ok as f64, self.race.sellout_secs),
            sellout_secs: self.race.sellout_secs / f64::from(self.rounds.max(1)),
            p50_us: self.race.latencies.percentile(50.0),
            p99_us: self.race.latencies.percentile(99.0),
            violations: self.violations,
        }
    }
}

fn report(opts: &Options, modes: &[&str], totals: BTreeMap<usize, Totals>, trivial: f64) -> Report {
    let runs: Vec<ModeRun> = totals
        .into_iter()
        .map(|(m, t)| t.into_run(modes[m]))
        .collect();
    let rate = |mode: &str| {
        runs.iter()
            .find(|r| r.mode == mode)
            .map_or(0.0, |r| r.orders_per_sec)
    };
    let ratios = [
        (
            "group_vs_per_order".to_string(),
            ratio(rate("group_commit"), rate("per_order_tx")),
        ),
        (
            "group_vs_per_order_one_writer".to_string(),
            ratio(rate("group_commit"), rate("per_order_tx_one_writer")),
        ),
        (
            "orders_vs_trivial".to_string(),
            ratio(rate("group_commit"), trivial),
        ),
    ]
    .into_iter()
    .collect();
    let config = [
        ("buyers", opts.buyers as f64),
        ("seats", f64::from(opts.rows * SEATS_PER_ROW)),
        ("rounds", f64::from(opts.rounds)),
        ("concurrency", opts.concurrency as f64),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Report {
        valid: runs.iter().all(|r| r.violations.is_empty()),
        config,
        runs,
        trivial_requests_per_sec: trivial,
        ratios,
    }
}

/// A human-readable table of the report.
pub fn render(report: &Report) -> String {
    let mut out = render_runs(&report.runs);
    out += &format!(
        "trivial endpoint (GET /healthz): {:.0} req/s\n",
        report.trivial_requests_per_sec
    );
    for (k, v) in &report.ratios {
        out += &format!("ratio {k}: {v:.2}\n");
    }
    out
}

/// The table of the modes' runs.
pub(super) fn render_runs(runs: &[ModeRun]) -> String {
    let mut out = format!(
        "ordering: {:<23} {:>7} {:>9} {:>10} {:>9} {:>9} {:>6}\n",
        "mode", "orders", "orders/s", "sellout s", "p50 µs", "p99 µs", "valid"
    );
    for r in runs {
        out += &format!(
            "          {:<23} {:>7} {:>9.0} {:>10.2} {:>9} {:>9} {:>6}\n",
            r.mode,
            r.orders,
            r.orders_per_sec,
            r.sellout_secs,
            r.p50_us,
            r.p99_us,
            r.violations.is_empty()
        );
    }
    out
}
