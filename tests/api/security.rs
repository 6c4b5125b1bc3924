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
