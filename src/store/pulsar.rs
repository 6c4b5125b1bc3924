//! Pulsar client (the `pulsar` crate, tokio executor) and topic naming.
//!
//! Topic names are `persistent://{tenant/namespace}/{prefix}{name}`; the prefix keeps tests and
//! deployments apart on one broker.

use super::{Store, StoreError};
use crate::config::PulsarSettings;
use pulsar::{Pulsar, TokioExecutor};
use std::sync::Arc;
use std::time::Duration;

/// The shared client plus naming rules; cheap to clone.
#[derive(Clone)]
pub struct PulsarStore {
    client: Arc<Pulsar<TokioExecutor>>,
    namespace: String,
    prefix: String,
    timeout: Duration,
}

/// The topic that carries order events (ARCHITECTURE.md, "Events on Pulsar").
pub const ORDER_EVENTS: &str = "order-events";

impl PulsarStore {
    /// Connects to the broker within the configured timeout.
    pub async fn connect(settings: &PulsarSettings) -> Result<Self, StoreError> {
        let timeout = settings.connect_timeout();
        let build = Pulsar::builder(settings.url.clone(), TokioExecutor)
            .with_connection_retry_options(pulsar::ConnectionRetryOptions {
                // Bounded retries: startup must fail, not spin, when the broker is away.
                max_retries: 2,
                connection_timeout: timeout,
                ..Default::default()
            })
            .with_operation_retry_options(pulsar::OperationRetryOptions {
                operation_timeout: timeout,
                max_retries: Some(2),
                ..Default::default()
            })
            .build();
        let client =
            tokio::time::timeout(timeout, build)
                .await
                .map_err(|_| StoreError::Timeout {
                    store: Store::Pulsar,
                    after: timeout,
                })??;
        Ok(PulsarStore {
            client: Arc::new(client),
            namespace: settings.tenant_namespace.clone(),
            prefix: settings.topic_prefix.clone(),
            timeout,
        })
    }

    /// Full topic name for `name`, with namespace and prefix.
    pub fn topic(&self, name: &str) -> String {
        format!("persistent://{}/{}{}", self.namespace, self.prefix, name)
    }

    /// The client, for producers and consumers.
    pub fn client(&self) -> &Pulsar<TokioExecutor> {
        &self.client
    }

    /// A topic lookup within the timeout: proves the broker answers protocol requests.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let lookup = self.client.lookup_topic(self.topic(ORDER_EVENTS));
        tokio::time::timeout(self.timeout, lookup)
            .await
            .map_err(|_| StoreError::Timeout {
                store: Store::Pulsar,
                after: self.timeout,
            })?
            .map(|_| ())
            .map_err(StoreError::from)
    }
}
