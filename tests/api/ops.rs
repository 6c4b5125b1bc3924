//! Operations endpoints, the error format and startup failures.

use crate::helpers::{
    TcpCut, TestDb, poll_until, redis_addr, spawn_app, spawn_app_behind_redis, test_settings,
};
use secrecy::SecretString;
use serde_json::Value;

#[tokio::test]
async fn healthz_answers_and_carries_a_request_id() {
    let app = spawn_app().await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    let id = r
        .headers()
        .get("x-request-id")
        .expect("request id header")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a uuid: {id}");
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");
}

#[tokio::test]
async fn readyz_is_200_when_all_stores_answer() {
    let app = spawn_app().await;
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    for store in ["postgres", "redis", "pulsar"] {
        assert_eq!(body[store], "up", "{body}");
    }
}

#[tokio::test]
async fn readyz_is_503_naming_redis_when_redis_is_unreachable() {
    let cut = TcpCut::start(redis_addr()).await;
    let app = spawn_app_behind_redis(&cut, |s| s.health.probe_interval_ms = 100).await;
    assert_eq!(
        app.get("/readyz").await.status(),
        200,
        "ready while the path to Redis is open"
    );

    cut.cut();
    // Readiness is the health probe's view: it turns within a probe round or two.
    let not_ready = poll_until(
        std::time::Duration::from_secs(10),
        async || app.get("/readyz").await,
        |r| r.status() == 503,
    )
    .await;
    let r = not_ready;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_READY", "{body}");
    assert_eq!(body["error"]["details"]["redis"], "down", "{body}");
    assert_eq!(body["error"]["details"]["postgres"], "up", "{body}");
    assert_eq!(body["error"]["details"]["pulsar"], "up", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("redis"),
        "{body}"
    );
}

#[tokio::test]
async fn startup_fails_clearly_when_redis_is_unreachable() {
    let db = TestDb::create().await;
    let mut settings = test_settings(&db.name);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    settings.redis.url = SecretString::from(format!("redis://{closed}"));
    settings.redis.connect_timeout_ms = 500;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = boxoffice::serve(settings, listener, std::future::pending())
        .await
        .expect_err("must not start");
    assert!(err.to_string().starts_with("redis:"), "{err}");
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_count_requests() {
    let app = spawn_app().await;
    app.get("/healthz").await;
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains("http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn openapi_document_lists_the_operations_endpoints() {
    let app = spawn_app().await;
    let doc: Value = app
        .get("/api-docs/openapi.json")
        .await
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api-docs/openapi.json",
        "/api/v1/users",
        "/api/v1/sessions",
        "/api/v1/me/ticket-buyers/{id}",
        "/api/v1/programs",
        "/api/v1/programs/{id}/seats",
        "/api/v1/admin/programs/{id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "missing {path}");
    }
}

#[test]
fn openapi_operation_ids_are_unique() {
    use utoipa::OpenApi;
    let doc = serde_json::to_value(boxoffice::http::ApiDoc::openapi()).unwrap();
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|ops| ops.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        all,
        "OpenAPI requires unique operationIds: {ids:?}"
    );
}

#[tokio::test]
async fn unknown_routes_answer_in_the_error_format() {
    let app = spawn_app().await;
    let r = app.get("/api/v1/nothing-here").await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    assert!(body["error"]["message"].is_string());
    assert!(body["error"]["details"].is_object());
}
