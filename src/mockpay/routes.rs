//! The provider's handlers: trade creation, query and refund for the merchant; the checkout page
//! and its "pay" button for the buyer; the signed callback to the merchant's notify URL,
//! retried with backoff until it answers 2xx.
//!
//! Test switches (`payments.mockpay`): delay, drop or duplicate callbacks.

use super::Provider;
use crate::http::error::ApiError;
use crate::http::extractor::ApiJson;
use crate::payments::mockpay::{
    CreateTrade, RefundCall, RefundDone, SIGNATURE_HEADER, Trade, TradeOpened, sign,
};
use crate::store::mockpay_trades::StoredTrade;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use std::time::Duration;

/// Longest checkout subject: it is shown on a page and kept for `trade_ttl_secs`.
const MAX_SUBJECT_CHARS: usize = 128;
/// Longest trade or refund number: they name Redis keys and appear in URLs.
const MAX_NUMBER_CHARS: usize = 64;
/// Longest refund reason: logged, never stored.
const MAX_REASON_CHARS: usize = 128;

impl Provider {
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
        let signature = sign(&self.merchant.key, &body);
        let sends = (0..copies).map(|_| self.deliver(&stored, &body, &signature));
        futures::future::join_all(sends).await;
    }

    /// One callback to the merchant's configured notify URL, retried with doubling waits until
    /// it answers 2xx.
    async fn deliver(&self, stored: &StoredTrade, body: &[u8], signature: &str) {
        let out_trade_no = &stored.trade.out_trade_no;
        let mut wait = Duration::from_millis(self.settings.callback_backoff_ms);
        for attempt in 1..=self.settings.callback_attempts {
            let sent = self
                .http
                .post(&self.merchant.notify_url)
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

    /// The trade, or the provider's 404.
    async fn trade(&self, out_trade_no: &str) -> Result<StoredTrade, ApiError> {
        if !is_number(out_trade_no) {
            return Err(ApiError::not_found("trade"));
        }
        self.book
            .get(out_trade_no)
            .await?
            .ok_or_else(|| ApiError::not_found("trade"))
    }
}

/// The callback body: the trade as the query reports it, minus delivery bookkeeping.
fn callback_body(stored: &StoredTrade) -> Vec<u8> {
    let mut trade = stored.trade.clone();
    trade.callbacks_delivered = 0;
    serde_json::to_vec(&trade).unwrap_or_default()
}

/// A merchant's trade or refund number: 1 to 64 letters, digits, `-` or `_` (our bills are
/// UUIDs). Anything else could not name a Redis key or a URL segment safely.
fn is_number(s: &str) -> bool {
    (1..=MAX_NUMBER_CHARS).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `field` as [`is_number`] wants it, or 422 naming it.
fn check_number(field: &str, value: &str) -> Result<(), ApiError> {
    if is_number(value) {
        return Ok(());
    }
    Err(ApiError::validation(
        field,
        format!("must be 1 to {MAX_NUMBER_CHARS} letters, digits, '-' or '_'"),
    ))
}

/// `field` at most `max` characters, or 422 naming it.
fn check_length(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() <= max {
        return Ok(());
    }
    Err(ApiError::validation(
        field,
        format!("must be at most {max} characters"),
    ))
}

/// A trade the provider is willing to open: bounded number, subject and amount.
fn check_trade(call: &CreateTrade, max_amount_cents: i64) -> Result<(), ApiError> {
    check_number("out_trade_no", &call.out_trade_no)?;
    check_length("subject", &call.subject, MAX_SUBJECT_CHARS)?;
    if !(1..=max_amount_cents).contains(&call.total_amount_cents) {
        return Err(ApiError::validation(
            "total_amount_cents",
            format!("must be between 1 and {max_amount_cents}"),
        ));
    }
    Ok(())
}

/// `GET /healthz`: the process is up (dev/services.sh and tests wait for it).
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `POST /mockpay/api/trades`: opens a trade (idempotent per `out_trade_no`).
pub async fn create_trade(
    State(p): State<Provider>,
    ApiJson(call): ApiJson<CreateTrade>,
) -> Result<Response, ApiError> {
    check_trade(&call, p.settings.max_amount_cents)?;
    p.book.create(&call).await?;
    let pay_url = format!("{}/mockpay/checkout/{}", p.base_url, call.out_trade_no);
    let body = TradeOpened {
        out_trade_no: call.out_trade_no,
        pay_url,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /mockpay/api/trades/{out_trade_no}`: the trade query pay-check uses.
pub async fn query_trade(
    State(p): State<Provider>,
    Path(out_trade_no): Path<String>,
) -> Result<Json<Trade>, ApiError> {
    let stored = p.trade(&out_trade_no).await?;
    Ok(Json(stored.trade))
}

/// `POST /mockpay/api/refunds`: refunds a paid trade in full, once per `out_request_no`.
pub async fn refund(
    State(p): State<Provider>,
    ApiJson(call): ApiJson<RefundCall>,
) -> Result<Json<RefundDone>, ApiError> {
    check_number("out_request_no", &call.out_request_no)?;
    check_length("reason", &call.reason, MAX_REASON_CHARS)?;
    let stored = p.trade(&call.out_trade_no).await?;
    if call.refund_amount_cents != stored.trade.total_amount_cents {
        return Err(ApiError::validation(
            "refund_amount_cents",
            "must equal the trade's amount",
        ));
    }
    let book = &p.book;
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
pub async fn checkout_page(
    State(p): State<Provider>,
    Path(out_trade_no): Path<String>,
) -> Result<Html<String>, ApiError> {
    let stored = p.trade(&out_trade_no).await?;
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
pub async fn complete(
    State(p): State<Provider>,
    Path(out_trade_no): Path<String>,
) -> Result<Json<Trade>, ApiError> {
    if !is_number(&out_trade_no) {
        return Err(ApiError::not_found("trade"));
    }
    let trade_no = format!("MP{}", uuid::Uuid::new_v4().simple());
    let paid_at = chrono::Utc::now().to_rfc3339();
    let newly_paid = p
        .book
        .pay(&out_trade_no, &trade_no, &paid_at)
        .await?
        .ok_or_else(|| ApiError::not_found("trade"))?;
    if newly_paid {
        tokio::spawn(p.clone().notify(out_trade_no.clone()));
    }
    let stored = p.trade(&out_trade_no).await?;
    Ok(Json(stored.trade))
}
