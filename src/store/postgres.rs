//! PostgreSQL pool (deadpool-postgres over tokio-postgres) and schema migrations (refinery).

use super::{Store, StoreError};
use crate::config::DatabaseSettings;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::ExposeSecret;
use std::time::Duration;
use tokio_postgres::NoTls;

/// The process-wide pool. Its size bounds how many Postgres backends we occupy.
pub type PgPool = Pool;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Builds the pool and proves it works with one round trip, so a wrong URL fails at startup.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, StoreError> {
    let pool = build_pool(settings)?;
    ping(&pool, settings.connect_timeout()).await?;
    Ok(pool)
}

/// Builds the pool without connecting (connections open lazily).
pub fn build_pool(settings: &DatabaseSettings) -> Result<PgPool, StoreError> {
    pool_from_config(
        pg_config(settings)?,
        settings.pool_size,
        settings.connect_timeout(),
    )
}

/// The parsed `database.url` with our timeout and application name applied.
pub fn pg_config(settings: &DatabaseSettings) -> Result<tokio_postgres::Config, StoreError> {
    let mut pg_config: tokio_postgres::Config = settings
        .url
        .expose_secret()
        .parse()
        .map_err(|e| StoreError::config("database.url", e))?;
    pg_config.connect_timeout(settings.connect_timeout());
    pg_config.application_name("boxoffice");
    pg_config.options(session_options(settings));
    Ok(pg_config)
}

/// Startup options every session of ours gets; callers that set their own options extend
/// these rather than replace them.
pub fn session_options(settings: &DatabaseSettings) -> String {
    format!("-c statement_timeout={}", settings.statement_timeout_ms)
}

/// A pool of at most `size` connections to `pg_config`; waiting longer than `timeout` for one
/// fails the caller.
pub fn pool_from_config(
    pg_config: tokio_postgres::Config,
    size: usize,
    timeout: Duration,
) -> Result<PgPool, StoreError> {
    let manager = Manager::from_config(
        pg_config,
        NoTls,
        // Fast recycling: a broken connection surfaces as a query error and is dropped then.
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        // Waiting longer than this for a free connection means overload: fail and say so.
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .build()
        .map_err(|e| StoreError::config("database", e))
}

/// One `SELECT 1` within `timeout`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> Result<(), StoreError> {
    let check = async {
        let client = pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok::<_, StoreError>(())
    };
    tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| StoreError::Timeout {
            store: Store::Postgres,
            after: timeout,
        })?
}

/// Applies pending migrations from `migrations/` (embedded at build time). Safe to run twice:
/// refinery records applied versions and skips them.
pub async fn migrate(pool: &PgPool) -> Result<usize, StoreError> {
    let mut client = pool.get().await?;
    // A migration may rewrite a big table: it is not bound by the request timeout. The session
    // goes back to the pool, so the timeout is restored after.
    client.batch_execute("SET statement_timeout = 0").await?;
    let report = embedded::migrations::runner()
        .run_async(&mut **client)
        .await?;
    client.batch_execute("RESET statement_timeout").await?;
    Ok(report.applied_migrations().len())
}

/// A tokio-postgres error with its database detail, which `Display` alone omits.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} ({})",
            db.code().code(),
            db.message(),
            db.detail().unwrap_or("")
        ),
        None => e.to_string(),
    }
}

/// Whether a failed transaction may simply be run again: Postgres aborted it to break a
/// deadlock or a serialization conflict (SQLSTATE 40P01 / 40001). Decided on the code the
/// server sent, never on message text.
pub fn is_transient_conflict(e: &super::StoreError) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(e, super::StoreError::Db { sqlstate, .. }
        if *sqlstate == SqlState::T_R_DEADLOCK_DETECTED || *sqlstate == SqlState::T_R_SERIALIZATION_FAILURE)
}
