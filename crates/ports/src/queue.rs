//! The task-queue port.

use std::time::Duration;

use async_trait::async_trait;
use spool_domain::names::{QueueName, TaskId, WorkerId};
use spool_domain::task::{Failure, Lease, LeaseToken, QueueStats, Task, TaskSpec, TaskStatus};

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

/// Most tasks one [`QueueStore::reserve_many`] call takes.
pub const RESERVE_MANY_MAX: usize = 1_000;

/// The argument checks of [`QueueStore::reserve_many`], for stores that implement it.
///
/// # Errors
/// `Invalid` naming `queues` (none given) or `max` (outside `1..=`[`RESERVE_MANY_MAX`]).
pub fn check_reserve_many(queues: &[QueueName], max: usize) -> Result<(), PortError> {
    if queues.is_empty() {
        return Err(PortError::invalid("queues", "name at least one queue"));
    }
    if max == 0 || max > RESERVE_MANY_MAX {
        return Err(PortError::invalid(
            "max",
            format!("{max} is outside 1..={RESERVE_MANY_MAX}"),
        ));
    }
    Ok(())
}

/// Most completions one [`QueueStore::complete_many`] call takes.
pub const COMPLETE_MANY_MAX: usize = 1_000;

/// One success of a [`QueueStore::complete_many`] batch: what one
/// [`QueueStore::complete`] call would carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The task.
    pub task: TaskId,
    /// Its lease's fencing token.
    pub token: LeaseToken,
    /// The task's result, if any.
    pub result: Option<serde_json::Value>,
}

/// The argument check of [`QueueStore::complete_many`], for stores that implement it.
///
/// # Errors
/// `Invalid` naming `batch` when it is empty or holds more than [`COMPLETE_MANY_MAX`].
pub fn check_complete_many(batch: &[Completion]) -> Result<(), PortError> {
    if batch.is_empty() || batch.len() > COMPLETE_MANY_MAX {
        return Err(PortError::invalid(
            "batch",
            format!(
                "{} completions is outside 1..={COMPLETE_MANY_MAX}",
                batch.len()
            ),
        ));
    }
    Ok(())
}

/// The outcomes of a [`QueueStore::complete_many`] batch of which a layer settled some items
/// itself (`Some` in `decided`, e.g. a result it refused) and passes the rest (`None`), in
/// order, to one `call` (skipped when nothing is left): one outcome per item, in the batch's
/// order.
///
/// # Errors
/// The error of `call`.
pub async fn complete_rest<F, Fut>(
    decided: Vec<Option<Result<(), PortError>>>,
    rest: Vec<Completion>,
    call: F,
) -> Result<Vec<Result<(), PortError>>, PortError>
where
    F: FnOnce(Vec<Completion>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Result<(), PortError>>, PortError>>,
{
    let passed = if rest.is_empty() {
        Vec::new()
    } else {
        call(rest).await?
    };
    let mut passed = passed.into_iter();
    Ok(decided
        .into_iter()
        .map(|d| {
            d.or_else(|| passed.next()).unwrap_or_else(|| {
                Err(PortError::internal(
                    "complete_many: the store gave fewer outcomes than items",
                ))
            })
        })
        .collect())
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

/// Which tasks [`QueueStore::list`] returns, and in what order.
///
/// | listing | statuses | order |
/// |---|---|---|
/// | `Queued` | `queued` | the order `reserve` takes them: highest priority first, FIFO within one |
/// | `Scheduled` | `scheduled` (delayed) | soonest due first |
/// | `Retrying` | `failed` (awaiting a retry) | soonest retry first |
/// | `Running` | `running` | soonest lease expiry first |
/// | `Succeeded`, `Dead`, `Cancelled` | that one | newest finished first |
/// | `Finished` | `succeeded`, `dead`, `cancelled` | newest finished first |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskListing {
    /// Ready tasks, in reservation order.
    Queued,
    /// Delayed tasks, soonest due first.
    Scheduled,
    /// Tasks that failed an attempt and wait for their retry, soonest first.
    Retrying,
    /// Tasks under a lease, soonest expiry first.
    Running,
    /// Succeeded tasks, newest first.
    Succeeded,
    /// Dead-lettered tasks, newest first.
    Dead,
    /// Cancelled tasks, newest first.
    Cancelled,
    /// Every finished task (succeeded, dead or cancelled), newest first.
    Finished,
}

impl TaskListing {
    /// Every listing.
    pub const ALL: [TaskListing; 8] = [
        TaskListing::Queued,
        TaskListing::Scheduled,
        TaskListing::Retrying,
        TaskListing::Running,
        TaskListing::Succeeded,
        TaskListing::Dead,
        TaskListing::Cancelled,
        TaskListing::Finished,
    ];

    /// The wire name: the status name (`queued`, `scheduled`, `failed`, `running`,
    /// `succeeded`, `dead`, `cancelled`), or `finished`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskListing::Queued => "queued",
            TaskListing::Scheduled => "scheduled",
            TaskListing::Retrying => "failed",
            TaskListing::Running => "running",
            TaskListing::Succeeded => "succeeded",
            TaskListing::Dead => "dead",
            TaskListing::Cancelled => "cancelled",
            TaskListing::Finished => "finished",
        }
    }

    /// Parses [`Self::as_str`] (and `retrying` for [`TaskListing::Retrying`]).
    ///
    /// # Errors
    /// `Invalid` naming `status` and the accepted names.
    pub fn parse(s: &str) -> Result<Self, PortError> {
        if s == "retrying" {
            return Ok(TaskListing::Retrying);
        }
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                PortError::invalid(
                    "status",
                    "must be one of queued, scheduled, failed, running, succeeded, dead, \
                     cancelled, finished",
                )
            })
    }

    /// Whether a task of `status` belongs to this listing.
    pub fn includes(self, status: TaskStatus) -> bool {
        match self {
            TaskListing::Queued => status == TaskStatus::Queued,
            TaskListing::Scheduled => status == TaskStatus::Scheduled,
            TaskListing::Retrying => status == TaskStatus::Failed,
            TaskListing::Running => status == TaskStatus::Running,
            TaskListing::Succeeded => status == TaskStatus::Succeeded,
            TaskListing::Dead => status == TaskStatus::Dead,
            TaskListing::Cancelled => status == TaskStatus::Cancelled,
            TaskListing::Finished => status.is_finished(),
        }
    }
}

/// What [`QueueStore::list`] returns: a listing and how many tasks at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskQuery {
    /// Which tasks, in which order.
    pub listing: TaskListing,
    /// At most this many (`1 ..= MAX_LIMIT`).
    pub limit: usize,
}

impl TaskQuery {
    /// Largest `limit`.
    pub const MAX_LIMIT: usize = 200;
    /// `Scheduled` and `Retrying` tasks share one due-time index; a listing of either looks
    /// at no more than this many of its soonest entries, so the work per call stays bounded.
    pub const MAX_SCAN: usize = 1_000;

    /// Up to `limit` tasks of `listing`.
    pub fn new(listing: TaskListing, limit: usize) -> Self {
        Self { listing, limit }
    }

    /// Checks the bounds.
    ///
    /// # Errors
    /// `Invalid` naming `limit` when it is 0 or over [`Self::MAX_LIMIT`].
    pub fn validate(&self) -> Result<(), PortError> {
        if self.limit == 0 || self.limit > Self::MAX_LIMIT {
            return Err(PortError::invalid(
                "limit",
                format!("must be 1 ..= {}", Self::MAX_LIMIT),
            ));
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

    /// Takes up to `max` ready tasks at once: what up to `max` non-waiting
    /// [`QueueStore::reserve`] calls would take one after another (`opts.wait` is ignored), in
    /// the same order — the first of `queues` with work first, then highest priority, FIFO
    /// within one. Every task gets its own lease with its own fencing token, exactly as from
    /// `reserve`. Returns fewer leases, or none, when fewer tasks are ready. A store SHOULD
    /// do this in one round trip per queue; the default calls `reserve` up to `max` times.
    ///
    /// # Errors
    /// `Invalid` for an empty `queues`, `max` outside `1..=`[`RESERVE_MANY_MAX`] or bad
    /// options; `Unavailable`. Tasks this call had already leased when an error cut it short
    /// are not lost: their leases expire and they are delivered again.
    async fn reserve_many(
        &self,
        queues: &[QueueName],
        max: usize,
        opts: ReserveOptions,
    ) -> Result<Vec<Lease>, PortError> {
        check_reserve_many(queues, max)?;
        opts.validate()?;
        let opts = opts.wait(Duration::ZERO);
        let mut leases = Vec::with_capacity(max.min(64));
        while leases.len() < max {
            match self.reserve(queues, opts.clone()).await? {
                Some(lease) => leases.push(lease),
                None => break,
            }
        }
        Ok(leases)
    }

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

    /// Records the success of several tasks of `queue` at once: each item exactly as one
    /// [`QueueStore::complete`] would record it, each checked against its own lease and fencing
    /// token, in the given order (a task named twice succeeds once; the second is `LeaseLost`).
    /// Returns one outcome per item, in order: `Ok(())`, or the error `complete` would have
    /// given for that item alone (`LeaseLost`, `NotFound`, `Invalid` for a result too large) —
    /// one item's error never stops the others. Only the outcome travels back, not the task. A
    /// store SHOULD do this in one round trip; the default calls `complete` per item.
    ///
    /// # Errors
    /// `Invalid` for an empty batch or one over [`COMPLETE_MANY_MAX`]; `Unavailable`. When an
    /// error cuts the call short, items may have been recorded, as when the reply of a
    /// `complete` is lost: a recorded success stays recorded, and an unrecorded one is
    /// delivered again after its lease.
    async fn complete_many(
        &self,
        queue: &QueueName,
        batch: Vec<Completion>,
    ) -> Result<Vec<Result<(), PortError>>, PortError> {
        check_complete_many(&batch)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for c in batch {
            outcomes.push(
                match self.complete(queue, c.task, c.token, c.result).await {
                    Ok(_) => Ok(()),
                    Err(
                        e @ (PortError::LeaseLost { .. }
                        | PortError::NotFound { .. }
                        | PortError::Invalid(_)),
                    ) => Err(e),
                    Err(e) => return Err(e),
                },
            );
        }
        Ok(outcomes)
    }

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

    /// Puts a dead or cancelled task back in the queue with its attempts reset; it takes its
    /// unique key (if any) back.
    ///
    /// # Errors
    /// `Conflict` when it is not dead or cancelled, or when another live task now holds its
    /// unique key (two live tasks MUST never share one); `NotFound`; `Unavailable`.
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

    /// Lists up to `query.limit` tasks of `queue` that belong to `query.listing`, in the
    /// listing's order (see [`TaskListing`]). Like [`Self::get`], the queue's maintenance
    /// comes first (due tasks become ready, expired leases are reclaimed), so every listed
    /// task MUST show the status any worker would act on, and MUST belong to the listing.
    /// Finished tasks MUST appear only within their retention. Tasks finished at the same
    /// instant come in an unspecified order.
    ///
    /// The work per call MUST be bounded by the limit: `Queued`, `Running` and the finished
    /// listings read at most `limit` entries of their index (`Finished`: of each of the three);
    /// `Scheduled` and `Retrying` share one due-time index and look at no more than its
    /// [`TaskQuery::MAX_SCAN`] soonest entries, so a task due after those MAY be missing.
    /// An unknown queue lists nothing. One round trip.
    ///
    /// # Errors
    /// `Invalid` naming `limit` when it is 0 or over [`TaskQuery::MAX_LIMIT`];
    /// `Unavailable` when the backend cannot answer.
    async fn list(&self, queue: &QueueName, query: TaskQuery) -> Result<Vec<Task>, PortError>;
}
