//! Placeholder: replaced by the limiter implementation.

use std::sync::Arc;

use spool_domain::limits::StoreLimits;

use crate::Clock;

/// In-memory limiter store.
pub struct MemoryRateLimiter {
    _clock: Arc<dyn Clock>,
}

impl MemoryRateLimiter {
    /// Builds the store.
    pub fn new(_limits: &StoreLimits, clock: Arc<dyn Clock>) -> Self {
        Self { _clock: clock }
    }
}

#[async_trait::async_trait]
impl spool_ports::RateLimitStore for MemoryRateLimiter {
    async fn check(
        &self,
        _: &[spool_domain::limit::LimitCheck],
        _: spool_domain::limit::Cost,
    ) -> Result<spool_domain::limit::Decision, spool_ports::PortError> {
        Err(spool_ports::PortError::internal("todo"))
    }
}
