//! The cache port.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use spool_domain::names::{ProjectId, ScopedKey};

use crate::PortError;

/// A validated time-to-live: `1 ms ..= StoreLimits::max_ttl`, checked by the adapter.
pub type Ttl = Duration;

/// One entry of [`CacheStore::set_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// Where to store it.
    pub key: ScopedKey,
    /// The bytes.
    pub value: Bytes,
    /// How long it lives.
    pub ttl: Ttl,
}

/// A byte cache scoped by project. Values are opaque bytes; typing is the service's job.
///
/// Adapters enforce [`spool_domain::limits::StoreLimits`]: `max_value_bytes`, `max_ttl`,
/// `max_batch`.
#[async_trait]
pub trait CacheStore: Send + Sync {
    /// Reads one value.
    ///
    /// MUST return `None` for a key never set, deleted, expired, or dropped by
    /// [`CacheStore::invalidate_project`]. MUST be one backend round trip.
    ///
    /// # Errors
    /// `Unavailable` when the backend cannot answer.
    async fn get(&self, key: &ScopedKey) -> Result<Option<Bytes>, PortError>;

    /// Reads several values; the result has one slot per key, in order.
    ///
    /// Keys may span projects. MUST be one round trip per project touched.
    ///
    /// # Errors
    /// `Invalid` when more than `max_batch` keys are given; `Unavailable` as for `get`.
    async fn get_many(&self, keys: &[ScopedKey]) -> Result<Vec<Option<Bytes>>, PortError>;

    /// Stores a value for `ttl`, replacing any previous value.
    ///
    /// # Errors
    /// `Invalid` when the value exceeds `max_value_bytes` (it MUST NOT be truncated) or the TTL
    /// is zero or above `max_ttl`; `Unavailable` as for `get`.
    async fn set(&self, key: &ScopedKey, value: Bytes, ttl: Ttl) -> Result<(), PortError>;

    /// Stores several values. Validation happens before anything is written: one invalid
    /// entry MUST leave every key untouched.
    ///
    /// # Errors
    /// `Invalid` as for `set` or when more than `max_batch` entries are given; `Unavailable`.
    async fn set_many(&self, entries: Vec<CacheEntry>) -> Result<(), PortError>;

    /// Removes a key; returns whether it existed.
    ///
    /// # Errors
    /// `Unavailable` as for `get`.
    async fn delete(&self, key: &ScopedKey) -> Result<bool, PortError>;

    /// Drops every key of `project`, in O(1) or O(keys in the scope) — never a keyspace scan.
    /// Keys of other projects MUST survive.
    ///
    /// # Errors
    /// `Unavailable` as for `get`.
    async fn invalidate_project(&self, project: &ProjectId) -> Result<(), PortError>;
}
