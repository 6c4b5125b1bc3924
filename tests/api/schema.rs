//! Migrations and the database's own guarantees (the last line of defence behind the actors).

use crate::helpers::{TestDb, create_program, test_settings};
use boxoffice::domain::gene;
use boxoffice::store::catalog::Layout;
use boxoffice::store::users::{self, EnsureUser, NewTicketBuyer};
use boxoffice::store::{PgPool, postgres};

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_twice_in_a_row() {
    let db = TestDb::create().await;
    let settings = test_settings(&db.name);
    let pool = postgres::connect(&settings.database).await.unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('V')
        })
        .count();
    assert_eq!(
        postgres::migrate(&pool).await.unwrap(),
        files,
        "first run applies every migration file"
    );
    assert_eq!(
        postgres::migrate(&pool).await.unwrap(),
        0,
        "second run applies nothing"
    );
    let client = pool.get().await.unwrap();
    let partitions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'orders'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(partitions, 16, "orders has one partition per gene value");
}

/// A program with one seated category of 2×2 seats, a user and three ticket buyers.
struct Fixture {
    pool: PgPool,
    program_id: i64,
    user_id: i64,
    buyers: Vec<i64>,
    seats: Vec<i64>,
    category_id: i64,
    _db: TestDb,
}

async fn fixture() -> Fixture {
    let (db, pool, settings) = TestDb::migrated().await;
    let (program_id, _) = create_program(
        &pool,
        "schema-test",
        &[(
            "A",
            100,
            Layout::Seated {
                rows: 2,
                seats_per_row: 2,
            },
        )],
    )
    .await;
    let user_id = users::ensure_user(
        &pool,
        EnsureUser {
            email: "s@t.x",
            password: "pw",
            display_name: "S",
            roles: &[],
        },
    )
    .await
    .unwrap();
    let cipher =
        boxoffice::crypto::IdNumberCipher::new(settings.secrets.id_number_key_bytes().unwrap());
    let mut buyers = Vec::new();
    for n in ["P1", "P2", "P3"] {
        let b = NewTicketBuyer {
            name: n,
            id_type: "passport",
            id_number: n,
        };
        buyers.push(
            users::ensure_ticket_buyer(&pool, &cipher, user_id, b)
                .await
                .unwrap(),
        );
    }
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT id, ticket_category_id FROM seats WHERE program_id = $1 ORDER BY id",
            &[&program_id],
        )
        .await
        .unwrap();
    let seats = rows.iter().map(|r| r.get(0)).collect();
    let category_id = rows[0].get(1);
    Fixture {
        pool,
        program_id,
        user_id,
        buyers,
        seats,
        category_id,
        _db: db,
    }
}

impl Fixture {
    /// An order number carrying the user's gene, as the real generator makes them.
    fn order_no(&self, n: i64) -> i64 {
        (n << 4) | gene(self.user_id) as i64
    }

    async fn insert_order(&self, order_no: i64) {
        let client = self.pool.get().await.unwrap();
        client
            .execute(
                "INSERT INTO orders (order_no, gene, user_id, program_id, status, total_cents, expires_at)
                 VALUES ($1, $2, $3, $4, 'pending_payment', 100, now() + interval '15 minutes')",
                &[&order_no, &gene(order_no), &self.user_id, &self.program_id],
            )
            .await
            .unwrap();
    }

    async fn insert_ticket(
        &self,
        order_no: i64,
        buyer: i64,
        seat: Option<i64>,
    ) -> Result<u64, tokio_postgres::Error> {
        let client = self.pool.get().await.unwrap();
        client
            .execute(
                "INSERT INTO tickets (order_no, gene, line_no, user_id, program_id, ticket_category_id,
                                      ticket_buyer_id, seat_id, price_cents)
                 VALUES ($1, $2, (SELECT count(*) + 1 FROM tickets WHERE order_no = $1), $3, $4, $5, $6, $7, 100)",
                &[&order_no, &gene(order_no), &self.user_id, &self.program_id, &self.category_id, &buyer, &seat],
            )
            .await
    }

    /// Tickets for `buyers` on `seats` (pairwise), lines 1.., in one statement.
    async fn insert_tickets(
        &self,
        order_no: i64,
        buyers: &[i64],
        seats: &[i64],
    ) -> Result<u64, tokio_postgres::Error> {
        let lines: Vec<i16> = (1..=buyers.len() as i16).collect();
        let client = self.pool.get().await.unwrap();
        client
            .execute(
                "INSERT INTO tickets (order_no, gene, line_no, user_id, program_id, ticket_category_id,
                                      ticket_buyer_id, seat_id, price_cents)
                 SELECT $1, $2, l, $3, $4, $5, bu, s, 100
                 FROM unnest($6::smallint[], $7::bigint[], $8::bigint[]) AS x (l, bu, s)",
                &[&order_no, &gene(order_no), &self.user_id, &self.program_id, &self.category_id,
                  &lines, &buyers, &seats],
            )
            .await
    }

    async fn set_status(&self, order_no: i64, status: &str) -> Result<u64, tokio_postgres::Error> {
        let client = self.pool.get().await.unwrap();
        client
            .execute(
                "UPDATE orders SET status = $2 WHERE gene = $3 AND order_no = $1",
                &[&order_no, &status, &gene(order_no)],
            )
            .await
    }
}

fn unique_violation_on(err: tokio_postgres::Error, constraint: &str) {
    let db = err.as_db_error().expect("a database error");
    assert_eq!(
        db.code(),
        &tokio_postgres::error::SqlState::UNIQUE_VIOLATION,
        "{db:?}"
    );
    assert_eq!(db.constraint(), Some(constraint), "{db:?}");
}

#[tokio::test]
async fn a_seat_cannot_be_in_two_live_orders() {
    let f = fixture().await;
    let (a, b) = (f.order_no(1), f.order_no(2));
    f.insert_order(a).await;
    f.insert_order(b).await;
    f.insert_ticket(a, f.buyers[0], Some(f.seats[0]))
        .await
        .expect("first claim of the seat");

    let err = f
        .insert_ticket(b, f.buyers[1], Some(f.seats[0]))
        .await
        .expect_err("second live claim");
    unique_violation_on(err, "seat_claims_pkey");

    f.set_status(a, "cancelled").await.unwrap();
    f.insert_ticket(b, f.buyers[1], Some(f.seats[0]))
        .await
        .expect("seat free again after cancel");
}

#[tokio::test]
async fn a_ticket_buyer_cannot_hold_two_live_tickets_for_one_program() {
    let f = fixture().await;
    let (a, b) = (f.order_no(1), f.order_no(2));
    f.insert_order(a).await;
    f.insert_order(b).await;
    f.insert_ticket(a, f.buyers[2], Some(f.seats[1]))
        .await
        .unwrap();
    let err = f
        .insert_ticket(b, f.buyers[2], Some(f.seats[2]))
        .await
        .expect_err("same person twice");
    unique_violation_on(err, "buyer_claims_pkey");
}

#[tokio::test]
async fn a_closed_order_cannot_become_live_again() {
    let f = fixture().await;
    let a = f.order_no(1);
    f.insert_order(a).await;
    f.insert_ticket(a, f.buyers[0], Some(f.seats[3]))
        .await
        .unwrap();
    f.set_status(a, "expired").await.unwrap();
    let err = f
        .set_status(a, "paid")
        .await
        .expect_err("expired → paid is refused");
    assert_eq!(
        err.as_db_error().unwrap().code(),
        &tokio_postgres::error::SqlState::CHECK_VIOLATION
    );
}

#[tokio::test]
async fn one_statement_of_many_tickets_claims_them_all_or_none() {
    let f = fixture().await;
    let (a, b) = (f.order_no(1), f.order_no(2));
    f.insert_order(a).await;
    f.insert_order(b).await;
    f.insert_tickets(a, &f.buyers[..2], &f.seats[..2])
        .await
        .expect("two tickets, two claims");
    // One statement whose second ticket clashes with a live claim: refused whole.
    let err = f
        .insert_tickets(b, &[f.buyers[2], f.buyers[0]], &f.seats[2..4])
        .await
        .expect_err("a buyer already holding a live ticket");
    unique_violation_on(err, "buyer_claims_pkey");
    let client = f.pool.get().await.unwrap();
    let claims: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM seat_claims) + (SELECT count(*) FROM buyer_claims)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        claims, 4,
        "the first statement's claims, none of the second's"
    );
}

#[tokio::test]
async fn no_trigger_on_the_order_tables_fires_per_row() {
    let (_db, pool, _) = TestDb::migrated().await;
    let client = pool.get().await.unwrap();
    let per_row: Vec<String> = client
        .query(
            "SELECT tgname::text FROM pg_trigger t
             WHERE NOT tgisinternal AND (tgtype & 1) = 1
               AND tgrelid IN (SELECT 'orders'::regclass UNION SELECT 'tickets'::regclass
                               UNION SELECT inhrelid FROM pg_inherits
                               WHERE inhparent IN ('orders'::regclass, 'tickets'::regclass))",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(per_row.is_empty(), "row-level triggers: {per_row:?}");
}

#[tokio::test]
async fn holding_releasing_and_selling_a_seat_are_hot_updates() {
    let f = fixture().await;
    let mut client = f.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let order = f.order_no(1);
    for (status, order_no, expires) in [
        ("held", Some(order), "now() + interval '15 minutes'"),
        ("available", None, "NULL"),
        ("held", Some(order), "now() + interval '15 minutes'"),
        ("sold", Some(order), "NULL"),
    ] {
        tx.execute(
            &format!(
                "UPDATE seats SET status = $2, order_no = $3, hold_expires_at = {expires} WHERE id = $1"
            ),
            &[&f.seats[0], &status, &order_no],
        )
        .await
        .unwrap();
    }
    let row = tx
        .query_one(
            "SELECT pg_stat_get_xact_tuples_updated('seats'::regclass),
                    pg_stat_get_xact_tuples_hot_updated('seats'::regclass)",
            &[],
        )
        .await
        .unwrap();
    let (updated, hot): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(updated, 4);
    assert_eq!(
        hot, 4,
        "no index covers a column a hold changes, and the page has room"
    );
}

#[tokio::test]
async fn an_order_number_must_carry_its_users_gene() {
    let f = fixture().await;
    let wrong = f.order_no(1) ^ 1;
    let client = f.pool.get().await.unwrap();
    let err = client
        .execute(
            "INSERT INTO orders (order_no, gene, user_id, program_id, status, total_cents, expires_at)
             VALUES ($1, $2, $3, $4, 'pending_payment', 100, now())",
            &[&wrong, &gene(wrong), &f.user_id, &f.program_id],
        )
        .await
        .expect_err("gene mismatch");
    assert_eq!(
        err.as_db_error().unwrap().code(),
        &tokio_postgres::error::SqlState::CHECK_VIOLATION
    );
}

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// A database migrated up to and including `version` only.
pub(crate) async fn migrated_to(version: i32) -> (TestDb, PgPool) {
    let db = TestDb::create().await;
    let pool = postgres::connect(&test_settings(&db.name).database)
        .await
        .unwrap();
    let mut client = pool.get().await.unwrap();
    embedded::migrations::runner()
        .set_target(refinery::Target::Version(version))
        .run_async(&mut **client)
        .await
        .unwrap();
    drop(client);
    (db, pool)
}

/// The id a one-row `INSERT ... RETURNING id` answers.
async fn insert_returning_id(
    pool: &PgPool,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    let client = pool.get().await.unwrap();
    client
        .query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// A program in the shape before V7 (categories per program): two show times, the earlier one
/// inserted second; a 2×2 seated tier with seat (1, 2) held and a GA tier with 3 taken.
/// Returns (program id, [early, late] show time ids, [seated, GA] category ids).
async fn old_shape_program(pool: &PgPool) -> (i64, [i64; 2], [i64; 2]) {
    let program = insert_returning_id(
        pool,
        "WITH a AS (INSERT INTO areas (name) VALUES ('Old Town') RETURNING id),
              c AS (INSERT INTO program_categories (name) VALUES ('Old') RETURNING id)
         INSERT INTO programs (slug, title, area_id, category_id, venue, per_order_limit,
                               per_account_limit, on_sale_at)
         SELECT 'old', 'Old', a.id, c.id, 'Hall', 2, 4, now() FROM a, c RETURNING id",
        &[],
    )
    .await;
    let show = "INSERT INTO show_times (program_id, starts_at)
                VALUES ($1, now() + make_interval(days => $2)) RETURNING id";
    let late = insert_returning_id(pool, show, &[&program, &9]).await;
    let early = insert_returning_id(pool, show, &[&program, &8]).await;
    let seated = insert_returning_id(
        pool,
        "INSERT INTO ticket_categories (program_id, name, price_cents, capacity, seated, seat_rows,
                                        seats_per_row, sort_order)
         VALUES ($1, 'Front', 500, 4, true, 2, 2, 0) RETURNING id",
        &[&program],
    )
    .await;
    let ga = insert_returning_id(
        pool,
        "INSERT INTO ticket_categories (program_id, name, price_cents, capacity, seated, sort_order,
                                        ga_taken)
         VALUES ($1, 'Floor', 200, 10, false, 1, 3) RETURNING id",
        &[&program],
    )
    .await;
    pool.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO seats (program_id, ticket_category_id, row_no, col_no, price_cents, status,
                                order_no, hold_expires_at)
             SELECT $1, $2, r, c, 500,
                    CASE WHEN (r, c) = (1, 2) THEN 'held' ELSE 'available' END,
                    CASE WHEN (r, c) = (1, 2) THEN 77 END,
                    CASE WHEN (r, c) = (1, 2) THEN now() + interval '1 hour' END
             FROM generate_series(1, 2) AS r, generate_series(1, 2) AS c",
            &[&program, &seated],
        )
        .await
        .unwrap();
    (program, [early, late], [seated, ga])
}

/// (id, show time, name, price, capacity, sort order, GA taken) of every category of
/// `program`, earliest show time first, then by sort order.
async fn categories_after(
    pool: &PgPool,
    program: i64,
) -> Vec<(i64, i64, String, i64, i32, i32, i32)> {
    let client = pool.get().await.unwrap();
    client
        .query(
            "SELECT tc.id, tc.show_time_id, tc.name, tc.price_cents, tc.capacity, tc.sort_order,
                    tc.ga_taken
             FROM ticket_categories tc JOIN show_times st ON st.id = tc.show_time_id
             WHERE tc.program_id = $1 ORDER BY st.starts_at, tc.sort_order",
            &[&program],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect()
}

/// (row, col, status, order_no) of every seat of one category.
async fn seats_of(pool: &PgPool, category: i64) -> Vec<(i32, i32, String, Option<i64>)> {
    let client = pool.get().await.unwrap();
    client
        .query(
            "SELECT row_no, col_no, status, order_no FROM seats
             WHERE ticket_category_id = $1 ORDER BY row_no, col_no",
            &[&category],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn v7_keeps_existing_categories_on_the_earliest_show_time_and_copies_them_for_the_others() {
    let (_db, pool) = migrated_to(6).await;
    let (program, [early, late], [seated, ga]) = old_shape_program(&pool).await;
    postgres::migrate(&pool).await.unwrap();

    let cats = categories_after(&pool, program).await;
    let shape: Vec<_> = cats
        .iter()
        .map(|(_, st, name, price, cap, sort, taken)| {
            (*st, name.as_str(), *price, *cap, *sort, *taken)
        })
        .collect();
    assert_eq!(
        shape,
        [
            (early, "Front", 500, 4, 0, 0),
            (early, "Floor", 200, 10, 1, 3),
            (late, "Front", 500, 4, 0, 0),
            (late, "Floor", 200, 10, 1, 0),
        ],
        "originals on the earliest show time (sold figures kept), fresh copies on the other"
    );
    assert_eq!(
        (cats[0].0, cats[1].0),
        (seated, ga),
        "originals keep their ids"
    );

    let kept = seats_of(&pool, seated).await;
    assert_eq!(kept.len(), 4);
    assert!(kept.contains(&(1, 2, "held".into(), Some(77))), "{kept:?}");
    let copied = seats_of(&pool, cats[2].0).await;
    let fresh: Vec<_> = kept
        .iter()
        .map(|(r, c, _, _)| (*r, *c, "available".to_string(), None))
        .collect();
    assert_eq!(copied, fresh, "same grid, every seat available");
    assert!(
        seats_of(&pool, cats[3].0).await.is_empty(),
        "GA has no seats"
    );
}

#[tokio::test]
async fn a_category_belongs_to_one_show_time_of_its_own_program() {
    let (_db, pool) = migrated_to(6).await;
    let (program, [early, _], _) = old_shape_program(&pool).await;
    postgres::migrate(&pool).await.unwrap();
    let (other, _) = create_program(
        &pool,
        "someone-else",
        &[("Front", 100, Layout::General { capacity: 5 })],
    )
    .await;
    let client = pool.get().await.unwrap();
    let other_show: i64 = client
        .query_one("SELECT id FROM show_times WHERE program_id = $1", &[&other])
        .await
        .unwrap()
        .get(0);
    let insert = "INSERT INTO ticket_categories (program_id, show_time_id, name, price_cents,
                                                 capacity, seated)
                  VALUES ($1, $2, $3, 100, 5, false)";
    let err = client
        .execute(insert, &[&program, &early, &"Front"])
        .await
        .expect_err("a tier name twice in one show time");
    unique_violation_on(err, "ticket_categories_show_time_id_name_key");
    let err = client
        .execute(insert, &[&program, &other_show, &"Balcony"])
        .await
        .expect_err("another program's show time");
    assert_eq!(
        err.as_db_error().unwrap().constraint(),
        Some("ticket_categories_show_time_of_program")
    );
    let err = client
        .execute(insert, &[&program, &None::<i64>, &"Balcony"])
        .await
        .expect_err("no show time");
    assert_eq!(
        err.as_db_error().unwrap().code(),
        &tokio_postgres::error::SqlState::NOT_NULL_VIOLATION
    );
    client
        .execute(insert, &[&other, &other_show, &"Balcony"])
        .await
        .expect("a new name in its own program's show time");
}
