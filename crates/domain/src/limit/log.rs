//! The exact sliding log.
//!
//! Every admitted request is kept as `(time, cost)`. An entry counts while `time > now - W`,
//! i.e. it leaves the window at `time + W`. A request of cost `c` is admitted when the counted
//! sum plus `c` is at most `limit`. When refused, `retry_after` is the time until enough of the
//! oldest entries have left: exact by construction.

use std::collections::VecDeque;
use std::time::Duration;

use crate::limit::{Cost, Policy, PolicyDecision};

/// One admitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEntry {
    /// When it was admitted, ms since the epoch.
    pub at_ms: u64,
    /// Units it consumed (at least 1; peeks are never logged).
    pub cost: u64,
}

/// The entries of one key, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingLog {
    entries: VecDeque<LogEntry>,
}

/// The result of evaluating one request against a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEvaluation {
    /// Whether this policy admits the request.
    pub allowed: bool,
    used: u64,
    cost: u64,
    now_ms: u64,
    newest_ms: Option<u64>,
    retry_after_ms: Option<u64>,
}

impl SlidingLog {
    /// Drops entries that have left the window ending at `now_ms`.
    pub fn prune(&mut self, window_ms: u64, now_ms: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.at_ms + window_ms <= now_ms)
        {
            self.entries.pop_front();
        }
    }

    /// Evaluates a request at `now_ms` (prune first).
    pub fn evaluate(&self, policy: &Policy, now_ms: u64, cost: Cost) -> LogEvaluation {
        let w = policy.window_ms();
        let live = || self.entries.iter().filter(|e| e.at_ms + w > now_ms);
        let used: u64 = live().map(|e| e.cost).sum();
        let c = cost.units();
        let allowed = used + c <= policy.limit();
        let retry_after_ms = if allowed {
            None
        } else {
            let mut still = used;
            live()
                .find(|e| {
                    still -= e.cost;
                    still + c <= policy.limit()
                })
                .map(|e| e.at_ms + w - now_ms)
        };
        LogEvaluation {
            allowed,
            used,
            cost: c,
            now_ms,
            newest_ms: live().next_back().map(|e| e.at_ms),
            retry_after_ms,
        }
    }

    /// Records an admitted request (a zero cost records nothing).
    pub fn record(&mut self, now_ms: u64, cost: Cost) {
        if cost.units() > 0 {
            self.entries.push_back(LogEntry {
                at_ms: now_ms,
                cost: cost.units(),
            });
        }
    }

    /// Whether the log holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl LogEvaluation {
    /// The policy decision, given whether the whole check consumed the cost.
    pub fn decision(&self, policy: &Policy, consumed: bool) -> PolicyDecision {
        let w = policy.window_ms();
        let (used, newest) = if consumed && self.cost > 0 {
            (self.used + self.cost, Some(self.now_ms))
        } else {
            (self.used, self.newest_ms)
        };
        PolicyDecision {
            policy: policy.name().clone(),
            allowed: self.allowed,
            limit: policy.limit(),
            window: policy.window(),
            remaining: policy.limit().saturating_sub(used),
            reset_after: Duration::from_millis(newest.map_or(0, |n| n + w - self.now_ms)),
            retry_after: self.retry_after_ms.map(Duration::from_millis),
        }
    }

    /// The exact wait in ms when refused.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::Algorithm;
    use crate::names::PolicyName;
    use proptest::prelude::*;

    fn policy(limit: u64, window_ms: u64) -> Policy {
        Policy::new(
            PolicyName::parse("p").unwrap(),
            limit,
            Duration::from_millis(window_ms),
            Algorithm::SlidingLog,
        )
        .unwrap()
    }

    proptest! {
        /// The log never admits more than `limit` units in any window, and `retry_after` is
        /// exact.
        #[test]
        fn exact_and_never_over_admits(
            limit in 1u64..20,
            window in 1u64..1000,
            reqs in proptest::collection::vec((0u64..400, 1u64..4), 1..150),
        ) {
            let p = policy(limit, window);
            let mut log = SlidingLog::default();
            let mut t = 0u64;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (gap, c) in reqs {
                t += gap;
                let cost = Cost::new(c.min(limit)).unwrap();
                log.prune(window, t);
                let ev = log.evaluate(&p, t, cost);
                if ev.allowed {
                    log.record(t, cost);
                    admitted.push((t, cost.units()));
                } else {
                    let wait = ev.retry_after_ms().unwrap();
                    prop_assert!(wait > 0);
                    prop_assert!(log.evaluate(&p, t + wait, cost).allowed);
                    prop_assert!(!log.evaluate(&p, t + wait - 1, cost).allowed);
                }
            }
            for &(start, _) in &admitted {
                let sum: u64 = admitted.iter().filter(|&&(a, _)| a >= start && a < start + window).map(|&(_, c)| c).sum();
                prop_assert!(sum <= limit);
            }
        }
    }
}
