//! Connection settings: URL, credentials (never printed), pool, timeouts, reconnect policy,
//! key prefix, store limits and TLS.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use spool_domain::limits::StoreLimits;
use spool_domain::names::KeyPrefix;
use spool_ports::PortError;

/// A secret string (a password). `Debug` and `Display` print `***`, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Reads the secret from the environment variable `var`; `None` when it is unset.
    ///
    /// # Errors
    /// `Configuration` when the variable is set but not valid Unicode (the value is not shown).
    pub fn from_env(var: &str) -> Result<Option<Self>, PortError> {
        match std::env::var(var) {
            Ok(v) => Ok(Some(Self(v))),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(PortError::Configuration {
                message: format!("environment variable {var} is not valid UTF-8"),
                source: None,
            }),
        }
    }

    /// Reads the secret from a file (e.g. a mounted secret); one trailing newline is dropped.
    ///
    /// # Errors
    /// `Configuration` when the file cannot be read (the path is named, the content never).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PortError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| PortError::Configuration {
            message: format!("cannot read the password file {}", path.display()),
            source: Some(Box::new(e)),
        })?;
        let trimmed = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        Ok(Self(trimmed.to_owned()))
    }

    /// The secret itself; only for handing it to the client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How fred reconnects after a connection drops: exponential backoff with jitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectSettings {
    /// First delay.
    pub min_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
    /// Attempts before giving up; `0` retries forever (the default).
    pub max_attempts: u32,
}

impl Default for ReconnectSettings {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            max_attempts: 0,
        }
    }
}

/// Everything the Redis adapter needs to connect.
///
/// `Debug` never prints the password, neither the [`Secret`] nor one embedded in the URL.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` or `rediss://host:port[/db]` (TLS). Credentials in the URL work
    /// but [`RedisConfig::username`] / [`RedisConfig::password`] take precedence.
    pub url: String,
    /// ACL username.
    pub username: Option<String>,
    /// Password (from configuration, [`Secret::from_env`] or [`Secret::from_file`]).
    pub password: Option<Secret>,
    /// Connections in the command pool (at least 1). One more connection per adapter carries
    /// pub/sub wake-ups.
    pub pool_size: usize,
    /// Timeout of a TCP (and TLS) connect.
    pub connect_timeout: Duration,
    /// Timeout of every command; past it the call fails as `Unavailable`.
    pub command_timeout: Duration,
    /// Reconnect policy.
    pub reconnect: ReconnectSettings,
    /// First component of every key.
    pub prefix: KeyPrefix,
    /// Sizes and retention the stores enforce.
    pub limits: StoreLimits,
    /// PEM file of the CA that signed the server certificate (`rediss://` only); the system
    /// roots are used when `None`.
    pub tls_ca_file: Option<PathBuf>,
}

impl RedisConfig {
    /// Defaults for `url`: pool of 4, 5 s connect timeout, 2 s command timeout, prefix `spool`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
            reconnect: ReconnectSettings::default(),
            prefix: KeyPrefix::default(),
            limits: StoreLimits::default(),
            tls_ca_file: None,
        }
    }

    /// Sets the ACL username and password.
    pub fn credentials(mut self, username: Option<String>, password: Option<Secret>) -> Self {
        self.username = username;
        self.password = password;
        self
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: KeyPrefix) -> Self {
        self.prefix = prefix;
        self
    }

    /// Sets the store limits.
    pub fn limits(mut self, limits: StoreLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the CA file for `rediss://`.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// The URL with any password replaced by `***`, for logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let redacted = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{}{}@{}", &url[..scheme_end + 3], redacted, &rest[at + 1..])
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
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("reconnect", &self.reconnect)
            .field("prefix", &self.prefix)
            .field("limits", &self.limits)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let cfg = RedisConfig::new("rediss://app:url-hunter2@localhost:6380/0")
            .credentials(Some("app".into()), Some(Secret::new("cfg-hunter2")));
        let printed = format!("{cfg:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("app:***@localhost:6380/0"), "{printed}");
        assert!(printed.contains("Secret(***)"), "{printed}");
        assert_eq!(format!("{}", Secret::new("x")), "***");
    }

    #[test]
    fn redaction_leaves_plain_urls_alone() {
        assert_eq!(redact_url("redis://h:1/2"), "redis://h:1/2");
        assert_eq!(redact_url("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://pw@h"), "redis://***@h");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn secrets_come_from_files_and_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").expect("write");
        assert_eq!(Secret::from_file(&path).expect("read").expose(), "s3cret");
        let missing = Secret::from_file(dir.path().join("nope")).expect_err("missing");
        assert_eq!(missing.code(), "configuration");
        assert!(Secret::from_env("SPOOL_TEST_SURELY_UNSET_VAR_9137")
            .expect("unset is fine")
            .is_none());
    }
}
