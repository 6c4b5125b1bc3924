//! `boxoffice bench catalog`: requests per second for the program detail (and list) over HTTP,
//! from a server with a warm cache and from one with caching disabled, in one run with
//! alternating rounds. Both servers run in this process on the same scratch database
//! (`<database>_bench_catalog`, migrated and seeded with the demo data), with rate limits off.

use super::{HttpLoad, Latencies, Scratch, Server, get_load, ratio};
use crate::config::Settings;
use crate::{seed, store};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds per (server, endpoint).
    pub rounds: u32,
    /// Length of one round.
    pub round: Duration,
    /// Concurrent HTTP clients.
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 3,
            round: Duration::from_secs(3),
            concurrency: 32,
        }
    }
}

/// The JSON summary (`bench-results/catalog.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Rounds, seconds per round, concurrency.
    pub config: BTreeMap<String, f64>,
    /// One entry per (endpoint, cache mode).
    pub runs: Vec<Run>,
    /// Warm-cache requests/s ÷ no-cache requests/s, per endpoint.
    pub ratios: BTreeMap<String, f64>,
}

/// One endpoint against one server, rounds summed.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// `detail` or `list`.
    pub endpoint: String,
    /// `warm` or `disabled`.
    pub cache: String,
    /// Successful requests.
    pub requests: u64,
    /// Non-200 answers or transport errors.
    pub errors: u64,
    /// Successful requests per second.
    pub requests_per_sec: f64,
    /// Median latency, µs.
    pub p50_us: u32,
    /// 99th percentile latency, µs.
    pub p99_us: u32,
}

/// Creates the scratch database and seeds the demo data into it.
async fn scratch(settings: &Settings) -> anyhow::Result<(Scratch, i64)> {
    let scratch = Scratch::create(settings, "bench_catalog").await?;
    let pool = store::postgres::connect(&scratch.settings.database).await?;
    let demo = seed::seed_demo(&pool, &scratch.settings).await?;
    pool.close();
    let program = *demo
        .program_ids
        .first()
        .ok_or_else(|| anyhow::anyhow!("no demo program"))?;
    Ok((scratch, program))
}

async fn start_server(settings: Settings, cache: bool, prefix: &str) -> anyhow::Result<Server> {
    Server::start(settings, prefix, |s| s.cache.enabled = cache).await
}

/// Runs the benchmark; the scratch database is dropped at the end.
pub async fn run(settings: &Settings, opts: &Options) -> anyhow::Result<Report> {
    let (scratch, program) = scratch(settings).await?;
    let bench = scratch.settings.clone();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let warm = start_server(
        bench.clone(),
        true,
        &format!("bench-catalog:{suffix}:warm:"),
    )
    .await?;
    let cold = start_server(bench, false, &format!("bench-catalog:{suffix}:cold:")).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    let endpoints = [
        ("detail", format!("/api/v1/programs/{program}")),
        ("list", "/api/v1/programs?per_page=20".to_string()),
    ];
    let servers = [("warm", warm), ("disabled", cold)];
    for (_, server) in &servers {
        for (_, path) in &endpoints {
            client
                .get(format!("{}{path}", server.base))
                .send()
                .await?
                .error_for_status()?;
        }
    }
    let mut cells: Cells = BTreeMap::new();
    for round in 0..opts.rounds as usize {
        for (e, (endpoint, path)) in endpoints.iter().enumerate() {
            // Rotate which server goes first each round, so neither always runs cold or last.
            for k in 0..servers.len() {
                let s = (k + round) % servers.len();
                let url = format!("{}{path}", servers[s].1.base);
                let HttpLoad {
                    ok,
                    errors,
                    secs,
                    latencies: lat,
                } = get_load(&client, &url, opts.concurrency, opts.round).await;
                eprintln!(
                    "round {} {endpoint:<6} cache={:<8} {:>9.0} req/s",
                    round + 1,
                    servers[s].0,
                    ratio(ok as f64, secs)
                );
                let cell = cells.entry((e, s)).or_default();
                cell.0 += ok;
                cell.1 += errors;
                cell.2 += secs;
                cell.3.merge(lat);
            }
        }
    }
    let names = servers.each_ref().map(|s| s.0);
    for (_, server) in servers {
        server.stop().await;
    }
    scratch.remove().await;
    Ok(report(opts, &endpoints.map(|e| e.0), &names, cells))
}

type Cells = BTreeMap<(usize, usize), (u64, u64, f64, Latencies)>;

fn report(opts: &Options, endpoints: &[&str], servers: &[&str], cells: Cells) -> Report {
    let runs: Vec<Run> = cells
        .into_iter()
        .map(|((e, s), (ok, errors, secs, mut lat))| Run {
            endpoint: endpoints[e].to_string(),
            cache: servers[s].to_string(),
            requests: ok,
            errors,
            requests_per_sec: ratio(ok as f64, secs),
            p50_us: lat.percentile(50.0),
            p99_us: lat.percentile(99.0),
        })
        .collect();
    let rate = |endpoint: &str, cache: &str| {
        runs.iter()
            .find(|r| r.endpoint == endpoint && r.cache == cache)
            .map_or(0.0, |r| r.requests_per_sec)
    };
    let ratios = endpoints
        .iter()
        .map(|e| {
            (
                format!("{e}_warm_vs_disabled"),
                ratio(rate(e, "warm"), rate(e, "disabled")),
            )
        })
        .collect();
    let config = [
        ("rounds", f64::from(opts.rounds)),
        ("round_secs", opts.round.as_secs_f64()),
        ("concurrency", opts.concurrency as f64),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Report {
        config,
        runs,
        ratios,
    }
}

/// A human-readable table of the report.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "catalog: {:<8} {:<9} {:>10} {:>9} {:>9} {:>7}\n",
        "endpoint", "cache", "req/s", "p50 µs", "p99 µs", "errors"
    );
    for r in &report.runs {
        out += &format!(
            "         {:<8} {:<9} {:>10.0} {:>9} {:>9} {:>7}\n",
            r.endpoint, r.cache, r.requests_per_sec, r.p50_us, r.p99_us, r.errors
        );
    }
    for (k, v) in &report.ratios {
        out += &format!("ratio {k}: {v:.2}\n");
    }
    out
}
