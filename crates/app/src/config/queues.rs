//! `[queues.<name>]`: per-queue worker and retry settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_domain::backoff::{Backoff, Jitter};
use spool_domain::task::MaxAttempts;
use spool_ports::ReserveOptions;

use super::serde_util::{duration, format_duration, opt_duration};
use super::ConfigError;
use crate::services::QueueSettings;
use crate::worker::MAX_PREFETCH;

/// Settings of one queue. Queues not listed use the defaults.
///
/// ```toml
/// [queues.embeddings]
/// concurrency = 8
/// prefetch = 8
/// lease = "30s"
/// max_attempts = 5
/// timeout = "2m"
/// backoff = { initial = "1s", max = "10m", factor = 2, jitter = "full" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Handlers of this queue running at once in one worker process (default 4).
    pub concurrency: usize,
    /// Tasks a worker process reserves ahead of its free slots, `0..=1024` (default: as many
    /// as `concurrency`; `0` reserves only for free slots).
    pub prefetch: Option<usize>,
    /// Lease per reservation; heartbeats extend it every third of it (default `30s`).
    #[serde(with = "duration")]
    pub lease: Duration,
    /// Attempts of a task enqueued without its own (default 3).
    pub max_attempts: u32,
    /// Delay between attempts of a task enqueued without its own backoff.
    pub backoff: BackoffConfig,
    /// Longest one attempt may run, for tasks enqueued without their own timeout
    /// (default: none, the lease and heartbeats only).
    #[serde(with = "opt_duration")]
    pub timeout: Option<Duration>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            prefetch: None,
            lease: Duration::from_secs(30),
            max_attempts: 3,
            backoff: BackoffConfig::default(),
            timeout: None,
        }
    }
}

/// An exponential backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// Delay before the first retry (default `1s`).
    #[serde(with = "duration")]
    pub initial: Duration,
    /// Cap of any delay (default `10m`, at most `7days`).
    #[serde(with = "duration")]
    pub max: Duration,
    /// Growth per retry, `1..=16` (default 2).
    pub factor: u32,
    /// `full` (default) or `none`.
    pub jitter: Jitter,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        let d = Backoff::default();
        Self {
            initial: Duration::from_millis(d.initial_ms),
            max: Duration::from_millis(d.max_ms),
            factor: d.factor,
            jitter: d.jitter,
        }
    }
}

impl BackoffConfig {
    /// The validated backoff.
    ///
    /// # Errors
    /// `<at>` named with the reason.
    pub fn backoff(&self, at: &str) -> Result<Backoff, ConfigError> {
        Backoff::new(self.initial, self.max, self.factor, self.jitter)
            .map_err(|e| ConfigError::invalid(at.to_owned(), e.reason))
    }
}

impl QueueConfig {
    /// The validated settings; `at` names this queue (e.g. `queues.embeddings`).
    ///
    /// # Errors
    /// The bad field, named.
    pub fn settings(&self, at: &str) -> Result<QueueSettings, ConfigError> {
        if !(1..=1024).contains(&self.concurrency) {
            return Err(ConfigError::invalid(
                format!("{at}.concurrency"),
                format!("{} is outside 1..=1024", self.concurrency),
            ));
        }
        if let Some(n) = self.prefetch {
            if n > MAX_PREFETCH {
                return Err(ConfigError::invalid(
                    format!("{at}.prefetch"),
                    format!("{n} is outside 0..={MAX_PREFETCH}"),
                ));
            }
        }
        if self.lease < Duration::from_millis(3) || self.lease > ReserveOptions::MAX_LEASE {
            return Err(ConfigError::invalid(
                format!("{at}.lease"),
                format!("{} is outside 3ms..=1day", format_duration(self.lease)),
            ));
        }
        let max_attempts = MaxAttempts::new(self.max_attempts)
            .map_err(|e| ConfigError::invalid(format!("{at}.max_attempts"), e.reason))?;
        let backoff = self.backoff.backoff(&format!("{at}.backoff"))?;
        if let Some(t) = self.timeout {
            if t < Duration::from_millis(1) {
                return Err(ConfigError::invalid(
                    format!("{at}.timeout"),
                    "must be at least 1ms",
                ));
            }
        }
        Ok(QueueSettings {
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            lease: self.lease,
            max_attempts,
            backoff,
            timeout: self.timeout,
        })
    }
}
