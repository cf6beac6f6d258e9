//! `[redis]`: how to reach Redis when `backend = "redis"`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_domain::names::KeyPrefix;

use super::serde_util::{duration, lenient_opt_string, lenient_string};
use super::{ConfigError, Validate};
use spool_domain::secret::Secret;

/// `[redis]` settings. `Debug` hides the password and any password inside the URL.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://` for TLS (default `redis://127.0.0.1:6379`;
    /// env `SPOOL_REDIS_URL`). Ignored when `cluster` is set.
    #[serde(deserialize_with = "lenient_string")]
    pub url: String,
    /// Redis Cluster seed nodes, `host:port,host:port` (`rediss://host:port` each for TLS;
    /// env `SPOOL_REDIS_CLUSTER`). One reachable seed is enough; when set, spool runs in
    /// cluster mode and `url` is not used.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub cluster: Option<String>,
    /// Replicas that must confirm each queue write (`WAIT`) before it is acknowledged
    /// (default 0: do not wait). See the Redis adapter's docs on what this narrows.
    pub wait_replicas: u32,
    /// Longest wait for those replicas (default `100ms`; below `command_timeout`); a
    /// shortfall fails the call as unavailable (the write stays on the primary).
    #[serde(with = "duration")]
    pub wait_timeout: Duration,
    /// ACL user name.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub username: Option<String>,
    /// Password; prefer `password_file` or the env var `SPOOL_REDIS__PASSWORD`.
    pub password: Option<Secret>,
    /// A file holding the password (trailing newline ignored), e.g. a mounted secret.
    pub password_file: Option<PathBuf>,
    /// Connections in the pool (default 4, at most 64).
    pub pool_size: usize,
    /// Longest wait for a connection (default `5s`).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Longest wait for one command (default `2s`).
    #[serde(with = "duration")]
    pub command_timeout: Duration,
    /// First component of every key (default `spool`).
    #[serde(deserialize_with = "lenient_string")]
    pub key_prefix: String,
    /// PEM file of the CA that signed the server's certificate (for `rediss://`).
    pub tls_ca: Option<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            cluster: None,
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(100),
            username: None,
            password: None,
            password_file: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
            key_prefix: "spool".to_owned(),
            tls_ca: None,
        }
    }
}

impl RedisConfig {
    /// The key prefix, validated.
    ///
    /// # Errors
    /// `redis.key_prefix` when it is not a valid [`KeyPrefix`].
    pub fn prefix(&self) -> Result<KeyPrefix, ConfigError> {
        KeyPrefix::parse(self.key_prefix.as_str())
            .map_err(|e| ConfigError::invalid("redis.key_prefix", e.to_string()))
    }

    /// The password from `password` or `password_file`.
    ///
    /// # Errors
    /// `redis.password_file` when the file cannot be read.
    pub fn resolve_password(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        spool_adapter_redis::secret_from_file(path)
            .map(Some)
            .map_err(|e| ConfigError::invalid("redis.password_file", e.to_string()))
    }

    /// The server topology: the cluster seeds when `cluster` is set, else the single `url`.
    ///
    /// # Errors
    /// `redis.cluster` when the seed list does not parse.
    pub fn topology(&self) -> Result<spool_adapter_redis::Topology, ConfigError> {
        match &self.cluster {
            Some(seeds) => spool_adapter_redis::Topology::parse_cluster(seeds)
                .map_err(|e| ConfigError::invalid("redis.cluster", e.to_string())),
            None => Ok(spool_adapter_redis::Topology::Standalone {
                url: self.url.clone(),
            }),
        }
    }

    /// The Redis adapter's configuration: these settings plus the validated prefix and the
    /// store limits every adapter enforces.
    ///
    /// # Errors
    /// `redis.key_prefix`, `redis.password_file` as for [`RedisConfig::prefix`] and
    /// [`RedisConfig::resolve_password`]; `redis.pool_size` when zero.
    pub fn to_adapter(
        &self,
        limits: &spool_domain::limits::StoreLimits,
    ) -> Result<spool_adapter_redis::RedisConfig, ConfigError> {
        if self.pool_size == 0 {
            return Err(ConfigError::invalid(
                "redis.pool_size",
                "must be at least 1",
            ));
        }
        let password = self.resolve_password()?;
        let mut adapter = spool_adapter_redis::RedisConfig::from_topology(self.topology()?)
            .credentials(self.username.clone(), password)
            .prefix(self.prefix()?)
            .limits(limits.clone());
        adapter.pool_size = self.pool_size;
        adapter.connect_timeout = self.connect_timeout;
        adapter.command_timeout = self.command_timeout;
        if let Some(ca) = &self.tls_ca {
            adapter = adapter.tls_ca_file(ca);
        }
        if self.wait_replicas > 0 {
            adapter = adapter.replica_acks(spool_adapter_redis::ReplicaAcks::new(
                self.wait_replicas,
                self.wait_timeout,
            ));
        }
        Ok(adapter)
    }

    /// Where spool connects, with any password replaced by `***`, for logs.
    pub fn redacted_url(&self) -> String {
        match self.topology() {
            Ok(t) => t.redacted(),
            Err(_) => spool_adapter_redis::redact_url(&self.url),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &spool_adapter_redis::redact_url(&self.url))
            .field("cluster", &self.cluster)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("key_prefix", &self.key_prefix)
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

impl Validate for RedisConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        self.topology()?;
        if self.wait_replicas > 0
            && (self.wait_timeout.is_zero() || self.wait_timeout >= self.command_timeout)
        {
            return Err(ConfigError::invalid(
                format!("{at}.wait_timeout"),
                format!(
                    "{:?} must be longer than zero and shorter than command_timeout ({:?})",
                    self.wait_timeout, self.command_timeout
                ),
            ));
        }
        let scheme_ok = self.url.starts_with("redis://") || self.url.starts_with("rediss://");
        if !scheme_ok || self.url.len() <= "redis://".len() {
            return Err(ConfigError::invalid(
                format!("{at}.url"),
                format!(
                    "{:?} must look like redis://host:port or rediss://host:port",
                    self.redacted_url()
                ),
            ));
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(ConfigError::invalid(
                format!("{at}.password_file"),
                "set either password or password_file, not both",
            ));
        }
        if !(1..=64).contains(&self.pool_size) {
            return Err(ConfigError::invalid(
                format!("{at}.pool_size"),
                format!("{} is outside 1..=64", self.pool_size),
            ));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::invalid(
                    format!("{at}.{name}"),
                    "must be longer than zero",
                ));
            }
        }
        KeyPrefix::parse(self.key_prefix.as_str())
            .map_err(|e| ConfigError::invalid(format!("{at}.key_prefix"), e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords() {
        let c = RedisConfig {
            url: "redis://app:s3cret@redis.internal:6379/0".into(),
            password: Some(Secret::new("hunter2")),
            ..RedisConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis.internal:6379/0"), "{shown}");
        assert_eq!(c.redacted_url(), "redis://app:***@redis.internal:6379/0");
    }

    #[test]
    fn password_comes_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file\n").unwrap();
        let c = RedisConfig {
            password_file: Some(path),
            ..RedisConfig::default()
        };
        assert_eq!(c.resolve_password().unwrap().unwrap().expose(), "from-file");
        let missing = RedisConfig {
            password_file: Some(dir.path().join("nope")),
            ..RedisConfig::default()
        };
        let e = missing.resolve_password().unwrap_err().to_string();
        assert!(e.contains("redis.password_file"), "{e}");
    }

    #[test]
    fn validation_names_the_setting() {
        let bad = RedisConfig {
            pool_size: 0,
            ..RedisConfig::default()
        };
        let e = bad.validate("redis").unwrap_err().to_string();
        assert!(e.contains("redis.pool_size"), "{e}");
        let bad = RedisConfig {
            url: "http://x".into(),
            ..RedisConfig::default()
        };
        assert!(bad
            .validate("redis")
            .unwrap_err()
            .to_string()
            .contains("redis.url"));
        let bad = RedisConfig {
            cluster: Some("10.0.0.1".into()),
            ..RedisConfig::default()
        };
        let e = bad.validate("redis").unwrap_err().to_string();
        assert!(e.contains("redis.cluster"), "{e}");
        let bad = RedisConfig {
            wait_replicas: 1,
            wait_timeout: Duration::from_secs(5),
            ..RedisConfig::default()
        };
        let e = bad.validate("redis").unwrap_err().to_string();
        assert!(e.contains("redis.wait_timeout"), "{e}");
    }

    #[test]
    fn cluster_seeds_select_cluster_mode() {
        let c = RedisConfig {
            cluster: Some("10.0.0.1:7000, 10.0.0.2:7000".into()),
            wait_replicas: 1,
            ..RedisConfig::default()
        };
        c.validate("redis").unwrap();
        let adapter = c.to_adapter(&Default::default()).unwrap();
        assert!(matches!(
            adapter.server,
            spool_adapter_redis::Topology::Cluster { ref seeds, .. } if seeds.len() == 2
        ));
        assert_eq!(adapter.replica_acks.map(|a| a.replicas), Some(1));
        assert_eq!(
            c.redacted_url(),
            "cluster redis://10.0.0.1:7000,10.0.0.2:7000"
        );
    }
}
