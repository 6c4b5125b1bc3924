//! The ordering service (ARCHITECTURE.md, "Placing an order"): checks in the documented order,
//! reserves tickets in the category actors (ascending category id, all or nothing), hands the
//! order to the group-commit writer and only then answers. The actors make their reservations
//! real or drop them according to the commit's outcome.

use crate::actors::{ActorError, Hold, Outcome, Reserve, Reserved, Selection, Settle, Supervisor};
use crate::clock::Clock;
use crate::domain::inventory::{InventoryError, SeatId};
use crate::domain::order_no::OrderNoGenerator;
use crate::store::catalog_cache::CatalogCache;
use crate::store::catalog_read::ProgramDetail;
use crate::store::discarded::{self, DiscardedBacklog};
use crate::store::health::{Health, Store};
use crate::store::orders::{
    self, IdempotentResult, NewTicket, OrderHead, OrderPlaced, PlaceOrder, SeatRef, TicketView,
};
use crate::store::writer::{GroupCommitWriter, Placed};
use crate::store::{PgPool, Refusal, StoreError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `POST /api/v1/orders` body: chosen seats, or a tier and a quantity.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct OrderRequest {
    /// The program.
    pub program_id: i64,
    /// The show time; required when the program has more than one (each sells its own
    /// ticket categories).
    pub show_time_id: Option<i64>,
    /// One real-name holder per ticket.
    #[schema(min_items = 1)]
    pub ticket_buyer_ids: Vec<i64>,
    /// Chosen seats with the price the client saw.
    pub seats: Option<Vec<SeatChoice>>,
    /// Tier for best-available / general admission.
    pub ticket_category_id: Option<i64>,
    /// Tickets wanted from that tier.
    pub quantity: Option<u32>,
}

/// A seat the buyer picked.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct SeatChoice {
    /// Seat id.
    pub seat_id: i64,
    /// Price shown to the buyer.
    pub price_cents: i64,
}

/// Why an order was not placed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// A field is malformed.
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    /// No such program.
    #[error("program not found")]
    NoProgram,
    /// Sales have not started.
    #[error("sales open at {0}")]
    NotOnSale(chrono::DateTime<chrono::Utc>),
    /// The chosen show time has begun.
    #[error("this show has started; tickets are no longer sold")]
    ShowStarted,
    /// Per-order or per-account limit.
    #[error("{0}")]
    Limit(String),
    /// The actors refused (seat taken, sold out, price mismatch, overloaded ...).
    #[error(transparent)]
    Actor(#[from] ActorError),
    /// A store failed or a rule checked in the transaction refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The `Idempotency-Key` already answered a request with another body.
    #[error("this Idempotency-Key was used with another body")]
    KeyReused,
    /// The commit failed: seats released, attempt recorded as a discarded order.
    #[error("the order could not be made durable; nothing was charged or kept")]
    NotDurable,
}

/// What placing needs; built once per server.
#[derive(Clone)]
pub struct Ordering {
    /// Category actors.
    pub supervisor: Supervisor,
    /// Group commit.
    pub writer: GroupCommitWriter,
    /// Program rules (cached).
    pub catalog: CatalogCache,
    /// Where discarded orders are recorded.
    pub pg: PgPool,
    /// Discarded orders kept while Postgres is unreachable, recorded when it returns.
    pub discarded: DiscardedBacklog,
    /// Stores known down: an order is refused before it takes seats while Postgres is.
    pub health: Health,
    /// Order numbers.
    pub ids: Arc<OrderNoGenerator>,
    /// Wall time.
    pub clock: Arc<dyn Clock>,
    /// Payment window.
    pub payment_window: chrono::Duration,
    /// How long an `Idempotency-Key`'s answer is kept (seconds).
    pub idempotency_ttl_secs: f64,
}

/// Selections per category, ascending by category id.
type Plan = BTreeMap<i64, Selection>;

impl Ordering {
    /// Places the order; on success the JSON body of the 201, already stored under `idem_key`.
    pub async fn place(
        &self,
        user_id: i64,
        req: &OrderRequest,
        idem_key: &str,
        request_hash: Vec<u8>,
    ) -> Result<Vec<u8>, OrderError> {
        let n = validate_shape(req)?;
        self.health.ensure_up(Store::Postgres)?;
        let program = self
            .catalog
            .detail(req.program_id)
            .await?
            .ok_or(OrderError::NoProgram)?;
        self.check_program_rules(req, &program, n)?;
        let show_time_id = show_time_of(req, &program)?;
        self.check_show_not_started(&program, show_time_id)?;
        check_total_fits(req, &program)?;
        let plan = self.plan(req, &program, show_time_id).await?;
        let now = self.clock.now();
        let order_no = self.ids.next(user_id, now.timestamp_millis());
        let expires_at = now + self.payment_window;
        let reserved = self.reserve(order_no, plan, expires_at).await?;
        let mut order = build_order(
            user_id,
            req,
            &program,
            order_no,
            expires_at,
            &reserved,
            idem_key,
            request_hash,
        );
        order.idempotency.ttl_secs = self.idempotency_ttl_secs;
        self.commit(order, &reserved).await
    }

    /// On sale, seat choice allowed if seats are named, and within the per-order limit.
    fn check_program_rules(
        &self,
        req: &OrderRequest,
        program: &ProgramDetail,
        tickets: usize,
    ) -> Result<(), OrderError> {
        if program.on_sale_at > self.clock.now() {
            return Err(OrderError::NotOnSale(program.on_sale_at));
        }
        if req.seats.is_some() && !program.choose_seats {
            return Err(OrderError::Invalid(
                "seats",
                "this program assigns seats: order a quantity of a ticket category".into(),
            ));
        }
        if tickets > program.per_order_limit as usize {
            return Err(OrderError::Limit(format!(
                "at most {} tickets per order",
                program.per_order_limit
            )));
        }
        Ok(())
    }

    /// Tickets for a show that has begun are no longer sold.
    fn check_show_not_started(
        &self,
        program: &ProgramDetail,
        show_time_id: i64,
    ) -> Result<(), OrderError> {
        match program.show_time(show_time_id) {
            Some(show) if show.starts_at <= self.clock.now() => Err(OrderError::ShowStarted),
            _ => Ok(()),
        }
    }

    /// Hands the order to the group-commit writer, settles the reservations with what became
    /// of it, and answers: the stored body only if the order is in Postgres (or, for a key
    /// whose answer Postgres already holds, that answer).
    async fn commit(
        &self,
        order: PlaceOrder,
        reserved: &[(i64, Reserved)],
    ) -> Result<Vec<u8>, OrderError> {
        let order_no = order.order_no;
        let written = self.writer.place_order(order.clone()).await;
        self.settle(order_no, reserved, Self::outcome_of(&written))
            .await;
        match written {
            Ok(Placed::Written) => Ok(order.idempotency.body),
            Ok(Placed::Replayed((hash, _, body))) if hash == order.idempotency.request_hash => {
                Ok(body)
            }
            Ok(Placed::Replayed(_)) => Err(OrderError::KeyReused),
            Err(StoreError::Refused {
                reason: Refusal::Validation { field },
                message,
            }) => Err(OrderError::Invalid(field, message)),
            Err(e @ StoreError::Refused { .. }) => Err(e.into()),
            // The writer recorded it as discarded when it set it aside.
            Err(e @ StoreError::UnknownRefusal { .. }) => Err(e.into()),
            Err(e) => {
                tracing::error!(order_no, error = %e, "order commit failed; seats released");
                self.record_discarded(order, e.to_string()).await;
                Err(OrderError::NotDurable)
            }
        }
    }

    /// Records the attempt in `discarded_orders`, or keeps it for when Postgres answers again.
    async fn record_discarded(&self, order: PlaceOrder, reason: String) {
        let at = self.clock.now();
        match orders::record_discarded_at(&self.pg, &order, &reason, Some(at)).await {
            Ok(()) => {}
            Err(e) if discarded::is_unreachable(&e) => {
                tracing::warn!(order_no = order.order_no, error = %e, "discarded order kept until Postgres answers");
                self.discarded.keep(order, reason, at);
            }
            Err(e) => {
                tracing::error!(order_no = order.order_no, error = %e, "discarded order not recorded")
            }
        }
    }

    /// What the actors must learn from the writer's answer. A refusal of seats or GA tickets
    /// the actors reserved means their memory disagrees with Postgres; a commit whose outcome
    /// Postgres could not confirm (the writer asks it when the answer to `COMMIT` is lost)
    /// leaves memory unknown. Both make the actors reload.
    fn outcome_of(written: &Result<Placed, StoreError>) -> Outcome {
        match written {
            Ok(Placed::Written) => Outcome::Committed,
            Ok(Placed::Replayed(_)) => Outcome::NotCommitted,
            Err(StoreError::Refused { reason, .. }) if reason.is_about_seats() => Outcome::Unknown,
            Err(StoreError::CommitUnknown(_) | StoreError::UnknownRefusal { .. }) => {
                Outcome::Unknown
            }
            Err(_) => Outcome::NotCommitted,
        }
    }

    /// Which category each seat belongs to (from the actors' seat index, no database read);
    /// every category must be one the show time sells.
    async fn plan(
        &self,
        req: &OrderRequest,
        program: &ProgramDetail,
        show_time_id: i64,
    ) -> Result<Plan, OrderError> {
        let mut plan = Plan::new();
        let sold_then = |c: i64| program.categories_of(show_time_id).any(|t| t.id == c);
        if let Some(category) = req.ticket_category_id {
            if !sold_then(category) {
                return Err(OrderError::Invalid(
                    "ticket_category_id",
                    "not a tier of this program's show time".into(),
                ));
            }
            plan.insert(category, Selection::Best(req.quantity.unwrap_or(0)));
            return Ok(plan);
        }
        let mut chosen: BTreeMap<i64, Vec<(SeatId, i64)>> = BTreeMap::new();
        for seat in req.seats.iter().flatten() {
            let category = self.category_of(seat.seat_id, program).await?;
            if !sold_then(category) {
                return Err(OrderError::Invalid(
                    "seats",
                    format!("seat {} is not sold for this show time", seat.seat_id),
                ));
            }
            chosen
                .entry(category)
                .or_default()
                .push((seat.seat_id, seat.price_cents));
        }
        Ok(chosen
            .into_iter()
            .map(|(c, seats)| (c, Selection::Seats(seats)))
            .collect())
    }

    /// The seat's category through the supervisor's seat index: one lookup per seat once the
    /// program's actors run; otherwise the program's seated categories are started and their
    /// published snapshots searched.
    async fn category_of(&self, seat_id: i64, program: &ProgramDetail) -> Result<i64, OrderError> {
        let of_program = |c: &i64| program.ticket_categories.iter().any(|t| t.id == *c);
        if let Some(category) = self.supervisor.category_of_seat(seat_id) {
            return in_program(seat_id, Some(category).filter(of_program));
        }
        // Rare path (a category not running, or an index entry dropped by a racing unload):
        // the snapshots themselves are searched, so the index is never the last word.
        for c in program.ticket_categories.iter().filter(|c| c.seated) {
            let snapshot = self.supervisor.snapshot(c.id).await?;
            if snapshot.seats.iter().any(|s| s.id == seat_id) {
                return Ok(c.id);
            }
        }
        in_program(seat_id, None)
    }

    /// Reserves every category in ascending id; any refusal releases what was taken.
    async fn reserve(
        &self,
        order_no: i64,
        plan: Plan,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(i64, Reserved)>, OrderError> {
        let mut taken = Vec::with_capacity(plan.len());
        for (category, selection) in plan {
            let hold = Hold {
                order_no,
                selection,
                expires_at,
            };
            let started = std::time::Instant::now();
            match self
                .supervisor
                .call(category, Reserve(hold))
                .await
                .and_then(|r| r)
            {
                Ok(reserved) => {
                    self.supervisor.record_hold(category, started.elapsed());
                    taken.push((category, reserved));
                }
                Err(e) => {
                    self.settle(order_no, &taken, Outcome::NotCommitted).await;
                    return Err(e.into());
                }
            }
        }
        Ok(taken)
    }

    /// Tells every reserving actor the outcome. `report` is exempt from the mailbox budget and
    /// redelivers to a replacement actor, so the only failure left is a category that cannot be
    /// loaded at all — and the next load reads the truth from Postgres.
    async fn settle(&self, order_no: i64, taken: &[(i64, Reserved)], outcome: Outcome) {
        for (category, reserved) in taken {
            let settle = Settle {
                order_no,
                outcome,
                change: Some(reserved.change.clone()),
            };
            if let Err(e) = self.supervisor.settle(*category, settle).await {
                tracing::warn!(order_no, category, error = %e, "settle not delivered; the category reloads from Postgres");
            }
        }
    }
}

/// The show time the order is for: the one named, or the program's only one.
fn show_time_of(req: &OrderRequest, program: &ProgramDetail) -> Result<i64, OrderError> {
    match (req.show_time_id, program.show_times.as_slice()) {
        (Some(id), _) => program.show_time(id).map(|s| s.id).ok_or_else(|| {
            OrderError::Invalid("show_time_id", "not a show time of this program".into())
        }),
        (None, [only]) => Ok(only.id),
        (None, _) => Err(OrderError::Invalid(
            "show_time_id",
            "this program has several show times: name one".into(),
        )),
    }
}

/// `Ok(category)` if the seat is in a category of the program.
fn in_program(seat_id: i64, category: Option<i64>) -> Result<i64, OrderError> {
    category.ok_or_else(|| {
        OrderError::Invalid("seats", format!("seat {seat_id} is not in this program"))
    })
}

/// Exactly one way of choosing, one ticket per ticket buyer, no buyer twice. Returns the count.
fn validate_shape(req: &OrderRequest) -> Result<usize, OrderError> {
    let n = req.ticket_buyer_ids.len();
    if n == 0 {
        return Err(OrderError::Invalid(
            "ticket_buyer_ids",
            "name one ticket buyer per ticket".into(),
        ));
    }
    let mut ids = req.ticket_buyer_ids.clone();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != n {
        return Err(OrderError::Invalid(
            "ticket_buyer_ids",
            "a ticket buyer is listed twice".into(),
        ));
    }
    match (&req.seats, req.ticket_category_id, req.quantity) {
        (Some(seats), None, None) if seats.len() == n => Ok(n),
        (None, Some(_), Some(q)) if q as usize == n => Ok(n),
        (Some(_), None, None) | (None, Some(_), Some(_)) => Err(OrderError::Invalid(
            "ticket_buyer_ids",
            "one ticket buyer per ticket: as many buyers as seats (or as the quantity)".into(),
        )),
        _ => Err(OrderError::Invalid(
            "seats",
            "give either seats, or ticket_category_id and quantity".into(),
        )),
    }
}

/// The order's total in minor units fits an `i64`, prices are not negative: checked before any
/// seat is reserved, so [`build_order`]'s sum cannot overflow.
fn check_total_fits(req: &OrderRequest, program: &ProgramDetail) -> Result<(), OrderError> {
    let too_big = || OrderError::Invalid("seats", "the order's total is out of range".into());
    let total = match (&req.seats, req.ticket_category_id) {
        (Some(seats), _) => seats.iter().try_fold(0i64, |sum, s| {
            (s.price_cents >= 0).then_some(())?;
            sum.checked_add(s.price_cents)
        }),
        (None, Some(category)) => program
            .ticket_categories
            .iter()
            .find(|c| c.id == category)
            .map_or(Some(0), |c| {
                c.price_cents
                    .checked_mul(i64::from(req.quantity.unwrap_or(0)))
            }),
        (None, None) => Some(0),
    };
    total.map(|_| ()).ok_or_else(too_big)
}

#[allow(clippy::too_many_arguments)]
fn build_order(
    user_id: i64,
    req: &OrderRequest,
    program: &ProgramDetail,
    order_no: i64,
    expires_at: chrono::DateTime<chrono::Utc>,
    reserved: &[(i64, Reserved)],
    idem_key: &str,
    request_hash: Vec<u8>,
) -> PlaceOrder {
    let price_of = |category: i64| {
        program
            .ticket_categories
            .iter()
            .find(|c| c.id == category)
            .map_or(0, |c| c.price_cents)
    };
    let mut units: Vec<NewTicket> = Vec::new();
    for (category, r) in reserved {
        if r.held.seats.is_empty() {
            units.extend((0..r.held.quantity).map(|_| NewTicket {
                ticket_category_id: *category,
                ticket_buyer_id: 0,
                seat_id: None,
                price_cents: price_of(*category),
            }));
        } else {
            units.extend(r.held.seats.iter().map(|s| NewTicket {
                ticket_category_id: *category,
                ticket_buyer_id: 0,
                seat_id: Some(s.id),
                price_cents: s.price_cents,
            }));
        }
    }
    for (ticket, buyer) in units.iter_mut().zip(&req.ticket_buyer_ids) {
        ticket.ticket_buyer_id = *buyer;
    }
    // Checked before reserving ([`check_total_fits`]); saturating all the same.
    let total_cents = units
        .iter()
        .fold(0i64, |sum, t| sum.saturating_add(t.price_cents));
    // Validated before anything was reserved.
    let show_time_id = show_time_of(req, program).ok();
    let seat_of = |id: i64| {
        reserved
            .iter()
            .flat_map(|(_, r)| &r.held.seats)
            .find(|s| s.id == id)
    };
    let tickets = units
        .iter()
        .map(|t| TicketView {
            ticket_buyer_id: t.ticket_buyer_id,
            ticket_category_id: t.ticket_category_id,
            seat: t.seat_id.and_then(seat_of).map(|s| SeatRef {
                id: s.id,
                row: s.row,
                col: s.col,
            }),
            price_cents: t.price_cents,
        })
        .collect();
    let body = OrderPlaced {
        head: OrderHead {
            order_no: order_no.to_string(),
            program_id: program.id,
            show_time_id,
            status: "pending_payment".into(),
            total_cents,
            expires_at,
        },
        tickets,
    };
    PlaceOrder {
        order_no,
        user_id,
        program_id: program.id,
        show_time_id,
        total_cents,
        expires_at,
        tickets: units,
        changes: reserved.iter().map(|(_, r)| r.change.clone()).collect(),
        per_account_limit: program.per_account_limit,
        idempotency: IdempotentResult {
            key: idem_key.to_string(),
            request_hash,
            status: 201,
            body: serde_json::to_vec(&body).unwrap_or_default(),
            ttl_secs: 0.0,
        },
    }
}

impl From<InventoryError> for OrderError {
    fn from(e: InventoryError) -> Self {
        OrderError::Actor(ActorError::Inventory(e))
    }
}
