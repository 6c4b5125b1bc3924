//! The suite's table: one row per fault, in Markdown so a run can be pasted as it is.

use super::load::Tally;
use std::collections::BTreeMap;

/// How long something took to come back, if it did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Timing {
    /// Not measured for this row.
    NotApplicable,
    /// Seconds.
    After(f64),
    /// Still not there after this many seconds.
    Never(f64),
}

impl Timing {
    /// `After` the elapsed time, or `Never` after `limit`.
    pub fn of(elapsed: Option<std::time::Duration>, limit: std::time::Duration) -> Timing {
        match elapsed {
            Some(d) => Timing::After(d.as_secs_f64()),
            None => Timing::Never(limit.as_secs_f64()),
        }
    }

    fn render(self) -> String {
        match self {
            Timing::NotApplicable => "–".into(),
            Timing::After(s) => format!("{s:.1} s"),
            Timing::Never(s) => format!("NOT within {s:.0} s"),
        }
    }

    fn over(self, limit: f64) -> bool {
        match self {
            Timing::NotApplicable => false,
            Timing::After(s) => s > limit,
            Timing::Never(_) => true,
        }
    }
}

/// One fault and what was found after it.
#[derive(Debug)]
pub struct Row {
    /// Which fault.
    pub fault: String,
    /// Requests sent during the phase.
    pub requests: u64,
    /// 201s.
    pub created: u64,
    /// Non-2xx answers and failed requests by kind.
    pub errors: BTreeMap<String, u64>,
    /// The longest wait for one answer.
    pub slowest: Timing,
    /// Acknowledged orders (of the whole run so far) not in Postgres as acknowledged.
    pub lost: u64,
    /// Seats in two live orders.
    pub double_sold: u64,
    /// Seats taken without a live order, live orders' seats not taken, expiries not done.
    pub stuck: u64,
    /// From the fault's end until `/readyz` is 200 and an order sent after the end got a 201.
    pub recovery: Timing,
    /// From the load's end until actor, Postgres and Redis mirror agree.
    pub agree: Timing,
    /// From the fault's end until every order event was sent to the broker.
    pub events: Timing,
    /// Problems the server's reconciler raised during the phase, by kind.
    pub problems: BTreeMap<String, u64>,
    /// What the checks found, one line each.
    pub notes: Vec<String>,
}

impl Row {
    /// A row with the phase's traffic and nothing checked yet.
    pub fn new(fault: String, tally: &Tally) -> Row {
        Row {
            fault,
            requests: tally.requests,
            created: tally.created,
            errors: tally.errors.clone(),
            slowest: match tally.requests {
                0 => Timing::NotApplicable,
                _ => Timing::After(tally.slowest.as_secs_f64()),
            },
            lost: 0,
            double_sold: 0,
            stuck: 0,
            recovery: Timing::NotApplicable,
            agree: Timing::NotApplicable,
            events: Timing::NotApplicable,
            problems: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// Why this row fails the suite: the invariants, agreement within `agree_limit` seconds,
    /// recovery and event delivery at all, and the reconciler's findings if `problems_fail`.
    pub fn failures(&self, agree_limit: f64, problems_fail: bool) -> Vec<String> {
        let mut out = Vec::new();
        let counts = [
            (self.lost, "acknowledged orders lost"),
            (self.double_sold, "seats double-sold"),
            (self.stuck, "seats stuck"),
        ];
        for (n, what) in counts {
            if n > 0 {
                out.push(format!("{}: {n} {what}", self.fault));
            }
        }
        if self.agree.over(agree_limit) {
            let when = self.agree.render();
            out.push(format!(
                "{}: actor, Postgres and mirror agree after {when}",
                self.fault
            ));
        }
        if matches!(self.recovery, Timing::Never(_)) {
            out.push(format!("{}: the server did not recover", self.fault));
        }
        if problems_fail && !self.problems.is_empty() {
            let kinds = errors(&self.problems);
            out.push(format!("{}: the reconciler raised {kinds}", self.fault));
        }
        if matches!(self.events, Timing::Never(_)) {
            out.push(format!("{}: order events left unsent", self.fault));
        }
        out
    }
}

/// The Markdown table of `rows`.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| fault | requests | 201s | errors by code | slowest answer | lost | double-sold | stuck | recovery | actor = Postgres = Redis | events sent | reconciler problems |\n\
         | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.fault,
            r.requests,
            r.created,
            errors(&r.errors),
            r.slowest.render(),
            r.lost,
            r.double_sold,
            r.stuck,
            r.recovery.render(),
            r.agree.render(),
            r.events.render(),
            errors(&r.problems),
        ));
    }
    out
}

/// `503 STORE_UNAVAILABLE: 120, no connection: 45`, most frequent first; `none`.
fn errors(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    let mut by_count: Vec<_> = errors.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    by_count
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_fails_on_any_invariant_slow_agreement_or_no_recovery() {
        let mut row = Row::new("kill -9 #1".into(), &Tally::default());
        row.agree = Timing::After(4.9);
        row.recovery = Timing::After(30.0);
        assert!(row.failures(5.0, true).is_empty());
        row.agree = Timing::After(5.1);
        row.stuck = 1;
        row.recovery = Timing::Never(60.0);
        row.problems.insert("actor_seats".into(), 1);
        assert_eq!(
            row.failures(5.0, true).len(),
            4,
            "{:?}",
            row.failures(5.0, true)
        );
        assert_eq!(
            row.failures(5.0, false).len(),
            3,
            "findings shown, not failing"
        );
    }

    #[test]
    fn errors_are_listed_most_frequent_first() {
        let e = BTreeMap::from([("a".to_string(), 1), ("503 X".to_string(), 7)]);
        assert_eq!(errors(&e), "503 X: 7, a: 1");
        assert_eq!(render(&[]).lines().count(), 2);
    }
}
