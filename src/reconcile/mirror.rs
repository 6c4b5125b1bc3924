//! The Redis read-model mirror: per category the committed counts and every seat's status, for
//! readers that must not touch an actor or Postgres (the operators' inventory view, dashboards,
//! other processes). Never trusted over Postgres (invariant 8): the reconciler compares it and
//! rewrites it from Postgres when it differs.
//!
//! Fed off the hot path: an actor, after a change commits, drops a note into a bounded channel
//! ([`MirrorSink::note`], never awaited); one task per process coalesces the notes for
//! `mirror_coalesce_ms` and writes them as one fred pipeline — `HSET` of the seats that changed
//! (last status wins) and `HINCRBY` of the counts (the changes summed). A note that does not fit
//! the channel is dropped and counted (`mirror_dropped_total`); the reconciler's next pass
//! repairs what it missed. An actor that starts writes its whole state first ([`MirrorUpdate::Reset`]),
//! so the mirror begins from what the actor loaded from Postgres.
//!
//! Keys (under the Redis prefix): `mirror:{category}:counts` (hash: available, held, sold) and
//! `mirror:{category}:seats` (hash: seat id → `available` | `held` | `sold`).

use crate::domain::inventory::{ChangeKind, Counts, SeatChange, SeatId, SeatStatus};
use crate::store::{RedisStore, StoreError};
use fred::prelude::*;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// Notes waiting for the mirror task before new ones are dropped: a burst of a few seconds of
/// a hot sale; memory stays bounded when Redis is slow or away.
const QUEUE: usize = 65_536;

/// What an actor tells the mirror.
#[derive(Debug, Clone)]
pub enum MirrorUpdate {
    /// The category's whole committed state (an actor started or reloaded from Postgres).
    Reset {
        /// The category.
        category_id: i64,
        /// Its counts.
        counts: Counts,
        /// Every seat (empty for general admission).
        seats: Vec<(SeatId, SeatStatus)>,
    },
    /// A committed change.
    Changed {
        /// The category.
        category_id: i64,
        /// Hold, release, sale or return.
        kind: ChangeKind,
        /// Tickets it moved.
        quantity: u32,
        /// Seats' new statuses (empty for general admission).
        seats: Vec<SeatChange>,
    },
}

/// The actors' end of the mirror: cheap to clone, never blocks.
#[derive(Clone)]
pub struct MirrorSink {
    tx: mpsc::Sender<MirrorUpdate>,
}

impl MirrorSink {
    /// Queues `update`; drops it (counted) when the queue is full or the task is gone.
    pub fn note(&self, update: MirrorUpdate) {
        if self.tx.try_send(update).is_err() {
            metrics::counter!("mirror_dropped_total").increment(1);
        }
    }
}

/// Starts the mirror task; it ends when every sink is dropped.
pub fn start(redis: RedisStore, coalesce: Duration) -> MirrorSink {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(redis, coalesce, rx));
    MirrorSink { tx }
}

async fn run(redis: RedisStore, coalesce: Duration, mut rx: mpsc::Receiver<MirrorUpdate>) {
    while let Some(first) = rx.recv().await {
        let mut pending = Pending::default();
        pending.add(first);
        tokio::time::sleep(coalesce).await;
        while let Ok(next) = rx.try_recv() {
            pending.add(next);
        }
        if let Err(e) = pending.write(&redis).await {
            // Not retried here: the reconciler finds the difference and rewrites the category.
            metrics::counter!("mirror_write_failures_total").increment(1);
            tracing::warn!(error = %e, "mirror write failed; the reconciler repairs it");
        }
    }
}

/// One category's coalesced notes.
#[derive(Default)]
struct CategoryNotes {
    reset: Option<(Counts, Vec<(SeatId, SeatStatus)>)>,
    seats: HashMap<SeatId, SeatStatus>,
    /// available, held, sold.
    deltas: [i64; 3],
}

/// Notes gathered during one coalescing window.
#[derive(Default)]
struct Pending {
    categories: HashMap<i64, CategoryNotes>,
}

impl Pending {
    fn add(&mut self, update: MirrorUpdate) {
        match update {
            MirrorUpdate::Reset {
                category_id,
                counts,
                seats,
            } => {
                // Everything noted before the reset is part of it.
                let notes = CategoryNotes {
                    reset: Some((counts, seats)),
                    ..Default::default()
                };
                self.categories.insert(category_id, notes);
            }
            MirrorUpdate::Changed {
                category_id,
                kind,
                quantity,
                seats,
            } => {
                let notes = self.categories.entry(category_id).or_default();
                for s in seats {
                    notes.seats.insert(s.seat_id, s.status);
                }
                for (d, by) in notes.deltas.iter_mut().zip(count_moves(kind, quantity)) {
                    *d += by;
                }
            }
        }
    }

    /// One pipeline for every category of the window.
    async fn write(self, redis: &RedisStore) -> Result<(), StoreError> {
        let pipeline = redis.client().pipeline();
        for (category_id, notes) in self.categories {
            queue_notes(&pipeline, redis, category_id, notes).await?;
        }
        pipeline
            .all::<Vec<Value>>()
            .await
            .map(|_| ())
            .map_err(StoreError::from)
    }
}

async fn queue_notes(
    pipeline: &fred::clients::Pipeline<Client>,
    redis: &RedisStore,
    category_id: i64,
    notes: CategoryNotes,
) -> Result<(), StoreError> {
    let (counts_key, seats_key) = (
        counts_key(redis, category_id),
        seats_key(redis, category_id),
    );
    let queued = async {
        if let Some((counts, seats)) = notes.reset {
            queue_reset(pipeline, &counts_key, &seats_key, counts, &seats).await?;
        }
        if !notes.seats.is_empty() {
            let fields: Vec<(String, &str)> = notes
                .seats
                .iter()
                .map(|(id, status)| (id.to_string(), status_name(*status)))
                .collect();
            let _: () = pipeline.hset(&seats_key, fields).await?;
        }
        for (field, by) in COUNT_FIELDS.iter().zip(notes.deltas) {
            if by != 0 {
                let _: () = pipeline.hincrby(&counts_key, *field, by).await?;
            }
        }
        Ok::<(), fred::error::Error>(())
    };
    queued.await.map_err(StoreError::from)
}

async fn queue_reset(
    pipeline: &fred::clients::Pipeline<Client>,
    counts_key: &str,
    seats_key: &str,
    counts: Counts,
    seats: &[(SeatId, SeatStatus)],
) -> Result<(), fred::error::Error> {
    let _: () = pipeline.del(vec![counts_key, seats_key]).await?;
    let _: () = pipeline.hset(counts_key, count_fields(counts)).await?;
    if !seats.is_empty() {
        let fields: Vec<(String, &str)> = seats
            .iter()
            .map(|(id, status)| (id.to_string(), status_name(*status)))
            .collect();
        let _: () = pipeline.hset(seats_key, fields).await?;
    }
    Ok(())
}

/// Hash fields of the counts key, in [`CategoryNotes::deltas`] order.
const COUNT_FIELDS: [&str; 3] = ["available", "held", "sold"];

fn count_fields(counts: Counts) -> Vec<(&'static str, i64)> {
    COUNT_FIELDS
        .into_iter()
        .zip([counts.available, counts.held, counts.sold].map(i64::from))
        .collect()
}

/// How a committed change moves the counts (available, held, sold).
fn count_moves(kind: ChangeKind, quantity: u32) -> [i64; 3] {
    let q = i64::from(quantity);
    match kind {
        ChangeKind::Hold => [-q, q, 0],
        ChangeKind::Release => [q, -q, 0],
        ChangeKind::Confirm => [0, -q, q],
        ChangeKind::Return => [q, 0, -q],
    }
}

/// The status as stored in the seats hash (and as Postgres spells it).
pub fn status_name(status: SeatStatus) -> &'static str {
    match status {
        SeatStatus::Available => "available",
        SeatStatus::Held => "held",
        SeatStatus::Sold => "sold",
    }
}

fn counts_key(redis: &RedisStore, category_id: i64) -> String {
    redis.key(&format!("mirror:{category_id}:counts"))
}

fn seats_key(redis: &RedisStore, category_id: i64) -> String {
    redis.key(&format!("mirror:{category_id}:seats"))
}

/// What the mirror holds for a category: counts (None when it has none) and seat statuses as
/// stored (unparsed, so a corrupt value shows as itself).
#[derive(Debug, Clone, Default)]
pub struct Mirrored {
    /// Counts, if the counts hash exists and parses.
    pub counts: Option<Counts>,
    /// Seat id → status text.
    pub seats: HashMap<SeatId, String>,
}

/// Reads the category's mirror (two commands, pipelined).
pub async fn read(redis: &RedisStore, category_id: i64) -> Result<Mirrored, StoreError> {
    let pipeline = redis.client().pipeline();
    let read = async {
        let _: () = pipeline.hgetall(counts_key(redis, category_id)).await?;
        let _: () = pipeline.hgetall(seats_key(redis, category_id)).await?;
        pipeline
            .all::<(HashMap<String, i64>, HashMap<String, String>)>()
            .await
    };
    let (counts, seats) = read.await.map_err(StoreError::from)?;
    Ok(Mirrored {
        counts: parse_counts(&counts),
        seats: seats
            .into_iter()
            .filter_map(|(id, status)| Some((id.parse().ok()?, status)))
            .collect(),
    })
}

fn parse_counts(fields: &HashMap<String, i64>) -> Option<Counts> {
    let get = |name: &str| fields.get(name).and_then(|v| u32::try_from(*v).ok());
    Some(Counts {
        available: get("available")?,
        held: get("held")?,
        sold: get("sold")?,
    })
}

/// The mirror's counts of each of `ids` that has them (one pipeline; the admin stream's
/// "redis" figures).
pub async fn counts(redis: &RedisStore, ids: &[i64]) -> Result<HashMap<i64, Counts>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let pipeline = redis.client().pipeline();
    let read = async {
        for id in ids {
            let _: () = pipeline.hgetall(counts_key(redis, *id)).await?;
        }
        pipeline.all::<Vec<HashMap<String, i64>>>().await
    };
    let all = read.await.map_err(StoreError::from)?;
    Ok(ids
        .iter()
        .zip(all)
        .filter_map(|(id, fields)| Some((*id, parse_counts(&fields)?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_keeps_the_total_and_a_reset_replaces_earlier_notes() {
        for kind in [
            ChangeKind::Hold,
            ChangeKind::Release,
            ChangeKind::Confirm,
            ChangeKind::Return,
        ] {
            assert_eq!(count_moves(kind, 3).iter().sum::<i64>(), 0, "{kind:?}");
        }
        let mut p = Pending::default();
        let changed = |kind| MirrorUpdate::Changed {
            category_id: 7,
            kind,
            quantity: 2,
            seats: vec![],
        };
        p.add(changed(ChangeKind::Hold));
        p.add(changed(ChangeKind::Confirm));
        assert_eq!(p.categories[&7].deltas, [-2, 0, 2]);
        p.add(MirrorUpdate::Reset {
            category_id: 7,
            counts: Counts::default(),
            seats: vec![],
        });
        assert_eq!(p.categories[&7].deltas, [0, 0, 0]);
        assert!(p.categories[&7].reset.is_some());
    }
}
