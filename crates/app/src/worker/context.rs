//! What a handler gets besides its payload, and what it returns.

use std::fmt;
use std::time::Duration;

use spool_domain::names::{CorrelationId, OperationId, QueueName, TaskId, TaskKind};
use spool_domain::progress::{OperationSpec, StepSpec};
use spool_domain::task::Retry;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::services::{ProgressTracker, ServiceError};

/// What a handler returns: an optional JSON result, or why it failed.
pub type HandlerResult = Result<Option<serde_json::Value>, HandlerError>;

/// The task a handler runs, and handles to report on it.
#[derive(Clone)]
pub struct TaskContext {
    pub(crate) task_id: TaskId,
    pub(crate) queue: QueueName,
    pub(crate) kind: TaskKind,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) correlation_id: Option<CorrelationId>,
    pub(crate) progress: ProgressTracker,
    pub(crate) cancel: CancellationToken,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("task_id", &self.task_id)
            .field("queue", &self.queue)
            .field("kind", &self.kind)
            .field("attempt", &self.attempt)
            .field("correlation_id", &self.correlation_id)
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    /// The task's ID.
    pub fn task_id(&self) -> TaskId {
        self.task_id
    }

    /// Its queue.
    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    /// Its kind.
    pub fn kind(&self) -> &TaskKind {
        &self.kind
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Attempts the task has in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether a retryable failure now makes the task dead.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// The correlation ID the producer gave, if any.
    pub fn correlation_id(&self) -> Option<&CorrelationId> {
        self.correlation_id.as_ref()
    }

    /// Progress tracking, to report on long work.
    pub fn progress(&self) -> &ProgressTracker {
        &self.progress
    }

    /// Cancelled when the lease is lost, the task times out, or the worker releases it on
    /// shutdown. The handler's future is dropped at that point too; the token is for work
    /// it started elsewhere (spawned tasks, blocking threads).
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the task is cancelled.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// The operation ID [`TaskContext::start_progress`] uses: one per task attempt.
    pub fn operation_id(&self) -> OperationId {
        // A ULID and a number only use characters an operation ID accepts.
        OperationId::parse(format!("task-{}-{}", self.task_id, self.attempt))
            .expect("a ULID and a number form a valid operation id")
    }

    /// Starts a progress operation for this attempt with the task's correlation ID, so
    /// progress events carry it; returns the operation's ID.
    ///
    /// # Errors
    /// `Invalid` plan; port errors.
    pub async fn start_progress(
        &self,
        steps: Vec<StepSpec>,
        message: Option<String>,
    ) -> Result<OperationId, ServiceError> {
        let id = self.operation_id();
        self.progress
            .start(OperationSpec {
                id: Some(id.clone()),
                correlation_id: self.correlation_id.clone(),
                steps,
                message,
            })
            .await?;
        Ok(id)
    }
}

/// Why a handler failed, and whether the task should be tried again.
///
/// Any `std::error::Error` converts into a retryable `HandlerError`, so `?` works in
/// handlers; use [`HandlerError::permanent`] for failures a retry cannot fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
    retry: Retry,
}

impl HandlerError {
    /// Retry with the task's backoff while attempts remain (the default).
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: Retry::Backoff,
        }
    }

    /// Retry after `delay` while attempts remain.
    pub fn retry_after(message: impl Into<String>, delay: Duration) -> Self {
        Self {
            message: message.into(),
            retry: Retry::After(delay),
        }
    }

    /// Do not retry: the task goes to the dead-letter set now.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: Retry::Never,
        }
    }

    /// The message, kept as the task's `last_error`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether and when to retry.
    pub fn retry_policy(&self) -> Retry {
        self.retry
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Self::retry(message)
    }
}
