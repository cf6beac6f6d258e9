//! Health of the memory backend: always up.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use spool_domain::limits::StoreLimits;
use spool_ports::{BackendHealth, Health, PortError};

use crate::Clock;

/// The memory backend's health: it is up whenever the process is.
pub struct MemoryHealth {
    _clock: Arc<dyn Clock>,
}

impl MemoryHealth {
    /// Builds the check.
    pub fn new(_limits: &StoreLimits, clock: Arc<dyn Clock>) -> Self {
        Self { _clock: clock }
    }
}

#[async_trait]
impl Health for MemoryHealth {
    async fn check(&self) -> Result<BackendHealth, PortError> {
        Ok(BackendHealth {
            backend: "memory",
            latency: Duration::ZERO,
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            used_memory: None,
        })
    }
}
