//! Benchmarks run by `boxoffice bench <name>`: side-by-side comparisons in one process and one
//! run, so ratios are measured under the same machine load. Each prints its figures and writes a
//! JSON summary under `bench-results/`.
//!
//! - [`seat_hold`] — holding two seats: the category actor against Redis-Lua and two Postgres
//!   row-lock designs.
//! - [`catalog`] — program detail and list over HTTP with a warm cache against no cache.
//! - [`ordering`] — buyers racing over HTTP for a hot category: group commit against one
//!   transaction per order, and against a non-durable Redis-Lua order path (`ordering_lua`).
//! - [`events`] — the outbox relay batched against one publish at a time, ordering with the
//!   relay and consumers running against stopped, and the commit-to-consumer delay.
//! - [`reconcile`] — a reconciler pass over a 50,000-seat category, and ordering while the
//!   reconciler, the Redis mirror and an admin stream watch against none of them.
//! - [`ws`] — thousands of seat-map subscribers: memory per connection, change-to-last-
//!   subscriber delay, and frames with coalescing against one frame per change.
//!
//! Shared here: server CPU accounting from `/proc` ([`cpu`]) and latency percentiles.

pub mod catalog;
pub mod cpu;
pub mod events;
pub mod ordering;
mod ordering_lua;
pub mod reconcile;
pub mod seat_hold;
pub mod targets;
pub mod ws;

use anyhow::Context;

/// Latency samples in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    /// Records one sample.
    pub fn record(&mut self, elapsed: std::time::Duration) {
        self.0
            .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
    }

    /// Appends another set of samples.
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`-th percentile (0..=100) in microseconds, nearest-rank; 0 without samples.
    pub fn percentile(&mut self, p: f64) -> u32 {
        if self.0.is_empty() {
            return 0;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
}

/// Runs `sql` on the server's maintenance database (`postgres`): creating and dropping
/// benchmark scratch databases.
pub(crate) async fn admin_execute(
    config: &tokio_postgres::Config,
    sql: &str,
) -> anyhow::Result<()> {
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .context("connect to the postgres maintenance database")?;
    let conn = tokio::spawn(conn);
    client
        .batch_execute(sql)
        .await
        .with_context(|| sql.to_string())?;
    drop(client);
    let _ = conn.await;
    Ok(())
}

/// A scratch database next to the configured one, created afresh (migrated) for a benchmark.
pub struct Scratch {
    /// The configured settings, pointing at the scratch database.
    pub settings: crate::config::Settings,
    admin: tokio_postgres::Config,
    name: String,
}

impl Scratch {
    /// Drops `<database>_<suffix>` if it exists, creates and migrates it.
    pub async fn create(
        settings: &crate::config::Settings,
        suffix: &str,
    ) -> anyhow::Result<Scratch> {
        let scratch = Scratch::empty(settings, suffix).await?;
        let pool = crate::store::postgres::connect(&scratch.settings.database).await?;
        crate::store::postgres::migrate(&pool).await?;
        pool.close();
        Ok(scratch)
    }

    /// Drops `<database>_<suffix>` if it exists and creates it empty (no migrations).
    pub async fn empty(
        settings: &crate::config::Settings,
        suffix: &str,
    ) -> anyhow::Result<Scratch> {
        let config = crate::store::postgres::pg_config(&settings.database)?;
        let name = format!("{}_{suffix}", config.get_dbname().unwrap_or("boxoffice"));
        let mut admin = config;
        admin.dbname("postgres");
        admin_execute(
            &admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await?;
        admin_execute(&admin, &format!("CREATE DATABASE {name}")).await?;
        let mut scratch_settings = settings.clone();
        scratch_settings.database.url = secrecy::SecretString::from(url_with_db(settings, &name));
        // Topics of the run's own: durable subscriptions on a shared topic would hand this
        // run's consumers the backlog of earlier runs and of a demo server on the machine.
        scratch_settings.pulsar.topic_prefix = format!(
            "{}{name}-{}-",
            settings.pulsar.topic_prefix,
            uuid::Uuid::new_v4().simple()
        );
        Ok(Scratch {
            settings: scratch_settings,
            admin,
            name,
        })
    }

    /// Drops the database (best effort: the next run recreates it anyway).
    pub async fn remove(&self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin_execute(&self.admin, &sql).await {
            tracing::warn!(error = %e, "benchmark database not dropped");
        }
    }
}

/// What `concurrency` clients GETting one URL back to back for a while achieved.
pub struct HttpLoad {
    /// 2xx answers with their bodies read.
    pub ok: u64,
    /// Other answers and transport errors.
    pub errors: u64,
    /// Measured seconds.
    pub secs: f64,
    /// Latencies of the successful requests.
    pub latencies: Latencies,
}

/// `concurrency` clients GET `url` back to back for `duration`.
pub async fn get_load(
    client: &reqwest::Client,
    url: &str,
    concurrency: usize,
    duration: std::time::Duration,
) -> HttpLoad {
    let deadline = std::time::Instant::now() + duration;
    let started = std::time::Instant::now();
    let url: std::sync::Arc<str> = url.into();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors, mut lat) = (0u64, 0u64, Latencies::default());
                while std::time::Instant::now() < deadline {
                    let t0 = std::time::Instant::now();
                    if fetch(&client, &url).await {
                        ok += 1;
                        lat.record(t0.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (ok, errors, lat)
            })
        })
        .collect();
    let mut load = HttpLoad {
        ok: 0,
        errors: 0,
        secs: 0.0,
        latencies: Latencies::default(),
    };
    for t in tasks {
        if let Ok((ok, errors, lat)) = t.await {
            load.ok += ok;
            load.errors += errors;
            load.latencies.merge(lat);
        }
    }
    load.secs = started.elapsed().as_secs_f64();
    load
}

/// One GET with its whole body read; true on a 2xx.
async fn fetch(client: &reqwest::Client, url: &str) -> bool {
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        _ => false,
    }
}

/// The configured URL with its database name replaced (the path after the last `/`).
fn url_with_db(settings: &crate::config::Settings, database: &str) -> String {
    use secrecy::ExposeSecret;
    let url = settings.database.url.expose_secret();
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    }
}

/// A boxoffice server inside this process on a free port (rate limits off).
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Worker id of the next benchmark server in this process.
static NEXT_WORKER_ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);

impl Server {
    /// Starts `settings` after `customize`, under its own Redis prefix.
    pub async fn start(
        mut settings: crate::config::Settings,
        prefix: &str,
        customize: impl FnOnce(&mut crate::config::Settings),
    ) -> anyhow::Result<Server> {
        settings.rate_limit.enabled = false;
        settings.redis.key_prefix = prefix.to_string();
        settings.server.port = 0;
        // Each server is a process of its own in a cluster: distinct order-number worker ids
        // (and so distinct per-process subscriptions), as production requires.
        settings.orders.worker_id =
            NEXT_WORKER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64;
        // A category has one owning node (ARCHITECTURE.md); the servers of one benchmark share
        // a database only because each sells its own programs. The sweep that adopts every
        // category with holds in Postgres (for restarts) would have each run actors for the
        // others' programs, and two owners' releases collide; servers here never restart.
        settings.actors.live_holds_sweep_secs = 0;
        customize(&mut settings);
        let listener = tokio::net::TcpListener::bind(settings.bind_address()).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::serve(settings, listener, async {
            let _ = stopped.await;
        }));
        Ok(Server { base, stop, task })
    }

    /// Stops accepting, lets requests finish and waits until its pool is closed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Ok(Err(e)) = self.task.await {
            tracing::warn!(error = %e, "benchmark server stopped with an error");
        }
    }
}

/// A target from the issue and how this run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    /// What is compared.
    pub name: String,
    /// Required value.
    pub required: f64,
    /// Measured value.
    pub measured: f64,
    /// `measured >= required`, or `measured <= required` for an [`Target::at_most`] target.
    pub met: bool,
    /// Lower is better (a cost, not a rate); left out of the JSON when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub at_most: bool,
}

impl Target {
    /// `name` measured against `required` (met when at least as high).
    pub fn judge(name: String, required: f64, measured: f64) -> Target {
        Target {
            name,
            required,
            measured,
            met: measured >= required,
            at_most: false,
        }
    }

    /// `name` measured against a ceiling `required` (met when no higher): costs such as CPU
    /// per order, where lower is better.
    pub fn at_most(name: String, required: f64, measured: f64) -> Target {
        Target {
            name,
            required,
            measured,
            met: measured <= required,
            at_most: true,
        }
    }
}

/// One line per target: required, measured, met or MISSED.
pub fn render_targets(targets: &[Target]) -> String {
    targets
        .iter()
        .map(|t| {
            format!(
                "target {:<38} required {} {:<5} measured {:>8.2}  {}\n",
                t.name,
                if t.at_most { "<=" } else { ">=" },
                t.required,
                t.measured,
                if t.met { "met" } else { "MISSED" }
            )
        })
        .collect()
}

/// `a / b`, or 0 when `b` is 0 (a run without throughput has no meaningful ratio).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_database_name_is_replaced_and_parameters_kept() {
        let mut s = crate::config::Settings::from_figment(crate::config::Settings::figment(
            std::path::Path::new("/nonexistent"),
        ))
        .expect("defaults load");
        s.database.url =
            secrecy::SecretString::from("postgres://u@h:5432/app?sslmode=disable".to_string());
        assert_eq!(
            url_with_db(&s, "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut l = Latencies::default();
        for us in (1..=100).rev() {
            l.record(Duration::from_micros(us));
        }
        assert_eq!(l.percentile(50.0), 50);
        assert_eq!(l.percentile(99.0), 99);
        assert_eq!(l.percentile(100.0), 100);
        assert_eq!(Latencies::default().percentile(50.0), 0);
    }
}
