//! The catalog's read cache, three levels deep: in-process (moka: bounded, TTL) → Redis (shared
//! by all nodes, TTL) → Postgres. A hit at the first two levels does not touch Postgres.
//!
//! Admin edits call [`CatalogCache::invalidate`]: it drops the Redis entry and publishes the
//! program id on a Redis channel; every node's [`CatalogCache::listen`] task drops its local
//! copies. Concurrent misses for one key are coalesced (moka's `try_get_with`), so a cold popular
//! program costs one Postgres read, not one per waiting request. Residual staleness: a node that
//! read the old Redis value just before the invalidation may keep it until `local_ttl_secs`.

use super::catalog_read::{self, ProgramDetail, ProgramPage, ProgramQuery};
use super::redis::redis_error;
use super::{PgPool, RedisStore, StoreError};
use crate::config::CacheSettings;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use moka::future::Cache;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Cheap to clone; clones share the caches.
#[derive(Clone)]
pub struct CatalogCache {
    inner: Arc<Inner>,
}

struct Inner {
    pg: PgPool,
    redis: RedisStore,
    settings: CacheSettings,
    details: Cache<i64, Arc<ProgramDetail>>,
    lists: Cache<ProgramQuery, Arc<ProgramPage>>,
    channel: String,
    /// Cache misses reading Postgres at once (`cache.max_concurrent_loads`): a flood of
    /// distinct searches, each a miss, takes at most this many of the read pool's connections
    /// and leaves the rest to signed-in buyers and operators.
    loads: Semaphore,
}

/// How long a cache miss waits for one of the bounded Postgres loads before it is answered
/// 503 `CATALOG_BUSY`: long enough to ride out a burst, short enough not to pile up requests.
const LOAD_WAIT: Duration = Duration::from_millis(250);

impl CatalogCache {
    /// A cache over `pg`, sharing its second level through `redis`.
    pub fn new(pg: PgPool, redis: RedisStore, settings: CacheSettings) -> Self {
        let ttl = Duration::from_secs(settings.local_ttl_secs.max(1));
        // Bounded: a crawler walking every program cannot grow the process without limit.
        let details = Cache::builder()
            .max_capacity(settings.local_capacity)
            .time_to_live(ttl)
            .build();
        let lists = Cache::builder()
            .max_capacity(settings.local_capacity)
            .time_to_live(ttl)
            .build();
        CatalogCache {
            inner: Arc::new(Inner {
                loads: Semaphore::new(settings.max_concurrent_loads.max(1)),
                channel: redis.key("catalog:invalidate"),
                pg,
                redis,
                settings,
                details,
                lists,
            }),
        }
    }

    /// A program's detail, `None` if it does not exist.
    pub async fn detail(&self, id: i64) -> Result<Option<Arc<ProgramDetail>>, StoreError> {
        let inner = &self.inner;
        if !inner.settings.enabled {
            return Ok(catalog_read::program_detail(&inner.pg, id)
                .await?
                .map(Arc::new));
        }
        let found = inner
            .details
            .try_get_with(id, async {
                match inner.detail_from_redis_or_pg(id).await? {
                    Some(d) => Ok(Arc::new(d)),
                    None => Err(StoreError::NotFound(format!("program {id}"))),
                }
            })
            .await;
        match found {
            Ok(detail) => Ok(Some(detail)),
            Err(e) => match e.as_ref() {
                StoreError::NotFound(_) => Ok(None),
                other => Err(other.clone()),
            },
        }
    }

    /// A page of the program list (cached in process; any admin edit drops every page).
    pub async fn list(&self, query: &ProgramQuery) -> Result<Arc<ProgramPage>, StoreError> {
        let query = query.normalized()?;
        let inner = &self.inner;
        if !inner.settings.enabled {
            return Ok(Arc::new(
                catalog_read::list_programs(&inner.pg, &query).await?,
            ));
        }
        inner
            .lists
            .try_get_with(query.clone(), async {
                inner
                    .bounded(catalog_read::list_programs(&inner.pg, &query))
                    .await
                    .map(Arc::new)
            })
            .await
            .map_err(|e| e.as_ref().clone())
    }

    /// An idle category's seat map from Postgres, within the bound on cache misses (a crawler
    /// asking for every seat map must not take the read pool).
    pub async fn idle_category(
        &self,
        id: i64,
    ) -> Result<Option<catalog_read::IdleCategory>, StoreError> {
        let inner = &self.inner;
        inner
            .bounded(catalog_read::idle_category(&inner.pg, id))
            .await
    }

    /// Drops the program from every level on every node (call after the edit committed).
    pub async fn invalidate(&self, program_id: i64) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.drop_local(program_id).await;
        let client = inner.redis.live()?;
        client
            .del::<(), _>(inner.redis_key(program_id))
            .await
            .map_err(redis_error)?;
        client
            .publish::<(), _, _>(&inner.channel, program_id)
            .await
            .map_err(redis_error)
    }

    /// Drops this process's copies of the program (detail and every list page): what an
    /// invalidation from another node does here.
    pub async fn forget_local(&self, program_id: i64) {
        self.inner.drop_local(program_id).await;
    }

    /// Subscribes to invalidations from all nodes and applies them here until the process ends.
    pub async fn listen(&self, subscriber: SubscriberClient) -> Result<(), StoreError> {
        let mut messages = subscriber.message_rx();
        subscriber
            .subscribe(self.inner.channel.clone())
            .await
            .map_err(redis_error)?;
        let inner = self.inner.clone();
        tokio::spawn(async move {
            // Keeps the connection (and its automatic re-subscription) alive with the task.
            let _subscriber = subscriber;
            while let Ok(message) = messages.recv().await {
                if let Some(id) = message.value.as_i64() {
                    inner.drop_local(id).await;
                }
            }
        });
        Ok(())
    }
}

/// Version of the detail JSON kept in Redis, part of its key. Bump it whenever
/// [`ProgramDetail`]'s serialized shape changes: nodes then miss instead of misreading entries
/// written in the old shape, which expire by their TTL. v2: show times with ids, categories
/// per show time.
const DETAIL_KEY_VERSION: u32 = 2;

impl Inner {
    fn redis_key(&self, id: i64) -> String {
        self.redis
            .key(&format!("catalog:program:v{DETAIL_KEY_VERSION}:{id}"))
    }

    /// Runs a cache miss's Postgres read within the load bound, or refuses it after
    /// [`LOAD_WAIT`].
    async fn bounded<T>(
        &self,
        read: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let Ok(Ok(_permit)) = tokio::time::timeout(LOAD_WAIT, self.loads.acquire()).await else {
            metrics::counter!("catalog_loads_refused_total").increment(1);
            return Err(StoreError::Busy("CATALOG_BUSY"));
        };
        read.await
    }

    pub(crate) async fn drop_local(&self, program_id: i64) {
        self.details.invalidate(&program_id).await;
        self.lists.invalidate_all();
    }

    /// Second level, then Postgres (which refills the second level). A Redis failure falls
    /// through to Postgres: the cache must never be why a read fails (it fails open).
    async fn detail_from_redis_or_pg(&self, id: i64) -> Result<Option<ProgramDetail>, StoreError> {
        let key = self.redis_key(id);
        if let Some(detail) = self.detail_from_redis(&key).await {
            return Ok(Some(detail));
        }
        let Some(detail) = self
            .bounded(catalog_read::program_detail(&self.pg, id))
            .await?
        else {
            return Ok(None);
        };
        self.fill_redis(&key, &detail).await;
        Ok(Some(detail))
    }

    /// The second level's copy, if Redis has one and is up (not asked while known down).
    async fn detail_from_redis(&self, key: &str) -> Option<ProgramDetail> {
        let client = self.redis.live().ok()?;
        match client.get::<Option<String>, _>(key).await {
            Ok(json) => match serde_json::from_str(&json?) {
                Ok(detail) => Some(detail),
                Err(e) => {
                    tracing::warn!(error = %e, key, "unreadable cache entry; reloading");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "redis cache unavailable; reading Postgres");
                None
            }
        }
    }

    /// Stores `detail` in the second level; skipped while Redis is known down.
    async fn fill_redis(&self, key: &str, detail: &ProgramDetail) {
        let (Ok(client), Ok(json)) = (self.redis.live(), serde_json::to_string(detail)) else {
            return;
        };
        let ttl = Expiration::EX(self.settings.redis_ttl_secs.max(1) as i64);
        if let Err(e) = client
            .set::<(), _, _>(key, json, Some(ttl), None, false)
            .await
        {
            tracing::warn!(error = %e, "redis cache not filled");
        }
    }
}
