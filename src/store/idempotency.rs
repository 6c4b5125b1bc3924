//! `Idempotency-Key` bookkeeping. The durable record (key, request hash, response) is written by
//! the order's own batch (`super::batch`). A Redis marker per key says where the key stands:
//! `busy` while a request runs (a second request with the key is a 409 on every node), `done`
//! once an answer is stored (only then is Postgres asked for it). If a marker is lost, the
//! writer's check still finds the stored answer and replays it, and the primary key of
//! `idempotency_keys` still allows one order per key.
//!
//! The order gate ([`open_order_gate`]) asks everything a new order needs from Redis in one
//! script, one round trip: the token not signed out, the route group's rate limits, the key's
//! marker.

use super::rate_limit::{TAKE_FUNCTION, bucket_args, bucket_key};
use super::redis::redis_error;
use super::{PgPool, RedisStore, StoreError};
use crate::config::BucketSettings;
use fred::prelude::*;
use fred::types::scripts::Script;
use std::sync::LazyLock;

/// A stored answer: request hash, status and body bytes.
pub type Stored = (Vec<u8>, u16, Vec<u8>);

/// The stored answer for (user, key), if the request completed within the last `ttl_secs`
/// (an older one is forgotten: the key starts a fresh order).
pub async fn lookup(
    pool: &PgPool,
    user_id: i64,
    key: &str,
    ttl_secs: f64,
) -> Result<Option<Stored>, StoreError> {
    let client = pool.get().await?;
    // Every order asks this first; prepared once per pooled connection.
    let statement = client
        .prepare_cached(
            "SELECT request_hash, response_status, response_body FROM idempotency_keys
             WHERE user_id = $1 AND idem_key = $2 AND created_at > now() - make_interval(secs => $3)",
        )
        .await?;
    let row = client
        .query_opt(&statement, &[&user_id, &key, &ttl_secs])
        .await?;
    Ok(row.map(|r| {
        (
            r.get(0),
            r.get::<_, Option<i16>>(1).unwrap_or(0) as u16,
            r.get::<_, Option<Vec<u8>>>(2).unwrap_or_default(),
        )
    }))
}

/// KEYS: the token's revocation marker, the key's marker, then the rate-limit buckets; ARGV:
/// the in-flight marker's lifetime, then (burst, rate) per bucket. Answers 0 (the key is now
/// `busy`: go on), -1 signed out, -2 in flight, -3 answered (look the answer up), or the
/// milliseconds to wait for a rate-limit token.
static ORDER_GATE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(format!(
        "{TAKE_FUNCTION}
         if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
         for i = 3, #KEYS do
             local wait = take(KEYS[i], tonumber(ARGV[2 * i - 4]), tonumber(ARGV[2 * i - 3]))
             if wait > 0 then return wait end
         end
         local marker = redis.call('GET', KEYS[2])
         if marker == 'done' then return -3 end
         if marker then return -2 end
         redis.call('SET', KEYS[2], 'busy', 'EX', ARGV[1])
         return 0"
    ))
});

/// What the order gate found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Go on: the key is marked busy for this request.
    Open,
    /// The token was signed out.
    SignedOut,
    /// A rate-limit bucket is empty; retry after this many milliseconds.
    RateLimited(u64),
    /// Another request with this key is running.
    InFlight,
    /// The key has a stored answer (in Postgres).
    Answered,
}

/// One new order's questions to Redis.
pub struct OrderGate<'a> {
    /// Revocation marker of the caller's token (`SessionGuard::revoked_key`).
    pub revoked_key: String,
    /// The caller.
    pub user_id: i64,
    /// The `Idempotency-Key`.
    pub key: &'a str,
    /// Lifetime of the busy marker, should the request never finish.
    pub in_flight_secs: i64,
    /// Rate-limit buckets to take a token from, by name (empty when limits are off).
    pub buckets: Vec<(String, BucketSettings)>,
}

/// Asks the gate's questions in one script (one round trip).
pub async fn open_order_gate(redis: &RedisStore, gate: &OrderGate<'_>) -> Result<Gate, StoreError> {
    let mut keys = vec![
        gate.revoked_key.clone(),
        marker_key(redis, gate.user_id, gate.key),
    ];
    let mut args = vec![Value::from(gate.in_flight_secs)];
    for (name, bucket) in &gate.buckets {
        keys.push(bucket_key(redis, name));
        args.extend(bucket_args(*bucket));
    }
    let answer: i64 = redis.script(&ORDER_GATE, keys, args).await?;
    Ok(match answer {
        0 => Gate::Open,
        -1 => Gate::SignedOut,
        -2 => Gate::InFlight,
        -3 => Gate::Answered,
        wait => Gate::RateLimited(wait.max(1) as u64),
    })
}

fn marker_key(redis: &RedisStore, user_id: i64, key: &str) -> String {
    redis.key(&format!("idempotency:{user_id}:{key}"))
}

/// Marks (user, key) busy again (its `done` marker outlived the stored answer).
pub async fn mark_busy(
    redis: &RedisStore,
    user_id: i64,
    key: &str,
    ttl_secs: i64,
) -> Result<(), StoreError> {
    let expire = Some(Expiration::EX(ttl_secs));
    redis
        .client()
        .set::<(), _, _>(marker_key(redis, user_id, key), "busy", expire, None, false)
        .await
        .map_err(redis_error)
}

/// Ends the request's hold on the key: `done` for as long as its answer is replayed when one
/// was stored, otherwise the marker goes (the key may be tried again at once).
pub async fn finish(
    redis: &RedisStore,
    user_id: i64,
    key: &str,
    answered: bool,
    ttl_secs: i64,
) -> Result<(), StoreError> {
    let name = marker_key(redis, user_id, key);
    let client = redis.client();
    if answered {
        let expire = Some(Expiration::EX(ttl_secs.max(1)));
        client
            .set::<(), _, _>(name, "done", expire, None, false)
            .await
    } else {
        client.del::<(), _>(name).await
    }
    .map_err(redis_error)
}

/// Deletes up to `batch` stored answers older than `ttl_secs`; answers how many. Small batches
/// keep each statement short, so the purge never holds locks an order needs for long.
pub async fn purge_expired(pool: &PgPool, ttl_secs: f64, batch: i64) -> Result<u64, StoreError> {
    Ok(pool
        .get()
        .await?
        .execute(
            "DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(
                 SELECT ctid FROM idempotency_keys
                 WHERE created_at <= now() - make_interval(secs => $1) LIMIT $2))",
            &[&ttl_secs, &batch],
        )
        .await?)
}
