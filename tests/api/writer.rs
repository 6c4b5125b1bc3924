//! The group-commit writer against real Postgres: concurrent holds share transactions, a bad job
//! fails alone inside its batch, and a failed commit fails every job of the batch.

use crate::helpers::{
    TcpCut, TestDb, actor_settings, create_program, hold_via, pg_addr, test_settings,
};
use boxoffice::actors::{GetSnapshot, Hold, Selection, Supervisor};
use boxoffice::clock::SystemClock;
use boxoffice::domain::inventory::{Change, ChangeKind, SeatInfo};
use boxoffice::store::catalog::Layout;
use boxoffice::store::orders::{IdempotentResult, NewTicket, PlaceOrder};
use boxoffice::store::postgres;
use boxoffice::store::writer::{GroupCommitStore, GroupCommitWriter, WriterSettings};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const ROWS: i32 = 20;
const COLS: i32 = 20;

fn settings_of(max_batch: usize, max_wait_ms: u64) -> WriterSettings {
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
    let writer = GroupCommitWriter::start(pool.clone(), settings_of(64, 2));
    let store = Arc::new(GroupCommitStore::new(
        pool.clone(),
        writer.clone(),
        tokio::runtime::Handle::current(),
    ));
    let supervisor = Supervisor::new(store.clone(), Arc::new(SystemClock), actor_settings());
    let holds = (0..60).map(|n| {
        let (sup, store) = (supervisor.clone(), store.clone());
        tokio::spawn(async move {
            let hold = Hold {
                order_no: 100 + n,
                selection: Selection::Best(2),
                expires_at: chrono::Utc::now() + chrono::Duration::minutes(15),
            };
            hold_via(&sup, &*store, category, hold).await
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
    let writer = GroupCommitWriter::start(pool.clone(), settings_of(2, 2_000));
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
    let writer = GroupCommitWriter::start(cut_pool, settings_of(8, 200));
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
            ..settings_of(64, 1)
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

/// A general-admission order for `user_id`'s first ticket buyer, as the ordering service builds it.
fn ga_order(order_no: i64, user_id: i64, program_id: i64, category: i64, buyer: i64) -> PlaceOrder {
    let expires_at = chrono::Utc::now() + chrono::Duration::minutes(15);
    PlaceOrder {
        order_no,
        user_id,
        program_id,
        show_time_id: None,
        total_cents: 1_000,
        expires_at,
        tickets: vec![NewTicket {
            ticket_category_id: category,
            ticket_buyer_id: buyer,
            seat_id: None,
            price_cents: 1_000,
        }],
        changes: vec![Change {
            kind: ChangeKind::Hold,
            program_id,
            category_id: category,
            order_no,
            seats: vec![],
            quantity: 1,
            expires_at: Some(expires_at),
        }],
        per_account_limit: 4,
        idempotency: IdempotentResult {
            key: format!("key-{order_no}"),
            request_hash: vec![1],
            status: 201,
            body: b"{}".to_vec(),
            ttl_secs: 86_400.0,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_on_a_shared_ga_counter_is_retried_and_every_order_answered() {
    use boxoffice::domain::order_no::OrderNoGenerator;
    let (_db, pool, settings) = TestDb::migrated().await;
    let (program, cats) = create_program(
        &pool,
        "deadlock",
        &[("Standing", 1_000, Layout::General { capacity: 100 })],
    )
    .await;
    let ga = cats[0];
    let crowd = crate::helpers::mint_buyers(&pool, &settings, 2, 1).await;
    let client = pool.get().await.unwrap();
    let mut orders = Vec::new();
    let ids = OrderNoGenerator::new(1);
    for b in &crowd {
        let user: i64 = client
            .query_one(
                "SELECT user_id FROM ticket_buyers WHERE id = $1",
                &[&b.buyers[0]],
            )
            .await
            .unwrap()
            .get(0);
        let no = ids.next(user, chrono::Utc::now().timestamp_millis());
        orders.push(ga_order(no, user, program, ga, b.buyers[0]));
    }
    let writer = GroupCommitWriter::start(
        pool.clone(),
        WriterSettings {
            shards: 2,
            ..settings_of(8, 1)
        },
    );
    assert_ne!(
        writer.shard_of(orders[0].order_no),
        writer.shard_of(orders[1].order_no),
        "one order per shard"
    );
    // Another transaction holds the counter's row (and gives up only after the writer would).
    let blocker = pool.get().await.unwrap();
    blocker
        .batch_execute(&format!(
            "SET deadlock_timeout = '60s'; BEGIN;
             UPDATE ticket_categories SET ga_taken = ga_taken WHERE id = {ga}"
        ))
        .await
        .unwrap();
    let placing: Vec<_> = orders
        .iter()
        .map(|o| {
            let (w, o) = (writer.clone(), o.clone());
            tokio::spawn(async move { w.place_order(o).await })
        })
        .collect();
    let waiting = crate::helpers::poll_until(
        Duration::from_secs(5),
        async || -> i64 {
            client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0)
        },
        |n| *n == 2,
    )
    .await;
    assert_eq!(waiting, 2, "both shards wait on the counter");
    // Now wait on the first shard's uncommitted GA hold: a cycle, which Postgres breaks by
    // aborting the shard's batch (its deadlock_timeout expires first).
    let first = orders[0].order_no;
    blocker
        .execute(
            "INSERT INTO ga_holds (ticket_category_id, order_no, quantity, status, hold_expires_at)
             VALUES ($1, $2, 1, 'held', now() + interval '1 hour')",
            &[&ga, &first],
        )
        .await
        .unwrap();
    blocker.batch_execute("ROLLBACK").await.unwrap();
    for p in placing {
        assert!(
            matches!(p.await.unwrap(), Ok(())),
            "every order of both shards is answered Ok"
        );
    }
    let stats = writer.stats();
    assert!(
        stats.retried.load(Ordering::Relaxed) >= 1,
        "the aborted batch ran again"
    );
    assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
    let taken: i32 = client
        .query_one(
            "SELECT ga_taken FROM ticket_categories WHERE id = $1",
            &[&ga],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(taken, 2);
}
