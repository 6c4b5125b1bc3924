//! Everything that talks to a store: PostgreSQL (source of truth), Redis (mirror, never decides)
//! and Pulsar (order events). One repository module per aggregate.
//!
//! [`Stores::connect`] opens all three and fails with a message naming the store that did not
//! answer, so a misconfigured deployment stops at startup instead of serving errors.

pub mod audit;
pub mod bloom;
pub mod catalog;
pub mod catalog_cache;
pub mod catalog_read;
pub mod idempotency;
pub mod inventory;
pub mod mockpay_trades;
pub mod orders;
pub mod payments;
pub mod postgres;
pub mod pulsar;
pub mod rate_limit;
pub mod redis;
pub mod sessions;
pub mod ticket_buyers;
pub mod users;
pub mod writer;

use crate::config::Settings;

pub use self::postgres::PgPool;
pub use self::pulsar::PulsarStore;
pub use self::redis::RedisStore;

/// Why a store could not be opened or answered.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL refused, timed out or failed a query.
    #[error("postgres: {0}")]
    Postgres(String),
    /// Redis refused or timed out.
    #[error("redis: {0}")]
    Redis(String),
    /// The Pulsar broker refused or timed out.
    #[error("pulsar: {0}")]
    Pulsar(String),
    /// A row the caller named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Rows were not in the state a change expected; nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(String),
    /// A business rule checked inside a transaction refused the write (nothing was written);
    /// `code` is the API error code (`LIMIT_EXCEEDED`, `SEAT_UNAVAILABLE`, ...).
    #[error("{code}: {message}")]
    Refused {
        /// API error code.
        code: &'static str,
        /// Human text.
        message: String,
    },
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(postgres::describe(&e))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Postgres(e.to_string())
    }
}

/// The three stores of a running process; cheap to clone (all are handles).
#[derive(Clone)]
pub struct Stores {
    /// PostgreSQL pool.
    pub pg: PgPool,
    /// Redis client with the configured key prefix.
    pub redis: RedisStore,
    /// Pulsar client with the configured topic prefix.
    pub pulsar: PulsarStore,
}

impl Stores {
    /// Opens PostgreSQL, Redis and Pulsar, in that order, each within its configured timeout.
    pub async fn connect(settings: &Settings) -> Result<Self, StoreError> {
        let pg = postgres::connect(&settings.database).await?;
        let redis = RedisStore::connect(&settings.redis).await?;
        let pulsar = PulsarStore::connect(&settings.pulsar).await?;
        Ok(Stores { pg, redis, pulsar })
    }
}
