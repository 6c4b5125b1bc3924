//! The mock payment provider as a third party of its own (API.md, "Mock payment provider"):
//! `boxoffice mockpay` runs it as a separate process on its own port, and the production server
//! never serves it. It keeps its own trade book (`store::mockpay_trades`), shows a checkout
//! page, sends signed callbacks to the one notify URL its configuration names for its merchant,
//! and answers a trade query and a refund API to that merchant only.
//!
//! Its defences are those a real provider has, because the earlier in-server version had none:
//! every merchant API call must be signed ([`guard::merchant_only`], 401 otherwise), a caller
//! cannot say where callbacks go (that made it a request forger and a signing oracle), inputs
//! are bounded (422), and every route has a per-client token bucket (429).

mod guard;
mod routes;

use crate::config::{MockpaySettings, Settings};
use crate::http::error;
use crate::store::RedisStore;
use crate::store::mockpay_trades::TradeBook;
use crate::store::rate_limit::RateLimiter;
use axum::Router;
use axum::middleware;
use axum::routing::{get, post};
use secrecy::SecretString;
use std::future::Future;
use std::time::Duration;

/// The provider: its book, its HTTP client for callbacks, the merchant it serves and its
/// limits; cheap to clone (handles only).
#[derive(Clone)]
pub struct Provider {
    book: TradeBook,
    http: reqwest::Client,
    limiter: RateLimiter,
    merchant: Merchant,
    settings: MockpaySettings,
    base_url: String,
}

/// The one merchant this provider knows: its id, the key its calls are signed with (ours,
/// `secrets.payment_signing_key`) and where its callbacks go.
#[derive(Clone)]
struct Merchant {
    id: String,
    key: SecretString,
    notify_url: String,
}

impl Provider {
    /// The provider over `redis` (its trade book and rate-limit buckets), configured by
    /// `settings` (`payments.mockpay`, the merchant key, the notify URL).
    pub fn new(settings: &Settings, redis: RedisStore) -> Self {
        let m = &settings.payments.mockpay;
        let http = reqwest::Client::builder()
            // One slow merchant answer must not stall the retry schedule.
            .timeout(Duration::from_secs(10))
            // Callbacks go to the configured URL only; a redirect must not take them elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Provider {
            book: TradeBook::new(redis.clone(), m.trade_ttl_secs),
            http,
            limiter: RateLimiter::new(redis),
            merchant: Merchant {
                id: m.merchant_id.clone(),
                key: settings.secrets.payment_signing_key.clone(),
                notify_url: settings.mockpay_notify_url(),
            },
            settings: m.clone(),
            base_url: settings.mockpay_url(),
        }
    }
}

/// Largest body the provider reads: a trade or refund call is a few hundred bytes.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Every provider route: the merchant API behind the signature check, the buyer's checkout
/// pages open to anyone, all of it behind the per-client bucket (outermost, so a flood of bad
/// signatures is cut off before any HMAC is computed).
pub fn router(provider: Provider) -> Router {
    let merchant_api = Router::new()
        .route("/mockpay/api/trades", post(routes::create_trade))
        .route(
            "/mockpay/api/trades/{out_trade_no}",
            get(routes::query_trade),
        )
        .route("/mockpay/api/refunds", post(routes::refund))
        .route_layer(middleware::from_fn_with_state(
            provider.clone(),
            guard::merchant_only,
        ));
    let limited = Router::new()
        .merge(merchant_api)
        .route(
            "/mockpay/checkout/{out_trade_no}",
            get(routes::checkout_page),
        )
        .route(
            "/mockpay/checkout/{out_trade_no}/complete",
            post(routes::complete),
        )
        .route_layer(middleware::from_fn_with_state(
            provider.clone(),
            guard::rate_limited,
        ));
    Router::new()
        .merge(limited)
        .route("/healthz", get(routes::healthz))
        .fallback(error::fallback)
        .layer(middleware::from_fn(error::envelope))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
        .with_state(provider)
}

/// Connects the provider's Redis and serves it on `listener` until `shutdown` resolves. Refuses
/// a production profile: the provider lets anyone "pay" without money.
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        settings.server.environment != crate::config::Environment::Production,
        "refusing to run the mock payment provider with server.environment = \"production\""
    );
    let redis = RedisStore::connect(&settings.redis).await?;
    let provider = Provider::new(&settings, redis);
    tracing::info!(address = %listener.local_addr()?, notify_url = %provider.merchant.notify_url, "mockpay listening");
    let app = router(provider).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("mockpay stopped");
    Ok(())
}
