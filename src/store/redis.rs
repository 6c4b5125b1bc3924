//! Redis through fred. Every key goes through [`RedisStore::key`], which prepends the configured
//! prefix, so deployments and tests can share one Redis without seeing each other's keys.
//! Redis mirrors and counts; it never decides (invariant 8).

use super::StoreError;
use super::health::{Health, Store};
use crate::config::RedisSettings;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{FromValue, Value};
use secrecy::ExposeSecret;
use std::time::Duration;

/// A connected fred client plus our key prefix; cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    prefix: String,
    timeout: Duration,
    /// Whether the health probe last found Redis answering ([`RedisStore::live`]).
    health: Health,
}

impl RedisStore {
    /// Connects and pings within the configured timeout.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, StoreError> {
        let client = build_client(settings)?;
        let timeout = settings.connect_timeout();
        tokio::time::timeout(timeout, client.init())
            .await
            .map_err(|_| StoreError::Timeout {
                store: Store::Redis,
                after: timeout,
            })??;
        let store = RedisStore {
            client,
            prefix: settings.key_prefix.clone(),
            timeout,
            health: Health::default(),
        };
        store.ping().await?;
        Ok(store)
    }

    /// `prefix + name`: the only way code in this crate should name a Redis key.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// The same client, reading Redis's state from `health` (the process's shared flags).
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// The underlying client, for background work that may wait out a reconnection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client for a request: an error at once, instead of a command queued for the
    /// command timeout (3 s) behind a reconnection, when Redis is known down — by the health
    /// probe, or by the client itself having lost its connection.
    pub fn live(&self) -> Result<&Client, StoreError> {
        self.health.ensure_up(Store::Redis)?;
        if self.client.is_connected() {
            Ok(&self.client)
        } else {
            Err(Store::Redis.down_error())
        }
    }

    /// Runs a Lua script (loading it again if Redis forgot it, e.g. after a restart); fails at
    /// once while Redis is known down.
    pub async fn script<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, StoreError> {
        script
            .evalsha_with_reload(self.live()?, keys, args)
            .await
            .map_err(redis_error)
    }

    /// A dedicated connection for SUBSCRIBE that re-subscribes by itself after reconnecting.
    pub async fn subscriber(settings: &RedisSettings) -> Result<SubscriberClient, StoreError> {
        let config = Config::from_url(settings.url.expose_secret())
            .map_err(|e| StoreError::config("redis.url", e))?;
        let client = Builder::from_config(config)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build_subscriber_client()
            .map_err(redis_error)?;
        client.init().await.map_err(redis_error)?;
        client.manage_subscriptions();
        Ok(client)
    }

    /// One PING within the timeout; readiness uses it.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let ping = self.client.ping::<String>(None);
        tokio::time::timeout(self.timeout, ping)
            .await
            .map_err(|_| StoreError::Timeout {
                store: Store::Redis,
                after: self.timeout,
            })?
            .map(|_| ())
            .map_err(redis_error)
    }
}

fn build_client(settings: &RedisSettings) -> Result<Client, StoreError> {
    let config = Config::from_url(settings.url.expose_secret())
        .map_err(|e| StoreError::config("redis.url", e))?;
    let timeout = settings.connect_timeout();
    Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
        })
        .with_performance_config(|p| {
            // A command never waits forever: Redis down must turn into an error, not a hang.
            p.default_command_timeout = timeout;
        })
        // Keep reconnecting in the background forever; callers see errors meanwhile.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(redis_error)
}

/// Any fred error as a store error (callers map it to 503).
pub fn redis_error(e: fred::error::Error) -> StoreError {
    StoreError::Redis(e)
}
