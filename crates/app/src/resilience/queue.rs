//! [`ResilientQueue`]: the primary queue, a local [`MemoryQueue`] for work accepted while it
//! is unavailable, and the hand-over of that work once it is back.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use spool_adapter_memory::{Clock, MemoryQueue};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{QueueName, TaskId};
use spool_domain::task::{
    Failure, Lease, LeaseToken, MaxAttempts, QueueStats, Schedule, Task, TaskSpec, TaskStatus,
};
use spool_ports::{
    check_complete_many, check_reserve_many, complete_rest, Completion, Enqueued, PortError,
    QueueStore, ReserveOptions, TaskListing, TaskQuery,
};

use super::guard::{CallError, Guard};
use super::status::{ResilienceStatus, Service};
use crate::telemetry::ServiceMode;

/// Default bound of the tasks held locally at once.
pub const DEFAULT_MAX_LOCAL_TASKS: usize = 100_000;

/// The lease the hand-over takes on a ready local task while moving it.
const HANDOVER_LEASE: Duration = Duration::from_secs(300);

/// A scheduled or retrying local task due sooner than this is left to become ready and is
/// moved by a later pass through an exclusive reservation, so it can never be reserved
/// locally while it is being moved.
const DUE_MARGIN: Duration = Duration::from_secs(1);

type Key = (QueueName, TaskId);

/// Where a task the wrapper accepted locally is.
#[derive(Debug, Clone)]
enum Where {
    /// In the local store: waiting, running, or finished and retained there.
    Local,
    /// Taken off the local store (cancelled there, unseen by clients) and not yet accepted by
    /// the primary; reads show this snapshot.
    HandingOver(Box<Task>),
    /// The primary refused it permanently: it stays in the local store and runs there.
    Pinned,
}

/// What one hand-over pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HandoverReport {
    /// Tasks the primary accepted in this pass.
    pub handed_over: usize,
    /// Local tasks still waiting for the primary (due soon, or refused by an outage).
    pub waiting: usize,
    /// Local tasks running locally (they finish there).
    pub running: usize,
}

/// A [`QueueStore`] over a primary with a local fallback. See the [module docs](super).
pub struct ResilientQueue {
    primary: Arc<dyn QueueStore>,
    local: MemoryQueue,
    guard: Arc<Guard>,
    status: ResilienceStatus,
    clock: Arc<dyn Clock>,
    max_local: usize,
    routes: Mutex<HashMap<Key, Where>>,
    /// Held by the one hand-over pass in progress.
    handover: tokio::sync::Mutex<()>,
}

impl fmt::Debug for ResilientQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilientQueue")
            .field("local_tasks", &self.routes.lock().len())
            .finish_non_exhaustive()
    }
}

/// The spec that recreates `t` on the primary: same ID, kind, payload, priority, backoff,
/// timeout, unique key and correlation ID; due when it was due; with the attempts it has left.
fn handover_spec(t: &Task) -> TaskSpec {
    let schedule = match (t.status, t.scheduled_for) {
        (TaskStatus::Scheduled | TaskStatus::Failed, Some(at)) => Schedule::At(at),
        _ => Schedule::Now,
    };
    let left = t.max_attempts.saturating_sub(t.attempts).max(1);
    TaskSpec {
        id: Some(t.id),
        kind: t.kind.clone(),
        payload: t.payload.clone(),
        priority: t.priority,
        schedule,
        max_attempts: MaxAttempts::new(left).unwrap_or_default(),
        backoff: t.backoff,
        timeout: t.timeout_ms.map(Duration::from_millis),
        unique_key: t.unique_key.clone(),
        correlation_id: t.correlation_id.clone(),
    }
}

/// How a ready task reserved by the hand-over looked before that reservation.
fn waiting_snapshot(t: &Task) -> Task {
    let mut s = t.clone();
    s.status = TaskStatus::Queued;
    s.attempts = s.attempts.saturating_sub(1);
    s.lease_seq = s.lease_seq.saturating_sub(1);
    s.lease_expires_at = None;
    if s.attempts == 0 {
        s.started_at = None;
        s.heartbeat_at = None;
        s.worker = None;
    }
    s
}

fn merge_stats(primary: &mut Vec<QueueStats>, local: Vec<QueueStats>) {
    for l in local {
        let idx = match primary.iter().position(|p| p.name == l.name) {
            Some(i) => i,
            None => {
                primary.push(QueueStats {
                    name: l.name.clone(),
                    ..QueueStats::default()
                });
                primary.len() - 1
            }
        };
        let p = &mut primary[idx];
        p.queued += l.queued;
        p.scheduled += l.scheduled;
        p.running += l.running;
        p.succeeded += l.succeeded;
        p.dead += l.dead;
        // Local cancelled tasks are mostly copies already handed over; not counted.
        p.oldest_waiting_ms = p.oldest_waiting_ms.max(l.oldest_waiting_ms);
    }
    primary.sort_by(|a, b| a.name.cmp(&b.name));
}

impl ResilientQueue {
    /// Wraps `primary`; the fallback is a [`MemoryQueue`] with `limits` on `clock`, holding
    /// at most `max_local` tasks.
    pub fn new(
        primary: Arc<dyn QueueStore>,
        guard: Arc<Guard>,
        status: ResilienceStatus,
        limits: &StoreLimits,
        clock: Arc<dyn Clock>,
        max_local: usize,
    ) -> Self {
        Self {
            primary,
            local: MemoryQueue::new(limits, Arc::clone(&clock)),
            guard,
            status,
            clock,
            max_local: max_local.max(1),
            routes: Mutex::new(HashMap::new()),
            handover: tokio::sync::Mutex::new(()),
        }
    }

    /// Tasks the wrapper tracks locally (waiting, running, handing over, or finished and
    /// retained locally).
    pub fn local_tasks(&self) -> usize {
        self.routes.lock().len()
    }

    fn has_local(&self) -> bool {
        !self.routes.lock().is_empty()
    }

    fn locate(&self, queue: &QueueName, id: TaskId) -> Option<Where> {
        self.routes.lock().get(&(queue.clone(), id)).cloned()
    }

    fn degraded(&self, why: &CallError) {
        if self.status.mode(Service::Queue) == ServiceMode::Primary {
            tracing::warn!(error = %why, "queue backend unavailable");
        }
        self.status.set_mode(Service::Queue, ServiceMode::Fallback);
    }

    fn pending_upper_bound(&self) -> u64 {
        self.routes
            .lock()
            .values()
            .filter(|w| !matches!(w, Where::Pinned))
            .count() as u64
    }

    /// Runs `op` on the primary; it has no fallback (the task lives there).
    async fn primary_only<T, F, Fut>(&self, op: F) -> Result<T, PortError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PortError>>,
    {
        self.guard.call(op).await.map_err(|e| {
            if e.wants_fallback() {
                self.degraded(&e);
            }
            e.into_port_error()
        })
    }

    async fn enqueue_locally(
        &self,
        queue: &QueueName,
        spec: TaskSpec,
        why: CallError,
    ) -> Result<Enqueued, PortError> {
        let Some(id) = spec.id else {
            return Err(PortError::internal(
                "a task reached the fallback without an id",
            ));
        };
        let key = (queue.clone(), id);
        let inserted = {
            let mut routes = self.routes.lock();
            match routes.get(&key) {
                Some(Where::HandingOver(snap)) => return Ok(Enqueued::Duplicate((**snap).clone())),
                Some(_) => false,
                None if routes.len() >= self.max_local => {
                    return Err(PortError::Unavailable {
                        message: format!(
                            "the backend is unavailable and the local fallback queue is full ({} tasks)",
                            self.max_local
                        ),
                        source: Some(Box::new(why.into_port_error())),
                    });
                }
                None => {
                    // Routed before it exists locally, so a worker that reserves it at once
                    // already finds its way back.
                    routes.insert(key.clone(), Where::Local);
                    true
                }
            }
        };
        let out = self.local.enqueue(queue, spec).await;
        let keep = matches!(&out, Ok(e) if e.task().id == id);
        if inserted && !keep {
            self.routes.lock().remove(&key);
        }
        let out = out?;
        self.degraded(&why);
        self.status
            .set_pending(Service::Queue, self.pending_upper_bound());
        tracing::info!(queue = %queue, task_id = %id, "task accepted by the local fallback queue");
        Ok(out)
    }

    /// Moves tasks accepted during an outage to the primary: every local task that is ready,
    /// scheduled or awaiting a retry is enqueued on the primary under its own ID (idempotent,
    /// so a pass interrupted anywhere can simply run again) and only then leaves the local
    /// store; running local tasks finish locally. Once nothing waits locally the queue is back
    /// in `primary` mode. Passes never overlap.
    ///
    /// # Errors
    /// The primary's error when it fails; the tasks not moved yet stay local (or, for the one
    /// in flight, readable as it was) and the next pass continues.
    pub async fn hand_over(&self) -> Result<HandoverReport, PortError> {
        let _pass = self.handover.lock().await;
        let result = self.pass().await;
        match &result {
            Ok(r) => {
                let handing = self
                    .routes
                    .lock()
                    .values()
                    .filter(|w| matches!(w, Where::HandingOver(_)))
                    .count();
                let pending = r.waiting + handing;
                self.status.set_pending(Service::Queue, pending as u64);
                if pending == 0 {
                    self.status.set_mode(Service::Queue, ServiceMode::Primary);
                }
                if r.handed_over > 0 {
                    tracing::info!(
                        handed_over = r.handed_over,
                        running_locally = r.running,
                        "queue hand-over to the backend"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "queue hand-over interrupted; it resumes on the next pass");
                self.status
                    .set_pending(Service::Queue, self.pending_upper_bound());
            }
        }
        result
    }

    async fn pass(&self) -> Result<HandoverReport, PortError> {
        let mut report = HandoverReport::default();
        if !self.has_local() {
            return Ok(report);
        }
        if !self.guard.admits() {
            return Err(CallError::Open {
                retry_after: self.guard.open_remaining(),
            }
            .into_port_error());
        }
        // 1. Tasks a previous pass took off the local store but could not deliver.
        let stuck: Vec<(Key, Task)> = self
            .routes
            .lock()
            .iter()
            .filter_map(|(k, w)| match w {
                Where::HandingOver(t) => Some((k.clone(), (**t).clone())),
                _ => None,
            })
            .collect();
        for (key, snap) in stuck {
            self.push(&key, &snap).await?;
            report.handed_over += 1;
        }
        // 2. Ready tasks, each taken by an exclusive local reservation first.
        let queues: BTreeSet<QueueName> = self
            .routes
            .lock()
            .iter()
            .filter(|(_, w)| matches!(w, Where::Local))
            .map(|((q, _), _)| q.clone())
            .collect();
        for q in &queues {
            let mut kept = Vec::new();
            let moved = self.move_ready(q, &mut kept, &mut report).await;
            for lease in kept {
                if let Err(e) = self
                    .local
                    .release(q, lease.task.id, lease.token, "kept on the local queue")
                    .await
                {
                    tracing::warn!(error = %e, task_id = %lease.task.id, "could not release a pinned task");
                }
            }
            moved?;
        }
        // 3. Scheduled and retrying tasks not due soon; count what stays.
        let now = self.clock.now();
        let local: Vec<Key> = self
            .routes
            .lock()
            .iter()
            .filter(|(_, w)| matches!(w, Where::Local))
            .map(|(k, _)| k.clone())
            .collect();
        for key in local {
            let (q, id) = (&key.0, key.1);
            let Some(t) = self.local.get(q, id).await? else {
                self.routes.lock().remove(&key);
                continue;
            };
            match t.status {
                TaskStatus::Running => report.running += 1,
                TaskStatus::Queued => report.waiting += 1,
                TaskStatus::Scheduled | TaskStatus::Failed => {
                    let due = t.scheduled_for.unwrap_or(now);
                    if due <= now.saturating_add(DUE_MARGIN) {
                        report.waiting += 1;
                        continue;
                    }
                    self.routes
                        .lock()
                        .insert(key.clone(), Where::HandingOver(Box::new(t.clone())));
                    match self.local.cancel(q, id).await {
                        Ok(c) if c.lease_seq != t.lease_seq => tracing::warn!(
                            task_id = %id,
                            "a local task was reserved while being handed over; it runs again from the backend"
                        ),
                        Ok(_) => {}
                        Err(e) => {
                            // It changed under us (cancelled by its owner): it stays local.
                            tracing::debug!(error = %e, task_id = %id, "not handed over");
                            self.routes.lock().insert(key.clone(), Where::Local);
                            continue;
                        }
                    }
                    self.push(&key, &t).await?;
                    report.handed_over += 1;
                }
                TaskStatus::Succeeded | TaskStatus::Dead | TaskStatus::Cancelled => {}
            }
        }
        Ok(report)
    }

    /// Reserves the ready local tasks of `q` one by one and pushes each to the primary;
    /// leases of pinned tasks go to `kept` for the caller to release.
    async fn move_ready(
        &self,
        q: &QueueName,
        kept: &mut Vec<Lease>,
        report: &mut HandoverReport,
    ) -> Result<(), PortError> {
        let queues = [q.clone()];
        while let Some(lease) = self
            .local
            .reserve(&queues, ReserveOptions::new(HANDOVER_LEASE))
            .await?
        {
            let key = (q.clone(), lease.task.id);
            if matches!(self.locate(q, lease.task.id), Some(Where::Pinned)) {
                kept.push(lease);
                continue;
            }
            let snap = waiting_snapshot(&lease.task);
            self.routes
                .lock()
                .insert(key.clone(), Where::HandingOver(Box::new(snap.clone())));
            // Off the local store: the cancel revokes the hand-over's own lease.
            self.local.cancel(q, lease.task.id).await?;
            self.push(&key, &snap).await?;
            report.handed_over += 1;
        }
        Ok(())
    }

    /// Enqueues `snap` on the primary under its ID; on success the task is the primary's.
    async fn push(&self, key: &Key, snap: &Task) -> Result<(), PortError> {
        let (q, id) = (&key.0, key.1);
        let spec = handover_spec(snap);
        let mut out = self
            .guard
            .call(|| self.primary.enqueue(q, spec.clone()))
            .await;
        if let Ok(Enqueued::Duplicate(holder)) = &out {
            if holder.id != id {
                // A live backend task holds its unique key (the outage hid it): the task was
                // accepted, so it is handed over without the key rather than lost.
                tracing::warn!(
                    task_id = %id,
                    holder = %holder.id,
                    "unique key already held on the backend; handing the task over without it"
                );
                let mut spec = spec.clone();
                spec.unique_key = None;
                out = self
                    .guard
                    .call(|| self.primary.enqueue(q, spec.clone()))
                    .await;
            }
        }
        match out {
            Ok(_) => {
                self.routes.lock().remove(key);
                Ok(())
            }
            Err(e) if e.wants_fallback() => Err(e.into_port_error()),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    task_id = %id,
                    "the backend refused a task from the local queue; it stays and runs locally"
                );
                self.local.requeue(q, id).await?;
                self.routes.lock().insert(key.clone(), Where::Pinned);
                Ok(())
            }
        }
    }

    fn new_id(&self) -> TaskId {
        TaskId::from_parts(self.clock.now(), rand::random::<u128>())
    }
}

#[async_trait]
impl QueueStore for ResilientQueue {
    async fn enqueue(&self, queue: &QueueName, mut spec: TaskSpec) -> Result<Enqueued, PortError> {
        // Named before the first attempt: a retry after a lost reply, and the fallback, reuse
        // the name, so neither can accept the task twice.
        if spec.id.is_none() {
            spec.id = Some(self.new_id());
        }
        match self
            .guard
            .call(|| self.primary.enqueue(queue, spec.clone()))
            .await
        {
            Ok(e) => Ok(e),
            Err(e) if e.wants_fallback() => self.enqueue_locally(queue, spec, e).await,
            Err(e) => Err(e.into_port_error()),
        }
    }

    async fn reserve(
        &self,
        queues: &[QueueName],
        opts: ReserveOptions,
    ) -> Result<Option<Lease>, PortError> {
        opts.validate()?;
        if self.has_local() {
            let now = opts.clone().wait(Duration::ZERO);
            if let Some(lease) = self.local.reserve(queues, now).await? {
                return Ok(Some(lease));
            }
        }
        match self
            .guard
            .call(|| self.primary.reserve(queues, opts.clone()))
            .await
        {
            Ok(l) => Ok(l),
            Err(e) if e.wants_fallback() => {
                self.degraded(&e);
                self.local.reserve(queues, opts).await
            }
            Err(e) => Err(e.into_port_error()),
        }
    }

    /// Ready local tasks first (as [`QueueStore::reserve`] does), else one batched call to the
    /// primary through the guard, else the local queue when the primary is unavailable.
    async fn reserve_many(
        &self,
        queues: &[QueueName],
        max: usize,
        opts: ReserveOptions,
    ) -> Result<Vec<Lease>, PortError> {
        check_reserve_many(queues, max)?;
        opts.validate()?;
        let opts = opts.wait(Duration::ZERO);
        if self.has_local() {
            let leases = self.local.reserve_many(queues, max, opts.clone()).await?;
            if !leases.is_empty() {
                return Ok(leases);
            }
        }
        match self
            .guard
            .call(|| self.primary.reserve_many(queues, max, opts.clone()))
            .await
        {
            Ok(leases) => Ok(leases),
            Err(e) if e.wants_fallback() => {
                self.degraded(&e);
                self.local.reserve_many(queues, max, opts).await
            }
            Err(e) => Err(e.into_port_error()),
        }
    }

    async fn heartbeat(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        lease: Duration,
    ) -> Result<Lease, PortError> {
        match self.locate(queue, task) {
            Some(_) => self.local.heartbeat(queue, task, token, lease).await,
            None => {
                self.primary_only(|| self.primary.heartbeat(queue, task, token, lease))
                    .await
            }
        }
    }

    async fn complete(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        result: Option<serde_json::Value>,
    ) -> Result<Task, PortError> {
        match self.locate(queue, task) {
            Some(_) => self.local.complete(queue, task, token, result).await,
            None => {
                self.primary_only(|| self.primary.complete(queue, task, token, result.clone()))
                    .await
            }
        }
    }

    /// Tasks leased from the local queue complete there; the rest go to the primary in one
    /// guarded call.
    async fn complete_many(
        &self,
        queue: &QueueName,
        batch: Vec<Completion>,
    ) -> Result<Vec<Result<(), PortError>>, PortError> {
        check_complete_many(&batch)?;
        let mut outcomes: Vec<Option<Result<(), PortError>>> = Vec::with_capacity(batch.len());
        let mut remote = Vec::with_capacity(batch.len());
        for c in batch {
            if self.locate(queue, c.task).is_some() {
                let done = self.local.complete(queue, c.task, c.token, c.result).await;
                outcomes.push(Some(done.map(|_| ())));
            } else {
                outcomes.push(None);
                remote.push(c);
            }
        }
        complete_rest(outcomes, remote, |rest| {
            self.primary_only(move || self.primary.complete_many(queue, rest.clone()))
        })
        .await
    }

    async fn fail(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        failure: Failure,
    ) -> Result<Task, PortError> {
        match self.locate(queue, task) {
            Some(_) => {
                let t = self.local.fail(queue, task, token, failure).await?;
                // A retry waits locally now: the supervisor hands it over when it can.
                self.status.wake();
                Ok(t)
            }
            None => {
                self.primary_only(|| self.primary.fail(queue, task, token, failure.clone()))
                    .await
            }
        }
    }

    async fn release(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        reason: &str,
    ) -> Result<Task, PortError> {
        match self.locate(queue, task) {
            Some(_) => {
                let t = self.local.release(queue, task, token, reason).await?;
                self.status.wake();
                Ok(t)
            }
            None => {
                self.primary_only(|| self.primary.release(queue, task, token, reason))
                    .await
            }
        }
    }

    async fn cancel(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError> {
        let mut at = self.locate(queue, task);
        let _pass;
        if matches!(at, Some(Where::HandingOver(_))) {
            // Let the pass moving it finish, then look again.
            _pass = self.handover.lock().await;
            at = self.locate(queue, task);
        }
        match at {
            Some(Where::HandingOver(_)) => {
                // Its owner cancels it before the backend took it: it is already cancelled
                // in the local store, which keeps answering for it.
                self.routes
                    .lock()
                    .insert((queue.clone(), task), Where::Local);
                self.local
                    .get(queue, task)
                    .await?
                    .ok_or_else(|| PortError::not_found(format!("task {task}")))
            }
            Some(_) => self.local.cancel(queue, task).await,
            None => self.primary_only(|| self.primary.cancel(queue, task)).await,
        }
    }

    async fn requeue(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError> {
        match self.locate(queue, task) {
            Some(Where::HandingOver(_)) => Err(PortError::conflict(format!(
                "task {task} is waiting, not dead or cancelled"
            ))),
            Some(_) => {
                let t = self.local.requeue(queue, task).await?;
                self.status.wake();
                Ok(t)
            }
            None => {
                self.primary_only(|| self.primary.requeue(queue, task))
                    .await
            }
        }
    }

    async fn get(&self, queue: &QueueName, task: TaskId) -> Result<Option<Task>, PortError> {
        match self.locate(queue, task) {
            Some(Where::HandingOver(snap)) => Ok(Some(*snap)),
            Some(_) => {
                let t = self.local.get(queue, task).await?;
                if t.is_none() {
                    self.routes.lock().remove(&(queue.clone(), task));
                }
                Ok(t)
            }
            None => self.primary_only(|| self.primary.get(queue, task)).await,
        }
    }

    async fn stats(&self, queues: &[QueueName]) -> Result<Vec<QueueStats>, PortError> {
        match self.guard.call(|| self.primary.stats(queues)).await {
            Ok(mut s) => {
                if self.has_local() {
                    merge_stats(&mut s, self.local.stats(queues).await?);
                }
                Ok(s)
            }
            Err(e) if e.wants_fallback() => {
                self.degraded(&e);
                self.local.stats(queues).await
            }
            Err(e) => Err(e.into_port_error()),
        }
    }

    async fn list(&self, queue: &QueueName, query: TaskQuery) -> Result<Vec<Task>, PortError> {
        query.validate()?;
        match self.guard.call(|| self.primary.list(queue, query)).await {
            Ok(tasks) if self.has_local() => {
                let local = self.local.list(queue, query).await?;
                Ok(self.merge_listing(queue, query, tasks, local))
            }
            Ok(tasks) => Ok(tasks),
            Err(e) if e.wants_fallback() => {
                self.degraded(&e);
                self.local.list(queue, query).await
            }
            Err(e) => Err(e.into_port_error()),
        }
    }
}

impl ResilientQueue {
    /// The primary's listing plus the tasks the local store answers for (not the cancelled
    /// copies of tasks handed over or being handed over), in the listing's order by the
    /// tasks' own times (queued: by priority, the primary's first), cut to the limit.
    fn merge_listing(
        &self,
        queue: &QueueName,
        query: TaskQuery,
        mut tasks: Vec<Task>,
        local: Vec<Task>,
    ) -> Vec<Task> {
        let seen: BTreeSet<TaskId> = tasks.iter().map(|t| t.id).collect();
        tasks.extend(local.into_iter().filter(|t| {
            !seen.contains(&t.id)
                && matches!(self.locate(queue, t.id), Some(Where::Local | Where::Pinned))
        }));
        match query.listing {
            TaskListing::Queued => tasks.sort_by_key(|t| std::cmp::Reverse(t.priority)),
            TaskListing::Scheduled | TaskListing::Retrying => {
                tasks.sort_by_key(|t| t.scheduled_for);
            }
            TaskListing::Running => tasks.sort_by_key(|t| t.lease_expires_at),
            TaskListing::Succeeded
            | TaskListing::Dead
            | TaskListing::Cancelled
            | TaskListing::Finished => {
                tasks.sort_by_key(|t| std::cmp::Reverse(t.finished_at));
            }
        }
        tasks.truncate(query.limit);
        tasks
    }
}
