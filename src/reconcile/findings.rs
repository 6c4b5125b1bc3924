//! Reconciliation findings (`reconciliation_findings`): what a pass found, with its status in
//! the operators' vocabulary and the repair applied, if any.
//!
//! Statuses: `unreconciled` (seen, not settled), `reconciled_with_problem` (needs an operator:
//! raised as an alert), `reconciled_ok` (settled: repaired automatically because the fix was
//! certain), `problem_handled` (an operator resolved it; audit-logged). A divergence seen on
//! every pass stays one open row per (kind, subject).

use crate::store::{PgPool, StoreError, audit};
use serde::Serialize;
use serde_json::Value;

/// `unreconciled`: found, not settled yet.
pub const UNRECONCILED: &str = "unreconciled";
/// `reconciled_with_problem`: an operator must look.
pub const PROBLEM: &str = "reconciled_with_problem";
/// `reconciled_ok`: settled by a certain repair.
pub const OK: &str = "reconciled_ok";
/// `problem_handled`: resolved by an operator.
pub const HANDLED: &str = "problem_handled";

/// Every status, for validating a filter.
pub const STATUSES: [&str; 4] = [UNRECONCILED, PROBLEM, OK, HANDLED];

/// What a pass found.
#[derive(Debug, Clone, Default)]
pub struct NewFinding {
    /// `seat_row`, `actor_seats`, `redis_mirror`, `payment_callback`, `payment_order`.
    pub kind: &'static str,
    /// What within the kind: `seat:{id}`, `category:{id}`, `order:{no}`.
    pub subject: String,
    /// The program and category, when the finding is about one.
    pub program_id: Option<i64>,
    /// The category.
    pub ticket_category_id: Option<i64>,
    /// The order, when the finding is about one.
    pub order_no: Option<i64>,
    /// Each store's view and anything else an operator needs.
    pub details: Value,
    /// The status it is recorded with.
    pub status: &'static str,
    /// The automatic repair applied (None: raised for an operator).
    pub repair: Option<String>,
}

impl NewFinding {
    /// The same finding, with the automatic repair that was applied.
    pub fn repaired(self, repair: &str) -> Self {
        NewFinding {
            repair: Some(repair.to_string()),
            ..self
        }
    }
}

/// A stored finding as operators see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Finding {
    /// Id (for `…/handled`).
    pub id: i64,
    /// See [`NewFinding::kind`].
    pub kind: String,
    /// See [`NewFinding::subject`].
    pub subject: String,
    /// The program.
    pub program_id: Option<i64>,
    /// The category.
    pub ticket_category_id: Option<i64>,
    /// The order, as a string (63-bit numbers lose precision in JSON).
    pub order_no: Option<String>,
    /// Each store's view.
    pub details: Value,
    /// One of [`STATUSES`].
    pub status: String,
    /// The automatic repair applied.
    pub repair: Option<String>,
    /// First seen.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Last seen or changed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The operator's note, once handled.
    pub handled_note: Option<String>,
}

/// Records `f`; an open finding of the same kind and subject is updated instead of repeated,
/// and one an operator already handled, with the same details, is not raised again. Answers
/// whether a new problem was raised (the caller alerts on it).
pub async fn record(pool: &PgPool, f: &NewFinding) -> Result<bool, StoreError> {
    let row = pool
        .get()
        .await?
        .query_opt(
            "INSERT INTO reconciliation_findings
                 (program_id, ticket_category_id, order_no, kind, subject, details, status, repair)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8
             WHERE NOT EXISTS (SELECT 1 FROM reconciliation_findings h
                               WHERE h.kind = $4 AND h.subject = $5
                                 AND h.status = 'problem_handled' AND h.details = $6)
             ON CONFLICT (kind, subject) WHERE status IN ('unreconciled', 'reconciled_with_problem')
             DO UPDATE SET details = EXCLUDED.details, status = EXCLUDED.status,
                           repair = coalesce(EXCLUDED.repair, reconciliation_findings.repair),
                           updated_at = now()
             RETURNING xmax = 0",
            &[
                &f.program_id,
                &f.ticket_category_id,
                &f.order_no,
                &f.kind,
                &f.subject,
                &f.details,
                &f.status,
                &f.repair,
            ],
        )
        .await?;
    let inserted = row.is_some_and(|r| r.get::<_, bool>(0));
    Ok(inserted && f.status == PROBLEM)
}

/// A page of findings, newest first, optionally of one status; and how many there are.
pub async fn page(
    pool: &PgPool,
    status: Option<&str>,
    page: u32,
    per_page: u32,
) -> Result<(Vec<Finding>, i64), StoreError> {
    let client = pool.get().await?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(per_page);
    let rows = client
        .query(
            "SELECT id, kind, subject, program_id, ticket_category_id, order_no, details, status,
                    repair, created_at, updated_at, handled_note
             FROM reconciliation_findings WHERE ($1::text IS NULL OR status = $1)
             ORDER BY id DESC LIMIT $2 OFFSET $3",
            &[&status, &i64::from(per_page), &offset],
        )
        .await?;
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM reconciliation_findings WHERE ($1::text IS NULL OR status = $1)",
            &[&status],
        )
        .await?
        .get(0);
    Ok((rows.iter().map(finding).collect(), total))
}

fn finding(r: &tokio_postgres::Row) -> Finding {
    Finding {
        id: r.get(0),
        kind: r.get(1),
        subject: r.get(2),
        program_id: r.get(3),
        ticket_category_id: r.get(4),
        order_no: r.get::<_, Option<i64>>(5).map(|n| n.to_string()),
        details: r.get(6),
        status: r.get(7),
        repair: r.get(8),
        created_at: r.get(9),
        updated_at: r.get(10),
        handled_note: r.get(11),
    }
}

/// Marks an open problem handled by `admin_id`, with the audit record in the same transaction.
/// `NotFound` when there is no such finding or it is not a problem.
pub async fn mark_handled(
    pool: &PgPool,
    id: i64,
    admin_id: i64,
    note: &str,
) -> Result<Finding, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "UPDATE reconciliation_findings
             SET status = 'problem_handled', handled_by = $2, handled_note = $3, handled_at = now(),
                 updated_at = now()
             WHERE id = $1 AND status IN ('unreconciled', 'reconciled_with_problem')
             RETURNING id, kind, subject, program_id, ticket_category_id, order_no, details, status,
                       repair, created_at, updated_at, handled_note",
            &[&id, &admin_id, &note],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("open finding {id}")))?;
    // An order event's finding is its MQ record's problem: handled together.
    let (kind, subject): (String, String) = (row.get(1), row.get(2));
    if let Some(event_id) = subject
        .strip_prefix("event:")
        .filter(|_| kind == "mq_message")
    {
        tx.execute(
            "UPDATE outbox SET reconcile_status = 'handled' WHERE event_id = $1::text::uuid",
            &[&event_id],
        )
        .await?;
    }
    let details = serde_json::json!({ "note": note });
    audit::record(
        &tx,
        admin_id,
        "reconciliation.handled",
        &format!("finding:{id}"),
        &details,
    )
    .await?;
    tx.commit().await?;
    Ok(finding(&row))
}

/// One pass's figures, as stored in `reconciliation_runs`.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct PassReport {
    /// `continuous` or `on_demand`.
    pub trigger: &'static str,
    /// Wall time of the pass.
    pub duration_ms: f64,
    /// Categories compared.
    pub categories: i32,
    /// Seats compared.
    pub seats: i32,
    /// Orders looked at (payments).
    pub orders: i32,
    /// Findings recorded.
    pub findings: i32,
    /// Of which repaired automatically.
    pub repaired: i32,
}

/// Stores `report`.
pub async fn record_run(pool: &PgPool, report: &PassReport) -> Result<(), StoreError> {
    pool.get()
        .await?
        .execute(
            "INSERT INTO reconciliation_runs
                 (trigger, duration_ms, categories, seats, orders, findings, repaired)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &report.trigger,
                &report.duration_ms,
                &report.categories,
                &report.seats,
                &report.orders,
                &report.findings,
                &report.repaired,
            ],
        )
        .await?;
    Ok(())
}
