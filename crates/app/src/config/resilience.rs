//! `[resilience]`: circuit breaker and retries around the Redis ports.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::serde_util::duration;
use super::{ConfigError, Validate};

/// `[resilience]` settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// Retries of transient errors.
    pub retry: RetryConfig,
}

/// `[resilience.breaker]`: opens when the failure rate over a sliding window exceeds a
/// threshold, after a minimum number of calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failure rate that opens the breaker, `0.0 < rate <= 1.0` (default `0.5`).
    pub failure_rate: f64,
    /// Sliding window the rate is measured over (default `30s`).
    #[serde(with = "duration")]
    pub window: Duration,
    /// Calls in the window before the rate counts (default 10).
    pub min_calls: u32,
    /// How long it stays open before probing (default `10s`).
    #[serde(with = "duration")]
    pub open_for: Duration,
    /// Probe calls let through while half-open (default 3).
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            window: Duration::from_secs(30),
            min_calls: 10,
            open_for: Duration::from_secs(10),
            half_open_probes: 3,
        }
    }
}

/// `[resilience.retry]`: exponential backoff with full jitter, transient errors only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt, `0..=10` (default 2).
    pub max_retries: u32,
    /// First delay (default `50ms`).
    #[serde(with = "duration")]
    pub initial: Duration,
    /// Longest delay (default `1s`).
    #[serde(with = "duration")]
    pub max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
        }
    }
}

impl Validate for ResilienceConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let b = &self.breaker;
        if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
            return Err(ConfigError::invalid(
                format!("{at}.breaker.failure_rate"),
                format!("{} is outside (0.0, 1.0]", b.failure_rate),
            ));
        }
        for (name, d) in [("window", b.window), ("open_for", b.open_for)] {
            if d < Duration::from_millis(1) {
                return Err(ConfigError::invalid(
                    format!("{at}.breaker.{name}"),
                    "must be at least 1ms",
                ));
            }
        }
        if b.min_calls == 0 {
            return Err(ConfigError::invalid(
                format!("{at}.breaker.min_calls"),
                "must be at least 1",
            ));
        }
        if b.half_open_probes == 0 {
            return Err(ConfigError::invalid(
                format!("{at}.breaker.half_open_probes"),
                "must be at least 1",
            ));
        }
        let r = &self.retry;
        if r.max_retries > 10 {
            return Err(ConfigError::invalid(
                format!("{at}.retry.max_retries"),
                format!("{} is more than 10", r.max_retries),
            ));
        }
        if r.initial > r.max {
            return Err(ConfigError::invalid(
                format!("{at}.retry.initial"),
                "must not be longer than retry.max",
            ));
        }
        Ok(())
    }
}
