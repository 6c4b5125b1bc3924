//! The server's own limits (`http::server`): each test plays a client that would take the
//! server from everyone else — a slowloris, a connection flood, a request flood, a request
//! that never finishes — and shows the limit that answers it.

use crate::helpers::{TestApp, buyers, code, on_sale, order, poll_until, spawn_app_with, within};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection; answers what it sent.
async fn read_to_close(tcp: &mut (impl AsyncRead + Unpin)) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// A request whose body never comes: the server is left waiting for it.
const STALLED_LOGIN: &[u8] = b"POST /api/v1/sessions HTTP/1.1\r\nHost: t\r\n\
    Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{";

/// One keep-alive request on a raw connection; answers whether the server answered it 200.
async fn served(tcp: &mut TcpStream) -> bool {
    let sent = tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    sent.is_ok() && matches!(read, Ok(Ok(n)) if n > 0 && buf[..n].starts_with(b"HTTP/1.1 200"))
}

#[tokio::test]
async fn a_slowloris_trickling_headers_is_cut_off_at_the_header_timeout() {
    let app = spawn_app_with(|s| s.server.header_read_timeout_ms = 400).await;
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (mut reader, mut writer) = slow.into_split();
    // One header line every 100 ms: the request is never finished, but bytes keep coming.
    let trickle = tokio::spawn(async move {
        for i in 0..100 {
            let line = format!("X-Slow-{i}: a\r\n");
            if writer.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let closed = read_to_close(&mut reader);
    within(Duration::from_secs(5), "the slow connection closed", closed).await;
    trickle.abort();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}, not near the 400 ms header timeout",
        started.elapsed()
    );
    assert_eq!(app.get("/healthz").await.status(), 200, "others are served");
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once_and_a_freed_slot_is_reused() {
    let app = spawn_app_with(|s| s.server.max_connections = 3).await;
    // The test client's own pooled connection may hold a slot: count what is served.
    let mut open = Vec::new();
    let refused = loop {
        let mut tcp = connect(&app).await;
        if !served(&mut tcp).await {
            break tcp;
        }
        open.push(tcp);
        assert!(open.len() <= 3, "a fourth connection was served");
    };
    let mut refused = refused;
    let said = within(
        Duration::from_secs(5),
        "the refused connection closed",
        read_to_close(&mut refused),
    )
    .await;
    assert!(said.is_empty(), "refused without an answer: {said:?}");
    assert!(!open.is_empty());

    drop(open.pop());
    let mut fresh = poll_until(
        Duration::from_secs(5),
        async || {
            let mut tcp = connect(&app).await;
            let ok = served(&mut tcp).await;
            (tcp, ok)
        },
        |(_, ok)| *ok,
    )
    .await;
    assert!(fresh.1, "the freed slot serves a new connection");
    assert!(served(&mut fresh.0).await);
}

#[tokio::test]
async fn past_the_in_flight_bound_requests_are_shed_at_once_but_probes_pass() {
    let app = spawn_app_with(|s| {
        s.server.max_in_flight_requests = 2;
        s.rate_limit.enabled = false;
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut tcp = connect(&app).await;
        tcp.write_all(STALLED_LOGIN).await.unwrap();
        stalled.push(tcp);
    }
    let shed = poll_until(
        Duration::from_secs(5),
        async || app.get("/api/v1/programs").await,
        |r| r.status() == 503,
    )
    .await;
    assert_eq!(shed.status(), 503, "two stalled requests fill the bound");
    assert!(shed.headers().contains_key("retry-after"));
    let body: serde_json::Value = shed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "OVERLOADED");
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/metrics").await.status(), 200);

    drop(stalled);
    let recovered = poll_until(
        Duration::from_secs(5),
        async || app.get("/api/v1/programs").await.status(),
        |s| *s == 200,
    )
    .await;
    assert_eq!(recovered, 200, "the bound frees with the requests");
}

#[tokio::test]
async fn a_request_whose_body_never_comes_is_answered_at_the_request_timeout() {
    let app = spawn_app_with(|s| {
        s.server.request_timeout_ms = 300;
        s.rate_limit.enabled = false;
    })
    .await;
    let mut tcp = connect(&app).await;
    tcp.write_all(STALLED_LOGIN).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = within(
        Duration::from_secs(5),
        "an answer to the stalled request",
        tcp.read(&mut buf),
    )
    .await
    .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Anonymous searches, each with a new `q`, miss every cache: without a bound they would take
/// the read pool's connections. Orders run on the writer's own connections and answer 201
/// throughout, and the searches beyond the bound get a fast 503 `CATALOG_BUSY`, not a queue.
#[tokio::test]
async fn a_flood_of_distinct_searches_neither_delays_orders_nor_queues() {
    let app = spawn_app_with(|s| {
        s.rate_limit.enabled = false;
        s.cache.max_concurrent_loads = 2;
    })
    .await;
    let (program, _, floor) = on_sale(&app, 1, 1).await;
    // Enough programs that each search is real work for Postgres.
    crate::helpers::count(
        &app,
        &format!(
            "WITH made AS (INSERT INTO programs (slug, title, area_id, category_id, venue,
                 per_order_limit, per_account_limit, on_sale_at)
             SELECT 'flood-' || g, 'Flood ' || md5(g::text), area_id, category_id, venue, 1, 1, now()
             FROM programs, generate_series(1, 5000) g WHERE id = {program} RETURNING 1)
             SELECT count(*) FROM made"
        ),
    )
    .await;
    let accounts = buyers(&app, 30, 1).await; // the floor holds 30
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flood = tokio::spawn(search_flood(app.address.clone(), flooding.clone()));
    let mut answers = Vec::new();
    for (i, b) in accounts.iter().enumerate() {
        let body = serde_json::json!({"program_id": program, "ticket_buyer_ids": b.buyers,
            "ticket_category_id": floor, "quantity": 1});
        let started = std::time::Instant::now();
        let status = order(&app, &b.token, &format!("flood-{i}"), &body)
            .await
            .status();
        answers.push((status.as_u16(), started.elapsed()));
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let searches = flood.await.unwrap();
    let slowest = answers.iter().map(|a| a.1).max().unwrap_or_default();
    println!("orders during the flood: slowest {slowest:?}; searches answered {searches:?}");
    assert!(answers.iter().all(|a| a.0 == 201), "{answers:?}");
    let total: usize = searches.values().sum();
    assert!(total >= 200, "the flood ran: {searches:?}");
    assert!(
        searches
            .keys()
            .all(|k| k == "200" || k == "503 CATALOG_BUSY"),
        "searches are answered or refused fast, nothing else: {searches:?}"
    );
    assert!(
        searches.contains_key("503 CATALOG_BUSY"),
        "the bound engaged: {searches:?}"
    );
}

/// 200 distinct title searches a second until `on` is cleared; answers how they were answered.
async fn search_flood(
    address: String,
    on: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::collections::BTreeMap<String, usize> {
    let http = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut sent = tokio::task::JoinSet::new();
    let mut i = 0u64;
    while on.load(std::sync::atomic::Ordering::Relaxed) || i < 200 {
        tick.tick().await;
        i += 1;
        let url = format!(
            "{address}/api/v1/programs?q={:x}",
            i * 2_654_435_761 % 65_521
        );
        let http = http.clone();
        sent.spawn(async move {
            let (status, code) = code(http.get(url).send().await.unwrap()).await;
            format!("{status} {code}").trim().to_string()
        });
    }
    let mut answers = std::collections::BTreeMap::new();
    while let Some(answer) = sent.join_next().await {
        *answers.entry(answer.unwrap()).or_insert(0) += 1;
    }
    answers
}
