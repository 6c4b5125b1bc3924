//! The mock payment provider's own trade book, in Redis (one hash per trade, expiring after
//! `payments.mockpay.trade_ttl_secs`). It is the provider's storage, not ours: our side never
//! reads it directly, only through the provider's HTTP API. Each state change is one Lua script,
//! so two clicks on "pay" or two refund calls change a trade once.

use super::redis::redis_error;
use super::{RedisStore, StoreError};
use crate::payments::mockpay::{CreateTrade, PAID, REFUNDED, Trade, WAITING};
use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use std::collections::HashMap;
use std::sync::LazyLock;

/// Creates a trade unless one with that number exists (creation is idempotent).
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
         redis.call('HSET', KEYS[1], 'out_trade_no', ARGV[1], 'total_amount_cents', ARGV[2],
                    'subject', ARGV[3], 'trade_status', ARGV[5],
                    'callbacks_delivered', 0, 'refunded_cents', 0)
         redis.call('EXPIRE', KEYS[1], ARGV[4])
         return 1",
    )
});

/// Waiting → paid; 1 if it happened now, 2 if it was paid already, 0 if unknown.
static PAY: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "local s = redis.call('HGET', KEYS[1], 'trade_status')
         if not s then return 0 end
         if s ~= ARGV[3] then return 2 end
         redis.call('HSET', KEYS[1], 'trade_status', ARGV[4], 'trade_no', ARGV[1], 'paid_at', ARGV[2])
         return 1",
    )
});

/// Paid → refunded, once per refund request id; 1 if refunded (now or by this request before).
static REFUND: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "local s = redis.call('HGET', KEYS[1], 'trade_status')
         if s == ARGV[3] then
           redis.call('HSET', KEYS[1], 'trade_status', ARGV[4], 'refunded_cents', ARGV[2], 'refund_request', ARGV[1])
           return 1
         end
         if s == ARGV[4] and redis.call('HGET', KEYS[1], 'refund_request') == ARGV[1] then return 1 end
         return 0",
    )
});

/// The provider's trades; cheap to clone.
#[derive(Clone)]
pub struct TradeBook {
    redis: RedisStore,
    ttl_secs: u64,
}

/// A stored trade with what only the checkout page shows. No callback address: callbacks go
/// where the provider's configuration says, never where a caller asked.
#[derive(Debug, Clone)]
pub struct StoredTrade {
    /// As reported to the merchant.
    pub trade: Trade,
    /// Shown on the checkout page.
    pub subject: String,
}

impl TradeBook {
    /// A book in `redis`, forgetting trades after `ttl_secs`.
    pub fn new(redis: RedisStore, ttl_secs: u64) -> Self {
        TradeBook { redis, ttl_secs }
    }

    fn key(&self, out_trade_no: &str) -> String {
        self.redis.key(&format!("mockpay:trade:{out_trade_no}"))
    }

    /// Opens a trade; false if it existed already (left as it was).
    pub async fn create(&self, t: &CreateTrade) -> Result<bool, StoreError> {
        let args: Vec<Value> = vec![
            t.out_trade_no.clone().into(),
            t.total_amount_cents.into(),
            t.subject.clone().into(),
            (self.ttl_secs as i64).into(),
            WAITING.into(),
        ];
        let created: i64 = self
            .redis
            .script(&CREATE, vec![self.key(&t.out_trade_no)], args)
            .await?;
        Ok(created == 1)
    }

    /// The trade, if known.
    pub async fn get(&self, out_trade_no: &str) -> Result<Option<StoredTrade>, StoreError> {
        let fields: HashMap<String, String> = self
            .redis
            .client()
            .hgetall(self.key(out_trade_no))
            .await
            .map_err(redis_error)?;
        Ok(parse(fields))
    }

    /// Marks the trade paid; `Some(true)` if this call paid it, `Some(false)` if it was paid
    /// before, `None` if unknown.
    pub async fn pay(
        &self,
        out_trade_no: &str,
        trade_no: &str,
        paid_at: &str,
    ) -> Result<Option<bool>, StoreError> {
        let args: Vec<Value> = vec![trade_no.into(), paid_at.into(), WAITING.into(), PAID.into()];
        let outcome: i64 = self
            .redis
            .script(&PAY, vec![self.key(out_trade_no)], args)
            .await?;
        Ok(match outcome {
            0 => None,
            n => Some(n == 1),
        })
    }

    /// Refunds a paid trade once per `request_no`; false if it is not refundable.
    pub async fn refund(
        &self,
        out_trade_no: &str,
        request_no: &str,
        amount_cents: i64,
    ) -> Result<bool, StoreError> {
        let args: Vec<Value> = vec![
            request_no.into(),
            amount_cents.into(),
            PAID.into(),
            REFUNDED.into(),
        ];
        let done: i64 = self
            .redis
            .script(&REFUND, vec![self.key(out_trade_no)], args)
            .await?;
        Ok(done == 1)
    }

    /// Counts one callback the merchant acknowledged.
    pub async fn note_delivery(&self, out_trade_no: &str) -> Result<(), StoreError> {
        self.redis
            .client()
            .hincrby::<i64, _, _>(self.key(out_trade_no), "callbacks_delivered", 1)
            .await
            .map(|_| ())
            .map_err(redis_error)
    }
}

fn number<T: std::str::FromStr>(f: &HashMap<String, String>, k: &str) -> Option<T> {
    f.get(k).and_then(|v| v.parse().ok())
}

fn parse(mut f: HashMap<String, String>) -> Option<StoredTrade> {
    let trade = Trade {
        total_amount_cents: number(&f, "total_amount_cents")?,
        callbacks_delivered: number(&f, "callbacks_delivered").unwrap_or(0),
        refunded_cents: number(&f, "refunded_cents").unwrap_or(0),
        out_trade_no: f.remove("out_trade_no")?,
        trade_no: f.remove("trade_no"),
        trade_status: f.remove("trade_status")?,
        paid_at: f.remove("paid_at"),
    };
    Some(StoredTrade {
        trade,
        subject: f.remove("subject").unwrap_or_default(),
    })
}
