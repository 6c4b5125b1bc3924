//! The outbox as operators see it: "MQ message records" — each order event with its send
//! status, consume status per consumer, dead letters and reconcile status.

use super::{PgPool, StoreError, audit};
use serde_json::{Value, json};
use uuid::Uuid;

/// A page of a program's messages, newest first; `status` matches the send status or the
/// reconcile status. Answers (items, total).
pub async fn page_for_program(
    pool: &PgPool,
    program_id: i64,
    status: Option<&str>,
    page: u32,
    per_page: u32,
) -> Result<(Vec<Value>, i64), StoreError> {
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
        .map(|r| {
            json!({
                "event_id": r.get::<_, Uuid>(0), "type": r.get::<_, String>(1), "topic": r.get::<_, String>(2),
                "key": r.get::<_, String>(3), "payload": r.get::<_, Value>(4),
                "send_status": r.get::<_, String>(5), "send_attempts": r.get::<_, i32>(6),
                "message_id": r.get::<_, Option<String>>(7), "reconcile_status": r.get::<_, String>(8),
                "created_at": r.get::<_, chrono::DateTime<chrono::Utc>>(9),
                "sent_at": r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(10),
                "consumed": r.get::<_, Value>(11), "dead_lettered_by": r.get::<_, Value>(12),
            })
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
