//! The benchmarks in miniature (`boxoffice bench seat-hold`, `catalog`, `ordering`, `events`, `ws`,
//! `reconcile`):
//! every design runs against the real stores, the invariant checks pass, and the summary has the
//! shape the README documents. Never timing assertions: the machine is shared.

use crate::helpers::{TestDb, test_settings};
use boxoffice::bench::seat_hold::{Options, render, run};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_hold_bench_runs_every_design_and_checks_invariants() {
    let db = TestDb::create().await;
    let settings = test_settings(&db.name);
    let opts = Options {
        seats: 800,
        rounds: 1,
        round: Duration::from_millis(300),
        concurrency: vec![2, 8],
        seed: 11,
    };
    let report = run(&settings, &opts).await.expect("bench runs");

    assert!(report.valid, "{}", render(&report));
    let designs = ["actor", "redis_lua", "pg_atomic", "pg_for_update"];
    for design in designs {
        for conc in [2, 8] {
            let r = report
                .runs
                .iter()
                .find(|r| r.design == design && r.concurrency == conc)
                .unwrap_or_else(|| panic!("no run for {design} at {conc}"));
            assert!(r.ops > 0 && r.held > 0, "{design}@{conc} did nothing");
            assert!(
                r.refused > 0,
                "{design}@{conc}: repeated pairs must be refused"
            );
            assert_eq!(r.errors, 0, "{design}@{conc}");
            assert!(r.p50_us <= r.p99_us);
        }
    }
    for key in [
        "actor_vs_redis_lua",
        "actor_vs_pg_atomic",
        "actor_vs_pg_for_update",
    ] {
        // CPU ticks are 10 ms, too coarse for a run this short to give a CPU ratio every time.
        assert!(report.ratios.contains_key(key), "ratio {key} missing");
        assert!(report.ratios_ops_per_sec[key] > 0.0, "ratio {key} is 0");
    }
    assert_eq!(report.flatness.len(), designs.len());
    assert_eq!(report.targets.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_bench_compares_a_warm_cache_with_none() {
    let db = TestDb::create().await;
    let settings = test_settings(&db.name);
    let opts = boxoffice::bench::catalog::Options {
        rounds: 1,
        round: Duration::from_millis(300),
        concurrency: 4,
    };
    let report = boxoffice::bench::catalog::run(&settings, &opts)
        .await
        .expect("bench runs");
    assert_eq!(report.runs.len(), 4, "{report:?}");
    for r in &report.runs {
        assert!(r.requests > 0 && r.errors == 0, "{r:?}");
    }
    for key in ["detail_warm_vs_disabled", "list_warm_vs_disabled"] {
        assert!(report.ratios[key] > 0.0, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_bench_sells_out_in_every_mode_without_oversell() {
    let db = TestDb::create().await;
    let settings = test_settings(&db.name);
    let opts = boxoffice::bench::ordering::Options {
        buyers: 60,
        rows: 1,
        rounds: 1,
        concurrency: 8,
        trivial_secs: 0.2,
        wave_window_secs: 3,
    };
    let report = boxoffice::bench::ordering::run(&settings, &opts)
        .await
        .expect("bench runs");
    assert!(report.valid, "{report:?}");
    let modes = [
        "group_commit",
        "per_order_tx",
        "per_order_tx_one_writer",
        "redis_lua",
        "group_commit_expiry_wave",
    ];
    assert_eq!(report.runs.len(), modes.len(), "{report:?}");
    for mode in modes {
        let r = report
            .runs
            .iter()
            .find(|r| r.mode == mode)
            .unwrap_or_else(|| panic!("no run for {mode}: {report:?}"));
        assert_eq!((r.orders, r.sold_out, r.errors), (40, 20, 0), "{r:?}");
        assert!(r.violations.is_empty(), "{r:?}");
        assert!(r.p50_us <= r.p99_us, "{r:?}");
    }
    assert!(report.trivial_requests_per_sec > 0.0);
    for key in [
        "group_vs_per_order",
        "group_vs_per_order_one_writer",
        "group_vs_redis_lua",
        "orders_vs_trivial",
        "expiry_wave_vs_quiet",
    ] {
        assert!(report.ratios[key] > 0.0, "ratio {key}: {report:?}");
    }
    let names: Vec<&str> = report.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(
        names.contains(&"group_commit.pg_cpu_us_per_order"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_bench_compares_relay_modes_and_ordering_with_events_on_and_off() {
    let db = TestDb::create().await;
    let settings = test_settings(&db.name);
    let opts = boxoffice::bench::events::Options {
        rows: 40,
        rounds: 1,
        buyers: 30,
        seat_rows: 1,
        concurrency: 4,
    };
    let report = boxoffice::bench::events::run(&settings, &opts)
        .await
        .expect("bench runs");
    assert!(report.valid, "{report:?}");
    let json = serde_json::to_value(&report).expect("report serializes");
    for field in [
        "config",
        "relay",
        "ordering",
        "catch_up_secs",
        "delay",
        "ratios",
        "targets",
        "valid",
    ] {
        assert!(json.get(field).is_some(), "{field} missing: {json}");
    }
    let modes = |part: &str| -> Vec<String> {
        json[part]
            .as_array()
            .expect("a list of runs")
            .iter()
            .map(|r| r["mode"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(modes("relay"), ["batched", "one_at_a_time"]);
    assert_eq!(
        modes("ordering"),
        ["events_running", "events_stopped", "relay_only"]
    );
    for r in &report.relay {
        assert_eq!(r.rows, 40, "{r:?}");
    }
    for r in &report.ordering {
        assert_eq!((r.orders, r.errors), (30, 0), "{r:?}");
    }
    assert_eq!(report.delay.events, 30, "{:?}", report.delay);
    for key in ["duplicates", "p50_ms", "p99_ms", "max_ms"] {
        assert!(json["delay"].get(key).is_some(), "delay.{key} missing");
    }
    for mode in ["events_running", "relay_only"] {
        assert!(
            report.catch_up_secs.contains_key(mode),
            "catch-up of {mode}"
        );
    }
    for key in [
        "relay_batched_vs_one_at_a_time",
        "ordering_running_vs_stopped",
        "ordering_relay_only_vs_stopped",
    ] {
        assert!(report.ratios.contains_key(key), "ratio {key} missing");
    }
    assert_eq!(report.targets.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_bench_measures_subscribers_and_both_frame_modes() {
    let (db, _, settings) = TestDb::migrated().await;
    let opts = boxoffice::bench::ws::Options {
        subscribers: vec![30],
        changes_per_sec: 400,
        secs: 2,
        rows: 4,
        server_binary: env!("CARGO_BIN_EXE_boxoffice").into(),
    };
    let report = boxoffice::bench::ws::run(&settings, &opts)
        .await
        .expect("bench runs");
    drop(db);
    assert_eq!(report.steps.len(), 1);
    assert_eq!(report.largest_held, 30);
    let step = &report.steps[0];
    assert!(
        step.changes_per_sec > 0.0 && step.frames_per_sec > 0.0,
        "{step:?}"
    );
    assert!(step.bytes_per_idle_connection > 0.0, "{step:?}");
    assert!(
        step.ack_to_last_p50_ms <= step.ack_to_last_p99_ms,
        "{step:?}"
    );
    let modes: Vec<&str> = report.modes.iter().map(|m| m.mode.as_str()).collect();
    assert_eq!(modes, ["coalesced", "frame_per_delta"]);
    assert!(
        report.modes[1].frames_per_sec > report.modes[0].frames_per_sec,
        "one frame per delta sends more frames: {:?}",
        report.modes
    );
    assert_eq!(report.targets.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_bench_times_passes_and_orders_watched_and_not() {
    let db = TestDb::create().await;
    let settings = test_settings(&db.name);
    let opts = boxoffice::bench::reconcile::Options {
        seat_rows: 5,
        passes: 2,
        buyers: 60,
        rows: 1,
        rounds: 1,
        concurrency: 8,
    };
    let report = boxoffice::bench::reconcile::run(&settings, &opts)
        .await
        .expect("bench runs");
    assert!(report.valid, "{report:?}");
    assert_eq!(report.pass.seats, 200, "{report:?}");
    assert_eq!(report.pass.held, 60, "{report:?}");
    assert!(report.pass.median_ms > 0.0 && report.pass.median_ms <= report.pass.max_ms);
    for mode in ["watched", "unwatched"] {
        let r = report.runs.iter().find(|r| r.mode == mode).expect(mode);
        assert_eq!((r.orders, r.sold_out, r.errors), (40, 20, 0), "{r:?}");
    }
    assert!(report.ratios["watched_vs_unwatched"] > 0.0);
    assert_eq!(report.targets.len(), 1);
}
