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
use boxoffice::store::writer::{GroupCommitStore, GroupCommitWriter, Placed, WriterSettings};
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
pub(crate) fn ga_order(
    order_no: i64,
    user_id: i64,
    program_id: i64,
    category: i64,
    buyer: i64,
) -> PlaceOrder {
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
    let client = pool.get().await.unwrap();
    let ids = OrderNoGenerator::new(1);
    let orders: Vec<PlaceOrder> = users_with_buyers(&pool, &settings, 2, 1)
        .await
        .into_iter()
        .map(|(user, buyers)| {
            let no = ids.next(user, chrono::Utc::now().timestamp_millis());
            ga_order(no, user, program, ga, buyers[0])
        })
        .collect();
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
            matches!(p.await.unwrap(), Ok(Placed::Written)),
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

/// Users with `holders` ticket buyers each: (user id, ticket buyer ids).
async fn users_with_buyers(
    pool: &boxoffice::store::PgPool,
    settings: &boxoffice::config::Settings,
    n: usize,
    holders: usize,
) -> Vec<(i64, Vec<i64>)> {
    let crowd = crate::helpers::mint_buyers(pool, settings, n, holders).await;
    let client = pool.get().await.unwrap();
    let mut out = Vec::new();
    for b in crowd {
        let user: i64 = client
            .query_one(
                "SELECT user_id FROM ticket_buyers WHERE id = $1",
                &[&b.buyers[0]],
            )
            .await
            .unwrap()
            .get(0);
        out.push((user, b.buyers));
    }
    out
}

/// Places `orders` concurrently on `writer`; their answers in the same order.
async fn place_all(
    writer: &GroupCommitWriter,
    orders: Vec<PlaceOrder>,
) -> Vec<Result<Placed, boxoffice::store::StoreError>> {
    let placing: Vec<_> = orders
        .into_iter()
        .map(|o| {
            let w = writer.clone();
            tokio::spawn(async move { w.place_order(o).await })
        })
        .collect();
    let mut out = Vec::new();
    for p in placing {
        out.push(p.await.unwrap());
    }
    out
}

fn written(r: &Result<Placed, boxoffice::store::StoreError>) -> bool {
    matches!(r, Ok(Placed::Written))
}

fn refusal_code(r: &Result<Placed, boxoffice::store::StoreError>) -> Option<&'static str> {
    match r {
        Err(boxoffice::store::StoreError::Refused { reason, .. }) => Some(reason.code()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_answers_each_order_its_own_check() {
    use boxoffice::domain::order_no::OrderNoGenerator;
    let (_db, pool, settings) = TestDb::migrated().await;
    let (program, cats) = create_program(
        &pool,
        "mixed",
        &[("Standing", 1_000, Layout::General { capacity: 100 })],
    )
    .await;
    let ga = cats[0];
    let people = users_with_buyers(&pool, &settings, 6, 2).await;
    let ids = OrderNoGenerator::new(1);
    let now = chrono::Utc::now().timestamp_millis();
    let order = |who: usize, buyer: i64, n: i64| {
        let user = people[who].0;
        ga_order(ids.next(user, now + n), user, program, ga, buyer)
    };
    // Earlier, committed alone: user 2 holds one ticket (their limit will be 1), user 3's first
    // ticket buyer holds one, user 5's order answered under key-…
    let writer = GroupCommitWriter::start(pool.clone(), settings_of(7, 5_000));
    let earlier = vec![order(2, people[2].1[0], 0), order(3, people[3].1[0], 0)];
    let mut replayed = order(5, people[5].1[0], 0);
    let mut earlier = earlier;
    earlier.push(replayed.clone());
    let mut filler = earlier.clone();
    // Fill the batch of 7 so the earlier orders commit at once.
    for k in 0..4 {
        filler.push(order(0, people[0].1[k % 2], 100 + k as i64));
    }
    let _ = filler.split_off(7);
    let first = place_all(&writer, filler).await;
    assert!(first[..3].iter().all(written), "{first:?}");
    let before = writer.stats().batches.load(Ordering::Relaxed);

    let good_a = order(1, people[1].1[0], 1);
    let good_b = order(4, people[4].1[0], 1);
    let mut over_limit = order(2, people[2].1[1], 1);
    over_limit.per_account_limit = 1;
    let has_ticket = order(3, people[3].1[0], 1);
    let twice_first = order(4, people[4].1[1], 2);
    let twice_again = order(4, people[4].1[1], 3);
    let foreign = order(1, people[2].1[1], 4);
    replayed.order_no = ids.next(people[5].0, now + 9);
    let batch = vec![
        good_a,
        good_b,
        over_limit,
        has_ticket,
        twice_first,
        twice_again,
        foreign,
    ];
    let mut answers = place_all(&writer, batch.clone()).await;
    let stats = writer.stats();
    assert_eq!(
        stats.batches.load(Ordering::Relaxed),
        before + 1,
        "the seven orders shared one transaction"
    );
    assert!(written(&answers[0]), "{:?}", answers[0]);
    assert!(written(&answers[1]), "{:?}", answers[1]);
    assert_eq!(
        refusal_code(&answers[2]),
        Some("LIMIT_EXCEEDED"),
        "{:?}",
        answers[2]
    );
    assert_eq!(
        refusal_code(&answers[3]),
        Some("BUYER_HAS_TICKET"),
        "{:?}",
        answers[3]
    );
    // One buyer in two orders of the batch (they reach the writer in either order): the first
    // is written, the other refused.
    let twice = [&answers[4], &answers[5]];
    assert_eq!(twice.iter().filter(|a| written(a)).count(), 1, "{twice:?}");
    assert!(
        twice
            .iter()
            .any(|a| refusal_code(a) == Some("BUYER_HAS_TICKET")),
        "{twice:?}"
    );
    let twice_written = if written(&answers[4]) { 4 } else { 5 };
    assert_eq!(
        refusal_code(&answers[6]),
        Some("VALIDATION"),
        "someone else's ticket buyer"
    );
    answers.clear();

    // A key that already has an answer replays it instead of writing.
    let again = place_all(&writer, vec![replayed.clone()]).await;
    assert!(matches!(&again[0], Ok(Placed::Replayed((hash, 201, _))) if *hash == vec![1]));

    let client = pool.get().await.unwrap();
    let written: Vec<i64> = client
        .query(
            "SELECT order_no FROM orders WHERE order_no = ANY($1) ORDER BY order_no",
            &[&batch.iter().map(|o| o.order_no).collect::<Vec<_>>()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut expected = vec![
        batch[0].order_no,
        batch[1].order_no,
        batch[twice_written].order_no,
    ];
    expected.sort_unstable();
    assert_eq!(
        written, expected,
        "only the accepted orders are in Postgres"
    );
    let row = client
        .query_one(
            "SELECT ga_taken, (SELECT count(*) FROM tickets WHERE program_id = $2)
             FROM ticket_categories WHERE id = $1",
            &[&ga, &program],
        )
        .await
        .unwrap();
    assert_eq!(
        i64::from(row.get::<_, i32>(0)),
        row.get::<_, i64>(1),
        "counter = tickets"
    );
}

/// A seated order for one seat.
fn seated_order(
    order_no: i64,
    user_id: i64,
    program_id: i64,
    seat: SeatInfo,
    category: i64,
    buyer: i64,
) -> PlaceOrder {
    let mut o = ga_order(order_no, user_id, program_id, category, buyer);
    o.tickets[0].seat_id = Some(seat.id);
    o.changes[0].seats = vec![seat];
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_a_constraint_refuses_is_split_and_the_culprit_set_aside() {
    use boxoffice::domain::order_no::OrderNoGenerator;
    let (_db, pool, settings) = TestDb::migrated().await;
    let (program, cats) = create_program(
        &pool,
        "culprit",
        &[(
            "Seated",
            1_000,
            Layout::Seated {
                rows: 2,
                seats_per_row: 4,
            },
        )],
    )
    .await;
    let seats = first_seats(&pool, cats[0], 4).await;
    let people = users_with_buyers(&pool, &settings, 4, 1).await;
    // A bug's footprint: seat 0 is free in its row but claimed by a live order.
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO seat_claims (seat_id, order_no) VALUES ($1, 42)",
            &[&seats[0].id],
        )
        .await
        .unwrap();
    let ids = OrderNoGenerator::new(1);
    let now = chrono::Utc::now().timestamp_millis();
    let orders: Vec<PlaceOrder> = (0..4)
        .map(|k| {
            let (user, buyers) = &people[k];
            seated_order(
                ids.next(*user, now),
                *user,
                program,
                seats[k],
                cats[0],
                buyers[0],
            )
        })
        .collect();
    let writer = GroupCommitWriter::start(pool.clone(), settings_of(4, 5_000));
    let answers = place_all(&writer, orders.clone()).await;
    assert_eq!(
        refusal_code(&answers[0]),
        Some("SEAT_UNAVAILABLE"),
        "{:?}",
        answers[0]
    );
    assert!(answers[1..].iter().all(written), "{answers:?}");
    assert!(writer.stats().split.load(Ordering::Relaxed) >= 1);
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM seats WHERE status = 'held'),
                    (SELECT count(*) FROM discarded_orders WHERE order_no = $1)",
            &[&orders[0].order_no],
        )
        .await
        .unwrap();
    let (orders_in, held, discarded): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (orders_in, held, discarded),
        (3, 3, 1),
        "the rest committed, the culprit recorded"
    );
}

/// Found by the fault suite: after Postgres crashed before a batch's WAL reached disk, crash
/// recovery handed the batch's xid to a later transaction, whose `committed` acknowledged
/// orders that never existed. The outcome of a batch with orders is read from its orders.
#[tokio::test]
async fn a_lost_commit_is_judged_by_the_batchs_orders_not_by_a_reused_xid() {
    use boxoffice::store::writer::commit_status;
    let (_db, pool, _) = crate::helpers::TestDb::migrated().await;
    let client = pool.get().await.unwrap();
    // Another transaction committed under the xid the lost batch had been given.
    let row = client
        .query_one("SELECT txid_current()", &[])
        .await
        .unwrap();
    let reused: i64 = row.get(0);
    let never_written = [118_535_185_628_135_425_i64];
    assert_eq!(
        commit_status(&pool, reused, &never_written).await,
        Some(false),
        "the xid says committed, but the batch's order does not exist"
    );
    assert_eq!(
        commit_status(&pool, reused, &[]).await,
        Some(true),
        "without orders, the xid is all there is to ask"
    );
}
