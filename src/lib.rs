//! # boxoffice — a ticketing engine for high-demand on-sales
//!
//! The architecture map (ARCHITECTURE.md is the long form):
//!
//! ```text
//!  buyer ──REST──► http (axum) ──► ordering ──► actors::Supervisor ──► CategoryActor (program × category)
//!        ◄──WS───  http::ws ◄─ realtime::feed ◄─ committed deltas + snapshots ◄─────┤
//!                                                                                   │ committed changes
//!                                                        store (group commit) ──► PostgreSQL (truth)
//!                                                        outbox relay ──► Pulsar ──► consumers
//!  Redis (fred): sessions, rate limits, read-model mirror (reconcile::mirror). Redis never decides.
//! ```
//!
//! - [`config`] — typed settings: embedded defaults ← `config.toml` ← `BOXOFFICE__*` env.
//! - [`domain`] — pure rules and types, no I/O.
//! - [`actors`] — the single writers of seat state.
//! - [`events`] — outbox relay to Pulsar, event consumers with inboxes, the per-user hub.
//! - [`reconcile`] — the Redis mirror, and the reconciler that compares actor ↔ Postgres ↔
//!   Redis and orders ↔ seats ↔ payments, repairing where the fix is certain.
//! - [`realtime`] — WebSockets: one seat-map feed per watched program (coalesced frames,
//!   serialized once), buyers' channels, connection limits, keepalive and shutdown.
//! - [`store`] — PostgreSQL (deadpool + refinery migrations), Redis (fred), Pulsar, and the
//!   health probe whose flags make a store known down cost a request nothing but its 503.
//! - [`http`] — the axum router, error format, operations endpoints, OpenAPI.
//! - [`payments`] — the provider trait, our payment side, and our client of `mockpay`.
//! - [`mockpay`] — the mock payment provider, a third party of its own: `boxoffice mockpay`.
//! - [`puzzle`] — the proof-of-work challenge that registration surges require.
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
pub mod events;
pub mod http;
pub mod mockpay;
pub mod monitor;
pub mod ordering;
pub mod payments;
pub mod puzzle;
pub mod realtime;
pub mod reconcile;
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
    let problems = settings.production_problems();
    anyhow::ensure!(
        problems.is_empty(),
        "refusing to start in production:\n  - {}",
        problems.join("\n  - ")
    );
    let stores = Stores::connect(&settings).await?;
    let applied = migrate(&stores.pg, &settings).await?;
    tracing::info!(applied, "migrations up to date");
    let state = http::AppState::new(settings, stores, telemetry::metrics_handle())?;
    tokio::spawn(fill_bloom(state.clone()));
    tokio::spawn(retry_refunds(state.clone()));
    tokio::spawn(purge_idempotency_keys(state.clone()));
    let subscriber = store::RedisStore::subscriber(&state.settings.redis).await?;
    state.catalog.listen(subscriber).await?;
    let (stop_events, events_stop) = tokio::sync::watch::channel(false);
    start_events(&state, events_stop.clone())?;
    tokio::spawn(health_probe(&state)?.run(events_stop.clone()));
    let discarded = state.ordering.discarded.clone();
    let health = state.stores.health.clone();
    let flushed = tokio::spawn(discarded.run(state.stores.pg.clone(), health, events_stop.clone()));
    tokio::spawn(state.reconciler.clone().run_continuously(events_stop));
    tracing::info!(address = %listener.local_addr()?, "boxoffice listening");
    let pg = state.stores.pg.clone();
    http::serve(listener, state, shutdown).await?;
    let _ = stop_events.send(true);
    // Discarded orders kept through an outage get their last chance before the pool closes.
    let _ = flushed.await;
    // Background tasks may still hold the pool; closing it ends their sessions cleanly.
    pg.close();
    tracing::info!("boxoffice stopped");
    Ok(())
}

/// Applies pending migrations, then brings ticket buyers still under the legacy key scheme to
/// the current one (the schema cannot: it has no key), so that every claim names its person by
/// the current hash before this process serves. Answers how many migrations ran.
pub async fn migrate(pool: &store::PgPool, settings: &Settings) -> anyhow::Result<usize> {
    let applied = store::postgres::migrate(pool).await?;
    let cipher = crypto::IdNumberCipher::new(settings.secrets.id_number_key_bytes()?);
    store::ticket_buyers::rekey_legacy(pool, &cipher).await?;
    Ok(applied)
}

/// The prober of the stores' health flags (fail-fast and `/readyz`), on a Postgres session of
/// its own so that a full pool never reads as Postgres down.
fn health_probe(state: &http::AppState) -> anyhow::Result<store::health::Probe> {
    let settings = &state.settings;
    let mut pg_config = store::postgres::pg_config(&settings.database)?;
    pg_config.application_name("boxoffice-probe");
    Ok(store::health::Probe {
        health: state.stores.health.clone(),
        pg_config,
        redis: state.stores.redis.clone(),
        pulsar: state.stores.pulsar.clone(),
        interval: settings.health.interval(),
        timeout: settings.health.timeout(),
    })
}

/// Starts the outbox relay and this process's event consumers (as configured); they stop when
/// `stop` turns true.
fn start_events(
    state: &http::AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use events::bookkeeping::{BOOKKEEPING, Bookkeeping, CatalogInvalidation, Notifications};
    use events::consumer::EventConsumer;
    use pulsar::SubType;
    use pulsar::consumer::InitialPosition;
    let settings = &state.settings;
    if settings.events.relay {
        let mut pg_config = store::postgres::pg_config(&settings.database)?;
        pg_config.application_name("boxoffice-relay");
        // The lease lives as long as this session: if the holder's machine vanishes, the
        // server must notice within seconds (not the OS default of hours) so another takes over.
        pg_config.options(format!(
            "{} -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3",
            store::postgres::session_options(&settings.database)
        ));
        pg_config.keepalives_idle(std::time::Duration::from_secs(5));
        let relay = events::relay::Relay {
            settings: settings.events,
            pg_config,
            pulsar: state.stores.pulsar.clone(),
        };
        tokio::spawn(relay.run(stop.clone()));
    }
    if !settings.events.consumers {
        return Ok(());
    }
    let consumer = |name: String, sub_type, start, apply| EventConsumer {
        name,
        sub_type,
        start,
        apply,
        pool: state.stores.pg.clone(),
        pulsar: state.stores.pulsar.clone(),
        settings: settings.events,
        stats: Default::default(),
    };
    let bookkeeping = consumer(
        BOOKKEEPING.into(),
        SubType::Failover,
        InitialPosition::Earliest,
        std::sync::Arc::new(Bookkeeping),
    );
    // Every process serves its own buyers' channels, so each has a subscription of its own.
    let notifications = consumer(
        format!("notifications-{}", settings.orders.worker_id),
        SubType::Exclusive,
        InitialPosition::Latest,
        std::sync::Arc::new(Notifications(state.hub.clone())),
    );
    let catalog = consumer(
        format!("catalog-{}", settings.orders.worker_id),
        SubType::Exclusive,
        InitialPosition::Latest,
        std::sync::Arc::new(CatalogInvalidation(state.catalog.clone())),
    );
    tokio::spawn(catalog.run(stop.clone()));
    tokio::spawn(bookkeeping.run(stop.clone()));
    tokio::spawn(notifications.run(stop.clone()));
    tokio::spawn(mark_unconsumed(state.clone(), stop));
    Ok(())
}

/// Every few seconds, events the bookkeeping consumer has not seen within
/// `events.consume_deadline_secs` become `problem` in the MQ message records.
async fn mark_unconsumed(state: http::AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let deadline = state.settings.events.consume_deadline_secs as f64;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = events::bookkeeping::mark_unconsumed(&state.stores.pg, deadline).await {
            tracing::warn!(error = %e, "unconsumed-event check failed; next round tries again");
        }
    }
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
