//! The fault suite (`boxoffice chaos`, README "Fault suite") in its short form: its own Postgres,
//! Redis and broker, the real binary under 30 buyers, 3 × `kill -9`, Redis, Postgres and the
//! broker each down 5 s, and after each fault no acknowledged order lost, no seat double-sold
//! or stuck, actor = Postgres = mirror within 5 s. And the suite itself can fail: a run with
//! planted damage must find each kind of it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `boxoffice chaos` process; stopped with SIGTERM when dropped (a failed assert, a timeout),
/// so that it stops the stores and the server it started.
struct Suite {
    child: Child,
    output: PathBuf,
}

impl Suite {
    fn start(args: &[&str]) -> Suite {
        let output = std::env::temp_dir().join(format!(
            "boxoffice-chaos-test-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let log = std::fs::File::create(&output).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_boxoffice"))
            .arg("chaos")
            .args(args)
            .env("BOXOFFICE_CONFIG", "/nonexistent/boxoffice.toml")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start boxoffice chaos");
        Suite { child, output }
    }

    /// Waits for the exit (at most `limit`); answers success and everything it printed.
    fn finish(mut self, limit: Duration) -> (bool, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the fault suite ran longer than {limit:?}:\n{}",
                self.printed()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        (status.success(), self.printed())
    }

    fn printed(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-s", "TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.output);
    }
}

/// The table's row for `fault`, split into its cells.
fn row<'a>(printed: &'a str, fault: &str) -> Vec<&'a str> {
    let line = printed
        .lines()
        .find(|l| l.starts_with(&format!("| {fault} |")))
        .unwrap_or_else(|| panic!("no row for {fault}:\n{printed}"));
    line.trim_matches('|').split('|').map(str::trim).collect()
}

#[test]
fn the_short_fault_suite_loses_nothing_sells_nothing_twice_and_leaves_nothing_stuck() {
    let (passed, printed) = Suite::start(&["--short"]).finish(Duration::from_secs(300));
    println!("{printed}");
    assert!(passed, "the fault suite failed:\n{printed}");
    for fault in [
        "kill -9 #3",
        "Redis down 5 s",
        "Postgres down 5 s",
        "Pulsar broker down 5 s",
    ] {
        let cells = row(&printed, fault);
        assert_ne!(cells[2], "0", "no order acknowledged around {fault}");
        assert_eq!(&cells[5..8], ["0", "0", "0"], "{fault}: {cells:?}");
    }
}

#[test]
fn the_fault_suite_finds_a_planted_lost_order_double_sale_and_stuck_seat() {
    let args = [
        "--clients",
        "8",
        "--kills",
        "1",
        "--redis-outage-secs",
        "0",
        "--postgres-outage-secs",
        "0",
        "--pulsar-outage-secs",
        "0",
        "--sabotage",
    ];
    let (passed, printed) = Suite::start(&args).finish(Duration::from_secs(180));
    assert!(!passed, "planted damage went unnoticed:\n{printed}");
    assert_eq!(
        &row(&printed, "kill -9 #1")[5..8],
        ["0", "0", "0"],
        "{printed}"
    );
    let planted = row(&printed, "sabotage (planted)");
    for (cell, what) in [(5, "lost"), (6, "double-sold"), (7, "stuck")] {
        let n: u64 = planted[cell].parse().unwrap();
        assert!(n >= 1, "the planted {what} was not found:\n{printed}");
    }
    assert!(printed.contains("missing"), "{printed}");
}
