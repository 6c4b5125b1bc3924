//! The operators' order lists of a program: its orders with filters and pages, each with its
//! tickets, processing steps (in time order, naming the store each touched) and reconcile
//! status; its discarded orders with their reason and whether their seats were released; and
//! both for admins only.

use crate::helpers::{
    Buyer, TestApp, buyers, code, on_sale, order, order_fact, poll_until, seat_ids,
    signed_in_admin, spawn_app, spawn_app_with,
};
use crate::payments::{act, complete, start_payment, status_once};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// `b` orders one front-row seat of `program`; answers the order number.
async fn seat_order(app: &TestApp, b: &Buyer, program: i64, seat: i64, key: &str) -> String {
    let body = json!({"program_id": program, "ticket_buyer_ids": b.buyers,
        "seats": [{"seat_id": seat, "price_cents": 50_000}]});
    let r = order(app, &b.token, key, &body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["order_no"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `GET /api/v1/admin/programs/{program}/{list}?{query}` as `admin`, which must answer 200.
async fn admin_list(app: &TestApp, admin: &str, program: i64, list: &str, query: &str) -> Value {
    let r = app
        .get_as(
            admin,
            &format!("/api/v1/admin/programs/{program}/{list}?{query}"),
        )
        .await;
    assert_eq!(r.status(), 200, "{list}?{query}");
    r.json().await.unwrap()
}

/// The one order with number `no`, through the list's `order_no` filter.
async fn listed_order(app: &TestApp, admin: &str, program: i64, no: &str) -> Value {
    let page = admin_list(app, admin, program, "orders", &format!("order_no={no}")).await;
    assert_eq!(page["total"], 1, "{page}");
    page["items"][0].clone()
}

fn order_nos(page: &Value) -> BTreeSet<String> {
    let items = page["items"].as_array().unwrap();
    items
        .iter()
        .map(|o| o["order_no"].as_str().unwrap().to_string())
        .collect()
}

fn steps(order: &Value) -> Vec<String> {
    let steps = order["steps"].as_array().unwrap();
    steps
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect()
}

fn time(v: &Value) -> DateTime<Utc> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v} is not a time: {e}"))
}

/// The first step named `name` (with `event_type` if given).
fn step<'a>(order: &'a Value, name: &str, event_type: Option<&str>) -> &'a Value {
    let steps = order["steps"].as_array().unwrap();
    steps
        .iter()
        .find(|s| s["step"] == name && event_type.is_none_or(|t| s["event_type"] == t))
        .unwrap_or_else(|| panic!("no {name} {event_type:?} step in {order}"))
}

fn assert_in_time_order(order: &Value) {
    let times: Vec<DateTime<Utc>> = order["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| time(&s["at"]))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{order}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_lists_a_programs_orders_with_filters_and_pages() {
    let app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 4, 4).await;
    let (elsewhere, _, _) = on_sale(&app, 4, 4).await;
    let crowd = buyers(&app, 3, 1).await;
    let seats = seat_ids(&app, program).await;
    let mut nos = Vec::new();
    for (k, b) in crowd.iter().enumerate() {
        nos.push(seat_order(&app, b, program, seats[k].0, &format!("k{k}")).await);
    }
    let other_seat = seat_ids(&app, elsewhere).await[0].0;
    let other = seat_order(&app, &crowd[0], elsewhere, other_seat, "other").await;
    assert_eq!(
        act(&app, &crowd[1].token, &nos[1], "cancel").await.status(),
        200
    );
    let (_, admin) = signed_in_admin(&app).await;

    let all = admin_list(&app, &admin, program, "orders", "").await;
    assert_eq!(
        (all["total"].clone(), all["page"].clone()),
        (json!(3), json!(1))
    );
    assert_eq!(order_nos(&all), nos.iter().cloned().collect(), "{all}");
    for item in all["items"].as_array().unwrap() {
        assert_eq!(item["program_id"], program);
        assert_eq!(item["total_cents"], 50_000);
        assert!(item["show_time_id"].is_i64() && item["expires_at"].is_string());
        let k = nos.iter().position(|n| item["order_no"] == **n).unwrap();
        let ticket = &item["tickets"][0];
        assert_eq!(
            (ticket["seat_id"].clone(), ticket["price_cents"].clone()),
            (json!(seats[k].0), json!(50_000))
        );
        assert_eq!(ticket["ticket_buyer_id"], crowd[k].buyers[0]);
        let first: Vec<(&str, &str)> = item["steps"].as_array().unwrap()[..3]
            .iter()
            .map(|s| (s["step"].as_str().unwrap(), s["store"].as_str().unwrap()))
            .collect();
        assert_eq!(
            first,
            [
                ("received", "redis"),
                ("reserved", "actor"),
                ("committed", "postgres")
            ]
        );
        assert_eq!(time(&item["steps"][2]["at"]), time(&item["created_at"]));
        assert_in_time_order(item);
    }

    let one = admin_list(&app, &admin, program, "orders", "per_page=2&page=1").await;
    let two = admin_list(&app, &admin, program, "orders", "per_page=2&page=2").await;
    assert_eq!(
        (one["total"].clone(), one["per_page"].clone()),
        (json!(3), json!(2))
    );
    assert_eq!(
        (
            order_nos(&one).len(),
            order_nos(&two).len(),
            two["total"].clone()
        ),
        (2, 1, json!(3))
    );
    assert_eq!(
        order_nos(&one).union(&order_nos(&two)).count(),
        3,
        "pages do not overlap"
    );
    let past = admin_list(&app, &admin, program, "orders", "per_page=2&page=3").await;
    assert_eq!(
        (past["items"].clone(), past["total"].clone()),
        (json!([]), json!(3))
    );

    let buyer_of_third = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["order_no"] == *nos[2])
        .unwrap()["user_id"]
        .clone();
    let mine = admin_list(
        &app,
        &admin,
        program,
        "orders",
        &format!("user_id={buyer_of_third}&status="),
    )
    .await;
    assert_eq!(order_nos(&mine), BTreeSet::from([nos[2].clone()]));
    assert_eq!(
        listed_order(&app, &admin, program, &nos[0]).await["order_no"],
        *nos[0]
    );
    let none = admin_list(
        &app,
        &admin,
        program,
        "orders",
        &format!("order_no={other}"),
    )
    .await;
    assert_eq!(none["total"], 0, "another program's order is not listed");

    let cancelled = admin_list(&app, &admin, program, "orders", "status=cancelled").await;
    assert_eq!(order_nos(&cancelled), BTreeSet::from([nos[1].clone()]));
    let item = &cancelled["items"][0];
    let closed = step(item, "cancelled", None);
    assert_eq!(
        (closed["store"].clone(), time(&closed["at"])),
        (json!("postgres"), time(&item["closed_at"]))
    );
    step(item, "event_recorded", Some("OrderCancelled"));
    let paid = admin_list(&app, &admin, program, "orders", "status=paid").await;
    assert_eq!(paid["total"], 0);
    let bad = app
        .get_as(
            &admin,
            &format!("/api/v1/admin/programs/{program}/orders?status=payed"),
        )
        .await;
    assert_eq!(code(bad).await, (422, "VALIDATION".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_shows_its_steps_in_time_order_and_its_reconcile_status() {
    let app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 4, 4).await;
    let b = buyers(&app, 1, 1).await.remove(0);
    let seat = seat_ids(&app, program).await[3].0;
    let no = seat_order(&app, &b, program, seat, "pay").await;
    let (payment_id, pay_url) = start_payment(&app, &b.token, &no).await;
    complete(&app, &pay_url).await;
    assert_eq!(status_once(&app, &b.token, &no, "paid").await, "paid");
    let (_, admin) = signed_in_admin(&app).await;

    // The relay publishes and MQ bookkeeping consumes both events in the background.
    let item = poll_until(
        Duration::from_secs(15),
        async || listed_order(&app, &admin, program, &no).await,
        |o| {
            o["reconcile_status"] == "reconciled_ok"
                && steps(o).iter().filter(|s| *s == "consumed").count() == 2
        },
    )
    .await;
    assert_eq!(item["reconcile_status"], "reconciled_ok", "{item}");
    assert_eq!(item["status"], "paid");
    assert_in_time_order(&item);
    // The order's own steps in a fixed order; each event's relay and consumer steps follow its
    // recording (when, relative to the payment, depends on the relay's timing).
    let own: Vec<String> = steps(&item)
        .into_iter()
        .filter(|s| s != "published" && s != "consumed")
        .collect();
    let expected = [
        "received",
        "reserved",
        "committed",
        "event_recorded",
        "payment_started",
        "payment_confirmed",
        "paid",
        "event_recorded",
    ];
    assert_eq!(own, expected, "{item}");
    for event in ["OrderCreated", "OrderPaid"] {
        let names = ["event_recorded", "published", "consumed"];
        let at: Vec<usize> = names
            .iter()
            .map(|n| {
                let found = item["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .position(|s| s["step"] == *n && s["event_type"] == event);
                found.unwrap_or_else(|| panic!("no {n} of {event} in {item}"))
            })
            .collect();
        // `published` is when the relay recorded the broker's receipt, which a quick consumer
        // may beat: both follow the recording, in either order.
        assert!(at[0] < at[1] && at[0] < at[2], "{event}: {item}");
    }
    let paid = step(&item, "paid", None);
    assert_eq!(
        (paid["store"].clone(), time(&paid["at"])),
        (json!("postgres"), time(&item["paid_at"]))
    );
    let started = step(&item, "payment_started", None);
    assert_eq!(
        (started["store"].clone(), started["payment_id"].clone()),
        (json!("provider"), json!(payment_id))
    );
    let published = step(&item, "published", Some("OrderPaid"));
    assert_eq!(
        (published["store"].clone(), published["status"].clone()),
        (json!("pulsar"), json!("sent"))
    );
    let consumed = step(&item, "consumed", Some("OrderPaid"));
    assert_eq!(
        (consumed["consumer"].clone(), consumed["status"].clone()),
        (json!("mq-bookkeeping"), json!("ok"))
    );

    // A reconciliation finding about the order counts, the gravest one: an open problem,
    // handled by an operator, then a settled finding about something else.
    let order_no: i64 = no.parse().unwrap();
    let client = app.pg.get().await.unwrap();
    let id: i64 = client
        .query_one(
            "INSERT INTO reconciliation_findings (program_id, order_no, kind, subject, details, status)
             VALUES ($1, $2::bigint, 'payment_order', $2::bigint::text, '{}', 'reconciled_with_problem')
             RETURNING id",
            &[&program, &order_no],
        )
        .await
        .unwrap()
        .get(0);
    let item = listed_order(&app, &admin, program, &no).await;
    assert_eq!(item["reconcile_status"], "reconciled_with_problem");
    client
        .execute(
            "UPDATE reconciliation_findings SET status = 'problem_handled' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO reconciliation_findings (program_id, order_no, kind, subject, details, status)
             VALUES ($1, $2::bigint, 'payment_callback', $2::bigint::text, '{}', 'reconciled_ok')",
            &[&program, &order_no],
        )
        .await
        .unwrap();
    let item = listed_order(&app, &admin, program, &no).await;
    assert_eq!(
        item["reconcile_status"], "problem_handled",
        "a settled finding hides nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_order_shows_expired() {
    let app = spawn_app_with(|s| s.orders.payment_window_secs = 1).await;
    let (program, _, _) = on_sale(&app, 4, 4).await;
    let b = buyers(&app, 1, 1).await.remove(0);
    let seat = seat_ids(&app, program).await[0].0;
    let no = seat_order(&app, &b, program, seat, "late").await;
    let (_, admin) = signed_in_admin(&app).await;
    let fresh = listed_order(&app, &admin, program, &no).await;
    assert_eq!(fresh["status"], "pending_payment");
    assert!(!steps(&fresh).contains(&"expired".to_string()), "{fresh}");
    assert!(fresh.get("closed_at").is_none(), "{fresh}");

    let item = poll_until(
        Duration::from_secs(15),
        async || listed_order(&app, &admin, program, &no).await,
        |o| o["status"] == "expired",
    )
    .await;
    assert_eq!(item["status"], "expired", "{item}");
    let expired = step(&item, "expired", None);
    assert_eq!(
        (expired["store"].clone(), time(&expired["at"])),
        (json!("postgres"), time(&item["closed_at"]))
    );
    assert!(time(&item["closed_at"]) >= time(&item["expires_at"]));
    step(&item, "event_recorded", Some("OrderExpired"));
    assert!(!steps(&item).contains(&"paid".to_string()));
    assert_in_time_order(&item);
    let expired_only = admin_list(&app, &admin, program, "orders", "status=expired").await;
    assert_eq!(order_nos(&expired_only), BTreeSet::from([no]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_order_shows_its_reason_and_whether_its_seats_are_free() {
    let app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 4, 4).await;
    let crowd = buyers(&app, 2, 1).await;
    let seats = seat_ids(&app, program).await;
    let (_, admin) = signed_in_admin(&app).await;
    let empty = admin_list(&app, &admin, program, "discarded-orders", "").await;
    assert_eq!(
        (empty["total"].clone(), empty["items"].clone()),
        (json!(0), json!([]))
    );

    // Postgres refuses every outbox row for a moment: the order took its seat in the actor,
    // could not be written, and is discarded; its seat goes back.
    let client = app.pg.get().await.unwrap();
    client
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'disk on fire' USING ERRCODE = 'XX000'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    let body = json!({"program_id": program, "ticket_buyer_ids": crowd[0].buyers,
        "seats": [{"seat_id": seats[5].0, "price_cents": 50_000}]});
    assert_eq!(
        order(&app, &crowd[0].token, "doomed", &body).await.status(),
        503
    );
    client
        .batch_execute("DROP TRIGGER refuse ON outbox")
        .await
        .unwrap();

    let page = admin_list(&app, &admin, program, "discarded-orders", "").await;
    assert_eq!(page["total"], 1, "{page}");
    let doomed = &page["items"][0];
    assert!(
        doomed["reason"].as_str().unwrap().contains("disk on fire"),
        "{doomed}"
    );
    assert_eq!(doomed["tickets"][0]["seat_id"], seats[5].0);
    assert_eq!(doomed["tickets"][0]["ticket_buyer_id"], crowd[0].buyers[0]);
    assert!(doomed["order_no"].is_string() && doomed["user_id"].is_i64() && doomed["id"].is_i64());
    assert!(doomed["created_at"].is_string());
    assert_eq!(doomed["seats_free"], true);

    // A record whose order number does hold its seat (as if the seat had not been released).
    let no = seat_order(&app, &crowd[1], program, seats[6].0, "kept").await;
    let user: i64 = order_fact(&app, "SELECT user_id FROM orders WHERE order_no = $1", &no).await;
    let tickets = json!([{"ticket_category_id": 0, "ticket_buyer_id": crowd[1].buyers[0],
                          "seat_id": seats[6].0, "price_cents": 50_000}]);
    client
        .execute(
            "INSERT INTO discarded_orders (order_no, user_id, program_id, reason, tickets)
             VALUES ($1, $2, $3, 'test: seats still held', $4)",
            &[&no.parse::<i64>().unwrap(), &user, &program, &tickets],
        )
        .await
        .unwrap();
    let first = admin_list(&app, &admin, program, "discarded-orders", "per_page=1").await;
    assert_eq!(
        (first["total"].clone(), first["per_page"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(first["items"][0]["order_no"], *no, "newest first");
    assert_eq!(first["items"][0]["seats_free"], false, "{first}");
    let second = admin_list(
        &app,
        &admin,
        program,
        "discarded-orders",
        "per_page=1&page=2",
    )
    .await;
    assert_eq!(second["items"][0]["id"], doomed["id"]);
    assert_eq!(second["items"][0]["seats_free"], true);
}

#[tokio::test]
async fn buyers_get_403_and_strangers_401_on_both_lists() {
    let app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 4, 4).await;
    let b = buyers(&app, 1, 1).await.remove(0);
    let (_, admin) = signed_in_admin(&app).await;
    for list in ["orders", "discarded-orders"] {
        let path = format!("/api/v1/admin/programs/{program}/{list}");
        assert_eq!(
            code(app.get_as(&b.token, &path).await).await,
            (403, "FORBIDDEN".into()),
            "{list}"
        );
        assert_eq!(code(app.get(&path).await).await.0, 401, "{list}");
        assert_eq!(app.get_as(&admin, &path).await.status(), 200, "{list}");
    }
}
