//! Orders and their tickets. Orders and tickets are partitioned by the order-number gene
//! (`order_no & 15 == user_id & 15`); every query here names the gene, so a lookup by order number
//! and a listing by user each touch one partition.

use super::{PgPool, StoreError};
use crate::domain::inventory::Change;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

/// One ticket of a new order.
#[derive(Debug, Clone)]
pub struct NewTicket {
    /// The tier.
    pub ticket_category_id: i64,
    /// The real-name holder.
    pub ticket_buyer_id: i64,
    /// The seat, for seated tiers.
    pub seat_id: Option<i64>,
    /// Price in minor units.
    pub price_cents: i64,
}

/// The stored answer of an idempotent request.
#[derive(Debug, Clone)]
pub struct IdempotentResult {
    /// The `Idempotency-Key` header.
    pub key: String,
    /// Hash of the request body.
    pub request_hash: Vec<u8>,
    /// Status to replay.
    pub status: u16,
    /// Body to replay, byte for byte.
    pub body: Vec<u8>,
    /// How long the answer is replayed; a key older than this starts a fresh order.
    pub ttl_secs: f64,
}

/// Everything one new order writes, in one transaction (the group-commit writer's job).
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    /// Its number (carries the buyer's gene).
    pub order_no: i64,
    /// The buyer.
    pub user_id: i64,
    /// The program.
    pub program_id: i64,
    /// The show time its tickets are for (each show time sells its own categories).
    pub show_time_id: Option<i64>,
    /// Sum of the tickets' prices.
    pub total_cents: i64,
    /// End of the payment window.
    pub expires_at: DateTime<Utc>,
    /// Tickets, in line order.
    pub tickets: Vec<NewTicket>,
    /// The actors' reserved changes (seat rows / GA counters) to write with it.
    pub changes: Vec<Change>,
    /// Most live tickets the buyer may hold for the program (checked in the transaction).
    pub per_account_limit: i32,
    /// The response to store under the request's idempotency key.
    pub idempotency: IdempotentResult,
}

/// Writes one order event to the outbox inside the caller's transaction; the relay publishes it.
pub async fn emit_in(
    tx: &deadpool_postgres::Transaction<'_>,
    event_type: &str,
    order_no: i64,
    program_id: i64,
    payload: &serde_json::Value,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO outbox (event_id, topic, message_key, event_type, order_no, program_id, payload)
         VALUES (gen_random_uuid(), 'order-events', $1::bigint::text, $2, $1, $3, $4)",
        &[&order_no, &event_type, &program_id, payload],
    )
    .await?;
    Ok(())
}

/// Closes a pending order whose seats a release just freed, in the release's transaction:
/// `expired` if its payment window has passed, `cancelled` otherwise, with one outbox event.
/// A no-op for orders already closed (another category's release got there first) or unknown.
pub async fn close_released_in(
    tx: &deadpool_postgres::Transaction<'_>,
    order_no: i64,
) -> Result<(), StoreError> {
    // The writer's set-wise statement, for one order.
    tx.execute(super::batch::CLOSE_RELEASED, &[&vec![order_no]])
        .await?;
    Ok(())
}

/// The seat of a ticket, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SeatRef {
    /// Seat id.
    pub id: i64,
    /// Row, 1 nearest the stage.
    pub row: i32,
    /// Column, from 1.
    pub col: i32,
}

/// One ticket of an order, as the API shows it (the 201 of placing and every later read).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TicketView {
    /// The real-name holder.
    pub ticket_buyer_id: i64,
    /// The tier.
    pub ticket_category_id: i64,
    /// The seat; `null` in general admission.
    pub seat: Option<SeatRef>,
    /// Price in minor units.
    pub price_cents: i64,
}

/// What every view of an order shows first (flattened into each).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderHead {
    /// 63-bit number, as a string (JSON numbers lose precision past 2^53).
    pub order_no: String,
    /// Program.
    pub program_id: i64,
    /// The show time the tickets are for.
    pub show_time_id: Option<i64>,
    /// `pending_payment`, `paid`, `cancelled`, `expired` or `refunded`.
    pub status: String,
    /// Sum of ticket prices.
    pub total_cents: i64,
    /// End of the payment window.
    pub expires_at: DateTime<Utc>,
}

/// The 201 body of `POST /api/v1/orders` (status `pending_payment`), stored under the
/// `Idempotency-Key` and replayed byte for byte.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderPlaced {
    /// Number, status, total, payment window.
    #[serde(flatten)]
    pub head: OrderHead,
    /// Tickets in line order.
    pub tickets: Vec<TicketView>,
}

/// One order of the caller's list (without tickets).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderSummary {
    /// Number, status, total, payment window.
    #[serde(flatten)]
    pub head: OrderHead,
    /// Placed at.
    pub created_at: DateTime<Utc>,
}

/// An order with its tickets, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    /// Number, status, total, payment window.
    #[serde(flatten)]
    pub head: OrderHead,
    /// Owner.
    pub user_id: i64,
    /// Placed at.
    pub created_at: DateTime<Utc>,
    /// Tickets in line order.
    pub tickets: Vec<TicketView>,
}

/// The head of an order from a row with program, status, total and window in columns 1 to 4
/// and the show time in `show_time_column`.
fn head_of(row: &tokio_postgres::Row, order_no: i64, show_time_column: usize) -> OrderHead {
    OrderHead {
        order_no: order_no.to_string(),
        program_id: row.get(1),
        show_time_id: row.get(show_time_column),
        status: row.get(2),
        total_cents: row.get(3),
        expires_at: row.get(4),
    }
}

/// One order by number (one partition), with its tickets and seats.
pub async fn find(pool: &PgPool, order_no: i64) -> Result<Option<OrderView>, StoreError> {
    let client = pool.get().await?;
    let Some(o) = client
        .query_opt(
            "SELECT user_id, program_id, status, total_cents, expires_at, created_at, show_time_id
             FROM orders WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1",
            &[&order_no],
        )
        .await?
    else {
        return Ok(None);
    };
    let tickets = client
        .query(
            "SELECT t.ticket_buyer_id, t.ticket_category_id, t.price_cents, s.id, s.row_no, s.col_no
             FROM tickets t LEFT JOIN seats s ON s.id = t.seat_id
             WHERE t.gene = ($1::bigint & 15)::smallint AND t.order_no = $1 ORDER BY t.line_no",
            &[&order_no],
        )
        .await?;
    Ok(Some(OrderView {
        head: head_of(&o, order_no, 6),
        user_id: o.get(0),
        created_at: o.get(5),
        tickets: tickets
            .iter()
            .map(|t| TicketView {
                ticket_buyer_id: t.get(0),
                ticket_category_id: t.get(1),
                price_cents: t.get(2),
                seat: t.get::<_, Option<i64>>(3).map(|id| SeatRef {
                    id,
                    row: t.get(4),
                    col: t.get(5),
                }),
            })
            .collect(),
    }))
}

/// The categories an order has tickets in (to address their actors); on a pooled client or
/// inside a transaction.
pub async fn categories_of(
    client: &impl deadpool_postgres::GenericClient,
    order_no: i64,
) -> Result<Vec<i64>, StoreError> {
    let rows = client
        .query(
            "SELECT DISTINCT ticket_category_id FROM tickets
             WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1 ORDER BY 1",
            &[&order_no],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A page of the user's orders, newest first (one partition).
pub async fn list_for_user(
    pool: &PgPool,
    user_id: i64,
    status: Option<&str>,
    page: u32,
    per_page: u32,
) -> Result<(Vec<OrderSummary>, i64), StoreError> {
    let offset = i64::from(page.max(1) - 1) * i64::from(per_page);
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT order_no, program_id, status, total_cents, expires_at, created_at, count(*) OVER (),
                    show_time_id
             FROM orders WHERE gene = ($1::bigint & 15)::smallint AND user_id = $1 AND ($2::text IS NULL OR status = $2)
             ORDER BY created_at DESC, order_no DESC LIMIT $3 OFFSET $4",
            &[&user_id, &status, &i64::from(per_page), &offset],
        )
        .await?;
    let total = rows.first().map_or(0, |r| r.get(6));
    let items = rows
        .iter()
        .map(|r| OrderSummary {
            head: head_of(r, r.get(0), 7),
            created_at: r.get(5),
        })
        .collect();
    Ok((items, total))
}

/// Records an attempt that took seats but could not be completed (admin "discarded orders").
pub async fn record_discarded(
    pool: &PgPool,
    o: &PlaceOrder,
    reason: &str,
) -> Result<(), StoreError> {
    record_discarded_at(pool, o, reason, None).await
}

/// [`record_discarded`] with the time the attempt was discarded (now when `None`), for records
/// written late: kept while Postgres was unreachable. Writing one twice keeps one row.
pub async fn record_discarded_at(
    pool: &PgPool,
    o: &PlaceOrder,
    reason: &str,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), StoreError> {
    let tickets: Vec<serde_json::Value> = o
        .tickets
        .iter()
        .map(|t| json!({"ticket_category_id": t.ticket_category_id, "ticket_buyer_id": t.ticket_buyer_id, "seat_id": t.seat_id, "price_cents": t.price_cents}))
        .collect();
    pool.get()
        .await?
        .execute(
            "INSERT INTO discarded_orders (order_no, user_id, program_id, reason, tickets, created_at)
             VALUES ($1, $2, $3, $4, $5, COALESCE($6, now()))
             ON CONFLICT (order_no) DO NOTHING",
            &[&o.order_no, &o.user_id, &o.program_id, &reason, &json!(tickets), &at],
        )
        .await?;
    Ok(())
}
