//! Everything that talks to a store: PostgreSQL (source of truth), Redis (mirror, never decides)
//! and Pulsar (order events). One repository module per aggregate.
//!
//! [`Stores::connect`] opens all three and fails with a message naming the store that did not
//! answer, so a misconfigured deployment stops at startup instead of serving errors.

pub mod admin_orders;
pub mod audit;
pub mod batch;
pub mod bloom;
pub mod catalog;
pub mod catalog_cache;
pub mod catalog_read;
pub mod discarded;
pub mod health;
pub mod idempotency;
pub mod inventory;
pub mod mockpay_trades;
pub mod orders;
pub mod outbox;
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
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL could not be reached, timed out, or failed without a server error code.
    #[error("postgres: {0}")]
    Postgres(String),
    /// PostgreSQL answered a statement with an error. The SQLSTATE is kept as a code, not
    /// folded into text, because callers decide on it: a deadlock (40P01) or serialization
    /// failure (40001) is retried, other classes are not.
    #[error("postgres: {message}")]
    Db {
        /// The five-character SQLSTATE.
        sqlstate: tokio_postgres::error::SqlState,
        /// Message and detail as the server gave them.
        message: String,
    },
    /// Redis refused or timed out.
    #[error("redis: {0}")]
    Redis(String),
    /// The Pulsar broker refused or timed out.
    #[error("pulsar: {0}")]
    Pulsar(String),
    /// The answer to `COMMIT` was lost and Postgres could not say whether it committed: the
    /// caller must treat its memory of these rows as unknown and reload them.
    #[error("postgres: commit outcome unknown: {0}")]
    CommitUnknown(String),
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
        match e.as_db_error() {
            Some(db) => StoreError::Db {
                sqlstate: db.code().clone(),
                message: postgres::describe(&e),
            },
            None => StoreError::Postgres(e.to_string()),
        }
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
    /// PostgreSQL pool of request handlers and background tasks.
    pub pg: PgPool,
    /// Connections of the group-commit writer alone, one per writer task: orders, releases and
    /// expiries never wait behind request handlers for a connection (a rush of reads or
    /// cancels cannot starve the commits everything else waits for).
    pub writer_pg: PgPool,
    /// Redis client with the configured key prefix.
    pub redis: RedisStore,
    /// Pulsar client with the configured topic prefix.
    pub pulsar: PulsarStore,
    /// Which stores the background probe last found answering ([`health::Probe`]).
    pub health: health::Health,
}

impl Stores {
    /// Opens PostgreSQL, Redis and Pulsar, in that order, each within its configured timeout.
    pub async fn connect(settings: &Settings) -> Result<Self, StoreError> {
        let pg = postgres::connect(&settings.database).await?;
        let writer = settings.writer.settings();
        let mut writer_config = postgres::pg_config(&settings.database)?;
        // Named apart, so an operator (or a test) can tell the writer's sessions in pg_stat_activity.
        writer_config.application_name("boxoffice-writer");
        // Generic plans: the writer runs the same dozen statements over partitioned tables
        // thousands of times; custom plans would re-plan (and re-read every partition's
        // constraints) on each execution, which profiles showed as Postgres's largest cost.
        // Index lookups only: every writer statement joins a batch's arrays to rows by key, and
        // a generic plan made while a table is small (a fresh on-sale, a new partition) chose
        // hash joins over sequential scans of every `orders` partition — kept for the life of
        // the connection, so a release batch read all orders, however many, in the expiry wave.
        let options = format!(
            "-c idle_in_transaction_session_timeout={} -c plan_cache_mode=force_generic_plan \
             -c enable_seqscan=off -c enable_hashjoin=off -c enable_mergejoin=off",
            writer::WRITER_IDLE_IN_TRANSACTION.as_millis()
        );
        writer_config.options(options);
        let writer_pg = postgres::pool_from_config(
            writer_config,
            writer.shards * writer.writers,
            settings.database.connect_timeout(),
        )?;
        let health = health::Health::default();
        let redis = RedisStore::connect(&settings.redis)
            .await?
            .with_health(health.clone());
        let pulsar = PulsarStore::connect(&settings.pulsar).await?;
        Ok(Stores {
            pg,
            writer_pg,
            redis,
            pulsar,
            health,
        })
    }
}
