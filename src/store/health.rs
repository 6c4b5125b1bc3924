//! What a background probe last learned about each store, so that a store known to be down costs
//! a request microseconds instead of a connect timeout.
//!
//! [`Probe::run`] asks PostgreSQL (on a connection of its own, never the pool's), Redis and
//! Pulsar every `health.probe_interval_ms`, each within `health.probe_timeout_ms`, and records
//! the answers in [`Health`]. Requests read the flags: the Redis client refuses commands at once
//! while Redis is known down ([`super::RedisStore::live`]), the Postgres pools refuse to open
//! connections ([`super::postgres::GuardedManager`]), ordering refuses before reserving seats,
//! and `/readyz` answers from the flags without waiting on any store. Recovery needs nothing:
//! the next probe that gets an answer marks the store up again.

use super::{PulsarStore, RedisStore, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_postgres::NoTls;

/// A store the probe watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The source of truth.
    Postgres,
    /// Sessions, rate limits, idempotency markers, caches, the read-model mirror.
    Redis,
    /// Order events.
    Pulsar,
}

impl Store {
    /// The store's name in logs, metrics and `/readyz`.
    pub fn name(self) -> &'static str {
        match self {
            Store::Postgres => "postgres",
            Store::Redis => "redis",
            Store::Pulsar => "pulsar",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The error a request gets while this store is known down; it maps to 503 with
    /// `Retry-After`, like a failed command of that store.
    pub fn down_error(self) -> StoreError {
        StoreError::KnownDown(self)
    }
}

/// Up/down per store; cheap to clone and to read (one relaxed atomic load). Every store starts
/// up: the process only serves after [`super::Stores::connect`] reached all three.
#[derive(Clone, Default)]
pub struct Health {
    down: Arc<[AtomicBool; 3]>,
}

impl Health {
    /// Whether the last probe (or the start) found the store answering.
    pub fn is_up(&self, store: Store) -> bool {
        !self.down[store.index()].load(Ordering::Relaxed)
    }

    /// `Err` at once when the store is known down.
    pub fn ensure_up(&self, store: Store) -> Result<(), StoreError> {
        if self.is_up(store) {
            Ok(())
        } else {
            Err(store.down_error())
        }
    }

    /// Records what the probe found; answers whether that changed the store's state.
    pub fn set(&self, store: Store, up: bool) -> bool {
        let was_down = self.down[store.index()].swap(!up, Ordering::Relaxed);
        was_down == up
    }
}

/// The background prober of [`Health`].
pub struct Probe {
    /// Where the flags live.
    pub health: Health,
    /// How to open the probe's own Postgres session.
    pub pg_config: tokio_postgres::Config,
    /// Asked with a PING on its raw client (the gate of [`RedisStore::live`] would refuse it).
    pub redis: RedisStore,
    /// Asked for the order-events topic.
    pub pulsar: PulsarStore,
    /// Time between rounds.
    pub interval: Duration,
    /// Longest wait for one store's answer.
    pub timeout: Duration,
}

impl Probe {
    /// Probes until `stop` turns true.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut pg = None;
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => return,
            }
            let (pg_up, redis_up, pulsar_up) = tokio::join!(
                self.postgres_answers(&mut pg),
                self.answers(self.redis.ping()),
                self.answers(self.pulsar.ping()),
            );
            self.record(Store::Postgres, pg_up);
            self.record(Store::Redis, redis_up);
            self.record(Store::Pulsar, pulsar_up);
        }
    }

    fn record(&self, store: Store, up: bool) {
        metrics::gauge!("store_up", "store" => store.name()).set(if up { 1.0 } else { 0.0 });
        if self.health.set(store, up) {
            if up {
                tracing::info!(store = store.name(), "store answers again");
            } else {
                tracing::warn!(
                    store = store.name(),
                    "store known down; requests needing it fail fast"
                );
            }
        }
    }

    /// `SELECT 1` on the probe's session, (re)connecting it first if needed.
    async fn postgres_answers(&self, session: &mut Option<tokio_postgres::Client>) -> bool {
        if session.as_ref().is_none_or(|c| c.is_closed()) {
            *session = self.connect_postgres().await;
        }
        let Some(client) = session.as_ref() else {
            return false;
        };
        let answered = tokio::time::timeout(self.timeout, client.simple_query("SELECT 1")).await;
        let up = matches!(answered, Ok(Ok(_)));
        if !up {
            *session = None;
        }
        up
    }

    async fn connect_postgres(&self) -> Option<tokio_postgres::Client> {
        let connect = self.pg_config.connect(NoTls);
        let (client, connection) = tokio::time::timeout(self.timeout, connect)
            .await
            .ok()?
            .ok()?;
        tokio::spawn(connection);
        Some(client)
    }

    /// Whether `ask` answered Ok within the probe's timeout.
    async fn answers(&self, ask: impl Future<Output = Result<(), StoreError>>) -> bool {
        matches!(tokio::time::timeout(self.timeout, ask).await, Ok(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_start_up_and_flags_are_independent() {
        let health = Health::default();
        assert!(health.is_up(Store::Redis));
        assert!(health.set(Store::Redis, false), "up → down is a change");
        assert!(!health.set(Store::Redis, false), "down → down is not");
        assert!(!health.is_up(Store::Redis));
        assert!(health.is_up(Store::Postgres) && health.is_up(Store::Pulsar));
        assert!(matches!(
            health.ensure_up(Store::Redis),
            Err(StoreError::KnownDown(Store::Redis))
        ));
        assert!(health.set(Store::Redis, true));
        assert!(health.ensure_up(Store::Redis).is_ok());
    }
}
