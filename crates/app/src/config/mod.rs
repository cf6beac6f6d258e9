//! Configuration: typed, layered, validated at start.
//!
//! Layers, later ones winning:
//!
//! 1. built-in defaults (memory backend on `127.0.0.1:8080`),
//! 2. a TOML file (`--config spool.toml`, or `SPOOL_CONFIG`),
//! 3. environment variables: `SPOOL_<SECTION>__<KEY>` and the short aliases `SPOOL_BACKEND`,
//!    `SPOOL_REDIS_URL`, `SPOOL_HTTP_ADDR`, `SPOOL_RATE_LIMITS` (see [`mod@env`]).
//!
//! [`Config::load`] reads and checks everything; [`Config::validate`] turns it into
//! [`Settings`] of validated domain types. Every error names the setting
//! (`rate_limits[2].window`, `queues.embeddings.lease`) and where it came from.
//!
//! ```
//! use spool_app::config::{BackendKind, Config, EnvLayer};
//!
//! let env = EnvLayer::from_pairs([
//!     ("SPOOL_BACKEND", "memory"),
//!     ("SPOOL_HTTP_ADDR", "0.0.0.0:9000"),
//!     ("SPOOL_RATE_LIMITS", "ip:100/60s,user:1000/1h"),
//! ]);
//! let config = Config::load_from(None, &env).unwrap();
//! assert_eq!(config.backend, BackendKind::Memory);
//! assert_eq!(config.http.addr.port(), 9000);
//! let settings = config.validate().unwrap();
//! assert_eq!(settings.rate_limits.len(), 2);
//! ```
//!
//! A TOML file with every section:
//!
//! ```toml
//! backend = "redis"                      # memory | redis
//!
//! [http]
//! addr = "0.0.0.0:8080"
//! trusted_proxies = ["10.0.0.0/8"]
//! [[http.api_keys]]
//! id = "ci"
//! sha256 = "<64 hex digits>"
//! projects = ["acme"]
//!
//! [redis]
//! url = "rediss://redis.internal:6380"
//! username = "spool"
//! password_file = "/run/secrets/redis"
//! key_prefix = "spool"
//!
//! [cache]
//! default_ttl = "1h"
//! codec = "msgpack"
//! [cache.policies.users]
//! ttl = "10m"
//!
//! [[rate_limits]]
//! name = "ip_minute"
//! scope = "ip"
//! limit = 100
//! window = "60s"
//!
//! [queues.embeddings]
//! concurrency = 8
//! lease = "30s"
//!
//! [resilience.breaker]
//! failure_rate = 0.5
//!
//! [telemetry]
//! log_format = "json"
//! ```

mod cache;
mod encryption;
pub mod env;
mod http;
mod limits;
mod queues;
pub mod rate_limit_spec;
mod rate_limits;
mod redis;
mod resilience;
pub mod serde_util;
mod telemetry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::{Figment, Profile, Provider};
use serde::{Deserialize, Serialize};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{KeyPrefix, QueueName};
use spool_ports::limiter::MAX_CHECKS;

pub use cache::{CacheConfig, CachePolicyConfig};
pub use encryption::{EncryptionConfig, EncryptionKeyConfig};
pub use env::{EnvLayer, EnvProvider};
pub use http::{ApiKeyConfig, HttpConfig, IpNetwork};
pub use limits::LimitsConfig;
pub use queues::{BackoffConfig, QueueConfig};
pub use rate_limit_spec::{parse_rate_limits, render_rate_limits, RateLimitSpecError};
pub use rate_limits::RateLimitConfig;
pub use redis::RedisConfig;
pub use resilience::{BreakerConfig, ResilienceConfig, RetryConfig};
pub use spool_domain::secret::Secret;
pub use telemetry::{LogFormat, TelemetryConfig, WorkerConfig};

use crate::services::{CacheSettings, QueuePolicies, RatePolicy};

/// Which adapter backs the services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// In process memory (default): tests, a single embedded process.
    #[default]
    Memory,
    /// Redis, for production and many instances.
    Redis,
}

impl BackendKind {
    /// `memory` or `redis`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Redis => "redis",
        }
    }
}

/// Everything spool can be told, as read from defaults, file and environment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `memory` (default) or `redis`; env `SPOOL_BACKEND`.
    pub backend: BackendKind,
    /// The HTTP face.
    pub http: HttpConfig,
    /// Redis connection (used when `backend = "redis"`).
    pub redis: RedisConfig,
    /// Bounds every backend enforces.
    pub limits: LimitsConfig,
    /// The cache service.
    pub cache: CacheConfig,
    /// Named rate-limit policies; env `SPOOL_RATE_LIMITS`.
    pub rate_limits: Vec<RateLimitConfig>,
    /// Per-queue settings by queue name.
    pub queues: BTreeMap<String, QueueConfig>,
    /// Circuit breaker and retries.
    pub resilience: ResilienceConfig,
    /// Logs, traces, metrics.
    pub telemetry: TelemetryConfig,
    /// The worker process.
    pub worker: WorkerConfig,
    /// Encryption at rest of sensitive values (keys, sensitive caches and queues).
    pub encryption: EncryptionConfig,
}

/// The validated, domain-typed form of a [`Config`], what the services are built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Which adapter.
    pub backend: BackendKind,
    /// First component of every backend key.
    pub key_prefix: KeyPrefix,
    /// Bounds every backend enforces.
    pub limits: StoreLimits,
    /// Cache TTL policies and codec.
    pub cache: CacheSettings,
    /// Rate-limit policies, in configuration order.
    pub rate_limits: Vec<RatePolicy>,
    /// Per-queue settings.
    pub queues: QueuePolicies,
    /// What is encrypted at rest, and the keys.
    pub encryption: crate::crypto::EncryptionSettings,
}

/// A setting that could not be read or is not acceptable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A setting is malformed or out of range.
    #[error("invalid setting `{setting}`: {message}")]
    Invalid {
        /// The setting, e.g. `rate_limits[2].window` or `SPOOL_RATE_LIMITS`.
        setting: String,
        /// What is wrong (and where it came from, when known).
        message: String,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub fn invalid(setting: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            setting: setting.into(),
            message: message.into(),
        }
    }

    /// The setting named by the error, when there is one.
    pub fn setting(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { setting, .. } => Some(setting),
            ConfigError::Read { .. } => None,
        }
    }

    fn from_figment(e: figment::Error) -> Self {
        let mut settings = Vec::new();
        let mut messages = Vec::new();
        for err in e {
            let setting = render_path(&err.path);
            let origin = err.metadata.as_ref().map(|md| {
                let what = if err.path.is_empty() {
                    md.name.to_string()
                } else {
                    md.interpolate(&err.profile.clone().unwrap_or(Profile::Default), &err.path)
                };
                match &md.source {
                    Some(src) => format!("{what} in {src}"),
                    None => what,
                }
            });
            messages.push(match origin {
                Some(o) => format!("{} (from {o})", err.kind),
                None => err.kind.to_string(),
            });
            settings.push(setting);
        }
        let setting = settings.first().cloned().unwrap_or_default();
        ConfigError::Invalid {
            setting: if setting.is_empty() {
                "(configuration)".to_owned()
            } else {
                setting
            },
            message: messages.join("; "),
        }
    }
}

/// `["rate_limits", "2", "window"]` → `rate_limits[2].window`.
fn render_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// Checks one section; `at` is its path, used in error messages.
pub(crate) trait Validate {
    fn validate(&self, at: &str) -> Result<(), ConfigError>;
}

impl Config {
    /// Reads defaults, then the TOML file at `path` (or `SPOOL_CONFIG`) when given, then the
    /// process environment; validates the result.
    ///
    /// # Errors
    /// The file cannot be read, or a setting is bad; the error names it.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(path, &EnvLayer::from_process())
    }

    /// [`Config::load`] with an explicit environment (tests, embedders).
    ///
    /// # Errors
    /// As for [`Config::load`].
    pub fn load_from(path: Option<&Path>, env: &EnvLayer) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| env.get("SPOOL_CONFIG").map(PathBuf::from));
        if let Some(path) = path {
            std::fs::File::open(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            figment = figment.merge(Toml::file_exact(&path));
        }
        figment = figment.merge(env.provider()?);
        Self::from_figment(figment)
    }

    /// Reads a TOML document then `env` over the defaults, and validates (tests, embedders).
    ///
    /// # Errors
    /// As for [`Config::load`].
    pub fn from_toml_str(toml: &str, env: &EnvLayer) -> Result<Config, ConfigError> {
        Self::from_figment(
            Figment::new()
                .merge(Toml::string(toml))
                .merge(env.provider()?),
        )
    }

    /// Extracts a `Config` from any figment provider stack over the defaults, and validates.
    ///
    /// # Errors
    /// As for [`Config::load`].
    pub fn from_provider(provider: impl Provider) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(provider))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(ConfigError::from_figment)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting and builds the domain-typed [`Settings`].
    ///
    /// # Errors
    /// The first bad setting, named (`rate_limits[2].window: ...`).
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        self.http.validate("http")?;
        self.redis.validate("redis")?;
        self.limits.validate("limits")?;
        self.resilience.validate("resilience")?;
        self.telemetry.validate("telemetry")?;
        self.worker.validate("worker")?;
        let limits = self.limits.store_limits();
        let cache = self.cache.settings("cache", limits.max_ttl)?;
        let encryption = self.encryption.settings("encryption")?;

        if self.rate_limits.len() > MAX_CHECKS {
            return Err(ConfigError::invalid(
                "rate_limits",
                format!(
                    "{} policies; at most {MAX_CHECKS} can be checked together",
                    self.rate_limits.len()
                ),
            ));
        }
        let mut rate_limits: Vec<RatePolicy> = Vec::with_capacity(self.rate_limits.len());
        for (i, p) in self.rate_limits.iter().enumerate() {
            let at = format!("rate_limits[{i}]");
            let policy = p.policy(&at)?;
            if rate_limits
                .iter()
                .any(|o| o.policy.name() == policy.policy.name())
            {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    format!("{:?} is used by an earlier policy", p.name),
                ));
            }
            rate_limits.push(policy);
        }

        let mut queues = QueuePolicies::default();
        for (name, q) in &self.queues {
            let at = format!("queues.{name}");
            let queue = QueueName::parse(name.as_str())
                .map_err(|e| ConfigError::invalid(at.clone(), e.to_string()))?;
            queues.insert(queue, q.settings(&at)?);
        }

        Ok(Settings {
            backend: self.backend,
            key_prefix: self.redis.prefix()?,
            limits,
            cache,
            rate_limits,
            queues,
            encryption,
        })
    }
}

#[cfg(test)]
mod tests;
