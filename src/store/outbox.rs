//! The outbox as operators see it: "MQ message records" — each order event with its send
//! status, consume status per consumer, dead letters and reconcile status.

use super::{PgPool, StoreError, audit};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// One MQ message record: an order event with its send, consume and reconcile status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MqMessage {
    /// The event's id (the consumers' dedupe key).
    pub event_id: Uuid,
    /// Event type, e.g. `OrderCreated`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Pulsar topic.
    pub topic: String,
    /// Message key (the order number).
    pub key: String,
    /// The event as published.
    pub payload: Value,
    /// `pending`, `sent` or `failed`.
    pub send_status: String,
    /// Sends tried.
    pub send_attempts: i32,
    /// The broker's message id once sent.
    pub message_id: Option<String>,
    /// `unreconciled`, `ok`, `problem` or `handled`.
    pub reconcile_status: String,
    /// Written to the outbox at.
    pub created_at: DateTime<Utc>,
    /// Accepted by the broker at.
    pub sent_at: Option<DateTime<Utc>>,
    /// Consumer name → when it processed the event.
    #[schema(value_type = Object)]
    pub consumed: Value,
    /// Consumers that gave up on it.
    #[schema(value_type = Vec<String>)]
    pub dead_lettered_by: Value,
}

/// A page of a program's messages, newest first; `status` matches the send status or the
/// reconcile status. Answers (items, total).
pub async fn page_for_program(
    pool: &PgPool,
    program_id: i64,
    status: Option<&str>,
    page: u32,
    per_page: u32,
) -> Result<(Vec<MqMessage>, i64), StoreError> {
    let offset = i64::from(page.max(1) - 1) * i64::from(per_page);
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT ob.event_id, ob.event_type, ob.topic, ob.message_key, ob.payload, ob.send_status,
                    ob.send_attempts, ob.message_id, ob.reconcile_status, ob.created_at, ob.sent_at,
                    coalesce((SELECT jsonb_object_agg(ci.consumer, ci.processed_at) FROM consumer_inbox ci
                              WHERE ci.event_id = ob.event_id), '{}'::jsonb),
                    coalesce((SELECT jsonb_agg(d.consumer) FROM dead_letters d WHERE d.event_id = ob.event_id),
                             '[]'::jsonb),
                    count(*) OVER ()
             FROM outbox ob
             WHERE ob.program_id = $1 AND ($2::text IS NULL OR ob.send_status = $2 OR ob.reconcile_status = $2)
             ORDER BY ob.id DESC LIMIT $3 OFFSET $4",
            &[&program_id, &status, &i64::from(per_page), &offset],
        )
        .await?;
    let total = rows.first().map_or(0, |r| r.get(13));
    let items = rows
        .iter()
        .map(|r| MqMessage {
            event_id: r.get(0),
            event_type: r.get(1),
            topic: r.get(2),
            key: r.get(3),
            payload: r.get(4),
            send_status: r.get(5),
            send_attempts: r.get(6),
            message_id: r.get(7),
            reconcile_status: r.get(8),
            created_at: r.get(9),
            sent_at: r.get(10),
            consumed: r.get(11),
            dead_lettered_by: r.get(12),
        })
        .collect();
    Ok((items, total))
}

/// Writes a `CatalogChanged` event for the program in the caller's transaction (an admin edit):
/// every node's catalog consumer drops its in-process copy when it arrives.
pub async fn emit_catalog_changed(
    tx: &deadpool_postgres::Transaction<'_>,
    program_id: i64,
    action: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO outbox (event_id, topic, message_key, event_type, program_id, payload)
         VALUES (gen_random_uuid(), 'order-events', 'program:' || $1::bigint::text, 'CatalogChanged',
                 $1::bigint, jsonb_build_object('program_id', $1::bigint, 'action', $2::text))",
        &[&program_id, &action],
    )
    .await?;
    Ok(())
}

/// What an operator does to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The problem was looked at and dealt with: `reconcile_status = 'handled'`.
    Handled,
    /// Send it again: back to `pending`, the relay publishes it (consumers skip what they
    /// already applied).
    Republish,
}

/// Applies `action` to the message, audit-logged in the same transaction; `false` if there is
/// no such message.
pub async fn act(
    pool: &PgPool,
    admin_user_id: i64,
    event_id: Uuid,
    action: Action,
) -> Result<bool, StoreError> {
    let (sql, name) = match action {
        Action::Handled => (
            "UPDATE outbox SET reconcile_status = 'handled' WHERE event_id = $1",
            "mq_message.handled",
        ),
        Action::Republish => (
            "UPDATE outbox SET send_status = 'pending', sent_at = NULL WHERE event_id = $1",
            "mq_message.republish",
        ),
    };
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if tx.execute(sql, &[&event_id]).await? == 0 {
        return Ok(false);
    }
    let target = format!("mq_message:{event_id}");
    audit::record(&tx, admin_user_id, name, &target, &json!({})).await?;
    if action == Action::Republish {
        tx.execute("SELECT pg_notify('outbox', '')", &[]).await?;
    }
    tx.commit().await?;
    Ok(true)
}
