//! Areas, program categories, programs, show times, ticket categories and their seats.

use super::{PgPool, Refusal, StoreError};
use chrono::{DateTime, Utc};

/// How a ticket category is sold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Rows × seats per row; row 1 is nearest the stage.
    Seated {
        /// Number of rows.
        rows: i32,
        /// Seats in each row.
        seats_per_row: i32,
    },
    /// General admission: a count, no seats.
    General {
        /// Tickets available in total.
        capacity: i32,
    },
}

impl Layout {
    /// Tickets this layout holds.
    pub fn capacity(&self) -> i32 {
        match *self {
            Layout::Seated {
                rows,
                seats_per_row,
            } => rows * seats_per_row,
            Layout::General { capacity } => capacity,
        }
    }
}

/// A price tier to create with its program.
#[derive(Debug, Clone)]
pub struct NewTicketCategory {
    /// Shown name, unique among the tiers of one show time.
    pub name: String,
    /// Price in minor units.
    pub price_cents: i64,
    /// Seated rows or a GA count.
    pub layout: Layout,
}

/// A program with everything it is sold with.
#[derive(Debug, Clone)]
pub struct NewProgram {
    /// Stable unique handle; creating the same slug twice returns the existing program.
    pub slug: String,
    /// Shown title.
    pub title: String,
    /// Area (city) id.
    pub area_id: i64,
    /// Program category id (a child category, e.g. concert → pop).
    pub category_id: i64,
    /// Venue name.
    pub venue: String,
    /// Free text.
    pub description: String,
    /// Whether buyers may pick seats themselves.
    pub choose_seats: bool,
    /// Most tickets in one order.
    pub per_order_limit: i32,
    /// Most tickets one account may hold for this program.
    pub per_account_limit: i32,
    /// When ordering opens.
    pub on_sale_at: DateTime<Utc>,
    /// At least one show time, all different; each sells its own copy of `categories`.
    pub show_times: Vec<DateTime<Utc>>,
    /// Price tiers, in display order, created for every show time.
    pub categories: Vec<NewTicketCategory>,
}

/// Returns the area's id, creating it when absent.
pub async fn ensure_area(pool: &PgPool, name: &str) -> Result<i64, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "WITH ins AS (INSERT INTO areas (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id)
             SELECT id FROM ins UNION ALL SELECT id FROM areas WHERE name = $1 LIMIT 1",
            &[&name],
        )
        .await?;
    Ok(row.get(0))
}

/// Returns the program category's id (under `parent`, or top level), creating it when absent.
pub async fn ensure_program_category(
    pool: &PgPool,
    parent: Option<i64>,
    name: &str,
) -> Result<i64, StoreError> {
    let client = pool.get().await?;
    let found = client
        .query_opt(
            "SELECT id FROM program_categories WHERE parent_id IS NOT DISTINCT FROM $1 AND name = $2",
            &[&parent, &name],
        )
        .await?;
    if let Some(row) = found {
        return Ok(row.get(0));
    }
    let row = client
        .query_one(
            "INSERT INTO program_categories (parent_id, name) VALUES ($1, $2) RETURNING id",
            &[&parent, &name],
        )
        .await?;
    Ok(row.get(0))
}

/// Creates the program, its show times, ticket categories (every tier for every show time) and
/// seats in one transaction, or returns the id of the program that already has this slug
/// (nothing is changed then).
pub async fn create_program(pool: &PgPool, program: &NewProgram) -> Result<i64, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let id = match create_program_in(&tx, program).await? {
        Some(id) => id,
        None => tx
            .query_one("SELECT id FROM programs WHERE slug = $1", &[&program.slug])
            .await?
            .get(0),
    };
    tx.commit().await?;
    Ok(id)
}

/// Creates the program inside the caller's transaction; `None` if the slug is taken.
///
/// Every tier is created once per show time: a ticket category is the inventory of one
/// (show time, tier), so each show time sells its own seats. A program without show times is
/// refused, because its tiers would have nothing to belong to.
pub async fn create_program_in(
    tx: &deadpool_postgres::Transaction<'_>,
    program: &NewProgram,
) -> Result<Option<i64>, StoreError> {
    if program.show_times.is_empty() {
        return Err(StoreError::refused(
            Refusal::Validation {
                field: "show_times",
            },
            "give at least one show time",
        ));
    }
    let inserted = tx
        .query_opt(
            "INSERT INTO programs (slug, title, area_id, category_id, venue, description, choose_seats,
                                   per_order_limit, per_account_limit, on_sale_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (slug) DO NOTHING RETURNING id",
            &[
                &program.slug,
                &program.title,
                &program.area_id,
                &program.category_id,
                &program.venue,
                &program.description,
                &program.choose_seats,
                &program.per_order_limit,
                &program.per_account_limit,
                &program.on_sale_at,
            ],
        )
        .await?;
    let Some(row) = inserted else {
        return Ok(None);
    };
    let program_id: i64 = row.get(0);
    for starts_at in &program.show_times {
        let show_time_id = insert_show_time(tx, program_id, starts_at).await?;
        for (sort, category) in program.categories.iter().enumerate() {
            insert_ticket_category(tx, program_id, show_time_id, sort as i32, category).await?;
        }
    }
    Ok(Some(program_id))
}

/// Inserts one show time of the program and returns its id, which its categories belong to.
async fn insert_show_time(
    tx: &deadpool_postgres::Transaction<'_>,
    program_id: i64,
    starts_at: &DateTime<Utc>,
) -> Result<i64, StoreError> {
    let row = tx
        .query_one(
            "INSERT INTO show_times (program_id, starts_at) VALUES ($1, $2) RETURNING id",
            &[&program_id, starts_at],
        )
        .await?;
    Ok(row.get(0))
}

/// Inserts one tier of one show time: the inventory one category actor will own, with its seat
/// grid when seated.
async fn insert_ticket_category(
    tx: &deadpool_postgres::Transaction<'_>,
    program_id: i64,
    show_time_id: i64,
    sort: i32,
    category: &NewTicketCategory,
) -> Result<(), StoreError> {
    let (seated, rows, per_row) = match category.layout {
        Layout::Seated {
            rows,
            seats_per_row,
        } => (true, Some(rows), Some(seats_per_row)),
        Layout::General { .. } => (false, None, None),
    };
    let row = tx
        .query_one(
            "INSERT INTO ticket_categories (program_id, show_time_id, name, price_cents, capacity,
                                            seated, seat_rows, seats_per_row, sort_order)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            &[
                &program_id,
                &show_time_id,
                &category.name,
                &category.price_cents,
                &category.layout.capacity(),
                &seated,
                &rows,
                &per_row,
                &sort,
            ],
        )
        .await?;
    let category_id: i64 = row.get(0);
    if seated {
        // One statement for the whole grid: thousands of seats without thousands of round trips.
        tx.execute(
            "INSERT INTO seats (program_id, ticket_category_id, row_no, col_no, price_cents)
             SELECT $1, $2, r, c, $3
             FROM generate_series(1, $4::int) AS r, generate_series(1, $5::int) AS c",
            &[
                &program_id,
                &category_id,
                &category.price_cents,
                &rows,
                &per_row,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Fields an admin may change on an existing program; `None` keeps the current value.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct ProgramPatch {
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New venue.
    pub venue: Option<String>,
    /// New per-order limit.
    pub per_order_limit: Option<i32>,
    /// New per-account limit.
    pub per_account_limit: Option<i32>,
    /// New on-sale time.
    pub on_sale_at: Option<DateTime<Utc>>,
}

/// Why a program edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// No such program.
    #[error("program not found")]
    NotFound,
    /// The limits would break `per_account_limit >= per_order_limit > 0`.
    #[error("per_account_limit must be at least per_order_limit, and both positive")]
    Limits,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies `patch` to program `id` inside the caller's transaction.
pub async fn update_program_in(
    tx: &deadpool_postgres::Transaction<'_>,
    id: i64,
    patch: &ProgramPatch,
) -> Result<(), PatchError> {
    let n = tx
        .execute(
            "UPDATE programs SET title = coalesce($2, title), description = coalesce($3, description),
                    venue = coalesce($4, venue), per_order_limit = coalesce($5, per_order_limit),
                    per_account_limit = coalesce($6, per_account_limit),
                    on_sale_at = coalesce($7, on_sale_at), updated_at = now()
             WHERE id = $1",
            &[
                &id,
                &patch.title,
                &patch.description,
                &patch.venue,
                &patch.per_order_limit,
                &patch.per_account_limit,
                &patch.on_sale_at,
            ],
        )
        .await
        .map_err(|e| match e.code() {
            Some(c) if *c == tokio_postgres::error::SqlState::CHECK_VIOLATION => PatchError::Limits,
            _ => PatchError::Store(e.into()),
        })?;
    if n == 0 {
        return Err(PatchError::NotFound);
    }
    Ok(())
}
