//! `mockpay`: the built-in payment provider's wire format and our client for it.
//!
//! The provider itself (`http::mockpay`) behaves like an external party: its own trade book,
//! checkout page, signed asynchronous callbacks with retries, trade query and refund API. This
//! module is all our side knows of it: JSON over HTTP and an HMAC-SHA256 signature, keyed with
//! `secrets.payment_signing_key`, over the exact callback body.

use super::{PaymentProvider, ProviderError, RefundRequest, TradeRequest, TradeState};
use axum::http::HeaderMap;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;

/// The channel name in our API.
pub const CHANNEL: &str = "mockpay";
/// Header carrying the hex HMAC-SHA256 of a callback body.
pub const SIGNATURE_HEADER: &str = "mockpay-signature";
/// Trade status before the buyer pays.
pub const WAITING: &str = "WAIT_BUYER_PAY";
/// Trade status once paid.
pub const PAID: &str = "TRADE_SUCCESS";
/// Trade status once refunded.
pub const REFUNDED: &str = "REFUNDED";

/// `POST /mockpay/api/trades`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateTrade {
    /// The merchant's bill id.
    pub out_trade_no: String,
    /// Amount in minor units.
    pub total_amount_cents: i64,
    /// Shown on the checkout page.
    pub subject: String,
    /// Where callbacks go.
    pub notify_url: String,
}

/// A trade as the provider reports it (trade query answer and callback body).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Trade {
    /// The merchant's bill id.
    pub out_trade_no: String,
    /// The provider's trade number (set when paid).
    pub trade_no: Option<String>,
    /// Amount in minor units.
    pub total_amount_cents: i64,
    /// `WAIT_BUYER_PAY`, `TRADE_SUCCESS` or `REFUNDED`.
    pub trade_status: String,
    /// When the buyer paid (RFC 3339).
    pub paid_at: Option<String>,
    /// Callbacks the merchant acknowledged (2xx), duplicates included.
    #[serde(default)]
    pub callbacks_delivered: u32,
    /// Amount refunded so far.
    #[serde(default)]
    pub refunded_cents: i64,
}

impl Trade {
    /// What our side needs of it. A refunded trade was paid.
    pub fn state(&self) -> TradeState {
        TradeState {
            out_trade_no: self.out_trade_no.clone(),
            trade_no: self.trade_no.clone(),
            amount_cents: self.total_amount_cents,
            paid: self.trade_status == PAID || self.trade_status == REFUNDED,
        }
    }
}

/// The provider's 201 to a trade it opened: the one shape both sides read and write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TradeOpened {
    /// Our trade number, echoed.
    pub out_trade_no: String,
    /// The checkout page the buyer pays on.
    pub pay_url: String,
}

/// The provider's answer to a refund it made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundDone {
    /// Our trade number, echoed.
    pub out_trade_no: String,
    /// Always `REFUND_SUCCESS`.
    pub status: String,
}

/// `POST /mockpay/api/refunds`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundCall {
    /// The trade.
    pub out_trade_no: String,
    /// The merchant's refund id; a repeated id refunds once.
    pub out_request_no: String,
    /// Amount to return (the whole trade, for this provider).
    pub refund_amount_cents: i64,
    /// Why.
    pub reason: String,
}

/// Hex HMAC-SHA256 of `body`.
pub fn sign(key: &SecretString, body: &[u8]) -> String {
    hex::encode(mac(key, body).finalize().into_bytes())
}

/// Whether `signature_hex` is `body`'s signature (compared in constant time).
pub fn signature_valid(key: &SecretString, body: &[u8], signature_hex: &str) -> bool {
    hex::decode(signature_hex).is_ok_and(|sig| mac(key, body).verify_slice(&sig).is_ok())
}

fn mac(key: &SecretString, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this never fails.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    mac
}

/// Our client of the provider's API.
pub struct MockpayClient {
    http: reqwest::Client,
    base_url: String,
    key: SecretString,
}

impl MockpayClient {
    /// A client of the provider at `base_url`, verifying callbacks with `key`.
    pub fn new(base_url: &str, key: SecretString) -> Self {
        let http = reqwest::Client::builder()
            // A provider that does not answer must not hold a buyer's request for long.
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        MockpayClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            key,
        }
    }

    async fn post<T: Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<reqwest::Response, ProviderError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .json(body)
            .send()
            .await
            .map_err(unreachable)?;
        accepted(response).await
    }
}

fn unreachable(e: reqwest::Error) -> ProviderError {
    ProviderError::Unreachable(e.to_string())
}

/// A 2xx answer, or the provider's refusal with its body.
async fn accepted(response: reqwest::Response) -> Result<reqwest::Response, ProviderError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    Err(ProviderError::Refused(text))
}

fn unreadable(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Malformed(e.to_string())
}

impl PaymentProvider for MockpayClient {
    fn create_trade(&self, trade: TradeRequest) -> BoxFuture<'_, Result<String, ProviderError>> {
        Box::pin(async move {
            let call = CreateTrade {
                out_trade_no: trade.out_trade_no,
                total_amount_cents: trade.amount_cents,
                subject: trade.subject,
                notify_url: trade.notify_url,
            };
            let answer: TradeOpened = self
                .post("/mockpay/api/trades", &call)
                .await?
                .json()
                .await
                .map_err(unreadable)?;
            Ok(answer.pay_url)
        })
    }

    fn verify_notice(&self, headers: &HeaderMap, body: &[u8]) -> Result<TradeState, ProviderError> {
        let signature = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(ProviderError::BadSignature)?;
        if !signature_valid(&self.key, body, signature) {
            return Err(ProviderError::BadSignature);
        }
        let trade: Trade = serde_json::from_slice(body).map_err(unreadable)?;
        Ok(trade.state())
    }

    fn query_trade(
        &self,
        out_trade_no: String,
    ) -> BoxFuture<'_, Result<Option<TradeState>, ProviderError>> {
        Box::pin(async move {
            let url = format!("{}/mockpay/api/trades/{out_trade_no}", self.base_url);
            let response = self.http.get(url).send().await.map_err(unreachable)?;
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let trade: Trade = accepted(response).await?.json().await.map_err(unreadable)?;
            Ok(Some(trade.state()))
        })
    }

    fn refund(&self, refund: RefundRequest) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async move {
            let call = RefundCall {
                out_trade_no: refund.out_trade_no,
                out_request_no: refund.out_request_no,
                refund_amount_cents: refund.amount_cents,
                reason: refund.reason,
            };
            self.post("/mockpay/api/refunds", &call).await.map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_key_and_body() {
        let key = SecretString::from("k1");
        let sig = sign(&key, b"{\"a\":1}");
        assert!(signature_valid(&key, b"{\"a\":1}", &sig));
        assert!(!signature_valid(&key, b"{\"a\":2}", &sig));
        assert!(!signature_valid(
            &SecretString::from("k2"),
            b"{\"a\":1}",
            &sig
        ));
        assert!(!signature_valid(&key, b"{\"a\":1}", "not hex"));
    }
}
