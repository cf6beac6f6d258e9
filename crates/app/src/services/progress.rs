//! `ProgressTracker`: multi-step operations with live, resumable event streams.

use std::fmt;
use std::sync::Arc;

use spool_domain::names::OperationId;
use spool_domain::progress::{
    EventId, Operation, OperationSpec, OperationState, ProgressEvent, ProgressUpdate, StepRef,
};
use spool_ports::{EventStream, ProgressStore};

use super::ServiceError;

/// Progress tracking over a [`ProgressStore`]. Cheap to clone.
#[derive(Clone)]
pub struct ProgressTracker {
    store: Arc<dyn ProgressStore>,
}

impl fmt::Debug for ProgressTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressTracker").finish_non_exhaustive()
    }
}

fn record_event(e: &ProgressEvent) {
    let span = tracing::Span::current();
    span.record("event_id", tracing::field::display(e.id));
    if let Some(c) = &e.operation.correlation_id {
        span.record("correlation_id", tracing::field::display(c));
    }
}

impl ProgressTracker {
    /// A tracker over `store`.
    pub fn new(store: Arc<dyn ProgressStore>) -> Self {
        Self { store }
    }

    /// Starts an operation (ID generated when the spec has none); returns its `snapshot`
    /// event.
    ///
    /// # Errors
    /// `Conflict` when the ID exists; `Invalid` plan; port errors.
    #[tracing::instrument(name = "progress.start", skip_all, fields(operation_id = tracing::field::Empty, event_id = tracing::field::Empty, correlation_id = tracing::field::Empty, steps = spec.steps.len()))]
    pub async fn start(&self, spec: OperationSpec) -> Result<ProgressEvent, ServiceError> {
        let event = self.store.start(spec).await?;
        tracing::Span::current()
            .record("operation_id", tracing::field::display(&event.operation.id));
        record_event(&event);
        Ok(event)
    }

    /// Applies an update; returns its event (`end` when it reached a terminal state).
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when terminal; `Invalid` update; port errors.
    #[tracing::instrument(name = "progress.update", skip_all, fields(operation_id = %id, event_id = tracing::field::Empty, correlation_id = tracing::field::Empty))]
    pub async fn update(
        &self,
        id: &OperationId,
        update: ProgressUpdate,
    ) -> Result<ProgressEvent, ServiceError> {
        let event = self.store.update(id, update).await?;
        record_event(&event);
        Ok(event)
    }

    /// Sets `fraction` (`0.0..=1.0`) of `step`, marking earlier steps complete.
    ///
    /// # Errors
    /// As for [`ProgressTracker::update`].
    pub async fn advance(
        &self,
        id: &OperationId,
        step: StepRef,
        fraction: f64,
        message: Option<String>,
    ) -> Result<ProgressEvent, ServiceError> {
        self.update(
            id,
            ProgressUpdate {
                step: Some(step),
                fraction: Some(fraction),
                message,
                state: None,
            },
        )
        .await
    }

    /// Ends the operation as succeeded (every step complete).
    ///
    /// # Errors
    /// As for [`ProgressTracker::update`].
    pub async fn complete(
        &self,
        id: &OperationId,
        message: Option<String>,
    ) -> Result<ProgressEvent, ServiceError> {
        self.finish(id, OperationState::Succeeded, message).await
    }

    /// Ends the operation as failed with `message`.
    ///
    /// # Errors
    /// As for [`ProgressTracker::update`].
    pub async fn fail(
        &self,
        id: &OperationId,
        message: impl Into<String>,
    ) -> Result<ProgressEvent, ServiceError> {
        self.finish(id, OperationState::Failed, Some(message.into()))
            .await
    }

    /// Ends the operation as cancelled.
    ///
    /// # Errors
    /// As for [`ProgressTracker::update`].
    pub async fn cancel(
        &self,
        id: &OperationId,
        message: Option<String>,
    ) -> Result<ProgressEvent, ServiceError> {
        self.finish(id, OperationState::Cancelled, message).await
    }

    async fn finish(
        &self,
        id: &OperationId,
        state: OperationState,
        message: Option<String>,
    ) -> Result<ProgressEvent, ServiceError> {
        self.update(
            id,
            ProgressUpdate {
                step: None,
                fraction: None,
                message,
                state: Some(state),
            },
        )
        .await
    }

    /// The current snapshot; `None` when unknown or expired.
    ///
    /// # Errors
    /// Port errors.
    #[tracing::instrument(name = "progress.get", skip_all, fields(operation_id = %id))]
    pub async fn get(&self, id: &OperationId) -> Result<Option<Operation>, ServiceError> {
        Ok(self.store.get(id).await?)
    }

    /// Retained events after `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// `NotFound`; port errors.
    #[tracing::instrument(name = "progress.events_after", skip_all, fields(operation_id = %id, after = ?after.map(|e| e.to_string())))]
    pub async fn events_after(
        &self,
        id: &OperationId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<ProgressEvent>, ServiceError> {
        Ok(self.store.events_after(id, after, limit).await?)
    }

    /// Subscribes: without `after` a snapshot then every later event; with `after` (an SSE
    /// `Last-Event-ID`) exactly the events after it, then live ones. Ends after the terminal
    /// event.
    ///
    /// # Errors
    /// `NotFound`; port errors.
    #[tracing::instrument(name = "progress.subscribe", skip_all, fields(operation_id = %id, after = ?after.map(|e| e.to_string())))]
    pub async fn subscribe(
        &self,
        id: &OperationId,
        after: Option<EventId>,
    ) -> Result<EventStream, ServiceError> {
        Ok(self.store.subscribe(id, after).await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use spool_domain::names::{CorrelationId, StepName};
    use spool_domain::progress::{EventKind, StepSpec};
    use spool_domain::Timestamp;
    use spool_ports::PortError;

    use super::*;
    use crate::services::mocks::MockProgress;

    fn op_id() -> OperationId {
        OperationId::parse("op-1").unwrap()
    }

    fn spec() -> OperationSpec {
        OperationSpec {
            id: Some(op_id()),
            correlation_id: Some(CorrelationId::parse("req-9").unwrap()),
            steps: vec![StepSpec {
                name: StepName::parse("only").unwrap(),
                weight: 1,
            }],
            message: None,
        }
    }

    fn event(kind: EventKind) -> ProgressEvent {
        ProgressEvent {
            id: EventId { ms: 1, seq: 0 },
            kind,
            operation: Operation::start(op_id(), spec(), Timestamp::from_millis(1)).unwrap(),
        }
    }

    #[tokio::test]
    async fn terminal_helpers_send_the_right_update() {
        let mut mock = MockProgress::new();
        mock.expect_start()
            .times(1)
            .withf(|s| s.correlation_id.is_some())
            .returning(|_| Ok(event(EventKind::Snapshot)));
        mock.expect_update()
            .times(1)
            .withf(|_, u| u.state == Some(OperationState::Succeeded) && u.step.is_none())
            .returning(|_, _| Ok(event(EventKind::End)));
        mock.expect_update()
            .times(1)
            .withf(|_, u| {
                u.state == Some(OperationState::Failed) && u.message.as_deref() == Some("boom")
            })
            .returning(|_, _| Err(PortError::conflict("terminal")));
        mock.expect_update()
            .times(1)
            .withf(|_, u| u.step == Some(StepRef::Index(0)) && u.fraction == Some(0.5))
            .returning(|_, _| Ok(event(EventKind::Progress)));
        let t = ProgressTracker::new(Arc::new(mock));
        assert_eq!(t.start(spec()).await.unwrap().kind, EventKind::Snapshot);
        assert_eq!(
            t.advance(&op_id(), StepRef::Index(0), 0.5, None)
                .await
                .unwrap()
                .kind,
            EventKind::Progress
        );
        assert_eq!(
            t.complete(&op_id(), None).await.unwrap().kind,
            EventKind::End
        );
        assert_eq!(
            t.fail(&op_id(), "boom").await.unwrap_err().code(),
            "conflict"
        );
    }

    #[tokio::test]
    async fn subscribe_passes_the_resume_point() {
        let mut mock = MockProgress::new();
        mock.expect_subscribe()
            .times(1)
            .withf(|id, after| id == &op_id() && *after == Some(EventId { ms: 5, seq: 2 }))
            .returning(|_, _| Ok(Box::pin(futures::stream::empty())));
        mock.expect_get().returning(|_| Ok(None));
        let t = ProgressTracker::new(Arc::new(mock));
        let _ = t
            .subscribe(&op_id(), Some(EventId { ms: 5, seq: 2 }))
            .await
            .unwrap();
        assert!(t.get(&op_id()).await.unwrap().is_none());
    }
}
