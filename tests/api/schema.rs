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
