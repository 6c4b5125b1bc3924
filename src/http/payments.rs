//! Paying and refunding orders (API.md, "Orders"): open a payment, the provider's signed
//! callback, pay-check (ask the provider when a callback was lost) and refund. The order-scoped
//! routes load the order as the caller may see it (owner or admin; 404 otherwise).

use super::AppState;
use super::error::ApiError;
use super::extractor::{ApiJson, AuthUser};
use super::limits;
use super::orders::visible_order;
use crate::payments::{Payable, PaymentError};
use crate::store::orders::OrderView;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router, middleware};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// Buyer routes (with the `account` rate limit) and the provider's notify route (with the
/// per-address `notify` bucket: it is public, and each call costs an HMAC and a transaction).
pub fn router(state: &AppState) -> Router<AppState> {
    let buyer = Router::new()
        .route("/api/v1/orders/{order_no}/payments", post(start))
        .route("/api/v1/orders/{order_no}/pay-check", post(pay_check))
        .route("/api/v1/orders/{order_no}/refund", post(refund))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limits::account,
        ));
    let notify = Router::new()
        .route("/api/v1/payments/notify/{channel}", post(notify))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limits::notify,
        ));
    buyer.merge(notify)
}

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        use PaymentError::*;
        let message = e.to_string();
        match e {
            UnknownChannel(_) => ApiError::validation("channel", message),
            NotPayable(_) => ApiError::new(StatusCode::CONFLICT, "NOT_PAYABLE", message),
            NotFound => ApiError::not_found("payment"),
            BadSignature => ApiError::new(StatusCode::UNAUTHORIZED, "BAD_SIGNATURE", message),
            AmountMismatch { expected, got } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "AMOUNT_MISMATCH", message)
                    .with_details(json!({ "expected_cents": expected, "amount_cents": got }))
            }
            NotRefundable(_) => ApiError::new(StatusCode::CONFLICT, "NOT_REFUNDABLE", message),
            ShowStarted => ApiError::new(StatusCode::CONFLICT, "SHOW_STARTED", message),
            Provider(_) => ApiError::unavailable("PAYMENT_PROVIDER_UNAVAILABLE", message),
            Store(s) => s.into(),
        }
    }
}

fn order_number(order: &OrderView) -> Result<i64, ApiError> {
    order.head.order_no.parse().map_err(ApiError::internal)
}

/// Body of `POST /api/v1/orders/{order_no}/payments`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct StartPayment {
    /// Provider channel, e.g. `mockpay`.
    channel: String,
}

/// 201 of `POST /api/v1/orders/{order_no}/payments`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentStarted {
    /// The bill.
    payment_id: Uuid,
    /// Where the buyer pays (the provider's checkout page).
    pay_url: String,
}

/// The answer the provider expects to a notice it may stop resending.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NoticeAccepted {
    /// Always `success`.
    result: &'static str,
}

/// `POST /api/v1/orders/{order_no}/payments`: a bill for the order's total and the provider's
/// checkout URL — 201 for a new bill, 200 with the same bill while the order has one open on
/// the channel (pressing "pay" again opens no second trade).
#[utoipa::path(post, path = "/api/v1/orders/{order_no}/payments", tag = "payments", request_body = StartPayment,
    params(("order_no" = String, Path, description = "Order number")),
    responses((status = 201, description = "A new bill and where to pay it", body = PaymentStarted),
        (status = 200, description = "The order's bill already open on this channel", body = PaymentStarted),
        (status = 404, description = "No such order of the caller"),
        (status = 409, description = "The order is not pending payment (NOT_PAYABLE)")))]
pub async fn start(
    State(st): State<AppState>,
    user: AuthUser,
    Path(order_no): Path<String>,
    ApiJson(body): ApiJson<StartPayment>,
) -> Result<(StatusCode, Json<PaymentStarted>), ApiError> {
    let order = visible_order(&st, &user, &order_no).await?;
    let payable = Payable {
        order_no: order_number(&order)?,
        status: order.head.status,
        total_cents: order.head.total_cents,
        expires_at: order.head.expires_at,
    };
    let now = st.ordering.clock.now();
    let started = st.payments.start(&payable, &body.channel, now).await?;
    let status = if started.new_bill {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let answer = PaymentStarted {
        payment_id: started.payment_id,
        pay_url: started.pay_url,
    };
    Ok((status, Json(answer)))
}

/// `POST /api/v1/payments/notify/{channel}`: the provider's asynchronous callback. A bad
/// signature is a 401 and changes nothing; a repeated notice changes nothing either; more than
/// the `rate_limit.notify` bucket allows from one address is a 429 (the provider retries).
#[utoipa::path(post, path = "/api/v1/payments/notify/{channel}", tag = "payments",
    request_body(content = String, description = "The provider's signed notice, verbatim"),
    params(("channel" = String, Path, description = "Provider channel")),
    responses((status = 200, description = "Applied (or applied before)", body = NoticeAccepted), (status = 401, description = "Bad signature"),
        (status = 429, description = "Too many notices from this address (RATE_LIMITED)"),
        (status = 422, description = "Amount differs from the bill")))]
pub async fn notify(
    State(st): State<AppState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<NoticeAccepted>, ApiError> {
    st.payments.notified(&channel, &headers, &body).await?;
    Ok(Json(NoticeAccepted { result: "success" }))
}

/// `POST /api/v1/orders/{order_no}/pay-check`: asks the provider, applies what it says and
/// returns the order.
#[utoipa::path(post, path = "/api/v1/orders/{order_no}/pay-check", tag = "payments",
    params(("order_no" = String, Path, description = "Order number")),
    responses((status = 200, description = "The order after reconciling", body = OrderView), (status = 404, description = "No such order of the caller")))]
pub async fn pay_check(
    State(st): State<AppState>,
    user: AuthUser,
    Path(order_no): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let order = visible_order(&st, &user, &order_no).await?;
    st.payments.check(order_number(&order)?).await?;
    Ok(Json(visible_order(&st, &user, &order_no).await?))
}

/// `POST /api/v1/orders/{order_no}/refund`: a paid order before its show; seats return at once
/// and the money goes back through the provider. Repeating it is harmless.
#[utoipa::path(post, path = "/api/v1/orders/{order_no}/refund", tag = "payments",
    params(("order_no" = String, Path, description = "Order number")),
    responses((status = 200, description = "The order, refunded", body = OrderView), (status = 404, description = "No such order of the caller"),
        (status = 409, description = "Not paid (NOT_REFUNDABLE) or the show has started (SHOW_STARTED)")))]
pub async fn refund(
    State(st): State<AppState>,
    user: AuthUser,
    Path(order_no): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let order = visible_order(&st, &user, &order_no).await?;
    st.payments.refund(order_number(&order)?).await?;
    Ok(Json(visible_order(&st, &user, &order_no).await?))
}
