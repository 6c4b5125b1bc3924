//! The buyers: a bounded crowd of clients, each one account with four ticket buyers, placing
//! orders, cancelling some and leaving others to expire, as fast as a short think time lets
//! them. Each behaves as a careful real client: an order carries an `Idempotency-Key`, and a
//! cut connection, a timeout, a 5xx, a 429 or an answer that says "retry" is retried with the
//! same key (honouring `Retry-After`) until the server gives a definitive answer. Every 201 is
//! recorded with its seats: that is what Postgres must hold afterwards.

use boxoffice::bench::ordering::Racer;
use rand::Rng;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Live tickets an account may have in the program (`bench::ordering::hot_program`'s limit).
const ACCOUNT_LIMIT: usize = 4;
/// Ticket buyers per account: more than the limit, so that the ticket buyers of an order that
/// is expiring late (its expiry held up by an outage) are not needed at once.
pub const TICKET_BUYERS: usize = 6;
/// Every n-th acknowledged order is left to expire instead of being cancelled (one at a time
/// per buyer).
const ABANDON_EVERY: u64 = 4;
/// Longest pause between retries of one request.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One client: an account, its ticket buyers and its orders, kept from phase to phase.
pub struct Buyer {
    id: usize,
    token: String,
    /// Ticket buyers without a live ticket.
    free: Vec<i64>,
    /// Acknowledged orders to cancel, oldest first.
    live: VecDeque<Placed>,
    /// Orders left to expire, and orders whose outcome is unknown (they expire if they
    /// exist): their ticket buyers are free again after the instant.
    expiring: Vec<(Instant, Vec<i64>)>,
    serial: u64,
}

enum Step {
    Place(usize),
    Cancel,
    Wait,
}

struct Placed {
    order_no: String,
    holders: Vec<i64>,
}

impl Buyer {
    /// The `id`-th client, with a minted account.
    pub fn new(id: usize, racer: Racer) -> Buyer {
        Buyer {
            id,
            token: racer.token,
            free: racer.ticket_buyers,
            live: VecDeque::new(),
            expiring: Vec::new(),
            serial: 0,
        }
    }

    fn tickets_out(&self) -> usize {
        let live: usize = self.live.iter().map(|p| p.holders.len()).sum();
        live + self.expiring.iter().map(|(_, h)| h.len()).sum::<usize>()
    }

    /// What to do next: an order of one or two tickets while the account limit allows it,
    /// else cancel the oldest order, else wait for an expiry.
    fn next_step(&self) -> Step {
        let quantity = 1 + (self.serial % 2) as usize;
        if self.tickets_out() + quantity <= ACCOUNT_LIMIT && self.free.len() >= quantity {
            Step::Place(quantity)
        } else if !self.live.is_empty() {
            Step::Cancel
        } else {
            Step::Wait
        }
    }

    /// Takes the ticket buyers free the longest, so one just released is not named again
    /// before its order's release is surely done.
    fn take_free(&mut self, n: usize) -> Vec<i64> {
        self.free.drain(..n).collect()
    }

    /// The order may exist (or not): its ticket buyers are free once it would have expired.
    fn park(&mut self, holders: Vec<i64>, window: Duration) {
        let free_at = Instant::now() + window + Duration::from_secs(1);
        self.expiring.push((free_at, holders));
    }

    /// Ticket buyers of orders past their expiry are free again.
    fn reclaim_expired(&mut self) {
        let now = Instant::now();
        let (over, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut self.expiring)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.expiring = pending;
        self.free.extend(over.into_iter().flat_map(|(_, h)| h));
    }
}

/// An order the server acknowledged (201): what Postgres must hold.
#[derive(Debug, Clone)]
pub struct Ack {
    /// Its number.
    pub order_no: i64,
    /// Its seats, ascending.
    pub seats: Vec<i64>,
}

/// What the clients sent and were answered during one phase.
#[derive(Debug, Default)]
pub struct Tally {
    /// HTTP requests sent (orders and cancels, retries included).
    pub requests: u64,
    /// Orders acknowledged with 201.
    pub created: u64,
    /// Non-2xx answers by "status CODE", transport failures by kind, and requests given up
    /// unanswered when the phase ended.
    pub errors: BTreeMap<String, u64>,
    /// The acknowledged orders.
    pub acks: Vec<Ack>,
    /// Orders whose cancel was answered 200.
    pub cancelled: Vec<i64>,
    /// The longest a single request waited for its answer (or its failure).
    pub slowest: Duration,
}

impl Tally {
    fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.created += other.created;
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.acks.extend(other.acks);
        self.cancelled.extend(other.cancelled);
        self.slowest = self.slowest.max(other.slowest);
    }
}

/// What the clients order from.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server.
    pub base: String,
    /// The program on sale.
    pub program: i64,
    /// Its seated category.
    pub category: i64,
    /// Mean pause between a client's operations.
    pub think: Duration,
    /// The payment window: an abandoned order's ticket buyers are free after it.
    pub payment_window: Duration,
}

struct Shared {
    http: reqwest::Client,
    target: Target,
    epoch: Instant,
    /// 0 while running; else when clients give up unanswered requests (ms since `epoch`).
    drain_until_ms: AtomicU64,
    /// Send time (ms since `epoch`, + 1) of the latest request answered 201.
    last_created_ms: AtomicU64,
    created: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn stopping(&self) -> bool {
        self.drain_until_ms.load(Ordering::Relaxed) != 0
    }

    fn drain_over(&self) -> bool {
        self.stopping() && self.now_ms() > self.drain_until_ms.load(Ordering::Relaxed)
    }
}

/// A crowd of clients at work.
pub struct Load {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<(Buyer, Tally)>>,
}

impl Load {
    /// Every buyer starts its loop against `target`.
    pub fn start(http: &reqwest::Client, target: &Target, buyers: Vec<Buyer>) -> Load {
        let shared = Arc::new(Shared {
            http: http.clone(),
            target: target.clone(),
            epoch: Instant::now(),
            drain_until_ms: AtomicU64::new(0),
            last_created_ms: AtomicU64::new(0),
            created: AtomicU64::new(0),
        });
        let tasks = buyers
            .into_iter()
            .map(|b| tokio::spawn(client(shared.clone(), b)))
            .collect();
        Load { shared, tasks }
    }

    /// Orders acknowledged so far in this phase.
    pub fn created(&self) -> u64 {
        self.shared.created.load(Ordering::Relaxed)
    }

    /// Some request sent at or after `at` was answered 201.
    pub fn created_since(&self, at: Instant) -> bool {
        let at_ms = at.saturating_duration_since(self.shared.epoch).as_millis() as u64;
        self.shared.last_created_ms.load(Ordering::Relaxed) > at_ms
    }

    /// Clients start no new operation; one in progress has `drain` to get its answer, then is
    /// given up. Answers the buyers (for the next phase) and the phase's tally.
    pub async fn stop(self, drain: Duration) -> (Vec<Buyer>, Tally) {
        let until = self.shared.now_ms() + drain.as_millis() as u64;
        self.shared
            .drain_until_ms
            .store(until.max(1), Ordering::Relaxed);
        let (mut buyers, mut tally) = (Vec::new(), Tally::default());
        for task in self.tasks {
            // A request times out after a few seconds, so a client ends soon after the drain.
            match tokio::time::timeout(drain + Duration::from_secs(30), task).await {
                Ok(Ok((buyer, t))) => {
                    buyers.push(buyer);
                    tally.merge(t);
                }
                _ => tally.error("client lost".into()),
            }
        }
        (buyers, tally)
    }
}

/// One client's loop: place, cancel or wait for an expiry, then think.
async fn client(shared: Arc<Shared>, mut buyer: Buyer) -> (Buyer, Tally) {
    let mut tally = Tally::default();
    while !shared.stopping() {
        buyer.reclaim_expired();
        match buyer.next_step() {
            Step::Place(n) => place(&shared, &mut buyer, &mut tally, n).await,
            Step::Cancel => cancel_oldest(&shared, &mut buyer, &mut tally).await,
            Step::Wait => {}
        }
        let pause = {
            let mean = shared.target.think.as_millis() as u64;
            Duration::from_millis(rand::thread_rng().gen_range(0..=2 * mean))
        };
        tokio::time::sleep(pause).await;
    }
    (buyer, tally)
}

/// Best available × `quantity` with a fresh key, retried with that key until answered.
async fn place(shared: &Shared, buyer: &mut Buyer, tally: &mut Tally, quantity: usize) {
    buyer.serial += 1;
    let holders = buyer.take_free(quantity);
    let t = &shared.target;
    let key = format!("chaos-{}-{}", buyer.id, buyer.serial);
    let body = json!({"program_id": t.program, "ticket_buyer_ids": holders,
        "ticket_category_id": t.category, "quantity": quantity});
    let url = format!("{}/api/v1/orders", t.base);
    let answer = exchange(shared, tally, || {
        let request = shared.http.post(&url).bearer_auth(&buyer.token);
        request.header("Idempotency-Key", &key).json(&body)
    })
    .await;
    match answer {
        Some(a) if a.status == 201 => created(shared, buyer, tally, holders, a),
        // A definitive refusal: no order, the ticket buyers are free.
        Some(_) => buyer.free.extend(holders),
        None => buyer.park(holders, shared.target.payment_window),
    }
}

fn created(shared: &Shared, buyer: &mut Buyer, tally: &mut Tally, holders: Vec<i64>, a: Answer) {
    let order_no = a.body["order_no"].as_str().unwrap_or_default().to_string();
    let mut seats: Vec<i64> = a.body["tickets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["seat"]["id"].as_i64())
        .collect();
    seats.sort_unstable();
    let Ok(number) = order_no.parse::<i64>() else {
        tally.error("201 without an order number".into());
        return;
    };
    tally.created += 1;
    tally.acks.push(Ack {
        order_no: number,
        seats,
    });
    shared.created.fetch_add(1, Ordering::Relaxed);
    let sent_ms = a.sent.saturating_duration_since(shared.epoch).as_millis() as u64;
    shared
        .last_created_ms
        .fetch_max(sent_ms + 1, Ordering::Relaxed);
    if buyer.serial.is_multiple_of(ABANDON_EVERY) && buyer.expiring.is_empty() {
        buyer.park(holders, shared.target.payment_window);
    } else {
        buyer.live.push_back(Placed { order_no, holders });
    }
}

/// Cancels the oldest acknowledged order, retried until answered.
async fn cancel_oldest(shared: &Shared, buyer: &mut Buyer, tally: &mut Tally) {
    let Some(order) = buyer.live.pop_front() else {
        return;
    };
    let url = format!(
        "{}/api/v1/orders/{}/cancel",
        shared.target.base, order.order_no
    );
    let answer = exchange(shared, tally, || {
        shared.http.post(&url).bearer_auth(&buyer.token)
    })
    .await;
    let Some(answer) = answer else {
        buyer.live.push_front(order);
        return;
    };
    match (answer.status, answer.body["status"].as_str()) {
        (200, Some("cancelled")) => {
            tally.cancelled.extend(order.order_no.parse::<i64>().ok());
            buyer.free.extend(order.holders);
        }
        // The order closed otherwise (200 naming another status, or 409 NOT_CANCELLABLE: it
        // expired first); its ticket buyers are free either way.
        (200, other) => {
            tally.error(format!("200 {}", other.unwrap_or("-")));
            buyer.free.extend(order.holders);
        }
        (409, _) => buyer.free.extend(order.holders),
        // Anything else is already counted; the ticket buyers stay out of use.
        _ => {}
    }
}

/// A definitive answer.
struct Answer {
    status: u16,
    body: Value,
    /// When the answered request was sent.
    sent: Instant,
}

/// Sends `request()` until the server answers definitively, or the phase's drain is over
/// (`None`: the outcome is unknown).
async fn exchange(
    shared: &Shared,
    tally: &mut Tally,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Option<Answer> {
    let mut backoff = Duration::from_millis(50);
    loop {
        tally.requests += 1;
        let sent = Instant::now();
        let outcome = attempt(request()).await;
        tally.slowest = tally.slowest.max(sent.elapsed());
        let pause = match outcome {
            Attempt::Answer(status, body) => {
                if !(200..300).contains(&status) {
                    tally.error(format!("{status} {}", code_of(&body)));
                }
                return Some(Answer { status, body, sent });
            }
            Attempt::Retry(what, after) => {
                tally.error(what);
                after.unwrap_or(backoff)
            }
        };
        if shared.drain_over() {
            tally.error("given up unanswered".into());
            return None;
        }
        tokio::time::sleep(pause.min(MAX_BACKOFF)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Attempt {
    /// Status and JSON body.
    Answer(u16, Value),
    /// What went wrong, and the server's `Retry-After`.
    Retry(String, Option<Duration>),
}

/// One request. 5xx, 429, an answer with `Retry-After` or a key in flight, a cut connection,
/// a timeout and a body that cannot be read are worth retrying.
async fn attempt(request: reqwest::RequestBuilder) -> Attempt {
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Attempt::Retry("timeout".into(), None),
        Err(_) => return Attempt::Retry("no connection".into(), None),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .map(Duration::from_secs);
    let Ok(body) = response.json::<Value>().await else {
        return Attempt::Retry(format!("{status} cut off"), None);
    };
    let code = code_of(&body);
    if status >= 500 || status == 429 || retry_after.is_some() || code == "IN_FLIGHT" {
        return Attempt::Retry(format!("{status} {code}"), retry_after);
    }
    Attempt::Answer(status, body)
}

fn code_of(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("-")
}
