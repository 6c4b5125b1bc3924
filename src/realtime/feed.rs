//! The live seat map of one program, shared by all its subscribers.
//!
//! One task per watched program (the *feed*) follows its categories' actors through
//! [`Supervisor::watch`] — the published snapshot and the committed deltas, never a message to
//! the actor — and keeps the program's seat statuses. Changes are gathered for
//! `ws.coalesce_ms`, then sent as one frame `{type: "delta", seq, changes, counts}`, serialized
//! once into [`Bytes`] and shared through one broadcast ring by every subscriber. `seq` grows by
//! one per frame; a subscriber that sees a gap, or falls more than `ws.max_lag_frames` behind,
//! asks for a fresh snapshot.
//!
//! A frame says what changed since the previous frame (not what happened in between), so a
//! seat held and released within one tick costs nothing, and an actor's reload or a missed
//! delta is healed by diffing the category's next snapshot against what was shown.

use super::socket::{Close, Source, close};
use crate::actors::{CategorySnapshot, Supervisor, Watched};
use crate::domain::inventory::{Counts, Delta, SeatId, SeatInfo, SeatStatus};
use bytes::Bytes;
use dashmap::DashMap;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How long a subscriber waits for a feed's first snapshot (its actors must load) before the
/// connection is refused with "try again".
const FIRST_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deltas a category's tap keeps while it waits for a snapshot to close a gap. Snapshots are
/// republished within `actors.snapshot_interval_ms`, so this is never reached in practice; if
/// it is, the tap starts over from the next snapshot (bounded memory either way).
const MAX_GAP_BUFFER: usize = 4096;
/// Category events queued between the taps and their feed; a full queue makes the taps wait,
/// and their own (bounded) delta receivers lag and resync.
const TAP_QUEUE: usize = 1024;
/// How long a tap waits before watching a category again after its actor could not load.
const TAP_RETRY: Duration = Duration::from_millis(500);

/// Timings and bounds of the feeds (from `[ws]`).
#[derive(Debug, Clone, Copy)]
pub struct FeedSettings {
    /// Changes are gathered this long into one frame; zero = a frame per committed delta.
    pub coalesce: Duration,
    /// Frames a subscriber may fall behind before it must take a fresh snapshot.
    pub max_lag_frames: usize,
    /// A feed without subscribers ends after this long.
    pub linger: Duration,
}

/// A ticket category as the seat map names it (from the catalog).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedCategory {
    /// Ticket category id.
    pub id: i64,
    /// The show time whose seats it sells.
    pub show_time_id: i64,
    /// Name.
    pub name: String,
    /// Price in minor units.
    pub price_cents: i64,
    /// Seats (true) or general admission.
    pub seated: bool,
}

/// A new subscriber's start: the snapshot frame and, from exactly the frame after it, every
/// frame of the program.
pub struct Subscription {
    /// `{type: "snapshot", seq, categories}`, serialized once per state and shared.
    pub snapshot: Bytes,
    /// The snapshot's `seq`.
    pub seq: u64,
    /// Delta frames; `Lagged` means this subscriber must take a fresh snapshot.
    pub frames: broadcast::Receiver<Bytes>,
}

/// Why no subscription could be made.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The program's categories could not be loaded in time (the store is down or slow).
    #[error("the seat map is not available right now")]
    Unavailable,
}

/// The feeds of this process, one per watched program. Cheap to clone.
#[derive(Clone)]
pub struct SeatFeeds {
    inner: Arc<Registry>,
}

struct Registry {
    supervisor: Supervisor,
    settings: FeedSettings,
    feeds: DashMap<i64, mpsc::Sender<oneshot::Sender<Subscription>>>,
    /// The last `seq` an ended feed of each program sent, so a new feed continues above it.
    last_seq: DashMap<i64, u64>,
}

impl SeatFeeds {
    /// No feeds yet; each starts with its program's first subscriber.
    pub fn new(supervisor: Supervisor, settings: FeedSettings) -> Self {
        SeatFeeds {
            inner: Arc::new(Registry {
                supervisor,
                settings,
                feeds: DashMap::new(),
                last_seq: DashMap::new(),
            }),
        }
    }

    /// Subscribes to the program's seat map, starting its feed over `categories` if none runs.
    pub async fn subscribe(
        &self,
        program_id: i64,
        categories: &[FeedCategory],
    ) -> Result<Subscription, FeedError> {
        let attempt = async {
            // A feed may end between our lookup and our request; then start a new one.
            loop {
                let requests = self
                    .inner
                    .feeds
                    .entry(program_id)
                    .or_insert_with(|| self.start(program_id, categories.to_vec()))
                    .clone();
                let (reply, answer) = oneshot::channel();
                if requests.send(reply).await.is_ok()
                    && let Ok(subscription) = answer.await
                {
                    return subscription;
                }
                self.inner
                    .feeds
                    .remove_if(&program_id, |_, r| r.same_channel(&requests));
            }
        };
        tokio::time::timeout(FIRST_SNAPSHOT_TIMEOUT, attempt)
            .await
            .map_err(|_| FeedError::Unavailable)
    }

    /// Programs with a running feed (for the admin stream and tests).
    pub fn running(&self) -> usize {
        self.inner.feeds.len()
    }

    fn start(
        &self,
        program_id: i64,
        categories: Vec<FeedCategory>,
    ) -> mpsc::Sender<oneshot::Sender<Subscription>> {
        let (requests, inbox) = mpsc::channel(1024);
        let (events, tap_events) = mpsc::channel(TAP_QUEUE);
        let taps = categories
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let tap = tap(self.inner.supervisor.clone(), i, c.id, events.clone());
                AbortOnDrop(tokio::spawn(tap))
            })
            .collect();
        let seq = self.inner.last_seq.get(&program_id).map_or(0, |s| *s);
        let frames_capacity = self.inner.settings.max_lag_frames.max(1);
        let (frames, _) = broadcast::channel(frames_capacity);
        let feed = Feed {
            program_id,
            seq,
            loaded: categories.is_empty(),
            views: categories.into_iter().map(View::new).collect(),
            frames,
            frames_capacity,
            shown: BTreeMap::new(),
            counts_touched: BTreeSet::new(),
            snapshot: None,
            waiting: Vec::new(),
            flush_at: None,
            coalesce: self.inner.settings.coalesce,
        };
        let me = requests.downgrade();
        tokio::spawn(run_feed(feed, self.clone(), me, inbox, tap_events, taps));
        tracing::debug!(program_id, "seat-map feed started");
        requests
    }
}

/// Aborts a tap when its feed ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a category's tap tells its feed.
enum TapEvent {
    /// The category's state is this snapshot (first sight, after an actor's reload, or to
    /// close a gap); the feed diffs it against what it showed.
    Rebase(usize, Arc<CategorySnapshot>),
    /// The next committed delta, in `seq` order.
    Delta(usize, Arc<Delta>),
}

/// One category as the feed shows it.
struct View {
    info: FeedCategory,
    seats: Arc<[SeatInfo]>,
    index: HashMap<SeatId, usize>,
    statuses: Vec<SeatStatus>,
    counts: Counts,
    shown_counts: Counts,
    /// The category's own `seq` last seen (the actor's).
    seq: u64,
    loaded: bool,
}

impl View {
    fn new(info: FeedCategory) -> Self {
        View {
            info,
            seats: Arc::from(Vec::new()),
            index: HashMap::new(),
            statuses: Vec::new(),
            counts: Counts::default(),
            shown_counts: Counts::default(),
            seq: 0,
            loaded: false,
        }
    }

    /// Takes the snapshot's seat layout. Answers whether an already-shown layout changed (seat
    /// removal cannot be said in a delta, so subscribers must start over). The same layout
    /// keeps the statuses shown, so a reloaded actor costs subscribers nothing.
    fn adopt_layout(&mut self, snapshot: &CategorySnapshot) -> bool {
        if self.loaded && self.seats[..] == snapshot.seats[..] {
            self.seats = snapshot.seats.clone();
            return false;
        }
        self.seats = snapshot.seats.clone();
        self.index = self
            .seats
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id, i))
            .collect();
        self.statuses = vec![SeatStatus::Available; self.seats.len()];
        self.counts = Counts {
            available: self.seats.len() as u32,
            ..Counts::default()
        };
        self.loaded
    }
}

/// The state of one program's feed, owned by its task (no locks).
struct Feed {
    program_id: i64,
    seq: u64,
    /// Every category has been seen once; until then nobody is served.
    loaded: bool,
    views: Vec<View>,
    frames: broadcast::Sender<Bytes>,
    frames_capacity: usize,
    /// (category, seat) changed since the last frame → the status that frame showed.
    shown: BTreeMap<(usize, usize), SeatStatus>,
    counts_touched: BTreeSet<usize>,
    /// The current state serialized, until it changes.
    snapshot: Option<Bytes>,
    waiting: Vec<oneshot::Sender<Subscription>>,
    flush_at: Option<Instant>,
    coalesce: Duration,
}

async fn run_feed(
    mut feed: Feed,
    feeds: SeatFeeds,
    me: mpsc::WeakSender<oneshot::Sender<Subscription>>,
    mut requests: mpsc::Receiver<oneshot::Sender<Subscription>>,
    mut events: mpsc::Receiver<TapEvent>,
    _taps: Vec<AbortOnDrop>,
) {
    let mut linger =
        tokio::time::interval(feeds.inner.settings.linger.max(Duration::from_millis(10)));
    linger.tick().await;
    let mut idle_checks = 0;
    loop {
        let flush_at = feed.flush_at;
        tokio::select! {
            Some(event) = events.recv() => feed.apply(event),
            Some(reply) = requests.recv() => feed.subscribe(reply),
            _ = sleep_until(flush_at) => feed.flush(),
            _ = linger.tick() => {
                idle_checks = if feed.frames.receiver_count() == 0 { idle_checks + 1 } else { 0 };
                if idle_checks >= 2 { break; }
            }
        }
    }
    // Unregister first: a subscriber that still reached this feed gets no answer and retries
    // with a new one.
    if let Some(me) = me.upgrade() {
        feeds
            .inner
            .feeds
            .remove_if(&feed.program_id, |_, r| r.same_channel(&me));
    }
    feeds.inner.last_seq.insert(feed.program_id, feed.seq);
    tracing::debug!(
        program_id = feed.program_id,
        "seat-map feed ended: no subscribers"
    );
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Feed {
    fn apply(&mut self, event: TapEvent) {
        match event {
            TapEvent::Rebase(c, snapshot) => self.rebase(c, &snapshot),
            TapEvent::Delta(c, delta) => self.apply_delta(c, &delta),
        }
        if self.loaded {
            self.schedule_flush();
        }
    }

    fn rebase(&mut self, c: usize, snapshot: &CategorySnapshot) {
        if self.views[c].adopt_layout(snapshot) {
            self.shown.retain(|&(category, _), _| category != c);
            self.snapshot = None;
            // Receivers of the old channel see it closed and take a fresh snapshot.
            self.frames = broadcast::channel(self.frames_capacity).0;
        }
        for (i, status) in snapshot.statuses.iter().enumerate() {
            self.set(c, i, *status);
        }
        let view = &mut self.views[c];
        if !view.info.seated {
            view.counts = snapshot.counts;
        }
        view.seq = snapshot.seq;
        view.loaded = true;
        self.counts_touched.insert(c);
        if !self.loaded && self.views.iter().all(|v| v.loaded) {
            self.first_load_done();
        }
    }

    /// Every category is known: what happened before was never shown, so nothing is owed, and
    /// `seq` starts above every number earlier feeds or loads handed out.
    fn first_load_done(&mut self) {
        self.loaded = true;
        self.shown.clear();
        self.counts_touched.clear();
        for view in &mut self.views {
            view.shown_counts = view.counts;
        }
        self.seq = self.seq.max(self.category_seq_floor());
        self.snapshot = None;
        for reply in std::mem::take(&mut self.waiting) {
            self.subscribe(reply);
        }
    }

    /// Each category's seq starts every load above all earlier ones (the store's load counter
    /// in the high bits), so the highest is above anything a feed of an earlier process sent.
    fn category_seq_floor(&self) -> u64 {
        self.views.iter().map(|v| v.seq).max().unwrap_or(0)
    }

    fn apply_delta(&mut self, c: usize, delta: &Delta) {
        for change in &delta.changes {
            if let Some(&i) = self.views[c].index.get(&change.seat_id) {
                self.set(c, i, change.status);
            }
        }
        let view = &mut self.views[c];
        view.seq = delta.seq;
        if !view.info.seated {
            view.counts = delta.counts;
            self.counts_touched.insert(c);
        }
    }

    /// Sets one seat's status, remembering what subscribers were last shown and keeping a
    /// seated category's counts exact (committed statuses only, unlike the actor's counts,
    /// which include holds not yet durable).
    fn set(&mut self, c: usize, i: usize, status: SeatStatus) {
        let view = &mut self.views[c];
        let old = view.statuses[i];
        if old == status {
            return;
        }
        self.shown.entry((c, i)).or_insert(old);
        view.statuses[i] = status;
        *count_of(&mut view.counts, old) -= 1;
        *count_of(&mut view.counts, status) += 1;
        self.counts_touched.insert(c);
    }

    fn schedule_flush(&mut self) {
        if self.coalesce.is_zero() {
            self.flush();
        } else if self.flush_at.is_none() {
            self.flush_at = Some(Instant::now() + self.coalesce);
        }
    }

    /// Sends what changed since the last frame as the next frame, if anything did.
    fn flush(&mut self) {
        self.flush_at = None;
        let changes = self.take_changes();
        let counts = self.take_counts();
        if changes.is_empty() && counts.is_empty() {
            return;
        }
        self.seq += 1;
        // The cached snapshot names the previous seq.
        self.snapshot = None;
        let frame = DeltaFrame {
            kind: "delta",
            seq: self.seq,
            changes,
            counts,
        };
        if let Some(bytes) = to_bytes(&frame) {
            // No subscribers is fine: the frame only advances `seq`.
            let _ = self.frames.send(bytes);
        }
    }

    fn take_changes(&mut self) -> Vec<ChangeOut> {
        let shown = std::mem::take(&mut self.shown);
        shown
            .into_iter()
            .filter(|&((c, i), was)| self.views[c].statuses[i] != was)
            .map(|((c, i), _)| ChangeOut {
                seat_id: self.views[c].seats[i].id,
                ticket_category_id: self.views[c].info.id,
                status: self.views[c].statuses[i],
            })
            .collect()
    }

    fn take_counts(&mut self) -> Vec<CountsOut> {
        let touched = std::mem::take(&mut self.counts_touched);
        let mut out = Vec::new();
        for c in touched {
            let view = &mut self.views[c];
            if view.counts != view.shown_counts {
                view.shown_counts = view.counts;
                out.push(CountsOut {
                    ticket_category_id: view.info.id,
                    counts: view.counts,
                });
            }
        }
        out
    }

    /// Answers a subscriber with the current state and the frames after it, or keeps it
    /// waiting until every category has loaded.
    fn subscribe(&mut self, reply: oneshot::Sender<Subscription>) {
        if !self.loaded {
            self.waiting.push(reply);
            return;
        }
        let snapshot = match &self.snapshot {
            Some(bytes) => bytes.clone(),
            None => {
                let Some(bytes) = to_bytes(&self.snapshot_frame()) else {
                    return;
                };
                self.snapshot = Some(bytes.clone());
                bytes
            }
        };
        // Subscribed here, between frames, so the receiver starts at exactly `seq + 1`.
        let frames = self.frames.subscribe();
        let _ = reply.send(Subscription {
            snapshot,
            seq: self.seq,
            frames,
        });
    }

    /// The state as of frame `seq`: changes not yet flushed are left out, because the next
    /// frame says only what differs from the previous frame. (A snapshot that showed a seat
    /// held before its frame went out would never hear of it if the seat were released again
    /// within the same tick.) So it changes only when a frame goes out, and is cached until then.
    fn snapshot_frame(&self) -> SnapshotFrame<'_> {
        let categories = self
            .views
            .iter()
            .enumerate()
            .map(|(c, view)| CategoryOut::as_shown(view, |i| self.shown.get(&(c, i)).copied()))
            .collect();
        SnapshotFrame {
            kind: "snapshot",
            program_id: self.program_id,
            seq: self.seq,
            categories,
        }
    }
}

fn count_of(counts: &mut Counts, status: SeatStatus) -> &mut u32 {
    match status {
        SeatStatus::Available => &mut counts.available,
        SeatStatus::Held => &mut counts.held,
        SeatStatus::Sold => &mut counts.sold,
    }
}

fn to_bytes(value: &impl Serialize) -> Option<Bytes> {
    match serde_json::to_vec(value) {
        Ok(v) => Some(Bytes::from(v)),
        Err(e) => {
            tracing::error!(error = %e, "seat-map frame could not be serialized");
            None
        }
    }
}

#[derive(Serialize)]
struct DeltaFrame {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    changes: Vec<ChangeOut>,
    counts: Vec<CountsOut>,
}

#[derive(Serialize)]
struct ChangeOut {
    seat_id: SeatId,
    ticket_category_id: i64,
    status: SeatStatus,
}

#[derive(Serialize)]
struct CountsOut {
    ticket_category_id: i64,
    #[serde(flatten)]
    counts: Counts,
}

#[derive(Serialize)]
struct SnapshotFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    program_id: i64,
    seq: u64,
    categories: Vec<CategoryOut<'a>>,
}

#[derive(Serialize)]
struct CategoryOut<'a> {
    #[serde(flatten)]
    info: &'a FeedCategory,
    counts: Counts,
    seats: Vec<SeatOut>,
}

impl<'a> CategoryOut<'a> {
    /// The category as the last frame left it: `unflushed(i)` is seat `i`'s status then, if it
    /// changed since.
    fn as_shown(view: &'a View, unflushed: impl Fn(usize) -> Option<SeatStatus>) -> Self {
        CategoryOut {
            info: &view.info,
            counts: view.shown_counts,
            seats: view
                .seats
                .iter()
                .zip(&view.statuses)
                .enumerate()
                .map(|(i, (s, status))| SeatOut {
                    id: s.id,
                    row: s.row,
                    col: s.col,
                    status: unflushed(i).unwrap_or(*status),
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct SeatOut {
    id: SeatId,
    row: i32,
    col: i32,
    status: SeatStatus,
}

/// Follows one category for its feed, across the actor's reloads and restarts, until the feed
/// is gone.
async fn tap(
    supervisor: Supervisor,
    index: usize,
    category_id: i64,
    events: mpsc::Sender<TapEvent>,
) {
    loop {
        match supervisor.watch(category_id).await {
            Ok(watched) => {
                if follow(watched, index, &events).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(category_id, error = %e, "seat-map feed cannot watch category yet");
                tokio::time::sleep(TAP_RETRY).await;
            }
        }
        if events.is_closed() {
            return;
        }
    }
}

/// The feed is gone.
struct Gone;

/// Forwards one actor's committed deltas in `seq` order, with gaps closed by a later snapshot:
/// the snapshot read at attach time may be older than the first delta received, a receiver may
/// lag, and a change may land between the actor's start and our subscription with no delta
/// after it. A published snapshot newer than the last delta forwarded always wins (snapshots
/// are republished within `actors.snapshot_interval_ms` of a change). Ok when the actor ended.
async fn follow(
    mut watched: Watched,
    index: usize,
    events: &mpsc::Sender<TapEvent>,
) -> Result<(), Gone> {
    let first = watched.snapshot.borrow_and_update().clone();
    let mut last = first.seq;
    send(events, TapEvent::Rebase(index, first)).await?;
    // Deltas received since a gap opened, waiting for a snapshot that reaches them.
    let mut gap: Option<Vec<Arc<Delta>>> = None;
    loop {
        tokio::select! {
            received = watched.deltas.recv() => match received {
                Ok(delta) => match gap.as_mut() {
                    None if delta.seq <= last => continue,
                    None if delta.seq == last + 1 => {
                        last = delta.seq;
                        send(events, TapEvent::Delta(index, delta)).await?;
                        continue;
                    }
                    None => gap = Some(vec![delta]),
                    Some(buffer) if buffer.len() >= MAX_GAP_BUFFER => buffer.clear(),
                    Some(buffer) => buffer.push(delta),
                },
                // The next receive yields the oldest delta still kept: the gap starts there.
                Err(RecvError::Lagged(_)) => gap = Some(Vec::new()),
                Err(RecvError::Closed) => return Ok(()),
            },
            changed = watched.snapshot.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                if gap.is_none() {
                    let snapshot = watched.snapshot.borrow_and_update().clone();
                    if snapshot.seq > last {
                        last = snapshot.seq;
                        send(events, TapEvent::Rebase(index, snapshot)).await?;
                    }
                    continue;
                }
            }
        }
        if let Some(buffer) = gap.take() {
            match close_gap(&mut watched, buffer, index, events).await? {
                Ok(seq) => last = seq,
                Err(buffer) => gap = Some(buffer),
            }
        }
    }
}

/// If the published snapshot reaches the first buffered delta, rebases on it and forwards the
/// buffered deltas after it (answering the new last `seq`); otherwise hands the buffer back.
async fn close_gap(
    watched: &mut Watched,
    buffer: Vec<Arc<Delta>>,
    index: usize,
    events: &mpsc::Sender<TapEvent>,
) -> Result<Result<u64, Vec<Arc<Delta>>>, Gone> {
    let snapshot = watched.snapshot.borrow_and_update().clone();
    let reaches = buffer.first().is_some_and(|d| snapshot.seq + 1 >= d.seq);
    if !reaches {
        return Ok(Err(buffer));
    }
    let mut last = snapshot.seq;
    send(events, TapEvent::Rebase(index, snapshot)).await?;
    for delta in buffer {
        if delta.seq == last + 1 {
            last = delta.seq;
            send(events, TapEvent::Delta(index, delta)).await?;
        }
    }
    Ok(Ok(last))
}

async fn send(events: &mpsc::Sender<TapEvent>, event: TapEvent) -> Result<(), Gone> {
    events.send(event).await.map_err(|_| Gone)
}

/// One open seat-map socket's source: the snapshot, then the program's frames; a fresh
/// snapshot after falling behind or when the client asks (`{"type": "resync"}`).
pub struct SeatMapSource {
    feeds: SeatFeeds,
    program_id: i64,
    categories: Arc<[FeedCategory]>,
    first: Option<Bytes>,
    frames: broadcast::Receiver<Bytes>,
    resync: bool,
}

impl SeatMapSource {
    /// Starts with `subscription`'s snapshot.
    pub fn new(
        feeds: SeatFeeds,
        program_id: i64,
        categories: Arc<[FeedCategory]>,
        subscription: Subscription,
    ) -> Self {
        SeatMapSource {
            feeds,
            program_id,
            categories,
            first: Some(subscription.snapshot),
            frames: subscription.frames,
            resync: false,
        }
    }
}

impl Source for SeatMapSource {
    async fn next(&mut self) -> Result<Bytes, Close> {
        if let Some(snapshot) = self.first.take() {
            return Ok(snapshot);
        }
        loop {
            if self.resync {
                let fresh = self
                    .feeds
                    .subscribe(self.program_id, &self.categories)
                    .await
                    .map_err(|_| close(CloseCode::Again, "seat map unavailable; reconnect"))?;
                self.frames = fresh.frames;
                self.resync = false;
                metrics::counter!("ws_seat_map_resyncs_total").increment(1);
                return Ok(fresh.snapshot);
            }
            match self.frames.recv().await {
                Ok(frame) => return Ok(frame),
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => self.resync = true,
            }
        }
    }

    fn on_text(&mut self, text: &str) -> Result<(), Close> {
        #[derive(serde::Deserialize)]
        struct ClientMessage {
            #[serde(rename = "type")]
            kind: String,
        }
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(m) if m.kind == "resync" => {
                self.resync = true;
                Ok(())
            }
            _ => Err(close(CloseCode::Unsupported, "unknown message")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::inventory::SeatChange;
    use proptest::prelude::*;
    use serde_json::Value;

    const SEATS: i64 = 6;

    /// A loaded feed over one seated category of `SEATS` free seats, coalescing (frames go out
    /// only when the test flushes).
    fn loaded_feed() -> Feed {
        let info = FeedCategory {
            id: 7,
            show_time_id: 1,
            name: "Seated".into(),
            price_cents: 100,
            seated: true,
        };
        let seats: Arc<[SeatInfo]> = (1..=SEATS)
            .map(|id| SeatInfo {
                id,
                row: 1,
                col: id as i32,
                price_cents: 100,
            })
            .collect();
        let mut feed = Feed {
            program_id: 1,
            seq: 0,
            loaded: false,
            views: vec![View::new(info)],
            frames: broadcast::channel(64).0,
            frames_capacity: 64,
            shown: BTreeMap::new(),
            counts_touched: BTreeSet::new(),
            snapshot: None,
            waiting: Vec::new(),
            flush_at: None,
            coalesce: Duration::from_secs(3600),
        };
        let snapshot = CategorySnapshot {
            category_id: 7,
            seq: 1,
            counts: Counts::default(),
            in_flight: 0,
            statuses: vec![SeatStatus::Available; seats.len()],
            seats,
        };
        feed.apply(TapEvent::Rebase(0, Arc::new(snapshot)));
        feed
    }

    fn change(feed: &mut Feed, seat: i64, status: SeatStatus) {
        let seq = feed.views[0].seq + 1;
        let delta = Delta {
            seq,
            changes: vec![SeatChange {
                seat_id: seat,
                ticket_category_id: 7,
                status,
            }],
            counts: Counts::default(),
        };
        feed.apply(TapEvent::Delta(0, Arc::new(delta)));
    }

    /// A client: the snapshot it was given, with every frame since applied in order.
    struct Client {
        seq: u64,
        seats: BTreeMap<i64, String>,
        frames: broadcast::Receiver<Bytes>,
    }

    impl Client {
        fn join(feed: &mut Feed) -> Client {
            let (reply, mut answer) = oneshot::channel();
            feed.subscribe(reply);
            let s = answer.try_recv().expect("a loaded feed answers at once");
            let snapshot: Value = serde_json::from_slice(&s.snapshot).unwrap();
            let seats = snapshot["categories"][0]["seats"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["id"].as_i64().unwrap(), s["status"].to_string()))
                .collect();
            Client {
                seq: s.seq,
                seats,
                frames: s.frames,
            }
        }

        fn catch_up(&mut self) {
            while let Ok(bytes) = self.frames.try_recv() {
                let frame: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(frame["seq"], self.seq + 1);
                self.seq += 1;
                for c in frame["changes"].as_array().unwrap() {
                    let seat = c["seat_id"].as_i64().unwrap();
                    self.seats.insert(seat, c["status"].to_string());
                }
            }
        }
    }

    fn truth(feed: &Feed) -> BTreeMap<i64, String> {
        let view = &feed.views[0];
        view.seats
            .iter()
            .zip(&view.statuses)
            .map(|(s, st)| (s.id, serde_json::to_string(st).unwrap()))
            .collect()
    }

    #[test]
    fn a_subscriber_joining_between_a_hold_and_its_release_in_one_tick_ends_with_the_seat_free() {
        let mut feed = loaded_feed();
        change(&mut feed, 3, SeatStatus::Held);
        let mut late = Client::join(&mut feed);
        change(&mut feed, 3, SeatStatus::Available);
        feed.flush();
        late.catch_up();
        assert_eq!(late.seats, truth(&feed));
        assert_eq!(late.seats[&3], "\"available\"");
    }

    proptest! {
        /// Any interleaving of changes, joins and frames leaves every subscriber, once it has
        /// read every frame, with the feed's map.
        #[test]
        fn every_subscriber_converges_on_the_feeds_map(
            steps in prop::collection::vec((0u8..4, 1..=SEATS, 0u8..3), 1..60)
        ) {
            let mut feed = loaded_feed();
            let mut clients = vec![Client::join(&mut feed)];
            for (what, seat, status) in steps {
                match what {
                    0 => clients.push(Client::join(&mut feed)),
                    1 => feed.flush(),
                    _ => {
                        let all = [SeatStatus::Available, SeatStatus::Held, SeatStatus::Sold];
                        change(&mut feed, seat, all[status as usize]);
                    }
                }
            }
            feed.flush();
            for client in &mut clients {
                client.catch_up();
                prop_assert_eq!(&client.seats, &truth(&feed));
            }
        }
    }
}
