//! Order events on Pulsar (pulsar-lite through the bridge; each test has its own topic prefix):
//! the relay publishes every state change once and in order per order, survives a broker
//! outage, runs once per database, never skips a late commit; consumers apply at most once and
//! dead-letter poison; operators see it all in the MQ message records.

use crate::helpers::{
    TestApp, buyers, code, count, on_sale, order, poll_until, signed_in_admin, spawn_app,
    spawn_app_with,
};
use crate::payments::{act, complete, start_payment, status_once};
use boxoffice::config::Settings;
use boxoffice::events::Event;
use boxoffice::events::bookkeeping::Notifications;
use boxoffice::events::consumer::{Apply, EventConsumer};
use boxoffice::events::hub::Hub;
use boxoffice::store::{PulsarStore, StoreError};
use futures::StreamExt;
use futures::future::BoxFuture;
use pulsar::SubType;
use pulsar::consumer::InitialPosition;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The broker as tests reach it (the dev bridge), whatever URL the app was given.
const BRIDGE: &str = "pulsar://127.0.0.1:6650";

/// A subscription of the test's own on the app's `order-events`, collecting the order events
/// that arrive (catalog events of the test's own program set-up are left out).
struct Tap {
    seen: Arc<Mutex<Vec<Event>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pulsar_of(settings: &Settings) -> PulsarStore {
    let mut pulsar = settings.pulsar.clone();
    pulsar.url = BRIDGE.into();
    PulsarStore::connect(&pulsar).await.expect("broker")
}

impl Tap {
    async fn start(settings: &Settings) -> Tap {
        let store = pulsar_of(settings).await;
        let mut consumer: pulsar::Consumer<Vec<u8>, _> = store
            .client()
            .consumer()
            .with_topic(store.topic("order-events"))
            .with_subscription(format!("tap-{}", uuid::Uuid::new_v4()))
            .with_subscription_type(SubType::Exclusive)
            .with_options(pulsar::ConsumerOptions {
                initial_position: InitialPosition::Earliest,
                ..Default::default()
            })
            .build()
            .await
            .expect("tap subscribes");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            // pulsar-lite delivers a message again when it was published in a burst (same
            // message id, see docs/pulsar-lite.md): that is the broker's at-least-once delivery,
            // not a second publish, which would carry a new message id and is still recorded.
            let mut delivered = std::collections::HashSet::new();
            while let Some(Ok(message)) = consumer.next().await {
                let id = &message.message_id.id;
                let first = delivered.insert((id.ledger_id, id.entry_id, id.batch_index));
                if let Ok(event) = serde_json::from_slice::<Event>(&message.payload.data)
                    && first
                    && event.is_order_event()
                {
                    sink.lock().unwrap().push(event);
                }
                let _ = consumer.ack(&message).await;
            }
        });
        Tap { seen, task }
    }

    /// What arrived, once `done` holds for it (or after `within`).
    async fn until(&self, within: Duration, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        poll_until(
            within,
            async || self.seen.lock().unwrap().clone(),
            |seen| done(seen),
        )
        .await
    }
}

/// A `pulsar-bridge` process of the test's own in front of the shared pulsar-lite, killed on
/// drop: the app's "broker", which the test can stop and start again on the same port.
struct PrivateBroker {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateBroker {
    async fn start() -> PrivateBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut broker = PrivateBroker { port, child: None };
        broker.restart().await;
        broker
    }

    fn url(&self) -> String {
        format!("pulsar://127.0.0.1:{}", self.port)
    }

    /// The bridge binary: next to this test binary's folder, or where `dev/services.sh` built it.
    fn binary() -> std::path::PathBuf {
        let exe = std::env::current_exe().unwrap();
        let beside = exe
            .parent()
            .and_then(|d| d.parent())
            .map(|d| d.join("pulsar-bridge"));
        match beside {
            Some(path) if path.exists() => path,
            _ => {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/pulsar-bridge")
            }
        }
    }

    async fn restart(&mut self) {
        let child = std::process::Command::new(Self::binary())
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--upstream",
                "127.0.0.1:6651",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start pulsar-bridge");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        let up = poll_until(
            Duration::from_secs(10),
            async || tokio::net::TcpStream::connect(&addr).await.is_ok(),
            |up| *up,
        )
        .await;
        assert!(up, "the private bridge listens");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The event types seen for `order_no`, in arrival order.
fn types_of(events: &[Event], order_no: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.order_no == order_no)
        .map(|e| e.event_type.clone())
        .collect()
}
/// A GA order for the buyer's first `n` ticket buyers: its number.
async fn ga_order(
    app: &TestApp,
    b: &crate::helpers::Buyer,
    program: i64,
    floor: i64,
    key: &str,
    n: usize,
) -> String {
    let body = json!({"program_id": program, "ticket_buyer_ids": b.buyers[..n], "ticket_category_id": floor, "quantity": n});
    let r = order(app, &b.token, key, &body).await;
    assert_eq!(r.status(), 201, "{key}");
    let v: Value = r.json().await.unwrap();
    v["order_no"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_change_is_published_once_and_in_order_per_order() {
    // Long enough for the payment and the cancel on a slow machine; the third order waits it out.
    let app = spawn_app_with(|s| s.orders.payment_window_secs = 8).await;
    let tap = Tap::start(&app.settings).await;
    let (program, _, floor) = on_sale(&app, 2, 4).await;
    let crowd = buyers(&app, 3, 1).await;
    let paid = ga_order(&app, &crowd[0], program, floor, "paid", 1).await;
    let cancelled = ga_order(&app, &crowd[1], program, floor, "cancelled", 1).await;
    let expired = ga_order(&app, &crowd[2], program, floor, "expired", 1).await;
    let (_, pay_url) = start_payment(&app, &crowd[0].token, &paid).await;
    complete(&app, &pay_url).await;
    status_once(&app, &crowd[0].token, &paid, "paid").await;
    assert_eq!(
        act(&app, &crowd[0].token, &paid, "refund").await.status(),
        200
    );
    assert_eq!(
        act(&app, &crowd[1].token, &cancelled, "cancel")
            .await
            .status(),
        200
    );
    status_once(&app, &crowd[2].token, &expired, "expired").await;

    let seen = tap.until(Duration::from_secs(15), |e| e.len() >= 7).await;
    assert_eq!(
        types_of(&seen, &paid),
        ["OrderCreated", "OrderPaid", "OrderRefunded"]
    );
    assert_eq!(
        types_of(&seen, &cancelled),
        ["OrderCreated", "OrderCancelled"]
    );
    assert_eq!(types_of(&seen, &expired), ["OrderCreated", "OrderExpired"]);
    let ids: std::collections::HashSet<_> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), seen.len(), "no event twice");
    assert!(
        seen.iter()
            .all(|e| e.user_id.is_some() && e.program_id == Some(program))
    );
    let sql = "SELECT count(*) FROM outbox WHERE send_status <> 'sent' OR message_id IS NULL";
    // Rows are marked once the batch's receipts are back, a moment after delivery.
    let unsent = poll_until(
        Duration::from_secs(5),
        async || count(&app, sql).await,
        |n| *n == 0,
    )
    .await;
    assert_eq!(unsent, 0, "every row marked sent with its message id");
    // The bookkeeping consumer saw every event and found each consistent with its order.
    let ok = poll_until(
        Duration::from_secs(10),
        async || {
            count(
                &app,
                "SELECT count(*) FROM outbox WHERE reconcile_status = 'ok' AND event_type LIKE 'Order%'",
            )
            .await
        },
        |n| *n == 7,
    )
    .await;
    assert_eq!(ok, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_away_orders_still_commit_and_the_backlog_arrives_in_order() {
    // A broker of the app's own (a bridge in front of the shared pulsar-lite): stopping it
    // takes Pulsar away from the app only. (A TCP cut would not do: lookups send clients
    // straight to the address the bridge advertises.)
    let mut broker = PrivateBroker::start().await;
    let url = broker.url();
    let app = spawn_app_with(|s| {
        s.pulsar.url = url;
        s.events.relay_backoff_max_ms = 500;
        s.health.probe_interval_ms = 100;
    })
    .await;
    let tap = Tap::start(&app.settings).await;
    let (program, _, floor) = on_sale(&app, 2, 4).await;
    let crowd = buyers(&app, 4, 1).await;
    broker.stop();
    let mut placed = Vec::new();
    for (i, b) in crowd.iter().enumerate() {
        placed.push(ga_order(&app, b, program, floor, &format!("away-{i}"), 1).await);
    }
    assert_eq!(
        act(&app, &crowd[0].token, &placed[0], "cancel")
            .await
            .status(),
        200
    );
    // Orders need no broker: the node stays ready, degraded, naming Pulsar (the probe's view
    // turns within a round or two).
    let ready = poll_until(
        Duration::from_secs(15),
        async || app.get("/readyz").await.json::<Value>().await.unwrap(),
        |v| v["status"] == "degraded",
    )
    .await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["pulsar"], "down", "{ready}");
    assert_eq!(ready["postgres"], "up", "{ready}");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM outbox WHERE send_status <> 'sent' AND event_type LIKE 'Order%'"
        )
        .await,
        5,
        "everything waits in the outbox"
    );

    broker.restart().await;
    let seen = tap.until(Duration::from_secs(20), |e| e.len() >= 5).await;
    assert_eq!(
        types_of(&seen, &placed[0]),
        ["OrderCreated", "OrderCancelled"]
    );
    for no in &placed[1..] {
        assert_eq!(types_of(&seen, no), ["OrderCreated"]);
    }
    let ids: std::collections::HashSet<_> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 5, "the whole backlog, each event once: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_database_publish_each_row_once_and_one_takes_over() {
    let mut app = spawn_app().await;
    let sibling = app.spawn_sibling().await;
    let tap = Tap::start(&app.settings).await;
    let (program, _, floor) = on_sale(&app, 2, 4).await;
    let crowd = buyers(&app, 6, 1).await;
    for (i, b) in crowd.iter().take(5).enumerate() {
        let node = if i % 2 == 0 { &app } else { &sibling };
        ga_order(node, b, program, floor, &format!("two-{i}"), 1).await;
    }
    let seen = tap.until(Duration::from_secs(10), |e| e.len() >= 5).await;
    assert_eq!(seen.len(), 5);
    // The lease holder goes away; the other process publishes from now on.
    let holder = count(
        &app,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .await;
    assert_eq!(holder, 1, "exactly one relay holds the lease");
    app.kill();
    let last = ga_order(&sibling, &crowd[5], program, floor, "after", 1).await;
    let seen = tap.until(Duration::from_secs(15), |e| e.len() >= 6).await;
    assert_eq!(types_of(&seen, &last), ["OrderCreated"]);
    // A moment more: a second copy of any row would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: std::collections::HashSet<_> = tap
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        ids.len(),
        tap.seen.lock().unwrap().len(),
        "no row published twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_commits_late_with_a_lower_id_is_still_published() {
    let app = spawn_app().await;
    let tap = Tap::start(&app.settings).await;
    let (program, _, floor) = on_sale(&app, 2, 4).await;
    let crowd = buyers(&app, 1, 1).await;
    // A transaction takes its outbox id now and commits later.
    let mut client = app.pg.get().await.unwrap();
    let slow = client.transaction().await.unwrap();
    let late_id: i64 = slow
        .query_one(
            "INSERT INTO outbox (event_id, topic, message_key, event_type, order_no, program_id, payload)
             VALUES (gen_random_uuid(), 'order-events', '7', 'OrderCancelled', 7, $1, '{}') RETURNING id",
            &[&program],
        )
        .await
        .unwrap()
        .get(0);
    let no = ga_order(&app, &crowd[0], program, floor, "early", 1).await;
    let seen = tap.until(Duration::from_secs(10), |e| !e.is_empty()).await;
    assert_eq!(
        types_of(&seen, &no),
        ["OrderCreated"],
        "the higher id went first"
    );
    slow.commit().await.unwrap();
    let seen = tap.until(Duration::from_secs(10), |e| e.len() >= 2).await;
    assert_eq!(types_of(&seen, "7"), ["OrderCancelled"]);
    let sql = format!("SELECT count(*) FROM outbox WHERE id = {late_id} AND send_status = 'sent'");
    // Marked once the broker's receipt is back, which may be a moment after delivery.
    let sent = poll_until(
        Duration::from_secs(5),
        async || count(&app, &sql).await,
        |n| *n == 1,
    )
    .await;
    assert_eq!(sent, 1);
}

/// Counts committed applications; fails every time when `poison` is set, or for the one order named.
struct Counting {
    applied: AtomicUsize,
    poison: bool,
    poison_order: Option<String>,
}

impl Counting {
    fn new(poison: bool) -> Self {
        Counting {
            applied: AtomicUsize::new(0),
            poison,
            poison_order: None,
        }
    }
}

impl Apply for Counting {
    fn wants(&self, event: &Event) -> bool {
        event.is_order_event()
    }

    fn apply<'a>(
        &'a self,
        _tx: &'a deadpool_postgres::Transaction<'a>,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if self.poison || self.poison_order.as_deref() == Some(&event.order_no) {
                return Err(StoreError::Conflict(
                    "this event can never be applied".into(),
                ));
            }
            Ok(())
        })
    }

    /// Counted once committed: an attempt rolled back with its batch is no application.
    fn after_commit<'a>(&'a self, _event: &'a Event) -> BoxFuture<'a, ()> {
        self.applied.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

fn test_consumer(app: &TestApp, pulsar: PulsarStore, apply: Arc<dyn Apply>) -> EventConsumer {
    let mut settings = app.settings.events;
    settings.max_attempts = 3;
    settings.retry_backoff_ms = 10;
    EventConsumer {
        name: format!("test-{}", uuid::Uuid::new_v4()),
        sub_type: SubType::Failover,
        start: InitialPosition::Earliest,
        apply,
        pool: app.pg.clone(),
        pulsar,
        settings,
        stats: Default::default(),
    }
}

/// Subscribes `consumer` now and runs it in the background: nothing published afterwards can
/// be missed. Answers the switch that stops it.
async fn start_consumer(consumer: EventConsumer) -> tokio::sync::watch::Sender<bool> {
    let stream = consumer.subscribe().await.expect("subscribes");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(consumer.run_from(Some(stream), stopped));
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stopped_between_apply_and_ack_applies_once_after_redelivery() {
    let app = spawn_app().await;
    let tap = Tap::start(&app.settings).await;
    let counting = Arc::new(Counting::new(false));
    let consumer = test_consumer(&app, pulsar_of(&app.settings).await, counting.clone());
    let stream = consumer.subscribe().await.unwrap();
    let (program, _, floor) = on_sale(&app, 2, 4).await;
    let crowd = buyers(&app, 1, 1).await;
    ga_order(&app, &crowd[0], program, floor, "once", 1).await;
    let event = tap
        .until(Duration::from_secs(10), |e| !e.is_empty())
        .await
        .remove(0);
    // Applied and committed, then the process died before acknowledging: the broker still has
    // the message for this subscription and delivers it.
    assert!(consumer.apply_once(&event).await.unwrap());
    let stats = consumer.stats.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(consumer.run_from(Some(stream), stopped));
    let duplicates = poll_until(
        Duration::from_secs(10),
        async || stats.duplicates.load(Ordering::SeqCst),
        |n| *n == 1,
    )
    .await;
    assert_eq!(duplicates, 1, "the redelivered event was recognised");
    assert_eq!(
        counting.applied.load(Ordering::SeqCst),
        1,
        "applied exactly once"
    );
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_ends_in_the_dead_letter_record_after_n_tries() {
    let app = spawn_app().await;
    let (program, _, floor) = on_sale(&app, 2, 4).await;
    let crowd = buyers(&app, 1, 1).await;
    let poison = Arc::new(Counting::new(true));
    let consumer = test_consumer(&app, pulsar_of(&app.settings).await, poison);
    let name = consumer.name.clone();
    let stop = start_consumer(consumer).await;
    let no = ga_order(&app, &crowd[0], program, floor, "poison", 1).await;
    let dead = poll_until(
        Duration::from_secs(20),
        async || {
            let sql = format!(
                "SELECT count(*) FROM dead_letters WHERE consumer = '{name}' AND attempts = 3
                   AND payload->>'order_no' = '{no}'"
            );
            count(&app, &sql).await
        },
        |n| *n == 1,
    )
    .await;
    let failures = count(
        &app,
        "SELECT coalesce(max(attempts), -1)::bigint FROM consumer_failures",
    )
    .await;
    let inbox = count(&app, "SELECT count(*) FROM consumer_inbox").await;
    assert_eq!(
        dead, 1,
        "dead-lettered after 3 attempts (failures {failures}, inbox {inbox})"
    );
    let applied = count(
        &app,
        &format!("SELECT count(*) FROM consumer_inbox WHERE consumer = '{name}'"),
    )
    .await;
    assert_eq!(applied, 0, "a failed attempt leaves nothing applied");
    let _ = stop.send(true);
}

/// `n` one-ticket GA orders, one per account, and their `OrderCreated` events as published.
async fn published_orders(app: &TestApp, tap: &Tap, n: usize) -> Vec<Event> {
    let (program, _, floor) = on_sale(app, 2, 4).await;
    let crowd = buyers(app, n, 1).await;
    for (i, buyer) in crowd.iter().enumerate() {
        ga_order(app, buyer, program, floor, &format!("k{i}"), 1).await;
    }
    tap.until(Duration::from_secs(10), |e| e.len() >= n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_delivered_together_are_applied_in_one_transaction_each_once() {
    // No consumers of the server's own: the outbox rows' reconcile status is this test's alone.
    let app = spawn_app_with(|s| s.events.consumers = false).await;
    let tap = Tap::start(&app.settings).await;
    let mut events = published_orders(&app, &tap, 3).await;
    // The third claims a payment its order never had: bookkeeping must call it a problem.
    events[2].event_type = "OrderPaid".into();
    let consumer = EventConsumer {
        apply: Arc::new(boxoffice::events::bookkeeping::Bookkeeping),
        ..test_consumer(
            &app,
            pulsar_of(&app.settings).await,
            Arc::new(Counting::new(false)),
        )
    };
    let batch: Vec<&Event> = vec![&events[0], &events[1], &events[0], &events[2]];
    let fresh = consumer.apply_all_once(&batch).await.unwrap();
    assert_eq!(
        fresh,
        [true, true, false, true],
        "a repeat within the batch is not new"
    );
    let again = consumer.apply_all_once(&batch).await.unwrap();
    assert_eq!(again, [false; 4], "nothing is applied twice");
    let statuses = count(
        &app,
        "SELECT count(*) FILTER (WHERE reconcile_status = 'ok') * 10
              + count(*) FILTER (WHERE reconcile_status = 'problem') FROM outbox WHERE event_type LIKE 'Order%'",
    )
    .await;
    assert_eq!(
        statuses, 21,
        "two rows ok, one problem, as one at a time would judge"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_in_a_backlog_costs_only_itself() {
    let app = spawn_app().await;
    let tap = Tap::start(&app.settings).await;
    // Published before the consumer subscribes: it finds a backlog (it starts from the earliest).
    let events = published_orders(&app, &tap, 6).await;
    let counting = Arc::new(Counting {
        poison_order: Some(events[2].order_no.clone()),
        ..Counting::new(false)
    });
    let consumer = test_consumer(&app, pulsar_of(&app.settings).await, counting.clone());
    let name = consumer.name.clone();
    let stop = start_consumer(consumer).await;
    let dead = poll_until(
        Duration::from_secs(20),
        async || {
            let sql = format!("SELECT count(*) FROM dead_letters WHERE consumer = '{name}'");
            count(&app, &sql).await
        },
        |n| *n == 1,
    )
    .await;
    assert_eq!(dead, 1, "the poison event is dead-lettered");
    let inbox = poll_until(
        Duration::from_secs(10),
        async || {
            let sql = format!("SELECT count(*) FROM consumer_inbox WHERE consumer = '{name}'");
            count(&app, &sql).await
        },
        |n| *n == 5,
    )
    .await;
    assert_eq!(inbox, 5, "every other event of the backlog is applied");
    assert_eq!(counting.applied.load(Ordering::SeqCst), 5, "each once");
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notification_consumer_hands_each_buyers_events_to_their_channels() {
    let app = spawn_app().await;
    let (program, _, floor) = on_sale(&app, 2, 4).await;
    let crowd = buyers(&app, 1, 1).await;
    let hub = Hub::default();
    let user: i64 = app
        .pg
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT user_id FROM ticket_buyers WHERE id = $1",
            &[&crowd[0].buyers[0]],
        )
        .await
        .unwrap()
        .get(0);
    let (mut tab1, mut tab2) = (hub.subscribe(user), hub.subscribe(user));
    let consumer = test_consumer(
        &app,
        pulsar_of(&app.settings).await,
        Arc::new(Notifications(hub.clone())),
    );
    let stop = start_consumer(consumer).await;
    let no = ga_order(&app, &crowd[0], program, floor, "notify", 1).await;
    assert_eq!(
        act(&app, &crowd[0].token, &no, "cancel").await.status(),
        200
    );
    for tab in [&mut tab1, &mut tab2] {
        for wanted in ["pending_payment", "cancelled"] {
            let notice = tokio::time::timeout(Duration::from_secs(10), tab.recv())
                .await
                .expect("a notice in time")
                .unwrap();
            assert_eq!(
                (notice.order_no.as_str(), notice.status),
                (no.as_str(), wanted)
            );
        }
    }
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_send_consume_and_reconcile_status_and_can_act_on_messages() {
    let app = spawn_app().await;
    let (program, _, floor) = on_sale(&app, 2, 4).await;
    let crowd = buyers(&app, 1, 1).await;
    ga_order(&app, &crowd[0], program, floor, "mq", 1).await;
    let (_, admin) = signed_in_admin(&app).await;
    let path = format!("/api/v1/admin/programs/{program}/mq-messages");
    let page: Value = poll_until(
        Duration::from_secs(10),
        async || {
            app.get_as(&admin, &format!("{path}?status=ok"))
                .await
                .json::<Value>()
                .await
                .unwrap()
        },
        |p| p["total"] == 2,
    )
    .await;
    // Newest first: the order, then the program's creation (a catalog event).
    assert_eq!(page["items"][1]["type"], "CatalogChanged");
    let item = &page["items"][0];
    assert_eq!(item["type"], "OrderCreated");
    assert_eq!(item["send_status"], "sent");
    assert_eq!(item["reconcile_status"], "ok");
    assert!(item["consumed"]["mq-bookkeeping"].is_string(), "{item}");
    let event_id = item["event_id"].as_str().unwrap().to_string();

    let refused = app.get_as(&crowd[0].token, &path).await;
    assert_eq!(code(refused).await.0, 403, "buyers see no MQ records");

    let handled = app
        .post(
            &format!("/api/v1/admin/mq-messages/{event_id}/handled"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(handled.status(), 200);
    let page: Value = app
        .get_as(&admin, &format!("{path}?status=handled"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 1);
    let republish = app
        .post(
            &format!("/api/v1/admin/mq-messages/{event_id}/republish"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(republish.status(), 200);
    let resent = poll_until(
        Duration::from_secs(10),
        async || {
            let sql = "SELECT send_attempts::bigint FROM outbox WHERE event_type = 'OrderCreated'";
            count(&app, sql).await
        },
        |n| *n == 2,
    )
    .await;
    assert_eq!(resent, 2, "the relay sent it again");
    let audited = count(
        &app,
        "SELECT count(*) FROM admin_audit_log WHERE action LIKE 'mq_message.%'",
    )
    .await;
    assert_eq!(audited, 2);
    let unknown = app
        .post(
            "/api/v1/admin/mq-messages/00000000-0000-0000-0000-000000000000/handled",
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(code(unknown).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_edit_reaches_every_nodes_cache_as_an_event() {
    use boxoffice::events::bookkeeping::CatalogInvalidation;
    use boxoffice::store::catalog_cache::CatalogCache;
    let app = spawn_app().await;
    let (program, _, _) = on_sale(&app, 2, 4).await;
    // Another node's cache, reached by no Redis broadcast: only the event can tell it.
    let redis = boxoffice::store::RedisStore::connect(&app.settings.redis)
        .await
        .unwrap();
    let cache = CatalogCache::new(app.pg.clone(), redis, app.settings.cache.clone());
    let consumer = test_consumer(
        &app,
        pulsar_of(&app.settings).await,
        Arc::new(CatalogInvalidation(cache.clone())),
    );
    let stop = start_consumer(consumer).await;
    let title =
        |d: Option<Arc<boxoffice::store::catalog_read::ProgramDetail>>| d.unwrap().title.clone();
    assert_eq!(title(cache.detail(program).await.unwrap()), "Order Test");
    let (_, admin) = signed_in_admin(&app).await;
    let r = app
        .http
        .patch(format!("{}/api/v1/admin/programs/{program}", app.address))
        .bearer_auth(&admin)
        .json(&json!({"title": "Renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = poll_until(
        Duration::from_secs(10),
        async || title(cache.detail(program).await.unwrap()),
        |t| t == "Renamed",
    )
    .await;
    assert_eq!(
        seen, "Renamed",
        "the node dropped its copy when the event arrived"
    );
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_prints_matching_events_one_line_each_and_stops_on_ctrl_c() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let app = spawn_app().await;
    let (program, _, floor) = on_sale(&app, 2, 4).await;
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .args([
            "events",
            "tail",
            "--type",
            "OrderCreated",
            "--program",
            &program.to_string(),
        ])
        .env("BOXOFFICE_CONFIG", "/nonexistent/boxoffice.toml")
        .env(
            "BOXOFFICE__PULSAR__TOPIC_PREFIX",
            &app.settings.pulsar.topic_prefix,
        )
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start boxoffice events tail");
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let next = async |lines: &mut tokio::io::Lines<_>| {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .unwrap_or_default()
    };
    assert!(
        next(&mut lines).await.starts_with("tailing "),
        "subscribed first"
    );
    let crowd = buyers(&app, 1, 1).await;
    let no = ga_order(&app, &crowd[0], program, floor, "tailed", 1).await;
    assert_eq!(
        act(&app, &crowd[0].token, &no, "cancel").await.status(),
        200
    );
    let line = next(&mut lines).await;
    assert!(
        line.contains(" OrderCreated ") && line.contains(&format!("order={no}")),
        "{line}"
    );
    let pid = tail.id().unwrap().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(signalled.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), tail.wait())
        .await
        .expect("stops on Ctrl-C")
        .unwrap();
    assert!(exit.success(), "clean exit: {exit}");
    while let Ok(Some(rest)) = lines.next_line().await {
        assert!(!rest.contains("OrderCancelled"), "filtered out: {rest}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_marks_events_that_disagree_with_their_order_or_were_never_consumed() {
    let app = spawn_app().await;
    let (program, _, floor) = on_sale(&app, 2, 4).await;
    let crowd = buyers(&app, 1, 1).await;
    let no = ga_order(&app, &crowd[0], program, floor, "disagree", 1).await;
    // An "OrderPaid" for an order Postgres still has unpaid: the record must say problem.
    app.pg
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO outbox (event_id, topic, message_key, event_type, order_no, program_id, payload)
             VALUES (gen_random_uuid(), 'order-events', $1::bigint::text, 'OrderPaid', $1::bigint, $2, '{}')",
            &[&no.parse::<i64>().unwrap(), &program],
        )
        .await
        .unwrap();
    let statuses = async || {
        let rows = app
            .pg
            .get()
            .await
            .unwrap()
            .query(
                "SELECT event_type, reconcile_status FROM outbox WHERE event_type LIKE 'Order%' ORDER BY id",
                &[],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect::<Vec<_>>()
    };
    let seen = poll_until(Duration::from_secs(10), statuses, |s| {
        s.iter().all(|(_, status)| status != "unreconciled")
    })
    .await;
    assert_eq!(
        seen,
        [
            ("OrderCreated".to_string(), "ok".to_string()),
            ("OrderPaid".to_string(), "problem".to_string())
        ]
    );
    // A row nobody consumed in time: problem too.
    app.pg
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO outbox (event_id, topic, message_key, event_type, order_no, program_id, payload, send_status, created_at)
             VALUES (gen_random_uuid(), 'order-events', '9', 'OrderCreated', 9, $1, '{}', 'sent', now() - interval '1 hour')",
            &[&program],
        )
        .await
        .unwrap();
    // The server's own reconciler may get there first; either way the row ends as a problem.
    boxoffice::events::bookkeeping::mark_unconsumed(&app.pg, 60.0)
        .await
        .unwrap();
    let problem = count(
        &app,
        "SELECT count(*) FROM outbox WHERE order_no = 9 AND reconcile_status = 'problem'",
    )
    .await;
    assert_eq!(problem, 1, "the hour-old unconsumed row is a problem");
}
