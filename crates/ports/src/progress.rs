//! The progress port.

use async_trait::async_trait;
use futures::stream::BoxStream;
use spool_domain::names::OperationId;
use spool_domain::progress::{EventId, Operation, OperationSpec, ProgressEvent, ProgressUpdate};

use crate::PortError;

/// A live stream of events; ends after the operation's terminal event.
pub type EventStream = BoxStream<'static, Result<ProgressEvent, PortError>>;

/// Multi-step operations with live, resumable event streams.
#[async_trait]
pub trait ProgressStore: Send + Sync {
    /// Starts an operation (ID generated when the spec has none) and returns its first event
    /// (kind `snapshot`). Snapshot and event are written in one round trip.
    ///
    /// # Errors
    /// `Conflict` when the ID exists; `Invalid` for a bad plan; `Unavailable`.
    async fn start(&self, spec: OperationSpec) -> Result<ProgressEvent, PortError>;

    /// Applies one update and returns its event (kind `end` when it reaches a terminal state,
    /// else `progress`), with an ID greater than every earlier one. One round trip.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when the operation is terminal; `Invalid` for a bad update;
    /// `Unavailable`.
    async fn update(
        &self,
        id: &OperationId,
        update: ProgressUpdate,
    ) -> Result<ProgressEvent, PortError>;

    /// The current snapshot; `None` when unknown or expired.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, PortError>;

    /// Retained events with an ID greater than `after` (all retained when `None`), oldest
    /// first, at most `limit`.
    ///
    /// # Errors
    /// `NotFound`; `Unavailable`.
    async fn events_after(
        &self,
        id: &OperationId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<ProgressEvent>, PortError>;

    /// Subscribes. Without `after`: a `snapshot` event (carrying the latest event's ID) then
    /// every later event. With `after`: exactly the events after it, then live ones — and
    /// when events after `after` were already trimmed, a `snapshot` first so the subscriber
    /// never silently misses state. No gap, no duplicate; ends after the terminal event.
    ///
    /// Edge cases every adapter MUST treat alike: when `after` is older than the oldest
    /// retained event (trimmed) or newer than the latest event, the stream starts with a
    /// `snapshot` (carrying the latest event's ID) followed by live events only, so IDs in a
    /// stream always increase. When the operation expires under a subscriber, the stream
    /// yields one `NotFound` error and ends.
    ///
    /// # Errors
    /// `NotFound`; `Unavailable`.
    async fn subscribe(
        &self,
        id: &OperationId,
        after: Option<EventId>,
    ) -> Result<EventStream, PortError>;
}
