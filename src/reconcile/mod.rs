//! Continuous reconciliation (DOMAIN.md, "The operations console"). Seat state lives in three
//! places — the category actor's memory, Postgres (the truth) and the Redis [`mirror`] — and an
//! order's state spans orders, seats, payment bills and the provider. A pass compares them and
//! records a [`findings`] row for every divergence that survives a second look
//! (`reconcile.confirm_ms` later: a change in flight is not a divergence). Repairs are applied
//! only where the fix is certain:
//!
//! - a seat row that disagrees with its live claim's order (the claims are the database's own
//!   invariant) is restored from the order — and raised, since something wrote a wrong row;
//! - an actor that disagrees with Postgres reloads from it — raised as well;
//! - the mirror is rewritten from Postgres — settled (`reconciled_ok`): it is only a copy;
//! - an unpaid order whose bill the provider reports paid (its callback was lost) is applied
//!   through the normal payment path — settled;
//! - a paid bill whose order is neither paid nor refunded is raised: money was taken for an
//!   order that did not sell, and only an operator can decide;
//! - an order event the bookkeeping consumer found inconsistent or never consumed (the MQ
//!   records' `problem`) is raised.
//!
//! Continuous passes cover the categories whose actors run here (the hot ones) and recent bills;
//! `POST /api/v1/admin/reconciliations/run` runs one on demand. Each pass is stored in
//! `reconciliation_runs` with its cost.

pub mod findings;
pub mod inventory;
pub mod mirror;

use crate::actors::Supervisor;
use crate::config::ReconcileSettings;
use crate::domain::inventory::Counts;
use crate::payments::Payments;
use crate::store::{PgPool, RedisStore, StoreError};
use findings::{NewFinding, PassReport};
use inventory::CategoryView;
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};

/// Runs passes; cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    pg: PgPool,
    redis: RedisStore,
    supervisor: Supervisor,
    payments: Payments,
    settings: ReconcileSettings,
    /// The mirror's queue (None: no mirror is kept): repairs go through it, in order with the
    /// actors' notes, so a rewrite is never overtaken by a change it already contains.
    mirror: Option<mirror::MirrorSink>,
    /// One pass at a time per process: an on-demand pass during a continuous one would repair
    /// the same rows twice.
    running: std::sync::Arc<Mutex<()>>,
}

impl Reconciler {
    /// A reconciler over the server's stores.
    pub fn new(
        pg: PgPool,
        redis: RedisStore,
        supervisor: Supervisor,
        payments: Payments,
        settings: ReconcileSettings,
        mirror: Option<mirror::MirrorSink>,
    ) -> Self {
        Reconciler {
            pg,
            redis,
            supervisor,
            payments,
            settings,
            mirror,
            running: Default::default(),
        }
    }

    /// The three stores' view of every category of `program_id` (the inventory view).
    pub async fn program_view(
        &self,
        program_id: i64,
        all_seats: bool,
    ) -> Result<Vec<CategoryView>, StoreError> {
        let mut views = Vec::new();
        for category_id in inventory::program_categories(&self.pg, program_id).await? {
            views.push(self.view(category_id, all_seats).await?);
        }
        Ok(views)
    }

    async fn view(&self, category_id: i64, all_seats: bool) -> Result<CategoryView, StoreError> {
        let stores = inventory::Stores {
            pg: &self.pg,
            redis: self.mirror.as_ref().map(|_| &self.redis),
            supervisor: &self.supervisor,
        };
        inventory::view(&stores, category_id, all_seats).await
    }

    /// Passes every `interval_ms` until `stop`; none when the interval is 0.
    pub async fn run_continuously(self, mut stop: watch::Receiver<bool>) {
        if self.settings.interval_ms == 0 {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if crate::events::stopping(&stop) {
                return;
            }
            if let Err(e) = self.pass("continuous", None).await {
                tracing::warn!(error = %e, "reconciliation pass failed; the next one tries again");
            }
        }
    }

    /// One pass over the categories whose actors run here (and those of `program_id`, if
    /// given) and over unpaid orders' bills; stored and answered with its figures.
    pub async fn pass(
        &self,
        trigger: &'static str,
        program_id: Option<i64>,
    ) -> Result<PassReport, StoreError> {
        let _one_at_a_time = self.running.lock().await;
        let started = Instant::now();
        let mut report = PassReport {
            trigger,
            ..Default::default()
        };
        let mut categories = self.supervisor.active_categories();
        if let Some(program_id) = program_id {
            categories.extend(inventory::program_categories(&self.pg, program_id).await?);
            categories.sort_unstable();
            categories.dedup();
        }
        // One failing part (a category gone, Redis away) must not stop the others.
        for category_id in categories {
            if let Err(e) = self.reconcile_category(category_id, &mut report).await {
                tracing::warn!(category_id, error = %e, "category not reconciled this pass");
            }
        }
        if let Err(e) = self.reconcile_payments(&mut report).await {
            tracing::warn!(error = %e, "payments not reconciled this pass");
        }
        if let Err(e) = self.reconcile_messages(&mut report).await {
            tracing::warn!(error = %e, "order events not reconciled this pass");
        }
        report.duration_ms = started.elapsed().as_secs_f64() * 1e3;
        metrics::histogram!("reconcile_pass_seconds").record(report.duration_ms / 1e3);
        findings::record_run(&self.pg, &report).await?;
        Ok(report)
    }

    /// Compares one category; a divergence is looked at again after `confirm_ms` and repaired
    /// or raised only if it is still there.
    async fn reconcile_category(
        &self,
        category_id: i64,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        let first = self.view(category_id, false).await?;
        report.categories += 1;
        report.seats += first.pg_seats.len() as i32;
        if first.consistent {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(self.settings.confirm_ms)).await;
        let second = self.view(category_id, false).await?;
        let mut confirmed = Confirmed::of(&first, second);
        if confirmed.is_empty() {
            return Ok(());
        }
        if self.restore_seat_rows(&confirmed, report).await? > 0 {
            // Judge the actor and the mirror against the repaired rows, again over two reads.
            let first = self.view(category_id, false).await?;
            tokio::time::sleep(Duration::from_millis(self.settings.confirm_ms)).await;
            confirmed = Confirmed::of(&first, self.view(category_id, false).await?);
        }
        self.reload_disagreeing_actor(&confirmed, report).await?;
        self.rewrite_mirror(&confirmed, report).await
    }

    /// Seat rows that disagree with their live claim's order are set to what the order says
    /// (only if the row is still as read). Answers how many were restored.
    async fn restore_seat_rows(
        &self,
        confirmed: &Confirmed,
        report: &mut PassReport,
    ) -> Result<usize, StoreError> {
        let view = &confirmed.view;
        let wrong: Vec<_> = view
            .pg_seats
            .iter()
            .filter(|s| confirmed.seat_rows.contains(&s.seat_id))
            .collect();
        let client = self.pg.get().await?;
        for seat in &wrong {
            let order_no = seat.claim_order.filter(|_| seat.expected != "available");
            let restored = client
                .execute(
                    "UPDATE seats SET status = $2, order_no = $3,
                         hold_expires_at = (SELECT o.expires_at FROM orders o
                             WHERE $2 = 'held' AND o.gene = ($3::bigint & 15)::smallint AND o.order_no = $3)
                     WHERE id = $1 AND status = $4 AND order_no IS NOT DISTINCT FROM $5",
                    &[
                        &seat.seat_id,
                        &seat.expected,
                        &order_no,
                        &seat.status,
                        &seat.order_no,
                    ],
                )
                .await?;
            let finding = NewFinding {
                kind: "seat_row",
                subject: format!("seat:{}", seat.seat_id),
                program_id: Some(view.program_id),
                ticket_category_id: Some(view.ticket_category_id),
                order_no: seat.claim_order.or(seat.order_no),
                details: json!({ "seat_id": seat.seat_id, "postgres": seat.status,
                    "postgres_order_no": seat.order_no.map(|n| n.to_string()),
                    "order_says": seat.expected }),
                status: findings::PROBLEM,
                repair: (restored == 1).then(|| "seat row restored from its order's claim".into()),
            };
            self.found(&finding, report).await?;
        }
        Ok(wrong.len())
    }

    /// An actor whose seats or counts differ from Postgres reloads from it (Postgres is the
    /// truth and, after [`Self::restore_seat_rows`], agrees with its own orders).
    async fn reload_disagreeing_actor(
        &self,
        confirmed: &Confirmed,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        let view = &confirmed.view;
        let seats: Vec<_> = view
            .differing_seats
            .iter()
            .filter(|d| d.actor.is_some_and(|a| a != d.postgres))
            .map(|d| json!({ "seat_id": d.seat_id, "actor": d.actor, "postgres": d.postgres }))
            .take(MAX_LISTED_SEATS)
            .collect();
        if seats.is_empty() && !confirmed.actor_counts {
            return Ok(());
        }
        // Stopped and started again at once: it loads Postgres's state, and its holds' timers
        // must keep running.
        self.supervisor.unload(view.ticket_category_id).await;
        if let Err(e) = self.supervisor.snapshot(view.ticket_category_id).await {
            tracing::warn!(category_id = view.ticket_category_id, error = %e, "actor did not restart; the next buyer starts it");
        }
        let details = json!({ "actor": view.actor, "postgres": view.postgres, "seats": seats });
        let finding = category_finding(view, "actor_seats", details, findings::PROBLEM)
            .repaired("actor reloaded from Postgres");
        self.found(&finding, report).await
    }

    /// The mirror, when it differs from Postgres, is rewritten from it.
    async fn rewrite_mirror(
        &self,
        confirmed: &Confirmed,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        let view = &confirmed.view;
        let seats: Vec<_> = view
            .differing_seats
            .iter()
            .filter(|d| d.redis.as_deref() != Some(d.postgres.as_str()))
            .map(|d| json!({ "seat_id": d.seat_id, "redis": d.redis, "postgres": d.postgres }))
            .take(MAX_LISTED_SEATS)
            .collect();
        if seats.is_empty() && !confirmed.mirror_counts {
            return Ok(());
        }
        let Some(sink) = &self.mirror else {
            return Ok(());
        };
        let statuses = view
            .pg_seats
            .iter()
            .map(|s| (s.seat_id, seat_status(&s.status)))
            .collect();
        sink.note(mirror::MirrorUpdate::Reset {
            category_id: view.ticket_category_id,
            counts: view.postgres,
            seats: statuses,
        });
        let details = json!({ "redis": view.redis, "postgres": view.postgres, "seats": seats });
        let finding = category_finding(view, "redis_mirror", details, findings::OK)
            .repaired("mirror rewritten from Postgres");
        self.found(&finding, report).await
    }

    /// Unpaid orders whose bill is older than `callback_grace_secs` are asked about at the
    /// provider (a paid answer is applied as the lost callback would have been); paid bills
    /// whose order is neither paid nor refunded are raised.
    async fn reconcile_payments(&self, report: &mut PassReport) -> Result<(), StoreError> {
        let grace = self.settings.callback_grace_secs as f64;
        // Oldest first and a bounded number per pass: each costs a call to the provider.
        let unpaid = self
            .pg
            .get()
            .await?
            .query(
                "SELECT b.order_no, min(o.program_id) FROM payment_bills b
                 JOIN orders o ON o.gene = (b.order_no & 15)::smallint AND o.order_no = b.order_no
                 WHERE b.status IN ('created', 'superseded') AND o.status = 'pending_payment'
                   AND b.created_at < now() - make_interval(secs => $1)
                 GROUP BY b.order_no ORDER BY min(b.created_at) LIMIT $2",
                &[&grace, &PAY_CHECKS_PER_PASS],
            )
            .await?;
        report.orders += unpaid.len() as i32;
        for row in &unpaid {
            self.check_unpaid(row.get(0), row.get(1), report).await?;
        }
        // A paid bill of a closed order with a refund on its way is the normal late-payment path
        // (invariant 7), not a problem; only bills paid in the last day are looked at.
        let stray = self
            .pg
            .get()
            .await?
            .query(
                "SELECT b.order_no, o.program_id, o.status, b.id::text FROM payment_bills b
                 JOIN orders o ON o.gene = (b.order_no & 15)::smallint AND o.order_no = b.order_no
                 WHERE b.status = 'paid' AND b.paid_at > now() - interval '1 day'
                   AND o.status NOT IN ('paid', 'refunded')
                   AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = b.id)",
                &[],
            )
            .await?;
        for row in &stray {
            let order_no: i64 = row.get(0);
            let finding = NewFinding {
                kind: "payment_order",
                subject: format!("order:{order_no}"),
                program_id: row.get(1),
                order_no: Some(order_no),
                details: json!({ "order_status": row.get::<_, String>(2), "bill": row.get::<_, String>(3),
                    "bill_status": "paid" }),
                status: findings::PROBLEM,
                ..Default::default()
            };
            self.found(&finding, report).await?;
        }
        Ok(())
    }

    async fn check_unpaid(
        &self,
        order_no: i64,
        program_id: i64,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        if let Err(e) = self.payments.check(order_no).await {
            tracing::warn!(order_no, error = %e, "pay-check during reconciliation failed");
            return Ok(());
        }
        let status: String = self
            .pg
            .get()
            .await?
            .query_one(
                "SELECT status FROM orders WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1",
                &[&order_no],
            )
            .await?
            .get(0);
        if status != "paid" {
            return Ok(());
        }
        let finding = NewFinding {
            kind: "payment_callback",
            subject: format!("order:{order_no}"),
            program_id: Some(program_id),
            order_no: Some(order_no),
            details: json!({ "order_status_before": "pending_payment", "provider": "paid" }),
            status: findings::OK,
            repair: Some("paid callback applied from the provider's trade query".into()),
            ..Default::default()
        };
        self.found(&finding, report).await
    }

    /// Order events the bookkeeping consumer judged inconsistent with their order, or never
    /// consumed in time (MQ records `problem`, see `events::bookkeeping`), are raised here too,
    /// so one list holds everything an operator must look at; at most 100 per pass.
    async fn reconcile_messages(&self, report: &mut PassReport) -> Result<(), StoreError> {
        let rows = self
            .pg
            .get()
            .await?
            .query(
                "SELECT event_id::text, event_type, order_no, program_id, send_status FROM outbox
                 WHERE reconcile_status = 'problem' ORDER BY id LIMIT 100",
                &[],
            )
            .await?;
        for row in &rows {
            let event_id: String = row.get(0);
            let finding = NewFinding {
                kind: "mq_message",
                subject: format!("event:{event_id}"),
                order_no: row.get(2),
                program_id: row.get(3),
                details: json!({ "event_type": row.get::<_, String>(1),
                    "send_status": row.get::<_, String>(4), "reconcile_status": "problem" }),
                status: findings::PROBLEM,
                ..Default::default()
            };
            self.found(&finding, report).await?;
        }
        Ok(())
    }

    /// Records a finding, counts it, and raises an alert for a new problem.
    async fn found(&self, f: &NewFinding, report: &mut PassReport) -> Result<(), StoreError> {
        report.findings += 1;
        if f.repair.is_some() {
            report.repaired += 1;
        }
        metrics::counter!("reconcile_findings_total", "kind" => f.kind, "status" => f.status)
            .increment(1);
        if findings::record(&self.pg, f).await? {
            tracing::error!(kind = f.kind, subject = %f.subject, details = %f.details,
                repair = ?f.repair, "ALERT: reconciliation found a problem");
        }
        Ok(())
    }
}

/// The divergences of a category seen in two reads `confirm_ms` apart, identical in both: a
/// change in flight shows in one read, or differently in each, and is left alone.
struct Confirmed {
    /// The second read, its `differing_seats` cut to the confirmed ones.
    view: CategoryView,
    /// Seats whose row disagrees with its order in both reads.
    seat_rows: Vec<crate::domain::inventory::SeatId>,
    /// The actor's counts differ from Postgres's by the same amount in both reads.
    actor_counts: bool,
    /// The mirror's counts differ from Postgres's by the same amount in both reads.
    mirror_counts: bool,
}

impl Confirmed {
    fn of(first: &CategoryView, mut second: CategoryView) -> Confirmed {
        let seen: HashSet<&inventory::SeatDiff> = first.differing_seats.iter().collect();
        second.differing_seats.retain(|d| seen.contains(d));
        let wrong_row = |s: &&inventory::PgSeat| {
            let order = s.claim_order.filter(|_| s.expected != "available");
            s.status != s.expected || s.order_no != order
        };
        let first_wrong: HashSet<(i64, &str, Option<i64>)> = first
            .pg_seats
            .iter()
            .filter(wrong_row)
            .map(|s| (s.seat_id, s.status.as_str(), s.order_no))
            .collect();
        let seat_rows = second
            .pg_seats
            .iter()
            .filter(wrong_row)
            .filter(|s| first_wrong.contains(&(s.seat_id, s.status.as_str(), s.order_no)))
            .map(|s| s.seat_id)
            .collect();
        // Counts are judged only while the actor was quiet: nothing mid-change in either read
        // and no change committed between them.
        let quiet = first.actor_seq == second.actor_seq
            && first.actor_in_flight == 0
            && second.actor_in_flight == 0;
        let actor_counts = quiet
            && second.actor.is_some()
            && same_gap(
                gap(first.actor, first.postgres),
                gap(second.actor, second.postgres),
            );
        let mirror_counts = quiet
            && same_gap(
                gap(first.redis, first.postgres),
                gap(second.redis, second.postgres),
            );
        Confirmed {
            view: second,
            seat_rows,
            actor_counts,
            mirror_counts,
        }
    }

    fn is_empty(&self) -> bool {
        self.view.differing_seats.is_empty()
            && self.seat_rows.is_empty()
            && !self.actor_counts
            && !self.mirror_counts
    }
}

/// A finding about a whole category.
fn category_finding(
    view: &CategoryView,
    kind: &'static str,
    details: serde_json::Value,
    status: &'static str,
) -> NewFinding {
    NewFinding {
        kind,
        subject: format!("category:{}", view.ticket_category_id),
        program_id: Some(view.program_id),
        ticket_category_id: Some(view.ticket_category_id),
        details,
        status,
        ..Default::default()
    }
}

/// How far `counts` are from Postgres's (None: that store has none).
fn gap(counts: Option<Counts>, pg: Counts) -> Option<[i64; 3]> {
    counts.map(|c| {
        [
            i64::from(c.available) - i64::from(pg.available),
            i64::from(c.held) - i64::from(pg.held),
            i64::from(c.sold) - i64::from(pg.sold),
        ]
    })
}

/// The same non-zero gap in both reads ("no counts" in both reads counts as a gap: a mirror
/// with no counts is missing).
fn same_gap(a: Option<[i64; 3]>, b: Option<[i64; 3]>) -> bool {
    a == b && a != Some([0; 3])
}

/// Seats listed in a finding's details (the first ones): a finding must stay small enough to
/// show in an alert even when a whole category diverged.
const MAX_LISTED_SEATS: usize = 100;

/// Unpaid orders asked about at the provider per pass (one call each).
const PAY_CHECKS_PER_PASS: i64 = 50;

fn seat_status(status: &str) -> crate::domain::inventory::SeatStatus {
    use crate::domain::inventory::SeatStatus;
    match status {
        "held" => SeatStatus::Held,
        "sold" => SeatStatus::Sold,
        _ => SeatStatus::Available,
    }
}
