//! Persistence of category actors' state: loading a category on actor start, and applying one
//! [`Change`] per transaction.
//!
//! Seated categories live in `seats` (status, order, hold deadline); general admission in
//! `ga_holds` plus the `ticket_categories.ga_taken` counter whose CHECK refuses an oversell. Every
//! write is conditional on the state the actor expects, so a divergence fails loudly instead of
//! overwriting. The ordering issue's group-commit writer implements [`InventoryStore`] too.

use super::{PgPool, StoreError};
use crate::domain::inventory::{CategorySpec, Change, ChangeKind, LoadedOrder, SeatInfo};
use futures::future::BoxFuture;
use tokio::runtime::Handle;

/// Where category actors load from and persist to.
pub trait InventoryStore: Send + Sync + 'static {
    /// The category's seats and its live orders.
    fn load(
        &self,
        category_id: i64,
    ) -> BoxFuture<'static, Result<(CategorySpec, Vec<LoadedOrder>), StoreError>>;
    /// Persists one change; `Err` means nothing was written.
    fn apply(&self, change: Change) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Categories with holds waiting for payment: each needs a running actor, whose timer
    /// expires them. Stores without durable holds have none.
    fn live_categories(&self) -> BoxFuture<'static, Result<Vec<i64>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// One transaction per change, run on `runtime` (the server's), so actors on their own arbiter
/// threads never drive database I/O themselves.
#[derive(Clone)]
pub struct PgInventoryStore {
    pool: PgPool,
    runtime: Handle,
}

impl PgInventoryStore {
    /// A store on `pool` whose I/O runs on `runtime`.
    pub fn new(pool: PgPool, runtime: Handle) -> Self {
        PgInventoryStore { pool, runtime }
    }
}

impl InventoryStore for PgInventoryStore {
    fn load(
        &self,
        category_id: i64,
    ) -> BoxFuture<'static, Result<(CategorySpec, Vec<LoadedOrder>), StoreError>> {
        let pool = self.pool.clone();
        let task = self
            .runtime
            .spawn(async move { load_category(&pool, category_id).await });
        Box::pin(async move { task.await? })
    }

    fn apply(&self, change: Change) -> BoxFuture<'static, Result<(), StoreError>> {
        let pool = self.pool.clone();
        let task = self
            .runtime
            .spawn(async move { apply_change(&pool, &change).await });
        Box::pin(async move { task.await? })
    }

    fn live_categories(&self) -> BoxFuture<'static, Result<Vec<i64>, StoreError>> {
        let pool = self.pool.clone();
        let task = self
            .runtime
            .spawn(async move { categories_with_holds(&pool).await });
        Box::pin(async move { task.await? })
    }
}

/// Categories with at least one hold waiting for payment: held seats are found through the
/// live seat claims (seats carry no status index: it would keep seat updates from being HOT,
/// see V9), GA holds through their partial index.
pub async fn categories_with_holds(pool: &PgPool) -> Result<Vec<i64>, StoreError> {
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT DISTINCT s.ticket_category_id FROM seat_claims c JOIN seats s ON s.id = c.seat_id
             WHERE s.status = 'held'
             UNION SELECT ticket_category_id FROM ga_holds WHERE status = 'held'",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Reads a category: its spec, its seat grid and its live orders. Counts the load, so every
/// load starts its sequence numbers above all earlier ones (see `CategorySpec::seq_base`).
pub async fn load_category(
    pool: &PgPool,
    category_id: i64,
) -> Result<(CategorySpec, Vec<LoadedOrder>), StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "WITH tc AS (UPDATE ticket_categories SET loads = loads + 1 WHERE id = $1
                         RETURNING program_id, price_cents, capacity, seated, seat_rows, seats_per_row, loads)
             SELECT tc.program_id, tc.price_cents, tc.capacity, tc.seated, coalesce(tc.seat_rows, 0),
                    coalesce(tc.seats_per_row, 0), p.allow_split, tc.loads
             FROM tc JOIN programs p ON p.id = tc.program_id",
            &[&category_id],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("ticket category {category_id}")))?;
    let (rows, cols): (i32, i32) = (row.get(4), row.get(5));
    let mut spec = CategorySpec {
        program_id: row.get(0),
        category_id,
        price_cents: row.get(1),
        capacity: row.get::<_, i32>(2) as u32,
        seats: Vec::new(),
        rows: rows as usize,
        cols: cols as usize,
        allow_split: row.get(6),
        seq_base: (row.get::<_, i64>(7) as u64) << 32,
    };
    let orders = if row.get::<_, bool>(3) {
        load_seats(&client, &mut spec).await?
    } else {
        load_ga_holds(&client, category_id).await?
    };
    Ok((spec, orders))
}

async fn load_seats(
    client: &deadpool_postgres::Client,
    spec: &mut CategorySpec,
) -> Result<Vec<LoadedOrder>, StoreError> {
    let rows = client
        .query(
            "SELECT id, row_no, col_no, price_cents, status, order_no, hold_expires_at
             FROM seats WHERE ticket_category_id = $1 ORDER BY row_no, col_no",
            &[&spec.category_id],
        )
        .await?;
    let mut orders: std::collections::BTreeMap<i64, LoadedOrder> = Default::default();
    for r in &rows {
        let seat = SeatInfo {
            id: r.get(0),
            row: r.get(1),
            col: r.get(2),
            price_cents: r.get(3),
        };
        spec.seats.push(seat);
        let Some(order_no) = r.get::<_, Option<i64>>(5) else {
            continue;
        };
        let status: &str = r.get(4);
        let expires_at = r
            .get::<_, Option<chrono::DateTime<chrono::Utc>>>(6)
            .unwrap_or_default();
        let entry = orders.entry(order_no).or_insert(LoadedOrder {
            order_no,
            seat_ids: vec![],
            quantity: 0,
            expires_at,
            sold: status == "sold",
        });
        entry.seat_ids.push(seat.id);
        entry.quantity += 1;
    }
    Ok(orders.into_values().collect())
}

async fn load_ga_holds(
    client: &deadpool_postgres::Client,
    category_id: i64,
) -> Result<Vec<LoadedOrder>, StoreError> {
    let rows = client
        .query("SELECT order_no, quantity, status, hold_expires_at FROM ga_holds WHERE ticket_category_id = $1", &[&category_id])
        .await?;
    Ok(rows
        .iter()
        .map(|r| LoadedOrder {
            order_no: r.get(0),
            seat_ids: vec![],
            quantity: r.get::<_, i32>(1) as u32,
            sold: r.get::<_, &str>(2) == "sold",
            expires_at: r.get(3),
        })
        .collect())
}

/// Persists one change in its own transaction; refuses (and writes nothing) when the rows are
/// not in the state the change starts from.
pub async fn apply_change(pool: &PgPool, change: &Change) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    apply_change_in(&tx, change).await?;
    tx.commit().await?;
    Ok(())
}

/// Applies `change` inside a caller's transaction (the group-commit writer batches many).
pub async fn apply_change_in(
    tx: &deadpool_postgres::Transaction<'_>,
    change: &Change,
) -> Result<(), StoreError> {
    if change.kind == ChangeKind::Release {
        // The order row first, as payments lock it (store::payments): a payment and an expiry
        // of the same order then queue on that row instead of deadlocking on the seats.
        super::orders::close_released_in(tx, change.order_no).await?;
    }
    let touched = if change.seats.is_empty() {
        apply_ga(tx, change).await?
    } else {
        apply_seated(tx, change).await?
    };
    let expected = if change.seats.is_empty() {
        1
    } else {
        change.seats.len() as u64
    };
    if touched != expected {
        return Err(StoreError::Conflict(format!(
            "{:?} of order {} touched {touched} rows, expected {expected}",
            change.kind, change.order_no
        )));
    }
    Ok(())
}

async fn apply_seated(
    tx: &deadpool_postgres::Transaction<'_>,
    c: &Change,
) -> Result<u64, StoreError> {
    let ids: Vec<i64> = c.seats.iter().map(|s| s.id).collect();
    let sql = match c.kind {
        ChangeKind::Hold => {
            "UPDATE seats SET status = 'held', order_no = $2, hold_expires_at = $3
             WHERE id = ANY($1) AND status = 'available'"
        }
        ChangeKind::Release => {
            "UPDATE seats SET status = 'available', order_no = NULL, hold_expires_at = NULL
             WHERE id = ANY($1) AND order_no = $2 AND status = 'held' AND $3::timestamptz IS NULL"
        }
        ChangeKind::Confirm => {
            "UPDATE seats SET status = 'sold', hold_expires_at = NULL
             WHERE id = ANY($1) AND order_no = $2 AND status = 'held' AND $3::timestamptz IS NULL"
        }
        ChangeKind::Return => {
            "UPDATE seats SET status = 'available', order_no = NULL
             WHERE id = ANY($1) AND order_no = $2 AND status = 'sold' AND $3::timestamptz IS NULL"
        }
    };
    Ok(tx.execute(sql, &[&ids, &c.order_no, &c.expires_at]).await?)
}

async fn apply_ga(tx: &deadpool_postgres::Transaction<'_>, c: &Change) -> Result<u64, StoreError> {
    let q = c.quantity as i32;
    let (counter_delta, sql) = match c.kind {
        ChangeKind::Hold => (
            q,
            "INSERT INTO ga_holds (ticket_category_id, order_no, quantity, status, hold_expires_at)
             VALUES ($1, $2, $3, 'held', $4)",
        ),
        ChangeKind::Release => (
            -q,
            "DELETE FROM ga_holds WHERE ticket_category_id = $1 AND order_no = $2 AND quantity = $3 AND status = 'held' AND $4::timestamptz IS NULL",
        ),
        ChangeKind::Confirm => (
            0,
            "UPDATE ga_holds SET status = 'sold' WHERE ticket_category_id = $1 AND order_no = $2 AND quantity = $3 AND status = 'held' AND $4::timestamptz IS NULL",
        ),
        ChangeKind::Return => (
            -q,
            "DELETE FROM ga_holds WHERE ticket_category_id = $1 AND order_no = $2 AND quantity = $3 AND status = 'sold' AND $4::timestamptz IS NULL",
        ),
    };
    let n = tx
        .execute(sql, &[&c.category_id, &c.order_no, &q, &c.expires_at])
        .await?;
    if n == 1 && counter_delta != 0 {
        // The CHECK on ga_taken is the database's own oversell guard.
        tx.execute(
            "UPDATE ticket_categories SET ga_taken = ga_taken + $2 WHERE id = $1",
            &[&c.category_id, &counter_delta],
        )
        .await?;
    }
    Ok(n)
}
