//! The web pages in a real browser: `web/tests/sale.mjs` (playwright-core driving Debian's
//! chromium, both installed by `dev/services.sh up`) against a server of this test's own.
//! Screenshots land in `target/screenshots/`.

use crate::helpers::{TestApp, on_sale, spawn_app_with};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// An account with a password the browser can type, and `holders` ticket buyers.
async fn account(app: &TestApp, email: &str, roles: &[&str], holders: usize) -> String {
    let user = boxoffice::store::users::EnsureUser {
        email,
        password: "browser-password",
        display_name: email.split('@').next().unwrap_or("buyer"),
        roles,
    };
    boxoffice::store::users::ensure_user(&app.pg, user)
        .await
        .unwrap();
    let token = app.login(email, "browser-password").await;
    for i in 0..holders {
        let unique = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let body = json!({"name": format!("Holder {i}"), "id_type": "passport",
            "id_number": format!("E{unique}")});
        let r = app
            .post("/api/v1/me/ticket-buyers", Some(&token), &body)
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    format!("{email}:browser-password")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_buyers_and_an_operator_watch_one_sale_in_chromium() {
    let _alone = crate::helpers::one_heavy_test_at_a_time().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("web/tests/node_modules/playwright-core").exists(),
        "playwright-core is missing: run dev/services.sh up (it installs chromium and the npm packages)"
    );
    // Three browsers behind one address would share per-IP buckets; the pages' request rate
    // is not what is tested here.
    let app = spawn_app_with(|s| s.rate_limit.enabled = false).await;
    let (program, _, _) = on_sale(&app, 4, 4).await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let a = account(&app, &format!("a-{suffix}@example.com"), &["buyer"], 2).await;
    let b = account(&app, &format!("b-{suffix}@example.com"), &["buyer"], 2).await;
    let admin = account(
        &app,
        &format!("o-{suffix}@example.com"),
        &["buyer", "admin"],
        0,
    )
    .await;
    let run = tokio::process::Command::new("node")
        .arg("web/tests/sale.mjs")
        .current_dir(root)
        .env("BASE_URL", &app.address)
        .env("PROGRAM_ID", program.to_string())
        .env("BUYER_A", a)
        .env("BUYER_B", b)
        .env("ADMIN", admin)
        .env("SCREENSHOT_DIR", root.join("target/screenshots"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser test ends within 2 minutes")
        .expect("node runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
}
