//! `boxoffice bench seat-hold`: hold two random seats of one large seated category, four ways,
//! in one run with alternating rounds (ARCHITECTURE.md, "The one idea"; issue: inventory actors).
//!
//! - `actor` — the [`CategoryActor`](crate::actors::CategoryActor) through the supervisor,
//!   `send().await`; its store acknowledges at once, so this measures the hot path itself (the
//!   durable group commit has its own benchmark, `bench ordering`).
//! - `redis_lua` — the design boxoffice replaces: a Lua script checks and holds seats kept as JSON
//!   objects in one Redis hash and decrements a remaining counter.
//! - `pg_atomic` — one Postgres transaction: `UPDATE … WHERE status = 'available'` on the seats,
//!   then a conditional update of the category's remaining counter.
//! - `pg_for_update` — the same, but `SELECT … FOR UPDATE` on seats and counter first.
//!
//! Each operation takes the next unused pair of a seeded random permutation of the seats; one in
//! eight instead repeats a recently issued pair, as two buyers clicking the same seats would, so
//! every design must refuse someone and the invariant check at the end of a run has teeth: held
//! seats = 2 × successful holds, remaining = capacity − held, no seat in two successful holds.
//! When every pair was handed out (a "fill"), the invariants are checked, the design is reset
//! outside the measured time and the round goes on until it has measured its full length.

use super::targets::{ActorTarget, HoldOutcome, HoldTarget, PgHoldTarget, PgMode, RedisLuaTarget};
use super::{Latencies, Target, cpu, ratio, render_targets};
use crate::config::Settings;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What to run; the defaults are the documented benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seats in the category (a multiple of 400 keeps the grid rectangular).
    pub seats: u32,
    /// Rounds per (design, concurrency); designs alternate within each round.
    pub rounds: u32,
    /// Length of one measured round.
    pub round: Duration,
    /// Concurrent clients; the last one is where targets are judged.
    pub concurrency: Vec<usize>,
    /// Seed of the seat permutation and the repeated pairs.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seats: 100_000,
            rounds: 3,
            round: Duration::from_secs(3),
            concurrency: vec![4, 64],
            seed: 2026,
        }
    }
}

/// The JSON summary (`bench-results/seat-hold.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was run.
    pub config: ReportConfig,
    /// One entry per (design, concurrency), rounds summed.
    pub runs: Vec<RunSummary>,
    /// Actor ÷ design, in operations per server-CPU-second at the highest concurrency.
    pub ratios: BTreeMap<String, f64>,
    /// Actor ÷ design, in operations per second at the highest concurrency.
    pub ratios_ops_per_sec: BTreeMap<String, f64>,
    /// Ops/s at the highest concurrency ÷ ops/s at the lowest, per design.
    pub flatness: BTreeMap<String, f64>,
    /// The targets and whether this run met them.
    pub targets: Vec<Target>,
    /// False if any run broke an invariant (such a run is invalid).
    pub valid: bool,
}

/// Parameters recorded with the results.
#[derive(Debug, Clone, Serialize)]
pub struct ReportConfig {
    /// Seats in the category.
    pub seats: u32,
    /// Rounds per cell.
    pub rounds: u32,
    /// Seconds per round.
    pub round_secs: f64,
    /// Concurrency levels.
    pub concurrency: Vec<usize>,
    /// Permutation seed.
    pub seed: u64,
    /// Cores of the machine.
    pub cores: usize,
}

/// One design at one concurrency, all rounds summed.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// `actor`, `redis_lua`, `pg_atomic` or `pg_for_update`.
    pub design: String,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Completed operations (held + refused).
    pub ops: u64,
    /// Successful holds.
    pub held: u64,
    /// Refused because a seat was taken.
    pub refused: u64,
    /// Failed with an error (counted in `ops` neither).
    pub errors: u64,
    /// Measured seconds.
    pub secs: f64,
    /// Server CPU seconds (this process + redis-server + postgres).
    pub cpu_secs: f64,
    /// `ops / secs`.
    pub ops_per_sec: f64,
    /// `ops / cpu_secs`.
    pub ops_per_cpu_sec: f64,
    /// Median latency, µs.
    pub p50_us: u32,
    /// 99th percentile latency, µs.
    pub p99_us: u32,
    /// Ops/s of each round, to show the spread.
    pub round_ops_per_sec: Vec<f64>,
    /// No invariant broken in any round.
    pub valid: bool,
    /// What broke, if anything.
    pub violations: Vec<String>,
}

/// Runs the benchmark against the configured Redis and Postgres (a scratch database
/// `<database>_bench` is created and dropped afresh).
pub async fn run(settings: &Settings, opts: &Options) -> anyhow::Result<Report> {
    let max_conc = opts.concurrency.iter().copied().max().unwrap_or(1);
    let pg = super::targets::PgBench::create(settings, opts.seats, max_conc).await?;
    let targets: Vec<Arc<dyn HoldTarget>> = vec![
        Arc::new(ActorTarget::new(settings, opts.seats)),
        Arc::new(RedisLuaTarget::connect(settings, opts.seats).await?),
        Arc::new(PgHoldTarget::new(pg.clone(), PgMode::Atomic)),
        Arc::new(PgHoldTarget::new(pg.clone(), PgMode::ForUpdate)),
    ];
    let mut cells: BTreeMap<(usize, usize), Cell> = BTreeMap::new();
    for round in 0..opts.rounds as usize {
        for &conc in &opts.concurrency {
            // Rotate the order each round so no design always runs first (cold) or last.
            for k in 0..targets.len() {
                let t = (k + round) % targets.len();
                let outcome = run_round(targets[t].clone(), opts, conc, round).await?;
                eprintln!(
                    "round {} c={conc:<3} {:<14} {:>10.0} ops/s  valid={}",
                    round + 1,
                    targets[t].name(),
                    outcome.ops as f64 / outcome.secs,
                    outcome.violations.is_empty()
                );
                cells.entry((t, conc)).or_default().add(outcome);
            }
        }
    }
    pg.drop_database().await;
    Ok(build_report(opts, &targets, cells))
}

/// The seat pairs of one round: a seeded permutation handed out in order.
struct Plan {
    seats: Vec<i64>,
    next: AtomicUsize,
    seed: u64,
}

impl Plan {
    fn new(seats: u32, seed: u64) -> Plan {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let mut ids: Vec<i64> = (1..=seats as i64).collect();
        ids.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        Plan {
            seats: ids,
            next: AtomicUsize::new(0),
            seed,
        }
    }

    /// The next operation's order number and seats; `None` once every pair was handed out.
    fn next(&self) -> Option<(i64, [i64; 2])> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if 2 * i + 1 >= self.seats.len() {
            return None;
        }
        let pair = self.pair_for(i);
        Some((
            i as i64 + 1,
            [self.seats[2 * pair], self.seats[2 * pair + 1]],
        ))
    }

    /// Operation `i` takes pair `i`, except one in eight repeats one of the 32 pairs before it.
    fn pair_for(&self, i: usize) -> usize {
        let h = splitmix64(self.seed ^ (i as u64).wrapping_mul(0x9e37_79b9));
        if i == 0 || !h.is_multiple_of(8) {
            return i;
        }
        i - 1 - ((h >> 8) as usize % i.min(32))
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What one round of one design at one concurrency did.
#[derive(Default)]
struct RoundOutcome {
    ops: u64,
    held: u64,
    errors: u64,
    secs: f64,
    cpu_secs: f64,
    latencies: Latencies,
    violations: Vec<String>,
}

/// One measured round: as many fills as fit in `opts.round` of measured time. Resets between
/// fills are not measured (neither time nor CPU).
async fn run_round(
    target: Arc<dyn HoldTarget>,
    opts: &Options,
    conc: usize,
    round: usize,
) -> anyhow::Result<RoundOutcome> {
    let mut total = RoundOutcome::default();
    let mut fill = 0u64;
    while total.secs < opts.round.as_secs_f64() {
        let left = opts
            .round
            .saturating_sub(Duration::from_secs_f64(total.secs));
        let seed = opts.seed ^ ((round as u64) << 32 | fill);
        let outcome = run_fill(target.clone(), opts.seats, seed, conc, left).await?;
        total.secs += outcome.secs;
        total.cpu_secs += outcome.cpu_secs;
        total.violations.extend(outcome.violations.iter().cloned());
        total.merge(outcome);
        fill += 1;
    }
    Ok(total)
}

/// Resets the design's seats, lets `conc` clients hold pairs until `limit` passes or the seats
/// run out, then checks the invariants.
async fn run_fill(
    target: Arc<dyn HoldTarget>,
    seats: u32,
    seed: u64,
    conc: usize,
    limit: Duration,
) -> anyhow::Result<RoundOutcome> {
    target.reset().await?;
    let plan = Arc::new(Plan::new(seats, seed));
    let deadline = Instant::now() + limit;
    let cpu_before = cpu::server_cpu_seconds();
    let started = Instant::now();
    let clients: Vec<_> = (0..conc)
        .map(|_| tokio::spawn(client(target.clone(), plan.clone(), deadline)))
        .collect();
    let mut outcome = RoundOutcome::default();
    let mut held_pairs = Vec::new();
    for c in clients {
        let (client_outcome, pairs) = c.await?;
        outcome.merge(client_outcome);
        held_pairs.extend(pairs);
    }
    outcome.secs = started.elapsed().as_secs_f64();
    outcome.cpu_secs = cpu::server_cpu_seconds() - cpu_before;
    outcome.violations = disjoint_violations(&held_pairs);
    outcome
        .violations
        .extend(target.check(seats, outcome.held).await?);
    Ok(outcome)
}

/// One client: holds pairs back to back until the deadline.
async fn client(
    target: Arc<dyn HoldTarget>,
    plan: Arc<Plan>,
    deadline: Instant,
) -> (RoundOutcome, Vec<[i64; 2]>) {
    let mut outcome = RoundOutcome::default();
    let mut held = Vec::new();
    while Instant::now() < deadline {
        let Some((order, seats)) = plan.next() else {
            break;
        };
        let t0 = Instant::now();
        match target.hold(order, seats).await {
            HoldOutcome::Held => {
                outcome.held += 1;
                held.push(seats);
            }
            HoldOutcome::Refused => {}
            HoldOutcome::Error(e) => {
                outcome.errors += 1;
                if outcome.errors == 1 {
                    tracing::warn!(design = target.name(), error = %e, "hold failed");
                }
                continue;
            }
        }
        outcome.ops += 1;
        outcome.latencies.record(t0.elapsed());
    }
    (outcome, held)
}

/// Client-side half of "no seat in two orders": successful holds never share a seat.
fn disjoint_violations(pairs: &[[i64; 2]]) -> Vec<String> {
    let mut seen = HashSet::with_capacity(pairs.len() * 2);
    let twice = pairs.iter().flatten().filter(|s| !seen.insert(**s)).count();
    if twice == 0 {
        vec![]
    } else {
        vec![format!("{twice} seats were held by two successful holds")]
    }
}

impl RoundOutcome {
    fn merge(&mut self, other: RoundOutcome) {
        self.ops += other.ops;
        self.held += other.held;
        self.errors += other.errors;
        self.latencies.merge(other.latencies);
    }
}

/// Rounds of one (design, concurrency) summed.
#[derive(Default)]
struct Cell {
    total: RoundOutcome,
    round_rates: Vec<f64>,
}

impl Cell {
    fn add(&mut self, round: RoundOutcome) {
        self.round_rates.push(ratio(round.ops as f64, round.secs));
        self.total.secs += round.secs;
        self.total.cpu_secs += round.cpu_secs;
        self.total
            .violations
            .extend(round.violations.iter().cloned());
        self.total.merge(round);
    }

    fn summary(mut self, design: &str, concurrency: usize) -> RunSummary {
        let t = &mut self.total;
        RunSummary {
            design: design.to_string(),
            concurrency,
            ops: t.ops,
            held: t.held,
            refused: t.ops - t.held,
            errors: t.errors,
            secs: t.secs,
            cpu_secs: t.cpu_secs,
            ops_per_sec: ratio(t.ops as f64, t.secs),
            ops_per_cpu_sec: ratio(t.ops as f64, t.cpu_secs),
            p50_us: t.latencies.percentile(50.0),
            p99_us: t.latencies.percentile(99.0),
            round_ops_per_sec: self.round_rates,
            valid: t.violations.is_empty(),
            violations: std::mem::take(&mut t.violations),
        }
    }
}

fn build_report(
    opts: &Options,
    targets: &[Arc<dyn HoldTarget>],
    cells: BTreeMap<(usize, usize), Cell>,
) -> Report {
    let runs: Vec<RunSummary> = cells
        .into_iter()
        .map(|((t, conc), cell)| cell.summary(targets[t].name(), conc))
        .collect();
    let low = opts.concurrency.iter().copied().min().unwrap_or(1);
    let high = opts.concurrency.iter().copied().max().unwrap_or(1);
    let find = |design: &str, conc: usize| {
        runs.iter()
            .find(|r| r.design == design && r.concurrency == conc)
    };
    let actor = find("actor", high);
    let mut ratios = BTreeMap::new();
    let mut ratios_ops = BTreeMap::new();
    let mut flatness = BTreeMap::new();
    for t in targets {
        let (Some(hi), Some(lo)) = (find(t.name(), high), find(t.name(), low)) else {
            continue;
        };
        flatness.insert(t.name().to_string(), ratio(hi.ops_per_sec, lo.ops_per_sec));
        if let (Some(a), true) = (actor, t.name() != "actor") {
            let key = format!("actor_vs_{}", t.name());
            ratios.insert(key.clone(), ratio(a.ops_per_cpu_sec, hi.ops_per_cpu_sec));
            ratios_ops.insert(key, ratio(a.ops_per_sec, hi.ops_per_sec));
        }
    }
    let targets = judge(&ratios, &flatness);
    Report {
        config: ReportConfig {
            seats: opts.seats,
            rounds: opts.rounds,
            round_secs: opts.round.as_secs_f64(),
            concurrency: opts.concurrency.clone(),
            seed: opts.seed,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        valid: runs.iter().all(|r| r.valid),
        runs,
        ratios,
        ratios_ops_per_sec: ratios_ops,
        flatness,
        targets,
    }
}

/// The targets: per server-CPU-second at the highest concurrency, and actor flatness.
fn judge(ratios: &BTreeMap<String, f64>, flatness: &BTreeMap<String, f64>) -> Vec<Target> {
    let wanted = [
        ("actor_vs_redis_lua", 5.0, ratios),
        ("actor_vs_pg_atomic", 20.0, ratios),
        ("actor_vs_pg_for_update", 30.0, ratios),
        ("actor", 0.9, flatness),
    ];
    wanted
        .into_iter()
        .filter_map(|(key, required, source)| {
            let measured = *source.get(key)?;
            let name = if key == "actor" {
                "flatness.actor".to_string()
            } else {
                format!("ratios.{key}")
            };
            Some(Target::judge(name, required, measured))
        })
        .collect()
}

/// A human-readable table of the report.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "seat-hold: {} seats, {} rounds x {:.1}s, {} cores\n",
        report.config.seats, report.config.rounds, report.config.round_secs, report.config.cores,
    );
    out += &format!(
        "{:<14} {:>4} {:>10} {:>12} {:>8} {:>8} {:>8} {:>6}\n",
        "design", "conc", "ops/s", "ops/cpu-s", "p50 µs", "p99 µs", "errors", "valid"
    );
    for r in &report.runs {
        out += &format!(
            "{:<14} {:>4} {:>10.0} {:>12.0} {:>8} {:>8} {:>8} {:>6}\n",
            r.design,
            r.concurrency,
            r.ops_per_sec,
            r.ops_per_cpu_sec,
            r.p50_us,
            r.p99_us,
            r.errors,
            r.valid
        );
    }
    out += &render_targets(&report.targets);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_hands_out_every_seat_once_except_repeats() {
        let plan = Plan::new(1000, 7);
        let mut seen = HashSet::new();
        let mut repeats = 0;
        while let Some((_, pair)) = plan.next() {
            if !seen.insert(pair) {
                repeats += 1;
            }
        }
        assert_eq!(seen.len() + repeats, 500);
        assert!(
            repeats > 30 && repeats < 100,
            "about one in eight repeats: {repeats}"
        );
        let pairs_seats: HashSet<i64> = seen.iter().flatten().copied().collect();
        assert_eq!(
            pairs_seats.len(),
            seen.len() * 2,
            "distinct pairs never overlap"
        );
    }

    #[test]
    fn overlapping_successes_are_reported() {
        assert!(disjoint_violations(&[[1, 2], [3, 4]]).is_empty());
        assert_eq!(disjoint_violations(&[[1, 2], [2, 5]]).len(), 1);
    }
}
