//! The health port.

use std::time::Duration;

use async_trait::async_trait;

use crate::PortError;

/// What a backend reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// Round-trip latency of a trivial command.
    pub latency: Duration,
    /// Server version, when there is a server.
    pub version: Option<String>,
    /// Memory in use, in bytes, when known.
    pub used_memory: Option<u64>,
}

/// Liveness of a backend.
#[async_trait]
pub trait Health: Send + Sync {
    /// Pings the backend.
    ///
    /// # Errors
    /// `Unavailable` when it does not answer; `Configuration` when it refuses our credentials.
    async fn check(&self) -> Result<BackendHealth, PortError>;
}
