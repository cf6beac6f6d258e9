//! Placeholder: replaced by the queue implementation.

use std::sync::Arc;

use spool_domain::limits::StoreLimits;

use crate::Clock;

/// In-memory queue store.
pub struct MemoryQueue {
    _clock: Arc<dyn Clock>,
}

impl MemoryQueue {
    /// Builds the store.
    pub fn new(_limits: &StoreLimits, clock: Arc<dyn Clock>) -> Self {
        Self { _clock: clock }
    }
}

use spool_domain::names::{QueueName, TaskId};
use spool_domain::task::{Failure, Lease, LeaseToken, QueueStats, Task, TaskSpec};
use spool_ports::{Enqueued, PortError, ReserveOptions};

#[async_trait::async_trait]
impl spool_ports::QueueStore for MemoryQueue {
    async fn enqueue(&self, _: &QueueName, _: TaskSpec) -> Result<Enqueued, PortError> {
        Err(PortError::internal("todo"))
    }
    async fn reserve(
        &self,
        _: &[QueueName],
        _: ReserveOptions,
    ) -> Result<Option<Lease>, PortError> {
        Err(PortError::internal("todo"))
    }
    async fn heartbeat(
        &self,
        _: &QueueName,
        _: TaskId,
        _: LeaseToken,
        _: std::time::Duration,
    ) -> Result<Lease, PortError> {
        Err(PortError::internal("todo"))
    }
    async fn complete(
        &self,
        _: &QueueName,
        _: TaskId,
        _: LeaseToken,
        _: Option<serde_json::Value>,
    ) -> Result<Task, PortError> {
        Err(PortError::internal("todo"))
    }
    async fn fail(
        &self,
        _: &QueueName,
        _: TaskId,
        _: LeaseToken,
        _: Failure,
    ) -> Result<Task, PortError> {
        Err(PortError::internal("todo"))
    }
    async fn cancel(&self, _: &QueueName, _: TaskId) -> Result<Task, PortError> {
        Err(PortError::internal("todo"))
    }
    async fn requeue(&self, _: &QueueName, _: TaskId) -> Result<Task, PortError> {
        Err(PortError::internal("todo"))
    }
    async fn get(&self, _: &QueueName, _: TaskId) -> Result<Option<Task>, PortError> {
        Err(PortError::internal("todo"))
    }
    async fn stats(&self, _: &[QueueName]) -> Result<Vec<QueueStats>, PortError> {
        Err(PortError::internal("todo"))
    }
}
