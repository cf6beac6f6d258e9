//! The key layout. Every key is `<prefix>:{<tag>}:...`, built only from validated components
//! (none can contain `{`, `}` or a glob character), so the hash tag — and with it the Redis
//! Cluster slot — is exactly the one chosen here:
//!
//! | unit | tag | keys |
//! |---|---|---|
//! | cache scope of a project | `{c:<project>}` | `k:<key>` values, `idx` zset of keys by expiry ms |
//! | all rate limits | `{rl}` | `<policy>:<limit>:<window_ms>:<algo>:<subject>` |
//! | one queue | `{q:<queue>}` | `ready`, `waiting`, `scheduled`, `running`, `succeeded`, `dead`, `cancelled` zsets, `seq`, `next`, `t:<id>` task hashes, `u:<unique key>`, channel `wake` |
//! | one progress operation | `{p:<id>}` | `op` snapshot, `ev` stream, channel `wake` |
//! | queue registry | none (the whole key is hashed) | `<prefix>:queues` set |
//!
//! [`slot`] computes a key's Redis Cluster hash slot; every script call checks with it that
//! its keys share one slot before anything is sent.

use spool_domain::limit::{Algorithm, LimitCheck};
use spool_domain::names::{KeyPrefix, OperationId, ProjectId, QueueName, ScopedKey};

/// The Redis Cluster hash slot of `key`: CRC16/XMODEM of the first non-empty `{...}` hash
/// tag (or of the whole key when there is none), modulo 16384.
pub(crate) fn slot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) % 16384
}

/// The part of `key` its slot is computed from: the first non-empty `{...}` hash tag, or the
/// whole key. Keys with equal hashed parts share a slot (no CRC needed to tell).
pub(crate) fn hashed_part(key: &[u8]) -> &[u8] {
    tag_range(key).map_or(key, |r| &key[r])
}

/// `parts` joined in one allocation of the exact size: no formatting machinery, for key names
/// built on every call of a hot path.
pub(crate) fn concat<'p>(parts: impl Iterator<Item = &'p &'p str> + Clone) -> String {
    let mut k = String::with_capacity(parts.clone().map(|p| p.len()).sum());
    for p in parts {
        k.push_str(p);
    }
    k
}

/// Where the first non-empty `{...}` hash tag's contents are in `key`, if it has one.
pub(crate) fn tag_range(key: &[u8]) -> Option<std::ops::Range<usize>> {
    let open = key.iter().position(|&b| b == b'{')?;
    match key[open + 1..].iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => Some(open + 1..open + 1 + len),
        _ => None,
    }
}

/// CRC16/XMODEM (polynomial 0x1021, initial 0), as Redis Cluster uses it.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Builds keys under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &KeyPrefix) -> Self {
        Self {
            prefix: prefix.as_str().to_owned(),
        }
    }

    /// The prefix itself.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    // ---- cache ----

    /// `<prefix>:{c:<project>}:` — everything of one cache scope starts with this.
    pub(crate) fn cache_scope(&self, project: &ProjectId) -> String {
        self.cache_key_with(project, &[])
    }

    /// The key holding one cached value: built in one allocation, no formatting machinery
    /// (it is on the path of every cache read).
    pub(crate) fn cache_value(&self, key: &ScopedKey) -> String {
        self.cache_key_with(&key.project, &["k:", key.key.as_str()])
    }

    /// `<prefix>:{c:<project>}:` followed by `tail`.
    fn cache_key_with(&self, project: &ProjectId, tail: &[&str]) -> String {
        let head = [self.prefix.as_str(), ":{c:", project.as_str(), "}:"];
        concat(head.iter().chain(tail))
    }

    /// The per-scope index of live keys.
    pub(crate) fn cache_index(&self, project: &ProjectId) -> String {
        format!("{}idx", self.cache_scope(project))
    }

    // ---- limiter ----

    /// One counter or log key.
    pub(crate) fn limit(&self, check: &LimitCheck) -> String {
        let algo = match check.policy.algorithm() {
            Algorithm::SlidingWindow => "sw",
            Algorithm::SlidingLog => "log",
        };
        format!(
            "{}:{{rl}}:{}:{}:{}:{}:{}",
            self.prefix,
            check.policy.name(),
            check.policy.limit(),
            check.policy.window_ms(),
            algo,
            check.subject.key_component()
        )
    }

    // ---- queue ----

    /// `<prefix>:{q:<queue>}:` — every key of one queue starts with this.
    pub(crate) fn queue_base(&self, queue: &QueueName) -> String {
        format!("{}:{{q:{}}}:", self.prefix, queue)
    }

    /// The pub/sub channel an enqueue publishes to.
    pub(crate) fn queue_wake(&self, queue: &QueueName) -> String {
        format!("{}wake", self.queue_base(queue))
    }

    /// The set of every queue that ever received a task.
    pub(crate) fn queue_registry(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    // ---- progress ----

    /// `<prefix>:{p:<id>}:`.
    pub(crate) fn op_base(&self, id: &OperationId) -> String {
        format!("{}:{{p:{}}}:", self.prefix, id)
    }

    /// The snapshot key.
    pub(crate) fn op_snapshot(&self, id: &OperationId) -> String {
        format!("{}op", self.op_base(id))
    }

    /// The event stream.
    pub(crate) fn op_events(&self, id: &OperationId) -> String {
        format!("{}ev", self.op_base(id))
    }

    /// The channel every update publishes to.
    pub(crate) fn op_wake(&self, id: &OperationId) -> String {
        format!("{}wake", self.op_base(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_domain::limit::Policy;
    use spool_domain::names::{CacheKey, PolicyName, Subject};
    use std::time::Duration;

    fn keys() -> Keys {
        Keys::new(&KeyPrefix::parse("t1").expect("prefix"))
    }

    #[test]
    fn slots_match_redis_reference_values() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"somekey"), 11058);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_ne!(
            slot(b"foo{}{bar}"),
            slot(b"bar"),
            "an empty first tag hashes the whole key"
        );
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
    }

    #[test]
    fn every_unit_shares_one_slot() {
        let k = keys();
        let p = ProjectId::parse("acme").expect("p");
        let sk = ScopedKey::new(p.clone(), CacheKey::parse("user:1").expect("k"));
        assert_eq!(
            slot(k.cache_value(&sk).as_bytes()),
            slot(k.cache_index(&p).as_bytes())
        );
        let q = QueueName::parse("emb").expect("q");
        assert_eq!(
            slot(format!("{}t:01ARZ3NDEKTSV4RRFFQ69G5FAV", k.queue_base(&q)).as_bytes()),
            slot(k.queue_wake(&q).as_bytes())
        );
        let op = OperationId::parse("op1").expect("op");
        assert_eq!(
            slot(k.op_snapshot(&op).as_bytes()),
            slot(k.op_wake(&op).as_bytes())
        );
    }

    #[test]
    fn layout_is_stable() {
        let k = keys();
        let p = ProjectId::parse("acme").expect("p");
        let sk = ScopedKey::new(p.clone(), CacheKey::parse("user:1").expect("k"));
        assert_eq!(k.cache_value(&sk), "t1:{c:acme}:k:user:1");
        assert_eq!(k.cache_index(&p), "t1:{c:acme}:idx");
        let q = QueueName::parse("emb").expect("q");
        assert_eq!(k.queue_base(&q), "t1:{q:emb}:");
        assert_eq!(k.queue_wake(&q), "t1:{q:emb}:wake");
        assert_eq!(k.queue_registry(), "t1:queues");
        let op = OperationId::parse("op1").expect("op");
        assert_eq!(k.op_snapshot(&op), "t1:{p:op1}:op");
        assert_eq!(k.op_events(&op), "t1:{p:op1}:ev");
        let policy = Policy::new(
            PolicyName::parse("per-sec").expect("n"),
            10,
            Duration::from_secs(1),
            Algorithm::SlidingWindow,
        )
        .expect("policy");
        let check = LimitCheck::new(policy, Subject::Ip("::1".parse().expect("ip")));
        assert_eq!(k.limit(&check), "t1:{rl}:per-sec:10:1000:sw:ip:::1");
    }
}
