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
use std::sync::Arc;

pub use self::health::Store;
pub use self::postgres::PgPool;
pub use self::pulsar::PulsarStore;
pub use self::redis::RedisStore;

/// Why a business rule checked inside a transaction refused a write. The API code comes from
/// here ([`Refusal::code`]), never from matching text, so a new kind of refusal is a compile
/// error wherever refusals are answered, not a silent default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A chosen seat is held or sold (Postgres disagrees with the actor that offered it).
    SeatUnavailable,
    /// Not enough general-admission tickets left.
    SoldOut,
    /// A ticket buyer already holds a live ticket for the program.
    BuyerHasTicket,
    /// The `Idempotency-Key` was used meanwhile by another request.
    InFlight,
    /// The per-account limit would be exceeded.
    LimitExceeded,
    /// A field of the request is not acceptable; `field` names it.
    Validation {
        /// The offending field.
        field: &'static str,
    },
}

impl Refusal {
    /// The stable API error code (API.md, "Errors").
    pub fn code(self) -> &'static str {
        match self {
            Refusal::SeatUnavailable => "SEAT_UNAVAILABLE",
            Refusal::SoldOut => "SOLD_OUT",
            Refusal::BuyerHasTicket => "BUYER_HAS_TICKET",
            Refusal::InFlight => "IN_FLIGHT",
            Refusal::LimitExceeded => "LIMIT_EXCEEDED",
            Refusal::Validation { .. } => "VALIDATION",
        }
    }

    /// Whether the refusal is about seats or GA tickets the actors had reserved: their memory
    /// then disagrees with Postgres, and they reload.
    pub fn is_about_seats(self) -> bool {
        matches!(self, Refusal::SeatUnavailable | Refusal::SoldOut)
    }
}

/// Why the group-commit writer could not answer a job (it stops only at shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriterGone {
    /// The writer task has stopped; nothing more is written.
    #[error("the writer has stopped")]
    Stopped,
    /// The writer dropped the job without an answer.
    #[error("the writer dropped the job")]
    Dropped,
    /// A batch ended without an answer for this job.
    #[error("the writer lost a job")]
    Lost,
}

/// An error followed by its causes, `: `-separated, each cause shown once (several libraries
/// repeat their cause in their own text): what a log line needs to tell the whole story.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut told = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let text = e.to_string();
            if !told.contains(&text) {
                told.push_str(": ");
                told.push_str(&text);
            }
            cause = e.source();
        }
        f.write_str(&told)
    }
}

/// Why a store could not be opened or answered.
///
/// Variants that wrap a library's error keep it as their `source` and show its whole chain in
/// their own text, so the `error = %e` of any log line names the root cause (a refused
/// connection, the server's message) without each call site walking the chain.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL could not be reached or failed without a server error code.
    #[error("postgres: {}", Chain(.0))]
    Postgres(#[source] Arc<tokio_postgres::Error>),
    /// No pooled PostgreSQL connection could be had (pool exhausted, or a new connection
    /// could not be opened).
    #[error("postgres pool: {}", Chain(.0))]
    Pool(#[source] Arc<deadpool_postgres::PoolError>),
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
    /// A store did not answer within its timeout.
    #[error("{}: no answer within {after:?}", .store.name())]
    Timeout {
        /// The store that stayed silent.
        store: Store,
        /// How long we waited.
        after: std::time::Duration,
    },
    /// The health probe last found this store down, so it was not asked: the request fails
    /// at once instead of waiting out a connect timeout.
    #[error("{}: known down (health probe); not asked", .0.name())]
    KnownDown(Store),
    /// Redis refused or failed.
    #[error("redis: {}", Chain(.0))]
    Redis(#[source] fred::error::Error),
    /// The Pulsar broker refused or failed.
    #[error("pulsar: {}", Chain(.0))]
    Pulsar(#[source] Arc<::pulsar::Error>),
    /// Some messages of a batch were not accepted by the broker (they are sent again).
    #[error("pulsar: {failed} of {attempted} sends failed")]
    PulsarSends {
        /// Sends that failed.
        failed: usize,
        /// Sends attempted.
        attempted: usize,
    },
    /// A setting a store needs is malformed: startup stops and names it.
    #[error("{setting}: {}", Chain(&**.source))]
    Config {
        /// The setting, e.g. `database.url`.
        setting: &'static str,
        /// What is wrong with it.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The answer to `COMMIT` was lost and Postgres could not say whether it committed: the
    /// caller must treat its memory of these rows as unknown and reload them.
    #[error("postgres: commit outcome unknown: {0}")]
    CommitUnknown(#[source] Arc<StoreError>),
    /// A bounded resource is in full use (the code says which, e.g. `CATALOG_BUSY`): the
    /// request is refused at once with 503 and `Retry-After` rather than queued.
    #[error("busy: {0}")]
    Busy(&'static str),
    /// The group-commit writer could not answer (it is shutting down).
    #[error("postgres: {0}")]
    Writer(#[from] WriterGone),
    /// A task running store work panicked or was cancelled.
    #[error("store task: {}", Chain(.0))]
    Task(#[source] Arc<tokio::task::JoinError>),
    /// A secret kept in a store could not be sealed or opened (password hash, id-number
    /// cipher): a fault of this server or its key, not an outage and not the client's doing.
    #[error("{what}: {}", Chain(&**.source))]
    Crypto {
        /// What was being sealed or opened.
        what: String,
        /// Why it failed.
        #[source]
        source: Arc<crate::crypto::CryptoError>,
    },
    /// A constraint the writer does not know refused an order: a bug, never a seat refusal.
    #[error("order refused by unknown constraint {constraint:?}: {source}")]
    UnknownRefusal {
        /// The constraint's name as Postgres gave it (empty if none).
        constraint: String,
        /// The error that carried it.
        #[source]
        source: Arc<StoreError>,
    },
    /// A row the caller named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Rows were not in the state a change expected; nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A migration failed.
    #[error("migration: {}", Chain(.0))]
    Migration(#[source] Arc<refinery::Error>),
    /// A business rule checked inside a transaction refused the write (nothing was written).
    #[error("{}: {message}", .reason.code())]
    Refused {
        /// Which rule; it chooses the API error code.
        reason: Refusal,
        /// Human text.
        message: String,
    },
}

impl StoreError {
    /// A refusal for `reason` with a human message.
    pub fn refused(reason: Refusal, message: impl Into<String>) -> Self {
        StoreError::Refused {
            reason,
            message: message.into(),
        }
    }

    /// A malformed setting, keeping the parser's error as the cause.
    pub fn config(
        setting: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Config {
            setting,
            source: Arc::new(source),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => StoreError::Db {
                sqlstate: db.code().clone(),
                message: postgres::describe(&e),
            },
            None => StoreError::Postgres(Arc::new(e)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(Arc::new(e))
    }
}

impl From<fred::error::Error> for StoreError {
    fn from(e: fred::error::Error) -> Self {
        StoreError::Redis(e)
    }
}

impl From<::pulsar::Error> for StoreError {
    fn from(e: ::pulsar::Error) -> Self {
        StoreError::Pulsar(Arc::new(e))
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        StoreError::Task(Arc::new(e))
    }
}

impl From<refinery::Error> for StoreError {
    fn from(e: refinery::Error) -> Self {
        StoreError::Migration(Arc::new(e))
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
            "{} -c idle_in_transaction_session_timeout={} -c plan_cache_mode=force_generic_plan \
             -c enable_seqscan=off -c enable_hashjoin=off -c enable_mergejoin=off",
            postgres::session_options(&settings.database),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Refused;

    #[derive(Debug, thiserror::Error)]
    #[error("error connecting to server: {0}")]
    struct Connect(#[source] Refused);

    #[test]
    fn a_chain_names_every_cause_once() {
        let outer = StoreError::config("database.url", Connect(Refused));
        assert_eq!(
            outer.to_string(),
            "database.url: error connecting to server: connection refused"
        );
        let wrapped = StoreError::CommitUnknown(Arc::new(outer));
        assert_eq!(
            Chain(&wrapped).to_string(),
            "postgres: commit outcome unknown: database.url: error connecting to server: \
             connection refused"
        );
        assert!(std::error::Error::source(&wrapped).is_some());
    }

    #[test]
    fn refusal_codes_are_the_documented_ones() {
        assert_eq!(Refusal::SeatUnavailable.code(), "SEAT_UNAVAILABLE");
        assert_eq!(Refusal::Validation { field: "x" }.code(), "VALIDATION");
        assert!(Refusal::SoldOut.is_about_seats());
        assert!(!Refusal::LimitExceeded.is_about_seats());
    }
}
