//! Placeholder: replaced by the cache implementation.

use std::sync::Arc;

use spool_domain::limits::StoreLimits;

use crate::Clock;

/// In-memory cache store.
pub struct MemoryCache {
    _clock: Arc<dyn Clock>,
}

impl MemoryCache {
    /// Builds the store.
    pub fn new(_limits: &StoreLimits, clock: Arc<dyn Clock>) -> Self {
        Self { _clock: clock }
    }
}

#[async_trait::async_trait]
impl spool_ports::CacheStore for MemoryCache {
    async fn get(
        &self,
        _: &spool_domain::names::ScopedKey,
    ) -> Result<Option<bytes::Bytes>, spool_ports::PortError> {
        Err(spool_ports::PortError::internal("todo"))
    }
    async fn get_many(
        &self,
        _: &[spool_domain::names::ScopedKey],
    ) -> Result<Vec<Option<bytes::Bytes>>, spool_ports::PortError> {
        Err(spool_ports::PortError::internal("todo"))
    }
    async fn set(
        &self,
        _: &spool_domain::names::ScopedKey,
        _: bytes::Bytes,
        _: spool_ports::Ttl,
    ) -> Result<(), spool_ports::PortError> {
        Err(spool_ports::PortError::internal("todo"))
    }
    async fn set_many(
        &self,
        _: Vec<spool_ports::CacheEntry>,
    ) -> Result<(), spool_ports::PortError> {
        Err(spool_ports::PortError::internal("todo"))
    }
    async fn delete(
        &self,
        _: &spool_domain::names::ScopedKey,
    ) -> Result<bool, spool_ports::PortError> {
        Err(spool_ports::PortError::internal("todo"))
    }
    async fn invalidate_project(
        &self,
        _: &spool_domain::names::ProjectId,
    ) -> Result<(), spool_ports::PortError> {
        Err(spool_ports::PortError::internal("todo"))
    }
}
