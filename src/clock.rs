//! Injectable wall clock. Hold deadlines are wall times (they are stored and shown), while timers
//! run on tokio's clock; [`TokioClock`] ties the two together so tests with paused tokio time see
//! deadlines pass exactly when they advance time.

use chrono::{DateTime, Utc};

/// Source of "now".
pub trait Clock: Send + Sync + 'static {
    /// The current wall time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock (production).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time anchored at creation and advanced by tokio's clock (which tests can pause).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall: DateTime<Utc>,
    instant: tokio::time::Instant,
}

impl TokioClock {
    /// Anchors at the current wall time and tokio instant.
    pub fn new() -> Self {
        TokioClock {
            wall: Utc::now(),
            instant: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.instant;
        self.wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}
