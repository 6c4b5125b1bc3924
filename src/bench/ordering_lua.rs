//! The non-durable anchor of `bench ordering`: the Redis-Lua order path boxoffice replaces, served
//! over HTTP in this process so it meets the same clients, request bodies and tokens as the real
//! servers.
//!
//! Per `POST /api/v1/orders` it does what that design does: checks the JWT with the same key as
//! the real servers, then runs ONE Lua script that checks the token was not revoked, claims the
//! `Idempotency-Key` (`SET NX` with a TTL), pops the best free seat of the category from a list
//! loaded before the round, and appends the order to a Redis stream for something else to persist
//! later. Nothing is durable when it answers 201: that is what the anchor shows. It sells one seat
//! per request (the only thing the race asks for); other shapes get 422.

use crate::auth::TokenKeys;
use crate::config::Settings;
use crate::store::PgPool;
use crate::store::redis::RedisStore;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, RwLock};

/// Claims the key, takes a seat, enqueues the order; answers `{status, seat}` where status is the
/// order number, 0 (sold out), -1 (token revoked) or -2 (key already claimed).
///
/// KEYS: revoked-token key, idempotency key, seat list, order stream, order counter.
/// ARGV: user id, ticket buyer id, idempotency TTL (s), category id, program id.
static PLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return {-1, ''} end
         if not redis.call('SET', KEYS[2], 'pending', 'NX', 'EX', ARGV[3]) then return {-2, ''} end
         local seat = redis.call('LPOP', KEYS[3])
         if not seat then
           redis.call('SET', KEYS[2], 'sold_out', 'EX', ARGV[3])
           return {0, ''}
         end
         local no = redis.call('INCR', KEYS[5])
         redis.call('XADD', KEYS[4], '*', 'order_no', no, 'user_id', ARGV[1],
                    'ticket_buyer_id', ARGV[2], 'ticket_category_id', ARGV[4],
                    'program_id', ARGV[5], 'seat', seat)
         redis.call('SET', KEYS[2], no, 'EX', ARGV[3])
         return {no, seat}",
    )
});

/// The Redis-Lua order server on a free port of 127.0.0.1.
pub(super) struct LuaServer {
    /// `http://127.0.0.1:<port>`.
    pub(super) base: String,
    state: Arc<LuaState>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// What the handler needs: Redis under the run's own prefix, the token key, the open sales.
struct LuaState {
    redis: RedisStore,
    tokens: TokenKeys,
    idempotency_ttl_secs: u64,
    payment_window_secs: i64,
    sales: RwLock<HashMap<i64, Sale>>,
}

/// A category on sale: what the answer repeats about it.
#[derive(Clone, Copy)]
struct Sale {
    program_id: i64,
    show_time_id: Option<i64>,
    price_cents: i64,
}

/// The race's request body (the real endpoint's "best available" shape).
#[derive(Deserialize)]
struct OrderBody {
    program_id: i64,
    ticket_buyer_ids: Vec<i64>,
    ticket_category_id: i64,
    quantity: u32,
}

impl LuaServer {
    /// Connects to the configured Redis under `prefix` (every key of the run lives there, so
    /// [`LuaServer::stop`] can delete them all) and starts serving.
    pub(super) async fn start(settings: &Settings, prefix: &str) -> anyhow::Result<LuaServer> {
        let mut redis_settings = settings.redis.clone();
        redis_settings.key_prefix = prefix.to_string();
        let state = Arc::new(LuaState {
            redis: RedisStore::connect(&redis_settings).await?,
            tokens: TokenKeys::new(&settings.secrets.jwt_key, 24 * 3600),
            idempotency_ttl_secs: settings.orders.idempotency_ttl_secs.max(1),
            payment_window_secs: i64::try_from(settings.orders.payment_window_secs)?,
            sales: RwLock::new(HashMap::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        // Like the real servers: no Nagle delay on small answers.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = Router::new()
            .route(
                "/healthz",
                get(|| async { axum::Json(json!({"status": "ok"})) }),
            )
            .route("/api/v1/orders", post(place))
            .with_state(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(LuaServer {
            base,
            state,
            stop,
            task,
        })
    }

    /// Puts `category` on sale: its seats, best first (nearest row, then column), go into the
    /// list the script pops from, as the Redis design loads inventory before a sale opens. Not
    /// measured. Answers the capacity.
    pub(super) async fn open_sale(
        &self,
        pool: &PgPool,
        program: i64,
        category: i64,
    ) -> anyhow::Result<usize> {
        let client = pool.get().await?;
        let tier = client
            .query_one(
                "SELECT show_time_id, price_cents FROM ticket_categories WHERE id = $1",
                &[&category],
            )
            .await?;
        let seats: Vec<String> = client
            .query(
                "SELECT id, row_no, col_no FROM seats WHERE ticket_category_id = $1
                 ORDER BY row_no, col_no",
                &[&category],
            )
            .await?
            .iter()
            .map(|r| {
                format!(
                    "{}:{}:{}",
                    r.get::<_, i64>(0),
                    r.get::<_, i32>(1),
                    r.get::<_, i32>(2)
                )
            })
            .collect();
        let redis = self.state.redis.client();
        let list = self.state.redis.key(&seats_key(category));
        redis.del::<(), _>(&list).await?;
        for chunk in seats.chunks(2_000) {
            redis.rpush::<(), _, _>(&list, chunk.to_vec()).await?;
        }
        let sale = Sale {
            program_id: program,
            show_time_id: tier.get(0),
            price_cents: tier.get(1),
        };
        self.state
            .sales
            .write()
            .map_err(|_| anyhow::anyhow!("sales lock poisoned"))?
            .insert(category, sale);
        Ok(seats.len())
    }

    /// The round's invariants, read back from Redis: the stream holds exactly the acknowledged
    /// orders, no seat is in two of them, never more than capacity, and every seat is either
    /// still in the list or in exactly one order (none lost, none made up).
    pub(super) async fn check(
        &self,
        category: i64,
        capacity: usize,
        acknowledged: u64,
    ) -> anyhow::Result<Vec<String>> {
        let redis = self.state.redis.client();
        let stream = self.state.redis.key(&orders_key(category));
        let entries: Vec<(String, HashMap<String, String>)> =
            redis.xrange_values(&stream, "-", "+", None).await?;
        let left: usize = redis
            .llen(self.state.redis.key(&seats_key(category)))
            .await?;
        let mut seen = HashSet::with_capacity(entries.len());
        let twice = entries
            .iter()
            .filter(|(_, fields)| !fields.get("seat").is_some_and(|s| seen.insert(s.clone())))
            .count();
        let mut v = Vec::new();
        if entries.len() as u64 != acknowledged {
            v.push(format!(
                "{acknowledged} acknowledged, but the stream holds {} orders",
                entries.len()
            ));
        }
        if twice > 0 {
            v.push(format!("{twice} orders repeat a seat or carry none"));
        }
        if entries.len() > capacity {
            v.push(format!(
                "oversold: {} orders of {capacity} seats",
                entries.len()
            ));
        }
        if entries.len() + left != capacity {
            v.push(format!(
                "{} orders + {left} seats left != {capacity} seats",
                entries.len()
            ));
        }
        Ok(v)
    }

    /// Stops serving and deletes every key of the run (best effort, like dropping a scratch
    /// database: the prefix is unique, so leftovers harm no one).
    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        if let Ok(Err(e)) = self.task.await {
            tracing::warn!(error = %e, "redis-lua benchmark server stopped with an error");
        }
        if let Err(e) = delete_prefix(&self.state.redis).await {
            tracing::warn!(error = %e, "redis-lua benchmark keys not deleted");
        }
    }
}

/// The free seats of `category`, best first.
fn seats_key(category: i64) -> String {
    format!("sale:{category}:seats")
}

/// The orders of `category` waiting to be persisted.
fn orders_key(category: i64) -> String {
    format!("sale:{category}:orders")
}

/// Deletes every key under the store's prefix (`SCAN MATCH`, then `UNLINK` page by page).
async fn delete_prefix(redis: &RedisStore) -> anyhow::Result<()> {
    let pattern = redis.key("*");
    let mut cursor = "0".to_string();
    loop {
        let (next, keys): (String, Vec<String>) = redis
            .client()
            .scan_page(cursor, pattern.clone(), Some(1_000), None)
            .await?;
        if !keys.is_empty() {
            redis.client().unlink::<(), _>(keys).await?;
        }
        if next == "0" {
            return Ok(());
        }
        cursor = next;
    }
}

/// `POST /api/v1/orders`: token, body, one script, answer.
async fn place(State(st): State<Arc<LuaState>>, headers: HeaderMap, body: Bytes) -> Response {
    match try_place(&st, &headers, &body).await {
        Ok(resp) | Err(resp) => resp,
    }
}

/// [`place`] with early returns: `Err` carries an error answer.
async fn try_place(st: &LuaState, headers: &HeaderMap, body: &[u8]) -> Result<Response, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "no token"))?;
    let claims = st
        .tokens
        .verify(token)
        .map_err(|e| error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", &e.to_string()))?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "send an Idempotency-Key",
            )
        })?;
    let order: OrderBody = serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION",
            &e.to_string(),
        )
    })?;
    let (Some(&buyer), 1, 1) = (
        order.ticket_buyer_ids.first(),
        order.ticket_buyer_ids.len(),
        order.quantity,
    ) else {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION",
            "this anchor sells one ticket per order",
        ));
    };
    let sale = st
        .sales
        .read()
        .ok()
        .and_then(|s| s.get(&order.ticket_category_id).copied())
        .filter(|s| s.program_id == order.program_id)
        .ok_or_else(|| error(StatusCode::CONFLICT, "NOT_ON_SALE", "not on sale"))?;
    let category = order.ticket_category_id;
    let keys = vec![
        st.redis.key(&format!("sessions:revoked:{}", claims.jti)),
        st.redis.key(&format!("idem:{}:{key}", claims.sub)),
        st.redis.key(&seats_key(category)),
        st.redis.key(&orders_key(category)),
        st.redis.key("order_no"),
    ];
    let args: Vec<Value> = vec![
        claims.sub.into(),
        buyer.into(),
        (st.idempotency_ttl_secs as i64).into(),
        category.into(),
        order.program_id.into(),
    ];
    let (status, seat): (i64, String) = st.redis.script(&PLACE, keys, args).await.map_err(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            &e.to_string(),
        )
    })?;
    match status {
        -1 => Err(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "token revoked",
        )),
        -2 => Err(error(
            StatusCode::CONFLICT,
            "IN_FLIGHT",
            "this Idempotency-Key was used",
        )),
        0 => Err(error(StatusCode::CONFLICT, "SOLD_OUT", "no seats left")),
        order_no => Ok(created(
            order_no,
            &seat,
            buyer,
            category,
            sale,
            st.payment_window_secs,
        )),
    }
}

/// The 201 answer, shaped like the real one (`order_no` as a string, the seat with row and col).
fn created(
    order_no: i64,
    seat: &str,
    buyer: i64,
    category: i64,
    sale: Sale,
    payment_window_secs: i64,
) -> Response {
    let mut parts = seat.split(':').map(|p| p.parse::<i64>().ok());
    let (id, row, col) = (
        parts.next().flatten(),
        parts.next().flatten(),
        parts.next().flatten(),
    );
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(payment_window_secs);
    let body = json!({
        "order_no": order_no.to_string(), "status": "pending_payment", "expires_at": expires_at,
        "total_cents": sale.price_cents, "program_id": sale.program_id,
        "show_time_id": sale.show_time_id,
        "tickets": [{"ticket_buyer_id": buyer, "ticket_category_id": category,
                     "seat": {"id": id, "row": row, "col": col}, "price_cents": sale.price_cents}],
    });
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// The API's error shape, `{"error": {"code", "message", "details"}}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "details": {}}});
    (status, axum::Json(body)).into_response()
}
