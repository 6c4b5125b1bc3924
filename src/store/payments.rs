//! Payment bills and refunds (ARCHITECTURE.md, "Expiry, payment, refund").
//!
//! A payment's effects — bill paid, order paid, every seat of every category sold, outbox event —
//! commit in one transaction, because an order may span categories and no single actor can make
//! them flip together; the actors are told afterwards (`actors::Applied`). A refund is the same
//! shape in reverse. Both lock the order row before any seat row, the order an actor's release
//! takes too (`inventory::apply_change_in`), so a payment racing an expiry never deadlocks: one
//! of them finds the order no longer pending and backs off.
//!
//! The order row's status is not the whole answer: an order still `pending_payment` after its
//! `expires_at` (by the database clock) only waits for its actor's timer, which may not have run
//! (actor not started, busy, or the notice raced it). A payment then expires the order itself,
//! with the release's own statements, and refunds: the buyer never gets more than the window.

use super::inventory::apply_change_in;
use super::orders::{categories_of, close_released_in, emit_in};
use super::{PgPool, StoreError};
use crate::domain::inventory::{Change, ChangeKind, SeatInfo};
use deadpool_postgres::Transaction;
use serde_json::json;
use std::collections::BTreeMap;
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
    /// The order was still pending but its payment window had passed: this transaction expired
    /// it (tickets released, `OrderExpired` written) and recorded the refund. Tell the categories
    /// about the release, then pay `due` back.
    Expired {
        /// The order.
        order_no: i64,
        /// Categories whose tickets were released.
        categories: Vec<i64>,
        /// The payment to give back (`order_expired`).
        due: RefundDue,
    },
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

/// The order's open bill on a channel, as [`open_bill`] answers it.
#[derive(Debug, Clone, Copy)]
pub struct OpenBill {
    /// Our id, the provider's `out_trade_no`.
    pub id: Uuid,
    /// Opened by this call (false: it was open already).
    pub created: bool,
}

/// The order's open bill on `channel`: a new one for `amount_cents`, or the one already open
/// (the partial unique index `payment_bills_one_open` allows one). A racing call's insert
/// conflicts and waits for the winner, then reads the winner's bill in a statement of its own
/// (a fresh snapshot: the insert's statement could not see a row committed after it began).
/// `None` when the open bill was paid between the two statements: the order is paid.
pub async fn open_bill(
    pool: &PgPool,
    order_no: i64,
    channel: &str,
    amount_cents: i64,
) -> Result<Option<OpenBill>, StoreError> {
    let client = pool.get().await?;
    let id = Uuid::new_v4();
    let inserted = client
        .execute(
            "INSERT INTO payment_bills (id, order_no, channel, amount_cents, status)
             VALUES ($1, $2, $3, $4, 'created')
             ON CONFLICT (order_no, channel) WHERE status = 'created' DO NOTHING",
            &[&id, &order_no, &channel, &amount_cents],
        )
        .await?;
    if inserted == 1 {
        return Ok(Some(OpenBill { id, created: true }));
    }
    let open = client
        .query_opt(
            "SELECT id FROM payment_bills
             WHERE order_no = $1 AND channel = $2 AND status = 'created'",
            &[&order_no, &channel],
        )
        .await?;
    Ok(open.map(|row| OpenBill {
        id: row.get(0),
        created: false,
    }))
}

/// Bills of the order still waiting for the provider (what pay-check asks about).
pub async fn open_bills(pool: &PgPool, order_no: i64) -> Result<Vec<Bill>, StoreError> {
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT id, channel FROM payment_bills
             WHERE order_no = $1 AND status IN ('created', 'superseded') ORDER BY created_at",
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
    if !is_unpaid(bill.get(3)) {
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
    let paid = PaidBill {
        payment_id,
        channel,
        amount_cents,
    };
    let outcome = settle_order(&tx, order_no, &paid).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Whether a bill in `status` can still be paid: open, or one of the extra open bills from
/// before one bill per order and channel was enforced (V13 marked them `superseded`; their
/// trades are still payable at the provider, and such money must reach the order or go back).
fn is_unpaid(status: &str) -> bool {
    matches!(status, "created" | "superseded")
}

/// The bill a notice just paid: what a refund of it needs.
struct PaidBill {
    payment_id: Uuid,
    channel: String,
    amount_cents: i64,
}

impl PaidBill {
    /// Records (`requested`) that this payment goes back, for `reason`.
    async fn refund_in(
        &self,
        tx: &Transaction<'_>,
        order_no: i64,
        reason: &str,
    ) -> Result<RefundDue, StoreError> {
        let due = RefundDue {
            refund_id: Uuid::new_v4(),
            payment_id: self.payment_id,
            channel: self.channel.clone(),
            amount_cents: self.amount_cents,
            reason: reason.to_string(),
        };
        record_refund(tx, order_no, &due).await?;
        Ok(due)
    }
}

/// What the money does to the order, decided under the order's row lock: pays it, or — if it
/// cannot take it — goes back, expiring the order first when only its timer was late.
async fn settle_order(
    tx: &Transaction<'_>,
    order_no: i64,
    paid: &PaidBill,
) -> Result<PaymentOutcome, StoreError> {
    Ok(match standing(tx, order_no).await? {
        Standing::Payable { program_id } => pay_order(tx, order_no, program_id, paid).await?,
        Standing::Overdue { program_id } => PaymentOutcome::Expired {
            order_no,
            categories: expire_overdue(tx, order_no, program_id).await?,
            due: paid.refund_in(tx, order_no, "order_expired").await?,
        },
        Standing::Closed(reason) => {
            PaymentOutcome::Refund(paid.refund_in(tx, order_no, &reason).await?)
        }
    })
}

/// Where an order stands when a payment for it arrives.
enum Standing {
    /// Pending and within its window: the payment takes it.
    Payable {
        /// Its program.
        program_id: i64,
    },
    /// Pending, but its window has passed and its expiry has not run yet.
    Overdue {
        /// Its program.
        program_id: i64,
    },
    /// It cannot take money; the refund's reason.
    Closed(String),
}

/// Locks the order row (before any seat row, as a release does) and reads where it stands.
/// "Overdue" uses the database clock, `now()`, as `close_released_in` does when it picks
/// `expired` over `cancelled`, so the two never disagree about the same order.
async fn standing(tx: &Transaction<'_>, order_no: i64) -> Result<Standing, StoreError> {
    let Some(row) = tx
        .query_opt(
            "SELECT status, program_id, expires_at <= now() FROM orders
             WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1 FOR UPDATE",
            &[&order_no],
        )
        .await?
    else {
        return Ok(Standing::Closed("unknown_order".into()));
    };
    let (status, program_id, overdue): (&str, i64, bool) = (row.get(0), row.get(1), row.get(2));
    Ok(match status {
        "pending_payment" if overdue => Standing::Overdue { program_id },
        "pending_payment" => Standing::Payable { program_id },
        "paid" => Standing::Closed("duplicate_payment".into()),
        other => Standing::Closed(format!("order_{other}")),
    })
}

/// `pending_payment → paid` for an order whose row the caller has locked: every ticket sold and
/// `OrderPaid` written.
async fn pay_order(
    tx: &Transaction<'_>,
    order_no: i64,
    program_id: i64,
    paid: &PaidBill,
) -> Result<PaymentOutcome, StoreError> {
    tx.execute(
        "UPDATE orders SET status = 'paid', paid_at = now()
         WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1",
        &[&order_no],
    )
    .await?;
    sell_tickets(tx, order_no).await?;
    let payload = json!({"order_no": order_no.to_string(), "payment_id": paid.payment_id, "amount_cents": paid.amount_cents});
    emit_in(tx, "OrderPaid", order_no, program_id, &payload).await?;
    Ok(PaymentOutcome::Paid {
        order_no,
        categories: categories_of(tx, order_no).await?,
    })
}

/// Does what the order's actors would have done at its deadline, with their statements: the
/// order closes as `expired` with one `OrderExpired` (`close_released_in`), then each category's
/// hold is released as the actor's own release change would (`apply_change_in`: seats back to
/// available, GA hold removed and `ga_taken` lowered). Answers the categories released; every
/// ticket must be released, or the transaction fails.
async fn expire_overdue(
    tx: &Transaction<'_>,
    order_no: i64,
    program_id: i64,
) -> Result<Vec<i64>, StoreError> {
    close_released_in(tx, order_no).await?;
    let releases = held_releases(tx, order_no, program_id).await?;
    for release in &releases {
        apply_change_in(tx, release).await?;
    }
    let released = releases.iter().map(|r| i64::from(r.quantity)).sum();
    expect_all_tickets(
        order_no,
        "released",
        released,
        ticket_count(tx, order_no).await?,
    )?;
    Ok(releases.iter().map(|r| r.category_id).collect())
}

/// One release per category the order holds tickets in (seats or a GA hold), in ascending
/// category id; one round trip.
async fn held_releases(
    tx: &Transaction<'_>,
    order_no: i64,
    program_id: i64,
) -> Result<Vec<Change>, StoreError> {
    let rows = tx
        .query(
            "SELECT ticket_category_id, id, row_no, col_no, price_cents, 1 FROM seats
             WHERE id IN (SELECT seat_id FROM tickets
                          WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1 AND seat_id IS NOT NULL)
               AND order_no = $1 AND status = 'held'
             UNION ALL
             SELECT ticket_category_id, NULL, NULL, NULL, NULL, quantity FROM ga_holds
             WHERE order_no = $1 AND status = 'held'
             ORDER BY 1, 3, 4",
            &[&order_no],
        )
        .await?;
    let mut by_category: BTreeMap<i64, (Vec<SeatInfo>, u32)> = BTreeMap::new();
    for r in &rows {
        let (seats, quantity) = by_category.entry(r.get(0)).or_default();
        *quantity += r.get::<_, i32>(5) as u32;
        if let Some(id) = r.get::<_, Option<i64>>(1) {
            let (row, col, price_cents) = (r.get(2), r.get(3), r.get(4));
            seats.push(SeatInfo {
                id,
                row,
                col,
                price_cents,
            });
        }
    }
    Ok(by_category
        .into_iter()
        .map(|(category, (seats, quantity))| Change {
            kind: ChangeKind::Release,
            program_id,
            category_id: category,
            order_no,
            seats,
            quantity,
            expires_at: None,
        })
        .collect())
}

/// Tickets of the order: what a release or sale of all of it must move.
async fn ticket_count(tx: &Transaction<'_>, order_no: i64) -> Result<i64, StoreError> {
    let row = tx
        .query_one(
            "SELECT count(*) FROM tickets WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1",
            &[&order_no],
        )
        .await?;
    Ok(row.get(0))
}

/// Held seats and GA holds of the order become sold; every ticket must be covered, or the
/// transaction fails (rows not where the order says they are).
async fn sell_tickets(tx: &Transaction<'_>, order_no: i64) -> Result<(), StoreError> {
    let row = tx
        .query_one(
            "WITH seats_sold AS (
                 UPDATE seats SET status = 'sold', hold_expires_at = NULL
                 WHERE id IN (SELECT seat_id FROM tickets
                              WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1 AND seat_id IS NOT NULL)
                   AND order_no = $1 AND status = 'held' RETURNING 1),
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

/// Refunds a paid order before its show time starts: `paid → refunded`, seats and GA tickets back in
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
                    coalesce((SELECT min(starts_at) FROM show_times st
                              WHERE st.program_id = o.program_id
                                AND (o.show_time_id IS NULL OR st.id = o.show_time_id)) <= now(), false)
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
                 WHERE id IN (SELECT seat_id FROM tickets
                              WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1 AND seat_id IS NOT NULL)
                   AND order_no = $1 AND status = 'sold' RETURNING 1),
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
