//! The Redis mirror, the inventory view and the reconciler: after a sale all three stores agree;
//! a corrupted mirror is rewritten by itself, a corrupted seat row is raised and restored from its
//! order, an actor that disagrees with Postgres is raised and reloaded, a lost paid callback is
//! found and applied; operators resolve problems; buyers see none of it.

use crate::helpers::{
    TestApp, buyers, on_sale, order, poll_until, seat_ids, signed_in_admin, spawn_app_with,
};
use crate::payments::{complete, start_payment};
use boxoffice::config::Settings;
use boxoffice::store::RedisStore;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Continuous passes often enough that a test sees one within a second.
fn fast_reconciler(s: &mut Settings) {
    s.reconcile.interval_ms = 300;
    s.reconcile.confirm_ms = 100;
}

async fn inventory(app: &TestApp, admin: &str, program: i64) -> Value {
    let r = app
        .get_as(
            admin,
            &format!("/api/v1/admin/programs/{program}/inventory"),
        )
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn findings(app: &TestApp, admin: &str) -> Vec<Value> {
    let r = app
        .get_as(admin, "/api/v1/admin/reconciliations?per_page=200")
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["items"].as_array().unwrap().clone()
}

/// The finding of `kind` about `subject`, once a pass has recorded it (or None after `within`).
async fn finding(
    app: &TestApp,
    admin: &str,
    kind: &str,
    subject: &str,
    within: Duration,
) -> Option<Value> {
    let found = poll_until(
        within,
        async || findings(app, admin).await,
        |items| {
            items
                .iter()
                .any(|f| f["kind"] == kind && f["subject"] == subject)
        },
    )
    .await;
    found
        .into_iter()
        .find(|f| f["kind"] == kind && f["subject"] == subject)
}

/// Two seated orders (seats 0 and 1 of Front) and a GA order of 2; answers the seats' ids and
/// the order numbers.
async fn a_sale(app: &TestApp, program: i64, floor: i64) -> (Vec<i64>, Vec<String>) {
    let crowd = buyers(app, 3, 2).await;
    let seats: Vec<i64> = seat_ids(app, program).await.iter().map(|s| s.0).collect();
    let mut orders = Vec::new();
    for (i, b) in crowd[..2].iter().enumerate() {
        let body = json!({"program_id": program, "ticket_buyer_ids": [b.buyers[0]],
            "seats": [{"seat_id": seats[i], "price_cents": 50_000}]});
        let r = order(app, &b.token, &format!("s{i}"), &body).await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        orders.push(v["order_no"].as_str().unwrap().to_string());
    }
    let ga = json!({"program_id": program, "ticket_buyer_ids": crowd[2].buyers,
        "ticket_category_id": floor, "quantity": 2});
    assert_eq!(order(app, &crowd[2].token, "ga", &ga).await.status(), 201);
    (seats, orders)
}

/// The inventory view once every category is consistent (the mirror is written a coalescing
/// window after each commit).
async fn consistent_inventory(app: &TestApp, admin: &str, program: i64) -> Value {
    poll_until(
        Duration::from_secs(5),
        async || inventory(app, admin, program).await,
        |v| v["consistent"] == true,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sale_the_actor_postgres_and_the_mirror_agree() {
    let app = spawn_app_with(|s| s.reconcile.interval_ms = 0).await;
    let (_, admin) = signed_in_admin(&app).await;
    let (program, front, floor) = on_sale(&app, 4, 4).await;
    a_sale(&app, program, floor).await;
    let view = consistent_inventory(&app, &admin, program).await;
    assert_eq!(view["consistent"], true, "{view}");
    let cats = view["categories"].as_array().unwrap();
    let by_id = |id: i64| cats.iter().find(|c| c["ticket_category_id"] == id).unwrap();
    let expected = json!({"available": 18, "held": 2, "sold": 0});
    for store in ["actor", "postgres", "redis"] {
        assert_eq!(by_id(front)[store], expected, "front, {store}: {view}");
    }
    let ga = json!({"available": 28, "held": 2, "sold": 0});
    for store in ["actor", "postgres", "redis"] {
        assert_eq!(by_id(floor)[store], ga, "floor, {store}: {view}");
    }
    assert_eq!(by_id(front)["capacity"], 20);
    assert!(
        by_id(front)["differing_seats"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let with_seats = app
        .get_as(
            &admin,
            &format!("/api/v1/admin/programs/{program}/inventory?seats=true"),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let listed = with_seats["categories"][0]["seats"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(listed, 20, "every seat with ?seats=true");
}

async fn corrupt_mirror(app: &TestApp, category: i64, seat: i64, status: &str) {
    let redis = RedisStore::connect(&app.settings.redis).await.unwrap();
    let key = redis.key(&format!("mirror:{category}:seats"));
    let _: () =
        fred::interfaces::HashesInterface::hset(redis.client(), key, (seat.to_string(), status))
            .await
            .unwrap();
}

async fn execute(app: &TestApp, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) {
    app.pg
        .get()
        .await
        .unwrap()
        .execute(sql, params)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_mirror_is_rewritten_and_a_corrupted_seat_row_raised_and_restored() {
    let app = spawn_app_with(fast_reconciler).await;
    let (admin_id, admin) = signed_in_admin(&app).await;
    let (program, front, floor) = on_sale(&app, 4, 4).await;
    let (seats, _) = a_sale(&app, program, floor).await;
    consistent_inventory(&app, &admin, program).await;
    corrupt_mirror(&app, front, seats[5], "sold").await;
    execute(
        &app,
        "UPDATE seats SET status = 'available', order_no = NULL, hold_expires_at = NULL WHERE id = $1",
        &[&seats[0]],
    )
    .await;
    let injected = Instant::now();
    let row = finding(
        &app,
        &admin,
        "seat_row",
        &format!("seat:{}", seats[0]),
        Duration::from_secs(2),
    )
    .await;
    let mirror = finding(
        &app,
        &admin,
        "redis_mirror",
        &format!("category:{front}"),
        Duration::from_secs(2),
    )
    .await;
    assert!(
        injected.elapsed() < Duration::from_secs(2),
        "both found within 2 s"
    );
    let row = row.expect("the seat row is raised");
    assert_eq!(row["status"], "reconciled_with_problem", "{row}");
    assert_eq!(
        row["repair"], "seat row restored from its order's claim",
        "{row}"
    );
    assert_eq!(row["details"]["postgres"], "available");
    assert_eq!(row["details"]["order_says"], "held");
    let mirror = mirror.expect("the mirror is repaired");
    assert_eq!(mirror["status"], "reconciled_ok", "{mirror}");
    let view = consistent_inventory(&app, &admin, program).await;
    assert_eq!(view["consistent"], true, "repaired: {view}");
    // An operator resolves the raised problem; it is audit-logged.
    let id = row["id"].as_i64().unwrap();
    let path = format!("/api/v1/admin/reconciliations/{id}/handled");
    let r = app
        .post(
            &path,
            Some(&admin),
            &json!({"note": "a manual UPDATE; reverted"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let handled: Value = r.json().await.unwrap();
    assert_eq!(handled["status"], "problem_handled");
    assert_eq!(
        app.post(&path, Some(&admin), &json!({"note": "again"}))
            .await
            .status(),
        404
    );
    let audited: i64 = app.pg.get().await.unwrap()
        .query_one("SELECT count(*) FROM admin_audit_log WHERE admin_user_id = $1 AND action = 'reconciliation.handled'", &[&admin_id])
        .await.unwrap().get(0);
    assert_eq!(audited, 1);
    let listed = app
        .get_as(
            &admin,
            "/api/v1/admin/reconciliations?status=problem_handled",
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(listed["total"], 1, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_that_disagrees_with_postgres_is_raised_and_reloaded() {
    let app = spawn_app_with(fast_reconciler).await;
    let (_, admin) = signed_in_admin(&app).await;
    let (program, front, floor) = on_sale(&app, 4, 4).await;
    let (seats, orders) = a_sale(&app, program, floor).await;
    consistent_inventory(&app, &admin, program).await;
    // Postgres alone closes the first order (consistently: claims dropped by the trigger, seat
    // row freed); the actor still holds the seat.
    let no: i64 = orders[0].parse().unwrap();
    execute(&app, "UPDATE orders SET status = 'cancelled', closed_at = now() WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1", &[&no]).await;
    execute(
        &app,
        "UPDATE seats SET status = 'available', order_no = NULL, hold_expires_at = NULL WHERE id = $1",
        &[&seats[0]],
    )
    .await;
    let found = finding(
        &app,
        &admin,
        "actor_seats",
        &format!("category:{front}"),
        Duration::from_secs(2),
    )
    .await
    .expect("the actor's disagreement is raised");
    assert_eq!(found["status"], "reconciled_with_problem", "{found}");
    assert_eq!(found["repair"], "actor reloaded from Postgres");
    assert_eq!(found["details"]["seats"][0]["actor"], "held", "{found}");
    let view = consistent_inventory(&app, &admin, program).await;
    let front_view = &view["categories"][0];
    assert_eq!(front_view["actor"]["held"], 1, "reloaded: {view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_paid_callback_was_dropped_is_found_and_paid() {
    let app = spawn_app_with(|s| {
        fast_reconciler(s);
        s.reconcile.callback_grace_secs = 0;
        s.payments.mockpay.drop_callbacks = true;
    })
    .await;
    let (_, admin) = signed_in_admin(&app).await;
    let (program, _, floor) = on_sale(&app, 4, 4).await;
    let b = &buyers(&app, 1, 1).await[0];
    let ga = json!({"program_id": program, "ticket_buyer_ids": b.buyers, "ticket_category_id": floor, "quantity": 1});
    let r = order(&app, &b.token, "paid", &ga).await;
    let no = r.json::<Value>().await.unwrap()["order_no"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, pay_url) = start_payment(&app, &b.token, &no).await;
    complete(&app, &pay_url).await;
    let found = finding(
        &app,
        &admin,
        "payment_callback",
        &format!("order:{no}"),
        Duration::from_secs(5),
    )
    .await
    .expect("the lost callback is found");
    assert_eq!(found["status"], "reconciled_ok");
    assert_eq!(
        found["repair"],
        "paid callback applied from the provider's trade query"
    );
    let status: String = app
        .pg
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT status FROM orders WHERE order_no = $1",
            &[&no.parse::<i64>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "paid");
    let view = consistent_inventory(&app, &admin, program).await;
    assert_eq!(view["categories"][1]["postgres"]["sold"], 1, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_pass_reports_its_cost_and_buyers_are_refused_everywhere() {
    let app = spawn_app_with(|s| s.reconcile.interval_ms = 0).await;
    let (_, admin) = signed_in_admin(&app).await;
    let (program, _, floor) = on_sale(&app, 4, 4).await;
    a_sale(&app, program, floor).await;
    let path = format!("/api/v1/admin/reconciliations/run?program_id={program}");
    let r = app.post(&path, Some(&admin), &json!({})).await;
    assert_eq!(r.status(), 200);
    let pass: Value = r.json().await.unwrap();
    assert_eq!(pass["trigger"], "on_demand");
    assert_eq!(pass["categories"], 2, "{pass}");
    assert_eq!(pass["seats"], 20, "{pass}");
    assert!(pass["duration_ms"].as_f64().unwrap() > 0.0);
    let runs: i64 = app
        .pg
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM reconciliation_runs WHERE trigger = 'on_demand'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
    let buyer = &buyers(&app, 1, 1).await[0];
    let inventory = format!("/api/v1/admin/programs/{program}/inventory");
    for (get, path) in [
        (true, inventory.as_str()),
        (true, "/api/v1/admin/reconciliations"),
        (false, path.as_str()),
        (false, "/api/v1/admin/reconciliations/1/handled"),
    ] {
        let as_buyer = match get {
            true => app.get_as(&buyer.token, path).await,
            false => {
                app.post(path, Some(&buyer.token), &json!({"note": "x"}))
                    .await
            }
        };
        assert_eq!(as_buyer.status(), 403, "{path}");
        let anonymous = match get {
            true => app.get(path).await,
            false => app.post(path, None, &json!({"note": "x"})).await,
        };
        assert_eq!(anonymous.status(), 401, "{path}");
    }
    // An order event nobody consumed in time is raised with the rest.
    execute(
        &app,
        "INSERT INTO outbox (event_id, topic, message_key, event_type, order_no, program_id, payload, reconcile_status)
         VALUES (gen_random_uuid(), 'order-events', '9', 'OrderCreated', 9, $1, '{}', 'problem')",
        &[&program],
    )
    .await;
    let r = app.post(&path, Some(&admin), &json!({})).await;
    assert_eq!(r.json::<Value>().await.unwrap()["findings"], 1);
    let raised = findings(&app, &admin).await;
    assert!(
        raised
            .iter()
            .any(|f| f["kind"] == "mq_message" && f["status"] == "reconciled_with_problem"),
        "{raised:?}"
    );
    let bad = app
        .get_as(&admin, "/api/v1/admin/reconciliations?status=whatever")
        .await;
    assert_eq!(bad.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sale_is_never_mistaken_for_a_divergence() {
    let app = spawn_app_with(|s| {
        fast_reconciler(s);
        s.rate_limit.enabled = false;
    })
    .await;
    let (_, admin) = signed_in_admin(&app).await;
    let (program, _, floor) = on_sale(&app, 4, 4).await;
    let crowd = buyers(&app, 6, 1).await;
    // Six buyers order and cancel, over and over, for three seconds: about ten passes run
    // while holds, releases and mirror notes are in flight.
    let until = Instant::now() + Duration::from_secs(3);
    let churn = crowd.iter().enumerate().map(|(i, b)| {
        let app = &app;
        async move {
            let mut n = 0;
            while Instant::now() < until {
                let ga = json!({"program_id": program, "ticket_buyer_ids": b.buyers,
                    "ticket_category_id": floor, "quantity": 1});
                let r = order(app, &b.token, &format!("churn-{i}-{n}"), &ga).await;
                assert_eq!(r.status(), 201);
                let no = r.json::<Value>().await.unwrap()["order_no"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let cancelled = crate::payments::act(app, &b.token, &no, "cancel").await;
                assert!(cancelled.status().is_success(), "{}", cancelled.status());
                n += 1;
            }
            n
        }
    });
    let rounds: Vec<i32> = futures::future::join_all(churn).await;
    assert!(
        rounds.iter().sum::<i32>() > 12,
        "the sale was busy: {rounds:?}"
    );
    let passes: i64 = app
        .pg
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM reconciliation_runs", &[])
        .await
        .unwrap()
        .get(0);
    assert!(passes >= 3, "passes ran during the sale: {passes}");
    let found = findings(&app, &admin).await;
    assert!(
        found.is_empty(),
        "nothing diverged, nothing found: {found:?}"
    );
    consistent_inventory(&app, &admin, program).await;
}
