//! Order-path correctness: an acknowledged order never falls out of its actor, the actors
//! follow Postgres when it disagrees, and no request can starve the writer.

use crate::helpers::{
    TcpCut, buyers, cancel, code, count, on_sale, order, order_fact, pg_addr, poll_until, seat_ids,
    seat_map, seats_once, signed_in_admin, spawn_app, spawn_app_behind, spawn_app_with,
};
use serde_json::{Value, json};
use std::time::Duration;

/// Seat-map counts of one category: (available, held), read without messaging the actor.
async fn counts(app: &crate::helpers::TestApp, program: i64, category: i64) -> (i64, i64) {
    let map = seat_map(app, program).await;
    let c = map["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == category)
        .unwrap()
        .clone();
    let capacity = if c["seated"] == true {
        c["seats"].as_array().unwrap().len() as i64
    } else {
        30
    };
    let available = c["remaining"].as_i64().unwrap();
    (available, capacity - available)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_commit_answer_was_lost_is_acknowledged_and_stays_held() {
    let proxy = TcpCut::start(pg_addr()).await;
    let app = spawn_app_behind(&proxy, |_| {}).await;
    let (program, _, floor) = on_sale(&app, 4, 8).await;
    let crowd = buyers(&app, 1, 2).await;
    let body = json!({"program_id": program, "ticket_buyer_ids": crowd[0].buyers,
                      "ticket_category_id": floor, "quantity": 2});
    assert_eq!(counts(&app, program, floor).await, (30, 0));
    // Nothing else may commit between arming the trap and the order: wait until the consumers
    // have handled every event so far (the program's creation).
    let settled = poll_until(
        Duration::from_secs(10),
        async || {
            let sql = "SELECT count(*) FROM outbox WHERE reconcile_status = 'unreconciled'";
            count(&app, sql).await
        },
        |n| *n == 0,
    )
    .await;
    assert_eq!(settled, 0);
    // The writer's COMMIT reaches Postgres; its answer never comes back.
    proxy.sever_after_next_commit();
    let r = order(&app, &crowd[0].token, "lost-answer", &body).await;
    assert_eq!(
        r.status(),
        201,
        "Postgres committed the order: it is acknowledged"
    );
    let placed: Value = r.json().await.unwrap();
    let no = placed["order_no"].as_str().unwrap();
    let status: String =
        order_fact(&app, "SELECT status FROM orders WHERE order_no = $1", no).await;
    assert_eq!(status, "pending_payment");
    let seen = poll_until(
        Duration::from_secs(5),
        async || counts(&app, program, floor).await,
        |c| *c == (28, 2),
    )
    .await;
    assert_eq!(seen, (28, 2), "the actor holds what Postgres holds");
    let cancelled = cancel(&app, &crowd[0].token, no).await;
    assert_eq!(cancelled.status(), 200);
    let after: Value = cancelled.json().await.unwrap();
    assert_eq!(after["status"], "cancelled", "the actor knew the order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_postgres_refuses_makes_the_actor_reload_from_postgres() {
    let app = spawn_app().await;
    let (program, front, _) = on_sale(&app, 4, 8).await;
    let crowd = buyers(&app, 2, 1).await;
    let seats = seat_ids(&app, program).await;
    let (taken, _) = seats[0];
    // Another writer took the seat behind the actor's back (its memory is now wrong).
    app.pg
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE seats SET status = 'held', order_no = 42, hold_expires_at = now() + interval '1 hour'
             WHERE id = $1",
            &[&taken],
        )
        .await
        .unwrap();
    let body = json!({"program_id": program, "ticket_buyer_ids": crowd[0].buyers,
                      "seats": [{"seat_id": taken, "price_cents": 50_000}]});
    let r = order(&app, &crowd[0].token, "refused", &body).await;
    assert_eq!(code(r).await, (409, "SEAT_UNAVAILABLE".into()));
    let map = seats_once(&app, program, |s| s[0].1 == "held").await;
    assert_eq!(
        map[0].1, "held",
        "the actor reloaded and now shows Postgres's truth"
    );
    // Best available no longer offers the seat Postgres refuses.
    let best = json!({"program_id": program, "ticket_buyer_ids": crowd[1].buyers,
                      "ticket_category_id": front, "quantity": 1});
    let r = order(&app, &crowd[1].token, "best", &best).await;
    assert_eq!(r.status(), 201);
    let placed: Value = r.json().await.unwrap();
    assert_ne!(placed["tickets"][0]["seat"]["id"], taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_cancels_during_an_order_rush_fails_no_batch() {
    // Two pooled connections for every handler: before the writer had its own, cancels held
    // them while waiting on their actor, whose release waited on the writer for a connection.
    let app = spawn_app_with(|s| {
        s.database.pool_size = 2;
        s.rate_limit.enabled = false;
    })
    .await;
    let (program, _, floor) = on_sale(&app, 1, 2).await;
    let crowd = buyers(&app, 20, 2).await;
    let ga = |b: &crate::helpers::Buyer, i: usize| json!({"program_id": program, "ticket_buyer_ids": [b.buyers[i]], "ticket_category_id": floor, "quantity": 1});
    let mut first = Vec::new();
    // 10 orders now, then 10 cancels racing 20 new orders: 30 tickets, Floor's capacity.
    for (i, b) in crowd.iter().enumerate().take(10) {
        let r = order(&app, &b.token, &format!("first-{i}"), &ga(b, 0)).await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        first.push((b.token.clone(), v["order_no"].as_str().unwrap().to_string()));
    }
    let cancels = first
        .iter()
        .map(|(token, no)| async { cancel(&app, token, no).await.status().as_u16() });
    let (app_ref, ga_ref) = (&app, &ga);
    let orders = crowd.iter().enumerate().map(|(i, b)| {
        let idx = usize::from(i < 10);
        async move {
            let body = ga_ref(b, idx);
            order(app_ref, &b.token, &format!("rush-{i}"), &body)
                .await
                .status()
                .as_u16()
        }
    });
    let (cancelled, placed) = tokio::join!(
        futures::future::join_all(cancels),
        futures::future::join_all(orders)
    );
    assert!(
        cancelled.iter().all(|s| *s == 200),
        "cancels: {cancelled:?}"
    );
    assert!(placed.iter().all(|s| *s == 201), "orders: {placed:?}");
    let discarded: i64 = app
        .pg
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM discarded_orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(discarded, 0, "no batch failed");
}

/// Makes every stored idempotency answer a day and an hour old.
async fn age_keys(client: &deadpool_postgres::Client) {
    client
        .execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'",
            &[],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_past_its_window_starts_a_fresh_order_and_is_purged() {
    let app = spawn_app().await;
    let (program, _, floor) = on_sale(&app, 4, 8).await;
    let crowd = buyers(&app, 1, 2).await;
    let body = |q: usize| json!({"program_id": program, "ticket_buyer_ids": crowd[0].buyers[..q], "ticket_category_id": floor, "quantity": q});
    let r = order(&app, &crowd[0].token, "daily", &body(1)).await;
    assert_eq!(r.status(), 201);
    let first: Value = r.json().await.unwrap();
    let again = order(&app, &crowd[0].token, "daily", &body(2)).await;
    assert_eq!(code(again).await, (422, "IDEMPOTENCY_KEY_REUSED".into()));
    let client = app.pg.get().await.unwrap();
    age_keys(&client).await;
    // The first order is cancelled so its ticket buyer is free again.
    cancel(&app, &crowd[0].token, first["order_no"].as_str().unwrap()).await;
    let fresh = order(&app, &crowd[0].token, "daily", &body(2)).await;
    assert_eq!(fresh.status(), 201, "a day-old key starts a fresh order");
    let fresh: Value = fresh.json().await.unwrap();
    assert_ne!(fresh["order_no"], first["order_no"]);
    age_keys(&client).await;
    let purged = boxoffice::store::idempotency::purge_expired(&app.pg, 86_400.0, 1_000)
        .await
        .unwrap();
    assert_eq!(purged, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_seats_are_refused_when_the_program_assigns_them() {
    let app = spawn_app().await;
    let (_, admin) = signed_in_admin(&app).await;
    let create = json!({
        "title": "Assigned", "area": "Beijing", "category": "Pop", "venue": "Hall", "choose_seats": false,
        "per_order_limit": 2, "per_account_limit": 2, "on_sale_at": chrono::Utc::now() - chrono::Duration::hours(1),
        "show_times": [chrono::Utc::now() + chrono::Duration::days(9)],
        "ticket_categories": [{"name": "Front", "price_cents": 1_000, "rows": 2, "seats_per_row": 3}]
    });
    let r = app
        .post("/api/v1/admin/programs", Some(&admin), &create)
        .await;
    assert_eq!(r.status(), 201);
    let p: Value = r.json().await.unwrap();
    let (program, front) = (
        p["id"].as_i64().unwrap(),
        p["ticket_categories"][0]["id"].as_i64().unwrap(),
    );
    let crowd = buyers(&app, 1, 1).await;
    let seat = seat_ids(&app, program).await[0].0;
    let manual = json!({"program_id": program, "ticket_buyer_ids": crowd[0].buyers,
                        "seats": [{"seat_id": seat, "price_cents": 1_000}]});
    let r = order(&app, &crowd[0].token, "manual", &manual).await;
    assert_eq!(code(r).await, (422, "VALIDATION".into()));
    let best = json!({"program_id": program, "ticket_buyer_ids": crowd[0].buyers,
                      "ticket_category_id": front, "quantity": 1});
    assert_eq!(
        order(&app, &crowd[0].token, "best", &best).await.status(),
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_map_seq_never_goes_backwards_across_a_reload() {
    let app = spawn_app().await;
    let (program, _, floor) = on_sale(&app, 1, 4).await;
    let crowd = buyers(&app, 3, 1).await;
    for (i, b) in crowd.iter().enumerate() {
        let body = json!({"program_id": program, "ticket_buyer_ids": b.buyers, "ticket_category_id": floor, "quantity": 1});
        assert_eq!(
            order(&app, &b.token, &format!("s{i}"), &body)
                .await
                .status(),
            201
        );
    }
    let seq = async |app: &crate::helpers::TestApp| -> u64 {
        let map = seat_map(app, program).await;
        map["seq"].as_u64().unwrap()
    };
    let before = poll_until(
        Duration::from_secs(5),
        async || seq(&app).await,
        |s| *s >= 3,
    )
    .await;
    // A second node loads the same categories afresh: its numbers continue above the first's.
    let sibling = app.spawn_sibling().await;
    let after = seq(&sibling).await;
    assert!(after > before, "seq went from {before} to {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_across_categories_is_all_or_nothing() {
    let app = spawn_app().await;
    let (_, admin) = signed_in_admin(&app).await;
    let create = json!({
        "title": "Two tiers", "area": "Beijing", "category": "Pop", "venue": "Hall",
        "per_order_limit": 4, "per_account_limit": 4, "on_sale_at": chrono::Utc::now() - chrono::Duration::hours(1),
        "show_times": [chrono::Utc::now() + chrono::Duration::days(9)],
        "ticket_categories": [{"name": "A", "price_cents": 1_000, "rows": 1, "seats_per_row": 3},
                              {"name": "B", "price_cents": 2_000, "rows": 1, "seats_per_row": 3}]
    });
    let p: Value = app
        .post("/api/v1/admin/programs", Some(&admin), &create)
        .await
        .json()
        .await
        .unwrap();
    let program = p["id"].as_i64().unwrap();
    let map = seat_map(&app, program).await;
    let seat = |c: usize, i: usize| map["categories"][c]["seats"][i]["id"].as_i64().unwrap();
    let crowd = buyers(&app, 2, 2).await;
    let taken = json!({"program_id": program, "ticket_buyer_ids": [crowd[0].buyers[0]],
                       "seats": [{"seat_id": seat(1, 0), "price_cents": 2_000}]});
    assert_eq!(
        order(&app, &crowd[0].token, "b", &taken).await.status(),
        201
    );
    // A's seat is free, B's is taken: the order fails and A's seat is free again.
    let both = json!({"program_id": program, "ticket_buyer_ids": crowd[1].buyers,
                      "seats": [{"seat_id": seat(0, 0), "price_cents": 1_000}, {"seat_id": seat(1, 0), "price_cents": 2_000}]});
    let r = order(&app, &crowd[1].token, "both", &both).await;
    assert_eq!(code(r).await, (409, "SEAT_UNAVAILABLE".into()));
    let alone = json!({"program_id": program, "ticket_buyer_ids": [crowd[1].buyers[0]],
                       "seats": [{"seat_id": seat(0, 0), "price_cents": 1_000}]});
    assert_eq!(
        order(&app, &crowd[1].token, "alone", &alone).await.status(),
        201,
        "the first category's reservation was rolled back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_show_times_sell_the_same_seat_independently() {
    let app = spawn_app().await;
    let (_, admin) = signed_in_admin(&app).await;
    let day = |d: i64| chrono::Utc::now() + chrono::Duration::days(d);
    let create = json!({
        "title": "Two nights", "area": "Beijing", "category": "Pop", "venue": "Hall",
        "per_order_limit": 2, "per_account_limit": 4, "on_sale_at": day(-1),
        "show_times": [day(9), day(10)],
        "ticket_categories": [{"name": "Front", "price_cents": 1_000, "rows": 2, "seats_per_row": 3}]
    });
    let p: Value = app
        .post("/api/v1/admin/programs", Some(&admin), &create)
        .await
        .json()
        .await
        .unwrap();
    let program = p["id"].as_i64().unwrap();
    let nights: Vec<i64> = p["show_times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    // Row 1, seat 1 of each night: same place in the hall, a different seat to sell.
    let first_seat = |night: i64| {
        let app = &app;
        async move {
            let map: Value = app
                .get(&format!(
                    "/api/v1/programs/{program}/seats?show_time_id={night}"
                ))
                .await
                .json()
                .await
                .unwrap();
            map["categories"][0]["seats"][0]["id"].as_i64().unwrap()
        }
    };
    let (a, b) = (first_seat(nights[0]).await, first_seat(nights[1]).await);
    assert_ne!(a, b);
    let crowd = buyers(&app, 2, 1).await;
    let body = |night: i64, seat: i64, buyer: usize| {
        json!({"program_id": program, "show_time_id": night, "ticket_buyer_ids": crowd[buyer].buyers,
               "seats": [{"seat_id": seat, "price_cents": 1_000}]})
    };
    let without = json!({"program_id": program, "ticket_buyer_ids": crowd[0].buyers,
                         "seats": [{"seat_id": a, "price_cents": 1_000}]});
    let r = order(&app, &crowd[0].token, "no-night", &without).await;
    assert_eq!(
        code(r).await,
        (422, "VALIDATION".into()),
        "two nights: name one"
    );
    let wrong = order(&app, &crowd[0].token, "wrong", &body(nights[1], a, 0)).await;
    assert_eq!(
        code(wrong).await,
        (422, "VALIDATION".into()),
        "a seat of the other night"
    );
    let first = order(&app, &crowd[0].token, "n1", &body(nights[0], a, 0)).await;
    assert_eq!(first.status(), 201);
    let second = order(&app, &crowd[1].token, "n2", &body(nights[1], b, 1)).await;
    assert_eq!(
        second.status(),
        201,
        "the same seat of the other night is still for sale"
    );
    for (r, night) in [(first, nights[0]), (second, nights[1])] {
        let placed: Value = r.json().await.unwrap();
        assert_eq!(placed["show_time_id"], night);
        let no = placed["order_no"].as_str().unwrap();
        let stored: Option<i64> = order_fact(
            &app,
            "SELECT show_time_id FROM orders WHERE order_no = $1",
            no,
        )
        .await;
        assert_eq!(stored, Some(night), "the order says which night it is for");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_show_that_has_started_is_no_longer_sold() {
    let app = spawn_app().await;
    let (program, _, floor) = on_sale(&app, 2, 4).await;
    // Before anything reads (and caches) the program: its only show began an hour ago.
    app.pg
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE show_times SET starts_at = now() - interval '1 hour' WHERE program_id = $1",
            &[&program],
        )
        .await
        .unwrap();
    let crowd = buyers(&app, 1, 1).await;
    let body = json!({"program_id": program, "ticket_buyer_ids": crowd[0].buyers,
                      "ticket_category_id": floor, "quantity": 1});
    let r = order(&app, &crowd[0].token, "late", &body).await;
    assert_eq!(code(r).await, (409, "SHOW_STARTED".into()));
}

/// A cancel that arrives as its order expires either cancels it (200 `cancelled`), finds it
/// gone (409 `NOT_CANCELLABLE`) or mid-expiry (409 `ORDER_BUSY`, retry): never 200 with the
/// order `expired`, which would tell the buyer their cancel happened when it did not (found by
/// the fault suite).
#[tokio::test]
async fn a_cancel_racing_the_expiry_never_answers_200_for_an_expired_order() {
    let app = spawn_app_with(|s| s.orders.payment_window_secs = 1).await;
    let (program, _, floor) = on_sale(&app, 1, 1).await;
    let crowd = buyers(&app, 30, 1).await;
    let mut placed = Vec::new();
    for (i, b) in crowd.iter().enumerate() {
        let body = json!({"program_id": program, "ticket_buyer_ids": b.buyers,
            "ticket_category_id": floor, "quantity": 1});
        let r: Value = order(&app, &b.token, &format!("race-{i}"), &body)
            .await
            .json()
            .await
            .unwrap();
        placed.push((
            std::time::Instant::now(),
            r["order_no"].as_str().unwrap().to_string(),
        ));
    }
    // Each cancel lands somewhere from 150 ms before its order's expiry to 150 ms after.
    let cancels = crowd
        .iter()
        .zip(&placed)
        .enumerate()
        .map(|(i, (b, (at, no)))| {
            let app = &app;
            async move {
                let offset = Duration::from_millis(850 + (i as u64 * 10));
                tokio::time::sleep_until((*at + offset).into()).await;
                let r = cancel(app, &b.token, no).await;
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap();
                let said = body["status"].as_str().or(body["error"]["code"].as_str());
                (status, said.unwrap_or("").to_string())
            }
        });
    let answers = futures::future::join_all(cancels).await;
    let mut seen = std::collections::BTreeMap::new();
    for a in &answers {
        *seen.entry(a.clone()).or_insert(0) += 1;
    }
    println!("cancels around expiry: {seen:?}");
    assert!(
        answers.iter().all(|(s, said)| matches!(
            (*s, said.as_str()),
            (200, "cancelled") | (409, "NOT_CANCELLABLE" | "ORDER_BUSY")
        )),
        "{seen:?}"
    );
}
