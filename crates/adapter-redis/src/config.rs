//! Connection settings: one server (URL) or a cluster (seed nodes), credentials (never
//! printed), pool, timeouts, reconnect policy, key prefix, store limits, TLS and replica
//! acknowledgements.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use spool_domain::limits::StoreLimits;
use spool_domain::names::KeyPrefix;
use spool_ports::PortError;

pub use spool_domain::secret::Secret;

/// Reads a secret (the password) from the environment variable `var`; `None` when it is
/// unset.
///
/// # Errors
/// `Configuration` when the variable is set but not valid Unicode (the value is not shown).
pub fn secret_from_env(var: &str) -> Result<Option<Secret>, PortError> {
    match std::env::var(var) {
        Ok(v) => Ok(Some(Secret::new(v))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(PortError::Configuration {
            message: format!("environment variable {var} is not valid UTF-8"),
            source: None,
        }),
    }
}

/// Reads a secret (the password) from a file, e.g. a mounted secret; one trailing newline is
/// dropped.
///
/// # Errors
/// `Configuration` when the file cannot be read (the path is named, the content never).
pub fn secret_from_file(path: impl AsRef<Path>) -> Result<Secret, PortError> {
    let path = path.as_ref();
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        PortError::Configuration {
            message: format!("cannot read the password file {}", path.display()),
            source: Some(Box::new(e)),
        }
    })?);
    let trimmed = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(Secret::new(trimmed))
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

/// One Redis Cluster node address, `host:port` (`[v6]:port` for IPv6 literals).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterNode {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ClusterNode {
    /// A node from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// Parses `host:port` or `[ipv6]:port`.
    ///
    /// # Errors
    /// `Configuration` naming what is wrong (no port, a port outside 1..=65535, an empty host).
    pub fn parse(text: &str) -> Result<Self, PortError> {
        let text = text.trim();
        let bad = |why: String| config_error(format!("redis cluster node {text:?} {why}"));
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed [ in its IPv6 address".to_owned()))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| bad("has no port; expected [ipv6]:port".to_owned()))?;
            (host, port)
        } else {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or_else(|| bad("has no port; expected host:port".to_owned()))?;
            if host.contains(':') {
                return Err(bad(
                    "looks like an IPv6 address without brackets; write [ipv6]:port".to_owned(),
                ));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(bad("has an empty host".to_owned()));
        }
        if host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
            return Err(bad("has a malformed host".to_owned()));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("has port {port:?}; expected a number in 1..=65535")))?;
        Ok(Self::new(host, port))
    }
}

impl fmt::Display for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Whether connections to cluster nodes are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP.
    Plain,
    /// TLS (rustls), verified against [`RedisConfig::tls_ca_file`] or the system roots.
    Tls,
}

/// Where Redis runs.
#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server, or a proxy that looks like one:
    /// `redis://[user:password@]host:port[/db]` or `rediss://...` (TLS). Credentials in the URL
    /// work but [`RedisConfig::username`] / [`RedisConfig::password`] take precedence.
    Standalone {
        /// The URL.
        url: String,
    },
    /// A Redis Cluster. Only one reachable seed is needed; the client discovers every node
    /// with `CLUSTER SLOTS`, follows `MOVED`/`ASK`, and re-reads the slot map after a failover.
    /// Give several seeds so a restart of the client does not depend on one node.
    Cluster {
        /// Seed nodes (deduplicated, in the order given).
        seeds: Vec<ClusterNode>,
        /// Plain TCP or TLS for every node.
        transport: Transport,
    },
}

impl Topology {
    /// Parses a comma-separated seed list, the format of `SPOOL_REDIS_CLUSTER`:
    /// `host:port,host:port`, each entry optionally written as `redis://host:port` or
    /// `rediss://host:port` (TLS; then every entry must be `rediss://`).
    ///
    /// # Errors
    /// `Configuration` naming the entry (1-based) and what is wrong: an empty list or entry,
    /// a missing or bad port, mixed schemes, credentials in an entry (they would be logged;
    /// use [`RedisConfig::credentials`]) or a database other than 0 (a cluster has only 0).
    pub fn parse_cluster(list: &str) -> Result<Self, PortError> {
        if list.trim().is_empty() {
            return Err(config_error(
                "the redis cluster seed list is empty; expected host:port[,host:port...]"
                    .to_owned(),
            ));
        }
        let mut seeds: Vec<ClusterNode> = Vec::new();
        let mut transport: Option<Transport> = None;
        for (i, raw) in list.split(',').enumerate() {
            let n = i + 1;
            let entry = raw.trim();
            if entry.is_empty() {
                return Err(config_error(format!(
                    "redis cluster seed {n} is empty (stray comma?); expected host:port[,host:port...]"
                )));
            }
            let (this_transport, rest) = if let Some(rest) = entry.strip_prefix("rediss://") {
                (Transport::Tls, rest)
            } else if let Some(rest) = entry.strip_prefix("redis://") {
                (Transport::Plain, rest)
            } else if entry.contains("://") {
                return Err(config_error(format!(
                    "redis cluster seed {n} has an unknown scheme; use host:port, redis:// or rediss://"
                )));
            } else {
                (Transport::Plain, entry)
            };
            match transport {
                None => transport = Some(this_transport),
                Some(t) if t != this_transport => {
                    return Err(config_error(format!(
                        "redis cluster seed {n} mixes plain and TLS seeds; write every seed as rediss://host:port for TLS"
                    )));
                }
                Some(_) => {}
            }
            if rest.contains('@') {
                // Never echo the entry: it holds a password.
                return Err(config_error(format!(
                    "redis cluster seed {n} carries credentials; give them with the username and password settings instead"
                )));
            }
            let (addr, path) = match rest.find('/') {
                Some(at) => (&rest[..at], &rest[at..]),
                None => (rest, ""),
            };
            if !matches!(path, "" | "/" | "/0") {
                return Err(config_error(format!(
                    "redis cluster seed {n} ({entry}) names database {}; a cluster has only database 0",
                    path.trim_start_matches('/')
                )));
            }
            let node = ClusterNode::parse(addr).map_err(|e| match e {
                PortError::Configuration { message, source } => PortError::Configuration {
                    message: format!("redis cluster seed {n}: {message}"),
                    source,
                },
                other => other,
            })?;
            if !seeds.contains(&node) {
                seeds.push(node);
            }
        }
        Ok(Self::Cluster {
            seeds,
            transport: transport.unwrap_or(Transport::Plain),
        })
    }

    /// A cluster topology from nodes already parsed.
    pub fn cluster(seeds: Vec<ClusterNode>, transport: Transport) -> Self {
        Self::Cluster { seeds, transport }
    }

    /// Where this points, for logs and errors: the URL with any password replaced by `***`,
    /// or `cluster redis://h1:p1,h2:p2`.
    pub fn redacted(&self) -> String {
        match self {
            Self::Standalone { url } => redact_url(url),
            Self::Cluster { seeds, transport } => {
                let scheme = match transport {
                    Transport::Plain => "redis",
                    Transport::Tls => "rediss",
                };
                let list: Vec<String> = seeds.iter().map(ToString::to_string).collect();
                format!("cluster {scheme}://{}", list.join(","))
            }
        }
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// What a queue write reports when fewer replicas than asked confirmed it in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckShortfall {
    /// Fail the call as `Unavailable`: an `Ok` always means "on the primary and on the asked
    /// number of replicas". The write itself stays applied on the primary.
    Fail,
    /// Log a warning and report success: `WAIT` then only narrows the loss window.
    Warn,
}

/// Durability for queue writes: after each acknowledged queue write (`enqueue`, `complete`,
/// `fail`, `release`, `cancel`, `requeue`) the adapter sends `WAIT <replicas> <timeout>` on the same
/// connection, so the call returns only once that many replicas have the write (or the
/// timeout passed; see [`AckShortfall`]). See the crate docs, section *Redis Cluster*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaAcks {
    /// Replicas that must confirm each write (at least 1).
    pub replicas: u32,
    /// Longest wait for them (at least 1 ms, less than the command timeout).
    pub timeout: Duration,
    /// What a shortfall does.
    pub shortfall: AckShortfall,
}

impl ReplicaAcks {
    /// `replicas` confirmations within `timeout`; a shortfall fails the call.
    pub fn new(replicas: u32, timeout: Duration) -> Self {
        Self {
            replicas,
            timeout,
            shortfall: AckShortfall::Fail,
        }
    }

    /// Sets what a shortfall does.
    pub fn on_shortfall(mut self, shortfall: AckShortfall) -> Self {
        self.shortfall = shortfall;
        self
    }

    /// Checks the bounds against the command timeout.
    pub(crate) fn validate(&self, command_timeout: Duration) -> Result<(), PortError> {
        if self.replicas == 0 {
            return Err(config_error(
                "replica_acks.replicas must be at least 1 (leave replica_acks unset for none)"
                    .to_owned(),
            ));
        }
        if self.timeout < Duration::from_millis(1) || self.timeout >= command_timeout {
            return Err(config_error(format!(
                "replica_acks.timeout {:?} must be at least 1 ms and below the command timeout {command_timeout:?}",
                self.timeout
            )));
        }
        Ok(())
    }
}

fn config_error(message: String) -> PortError {
    PortError::Configuration {
        message,
        source: None,
    }
}

/// Everything the Redis adapter needs to connect.
///
/// `Debug` never prints the password, neither the [`Secret`] nor one embedded in the URL.
#[derive(Clone)]
pub struct RedisConfig {
    /// One server or a cluster.
    pub server: Topology,
    /// ACL username.
    pub username: Option<String>,
    /// Password (from configuration, [`secret_from_env`] or [`secret_from_file`]).
    pub password: Option<Secret>,
    /// Clients in the command pool (at least 1); on a cluster each client holds one connection
    /// per primary. One more client per adapter carries pub/sub wake-ups.
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
    /// PEM file of the CA that signed the server certificates (TLS only); the system roots
    /// are used when `None`.
    pub tls_ca_file: Option<PathBuf>,
    /// `WAIT` for replicas after queue writes; `None` (the default) does not wait.
    pub replica_acks: Option<ReplicaAcks>,
}

impl RedisConfig {
    /// One server at `url`: pool of 4, 5 s connect timeout, 2 s command timeout, prefix
    /// `spool`.
    pub fn new(url: impl Into<String>) -> Self {
        Self::from_topology(Topology::Standalone { url: url.into() })
    }

    /// A Redis Cluster from a comma-separated seed list (`host:port,host:port`, see
    /// [`Topology::parse_cluster`]), with the defaults of [`RedisConfig::new`].
    ///
    /// ```
    /// use spool_adapter_redis::{RedisConfig, Topology};
    ///
    /// let config = RedisConfig::cluster("10.0.0.1:7000, 10.0.0.2:7000").unwrap();
    /// assert!(matches!(config.server, Topology::Cluster { ref seeds, .. } if seeds.len() == 2));
    /// assert!(RedisConfig::cluster("10.0.0.1").is_err()); // no port
    /// ```
    ///
    /// # Errors
    /// `Configuration` naming the bad entry.
    pub fn cluster(seeds: &str) -> Result<Self, PortError> {
        Ok(Self::from_topology(Topology::parse_cluster(seeds)?))
    }

    /// The defaults of [`RedisConfig::new`] for any topology.
    pub fn from_topology(server: Topology) -> Self {
        Self {
            server,
            username: None,
            password: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
            reconnect: ReconnectSettings::default(),
            prefix: KeyPrefix::default(),
            limits: StoreLimits::default(),
            tls_ca_file: None,
            replica_acks: None,
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

    /// Sets the CA file for TLS.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Waits for replicas after queue writes.
    pub fn replica_acks(mut self, acks: ReplicaAcks) -> Self {
        self.replica_acks = Some(acks);
        self
    }

    /// The URL with any password replaced by `***` (or the cluster seed list), for logs.
    pub fn redacted_url(&self) -> String {
        self.server.redacted()
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`, for logs.
///
/// ```
/// assert_eq!(
///     spool_adapter_redis::redact_url("redis://app:s3cret@h:6379/0"),
///     "redis://app:***@h:6379/0"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
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
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("reconnect", &self.reconnect)
            .field("prefix", &self.prefix)
            .field("limits", &self.limits)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("replica_acks", &self.replica_acks)
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
        assert!(printed.contains("Secret([redacted])"), "{printed}");
        assert_eq!(format!("{}", Secret::new("x")), "[redacted]");
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
        assert_eq!(secret_from_file(&path).expect("read").expose(), "s3cret");
        let missing = secret_from_file(dir.path().join("nope")).expect_err("missing");
        assert_eq!(missing.code(), "configuration");
        assert!(secret_from_env("SPOOL_TEST_SURELY_UNSET_VAR_9137")
            .expect("unset is fine")
            .is_none());
    }

    fn cluster_err(list: &str) -> String {
        match RedisConfig::cluster(list) {
            Err(PortError::Configuration { message, .. }) => message,
            other => panic!("{list:?} should be a configuration error: {other:?}"),
        }
    }

    #[test]
    fn cluster_seed_lists_parse() {
        let cfg =
            RedisConfig::cluster(" 10.0.0.1:7000,redis://node-b:7001/ , [::1]:7002,10.0.0.1:7000")
                .expect("valid");
        let Topology::Cluster { seeds, transport } = &cfg.server else {
            panic!("not a cluster: {:?}", cfg.server);
        };
        assert_eq!(*transport, Transport::Plain);
        assert_eq!(
            seeds,
            &vec![
                ClusterNode::new("10.0.0.1", 7000),
                ClusterNode::new("node-b", 7001),
                ClusterNode::new("::1", 7002),
            ],
            "deduplicated, in order"
        );
        assert_eq!(seeds[2].to_string(), "[::1]:7002");
        assert_eq!(
            cfg.redacted_url(),
            "cluster redis://10.0.0.1:7000,node-b:7001,[::1]:7002"
        );
        let tls = Topology::parse_cluster("rediss://a:1,rediss://b:2/0").expect("tls");
        assert!(matches!(
            tls,
            Topology::Cluster {
                transport: Transport::Tls,
                ..
            }
        ));
        assert_eq!(format!("{tls:?}"), "cluster rediss://a:1,b:2");
    }

    #[test]
    fn bad_cluster_seed_lists_say_what_is_wrong() {
        assert!(cluster_err("").contains("empty"));
        assert!(cluster_err("  ").contains("empty"));
        assert!(cluster_err("a:1,,b:2").contains("seed 2 is empty"));
        assert!(cluster_err("a:1,").contains("seed 2 is empty"));
        let m = cluster_err("a:1,b");
        assert!(m.contains("seed 2") && m.contains("no port"), "{m}");
        let m = cluster_err("a:70000");
        assert!(m.contains("1..=65535"), "{m}");
        assert!(cluster_err("a:0").contains("1..=65535"));
        assert!(cluster_err("a:x").contains("1..=65535"));
        assert!(cluster_err(":7000").contains("empty host"));
        assert!(cluster_err("::1:7000").contains("[ipv6]:port"));
        assert!(cluster_err("[::1:7000").contains("unclosed"));
        assert!(cluster_err("rediss://a:1,redis://b:2").contains("mixes plain and TLS"));
        assert!(cluster_err("a:1,rediss://b:2").contains("mixes plain and TLS"));
        assert!(cluster_err("http://a:1").contains("unknown scheme"));
        assert!(cluster_err("redis://a:1/3").contains("only database 0"));
        let m = cluster_err("redis://app:hunter2@a:1");
        assert!(m.contains("credentials"), "{m}");
        assert!(!m.contains("hunter2"), "{m}");
    }

    #[test]
    fn replica_acks_bounds() {
        let two = Duration::from_secs(2);
        assert!(ReplicaAcks::new(1, Duration::from_millis(100))
            .validate(two)
            .is_ok());
        assert!(ReplicaAcks::new(0, Duration::from_millis(100))
            .validate(two)
            .is_err());
        assert!(ReplicaAcks::new(1, Duration::ZERO).validate(two).is_err());
        assert!(ReplicaAcks::new(1, two).validate(two).is_err());
        let warn = ReplicaAcks::new(2, Duration::from_millis(5)).on_shortfall(AckShortfall::Warn);
        assert_eq!(warn.shortfall, AckShortfall::Warn);
    }
}
