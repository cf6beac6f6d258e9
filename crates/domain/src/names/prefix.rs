//! The key prefix every Redis key starts with.

use super::ident::identifier;

identifier!(
    /// The first component of every key (default `spool`): lowercase letters, digits, `_`, `-`,
    /// at most 32 bytes. Lets several deployments share one Redis and lets an ACL user be
    /// limited to `~<prefix>:*`.
    KeyPrefix, component = "key prefix", max = 32, extra = "_-", lowercase = true
);

impl Default for KeyPrefix {
    fn default() -> Self {
        Self("spool".to_owned())
    }
}
