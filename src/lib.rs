//! # boxoffice — a ticketing engine for high-demand on-sales
//!
//! The architecture map (ARCHITECTURE.md is the long form):
//!
//! ```text
//!  buyer ──REST──► http (axum) ──► ordering ──► actors::Supervisor ──► CategoryActor (program × category)
//!        ◄──WS───  http::ws  ◄──── seat deltas (coalesced, serialized once) ◄──────┤
//!                                                                                   │ committed changes
//!                                                        store (group commit) ──► PostgreSQL (truth)
//!                                                        outbox relay ──► Pulsar ──► consumers (not yet)
//!  Redis (fred): sessions, rate limits, read-model mirror (not yet). Redis never decides.
//! ```
//!
//! - [`config`] — typed settings: embedded defaults ← `config.toml` ← `BOXOFFICE__*` env.
//! - [`domain`] — pure rules and types, no I/O.
//! - [`actors`] — the single writers of seat state.
//! - [`store`] — PostgreSQL (deadpool + refinery migrations), Redis (fred), Pulsar.
//! - [`http`] — the axum router, error format, operations endpoints, OpenAPI.
//! - [`payments`] — the provider trait, our payment side, and the built-in `mockpay` provider.
//! - [`bench`] — `boxoffice bench …`: side-by-side benchmarks with JSON summaries.
//! - [`seed`] — demo data; [`crypto`] — password and id-number protection;
//!   [`telemetry`] — logs and metrics.
//!
//! [`serve`] is the whole server: tests call it with a listener on port 0 and their own
//! settings; `main.rs` only parses the command line and calls it.

pub mod actors;
pub mod auth;
pub mod bench;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod ordering;
pub mod payments;
pub mod seed;
pub mod store;
pub mod telemetry;

use config::Settings;
use std::future::Future;
use store::Stores;

/// Connects the stores (failing clearly when one is unreachable), applies migrations, and serves
/// HTTP on `listener` until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stores = Stores::connect(&settings).await?;
    let applied = store::postgres::migrate(&stores.pg).await?;
    tracing::info!(applied, "migrations up to date");
    let state = http::AppState::new(settings, stores, telemetry::metrics_handle())?;
    tokio::spawn(fill_bloom(state.clone()));
    tokio::spawn(retry_refunds(state.clone()));
    tokio::spawn(purge_idempotency_keys(state.clone()));
    let subscriber = store::RedisStore::subscriber(&state.settings.redis).await?;
    state.catalog.listen(subscriber).await?;
    tracing::info!(address = %listener.local_addr()?, "boxoffice listening");
    let pg = state.stores.pg.clone();
    http::serve(listener, state, shutdown).await?;
    // Background tasks may still hold the pool; closing it ends their sessions cleanly.
    pg.close();
    tracing::info!("boxoffice stopped");
    Ok(())
}

/// Loads every registered handle into the shared Bloom filter. Runs beside serving: until it is
/// done the filter may answer "not taken" wrongly, and Postgres's unique keys still refuse.
async fn fill_bloom(state: http::AppState) {
    match state.bloom.fill_from(&state.stores.pg).await {
        Ok(n) => tracing::info!(handles = n, "registration bloom filter filled"),
        Err(e) => tracing::warn!(error = %e, "registration bloom filter not filled"),
    }
}

/// Sends again, every `payments.refund_retry_secs`, the refunds a provider has not confirmed:
/// a refund owed for a late or duplicate payment must not depend on the buyer asking.
async fn retry_refunds(state: http::AppState) {
    let every = state.settings.payments.refund_retry_secs;
    if every == 0 {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(every));
    loop {
        tick.tick().await;
        match state.payments.retry_refunds(every as i64).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(refunds = n, "unconfirmed refunds sent again"),
            Err(e) => tracing::warn!(error = %e, "refund retry failed; next round tries again"),
        }
    }
}

/// Deletes stored `Idempotency-Key` answers past `orders.idempotency_ttl_secs`, a batch at a
/// time, every few minutes: a lookup already ignores them, this keeps the table small.
async fn purge_idempotency_keys(state: http::AppState) {
    let ttl = state.settings.orders.idempotency_ttl_secs as f64;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
    loop {
        tick.tick().await;
        loop {
            match store::idempotency::purge_expired(&state.stores.pg, ttl, 1_000).await {
                Ok(1_000) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency key purge failed; next round tries again");
                    break;
                }
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM: the signals that ask a server to stop gracefully.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested");
}
