//! WebSockets with tokio-tungstenite clients: the live seat map (snapshot, then deltas of
//! committed changes with consecutive `seq`), the buyer's own channel, and connection hygiene.

use crate::helpers::{
    TestApp, buyers, code, on_sale, order, poll_until, seat_ids, signed_in_admin, spawn_app,
    spawn_app_with,
};
use crate::payments::{complete, start_payment};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(15);

fn ws_url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.address.replacen("http://", "ws://", 1))
}

async fn connect(app: &TestApp, path: &str) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(ws_url(app, path))
        .await
        .unwrap_or_else(|e| panic!("connect {path}: {e}"));
    ws
}

/// The HTTP status a refused handshake answered.
async fn refused_with(request: impl IntoClientRequest + Unpin) -> u16 {
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Ok(_) => panic!("the handshake was accepted"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// The next text message as JSON (control frames skipped), or the close frame as an error.
async fn next_message(ws: &mut Client) -> Result<Value, Option<(CloseCode, String)>> {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map(|f| (f.code, f.reason.to_string())));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("no message within the wait")
}

async fn next_json(ws: &mut Client) -> Value {
    next_message(ws)
        .await
        .unwrap_or_else(|close| panic!("socket closed: {close:?}"))
}

/// The close frame the server ends with (messages before it are skipped).
async fn close_of(ws: &mut Client) -> (CloseCode, String) {
    loop {
        match next_message(ws).await {
            Ok(_) => continue,
            Err(Some(close)) => return close,
            Err(None) => panic!("closed without a close frame"),
        }
    }
}

/// A seat map kept from frames, as a client keeps it.
struct LiveMap {
    ws: Client,
    seq: u64,
    seats: BTreeMap<i64, String>,
    snapshots: usize,
    deltas: Vec<Value>,
}

impl LiveMap {
    async fn open(app: &TestApp, program: i64) -> LiveMap {
        let ws = connect(app, &format!("/ws/programs/{program}/seats")).await;
        let mut map = LiveMap::over(ws);
        let first = next_json(&mut map.ws).await;
        assert_eq!(first["type"], "snapshot", "the first frame is a snapshot");
        map.apply(first);
        map
    }

    /// A map that has read nothing yet.
    fn over(ws: Client) -> LiveMap {
        LiveMap {
            ws,
            seq: 0,
            seats: BTreeMap::new(),
            snapshots: 0,
            deltas: Vec::new(),
        }
    }

    fn apply(&mut self, frame: Value) {
        let seq = frame["seq"].as_u64().expect("every frame has a seq");
        match frame["type"].as_str() {
            Some("snapshot") => {
                self.snapshots += 1;
                self.seats.clear();
                for c in frame["categories"].as_array().unwrap() {
                    for s in c["seats"].as_array().unwrap() {
                        let status = s["status"].as_str().unwrap().to_string();
                        self.seats.insert(s["id"].as_i64().unwrap(), status);
                    }
                }
            }
            Some("delta") => {
                assert_eq!(
                    seq,
                    self.seq + 1,
                    "deltas follow each other by one: {frame}"
                );
                for c in frame["changes"].as_array().unwrap() {
                    let status = c["status"].as_str().unwrap().to_string();
                    self.seats.insert(c["seat_id"].as_i64().unwrap(), status);
                }
                self.deltas.push(frame);
            }
            other => panic!("unexpected frame type {other:?}"),
        }
        self.seq = seq;
    }

    /// Reads frames until `done` holds.
    async fn until(&mut self, done: impl Fn(&LiveMap) -> bool) {
        while !done(self) {
            let frame = next_json(&mut self.ws).await;
            self.apply(frame);
        }
    }

    fn status(&self, seat: i64) -> &str {
        self.seats.get(&seat).map_or("missing", String::as_str)
    }
}

/// Every seat of the program and its status, as Postgres has them.
async fn postgres_map(app: &TestApp, program: i64) -> BTreeMap<i64, String> {
    let rows = app
        .pg
        .get()
        .await
        .unwrap()
        .query(
            "SELECT s.id, s.status::text FROM seats s
             JOIN ticket_categories tc ON tc.id = s.ticket_category_id WHERE tc.program_id = $1",
            &[&program],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn seats_body(program: i64, buyers: &[i64], seats: &[i64]) -> Value {
    let seats: Vec<Value> = seats
        .iter()
        .map(|s| json!({"seat_id": s, "price_cents": 50_000}))
        .collect();
    json!({"program_id": program, "ticket_buyer_ids": buyers, "seats": seats})
}

async fn place(app: &TestApp, token: &str, key: &str, body: &Value) -> String {
    let r = order(app, token, key, body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let placed: Value = r.json().await.unwrap();
    placed["order_no"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_snapshot_comes_first_then_an_order_and_its_cancel_as_the_next_deltas() {
    let app = spawn_app().await;
    let (program, front, floor) = on_sale(&app, 4, 8).await;
    let crowd = buyers(&app, 1, 2).await;
    let mut live = LiveMap::open(&app, program).await;
    assert_eq!(live.seats.len(), 20, "every seat of the program");
    assert!(live.seats.values().all(|s| s == "available"));
    let seats: Vec<i64> = live.seats.keys().take(2).copied().collect();
    let start = live.seq;

    let no = place(
        &app,
        &crowd[0].token,
        "k1",
        &seats_body(program, &crowd[0].buyers, &seats),
    )
    .await;
    live.until(|m| seats.iter().all(|s| m.status(*s) == "held"))
        .await;
    assert_eq!(live.seq, start + live.deltas.len() as u64);
    let held = &live.deltas[0];
    let changed: Vec<i64> = held["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seat_id"].as_i64().unwrap())
        .collect();
    assert_eq!(changed.len(), 2, "only the order's seats changed: {held}");
    assert!(
        held["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ticket_category_id"] == front)
    );
    let counts = held["counts"].as_array().unwrap();
    assert!(
        counts
            .iter()
            .any(|c| c["ticket_category_id"] == front && c["held"] == 2)
    );

    let r = crate::helpers::cancel(&app, &crowd[0].token, &no).await;
    assert_eq!(r.status(), 200);
    live.until(|m| seats.iter().all(|s| m.status(*s) == "available"))
        .await;
    assert_eq!(live.seats, postgres_map(&app, program).await);
    assert!(live.deltas.iter().all(|d| {
        d["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ticket_category_id"] != floor)
    }));
}

#[tokio::test]
async fn expiry_and_payment_show_as_deltas() {
    let app = spawn_app_with(|s| s.orders.payment_window_secs = 3).await;
    let (program, _, _) = on_sale(&app, 4, 8).await;
    let crowd = buyers(&app, 2, 1).await;
    let mut live = LiveMap::open(&app, program).await;
    let ids: Vec<i64> = live.seats.keys().copied().collect();

    place(
        &app,
        &crowd[0].token,
        "lapses",
        &seats_body(program, &crowd[0].buyers, &ids[..1]),
    )
    .await;
    live.until(|m| m.status(ids[0]) == "held").await;
    live.until(|m| m.status(ids[0]) == "available").await;

    let paid = place(
        &app,
        &crowd[1].token,
        "pays",
        &seats_body(program, &crowd[1].buyers, &ids[1..2]),
    )
    .await;
    let (_, pay_url) = start_payment(&app, &crowd[1].token, &paid).await;
    complete(&app, &pay_url).await;
    live.until(|m| m.status(ids[1]) == "sold").await;
    assert_eq!(live.seats, postgres_map(&app, program).await);
}

#[tokio::test]
async fn a_refused_order_never_shows_and_the_seat_map_follows_postgres() {
    let app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 4, 8).await;
    let crowd = buyers(&app, 2, 2).await;
    let mut live = LiveMap::open(&app, program).await;
    let ids: Vec<i64> = live.seats.keys().copied().collect();
    let (taken, innocent, marker) = (ids[0], ids[1], ids[5]);
    // Another writer took a seat behind the actor's back: an order naming it and a free seat
    // is taken in memory, then refused by Postgres.
    app.pg.get().await.unwrap().execute(
        "UPDATE seats SET status = 'held', order_no = 42, hold_expires_at = now() + interval '1 hour' WHERE id = $1",
        &[&taken],
    ).await.unwrap();
    let r = order(
        &app,
        &crowd[0].token,
        "refused",
        &seats_body(program, &crowd[0].buyers, &[taken, innocent]),
    )
    .await;
    assert_eq!(code(r).await, (409, "SEAT_UNAVAILABLE".into()));
    place(
        &app,
        &crowd[1].token,
        "marker",
        &seats_body(program, &crowd[1].buyers[..1], &[marker]),
    )
    .await;
    live.until(|m| m.status(marker) == "held" && m.status(taken) == "held")
        .await;
    let innocent_shown = live
        .deltas
        .iter()
        .flat_map(|d| d["changes"].as_array().unwrap().clone())
        .any(|c| c["seat_id"] == innocent);
    assert!(
        !innocent_shown,
        "the refused order's free seat never appeared held"
    );
    assert_eq!(live.seats, postgres_map(&app, program).await);
}

/// A program with one seated category of `rows` × `cols` (a big snapshot), on sale.
async fn big_program(app: &TestApp, rows: i32, cols: i32) -> i64 {
    let (_, admin) = signed_in_admin(app).await;
    let body = json!({
        "title": "Stadium", "area": "Beijing", "category": "Pop", "venue": "Stadium",
        "per_order_limit": 4, "per_account_limit": 8,
        "on_sale_at": chrono::Utc::now() - chrono::Duration::hours(1),
        "show_times": [chrono::Utc::now() + chrono::Duration::days(9)],
        "ticket_categories": [{"name": "Bowl", "price_cents": 50_000, "rows": rows, "seats_per_row": cols}]
    });
    let r = app
        .post("/api/v1/admin/programs", Some(&admin), &body)
        .await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

/// A socket with a fixed 64 KiB receive buffer: while it does not read, the server's writes to
/// it block once a message outgrows both sides' buffers.
async fn slow_reader(app: &TestApp, path: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let tcp = socket
        .connect(app.address.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(ws_url(app, path), MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    ws
}

#[tokio::test]
async fn a_client_that_falls_behind_gets_a_fresh_snapshot_and_ends_equal_to_postgres() {
    let app = spawn_app_with(|s| {
        s.ws.max_lag_frames = 1;
        s.ws.coalesce_ms = 0;
        s.server.socket_send_buffer_bytes = 16 * 1024;
        s.rate_limit.enabled = false;
    })
    .await;
    // 5,000 seats: a snapshot of some 250 KiB, more than both sides' buffers take.
    let program = big_program(&app, 100, 50).await;
    let crowd = buyers(&app, 6, 1).await;
    let mut slow = LiveMap::over(slow_reader(&app, &format!("/ws/programs/{program}/seats")).await);
    let mut keeper = LiveMap::open(&app, program).await;
    let ids: Vec<i64> = keeper.seats.keys().copied().collect();
    // `slow` reads nothing while six changes go out: with room for one frame it falls behind.
    for (i, b) in crowd.iter().enumerate() {
        place(
            &app,
            &b.token,
            &format!("o{i}"),
            &seats_body(program, &b.buyers, &ids[i..=i]),
        )
        .await;
        keeper.until(|m| m.status(ids[i]) == "held").await;
    }
    slow.until(|m| m.snapshots == 2).await;
    slow.until(|m| (0..6).all(|i| m.status(ids[i]) == "held"))
        .await;
    assert_eq!(slow.seats, postgres_map(&app, program).await);
    assert_eq!(
        keeper.snapshots, 1,
        "a client that keeps up never needs a second snapshot"
    );
}

#[tokio::test]
async fn resync_answers_a_snapshot_at_the_current_seq() {
    let app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 4, 8).await;
    let crowd = buyers(&app, 1, 1).await;
    let mut live = LiveMap::open(&app, program).await;
    let ids: Vec<i64> = live.seats.keys().copied().collect();
    place(
        &app,
        &crowd[0].token,
        "k",
        &seats_body(program, &crowd[0].buyers, &ids[..1]),
    )
    .await;
    live.until(|m| m.status(ids[0]) == "held").await;
    let seq = live.seq;
    live.ws
        .send(Message::text(r#"{"type":"resync"}"#))
        .await
        .unwrap();
    let snapshot = next_json(&mut live.ws).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["seq"], seq, "nothing changed since the last delta");
    live.apply(snapshot);
    assert_eq!(live.seats, postgres_map(&app, program).await);
}

#[tokio::test]
async fn two_programs_never_leak_into_each_other() {
    let app = spawn_app().await;
    let (first, _, _) = on_sale(&app, 4, 8).await;
    let (second, _, _) = on_sale(&app, 4, 8).await;
    let crowd = buyers(&app, 2, 1).await;
    let mut one = LiveMap::open(&app, first).await;
    let mut two = LiveMap::open(&app, second).await;
    assert!(one.seats.keys().all(|s| !two.seats.contains_key(s)));
    let a = *one.seats.keys().next().unwrap();
    let b = *two.seats.keys().next().unwrap();
    place(
        &app,
        &crowd[0].token,
        "a",
        &seats_body(first, &crowd[0].buyers, &[a]),
    )
    .await;
    place(
        &app,
        &crowd[1].token,
        "b",
        &seats_body(second, &crowd[1].buyers, &[b]),
    )
    .await;
    one.until(|m| m.status(a) == "held").await;
    two.until(|m| m.status(b) == "held").await;
    assert_eq!(one.seats.len(), 20, "no seat of the other program appeared");
    assert_eq!(two.seats.len(), 20);
}

#[tokio::test]
async fn subscribing_to_an_unknown_program_is_a_404() {
    let app = spawn_app().await;
    assert_eq!(
        refused_with(ws_url(&app, "/ws/programs/999999/seats")).await,
        404
    );
}

async fn buyer_socket(app: &TestApp, token: &str) -> Client {
    connect(app, &format!("/ws/me?token={token}")).await
}

#[tokio::test]
async fn a_buyers_channel_reaches_all_their_tabs_and_nobody_else() {
    let app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 4, 8).await;
    let crowd = buyers(&app, 2, 1).await;
    let mut tab1 = buyer_socket(&app, &crowd[0].token).await;
    // The second tab sends its token as a sub-protocol, as browsers must.
    let mut request = ws_url(&app, "/ws/me").into_client_request().unwrap();
    let protocols = format!("boxoffice, bearer.{}", crowd[0].token);
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let (mut tab2, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "boxoffice");
    let mut other = buyer_socket(&app, &crowd[1].token).await;
    let ids = seat_ids(&app, program).await;
    let no = place(
        &app,
        &crowd[0].token,
        "k",
        &seats_body(program, &crowd[0].buyers, &[ids[0].0]),
    )
    .await;
    let (_, pay_url) = start_payment(&app, &crowd[0].token, &no).await;
    complete(&app, &pay_url).await;
    for tab in [&mut tab1, &mut tab2] {
        let created = next_json(tab).await;
        assert_eq!(
            (
                created["type"].as_str(),
                created["order_no"].as_str(),
                created["status"].as_str()
            ),
            (Some("order"), Some(no.as_str()), Some("pending_payment"))
        );
        let paid = next_json(tab).await;
        assert_eq!(
            (paid["order_no"].as_str(), paid["status"].as_str()),
            (Some(no.as_str()), Some("paid"))
        );
    }
    let nothing = tokio::time::timeout(Duration::from_millis(500), other.next()).await;
    assert!(nothing.is_err(), "another buyer got {nothing:?}");
}

#[tokio::test]
async fn invalid_or_revoked_tokens_are_refused_and_a_revoked_one_closes_its_open_socket() {
    let app = spawn_app_with(|s| s.ws.auth_recheck_secs = 1).await;
    let (_, token) = app.signed_in_buyer().await;
    assert_eq!(refused_with(ws_url(&app, "/ws/me")).await, 401);
    assert_eq!(
        refused_with(ws_url(&app, "/ws/me?token=not-a-token")).await,
        401
    );
    let mut open = buyer_socket(&app, &token).await;
    let r = app.delete_as(&token, "/api/v1/sessions/current").await;
    assert!(r.status().is_success(), "logout: {}", r.status());
    closes_as_signed_out(&mut open).await;
    assert_eq!(
        refused_with(ws_url(&app, &format!("/ws/me?token={token}"))).await,
        401
    );
}

/// The socket closes as signed out within a few re-check rounds.
async fn closes_as_signed_out(open: &mut Client) {
    let started = std::time::Instant::now();
    let (close, reason) = close_of(open).await;
    assert_eq!(
        (close, reason.as_str()),
        (CloseCode::Policy, "token revoked")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
}

/// Signing out everywhere (or an operator demoting or disabling the account) sets the holder's
/// stamp: a socket opened with any earlier token of theirs closes, not only a revoked one.
#[tokio::test]
async fn signing_out_everywhere_closes_the_sockets_of_every_earlier_token() {
    let app = spawn_app_with(|s| s.ws.auth_recheck_secs = 1).await;
    let email = format!("tabs-{}@example.com", uuid::Uuid::new_v4().simple());
    app.register(&email, "correct horse battery").await;
    let phone = app.login(&email, "correct horse battery").await;
    let laptop = app.login(&email, "correct horse battery").await;
    let mut open = buyer_socket(&app, &phone).await;
    let r = app.delete_as(&laptop, "/api/v1/sessions").await;
    assert!(
        r.status().is_success(),
        "sign out everywhere: {}",
        r.status()
    );
    closes_as_signed_out(&mut open).await;
}

#[tokio::test]
async fn bad_frames_close_the_socket_with_the_right_code() {
    let app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 4, 8).await;
    let path = format!("/ws/programs/{program}/seats");
    let cases: [(Message, CloseCode); 4] = [
        (
            Message::Binary(Bytes::from_static(b"\x00\x01")),
            CloseCode::Unsupported,
        ),
        (Message::text("not json"), CloseCode::Unsupported),
        (
            Message::text(r#"{"type":"buy-everything"}"#),
            CloseCode::Unsupported,
        ),
        (Message::text("x".repeat(64 * 1024)), CloseCode::Size),
    ];
    for (message, expected) in cases {
        let mut ws = connect(&app, &path).await;
        next_json(&mut ws).await;
        ws.send(message).await.unwrap();
        assert_eq!(close_of(&mut ws).await.0, expected);
    }
    // An unmasked client frame breaks the protocol (RFC 6455 §5.1): 1002.
    assert_eq!(raw_unmasked_frame_close_code(&app, &path).await, 1002);
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "the server lives on"
    );
}

/// Sends a handshake by hand, then an unmasked text frame; answers the close code received.
async fn raw_unmasked_frame_close_code(app: &TestApp, path: &str) -> u16 {
    let host = app.address.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(host).await.unwrap();
    let handshake = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed during the handshake");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    tcp.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    // Frames from the server (snapshot first) until a close frame (opcode 8).
    let mut stream = seen;
    let end = stream.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    stream.drain(..end);
    loop {
        if let Some((opcode, payload, used)) = parse_frame(&stream) {
            if opcode == 8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
            stream.drain(..used);
            continue;
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed without a close frame");
        stream.extend_from_slice(&buf[..n]);
    }
}

/// (opcode, payload, bytes used) of the first whole unmasked server frame in `b`.
fn parse_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    let (mut len, mut at) = ((b[1] & 0x7f) as usize, 2);
    if len == 126 {
        len = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize;
        at = 4;
    } else if len == 127 {
        len = u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize;
        at = 10;
    }
    let payload = b.get(at..at + len)?.to_vec();
    Some((b[0] & 0x0f, payload, at + len))
}

#[tokio::test]
async fn origins_and_connection_limits_are_enforced() {
    let app = spawn_app_with(|s| {
        s.ws.max_per_ip = 2;
        s.ws.allowed_origins = vec!["https://tickets.example".into()];
    })
    .await;
    let (program, _, _) = on_sale(&app, 4, 8).await;
    let url = ws_url(&app, &format!("/ws/programs/{program}/seats"));
    let with_origin = |origin: &str| {
        let mut r = url.as_str().into_client_request().unwrap();
        r.headers_mut().insert("Origin", origin.parse().unwrap());
        r
    };
    assert_eq!(refused_with(with_origin("https://evil.example")).await, 403);
    let (first, _) = tokio_tungstenite::connect_async(with_origin("https://tickets.example"))
        .await
        .unwrap();
    let second = connect(&app, &format!("/ws/programs/{program}/seats")).await;
    assert_eq!(
        refused_with(url.as_str()).await,
        429,
        "a third socket from one address"
    );
    drop(first);
    let third = poll_until(
        WAIT,
        async || tokio_tungstenite::connect_async(url.as_str()).await.ok(),
        |c| c.is_some(),
    )
    .await;
    assert!(third.is_some(), "a closed socket frees its place");
    drop(second);
}

#[tokio::test]
async fn idle_peers_are_closed_and_pinged_peers_stay() {
    let app = spawn_app_with(|s| {
        s.ws.ping_interval_secs = 1;
        s.ws.idle_timeout_secs = 2;
    })
    .await;
    let (program, _, _) = on_sale(&app, 4, 8).await;
    let path = format!("/ws/programs/{program}/seats");
    // A peer that reads (and so answers pings) stays open past the idle timeout.
    let mut alive = connect(&app, &path).await;
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, alive.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Close(f)))) => panic!("a live peer was closed: {f:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("socket ended: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(pings >= 2, "pinged {pings} times in 4 s");
    // A peer that neither reads nor answers is closed as idle.
    let mut silent = connect(&app, &path).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, reason) = close_of(&mut silent).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Away, "idle"));
}

#[tokio::test]
async fn shutdown_closes_open_sockets_with_going_away() {
    let mut app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 4, 8).await;
    let crowd = buyers(&app, 1, 1).await;
    let mut seats = connect(&app, &format!("/ws/programs/{program}/seats")).await;
    next_json(&mut seats).await;
    let mut me = buyer_socket(&app, &crowd[0].token).await;
    app.stop_gracefully().await;
    for ws in [&mut seats, &mut me] {
        let (code, reason) = close_of(ws).await;
        assert_eq!(
            (code, reason.as_str()),
            (CloseCode::Away, "server shutting down")
        );
    }
}
