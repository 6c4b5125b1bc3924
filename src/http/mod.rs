//! The HTTP surface (axum): one `router()` per resource module, assembled here with the layers
//! every request passes — request id, tracing span, panic → opaque 500, metrics.

pub mod accounts;
pub mod admin;
pub mod admin_orders;
pub mod admin_users;
pub mod catalog;
pub mod error;
pub mod extractor;
pub mod limits;
pub mod mq;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod payments;
pub mod reconcile;
pub mod seat_map;
pub mod server;
pub mod ticket_buyers;
pub mod web;
pub mod ws;
pub mod ws_admin;

use crate::actors::Supervisor;
use crate::auth::TokenKeys;
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::crypto::IdNumberCipher;
use crate::domain::order_no::OrderNoGenerator;
use crate::ordering::Ordering;
use crate::payments::mockpay::MockpayClient;
use crate::payments::{PaymentProvider, Payments};
use crate::store::Stores;
use crate::store::bloom::HandleBloom;
use crate::store::catalog_cache::CatalogCache;
use crate::store::rate_limit::RateLimiter;
use crate::store::sessions::SessionGuard;
use crate::store::writer::{GroupCommitStore, GroupCommitWriter};
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::Response;
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use self::openapi::ApiDoc;

/// Shared by every handler; cheap to clone (handles and `Arc`s only).
#[derive(Clone)]
pub struct AppState {
    /// Effective configuration.
    pub settings: Arc<Settings>,
    /// PostgreSQL, Redis, Pulsar.
    pub stores: Stores,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The category actors.
    pub supervisor: Supervisor,
    /// Commits every actor's changes in batches.
    pub writer: GroupCommitWriter,
    /// Signs and checks session tokens.
    pub tokens: TokenKeys,
    /// Revocations, login throttling, surge captcha (Redis).
    pub sessions: SessionGuard,
    /// "Is this mobile/email taken?" pre-check (Redis).
    pub bloom: HandleBloom,
    /// Token buckets (Redis).
    pub limiter: RateLimiter,
    /// Encrypts ticket buyers' id numbers.
    pub cipher: IdNumberCipher,
    /// Bounds argon2 work (password hashes and checks) to the cores.
    pub password_work: crate::crypto::PasswordWork,
    /// Catalog reads: in-process → Redis → Postgres.
    pub catalog: CatalogCache,
    /// REST seat-map categories, serialized once per published state.
    pub seat_maps: seat_map::SeatMapParts,
    /// Places orders.
    pub ordering: Ordering,
    /// Pays and refunds orders through the providers.
    pub payments: Payments,
    /// Each buyer's order events, for their open channels on this process.
    pub hub: crate::events::hub::Hub,
    /// WebSockets: seat-map feeds, open connections, buyer channels' tokens.
    pub realtime: crate::realtime::Realtime,
    /// Compares actor, Postgres and the Redis mirror, and orders with payments.
    pub reconciler: crate::reconcile::Reconciler,
}

impl AppState {
    /// Everything handlers need, built over connected stores. Must run inside a tokio runtime
    /// (the supervisor starts its sweeper there).
    pub fn new(
        settings: Settings,
        stores: Stores,
        metrics: PrometheusHandle,
    ) -> Result<Self, crate::config::ConfigError> {
        let writer = GroupCommitWriter::start(stores.writer_pg.clone(), settings.writer.settings());
        let runtime = tokio::runtime::Handle::current();
        let inventory = GroupCommitStore::new(stores.pg.clone(), writer.clone(), runtime);
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(SystemClock);
        let supervisor =
            Supervisor::new(Arc::new(inventory), clock.clone(), settings.actors.clone());
        let catalog = CatalogCache::new(
            stores.pg.clone(),
            stores.redis.clone(),
            settings.cache.clone(),
        );
        let ordering = Ordering {
            supervisor: supervisor.clone(),
            writer: writer.clone(),
            catalog: catalog.clone(),
            pg: stores.pg.clone(),
            discarded: Default::default(),
            health: stores.health.clone(),
            ids: Arc::new(OrderNoGenerator::new(settings.orders.worker_id)),
            clock,
            payment_window: chrono::Duration::seconds(settings.orders.payment_window_secs as i64),
            idempotency_ttl_secs: settings.orders.idempotency_ttl_secs as f64,
        };
        let payments = payment_parts(&settings, &stores, &supervisor);
        let r = settings.reconcile;
        let mirror = r.mirror.then(|| {
            let coalesce = std::time::Duration::from_millis(r.mirror_coalesce_ms);
            crate::reconcile::mirror::start(stores.redis.clone(), coalesce)
        });
        if let Some(sink) = &mirror {
            supervisor.mirror_to(sink.clone());
        }
        let reconciler = crate::reconcile::Reconciler::new(
            stores.pg.clone(),
            stores.redis.clone(),
            supervisor.clone(),
            payments.clone(),
            r,
            mirror,
        );
        let sessions = SessionGuard::new(stores.redis.clone());
        let realtime = crate::realtime::Realtime::new(
            settings.ws.clone(),
            supervisor.clone(),
            sessions.clone(),
        );
        let a = &settings.accounts;
        Ok(AppState {
            reconciler,
            payments,
            writer,
            supervisor,
            ordering,
            catalog,
            seat_maps: seat_map::SeatMapParts::new(std::time::Duration::from_millis(
                settings.cache.idle_seat_map_ms,
            )),
            tokens: TokenKeys::new(&settings.secrets.jwt_key, a.token_ttl_secs),
            sessions,
            realtime,
            bloom: HandleBloom::new(stores.redis.clone(), a.bloom_bits, a.bloom_hashes),
            limiter: RateLimiter::new(stores.redis.clone()),
            cipher: IdNumberCipher::new(settings.secrets.id_number_key_bytes()?),
            password_work: crate::crypto::PasswordWork::new(
                settings.accounts.password_hash_concurrency,
            ),
            settings: Arc::new(settings),
            stores,
            metrics,
            hub: crate::events::hub::Hub::default(),
        })
    }
}

/// Our payment side with its providers. The mock provider is not among the parts: it is a
/// process of its own (`boxoffice mockpay`), reached over HTTP like any third party.
fn payment_parts(settings: &Settings, stores: &Stores, supervisor: &Supervisor) -> Payments {
    let mut providers: HashMap<String, Arc<dyn PaymentProvider>> = HashMap::new();
    let m = &settings.payments.mockpay;
    if m.enabled {
        let key = settings.secrets.payment_signing_key.clone();
        let client = MockpayClient::new(&settings.mockpay_url(), &m.merchant_id, key);
        providers.insert(crate::payments::mockpay::CHANNEL.into(), Arc::new(client));
    }
    Payments::new(stores.pg.clone(), supervisor.clone(), providers)
}

/// The `{items, total, page, per_page}` envelope of every paged list.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Listing<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// How many match, on all pages.
    pub total: i64,
    /// This page's number, from 1.
    pub page: u32,
    /// The page size used.
    pub per_page: u32,
}

/// Page number and size of an operators' list: page 1 and 50 by default, at most 200 a page.
pub(crate) fn paging(page: Option<u32>, per_page: Option<u32>) -> (u32, u32) {
    (
        page.unwrap_or(1).max(1),
        per_page.unwrap_or(50).clamp(1, 200),
    )
}

/// Largest request body accepted: program creation with its tiers is the biggest, far below.
const MAX_BODY_BYTES: usize = 1024 * 1024;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// All routes with all layers.
pub fn router(state: AppState) -> Router {
    let limits = state.settings.server.limits();
    let request_limits =
        server::RequestLimits::new(limits.max_in_flight_requests, limits.request_timeout);
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let request_id = req
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            // The path only: query strings carry tokens (`/ws/me?token=`) and search terms,
            // which do not belong in logs.
            let path = req.uri().path();
            tracing::info_span!("request", method = %req.method(), path, request_id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(middleware::from_fn(record_metrics))
        .layer(middleware::from_fn(error::envelope))
        .layer(middleware::from_fn(move |req, next| {
            request_limits.clone().enforce(req, next)
        }))
        .layer(middleware::from_fn(error::refuse_nul_in_query))
        // A body announced larger than any request needs is refused from its Content-Length,
        // before a byte of it is read (axum's own 2 MB limit still bounds chunked bodies).
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ));
    Router::new()
        .merge(ops::router(&state))
        .merge(accounts::router(&state))
        .merge(ticket_buyers::router(&state))
        .merge(catalog::router(&state))
        .merge(admin::router(&state))
        .merge(mq::router(&state))
        .merge(admin_orders::router(&state))
        .merge(admin_users::router(&state))
        .merge(reconcile::router(&state))
        .merge(ws_admin::router(&state))
        .merge(web::router())
        .merge(orders::router(&state))
        .merge(payments::router(&state))
        .merge(ws::router(&state))
        .route(
            "/api-docs/openapi.json",
            axum::routing::get(openapi::openapi_json),
        )
        .fallback(error::fallback)
        .layer(layers)
        .with_state(state)
}

/// Counts requests and records latency per matched route and status.
async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method()).to_owned();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The metrics' `method` label: the standard methods by name, anything else `other`, so a
/// client inventing methods cannot grow the label set without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// Serves until `shutdown` completes, then lets in-flight requests finish and closes open
/// WebSockets (1001), giving them `ws.shutdown_grace_ms`: hyper forgets upgraded connections,
/// so the server's own graceful shutdown would not wait for them.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = state.realtime.connections.clone();
    let grace = std::time::Duration::from_millis(state.settings.ws.shutdown_grace_ms);
    let closing = connections.clone();
    let shutdown = async move {
        shutdown.await;
        // Sockets start closing while in-flight requests finish.
        tokio::spawn(async move { closing.close_all(grace).await });
    };
    let limits = state.settings.server.limits();
    let served = server::accept_loop(listener, router(state), limits, shutdown).await;
    connections.close_all(grace).await;
    served
}

#[cfg(test)]
mod tests {
    use super::method_label;
    use axum::http::Method;

    #[test]
    fn invented_methods_share_one_metric_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        let invented = Method::from_bytes(b"FROBNICATE").unwrap();
        assert_eq!(method_label(&invented), "other");
    }
}
