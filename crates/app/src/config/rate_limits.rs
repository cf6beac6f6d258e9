//! `[[rate_limits]]`: named sliding-window policies.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_domain::limit::{Algorithm, Policy};
use spool_domain::names::PolicyName;

use super::serde_util::{duration, format_duration, lenient_string};
use super::ConfigError;
use crate::services::{FailureMode, RatePolicy, Scope};

/// One `[[rate_limits]]` entry.
///
/// ```toml
/// [[rate_limits]]
/// name = "ip_per_minute"
/// scope = "ip"            # user | project | ip
/// limit = 100
/// window = "60s"
/// algorithm = "sliding_window"   # or sliding_log
/// failure_mode = "local"         # local | open | closed, while Redis is down
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Policy name: lowercase letters, digits, `_`, `-`; unique.
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
    /// Whom it counts.
    pub scope: Scope,
    /// Units per window.
    pub limit: u64,
    /// The sliding window.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Counter (default) or exact log.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// What to do while the backend is unavailable.
    #[serde(default)]
    pub failure_mode: FailureMode,
}

impl RateLimitConfig {
    /// The validated policy; `at` names this entry (e.g. `rate_limits[2]`).
    ///
    /// # Errors
    /// The bad field, named.
    pub fn policy(&self, at: &str) -> Result<RatePolicy, ConfigError> {
        let name = PolicyName::parse(self.name.as_str())
            .map_err(|e| ConfigError::invalid(format!("{at}.name"), e.to_string()))?;
        if self.limit == 0 || self.limit > Policy::MAX_LIMIT {
            return Err(ConfigError::invalid(
                format!("{at}.limit"),
                format!("{} is outside 1..={}", self.limit, Policy::MAX_LIMIT),
            ));
        }
        if self.window < Duration::from_millis(1)
            || self.window > Policy::MAX_WINDOW
            || self.window.subsec_nanos() % 1_000_000 != 0
        {
            return Err(ConfigError::invalid(
                format!("{at}.window"),
                format!(
                    "{} must be whole milliseconds between 1ms and 7days",
                    format_duration(self.window)
                ),
            ));
        }
        let policy = Policy::new(name, self.limit, self.window, self.algorithm)
            .map_err(|e| ConfigError::invalid(at.to_owned(), e.to_string()))?;
        Ok(RatePolicy {
            policy,
            scope: self.scope,
            failure_mode: self.failure_mode,
        })
    }
}
