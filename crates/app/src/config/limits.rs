//! `[limits]`: the bounds every backend enforces ([`StoreLimits`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_domain::limits::StoreLimits;

use super::serde_util::duration;
use super::{ConfigError, Validate};

/// `[limits]` settings; see [`StoreLimits`] for what each one bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest cache value in bytes (default 1 MiB).
    pub max_value_bytes: usize,
    /// Longest cache TTL (default `30days`).
    #[serde(with = "duration")]
    pub max_ttl: Duration,
    /// Largest task payload or result in bytes (default 1 MiB).
    pub max_payload_bytes: usize,
    /// Longest task error message in bytes (default 4 KiB).
    pub max_error_bytes: usize,
    /// How long finished tasks stay readable (default `24h`).
    #[serde(with = "duration")]
    pub finished_retention: Duration,
    /// Events kept per progress operation (default 1,000).
    pub max_events_per_operation: usize,
    /// How long an operation lives after its last update (default `24h`).
    #[serde(with = "duration")]
    pub operation_ttl: Duration,
    /// Most rate-limit keys the memory backend holds (default 100,000).
    pub max_limiter_keys: u64,
    /// Most cache entries the memory backend holds (default 100,000).
    pub max_cache_entries: u64,
    /// Most items in one batch call (default 1,000).
    pub max_batch: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = StoreLimits::default();
        Self {
            max_value_bytes: d.max_value_bytes,
            max_ttl: d.max_ttl,
            max_payload_bytes: d.max_payload_bytes,
            max_error_bytes: d.max_error_bytes,
            finished_retention: d.finished_retention,
            max_events_per_operation: d.max_events_per_operation,
            operation_ttl: d.operation_ttl,
            max_limiter_keys: d.max_limiter_keys,
            max_cache_entries: d.max_cache_entries,
            max_batch: d.max_batch,
        }
    }
}

impl LimitsConfig {
    /// The domain form.
    pub fn store_limits(&self) -> StoreLimits {
        StoreLimits {
            max_value_bytes: self.max_value_bytes,
            max_ttl: self.max_ttl,
            max_payload_bytes: self.max_payload_bytes,
            max_error_bytes: self.max_error_bytes,
            finished_retention: self.finished_retention,
            max_events_per_operation: self.max_events_per_operation,
            operation_ttl: self.operation_ttl,
            max_limiter_keys: self.max_limiter_keys,
            max_cache_entries: self.max_cache_entries,
            max_batch: self.max_batch,
        }
    }
}

impl Validate for LimitsConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let counts = [
            ("max_value_bytes", self.max_value_bytes as u64),
            ("max_payload_bytes", self.max_payload_bytes as u64),
            ("max_error_bytes", self.max_error_bytes as u64),
            (
                "max_events_per_operation",
                self.max_events_per_operation as u64,
            ),
            ("max_limiter_keys", self.max_limiter_keys),
            ("max_cache_entries", self.max_cache_entries),
            ("max_batch", self.max_batch as u64),
        ];
        for (name, v) in counts {
            if v == 0 {
                return Err(ConfigError::invalid(
                    format!("{at}.{name}"),
                    "must be at least 1",
                ));
            }
        }
        for (name, d) in [
            ("max_ttl", self.max_ttl),
            ("finished_retention", self.finished_retention),
            ("operation_ttl", self.operation_ttl),
        ] {
            if d < Duration::from_millis(1) {
                return Err(ConfigError::invalid(
                    format!("{at}.{name}"),
                    "must be at least 1ms",
                ));
            }
        }
        Ok(())
    }
}
