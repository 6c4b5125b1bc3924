//! The mock payment provider as the third party it stands for: its own process and port (the
//! production server does not serve it), merchant calls signed and checked, the callback
//! address fixed by its configuration, bounded inputs, rate limits on its routes and on our
//! notify route; and one open bill per order however often payment starts.

use crate::helpers::{code, count, on_sale, order_fact, spawn_app, spawn_app_with, within};
use crate::payments::{
    checkout, complete, notice, notify, start_payment, status_once, trade, two_seat_order,
};
use boxoffice::config::BucketSettings;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::time::Duration;

const TRADES: &str = "/mockpay/api/trades";

/// Three requests, then about one a minute.
const SLOW: BucketSettings = BucketSettings {
    burst: 3,
    per_sec: 0.02,
};

/// A trade call body with a fresh, well-formed number.
fn trade_call(subject: &str, amount_cents: i64) -> Value {
    let no = uuid::Uuid::new_v4().simple().to_string();
    json!({"out_trade_no": no, "total_amount_cents": amount_cents, "subject": subject})
}

/// `(status, error code, details.field)` of an answer.
async fn refusal(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(json!({}));
    let field = body["error"]["details"]["field"].as_str().unwrap_or("");
    let code = body["error"]["code"].as_str().unwrap_or("");
    (status, code.to_string(), field.to_string())
}

#[tokio::test]
async fn a_signed_merchant_call_opens_and_queries_a_trade_on_the_providers_own_port() {
    let app = spawn_app().await;
    assert_ne!(app.provider_url(), app.address, "a port of its own");
    let call = trade_call("boxoffice order 1", 1_500);
    let r = app.provider_call(TRADES, Some(&call)).await;
    assert_eq!(r.status(), 201);
    let opened: Value = r.json().await.unwrap();
    let no = call["out_trade_no"].as_str().unwrap();
    let pay_url = format!("{}/mockpay/checkout/{no}", app.provider_url());
    assert_eq!(opened["pay_url"], pay_url.as_str());
    let queried = trade(&app, no).await;
    assert_eq!(queried["trade_status"], "WAIT_BUYER_PAY");
    assert_eq!(queried["total_amount_cents"], 1_500);
}

#[tokio::test]
async fn the_production_server_does_not_serve_the_provider() {
    let app = spawn_app().await;
    for path in ["/mockpay/checkout/anything", "/mockpay/api/trades/anything"] {
        assert_eq!(app.get(path).await.status(), 404, "GET {path}");
    }
    let r = app.post(TRADES, None, &trade_call("x", 1)).await;
    assert_eq!(r.status(), 404, "POST {TRADES}");
    let r = app.post("/mockpay/api/refunds", None, &json!({})).await;
    assert_eq!(r.status(), 404);
}

/// The provider used to POST a signed callback to any `notify_url` a caller named (blind
/// request forgery, and a signing oracle). The field is refused now, signed or not.
#[tokio::test]
async fn a_caller_chosen_notify_url_is_refused() {
    let app = spawn_app().await;
    let attacker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/steal", attacker.local_addr().unwrap());
    let mut call = trade_call("boxoffice order 1", 1_000);
    call["notify_url"] = json!(target);
    let r = app.provider_call(TRADES, Some(&call)).await;
    assert_eq!(
        refusal(r).await,
        (422, "VALIDATION".into(), "notify_url".into())
    );
    let no = call["out_trade_no"].as_str().unwrap();
    let path = format!("{TRADES}/{no}");
    assert_eq!(
        app.provider_call(&path, None).await.status(),
        404,
        "no trade was opened"
    );
    let unsigned = app
        .http
        .post(format!("{}{TRADES}", app.provider_url()))
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let knocked = tokio::time::timeout(Duration::ZERO, attacker.accept()).await;
    assert!(knocked.is_err(), "nothing was sent to the caller's address");
}

#[tokio::test]
async fn unsigned_merchant_calls_are_refused_refunds_included() {
    let app = spawn_app().await;
    let c = checkout(&app).await;
    let (b, no, payment_id) = (&c.buyer, &c.no, &c.payment_id);
    complete(&app, &c.pay_url).await;
    assert_eq!(status_once(&app, &b.token, no, "paid").await, "paid");

    let provider = app.provider_url();
    let refund = json!({"out_trade_no": payment_id, "out_request_no": "r1",
        "refund_amount_cents": 100_000, "reason": "free money"});
    let calls = [
        app.http
            .post(format!("{provider}/mockpay/api/refunds"))
            .json(&refund),
        app.http
            .post(format!("{provider}{TRADES}"))
            .json(&trade_call("x", 1)),
        app.http.get(format!("{provider}{TRADES}/{payment_id}")),
    ];
    for call in calls {
        let r = call.send().await.unwrap();
        assert_eq!(code(r).await, (401, "BAD_SIGNATURE".into()));
    }
    assert_eq!(
        trade(&app, payment_id).await["trade_status"],
        "TRADE_SUCCESS",
        "the paid trade was not refunded behind our back"
    );
    assert_eq!(crate::payments::status(&app, &b.token, no).await, "paid");

    // Our own refund, signed, goes through and marks the order.
    let r = crate::payments::act(&app, &b.token, no, "refund").await;
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "refunded");
    assert_eq!(trade(&app, payment_id).await["trade_status"], "REFUNDED");
}

#[tokio::test]
async fn a_bad_signature_or_a_stale_timestamp_is_refused() {
    let app = spawn_app().await;
    let call = trade_call("boxoffice order 1", 1_000);
    let now = chrono::Utc::now().timestamp();
    let key = app.settings.secrets.payment_signing_key.clone();
    let window = app.settings.payments.mockpay.signature_window_secs as i64;
    let refused = [
        (now, SecretString::from("not-the-merchant-key"), "wrong key"),
        (now - window - 5, key.clone(), "stale timestamp"),
        (now + window + 5, key.clone(), "timestamp from the future"),
    ];
    for (timestamp, key, what) in refused {
        let r = app
            .provider_call_with(TRADES, Some(&call), timestamp, &key)
            .await;
        assert_eq!(code(r).await, (401, "BAD_SIGNATURE".into()), "{what}");
    }
    // A signature over another body does not carry over to this one.
    let signed_elsewhere = app
        .http
        .post(format!("{}{TRADES}", app.provider_url()))
        .header("content-type", "application/json")
        .header("mockpay-merchant", "boxoffice")
        .header("mockpay-timestamp", now.to_string())
        .header(
            "mockpay-signature",
            boxoffice::payments::mockpay::sign_request(
                &key,
                &boxoffice::payments::mockpay::SignedCall {
                    method: "POST",
                    path: TRADES,
                    timestamp: now,
                    body: b"{}",
                },
            ),
        )
        .body(serde_json::to_vec(&call).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(code(signed_elsewhere).await.0, 401);
    // The same call inside the window and with the merchant's key is accepted: the refusals
    // above were the signature's.
    let r = app
        .provider_call_with(TRADES, Some(&call), now - window + 5, &key)
        .await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn out_of_bounds_trade_fields_are_422_naming_the_field() {
    let app = spawn_app().await;
    let long_subject = "x".repeat(129);
    let mut bad_number = trade_call("ok", 1);
    bad_number["out_trade_no"] = json!("../../etc");
    let mut long_number = trade_call("ok", 1);
    long_number["out_trade_no"] = json!("a".repeat(65));
    let cases = [
        (trade_call(&long_subject, 1_000), "subject"),
        (bad_number, "out_trade_no"),
        (long_number, "out_trade_no"),
        (trade_call("ok", 0), "total_amount_cents"),
        (trade_call("ok", -5), "total_amount_cents"),
        (trade_call("ok", 100_000_001), "total_amount_cents"),
    ];
    for (call, field) in cases {
        let r = app.provider_call(TRADES, Some(&call)).await;
        assert_eq!(
            refusal(r).await,
            (422, "VALIDATION".into(), field.into()),
            "{call}"
        );
    }
    let r = app
        .provider_call(TRADES, Some(&trade_call(&"x".repeat(128), 1)))
        .await;
    assert_eq!(r.status(), 201, "128 characters are allowed");
}

#[tokio::test]
async fn the_provider_limits_each_client_with_429() {
    let app = spawn_app_with(|s| s.payments.mockpay.rate_limit = SLOW).await;
    let page = format!("{}/mockpay/checkout/unknown", app.provider_url());
    for _ in 0..3 {
        let r = app.http.get(&page).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }
    let r = app.http.get(&page).send().await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(code(r).await, (429, "RATE_LIMITED".into()));
    let r = app.provider_call(TRADES, Some(&trade_call("x", 1))).await;
    assert_eq!(code(r).await.0, 429, "merchant calls share the bucket");
}

#[tokio::test]
async fn our_notify_route_is_rate_limited_per_client() {
    let app = spawn_app_with(|s| s.rate_limit.notify = SLOW).await;
    for _ in 0..3 {
        let r = notify(&app, notice("x", 1), Some("00".into())).await;
        assert_eq!(code(r).await, (401, "BAD_SIGNATURE".into()));
    }
    let r = notify(&app, notice("x", 1), Some("00".into())).await;
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(code(r).await, (429, "RATE_LIMITED".into()));
    assert_eq!(app.get("/readyz").await.status(), 200, "its own bucket");
}

#[tokio::test]
async fn readyz_and_metrics_are_rate_limited_and_healthz_is_not() {
    let app = spawn_app_with(|s| s.rate_limit.ops = SLOW).await;
    for path in ["/readyz", "/metrics", "/readyz"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    assert_eq!(code(app.get("/metrics").await).await.0, 429);
    assert_eq!(
        code(app.get("/readyz").await).await,
        (429, "RATE_LIMITED".into())
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
}

const BILLS: &str = "SELECT count(*) FROM payment_bills WHERE order_no = $1";

#[tokio::test]
async fn starting_payment_again_answers_the_open_bill() {
    let app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 4, 4).await;
    let (b, no) = two_seat_order(&app, program).await;
    let path = format!("/api/v1/orders/{no}/payments");
    let body = json!({"channel": "mockpay"});
    let first = app.post(&path, Some(&b.token), &body).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = app.post(&path, Some(&b.token), &body).await;
    assert_eq!(again.status(), 200, "the same bill, not a new one");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(order_fact::<i64>(&app, BILLS, &no).await, 1);

    complete(&app, first["pay_url"].as_str().unwrap()).await;
    assert_eq!(status_once(&app, &b.token, &no, "paid").await, "paid");
    let r = app.post(&path, Some(&b.token), &body).await;
    assert_eq!(code(r).await, (409, "NOT_PAYABLE".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_payment_starts_share_one_bill() {
    let app = spawn_app().await;
    let body = json!({"channel": "mockpay"});
    // Several orders, each with a pair of starts racing: one pair alone may never overlap.
    for _ in 0..4 {
        let (program, _, _) = on_sale(&app, 4, 4).await;
        let (b, no) = two_seat_order(&app, program).await;
        let path = format!("/api/v1/orders/{no}/payments");
        let start = || async {
            let r = app.post(&path, Some(&b.token), &body).await;
            let status = r.status().as_u16();
            (
                status,
                r.json::<Value>().await.unwrap()["payment_id"].clone(),
            )
        };
        let (a, c) = within(Duration::from_secs(20), "two starts", async {
            tokio::join!(start(), start())
        })
        .await;
        let mut statuses = [a.0, c.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 201], "one opened it, the other got it");
        assert_eq!(a.1, c.1, "the same bill");
        assert_eq!(order_fact::<i64>(&app, BILLS, &no).await, 1);
    }
}

/// Orders that had several open bills before one was enforced keep the newest open; an older
/// one (`superseded`) paid late still pays the order — its trade was payable all along.
#[tokio::test]
async fn a_superseded_bill_paid_late_still_pays_the_order() {
    let app = spawn_app().await;
    let c = checkout(&app).await;
    let (b, no) = (&c.buyer, &c.no);
    let superseded = "WITH s AS (UPDATE payment_bills SET status = 'superseded'
                                 WHERE order_no = $1 RETURNING 1)
                      SELECT count(*) FROM s";
    assert_eq!(order_fact::<i64>(&app, superseded, no).await, 1);
    let (new_bill, _) = start_payment(&app, &b.token, no).await;
    assert_ne!(
        new_bill, c.payment_id,
        "a superseded bill is not the open one"
    );

    complete(&app, &c.pay_url).await;
    assert_eq!(status_once(&app, &b.token, no, "paid").await, "paid");
    let paid = "SELECT count(*) FROM payment_bills WHERE order_no = $1 AND status = 'paid'";
    assert_eq!(order_fact::<i64>(&app, paid, no).await, 1);
    let refunds = "SELECT count(*) FROM refunds WHERE order_no = $1";
    assert_eq!(order_fact::<i64>(&app, refunds, no).await, 0);
}

#[tokio::test]
async fn the_database_refuses_a_second_open_bill_for_an_order_and_channel() {
    let app = spawn_app().await;
    let insert = "INSERT INTO payment_bills (id, order_no, channel, amount_cents, status)
                  VALUES (gen_random_uuid(), 42, 'mockpay', 100, 'created')";
    let pg = app.pg.get().await.unwrap();
    pg.execute(insert, &[]).await.unwrap();
    let second = pg.execute(insert, &[]).await.expect_err("one open bill");
    assert_eq!(
        second.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
    let other_channel = insert.replace("'mockpay'", "'othpay'");
    pg.execute(&other_channel, &[]).await.unwrap();
    let open = "SELECT count(*) FROM payment_bills WHERE order_no = 42 AND status = 'created'";
    assert_eq!(count(&app, open).await, 2);
}
