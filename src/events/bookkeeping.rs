//! The purposes the server runs: MQ bookkeeping (consume and reconcile status of every outbox
//! row, the operators' "MQ message records") and user notifications (the per-user [`Hub`]).

use super::Event;
use super::consumer::Apply;
use super::hub::Hub;
use crate::store::catalog_cache::CatalogCache;
use crate::store::{PgPool, StoreError};
use futures::future::BoxFuture;

/// Subscription name of the bookkeeping consumer (one per cluster).
pub const BOOKKEEPING: &str = "mq-bookkeeping";

/// Marks each consumed event `ok` when the order's stored state agrees with it and `problem`
/// otherwise (operator-handled rows stay `handled`). The consumption itself is in its inbox.
pub struct Bookkeeping;

/// The order statuses consistent with having seen `event` (later changes allowed); events that
/// are not about an order are consistent with anything (`None`).
fn consistent_statuses(event: &Event) -> Option<&'static [&'static str]> {
    if !event.is_order_event() {
        return None;
    }
    Some(order_statuses(event))
}

fn order_statuses(event: &Event) -> &'static [&'static str] {
    match event.event_type.as_str() {
        "OrderCreated" => &[
            "pending_payment",
            "paid",
            "cancelled",
            "expired",
            "refunded",
        ],
        "OrderPaid" => &["paid", "refunded"],
        "OrderCancelled" => &["cancelled"],
        "OrderExpired" => &["expired"],
        "OrderRefunded" => &["refunded"],
        _ => &[],
    }
}

impl Apply for Bookkeeping {
    fn apply<'a>(
        &'a self,
        tx: &'a deadpool_postgres::Transaction<'a>,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let Some(statuses) = consistent_statuses(event) else {
                tx.execute(
                    "UPDATE outbox SET reconcile_status = 'ok'
                     WHERE event_id = $1 AND reconcile_status <> 'handled'",
                    &[&event.event_id],
                )
                .await?;
                return Ok(());
            };
            let statuses: Vec<&str> = statuses.to_vec();
            let order_no: i64 = event.order_no.parse().unwrap_or_default();
            // Prepared once per connection, and the order named by a parameter: with the gene
            // taken from the outbox row instead, every execution was planned against all 16
            // partitions of `orders` (the largest share of Postgres time in `bench ordering`).
            let statement = tx
                .prepare_cached(
                    "UPDATE outbox ob SET reconcile_status = CASE WHEN EXISTS (
                        SELECT 1 FROM orders o WHERE o.gene = ($3::bigint & 15)::smallint
                          AND o.order_no = $3 AND o.status = ANY($2)) THEN 'ok' ELSE 'problem' END
                     WHERE ob.event_id = $1 AND ob.reconcile_status <> 'handled'",
                )
                .await?;
            tx.execute(&statement, &[&event.event_id, &statuses, &order_no])
                .await?;
            Ok(())
        })
    }

    fn apply_batch<'a>(
        &'a self,
        tx: &'a deadpool_postgres::Transaction<'a>,
        events: &'a [&'a Event],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Self::judge_all(tx, events)
    }
}

impl Bookkeeping {
    /// One statement for events that arrived together: each outbox row judged against its
    /// order, as [`Apply::apply`] does one at a time (a burst of orders costs one update, not
    /// one per event).
    fn judge_all<'a>(
        tx: &'a deadpool_postgres::Transaction<'a>,
        events: &'a [&'a Event],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id).collect();
            let orders: Vec<Option<i64>> = events
                .iter()
                .map(|e| {
                    e.is_order_event()
                        .then(|| e.order_no.parse().unwrap_or_default())
                })
                .collect();
            let statuses: Vec<Option<String>> = events
                .iter()
                .map(|e| consistent_statuses(e).map(|s| s.join(",")))
                .collect();
            // A NULL order is an event about no order (consistent with anything). Prepared once
            // per connection; the gene in the subquery prunes `orders` to one partition at run time.
            let statement = tx
                .prepare_cached(
                    "UPDATE outbox ob SET reconcile_status = CASE WHEN e.order_no IS NULL OR EXISTS (
                        SELECT 1 FROM orders o WHERE o.gene = (e.order_no & 15)::smallint
                          AND o.order_no = e.order_no
                          AND o.status = ANY(string_to_array(e.statuses, ','))) THEN 'ok' ELSE 'problem' END
                     FROM unnest($1::uuid[], $2::bigint[], $3::text[]) AS e(event_id, order_no, statuses)
                     WHERE ob.event_id = e.event_id AND ob.reconcile_status <> 'handled'",
                )
                .await?;
            tx.execute(&statement, &[&ids, &orders, &statuses]).await?;
            Ok(())
        })
    }
}

/// Hands every order event to the buyer's open channels on this process.
pub struct Notifications(pub Hub);

impl Apply for Notifications {
    fn after_commit<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        self.0.publish(event);
        Box::pin(async {})
    }

    fn wants(&self, event: &Event) -> bool {
        event.user_id.is_some()
    }
}

/// Drops this process's cached copy of a program when a `CatalogChanged` event arrives: the
/// durable backstop of the Redis broadcast (fire-and-forget: a node that was reconnecting
/// misses it), which stays as the fast path.
pub struct CatalogInvalidation(pub CatalogCache);

impl Apply for CatalogInvalidation {
    fn after_commit<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(program_id) = event.program_id {
                self.0.forget_local(program_id).await;
            }
        })
    }

    fn wants(&self, event: &Event) -> bool {
        event.event_type == "CatalogChanged"
    }
}

/// Marks `problem` every event not consumed by the bookkeeping consumer within
/// `deadline_secs` of its commit; answers how many.
pub async fn mark_unconsumed(pool: &PgPool, deadline_secs: f64) -> Result<u64, StoreError> {
    Ok(pool
        .get()
        .await?
        .execute(
            "UPDATE outbox SET reconcile_status = 'problem'
             WHERE reconcile_status = 'unreconciled' AND created_at < now() - make_interval(secs => $1)",
            &[&deadline_secs],
        )
        .await?)
}
