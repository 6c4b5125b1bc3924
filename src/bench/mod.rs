//! Benchmarks run by `boxoffice bench <name>`: side-by-side comparisons in one process and one
//! run, so ratios are measured under the same machine load. Each prints its figures and writes a
//! JSON summary under `bench-results/`.
//!
//! - [`seat_hold`] — holding two seats: the category actor against Redis-Lua and two Postgres
//!   row-lock designs.
//! - [`catalog`] — program detail and list over HTTP with a warm cache against no cache.
//!
//! Shared here: server CPU accounting from `/proc` ([`cpu`]) and latency percentiles.

pub mod catalog;
pub mod cpu;
pub mod seat_hold;
pub mod targets;

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

/// `a / b`, or 0 when `b` is 0 (a run without throughput has no meaningful ratio).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
