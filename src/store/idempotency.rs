//! `Idempotency-Key` bookkeeping. The durable record (key, request hash, response) is written by
//! the order's own transaction ([`super::orders::insert_order_in`]); while a request is being
//! processed a short-lived Redis marker makes a second request with the same key a 409 on every
//! node. If the marker is lost, the primary key of `idempotency_keys` still allows one order.

use super::redis::redis_error;
use super::{PgPool, RedisStore, StoreError};
use fred::prelude::*;

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

/// Marks (user, key) as in flight for `ttl_secs`; false if it already was.
pub async fn begin(
    redis: &RedisStore,
    user_id: i64,
    key: &str,
    ttl_secs: i64,
) -> Result<bool, StoreError> {
    let name = redis.key(&format!("idempotency:{user_id}:{key}"));
    let set: Option<String> = redis
        .client()
        .set(
            name,
            "1",
            Some(Expiration::EX(ttl_secs)),
            Some(SetOptions::NX),
            false,
        )
        .await
        .map_err(redis_error)?;
    Ok(set.is_some())
}

/// Clears the in-flight marker.
pub async fn end(redis: &RedisStore, user_id: i64, key: &str) -> Result<(), StoreError> {
    let name = redis.key(&format!("idempotency:{user_id}:{key}"));
    redis.client().del::<(), _>(name).await.map_err(redis_error)
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
