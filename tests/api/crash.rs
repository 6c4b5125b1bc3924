//! Durable before acknowledged (invariant 4), shown with a real crash: the `boxoffice` binary
//! serves a stream of orders, gets `kill -9`, starts again, and every order that got a 201 is in
//! Postgres with its seats, no seat is in two orders, and the actors agree with Postgres.

use crate::helpers::{TcpCut, TestDb, create_program, mint_buyers, pg_addr, test_settings};
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

/// One client's order: its token, `Idempotency-Key` and body.
struct Attempt {
    token: String,
    key: String,
    body: Value,
}

/// A stream of orders cut by `kill -9`: what each client sent and which got a 201.
struct Crashed {
    _db: TestDb,
    settings: Settings,
    pool: postgres::PgPool,
    category: i64,
    port: u16,
    base: String,
    http: reqwest::Client,
    attempts: Vec<Attempt>,
    /// (attempt index, order number) of every 201.
    acked: Vec<(usize, i64)>,
}

/// 80 buyers order one ticket each, as fast as they can; the server is killed (-9) as soon as
/// `kill_now` says so (it is told how many were acknowledged), while others are in flight.
/// The server reaches Postgres through `pg_via` when given.
async fn kill_9_under_orders(
    name: &str,
    pg_via: Option<&TcpCut>,
    mut kill_now: impl AsyncFnMut(&Settings, usize) -> bool,
) -> Crashed {
    let (db, pool, _) = TestDb::migrated().await;
    let settings = test_settings(&db.name);
    let layout = Layout::Seated {
        rows: 20,
        seats_per_row: 20,
    };
    let (program, cats) = create_program(&pool, name, &[("Seated", 10_000, layout)]).await;
    let attempts: Vec<Attempt> = mint_buyers(&pool, &settings, 80, 1)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, buyer)| Attempt {
            token: buyer.token,
            key: format!("{name}-{i}"),
            body: json!({"program_id": program, "ticket_buyer_ids": buyer.buyers, "ticket_category_id": cats[0], "quantity": 1}),
        })
        .collect();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut first = settings.clone();
    if let Some(proxy) = pg_via {
        let url = first
            .database
            .url
            .expose_secret()
            .replace(&pg_addr().to_string(), &proxy.addr.to_string());
        first.database.url = url.into();
    }
    let mut server = start_server(&first, port);
    wait_healthy(&http, &base).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..attempts.len())
        .map(|i| {
            let (http, base, acked) = (http.clone(), base.clone(), acked.clone());
            let (token, key, body) = (
                attempts[i].token.clone(),
                attempts[i].key.clone(),
                attempts[i].body.clone(),
            );
            tokio::spawn(async move {
                if let Some((201, v)) = send_order(&http, &base, &token, &key, &body).await {
                    acked.lock().unwrap().push((i, order_no_of(&v)));
                }
            })
        })
        .collect();
    for _ in 0..1000 {
        let so_far = acked.lock().unwrap().len();
        if kill_now(&settings, so_far).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill().expect("kill -9");
    futures::future::join_all(clients).await;
    let acked = acked.lock().unwrap().clone();
    Crashed {
        _db: db,
        settings,
        pool,
        category: cats[0],
        port,
        base,
        http,
        attempts,
        acked,
    }
}

/// `POST /orders`: the status and JSON body, or `None` if no answer came.
async fn send_order(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    body: &Value,
) -> Option<(u16, Value)> {
    let r = http
        .post(format!("{base}/api/v1/orders"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.ok()?))
}

fn order_no_of(order: &Value) -> i64 {
    order["order_no"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_order_survives_kill_9() {
    let crashed = kill_9_under_orders("crash", None, async |_, acked| acked >= 10).await;
    assert!(crashed.acked.len() >= 10, "the stream never got going");
    let (settings, http, base) = (&crashed.settings, &crashed.http, &crashed.base);
    let mut restarted = start_server(settings, crashed.port);
    wait_healthy(http, base).await;
    let client = crashed.pool.get().await.unwrap();
    for (_, order_no) in &crashed.acked {
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
                    count(*) FILTER (WHERE status = 'available'),
                    (SELECT program_id FROM ticket_categories WHERE id = $1)
             FROM seats WHERE ticket_category_id = $1",
            &[&crashed.category],
        )
        .await
        .unwrap();
    let (held, orders, available): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        held, orders,
        "a seat is in two orders, or an order has two seats"
    );
    assert!(held >= crashed.acked.len() as i64);
    let program: i64 = row.get(3);
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

/// Issue: a retry with the same key after the process holding the in-flight marker died was a
/// 409 for up to 60 s. Now the dead process's lease lapses: every client retrying its key after
/// the restart is answered within seconds, with the stored answer if its order committed (the
/// acknowledged ones get the very same order back) and a fresh attempt otherwise, and no key
/// ever makes two orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_kill_9_is_answered_within_seconds_and_once() {
    // Postgres hangs (as on a partition) as the orders start: requests pile up holding their
    // keys, and the server is killed while at least five do.
    let pg = TcpCut::start(pg_addr()).await;
    let stuck = async |settings: &Settings, _| {
        pg.stall();
        busy_markers(settings).await >= 5
    };
    let crashed = kill_9_under_orders("retry", Some(&pg), stuck).await;
    pg.unstall();
    let left = busy_markers(&crashed.settings).await;
    assert!(
        left > 0,
        "the kill left no request holding its key; nothing to show"
    );
    let mut restarted = start_server(&crashed.settings, crashed.port);
    wait_healthy(&crashed.http, &crashed.base).await;
    let retries = crashed
        .attempts
        .iter()
        .map(|a| retry_until_answered(&crashed, a));
    let answers = futures::future::join_all(retries).await;
    for (i, (status, order, waited)) in answers.iter().enumerate() {
        assert_eq!(
            *status, 201,
            "retry of {}: {order}",
            crashed.attempts[i].key
        );
        assert!(
            waited < &Duration::from_secs(5),
            "retry of {} waited {waited:?}",
            crashed.attempts[i].key
        );
    }
    for (i, order_no) in &crashed.acked {
        assert_eq!(
            order_no_of(&answers[*i].1),
            *order_no,
            "an acknowledged key answered another order"
        );
    }
    let client = crashed.pool.get().await.unwrap();
    for (_, order, _) in &answers {
        let orders_of_buyer: i64 = client
            .query_one(
                "SELECT count(*) FROM orders WHERE user_id =
                     (SELECT user_id FROM orders WHERE gene = ($1::bigint & 15)::smallint AND order_no = $1)",
                &[&order_no_of(order)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(orders_of_buyer, 1, "a key made two orders");
    }
    restarted.kill().unwrap();
}

/// In-flight markers (`busy:…`) under this test's Redis prefix.
async fn busy_markers(settings: &Settings) -> usize {
    use fred::prelude::*;
    let redis = boxoffice::store::RedisStore::connect(&settings.redis)
        .await
        .unwrap();
    let pattern = redis.key("idempotency:*");
    let keys: Vec<String> = redis
        .client()
        .custom(fred::cmd!("KEYS"), vec![pattern])
        .await
        .unwrap();
    let mut busy = 0;
    for key in keys {
        let marker: Option<String> = redis.client().get(&key).await.unwrap();
        busy += usize::from(marker.is_some_and(|m| m.starts_with("busy:")));
    }
    busy
}

/// Sends the attempt again until it is answered otherwise than 409 `IN_FLIGHT` (as a client
/// following the contract would, every 100 ms); the answer and how long it took.
async fn retry_until_answered(crashed: &Crashed, a: &Attempt) -> (u16, Value, Duration) {
    let started = std::time::Instant::now();
    loop {
        let answer = send_order(&crashed.http, &crashed.base, &a.token, &a.key, &a.body).await;
        match answer {
            Some((409, v)) if v["error"]["code"] == "IN_FLIGHT" => {}
            Some((status, v)) => return (status, v, started.elapsed()),
            None => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} never answered",
            a.key
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
