//! `Idempotency-Key` bookkeeping. The durable record (key, request hash, response) is written by
//! the order's own batch (`super::batch`). A Redis marker per key says where the key stands:
//! `busy` under a renewed lease while a request runs (a second request with the key is a 409 on
//! every node), `done` once an answer is stored (only then is Postgres asked for it). A lease
//! that lapsed means its owner died: the next request takes the key over and asks Postgres
//! whether the dead owner's order committed. If a marker is lost, the writer's check still finds
//! the stored answer and replays it, and the primary key of `idempotency_keys` still allows one
//! order per key.
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

/// KEYS: the token's revocation marker, the key's marker, the holder's sign-out stamp, then the
/// rate-limit buckets; ARGV: the marker's lifetime (s), this request's owner name, its lease
/// (ms), the token's issue time (ms), then (burst, rate) per bucket. Answers 0 (the key is now `busy` under this owner: go on), -1 signed out, -2 in
/// flight under a live lease, -3 answered (look the answer up), -4 taken over from an owner
/// whose lease lapsed (look the answer up; none means go on), or the milliseconds to wait for
/// a rate-limit token.
///
/// A busy marker reads `busy:<owner>:<lease end, ms>`. The owner renews its lease while its
/// request runs ([`MarkerLease`]); a process that died stops renewing, so a retry waits at most
/// one lease, not the marker's lifetime.
static ORDER_GATE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(format!(
        "{TAKE_FUNCTION}
         if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
         if tonumber(redis.call('GET', KEYS[3]) or '0') > tonumber(ARGV[4]) then return -1 end
         for i = 4, #KEYS do
             local wait = take(KEYS[i], tonumber(ARGV[2 * i - 3]), tonumber(ARGV[2 * i - 2]))
             if wait > 0 then return wait end
         end
         local marker = redis.call('GET', KEYS[2])
         if marker == 'done' then return -3 end
         {NOW}
         local answer = 0
         if marker then
             local lease = tonumber(string.match(marker, '^busy:[^:]*:(%d+)$'))
             if lease == nil or lease > now then return -2 end
             answer = -4
         end
         redis.call('SET', KEYS[2], 'busy:' .. ARGV[2] .. ':' .. string.format('%d', now + tonumber(ARGV[3])), 'EX', ARGV[1])
         return answer"
    ))
});

/// Lua: `now`, Redis's clock in milliseconds (one clock for every node's leases).
const NOW: &str = "local t = redis.call('TIME')
         local now = t[1] * 1000 + math.floor(t[2] / 1000)";

/// KEYS: the marker; ARGV: `busy:<owner>:`, the lease (ms). Extends the lease if the marker is
/// still this owner's (keeping its lifetime); 1 if it was, 0 otherwise.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(format!(
        "local marker = redis.call('GET', KEYS[1])
         if not marker or string.sub(marker, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
         {NOW}
         redis.call('SET', KEYS[1], ARGV[1] .. string.format('%d', now + tonumber(ARGV[2])), 'KEEPTTL')
         return 1"
    ))
});

/// KEYS: the marker; ARGV: `busy:<owner>:`. Deletes the marker if it is still this owner's
/// (a request that took over must keep its own).
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "local marker = redis.call('GET', KEYS[1])
         if marker and string.sub(marker, 1, #ARGV[1]) == ARGV[1] then
             return redis.call('DEL', KEYS[1])
         end
         return 0",
    )
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
    /// Another request with this key is running (its owner renews its lease).
    InFlight,
    /// The key has a stored answer (in Postgres).
    Answered,
    /// The key's last owner stopped renewing its lease (its process died): the key is now this
    /// request's. Postgres may hold the answer the dead owner committed; if not, go on.
    TakenOver,
}

/// Who holds a key's busy marker: unique per request across processes and restarts.
#[derive(Debug, Clone)]
pub struct Owner(String);

impl Owner {
    /// A name no other request (of any process, before or after a restart) will use.
    pub fn unique() -> Owner {
        Owner(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The marker's prefix while this owner holds it.
    fn prefix(&self) -> String {
        format!("busy:{}:", self.0)
    }
}

/// One new order's questions to Redis.
pub struct OrderGate<'a> {
    /// Revocation marker of the caller's token (`SessionGuard::revoked_key`).
    pub revoked_key: String,
    /// The caller's sign-out stamp (`SessionGuard::stamp_key`).
    pub stamp_key: String,
    /// When the caller's token was issued (ms): older than the stamp means signed out.
    pub issued_at_ms: i64,
    /// The caller.
    pub user_id: i64,
    /// The `Idempotency-Key`.
    pub key: &'a str,
    /// Lifetime of the busy marker, should it never be finished nor taken over.
    pub in_flight_secs: i64,
    /// The request asking.
    pub owner: &'a Owner,
    /// How long the marker stays the owner's without a renewal.
    pub lease_ms: u64,
    /// Rate-limit buckets to take a token from, by name (empty when limits are off).
    pub buckets: Vec<(String, BucketSettings)>,
}

/// Asks the gate's questions in one script (one round trip).
pub async fn open_order_gate(redis: &RedisStore, gate: &OrderGate<'_>) -> Result<Gate, StoreError> {
    let mut keys = vec![
        gate.revoked_key.clone(),
        marker_key(redis, gate.user_id, gate.key),
        gate.stamp_key.clone(),
    ];
    let mut args = vec![
        Value::from(gate.in_flight_secs),
        Value::from(gate.owner.0.as_str()),
        Value::from(gate.lease_ms as i64),
        Value::from(gate.issued_at_ms),
    ];
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
        -4 => Gate::TakenOver,
        wait => Gate::RateLimited(wait.max(1) as u64),
    })
}

fn marker_key(redis: &RedisStore, user_id: i64, key: &str) -> String {
    redis.key(&format!("idempotency:{user_id}:{key}"))
}

/// KEYS: the marker; ARGV: `busy:<owner>:`, the lease (ms), the marker's lifetime (s). Marks
/// the key busy under the owner with a fresh lease.
static MARK_BUSY: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(format!(
        "{NOW}
         redis.call('SET', KEYS[1], ARGV[1] .. string.format('%d', now + tonumber(ARGV[2])), 'EX', ARGV[3])
         return 1"
    ))
});

/// Marks (user, key) busy again under `owner` for `lease_ms` (its `done` marker outlived the
/// stored answer).
pub async fn mark_busy(
    redis: &RedisStore,
    user_id: i64,
    key: &str,
    owner: &Owner,
    lease_ms: u64,
    ttl_secs: i64,
) -> Result<(), StoreError> {
    let args = vec![
        Value::from(owner.prefix()),
        Value::from(lease_ms as i64),
        Value::from(ttl_secs),
    ];
    let marker = vec![marker_key(redis, user_id, key)];
    redis
        .script::<i64>(&MARK_BUSY, marker, args)
        .await
        .map(|_| ())
}

/// Keeps `owner`'s lease on a key alive while its request runs; stops when dropped.
pub struct MarkerLease {
    renewer: tokio::task::JoinHandle<()>,
}

impl MarkerLease {
    /// Renews the lease three times per lease, so one lost renewal does not let another request
    /// take the key over from a live one. The first renewal comes a third of a lease after the
    /// start: the gate (or [`mark_busy`]) has just granted a full lease, and most orders finish
    /// before any renewal, costing no round trip beyond the gate's.
    pub fn start(redis: RedisStore, user_id: i64, key: &str, owner: &Owner, lease_ms: u64) -> Self {
        let marker = marker_key(&redis, user_id, key);
        let prefix = owner.prefix();
        let every = std::time::Duration::from_millis((lease_ms / 3).max(1));
        let renewer = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                ticks.tick().await;
                let args = vec![Value::from(prefix.as_str()), Value::from(lease_ms as i64)];
                let renewed = redis
                    .script::<i64>(&RENEW, vec![marker.clone()], args)
                    .await;
                if let Err(e) = renewed {
                    tracing::warn!(error = %e, "idempotency lease not renewed");
                }
            }
        });
        MarkerLease { renewer }
    }
}

impl Drop for MarkerLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Ends the request's hold on the key: `done` for as long as its answer is replayed when one
/// was stored, otherwise the marker goes if it is still `owner`'s (the key may be tried again
/// at once).
pub async fn finish(
    redis: &RedisStore,
    user_id: i64,
    key: &str,
    owner: &Owner,
    answered: bool,
    ttl_secs: i64,
) -> Result<(), StoreError> {
    let name = marker_key(redis, user_id, key);
    if !answered {
        let args = vec![Value::from(owner.prefix())];
        return redis
            .script::<i64>(&RELEASE, vec![name], args)
            .await
            .map(|_| ());
    }
    let expire = Some(Expiration::EX(ttl_secs.max(1)));
    redis
        .live()?
        .set::<(), _, _>(name, "done", expire, None, false)
        .await
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
