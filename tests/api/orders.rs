//! Ordering over HTTP: the full flow, error codes, idempotency, races, limits, expiry, partition
//! pruning. Buyers are created straight in the database with tokens minted by the server's own
//! key (the accounts API has its own tests), so races of hundreds of buyers start fast.

use crate::helpers::{
    buyers, code, on_sale, order, order_fact, poll_until, seat_ids, seats_once, signed_in_admin,
    spawn_app, spawn_app_with,
};
use serde_json::{Value, json};
use std::collections::HashSet;

#[tokio::test]
async fn order_then_cancel_moves_seats_and_shows_everywhere() {
    let app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 4, 4).await;
    let b = &buyers(&app, 1, 2).await[0];
    let seats = seat_ids(&app, program).await;
    let body = json!({"program_id": program, "ticket_buyer_ids": b.buyers,
        "seats": [{"seat_id": seats[0].0, "price_cents": 50_000}, {"seat_id": seats[1].0, "price_cents": 50_000}]});
    let r = order(&app, &b.token, "k1", &body).await;
    assert_eq!(r.status(), 201);
    let placed: Value = r.json().await.unwrap();
    let no = placed["order_no"].as_str().unwrap().to_string();
    assert_eq!(placed["status"], "pending_payment");
    assert_eq!(placed["total_cents"], 100_000);
    assert_eq!(placed["tickets"][0]["seat"]["id"], seats[0].0);

    let after = seats_once(&app, program, |s| s[0].1 == "held" && s[1].1 == "held").await;
    assert_eq!(
        (
            after[0].1.as_str(),
            after[1].1.as_str(),
            after[2].1.as_str()
        ),
        ("held", "held", "available")
    );
    let one: Value = app
        .get_as(&b.token, &format!("/api/v1/orders/{no}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["status"], "pending_payment");
    assert_eq!(one["tickets"].as_array().unwrap().len(), 2);
    let mine: Value = app
        .get_as(&b.token, "/api/v1/orders?status=pending_payment")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"][0]["order_no"], no.as_str());

    let cancelled = crate::helpers::cancel(&app, &b.token, &no).await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(
        cancelled.json::<Value>().await.unwrap()["status"],
        "cancelled"
    );
    let freed = seats_once(&app, program, |s| s.iter().all(|x| x.1 == "available")).await;
    assert!(
        freed.iter().all(|s| s.1 == "available"),
        "cancelled seats return to the map"
    );
    let again = crate::helpers::cancel(&app, &b.token, &no).await;
    assert_eq!(again.status(), 200, "cancelling twice is harmless");
    let events: i64 =
        order_fact(&app, "SELECT count(*) FROM outbox WHERE order_no = $1", &no).await;
    assert_eq!(events, 2, "OrderCreated and OrderCancelled, once each");
}

#[tokio::test]
async fn each_error_code_of_the_orders_section() {
    let app = spawn_app().await;
    let (program, front, floor) = on_sale(&app, 2, 3).await;
    let all = buyers(&app, 2, 3).await;
    let (a, b) = (&all[0], &all[1]);
    let seats = seat_ids(&app, program).await;
    let pick = |i: usize, price: i64| json!({"seat_id": seats[i].0, "price_cents": price});

    let ok = json!({"program_id": program, "ticket_buyer_ids": [a.buyers[0]], "seats": [pick(0, 50_000)]});
    assert_eq!(order(&app, &a.token, "a1", &ok).await.status(), 201);
    let taken = json!({"program_id": program, "ticket_buyer_ids": [b.buyers[0]], "seats": [pick(0, 50_000)]});
    assert_eq!(
        code(order(&app, &b.token, "b1", &taken).await).await,
        (409, "SEAT_UNAVAILABLE".into())
    );
    let price =
        json!({"program_id": program, "ticket_buyer_ids": [b.buyers[0]], "seats": [pick(1, 1)]});
    assert_eq!(
        code(order(&app, &b.token, "b2", &price).await).await,
        (422, "PRICE_MISMATCH".into())
    );
    let too_many = json!({"program_id": program, "ticket_buyer_ids": b.buyers, "ticket_category_id": floor, "quantity": 3});
    assert_eq!(
        code(order(&app, &b.token, "b3", &too_many).await).await,
        (422, "LIMIT_EXCEEDED".into())
    );
    let best_two = json!({"program_id": program, "ticket_buyer_ids": [b.buyers[0], b.buyers[1]], "ticket_category_id": front, "quantity": 2});
    assert_eq!(order(&app, &b.token, "b4", &best_two).await.status(), 201);
    let same_buyer = json!({"program_id": program, "ticket_buyer_ids": [a.buyers[0]], "ticket_category_id": floor, "quantity": 1});
    assert_eq!(
        code(order(&app, &a.token, "a2", &same_buyer).await).await,
        (409, "BUYER_HAS_TICKET".into())
    );
    let not_mine = json!({"program_id": program, "ticket_buyer_ids": [b.buyers[2]], "ticket_category_id": floor, "quantity": 1});
    assert_eq!(
        code(order(&app, &a.token, "a3", &not_mine).await).await,
        (422, "VALIDATION".into())
    );
    let third = json!({"program_id": program, "ticket_buyer_ids": [b.buyers[2]], "ticket_category_id": floor, "quantity": 1});
    assert_eq!(
        code(order(&app, &b.token, "b5", &third).await).await,
        (201, "".into())
    );
    let fourth = buyers(&app, 1, 1).await; // b is at its per-account limit of 3 tickets
    let over = json!({"program_id": program, "ticket_buyer_ids": fourth[0].buyers, "ticket_category_id": floor, "quantity": 1});
    assert_eq!(
        code(order(&app, &fourth[0].token, "c1", &over).await).await,
        (201, "".into()),
        "limits are per account"
    );
    let no_key = app
        .http
        .post(format!("{}/api/v1/orders", app.address))
        .bearer_auth(&a.token)
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(code(no_key).await, (400, "IDEMPOTENCY_KEY_REQUIRED".into()));
    let unknown = json!({"program_id": 999_999, "ticket_buyer_ids": [a.buyers[1]], "ticket_category_id": floor, "quantity": 1});
    assert_eq!(order(&app, &a.token, "a4", &unknown).await.status(), 404);
    assert_eq!(app.get("/api/v1/orders").await.status(), 401);
}

#[tokio::test]
async fn a_tier_sells_out_and_says_so() {
    let app = spawn_app().await;
    let (program, _, floor) = on_sale(&app, 30, 31).await;
    let b = &buyers(&app, 1, 31).await[0];
    let all30 = json!({"program_id": program, "ticket_buyer_ids": b.buyers[..30], "ticket_category_id": floor, "quantity": 30});
    assert_eq!(order(&app, &b.token, "k1", &all30).await.status(), 201);
    let one_more = json!({"program_id": program, "ticket_buyer_ids": [b.buyers[30]], "ticket_category_id": floor, "quantity": 1});
    assert_eq!(
        code(order(&app, &b.token, "k2", &one_more).await).await,
        (409, "SOLD_OUT".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_fifty_times_at_once_makes_one_order_and_replays_byte_for_byte() {
    let app = spawn_app().await;
    let (program, _, floor) = on_sale(&app, 2, 2).await;
    let b = &buyers(&app, 1, 1).await[0];
    let body = json!({"program_id": program, "ticket_buyer_ids": b.buyers, "ticket_category_id": floor, "quantity": 1});
    let answers =
        futures::future::join_all((0..50).map(|_| order(&app, &b.token, "same", &body))).await;
    let mut created = HashSet::new();
    for r in answers {
        match r.status().as_u16() {
            201 => {
                created.insert(r.bytes().await.unwrap());
            }
            409 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created.len(), 1, "every 201 carries the same bytes");
    let replay = order(&app, &b.token, "same", &body).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(
        &replay.bytes().await.unwrap(),
        created.iter().next().unwrap(),
        "replay, byte for byte"
    );
    let other_body = json!({"program_id": program, "ticket_buyer_ids": b.buyers, "ticket_category_id": floor, "quantity": 1, "x": 1});
    assert_eq!(
        code(order(&app, &b.token, "same", &other_body).await).await,
        (422, "IDEMPOTENCY_KEY_REUSED".into())
    );
    let orders: i64 = app
        .pg
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_buyers_race_for_twenty_seats() {
    let app = spawn_app_with(|s| s.rate_limit.enabled = false).await;
    let (program, front, _) = on_sale(&app, 1, 1).await;
    let crowd = buyers(&app, 200, 1).await;
    let answers = futures::future::join_all(crowd.iter().enumerate().map(|(i, b)| {
        let body = json!({"program_id": program, "ticket_buyer_ids": b.buyers, "ticket_category_id": front, "quantity": 1});
        let app = &app;
        async move { code(order(app, &b.token, &format!("race-{i}"), &body).await).await }
    }))
    .await;
    let won = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(won, 20, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(s, c)| *s == 201 || (*s == 409 && c == "SOLD_OUT")),
        "{answers:?}"
    );
    let client = app.pg.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT order_no), (SELECT count(*) FROM seat_claims) FROM seats
             WHERE ticket_category_id = $1 AND status = 'held'",
            &[&front],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (20, 20, 20)
    );
    let map = seats_once(&app, program, |s| s.iter().all(|x| x.1 == "held")).await;
    assert!(
        map.iter().all(|s| s.1 == "held"),
        "the seat map shows all 20 held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_limit_holds_under_concurrent_orders() {
    let app = spawn_app().await;
    let (program, _, floor) = on_sale(&app, 1, 3).await;
    let b = &buyers(&app, 1, 6).await[0];
    let answers = futures::future::join_all(b.buyers.iter().enumerate().map(|(i, holder)| {
        let body = json!({"program_id": program, "ticket_buyer_ids": [holder], "ticket_category_id": floor, "quantity": 1});
        let app = &app;
        async move { code(order(app, &b.token, &format!("lim-{i}"), &body).await).await }
    }))
    .await;
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 201).count(),
        3,
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|(s, c)| *s == 201 || c == "LIMIT_EXCEEDED"),
        "{answers:?}"
    );
    let path = format!("/api/v1/programs/{program}");
    let remaining = poll_until(
        std::time::Duration::from_secs(5),
        async || {
            app.get(&path).await.json::<Value>().await.unwrap()["ticket_categories"][1]["remaining"]
                .clone()
        },
        |r| *r == 27,
    )
    .await;
    assert_eq!(remaining, 27, "refused orders gave their tickets back");
}

#[tokio::test]
async fn another_users_order_is_404_and_an_admin_sees_it() {
    let app = spawn_app().await;
    let (program, _, floor) = on_sale(&app, 2, 2).await;
    let all = buyers(&app, 2, 1).await;
    let body = json!({"program_id": program, "ticket_buyer_ids": all[0].buyers, "ticket_category_id": floor, "quantity": 1});
    let placed: Value = order(&app, &all[0].token, "k", &body)
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/api/v1/orders/{}", placed["order_no"].as_str().unwrap());
    assert_eq!(app.get_as(&all[1].token, &path).await.status(), 404);
    let cancel = app
        .post(&format!("{path}/cancel"), Some(&all[1].token), &json!({}))
        .await;
    assert_eq!(cancel.status(), 404);
    let (_, admin) = signed_in_admin(&app).await;
    assert_eq!(app.get_as(&admin, &path).await.status(), 200);
    assert_eq!(
        app.get_as(&all[0].token, "/api/v1/orders/not-a-number")
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn an_unpaid_order_expires_and_its_seats_return() {
    let app = spawn_app_with(|s| s.orders.payment_window_secs = 1).await;
    let (program, _, _) = on_sale(&app, 2, 2).await;
    let b = &buyers(&app, 1, 1).await[0];
    let seats = seat_ids(&app, program).await;
    let body = json!({"program_id": program, "ticket_buyer_ids": b.buyers, "seats": [{"seat_id": seats[3].0, "price_cents": 50_000}]});
    let placed: Value = order(&app, &b.token, "k", &body)
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/api/v1/orders/{}", placed["order_no"].as_str().unwrap());
    let status = poll_until(
        std::time::Duration::from_secs(6),
        async || {
            app.get_as(&b.token, &path)
                .await
                .json::<Value>()
                .await
                .unwrap()["status"]
                .clone()
        },
        |s| *s == "expired",
    )
    .await;
    assert_eq!(status, "expired");
    let map = seats_once(&app, program, |s| s[3].1 == "available").await;
    assert_eq!(map[3].1, "available");
}

#[tokio::test]
async fn lookups_by_order_number_and_by_user_touch_one_partition() {
    let app = spawn_app().await;
    let client = app.pg.get().await.unwrap();
    for (sql, param) in [
        (
            "EXPLAIN SELECT * FROM orders WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1",
            1_234_567_i64,
        ),
        (
            "EXPLAIN SELECT * FROM orders WHERE gene = ($1::bigint & 15)::smallint AND user_id = $1",
            42_i64,
        ),
        (
            "EXPLAIN SELECT * FROM tickets WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1",
            1_234_567_i64,
        ),
    ] {
        let plan: Vec<String> = client
            .query(sql, &[&param])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let text = plan.join("\n");
        let partitions: HashSet<&str> = text
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| {
                (w.starts_with("orders_g") || w.starts_with("tickets_g"))
                    && w[w.find("_g").unwrap() + 2..]
                        .chars()
                        .all(|c| c.is_ascii_digit())
            })
            .collect();
        assert_eq!(partitions.len(), 1, "{sql}\n{text}");
    }
}

#[tokio::test]
async fn a_failed_commit_answers_503_releases_the_seats_and_records_a_discarded_order() {
    let app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 2, 2).await;
    let b = &buyers(&app, 1, 1).await[0];
    let seats = seat_ids(&app, program).await;
    // Postgres refuses every outbox row for a while: the order's transaction cannot commit.
    app.pg
        .get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'disk on fire' USING ERRCODE = 'XX000'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    let body = json!({"program_id": program, "ticket_buyer_ids": b.buyers, "seats": [{"seat_id": seats[5].0, "price_cents": 50_000}]});
    let r = order(&app, &b.token, "doomed", &body).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(code(r).await.1, "ORDER_NOT_DURABLE");

    let client = app.pg.get().await.unwrap();
    let discarded = client
        .query_one("SELECT reason, tickets FROM discarded_orders", &[])
        .await
        .unwrap();
    assert!(discarded.get::<_, String>(0).contains("disk on fire"));
    assert_eq!(discarded.get::<_, Value>(1)[0]["seat_id"], seats[5].0);
    let orders: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 0);

    client
        .batch_execute("DROP TRIGGER refuse ON outbox")
        .await
        .unwrap();
    let retry = order(&app, &b.token, "doomed", &body).await;
    assert_eq!(
        retry.status(),
        201,
        "the seat was released and the key not spent"
    );
}
