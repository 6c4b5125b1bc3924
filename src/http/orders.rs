//! Orders (API.md, "Orders"): placing with `Idempotency-Key`, reading one (owner or admin, 404
//! for anyone else), the caller's list, and cancelling.

use super::error::ApiError;
use super::extractor::{ApiQuery, AuthUser, bearer, parse_json};
use super::limits;
use super::{AppState, Listing};
use crate::actors::{ActorError, Transition};
use crate::domain::inventory::{ChangeKind, InventoryError};
use crate::ordering::{OrderError, OrderRequest};
use crate::store::idempotency::{Gate, MarkerLease, OrderGate, Owner};
use crate::store::orders::{OrderPlaced, OrderSummary, OrderView};
use crate::store::{StoreError, idempotency, orders, users::role};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Outer bound of a key's in-flight marker, however its leases went (a lapsed lease lets a retry
/// in long before).
const IN_FLIGHT_SECS: i64 = 60;

/// Routes of this module, with the `account` rate limit (placing takes its tokens in the
/// order gate's script instead of the middleware's, to save a round trip).
pub fn router(state: &AppState) -> Router<AppState> {
    let limited = || middleware::from_fn_with_state(state.clone(), limits::account);
    Router::new()
        .route(
            "/api/v1/orders",
            post(place).merge(get(list).route_layer(limited())),
        )
        .merge(
            Router::new()
                .route("/api/v1/orders/{order_no}", get(one))
                .route("/api/v1/orders/{order_no}/cancel", post(cancel))
                .route_layer(limited()),
        )
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        use OrderError::*;
        match e {
            Invalid(field, reason) => ApiError::validation(field, reason),
            NoProgram => ApiError::not_found("program"),
            ShowStarted => ApiError::new(StatusCode::CONFLICT, "SHOW_STARTED", e.to_string()),
            NotOnSale(at) => ApiError::new(
                StatusCode::CONFLICT,
                "NOT_ON_SALE",
                format!("sales open at {at}"),
            ),
            Limit(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "LIMIT_EXCEEDED", message)
            }
            KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                e.to_string(),
            ),
            Actor(a) => actor_error(a),
            Store(s) => s.into(),
            NotDurable => ApiError::unavailable("ORDER_NOT_DURABLE", e.to_string()),
        }
    }
}

fn actor_error(e: ActorError) -> ApiError {
    match e {
        ActorError::Inventory(InventoryError::SeatUnavailable(ids)) => ApiError::new(
            StatusCode::CONFLICT,
            "SEAT_UNAVAILABLE",
            "a chosen seat is taken",
        )
        .with_details(json!({ "seat_ids": ids })),
        ActorError::Inventory(InventoryError::SoldOut { remaining }) => ApiError::new(
            StatusCode::CONFLICT,
            "SOLD_OUT",
            format!("only {remaining} left"),
        )
        .with_details(json!({ "remaining": remaining })),
        ActorError::Inventory(InventoryError::PriceMismatch {
            seat_id,
            actual_cents,
        }) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "PRICE_MISMATCH",
            "the price changed; reload the seat map",
        )
        .with_details(json!({ "seat_id": seat_id, "price_cents": actual_cents })),
        ActorError::Inventory(InventoryError::UnknownSeat(id)) => {
            ApiError::validation("seats", format!("unknown seat {id}"))
        }
        ActorError::Inventory(InventoryError::Busy(_)) => ApiError::new(
            StatusCode::CONFLICT,
            "ORDER_BUSY",
            "the order is changing; retry",
        )
        .retry_after(1),
        ActorError::Inventory(other) => {
            ApiError::new(StatusCode::CONFLICT, "INVALID_STATE", other.to_string())
        }
        ActorError::Overloaded => {
            ApiError::unavailable("OVERLOADED", "too many requests for this category; retry")
        }
        ActorError::NotFound(_) => ApiError::not_found("ticket category"),
        other => ApiError::unavailable("INVENTORY_UNAVAILABLE", other.to_string()),
    }
}

/// A stored or fresh answer, sent byte for byte.
fn raw_json(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `POST /api/v1/orders`. The hot path: the token is verified once, and one Redis script (the
/// order gate) checks sign-out, rate limits and the key's marker together; program rules come
/// from the in-process catalog cache; the account limit, ticket buyers and a stored answer are
/// checked by the writer for the whole batch. Postgres is asked for a stored answer here only
/// when the key's marker says one exists.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", request_body = OrderRequest,
    params(("Idempotency-Key" = String, Header, description = "Required; same key + same body replays the answer")),
    responses((status = 201, description = "The order, pending payment", body = OrderPlaced), (status = 409, description = "Seat taken, sold out, key in flight"),
        (status = 422, description = "Limits, price mismatch, key reused with another body")))]
pub async fn place(
    State(st): State<AppState>,
    ip: limits::ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let claims = verified_claims(&st, &headers)?;
    let user_id = claims.sub;
    let hash = Sha256::digest(&body).to_vec();
    let owner = Owner::unique();
    let gate = OrderGate {
        revoked_key: st.sessions.revoked_key(&claims.jti),
        stamp_key: st.sessions.stamp_key(user_id),
        issued_at_ms: claims.iat_ms,
        user_id,
        key: &key,
        in_flight_secs: IN_FLIGHT_SECS,
        owner: &owner,
        lease_ms: st.settings.orders.in_flight_lease_ms,
        buckets: limits::account_buckets(&st, &ip, user_id),
    };
    let redis = &st.stores.redis;
    match idempotency::open_order_gate(redis, &gate).await? {
        Gate::Open => {}
        Gate::Answered => {
            if let Some(answer) = stored_answer(&st, user_id, &key, &hash).await? {
                return Ok(answer);
            }
            let lease_ms = st.settings.orders.in_flight_lease_ms;
            idempotency::mark_busy(redis, user_id, &key, &owner, lease_ms, IN_FLIGHT_SECS).await?;
        }
        Gate::TakenOver => {
            if let Some(answer) = stored_answer(&st, user_id, &key, &hash).await? {
                finish(&st, user_id, &key, &owner, true).await;
                return Ok(answer);
            }
        }
        Gate::SignedOut => return Err(ApiError::unauthenticated("the token was signed out")),
        Gate::RateLimited(wait_ms) => return Ok(limits::too_many(wait_ms)),
        Gate::InFlight => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "IN_FLIGHT",
                "a request with this Idempotency-Key is being processed",
            ));
        }
    }
    let placed = place_spawned(&st, user_id, key, owner, body, hash).await?;
    Ok(raw_json(201, placed))
}

/// Ends this request's hold on the key (see [`idempotency::finish`]); a marker left behind
/// lapses with its lease.
async fn finish(st: &AppState, user_id: i64, key: &str, owner: &Owner, answered: bool) {
    let ttl = st.settings.orders.idempotency_ttl_secs as i64;
    let redis = &st.stores.redis;
    if let Err(e) = idempotency::finish(redis, user_id, key, owner, answered, ttl).await {
        tracing::warn!(error = %e, "idempotency marker not updated; its lease lapses on its own");
    }
}

/// The `Idempotency-Key` header, 1–255 characters; 400 otherwise.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=255).contains(&k.len()))
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "IDEMPOTENCY_KEY_REQUIRED",
                "send an Idempotency-Key header (1-255 chars)",
            )
        })
}

/// The bearer token's claims if it is valid and unexpired (sign-out is the gate's question).
fn verified_claims(st: &AppState, headers: &HeaderMap) -> Result<crate::auth::Claims, ApiError> {
    let token = bearer(headers)
        .ok_or_else(|| ApiError::unauthenticated("sign in first (Authorization: Bearer …)"))?;
    st.tokens
        .verify(token)
        .map_err(|_| ApiError::unauthenticated("the token is invalid or expired"))
}

/// The stored answer for the key, replayed byte for byte; 422 if the key came with another
/// body; `None` if the answer is no longer kept.
async fn stored_answer(
    st: &AppState,
    user_id: i64,
    key: &str,
    hash: &[u8],
) -> Result<Option<Response>, ApiError> {
    let ttl = st.settings.orders.idempotency_ttl_secs as f64;
    let Some((stored_hash, status, stored)) =
        idempotency::lookup(&st.stores.pg, user_id, key, ttl).await?
    else {
        return Ok(None);
    };
    if stored_hash != hash {
        return Err(OrderError::KeyReused.into());
    }
    Ok(Some(raw_json(status, stored)))
}

/// Parses the body and places the order on its own task, holding the key's lease meanwhile and
/// finishing the key's marker afterwards: a client hanging up must abandon neither reserved
/// seats halfway nor the key (a lease nobody renews would let a retry in while the order runs).
async fn place_spawned(
    st: &AppState,
    user_id: i64,
    key: String,
    owner: Owner,
    body: Bytes,
    hash: Vec<u8>,
) -> Result<Vec<u8>, ApiError> {
    let st = st.clone();
    tokio::spawn(async move {
        let lease_ms = st.settings.orders.in_flight_lease_ms;
        let lease = MarkerLease::start(st.stores.redis.clone(), user_id, &key, &owner, lease_ms);
        let placed = match parse_json::<OrderRequest>(&body) {
            Ok(req) => (st.ordering.place(user_id, &req, &key, hash).await).map_err(ApiError::from),
            Err(e) => Err(e),
        };
        drop(lease);
        finish(&st, user_id, &key, &owner, placed.is_ok()).await;
        placed
    })
    .await
    .map_err(ApiError::internal)?
}

/// The order if the caller may see it (owner or admin); 404 otherwise.
pub(crate) async fn visible_order(
    st: &AppState,
    user: &AuthUser,
    order_no: &str,
) -> Result<orders::OrderView, ApiError> {
    let number: i64 = order_no.parse().map_err(|_| ApiError::not_found("order"))?;
    let order = orders::find(&st.stores.pg, number)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    if order.user_id != user.id() && !user.0.has_role(role::ADMIN) {
        return Err(ApiError::not_found("order"));
    }
    Ok(order)
}

/// `GET /api/v1/orders/{order_no}`.
#[utoipa::path(get, path = "/api/v1/orders/{order_no}", tag = "orders",
    params(("order_no" = String, Path, description = "Order number")),
    responses((status = 200, description = "The order", body = OrderView), (status = 404, description = "No such order of the caller")))]
pub async fn one(
    State(st): State<AppState>,
    user: AuthUser,
    Path(order_no): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    Ok(Json(visible_order(&st, &user, &order_no).await?))
}

/// Filters of the caller's order list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    status: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
}

/// `GET /api/v1/orders`.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", params(ListQuery),
    responses((status = 200, description = "The caller's orders, newest first", body = Listing<OrderSummary>)))]
pub async fn list(
    State(st): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Listing<OrderSummary>>, ApiError> {
    let (page, per_page) = (
        q.page.unwrap_or(1).max(1),
        q.per_page.unwrap_or(20).clamp(1, 100),
    );
    let (items, total) = orders::list_for_user(
        &st.stores.pg,
        user.id(),
        q.status.as_deref(),
        page,
        per_page,
    )
    .await?;
    Ok(Json(Listing {
        items,
        total,
        page,
        per_page,
    }))
}

/// `POST /api/v1/orders/{order_no}/cancel`: seats go back at once; repeating it is harmless.
#[utoipa::path(post, path = "/api/v1/orders/{order_no}/cancel", tag = "orders",
    params(("order_no" = String, Path, description = "Order number")),
    responses((status = 200, description = "The order, cancelled", body = OrderView), (status = 404, description = "No such order of the caller"),
        (status = 409, description = "Paid, expired or refunded orders cannot be cancelled")))]
pub async fn cancel(
    State(st): State<AppState>,
    user: AuthUser,
    Path(order_no): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let order = visible_order(&st, &user, &order_no).await?;
    match order.head.status.as_str() {
        "cancelled" => return Ok(Json(order)),
        "pending_payment" => {}
        other => return Err(not_cancellable(other)),
    }
    let number: i64 = order.head.order_no.parse().map_err(ApiError::internal)?;
    // The connection goes back to the pool before any actor call: a release waits on the
    // writer, and a handler must never pin a pooled connection while it waits.
    let categories = {
        let client = st.stores.pg.get().await.map_err(StoreError::from)?;
        orders::categories_of(&client, number).await?
    };
    release_in(&st, &categories, number).await?;
    let mut after = visible_order(&st, &user, &order.head.order_no).await?;
    if after.head.status == "pending_payment" {
        // Postgres still has the order live, so an actor did not know it: memory diverged.
        // Reload those categories from Postgres and release once more.
        tracing::error!(
            order_no = number,
            "cancel found an actor unaware of a live order; reloading"
        );
        for category in &categories {
            st.supervisor.unload(*category).await;
        }
        release_in(&st, &categories, number).await?;
        after = visible_order(&st, &user, &order.head.order_no).await?;
    }
    // The order may have expired or been paid while we released it: the cancel did not
    // happen then, and saying 200 would claim it had.
    match after.head.status.as_str() {
        "cancelled" => Ok(Json(after)),
        "pending_payment" => Err(ApiError::unavailable(
            "INVENTORY_UNAVAILABLE",
            "the order could not be released; retry",
        )),
        other => Err(not_cancellable(other)),
    }
}

/// 409 `NOT_CANCELLABLE`: the order is `status` (paid, expired, refunded), not live.
fn not_cancellable(status: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "NOT_CANCELLABLE",
        format!("a {status} order cannot be cancelled"),
    )
}

/// Releases the order's tickets in each category through its actor.
async fn release_in(st: &AppState, categories: &[i64], order_no: i64) -> Result<(), ApiError> {
    for category in categories {
        let release = Transition {
            kind: ChangeKind::Release,
            order_no,
        };
        st.supervisor
            .transition(*category, release)
            .await
            .map_err(actor_error)?;
    }
    Ok(())
}
