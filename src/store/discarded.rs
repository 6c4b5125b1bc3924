//! Discarded orders that could not be recorded when they happened. An order whose commit failed
//! because Postgres was unreachable cannot be written to `discarded_orders` either: the
//! [`DiscardedBacklog`] keeps it in memory and [`DiscardedBacklog::run`] writes it once Postgres
//! answers again, with the time it was discarded. Operators thus see every attempt that took
//! seats, outage or not.

use super::health::{Health, Store};
use super::orders::{PlaceOrder, record_discarded_at};
use super::{PgPool, StoreError};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most records kept while Postgres is away. At a thousand orders a second failing, this is a
/// minute and a half of outage; beyond it the oldest go (logged one by one, and counted), so an
/// outage of any length cannot exhaust memory.
const MAX_KEPT: usize = 100_000;

/// How often a non-empty backlog is tried.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// One attempt waiting to be recorded.
struct Pending {
    order: PlaceOrder,
    reason: String,
    at: DateTime<Utc>,
}

/// Discarded orders waiting for Postgres; cheap to clone (one shared queue).
#[derive(Clone, Default)]
pub struct DiscardedBacklog {
    // A std mutex: held only to push or pop, never across an await.
    queue: Arc<Mutex<VecDeque<Pending>>>,
}

impl DiscardedBacklog {
    /// Keeps an attempt discarded at `at` for [`Self::run`] to record.
    pub fn keep(&self, order: PlaceOrder, reason: String, at: DateTime<Utc>) {
        let mut queue = self.lock();
        if queue.len() >= MAX_KEPT
            && let Some(lost) = queue.pop_front()
        {
            metrics::counter!("discarded_orders_dropped_total").increment(1);
            tracing::error!(
                order_no = lost.order.order_no,
                reason = lost.reason,
                "discarded-order backlog full; oldest record dropped"
            );
        }
        queue.push_back(Pending { order, reason, at });
        metrics::gauge!("discarded_orders_backlog").set(queue.len() as f64);
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes what waits, oldest first, until done or Postgres fails again (the record that
    /// failed goes back to the front). Answers how many were written.
    pub async fn flush(&self, pg: &PgPool) -> usize {
        let mut written = 0;
        while let Some(next) = self.pop() {
            match record_discarded_at(pg, &next.order, &next.reason, Some(next.at)).await {
                Ok(()) => written += 1,
                Err(e) if is_unreachable(&e) => {
                    self.lock().push_front(next);
                    break;
                }
                Err(e) => {
                    tracing::error!(order_no = next.order.order_no, error = %e, "discarded order refused by Postgres; not kept");
                }
            }
        }
        metrics::gauge!("discarded_orders_backlog").set(self.len() as f64);
        written
    }

    /// Flushes whenever something waits and Postgres is up, until `stop` turns true; then
    /// tries once more, so a graceful stop after an outage loses nothing.
    pub async fn run(
        self,
        pg: PgPool,
        health: Health,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => break,
            }
            if !self.is_empty() && health.is_up(Store::Postgres) {
                let written = self.flush(&pg).await;
                if written > 0 {
                    tracing::info!(
                        written,
                        left = self.len(),
                        "discarded orders recorded after Postgres returned"
                    );
                }
            }
        }
        self.flush(&pg).await;
    }

    fn pop(&self) -> Option<Pending> {
        self.lock().pop_front()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        // A panic while holding the lock cannot leave the queue half-changed (push/pop only).
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Postgres did not answer (as opposed to answering with an error): worth trying again.
pub fn is_unreachable(e: &StoreError) -> bool {
    !matches!(e, StoreError::Db { .. })
}
