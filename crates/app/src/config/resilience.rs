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
    /// Sliding window the rate is measured over, `10ms..=24h` (default `30s`).
    #[serde(with = "duration")]
    pub window: Duration,
    /// Calls in the window before the rate counts, at least 1 (default 10).
    pub min_calls: u32,
    /// How long it stays open before probing, `1ms..=24h` (default `10s`).
    #[serde(with = "duration")]
    pub open_for: Duration,
    /// Probe calls let through while half-open, `1..=1000` (default 3).
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

impl BreakerConfig {
    /// The domain's breaker settings these stand for.
    pub fn to_domain(&self) -> spool_domain::breaker::BreakerConfig {
        spool_domain::breaker::BreakerConfig {
            failure_rate_threshold: self.failure_rate,
            window: self.window,
            minimum_calls: self.min_calls,
            open_duration: self.open_for,
            half_open_max_probes: self.half_open_probes,
        }
    }

    /// The setting a domain validation error is about, named as in this file.
    fn setting_of(component: &str) -> &'static str {
        match component {
            "breaker failure_rate_threshold" => "failure_rate",
            "breaker window" => "window",
            "breaker minimum_calls" => "min_calls",
            "breaker open_duration" => "open_for",
            "breaker half_open_max_probes" => "half_open_probes",
            _ => "",
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
        // The breaker's own rules (the pure state machine's) are the one source of truth.
        self.breaker.to_domain().validate().map_err(|e| {
            let setting = BreakerConfig::setting_of(e.component);
            let path = if setting.is_empty() {
                format!("{at}.breaker")
            } else {
                format!("{at}.breaker.{setting}")
            };
            ConfigError::invalid(path, e.reason)
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_settings_are_checked_by_the_domain_rules_and_named_here() {
        ResilienceConfig::default().validate("resilience").unwrap();
        for (bad, name) in [
            (
                BreakerConfig {
                    failure_rate: 1.5,
                    ..Default::default()
                },
                "failure_rate",
            ),
            (
                BreakerConfig {
                    window: Duration::from_millis(1),
                    ..Default::default()
                },
                "window",
            ),
            (
                BreakerConfig {
                    min_calls: 0,
                    ..Default::default()
                },
                "min_calls",
            ),
            (
                BreakerConfig {
                    open_for: Duration::from_secs(200_000),
                    ..Default::default()
                },
                "open_for",
            ),
            (
                BreakerConfig {
                    half_open_probes: 5_000,
                    ..Default::default()
                },
                "half_open_probes",
            ),
        ] {
            let c = ResilienceConfig {
                breaker: bad,
                ..Default::default()
            };
            let e = c.validate("resilience").unwrap_err().to_string();
            assert!(e.contains(&format!("resilience.breaker.{name}")), "{e}");
        }
    }
}
