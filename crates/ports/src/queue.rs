//! The task-queue port.

use std::time::Duration;

use async_trait::async_trait;
use spool_domain::names::{QueueName, TaskId, WorkerId};
use spool_domain::task::{Failure, Lease, LeaseToken, QueueStats, Task, TaskSpec};

use crate::PortError;

/// What [`QueueStore::enqueue`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    /// A new task was accepted.
    Created(Task),
    /// A task with the given ID, or a live task with the same unique key, exists; nothing
    /// was added.
    Duplicate(Task),
}

impl Enqueued {
    /// The task, new or existing.
    pub fn task(&self) -> &Task {
        match self {
            Enqueued::Created(t) | Enqueued::Duplicate(t) => t,
        }
    }

    /// Consumes `self`, giving the task.
    pub fn into_task(self) -> Task {
        match self {
            Enqueued::Created(t) | Enqueued::Duplicate(t) => t,
        }
    }
}

/// How to reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveOptions {
    /// Lease length; the holder must heartbeat before it runs out (`1 ms ..= 1 day`).
    pub lease: Duration,
    /// How long to wait for a task when none is ready (`0` = do not wait; at most 5 min).
    pub wait: Duration,
    /// Who reserves, recorded on the task.
    pub worker: Option<WorkerId>,
}

impl ReserveOptions {
    /// Longest lease.
    pub const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);
    /// Longest wait.
    pub const MAX_WAIT: Duration = Duration::from_secs(300);

    /// A non-waiting reservation with `lease`.
    pub fn new(lease: Duration) -> Self {
        Self {
            lease,
            wait: Duration::ZERO,
            worker: None,
        }
    }

    /// Sets the wait.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Sets the worker.
    pub fn worker(mut self, worker: WorkerId) -> Self {
        self.worker = Some(worker);
        self
    }

    /// Checks the bounds.
    ///
    /// # Errors
    /// `Invalid` naming `lease` or `wait`.
    pub fn validate(&self) -> Result<(), PortError> {
        if self.lease.is_zero() || self.lease > Self::MAX_LEASE {
            return Err(PortError::invalid("lease", "must be 1 ms ..= 1 day"));
        }
        if self.wait > Self::MAX_WAIT {
            return Err(PortError::invalid("wait", "must be at most 5 minutes"));
        }
        Ok(())
    }
}

/// Named queues with strict priorities, delays, leases with fencing tokens, retries with
/// backoff, dead letters and bounded retention.
///
/// Every transition MUST be one atomic backend round trip that records its timestamp, and
/// MUST follow [`spool_domain::task::TaskStatus::apply`].
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Accepts a task. Ready at once unless delayed. With a unique key held by a live
    /// (not finished) task of the same queue, MUST return that task as `Duplicate` and add
    /// nothing.
    ///
    /// With a given ID ([`TaskSpec::id`]) the task MUST be stored under exactly that ID, and
    /// the call MUST be idempotent: when a task with that ID exists in the queue (any status,
    /// until its retention ends) it is returned as `Duplicate` and nothing is added — so an
    /// enqueue retried after a lost reply, or a task handed over from a fallback store, is
    /// never accepted twice. The ID check comes before the unique-key check. Without an ID
    /// the store generates a time-ordered one.
    ///
    /// # Errors
    /// `Invalid` for a payload over `max_payload_bytes` or bad schedule/backoff;
    /// `Unavailable` when the backend cannot answer.
    async fn enqueue(&self, queue: &QueueName, spec: TaskSpec) -> Result<Enqueued, PortError>;

    /// Takes the next ready task from the first of `queues` (in the given order) that has
    /// one: highest priority first, FIFO within a priority. Due delayed/retrying tasks become
    /// ready and expired leases are reclaimed first (back to the queue with the attempt
    /// counted, or to the dead-letter set after `max_attempts`). When nothing is ready, waits
    /// up to `opts.wait` without busy-polling, waking promptly on an enqueue. Concurrent
    /// reservers MUST never receive the same task under overlapping leases.
    ///
    /// # Errors
    /// `Invalid` for an empty `queues` or bad options; `Unavailable`.
    async fn reserve(
        &self,
        queues: &[QueueName],
        opts: ReserveOptions,
    ) -> Result<Option<Lease>, PortError>;

    /// Extends the lease of `task` to now + `lease`.
    ///
    /// # Errors
    /// `LeaseLost` when `token` is not the current lease or it ran out; `NotFound` for an
    /// unknown task; `Invalid` for a bad lease length; `Unavailable`.
    async fn heartbeat(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        lease: Duration,
    ) -> Result<Lease, PortError>;

    /// Records success with an optional result. Exactly once per task: only the current
    /// lease holder succeeds.
    ///
    /// # Errors
    /// `LeaseLost`, `NotFound`, `Invalid` (result too large), `Unavailable`.
    async fn complete(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        result: Option<serde_json::Value>,
    ) -> Result<Task, PortError>;

    /// Records a failed attempt: retried per [`Failure::retry`] while attempts remain,
    /// otherwise dead with the error kept as `last_error`.
    ///
    /// # Errors
    /// `LeaseLost`, `NotFound`, `Invalid` (error too long), `Unavailable`.
    async fn fail(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        failure: Failure,
    ) -> Result<Task, PortError>;

    /// Hands a running task back unfinished, for a lease holder that stops before the work
    /// is done (a worker shutting down): the lease is revoked and the task is `queued` again
    /// at once, behind the tasks already ready at its priority (ready since now, like a
    /// reclaimed lease), so any reserver can take it. The interrupted attempt MUST NOT count:
    /// `attempts` goes back down by one, so a release never sends a task to the dead-letter
    /// set, even on its last attempt. The fencing sequence is kept: `token` is dead from now
    /// on (any later call with it is `LeaseLost`) and the next reservation gets a greater
    /// one. `last_error` becomes `"released: <reason>"`; waiting reservers are woken.
    /// Follows [`spool_domain::task::Task::release`]. One atomic round trip.
    ///
    /// # Errors
    /// `LeaseLost` when `token` is not the current lease or it ran out (an expired lease is
    /// reclaimed as usual, with the attempt counted); `NotFound` for an unknown task;
    /// `Invalid` for a `reason` over `max_error_bytes`; `Unavailable`.
    async fn release(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        reason: &str,
    ) -> Result<Task, PortError>;

    /// Cancels a task that is scheduled, queued, failed (awaiting retry) or running (its lease
    /// is revoked: the holder gets `LeaseLost`).
    ///
    /// # Errors
    /// `Conflict` when it already finished; `NotFound`; `Unavailable`.
    async fn cancel(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError>;

    /// Puts a dead or cancelled task back in the queue with its attempts reset.
    ///
    /// # Errors
    /// `Conflict` when it is not dead or cancelled; `NotFound`; `Unavailable`.
    async fn requeue(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError>;

    /// Reads a task; `None` when unknown or past retention.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn get(&self, queue: &QueueName, task: TaskId) -> Result<Option<Task>, PortError>;

    /// Depth per status of each queue (every queue that ever received a task when `queues`
    /// is empty), sorted by name.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn stats(&self, queues: &[QueueName]) -> Result<Vec<QueueStats>, PortError>;
}
