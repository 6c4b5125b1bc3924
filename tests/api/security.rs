//! Abuse resistance (docs: README "Security"): each test plays one attack on the on-sale and
//! shows the control that answers it.

use crate::helpers::spawn_app_with;
use serde_json::json;

/// Argon2 holds ~19 MiB and a core per hash: a flood of logins must be refused beyond the
/// bound, not queued without one.
#[tokio::test]
async fn a_password_hash_flood_is_refused_beyond_the_bound_not_queued() {
    let app = spawn_app_with(|s| {
        s.accounts.password_hash_concurrency = 1;
        s.accounts.login_failures_per_minute = 1_000; // the bound under test, not the throttle
        s.rate_limit.enabled = false;
    })
    .await;
    let email = format!("flood-{}@example.com", uuid::Uuid::new_v4().simple());
    app.register(&email, "correct horse battery").await;
    let body = json!({ "login": email, "password": "correct horse battery" });
    let logins = (0..20).map(|_| async {
        let r = app.post("/api/v1/sessions", None, &body).await;
        let retry_after = r.headers().contains_key("retry-after");
        let status = r.status().as_u16();
        let answer: serde_json::Value = r.json().await.unwrap();
        (status, answer["error"]["code"].clone(), retry_after)
    });
    let answers = futures::future::join_all(logins).await;
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert!(
        answers.iter().all(|a| a.0 == 201 || a.0 == 503),
        "{answers:?}"
    );
    assert!(
        !refused.is_empty(),
        "20 at once with one slot: some must be refused"
    );
    assert!(
        refused.iter().all(|a| a.1 == "PASSWORD_WORK_BUSY" && a.2),
        "{refused:?}"
    );
    assert!(answers.iter().any(|a| a.0 == 201), "the slot still serves");
}

/// A slow query (a search flood's, a bug's) cannot hold a pooled connection and its locks for
/// long: Postgres cancels any statement of ours past `database.statement_timeout_ms`.
#[tokio::test]
async fn every_session_of_ours_has_a_statement_timeout() {
    let (_db, _, mut settings) = crate::helpers::TestDb::migrated().await;
    settings.database.statement_timeout_ms = 200;
    let pool = boxoffice::store::postgres::connect(&settings.database)
        .await
        .unwrap();
    let client = pool.get().await.unwrap();
    let started = std::time::Instant::now();
    let slow = client.simple_query("SELECT pg_sleep(5)").await;
    let error = slow.expect_err("the statement must be cancelled");
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{error}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

/// Prices a client sends are summed in checked arithmetic before anything is reserved: a total
/// past `i64` or a negative price is a 422, never an overflow (a panic, or a wrapped total).
#[tokio::test]
async fn an_order_whose_total_overflows_is_refused_before_it_takes_seats() {
    use crate::helpers::{buyers, code, on_sale, order, seat_ids};
    let app = crate::helpers::spawn_app().await;
    let (program, _, _) = on_sale(&app, 6, 6).await;
    let buyer = buyers(&app, 1, 2).await.remove(0);
    let seats = seat_ids(&app, program).await;
    for (price, key) in [(i64::MAX, "huge"), (-1, "negative")] {
        let body = json!({"program_id": program, "ticket_buyer_ids": buyer.buyers,
            "seats": [{"seat_id": seats[0].0, "price_cents": price}, {"seat_id": seats[1].0, "price_cents": price}]});
        let r = order(&app, &buyer.token, key, &body).await;
        assert_eq!(
            code(r).await,
            (422, "VALIDATION".to_string()),
            "price {price}"
        );
    }
    let after = seat_ids(&app, program).await;
    assert!(
        after.iter().all(|s| s.1 == "available"),
        "nothing was taken"
    );
}

/// Every stored text has a bound: a 10,000-character display name is a 422 naming the field.
#[tokio::test]
async fn a_display_name_past_its_bound_is_refused() {
    let app = crate::helpers::spawn_app().await;
    let long = "x".repeat(10_000);
    let body =
        json!({"email": "long@example.com", "password": "long enough", "display_name": long});
    let r = app.post("/api/v1/users", None, &body).await;
    assert_eq!(r.status(), 422);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        answer["error"]["details"]["field"], "display_name",
        "{answer}"
    );
    let fits = json!({"email": "fits@example.com", "password": "long enough", "display_name": "x".repeat(64)});
    assert_eq!(app.post("/api/v1/users", None, &fits).await.status(), 201);
}

/// A login from `client` (as a trusted proxy names it); the status and error code.
async fn login_from(
    app: &crate::helpers::TestApp,
    client: &str,
    login: &str,
    password: &str,
) -> (u16, String) {
    let r = app
        .http
        .post(format!("{}/api/v1/sessions", app.address))
        .header("x-forwarded-for", client)
        .json(&json!({ "login": login, "password": password }))
        .send()
        .await
        .unwrap();
    crate::helpers::code(r).await
}

/// Issue: the wrong-password throttle checked before it counted (a parallel burst got
/// through) and counted per login only (anyone could lock anyone out).
#[tokio::test]
async fn a_burst_of_wrong_passwords_gets_its_allowance_only_and_locks_out_nobody_else() {
    let app = spawn_app_with(|s| {
        s.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        s.rate_limit.enabled = false;
    })
    .await;
    let email = format!("owner-{}@example.com", uuid::Uuid::new_v4().simple());
    app.register(&email, "correct horse battery").await;
    let attacker = "203.0.113.5";
    let burst = (0..50).map(|_| login_from(&app, attacker, &email, "wrong guess 123"));
    let answers = futures::future::join_all(burst).await;
    let checked = answers.iter().filter(|a| a.0 == 401).count();
    let throttled = answers
        .iter()
        .filter(|a| *a == &(429, "TOO_MANY_ATTEMPTS".to_string()))
        .count();
    let allowance = app.settings.accounts.login_failures_per_minute as usize;
    assert!(
        checked <= allowance,
        "{checked} passwords checked, allowance {allowance}"
    );
    assert_eq!(checked + throttled, 50, "{answers:?}");
    let owner = login_from(&app, "198.51.100.20", &email, "correct horse battery").await;
    assert_eq!(owner.0, 201, "the owner signs in from elsewhere: {owner:?}");
    let guessed = login_from(&app, attacker, &email, "correct horse battery").await;
    assert_eq!(
        guessed.0, 429,
        "the attacker's client still waits, right password or not"
    );
}

/// `PUT /api/v1/admin/users/{id}/access` as `admin`.
async fn set_access(
    app: &crate::helpers::TestApp,
    admin: &str,
    user: i64,
    body: serde_json::Value,
) -> u16 {
    let r = app
        .http
        .put(format!("{}/api/v1/admin/users/{user}/access", app.address))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

/// Issue: roles and status were frozen in the token for 24 h (a demoted admin stayed admin).
#[tokio::test]
async fn a_demoted_admin_is_refused_at_once_and_signs_in_again_as_a_buyer() {
    use crate::helpers::signed_in_admin;
    let app = crate::helpers::spawn_app().await;
    let (_, boss) = signed_in_admin(&app).await;
    let (demoted, old_token) = signed_in_admin(&app).await;
    let admin_page = "/api/v1/admin/programs/1/orders";
    assert_ne!(
        app.get_as(&old_token, admin_page).await.status(),
        403,
        "an admin before"
    );
    let buyer_only = json!({"roles": ["buyer"], "status": "active"});
    assert_eq!(set_access(&app, &boss, demoted, buyer_only).await, 200);
    assert_eq!(
        app.get_as(&old_token, admin_page).await.status(),
        401,
        "the old token is over"
    );
    let login: serde_json::Value = app
        .post(
            "/api/v1/sessions",
            None,
            &json!({"login": email_of(&app, demoted).await, "password": "admin password"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let new_token = login["token"].as_str().unwrap();
    assert_eq!(
        app.get_as(new_token, admin_page).await.status(),
        403,
        "a buyer now"
    );
    assert_eq!(app.get_as(new_token, "/api/v1/me").await.status(), 200);
    let disabled = json!({"roles": ["buyer"], "status": "disabled"});
    assert_eq!(set_access(&app, &boss, demoted, disabled).await, 200);
    assert_eq!(
        app.get_as(new_token, "/api/v1/me").await.status(),
        401,
        "disabled: out at once"
    );
}

async fn email_of(app: &crate::helpers::TestApp, user: i64) -> String {
    let sql = "SELECT email FROM user_emails WHERE user_id = $1";
    app.pg
        .get()
        .await
        .unwrap()
        .query_one(sql, &[&user])
        .await
        .unwrap()
        .get(0)
}

/// `DELETE /api/v1/sessions` ends every token of the caller, the order path's included.
#[tokio::test]
async fn signing_out_everywhere_ends_every_token_of_the_caller() {
    use crate::helpers::{buyers, code, on_sale, order};
    let app = crate::helpers::spawn_app().await;
    let (program, _, floor) = on_sale(&app, 6, 6).await;
    let email = format!("everywhere-{}@example.com", uuid::Uuid::new_v4().simple());
    app.register(&email, "correct horse battery").await;
    let phone = app.login(&email, "correct horse battery").await;
    let laptop = app.login(&email, "correct horse battery").await;
    let other = buyers(&app, 1, 1).await.remove(0);
    assert_eq!(
        app.delete_as(&phone, "/api/v1/sessions").await.status(),
        204
    );
    for token in [&phone, &laptop] {
        assert_eq!(app.get_as(token, "/api/v1/me").await.status(), 401);
        let body = json!({"program_id": program, "ticket_category_id": floor, "quantity": 1, "ticket_buyer_ids": [1]});
        assert_eq!(
            code(order(&app, token, "k", &body).await).await.0,
            401,
            "the order gate too"
        );
    }
    let fresh = app.login(&email, "correct horse battery").await;
    assert_eq!(
        app.get_as(&fresh, "/api/v1/me").await.status(),
        200,
        "a new sign-in works"
    );
    assert_eq!(
        app.get_as(&other.token, "/api/v1/me").await.status(),
        200,
        "nobody else is affected"
    );
}

// ---- One live ticket per person per program, across accounts; id-number keys ----------------
// (Scalpers add the same real person to many accounts, or delete and re-add them, to multiply
// their share of a sale. A claim names the person — id type and keyed hash of the number — not
// the account's ticket buyer row. The hash and the encryption use separate derived keys.)

mod person {
    use crate::helpers::{
        TestDb, buyers, code, on_sale, order, poll_until, spawn_app, spawn_app_with, test_settings,
    };
    use boxoffice::crypto::{IdNumberCipher, RowBinding, key_version};
    use boxoffice::store::PgPool;
    use serde_json::{Value, json};

    /// A passport number nobody else in the test run uses.
    fn passport() -> String {
        format!("E{}", &uuid::Uuid::new_v4().simple().to_string()[..12]).to_uppercase()
    }

    /// Adds a ticket buyer to the caller's account through the API; its id.
    async fn add_holder(app: &crate::helpers::TestApp, token: &str, number: &str) -> i64 {
        let body = json!({"name": "Same Person", "id_type": "passport", "id_number": number});
        let r = app
            .post("/api/v1/me/ticket-buyers", Some(token), &body)
            .await;
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    fn ga(program: i64, floor: i64, holder: i64) -> Value {
        json!({"program_id": program, "ticket_category_id": floor, "quantity": 1, "ticket_buyer_ids": [holder]})
    }

    /// The order number of a 201 answer.
    async fn placed(r: reqwest::Response) -> String {
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        body["order_no"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn one_person_through_two_accounts_holds_one_live_ticket_per_program() {
        let app = spawn_app().await;
        let (program, _, floor) = on_sale(&app, 6, 6).await;
        let (other_program, _, other_floor) = on_sale(&app, 6, 6).await;
        let (_, first) = app.signed_in_buyer().await;
        let (_, second) = app.signed_in_buyer().await;
        let number = passport();
        let mine = add_holder(&app, &first, &number).await;
        // The second account spells the number its own way; still the same person.
        let theirs = add_holder(&app, &second, &format!(" {} ", number.to_lowercase())).await;
        assert_ne!(mine, theirs, "two rows, one per account");

        let no = placed(order(&app, &first, "p1", &ga(program, floor, mine)).await).await;
        assert_eq!(
            code(order(&app, &second, "p2", &ga(program, floor, theirs)).await).await,
            (409, "BUYER_HAS_TICKET".into()),
            "the person already holds a live ticket through the first account"
        );
        let elsewhere = ga(other_program, other_floor, theirs);
        placed(order(&app, &second, "p3", &elsewhere).await).await;

        let cancelled = crate::helpers::cancel(&app, &first, &no).await;
        assert_eq!(cancelled.status(), 200);
        placed(order(&app, &second, "p4", &ga(program, floor, theirs)).await).await;
        assert_eq!(
            code(order(&app, &first, "p5", &ga(program, floor, mine)).await).await,
            (409, "BUYER_HAS_TICKET".into()),
            "and now the first account is the one refused"
        );
    }

    #[tokio::test]
    async fn a_deleted_and_re_added_ticket_buyer_is_still_the_same_person_until_the_order_expires()
    {
        let app = spawn_app_with(|s| s.orders.payment_window_secs = 2).await;
        let (program, _, floor) = on_sale(&app, 6, 6).await;
        let (_, token) = app.signed_in_buyer().await;
        let number = passport();
        let before = add_holder(&app, &token, &number).await;
        let no = placed(order(&app, &token, "r1", &ga(program, floor, before)).await).await;
        let path = format!("/api/v1/me/ticket-buyers/{before}");
        assert_eq!(app.delete_as(&token, &path).await.status(), 204);
        let again = add_holder(&app, &token, &number).await;
        assert_ne!(before, again, "a new row");
        assert_eq!(
            code(order(&app, &token, "r2", &ga(program, floor, again)).await).await,
            (409, "BUYER_HAS_TICKET".into())
        );
        let status = poll_until(
            std::time::Duration::from_secs(8),
            async || {
                let r = app.get_as(&token, &format!("/api/v1/orders/{no}")).await;
                r.json::<Value>().await.unwrap()["status"].clone()
            },
            |s| *s == "expired",
        )
        .await;
        assert_eq!(status, "expired");
        placed(order(&app, &token, "r3", &ga(program, floor, again)).await).await;
    }

    #[tokio::test]
    async fn accounts_racing_for_one_person_get_exactly_one_ticket() {
        let app = spawn_app().await;
        let (program, _, floor) = on_sale(&app, 6, 6).await;
        let number = passport();
        // Consecutive accounts fall on different writer shards and on the same one: both the
        // batch's own check and the claims' key across concurrent batches are raced.
        let accounts = buyers(&app, 8, 0).await;
        let mut bodies = Vec::new();
        for a in &accounts {
            let holder = add_holder(&app, &a.token, &number).await;
            bodies.push((a.token.clone(), ga(program, floor, holder)));
        }
        let answers = futures::future::join_all(
            bodies
                .iter()
                .map(|(token, body)| async { code(order(&app, token, "race", body).await).await }),
        )
        .await;
        let won = answers.iter().filter(|a| a.0 == 201).count();
        assert_eq!(won, 1, "{answers:?}");
        assert!(
            answers
                .iter()
                .all(|a| a.0 == 201 || *a == (409, "BUYER_HAS_TICKET".to_string())),
            "{answers:?}"
        );
        let live = crate::helpers::count(
            &app,
            &format!(
                "SELECT count(*) FROM orders WHERE program_id = {program}
                 AND status IN ('pending_payment', 'paid')"
            ),
        )
        .await;
        assert_eq!(live, 1);
        let discarded = crate::helpers::count(&app, "SELECT count(*) FROM discarded_orders").await;
        assert_eq!(
            discarded, 0,
            "a clash across shards is a refusal on rerun, not a discarded order"
        );
    }

    /// The one bigint a one-row query answers.
    async fn one_id(
        pool: &PgPool,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> i64 {
        pool.get()
            .await
            .unwrap()
            .query_one(sql, params)
            .await
            .unwrap()
            .get(0)
    }

    /// `n` accounts in the database, each with a ticket buyer for the person `number`.
    async fn accounts_naming(
        pool: &PgPool,
        cipher: &IdNumberCipher,
        number: &str,
        n: usize,
    ) -> Vec<(i64, i64)> {
        use boxoffice::store::users::{NewTicketBuyer, ensure_ticket_buyer};
        let mut out = Vec::new();
        for _ in 0..n {
            let user = one_id(
                pool,
                "INSERT INTO users (password_hash) VALUES ('x') RETURNING id",
                &[],
            )
            .await;
            let holder = NewTicketBuyer {
                name: "Same",
                id_type: "passport",
                id_number: number,
            };
            out.push((
                user,
                ensure_ticket_buyer(pool, cipher, user, holder)
                    .await
                    .unwrap(),
            ));
        }
        out
    }

    fn one_written_one_refused(
        answers: &[Result<boxoffice::store::writer::Placed, boxoffice::store::StoreError>],
    ) {
        use boxoffice::store::{Refusal, StoreError, writer::Placed};
        let written = answers
            .iter()
            .filter(|a| matches!(a, Ok(Placed::Written)))
            .count();
        let refused = answers
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Err(StoreError::Refused {
                        reason: Refusal::BuyerHasTicket,
                        ..
                    })
                )
            })
            .count();
        assert_eq!((written, refused), (1, 1), "{answers:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_person_in_one_batch_or_in_two_shards_batches_is_written_once() {
        use boxoffice::domain::order_no::OrderNoGenerator;
        use boxoffice::store::catalog::Layout;
        use boxoffice::store::writer::{GroupCommitWriter, WriterSettings};
        use std::sync::atomic::Ordering::Relaxed;
        use std::time::Duration;
        let (_db, pool, settings) = TestDb::migrated().await;
        let standing = [("Standing", 1_000, Layout::General { capacity: 100 })];
        let (one, one_cats) = crate::helpers::create_program(&pool, "person-1", &standing).await;
        let (two, two_cats) = crate::helpers::create_program(&pool, "person-2", &standing).await;
        let cipher = IdNumberCipher::new(settings.secrets.id_number_key_bytes().unwrap());
        let people = accounts_naming(&pool, &cipher, &passport(), 3).await;
        let (same_shard, other_shard) = (people[2], people[1]);
        assert_eq!(people[0].0 % 2, same_shard.0 % 2);
        assert_ne!(people[0].0 % 2, other_shard.0 % 2);
        let ids = OrderNoGenerator::new(1);
        let now = chrono::Utc::now().timestamp_millis();
        let order = |(user, holder): (i64, i64), program: i64, category: i64, n: i64| {
            crate::writer::ga_order(ids.next(user, now + n), user, program, category, holder)
        };

        // Two accounts in one batch of one writer: the batch's own check refuses the second.
        let settings_of = |max_batch, max_wait, shards| WriterSettings {
            max_batch,
            max_wait,
            queue: 16,
            writers: 1,
            shards,
        };
        let writer =
            GroupCommitWriter::start(pool.clone(), settings_of(2, Duration::from_secs(5), 1));
        let (a, b) = tokio::join!(
            writer.place_order(order(people[0], one, one_cats[0], 0)),
            writer.place_order(order(same_shard, one, one_cats[0], 1))
        );
        assert_eq!(writer.stats().batches.load(Relaxed), 1, "one transaction");
        one_written_one_refused(&[a, b]);

        // Two accounts on two shards, their batches in flight at once (both held at the outbox
        // until both have passed their checks): the claims' key refuses the later one, and its
        // batch runs again, where its check refuses it — not split, nothing set aside.
        let writer = GroupCommitWriter::start(pool.clone(), settings_of(1, Duration::ZERO, 2));
        let mut blocker = pool.get().await.unwrap();
        let hold = blocker.transaction().await.unwrap();
        hold.batch_execute("LOCK TABLE outbox IN EXCLUSIVE MODE")
            .await
            .unwrap();
        let placing = [people[0], other_shard].map(|p| {
            let (w, o) = (writer.clone(), order(p, two, two_cats[0], 2));
            tokio::spawn(async move { w.place_order(o).await })
        });
        let waiting = crate::helpers::poll_until(
            Duration::from_secs(10),
            async || {
                one_id(
                    &pool,
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
            },
            |n| *n == 2,
        )
        .await;
        assert_eq!(waiting, 2, "both batches in flight");
        hold.rollback().await.unwrap();
        let mut answers = Vec::new();
        for p in placing {
            answers.push(p.await.unwrap());
        }
        one_written_one_refused(&answers);
        let stats = writer.stats();
        assert_eq!(stats.split.load(Relaxed), 0, "no split");
        assert!(
            stats.retried.load(Relaxed) >= 1,
            "the later batch ran again"
        );
        let discarded = one_id(&pool, "SELECT count(*) FROM discarded_orders", &[]).await;
        assert_eq!(discarded, 0, "a refusal, not a discarded order");
    }

    // -- keys and existing rows --

    const LEGACY_LABEL: &[u8] = b"boxoffice:id-number:";

    /// A row as the code before key separation sealed it: the configured key itself, no
    /// associated data, and the same key for the hash (over the number as given).
    fn legacy_row(secret: [u8; 32], number: &str) -> (Vec<u8>, Vec<u8>) {
        use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
        use hmac::Mac;
        let cipher = aes_gcm::Aes256Gcm::new(&secret.into());
        let nonce = aes_gcm::Aes256Gcm::generate_nonce(&mut OsRng);
        let mut sealed = nonce.to_vec();
        sealed.extend(cipher.encrypt(&nonce, number.as_bytes()).unwrap());
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&secret).unwrap();
        mac.update(LEGACY_LABEL);
        mac.update(number.as_bytes());
        (sealed, mac.finalize().into_bytes().to_vec())
    }

    /// The first column of every row `sql` answers.
    async fn ids(pool: &PgPool, sql: &str) -> Vec<i64> {
        let client = pool.get().await.unwrap();
        let rows = client.query(sql, &[]).await.unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// A user with a legacy ticket buyer for `number` (schema of V11); (user, ticket buyer).
    async fn legacy_holder(pool: &PgPool, secret: [u8; 32], number: &str) -> (i64, i64) {
        let user = one_id(
            pool,
            "INSERT INTO users (password_hash) VALUES ('x') RETURNING id",
            &[],
        )
        .await;
        let (sealed, hash) = legacy_row(secret, number);
        let holder = one_id(
            pool,
            "INSERT INTO ticket_buyers (user_id, name, id_type, id_number_enc, id_number_hash, id_number_last4)
             VALUES ($1, 'Legacy', 'passport', $2, $3, '0000') RETURNING id",
            &[&user, &sealed, &hash],
        )
        .await;
        (user, holder)
    }

    /// A live one-ticket order of `user` for `program` naming `holder` (the claim trigger runs).
    async fn live_ticket(
        pool: &PgPool,
        n: i64,
        user: i64,
        program: i64,
        holder: i64,
    ) -> Result<i64, tokio_postgres::Error> {
        let order_no = (n << 4) | i64::from(boxoffice::domain::gene(user));
        let client = pool.get().await.unwrap();
        client
            .execute(
                "INSERT INTO orders (order_no, gene, user_id, program_id, status, total_cents, expires_at)
                 VALUES ($1::bigint, ($1::bigint & 15)::smallint, $2, $3, 'pending_payment', 100, now() + interval '15 minutes')",
                &[&order_no, &user, &program],
            )
            .await?;
        client
            .execute(
                "INSERT INTO tickets (order_no, gene, line_no, user_id, program_id, ticket_category_id,
                                      ticket_buyer_id, seat_id, price_cents)
                 VALUES ($1::bigint, ($1::bigint & 15)::smallint, 1, $2, $3, 1, $4, NULL, 100)",
                &[&order_no, &user, &program, &holder],
            )
            .await?;
        Ok(order_no)
    }

    #[tokio::test]
    async fn existing_claims_carry_over_to_persons_and_legacy_rows_are_rekeyed() {
        let (db, pool) = crate::schema::migrated_to(11).await;
        let settings = test_settings(&db.name);
        let secret = settings.secrets.id_number_key_bytes().unwrap();
        let (x, y) = (passport(), passport());
        let (u1, x1) = legacy_holder(&pool, secret, &x).await;
        let (u2, x2) = legacy_holder(&pool, secret, &x).await; // the same person, another account
        let (u3, y3) = legacy_holder(&pool, secret, &y).await;
        let first = live_ticket(&pool, 1, u1, 7, x1).await.unwrap();
        let second = live_ticket(&pool, 2, u2, 7, x2).await.unwrap();
        let kept = live_ticket(&pool, 3, u3, 7, y3).await.unwrap();
        // Spelled otherwise (the old hash did not fold case and spacing): another row of the
        // first account for the same person, and a live claim of the second person.
        let spelled = |n: &str| format!(" {}", n.to_lowercase());
        let (sealed, hash) = legacy_row(secret, &spelled(&x));
        let twin = one_id(
            &pool,
            "INSERT INTO ticket_buyers (user_id, name, id_type, id_number_enc, id_number_hash, id_number_last4)
             VALUES ($1, 'Twin', 'passport', $2, $3, '0000') RETURNING id",
            &[&u1, &sealed, &hash],
        )
        .await;
        let (u5, y5) = legacy_holder(&pool, secret, &spelled(&y)).await;
        let late = live_ticket(&pool, 5, u5, 7, y5).await.unwrap();

        boxoffice::migrate(&pool, &settings).await.unwrap();

        let cipher = IdNumberCipher::new(secret);
        let client = pool.get().await.unwrap();
        let claims: Vec<(i64, i64, Vec<u8>)> = client
            .query("SELECT order_no, ticket_buyer_id, id_number_hash FROM buyer_claims ORDER BY order_no", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            claims,
            [
                (first, x1, cipher.person_hash(&x)),
                (kept, y3, cipher.person_hash(&y))
            ],
            "live claims carried over, keyed by the current hash"
        );
        let aside = ids(
            &pool,
            "SELECT order_no FROM person_claim_conflicts ORDER BY order_no",
        )
        .await;
        assert_eq!(
            aside,
            [second, late],
            "the same person's later live order, for operators"
        );

        let rows = client
            .query("SELECT id, user_id, id_number_enc, id_number_hash, id_key_version FROM ticket_buyers ORDER BY id", &[])
            .await
            .unwrap();
        let retired = ids(
            &pool,
            "SELECT id FROM ticket_buyers WHERE deleted_at IS NOT NULL",
        )
        .await;
        assert_eq!(retired, [twin], "one account, one row per person");
        for (r, number) in rows.iter().zip([&x, &x, &y, &spelled(&x), &spelled(&y)]) {
            assert_eq!(r.get::<_, i16>(4), key_version::CURRENT);
            assert_eq!(r.get::<_, Vec<u8>>(3), cipher.person_hash(number));
            let binding = RowBinding {
                ticket_buyer_id: r.get(0),
                user_id: r.get(1),
                id_type: "passport",
            };
            let opened = cipher
                .open(r.get(2), binding, key_version::CURRENT)
                .unwrap();
            assert_eq!(&opened, number, "re-sealed, bound to its row");
        }
        // A row added now (current scheme) names the same person as the re-keyed claim.
        let u4 = one_id(
            &pool,
            "INSERT INTO users (password_hash) VALUES ('x') RETURNING id",
            &[],
        )
        .await;
        let new_row = boxoffice::store::users::NewTicketBuyer {
            name: "New",
            id_type: "passport",
            id_number: &x,
        };
        let x4 = boxoffice::store::users::ensure_ticket_buyer(&pool, &cipher, u4, new_row)
            .await
            .unwrap();
        let err = live_ticket(&pool, 4, u4, 7, x4)
            .await
            .expect_err("the person holds a live ticket");
        assert_eq!(
            err.as_db_error().and_then(|e| e.constraint()),
            Some("buyer_claims_pkey")
        );
        assert_eq!(
            boxoffice::store::ticket_buyers::rekey_legacy(&pool, &cipher)
                .await
                .unwrap(),
            Default::default(),
            "nothing left to re-key"
        );
    }
}
