//! CPU time of the processes that serve a benchmark, read from `/proc`: this process (the actor
//! and the benchmark's clients live here), `redis-server` and every `postgres` process (backends
//! plus the WAL writer and friends, which do work on behalf of commits).
//!
//! [`postgres_ticks`] reads a chosen set of `postgres` processes (`bench ordering` charges only
//! the backends of its own database plus the shared background processes, so other databases'
//! work on a shared machine is not counted).
//!
//! Every variant is charged the same set of processes, so an idle server costs every variant the
//! same (almost nothing) and the ratios compare the work each design causes.

use std::collections::BTreeMap;
use std::fs;

/// Linux reports `utime`/`stime` in USER_HZ ticks, which is 100 per second on every platform
/// Linux supports today (`getconf CLK_TCK`).
pub(crate) const TICKS_PER_SEC: f64 = 100.0;

/// Total CPU seconds (user + system) used so far by the server processes.
pub fn server_cpu_seconds() -> f64 {
    let own = process_ticks("self").unwrap_or(0);
    let others: u64 = list_pids()
        .into_iter()
        .filter(|pid| matches!(comm(pid).as_deref(), Some("redis-server" | "postgres")))
        .filter_map(|pid| process_ticks(&pid))
        .sum();
    (own + others) as f64 / TICKS_PER_SEC
}

fn list_pids() -> Vec<String> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

fn comm(pid: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// utime + stime, in ticks, of those of `pids` that are `postgres` processes (a pid that exited
/// or was reused by another program is left out, so a delta never charges a stranger).
pub fn postgres_ticks(pids: &[u32]) -> BTreeMap<u32, u64> {
    pids.iter()
        .filter(|pid| comm(&pid.to_string()).as_deref() == Some("postgres"))
        .filter_map(|pid| Some((*pid, process_ticks(&pid.to_string())?)))
        .collect()
}

/// The parent of process `pid` (field 4 of `/proc/<pid>/stat`): a backend's parent is the
/// postmaster, which forks every connection.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a whole process (all threads), in ticks.
pub(crate) fn process_ticks(pid: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat)
}

/// Fields 14 and 15 of `/proc/<pid>/stat`, counted after the `(comm)` field, which may contain
/// spaces.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state), so field 14 is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_a_comm_with_spaces() {
        let stat = "42 (tokio rt (x)) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
    }

    #[test]
    fn own_parent_is_found_and_strangers_are_not_postgres() {
        let own = std::process::id();
        assert_eq!(parent_pid(own), Some(std::os::unix::process::parent_id()));
        assert!(
            postgres_ticks(&[own]).is_empty(),
            "this test is not postgres"
        );
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        let before = process_ticks("self").expect("own stat");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(process_ticks("self").expect("own stat") > before);
    }
}
