//! Token buckets in Redis, so a limit holds across every node: one Lua script refills the bucket
//! from Redis's own clock and takes a token atomically.

use super::{RedisStore, StoreError};
use crate::config::BucketSettings;
use fred::types::Value;
use fred::types::scripts::Script;
use std::sync::LazyLock;

/// A Lua function taking one token from bucket `key` (`burst` tokens, refilled at `rate` per
/// second from Redis's own clock); answers 0, or the milliseconds until a token is back. Shared
/// by [`TAKE`] and the order gate (`store::idempotency`), so every route group's limits are one
/// bucket whichever script takes from it.
pub(crate) const TAKE_FUNCTION: &str = "
local function take(key, burst, rate)
    local t = redis.call('TIME')
    local now = t[1] * 1000 + math.floor(t[2] / 1000)
    local b = redis.call('HMGET', key, 'tokens', 'ts')
    local tokens = tonumber(b[1]) or burst
    local ts = tonumber(b[2]) or now
    tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
    local wait = 0
    if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
    redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
    redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
    return wait
end
";

static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(format!(
        "{TAKE_FUNCTION} return take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))"
    ))
});

/// The key of bucket `name` (under the store's prefix).
pub(crate) fn bucket_key(redis: &RedisStore, name: &str) -> String {
    redis.key(&format!("ratelimit:{name}"))
}

/// A bucket's settings as the Lua function takes them (burst, rate).
pub(crate) fn bucket_args(bucket: BucketSettings) -> [Value; 2] {
    [
        Value::from(bucket.burst.max(1) as i64),
        Value::from(bucket.per_sec.max(0.001).to_string()),
    ]
}

/// Takes tokens from named buckets.
#[derive(Clone)]
pub struct RateLimiter {
    redis: RedisStore,
}

impl RateLimiter {
    /// Buckets live under the store's prefix.
    pub fn new(redis: RedisStore) -> Self {
        RateLimiter { redis }
    }

    /// Takes one token from bucket `name`; `Some(ms)` = empty, retry after that long.
    pub async fn take(
        &self,
        name: &str,
        bucket: BucketSettings,
    ) -> Result<Option<u64>, StoreError> {
        let key = bucket_key(&self.redis, name);
        let args = bucket_args(bucket).to_vec();
        let wait_ms: i64 = self.redis.script(&TAKE, vec![key], args).await?;
        Ok((wait_ms > 0).then_some(wait_ms as u64))
    }
}
