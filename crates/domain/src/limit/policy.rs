//! What a limit is: how many units per sliding window, for whom, by which algorithm.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::{PolicyName, Subject};
use crate::time::duration_millis;
use crate::ValidationError;

/// Which sliding-window algorithm a policy uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Sliding-window counter: O(1) memory, approximates by weighting the previous window.
    #[default]
    SlidingWindow,
    /// Exact sliding log: O(limit) memory, never admits more than `limit` in any window.
    SlidingLog,
}

/// A validated limit: at most `limit` units in any sliding `window`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Policy {
    name: PolicyName,
    limit: u64,
    window_ms: u64,
    algorithm: Algorithm,
}

impl Policy {
    /// Largest accepted limit.
    pub const MAX_LIMIT: u64 = 10_000_000;
    /// Longest accepted window (7 days). Together with `MAX_LIMIT` this keeps every product in
    /// the math below 2^53, so Lua's doubles compute the same integers as Rust.
    pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

    /// Validates a policy: `1 <= limit <= MAX_LIMIT`, `1 ms <= window <= MAX_WINDOW`, whole
    /// milliseconds.
    pub fn new(
        name: PolicyName,
        limit: u64,
        window: Duration,
        algorithm: Algorithm,
    ) -> Result<Self, ValidationError> {
        if limit == 0 || limit > Self::MAX_LIMIT {
            return Err(ValidationError::new(
                "rate limit",
                format!(
                    "limit of policy {name} is {limit}; it must be 1..={}",
                    Self::MAX_LIMIT
                ),
            ));
        }
        let window_ms = duration_millis(window);
        if window_ms == 0 || window > Self::MAX_WINDOW || window.subsec_nanos() % 1_000_000 != 0 {
            return Err(ValidationError::new(
                "rate limit",
                format!(
                    "window of policy {name} is {window:?}; it must be whole milliseconds between 1ms and 7 days"
                ),
            ));
        }
        Ok(Self {
            name,
            limit,
            window_ms,
            algorithm,
        })
    }

    /// The policy's name.
    pub fn name(&self) -> &PolicyName {
        &self.name
    }

    /// Units admitted per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    /// The window length in milliseconds.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// How many units one request consumes. `0` peeks: it reports the state and consumes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cost(u64);

impl Cost {
    /// One unit, the usual cost of a request.
    pub const ONE: Cost = Cost(1);
    /// Peek without consuming.
    pub const PEEK: Cost = Cost(0);

    /// Validates a cost (at most [`Policy::MAX_LIMIT`]).
    pub fn new(units: u64) -> Result<Self, ValidationError> {
        if units > Policy::MAX_LIMIT {
            return Err(ValidationError::new(
                "cost",
                format!("{units} exceeds the maximum of {}", Policy::MAX_LIMIT),
            ));
        }
        Ok(Self(units))
    }

    /// The units.
    pub fn units(self) -> u64 {
        self.0
    }
}

/// One policy applied to one subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitCheck {
    /// The limit.
    pub policy: Policy,
    /// Whom it counts.
    pub subject: Subject,
}

impl LimitCheck {
    /// Pairs a policy with the subject it counts.
    pub fn new(policy: Policy, subject: Subject) -> Self {
        Self { policy, subject }
    }

    /// Refuses a cost larger than the policy's limit: such a request could never be admitted,
    /// so there would be no honest `retry_after`.
    pub fn validate_cost(&self, cost: Cost) -> Result<(), ValidationError> {
        if cost.units() > self.policy.limit() {
            return Err(ValidationError::new(
                "cost",
                format!(
                    "{} exceeds the limit {} of policy {}; it could never be admitted",
                    cost.units(),
                    self.policy.limit(),
                    self.policy.name()
                ),
            ));
        }
        Ok(())
    }
}
