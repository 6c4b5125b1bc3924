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
