//! Catalog reads from Postgres: the program list with filters and pages, and one program's
//! detail. These are what the cache ([`super::catalog_cache`]) falls back to.

use super::{PgPool, Refusal, StoreError};
use crate::domain::inventory::{SeatInfo, SeatStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Filters and page of `GET /api/v1/programs`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, Hash, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProgramQuery {
    /// Area name or id.
    pub area: Option<String>,
    /// Program category name or id; a parent category matches its children.
    pub category: Option<String>,
    /// Text in the title (case-insensitive).
    pub q: Option<String>,
    /// Some show time at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Some show time at or before this.
    pub to: Option<DateTime<Utc>>,
    /// 1-based page.
    pub page: Option<u32>,
    /// Items per page (1..=100, default 20).
    pub per_page: Option<u32>,
}

impl ProgramQuery {
    /// The page, 1-based.
    pub fn page(&self) -> u32 {
        self.page.unwrap_or(1).max(1)
    }

    /// Items per page, clamped to 1..=100.
    pub fn per_page(&self) -> u32 {
        self.per_page.unwrap_or(20).clamp(1, 100)
    }

    /// The query as the cache keys it and Postgres runs it: text filters trimmed, whitespace
    /// runs collapsed, the title search lower-cased (it matches case-insensitively), blanks
    /// dropped, paging made explicit. Spellings of one search then share one cache entry
    /// instead of each costing a Postgres read. Refuses a title search over
    /// [`MAX_SEARCH_CHARS`] and a page past [`MAX_PAGE`] (an offset Postgres must walk).
    pub fn normalized(&self) -> Result<ProgramQuery, StoreError> {
        let q = tidy(self.q.as_deref()).map(|q| q.to_lowercase());
        if q.as_ref()
            .is_some_and(|q| q.chars().count() > MAX_SEARCH_CHARS)
        {
            let why = format!("at most {MAX_SEARCH_CHARS} characters");
            return Err(StoreError::refused(Refusal::Validation { field: "q" }, why));
        }
        if self.page() > MAX_PAGE {
            let why = format!("at most {MAX_PAGE}; narrow the search instead");
            return Err(StoreError::refused(
                Refusal::Validation { field: "page" },
                why,
            ));
        }
        Ok(ProgramQuery {
            area: tidy(self.area.as_deref()),
            category: tidy(self.category.as_deref()),
            q,
            from: self.from,
            to: self.to,
            page: Some(self.page()),
            per_page: Some(self.per_page()),
        })
    }
}

/// Longest title search: titles are short, and a longer pattern only costs Postgres more.
pub const MAX_SEARCH_CHARS: usize = 64;
/// Deepest page of the program list (100 a page: 50,000 programs deep).
pub const MAX_PAGE: u32 = 500;

/// Trimmed, inner whitespace runs made one space; `None` when nothing is left.
fn tidy(text: Option<&str>) -> Option<String> {
    let words: Vec<&str> = text?.split_whitespace().collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// One line of the program list; its figures cover every show time of the program.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProgramSummary {
    /// Program id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Area name.
    pub area: String,
    /// Program category name.
    pub category: String,
    /// Venue.
    pub venue: String,
    /// Earliest show time.
    pub first_show_at: Option<DateTime<Utc>>,
    /// Cheapest tier.
    pub min_price_cents: Option<i64>,
    /// Dearest tier.
    pub max_price_cents: Option<i64>,
    /// Tickets available over all show times when the list was read (the detail has the live
    /// figure per category).
    pub remaining: i64,
}

/// A page of the program list.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProgramPage {
    /// The programs on this page.
    pub items: Vec<ProgramSummary>,
    /// Programs matching the filters.
    pub total: i64,
    /// This page.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
}

/// One performance of a program. Each show time sells its own ticket categories and seats.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShowTimeInfo {
    /// Show time id: what an order names to say which performance it is for.
    pub id: i64,
    /// When the performance starts.
    pub starts_at: DateTime<Utc>,
}

/// A price tier of one show time as the detail shows it: the inventory one category actor owns.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CategoryInfo {
    /// Ticket category id.
    pub id: i64,
    /// The show time whose seats this category sells.
    pub show_time_id: i64,
    /// Name.
    pub name: String,
    /// Price in minor units.
    pub price_cents: i64,
    /// Tickets in total.
    pub capacity: i64,
    /// Tickets available (overlaid live from the category's actor when served).
    pub remaining: i64,
    /// Seats (true) or general admission.
    pub seated: bool,
    /// Seat rows (seated only).
    pub rows: Option<i32>,
    /// Seats per row (seated only).
    pub seats_per_row: Option<i32>,
}

/// Everything the detail page shows.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProgramDetail {
    /// Program id.
    pub id: i64,
    /// Unique handle.
    pub slug: String,
    /// Title.
    pub title: String,
    /// Area name.
    pub area: String,
    /// Program category name.
    pub category: String,
    /// Venue.
    pub venue: String,
    /// Free text.
    pub description: String,
    /// Whether buyers pick seats.
    pub choose_seats: bool,
    /// Most tickets per order.
    pub per_order_limit: i32,
    /// Most tickets per account for this program.
    pub per_account_limit: i32,
    /// When ordering opens.
    pub on_sale_at: DateTime<Utc>,
    /// Show times, earliest first.
    pub show_times: Vec<ShowTimeInfo>,
    /// Price tiers of every show time in display order: grouped by show time (in the order of
    /// `show_times`), then by the tier's sort order.
    pub ticket_categories: Vec<CategoryInfo>,
}

impl ProgramDetail {
    /// The show time `id` of this program; `None` if it belongs to no show time of it (a client
    /// must not reach another program's inventory through this one).
    pub fn show_time(&self, id: i64) -> Option<&ShowTimeInfo> {
        self.show_times.iter().find(|s| s.id == id)
    }

    /// The ticket categories one show time sells, in display order.
    pub fn categories_of(&self, show_time_id: i64) -> impl Iterator<Item = &CategoryInfo> {
        self.ticket_categories
            .iter()
            .filter(move |c| c.show_time_id == show_time_id)
    }
}

/// Tickets available per ticket category, counted in Postgres.
const REMAINING: &str = "CASE WHEN tc.seated
        THEN (SELECT count(*) FROM seats s WHERE s.ticket_category_id = tc.id AND s.status = 'available')
        ELSE tc.capacity - tc.ga_taken END";

/// A page of programs matching `q`, earliest show first.
pub async fn list_programs(pool: &PgPool, q: &ProgramQuery) -> Result<ProgramPage, StoreError> {
    let text = q.q.as_deref().map(|t| {
        t.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    });
    let (page, per_page) = (q.page(), q.per_page());
    let offset = (i64::from(page) - 1) * i64::from(per_page);
    let sql = format!(
        "SELECT p.id, p.title, a.name, c.name, p.venue,
                (SELECT min(starts_at) FROM show_times st WHERE st.program_id = p.id) AS first_show,
                (SELECT min(price_cents) FROM ticket_categories tc WHERE tc.program_id = p.id),
                (SELECT max(price_cents) FROM ticket_categories tc WHERE tc.program_id = p.id),
                (SELECT coalesce(sum({REMAINING}), 0)::bigint FROM ticket_categories tc WHERE tc.program_id = p.id),
                count(*) OVER ()
         FROM programs p
         JOIN areas a ON a.id = p.area_id
         JOIN program_categories c ON c.id = p.category_id
         LEFT JOIN program_categories pc ON pc.id = c.parent_id
         WHERE ($1::text IS NULL OR a.name = $1 OR a.id::text = $1)
           AND ($2::text IS NULL OR $2 IN (c.name, pc.name, c.id::text, pc.id::text))
           AND ($3::text IS NULL OR p.title ILIKE '%' || $3 || '%')
           AND ($4::timestamptz IS NULL AND $5::timestamptz IS NULL OR EXISTS (
                SELECT 1 FROM show_times st WHERE st.program_id = p.id
                  AND ($4::timestamptz IS NULL OR st.starts_at >= $4)
                  AND ($5::timestamptz IS NULL OR st.starts_at <= $5)))
         ORDER BY first_show NULLS LAST, p.id
         LIMIT $6 OFFSET $7"
    );
    let rows = pool
        .get()
        .await?
        .query(
            &sql,
            &[
                &q.area,
                &q.category,
                &text,
                &q.from,
                &q.to,
                &i64::from(per_page),
                &offset,
            ],
        )
        .await?;
    let total = rows.first().map_or(0, |r| r.get::<_, i64>(9));
    let items = rows
        .iter()
        .map(|r| ProgramSummary {
            id: r.get(0),
            title: r.get(1),
            area: r.get(2),
            category: r.get(3),
            venue: r.get(4),
            first_show_at: r.get(5),
            min_price_cents: r.get(6),
            max_price_cents: r.get(7),
            remaining: r.get(8),
        })
        .collect();
    let total = if total == 0 && offset > 0 {
        count_programs(pool, q).await?
    } else {
        total
    };
    Ok(ProgramPage {
        items,
        total,
        page,
        per_page,
    })
}

/// The total when the page is past the end (the window count saw no rows).
async fn count_programs(pool: &PgPool, q: &ProgramQuery) -> Result<i64, StoreError> {
    let first = ProgramQuery {
        page: Some(1),
        per_page: Some(1),
        ..q.clone()
    };
    Ok(Box::pin(list_programs(pool, &first)).await?.total)
}

/// One program with show times and tiers; `None` if there is no such program.
pub async fn program_detail(pool: &PgPool, id: i64) -> Result<Option<ProgramDetail>, StoreError> {
    let client = pool.get().await?;
    let Some(p) = client
        .query_opt(
            "SELECT p.slug, p.title, a.name, c.name, p.venue, p.description, p.choose_seats,
                    p.per_order_limit, p.per_account_limit, p.on_sale_at
             FROM programs p JOIN areas a ON a.id = p.area_id
             JOIN program_categories c ON c.id = p.category_id WHERE p.id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let shows = client
        .query(
            "SELECT id, starts_at FROM show_times WHERE program_id = $1 ORDER BY starts_at, id",
            &[&id],
        )
        .await?;
    let tiers = client
        .query(
            &format!(
                "SELECT tc.id, tc.show_time_id, tc.name, tc.price_cents, tc.capacity::bigint,
                        ({REMAINING})::bigint, tc.seated, tc.seat_rows, tc.seats_per_row
                 FROM ticket_categories tc JOIN show_times st ON st.id = tc.show_time_id
                 WHERE tc.program_id = $1
                 ORDER BY st.starts_at, st.id, tc.sort_order, tc.id"
            ),
            &[&id],
        )
        .await?;
    Ok(Some(ProgramDetail {
        id,
        slug: p.get(0),
        title: p.get(1),
        area: p.get(2),
        category: p.get(3),
        venue: p.get(4),
        description: p.get(5),
        choose_seats: p.get(6),
        per_order_limit: p.get(7),
        per_account_limit: p.get(8),
        on_sale_at: p.get(9),
        show_times: shows
            .iter()
            .map(|r| ShowTimeInfo {
                id: r.get(0),
                starts_at: r.get(1),
            })
            .collect(),
        ticket_categories: tiers.iter().map(category_info).collect(),
    }))
}

/// One row of the detail's tier query.
fn category_info(r: &tokio_postgres::Row) -> CategoryInfo {
    CategoryInfo {
        id: r.get(0),
        show_time_id: r.get(1),
        name: r.get(2),
        price_cents: r.get(3),
        capacity: r.get(4),
        remaining: r.get(5),
        seated: r.get(6),
        rows: r.get(7),
        seats_per_row: r.get(8),
    }
}

/// A category as Postgres has it while no actor runs for it: nothing changes its seats then
/// (every hold, payment and release goes through its actor), so this is its current state.
#[derive(Debug, Clone)]
pub struct IdleCategory {
    /// Above every `seq` of the category's last load and below its next load's first, so a
    /// seat map's `seq` never goes backwards as its actor stops and starts.
    pub seq: u64,
    /// Tickets available.
    pub available: u32,
    /// Seats in grid order with their status (empty for general admission).
    pub seats: Vec<(SeatInfo, SeatStatus)>,
}

/// Reads an idle category's seat map (`None` if there is no such category).
pub async fn idle_category(pool: &PgPool, id: i64) -> Result<Option<IdleCategory>, StoreError> {
    let client = pool.get().await?;
    let Some(row) = client
        .query_opt(
            "SELECT loads, seated, capacity - ga_taken FROM ticket_categories WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let (loads, seated, ga_left): (i64, bool, i32) = (row.get(0), row.get(1), row.get(2));
    let seats = if seated {
        seats_of(&client, id).await?
    } else {
        Vec::new()
    };
    let available = if seated {
        seats
            .iter()
            .filter(|s| s.1 == SeatStatus::Available)
            .count() as u32
    } else {
        ga_left.max(0) as u32
    };
    Ok(Some(IdleCategory {
        seq: ((loads as u64 + 1) << 32) - 1,
        available,
        seats,
    }))
}

async fn seats_of(
    client: &deadpool_postgres::Client,
    category: i64,
) -> Result<Vec<(SeatInfo, SeatStatus)>, StoreError> {
    let rows = client
        .query(
            "SELECT id, row_no, col_no, price_cents, status FROM seats
             WHERE ticket_category_id = $1 ORDER BY row_no, col_no",
            &[&category],
        )
        .await?;
    let seat = |r: &tokio_postgres::Row| {
        let info = SeatInfo {
            id: r.get(0),
            row: r.get(1),
            col: r.get(2),
            price_cents: r.get(3),
        };
        let status = match r.get::<_, &str>(4) {
            "sold" => SeatStatus::Sold,
            "held" => SeatStatus::Held,
            _ => SeatStatus::Available,
        };
        (info, status)
    };
    Ok(rows.iter().map(seat).collect())
}
