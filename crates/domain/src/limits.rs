//! Bounds every adapter enforces the same way, so behaviour matches across backends.

use std::time::Duration;

/// Sizes and retention shared by both adapters. Values over a bound are refused with
/// `Invalid`, never truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLimits {
    /// Largest cache value in bytes (default 1 MiB).
    pub max_value_bytes: usize,
    /// Longest cache TTL (default 30 days).
    pub max_ttl: Duration,
    /// Largest task payload or result, as serialised JSON, in bytes (default 1 MiB).
    pub max_payload_bytes: usize,
    /// Longest error message kept on a task, in bytes (default 4 KiB); longer is `Invalid`.
    pub max_error_bytes: usize,
    /// How long succeeded, dead and cancelled tasks stay readable (default 24 hours).
    pub finished_retention: Duration,
    /// How many events each operation keeps (default 1,000); older ones are trimmed.
    pub max_events_per_operation: usize,
    /// How long an operation and its events live after their last update (default 24 hours).
    pub operation_ttl: Duration,
    /// How many rate-limit keys the memory adapter holds at most (default 100,000).
    pub max_limiter_keys: u64,
    /// How many cache entries the memory adapter holds at most (default 100,000).
    pub max_cache_entries: u64,
    /// How many items one batch call (`get_many`, `set_many`, stats) may carry (default 1,000).
    pub max_batch: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_value_bytes: 1 << 20,
            max_ttl: Duration::from_secs(30 * 24 * 3600),
            max_payload_bytes: 1 << 20,
            max_error_bytes: 4 << 10,
            finished_retention: Duration::from_secs(24 * 3600),
            max_events_per_operation: 1000,
            operation_ttl: Duration::from_secs(24 * 3600),
            max_limiter_keys: 100_000,
            max_cache_entries: 100_000,
            max_batch: 1000,
        }
    }
}
