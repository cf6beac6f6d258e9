//! Placeholder: replaced by the progress implementation.

use std::sync::Arc;

use spool_domain::limits::StoreLimits;

use crate::Clock;

/// In-memory progress store.
pub struct MemoryProgress {
    _clock: Arc<dyn Clock>,
}

impl MemoryProgress {
    /// Builds the store.
    pub fn new(_limits: &StoreLimits, clock: Arc<dyn Clock>) -> Self {
        Self { _clock: clock }
    }
}

use spool_domain::names::OperationId;
use spool_domain::progress::{EventId, Operation, OperationSpec, ProgressEvent, ProgressUpdate};
use spool_ports::{EventStream, PortError};

#[async_trait::async_trait]
impl spool_ports::ProgressStore for MemoryProgress {
    async fn start(&self, _: OperationSpec) -> Result<ProgressEvent, PortError> {
        Err(PortError::internal("todo"))
    }
    async fn update(&self, _: &OperationId, _: ProgressUpdate) -> Result<ProgressEvent, PortError> {
        Err(PortError::internal("todo"))
    }
    async fn get(&self, _: &OperationId) -> Result<Option<Operation>, PortError> {
        Err(PortError::internal("todo"))
    }
    async fn events_after(
        &self,
        _: &OperationId,
        _: Option<EventId>,
        _: usize,
    ) -> Result<Vec<ProgressEvent>, PortError> {
        Err(PortError::internal("todo"))
    }
    async fn subscribe(
        &self,
        _: &OperationId,
        _: Option<EventId>,
    ) -> Result<EventStream, PortError> {
        Err(PortError::internal("todo"))
    }
}
