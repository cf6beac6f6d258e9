//! [`EncryptedCache`]: a [`CacheStore`] that encrypts the values of sensitive cache names.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use spool_domain::names::{ProjectId, ScopedKey};
use spool_ports::{CacheEntry, CacheStore, PortError, Ttl};

use super::{Context, CryptoError, Keyring};
use crate::services::CacheName;

/// Encrypts the values of keys `<name>:...` whose cache name is sensitive before they reach
/// the wrapped store, and decrypts them on the way back; other keys pass through untouched.
///
/// Each value is bound to its project and key: a ciphertext copied under another key fails
/// to open. A value of a sensitive name that does not open (tampered, truncated, moved,
/// plaintext written before encryption was enabled, or sealed with a key no longer listed) is
/// a [`PortError::Internal`] naming the key and the reason, never returned as bytes.
pub struct EncryptedCache {
    inner: Arc<dyn CacheStore>,
    keyring: Arc<Keyring>,
    names: BTreeSet<CacheName>,
}

impl std::fmt::Debug for EncryptedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedCache")
            .field("keyring", &self.keyring)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// The context a cache value is bound to.
pub fn cache_context(key: &ScopedKey) -> Context {
    Context::new(["cache", key.project.as_str(), key.key.as_str()])
}

pub(super) fn open_error(what: String, e: CryptoError) -> PortError {
    PortError::Internal {
        message: format!("{what} cannot be decrypted: {e}"),
        source: Some(Box::new(e)),
    }
}

pub(super) fn seal_error(what: String, e: CryptoError) -> PortError {
    PortError::Internal {
        message: format!("{what} cannot be encrypted: {e}"),
        source: Some(Box::new(e)),
    }
}

impl EncryptedCache {
    /// Wraps `inner`, encrypting the values of `names` with `keyring`.
    pub fn new(
        inner: Arc<dyn CacheStore>,
        keyring: Arc<Keyring>,
        names: BTreeSet<CacheName>,
    ) -> Self {
        Self {
            inner,
            keyring,
            names,
        }
    }

    /// Whether `key` belongs to a sensitive cache name.
    pub fn is_sensitive(&self, key: &ScopedKey) -> bool {
        key.key
            .as_str()
            .split_once(':')
            .and_then(|(name, _)| CacheName::parse(name).ok())
            .is_some_and(|n| self.names.contains(&n))
    }

    fn seal(&self, key: &ScopedKey, value: Bytes) -> Result<Bytes, PortError> {
        if !self.is_sensitive(key) {
            return Ok(value);
        }
        self.keyring
            .seal(&value, &cache_context(key))
            .map(Bytes::from)
            .map_err(|e| seal_error(format!("cache value of {}", key.key), e))
    }

    fn open(&self, key: &ScopedKey, value: Option<Bytes>) -> Result<Option<Bytes>, PortError> {
        match value {
            Some(v) if self.is_sensitive(key) => self
                .keyring
                .open(&v, &cache_context(key))
                .map(|p| Some(Bytes::from(p)))
                .map_err(|e| {
                    open_error(
                        format!("cache value of {} in project {}", key.key, key.project),
                        e,
                    )
                }),
            other => Ok(other),
        }
    }
}

#[async_trait]
impl CacheStore for EncryptedCache {
    async fn get(&self, key: &ScopedKey) -> Result<Option<Bytes>, PortError> {
        let v = self.inner.get(key).await?;
        self.open(key, v)
    }

    async fn get_many(&self, keys: &[ScopedKey]) -> Result<Vec<Option<Bytes>>, PortError> {
        let values = self.inner.get_many(keys).await?;
        keys.iter()
            .zip(values)
            .map(|(k, v)| self.open(k, v))
            .collect()
    }

    async fn set(&self, key: &ScopedKey, value: Bytes, ttl: Ttl) -> Result<(), PortError> {
        let sealed = self.seal(key, value)?;
        self.inner.set(key, sealed, ttl).await
    }

    async fn set_many(&self, entries: Vec<CacheEntry>) -> Result<(), PortError> {
        let mut sealed = Vec::with_capacity(entries.len());
        for e in entries {
            sealed.push(CacheEntry {
                value: self.seal(&e.key, e.value)?,
                key: e.key,
                ttl: e.ttl,
            });
        }
        self.inner.set_many(sealed).await
    }

    async fn delete(&self, key: &ScopedKey) -> Result<bool, PortError> {
        self.inner.delete(key).await
    }

    async fn invalidate_project(&self, project: &ProjectId) -> Result<(), PortError> {
        self.inner.invalidate_project(project).await
    }
}
