//! `seed-demo` creates what API.md promises and is idempotent.

use crate::helpers::TestDb;
use boxoffice::seed;
use boxoffice::store::PgPool;

const COUNTED: [&str; 10] = [
    "areas",
    "program_categories",
    "programs",
    "show_times",
    "ticket_categories",
    "seats",
    "users",
    "user_emails",
    "user_roles",
    "ticket_buyers",
];

async fn counts(pool: &PgPool) -> Vec<(String, i64)> {
    let client = pool.get().await.unwrap();
    let mut out = Vec::new();
    for table in COUNTED {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        out.push((table.to_string(), n));
    }
    out
}

#[tokio::test]
async fn seed_demo_twice_leaves_the_same_counts() {
    let (_db, pool, settings) = TestDb::migrated().await;
    let first = seed::seed_demo(&pool, &settings).await.unwrap();
    let after_first = counts(&pool).await;
    let second = seed::seed_demo(&pool, &settings).await.unwrap();
    assert_eq!(counts(&pool).await, after_first);
    assert_eq!(first.program_ids, second.program_ids);
    assert_eq!(first.buyer_id, second.buyer_id);
    assert!(after_first.iter().all(|(_, n)| *n > 0), "{after_first:?}");
}

#[tokio::test]
async fn seed_demo_has_the_promised_programs_and_accounts() {
    let (_db, pool, settings) = TestDb::migrated().await;
    let summary = seed::seed_demo(&pool, &settings).await.unwrap();
    assert!(summary.program_ids.len() >= 20);
    let client = pool.get().await.unwrap();
    let concert = client
        .query_one(
            "SELECT id FROM programs WHERE title LIKE '%' || $1 || '%'",
            &[&seed::DEMO_CONCERT_TITLE],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    let tiers = client
        .query(
            "SELECT tc.seated, tc.capacity, (SELECT count(*) FROM seats s WHERE s.ticket_category_id = tc.id)
             FROM ticket_categories tc WHERE program_id = $1",
            &[&concert],
        )
        .await
        .unwrap();
    let seated: Vec<(i32, i64)> = tiers
        .iter()
        .filter(|r| r.get::<_, bool>(0))
        .map(|r| (r.get(1), r.get(2)))
        .collect();
    assert!(
        seated.len() >= 3
            && seated
                .iter()
                .all(|(cap, seats)| *cap >= 2000 && *seats == *cap as i64),
        "{seated:?}"
    );
    assert!(
        tiers.iter().any(|r| !r.get::<_, bool>(0)),
        "a general-admission tier"
    );

    for (email, password, role) in [
        (seed::DEMO_BUYER_EMAIL, seed::DEMO_BUYER_PASSWORD, "buyer"),
        (seed::DEMO_ADMIN_EMAIL, seed::DEMO_ADMIN_PASSWORD, "admin"),
    ] {
        let row = client
            .query_one(
                "SELECT u.password_hash, EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = u.id AND r.role = $2)
                 FROM user_emails e JOIN users u ON u.id = e.user_id WHERE e.email = $1",
                &[&email, &role],
            )
            .await
            .unwrap();
        assert!(
            boxoffice::crypto::verify_password(password, row.get(0)),
            "{email} password"
        );
        assert!(row.get::<_, bool>(1), "{email} has role {role}");
    }
    let buyers: i64 = client
        .query_one(
            "SELECT count(*) FROM ticket_buyers WHERE user_id = $1",
            &[&summary.buyer_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(buyers >= 2);
}

#[tokio::test]
async fn id_numbers_are_not_readable_in_the_database() {
    let (_db, pool, settings) = TestDb::migrated().await;
    seed::seed_demo(&pool, &settings).await.unwrap();
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT id_number_enc, id_number_last4, id, user_id, id_type, id_key_version
             FROM ticket_buyers",
            &[],
        )
        .await
        .unwrap();
    let cipher =
        boxoffice::crypto::IdNumberCipher::new(settings.secrets.id_number_key_bytes().unwrap());
    for row in rows {
        let sealed: Vec<u8> = row.get(0);
        let binding = boxoffice::crypto::RowBinding {
            ticket_buyer_id: row.get(2),
            user_id: row.get(3),
            id_type: row.get(4),
        };
        let clear = cipher.open(&sealed, binding, row.get(5)).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains(&clear));
        assert!(clear.ends_with(row.get::<_, &str>(1)));
    }
}
