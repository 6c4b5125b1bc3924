//! One category seen from its three stores — the actor's memory, Postgres and the Redis mirror —
//! plus what Postgres's own orders say each seat should be (its live claim's order: unpaid →
//! held, paid → sold, none → available), and where they differ.

use super::mirror::{self, Mirrored, status_name};
use crate::actors::Supervisor;
use crate::domain::inventory::{Counts, SeatId, SeatStatus};
use crate::store::{PgPool, RedisStore, StoreError};
use serde::Serialize;
use std::collections::HashMap;

/// A seat as Postgres has it.
#[derive(Debug, Clone, Serialize)]
pub struct PgSeat {
    /// The seat.
    pub seat_id: SeatId,
    /// `seats.status`.
    pub status: String,
    /// `seats.order_no`.
    pub order_no: Option<i64>,
    /// What the live claim's order says it must be.
    pub expected: &'static str,
    /// The order claiming it, if any.
    pub claim_order: Option<i64>,
}

/// One category in every store.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CategoryView {
    /// The category.
    pub ticket_category_id: i64,
    /// Its program.
    #[serde(skip)]
    pub program_id: i64,
    /// Tickets in total.
    pub capacity: u32,
    /// The actor's committed-and-pending counts; None when no actor runs here.
    pub actor: Option<Counts>,
    /// Postgres's counts (the truth).
    pub postgres: Counts,
    /// The mirror's counts; None when the mirror has none.
    pub redis: Option<Counts>,
    /// All present stores agree, seat by seat, and every seat row agrees with its order.
    pub consistent: bool,
    /// Seats on which some store differs.
    pub differing_seats: Vec<SeatDiff>,
    /// Every seat in every store, on request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seats: Option<Vec<SeatDiff>>,
    /// Postgres's seat rows (for repairs; not shown).
    #[serde(skip)]
    pub pg_seats: Vec<PgSeat>,
    /// The actor's `seq` when read (None: no actor here).
    #[serde(skip)]
    pub actor_seq: Option<u64>,
    /// Orders mid-change in the actor when read: its counts then differ from Postgres by design.
    #[serde(skip)]
    pub actor_in_flight: usize,
}

/// A seat's status in each store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub struct SeatDiff {
    /// The seat.
    #[schema(value_type = i64)]
    pub seat_id: SeatId,
    /// In the actor (None: no actor here).
    pub actor: Option<&'static str>,
    /// In `seats`.
    pub postgres: String,
    /// In the mirror (None: not there).
    pub redis: Option<String>,
    /// What its order says it must be.
    pub expected: &'static str,
}

impl SeatDiff {
    fn agrees(&self) -> bool {
        self.postgres == self.expected
            && self.actor.is_none_or(|a| a == self.postgres)
            && self.redis.as_deref() == Some(self.postgres.as_str())
    }
}

/// Where a view reads from.
pub struct Stores<'a> {
    /// The truth.
    pub pg: &'a PgPool,
    /// The mirror's home; None when the server keeps no mirror (then it is not compared).
    pub redis: Option<&'a RedisStore>,
    /// The actors.
    pub supervisor: &'a Supervisor,
}

/// Reads `category_id` from all three stores. The actor is read only if it already runs here
/// (looking must not start one). A mirror Redis cannot answer for, or that does not parse,
/// reads as empty: it is then rewritten, not trusted.
pub async fn view(
    stores: &Stores<'_>,
    category_id: i64,
    all_seats: bool,
) -> Result<CategoryView, StoreError> {
    let (pg, supervisor) = (stores.pg, stores.supervisor);
    let (program_id, capacity, seated) = category_facts(pg, category_id).await?;
    let (postgres, pg_seats) = match seated {
        true => seated_in_postgres(pg, category_id).await?,
        false => (ga_in_postgres(pg, category_id).await?, Vec::new()),
    };
    let actor = actor_view(supervisor, category_id).await;
    let mirrored = match stores.redis {
        Some(redis) => Some(mirror::read(redis, category_id).await.unwrap_or_default()),
        None => None,
    };
    let diffs = seat_diffs(&pg_seats, actor.as_ref(), mirrored.as_ref());
    let differing: Vec<SeatDiff> = diffs.iter().filter(|d| !d.agrees()).cloned().collect();
    let actor_counts = actor.as_ref().map(|a| a.counts);
    let redis_counts = mirrored.as_ref().and_then(|m| m.counts);
    let in_flight = actor.as_ref().map_or(0, |a| a.in_flight);
    // Counts the actor has not committed yet are not a divergence.
    let consistent = differing.is_empty()
        && (in_flight > 0 || actor_counts.is_none_or(|a| a == postgres))
        && (mirrored.is_none() || redis_counts == Some(postgres));
    Ok(CategoryView {
        ticket_category_id: category_id,
        program_id,
        capacity,
        actor: actor_counts,
        postgres,
        redis: redis_counts,
        consistent,
        differing_seats: differing,
        seats: all_seats.then_some(diffs),
        pg_seats,
        actor_seq: actor.as_ref().map(|a| a.seq),
        actor_in_flight: in_flight,
    })
}

/// The categories of a program, in id order.
pub async fn program_categories(pg: &PgPool, program_id: i64) -> Result<Vec<i64>, StoreError> {
    let rows = pg
        .get()
        .await?
        .query(
            "SELECT id FROM ticket_categories WHERE program_id = $1 ORDER BY id",
            &[&program_id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn category_facts(pg: &PgPool, category_id: i64) -> Result<(i64, u32, bool), StoreError> {
    let row = pg
        .get()
        .await?
        .query_opt(
            "SELECT program_id, capacity, seated FROM ticket_categories WHERE id = $1",
            &[&category_id],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("ticket category {category_id}")))?;
    Ok((row.get(0), row.get::<_, i32>(1).max(0) as u32, row.get(2)))
}

/// Seat rows with the status their live claim's order implies, in one read (the writer writes
/// a seat row and its claim in one transaction, so they are never seen half-written).
async fn seated_in_postgres(
    pg: &PgPool,
    category_id: i64,
) -> Result<(Counts, Vec<PgSeat>), StoreError> {
    let rows = pg
        .get()
        .await?
        .query(
            "SELECT s.id, s.status, s.order_no, c.order_no, o.status
             FROM seats s
             LEFT JOIN seat_claims c ON c.seat_id = s.id
             LEFT JOIN orders o ON o.gene = (c.order_no & 15)::smallint AND o.order_no = c.order_no
             WHERE s.ticket_category_id = $1 ORDER BY s.id",
            &[&category_id],
        )
        .await?;
    let seats: Vec<PgSeat> = rows
        .iter()
        .map(|r| PgSeat {
            seat_id: r.get(0),
            status: r.get(1),
            order_no: r.get(2),
            claim_order: r.get(3),
            expected: match r.get::<_, Option<String>>(4).as_deref() {
                Some("pending_payment") => "held",
                Some("paid") => "sold",
                _ => "available",
            },
        })
        .collect();
    let mut counts = Counts::default();
    for s in &seats {
        match s.status.as_str() {
            "held" => counts.held += 1,
            "sold" => counts.sold += 1,
            _ => counts.available += 1,
        }
    }
    Ok((counts, seats))
}

async fn ga_in_postgres(pg: &PgPool, category_id: i64) -> Result<Counts, StoreError> {
    let row = pg
        .get()
        .await?
        .query_one(
            "SELECT tc.capacity - tc.ga_taken,
                    coalesce((SELECT sum(quantity) FROM ga_holds WHERE ticket_category_id = $1 AND status = 'held'), 0)::int,
                    coalesce((SELECT sum(quantity) FROM ga_holds WHERE ticket_category_id = $1 AND status = 'sold'), 0)::int
             FROM ticket_categories tc WHERE tc.id = $1",
            &[&category_id],
        )
        .await?;
    let n = |i: usize| row.get::<_, i32>(i).max(0) as u32;
    Ok(Counts {
        available: n(0),
        held: n(1),
        sold: n(2),
    })
}

/// What a running actor published.
struct ActorView {
    counts: Counts,
    seq: u64,
    in_flight: usize,
    statuses: HashMap<SeatId, SeatStatus>,
}

/// The running actor's published snapshot, if it runs here (no message to the actor).
async fn actor_view(supervisor: &Supervisor, category_id: i64) -> Option<ActorView> {
    if !supervisor.active_categories().contains(&category_id) {
        return None;
    }
    let snapshot = supervisor.snapshot(category_id).await.ok()?;
    let statuses = snapshot
        .seats
        .iter()
        .zip(&snapshot.statuses)
        .map(|(seat, status)| (seat.id, *status))
        .collect();
    Some(ActorView {
        counts: snapshot.counts,
        seq: snapshot.seq,
        in_flight: snapshot.in_flight,
        statuses,
    })
}

fn seat_diffs(
    pg_seats: &[PgSeat],
    actor: Option<&ActorView>,
    mirrored: Option<&Mirrored>,
) -> Vec<SeatDiff> {
    pg_seats
        .iter()
        .map(|s| SeatDiff {
            seat_id: s.seat_id,
            actor: actor.map(|a| {
                a.statuses
                    .get(&s.seat_id)
                    .map_or("missing", |st| status_name(*st))
            }),
            postgres: s.status.clone(),
            // Without a mirror, the mirror agrees by definition.
            redis: match mirrored {
                Some(m) => m.seats.get(&s.seat_id).cloned(),
                None => Some(s.status.clone()),
            },
            expected: s.expected,
        })
        .collect()
}
