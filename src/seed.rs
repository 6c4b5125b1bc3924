//! `boxoffice seed-demo`: demo areas, categories, 24 programs (one of them the large seated
//! "Demo Stadium Concert"), a demo buyer with ticket buyers, and an admin.
//!
//! Idempotent: programs are keyed by slug, users by email, ticket buyers by id-number
//! fingerprint, so a second run changes nothing. Credentials are demo data only (README).

use crate::config::Settings;
use crate::crypto::IdNumberCipher;
use crate::store::catalog::{self, Layout, NewProgram, NewTicketCategory};
use crate::store::users::{self, EnsureUser, NewTicketBuyer, role};
use crate::store::{PgPool, StoreError};
use chrono::{DateTime, Duration, Utc};

/// Demo buyer login (API.md "Defaults").
pub const DEMO_BUYER_EMAIL: &str = "demo@boxoffice.local";
/// Demo buyer password.
pub const DEMO_BUYER_PASSWORD: &str = "demo-password";
/// Demo admin login.
pub const DEMO_ADMIN_EMAIL: &str = "admin@boxoffice.local";
/// Demo admin password.
pub const DEMO_ADMIN_PASSWORD: &str = "admin-password";
/// Title of the large seated concert.
pub const DEMO_CONCERT_TITLE: &str = "Demo Stadium Concert";

/// What the seed produced, for printing.
#[derive(Debug)]
pub struct SeedSummary {
    /// Program ids, the stadium concert first.
    pub program_ids: Vec<i64>,
    /// Demo buyer's user id.
    pub buyer_id: i64,
    /// Demo admin's user id.
    pub admin_id: i64,
}

const AREAS: [&str; 5] = ["Beijing", "Shanghai", "Guangzhou", "Shenzhen", "Chengdu"];
const GENRES: [(&str, [&str; 2]); 3] = [
    ("Concert", ["Pop", "Rock"]),
    ("Theatre", ["Musical", "Drama"]),
    ("Sports", ["Football", "Basketball"]),
];
const SMALL_SHOWS: usize = 23;

/// Seeds everything; safe to run any number of times.
pub async fn seed_demo(pool: &PgPool, settings: &Settings) -> Result<SeedSummary, StoreError> {
    let now = Utc::now();
    let mut areas = Vec::new();
    for name in AREAS {
        areas.push(catalog::ensure_area(pool, name).await?);
    }
    let mut genres = Vec::new();
    for (parent, children) in GENRES {
        let parent_id = catalog::ensure_program_category(pool, None, parent).await?;
        for child in children {
            genres.push((
                child,
                catalog::ensure_program_category(pool, Some(parent_id), child).await?,
            ));
        }
    }
    let mut program_ids =
        vec![catalog::create_program(pool, &stadium_concert(areas[0], genres[0].1, now)).await?];
    for i in 0..SMALL_SHOWS {
        let (genre, genre_id) = genres[i % genres.len()];
        let program = small_show(i, areas[i % areas.len()], genre, genre_id, now);
        program_ids.push(catalog::create_program(pool, &program).await?);
    }
    let (buyer_id, admin_id) = seed_people(pool, settings).await?;
    Ok(SeedSummary {
        program_ids,
        buyer_id,
        admin_id,
    })
}

/// Three seated tiers of 2,000+ seats each plus a standing GA tier.
fn stadium_concert(area_id: i64, category_id: i64, now: DateTime<Utc>) -> NewProgram {
    let tier = |name: &str, price_cents, rows, seats_per_row| NewTicketCategory {
        name: name.into(),
        price_cents,
        layout: Layout::Seated {
            rows,
            seats_per_row,
        },
    };
    NewProgram {
        slug: "demo-stadium-concert".into(),
        title: format!("{DEMO_CONCERT_TITLE} — Live in Beijing"),
        area_id,
        category_id,
        venue: "National Stadium".into(),
        description: "The big on-sale: 7,500 seats in three tiers plus 5,000 standing.".into(),
        choose_seats: true,
        per_order_limit: 4,
        per_account_limit: 6,
        on_sale_at: now - Duration::hours(1),
        show_times: vec![now + Duration::days(60)],
        categories: vec![
            tier("VIP", 128_000, 40, 55),
            tier("Tier A", 68_000, 50, 50),
            tier("Tier B", 38_000, 50, 60),
            NewTicketCategory {
                name: "Standing".into(),
                price_cents: 28_000,
                layout: Layout::General { capacity: 5_000 },
            },
        ],
    }
}

fn small_show(
    i: usize,
    area_id: i64,
    genre: &str,
    category_id: i64,
    now: DateTime<Utc>,
) -> NewProgram {
    let n = i + 1;
    let price = 18_000 + 2_000 * (i as i64 % 7);
    NewProgram {
        slug: format!("demo-show-{n:02}"),
        title: format!("{genre} Night #{n}"),
        area_id,
        category_id,
        venue: format!("Hall {}", 1 + i % 4),
        description: format!("Demo {genre} program number {n}."),
        choose_seats: i % 3 != 2,
        per_order_limit: 4,
        per_account_limit: 8,
        on_sale_at: now - Duration::hours(1) + Duration::days((i % 3) as i64 * 7),
        show_times: vec![
            now + Duration::days(14 + i as i64),
            now + Duration::days(15 + i as i64),
        ],
        categories: vec![
            NewTicketCategory {
                name: "Stalls".into(),
                price_cents: price,
                layout: Layout::Seated {
                    rows: 10,
                    seats_per_row: 20,
                },
            },
            NewTicketCategory {
                name: "Balcony".into(),
                price_cents: price / 2,
                layout: Layout::Seated {
                    rows: 6,
                    seats_per_row: 15,
                },
            },
            NewTicketCategory {
                name: "Standing".into(),
                price_cents: price / 3,
                layout: Layout::General { capacity: 200 },
            },
        ],
    }
}

async fn seed_people(pool: &PgPool, settings: &Settings) -> Result<(i64, i64), StoreError> {
    let buyer_id = users::ensure_user(
        pool,
        EnsureUser {
            email: DEMO_BUYER_EMAIL,
            password: DEMO_BUYER_PASSWORD,
            display_name: "Demo Buyer",
            roles: &[role::BUYER],
        },
    )
    .await?;
    let admin_id = users::ensure_user(
        pool,
        EnsureUser {
            email: DEMO_ADMIN_EMAIL,
            password: DEMO_ADMIN_PASSWORD,
            display_name: "Demo Admin",
            roles: &[role::BUYER, role::ADMIN],
        },
    )
    .await?;
    let key = settings
        .secrets
        .id_number_key_bytes()
        .map_err(|e| StoreError::config("secrets.id_number_key", e))?;
    let cipher = IdNumberCipher::new(key);
    let holders = [
        ("张三", "110101199003071233"),
        ("李四", "310101198805121231"),
        ("Ann Example", "E12345678"),
    ];
    for (name, id_number) in holders {
        let id_type = if id_number.len() == 18 {
            "id_card"
        } else {
            "passport"
        };
        // Demo data passes the same validation as the API, so it shows what buyers would see.
        let id_number = crate::domain::identity::normalize_id_number(id_type, id_number)
            .map_err(|e| StoreError::Conflict(format!("demo id number: {}", e.reason)))?;
        users::ensure_ticket_buyer(
            pool,
            &cipher,
            buyer_id,
            NewTicketBuyer {
                name,
                id_type,
                id_number: &id_number,
            },
        )
        .await?;
    }
    Ok((buyer_id, admin_id))
}
