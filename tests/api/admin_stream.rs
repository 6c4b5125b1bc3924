//! admin_stream: `GET /ws/admin` — the operators' monitoring frames (one per tick, shared by
//! every admin socket), their figures against the orders placed and Postgres, alerts as they
//! happen, and who may open the stream.

use crate::helpers::{TestApp, buyers, on_sale, order, signed_in_admin, spawn_app};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A frame is due about once a second; this allows for a loaded test machine.
const FRAME_WAIT: Duration = Duration::from_secs(5);

fn admin_url(app: &TestApp, query: &str) -> String {
    format!(
        "{}/ws/admin{query}",
        app.address.replacen("http://", "ws://", 1)
    )
}

async fn admin_socket(app: &TestApp, token: &str) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(admin_url(app, &format!("?token={token}")))
        .await
        .unwrap_or_else(|e| panic!("admin stream refused: {e}"));
    ws
}

/// The next frame's text exactly as sent, within `within`; `None` when none came.
async fn next_text(ws: &mut Client, within: Duration) -> Option<String> {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(Message::Close(frame))) => panic!("stream closed: {frame:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("stream failed: {e}"),
                None => panic!("stream ended"),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()
}

/// The next frame as JSON, checked to be a stats frame.
async fn next_frame(ws: &mut Client) -> Value {
    let text = next_text(ws, FRAME_WAIT)
        .await
        .expect("no frame within the wait");
    let frame: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(frame["type"], "stats", "{frame}");
    frame
}

/// Frames until one satisfies `done` (returned), failing after `within`.
async fn frame_where(ws: &mut Client, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        let left = deadline - tokio::time::Instant::now();
        let Some(text) = next_text(ws, left).await else {
            break;
        };
        last = serde_json::from_str(&text).unwrap();
        if done(&last) {
            return last;
        }
    }
    panic!("no frame as expected within {within:?}; last: {last}");
}

fn category(frame: &Value, id: i64) -> Option<&Value> {
    frame["categories"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == id)
}

/// The category's held count in the actor, in Postgres and in the Redis mirror.
fn held(frame: &Value, id: i64) -> (Option<i64>, Option<i64>, Option<i64>) {
    let c = category(frame, id);
    let count = |store: &str| c.and_then(|c| c[store]["held"].as_i64());
    (count("actor"), count("postgres"), count("redis"))
}

#[tokio::test]
async fn frames_count_the_orders_placed_alike_in_the_actor_postgres_and_the_mirror() {
    let app = spawn_app().await;
    let (program, front, floor) = on_sale(&app, 4, 8).await;
    let crowd = buyers(&app, 2, 3).await;
    let (_, admin) = signed_in_admin(&app).await;
    let mut ws = admin_socket(&app, &admin).await;
    let first = next_frame(&mut ws).await;
    for key in ["at", "categories", "pipeline", "alerts"] {
        assert!(first.get(key).is_some(), "frame without {key}: {first}");
    }

    let seated = json!({"program_id": program, "ticket_buyer_ids": crowd[0].buyers,
                        "ticket_category_id": front, "quantity": 3});
    let r = order(&app, &crowd[0].token, "stream-1", &seated).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let ga = json!({"program_id": program, "ticket_buyer_ids": &crowd[1].buyers[..2],
                    "ticket_category_id": floor, "quantity": 2});
    let r = order(&app, &crowd[1].token, "stream-2", &ga).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // The holds also show as a rate, in that frame or an earlier one.
    let hold_rate_seen = std::cell::Cell::new(false);
    let hold_latency_seen = std::cell::Cell::new(false);
    let frame = frame_where(&mut ws, Duration::from_secs(10), |f| {
        let rate = category(f, front).and_then(|c| c["holds_per_sec"].as_f64());
        hold_rate_seen.set(hold_rate_seen.get() || rate.is_some_and(|r| r > 0.0));
        let latency = category(f, front).map(|c| &c["hold_latency_ms"]);
        let p50 = latency.and_then(|l| l["p50"].as_f64());
        let p99 = latency.and_then(|l| l["p99"].as_f64());
        let measured = p50
            .zip(p99)
            .is_some_and(|(p50, p99)| p50 > 0.0 && p50 <= p99);
        hold_latency_seen.set(hold_latency_seen.get() || measured);
        held(f, front) == (Some(3), Some(3), Some(3))
            && held(f, floor) == (Some(2), Some(2), Some(2))
            && hold_rate_seen.get()
            && hold_latency_seen.get()
    })
    .await;
    for (id, capacity, ordered) in [(front, 20, 3), (floor, 30, 2)] {
        let c = category(&frame, id).unwrap();
        assert_eq!(c["capacity"], capacity, "{c}");
        assert_eq!(c["program_id"], program, "{c}");
        let expected = json!({"available": capacity - ordered, "held": ordered, "sold": 0});
        assert_eq!(c["postgres"], expected, "{c}");
        for count in ["available", "held", "sold"] {
            assert_eq!(c["actor"][count], c["postgres"][count], "{count}: {c}");
            assert_eq!(c["redis"][count], c["postgres"][count], "{count}: {c}");
        }
        assert!(c["mailbox_depth"].is_u64(), "{c}");
    }
    let pipeline = &frame["pipeline"];
    for key in [
        "outbox_backlog",
        "relay_lag_seconds",
        "consumer_lag_seconds",
        "discarded_orders",
        "findings_open",
    ] {
        assert!(pipeline[key].is_number(), "{key}: {pipeline}");
    }
    assert!(
        pipeline["writer"]["batches_total"].as_u64().unwrap() >= 1,
        "{pipeline}"
    );

    // The same figures for Prometheus; latencies as histograms (buckets) for Grafana.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for line in [
        format!("category_held{{category=\"{front}\"}}"),
        format!("category_mailbox_depth{{category=\"{floor}\"}}"),
        "findings_open ".into(),
        "writer_commit_seconds_bucket{le=".into(),
    ] {
        assert!(metrics.contains(&line), "/metrics without {line}");
    }
}

#[tokio::test]
async fn a_problem_finding_shows_as_an_alert_within_two_seconds_and_once() {
    let app = spawn_app().await;
    let (_, admin) = signed_in_admin(&app).await;
    let mut ws = admin_socket(&app, &admin).await;
    let before = next_frame(&mut ws).await;
    let open_before = before["pipeline"]["findings_open"].as_i64().unwrap();

    let id: i64 = app
        .pg
        .get()
        .await
        .unwrap()
        .query_one(
            "INSERT INTO reconciliation_findings (kind, subject, status, details)
             VALUES ('seat_status_mismatch', 'seat:42', 'reconciled_with_problem',
                     '{\"actor\": \"held\", \"postgres\": \"available\"}')
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let has_alert = |f: &Value| {
        f["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["id"] == id && a["source"] == "finding"))
    };
    let frame = frame_where(&mut ws, Duration::from_secs(2), has_alert).await;
    let alert = frame["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .unwrap();
    assert_eq!(alert["kind"], "seat_status_mismatch", "{alert}");
    assert_eq!(alert["subject"], "seat:42", "{alert}");
    assert_eq!(alert["status"], "reconciled_with_problem", "{alert}");
    assert_eq!(alert["details"]["actor"], "held", "{alert}");
    assert_eq!(frame["pipeline"]["findings_open"], open_before + 1);

    let next = next_frame(&mut ws).await;
    assert!(!has_alert(&next), "an alert is sent once: {next}");
}

/// The HTTP status a refused handshake answered.
async fn refused_with(url: String) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Ok(_) => panic!("the handshake was accepted"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn buyers_are_refused_with_403_and_no_token_with_401() {
    let app = spawn_app().await;
    let (_, buyer) = app.signed_in_buyer().await;
    assert_eq!(
        refused_with(admin_url(&app, &format!("?token={buyer}"))).await,
        403
    );
    assert_eq!(refused_with(admin_url(&app, "")).await, 401);
    assert_eq!(
        refused_with(admin_url(&app, "?token=not-a-token")).await,
        401
    );
    // The same route opens for an admin, so the refusals above are about the caller.
    let (_, admin) = signed_in_admin(&app).await;
    let mut ws = admin_socket(&app, &admin).await;
    next_frame(&mut ws).await;
}

#[tokio::test]
async fn two_admins_get_the_same_bytes_for_the_same_tick() {
    let app = spawn_app().await;
    let (_, admin) = signed_in_admin(&app).await;
    let mut one = admin_socket(&app, &admin).await;
    let mut two = admin_socket(&app, &admin).await;
    let mut seen: [BTreeMap<u64, String>; 2] = Default::default();
    for _ in 0..3 {
        for (ws, frames) in [(&mut one, 0), (&mut two, 1)] {
            let text = next_text(ws, FRAME_WAIT)
                .await
                .expect("no frame within the wait");
            let frame: Value = serde_json::from_str(&text).unwrap();
            seen[frames].insert(frame["seq"].as_u64().unwrap(), text);
        }
    }
    let common: Vec<u64> = seen[0]
        .keys()
        .filter(|seq| seen[1].contains_key(seq))
        .copied()
        .collect();
    assert!(
        common.len() >= 2,
        "both clients should see the same ticks: {:?} / {:?}",
        seen[0].keys(),
        seen[1].keys()
    );
    for seq in common {
        assert_eq!(seen[0][&seq], seen[1][&seq], "frame {seq} differs");
    }
}
