//! `boxoffice bench ws`: many seat-map subscribers on one program while orders change seats at
//! a steady rate.
//!
//! The server runs as a child process (`boxoffice serve`), so its memory can be read apart
//! from the clients'. Subscribers are added in steps (e.g. 1k → 5k → 10k); at each step the
//! benchmark reports server memory per idle connection (RSS growth / connections), then drives
//! orders of four seats, each cancelled right after (eight seat changes per cycle) and
//! measures, per change, the delay until the frame carrying it reached the *last* subscriber —
//! from the order's acknowledgement (after its commit: a lower bound) and from its request (an
//! upper bound) — plus frames/s and server CPU. A second server with `ws.coalesce_ms = 0` (one
//! frame per committed delta) at the first step compares frames and CPU with coalescing.

use super::cpu::{TICKS_PER_SEC, process_ticks};
use super::ordering::{Racer, hot_program, mint_racers_with, wait_ready};
use super::{Latencies, Scratch, Target, ratio, render_targets};
use crate::config::Settings;
use crate::store::postgres;
use anyhow::Context;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How the benchmark runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Subscriber counts, ascending; clients are added to reach each.
    pub subscribers: Vec<usize>,
    /// Seat changes per second the drivers aim for.
    pub changes_per_sec: u32,
    /// Seconds of driving per step.
    pub secs: u64,
    /// Seat rows (of 40) of the program's one category.
    pub rows: i32,
    /// The `boxoffice` binary to run the server with.
    pub server_binary: std::path::PathBuf,
}

/// Frames tracked per run (by `seq` offset from the start of a step).
const TRACKED_FRAMES: usize = 1 << 20;
/// Seats per order (each order is cancelled right after: 8 changes per cycle).
const SEATS_PER_ORDER: usize = 4;
/// Concurrent driving cycles at most.
const DRIVERS: usize = 64;

/// One subscriber step.
#[derive(Debug, Serialize)]
pub struct Step {
    /// Subscribers connected.
    pub subscribers: usize,
    /// Server RSS growth per connection, bytes.
    pub bytes_per_idle_connection: f64,
    /// Seat changes per second achieved.
    pub changes_per_sec: f64,
    /// Frames per second per subscriber.
    pub frames_per_sec: f64,
    /// Delay from acknowledgement to the last subscriber, ms.
    pub ack_to_last_p50_ms: f64,
    /// As above, 99th percentile.
    pub ack_to_last_p99_ms: f64,
    /// Delay from request to the last subscriber, ms.
    pub request_to_last_p50_ms: f64,
    /// As above, 99th percentile.
    pub request_to_last_p99_ms: f64,
    /// Server CPU seconds per second.
    pub server_cpu: f64,
}

/// One coalescing mode at the first step.
#[derive(Debug, Serialize)]
pub struct ModeRun {
    /// `coalesced` or `frame_per_delta`.
    pub mode: String,
    /// Subscribers.
    pub subscribers: usize,
    /// Seat changes per second achieved.
    pub changes_per_sec: f64,
    /// Frames per second per subscriber.
    pub frames_per_sec: f64,
    /// Frames the server wrote per second (all subscribers).
    pub frames_sent_per_sec: f64,
    /// Server CPU seconds per second.
    pub server_cpu: f64,
}

/// What `bench ws` measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Per subscriber step, coalesced (the default).
    pub steps: Vec<Step>,
    /// Coalesced against one frame per committed delta.
    pub modes: Vec<ModeRun>,
    /// The largest subscriber count that connected in full.
    pub largest_held: usize,
    /// Targets from the issue.
    pub targets: Vec<Target>,
}

/// Runs the benchmark on a scratch database (dropped at the end).
pub async fn run(settings: &Settings, opts: &Options) -> anyhow::Result<Report> {
    raise_fd_limit();
    let scratch = Scratch::create(settings, "bench_ws").await?;
    let pool = postgres::connect(&scratch.settings.database).await?;
    let drivers = DRIVERS.max(opts.changes_per_sec as usize / 8 / 4);
    let racers = mint_racers_with(&pool, &scratch.settings, drivers, SEATS_PER_ORDER).await?;
    let racers = Arc::new(Mutex::new(racers));
    let (program, category) = hot_program(&pool, opts.rows, "ws").await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(DRIVERS)
        .build()?;
    let run = Run {
        http,
        program,
        category,
        racers,
        opts: opts.clone(),
    };

    let coalesced = Child::start(&scratch, &opts.server_binary, 25).await?;
    let (steps, first_mode, largest_held) = run.steps(&coalesced).await?;
    coalesced.stop().await;
    let per_delta = Child::start(&scratch, &opts.server_binary, 0).await?;
    let other_mode = run
        .mode_run(&per_delta, opts.subscribers[0], "frame_per_delta")
        .await?;
    per_delta.stop().await;
    pool.close();
    scratch.remove().await;

    let modes = vec![first_mode, other_mode];
    let targets = judge(&steps, &modes);
    Ok(Report {
        steps,
        modes,
        largest_held,
        targets,
    })
}

fn judge(steps: &[Step], modes: &[ModeRun]) -> Vec<Target> {
    let last = steps.last();
    let kib = last.map_or(0.0, |s| s.bytes_per_idle_connection / 1024.0);
    let p99 = last.map_or(0.0, |s| s.ack_to_last_p99_ms);
    let n = last.map_or(0, |s| s.subscribers);
    let changes_per_frame = ratio(modes[0].changes_per_sec, modes[0].frames_per_sec);
    vec![
        // Both "at most" targets are judged as headroom ratios (required / measured >= 1).
        Target::judge(
            format!("16 KiB / KiB per idle conn @{n}"),
            1.0,
            ratio(16.0, kib),
        ),
        Target::judge(
            format!("50 ms / p99 ack->last ms @{n}"),
            1.0,
            ratio(50.0, p99),
        ),
        Target::judge(
            "changes per coalesced frame".into(),
            50.0,
            changes_per_frame,
        ),
    ]
}

/// Raises this process's open-file limit to its hard limit (the child inherits it): every
/// subscriber is a socket on both sides.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => eprintln!("open-file limit: {n}"),
        Err(e) => eprintln!("open-file limit not raised: {e}"),
    }
}

/// The server under test, in a process of its own.
struct Child {
    process: tokio::process::Child,
    pid: String,
    base: String,
}

impl Child {
    async fn start(
        scratch: &Scratch,
        binary: &std::path::Path,
        coalesce_ms: u64,
    ) -> anyhow::Result<Child> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let s = &scratch.settings;
        let process = tokio::process::Command::new(binary)
            .arg("serve")
            .env("BOXOFFICE__SERVER__PORT", port.to_string())
            .env(
                "BOXOFFICE__SERVER__PUBLIC_URL",
                format!("http://127.0.0.1:{port}"),
            )
            .env("BOXOFFICE__DATABASE__URL", s.database.url.expose_secret())
            .env(
                "BOXOFFICE__REDIS__KEY_PREFIX",
                format!("bench-ws:{suffix}:"),
            )
            .env(
                "BOXOFFICE__PULSAR__TOPIC_PREFIX",
                format!("bench-ws-{suffix}-"),
            )
            .env("BOXOFFICE__EVENTS__RELAY", "false")
            .env("BOXOFFICE__EVENTS__CONSUMERS", "false")
            .env("BOXOFFICE__RATE_LIMIT__ENABLED", "false")
            .env("BOXOFFICE__WS__MAX_CONNECTIONS", "100000")
            .env("BOXOFFICE__WS__MAX_PER_IP", "100000")
            .env("BOXOFFICE__WS__COALESCE_MS", coalesce_ms.to_string())
            .env("BOXOFFICE__LOG__FILTER", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start the server process")?;
        let pid = process.id().context("server pid")?.to_string();
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&reqwest::Client::new(), &base).await?;
        Ok(Child { process, pid, base })
    }

    fn rss_bytes(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        kib * 1024.0
    }

    fn cpu_secs(&self) -> f64 {
        process_ticks(&self.pid).unwrap_or(0) as f64 / TICKS_PER_SEC
    }

    async fn stop(mut self) {
        let _ = self.process.start_kill();
        let _ = self.process.wait().await;
    }
}

/// When each frame (by `seq` offset from `base`) reached the last subscriber, and counts.
struct Arrivals {
    started: Instant,
    base: AtomicU64,
    /// Microseconds since `started` + 1 of the latest arrival; 0 = not yet.
    last: Vec<AtomicU64>,
    frames: AtomicU64,
    snapshots: AtomicU64,
}

impl Arrivals {
    fn new() -> Arc<Self> {
        Arc::new(Arrivals {
            started: Instant::now(),
            base: AtomicU64::new(u64::MAX),
            last: (0..TRACKED_FRAMES).map(|_| AtomicU64::new(0)).collect(),
            frames: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
        })
    }

    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64 + 1
    }

    fn record(&self, text: &str) {
        if text.starts_with(r#"{"type":"snapshot""#) {
            self.snapshots.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.frames.fetch_add(1, Ordering::Relaxed);
        let (Some(seq), base) = (seq_of(text), self.base.load(Ordering::Relaxed)) else {
            return;
        };
        if let Some(slot) = seq
            .checked_sub(base)
            .and_then(|i| self.last.get(i as usize))
        {
            slot.fetch_max(self.now_us(), Ordering::Relaxed);
        }
    }
}

/// The `seq` of a frame without parsing it all (`{"type":"delta","seq":N,...`).
fn seq_of(text: &str) -> Option<u64> {
    let at = text.find(r#""seq":"#)? + 6;
    let digits = text[at..].split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// Everything the steps share.
struct Run {
    http: reqwest::Client,
    program: i64,
    category: i64,
    racers: Arc<Mutex<Vec<Racer>>>,
    opts: Options,
}

/// One order's timings and seats.
struct Cycle {
    sent_us: u64,
    acked_us: u64,
    seats: Vec<i64>,
}

impl Run {
    fn url(&self, child: &Child) -> String {
        format!(
            "{}/ws/programs/{}/seats",
            child.base.replacen("http://", "ws://", 1),
            self.program
        )
    }

    /// Every step on the coalescing server; the first step doubles as its mode run.
    async fn steps(&self, child: &Child) -> anyhow::Result<(Vec<Step>, ModeRun, usize)> {
        let arrivals = Arrivals::new();
        let (observer, log) = self.observer(child, arrivals.clone()).await?;
        let baseline = child.rss_bytes();
        let mut connected = 1usize;
        let mut steps = Vec::new();
        let mut first_mode = None;
        let mut largest_held = 0;
        for &n in &self.opts.subscribers {
            connected +=
                connect_many(&self.url(child), n.saturating_sub(connected), &arrivals).await;
            largest_held = connected;
            wait_for_snapshots(&arrivals, connected).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let per_conn = (child.rss_bytes() - baseline) / (connected - 1).max(1) as f64;
            let step = self.drive(child, &arrivals, &log, connected).await?;
            eprintln!(
                "{connected:>6} subscribers: {:.1} KiB per idle connection, {:.0} changes/s, {:.1} frames/s, ack->last p99 {:.1} ms",
                per_conn / 1024.0,
                step.changes_per_sec,
                step.frames_per_sec,
                step.p99_ack
            );
            first_mode.get_or_insert_with(|| step.mode("coalesced", connected));
            steps.push(step.into_step(connected, per_conn));
            if connected < n {
                break;
            }
        }
        drop(observer);
        let first_mode = first_mode.context("no step ran")?;
        Ok((steps, first_mode, largest_held))
    }

    async fn mode_run(&self, child: &Child, n: usize, name: &str) -> anyhow::Result<ModeRun> {
        let arrivals = Arrivals::new();
        let (observer, log) = self.observer(child, arrivals.clone()).await?;
        let connected = 1 + connect_many(&self.url(child), n.saturating_sub(1), &arrivals).await;
        wait_for_snapshots(&arrivals, connected).await;
        let step = self.drive(child, &arrivals, &log, connected).await?;
        eprintln!(
            "{name}: {:.0} changes/s, {:.1} frames/s per subscriber",
            step.changes_per_sec, step.frames_per_sec
        );
        drop(observer);
        Ok(step.mode(name, connected))
    }

    /// One subscriber that parses every frame: when each seat changed and in which frame.
    async fn observer(
        &self,
        child: &Child,
        arrivals: Arc<Arrivals>,
    ) -> anyhow::Result<(tokio::task::JoinHandle<()>, SeatLog)> {
        let (mut ws, _) = tokio_tungstenite::connect_async(self.url(child)).await?;
        let log: SeatLog = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                arrivals.record(&text);
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let (Some(seq), Some(changes)) =
                    (frame["seq"].as_u64(), frame["changes"].as_array())
                else {
                    continue;
                };
                let at = arrivals.now_us();
                let mut log = task_log.lock().unwrap_or_else(|e| e.into_inner());
                for c in changes.iter().filter(|c| c["status"] == "held") {
                    if let Some(seat) = c["seat_id"].as_i64() {
                        log.entry(seat).or_default().push((at, seq));
                    }
                }
            }
        });
        Ok((task, log))
    }

    /// Drives order+cancel cycles at the configured rate for `secs`; measures the step.
    async fn drive(
        &self,
        child: &Child,
        arrivals: &Arc<Arrivals>,
        log: &SeatLog,
        connected: usize,
    ) -> anyhow::Result<Measured> {
        let base = seq_now(child, self.program).await?;
        arrivals.base.store(base, Ordering::Relaxed);
        let frames_before = arrivals.frames.load(Ordering::Relaxed);
        let cpu_before = child.cpu_secs();
        let started = Instant::now();
        let cycles = self.cycles(child, arrivals).await;
        let secs = started.elapsed().as_secs_f64();
        let cpu = (child.cpu_secs() - cpu_before) / secs;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let frames =
            (arrivals.frames.load(Ordering::Relaxed) - frames_before) as f64 / connected as f64;
        let (mut from_ack, mut from_request) = (Latencies::default(), Latencies::default());
        let log = log.lock().unwrap_or_else(|e| e.into_inner());
        for c in &cycles {
            let Some(last) = last_arrival(arrivals, &log, c, base) else {
                continue;
            };
            from_ack.record(Duration::from_micros(last.saturating_sub(c.acked_us)));
            from_request.record(Duration::from_micros(last.saturating_sub(c.sent_us)));
        }
        let ms = |l: &mut Latencies, p| l.percentile(p) as f64 / 1000.0;
        Ok(Measured {
            changes_per_sec: (cycles.len() * SEATS_PER_ORDER * 2) as f64 / secs,
            frames_per_sec: frames / secs,
            p50_ack: ms(&mut from_ack, 50.0),
            p99_ack: ms(&mut from_ack, 99.0),
            p50_request: ms(&mut from_request, 50.0),
            p99_request: ms(&mut from_request, 99.0),
            server_cpu: cpu,
        })
    }

    /// Order-then-cancel cycles, started at a steady pace, `DRIVERS` at a time at most.
    async fn cycles(&self, child: &Child, arrivals: &Arc<Arrivals>) -> Vec<Cycle> {
        let per_sec = (self.opts.changes_per_sec as f64 / (2 * SEATS_PER_ORDER) as f64).max(1.0);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
        let deadline = Instant::now() + Duration::from_secs(self.opts.secs);
        let permits = Arc::new(Semaphore::new(DRIVERS));
        let mut tasks = Vec::new();
        while Instant::now() < deadline {
            tick.tick().await;
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                continue;
            };
            let Some(racer) = self.racers.lock().await.pop() else {
                continue;
            };
            let (http, base, racers, arrivals) = (
                self.http.clone(),
                child.base.clone(),
                self.racers.clone(),
                arrivals.clone(),
            );
            let (program, category) = (self.program, self.category);
            tasks.push(tokio::spawn(async move {
                let cycle = cycle(&http, &base, &racer, program, category, &arrivals).await;
                racers.lock().await.push(racer);
                drop(permit);
                cycle
            }));
        }
        let mut done = Vec::new();
        for t in tasks {
            if let Ok(Some(c)) = t.await {
                done.push(c);
            }
        }
        done
    }
}

type SeatLog = Arc<std::sync::Mutex<HashMap<i64, Vec<(u64, u64)>>>>;

/// What one drive measured.
struct Measured {
    changes_per_sec: f64,
    frames_per_sec: f64,
    p50_ack: f64,
    p99_ack: f64,
    p50_request: f64,
    p99_request: f64,
    server_cpu: f64,
}

impl Measured {
    fn into_step(self, subscribers: usize, per_conn: f64) -> Step {
        Step {
            subscribers,
            bytes_per_idle_connection: per_conn,
            changes_per_sec: self.changes_per_sec,
            frames_per_sec: self.frames_per_sec,
            ack_to_last_p50_ms: self.p50_ack,
            ack_to_last_p99_ms: self.p99_ack,
            request_to_last_p50_ms: self.p50_request,
            request_to_last_p99_ms: self.p99_request,
            server_cpu: self.server_cpu,
        }
    }

    fn mode(&self, name: &str, subscribers: usize) -> ModeRun {
        ModeRun {
            mode: name.into(),
            subscribers,
            changes_per_sec: self.changes_per_sec,
            frames_per_sec: self.frames_per_sec,
            frames_sent_per_sec: self.frames_per_sec * subscribers as f64,
            server_cpu: self.server_cpu,
        }
    }
}

/// When the frame that showed the order's first seat held reached the last subscriber.
fn last_arrival(
    arrivals: &Arrivals,
    log: &HashMap<i64, Vec<(u64, u64)>>,
    c: &Cycle,
    base: u64,
) -> Option<u64> {
    let seat = c.seats.first()?;
    let (_, seq) = log.get(seat)?.iter().find(|(at, _)| *at >= c.sent_us)?;
    let at = arrivals
        .last
        .get(seq.checked_sub(base)? as usize)?
        .load(Ordering::Relaxed);
    (at > 0).then_some(at)
}

/// One order of four best-available seats, then its cancel; `None` if the order failed.
async fn cycle(
    http: &reqwest::Client,
    base: &str,
    racer: &Racer,
    program: i64,
    category: i64,
    arrivals: &Arrivals,
) -> Option<Cycle> {
    let body = json!({"program_id": program, "ticket_buyer_ids": racer.ticket_buyers, "ticket_category_id": category, "quantity": SEATS_PER_ORDER});
    let sent_us = arrivals.now_us();
    let key = uuid::Uuid::new_v4().to_string();
    let r = http
        .post(format!("{base}/api/v1/orders"))
        .bearer_auth(&racer.token)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .ok()?;
    if r.status() != 201 {
        return None;
    }
    let placed: Value = r.json().await.ok()?;
    let acked_us = arrivals.now_us();
    let seats = placed["tickets"]
        .as_array()?
        .iter()
        .filter_map(|t| t["seat"]["id"].as_i64())
        .collect();
    let no = placed["order_no"].as_str()?;
    let cancel = http
        .post(format!("{base}/api/v1/orders/{no}/cancel"))
        .bearer_auth(&racer.token)
        .json(&json!({}))
        .send()
        .await
        .ok()?;
    let _ = cancel.bytes().await;
    Some(Cycle {
        sent_us,
        acked_us,
        seats,
    })
}

/// The program feed's current `seq`, from a short-lived subscriber's snapshot.
async fn seq_now(child: &Child, program: i64) -> anyhow::Result<u64> {
    let url = format!(
        "{}/ws/programs/{program}/seats",
        child.base.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message? {
            return seq_of(&text).context("snapshot without seq");
        }
    }
    anyhow::bail!("no snapshot")
}

/// Opens `n` subscribers, 256 handshakes at a time; each counts its frames in `arrivals`
/// until the process ends. Answers how many connected.
async fn connect_many(url: &str, n: usize, arrivals: &Arc<Arrivals>) -> usize {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let gate = Arc::new(Semaphore::new(256));
    let connected = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (url, gate, connected, arrivals) = (
                url.to_string(),
                gate.clone(),
                connected.clone(),
                arrivals.clone(),
            );
            tokio::spawn(async move {
                let permit = gate.acquire_owned().await;
                let Ok((mut ws, _)) =
                    tokio_tungstenite::connect_async_with_config(url, Some(config), false).await
                else {
                    return;
                };
                connected.fetch_add(1, Ordering::Relaxed);
                drop(permit);
                tokio::spawn(async move {
                    while let Some(Ok(message)) = ws.next().await {
                        if let Message::Text(text) = message {
                            arrivals.record(&text);
                        }
                    }
                });
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let n_ok = connected.load(Ordering::Relaxed) as usize;
    if n_ok < n {
        eprintln!("only {n_ok} of {n} subscribers connected");
    }
    n_ok
}

/// Waits (up to a minute) until `n` snapshots arrived.
async fn wait_for_snapshots(arrivals: &Arrivals, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while (arrivals.snapshots.load(Ordering::Relaxed) as usize) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The report as a table.
pub fn render(report: &Report) -> String {
    let mut out = String::from(
        "subscribers  KiB/idle conn  changes/s  frames/s  ack->last p50/p99 ms  request->last p50/p99 ms  server CPU\n",
    );
    for s in &report.steps {
        out.push_str(&format!(
            "{:>11}  {:>13.1}  {:>9.0}  {:>8.1}  {:>9.1} / {:>7.1}  {:>11.1} / {:>8.1}  {:>10.2}\n",
            s.subscribers,
            s.bytes_per_idle_connection / 1024.0,
            s.changes_per_sec,
            s.frames_per_sec,
            s.ack_to_last_p50_ms,
            s.ack_to_last_p99_ms,
            s.request_to_last_p50_ms,
            s.request_to_last_p99_ms,
            s.server_cpu
        ));
    }
    out.push_str(&format!("largest subscriber count held: {}\n\nmode             subscribers  changes/s  frames/s  frames sent/s  server CPU\n", report.largest_held));
    for m in &report.modes {
        out.push_str(&format!(
            "{:<16} {:>11}  {:>9.0}  {:>8.1}  {:>13.0}  {:>10.2}\n",
            m.mode,
            m.subscribers,
            m.changes_per_sec,
            m.frames_per_sec,
            m.frames_sent_per_sec,
            m.server_cpu
        ));
    }
    out.push('\n');
    out.push_str(&render_targets(&report.targets));
    out
}
