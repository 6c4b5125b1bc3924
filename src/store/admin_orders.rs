//! A program's orders and discarded orders as operators see them (API.md, "Admin"; DOMAIN.md,
//! "The operations console"): each order with its tickets, the steps it went through — which
//! store each step touched and when — and its reconciliation status.
//!
//! Steps are derived from what is stored; nothing is recorded for this list alone, so the order
//! path pays nothing for it. In lifecycle order (the tie-break when two steps share a time, as
//! the steps of one transaction do — `now()` is the transaction's start):
//!
//! | step                | store      | at                                   | from |
//! |---------------------|------------|--------------------------------------|------|
//! | `received`          | `redis`    | order `created_at`                   | the order gate (token, rate limits, idempotency marker) let it in |
//! | `reserved`          | `actor`    | order `created_at`                   | the category actors reserved its seats in memory |
//! | `committed`         | `postgres` | order `created_at`                   | the group-commit writer wrote order, tickets, seats |
//! | `payment_started`   | `provider` | `payment_bills.created_at`           | a bill was opened and a trade started (`status` = bill status, `payment_id`) |
//! | `payment_confirmed` | `provider` | `payment_bills.paid_at`              | the provider said the bill was paid (callback or pay-check) |
//! | `paid`              | `postgres` | order `paid_at`                      | the order and its seats became paid/sold |
//! | `cancelled`         | `postgres` | order `closed_at`                    | closed by the buyer; seats released |
//! | `expired`           | `postgres` | order `closed_at`                    | closed when its payment window ran out; seats released |
//! | `refund_requested`  | `provider` | `refunds.created_at`                 | money sent back (`status` = requested/succeeded/failed) |
//! | `refunded`          | `postgres` | order `closed_at`                    | the order was refunded; seats released |
//! | `event_recorded`    | `postgres` | `outbox.created_at`                  | an order event written to the outbox (`event_type`, `event_id`, `status` = send status) |
//! | `published`         | `pulsar`   | `outbox.sent_at`                     | the relay published that event |
//! | `consumed`          | `pulsar`   | `consumer_inbox.processed_at`        | MQ bookkeeping consumed it (`consumer`, `status` = the event's reconcile status) |
//! | `dead_lettered`     | `pulsar`   | `dead_letters.created_at`            | a consumer gave up on it (`consumer`) |
//!
//! `published` is when the relay recorded the broker's receipt (`sent_at`); a quick consumer
//! can record its consumption a moment before that, so `consumed` may come first.
//! The times of `received` and `reserved` are the commit's: those steps leave no row of their
//! own, and an order that never committed is not an order (it is a discarded order, below).
//! `consumed` names the `mq-bookkeeping` consumer only — the one whose verdict is the event's
//! reconcile status (looked up by its primary key; per-process notification consumers are not
//! operators' business).
//!
//! `reconcile_status` (DOMAIN.md's vocabulary): the gravest of the order's reconciliation
//! findings and of its events' reconcile statuses (any `problem` → `reconciled_with_problem`;
//! anything still unchecked → `unreconciled`; an operator handled one → `problem_handled`;
//! otherwise `reconciled_ok`).
//!
//! Orders have no index on `program_id` (dropped for the write path, V9): this list scans, which
//! an operator's page can afford; an order-number or user filter names one partition.

use super::{PgPool, StoreError};
use crate::events::bookkeeping::BOOKKEEPING;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use tokio_postgres::Row;
use uuid::Uuid;

/// Order statuses a filter may name (the `orders.status` CHECK).
pub const ORDER_STATUSES: [&str; 5] = [
    "pending_payment",
    "paid",
    "cancelled",
    "expired",
    "refunded",
];

/// Which of a program's orders to list; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// One of [`ORDER_STATUSES`].
    pub status: Option<String>,
    /// The buyer's account.
    pub user_id: Option<i64>,
    /// One order.
    pub order_no: Option<i64>,
}

/// One order of the operators' list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminOrder {
    /// Serialized as a string: 63-bit numbers do not survive JavaScript's numbers.
    #[serde(serialize_with = "as_string")]
    #[schema(value_type = String)]
    pub order_no: i64,
    /// The buyer's account.
    pub user_id: i64,
    /// The program.
    pub program_id: i64,
    /// The show time its tickets are for.
    pub show_time_id: Option<i64>,
    /// `pending_payment | paid | cancelled | expired | refunded`.
    pub status: String,
    /// Total in minor units.
    pub total_cents: i64,
    /// When it was committed.
    pub created_at: DateTime<Utc>,
    /// End of its payment window.
    pub expires_at: DateTime<Utc>,
    /// When it was paid, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<DateTime<Utc>>,
    /// When it was cancelled, expired or refunded, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    /// Its tickets, in line order.
    pub tickets: Vec<AdminTicket>,
    /// How it was processed, in time order (see the module doc).
    pub steps: Vec<Step>,
    /// `unreconciled | reconciled_with_problem | reconciled_ok | problem_handled`.
    pub reconcile_status: String,
}

/// One ticket of an order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminTicket {
    /// The seat; `None` in general admission.
    pub seat_id: Option<i64>,
    /// The tier.
    pub ticket_category_id: i64,
    /// The real-name holder.
    pub ticket_buyer_id: i64,
    /// Price in minor units.
    pub price_cents: i64,
}

/// What happened to an order; declared in lifecycle order, which breaks ties between steps of
/// one transaction (they share its `now()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Let in by the order gate.
    Received,
    /// Seats reserved by the category actors.
    Reserved,
    /// Written by the group-commit writer.
    Committed,
    /// A payment bill opened.
    PaymentStarted,
    /// The provider confirmed a bill paid.
    PaymentConfirmed,
    /// The order became paid.
    Paid,
    /// The buyer cancelled it.
    Cancelled,
    /// Its payment window ran out.
    Expired,
    /// Money sent back through the provider.
    RefundRequested,
    /// The order was refunded.
    Refunded,
    /// An order event written to the outbox.
    EventRecorded,
    /// The event published to Pulsar.
    Published,
    /// The event consumed by MQ bookkeeping.
    Consumed,
    /// A consumer gave up on the event.
    DeadLettered,
}

impl StepKind {
    /// The store the step touched: `redis`, `actor`, `postgres`, `provider` or `pulsar`.
    pub fn store(self) -> &'static str {
        use StepKind::*;
        match self {
            Received => "redis",
            Reserved => "actor",
            Committed | Paid | Cancelled | Expired | Refunded | EventRecorded => "postgres",
            PaymentStarted | PaymentConfirmed | RefundRequested => "provider",
            Published | Consumed | DeadLettered => "pulsar",
        }
    }
}

/// One step of an order, with what names its subject (event, bill, consumer) when it has one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Step {
    /// What happened.
    pub step: StepKind,
    /// Where: [`StepKind::store`].
    pub store: &'static str,
    /// When, as stored.
    pub at: DateTime<Utc>,
    /// The order event (`event_recorded`, `published`, `consumed`, `dead_lettered`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The order event's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// The consumer (`consumed`, `dead_lettered`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// The bill (`payment_started`, `payment_confirmed`, `refund_requested`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<Uuid>,
    /// The subject's current status: bill, refund, send or reconcile status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl Step {
    /// A step with no subject.
    fn new(step: StepKind, at: DateTime<Utc>) -> Step {
        Step {
            step,
            store: step.store(),
            at,
            event_type: None,
            event_id: None,
            consumer: None,
            payment_id: None,
            status: None,
        }
    }
}

/// The filter's `WHERE`, shared by the count and the page (parameters only; `$1` program,
/// `$2` status, `$3` user, `$4` order number — the last two name their partition).
macro_rules! order_filter {
    () => {
        " FROM orders WHERE program_id = $1 AND ($2::text IS NULL OR status = $2)
           AND ($3::bigint IS NULL OR (gene = ($3::bigint & 15)::smallint AND user_id = $3))
           AND ($4::bigint IS NULL OR (gene = ($4::bigint & 15)::smallint AND order_no = $4))"
    };
}

/// A page of the program's orders matching `filter`, newest first, each with tickets, steps and
/// reconcile status. Answers (items, total matching).
pub async fn orders_page(
    pool: &PgPool,
    program_id: i64,
    filter: &OrderFilter,
    page: u32,
    per_page: u32,
) -> Result<(Vec<AdminOrder>, i64), StoreError> {
    let client = pool.get().await?;
    let offset = i64::from(page.max(1) - 1) * i64::from(per_page);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
        &program_id,
        &filter.status,
        &filter.user_id,
        &filter.order_no,
    ];
    let total: i64 = client
        .query_one(concat!("SELECT count(*)", order_filter!()), &params)
        .await?
        .get(0);
    let sql = concat!(
        "SELECT order_no, user_id, program_id, show_time_id, status, total_cents, created_at,
                expires_at, paid_at, closed_at",
        order_filter!(),
        " ORDER BY created_at DESC, order_no DESC LIMIT $5 OFFSET $6"
    );
    let limit = i64::from(per_page);
    let [p1, p2, p3, p4] = params;
    let rows = client
        .query(sql, &[p1, p2, p3, p4, &limit, &offset])
        .await?;
    let mut orders: Vec<AdminOrder> = rows.iter().map(order_of).collect();
    complete(&client, &mut orders).await?;
    Ok((orders, total))
}

/// An order row, its tickets, steps and reconcile status still to come.
fn order_of(r: &Row) -> AdminOrder {
    AdminOrder {
        order_no: r.get(0),
        user_id: r.get(1),
        program_id: r.get(2),
        show_time_id: r.get(3),
        status: r.get(4),
        total_cents: r.get(5),
        created_at: r.get(6),
        expires_at: r.get(7),
        paid_at: r.get(8),
        closed_at: r.get(9),
        tickets: Vec::new(),
        steps: Vec::new(),
        reconcile_status: String::new(),
    }
}

/// Order numbers go out as JSON strings (API.md: 63-bit numbers).
fn as_string<S: serde::Serializer>(n: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(n)
}

/// What the page's orders left elsewhere, each kind keyed by order number.
#[derive(Default)]
struct Traces {
    tickets: HashMap<i64, Vec<AdminTicket>>,
    events: HashMap<i64, Vec<EventTrace>>,
    dead: HashMap<i64, Vec<Step>>,
    bills: HashMap<i64, Vec<Step>>,
    findings: HashMap<i64, String>,
}

/// One outbox row of an order, with MQ bookkeeping's consumption.
struct EventTrace {
    event_id: Uuid,
    event_type: String,
    created_at: DateTime<Utc>,
    send_status: String,
    sent_at: Option<DateTime<Utc>>,
    reconcile_status: String,
    consumed_at: Option<DateTime<Utc>>,
}

/// Fills in the orders' tickets, steps and reconcile status: five queries for the whole page,
/// pipelined on one connection.
async fn complete(
    client: &deadpool_postgres::Client,
    orders: &mut [AdminOrder],
) -> Result<(), StoreError> {
    let nos: Vec<i64> = orders.iter().map(|o| o.order_no).collect();
    if nos.is_empty() {
        return Ok(());
    }
    let (tickets, events, dead, bills, findings) = tokio::try_join!(
        tickets_of(client, &nos),
        events_of(client, &nos),
        dead_letters_of(client, &nos),
        bills_of(client, &nos),
        findings_of(client, &nos),
    )?;
    let mut traces = Traces {
        tickets,
        events,
        dead,
        bills,
        findings,
    };
    for order in orders.iter_mut() {
        fill(order, &mut traces);
    }
    Ok(())
}

/// Moves one order's traces into it.
fn fill(order: &mut AdminOrder, traces: &mut Traces) {
    let no = order.order_no;
    let events = traces.events.remove(&no).unwrap_or_default();
    order.tickets = traces.tickets.remove(&no).unwrap_or_default();
    order.reconcile_status = reconcile_status(traces.findings.remove(&no), &events);
    let mut steps = own_steps(order);
    steps.extend(traces.bills.remove(&no).unwrap_or_default());
    steps.extend(events.iter().flat_map(event_steps));
    steps.extend(traces.dead.remove(&no).unwrap_or_default());
    // Stable: steps of one kind at one time keep their row order (outbox id, bill time).
    steps.sort_by_key(|s| (s.at, s.step));
    order.steps = steps;
}

/// The steps the order row itself records.
fn own_steps(order: &AdminOrder) -> Vec<Step> {
    let mut steps = vec![
        Step::new(StepKind::Received, order.created_at),
        Step::new(StepKind::Reserved, order.created_at),
        Step::new(StepKind::Committed, order.created_at),
    ];
    if let Some(at) = order.paid_at {
        steps.push(Step::new(StepKind::Paid, at));
    }
    let closed = match order.status.as_str() {
        "cancelled" => Some(StepKind::Cancelled),
        "expired" => Some(StepKind::Expired),
        "refunded" => Some(StepKind::Refunded),
        _ => None,
    };
    if let (Some(kind), Some(at)) = (closed, order.closed_at) {
        steps.push(Step::new(kind, at));
    }
    steps
}

/// An outbox row's steps: recorded, then published and consumed once they were.
fn event_steps(e: &EventTrace) -> Vec<Step> {
    let about = |kind, at, status: &str| Step {
        event_type: Some(e.event_type.clone()),
        event_id: Some(e.event_id),
        status: Some(status.to_string()),
        ..Step::new(kind, at)
    };
    let mut steps = vec![about(StepKind::EventRecorded, e.created_at, &e.send_status)];
    if let Some(at) = e.sent_at {
        steps.push(about(StepKind::Published, at, &e.send_status));
    }
    if let Some(at) = e.consumed_at {
        let consumed = about(StepKind::Consumed, at, &e.reconcile_status);
        steps.push(Step {
            consumer: Some(BOOKKEEPING.to_string()),
            ..consumed
        });
    }
    steps
}

/// The order's reconcile status (see the module doc).
fn reconcile_status(finding: Option<String>, events: &[EventTrace]) -> String {
    let has = |s: &str| events.iter().any(|e| e.reconcile_status == s);
    let from_events = if has("problem") {
        "reconciled_with_problem"
    } else if events.is_empty() || has("unreconciled") {
        "unreconciled"
    } else if has("handled") {
        "problem_handled"
    } else {
        "reconciled_ok"
    };
    // The graver of the two: a settled finding must not hide an event still in trouble.
    let worst = match finding.as_deref() {
        Some(f) if severity(f) > severity(from_events) => f,
        _ => from_events,
    };
    worst.to_string()
}

/// How much a reconcile status asks of an operator (higher: more).
fn severity(status: &str) -> u8 {
    match status {
        "reconciled_with_problem" => 3,
        "unreconciled" => 2,
        "problem_handled" => 1,
        _ => 0,
    }
}

/// Groups rows by their first column (an order number).
fn by_order<T>(rows: &[Row], each: impl Fn(&Row) -> T) -> HashMap<i64, Vec<T>> {
    let mut map: HashMap<i64, Vec<T>> = HashMap::new();
    for r in rows {
        map.entry(r.get(0)).or_default().push(each(r));
    }
    map
}

/// The orders' tickets, in line order; each looked up by its primary key (gene, order number).
async fn tickets_of(
    client: &deadpool_postgres::Client,
    nos: &[i64],
) -> Result<HashMap<i64, Vec<AdminTicket>>, StoreError> {
    let rows = client
        .query(
            "SELECT t.order_no, t.seat_id, t.ticket_category_id, t.ticket_buyer_id, t.price_cents
             FROM unnest($1::bigint[]) AS n(no)
             JOIN tickets t ON t.gene = (n.no & 15)::smallint AND t.order_no = n.no
             ORDER BY t.order_no, t.line_no",
            &[&nos],
        )
        .await?;
    Ok(by_order(&rows, |r| AdminTicket {
        seat_id: r.get(1),
        ticket_category_id: r.get(2),
        ticket_buyer_id: r.get(3),
        price_cents: r.get(4),
    }))
}

/// The orders' outbox rows in commit order, with MQ bookkeeping's inbox row (its primary key).
async fn events_of(
    client: &deadpool_postgres::Client,
    nos: &[i64],
) -> Result<HashMap<i64, Vec<EventTrace>>, StoreError> {
    let rows = client
        .query(
            "SELECT ob.order_no, ob.event_id, ob.event_type, ob.created_at, ob.send_status, ob.sent_at,
                    ob.reconcile_status, ci.processed_at
             FROM outbox ob
             LEFT JOIN consumer_inbox ci ON ci.consumer = $2 AND ci.event_id = ob.event_id
             WHERE ob.order_no = ANY($1) ORDER BY ob.id",
            &[&nos, &BOOKKEEPING],
        )
        .await?;
    Ok(by_order(&rows, |r| EventTrace {
        event_id: r.get(1),
        event_type: r.get(2),
        created_at: r.get(3),
        send_status: r.get(4),
        sent_at: r.get(5),
        reconcile_status: r.get(6),
        consumed_at: r.get(7),
    }))
}

/// `dead_lettered` steps of the orders' events.
async fn dead_letters_of(
    client: &deadpool_postgres::Client,
    nos: &[i64],
) -> Result<HashMap<i64, Vec<Step>>, StoreError> {
    let rows = client
        .query(
            "SELECT ob.order_no, ob.event_type, ob.event_id, d.consumer, d.created_at
             FROM dead_letters d JOIN outbox ob ON ob.event_id = d.event_id
             WHERE ob.order_no = ANY($1) ORDER BY d.id",
            &[&nos],
        )
        .await?;
    Ok(by_order(&rows, |r| Step {
        event_type: r.get(1),
        event_id: r.get(2),
        consumer: r.get(3),
        ..Step::new(StepKind::DeadLettered, r.get(4))
    }))
}

/// Payment and refund steps of the orders' bills (refunds by their bill, a unique key).
async fn bills_of(
    client: &deadpool_postgres::Client,
    nos: &[i64],
) -> Result<HashMap<i64, Vec<Step>>, StoreError> {
    let rows = client
        .query(
            "SELECT b.order_no, b.id, b.status, b.created_at, b.paid_at, r.status, r.created_at
             FROM payment_bills b LEFT JOIN refunds r ON r.payment_id = b.id
             WHERE b.order_no = ANY($1) ORDER BY b.created_at",
            &[&nos],
        )
        .await?;
    let mut map: HashMap<i64, Vec<Step>> = HashMap::new();
    for (no, steps) in by_order(&rows, bill_steps) {
        map.insert(no, steps.into_iter().flatten().collect());
    }
    Ok(map)
}

/// One bill row's steps: opened, confirmed paid, refund sent.
fn bill_steps(r: &Row) -> Vec<Step> {
    let on_bill = |kind, at, status: Option<String>| Step {
        payment_id: Some(r.get(1)),
        status,
        ..Step::new(kind, at)
    };
    let mut steps = vec![on_bill(StepKind::PaymentStarted, r.get(3), r.get(2))];
    if let Some(at) = r.get::<_, Option<DateTime<Utc>>>(4) {
        steps.push(on_bill(StepKind::PaymentConfirmed, at, None));
    }
    if let Some(at) = r.get::<_, Option<DateTime<Utc>>>(6) {
        steps.push(on_bill(StepKind::RefundRequested, at, r.get(5)));
    }
    steps
}

/// The gravest status among each order's reconciliation findings (an open problem outranks a
/// later settled finding about something else).
async fn findings_of(
    client: &deadpool_postgres::Client,
    nos: &[i64],
) -> Result<HashMap<i64, String>, StoreError> {
    let rows = client
        .query(
            "SELECT order_no, CASE
                 WHEN bool_or(status = 'reconciled_with_problem') THEN 'reconciled_with_problem'
                 WHEN bool_or(status = 'unreconciled') THEN 'unreconciled'
                 WHEN bool_or(status = 'problem_handled') THEN 'problem_handled'
                 ELSE 'reconciled_ok' END
             FROM reconciliation_findings WHERE order_no = ANY($1) GROUP BY order_no",
            &[&nos],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// One discarded order: an attempt that took seats but could not be completed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DiscardedOrder {
    /// The record's id.
    pub id: i64,
    /// The order number it would have had (serialized as a string).
    #[serde(serialize_with = "as_string")]
    #[schema(value_type = String)]
    pub order_no: i64,
    /// The buyer's account.
    pub user_id: i64,
    /// Why it was discarded (the store's error).
    pub reason: String,
    /// Its tickets as recorded (`[{ticket_category_id, ticket_buyer_id, seat_id, price_cents}]`).
    #[schema(value_type = Vec<Object>)]
    pub tickets: Value,
    /// When it was discarded.
    pub created_at: DateTime<Utc>,
    /// True when no seat or general-admission hold is held or sold under its order number:
    /// what it took was released.
    pub seats_free: bool,
}

/// A page of the program's discarded orders, newest first. Answers (items, total).
pub async fn discarded_page(
    pool: &PgPool,
    program_id: i64,
    page: u32,
    per_page: u32,
) -> Result<(Vec<DiscardedOrder>, i64), StoreError> {
    let client = pool.get().await?;
    let offset = i64::from(page.max(1) - 1) * i64::from(per_page);
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM discarded_orders WHERE program_id = $1",
            &[&program_id],
        )
        .await?
        .get(0);
    let rows = client
        .query(
            DISCARDED_PAGE,
            &[&program_id, &i64::from(per_page), &offset],
        )
        .await?;
    Ok((rows.iter().map(discarded_of).collect(), total))
}

/// The page, with `seats_free` checked against `seats` (primary key, by the seat ids in the
/// recorded tickets) and `ga_holds` (by order number).
const DISCARDED_PAGE: &str = "
    SELECT d.id, d.order_no, d.user_id, d.reason, d.tickets, d.created_at,
           NOT EXISTS (SELECT 1 FROM seats s
                       WHERE s.id IN (SELECT v::bigint FROM jsonb_path_query(
                                          d.tickets, '$[*].seat_id ? (@.type() == \"number\")') AS v)
                         AND s.order_no = d.order_no AND s.status IN ('held', 'sold'))
           AND NOT EXISTS (SELECT 1 FROM ga_holds g WHERE g.order_no = d.order_no)
    FROM discarded_orders d WHERE d.program_id = $1
    ORDER BY d.created_at DESC, d.id DESC LIMIT $2 OFFSET $3";

/// A discarded order row.
fn discarded_of(r: &Row) -> DiscardedOrder {
    DiscardedOrder {
        id: r.get(0),
        order_no: r.get(1),
        user_id: r.get(2),
        reason: r.get(3),
        tickets: r.get(4),
        created_at: r.get(5),
        seats_free: r.get(6),
    }
}
