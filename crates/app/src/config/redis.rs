//! `[redis]`: how to reach Redis when `backend = "redis"`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_domain::names::KeyPrefix;

use super::serde_util::{duration, lenient_opt_string, lenient_string, Secret};
use super::{ConfigError, Validate};

/// `[redis]` settings. `Debug` hides the password and any password inside the URL.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://` for TLS (default `redis://127.0.0.1:6379`;
    /// env `SPOOL_REDIS_URL`).
    #[serde(deserialize_with = "lenient_string")]
    pub url: String,
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
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::invalid(
                "redis.password_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        Ok(Some(Secret::new(text.trim_end_matches(['\r', '\n']))))
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
        let password = self
            .resolve_password()?
            .map(|p| spool_adapter_redis::Secret::new(p.expose()));
        let mut adapter = spool_adapter_redis::RedisConfig::new(self.url.clone())
            .credentials(self.username.clone(), password)
            .prefix(self.prefix()?)
            .limits(limits.clone());
        adapter.pool_size = self.pool_size;
        adapter.connect_timeout = self.connect_timeout;
        adapter.command_timeout = self.command_timeout;
        if let Some(ca) = &self.tls_ca {
            adapter = adapter.tls_ca_file(ca);
        }
        Ok(adapter)
    }

    /// The URL with any password replaced by `[redacted]`, for logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:[redacted]@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
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
        assert_eq!(
            redact_url("rediss://:pw@h:1"),
            "rediss://:[redacted]@h:1".to_owned()
        );
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
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
    }
}
