//! [`ResilientProgress`]: the primary progress store, a local [`MemoryProgress`] for
//! operations started while it is unavailable, and their hand-over once it is back.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use spool_adapter_memory::{Clock, MemoryProgress};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{OperationId, TaskId};
use spool_domain::progress::{
    EventId, Operation, OperationSpec, ProgressEvent, ProgressUpdate, StepRef, StepSpec,
};
use spool_ports::{EventStream, PortError, ProgressStore};
use tokio::sync::watch;

use super::guard::{CallError, Guard};
use super::status::{ResilienceStatus, Service};
use crate::telemetry::ServiceMode;

/// Default bound of the operations held locally at once.
pub const DEFAULT_MAX_LOCAL_OPERATIONS: usize = 10_000;

/// Where an operation started during an outage lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpWhere {
    /// In the local store.
    Local,
    /// Handed over: the primary has it (the entry is about to disappear).
    Primary,
    /// The primary refused it permanently: it stays local.
    Pinned,
}

type Cell = Arc<tokio::sync::Mutex<OpWhere>>;

/// What one hand-over pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgressHandover {
    /// Running operations now continued on the primary.
    pub handed_over: usize,
    /// Finished operations still answered locally until they expire.
    pub finished_locally: usize,
}

struct Shared {
    primary: Arc<dyn ProgressStore>,
    local: MemoryProgress,
    guard: Arc<Guard>,
    status: ResilienceStatus,
    clock: Arc<dyn Clock>,
    max_local: usize,
    /// Operations started locally; each behind its own lock, held by local updates and by
    /// the hand-over of that operation, so no update falls between the copy and the switch.
    ops: Mutex<HashMap<OperationId, Cell>>,
    /// Bumped after each hand-over, so local subscriptions look whether to switch.
    handed: watch::Sender<u64>,
    handover: tokio::sync::Mutex<()>,
}

impl Shared {
    fn cell(&self, id: &OperationId) -> Option<Cell> {
        self.ops.lock().get(id).cloned()
    }

    fn is_local(&self, id: &OperationId) -> bool {
        self.ops.lock().contains_key(id)
    }

    fn degraded(&self) {
        self.status
            .set_mode(Service::Progress, ServiceMode::Fallback);
    }

    async fn primary_only<T, F, Fut>(&self, op: F) -> Result<T, PortError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PortError>>,
    {
        self.guard.call(op).await.map_err(|e| {
            if e.wants_fallback() {
                self.degraded();
            }
            e.into_port_error()
        })
    }
}

/// A [`ProgressStore`] over a primary with a local fallback. See the [module docs](super).
pub struct ResilientProgress {
    shared: Arc<Shared>,
}

impl fmt::Debug for ResilientProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilientProgress")
            .field("local_operations", &self.shared.ops.lock().len())
            .finish_non_exhaustive()
    }
}

impl ResilientProgress {
    /// Wraps `primary`; the fallback is a [`MemoryProgress`] with `limits` on `clock`,
    /// holding at most `max_local` operations.
    pub fn new(
        primary: Arc<dyn ProgressStore>,
        guard: Arc<Guard>,
        status: ResilienceStatus,
        limits: &StoreLimits,
        clock: Arc<dyn Clock>,
        max_local: usize,
    ) -> Self {
        let (handed, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                primary,
                local: MemoryProgress::new(limits, Arc::clone(&clock)),
                guard,
                status,
                clock,
                max_local: max_local.max(1),
                ops: Mutex::new(HashMap::new()),
                handed,
                handover: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Operations the wrapper answers for locally.
    pub fn local_operations(&self) -> usize {
        self.shared.ops.lock().len()
    }

    fn new_id(&self) -> Result<OperationId, PortError> {
        let ulid = TaskId::from_parts(self.shared.clock.now(), rand::random::<u128>());
        OperationId::parse(ulid.to_string())
            .map_err(|e| PortError::internal(format!("generated operation id is invalid: {e}")))
    }

    async fn start_locally(
        &self,
        spec: OperationSpec,
        why: CallError,
    ) -> Result<ProgressEvent, PortError> {
        let s = &self.shared;
        let Some(id) = spec.id.clone() else {
            return Err(PortError::internal(
                "an operation reached the fallback without an id",
            ));
        };
        {
            let mut ops = s.ops.lock();
            if ops.contains_key(&id) {
                return Err(PortError::conflict(format!("operation {id} exists")));
            }
            if ops.len() >= s.max_local {
                return Err(PortError::Unavailable {
                    message: format!(
                        "the backend is unavailable and the local progress store is full ({} operations)",
                        s.max_local
                    ),
                    source: Some(Box::new(why.into_port_error())),
                });
            }
            ops.insert(
                id.clone(),
                Arc::new(tokio::sync::Mutex::new(OpWhere::Local)),
            );
        }
        match s.local.start(spec).await {
            Ok(ev) => {
                s.degraded();
                let pending = s.ops.lock().len() as u64;
                s.status.set_pending(Service::Progress, pending);
                tracing::info!(operation_id = %id, error = %why, "operation started on the local fallback");
                Ok(ev)
            }
            Err(e) => {
                s.ops.lock().remove(&id);
                Err(e)
            }
        }
    }

    /// Continues the running operations started during an outage on the primary: each is
    /// started there under its own ID with its plan, correlation ID and message, and its step
    /// fractions are replayed (last step first, so every fraction lands exactly); from then on
    /// every call about it goes to the primary, and local subscribers switch streams (see the
    /// [module docs](super)). Finished local operations stay local until they expire. Safe to
    /// run again after an interruption: a start that finds the ID on the primary continues
    /// with the replay.
    ///
    /// # Errors
    /// The primary's error; the operations not moved yet stay local.
    pub async fn hand_over(&self) -> Result<ProgressHandover, PortError> {
        let s = &self.shared;
        let _pass = s.handover.lock().await;
        let result = self.pass().await;
        match &result {
            Ok(r) => {
                s.status.set_pending(Service::Progress, 0);
                s.status.set_mode(Service::Progress, ServiceMode::Primary);
                if r.handed_over > 0 {
                    tracing::info!(
                        handed_over = r.handed_over,
                        "progress hand-over to the backend"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "progress hand-over interrupted; it resumes on the next pass");
            }
        }
        result
    }

    async fn pass(&self) -> Result<ProgressHandover, PortError> {
        let s = &self.shared;
        let mut report = ProgressHandover::default();
        let entries: Vec<(OperationId, Cell)> = s
            .ops
            .lock()
            .iter()
            .map(|(id, c)| (id.clone(), Arc::clone(c)))
            .collect();
        if entries.is_empty() {
            return Ok(report);
        }
        if !s.guard.admits() {
            return Err(CallError::Open {
                retry_after: s.guard.open_remaining(),
            }
            .into_port_error());
        }
        for (id, cell) in entries {
            let mut at = cell.lock().await;
            if *at != OpWhere::Local {
                continue;
            }
            let Some(op) = s.local.get(&id).await? else {
                drop(at);
                s.ops.lock().remove(&id);
                continue;
            };
            if op.state.is_terminal() {
                report.finished_locally += 1;
                continue;
            }
            match self.copy_to_primary(&op).await {
                Ok(()) => {}
                Err(CallError::Permanent(e)) => {
                    tracing::error!(error = %e, operation_id = %id, "the backend refused an operation from the local store; it stays local");
                    *at = OpWhere::Pinned;
                    continue;
                }
                Err(e) => return Err(e.into_port_error()),
            }
            *at = OpWhere::Primary;
            drop(at);
            s.ops.lock().remove(&id);
            s.handed.send_modify(|n| *n += 1);
            report.handed_over += 1;
        }
        Ok(report)
    }

    async fn copy_to_primary(&self, op: &Operation) -> Result<(), CallError> {
        let s = &self.shared;
        let spec = OperationSpec {
            id: Some(op.id.clone()),
            correlation_id: op.correlation_id.clone(),
            steps: op
                .steps
                .iter()
                .map(|st| StepSpec {
                    name: st.name.clone(),
                    weight: st.weight,
                })
                .collect(),
            message: op.message.clone(),
        };
        match s.guard.call(|| s.primary.start(spec.clone())).await {
            Ok(_) | Err(CallError::Permanent(PortError::Conflict { .. })) => {}
            Err(e) => return Err(e),
        }
        // Naming step i marks the steps before it complete, so replaying from the last
        // started step down to the first leaves every step at exactly its fraction.
        if let Some(last) = op.steps.iter().rposition(|st| st.fraction > 0.0) {
            for i in (0..=last).rev() {
                let update = ProgressUpdate {
                    step: Some(StepRef::Index(i)),
                    fraction: Some(op.steps[i].fraction),
                    message: None,
                    state: None,
                };
                s.guard
                    .call(|| s.primary.update(&op.id, update.clone()))
                    .await?;
            }
        }
        Ok(())
    }
}

enum Sub {
    /// Following the local store until the operation is handed over.
    Local {
        stream: EventStream,
        handed: watch::Receiver<u64>,
        last: Option<EventId>,
    },
    Primary(EventStream),
    Done,
}

/// A local subscription that continues on the primary once its operation is handed over,
/// resuming after the last event it delivered.
fn switching(
    shared: Arc<Shared>,
    id: OperationId,
    stream: EventStream,
    after: Option<EventId>,
) -> EventStream {
    let handed = shared.handed.subscribe();
    let start = Sub::Local {
        stream,
        handed,
        last: after,
    };
    futures::stream::unfold(start, move |state| {
        let shared = Arc::clone(&shared);
        let id = id.clone();
        async move {
            match state {
                Sub::Done => None,
                Sub::Primary(mut p) => p.next().await.map(|item| (item, Sub::Primary(p))),
                Sub::Local {
                    mut stream,
                    mut handed,
                    last,
                } => loop {
                    tokio::select! {
                        item = stream.next() => {
                            let item = item?;
                            let last = match &item {
                                Ok(ev) => Some(ev.id),
                                Err(_) => last,
                            };
                            return Some((item, Sub::Local { stream, handed, last }));
                        }
                        changed = handed.changed() => {
                            if changed.is_err() || shared.is_local(&id) {
                                if changed.is_err() {
                                    // No more hand-overs can happen: stay local.
                                    let item = stream.next().await?;
                                    return Some((item, Sub::Local { stream, handed, last }));
                                }
                                continue;
                            }
                            let subscribed = shared
                                .primary_only(|| shared.primary.subscribe(&id, last))
                                .await;
                            return match subscribed {
                                Ok(mut p) => p.next().await.map(|item| (item, Sub::Primary(p))),
                                Err(e) => Some((Err(e), Sub::Done)),
                            };
                        }
                    }
                },
            }
        }
    })
    .boxed()
}

#[async_trait]
impl ProgressStore for ResilientProgress {
    async fn start(&self, mut spec: OperationSpec) -> Result<ProgressEvent, PortError> {
        let s = &self.shared;
        let generated = spec.id.is_none();
        let id = match &spec.id {
            Some(id) => id.clone(),
            None => {
                let id = self.new_id()?;
                spec.id = Some(id.clone());
                id
            }
        };
        match s.guard.call(|| s.primary.start(spec.clone())).await {
            Ok(ev) => Ok(ev),
            Err(CallError::Permanent(PortError::Conflict { message })) if generated => {
                // Our own ID, so our own earlier attempt whose reply was lost: its first
                // event is the answer.
                let first = s
                    .primary_only(|| s.primary.events_after(&id, None, 1))
                    .await?;
                first
                    .into_iter()
                    .next()
                    .ok_or_else(|| PortError::conflict(message))
            }
            Err(e) if e.wants_fallback() => self.start_locally(spec, e).await,
            Err(e) => Err(e.into_port_error()),
        }
    }

    async fn update(
        &self,
        id: &OperationId,
        update: ProgressUpdate,
    ) -> Result<ProgressEvent, PortError> {
        let s = &self.shared;
        if let Some(cell) = s.cell(id) {
            let at = cell.lock().await;
            if *at != OpWhere::Primary {
                return s.local.update(id, update).await;
            }
        }
        s.primary_only(|| s.primary.update(id, update.clone()))
            .await
    }

    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, PortError> {
        let s = &self.shared;
        if let Some(cell) = s.cell(id) {
            let at = *cell.lock().await;
            if at != OpWhere::Primary {
                let op = s.local.get(id).await?;
                if op.is_none() {
                    s.ops.lock().remove(id);
                }
                return Ok(op);
            }
        }
        s.primary_only(|| s.primary.get(id)).await
    }

    async fn events_after(
        &self,
        id: &OperationId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<ProgressEvent>, PortError> {
        let s = &self.shared;
        if let Some(cell) = s.cell(id) {
            let at = *cell.lock().await;
            if at != OpWhere::Primary {
                return s.local.events_after(id, after, limit).await;
            }
        }
        s.primary_only(|| s.primary.events_after(id, after, limit))
            .await
    }

    async fn subscribe(
        &self,
        id: &OperationId,
        after: Option<EventId>,
    ) -> Result<EventStream, PortError> {
        let s = &self.shared;
        if let Some(cell) = s.cell(id) {
            let at = *cell.lock().await;
            match at {
                OpWhere::Local => {
                    let stream = s.local.subscribe(id, after).await?;
                    return Ok(switching(Arc::clone(s), id.clone(), stream, after));
                }
                OpWhere::Pinned => return s.local.subscribe(id, after).await,
                OpWhere::Primary => {}
            }
        }
        s.primary_only(|| s.primary.subscribe(id, after)).await
    }
}
