//! Payment bills and refunds (ARCHITECTURE.md, "Expiry, payment, refund").
//!
//! A payment's effects — bill paid, order paid, every seat of every category sold, outbox event —
//! commit in one transaction, because an order may span categories and no single actor can make
//! them flip together; the actors are told afterwards (`actors::Applied`). A refund is the same
//! shape in reverse. Both lock the order row before any seat row, the order an actor's release
//! takes too (`inventory::apply_change_in`), so a payment racing an expiry never deadlocks: one
//! of them finds the order no longer pending and backs off.

use super::orders::{categories_of, emit_in};
use super::{PgPool, StoreError};
use deadpool_postgres::Transaction;
use serde_json::json;
use uuid::Uuid;

/// A payment attempt still waiting for the provider.
#[derive(Debug, Clone)]
pub struct Bill {
    /// Our id, sent to the provider as its `out_trade_no`.
    pub id: Uuid,
    /// Provider channel.
    pub channel: String,
}

/// Money to give back, recorded (`requested`) before the provider is asked.
#[derive(Debug, Clone)]
pub struct RefundDue {
    /// The refund record, sent to the provider as its idempotency key.
    pub refund_id: Uuid,
    /// The bill paid.
    pub payment_id: Uuid,
    /// Provider channel of that bill.
    pub channel: String,
    /// Amount to return.
    pub amount_cents: i64,
    /// Why (`order_expired`, `order_cancelled`, `duplicate_payment`, `buyer_request`, ...).
    pub reason: String,
}

/// What a provider's "paid" notice did.
#[derive(Debug)]
pub enum PaymentOutcome {
    /// The order is paid now; these categories must be told.
    Paid {
        /// The order.
        order_no: i64,
        /// Categories with tickets in the order.
        categories: Vec<i64>,
    },
    /// This bill was applied before (a repeated or late duplicate notice): nothing changed.
    AlreadyApplied,
    /// The order could not take the money (closed meanwhile, or paid by another bill).
    Refund(RefundDue),
    /// The amount differs from the bill's: nothing changed.
    AmountMismatch {
        /// What the bill asked for.
        expected_cents: i64,
    },
    /// No such bill.
    UnknownBill,
}

/// What a refund request did.
#[derive(Debug)]
pub enum RefundOutcome {
    /// The order is refunded and its seats free; tell these categories, pay back `due`.
    Refunded {
        /// Categories with tickets in the order.
        categories: Vec<i64>,
        /// The bill to pay back (none if the order was paid without one).
        due: Option<RefundDue>,
    },
    /// It already was: nothing changed.
    AlreadyRefunded,
    /// Only paid orders can be refunded; this one is in the given status.
    NotPaid(String),
    /// The show has started.
    ShowStarted,
    /// No such order.
    UnknownOrder,
}

/// Opens a bill for the order's total.
pub async fn create_bill(
    pool: &PgPool,
    order_no: i64,
    channel: &str,
    amount_cents: i64,
) -> Result<Uuid, StoreError> {
    let id = Uuid::new_v4();
    pool.get()
        .await?
        .execute(
            "INSERT INTO payment_bills (id, order_no, channel, amount_cents, status) VALUES ($1, $2, $3, $4, 'created')",
            &[&id, &order_no, &channel, &amount_cents],
        )
        .await?;
    Ok(id)
}

/// Bills of the order still waiting for the provider (what pay-check asks about).
pub async fn open_bills(pool: &PgPool, order_no: i64) -> Result<Vec<Bill>, StoreError> {
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT id, channel FROM payment_bills
             WHERE order_no = $1 AND status = 'created' ORDER BY created_at",
            &[&order_no],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Bill {
            id: r.get(0),
            channel: r.get(1),
        })
        .collect())
}

/// Refunds recorded at least `older_than_secs` ago but not yet confirmed by the provider — of
/// one order (pay-check) or of all (the background retry), oldest first, at most 100.
pub async fn requested_refunds(
    pool: &PgPool,
    order_no: Option<i64>,
    older_than_secs: i64,
) -> Result<Vec<RefundDue>, StoreError> {
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT r.id, r.payment_id, b.channel, r.amount_cents, r.reason
             FROM refunds r JOIN payment_bills b ON b.id = r.payment_id
             WHERE r.status = 'requested' AND ($1::bigint IS NULL OR r.order_no = $1)
               AND r.created_at <= now() - make_interval(secs => $2::bigint)
             ORDER BY r.created_at LIMIT 100",
            &[&order_no, &older_than_secs],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| RefundDue {
            refund_id: r.get(0),
            payment_id: r.get(1),
            channel: r.get(2),
            amount_cents: r.get(3),
            reason: r.get(4),
        })
        .collect())
}

/// Applies a provider's "paid" notice for bill `payment_id`. Idempotent: a bill is applied once.
pub async fn apply_payment(
    pool: &PgPool,
    payment_id: Uuid,
    trade_no: &str,
    amount_cents: i64,
) -> Result<PaymentOutcome, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let Some(bill) = tx
        .query_opt(
            "SELECT order_no, channel, amount_cents, status FROM payment_bills WHERE id = $1 FOR UPDATE",
            &[&payment_id],
        )
        .await?
    else {
        return Ok(PaymentOutcome::UnknownBill);
    };
    let (order_no, channel, expected): (i64, String, i64) = (bill.get(0), bill.get(1), bill.get(2));
    if bill.get::<_, &str>(3) != "created" {
        return Ok(PaymentOutcome::AlreadyApplied);
    }
    if amount_cents != expected {
        return Ok(PaymentOutcome::AmountMismatch {
            expected_cents: expected,
        });
    }
    tx.execute(
        "UPDATE payment_bills SET status = 'paid', trade_no = $2, paid_at = now() WHERE id = $1",
        &[&payment_id, &trade_no],
    )
    .await?;
    let outcome = match mark_order_paid(&tx, order_no).await? {
        Some(program_id) => {
            sell_tickets(&tx, order_no).await?;
            let payload = json!({"order_no": order_no.to_string(), "payment_id": payment_id, "amount_cents": amount_cents});
            emit_in(&tx, "OrderPaid", order_no, program_id, &payload).await?;
            PaymentOutcome::Paid {
                order_no,
                categories: categories_of(&tx, order_no).await?,
            }
        }
        None => {
            let reason = closed_reason(&tx, order_no).await?;
            let due = RefundDue {
                refund_id: Uuid::new_v4(),
                payment_id,
                channel,
                amount_cents,
                reason,
            };
            record_refund(&tx, order_no, &due).await?;
            PaymentOutcome::Refund(due)
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// `pending_payment → paid`; the program id if it happened.
async fn mark_order_paid(tx: &Transaction<'_>, order_no: i64) -> Result<Option<i64>, StoreError> {
    let row = tx
        .query_opt(
            "UPDATE orders SET status = 'paid', paid_at = now()
             WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1 AND status = 'pending_payment'
             RETURNING program_id",
            &[&order_no],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Why an order that is not pending cannot take a payment.
async fn closed_reason(tx: &Transaction<'_>, order_no: i64) -> Result<String, StoreError> {
    let status: Option<String> = tx
        .query_opt(
            "SELECT status FROM orders WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1",
            &[&order_no],
        )
        .await?
        .map(|r| r.get(0));
    Ok(match status.as_deref() {
        Some("paid") => "duplicate_payment".into(),
        Some(other) => format!("order_{other}"),
        None => "unknown_order".into(),
    })
}

/// Held seats and GA holds of the order become sold; every ticket must be covered, or the
/// transaction fails (rows not where the order says they are).
async fn sell_tickets(tx: &Transaction<'_>, order_no: i64) -> Result<(), StoreError> {
    let row = tx
        .query_one(
            "WITH seats_sold AS (
                 UPDATE seats SET status = 'sold', hold_expires_at = NULL
                 WHERE order_no = $1 AND status = 'held' RETURNING 1),
             ga_sold AS (
                 UPDATE ga_holds SET status = 'sold'
                 WHERE order_no = $1 AND status = 'held' RETURNING quantity)
             SELECT (SELECT count(*) FROM seats_sold) + (SELECT coalesce(sum(quantity), 0) FROM ga_sold),
                    (SELECT count(*) FROM tickets WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1)",
            &[&order_no],
        )
        .await?;
    expect_all_tickets(order_no, "sold", row.get::<_, i64>(0), row.get(1))
}

fn expect_all_tickets(
    order_no: i64,
    what: &str,
    moved: i64,
    tickets: i64,
) -> Result<(), StoreError> {
    if moved == tickets {
        return Ok(());
    }
    Err(StoreError::Conflict(format!(
        "order {order_no}: {moved} of {tickets} tickets {what}"
    )))
}

async fn record_refund(
    tx: &Transaction<'_>,
    order_no: i64,
    due: &RefundDue,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO refunds (id, order_no, payment_id, amount_cents, reason, status)
         VALUES ($1, $2, $3, $4, $5, 'requested')",
        &[
            &due.refund_id,
            &order_no,
            &due.payment_id,
            &due.amount_cents,
            &due.reason,
        ],
    )
    .await?;
    Ok(())
}

/// Refunds a paid order before its first show: `paid → refunded`, seats and GA tickets back in
/// the pool, a refund record for the paid bill, an outbox event. Idempotent.
pub async fn refund_order(
    pool: &PgPool,
    order_no: i64,
    reason: &str,
) -> Result<RefundOutcome, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let Some(order) = tx
        .query_opt(
            "SELECT o.status, o.program_id,
                    coalesce((SELECT min(starts_at) FROM show_times st WHERE st.program_id = o.program_id) <= now(), false)
             FROM orders o WHERE o.gene = ($1::bigint & 15)::smallint AND o.order_no = $1 FOR UPDATE OF o",
            &[&order_no],
        )
        .await?
    else {
        return Ok(RefundOutcome::UnknownOrder);
    };
    let (status, program_id, started): (String, i64, bool) =
        (order.get(0), order.get(1), order.get(2));
    match status.as_str() {
        "refunded" => return Ok(RefundOutcome::AlreadyRefunded),
        "paid" if started => return Ok(RefundOutcome::ShowStarted),
        "paid" => {}
        _ => return Ok(RefundOutcome::NotPaid(status)),
    }
    tx.execute(
        "UPDATE orders SET status = 'refunded', closed_at = now()
         WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1",
        &[&order_no],
    )
    .await?;
    return_tickets(&tx, order_no).await?;
    let due = refund_paid_bill(&tx, order_no, reason).await?;
    let payload = json!({"order_no": order_no.to_string(), "reason": reason});
    emit_in(&tx, "OrderRefunded", order_no, program_id, &payload).await?;
    let categories = categories_of(&tx, order_no).await?;
    tx.commit().await?;
    Ok(RefundOutcome::Refunded { categories, due })
}

/// Sold seats and GA tickets of the order go back to the pool (the GA counter too).
async fn return_tickets(tx: &Transaction<'_>, order_no: i64) -> Result<(), StoreError> {
    let row = tx
        .query_one(
            "WITH seats_back AS (
                 UPDATE seats SET status = 'available', order_no = NULL
                 WHERE order_no = $1 AND status = 'sold' RETURNING 1),
             ga_back AS (
                 DELETE FROM ga_holds WHERE order_no = $1 AND status = 'sold'
                 RETURNING ticket_category_id, quantity),
             counters AS (
                 UPDATE ticket_categories tc SET ga_taken = tc.ga_taken - g.quantity
                 FROM ga_back g WHERE tc.id = g.ticket_category_id RETURNING g.quantity)
             SELECT (SELECT count(*) FROM seats_back) + (SELECT coalesce(sum(quantity), 0) FROM counters),
                    (SELECT count(*) FROM tickets WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1)",
            &[&order_no],
        )
        .await?;
    expect_all_tickets(order_no, "returned", row.get::<_, i64>(0), row.get(1))
}

/// Records the refund of the bill that paid the order, if one did.
async fn refund_paid_bill(
    tx: &Transaction<'_>,
    order_no: i64,
    reason: &str,
) -> Result<Option<RefundDue>, StoreError> {
    let Some(bill) = tx
        .query_opt(
            "SELECT id, channel, amount_cents FROM payment_bills
             WHERE order_no = $1 AND status = 'paid' ORDER BY paid_at LIMIT 1 FOR UPDATE",
            &[&order_no],
        )
        .await?
    else {
        return Ok(None);
    };
    let due = RefundDue {
        refund_id: Uuid::new_v4(),
        payment_id: bill.get(0),
        channel: bill.get(1),
        amount_cents: bill.get(2),
        reason: reason.to_string(),
    };
    record_refund(tx, order_no, &due).await?;
    Ok(Some(due))
}

/// The provider confirmed the refund: the record succeeds and its bill is refunded.
pub async fn refund_confirmed(pool: &PgPool, due: &RefundDue) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "UPDATE refunds SET status = 'succeeded' WHERE id = $1",
        &[&due.refund_id],
    )
    .await?;
    tx.execute(
        "UPDATE payment_bills SET status = 'refunded' WHERE id = $1",
        &[&due.payment_id],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
