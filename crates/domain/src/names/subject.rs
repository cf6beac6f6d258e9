//! Who a rate limit applies to.

use std::fmt;
use std::net::IpAddr;

use super::ident::identifier;
use super::ProjectId;

identifier!(
    /// A user identifier for per-user limits: ASCII letters, digits and `_ . : @ -`, at most
    /// 128 bytes.
    UserId, component = "user id", max = 128, extra = "_.:@-", lowercase = false
);

/// The subject a rate-limit policy counts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// One user.
    User(UserId),
    /// One project.
    Project(ProjectId),
    /// One client IP address.
    Ip(IpAddr),
}

impl Subject {
    /// A stable key component: `u:<user>`, `p:<project>` or `ip:<address>`. IPv6 addresses
    /// contain `:` only, never a brace or glob character.
    pub fn key_component(&self) -> String {
        match self {
            Subject::User(u) => format!("u:{u}"),
            Subject::Project(p) => format!("p:{p}"),
            Subject::Ip(ip) => format!("ip:{ip}"),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key_component())
    }
}
