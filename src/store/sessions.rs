//! Account protections that must hold across nodes, so they live in Redis: revoked session
//! tokens, wrong-password counters, the registration surge switch and captcha challenges.

use super::{RedisStore, StoreError};
use crate::store::redis::redis_error;
use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use std::sync::LazyLock;

/// Counts a registration in this second's bucket (all nodes) and answers whether the captcha is
/// required: this second is over the limit, or a surge was seen within the hold time.
static NOTE_REGISTRATION: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "local t = redis.call('TIME')
         local bucket = KEYS[1] .. t[1]
         local n = redis.call('INCR', bucket)
         redis.call('EXPIRE', bucket, 2)
         if n > tonumber(ARGV[1]) then
           redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
           return 1
         end
         return redis.call('EXISTS', KEYS[2])",
    )
});

/// KEYS: the (login, client) attempt counter, its back-off marker; ARGV: attempts allowed per
/// minute, first back-off (ms), longest back-off (ms). Counts the attempt *before* answering,
/// in one step, so a parallel burst cannot slip past the check: 0 (go on and check the
/// password), or the milliseconds to wait. Past the allowance each attempt doubles the wait.
static LOGIN_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "local wait = redis.call('PTTL', KEYS[2])
         if wait > 0 then return wait end
         local n = redis.call('INCR', KEYS[1])
         if n == 1 then redis.call('EXPIRE', KEYS[1], 60) end
         local over = n - tonumber(ARGV[1])
         if over <= 0 then return 0 end
         local backoff = math.min(tonumber(ARGV[2]) * 2 ^ (over - 1), tonumber(ARGV[3]))
         redis.call('SET', KEYS[2], '1', 'PX', math.floor(backoff))
         return math.floor(backoff)",
    )
});

/// First wait once a (login, client) has used its attempts; doubles with each further try.
const FIRST_BACKOFF_MS: i64 = 1_000;
/// Longest wait, however many tries.
const MAX_BACKOFF_MS: i64 = 15 * 60 * 1_000;

/// Whether a token issued at `iat_ms` is signed out, from its `[revocation marker, holder's
/// stamp]` as MGET answered them: revoked itself, or issued before the stamp.
fn judged_signed_out(marker_and_stamp: &[Option<i64>], iat_ms: i64) -> bool {
    let revoked = marker_and_stamp.first().is_some_and(Option::is_some);
    let stamp = marker_and_stamp.get(1).copied().flatten().unwrap_or(0);
    revoked || iat_ms < stamp
}

/// An open channel's token, as the re-check needs it.
#[derive(Debug, Clone)]
pub struct TokenRef {
    /// The token's id (its revocation marker).
    pub jti: String,
    /// Its holder (their sign-out stamp).
    pub user_id: i64,
    /// When it was issued, in ms.
    pub iat_ms: i64,
}

/// Handle on the Redis side of accounts.
#[derive(Clone)]
pub struct SessionGuard {
    redis: RedisStore,
}

impl SessionGuard {
    /// Keys live under the store's prefix.
    pub fn new(redis: RedisStore) -> Self {
        SessionGuard { redis }
    }

    /// Fails at once while Redis is known down: every use here is on a request's path.
    fn client(&self) -> Result<&Client, StoreError> {
        self.redis.live()
    }

    /// Revokes token `jti` until it would have expired anyway.
    pub async fn revoke(&self, jti: &str, ttl_secs: i64) -> Result<(), StoreError> {
        let key = self.redis.key(&format!("sessions:revoked:{jti}"));
        let ttl = Expiration::EX(ttl_secs.max(1));
        self.client()?
            .set::<(), _, _>(key, 1, Some(ttl), None, false)
            .await
            .map_err(redis_error)
    }

    /// The Redis key that marks token `jti` as signed out (the order gate reads it in its
    /// script).
    pub fn revoked_key(&self, jti: &str) -> String {
        self.redis.key(&format!("sessions:revoked:{jti}"))
    }

    /// Whether the token is signed out: itself (`jti`), or every token of its holder issued
    /// before the holder's stamp ([`Self::sign_out_everywhere`]); one round trip, on every
    /// authenticated request.
    pub async fn is_signed_out(&self, claims: &crate::auth::Claims) -> Result<bool, StoreError> {
        let keys = vec![self.revoked_key(&claims.jti), self.stamp_key(claims.sub)];
        let found: Vec<Option<i64>> = self.client()?.mget(keys).await.map_err(redis_error)?;
        Ok(judged_signed_out(&found, claims.iat_ms))
    }

    /// Ends every session of `user_id` issued until now — its own sign-out everywhere, or an
    /// operator changing its roles or status (the next request of an old token is a 401, and a
    /// new login carries the new roles). Kept as long as a token can live.
    pub async fn sign_out_everywhere(
        &self,
        user_id: i64,
        token_ttl_secs: i64,
    ) -> Result<(), StoreError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let ttl = Expiration::EX(token_ttl_secs.max(1));
        self.client()?
            .set::<(), _, _>(self.stamp_key(user_id), now_ms, Some(ttl), None, false)
            .await
            .map_err(redis_error)
    }

    /// The Redis key of `user_id`'s sign-out stamp (the order gate reads it in its script).
    pub fn stamp_key(&self, user_id: i64) -> String {
        self.redis.key(&format!("sessions:stamp:{user_id}"))
    }

    /// Which of `tokens` are signed out (as [`Self::is_signed_out`] judges one): one MGET of
    /// their revocation markers and holders' stamps per few hundred tokens, for the open
    /// channels' periodic re-check. Answers their `jti`s.
    pub async fn signed_out_among(&self, tokens: &[TokenRef]) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for chunk in tokens.chunks(250) {
            let keys: Vec<String> = chunk
                .iter()
                .flat_map(|t| [self.revoked_key(&t.jti), self.stamp_key(t.user_id)])
                .collect();
            let found: Vec<Option<i64>> = self.client()?.mget(keys).await.map_err(redis_error)?;
            for (token, pair) in chunk.iter().zip(found.chunks(2)) {
                if judged_signed_out(pair, token.iat_ms) {
                    out.push(token.jti.clone());
                }
            }
        }
        Ok(out)
    }

    /// Counts a login attempt of `login` from `client` (atomically, before its password is
    /// checked); `Some(ms)` to wait when it is over its allowance. Keyed per client, so a
    /// stranger hammering someone's login cannot lock its owner out elsewhere.
    pub async fn begin_login_attempt(
        &self,
        login: &str,
        client: &str,
        limit: u32,
    ) -> Result<Option<u64>, StoreError> {
        let keys = self.attempt_keys(login, client);
        let args = vec![
            Value::from(limit as i64),
            Value::from(FIRST_BACKOFF_MS),
            Value::from(MAX_BACKOFF_MS),
        ];
        let wait: i64 = self
            .redis
            .script(&LOGIN_ATTEMPT, keys.to_vec(), args)
            .await?;
        Ok((wait > 0).then_some(wait as u64))
    }

    /// Forgets `login`'s attempts from `client` after a successful login.
    pub async fn login_succeeded(&self, login: &str, client: &str) -> Result<(), StoreError> {
        let keys = self.attempt_keys(login, client);
        self.client()?
            .del::<(), _>(keys.to_vec())
            .await
            .map_err(redis_error)
    }

    fn attempt_keys(&self, login: &str, client: &str) -> [String; 2] {
        [
            self.redis
                .key(&format!("sessions:attempts:{login}:{client}")),
            self.redis
                .key(&format!("sessions:backoff:{login}:{client}")),
        ]
    }

    /// Counts one registration attempt; true if a captcha is required for it.
    pub async fn note_registration(
        &self,
        per_sec: u32,
        hold_secs: u64,
    ) -> Result<bool, StoreError> {
        let keys = vec![
            self.redis.key("accounts:registrations:"),
            self.redis.key("accounts:surge"),
        ];
        let args = vec![Value::from(per_sec as i64), Value::from(hold_secs as i64)];
        let required: i64 = self.redis.script(&NOTE_REGISTRATION, keys, args).await?;
        Ok(required == 1)
    }

    /// Keeps a puzzle challenge (its difficulty) answerable for `ttl_secs`.
    pub async fn store_challenge(
        &self,
        id: &str,
        difficulty: u8,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        let key = self.redis.key(&format!("accounts:captcha:{id}"));
        let ttl = Expiration::EX(ttl_secs.max(1) as i64);
        self.client()?
            .set::<(), _, _>(key, i64::from(difficulty), Some(ttl), None, false)
            .await
            .map_err(redis_error)
    }

    /// Takes challenge `id` (so it can be tried once): its difficulty, `None` if unknown or
    /// expired.
    pub async fn take_challenge(&self, id: &str) -> Result<Option<u8>, StoreError> {
        let key = self.redis.key(&format!("accounts:captcha:{id}"));
        let stored: Option<i64> = self.client()?.getdel(key).await.map_err(redis_error)?;
        Ok(stored.and_then(|d| u8::try_from(d).ok()))
    }
}
