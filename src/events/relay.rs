//! The outbox relay: committed `outbox` rows → Pulsar `order-events`, at least once, in commit
//! order per order.
//!
//! - **One relay at a time.** A process publishes only while it holds a Postgres advisory lock
//!   on a connection of its own; the lock dies with that connection, so when a process dies
//!   another takes over within `events.lease_retry_ms`. Every query of the relay runs on that
//!   same connection: a relay that lost its lease cannot mark anything.
//! - **No row is ever skipped.** The relay does not keep a high-water mark of ids (sequence
//!   values are handed out before commit, so a row with a lower id can commit after a higher one
//!   was published). It selects rows by `send_status`, so a row that commits late is simply
//!   pending in a later round.
//! - **Order per order.** Each round takes, per order, only its oldest unsent row (an order's
//!   later events commit after its earlier ones: they lock the same order row). A later event
//!   leaves only once the broker acknowledged the earlier one, so even a failed send cannot
//!   reorder an order's events.
//! - **Batched.** A round's messages are sent 100 at a time (the client's outbound queue), each
//!   hundred before any of its receipts is awaited; rows are marked `sent` (with the broker's
//!   message id) in one statement once their receipts arrived.
//! - **Wakes on commit.** `LISTEN outbox` (a statement trigger notifies) wakes it; a slow poll
//!   (`events.relay_poll_ms`) is only a safety net. While the broker is away it retries with
//!   doubling waits up to `events.relay_backoff_max_ms`; the outbox keeps everything meanwhile.

use super::Event;
use crate::config::EventSettings;
use crate::store::pulsar::ORDER_EVENTS;
use crate::store::{PulsarStore, StoreError};
use futures::StreamExt;
use pulsar::{Producer, TokioExecutor, producer};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// The advisory-lock key every relay of one database competes for.
const LEASE_KEY: i64 = 0x626f_786f_6666_6963; // "boxoffic"

/// What the relay needs; built once per process.
#[derive(Clone)]
pub struct Relay {
    /// Timings and batch size.
    pub settings: EventSettings,
    /// How to open the relay's own connection (it holds the lease).
    pub pg_config: tokio_postgres::Config,
    /// The broker.
    pub pulsar: PulsarStore,
}

/// A connection of the relay's own, with a wake-up for every `NOTIFY outbox`.
struct Session {
    client: Client,
    wake: Arc<Notify>,
    closed: watch::Receiver<bool>,
}

impl Relay {
    /// Runs until `stop` turns true: take the lease, publish while holding it, take it again
    /// after losing it.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let retry = Duration::from_millis(self.settings.lease_retry_ms.max(50));
        while !super::stopping(&stop) {
            match self.hold_lease().await {
                Ok(Some(session)) => self.publish_while_leased(session, &mut stop).await,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "outbox relay could not reach Postgres"),
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// A session holding the lease and listening, or `None` if another process holds it.
    async fn hold_lease(&self) -> Result<Option<Session>, StoreError> {
        let (client, mut connection) = self.pg_config.connect(NoTls).await?;
        let wake = Arc::new(Notify::new());
        let (closed_tx, closed) = watch::channel(false);
        let woken = wake.clone();
        // Drives the connection and turns notifications into wake-ups; ends with the connection.
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if matches!(message, AsyncMessage::Notification(_)) {
                    woken.notify_one();
                }
            }
            let _ = closed_tx.send(true);
        });
        let leased: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEASE_KEY])
            .await?
            .get(0);
        if !leased {
            return Ok(None);
        }
        client.batch_execute("LISTEN outbox").await?;
        tracing::info!("outbox relay holds the lease");
        Ok(Some(Session {
            client,
            wake,
            closed,
        }))
    }

    async fn publish_while_leased(&self, mut session: Session, stop: &mut watch::Receiver<bool>) {
        let mut producer: Option<Producer<TokioExecutor>> = None;
        let mut backoff = Duration::from_millis(100);
        let poll = Duration::from_millis(self.settings.relay_poll_ms.max(10));
        while !super::stopping(stop) && !*session.closed.borrow() {
            match self.round(&session.client, &mut producer).await {
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    if n > 0 {
                        // More may be waiting: a full batch left rows behind, and an order's
                        // next event becomes eligible only now that its previous one is sent.
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, wait_ms = backoff.as_millis() as u64, "outbox relay round failed; retrying");
                    producer = None;
                    wait_or_stop(backoff, stop, &mut session.closed).await;
                    let max = Duration::from_millis(self.settings.relay_backoff_max_ms.max(100));
                    backoff = (backoff * 2).min(max);
                    continue;
                }
            }
            tokio::select! {
                _ = session.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {}
                _ = session.closed.changed() => {}
            }
        }
        tracing::info!("outbox relay left its lease");
    }

    /// Publishes one batch; answers how many rows were marked sent.
    async fn round(
        &self,
        client: &Client,
        producer: &mut Option<Producer<TokioExecutor>>,
    ) -> Result<usize, StoreError> {
        let events = pending(client, self.settings.relay_batch).await?;
        record_backlog(client).await?;
        if events.is_empty() {
            return Ok(0);
        }
        if producer.is_none() {
            *producer = Some(self.producer().await?);
        }
        let Some(p) = producer.as_mut() else {
            return Ok(0);
        };
        let (sent, failed) = publish(p, &events).await;
        mark(client, &sent, &failed).await?;
        metrics::counter!("outbox_published_total").increment(sent.len() as u64);
        match failed.is_empty() {
            true => Ok(sent.len()),
            false => Err(StoreError::PulsarSends {
                failed: failed.len(),
                attempted: events.len(),
            }),
        }
    }

    async fn producer(&self) -> Result<Producer<TokioExecutor>, StoreError> {
        self.pulsar
            .client()
            .producer()
            .with_topic(self.pulsar.topic(ORDER_EVENTS))
            .build()
            .await
            .map_err(StoreError::from)
    }
}

async fn wait_or_stop(
    wait: Duration,
    stop: &mut watch::Receiver<bool>,
    closed: &mut watch::Receiver<bool>,
) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = stop.changed() => {}
        _ = closed.changed() => {}
    }
}

/// An outbox row on its way out.
pub(crate) struct Outgoing {
    /// The outbox row.
    pub(crate) id: i64,
    key: String,
    event: Event,
}

/// Unsent rows, oldest first, at most one per order: the oldest unsent one of each.
/// (`bench events` runs its one-at-a-time baseline on this same selection.)
pub(crate) async fn pending(client: &Client, limit: i64) -> Result<Vec<Outgoing>, StoreError> {
    let rows = client
        .query(
            "SELECT ob.id, ob.message_key, ob.event_id, ob.event_type, ob.order_no, ob.program_id,
                    ob.created_at, ob.payload, o.user_id
             FROM outbox ob
             LEFT JOIN orders o ON o.gene = (ob.order_no & 15)::smallint AND o.order_no = ob.order_no
             WHERE ob.send_status <> 'sent'
               AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.order_no = ob.order_no
                               AND e.send_status <> 'sent' AND e.id < ob.id)
             ORDER BY ob.id LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Outgoing {
            id: r.get(0),
            key: r.get(1),
            event: Event {
                event_id: r.get(2),
                event_type: r.get(3),
                order_no: r
                    .get::<_, Option<i64>>(4)
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                program_id: r.get(5),
                occurred_at: r.get(6),
                data: r.get(7),
                user_id: r.get(8),
            },
        })
        .collect())
}

/// The `pulsar` client's outbound queue per connection (its default `outbound_channel_size`):
/// a send beyond this many unwritten messages fails with `SlowDown`.
const OUTBOUND_QUEUE: usize = 100;

/// Sends the events in chunks of [`OUTBOUND_QUEUE`], each chunk all at once before any of its
/// receipts is awaited: (sent row ids with message ids, failed ids).
///
/// Not the whole round at once: a round of `relay_batch` (500) sends overran the client's
/// queue whenever the socket lagged, those rows failed with `SlowDown`, and every busy round
/// ended in the error backoff (`bench events` measured the relay at 0.08× one send at a
/// time). A chunk's receipts prove its messages left the queue, so the next chunk fits. Not the
/// client's blocking mode either: a send blocked on a stalled connection has no deadline, while
/// receipts time out.
async fn publish(
    producer: &mut Producer<TokioExecutor>,
    events: &[Outgoing],
) -> (Vec<(i64, String)>, Vec<i64>) {
    let (mut sent, mut failed) = (Vec::with_capacity(events.len()), Vec::new());
    for chunk in events.chunks(OUTBOUND_QUEUE) {
        let mut receipts = Vec::with_capacity(chunk.len());
        for out in chunk {
            match producer.send_non_blocking(message(out)).await {
                Ok(receipt) => receipts.push((out.id, receipt)),
                Err(e) => {
                    tracing::warn!(id = out.id, error = %e, "outbox row not sent");
                    failed.push(out.id);
                }
            }
        }
        settle(receipts, &mut sent, &mut failed).await;
    }
    (sent, failed)
}

/// Awaits the receipts, sorting their rows into sent (with the message id) and failed.
async fn settle(
    receipts: Vec<(i64, producer::SendFuture)>,
    sent: &mut Vec<(i64, String)>,
    failed: &mut Vec<i64>,
) {
    let answers = futures::future::join_all(
        receipts
            .into_iter()
            .map(|(id, r)| async move { (id, r.await) }),
    )
    .await;
    for (id, answer) in answers {
        match answer {
            Ok(receipt) => sent.push((id, message_id(&receipt))),
            Err(_) => failed.push(id),
        }
    }
}

/// The Pulsar message of an outbox row: the event as JSON, keyed by order.
pub(crate) fn message(out: &Outgoing) -> producer::Message {
    producer::Message {
        payload: serde_json::to_vec(&out.event).unwrap_or_default(),
        partition_key: Some(out.key.clone()),
        event_time: Some(out.event.occurred_at.timestamp_millis() as u64),
        ..Default::default()
    }
}

/// The broker's id of a published message, `ledger:entry`, as stored in `outbox.message_id`.
pub(crate) fn message_id(receipt: &pulsar::CommandSendReceipt) -> String {
    receipt
        .message_id
        .as_ref()
        .map(|m| format!("{}:{}", m.ledger_id, m.entry_id))
        .unwrap_or_default()
}

/// Marks what the broker acknowledged and counts the attempts of what it did not.
pub(crate) async fn mark(
    client: &Client,
    sent: &[(i64, String)],
    failed: &[i64],
) -> Result<(), StoreError> {
    let (ids, message_ids): (Vec<i64>, Vec<String>) = sent.iter().cloned().unzip();
    client
        .execute(
            "UPDATE outbox o SET send_status = 'sent', sent_at = now(), message_id = m.message_id,
                    send_attempts = send_attempts + 1
             FROM unnest($1::bigint[], $2::text[]) AS m (id, message_id) WHERE o.id = m.id",
            &[&ids, &message_ids],
        )
        .await?;
    if !failed.is_empty() {
        client
            .execute(
                "UPDATE outbox SET send_attempts = send_attempts + 1 WHERE id = ANY($1)",
                &[&failed],
            )
            .await?;
    }
    Ok(())
}

/// Outbox backlog and the age of its oldest row, for `/metrics`.
async fn record_backlog(client: &Client) -> Result<(), StoreError> {
    let row = client
        .query_one(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
             FROM outbox WHERE send_status <> 'sent'",
            &[],
        )
        .await?;
    metrics::gauge!("outbox_backlog").set(row.get::<_, i64>(0) as f64);
    metrics::gauge!("outbox_oldest_unsent_seconds").set(row.get::<_, f64>(1));
    Ok(())
}
