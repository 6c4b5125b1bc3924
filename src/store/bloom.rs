//! A Bloom filter of taken mobiles and emails, kept in Redis so every node shares it: the
//! registration check "is this handle taken?" asks Postgres only when the filter says "maybe".
//! Postgres keeps the final word (its unique keys refuse a duplicate whatever the filter says).
//!
//! Bit positions come from one 128-bit xxh3 hash per handle (the `xxhash-rust` crate) split into
//! two 64-bit halves and combined as `h1 + i·h2` (Kirsch–Mitzenmacher double hashing).

use super::{PgPool, RedisStore, StoreError};
use fred::types::Value;
use fred::types::scripts::Script;
use std::sync::LazyLock;

static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "for _, off in ipairs(ARGV) do
           if redis.call('GETBIT', KEYS[1], off) == 0 then return 0 end
         end
         return 1",
    )
});

static ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "for _, off in ipairs(ARGV) do redis.call('SETBIT', KEYS[1], off, 1) end
         return 1",
    )
});

/// The filter: `bits` bits in one Redis string, `hashes` positions per handle.
#[derive(Clone)]
pub struct HandleBloom {
    redis: RedisStore,
    key: String,
    bits: u64,
    hashes: u32,
}

/// A login handle: the filter and the database keep mobiles and emails apart.
#[derive(Debug, Clone, Copy)]
pub enum Handle<'a> {
    /// Normalized mobile number.
    Mobile(&'a str),
    /// Normalized (lower-case) email.
    Email(&'a str),
}

impl HandleBloom {
    /// A filter under the store's key prefix.
    pub fn new(redis: RedisStore, bits: u64, hashes: u32) -> Self {
        HandleBloom {
            key: redis.key("accounts:handles:bloom"),
            redis,
            bits: bits.max(64),
            hashes: hashes.max(1),
        }
    }

    /// False means certainly not taken; true means "maybe" (ask Postgres).
    pub async fn may_contain(&self, handle: Handle<'_>) -> Result<bool, StoreError> {
        let hit: i64 = self
            .redis
            .script(&CHECK, vec![self.key.clone()], self.offsets(handle))
            .await?;
        Ok(hit == 1)
    }

    /// Records taken handles.
    pub async fn insert(&self, handles: &[Handle<'_>]) -> Result<(), StoreError> {
        let offsets: Vec<Value> = handles.iter().flat_map(|h| self.offsets(*h)).collect();
        if offsets.is_empty() {
            return Ok(());
        }
        self.redis
            .script::<i64>(&ADD, vec![self.key.clone()], offsets)
            .await
            .map(|_| ())
    }

    /// Adds every handle in Postgres (startup; safe to repeat and to run on every node).
    pub async fn fill_from(&self, pool: &PgPool) -> Result<usize, StoreError> {
        let client = pool.get().await?;
        let rows = client
            .query(
                "SELECT 'm', mobile FROM user_mobiles UNION ALL SELECT 'e', email FROM user_emails",
                &[],
            )
            .await?;
        let handles: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        for chunk in handles.chunks(2_000) {
            let batch: Vec<Handle> = chunk
                .iter()
                .map(|(kind, v)| match kind.as_str() {
                    "m" => Handle::Mobile(v),
                    _ => Handle::Email(v),
                })
                .collect();
            self.insert(&batch).await?;
        }
        Ok(handles.len())
    }

    fn offsets(&self, handle: Handle<'_>) -> Vec<Value> {
        let (tag, value) = match handle {
            Handle::Mobile(m) => ("m:", m),
            Handle::Email(e) => ("e:", e),
        };
        let h = xxhash_rust::xxh3::xxh3_128(format!("{tag}{value}").as_bytes());
        let (h1, h2) = (h as u64, ((h >> 64) as u64) | 1);
        (0..self.hashes as u64)
            .map(|i| Value::Integer((h1.wrapping_add(i.wrapping_mul(h2)) % self.bits) as i64))
            .collect()
    }
}
