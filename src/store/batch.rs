//! The group-commit writer's statements: a batch of jobs (new orders and actor changes) becomes
//! one transaction of a fixed number of statements, whatever its size — one per table, each
//! taking typed arrays (`unnest`), prepared once per connection, sent pipelined.
//!
//! Nothing runs per order inside Postgres, so nothing can fail per order there either: the
//! writer decides the batch first ([`check_orders`]: account limits, ticket buyers, stored
//! idempotent answers, for every order in one query), then writes only what must succeed.
//! Seat and GA rows are written conditionally on the state each job expects, and the rows that
//! matched come back (`RETURNING`): a job whose rows were not where it expected is named, the
//! transaction rolled back and the batch run again without it. A constraint that still fires
//! means a bug; the writer splits the batch to find the job (see `writer.rs`).

use super::orders::PlaceOrder;
use super::{Refusal, StoreError};
use crate::domain::inventory::{Change, ChangeKind};
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde_json::json;
use std::collections::{HashMap, HashSet};

/// One order's facts from Postgres, read in the batch's transaction before anything is written.
#[derive(Debug, Clone, Default)]
pub struct OrderFacts {
    /// The user's tickets in live orders of the program.
    pub live_tickets: i64,
    /// How many of the order's ticket buyers belong to the user and are not deleted.
    pub owned_buyers: i64,
    /// How many of the persons those ticket buyers name already hold a live ticket for the
    /// program, through any account.
    pub claimed_buyers: i64,
    /// The persons the order's owned ticket buyers name (see [`Person`]), so the batch can
    /// refuse a person named by two of its orders — through two accounts, too.
    pub persons: Vec<Person>,
    /// The answer stored under the order's idempotency key, if still within its window:
    /// request hash, status and body.
    pub stored: Option<super::idempotency::Stored>,
}

/// Everything the checks need, for every order of the batch at once. Also deletes idempotency
/// records past their window for these keys (a key may then start a fresh order).
const CHECK_ORDERS: &str = "
WITH o AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[]) WITH ORDINALITY AS o (user_id, program_id, idem_key, i)),
t AS (
    SELECT * FROM unnest($4::bigint[], $5::bigint[]) AS t (i, buyer)),
stale AS (
    DELETE FROM idempotency_keys k USING o
    WHERE k.user_id = o.user_id AND k.idem_key = o.idem_key AND k.created_at <= now() - make_interval(secs => $6))
SELECT o.i,
    (SELECT count(*) FROM orders od JOIN tickets tk ON tk.gene = od.gene AND tk.order_no = od.order_no
     WHERE od.gene = (o.user_id & 15)::smallint AND tk.gene = (o.user_id & 15)::smallint
       AND od.user_id = o.user_id AND od.program_id = o.program_id
       AND od.status IN ('pending_payment', 'paid')),
    own.n,
    (SELECT count(*) FROM unnest(own.id_types, own.hashes) AS p (id_type, hash)
     JOIN buyer_claims c ON c.program_id = o.program_id AND c.id_type = p.id_type AND c.id_number_hash = p.hash),
    k.request_hash, k.response_status, k.response_body,
    own.id_types, own.hashes
FROM o
CROSS JOIN LATERAL (
    SELECT count(*) AS n, array_agg(b.id_type) AS id_types, array_agg(b.id_number_hash) AS hashes
    FROM t JOIN ticket_buyers b ON b.id = t.buyer
    WHERE t.i = o.i AND b.user_id = o.user_id AND b.deleted_at IS NULL) own
LEFT JOIN idempotency_keys k
    ON k.user_id = o.user_id AND k.idem_key = o.idem_key AND k.created_at > now() - make_interval(secs => $6)
ORDER BY o.i";

/// A person as claims name one (`buyer_claims`' key without the program): the id type and the
/// keyed hash of the id number, the same through whichever account or ticket buyer row.
pub type Person = (String, Vec<u8>);

/// Reads [`OrderFacts`] for `orders`, in their order; one statement.
pub async fn check_orders(
    tx: &Transaction<'_>,
    orders: &[&PlaceOrder],
) -> Result<Vec<OrderFacts>, tokio_postgres::Error> {
    let users: Vec<i64> = orders.iter().map(|o| o.user_id).collect();
    let programs: Vec<i64> = orders.iter().map(|o| o.program_id).collect();
    let keys: Vec<&str> = orders.iter().map(|o| o.idempotency.key.as_str()).collect();
    let (mut of_order, mut buyers) = (Vec::new(), Vec::new());
    for (i, o) in orders.iter().enumerate() {
        for t in &o.tickets {
            of_order.push(i as i64 + 1);
            buyers.push(t.ticket_buyer_id);
        }
    }
    let ttl = orders.first().map_or(0.0, |o| o.idempotency.ttl_secs);
    let statement = tx.prepare_cached(CHECK_ORDERS).await?;
    let rows = tx
        .query(
            &statement,
            &[&users, &programs, &keys, &of_order, &buyers, &ttl],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| OrderFacts {
            live_tickets: r.get(1),
            owned_buyers: r.get(2),
            claimed_buyers: r.get(3),
            persons: persons_of(r),
            stored: r.get::<_, Option<Vec<u8>>>(4).map(|hash| {
                (
                    hash,
                    r.get::<_, Option<i16>>(5).unwrap_or(0) as u16,
                    r.get::<_, Option<Vec<u8>>>(6).unwrap_or_default(),
                )
            }),
        })
        .collect())
}

/// The persons column pair of a [`CHECK_ORDERS`] row (NULL arrays when no ticket buyer is owned).
fn persons_of(r: &tokio_postgres::Row) -> Vec<Person> {
    let id_types: Vec<String> = r.get::<_, Option<_>>(7).unwrap_or_default();
    let hashes: Vec<Vec<u8>> = r.get::<_, Option<_>>(8).unwrap_or_default();
    id_types.into_iter().zip(hashes).collect()
}

/// Pending orders whose seats a release frees close (`expired` past their window, `cancelled`
/// before), each with one outbox event. Runs first: payments lock the order row before its
/// seats, so a payment and an expiry of one order queue on that row instead of deadlocking.
pub(crate) const CLOSE_RELEASED: &str = "
WITH closed AS (
    UPDATE orders o SET status = CASE WHEN o.expires_at <= now() THEN 'expired' ELSE 'cancelled' END,
                        closed_at = now()
    FROM unnest($1::bigint[]) AS r (order_no)
    WHERE o.gene = (r.order_no & 15)::smallint AND o.order_no = r.order_no AND o.status = 'pending_payment'
    RETURNING o.order_no, o.user_id, o.program_id, o.status)
INSERT INTO outbox (event_id, topic, message_key, event_type, order_no, program_id, payload)
SELECT gen_random_uuid(), 'order-events', order_no::text,
       CASE status WHEN 'expired' THEN 'OrderExpired' ELSE 'OrderCancelled' END,
       order_no, program_id,
       jsonb_build_object('order_no', order_no::text, 'user_id', user_id, 'status', status)
FROM closed";

/// Every seat row the batch moves, each only from the state its job expects; answers the ids
/// that moved.
const MOVE_SEATS: &str = "
UPDATE seats s SET status = u.status, order_no = u.order_no, hold_expires_at = u.expires_at
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::timestamptz[], $5::text[], $6::bigint[])
    AS u (id, status, order_no, expires_at, was, was_order)
WHERE s.id = u.id AND s.status = u.was AND s.order_no IS NOT DISTINCT FROM u.was_order
RETURNING s.id";

/// New general-admission holds.
const INSERT_GA_HOLDS: &str = "
INSERT INTO ga_holds (ticket_category_id, order_no, quantity, status, hold_expires_at)
SELECT c, o, q, 'held', e FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::timestamptz[]) AS u (c, o, q, e)";

/// General-admission holds released (status `held`) or returned (`sold`); answers which.
const DELETE_GA_HOLDS: &str = "
DELETE FROM ga_holds g USING unnest($1::bigint[], $2::bigint[], $3::int[], $4::text[]) AS u (c, o, q, s)
WHERE g.ticket_category_id = u.c AND g.order_no = u.o AND g.quantity = u.q AND g.status = u.s
RETURNING g.ticket_category_id, g.order_no";

/// General-admission holds paid for; answers which.
const SELL_GA_HOLDS: &str = "
UPDATE ga_holds g SET status = 'sold' FROM unnest($1::bigint[], $2::bigint[], $3::int[]) AS u (c, o, q)
WHERE g.ticket_category_id = u.c AND g.order_no = u.o AND g.quantity = u.q AND g.status = 'held'
RETURNING g.ticket_category_id, g.order_no";

/// One counter update per GA category, the batch's quantities summed; the counter's CHECK is
/// the database's oversell guard.
const MOVE_GA_COUNTERS: &str = "
UPDATE ticket_categories tc SET ga_taken = tc.ga_taken + d.delta
FROM (SELECT c, sum(q)::int AS delta FROM unnest($1::bigint[], $2::int[]) AS u (c, q) GROUP BY c) d
WHERE tc.id = d.c";

const INSERT_ORDERS: &str = "
INSERT INTO orders (order_no, gene, user_id, program_id, show_time_id, status, total_cents, expires_at)
SELECT o, (o & 15)::smallint, u, p, st, 'pending_payment', t, e
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::timestamptz[])
    AS x (o, u, p, st, t, e)";

/// Tickets; the statement-level claim trigger (V9, V14) claims their seats and persons set-wise.
const INSERT_TICKETS: &str = "
INSERT INTO tickets (order_no, gene, line_no, user_id, program_id, ticket_category_id, ticket_buyer_id,
                     seat_id, price_cents)
SELECT o, (o & 15)::smallint, l, u, p, c, b, s, pr
FROM unnest($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
            $7::bigint[], $8::bigint[]) AS x (o, l, u, p, c, b, s, pr)";

const INSERT_CREATED_EVENTS: &str = "
INSERT INTO outbox (event_id, topic, message_key, event_type, order_no, program_id, payload)
SELECT gen_random_uuid(), 'order-events', o::text, 'OrderCreated', o, p, e
FROM unnest($1::bigint[], $2::bigint[], $3::jsonb[]) AS x (o, p, e)";

const INSERT_IDEMPOTENCY: &str = "
INSERT INTO idempotency_keys (user_id, idem_key, request_hash, response_status, response_body)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::smallint[], $5::bytea[])";

/// Seat rows to move: new state, expected old state, and the job they belong to.
#[derive(Default)]
struct SeatMoves {
    id: Vec<i64>,
    status: Vec<&'static str>,
    order_no: Vec<Option<i64>>,
    expires_at: Vec<Option<DateTime<Utc>>>,
    was: Vec<&'static str>,
    was_order: Vec<Option<i64>>,
    job: Vec<usize>,
}

/// General-admission rows of one kind of statement: category, order, quantity, plus a
/// per-statement column, and the job of each row.
#[derive(Default)]
struct GaRows<T> {
    category: Vec<i64>,
    order_no: Vec<i64>,
    quantity: Vec<i32>,
    extra: Vec<T>,
    job: Vec<usize>,
}

impl<T> GaRows<T> {
    /// (category, order) of every row, as the statements return them.
    fn keys(&self) -> Vec<(i64, i64)> {
        self.category
            .iter()
            .copied()
            .zip(self.order_no.iter().copied())
            .collect()
    }

    fn push(&mut self, c: &Change, extra: T, job: usize) {
        self.category.push(c.category_id);
        self.order_no.push(c.order_no);
        self.quantity.push(c.quantity as i32);
        self.extra.push(extra);
        self.job.push(job);
    }
}

/// New orders' rows, one vector per column.
#[derive(Default)]
struct OrderRows {
    order_no: Vec<i64>,
    user_id: Vec<i64>,
    program_id: Vec<i64>,
    show_time_id: Vec<Option<i64>>,
    total_cents: Vec<i64>,
    expires_at: Vec<DateTime<Utc>>,
    events: Vec<serde_json::Value>,
    idem_key: Vec<String>,
    idem_hash: Vec<Vec<u8>>,
    idem_status: Vec<i16>,
    idem_body: Vec<Vec<u8>>,
}

#[derive(Default)]
struct TicketRows {
    order_no: Vec<i64>,
    line_no: Vec<i16>,
    user_id: Vec<i64>,
    program_id: Vec<i64>,
    category: Vec<i64>,
    buyer: Vec<i64>,
    seat: Vec<Option<i64>>,
    price: Vec<i64>,
}

/// What one job asks the batch to write.
pub enum JobWrite<'a> {
    /// Actor changes (releases, confirmations, returns, plain holds).
    Changes(&'a [Change]),
    /// A new order that passed its checks.
    Order(&'a PlaceOrder),
}

/// The whole batch as columns, ready for the statements.
#[derive(Default)]
pub struct WriteSet {
    seats: SeatMoves,
    ga_holds: GaRows<Option<DateTime<Utc>>>,
    ga_deletes: GaRows<&'static str>,
    ga_sales: GaRows<()>,
    counters: (Vec<i64>, Vec<i32>),
    closes: Vec<i64>,
    orders: OrderRows,
    tickets: TicketRows,
    /// Seats and GA holds already claimed by an earlier job of the batch.
    seen_seats: HashSet<i64>,
    seen_ga: HashSet<(i64, i64)>,
    /// Jobs refused while staging (they touch rows an earlier job of the batch touches).
    pub clashes: Vec<usize>,
}

impl WriteSet {
    /// Adds job `job`'s rows, unless they touch a seat or GA hold another job of the batch
    /// already touches: then the job is recorded in [`WriteSet::clashes`] and nothing staged
    /// (the actors never let two changes of one seat meet in a batch; this keeps a bug from
    /// writing one seat twice in one statement).
    pub fn stage(&mut self, job: usize, write: JobWrite<'_>) {
        let changes = match &write {
            JobWrite::Changes(changes) => *changes,
            JobWrite::Order(o) => o.changes.as_slice(),
        };
        if !self.claim_rows(changes) {
            self.clashes.push(job);
            return;
        }
        for change in changes {
            self.stage_change(change, job);
        }
        if let JobWrite::Order(o) = write {
            self.stage_order(o);
        }
    }

    fn claim_rows(&mut self, changes: &[Change]) -> bool {
        let seats: Vec<i64> = changes
            .iter()
            .flat_map(|c| c.seats.iter().map(|s| s.id))
            .collect();
        let ga: Vec<(i64, i64)> = changes
            .iter()
            .filter(|c| c.seats.is_empty())
            .map(|c| (c.category_id, c.order_no))
            .collect();
        let unique = seats.iter().collect::<HashSet<_>>().len() == seats.len();
        if !unique
            || seats.iter().any(|s| self.seen_seats.contains(s))
            || ga.iter().any(|g| self.seen_ga.contains(g))
        {
            return false;
        }
        self.seen_seats.extend(seats);
        self.seen_ga.extend(ga);
        true
    }

    fn stage_change(&mut self, c: &Change, job: usize) {
        if c.kind == ChangeKind::Release && !self.closes.contains(&c.order_no) {
            self.closes.push(c.order_no);
        }
        if c.seats.is_empty() {
            self.stage_ga(c, job);
            return;
        }
        // (new status, new order, deadline, expected status, expected order)
        let (status, order_no, expires_at, was, was_order) = match c.kind {
            ChangeKind::Hold => ("held", Some(c.order_no), c.expires_at, "available", None),
            ChangeKind::Release => ("available", None, None, "held", Some(c.order_no)),
            ChangeKind::Confirm => ("sold", Some(c.order_no), None, "held", Some(c.order_no)),
            ChangeKind::Return => ("available", None, None, "sold", Some(c.order_no)),
        };
        let m = &mut self.seats;
        for seat in &c.seats {
            m.id.push(seat.id);
            m.status.push(status);
            m.order_no.push(order_no);
            m.expires_at.push(expires_at);
            m.was.push(was);
            m.was_order.push(was_order);
            m.job.push(job);
        }
    }

    fn stage_ga(&mut self, c: &Change, job: usize) {
        let q = c.quantity as i32;
        let delta = match c.kind {
            ChangeKind::Hold => {
                self.ga_holds.push(c, c.expires_at, job);
                q
            }
            ChangeKind::Release => {
                self.ga_deletes.push(c, "held", job);
                -q
            }
            ChangeKind::Return => {
                self.ga_deletes.push(c, "sold", job);
                -q
            }
            ChangeKind::Confirm => {
                self.ga_sales.push(c, (), job);
                0
            }
        };
        if delta != 0 {
            self.counters.0.push(c.category_id);
            self.counters.1.push(delta);
        }
    }

    fn stage_order(&mut self, o: &PlaceOrder) {
        let r = &mut self.orders;
        r.order_no.push(o.order_no);
        r.user_id.push(o.user_id);
        r.program_id.push(o.program_id);
        r.show_time_id.push(o.show_time_id);
        r.total_cents.push(o.total_cents);
        r.expires_at.push(o.expires_at);
        r.events.push(json!({
            "order_no": o.order_no.to_string(), "user_id": o.user_id, "program_id": o.program_id,
            "total_cents": o.total_cents, "expires_at": o.expires_at, "tickets": o.tickets.len(),
        }));
        r.idem_key.push(o.idempotency.key.clone());
        r.idem_hash.push(o.idempotency.request_hash.clone());
        r.idem_status.push(o.idempotency.status as i16);
        r.idem_body.push(o.idempotency.body.clone());
        for (line, t) in o.tickets.iter().enumerate() {
            let tk = &mut self.tickets;
            tk.order_no.push(o.order_no);
            tk.line_no.push(line as i16 + 1);
            tk.user_id.push(o.user_id);
            tk.program_id.push(o.program_id);
            tk.category.push(t.ticket_category_id);
            tk.buyer.push(t.ticket_buyer_id);
            tk.seat.push(t.seat_id);
            tk.price.push(t.price_cents);
        }
    }

    /// Whether anything is staged at all.
    pub fn is_empty(&self) -> bool {
        self.seats.id.is_empty()
            && self.ga_holds.job.is_empty()
            && self.ga_deletes.job.is_empty()
            && self.ga_sales.job.is_empty()
            && self.closes.is_empty()
            && self.orders.order_no.is_empty()
    }
}

/// What the writes returned: which conditional rows matched, and how many statements ran.
pub struct Written {
    /// Jobs some of whose rows were not in the expected state (the batch must roll back).
    pub mismatched: Vec<usize>,
    /// Statements sent.
    pub statements: u64,
}

/// A statement's failure, with the constraint that fired if one did (the writer splits a batch
/// refused by a constraint to find the order that broke it).
#[derive(Debug)]
pub struct WriteError {
    /// As the rest of the store reports it.
    pub error: StoreError,
    /// SQLSTATE class 23 (integrity constraint violation), with the constraint's name.
    pub constraint: Option<String>,
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        let constraint = e.as_db_error().and_then(|db| {
            db.code()
                .code()
                .starts_with("23")
                .then(|| db.constraint().unwrap_or("").to_string())
        });
        WriteError {
            error: e.into(),
            constraint,
        }
    }
}

/// What a statement's returned rows say.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Returns {
    /// Nothing to look at.
    Nothing,
    /// Ids of the seats that moved.
    Seats,
    /// (category, order) of the GA holds deleted.
    GaDeleted,
    /// (category, order) of the GA holds sold.
    GaSold,
}

type Params<'a> = Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>;

/// The batch's statements with their parameters, in the order they must run: orders to close
/// first (payments lock the order row before its seats, so a payment and an expiry of one order
/// queue there instead of deadlocking), then seats, GA holds and counters, then new orders.
fn plan(set: &WriteSet) -> Vec<(&'static str, Params<'_>, Returns)> {
    let (o, t, g, m) = (&set.orders, &set.tickets, &set.ga_holds, &set.seats);
    let (d, s) = (&set.ga_deletes, &set.ga_sales);
    let has_orders = !o.order_no.is_empty();
    let all: [(&'static str, bool, Params<'_>, Returns); 10] = [
        (
            CLOSE_RELEASED,
            !set.closes.is_empty(),
            vec![&set.closes],
            Returns::Nothing,
        ),
        (
            MOVE_SEATS,
            !m.id.is_empty(),
            vec![
                &m.id,
                &m.status,
                &m.order_no,
                &m.expires_at,
                &m.was,
                &m.was_order,
            ],
            Returns::Seats,
        ),
        (
            DELETE_GA_HOLDS,
            !d.job.is_empty(),
            vec![&d.category, &d.order_no, &d.quantity, &d.extra],
            Returns::GaDeleted,
        ),
        (
            SELL_GA_HOLDS,
            !s.job.is_empty(),
            vec![&s.category, &s.order_no, &s.quantity],
            Returns::GaSold,
        ),
        (
            INSERT_GA_HOLDS,
            !g.job.is_empty(),
            vec![&g.category, &g.order_no, &g.quantity, &g.extra],
            Returns::Nothing,
        ),
        (
            MOVE_GA_COUNTERS,
            !set.counters.0.is_empty(),
            vec![&set.counters.0, &set.counters.1],
            Returns::Nothing,
        ),
        (
            INSERT_ORDERS,
            has_orders,
            vec![
                &o.order_no,
                &o.user_id,
                &o.program_id,
                &o.show_time_id,
                &o.total_cents,
                &o.expires_at,
            ],
            Returns::Nothing,
        ),
        (
            INSERT_TICKETS,
            has_orders,
            vec![
                &t.order_no,
                &t.line_no,
                &t.user_id,
                &t.program_id,
                &t.category,
                &t.buyer,
                &t.seat,
                &t.price,
            ],
            Returns::Nothing,
        ),
        (
            INSERT_CREATED_EVENTS,
            has_orders,
            vec![&o.order_no, &o.program_id, &o.events],
            Returns::Nothing,
        ),
        (
            INSERT_IDEMPOTENCY,
            has_orders,
            vec![
                &o.user_id,
                &o.idem_key,
                &o.idem_hash,
                &o.idem_status,
                &o.idem_body,
            ],
            Returns::Nothing,
        ),
    ];
    all.into_iter()
        .filter(|s| s.1)
        .map(|(sql, _, params, returns)| (sql, params, returns))
        .collect()
}

/// Sends every non-empty statement of `set`, pipelined on the transaction's connection: all
/// are prepared (a cache hit after the connection's first batch), then all sent before any
/// answer is awaited, in [`plan`]'s order — one round trip for the whole batch.
pub async fn write(tx: &Transaction<'_>, set: &WriteSet) -> Result<Written, WriteError> {
    let planned = plan(set);
    let prepared = futures::future::join_all(planned.iter().map(|p| tx.prepare_cached(p.0))).await;
    let statements = prepared.into_iter().collect::<Result<Vec<_>, _>>()?;
    let answers = futures::future::join_all(
        statements
            .iter()
            .zip(&planned)
            .map(|(st, p)| tx.query(st, &p.1)),
    )
    .await;
    let (mut seats, mut ga_deleted, mut ga_sold) = (Vec::new(), Vec::new(), Vec::new());
    for (answer, (_, _, returns)) in answers.into_iter().zip(&planned) {
        // The first error is the cause; the statements after it only report the aborted
        // transaction.
        let rows = answer?;
        match returns {
            Returns::Nothing => {}
            Returns::Seats => seats = rows.iter().map(|r| r.get(0)).collect(),
            Returns::GaDeleted => ga_deleted = rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
            Returns::GaSold => ga_sold = rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        }
    }
    let mut mismatched = missing(&set.seats.id, &set.seats.job, &seats);
    let (d, s) = (&set.ga_deletes, &set.ga_sales);
    mismatched.extend(missing(&d.keys(), &d.job, &ga_deleted));
    mismatched.extend(missing(&s.keys(), &s.job, &ga_sold));
    mismatched.sort_unstable();
    mismatched.dedup();
    Ok(Written {
        mismatched,
        statements: planned.len() as u64,
    })
}

/// Jobs with a row in `wanted` that is not in `got`.
fn missing<K: Eq + std::hash::Hash + Copy>(wanted: &[K], jobs: &[usize], got: &[K]) -> Vec<usize> {
    let got: HashSet<K> = got.iter().copied().collect();
    wanted
        .iter()
        .zip(jobs)
        .filter(|(k, _)| !got.contains(k))
        .map(|(_, j)| *j)
        .collect()
}

/// The constraint holding one live ticket per person per program (V14): its name is what
/// the writer and the refusal mapping match on.
pub const PERSON_CLAIM: &str = "buyer_claims_pkey";

/// The refusal a single order gets when a constraint refused it alone, by constraint name;
/// `None` for a constraint an order is not expected to meet (the caller treats it as a bug,
/// never as a seat refusal).
pub fn refusal_for_constraint(constraint: &str) -> Option<(Refusal, &'static str)> {
    match constraint {
        "seat_claims_pkey" | "ga_holds_pkey" => {
            Some((Refusal::SeatUnavailable, "a seat was taken meanwhile"))
        }
        PERSON_CLAIM => Some((
            Refusal::BuyerHasTicket,
            "a ticket buyer already has a live ticket for this program",
        )),
        "idempotency_keys_pkey" => {
            Some((Refusal::InFlight, "this Idempotency-Key was used meanwhile"))
        }
        "ga_taken_within_capacity" => Some((Refusal::SoldOut, "sold out meanwhile")),
        _ => None,
    }
}

/// Per user and program, the tickets earlier orders of the same batch add; per program, the
/// persons they claim (whichever account names them); the idempotency keys they use. The checks
/// of a batch see its earlier orders as if they were committed.
#[derive(Default)]
pub struct BatchTally {
    tickets: HashMap<(i64, i64), i64>,
    persons: HashSet<(i64, Person)>,
    keys: HashSet<(i64, String)>,
}

/// The verdict on one order of the batch.
pub enum Verdict {
    /// Passes every check: write it.
    Write,
    /// Refused with an API error code (nothing written).
    Refuse(StoreError),
    /// Its idempotency key already has a stored answer.
    Replay(super::idempotency::Stored),
}

impl BatchTally {
    /// Checks `o` against `facts` and the batch so far; counts it in if it passes.
    pub fn judge(&mut self, o: &PlaceOrder, facts: &OrderFacts) -> Verdict {
        if let Some(stored) = &facts.stored {
            return Verdict::Replay(stored.clone());
        }
        let n = o.tickets.len() as i64;
        let key = (o.user_id, o.idempotency.key.clone());
        let persons: Vec<(i64, Person)> = facts
            .persons
            .iter()
            .map(|p| (o.program_id, p.clone()))
            .collect();
        let held = self
            .tickets
            .get(&(o.user_id, o.program_id))
            .copied()
            .unwrap_or(0);
        let refusal = if self.keys.contains(&key) {
            Some((
                Refusal::InFlight,
                "this Idempotency-Key was used meanwhile".to_string(),
            ))
        } else if facts.owned_buyers != n {
            Some((
                Refusal::Validation {
                    field: "ticket_buyer_ids",
                },
                "not all are your ticket buyers".to_string(),
            ))
        } else if facts.claimed_buyers > 0 || !self.unclaimed(&persons) {
            Some((
                Refusal::BuyerHasTicket,
                "a ticket buyer already has a live ticket for this program".to_string(),
            ))
        } else if facts.live_tickets + held + n > i64::from(o.per_account_limit) {
            Some((
                Refusal::LimitExceeded,
                format!(
                    "at most {} tickets per account for this program; you hold {}",
                    o.per_account_limit,
                    facts.live_tickets + held
                ),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = refusal {
            return Verdict::Refuse(StoreError::refused(reason, message));
        }
        *self.tickets.entry((o.user_id, o.program_id)).or_default() += n;
        self.persons.extend(persons);
        self.keys.insert(key);
        Verdict::Write
    }

    /// True when no two of `persons` are one person and none is claimed by an earlier order
    /// of the batch.
    fn unclaimed(&self, persons: &[(i64, Person)]) -> bool {
        let distinct = persons.iter().collect::<HashSet<_>>().len() == persons.len();
        distinct && !persons.iter().any(|p| self.persons.contains(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_constraints_become_refusals() {
        let known = refusal_for_constraint("seat_claims_pkey").map(|(r, _)| r);
        assert_eq!(known, Some(Refusal::SeatUnavailable));
        let sold_out = refusal_for_constraint("ga_taken_within_capacity").map(|(r, _)| r);
        assert_eq!(sold_out, Some(Refusal::SoldOut));
        // A constraint added later without a refusal is a bug to surface, not a taken seat.
        assert!(refusal_for_constraint("tickets_price_positive").is_none());
        assert!(refusal_for_constraint("").is_none());
    }

    fn order(order_no: i64, user_id: i64, ticket_buyer_ids: &[i64]) -> PlaceOrder {
        use super::super::orders::{IdempotentResult, NewTicket};
        PlaceOrder {
            order_no,
            user_id,
            program_id: 1,
            show_time_id: None,
            total_cents: 0,
            expires_at: Utc::now(),
            tickets: ticket_buyer_ids
                .iter()
                .map(|&ticket_buyer_id| NewTicket {
                    ticket_category_id: 1,
                    ticket_buyer_id,
                    seat_id: None,
                    price_cents: 0,
                })
                .collect(),
            changes: Vec::new(),
            per_account_limit: 6,
            idempotency: IdempotentResult {
                key: format!("k{order_no}"),
                request_hash: Vec::new(),
                status: 201,
                body: Vec::new(),
                ttl_secs: 60.0,
            },
        }
    }

    fn facts(persons: &[&[u8]]) -> OrderFacts {
        OrderFacts {
            owned_buyers: persons.len() as i64,
            persons: persons
                .iter()
                .map(|h| ("passport".to_string(), h.to_vec()))
                .collect(),
            ..OrderFacts::default()
        }
    }

    fn refusal(v: Verdict) -> Option<Refusal> {
        match v {
            Verdict::Refuse(StoreError::Refused { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn one_person_through_two_accounts_in_one_batch_is_written_once() {
        let mut tally = BatchTally::default();
        // Accounts 10 and 11 each name their own ticket buyer row (100, 200) for one person.
        let first = tally.judge(&order(1, 10, &[100]), &facts(&[b"same"]));
        assert!(matches!(first, Verdict::Write));
        let second = tally.judge(&order(2, 11, &[200]), &facts(&[b"same"]));
        assert_eq!(refusal(second), Some(Refusal::BuyerHasTicket));
        let other = tally.judge(&order(3, 11, &[201]), &facts(&[b"other"]));
        assert!(matches!(other, Verdict::Write), "another person is fine");
    }

    #[test]
    fn one_person_twice_in_one_order_is_refused() {
        let mut tally = BatchTally::default();
        let twice = tally.judge(&order(1, 10, &[100, 101]), &facts(&[b"same", b"same"]));
        assert_eq!(refusal(twice), Some(Refusal::BuyerHasTicket));
    }
}
