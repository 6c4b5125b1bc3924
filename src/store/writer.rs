//! The group-commit writer (ARCHITECTURE.md, "Placing an order", step 4): changes from every
//! actor and new orders queue here and are committed in batches — as many as arrive while the
//! previous commit runs, up to `max_batch`, waiting at most `max_wait` for company — one
//! transaction per batch, with a fixed number of set-based statements whatever its size
//! (`store::batch`).
//!
//! Nothing inside Postgres runs per order, so nothing fails per order there: the writer checks
//! every order of the batch first (one query) and answers refusals itself. Should the database
//! still refuse the batch — rows not where a job expected them, or a constraint firing, which
//! means a bug — the writer rolls back, sets the culprit aside (splitting the batch until it is
//! found) and commits the rest. Nobody is told "done" before the commit returned: durable
//! before acknowledged.

use super::batch::{self, BatchTally, JobWrite, OrderFacts, Verdict, WriteSet};
use super::idempotency::Stored;
use super::inventory::{InventoryStore, PgInventoryStore};
use super::orders::{PlaceOrder, record_discarded};
use super::{PgPool, Refusal, StoreError, WriterGone};
use crate::domain::inventory::{CategorySpec, Change, LoadedOrder};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Batch bounds and queue size.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// Most jobs in one transaction.
    pub max_batch: usize,
    /// Longest wait for more jobs once one is waiting (0 = take only what is queued).
    pub max_wait: Duration,
    /// Jobs queued before submitters wait (bounded memory under overload).
    pub queue: usize,
    /// Writer tasks per shard, committing in parallel. Production uses 1: one writer per shard
    /// is what makes the account limit checked inside its transaction exact. More exist only so
    /// the ordering benchmark can measure one-transaction-per-order in parallel as its baseline.
    pub writers: usize,
    /// Independent queues, each with its own writer(s) and connection. A job goes to the shard
    /// of its order's gene (`order_no & 15`, the buyer's gene), so all orders of one buyer — and
    /// every later change of an order — are committed by one writer, one batch after another:
    /// the account limit stays exact while Postgres runs several batches at once.
    pub shards: usize,
}

/// Counters for tests, the admin stream and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Jobs committed.
    pub jobs: AtomicU64,
    /// Jobs refused alone (a check, rows not where the job expected, or a constraint); the
    /// rest of their batch committed.
    pub refused: AtomicU64,
    /// Jobs failed because their batch's commit failed.
    pub failed: AtomicU64,
    /// Batches run again after Postgres aborted them to break a deadlock.
    pub retried: AtomicU64,
    /// Statements sent, BEGIN and COMMIT included (a batch's cost in round trips and parsing
    /// is what the set-based design keeps fixed).
    pub statements: AtomicU64,
    /// Batches rolled back and run again without a culprit, or split to find one.
    pub split: AtomicU64,
    /// Time from a committed group's BEGIN to its COMMIT's answer (retries included), for the
    /// admin stream's p50/p99; Prometheus gets `writer_commit_seconds`.
    pub commit_latency: crate::monitor::LatencySummary,
}

/// What became of a new order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// Committed.
    Written,
    /// Not written: its `Idempotency-Key` already has a stored answer (request hash, status,
    /// body), which the caller replays or refuses as a reused key.
    Replayed(Stored),
}

/// A job's answer.
type JobResult = Result<Placed, StoreError>;

/// The writer's sessions abort a transaction left idle this long (`Stores::connect` sets it):
/// a batch whose COMMIT never reached the server must not hold its seat locks for hours.
pub const WRITER_IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);

/// Attempts per batch when Postgres aborts it to break a deadlock or a serialization conflict:
/// the abort rolled the whole batch back and its seats are still reserved by their actors, so
/// running it again is safe; past this the batch fails (its orders answer 503).
const ATTEMPTS: usize = 3;

/// What a job writes.
enum Write {
    /// Actor changes (releases, confirmations, returns, plain holds).
    Changes(Vec<Change>),
    /// A new order with its reserved seats, tickets, outbox event and idempotency record.
    Order(Box<PlaceOrder>),
}

struct Job {
    write: Write,
    reply: oneshot::Sender<JobResult>,
}

impl Job {
    /// The job as the batch statements see it.
    fn as_write(&self) -> JobWrite<'_> {
        match &self.write {
            Write::Changes(changes) => JobWrite::Changes(changes),
            Write::Order(order) => JobWrite::Order(order),
        }
    }

    /// Its refusal when its rows were not where it expected (or clash with another job's):
    /// for an order the actors' memory disagrees with Postgres (they reload on this code);
    /// for a change the actor reloads on a conflict.
    fn mismatch(&self) -> StoreError {
        match &self.write {
            Write::Order(_) => {
                StoreError::refused(Refusal::SeatUnavailable, "a seat was taken meanwhile")
            }
            Write::Changes(changes) => StoreError::Conflict(format!(
                "changes of order {} found their rows moved",
                changes.first().map_or(0, |c| c.order_no)
            )),
        }
    }
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct GroupCommitWriter {
    shards: Arc<[mpsc::Sender<Job>]>,
    stats: Arc<WriterStats>,
}

impl GroupCommitWriter {
    /// Starts the writer tasks (`writers` per shard) on the current runtime. `pool` should be
    /// the writer's own (`Stores::writer_pg`, one connection per task), so that commits never
    /// queue behind request handlers for a connection.
    pub fn start(pool: PgPool, settings: WriterSettings) -> Self {
        let stats = Arc::new(WriterStats::default());
        let shards = (0..settings.shards.max(1))
            .map(|_| {
                let (queue, rx) = mpsc::channel(settings.queue.max(1));
                let rx = Arc::new(tokio::sync::Mutex::new(rx));
                for _ in 0..settings.writers.max(1) {
                    tokio::spawn(run(pool.clone(), rx.clone(), settings, stats.clone()));
                }
                queue
            })
            .collect();
        GroupCommitWriter { shards, stats }
    }

    /// Commits `changes` (all of one order) atomically, with whatever else shares the batch;
    /// `Ok` only after the commit succeeded.
    pub async fn submit(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let order_no = changes.first().map_or(0, |c| c.order_no);
        self.enqueue(order_no, Write::Changes(changes))
            .await
            .map(|_| ())
    }

    /// Commits a new order (see [`PlaceOrder`]); `Ok(Written)` only after the commit succeeded.
    /// A refusal of the writer's checks (account limit, ticket buyers, key in use) comes back as
    /// [`StoreError::Refused`], a key with a stored answer as [`Placed::Replayed`].
    pub async fn place_order(&self, order: PlaceOrder) -> Result<Placed, StoreError> {
        let order_no = order.order_no;
        self.enqueue(order_no, Write::Order(Box::new(order))).await
    }

    /// The shard that commits everything of `order_no` (and of its buyer).
    pub fn shard_of(&self, order_no: i64) -> usize {
        (order_no & 15) as usize % self.shards.len()
    }

    async fn enqueue(&self, order_no: i64, write: Write) -> JobResult {
        let (reply, answer) = oneshot::channel();
        self.shards[self.shard_of(order_no)]
            .send(Job { write, reply })
            .await
            .map_err(|_| WriterGone::Stopped)?;
        answer.await.map_err(|_| WriterGone::Dropped)?
    }

    /// Counters since start.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}

/// One writer task. The queue's lock is held only while a batch is gathered, so with several
/// writers one gathers while the others commit.
async fn run(
    pool: PgPool,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    settings: WriterSettings,
    stats: Arc<WriterStats>,
) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            gather(first, &mut rx, settings).await
        };
        commit_batch(&pool, batch, &stats).await;
    }
}

/// Everything already queued, then whatever arrives within `max_wait`, up to `max_batch`.
async fn gather(first: Job, rx: &mut mpsc::Receiver<Job>, settings: WriterSettings) -> Vec<Job> {
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + settings.max_wait;
    while batch.len() < settings.max_batch {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) if settings.max_wait.is_zero() => break,
            Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => batch.push(job),
                _ => break,
            },
        }
    }
    batch
}

/// Commits `batch`, answering every job. A batch rolled back for a culprit runs again without
/// it; one refused by a constraint is split in halves until the job that breaks it stands
/// alone (a bug: the checks and the actors should have kept it out).
async fn commit_batch(pool: &PgPool, batch: Vec<Job>, stats: &WriterStats) {
    let mut answers: Vec<Option<JobResult>> = (0..batch.len()).map(|_| None).collect();
    let mut groups = vec![(0..batch.len()).collect::<Vec<usize>>()];
    while let Some(group) = groups.pop() {
        let started = std::time::Instant::now();
        match attempt(pool, &batch, &group, stats).await {
            Ok(Attempt::Committed(results)) => {
                record_commit(stats, started.elapsed());
                stats.batches.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("writer_batches_total").increment(1);
                metrics::histogram!("writer_batch_size").record(group.len() as f64);
                for (i, result) in group.into_iter().zip(results) {
                    answers[i] = Some(result);
                }
            }
            Ok(Attempt::Mismatched(culprits)) => {
                stats.split.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("writer_splits_total").increment(1);
                tracing::warn!(jobs = ?culprits, "rows not where jobs expected them; committing the rest without them");
                for &i in &culprits {
                    answers[i] = Some(Err(batch[i].mismatch()));
                }
                let rest: Vec<usize> = group
                    .into_iter()
                    .filter(|i| !culprits.contains(i))
                    .collect();
                if !rest.is_empty() {
                    groups.push(rest);
                }
            }
            Err(failure) if failure.constraint.is_some() && group.len() > 1 => {
                stats.split.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("writer_splits_total").increment(1);
                tracing::warn!(error = %failure.error, jobs = group.len(), "a constraint refused a batch; splitting it");
                let (first, second) = group.split_at(group.len() / 2);
                groups.push(second.to_vec());
                groups.push(first.to_vec());
            }
            Err(failure) if failure.constraint.is_some() => {
                answers[group[0]] = Some(Err(set_aside(pool, &batch[group[0]], &failure).await));
            }
            Err(failure) => {
                tracing::error!(error = %failure.error, jobs = group.len(), "group commit failed");
                for i in group {
                    answers[i] = Some(Err(failure.error.clone()));
                }
            }
        }
    }
    reply(batch, answers, stats);
}

/// Sends every job its answer and counts them.
fn reply(batch: Vec<Job>, answers: Vec<Option<JobResult>>, stats: &WriterStats) {
    for (job, answer) in batch.into_iter().zip(answers) {
        let answer = answer.unwrap_or(Err(WriterGone::Lost.into()));
        let counter = match &answer {
            Ok(_) => &stats.jobs,
            Err(StoreError::Refused { .. } | StoreError::Conflict(_)) => &stats.refused,
            Err(_) => &stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let _ = job.reply.send(answer);
    }
}

/// The job a constraint refused on its own: an order is recorded as discarded (operators see
/// it; it was never acknowledged) and refused with the code its constraint stands for; a change
/// is a conflict, on which its actor reloads.
async fn set_aside(pool: &PgPool, job: &Job, failure: &BatchFailure) -> StoreError {
    tracing::error!(error = %failure.error, "a constraint refused a job alone; set aside");
    let Write::Order(order) = &job.write else {
        return StoreError::Conflict(failure.error.to_string());
    };
    let constraint = failure.constraint.as_deref().unwrap_or_default();
    if let Err(e) = record_discarded(pool, order, &failure.error.to_string()).await {
        tracing::error!(order_no = order.order_no, error = %e, "discarded order not recorded");
    }
    match batch::refusal_for_constraint(constraint) {
        Some((reason, message)) => StoreError::refused(reason, message),
        None => StoreError::UnknownRefusal {
            constraint: constraint.to_string(),
            source: Arc::new(failure.error.clone()),
        },
    }
}

/// What one transaction over a group of jobs came to.
enum Attempt {
    /// Committed; every job's answer, in the group's order.
    Committed(Vec<JobResult>),
    /// Rolled back: these jobs' rows were not in the state they expected.
    Mismatched(Vec<usize>),
}

/// Runs the group, again if Postgres aborted it to break a deadlock (rolled back whole, its
/// seats still reserved by their actors, so running it again is safe).
async fn attempt(
    pool: &PgPool,
    batch: &[Job],
    group: &[usize],
    stats: &WriterStats,
) -> Result<Attempt, BatchFailure> {
    let mut outcome = write_and_resolve(pool, batch, group, stats).await;
    for attempt in 2..=ATTEMPTS {
        let Err(failure) = &outcome else { break };
        if !worth_rerunning(failure) {
            break;
        }
        tracing::warn!(
            jobs = group.len(),
            attempt,
            error = %failure.error,
            "group commit met another shard's batch; running the batch again"
        );
        stats.retried.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("writer_retries_total").increment(1);
        outcome = write_and_resolve(pool, batch, group, stats).await;
    }
    outcome
}

/// Whether a failed group should simply run again, whole. Shards share rows only in shared
/// places: a general-admission counter, where Postgres breaks a deadlock by aborting one batch;
/// and a person's claim — two accounts on different shards naming one person commit at once,
/// the later claim waits for the earlier and is refused once it commits. Either way the group
/// rolled back whole with its seats still reserved by their actors, and on the rerun the
/// orders' checks see the other batch's claims: the order naming a claimed person is refused
/// by its check like any other, and the rest commit — no split, nothing set aside.
fn worth_rerunning(failure: &BatchFailure) -> bool {
    super::postgres::is_transient_conflict(&failure.error)
        || failure.constraint.as_deref() == Some(batch::PERSON_CLAIM)
}

/// Why a group did not report a commit.
struct BatchFailure {
    error: StoreError,
    /// The constraint that refused the batch, if one did (SQLSTATE class 23).
    constraint: Option<String>,
    /// Set when `COMMIT` itself failed: the transaction id and the answers the jobs would
    /// have, for asking Postgres what became of it.
    at_commit: Option<(i64, Vec<JobResult>)>,
}

impl From<StoreError> for BatchFailure {
    fn from(error: StoreError) -> Self {
        BatchFailure {
            error,
            constraint: None,
            at_commit: None,
        }
    }
}

impl From<tokio_postgres::Error> for BatchFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        batch::WriteError::from(e).into()
    }
}

impl From<batch::WriteError> for BatchFailure {
    fn from(e: batch::WriteError) -> Self {
        BatchFailure {
            error: e.error,
            constraint: e.constraint,
            at_commit: None,
        }
    }
}

impl From<deadpool_postgres::PoolError> for BatchFailure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::from(e).into()
    }
}

/// Runs the group; if the answer to its `COMMIT` was lost (the connection broke), asks Postgres
/// whether that transaction committed, so that nobody is told "failed" about a committed order
/// (its seats would be freed in the actors while Postgres holds them) or "done" about one that
/// did not commit.
async fn write_and_resolve(
    pool: &PgPool,
    batch: &[Job],
    group: &[usize],
    stats: &WriterStats,
) -> Result<Attempt, BatchFailure> {
    let mut failure = match write_group(pool, batch, group, stats).await {
        Ok(attempt) => return Ok(attempt),
        Err(failure) => failure,
    };
    let Some((xid, results)) = failure.at_commit.take() else {
        return Err(failure);
    };
    tracing::warn!(xid, error = %failure.error, "the answer to a batch's COMMIT was lost; asking Postgres");
    let orders: Vec<i64> = group
        .iter()
        .filter_map(|&i| order_of(&batch[i]))
        .map(|o| o.order_no)
        .collect();
    match commit_status(pool, xid, &orders).await {
        Some(true) => Ok(Attempt::Committed(results)),
        Some(false) => Err(failure),
        None => Err(StoreError::CommitUnknown(Arc::new(failure.error)).into()),
    }
}

/// Whether the batch's transaction committed, asked on a fresh connection until Postgres can
/// tell: `Some(committed)`, or `None` if it cannot within a few seconds.
///
/// `txid_status(xid)` alone is not enough: if Postgres crashed before the batch's WAL reached
/// disk, crash recovery hands the same xid to a later transaction, and its `committed` would
/// acknowledge orders that never existed (the fault suite found exactly that). So a batch
/// with orders is judged by its own rows — all of its orders exist, or none does (one
/// transaction). A batch without orders (releases, holds) is judged by `txid_status`: a wrong
/// `committed` there after such a crash makes actors free seats Postgres still holds, which
/// the claims refuse to sell twice and the reconciler repairs.
pub async fn commit_status(pool: &PgPool, xid: i64, orders: &[i64]) -> Option<bool> {
    // Bounded: the writer's sessions end an idle transaction after
    // `WRITER_IDLE_IN_TRANSACTION` (a COMMIT that never arrived then reads as aborted), and a
    // shard must not stall longer than that on one lost answer.
    let deadline = tokio::time::Instant::now() + WRITER_IDLE_IN_TRANSACTION * 2;
    while tokio::time::Instant::now() < deadline {
        match ask_commit_status(pool, xid, orders).await {
            Ok(Some(answer)) => return answer,
            // In progress (the backend has not finished the COMMIT yet), or Postgres unreachable.
            Ok(None) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    None
}

/// One attempt of [`commit_status`]: `Ok(None)` while the transaction is still in progress,
/// `Ok(Some(None))` when the outcome cannot be known.
async fn ask_commit_status(
    pool: &PgPool,
    xid: i64,
    orders: &[i64],
) -> Result<Option<Option<bool>>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT txid_status($1)::text,
                    (SELECT count(*) FROM orders o JOIN unnest($2::bigint[]) AS n (no)
                     ON o.gene = (n.no & 15)::smallint AND o.order_no = n.no)",
            &[&xid, &orders],
        )
        .await?;
    let status: Option<String> = row.get(0);
    if status.as_deref() == Some("in progress") {
        return Ok(None);
    }
    if orders.is_empty() {
        return Ok(Some(match status.as_deref() {
            Some("committed") => Some(true),
            Some("aborted") => Some(false),
            _ => None,
        }));
    }
    let found: i64 = row.get(1);
    Ok(Some(match found {
        0 => Some(false),
        n if n == orders.len() as i64 => Some(true),
        _ => None,
    }))
}

/// One transaction over the jobs `group` names: BEGIN; the transaction id and the orders'
/// checks (pipelined); every write (pipelined); COMMIT — four round trips and at most a dozen
/// statements, whatever the group's size.
async fn write_group(
    pool: &PgPool,
    batch: &[Job],
    group: &[usize],
    stats: &WriterStats,
) -> Result<Attempt, BatchFailure> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let orders: Vec<&PlaceOrder> = group.iter().filter_map(|&i| order_of(&batch[i])).collect();
    // The id to ask `txid_status` about should the answer to COMMIT be lost.
    let (xid, facts) = futures::join!(tx.query_one("SELECT txid_current()", &[]), async {
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        batch::check_orders(&tx, &orders).await
    });
    let (xid, facts): (i64, Vec<OrderFacts>) = (xid?.get(0), facts?);
    let (set, mut answers) = decide(batch, group, &facts);
    let written = if set.is_empty() {
        Ok(None)
    } else {
        batch::write(&tx, &set).await.map(Some)
    };
    let writes = written
        .as_ref()
        .map_or(0, |w| w.as_ref().map_or(0, |w| w.statements));
    // BEGIN, txid and COMMIT (or ROLLBACK), the check if there were orders, the writes.
    count_statements(stats, 3 + u64::from(!orders.is_empty()) + writes);
    let mismatched = written?.map(|w| w.mismatched).unwrap_or_default();
    if !mismatched.is_empty() {
        tx.rollback().await?;
        return Ok(Attempt::Mismatched(mismatched));
    }
    for &i in &set.clashes {
        answers[i] = Some(Err(batch[i].mismatch()));
    }
    let results: Vec<JobResult> = group
        .iter()
        .map(|&i| answers[i].take().unwrap_or(Ok(Placed::Written)))
        .collect();
    match tx.commit().await {
        Ok(()) => Ok(Attempt::Committed(results)),
        Err(e) => Err(BatchFailure {
            at_commit: Some((xid, results)),
            ..e.into()
        }),
    }
}

/// How long a committed group took, for the admin stream and `/metrics`.
fn record_commit(stats: &WriterStats, took: Duration) {
    stats.commit_latency.record(took);
    metrics::histogram!("writer_commit_seconds").record(took.as_secs_f64());
}

fn count_statements(stats: &WriterStats, n: u64) {
    stats.statements.fetch_add(n, Ordering::Relaxed);
    metrics::counter!("writer_statements_total").increment(n);
}

fn order_of(job: &Job) -> Option<&PlaceOrder> {
    match &job.write {
        Write::Order(order) => Some(order),
        Write::Changes(_) => None,
    }
}

/// Judges the group's orders in order (each sees the ones before it as written) and stages
/// what passes; answers, by batch index, the jobs that are not written.
fn decide(
    batch: &[Job],
    group: &[usize],
    facts: &[OrderFacts],
) -> (WriteSet, Vec<Option<JobResult>>) {
    let mut answers: Vec<Option<JobResult>> = (0..batch.len()).map(|_| None).collect();
    let (mut set, mut tally) = (WriteSet::default(), BatchTally::default());
    let mut facts = facts.iter();
    for &i in group {
        let job = &batch[i];
        let verdict = match order_of(job) {
            None => Verdict::Write,
            Some(order) => tally.judge(order, facts.next().unwrap_or(&OrderFacts::default())),
        };
        match verdict {
            Verdict::Write => set.stage(i, job.as_write()),
            Verdict::Refuse(e) => answers[i] = Some(Err(e)),
            Verdict::Replay(stored) => answers[i] = Some(Ok(Placed::Replayed(stored))),
        }
    }
    (set, answers)
}

/// The actors' store in production: loads like [`PgInventoryStore`], writes through the
/// group-commit writer.
#[derive(Clone)]
pub struct GroupCommitStore {
    loads: PgInventoryStore,
    writer: GroupCommitWriter,
}

impl GroupCommitStore {
    /// A store over `pool` and `writer`; loads run on `runtime` (actors' threads do no I/O).
    pub fn new(pool: PgPool, writer: GroupCommitWriter, runtime: tokio::runtime::Handle) -> Self {
        GroupCommitStore {
            loads: PgInventoryStore::new(pool, runtime),
            writer,
        }
    }
}

impl InventoryStore for GroupCommitStore {
    fn load(
        &self,
        category_id: i64,
    ) -> BoxFuture<'static, Result<(CategorySpec, Vec<LoadedOrder>), StoreError>> {
        self.loads.load(category_id)
    }

    fn apply(&self, change: Change) -> BoxFuture<'static, Result<(), StoreError>> {
        let writer = self.writer.clone();
        Box::pin(async move { writer.submit(vec![change]).await })
    }

    fn live_categories(&self) -> BoxFuture<'static, Result<Vec<i64>, StoreError>> {
        self.loads.live_categories()
    }
}
