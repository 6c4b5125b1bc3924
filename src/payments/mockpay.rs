//! `mockpay`: the built-in payment provider's wire format and our client for it.
//!
//! The provider itself ([`crate::mockpay`]) is a process of its own, an external party: its own
//! trade book, checkout page, signed asynchronous callbacks with retries, trade query and refund
//! API. This module is all our side knows of it: JSON over HTTP and HMAC-SHA256 signatures keyed
//! with `secrets.payment_signing_key` — ours over every merchant call (method, path, timestamp
//! and body, so a call cannot be replayed elsewhere or later), the provider's over the exact
//! callback body.

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
/// Header carrying the hex HMAC-SHA256 of a callback body, or of a merchant call
/// ([`sign_request`]).
pub const SIGNATURE_HEADER: &str = "mockpay-signature";
/// Header naming the merchant of a signed call.
pub const MERCHANT_HEADER: &str = "mockpay-merchant";
/// Header carrying a signed call's Unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "mockpay-timestamp";
/// Trade status before the buyer pays.
pub const WAITING: &str = "WAIT_BUYER_PAY";
/// Trade status once paid.
pub const PAID: &str = "TRADE_SUCCESS";
/// Trade status once refunded.
pub const REFUNDED: &str = "REFUNDED";

/// `POST /mockpay/api/trades`. Unknown fields are refused: callbacks go where the provider's
/// configuration says, so a `notify_url` here is an error, not something quietly ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTrade {
    /// The merchant's bill id.
    pub out_trade_no: String,
    /// Amount in minor units.
    pub total_amount_cents: i64,
    /// Shown on the checkout page.
    pub subject: String,
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
#[serde(deny_unknown_fields)]
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

/// Hex HMAC-SHA256 of a merchant call: method, path, timestamp and body, newline-separated.
/// The method and path bind the signature to one operation on one resource, the timestamp lets
/// the provider refuse replays outside its window.
pub fn sign_request(key: &SecretString, call: &SignedCall<'_>) -> String {
    sign(key, &call.signed_bytes())
}

/// Whether `signature_hex` is the call's signature (compared in constant time).
pub fn request_signature_valid(
    key: &SecretString,
    call: &SignedCall<'_>,
    signature_hex: &str,
) -> bool {
    signature_valid(key, &call.signed_bytes(), signature_hex)
}

/// What a merchant call's signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedCall<'a> {
    /// `GET`, `POST`.
    pub method: &'a str,
    /// The URL's path, as sent (no query).
    pub path: &'a str,
    /// Unix time in seconds, as in [`TIMESTAMP_HEADER`].
    pub timestamp: i64,
    /// The exact body bytes (empty for a GET).
    pub body: &'a [u8],
}

impl SignedCall<'_> {
    fn signed_bytes(&self) -> Vec<u8> {
        let head = format!("{}\n{}\n{}\n", self.method, self.path, self.timestamp);
        [head.as_bytes(), self.body].concat()
    }
}

fn mac(key: &SecretString, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this never fails.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    mac
}

/// Our client of the provider's API: every call signed as merchant `merchant_id`.
pub struct MockpayClient {
    http: reqwest::Client,
    base_url: String,
    merchant_id: String,
    key: SecretString,
}

impl MockpayClient {
    /// A client of the provider at `base_url`, signing calls and verifying callbacks with `key`.
    pub fn new(base_url: &str, merchant_id: &str, key: SecretString) -> Self {
        let http = reqwest::Client::builder()
            // A provider that does not answer must not hold a buyer's request for long.
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        MockpayClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            merchant_id: merchant_id.to_string(),
            key,
        }
    }

    /// Sends a signed call: `body` as JSON for a POST, nothing for a GET.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, ProviderError> {
        let url = reqwest::Url::parse(&format!("{}{path}", self.base_url)).map_err(unreadable)?;
        let timestamp = chrono::Utc::now().timestamp();
        let call = SignedCall {
            method: method.as_str(),
            path: url.path(),
            timestamp,
            body: &body,
        };
        let signature = sign_request(&self.key, &call);
        let mut request = self
            .http
            .request(method.clone(), url)
            .header(MERCHANT_HEADER, &self.merchant_id)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature);
        if method != reqwest::Method::GET {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        request.send().await.map_err(unreachable)
    }

    async fn post<T: Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<reqwest::Response, ProviderError> {
        let body = serde_json::to_vec(body).map_err(unreadable)?;
        accepted(self.call(reqwest::Method::POST, path, body).await?).await
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
            let path = format!("/mockpay/api/trades/{out_trade_no}");
            let response = self.call(reqwest::Method::GET, &path, Vec::new()).await?;
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

    #[test]
    fn a_call_signature_covers_method_path_time_and_body() {
        let key = SecretString::from("k1");
        let call = SignedCall {
            method: "POST",
            path: "/mockpay/api/refunds",
            timestamp: 1_700_000_000,
            body: b"{}",
        };
        let sig = sign_request(&key, &call);
        assert!(request_signature_valid(&key, &call, &sig));
        let variants = [
            SignedCall {
                method: "GET",
                ..call
            },
            SignedCall {
                path: "/mockpay/api/trades",
                ..call
            },
            SignedCall {
                timestamp: 1_700_000_001,
                ..call
            },
            SignedCall {
                body: b"{ }",
                ..call
            },
        ];
        for other in variants {
            assert!(!request_signature_valid(&key, &other, &sig), "{other:?}");
        }
    }
}
