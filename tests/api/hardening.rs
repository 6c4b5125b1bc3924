//! Bad input is a 4xx in the API's envelope, never an outage: NUL characters in bodies and
//! query strings, framework rejections (405, 413, unparsable path ids, wrong media type), and
//! 422s that name the field serde reports. And a production server refuses dev-only settings.

use crate::helpers::{spawn_app, test_settings};
use serde_json::{Value, json};

/// Sends `request` as written and reads the answer until the server closes.
async fn raw_request(address: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).to_string()
}

async fn envelope(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{status}: content-type {ct:?}"
    );
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["code"].is_string(), "{body}");
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_anywhere_is_a_422_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (
            "/api/v1/users",
            json!({"email": "a\u{0}b@example.com", "password": "long enough pw"}),
            "email",
        ),
        (
            "/api/v1/users",
            json!({"email": "ok@example.com", "password": "long enough pw", "display_name": "x\u{0}"}),
            "display_name",
        ),
        (
            "/api/v1/sessions",
            json!({"login": "a\u{0}", "password": "whatever"}),
            "login",
        ),
    ];
    for (path, body, field) in cases {
        let (status, body) = envelope(app.post(path, None, &body).await).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert_eq!(body["error"]["code"], "VALIDATION");
        assert_eq!(body["error"]["details"]["field"], field, "{body}");
    }
    let (status, body) = envelope(app.get("/api/v1/programs?q=a%00b").await).await;
    assert_eq!(
        (status, body["error"]["details"]["field"].clone()),
        (422, json!("q")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_rejections_use_the_envelope_and_422s_name_the_field() {
    let app = spawn_app().await;
    // Announced 10 MB, none sent: the limit answers from the header, so the test never races
    // the server closing the connection while a client is still writing.
    let response = raw_request(
        &app.address,
        "POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains("application/json") && response.contains("PAYLOAD_TOO_LARGE"),
        "{response}"
    );
    let r = app
        .http
        .delete(format!("{}/api/v1/programs", app.address))
        .send()
        .await
        .unwrap();
    let (status, body) = envelope(r).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (405, json!("METHOD_NOT_ALLOWED"))
    );
    let (status, _) = envelope(app.get("/api/v1/programs/99999999999999999999").await).await;
    assert_eq!(status, 400);
    let r = app
        .http
        .post(format!("{}/api/v1/users", app.address))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, body) = envelope(r).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (415, json!("UNSUPPORTED_MEDIA_TYPE"))
    );
    let bad = json!({"email": "q@example.com", "password": 12});
    let (status, body) = envelope(app.post("/api/v1/users", None, &bad).await).await;
    assert_eq!(
        (status, body["error"]["details"]["field"].clone()),
        (422, json!("password")),
        "{body}"
    );
    let missing = json!({"email": "q@example.com"});
    let (status, body) = envelope(app.post("/api/v1/users", None, &missing).await).await;
    assert_eq!(
        (status, body["error"]["details"]["field"].clone()),
        (422, json!("password")),
        "{body}"
    );
}

#[tokio::test]
async fn production_refuses_dev_secrets_short_keys_and_the_mock_provider() {
    let mut settings = test_settings("unused");
    assert!(
        settings.production_problems().is_empty(),
        "development allows the demo's settings"
    );
    settings.server.environment = boxoffice::config::Environment::Production;
    settings.secrets.jwt_key =
        secrecy::SecretString::from("dev-only-jwt-key-change-me-0123456789abcdef");
    settings.secrets.payment_signing_key = secrecy::SecretString::from("short");
    let problems = settings.production_problems();
    let text = problems.join("\n");
    assert!(
        text.contains("secrets.jwt_key still has its dev-only default"),
        "{text}"
    );
    assert!(text.contains("secrets.id_number_key"), "{text}");
    assert!(text.contains("payments.mockpay.enabled"), "{text}");
    assert!(
        !text.contains("secrets.payment_signing_key"),
        "a key of its own passes: {text}"
    );
    settings.secrets.jwt_key = secrecy::SecretString::from("too-short");
    assert!(
        settings
            .production_problems()
            .join("\n")
            .contains("shorter than 32 bytes")
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = boxoffice::serve(settings, listener, async {}).await;
    let message = format!("{:#}", refused.expect_err("production refuses to start"));
    assert!(
        message.contains("refusing to start in production"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_quantity_is_a_422_naming_quantity() {
    let app = spawn_app().await;
    let (program, _, floor) = crate::helpers::on_sale(&app, 4, 4).await;
    let b = &crate::helpers::buyers(&app, 1, 1).await[0];
    let body = json!({"program_id": program, "ticket_buyer_ids": b.buyers,
        "ticket_category_id": floor, "quantity": -2});
    let r = crate::helpers::order(&app, &b.token, "negative", &body).await;
    let (status, body) = envelope(r).await;
    assert_eq!(
        (status, body["error"]["details"]["field"].clone()),
        (422, json!("quantity")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_value_that_does_not_parse_is_a_422_naming_the_parameter() {
    let app = spawn_app().await;
    let (_, admin) = crate::helpers::signed_in_admin(&app).await;
    let cases = [
        ("/api/v1/programs?page=x", "page"),
        ("/api/v1/programs/1/seats?show_time_id=abc", "show_time_id"),
        ("/api/v1/orders?per_page=99999999999", "per_page"),
        ("/api/v1/admin/programs/1/mq-messages?page=-1", "page"),
        ("/api/v1/admin/programs/1/orders?user_id=me", "user_id"),
        ("/api/v1/admin/programs/1/inventory?seats=maybe", "seats"),
        ("/api/v1/admin/reconciliations?per_page=1.5", "per_page"),
    ];
    for (path, field) in cases {
        let (status, body) = envelope(app.get_as(&admin, path).await).await;
        assert_eq!(
            (status, body["error"]["details"]["field"].clone()),
            (422, json!(field)),
            "{path}: {body}"
        );
    }
}
