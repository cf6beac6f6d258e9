//! `[cache]`: TTLs, jitter, codec and per-cache-name policies.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::serde_util::duration;
use super::ConfigError;
use crate::services::{CacheName, CacheSettings, Codec, TtlPolicy};

/// `[cache]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// TTL of a value stored without a per-name policy or explicit TTL (default `1h`).
    #[serde(with = "duration")]
    pub default_ttl: Duration,
    /// Longest TTL the service hands out, jitter included (default `7days`; at most
    /// `limits.max_ttl`).
    #[serde(with = "duration")]
    pub max_ttl: Duration,
    /// Default jitter: each TTL is moved by up to this fraction either way (`0.0..=0.5`,
    /// default `0.1`), so entries written together do not expire together.
    pub jitter: f64,
    /// How typed values are encoded: `json` (default) or `msgpack`.
    pub codec: Codec,
    /// Per-cache-name TTL policies: `[cache.policies.users] ttl = "10m"`.
    pub policies: BTreeMap<String, CachePolicyConfig>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            jitter: 0.1,
            codec: Codec::Json,
            policies: BTreeMap::new(),
        }
    }
}

/// The TTL policy of one cache name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePolicyConfig {
    /// TTL of values under this name.
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// Jitter for this name; the `[cache] jitter` when absent.
    #[serde(default)]
    pub jitter: Option<f64>,
}

fn check_jitter(at: String, j: f64) -> Result<(), ConfigError> {
    if !(0.0..=0.5).contains(&j) {
        return Err(ConfigError::invalid(
            at,
            format!("{j} is outside 0.0..=0.5"),
        ));
    }
    Ok(())
}

fn check_ttl(at: String, ttl: Duration, max: Duration) -> Result<(), ConfigError> {
    if ttl < Duration::from_millis(1) || ttl > max {
        return Err(ConfigError::invalid(
            at,
            format!(
                "{} is outside 1ms..={} (cache.max_ttl)",
                super::serde_util::format_duration(ttl),
                super::serde_util::format_duration(max)
            ),
        ));
    }
    Ok(())
}

impl CacheConfig {
    /// The validated service settings; `store_max_ttl` is `limits.max_ttl`.
    ///
    /// # Errors
    /// The first bad setting, named.
    pub fn settings(
        &self,
        at: &str,
        store_max_ttl: Duration,
    ) -> Result<CacheSettings, ConfigError> {
        if self.max_ttl < Duration::from_millis(1) || self.max_ttl > store_max_ttl {
            return Err(ConfigError::invalid(
                format!("{at}.max_ttl"),
                format!(
                    "{} is outside 1ms..={} (limits.max_ttl)",
                    super::serde_util::format_duration(self.max_ttl),
                    super::serde_util::format_duration(store_max_ttl)
                ),
            ));
        }
        check_ttl(format!("{at}.default_ttl"), self.default_ttl, self.max_ttl)?;
        check_jitter(format!("{at}.jitter"), self.jitter)?;
        let mut names = BTreeMap::new();
        for (name, p) in &self.policies {
            let here = format!("{at}.policies.{name}");
            let parsed = CacheName::parse(name.as_str())
                .map_err(|e| ConfigError::invalid(here.clone(), e.to_string()))?;
            check_ttl(format!("{here}.ttl"), p.ttl, self.max_ttl)?;
            let jitter = p.jitter.unwrap_or(self.jitter);
            check_jitter(format!("{here}.jitter"), jitter)?;
            names.insert(parsed, TtlPolicy { ttl: p.ttl, jitter });
        }
        Ok(CacheSettings {
            default: TtlPolicy {
                ttl: self.default_ttl,
                jitter: self.jitter,
            },
            max_ttl: self.max_ttl,
            codec: self.codec,
            names,
        })
    }
}
