//! `boxoffice bench reconcile`: what watching a sale costs.
//!
//! 1. **A reconciler pass over a hot 50,000-seat category** (`--seat-rows` × 40 seats): its actor
//!    running, a few thousand seats held, the mirror written; `--passes` on-demand passes
//!    (`POST /api/v1/admin/reconciliations/run`), each timed and charged the Postgres CPU it used.
//! 2. **Ordering while watched vs not**: the `bench ordering` race on two servers of this process,
//!    one with the continuous reconciler (every second), the Redis mirror and an admin connected
//!    to `/ws/admin`, one with all three off; alternating rounds. Target: ≥ 0.9×.

use super::ordering::{self, ModeRun, Totals};
use super::{Scratch, Server, Target, ratio, render_targets};
use crate::auth::TokenKeys;
use crate::config::Settings;
use crate::store::postgres;
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows of 40 seats of the category a pass reconciles (1,250 = 50,000 seats).
    pub seat_rows: i32,
    /// Passes timed.
    pub passes: u32,
    /// Buyers per ordering round (one seat each); also the seats held before the passes.
    pub buyers: usize,
    /// Rows of 40 seats per ordering round.
    pub rows: i32,
    /// Ordering rounds per side.
    pub rounds: u32,
    /// Concurrent HTTP clients.
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seat_rows: 1_250,
            passes: 5,
            buyers: 2_000,
            rows: 25,
            rounds: 3,
            concurrency: 64,
        }
    }
}

/// The JSON summary (`bench-results/reconcile.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Parameters.
    pub config: BTreeMap<String, f64>,
    /// Part 1.
    pub pass: PassCost,
    /// Part 2: `watched` and `unwatched`.
    pub runs: Vec<ModeRun>,
    /// `watched_vs_unwatched`.
    pub ratios: BTreeMap<String, f64>,
    /// The issue's target.
    pub targets: Vec<Target>,
    /// Admin frames the watching client received during part 2.
    pub admin_frames: u64,
    /// Every round without violations and every pass consistent.
    pub valid: bool,
}

/// What one pass over the big category cost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassCost {
    /// Seats compared per pass.
    pub seats: i64,
    /// Seats held when the passes ran.
    pub held: i64,
    /// Median wall time of a pass, ms.
    pub median_ms: f64,
    /// Slowest pass, ms.
    pub max_ms: f64,
    /// Postgres CPU per pass, ms (10 ms ticks).
    pub pg_cpu_ms: f64,
    /// Findings the passes recorded (0 expected: nothing diverged).
    pub findings: i64,
}

/// Runs both parts on a scratch database (dropped at the end).
pub async fn run(settings: &Settings, opts: &Options) -> anyhow::Result<Report> {
    let scratch = Scratch::create(settings, "bench_reconcile").await?;
    let result = run_on(&scratch, opts).await;
    scratch.remove().await;
    result
}

async fn run_on(scratch: &Scratch, opts: &Options) -> anyhow::Result<Report> {
    let pool = postgres::connect(&scratch.settings.database).await?;
    let racers = Arc::new(ordering::mint_racers(&pool, &scratch.settings, opts.buyers).await?);
    let admin = admin_token(&pool, &scratch.settings).await?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let watched = Server::start(
        scratch.settings.clone(),
        &format!("bench-reconcile:{suffix}:watched:"),
        |s| {
            s.reconcile.interval_ms = 1_000;
            s.reconcile.mirror = true;
        },
    )
    .await?;
    let unwatched = Server::start(
        scratch.settings.clone(),
        &format!("bench-reconcile:{suffix}:unwatched:"),
        |s| {
            s.reconcile.interval_ms = 0;
            s.reconcile.mirror = false;
        },
    )
    .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    let measured = async {
        ordering::wait_ready(&http, &watched.base).await?;
        ordering::wait_ready(&http, &unwatched.base).await?;
        let pass = pass_cost(&pool, &http, &watched.base, &admin, &racers, opts).await?;
        let (runs, frames) = watched_vs_not(
            &pool,
            &http,
            [&watched.base, &unwatched.base],
            &admin,
            &racers,
            opts,
        )
        .await?;
        Ok::<_, anyhow::Error>((pass, runs, frames))
    }
    .await;
    watched.stop().await;
    unwatched.stop().await;
    pool.close();
    let (pass, runs, frames) = measured?;
    Ok(report(opts, pass, runs, frames))
}

/// An admin account and a token for it, written directly (the accounts API is not measured).
pub async fn admin_token(
    pool: &crate::store::PgPool,
    settings: &Settings,
) -> anyhow::Result<String> {
    let client = pool.get().await?;
    let id: i64 = client
        .query_one(
            "INSERT INTO users (password_hash) VALUES ('x') RETURNING id",
            &[],
        )
        .await?
        .get(0);
    client
        .execute(
            "INSERT INTO user_roles VALUES ($1, 'buyer'), ($1, 'admin')",
            &[&id],
        )
        .await?;
    let keys = TokenKeys::new(&settings.secrets.jwt_key, 24 * 3600);
    let (token, _) = keys.issue(id, vec!["buyer".into(), "admin".into()], chrono::Utc::now())?;
    Ok(token)
}

/// Part 1: a big category with its actor running and seats held, then timed passes.
async fn pass_cost(
    pool: &crate::store::PgPool,
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    racers: &Arc<Vec<ordering::Racer>>,
    opts: &Options,
) -> anyhow::Result<PassCost> {
    let (program, category) = ordering::hot_program(pool, opts.seat_rows, "reconcile-big").await?;
    // The race starts the actor and holds one seat per buyer (best available).
    let race_opts = ordering::Options {
        buyers: opts.buyers,
        rows: opts.seat_rows,
        concurrency: opts.concurrency,
        ..Default::default()
    };
    let held = ordering::race(http, base, racers, program, category, &race_opts, 0)
        .await
        .ok as i64;
    let url = format!("{base}/api/v1/admin/reconciliations/run?program_id={program}");
    let mut times = Vec::new();
    let mut cost = PassCost {
        held,
        ..Default::default()
    };
    let before = ordering::pg_ticks(pool).await?;
    for _ in 0..opts.passes {
        let started = Instant::now();
        let r = http.post(&url).bearer_auth(admin).send().await?;
        anyhow::ensure!(
            r.status().is_success(),
            "reconciliation run: {}",
            r.status()
        );
        let pass: Value = r.json().await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        cost.seats = pass["seats"].as_i64().unwrap_or(0);
        cost.findings += pass["findings"].as_i64().unwrap_or(0);
    }
    let ticks = ordering::ticks_since(&before, &ordering::pg_ticks(pool).await?);
    times.sort_by(f64::total_cmp);
    cost.median_ms = times.get(times.len() / 2).copied().unwrap_or(0.0);
    cost.max_ms = times.last().copied().unwrap_or(0.0);
    cost.pg_cpu_ms = ratio(
        ticks as f64 * 1e3 / super::cpu::TICKS_PER_SEC,
        f64::from(opts.passes),
    );
    Ok(cost)
}

/// Part 2: alternating rounds on the watched and the unwatched server, an admin stream client
/// reading frames from the watched one throughout. Answers both sides and the frames read.
async fn watched_vs_not(
    pool: &crate::store::PgPool,
    http: &reqwest::Client,
    bases: [&str; 2],
    admin: &str,
    racers: &Arc<Vec<ordering::Racer>>,
    opts: &Options,
) -> anyhow::Result<(Vec<ModeRun>, u64)> {
    let frames = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ws_url = format!(
        "{}/ws/admin?token={admin}",
        bases[0].replacen("http", "ws", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url).await?;
    // The stream is live before the first round: its first frame has arrived.
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await;
    anyhow::ensure!(
        matches!(first, Ok(Some(Ok(_)))),
        "no admin frame within 10 s"
    );
    frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let counter = frames.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(_)) = socket.next().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let workload = ordering::Options {
        buyers: opts.buyers,
        rows: opts.rows,
        rounds: opts.rounds,
        concurrency: opts.concurrency,
        ..Default::default()
    };
    let mut totals: [Totals; 2] = Default::default();
    for round in 0..opts.rounds as usize {
        for k in 0..2 {
            let m = (k + round) % 2;
            let mode = SIDES[m];
            let (outcome, violations) =
                ordering::sell_out(pool, http, bases[m], racers, &workload, mode, round).await?;
            totals[m].add(outcome, violations);
        }
    }
    reader.abort();
    let [a, b] = totals;
    let runs = vec![a.into_run(SIDES[0]), b.into_run(SIDES[1])];
    Ok((runs, frames.load(std::sync::atomic::Ordering::Relaxed)))
}

/// The two sides of part 2.
const SIDES: [&str; 2] = ["watched", "unwatched"];

fn report(opts: &Options, pass: PassCost, runs: Vec<ModeRun>, frames: u64) -> Report {
    let rate = |mode: &str| {
        runs.iter()
            .find(|r| r.mode == mode)
            .map_or(0.0, |r| r.orders_per_sec)
    };
    let watched = ratio(rate(SIDES[0]), rate(SIDES[1]));
    let ratios = BTreeMap::from([("watched_vs_unwatched".to_string(), watched)]);
    let targets = vec![Target::judge(
        "ratios.watched_vs_unwatched".into(),
        0.9,
        watched,
    )];
    let config = [
        (
            "pass_seats",
            f64::from(opts.seat_rows * ordering::SEATS_PER_ROW),
        ),
        ("passes", f64::from(opts.passes)),
        ("buyers", opts.buyers as f64),
        (
            "seats_per_round",
            f64::from(opts.rows * ordering::SEATS_PER_ROW),
        ),
        ("rounds", f64::from(opts.rounds)),
        ("concurrency", opts.concurrency as f64),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Report {
        valid: runs.iter().all(|r| r.violations.is_empty()) && pass.findings == 0 && frames > 0,
        config,
        pass,
        runs,
        ratios,
        targets,
        admin_frames: frames,
    }
}

/// A human-readable summary.
pub fn render(report: &Report) -> String {
    let p = &report.pass;
    let mut out = format!(
        "reconcile pass over {} seats ({} held): median {:.1} ms, max {:.1} ms, Postgres {:.1} ms CPU per pass, {} findings\n",
        p.seats, p.held, p.median_ms, p.max_ms, p.pg_cpu_ms, p.findings
    );
    out += &ordering::render_runs(&report.runs);
    out += &format!(
        "admin frames received while watched: {}\n",
        report.admin_frames
    );
    for (k, v) in &report.ratios {
        out += &format!("ratio {k}: {v:.2}\n");
    }
    out += &render_targets(&report.targets);
    out += &format!("valid: {}\n", report.valid);
    out
}
