//! The clock the memory adapter reads "now" from.

use std::time::{SystemTime, UNIX_EPOCH};

use spool_domain::time::duration_millis;
use spool_domain::Timestamp;
use tokio::time::Instant;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// Wall-clock time at construction, advanced by tokio's monotonic clock. Under a paused
/// tokio runtime time only moves with `tokio::time::advance` (or auto-advance), so tests are
/// deterministic; in production it is monotonic and never jumps back.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: Timestamp,
    started: Instant,
}

impl TokioClock {
    /// Starts at the system's wall-clock time.
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(duration_millis)
            .unwrap_or(0);
        Self::starting_at(Timestamp::from_millis(wall))
    }

    /// Starts at `base` (useful for reproducible tests).
    pub fn starting_at(base: Timestamp) -> Self {
        Self {
            base,
            started: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.base.saturating_add(self.started.elapsed())
    }
}
