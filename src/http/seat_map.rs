//! The REST seat map's categories, serialized once per published state and shared by every
//! request until the state changes.
//!
//! A hot category's map is asked for by thousands of buyers a second while its actor
//! republishes at most every `actors.snapshot_interval_ms`: serializing it per request would
//! cost a few hundred microseconds of JSON each time for the same bytes. A category whose actor
//! is not running is read from Postgres (within the catalog's bound on cache misses) and kept
//! for `cache.idle_seat_map_ms` — never by starting its actor, so a crawler walking every program cannot
//! load the whole catalog into memory.

use super::error::ApiError;
use crate::actors::{CategorySnapshot, Supervisor};
use crate::domain::inventory::SeatStatus;
use crate::store::catalog_cache::CatalogCache;
use crate::store::catalog_read::{CategoryInfo, IdleCategory};
use bytes::Bytes;
use dashmap::DashMap;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serialized seat-map categories, one entry per category asked for (bounded by the catalog:
/// an unknown program is a 404 before any entry is made).
#[derive(Clone)]
pub struct SeatMapParts {
    parts: Arc<DashMap<i64, Arc<Part>>>,
    /// How long an idle category's map read from Postgres is served again. Its seats cannot
    /// change while no actor runs here: every change goes through an actor, and this node's
    /// would be running and served instead. The bound covers another node's actor selling the
    /// category (that node's buyers see it live; here the map lags by at most this).
    idle_ttl: Duration,
}

/// One category's entry of the `categories` array, ready to send.
pub struct Part {
    /// What it was made from, to tell whether it is still current.
    source: Source,
    /// The category's `seq` at that state.
    pub seq: u64,
    /// Tickets available at that state.
    pub remaining: u32,
    /// `SeatMapCategory` as JSON.
    pub json: Bytes,
}

enum Source {
    /// The actor's published snapshot (compared by pointer: the actor publishes a new one on
    /// every change).
    Live(Arc<CategorySnapshot>),
    /// Read from Postgres at this instant while no actor ran.
    Idle(Instant),
}

impl SeatMapParts {
    /// No parts yet; idle categories' parts are kept `idle_ttl`.
    pub fn new(idle_ttl: Duration) -> Self {
        SeatMapParts {
            parts: Arc::default(),
            idle_ttl,
        }
    }

    /// Category `c`'s entry as of now: the running actor's published snapshot, or Postgres's
    /// state while none runs.
    pub async fn part(
        &self,
        c: &CategoryInfo,
        supervisor: &Supervisor,
        catalog: &CatalogCache,
    ) -> Result<Arc<Part>, ApiError> {
        if let Some(snapshot) = supervisor.published(c.id) {
            return Ok(self.live_part(c, snapshot));
        }
        if let Some(part) = self.parts.get(&c.id).map(|p| p.clone())
            && matches!(part.source, Source::Idle(at) if at.elapsed() < self.idle_ttl)
        {
            return Ok(part);
        }
        let idle = catalog
            .idle_category(c.id)
            .await?
            .ok_or_else(|| ApiError::not_found("ticket category"))?;
        let part = Arc::new(idle_part(c, &idle));
        self.parts.insert(c.id, part.clone());
        Ok(part)
    }

    fn live_part(&self, c: &CategoryInfo, snapshot: Arc<CategorySnapshot>) -> Arc<Part> {
        if let Some(part) = self.parts.get(&c.id)
            && matches!(&part.source, Source::Live(s) if Arc::ptr_eq(s, &snapshot))
        {
            return part.clone();
        }
        let seats = snapshot.seats.iter().zip(&snapshot.statuses);
        let entry = entry(c, snapshot.counts.available, snapshot.seq, seats);
        let part = Arc::new(Part {
            seq: snapshot.seq,
            remaining: snapshot.counts.available,
            json: to_json(&entry),
            source: Source::Live(snapshot),
        });
        self.parts.insert(c.id, part.clone());
        part
    }
}

fn idle_part(c: &CategoryInfo, idle: &IdleCategory) -> Part {
    let seats = idle.seats.iter().map(|(s, status)| (s, status));
    let entry = entry(c, idle.available, idle.seq, seats);
    Part {
        seq: idle.seq,
        remaining: idle.available,
        json: to_json(&entry),
        source: Source::Idle(Instant::now()),
    }
}

fn entry<'a>(
    c: &CategoryInfo,
    remaining: u32,
    seq: u64,
    seats: impl Iterator<Item = (&'a crate::domain::inventory::SeatInfo, &'a SeatStatus)>,
) -> SeatMapCategory {
    SeatMapCategory {
        id: c.id,
        show_time_id: c.show_time_id,
        name: c.name.clone(),
        price_cents: c.price_cents,
        seated: c.seated,
        remaining,
        seq,
        seats: seats
            .map(|(s, status)| SeatOnMap {
                id: s.id,
                row: s.row,
                col: s.col,
                status: *status,
            })
            .collect(),
    }
}

/// Serializing these plain structs cannot fail; an empty body would show if it ever did.
fn to_json(entry: &SeatMapCategory) -> Bytes {
    serde_json::to_vec(entry)
        .map(Bytes::from)
        .unwrap_or_default()
}

/// The whole answer, `{program_id, seq, categories}`, from the categories' parts: only the
/// envelope is written per request.
pub fn assemble(program_id: i64, parts: &[Arc<Part>]) -> Bytes {
    let seq = parts.iter().map(|p| p.seq).max().unwrap_or(0);
    let size: usize = parts.iter().map(|p| p.json.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 64);
    out.extend_from_slice(
        format!("{{\"program_id\":{program_id},\"seq\":{seq},\"categories\":[").as_bytes(),
    );
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&part.json);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// The live seat map of a program (or of one of its show times), as documented; the handler
/// sends it pre-serialized ([`assemble`]).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeatMap {
    /// The program.
    program_id: i64,
    /// The highest `seq` of its categories: compare with WebSocket deltas.
    seq: u64,
    /// One entry per ticket category shown.
    categories: Vec<SeatMapCategory>,
}

/// One category of the seat map.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeatMapCategory {
    /// Ticket category id.
    id: i64,
    /// The show time it sells.
    show_time_id: i64,
    /// Tier name.
    name: String,
    /// Price in minor units.
    price_cents: i64,
    /// Seated (seats listed) or general admission (no seats).
    seated: bool,
    /// Tickets available now.
    remaining: u32,
    /// Sequence number of the category's last change.
    seq: u64,
    /// Every seat with its status, in grid order.
    seats: Vec<SeatOnMap>,
}

/// One seat of the map.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeatOnMap {
    /// Seat id.
    id: i64,
    /// Row, 1 nearest the stage.
    row: i32,
    /// Column, from 1.
    col: i32,
    /// `available`, `held` or `sold`.
    status: SeatStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assembled_answer_is_the_documented_json() {
        let part = |seq: u64, json: &str| {
            Arc::new(Part {
                source: Source::Idle(Instant::now()),
                seq,
                remaining: 0,
                json: Bytes::from(json.to_owned()),
            })
        };
        let body = assemble(9, &[part(3, r#"{"id":1}"#), part(7, r#"{"id":2}"#)]);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"program_id": 9, "seq": 7, "categories": [{"id": 1}, {"id": 2}]})
        );
        let empty: serde_json::Value = serde_json::from_slice(&assemble(9, &[])).unwrap();
        assert_eq!(empty["categories"], serde_json::json!([]));
    }
}
