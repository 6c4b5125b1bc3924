//! One subscription per purpose, each event applied at most once.
//!
//! An event is applied inside the transaction that records it in `consumer_inbox` (primary key
//! consumer + event id), so a redelivery — after a crash between commit and acknowledgement, or
//! a republish — finds it there, is acknowledged and skipped. Events the broker has already
//! delivered when the consumer looks (up to `events.consumer_batch`) share one transaction: an
//! on-sale's burst costs one commit per batch rather than one per event, and a lone event is
//! never held back waiting for company. A handler that refuses inside a batch sends the batch
//! back to one event at a time, so only the bad event is counted and retried. A failing handler rolls back,
//! counts the attempt in `consumer_failures` (so the count survives a restart) and is tried
//! again after a doubling wait (from `events.retry_backoff_ms`); at `events.max_attempts` the
//! event goes to `dead_letters` and the dead-letter topic, an alert is logged, and it is
//! acknowledged so the subscription moves on.
//!
//! Retries happen here rather than by negative acknowledgement: an ordered subscription
//! (Failover) must not let an order's later event overtake a failing earlier one, and
//! pulsar-lite does not redeliver negatively acknowledged messages on Failover subscriptions.
//! A process that dies mid-retry leaves the message unacknowledged; the broker delivers it to
//! the next consumer, which continues the count.

use super::Event;
use crate::config::EventSettings;
use crate::store::{PgPool, PulsarStore, StoreError};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use pulsar::consumer::{ConsumerOptions, InitialPosition, Message};
use pulsar::{Consumer, SubType, TokioExecutor};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::Duration;
use tokio::sync::watch;

/// Why an event was not applied.
enum Failure {
    /// The purpose's handler refused: counted, retried, dead-lettered at the limit.
    Handler(StoreError),
    /// Postgres could not be reached or the inbox transaction failed: waited out, not counted.
    Store(StoreError),
}

fn store_failure(e: impl Into<StoreError>) -> Failure {
    Failure::Store(e.into())
}

/// What follows a counted failure.
enum Next {
    /// Try the handler again.
    Retry,
    /// Given up on and recorded.
    DeadLettered,
}

/// Where poison events are published (besides the `dead_letters` table).
pub const DEAD_LETTER_TOPIC: &str = "order-events-dlq";

/// What one purpose does with an event.
pub trait Apply: Send + Sync + 'static {
    /// Changes to Postgres, inside the transaction that records the event in the inbox. None
    /// by default: purposes whose effect is outside Postgres only need the inbox record.
    fn apply<'a>(
        &'a self,
        _tx: &'a deadpool_postgres::Transaction<'a>,
        _event: &'a Event,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// [`apply`](Self::apply) for events that arrived together, in delivery order, inside one
    /// transaction. Sequential by default; a purpose whose per-event work is one statement
    /// overrides it with one statement for all of them.
    fn apply_batch<'a>(
        &'a self,
        tx: &'a deadpool_postgres::Transaction<'a>,
        events: &'a [&'a Event],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            for event in events {
                self.apply(tx, event).await?;
            }
            Ok(())
        })
    }

    /// Effects outside Postgres, after the commit: at most once per event, like `apply`.
    fn after_commit<'a>(&'a self, _event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Whether this purpose cares about the event at all; others are acknowledged without
    /// touching Postgres (a per-process purpose would otherwise write an inbox row for every
    /// order event it ignores).
    fn wants(&self, _event: &Event) -> bool {
        true
    }
}

/// What a consumer did since it started (also exported as metrics).
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Events applied for the first time.
    pub applied: AtomicU64,
    /// Events found in the inbox already (redeliveries, republished messages).
    pub duplicates: AtomicU64,
    /// Failed attempts (each followed by a redelivery or a dead letter).
    pub failures: AtomicU64,
    /// Events given up on.
    pub dead_letters: AtomicU64,
}

/// A subscription and the purpose it serves.
#[derive(Clone)]
pub struct EventConsumer {
    /// Subscription and inbox name (also the label of its metrics).
    pub name: String,
    /// `Failover` for work done once per cluster (in order per order), `Exclusive` with a
    /// per-process name for work every process must see.
    pub sub_type: SubType,
    /// `Earliest` for durable bookkeeping (nothing published before the subscription existed
    /// is missed), `Latest` for live-only purposes.
    pub start: InitialPosition,
    /// The purpose.
    pub apply: Arc<dyn Apply>,
    /// Inbox, failures, dead letters.
    pub pool: PgPool,
    /// The broker.
    pub pulsar: PulsarStore,
    /// Attempts and backoff.
    pub settings: EventSettings,
    /// Counters since start.
    pub stats: Arc<ConsumerStats>,
}

/// A subscription's message stream.
pub type EventStream = Consumer<Vec<u8>, TokioExecutor>;

impl EventConsumer {
    /// Consumes until `stop` turns true, resubscribing after broker failures.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        self.run_from(None, stop).await
    }

    /// [`run`](Self::run), starting with a subscription already made (so a caller knows the
    /// subscription exists before anything is published).
    pub async fn run_from(self, mut first: Option<EventStream>, mut stop: watch::Receiver<bool>) {
        let mut wait = Duration::from_millis(100);
        while !super::stopping(&stop) {
            let subscribed = match first.take() {
                Some(stream) => Ok(stream),
                None => self.subscribe().await,
            };
            match subscribed {
                Ok(mut stream) => {
                    wait = Duration::from_millis(100);
                    self.consume(&mut stream, &mut stop).await;
                    let _ = stream.close().await;
                }
                Err(e) => {
                    tracing::warn!(consumer = %self.name, error = %e, "cannot subscribe; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// Subscribes to `order-events` (the test suite's and each deployment's own prefix).
    pub async fn subscribe(&self) -> Result<EventStream, StoreError> {
        self.pulsar
            .client()
            .consumer()
            .with_topic(self.pulsar.topic(crate::store::pulsar::ORDER_EVENTS))
            .with_subscription(&self.name)
            .with_subscription_type(self.sub_type)
            .with_options(ConsumerOptions {
                initial_position: self.start.clone(),
                durable: Some(true),
                ..Default::default()
            })
            .build()
            .await
            .map_err(StoreError::from)
    }

    async fn consume(&self, stream: &mut EventStream, stop: &mut watch::Receiver<bool>) {
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = stop.changed() => return,
            };
            match next {
                Some(Ok(message)) => {
                    let mut ready = vec![message];
                    let broken = self.take_ready(stream, &mut ready);
                    self.handle_all(stream, ready).await;
                    if broken {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(consumer = %self.name, error = %e, "broken message or stream");
                    return;
                }
                None => return,
            }
        }
    }

    /// Adds the messages the broker has already delivered, up to `events.consumer_batch`,
    /// without waiting for more; answers whether the stream broke (its caller resubscribes
    /// after handling what it has).
    fn take_ready(&self, stream: &mut EventStream, ready: &mut Vec<Message<Vec<u8>>>) -> bool {
        while ready.len() < self.settings.consumer_batch {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => ready.push(message),
                Some(Some(Err(e))) => {
                    tracing::warn!(consumer = %self.name, error = %e, "broken message or stream");
                    return true;
                }
                Some(None) => return true,
                None => return false,
            }
        }
        false
    }

    /// Applies what arrived together in one transaction; when a handler refuses one of them,
    /// falls back to one at a time so only that event is counted, retried and dead-lettered.
    async fn handle_all(&self, stream: &mut EventStream, messages: Vec<Message<Vec<u8>>>) {
        let mut wanted = Vec::with_capacity(messages.len());
        for message in messages {
            if let Some(event) = self.wanted(stream, &message).await {
                wanted.push((message, event));
            }
        }
        match wanted.as_slice() {
            // Nothing this purpose wants (all acknowledged above): no transaction to open.
            [] => return,
            [(message, event)] => return self.handle(stream, message, event).await,
            _ => {}
        }
        let events: Vec<&Event> = wanted.iter().map(|(_, event)| event).collect();
        let mut outage = Duration::from_millis(100);
        loop {
            match self.try_apply_all(&events).await {
                Ok(fresh) => {
                    for ((message, _), fresh) in wanted.iter().zip(fresh) {
                        self.done(stream, message, fresh).await;
                    }
                    return;
                }
                Err(Failure::Handler(_)) => break,
                Err(Failure::Store(e)) => {
                    tracing::warn!(consumer = %self.name, error = %e, "store unavailable; waiting");
                    tokio::time::sleep(outage).await;
                    outage = (outage * 2).min(Duration::from_secs(5));
                }
            }
        }
        for (message, event) in &wanted {
            self.handle(stream, message, event).await;
        }
    }

    /// The message's event, if this purpose wants it; anything else is acknowledged here.
    async fn wanted(&self, stream: &mut EventStream, message: &Message<Vec<u8>>) -> Option<Event> {
        match serde_json::from_slice::<Event>(&message.payload.data) {
            Ok(event) if self.apply.wants(&event) => Some(event),
            Ok(_) => {
                let _ = stream.ack(message).await;
                None
            }
            Err(e) => {
                // Not an event at all: nothing could ever apply it, so no retries.
                tracing::error!(consumer = %self.name, error = %e, "undecodable message dropped");
                let _ = stream.ack(message).await;
                None
            }
        }
    }

    async fn handle(&self, stream: &mut EventStream, message: &Message<Vec<u8>>, event: &Event) {
        let mut outage = Duration::from_millis(100);
        loop {
            let next = match self.try_apply(event).await {
                Ok(fresh) => return self.done(stream, message, fresh).await,
                Err(Failure::Handler(e)) => self.failed(event, &e.to_string()).await,
                Err(Failure::Store(e)) => Err(e),
            };
            match next {
                Ok(Next::Retry) => outage = Duration::from_millis(100),
                Ok(Next::DeadLettered) => {
                    // Recorded: acknowledged so the subscription moves on.
                    let _ = stream.ack(message).await;
                    return;
                }
                Err(e) => {
                    // Postgres is away: nothing is counted, nothing acknowledged; wait for it.
                    tracing::warn!(consumer = %self.name, error = %e, "store unavailable; waiting");
                    tokio::time::sleep(outage).await;
                    outage = (outage * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn done(&self, stream: &mut EventStream, message: &Message<Vec<u8>>, fresh: bool) {
        self.record_lag(message);
        let (label, counter) = match fresh {
            true => ("applied", &self.stats.applied),
            false => ("duplicate", &self.stats.duplicates),
        };
        counter.fetch_add(1, AtomicOrdering::Relaxed);
        metrics::counter!("events_consumed_total", "consumer" => self.name.clone(), "outcome" => label)
            .increment(1);
        let _ = stream.ack(message).await;
    }

    /// Consumer lag: how long ago the event being finished was published.
    fn record_lag(&self, message: &Message<Vec<u8>>) {
        let published_ms = message.payload.metadata.publish_time as i64;
        let lag_ms = (chrono::Utc::now().timestamp_millis() - published_ms).max(0);
        metrics::gauge!("events_consumer_lag_seconds", "consumer" => self.name.clone())
            .set(lag_ms as f64 / 1000.0);
    }

    /// Applies the event unless the inbox already has it; answers whether it was new.
    pub async fn apply_once(&self, event: &Event) -> Result<bool, StoreError> {
        self.try_apply(event).await.map_err(|f| match f {
            Failure::Handler(e) | Failure::Store(e) => e,
        })
    }

    /// [`apply_once`](Self::apply_once) for events that arrived together, in one transaction:
    /// answers per event whether it was new; a refusing handler leaves none of them applied.
    pub async fn apply_all_once(&self, events: &[&Event]) -> Result<Vec<bool>, StoreError> {
        self.try_apply_all(events).await.map_err(|f| match f {
            Failure::Handler(e) | Failure::Store(e) => e,
        })
    }

    /// [`apply_once`](Self::apply_once), telling a failing handler (counted towards the dead
    /// letter) from an unreachable store (waited out, never counted).
    async fn try_apply(&self, event: &Event) -> Result<bool, Failure> {
        let fresh = {
            let mut client = self.pool.get().await.map_err(store_failure)?;
            let tx = client.transaction().await.map_err(store_failure)?;
            // Prepared once per pooled connection: every consumer runs it for every event.
            let record = tx
                .prepare_cached(
                    "INSERT INTO consumer_inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .await
                .map_err(store_failure)?;
            let fresh = tx
                .execute(&record, &[&self.name, &event.event_id])
                .await
                .map_err(store_failure)?
                == 1;
            if fresh {
                self.apply
                    .apply(&tx, event)
                    .await
                    .map_err(Failure::Handler)?;
            }
            tx.commit().await.map_err(store_failure)?;
            fresh
        };
        // The pooled connection is back before effects outside Postgres run.
        if fresh {
            self.apply.after_commit(event).await;
        }
        Ok(fresh)
    }

    /// [`try_apply`](Self::try_apply) for several events in one transaction: one inbox insert
    /// for all of them, then the purpose's changes for the new ones. Answers, per event, whether
    /// it was new (an event delivered twice in one batch is new only the first time).
    async fn try_apply_all(&self, events: &[&Event]) -> Result<Vec<bool>, Failure> {
        let fresh = {
            let mut client = self.pool.get().await.map_err(store_failure)?;
            let tx = client.transaction().await.map_err(store_failure)?;
            let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id).collect();
            // Prepared once per pooled connection, like the single insert.
            let record = tx
                .prepare_cached(
                    "INSERT INTO consumer_inbox (consumer, event_id)
                     SELECT $1, id FROM unnest($2::uuid[]) AS id
                     ON CONFLICT DO NOTHING RETURNING event_id",
                )
                .await
                .map_err(store_failure)?;
            let rows = tx
                .query(&record, &[&self.name, &ids])
                .await
                .map_err(store_failure)?;
            let mut new_ids: HashSet<uuid::Uuid> = rows.iter().map(|row| row.get(0)).collect();
            let fresh: Vec<bool> = ids.iter().map(|id| new_ids.remove(id)).collect();
            let applied: Vec<&Event> = events
                .iter()
                .zip(&fresh)
                .filter(|(_, fresh)| **fresh)
                .map(|(event, _)| *event)
                .collect();
            if !applied.is_empty() {
                self.apply
                    .apply_batch(&tx, &applied)
                    .await
                    .map_err(Failure::Handler)?;
            }
            tx.commit().await.map_err(store_failure)?;
            fresh
        };
        for (event, _) in events.iter().zip(&fresh).filter(|(_, fresh)| **fresh) {
            self.apply.after_commit(event).await;
        }
        Ok(fresh)
    }

    /// Records a failed attempt of the handler: try again after a doubling wait, or at
    /// `max_attempts` dead-letter the event. `Err` when the store could not record it (the
    /// caller waits for Postgres and tries again; nothing is acknowledged).
    async fn failed(&self, event: &Event, error: &str) -> Result<Next, StoreError> {
        metrics::counter!("events_redeliveries_total", "consumer" => self.name.clone())
            .increment(1);
        self.stats.failures.fetch_add(1, AtomicOrdering::Relaxed);
        let attempts = self.count_failure(event, error).await?;
        if attempts >= self.settings.max_attempts {
            self.dead_letter(event, attempts, error).await?;
            return Ok(Next::DeadLettered);
        }
        let first = self.settings.retry_backoff_ms.max(1);
        let wait = first.saturating_mul(1 << (attempts - 1).clamp(0, 10) as u64);
        tokio::time::sleep(Duration::from_millis(wait.min(30_000))).await;
        Ok(Next::Retry)
    }

    async fn count_failure(&self, event: &Event, error: &str) -> Result<i32, StoreError> {
        let row = self
            .pool
            .get()
            .await?
            .query_one(
                "INSERT INTO consumer_failures (consumer, event_id, attempts, last_error)
                 VALUES ($1, $2, 1, $3)
                 ON CONFLICT (consumer, event_id) DO UPDATE
                 SET attempts = consumer_failures.attempts + 1, last_error = $3, updated_at = now()
                 RETURNING attempts",
                &[&self.name, &event.event_id, &error],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Records the poison event, publishes it to the dead-letter topic and raises the alert.
    async fn dead_letter(
        &self,
        event: &Event,
        attempts: i32,
        error: &str,
    ) -> Result<(), StoreError> {
        let payload = serde_json::to_value(event).unwrap_or_default();
        self.pool
            .get()
            .await?
            .execute(
                "INSERT INTO dead_letters (consumer, event_id, payload, attempts, last_error)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (consumer, event_id) DO NOTHING",
                &[&self.name, &event.event_id, &payload, &attempts, &error],
            )
            .await?;
        tracing::error!(consumer = %self.name, event_id = %event.event_id, attempts, error,
            "ALERT: event dead-lettered after repeated failures");
        metrics::counter!("events_dead_letters_total", "consumer" => self.name.clone())
            .increment(1);
        self.stats
            .dead_letters
            .fetch_add(1, AtomicOrdering::Relaxed);
        if let Err(e) = self.publish_dead_letter(&payload).await {
            tracing::warn!(consumer = %self.name, error = %e, "dead letter not published (it is recorded)");
        }
        Ok(())
    }

    async fn publish_dead_letter(&self, payload: &serde_json::Value) -> Result<(), StoreError> {
        let mut producer = self
            .pulsar
            .client()
            .producer()
            .with_topic(self.pulsar.topic(DEAD_LETTER_TOPIC))
            .build()
            .await
            .map_err(StoreError::from)?;
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let receipt = producer
            .send_non_blocking(body)
            .await
            .map_err(StoreError::from)?;
        receipt.await.map(|_| ()).map_err(StoreError::from)
    }
}
