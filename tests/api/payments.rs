//! Payment over HTTP against the mock provider, running on a port of its own as a third party
//! does: the full flow, duplicated / dropped / delayed callbacks, forged notices, late payments
//! and refunds, one open bill per order, and the error codes.

use crate::helpers::{
    Buyer, TestApp, buyers, code, on_sale, order, order_fact, poll_until, seat_ids, seat_map,
    seats_once, spawn_app, spawn_app_with,
};
use boxoffice::payments::mockpay::{SIGNATURE_HEADER, sign};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::Duration;

/// A placed order of two front-row seats: (buyer, order number, its path).
pub(crate) async fn two_seat_order(app: &TestApp, program: i64) -> (Buyer, String) {
    let b = buyers(app, 1, 2).await.remove(0);
    let seats = seat_ids(app, program).await;
    let body = json!({"program_id": program, "ticket_buyer_ids": b.buyers,
        "seats": [{"seat_id": seats[0].0, "price_cents": 50_000}, {"seat_id": seats[1].0, "price_cents": 50_000}]});
    let r = order(app, &b.token, "k", &body).await;
    assert_eq!(r.status(), 201);
    let no = r.json::<Value>().await.unwrap()["order_no"]
        .as_str()
        .unwrap()
        .to_string();
    (b, no)
}

/// A program on sale and a fresh buyer's two-seat order with an open mockpay payment.
pub(crate) struct Checkout {
    pub program: i64,
    pub buyer: Buyer,
    pub no: String,
    pub payment_id: String,
    pub pay_url: String,
}

pub(crate) async fn checkout(app: &TestApp) -> Checkout {
    let (program, _, _) = on_sale(app, 4, 4).await;
    let (buyer, no) = two_seat_order(app, program).await;
    let (payment_id, pay_url) = start_payment(app, &buyer.token, &no).await;
    Checkout {
        program,
        buyer,
        no,
        payment_id,
        pay_url,
    }
}

/// Opens a mockpay payment: (payment id, pay URL).
pub(crate) async fn start_payment(app: &TestApp, token: &str, no: &str) -> (String, String) {
    let path = format!("/api/v1/orders/{no}/payments");
    let r = app
        .post(&path, Some(token), &json!({"channel": "mockpay"}))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let p: Value = r.json().await.unwrap();
    (
        p["payment_id"].as_str().unwrap().to_string(),
        p["pay_url"].as_str().unwrap().to_string(),
    )
}

/// The buyer presses "pay" on the provider's checkout page.
pub(crate) async fn complete(app: &TestApp, pay_url: &str) -> Value {
    let r = app
        .http
        .post(format!("{pay_url}/complete"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// `POST /api/v1/orders/{no}/{action}` (refund, pay-check, cancel) as `token`.
pub(crate) async fn act(app: &TestApp, token: &str, no: &str, action: &str) -> reqwest::Response {
    let path = format!("/api/v1/orders/{no}/{action}");
    app.post(&path, Some(token), &json!({})).await
}

/// The provider's own view of the trade (a signed merchant query, as pay-check makes).
pub(crate) async fn trade(app: &TestApp, payment_id: &str) -> Value {
    let path = format!("/mockpay/api/trades/{payment_id}");
    app.provider_call(&path, None).await.json().await.unwrap()
}

/// The provider's count of acknowledged callbacks, once it reaches `n` (or after 10 s).
async fn deliveries_once(app: &TestApp, payment_id: &str, n: i64) -> Option<i64> {
    poll_until(
        Duration::from_secs(10),
        async || trade(app, payment_id).await["callbacks_delivered"].as_i64(),
        |d| *d == Some(n),
    )
    .await
}

pub(crate) async fn status(app: &TestApp, token: &str, no: &str) -> String {
    let order: Value = app
        .get_as(token, &format!("/api/v1/orders/{no}"))
        .await
        .json()
        .await
        .unwrap();
    order["status"].as_str().unwrap_or_default().to_string()
}

pub(crate) async fn status_once(app: &TestApp, token: &str, no: &str, wanted: &str) -> String {
    poll_until(
        Duration::from_secs(10),
        async || status(app, token, no).await,
        |s| s == wanted,
    )
    .await
}

const PAID_EVENTS: &str =
    "SELECT count(*) FROM outbox WHERE order_no = $1 AND event_type = 'OrderPaid'";
const REFUNDS: &str = "SELECT count(*) FROM refunds WHERE order_no = $1";
const REFUNDS_DONE: &str =
    "SELECT count(*) FROM refunds WHERE order_no = $1 AND status = 'succeeded'";

#[tokio::test]
async fn pay_then_refund_moves_the_order_and_its_seats() {
    let app = spawn_app().await;
    let Checkout {
        program,
        buyer: b,
        no,
        payment_id,
        pay_url,
        ..
    } = checkout(&app).await;
    let checkout_at = format!("{}/mockpay/checkout/", app.provider_url());
    assert!(pay_url.starts_with(&checkout_at), "{pay_url}");
    let page = app.http.get(&pay_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.unwrap().contains("1000.00"),
        "the checkout page shows the amount"
    );

    assert_eq!(
        complete(&app, &pay_url).await["trade_status"],
        "TRADE_SUCCESS"
    );
    assert_eq!(status_once(&app, &b.token, &no, "paid").await, "paid");
    let map = seats_once(&app, program, |s| s[0].1 == "sold" && s[1].1 == "sold").await;
    assert_eq!(
        (map[0].1.as_str(), map[1].1.as_str(), map[2].1.as_str()),
        ("sold", "sold", "available")
    );
    assert_eq!(order_fact::<i64>(&app, PAID_EVENTS, &no).await, 1);
    let sold_rows = "SELECT count(*) FROM seats WHERE order_no = $1 AND status = 'sold'";
    assert_eq!(order_fact::<i64>(&app, sold_rows, &no).await, 2);

    let r = act(&app, &b.token, &no, "refund").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "refunded");
    let map = seats_once(&app, program, |s| {
        s[0].1 == "available" && s[1].1 == "available"
    })
    .await;
    assert_eq!(
        (map[0].1.as_str(), map[1].1.as_str()),
        ("available", "available")
    );
    assert_eq!(order_fact::<i64>(&app, REFUNDS_DONE, &no).await, 1);
    assert_eq!(trade(&app, &payment_id).await["trade_status"], "REFUNDED");
    let again = act(&app, &b.token, &no, "refund").await;
    assert_eq!(again.status(), 200, "refunding twice is harmless");
    assert_eq!(order_fact::<i64>(&app, REFUNDS, &no).await, 1);
}

#[tokio::test]
async fn a_general_admission_order_is_paid_and_refunded_with_its_counter() {
    let app = spawn_app().await;
    let (program, _, floor) = on_sale(&app, 4, 4).await;
    let b = buyers(&app, 1, 3).await.remove(0);
    let no = ga_order(&app, &b, program, floor, 3).await;
    let (_, pay_url) = start_payment(&app, &b.token, &no).await;
    complete(&app, &pay_url).await;
    assert_eq!(status_once(&app, &b.token, &no, "paid").await, "paid");
    let sold = "SELECT count(*) FROM ga_holds WHERE order_no = $1 AND status = 'sold'";
    assert_eq!(order_fact::<i64>(&app, sold, &no).await, 1);
    let r = act(&app, &b.token, &no, "refund").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        order_fact::<i64>(&app, GA_TAKEN, &no).await,
        0,
        "the refunded tickets are back in the pool"
    );
    assert_eq!(
        remaining_once(&app, program, 30).await,
        Some(30),
        "the seat map counts them available again"
    );
}

/// A placed general-admission order of `quantity` tickets in `category`: its number.
async fn ga_order(app: &TestApp, b: &Buyer, program: i64, category: i64, quantity: u32) -> String {
    let body = json!({"program_id": program, "ticket_buyer_ids": b.buyers, "ticket_category_id": category, "quantity": quantity});
    let placed: Value = order(app, &b.token, "ga", &body)
        .await
        .json()
        .await
        .unwrap();
    placed["order_no"].as_str().unwrap().to_string()
}

/// `ga_taken` of the general-admission category the order's tickets are in.
const GA_TAKEN: &str = "SELECT ga_taken::bigint FROM ticket_categories WHERE id = (SELECT ticket_category_id FROM tickets WHERE order_no = $1 LIMIT 1)";

/// The seat map's `remaining` of the program's general-admission category (the second), once it
/// reads `wanted` (or after 5 s).
async fn remaining_once(app: &TestApp, program: i64, wanted: i64) -> Option<i64> {
    poll_until(
        Duration::from_secs(5),
        async || {
            let map = seat_map(app, program).await;
            map["categories"][1]["remaining"].as_i64()
        },
        |r| *r == Some(wanted),
    )
    .await
}

#[tokio::test]
async fn a_duplicated_callback_is_applied_once() {
    let app = spawn_app_with(|s| s.payments.mockpay.duplicate_callbacks = true).await;
    let Checkout {
        buyer: b,
        no,
        payment_id,
        pay_url,
        ..
    } = checkout(&app).await;
    complete(&app, &pay_url).await;
    let delivered = deliveries_once(&app, &payment_id, 2).await;
    assert_eq!(
        delivered,
        Some(2),
        "both copies reached the notify endpoint and got 2xx"
    );
    assert_eq!(status(&app, &b.token, &no).await, "paid");
    assert_eq!(
        order_fact::<i64>(&app, PAID_EVENTS, &no).await,
        1,
        "paid once"
    );
    assert_eq!(order_fact::<i64>(&app, REFUNDS, &no).await, 0);
}

#[tokio::test]
async fn a_dropped_callback_is_found_by_pay_check() {
    let app = spawn_app_with(|s| s.payments.mockpay.drop_callbacks = true).await;
    let Checkout {
        program,
        buyer: b,
        no,
        payment_id,
        pay_url,
        ..
    } = checkout(&app).await;
    complete(&app, &pay_url).await;
    assert_eq!(
        trade(&app, &payment_id).await["trade_status"],
        "TRADE_SUCCESS"
    );
    assert_eq!(
        status(&app, &b.token, &no).await,
        "pending_payment",
        "no callback came"
    );

    let r = act(&app, &b.token, &no, "pay-check").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "paid");
    let map = seats_once(&app, program, |s| s[0].1 == "sold").await;
    assert_eq!(map[0].1, "sold");
    assert_eq!(trade(&app, &payment_id).await["callbacks_delivered"], 0);
}

#[tokio::test]
async fn a_delayed_callback_after_pay_check_changes_nothing() {
    let app = spawn_app_with(|s| s.payments.mockpay.callback_delay_ms = 1_000).await;
    let Checkout {
        buyer: b,
        no,
        payment_id,
        pay_url,
        ..
    } = checkout(&app).await;
    complete(&app, &pay_url).await;
    let r = act(&app, &b.token, &no, "pay-check").await;
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "paid");
    let delivered = deliveries_once(&app, &payment_id, 1).await;
    assert_eq!(
        delivered,
        Some(1),
        "the late callback arrived and was acknowledged"
    );
    assert_eq!(order_fact::<i64>(&app, PAID_EVENTS, &no).await, 1);
    assert_eq!(status(&app, &b.token, &no).await, "paid");
}

/// A notice for the bill as mockpay would send it.
pub(crate) fn notice(payment_id: &str, amount_cents: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({"out_trade_no": payment_id, "trade_no": "MPforged",
        "total_amount_cents": amount_cents, "trade_status": "TRADE_SUCCESS",
        "paid_at": "2026-11-22T00:00:00Z"}))
    .unwrap()
}

pub(crate) async fn notify(
    app: &TestApp,
    body: Vec<u8>,
    signature: Option<String>,
) -> reqwest::Response {
    let mut req = app
        .http
        .post(format!("{}/api/v1/payments/notify/mockpay", app.address))
        .header("content-type", "application/json")
        .body(body);
    if let Some(sig) = signature {
        req = req.header(SIGNATURE_HEADER, sig);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn forged_or_tampered_notices_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let Checkout {
        buyer: b,
        no,
        payment_id,
        ..
    } = checkout(&app).await;
    let key = app.settings.secrets.payment_signing_key.clone();
    let good = notice(&payment_id, 100_000);

    let forged = sign(&SecretString::from("not-the-key"), &good);
    assert_eq!(
        code(notify(&app, good.clone(), Some(forged)).await).await,
        (401, "BAD_SIGNATURE".into())
    );
    assert_eq!(
        code(notify(&app, good.clone(), None).await).await,
        (401, "BAD_SIGNATURE".into())
    );
    let tampered = notice(&payment_id, 1);
    let signed_for_good = sign(&key, &good);
    assert_eq!(
        code(notify(&app, tampered, Some(signed_for_good)).await).await,
        (401, "BAD_SIGNATURE".into())
    );
    let cheap = notice(&payment_id, 1);
    let cheap_sig = sign(&key, &cheap);
    assert_eq!(
        code(notify(&app, cheap, Some(cheap_sig)).await).await,
        (422, "AMOUNT_MISMATCH".into())
    );
    assert_eq!(status(&app, &b.token, &no).await, "pending_payment");
    let paid_bills =
        "SELECT count(*) FROM payment_bills WHERE order_no = $1 AND status <> 'created'";
    assert_eq!(
        order_fact::<i64>(&app, paid_bills, &no).await,
        0,
        "nothing changed"
    );

    // The same notice with the right signature is accepted: the refusals above were the signature's.
    let sig = sign(&key, &good);
    assert_eq!(notify(&app, good, Some(sig)).await.status(), 200);
    assert_eq!(status(&app, &b.token, &no).await, "paid");
}

#[tokio::test]
async fn a_payment_after_expiry_is_refunded_and_recorded() {
    let app = spawn_app_with(|s| s.orders.payment_window_secs = 2).await;
    let Checkout {
        program,
        buyer: b,
        no,
        payment_id,
        pay_url,
        ..
    } = checkout(&app).await;
    assert_eq!(status_once(&app, &b.token, &no, "expired").await, "expired");

    complete(&app, &pay_url).await;
    let refunded = poll_until(
        Duration::from_secs(10),
        async || order_fact::<i64>(&app, REFUNDS_DONE, &no).await,
        |n| *n == 1,
    )
    .await;
    assert_eq!(refunded, 1, "the late payment was refunded");
    let reason: String =
        order_fact(&app, "SELECT reason FROM refunds WHERE order_no = $1", &no).await;
    assert_eq!(reason, "order_expired");
    assert_eq!(trade(&app, &payment_id).await["trade_status"], "REFUNDED");
    assert_eq!(status(&app, &b.token, &no).await, "expired");
    let map = seats_once(&app, program, |s| s[0].1 == "available").await;
    assert_eq!(
        (map[0].1.as_str(), map[1].1.as_str()),
        ("available", "available")
    );
    assert_eq!(order_fact::<i64>(&app, PAID_EVENTS, &no).await, 0);
}

/// Ends the order's payment window in Postgres only, a minute ago: the category actor's timer
/// stays armed for the original deadline, as when the actor has not started, is busy, or its
/// timer simply has not fired yet when the payment notice comes.
async fn make_overdue(app: &TestApp, no: &str) {
    let no: i64 = no.parse().unwrap();
    let pg = app.pg.get().await.unwrap();
    for sql in [
        "UPDATE orders SET expires_at = now() - interval '1 minute'
         WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1",
        "UPDATE seats SET hold_expires_at = now() - interval '1 minute' WHERE order_no = $1",
        "UPDATE ga_holds SET hold_expires_at = now() - interval '1 minute' WHERE order_no = $1",
    ] {
        pg.execute(sql, &[&no]).await.unwrap();
    }
}

const EXPIRED_EVENTS: &str =
    "SELECT count(*) FROM outbox WHERE order_no = $1 AND event_type = 'OrderExpired'";

/// What a payment for an overdue order must leave: the order expired (one `OrderExpired`, no
/// `OrderPaid`) and the money recorded as an `order_expired` refund and returned by the provider.
async fn assert_expired_and_refunded(app: &TestApp, token: &str, no: &str, payment_id: &str) {
    let refunded = poll_until(
        Duration::from_secs(10),
        async || order_fact::<i64>(app, REFUNDS_DONE, no).await,
        |n| *n == 1,
    )
    .await;
    assert_eq!(refunded, 1, "the overdue payment was refunded");
    let reason: String =
        order_fact(app, "SELECT reason FROM refunds WHERE order_no = $1", no).await;
    assert_eq!(reason, "order_expired");
    assert_eq!(trade(app, payment_id).await["trade_status"], "REFUNDED");
    assert_eq!(status(app, token, no).await, "expired");
    assert_eq!(order_fact::<i64>(app, EXPIRED_EVENTS, no).await, 1);
    assert_eq!(order_fact::<i64>(app, PAID_EVENTS, no).await, 0);
}

/// The checkout's two seats are free again in Postgres and, without waiting for the actor's
/// timer, on the live seat map.
async fn assert_both_seats_free(app: &TestApp, c: &Checkout) {
    let freed = "SELECT count(*) FROM seats s JOIN tickets t ON t.seat_id = s.id
         WHERE t.order_no = $1 AND s.status = 'available' AND s.order_no IS NULL";
    assert_eq!(order_fact::<i64>(app, freed, &c.no).await, 2);
    let map = seats_once(app, c.program, |s| {
        s[0].1 == "available" && s[1].1 == "available"
    })
    .await;
    assert_eq!(
        (map[0].1.as_str(), map[1].1.as_str()),
        ("available", "available"),
        "the seat map agrees"
    );
}

/// A long payment window, so the actor's own expiry is an hour away in every test below.
const HOUR_WINDOW: u64 = 3_600;

#[tokio::test]
async fn a_callback_for_an_overdue_order_expires_it_and_refunds_even_before_its_timer() {
    let app = spawn_app_with(|s| s.orders.payment_window_secs = HOUR_WINDOW).await;
    let c = checkout(&app).await;
    make_overdue(&app, &c.no).await;

    complete(&app, &c.pay_url).await;
    assert_expired_and_refunded(&app, &c.buyer.token, &c.no, &c.payment_id).await;
    assert_both_seats_free(&app, &c).await;
}

#[tokio::test]
async fn pay_check_for_an_overdue_order_expires_it_and_refunds_even_before_its_timer() {
    let app = spawn_app_with(|s| {
        s.orders.payment_window_secs = HOUR_WINDOW;
        s.payments.mockpay.drop_callbacks = true;
    })
    .await;
    let c = checkout(&app).await;
    make_overdue(&app, &c.no).await;
    complete(&app, &c.pay_url).await;

    let r = act(&app, &c.buyer.token, &c.no, "pay-check").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "expired");
    assert_expired_and_refunded(&app, &c.buyer.token, &c.no, &c.payment_id).await;
    assert_both_seats_free(&app, &c).await;
}

#[tokio::test]
async fn a_payment_for_an_overdue_general_admission_order_returns_its_counter() {
    let app = spawn_app_with(|s| s.orders.payment_window_secs = HOUR_WINDOW).await;
    let (program, _, floor) = on_sale(&app, 4, 4).await;
    let b = buyers(&app, 1, 3).await.remove(0);
    let no = ga_order(&app, &b, program, floor, 3).await;
    let (payment_id, pay_url) = start_payment(&app, &b.token, &no).await;
    make_overdue(&app, &no).await;

    complete(&app, &pay_url).await;
    assert_expired_and_refunded(&app, &b.token, &no, &payment_id).await;
    assert_eq!(order_fact::<i64>(&app, GA_TAKEN, &no).await, 0);
    let holds = "SELECT count(*) FROM ga_holds WHERE order_no = $1";
    assert_eq!(order_fact::<i64>(&app, holds, &no).await, 0);
    assert_eq!(
        remaining_once(&app, program, 30).await,
        Some(30),
        "the seat map counts them available again"
    );
}

#[tokio::test]
async fn payment_error_codes() {
    let app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 4, 4).await;
    let (b, no) = two_seat_order(&app, program).await;
    let other = buyers(&app, 1, 1).await.remove(0);
    let pay = format!("/api/v1/orders/{no}/payments");
    let refund = format!("/api/v1/orders/{no}/refund");

    let r = app
        .post(&pay, Some(&other.token), &json!({"channel": "mockpay"}))
        .await;
    assert_eq!(
        code(r).await,
        (404, "NOT_FOUND".into()),
        "another user's order"
    );
    let r = app
        .post(&pay, Some(&b.token), &json!({"channel": "cashbox"}))
        .await;
    assert_eq!(code(r).await.0, 422, "unknown channel");
    let r = app.post(&refund, Some(&b.token), &json!({})).await;
    assert_eq!(
        code(r).await,
        (409, "NOT_REFUNDABLE".into()),
        "not paid yet"
    );
    let r = app.post(&pay, None, &json!({"channel": "mockpay"})).await;
    assert_eq!(r.status(), 401);

    let (_, pay_url) = start_payment(&app, &b.token, &no).await;
    complete(&app, &pay_url).await;
    status_once(&app, &b.token, &no, "paid").await;
    let r = app
        .post(&pay, Some(&b.token), &json!({"channel": "mockpay"}))
        .await;
    assert_eq!(code(r).await, (409, "NOT_PAYABLE".into()), "already paid");
    let r = act(&app, &b.token, &no, "cancel").await;
    assert_eq!(
        code(r).await.0,
        409,
        "a paid order is refunded, not cancelled"
    );

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
    let r = app.post(&refund, Some(&b.token), &json!({})).await;
    assert_eq!(code(r).await, (409, "SHOW_STARTED".into()));
    assert_eq!(status(&app, &b.token, &no).await, "paid");
}

/// Where one racing order ended, read from Postgres.
async fn settled_state(app: &TestApp, no: &str) -> (String, i64, i64, i64) {
    let no: i64 = no.parse().unwrap();
    let row = app
        .pg
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT o.status,
                    (SELECT count(*) FROM seats s WHERE s.order_no = o.order_no AND s.status = 'sold'),
                    (SELECT count(*) FROM refunds r WHERE r.order_no = o.order_no AND r.status = 'succeeded'),
                    (SELECT count(*) FROM outbox e WHERE e.order_no = o.order_no AND e.event_type = 'OrderPaid')
             FROM orders o WHERE o.gene = ($1::bigint & 15)::smallint AND o.order_no = $1",
            &[&no],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// Payments land around the moment their orders expire, on a seeded schedule; whatever wins,
/// each order ends either paid with its seat sold, or expired with its seat free and the money
/// refunded — never both, never neither — and the live seat map agrees with Postgres.
#[tokio::test]
async fn payments_racing_expiry_end_paid_or_refunded_never_both() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let seed: u64 = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("payment race seed {seed} (SIM_SEED={seed} reproduces the schedule)");
    let mut rng = StdRng::seed_from_u64(seed);
    let app = spawn_app_with(|s| s.orders.payment_window_secs = 2).await;
    let (program, front, _) = on_sale(&app, 1, 1).await;
    let racers = buyers(&app, 12, 1).await;
    let mut orders = Vec::new();
    for (i, b) in racers.iter().enumerate() {
        let body = json!({"program_id": program, "ticket_buyer_ids": b.buyers, "ticket_category_id": front, "quantity": 1});
        let placed: Value = order(&app, &b.token, &format!("r{i}"), &body)
            .await
            .json()
            .await
            .unwrap();
        let no = placed["order_no"].as_str().unwrap().to_string();
        let (_, pay_url) = start_payment(&app, &b.token, &no).await;
        let expires_at: chrono::DateTime<chrono::Utc> =
            placed["expires_at"].as_str().unwrap().parse().unwrap();
        // Pay anywhere from 600 ms before the deadline to 400 ms after it; the first order
        // surely late and the last (placed just before the payers start) surely early, so that
        // both outcomes occur whatever the seed.
        let offset_ms = match i {
            0 => 1_500,
            last if last == racers.len() - 1 => -1_500,
            _ => rng.gen_range(-600..400),
        };
        let at = expires_at + chrono::Duration::milliseconds(offset_ms);
        orders.push((b.token.clone(), no, pay_url, at));
    }
    let app_ref = &app;
    let payers = orders.iter().map(|(_, _, pay_url, at)| async move {
        let wait = (*at - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await; // the schedule itself, not a wait for a condition
        complete(app_ref, pay_url).await;
    });
    futures::future::join_all(payers).await;

    let mut paid = 0;
    for (token, no, _, _) in &orders {
        let end = poll_until(
            Duration::from_secs(10),
            async || settled_state(&app, no).await,
            |(status, _, refunds, _)| status == "paid" || (status == "expired" && *refunds == 1),
        )
        .await;
        match end.0.as_str() {
            "paid" => {
                paid += 1;
                assert_eq!(
                    (end.1, end.2, end.3),
                    (1, 0, 1),
                    "paid: seat sold, no refund, one event (seed {seed})"
                );
            }
            _ => assert_eq!(
                (end.0.as_str(), end.1, end.2, end.3),
                ("expired", 0, 1, 0),
                "seed {seed}"
            ),
        }
        assert_eq!(status(&app, token, no).await, end.0);
    }
    println!(
        "{paid} of {} orders paid, the rest expired and refunded",
        orders.len()
    );
    assert!(
        paid > 0 && paid < orders.len() as i64,
        "both outcomes must occur for the race to show anything: {paid} of {} paid (seed {seed})",
        orders.len()
    );
    let sold_in_pg = "SELECT count(*) FROM seats WHERE ticket_category_id = $1 AND status = 'sold'";
    let sold = app
        .pg
        .get()
        .await
        .unwrap()
        .query_one(sold_in_pg, &[&front])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(sold, paid, "seed {seed}");
    let map = seats_once(&app, program, |s| {
        s.iter().filter(|x| x.1 == "sold").count() as i64 == paid
    })
    .await;
    assert_eq!(
        map.iter().filter(|x| x.1 == "sold").count() as i64,
        paid,
        "seat map agrees (seed {seed})"
    );
    assert!(
        map.iter().all(|x| x.1 != "held"),
        "no hold outlives the race (seed {seed})"
    );
}

#[tokio::test]
async fn with_mockpay_disabled_there_is_no_such_channel_and_no_provider_pages() {
    let app = spawn_app_with(|s| s.payments.mockpay.enabled = false).await;
    let (program, _, _) = on_sale(&app, 4, 4).await;
    let (b, no) = two_seat_order(&app, program).await;
    let path = format!("/api/v1/orders/{no}/payments");
    let r = app
        .post(&path, Some(&b.token), &json!({"channel": "mockpay"}))
        .await;
    assert_eq!(code(r).await, (422, "VALIDATION".into()));
    let page = app.get("/mockpay/checkout/anything").await;
    assert_eq!(page.status(), 404);
    let notice = notify(&app, notice("x", 1), Some("00".into())).await;
    assert_eq!(notice.status(), 422, "unknown channel");
}

#[tokio::test]
async fn a_refund_the_provider_never_confirmed_is_sent_again_in_the_background() {
    let app = spawn_app_with(|s| {
        s.payments.refund_retry_secs = 1;
        s.orders.payment_window_secs = 2;
        s.payments.mockpay.drop_callbacks = true;
    })
    .await;
    let Checkout {
        buyer: b,
        no,
        payment_id,
        pay_url,
        ..
    } = checkout(&app).await;
    status_once(&app, &b.token, &no, "expired").await;
    let paid = complete(&app, &pay_url).await;
    // What the late notice left behind when the provider's refund API was down: the bill paid,
    // the refund recorded and never confirmed.
    let (order_no, payment): (i64, uuid::Uuid) = (no.parse().unwrap(), payment_id.parse().unwrap());
    let pg = app.pg.get().await.unwrap();
    pg.execute(
        "UPDATE payment_bills SET status = 'paid', trade_no = $2, paid_at = now() WHERE id = $1",
        &[&payment, &paid["trade_no"].as_str().unwrap()],
    )
    .await
    .unwrap();
    pg.execute(
        "INSERT INTO refunds (id, order_no, payment_id, amount_cents, reason, status, created_at)
         VALUES (gen_random_uuid(), $1, $2, 100000, 'order_expired', 'requested', now() - interval '1 minute')",
        &[&order_no, &payment],
    )
    .await
    .unwrap();
    let done = poll_until(
        Duration::from_secs(10),
        async || order_fact::<i64>(&app, REFUNDS_DONE, &no).await,
        |n| *n == 1,
    )
    .await;
    assert_eq!(
        done, 1,
        "the background retry got the provider to confirm it"
    );
    assert_eq!(trade(&app, &payment_id).await["trade_status"], "REFUNDED");
    let refunded_bills =
        "SELECT count(*) FROM payment_bills WHERE order_no = $1 AND status = 'refunded'";
    assert_eq!(order_fact::<i64>(&app, refunded_bills, &no).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_waits_for_the_orders_own_show_time_not_the_programs_first() {
    let app = spawn_app().await;
    let (_, admin) = crate::helpers::signed_in_admin(&app).await;
    let day = |d: i64| chrono::Utc::now() + chrono::Duration::days(d);
    let create = json!({
        "title": "Two nights", "area": "Beijing", "category": "Pop", "venue": "Hall",
        "per_order_limit": 2, "per_account_limit": 4, "on_sale_at": day(-1),
        "show_times": [day(9), day(10)],
        "ticket_categories": [{"name": "Standing", "price_cents": 1_000, "capacity": 10}]
    });
    let p: Value = app
        .post("/api/v1/admin/programs", Some(&admin), &create)
        .await
        .json()
        .await
        .unwrap();
    let (program, second) = (
        p["id"].as_i64().unwrap(),
        p["show_times"][1]["id"].as_i64().unwrap(),
    );
    let tier = p["ticket_categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["show_time_id"] == second)
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let b = buyers(&app, 1, 1).await.remove(0);
    let body = json!({"program_id": program, "show_time_id": second, "ticket_buyer_ids": b.buyers,
                      "ticket_category_id": tier, "quantity": 1});
    let placed: Value = order(&app, &b.token, "second-night", &body)
        .await
        .json()
        .await
        .unwrap();
    let no = placed["order_no"].as_str().unwrap().to_string();
    let (_, pay_url) = start_payment(&app, &b.token, &no).await;
    complete(&app, &pay_url).await;
    status_once(&app, &b.token, &no, "paid").await;
    // The first night has begun; this order is for the second.
    app.pg
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE show_times SET starts_at = now() - interval '1 hour' WHERE id = $1",
            &[&p["show_times"][0]["id"].as_i64().unwrap()],
        )
        .await
        .unwrap();
    let r = act(&app, &b.token, &no, "refund").await;
    assert_eq!(r.status(), 200, "the order's own show has not started");
    assert_eq!(status(&app, &b.token, &no).await, "refunded");
}
