//! The provider's two gates: a token bucket per client address on every route, and the
//! merchant signature on every API call.

use super::{MAX_BODY_BYTES, Provider};
use crate::http::error::ApiError;
use crate::http::limits::{bucket_of, too_many};
use crate::payments::mockpay::{
    MERCHANT_HEADER, SIGNATURE_HEADER, SignedCall, TIMESTAMP_HEADER, request_signature_valid,
};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

/// Takes a token from the caller's bucket (`payments.mockpay.rate_limit`); 429 with
/// `Retry-After` when it is empty. As on our own routes, a Redis failure lets the call through
/// (logged): the limiter must not become the outage.
pub async fn rate_limited(State(p): State<Provider>, req: Request, next: Next) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| bucket_of(c.0.ip()));
    let bucket = format!("mockpay:ip:{client}");
    match p.limiter.take(&bucket, p.settings.rate_limit).await {
        Ok(None) => next.run(req).await,
        Ok(Some(wait_ms)) => too_many(wait_ms),
        Err(e) => {
            tracing::warn!(error = %e, bucket, "mockpay: rate limiter unavailable; call let through");
            next.run(req).await
        }
    }
}

/// Lets a merchant API call through only when it is signed by the known merchant, within the
/// time window; 401 `BAD_SIGNATURE` otherwise. The body is read here (bounded) because the
/// signature covers it, and handed on unchanged.
pub async fn merchant_only(State(p): State<Provider>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "body too large",
            )
            .into_response();
        }
    };
    let path = parts.uri.path();
    if let Err(reason) = verify(&p, &parts.headers, parts.method.as_str(), path, &body) {
        tracing::warn!(path, reason, "mockpay: merchant call refused");
        return ApiError::new(StatusCode::UNAUTHORIZED, "BAD_SIGNATURE", reason).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// Why a call is not the merchant's, if it is not.
fn verify(
    p: &Provider,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(), &'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(merchant), Some(timestamp), Some(signature)) = (
        header(MERCHANT_HEADER),
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
    ) else {
        return Err(
            "unsigned call: mockpay-merchant, mockpay-timestamp and mockpay-signature are required",
        );
    };
    if merchant != p.merchant.id {
        return Err("unknown merchant");
    }
    let timestamp: i64 = timestamp.parse().map_err(|_| "bad timestamp")?;
    let window = i64::try_from(p.settings.signature_window_secs).unwrap_or(i64::MAX);
    if chrono::Utc::now().timestamp().abs_diff(timestamp) > window.unsigned_abs() {
        return Err("timestamp outside the signature window");
    }
    let call = SignedCall {
        method,
        path,
        timestamp,
        body,
    };
    if !request_signature_valid(&p.merchant.key, &call, signature) {
        return Err("signature does not verify");
    }
    Ok(())
}
