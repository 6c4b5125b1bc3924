//! The group-commit writer (ARCHITECTURE.md, "Placing an order", step 4): changes from every
//! actor queue here and are committed in batches — as many as arrive while the previous commit
//! runs, up to `max_batch`, waiting at most `max_wait` for company — one transaction per batch,
//! so a rush costs one WAL flush per batch instead of one per hold.
//!
//! Each job runs under its own savepoint: a job whose rows are not in the expected state fails
//! alone and the rest of its batch still commits. A failed commit fails every job of the batch.
//! Nobody is told "done" before the commit returned: durable before acknowledged.

use super::inventory::{InventoryStore, PgInventoryStore, apply_change_in};
use super::orders::{PLACE_ORDER_SQL, PlaceOrder, insert_order_in};
use super::{PgPool, StoreError};
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
    /// Jobs refused alone (rolled back to their savepoint).
    pub refused: AtomicU64,
    /// Jobs failed because their batch's commit failed.
    pub failed: AtomicU64,
    /// Batches run again after Postgres aborted them to break a deadlock.
    pub retried: AtomicU64,
}

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
    reply: oneshot::Sender<Result<(), StoreError>>,
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
        self.enqueue(order_no, Write::Changes(changes)).await
    }

    /// Commits a new order (see [`PlaceOrder`]); `Ok` only after the commit succeeded. A business
    /// refusal inside the transaction comes back as [`StoreError::Refused`].
    pub async fn place_order(&self, order: PlaceOrder) -> Result<(), StoreError> {
        let order_no = order.order_no;
        self.enqueue(order_no, Write::Order(Box::new(order))).await
    }

    /// The shard that commits everything of `order_no` (and of its buyer).
    pub fn shard_of(&self, order_no: i64) -> usize {
        (order_no & 15) as usize % self.shards.len()
    }

    async fn enqueue(&self, order_no: i64, write: Write) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.shards[self.shard_of(order_no)]
            .send(Job { write, reply })
            .await
            .map_err(|_| StoreError::Postgres("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Postgres("the writer dropped the job".into()))?
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

async fn commit_batch(pool: &PgPool, batch: Vec<Job>, stats: &WriterStats) {
    let size = batch.len() as u64;
    let mut outcome = write_and_resolve(pool, &batch).await;
    for attempt in 2..=ATTEMPTS {
        if !outcome
            .as_ref()
            .is_err_and(super::postgres::is_transient_conflict)
        {
            break;
        }
        // Shards share rows only in shared places (general-admission counters); Postgres
        // breaks a deadlock there by aborting one batch, which rolled back whole.
        tracing::warn!(
            jobs = size,
            attempt,
            "group commit hit a deadlock; running the batch again"
        );
        stats.retried.fetch_add(1, Ordering::Relaxed);
        outcome = write_and_resolve(pool, &batch).await;
    }
    match outcome {
        Ok(results) => {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            metrics::histogram!("writer_batch_size").record(size as f64);
            for (job, result) in batch.into_iter().zip(results) {
                let counter = if result.is_ok() {
                    &stats.jobs
                } else {
                    &stats.refused
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, jobs = size, "group commit failed");
            stats.failed.fetch_add(size, Ordering::Relaxed);
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Per-job results of a committed batch.
type JobResults = Vec<Result<(), StoreError>>;

/// Why a batch did not report a commit.
struct BatchFailure {
    error: StoreError,
    /// Set when `COMMIT` itself failed: the batch's transaction id and the per-job results it
    /// would have, for asking Postgres what became of it.
    at_commit: Option<(i64, JobResults)>,
}

impl From<StoreError> for BatchFailure {
    fn from(error: StoreError) -> Self {
        BatchFailure {
            error,
            at_commit: None,
        }
    }
}

impl From<tokio_postgres::Error> for BatchFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::from(e).into()
    }
}

impl From<deadpool_postgres::PoolError> for BatchFailure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::from(e).into()
    }
}

/// Runs the batch; if the answer to its `COMMIT` was lost (the connection broke), asks Postgres
/// whether that transaction committed, so that nobody is told "failed" about a committed order
/// (its seats would be freed in the actors while Postgres holds them) or "done" about one that
/// did not commit.
async fn write_and_resolve(pool: &PgPool, batch: &[Job]) -> Result<JobResults, StoreError> {
    let failure = match write_batch(pool, batch).await {
        Ok(results) => return Ok(results),
        Err(failure) => failure,
    };
    let Some((xid, results)) = failure.at_commit else {
        return Err(failure.error);
    };
    tracing::warn!(xid, error = %failure.error, "the answer to a batch's COMMIT was lost; asking Postgres");
    match commit_status(pool, xid).await {
        Some(true) => Ok(results),
        Some(false) => Err(failure.error),
        None => Err(StoreError::CommitUnknown(failure.error.to_string())),
    }
}

/// `txid_status` of the batch's transaction, asked on a fresh connection until it is no longer
/// in progress: `Some(committed)`, or `None` if Postgres cannot tell within a few seconds.
async fn commit_status(pool: &PgPool, xid: i64) -> Option<bool> {
    // Bounded: the writer's sessions end an idle transaction after
    // `WRITER_IDLE_IN_TRANSACTION` (a COMMIT that never arrived then reads as aborted), and a
    // shard must not stall longer than that on one lost answer.
    let deadline = tokio::time::Instant::now() + WRITER_IDLE_IN_TRANSACTION * 2;
    while tokio::time::Instant::now() < deadline {
        let status = async {
            let client = pool.get().await?;
            let row = client
                .query_one("SELECT txid_status($1)::text", &[&xid])
                .await?;
            Ok::<_, StoreError>(row.get::<_, Option<String>>(0))
        };
        match status.await {
            Ok(Some(s)) if s == "committed" => return Some(true),
            Ok(Some(s)) if s == "aborted" => return Some(false),
            // In progress (the backend has not finished the COMMIT yet), or Postgres unreachable.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    None
}

/// One transaction; per-job results, or the error that failed the whole batch. Change jobs run
/// one by one under a savepoint each; order jobs are one statement each (refusals handled inside
/// it), sent pipelined so a batch of orders costs about one round trip.
async fn write_batch(pool: &PgPool, batch: &[Job]) -> Result<JobResults, BatchFailure> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // The id to ask `txid_status` about should the answer to COMMIT be lost.
    let xid: i64 = tx.query_one("SELECT txid_current()", &[]).await?.get(0);
    let mut results: Vec<Option<Result<(), StoreError>>> = (0..batch.len()).map(|_| None).collect();
    for (i, job) in batch.iter().enumerate() {
        if let Write::Changes(changes) = &job.write {
            tx.batch_execute("SAVEPOINT job").await?;
            let result = write_changes(&tx, changes).await;
            let end = if result.is_ok() {
                "RELEASE SAVEPOINT job"
            } else {
                "ROLLBACK TO SAVEPOINT job"
            };
            tx.batch_execute(end).await?;
            results[i] = Some(result);
        }
    }
    if batch.iter().any(|j| matches!(j.write, Write::Order(_))) {
        let statement = tx.prepare_cached(PLACE_ORDER_SQL).await?;
        let orders = batch
            .iter()
            .enumerate()
            .filter_map(|(i, job)| match &job.write {
                Write::Order(order) => Some((i, order)),
                Write::Changes(_) => None,
            });
        let placed = futures::future::join_all(orders.map(|(i, order)| {
            let (tx, statement) = (&tx, &statement);
            async move { (i, insert_order_in(tx, statement, order).await) }
        }))
        .await;
        for (i, result) in placed {
            match result {
                // Not a refusal: the transaction is unusable, so the whole batch fails (with the
                // error as Postgres gave it: its SQLSTATE decides whether to run it again).
                Err(e) if !matches!(e, StoreError::Refused { .. }) => return Err(e.into()),
                result => results[i] = Some(result),
            }
        }
    }
    let results: JobResults = results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect();
    match tx.commit().await {
        Ok(()) => Ok(results),
        Err(e) => Err(BatchFailure {
            error: e.into(),
            at_commit: Some((xid, results)),
        }),
    }
}

async fn write_changes(
    tx: &deadpool_postgres::Transaction<'_>,
    changes: &[Change],
) -> Result<(), StoreError> {
    for change in changes {
        apply_change_in(tx, change).await?;
    }
    Ok(())
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
