//! Rate limits: token buckets per IP and per user, kept in Redis, answered with 429 and
//! `Retry-After`.

use crate::helpers::spawn_app_with;
use boxoffice::config::BucketSettings;
use serde_json::{Value, json};

const SLOW: BucketSettings = BucketSettings {
    burst: 3,
    per_sec: 0.05,
};
const LOOSE: BucketSettings = BucketSettings {
    burst: 1000,
    per_sec: 1000.0,
};

#[tokio::test]
async fn per_ip_bucket_runs_dry_with_429_and_retry_after() {
    let app = spawn_app_with(|s| s.rate_limit.auth.per_ip = SLOW).await;
    for _ in 0..3 {
        assert_eq!(
            app.post("/api/v1/captcha", None, &json!({})).await.status(),
            201
        );
    }
    let r = app.post("/api/v1/captcha", None, &json!({})).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=20).contains(&retry),
        "one token at 0.05/s takes up to 20 s: {retry}"
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "RATE_LIMITED"
    );
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "other groups are not affected"
    );
}

#[tokio::test]
async fn per_user_bucket_limits_one_user_and_not_the_next() {
    let app = spawn_app_with(|s| {
        s.rate_limit.account.per_ip = LOOSE;
        s.rate_limit.account.per_user = SLOW;
    })
    .await;
    let (_, alice) = app.signed_in_buyer().await;
    let (_, bob) = app.signed_in_buyer().await;
    for _ in 0..3 {
        assert_eq!(app.get_as(&alice, "/api/v1/me").await.status(), 200);
    }
    assert_eq!(app.get_as(&alice, "/api/v1/me").await.status(), 429);
    assert_eq!(
        app.get_as(&bob, "/api/v1/me").await.status(),
        200,
        "bob has his own bucket"
    );
}

#[tokio::test]
async fn limits_can_be_switched_off() {
    let app = spawn_app_with(|s| {
        s.rate_limit.auth.per_ip = SLOW;
        s.rate_limit.enabled = false;
    })
    .await;
    for _ in 0..6 {
        assert_eq!(
            app.post("/api/v1/captcha", None, &json!({})).await.status(),
            201
        );
    }
}
