//! [`EncryptionSettings`]: which values are sensitive and the keyring, and how they wrap the
//! ports.

use std::collections::BTreeSet;
use std::sync::Arc;

use spool_domain::names::QueueName;

use super::{EncryptedCache, EncryptedQueue, Keyring};
use crate::services::CacheName;
use crate::wiring::Backends;

/// What is encrypted at rest, validated from `[encryption]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EncryptionSettings {
    /// The keys; `None` when `[encryption] keys` is empty.
    pub keyring: Option<Arc<Keyring>>,
    /// Cache names whose values are encrypted (keys `<name>:...`).
    pub caches: BTreeSet<CacheName>,
    /// Queues whose task payloads and results are encrypted.
    pub queues: BTreeSet<QueueName>,
}

impl EncryptionSettings {
    /// Whether anything is encrypted.
    pub fn is_active(&self) -> bool {
        self.keyring.is_some() && !(self.caches.is_empty() && self.queues.is_empty())
    }

    /// `backends` with the cache and queue ports wrapped in [`EncryptedCache`] and
    /// [`EncryptedQueue`] when anything is sensitive; unchanged otherwise. Wrap above any
    /// resilience layer, so ciphertext is what reaches Redis and the local fallback alike.
    pub fn wrap(&self, mut backends: Backends) -> Backends {
        let Some(keyring) = &self.keyring else {
            return backends;
        };
        if !self.caches.is_empty() {
            backends.cache = Arc::new(EncryptedCache::new(
                backends.cache,
                Arc::clone(keyring),
                self.caches.clone(),
            ));
        }
        if !self.queues.is_empty() {
            backends.queue = Arc::new(EncryptedQueue::new(
                backends.queue,
                Arc::clone(keyring),
                self.queues.clone(),
            ));
        }
        backends
    }
}
