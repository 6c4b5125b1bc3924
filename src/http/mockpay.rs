//! The mock payment provider (API.md, "Mock payment provider"). This process serves it, but it
//! behaves as an external party: its own trade book (`store::mockpay_trades`), a checkout page,
//! an asynchronous callback signed with the shared key and retried with backoff until the
//! merchant answers 2xx, a trade query and a refund API. Our side (`payments::mockpay`) reaches
//! it over HTTP only, so swapping in a real provider changes no caller.
//!
//! Test switches (`payments.mockpay`): delay, drop or duplicate callbacks.

use super::AppState;
use super::error::ApiError;
use super::extractor::ApiJson;
use crate::config::MockpaySettings;
use crate::payments::mockpay::{
    CreateTrade, RefundCall, RefundDone, SIGNATURE_HEADER, TradeOpened, sign,
};
use crate::store::mockpay_trades::{StoredTrade, TradeBook};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::SecretString;
use std::time::Duration;

/// The provider: its book, its HTTP client for callbacks, its key and switches.
#[derive(Clone)]
pub struct Mockpay {
    book: TradeBook,
    http: reqwest::Client,
    key: SecretString,
    settings: MockpaySettings,
    base_url: String,
}

impl Mockpay {
    /// The provider at `base_url`, signing with `key`.
    pub fn new(
        book: TradeBook,
        key: SecretString,
        settings: MockpaySettings,
        base_url: String,
    ) -> Self {
        let http = reqwest::Client::builder()
            // One slow merchant answer must not stall the retry schedule.
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Mockpay {
            book,
            http,
            key,
            settings,
            base_url,
        }
    }

    /// Sends the paid trade's callback, honouring the test switches.
    async fn notify(self, out_trade_no: String) {
        if self.settings.drop_callbacks {
            tracing::info!(%out_trade_no, "mockpay: callback dropped (test switch)");
            return;
        }
        tokio::time::sleep(Duration::from_millis(self.settings.callback_delay_ms)).await;
        let stored = match self.book.get(&out_trade_no).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return,
            Err(e) => {
                return tracing::warn!(%out_trade_no, error = %e, "mockpay: trade unreadable; no callback");
            }
        };
        let copies = if self.settings.duplicate_callbacks {
            2
        } else {
            1
        };
        let body = callback_body(&stored);
        let signature = sign(&self.key, &body);
        let sends = (0..copies).map(|_| self.deliver(&stored, &body, &signature));
        futures::future::join_all(sends).await;
    }

    /// One callback, retried with doubling waits until the merchant answers 2xx.
    async fn deliver(&self, stored: &StoredTrade, body: &[u8], signature: &str) {
        let out_trade_no = &stored.trade.out_trade_no;
        let mut wait = Duration::from_millis(self.settings.callback_backoff_ms);
        for attempt in 1..=self.settings.callback_attempts {
            let sent = self
                .http
                .post(&stored.notify_url)
                .header(SIGNATURE_HEADER, signature)
                .header(header::CONTENT_TYPE.as_str(), "application/json")
                .body(body.to_vec())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    if let Err(e) = self.book.note_delivery(out_trade_no).await {
                        tracing::warn!(%out_trade_no, error = %e, "mockpay: delivery not counted");
                    }
                    return;
                }
                Ok(r) => {
                    tracing::warn!(%out_trade_no, attempt, status = %r.status(), "mockpay: callback refused")
                }
                Err(e) => {
                    tracing::warn!(%out_trade_no, attempt, error = %e, "mockpay: callback failed")
                }
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        tracing::warn!(%out_trade_no, "mockpay: callback given up");
    }
}

/// The callback body: the trade as the query reports it, minus delivery bookkeeping.
fn callback_body(stored: &StoredTrade) -> Vec<u8> {
    let mut trade = stored.trade.clone();
    trade.callbacks_delivered = 0;
    serde_json::to_vec(&trade).unwrap_or_default()
}

/// The provider's routes (no rate limits: it stands for another company's servers); none
/// when `payments.mockpay.enabled` is off.
pub fn router(state: &AppState) -> Router<AppState> {
    if !state.settings.payments.mockpay.enabled {
        return Router::new();
    }
    Router::new()
        .route("/mockpay/api/trades", post(create_trade))
        .route("/mockpay/api/trades/{out_trade_no}", get(query_trade))
        .route("/mockpay/api/refunds", post(refund))
        .route("/mockpay/checkout/{out_trade_no}", get(checkout_page))
        .route("/mockpay/checkout/{out_trade_no}/complete", post(complete))
}

impl Mockpay {
    /// The trade, or the provider's 404.
    async fn trade(&self, out_trade_no: &str) -> Result<StoredTrade, ApiError> {
        self.book
            .get(out_trade_no)
            .await?
            .ok_or_else(|| ApiError::not_found("trade"))
    }
}

/// `POST /mockpay/api/trades`: opens a trade (idempotent per `out_trade_no`).
async fn create_trade(
    State(st): State<AppState>,
    ApiJson(call): ApiJson<CreateTrade>,
) -> Result<Response, ApiError> {
    if call.total_amount_cents < 0 || call.out_trade_no.is_empty() {
        return Err(ApiError::validation(
            "total_amount_cents",
            "must be ≥ 0 with a trade number",
        ));
    }
    st.mockpay.book.create(&call).await?;
    let pay_url = format!(
        "{}/mockpay/checkout/{}",
        st.mockpay.base_url, call.out_trade_no
    );
    let body = TradeOpened {
        out_trade_no: call.out_trade_no,
        pay_url,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /mockpay/api/trades/{out_trade_no}`: the trade query pay-check uses.
async fn query_trade(
    State(st): State<AppState>,
    Path(out_trade_no): Path<String>,
) -> Result<Json<crate::payments::mockpay::Trade>, ApiError> {
    let stored = st.mockpay.trade(&out_trade_no).await?;
    Ok(Json(stored.trade))
}

/// `POST /mockpay/api/refunds`: refunds a paid trade in full, once per `out_request_no`.
async fn refund(
    State(st): State<AppState>,
    ApiJson(call): ApiJson<RefundCall>,
) -> Result<Json<RefundDone>, ApiError> {
    let stored = st.mockpay.trade(&call.out_trade_no).await?;
    if call.refund_amount_cents != stored.trade.total_amount_cents {
        return Err(ApiError::validation(
            "refund_amount_cents",
            "must equal the trade's amount",
        ));
    }
    let book = &st.mockpay.book;
    if !book
        .refund(
            &call.out_trade_no,
            &call.out_request_no,
            call.refund_amount_cents,
        )
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "TRADE_NOT_REFUNDABLE",
            "only a paid trade can be refunded",
        ));
    }
    tracing::info!(out_trade_no = %call.out_trade_no, reason = %call.reason, "mockpay: trade refunded");
    Ok(Json(RefundDone {
        out_trade_no: call.out_trade_no,
        status: "REFUND_SUCCESS".into(),
    }))
}

/// `GET /mockpay/checkout/{out_trade_no}`: the page a buyer pays on.
async fn checkout_page(
    State(st): State<AppState>,
    Path(out_trade_no): Path<String>,
) -> Result<Html<String>, ApiError> {
    let stored = st.mockpay.trade(&out_trade_no).await?;
    Ok(Html(checkout_html(&stored)))
}

fn checkout_html(stored: &StoredTrade) -> String {
    let t = &stored.trade;
    let amount = format!(
        "{}.{:02}",
        t.total_amount_cents / 100,
        t.total_amount_cents % 100
    );
    let subject = escape(&stored.subject);
    let no = escape(&t.out_trade_no);
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>mockpay checkout</title></head>
<body><h1>mockpay</h1><p>{subject}</p><p>Amount: <strong>{amount}</strong></p>
<p>Status: <span id="status">{status}</span></p>
<button onclick="fetch(location.pathname+'/complete',{{method:'POST'}}).then(r=>r.json()).then(t=>document.getElementById('status').textContent=t.trade_status)">Pay {amount}</button>
<p><small>trade {no}</small></p></body></html>"#,
        status = escape(&t.trade_status),
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `POST /mockpay/checkout/{out_trade_no}/complete`: the buyer pays; the callback follows
/// asynchronously. Paying twice pays once.
async fn complete(
    State(st): State<AppState>,
    Path(out_trade_no): Path<String>,
) -> Result<Json<crate::payments::mockpay::Trade>, ApiError> {
    let trade_no = format!("MP{}", uuid::Uuid::new_v4().simple());
    let paid_at = chrono::Utc::now().to_rfc3339();
    let book = &st.mockpay.book;
    let newly_paid = book
        .pay(&out_trade_no, &trade_no, &paid_at)
        .await?
        .ok_or_else(|| ApiError::not_found("trade"))?;
    if newly_paid {
        tokio::spawn(st.mockpay.clone().notify(out_trade_no.clone()));
    }
    let stored = st.mockpay.trade(&out_trade_no).await?;
    Ok(Json(stored.trade))
}
