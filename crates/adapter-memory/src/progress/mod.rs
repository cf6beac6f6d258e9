//! Progress tracking in memory.
//!
//! | file | concern |
//! |---|---|
//! | `store.rs` | every operation: snapshot, retained events, live channel, expiry index; each port operation as one synchronous step at a given "now" |
//! | `subscription.rs` | a subscriber's stream: replay, then live events, catching up after lag |
//! | `id.rs` | generated operation IDs (ULIDs) |
//!
//! The whole store sits behind one mutex, so every operation is atomic and event IDs
//! (`<ms>-<seq>`, from [`EventId::next`]) strictly increase per operation. Maintenance is lazy:
//! each call first drops the operations whose `operation_ttl` since their last change has run
//! out (an ordered expiry index makes that proportional to what expires). Each operation keeps
//! its newest `max_events_per_operation` events (at least one).
//!
//! ## Subscriptions
//!
//! Each operation has a `tokio::sync::broadcast` channel. `subscribe` joins it and reads the
//! replay under the same lock that `update` holds while it records and sends an event, so an
//! event is either in the replay or on the channel — never both, never neither. The replay is:
//!
//! - without `after`: a `snapshot` event carrying the latest event's ID and the current state;
//! - with `after`: the retained events with an ID greater than `after`; but a `snapshot` as
//!   above when some event after `after` was already trimmed, or when `after` is newer than
//!   any event of the operation (an ID it never produced). Event IDs in a stream therefore
//!   always increase.
//!
//! Then live events follow, skipping any with an ID not greater than the last one delivered.
//! A subscriber that lags behind the channel is caught up from the retained events (or a
//! snapshot, when those were trimmed too). The stream ends after the event whose operation is
//! terminal; it yields one `NotFound` error and ends when the operation expires under it.

mod id;
mod store;
mod subscription;

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use spool_domain::limits::StoreLimits;
use spool_domain::names::OperationId;
use spool_domain::progress::{EventId, Operation, OperationSpec, ProgressEvent, ProgressUpdate};
use spool_ports::{EventStream, PortError, ProgressStore};

use crate::Clock;
use store::Store;

/// State shared by the store and its subscribers' streams.
struct Shared {
    store: Mutex<Store>,
    clock: Arc<dyn Clock>,
}

/// In-memory [`ProgressStore`]: weighted multi-step operations with capped, expiring event
/// logs and gapless, resumable live subscriptions.
///
/// ```
/// use std::sync::Arc;
/// use futures::StreamExt;
/// use spool_adapter_memory::{MemoryProgress, TokioClock};
/// use spool_domain::limits::StoreLimits;
/// use spool_domain::names::StepName;
/// use spool_domain::progress::{EventKind, OperationSpec, ProgressUpdate, StepRef, StepSpec};
/// use spool_ports::ProgressStore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let progress = MemoryProgress::new(&StoreLimits::default(), Arc::new(TokioClock::new()));
/// let started = progress
///     .start(OperationSpec {
///         id: None,
///         correlation_id: None,
///         steps: vec![StepSpec { name: StepName::parse("fetch").unwrap(), weight: 1 }],
///         message: None,
///     })
///     .await
///     .unwrap();
/// let id = started.operation.id.clone();
/// let mut events = progress.subscribe(&id, None).await.unwrap();
/// assert_eq!(events.next().await.unwrap().unwrap().kind, EventKind::Snapshot);
///
/// let update = ProgressUpdate { step: Some(StepRef::Index(0)), fraction: Some(0.5), ..Default::default() };
/// progress.update(&id, update).await.unwrap();
/// let event = events.next().await.unwrap().unwrap();
/// assert_eq!(event.operation.percent, 50.0);
/// # }
/// ```
pub struct MemoryProgress {
    shared: Arc<Shared>,
}

impl MemoryProgress {
    /// Builds the store with the event cap and retention of `limits`, reading "now" from
    /// `clock`.
    pub fn new(limits: &StoreLimits, clock: Arc<dyn Clock>) -> Self {
        Self {
            shared: Arc::new(Shared {
                store: Mutex::new(Store::new(
                    limits.max_events_per_operation,
                    limits.operation_ttl,
                )),
                clock,
            }),
        }
    }

    /// Runs `f` on the store at the current time, under the lock.
    fn with_store<T>(&self, f: impl FnOnce(&mut Store, spool_domain::Timestamp) -> T) -> T {
        let mut store = self.shared.store.lock();
        // Read under the lock, so "now" never goes backwards between two changes.
        let now = self.shared.clock.now();
        f(&mut store, now)
    }
}

#[async_trait]
impl ProgressStore for MemoryProgress {
    async fn start(&self, spec: OperationSpec) -> Result<ProgressEvent, PortError> {
        self.with_store(|store, now| store.start(spec, now))
    }

    async fn update(
        &self,
        id: &OperationId,
        update: ProgressUpdate,
    ) -> Result<ProgressEvent, PortError> {
        self.with_store(|store, now| store.update(id, &update, now))
    }

    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, PortError> {
        Ok(self.with_store(|store, now| store.get(id, now)))
    }

    async fn events_after(
        &self,
        id: &OperationId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<ProgressEvent>, PortError> {
        self.with_store(|store, now| store.events_after(id, after, limit, now))
    }

    async fn subscribe(
        &self,
        id: &OperationId,
        after: Option<EventId>,
    ) -> Result<EventStream, PortError> {
        let subscribed = self.with_store(|store, now| store.subscribe(id, after, now))?;
        Ok(subscription::stream(
            Arc::clone(&self.shared),
            id.clone(),
            after,
            subscribed,
        ))
    }
}
