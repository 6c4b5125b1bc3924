//! The group-commit writer against real Postgres: concurrent holds share transactions, a bad job
//! fails alone inside its batch, and a failed commit fails every job of the batch.

use crate::helpers::{TcpCut, TestDb, actor_settings, create_program, pg_addr, test_settings};
use boxoffice::actors::{GetSnapshot, Hold, Selection, Supervisor};
use boxoffice::clock::SystemClock;
use boxoffice::domain::inventory::{Change, ChangeKind, SeatInfo};
use boxoffice::store::catalog::Layout;
use boxoffice::store::postgres;
use boxoffice::store::writer::{GroupCommitStore, GroupCommitWriter, WriterSettings};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const ROWS: i32 = 20;
const COLS: i32 = 20;

fn settings(max_batch: usize, max_wait_ms: u64) -> WriterSettings {
    WriterSettings {
        max_batch,
        max_wait: Duration::from_millis(max_wait_ms),
        queue: 1024,
        writers: 1,
        shards: 1,
    }
}

async fn seated_program(pool: &boxoffice::store::PgPool) -> i64 {
    let layout = Layout::Seated {
        rows: ROWS,
        seats_per_row: COLS,
    };
    create_program(pool, "writer", &[("Seated", 1_000, layout)])
        .await
        .1[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_holds_share_transactions_and_all_become_durable() {
    let (_db, pool, _) = TestDb::migrated().await;
    let category = seated_program(&pool).await;
    let writer = GroupCommitWriter::start(pool.clone(), settings(64, 2));
    let store = GroupCommitStore::new(
        pool.clone(),
        writer.clone(),
        tokio::runtime::Handle::current(),
    );
    let supervisor = Supervisor::new(Arc::new(store), Arc::new(SystemClock), actor_settings());
    let holds = (0..60).map(|n| {
        let sup = supervisor.clone();
        tokio::spawn(async move {
            let hold = Hold {
                order_no: 100 + n,
                selection: Selection::Best(2),
                expires_at: chrono::Utc::now() + chrono::Duration::minutes(15),
            };
            sup.hold(category, hold).await
        })
    });
    let results = futures::future::join_all(holds).await;
    assert!(
        results.iter().all(|r| matches!(r, Ok(Ok(_)))),
        "every hold succeeds"
    );

    let stats = writer.stats();
    let (batches, jobs) = (
        stats.batches.load(Ordering::Relaxed),
        stats.jobs.load(Ordering::Relaxed),
    );
    assert_eq!(jobs, 60);
    assert!(
        batches < jobs,
        "no batching happened: {batches} transactions for {jobs} holds"
    );
    let held: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM seats WHERE ticket_category_id = $1 AND status = 'held'",
            &[&category],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 120, "what the actors acknowledged is in Postgres");
    let snapshot = supervisor.call(category, GetSnapshot).await.unwrap();
    assert_eq!(snapshot.counts.held, 120);
}

fn change(kind: ChangeKind, category: i64, order_no: i64, seats: Vec<SeatInfo>) -> Change {
    Change {
        kind,
        program_id: 0,
        category_id: category,
        order_no,
        quantity: seats.len() as u32,
        seats,
        expires_at: (kind == ChangeKind::Hold)
            .then(|| chrono::Utc::now() + chrono::Duration::minutes(5)),
    }
}

async fn first_seats(pool: &boxoffice::store::PgPool, category: i64, n: i64) -> Vec<SeatInfo> {
    let rows = pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT id, row_no, col_no, price_cents FROM seats WHERE ticket_category_id = $1 ORDER BY id LIMIT $2",
            &[&category, &n],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| SeatInfo {
            id: r.get(0),
            row: r.get(1),
            col: r.get(2),
            price_cents: r.get(3),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_rows_disagree_fails_alone_in_its_batch() {
    let (_db, pool, _) = TestDb::migrated().await;
    let category = seated_program(&pool).await;
    let seats = first_seats(&pool, category, 4).await;
    // A long wait and a batch of two: both jobs land in the same transaction.
    let writer = GroupCommitWriter::start(pool.clone(), settings(2, 2_000));
    let good = change(ChangeKind::Hold, category, 1, seats[..2].to_vec());
    let bad = change(ChangeKind::Release, category, 2, seats[2..].to_vec()); // never held
    let (good, bad) = tokio::join!(writer.submit(vec![good]), writer.submit(vec![bad]));
    assert!(good.is_ok(), "{good:?}");
    assert!(
        bad.is_err(),
        "releasing seats that are not held must be refused"
    );
    let stats = writer.stats();
    assert_eq!(
        stats.batches.load(Ordering::Relaxed),
        1,
        "one transaction for both"
    );
    assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
    let held: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM seats WHERE order_no = 1 AND status = 'held'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 2, "the good job committed despite its neighbour");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_every_job_and_writes_nothing() {
    let db = TestDb::migrated().await;
    let (pool, category) = (db.1.clone(), seated_program(&db.1).await);
    let seats = first_seats(&pool, category, 4).await;
    let proxy = TcpCut::start(pg_addr()).await;
    let mut through_proxy = test_settings(&db.0.name);
    let url = through_proxy
        .database
        .url
        .expose_secret()
        .replace(&pg_addr().to_string(), &proxy.addr.to_string());
    through_proxy.database.url = SecretString::from(url);
    through_proxy.database.connect_timeout_ms = 500;
    let cut_pool = postgres::build_pool(&through_proxy.database).unwrap();
    let writer = GroupCommitWriter::start(cut_pool, settings(8, 200));
    proxy.cut();
    let a = change(ChangeKind::Hold, category, 1, seats[..2].to_vec());
    let b = change(ChangeKind::Hold, category, 2, seats[2..].to_vec());
    let (a, b) = tokio::join!(writer.submit(vec![a]), writer.submit(vec![b]));
    assert!(a.is_err() && b.is_err());
    assert_eq!(writer.stats().failed.load(Ordering::Relaxed), 2);
    let held: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM seats WHERE status <> 'available'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0);
}

#[tokio::test]
async fn every_order_of_a_buyer_meets_the_same_shard_and_shards_spread_buyers() {
    use boxoffice::domain::order_no::OrderNoGenerator;
    let (_db, pool, _) = TestDb::migrated().await;
    let writer = GroupCommitWriter::start(
        pool,
        WriterSettings {
            shards: 4,
            ..settings(64, 1)
        },
    );
    let ids = OrderNoGenerator::new(3);
    let mut used = std::collections::HashSet::new();
    for user_id in 1..=64_i64 {
        let first = writer.shard_of(ids.next(user_id, 1_000));
        for ms in [2_000, 3_000_000, 90_000_000_000] {
            let again = writer.shard_of(ids.next(user_id, ms));
            assert_eq!(again, first, "user {user_id}: one buyer, one writer");
        }
        assert_eq!(first, (user_id & 15) as usize % 4);
        used.insert(first);
    }
    assert_eq!(used.len(), 4, "buyers spread over every shard");
}
