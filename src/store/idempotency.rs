//! `Idempotency-Key` bookkeeping. The durable record (key, request hash, response) is written by
//! the order's own transaction ([`super::orders::insert_order_in`]); while a request is being
//! processed a short-lived Redis marker makes a second request with the same key a 409 on every
//! node. If the marker is lost, the primary key of `idempotency_keys` still allows one order.

use super::redis::redis_error;
use super::{PgPool, RedisStore, StoreError};
use fred::prelude::*;

/// A stored answer: request hash, status and body bytes.
pub type Stored = (Vec<u8>, u16, Vec<u8>);

/// The stored answer for (user, key), if the request completed.
pub async fn lookup(pool: &PgPool, user_id: i64, key: &str) -> Result<Option<Stored>, StoreError> {
    let client = pool.get().await?;
    // Every order asks this first; prepared once per pooled connection.
    let statement = client
        .prepare_cached(
            "SELECT request_hash, response_status, response_body FROM idempotency_keys
             WHERE user_id = $1 AND idem_key = $2 AND created_at > now() - interval '24 hours'",
        )
        .await?;
    let row = client.query_opt(&statement, &[&user_id, &key]).await?;
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
