//! `[http]`: where the HTTP face listens and who may use it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use spool_domain::names::ProjectId;

use super::serde_util::{duration, lenient_string};
use super::{ConfigError, Validate};

/// `[http]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address (default `127.0.0.1:8080`; env `SPOOL_HTTP_ADDR`).
    pub addr: SocketAddr,
    /// Largest accepted request body, in bytes (default 2 MiB).
    pub body_limit_bytes: usize,
    /// Longest a request may take before it is answered with a timeout (default `30s`).
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed: addresses (`10.0.0.7`) or networks
    /// (`10.0.0.0/8`). Everyone else's is ignored.
    pub trusted_proxies: Vec<IpNetwork>,
    /// Bearer API keys. With none configured the server only binds to loopback.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Most SSE streams open at once; more get 503 (default 1,000).
    pub max_sse_streams: usize,
    /// Most SSE streams one client IP may hold open; more get 429 (default 32, at most
    /// `max_sse_streams`).
    pub max_sse_streams_per_ip: usize,
    /// Interval of SSE keep-alive comments (default `15s`).
    #[serde(with = "duration")]
    pub sse_keep_alive: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 2 << 20,
            request_timeout: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            api_keys: Vec::new(),
            max_sse_streams: 1000,
            max_sse_streams_per_ip: 32,
            sse_keep_alive: Duration::from_secs(15),
        }
    }
}

impl Validate for HttpConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.body_limit_bytes == 0 {
            return Err(ConfigError::invalid(
                format!("{at}.body_limit_bytes"),
                "must be at least 1",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::invalid(
                format!("{at}.request_timeout"),
                "must be longer than zero",
            ));
        }
        if self.max_sse_streams == 0 {
            return Err(ConfigError::invalid(
                format!("{at}.max_sse_streams"),
                "must be at least 1",
            ));
        }
        if !(1..=self.max_sse_streams).contains(&self.max_sse_streams_per_ip) {
            return Err(ConfigError::invalid(
                format!("{at}.max_sse_streams_per_ip"),
                format!(
                    "{} is outside 1..=max_sse_streams ({})",
                    self.max_sse_streams_per_ip, self.max_sse_streams
                ),
            ));
        }
        if self.sse_keep_alive < Duration::from_millis(10) {
            return Err(ConfigError::invalid(
                format!("{at}.sse_keep_alive"),
                "must be at least 10ms",
            ));
        }
        for (i, key) in self.api_keys.iter().enumerate() {
            key.validate(&format!("{at}.api_keys[{i}]"))?;
            if self.api_keys[..i].iter().any(|k| k.id == key.id) {
                return Err(ConfigError::invalid(
                    format!("{at}.api_keys[{i}].id"),
                    format!("{:?} is used by another key", key.id),
                ));
            }
        }
        Ok(())
    }
}

/// One API key: the SHA-256 of the secret (never the secret itself) and the projects it may
/// use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs and metrics (`ci`, `team-a`): letters, digits, `_`, `-`, `.`.
    #[serde(deserialize_with = "lenient_string")]
    pub id: String,
    /// Lowercase or uppercase hex SHA-256 of the key (64 digits), e.g. from
    /// `printf %s "$KEY" | sha256sum`.
    #[serde(deserialize_with = "lenient_string")]
    pub sha256: String,
    /// The projects the key may use; any other project gets 403.
    #[serde(default)]
    pub projects: Vec<ProjectId>,
}

impl ApiKeyConfig {
    /// The 32 bytes of [`ApiKeyConfig::sha256`].
    ///
    /// # Errors
    /// A message when it is not 64 hex digits.
    pub fn digest(&self) -> Result<[u8; 32], String> {
        let s = self.sha256.trim();
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "must be 64 hex digits (a SHA-256), got {} characters",
                s.len()
            ));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = s.get(2 * i..2 * i + 2).unwrap_or("00");
            *byte = u8::from_str_radix(pair, 16).map_err(|e| e.to_string())?;
        }
        Ok(out)
    }
}

impl Validate for ApiKeyConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.id.is_empty()
            || self.id.len() > 64
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(ConfigError::invalid(
                format!("{at}.id"),
                "must be 1..=64 of A-Z, a-z, 0-9, _ - .",
            ));
        }
        self.digest()
            .map_err(|m| ConfigError::invalid(format!("{at}.sha256"), m))?;
        if self.projects.is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.projects"),
                "must name at least one project",
            ));
        }
        Ok(())
    }
}

/// An address or a network in CIDR form (`10.0.0.0/8`, `::1/128`, `192.168.1.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// The network of `addr` with the first `prefix` bits significant.
    ///
    /// # Errors
    /// When `prefix` is longer than the address (32 for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, String> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix /{prefix} is longer than {max} bits"));
        }
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNetwork {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .map_err(|_| format!("{s:?}: prefix {p:?} is not a number"))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Self::new(addr, prefix).map_err(|e| format!("{s:?}: {e}"))
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNetwork {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNetwork {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_caps_are_checked() {
        let ok = HttpConfig {
            max_sse_streams: 10,
            max_sse_streams_per_ip: 10,
            ..HttpConfig::default()
        };
        ok.validate("http").unwrap();
        for per_ip in [0, 11] {
            let bad = HttpConfig {
                max_sse_streams_per_ip: per_ip,
                ..ok.clone()
            };
            let e = bad.validate("http").unwrap_err().to_string();
            assert!(e.contains("http.max_sse_streams_per_ip"), "{e}");
        }
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNetwork = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one: IpNetwork = "192.168.1.7".parse().unwrap();
        assert!(one.contains("192.168.1.7".parse().unwrap()));
        assert!(!one.contains("192.168.1.8".parse().unwrap()));
        let all: IpNetwork = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpNetwork = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNetwork>().is_err());
        assert!("nope".parse::<IpNetwork>().is_err());
    }

    #[test]
    fn api_key_digest_is_checked() {
        let mut k = ApiKeyConfig {
            id: "ci".into(),
            sha256: "ab".repeat(32),
            projects: vec![ProjectId::parse("acme").unwrap()],
        };
        assert_eq!(k.digest().unwrap(), [0xab; 32]);
        assert!(k.validate("http.api_keys[0]").is_ok());
        k.sha256 = "xyz".into();
        let e = k.validate("http.api_keys[0]").unwrap_err().to_string();
        assert!(e.contains("http.api_keys[0].sha256"), "{e}");
    }
}
