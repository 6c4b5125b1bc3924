//! Durable before acknowledged (invariant 4), shown with a real crash: the `boxoffice` binary
//! serves a stream of orders, gets `kill -9`, starts again, and every order that got a 201 is in
//! Postgres with its seats, no seat is in two orders, and the actors agree with Postgres.

use crate::helpers::{TestDb, create_program, mint_buyers, test_settings};
use boxoffice::config::Settings;
use boxoffice::store::catalog::Layout;
use boxoffice::store::postgres;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process, killed (-9) when dropped: a failing test must not leave it running.
struct Server(Child);

impl Server {
    /// `kill -9` and reap.
    fn kill(&mut self) -> std::io::Result<()> {
        let killed = self.0.kill();
        let _ = self.0.wait();
        killed
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The real binary with this test's database, prefixes and port (no config file).
fn start_server(settings: &Settings, port: u16) -> Server {
    start_server_with(settings, port, &[])
}

/// [`start_server`] with extra `BOXOFFICE__…` settings.
fn start_server_with(settings: &Settings, port: u16, extra: &[(&str, &str)]) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .arg("serve")
        .envs(extra.iter().copied())
        .env("BOXOFFICE_CONFIG", "/nonexistent/boxoffice.toml")
        .env(
            "BOXOFFICE__DATABASE__URL",
            settings.database.url.expose_secret(),
        )
        .env("BOXOFFICE__REDIS__KEY_PREFIX", &settings.redis.key_prefix)
        .env(
            "BOXOFFICE__PULSAR__TOPIC_PREFIX",
            &settings.pulsar.topic_prefix,
        )
        .env("BOXOFFICE__SERVER__PORT", port.to_string())
        .env("BOXOFFICE__RATE_LIMIT__ENABLED", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the boxoffice binary");
    Server(child)
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_order_survives_kill_9() {
    let (_db, pool, _) = TestDb::migrated().await;
    let settings = test_settings(&_db.name);
    let (program, cats) = create_program(
        &pool,
        "crash",
        &[(
            "Seated",
            10_000,
            Layout::Seated {
                rows: 20,
                seats_per_row: 20,
            },
        )],
    )
    .await;
    let crowd = mint_buyers(&pool, &settings, 40, 1).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut server = start_server(&settings, port);
    wait_healthy(&http, &base).await;

    // 40 buyers order one seat each, as fast as they can; 201s are recorded as they arrive.
    let acknowledged = Arc::new(Mutex::new(Vec::<i64>::new()));
    let clients: Vec<_> = crowd
        .into_iter()
        .enumerate()
        .map(|(i, buyer)| {
            let (http, base, acked) = (http.clone(), base.clone(), acknowledged.clone());
            let body = json!({"program_id": program, "ticket_buyer_ids": buyer.buyers, "ticket_category_id": cats[0], "quantity": 1});
            tokio::spawn(async move {
                let r = http
                    .post(format!("{base}/api/v1/orders"))
                    .bearer_auth(&buyer.token)
                    .header("Idempotency-Key", format!("crash-{i}"))
                    .json(&body)
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status() == 201
                    && let Ok(v) = r.json::<Value>().await
                {
                    let no = v["order_no"].as_str().and_then(|s| s.parse().ok()).unwrap();
                    acked.lock().unwrap().push(no);
                }
            })
        })
        .collect();
    // Kill as soon as some orders are acknowledged, while others are still in flight.
    for _ in 0..1000 {
        if acknowledged.lock().unwrap().len() >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill().expect("kill -9");
    futures::future::join_all(clients).await;
    let acked = acknowledged.lock().unwrap().clone();
    assert!(
        acked.len() >= 10,
        "the stream never got going: {} acknowledged",
        acked.len()
    );

    let mut restarted = start_server(&settings, port);
    wait_healthy(&http, &base).await;
    let check = postgres::connect(&settings.database).await.unwrap();
    let client = check.get().await.unwrap();
    for order_no in &acked {
        let row = client
            .query_one(
                "SELECT o.status, count(t.*), count(s.id) FILTER (WHERE s.order_no = o.order_no AND s.status = 'held')
                 FROM orders o JOIN tickets t ON t.gene = o.gene AND t.order_no = o.order_no
                 JOIN seats s ON s.id = t.seat_id
                 WHERE o.gene = ($1::bigint & 15)::smallint AND o.order_no = $1 GROUP BY o.status",
                &[order_no],
            )
            .await
            .unwrap_or_else(|e| panic!("acknowledged order {order_no} is missing: {e}"));
        assert_eq!(row.get::<_, &str>(0), "pending_payment");
        assert_eq!(
            (row.get::<_, i64>(1), row.get::<_, i64>(2)),
            (1, 1),
            "order {order_no} lost its seat"
        );
    }
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'held'), count(DISTINCT order_no) FILTER (WHERE status = 'held'),
                    count(*) FILTER (WHERE status = 'available')
             FROM seats WHERE ticket_category_id = $1",
            &[&cats[0]],
        )
        .await
        .unwrap();
    let (held, orders, available): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        held, orders,
        "a seat is in two orders, or an order has two seats"
    );
    assert!(held >= acked.len() as i64);
    let detail: Value = http
        .get(format!("{base}/api/v1/programs/{program}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        detail["ticket_categories"][0]["remaining"], available,
        "actor and Postgres disagree"
    );
    restarted.kill().unwrap();
}

/// After a crash, a hold in a category nobody touches still expires on time: the new process
/// starts the actor of every category with live holds, whose timer closes the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_in_an_untouched_category_expires_on_time_after_a_restart() {
    let (_db, pool, _) = TestDb::migrated().await;
    let settings = test_settings(&_db.name);
    let (program, cats) = create_program(
        &pool,
        "quiet",
        &[("Standing", 5_000, Layout::General { capacity: 10 })],
    )
    .await;
    let buyer = mint_buyers(&pool, &settings, 1, 2).await.remove(0);
    let (port, window) = (
        free_port(),
        [("BOXOFFICE__ORDERS__PAYMENT_WINDOW_SECS", "6")],
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut server = start_server_with(&settings, port, &window);
    wait_healthy(&http, &base).await;
    let body = json!({"program_id": program, "ticket_buyer_ids": buyer.buyers, "ticket_category_id": cats[0], "quantity": 2});
    let placed = http
        .post(format!("{base}/api/v1/orders"))
        .bearer_auth(&buyer.token)
        .header("Idempotency-Key", "quiet-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);
    let order: Value = placed.json().await.unwrap();
    server.kill().expect("kill -9");

    let mut restarted = start_server_with(&settings, port, &window);
    wait_healthy(&http, &base).await;
    // Only Postgres is asked from here on: nothing touches the category or its actor.
    let order_no: i64 = order["order_no"].as_str().unwrap().parse().unwrap();
    let client = pool.get().await.unwrap();
    let state = crate::helpers::poll_until(
        Duration::from_secs(15),
        async || {
            let row = client
                .query_one(
                    "SELECT status, extract(epoch FROM closed_at - expires_at)::float8,
                            (SELECT ga_taken FROM ticket_categories WHERE id = $2)
                     FROM orders WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1",
                    &[&order_no, &cats[0]],
                )
                .await
                .unwrap();
            let status: String = row.get(0);
            (status, row.get::<_, Option<f64>>(1), row.get::<_, i32>(2))
        },
        |(status, _, _)| status != "pending_payment",
    )
    .await;
    assert_eq!(state.0, "expired", "the hold outlived its window");
    let late = state.1.unwrap_or(f64::MAX);
    assert!(
        (0.0..10.0).contains(&late),
        "closed {late:.3} s after its deadline (never before it, and not waiting for a buyer)"
    );
    assert_eq!(state.2, 0, "its tickets are back");
    restarted.kill().unwrap();
}
