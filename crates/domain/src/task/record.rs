//! The stored task, its lease, and the transitions that update its timestamps.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::names::{CorrelationId, QueueName, TaskId, TaskKind, UniqueKey, WorkerId};
use crate::task::{Priority, TaskEvent, TaskSpec, TaskStatus, TransitionError};
use crate::Timestamp;

/// The fencing token of a lease: strictly increasing per task, never reused, so a worker
/// whose lease was reclaimed can never complete or fail the task again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseToken(u64);

impl LeaseToken {
    /// Wraps a raw token.
    pub const fn new(v: u64) -> Self {
        Self(v)
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Parses the decimal text form.
    pub fn parse(s: &str) -> Result<Self, crate::ValidationError> {
        s.parse::<u64>().map(Self).map_err(|_| {
            crate::ValidationError::new("lease token", format!("{s:?} is not a lease token"))
        })
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for LeaseToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LeaseToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A stored task with its status and the time of every transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Time-ordered ID.
    pub id: TaskId,
    /// The queue it lives in.
    pub queue: QueueName,
    /// What it is.
    pub kind: TaskKind,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Strict priority.
    pub priority: Priority,
    /// Current status.
    pub status: TaskStatus,
    /// Attempts started so far (incremented by each reservation).
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Retry schedule.
    pub backoff: Backoff,
    /// Per-attempt timeout in ms, if any.
    pub timeout_ms: Option<u64>,
    /// De-duplication key, if any.
    pub unique_key: Option<UniqueKey>,
    /// Correlation ID, if any.
    pub correlation_id: Option<CorrelationId>,
    /// When it was accepted.
    pub enqueued_at: Timestamp,
    /// When it is (or was last) due: set by a delay or a retry.
    pub scheduled_for: Option<Timestamp>,
    /// When the latest attempt started.
    pub started_at: Option<Timestamp>,
    /// The latest heartbeat of the current attempt.
    pub heartbeat_at: Option<Timestamp>,
    /// When it finished (succeeded, dead or cancelled).
    pub finished_at: Option<Timestamp>,
    /// When the current lease runs out.
    pub lease_expires_at: Option<Timestamp>,
    /// The worker holding (or that last held) the lease.
    pub worker: Option<WorkerId>,
    /// The latest error.
    pub last_error: Option<String>,
    /// The handler's result on success.
    pub result: Option<serde_json::Value>,
    /// The fencing sequence: the token of the latest lease.
    pub lease_seq: u64,
}

/// A reservation: the task plus the token every later call must present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The task, status `running`.
    pub task: Task,
    /// Fencing token.
    #[serde(rename = "lease_token")]
    pub token: LeaseToken,
    /// When the lease runs out unless extended by a heartbeat.
    #[serde(rename = "lease_expires_at")]
    pub expires_at: Timestamp,
}

/// Whether and when a failed attempt is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retry {
    /// Retry with the task's backoff while attempts remain; dead after the last.
    #[default]
    Backoff,
    /// Retry after this delay while attempts remain.
    After(Duration),
    /// Do not retry: dead now.
    Never,
}

/// A failed attempt as reported by the lease holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The error, kept as `last_error`.
    pub error: String,
    /// Retry or not.
    pub retry: Retry,
}

/// Depth of one queue per status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueueStats {
    /// The queue.
    pub name: String,
    /// Ready to reserve.
    pub queued: u64,
    /// Waiting for a delay or a retry (`scheduled` and `failed`).
    pub scheduled: u64,
    /// Leased to a worker.
    pub running: u64,
    /// Succeeded and still retained.
    pub succeeded: u64,
    /// In the dead-letter set.
    pub dead: u64,
    /// Cancelled and still retained.
    pub cancelled: u64,
    /// Age of the oldest ready task (since it became ready), if any.
    pub oldest_waiting_ms: Option<u64>,
}

impl Task {
    /// A new task from `spec`, accepted at `now`.
    pub fn new(id: TaskId, queue: QueueName, spec: TaskSpec, now: Timestamp) -> Self {
        let due = spec.schedule.due_at(now);
        let delayed = due > now;
        Self {
            id,
            queue,
            kind: spec.kind,
            payload: spec.payload,
            priority: spec.priority,
            status: if delayed {
                TaskStatus::Scheduled
            } else {
                TaskStatus::Queued
            },
            attempts: 0,
            max_attempts: spec.max_attempts.get(),
            backoff: spec.backoff,
            timeout_ms: spec.timeout.map(crate::time::duration_millis),
            unique_key: spec.unique_key,
            correlation_id: spec.correlation_id,
            enqueued_at: now,
            scheduled_for: delayed.then_some(due),
            started_at: None,
            heartbeat_at: None,
            finished_at: None,
            lease_expires_at: None,
            worker: None,
            last_error: None,
            result: None,
            lease_seq: 0,
        }
    }

    fn step(&mut self, event: TaskEvent) -> Result<(), TransitionError> {
        self.status = self.status.apply(event)?;
        Ok(())
    }

    /// A scheduled or retrying task becomes ready.
    pub fn make_due(&mut self) -> Result<(), TransitionError> {
        self.step(TaskEvent::Due)
    }

    /// Reserves the task for `worker` until `now + lease`; returns the new lease.
    pub fn reserve(
        &mut self,
        now: Timestamp,
        lease: Duration,
        worker: Option<WorkerId>,
    ) -> Result<Lease, TransitionError> {
        self.step(TaskEvent::Reserve)?;
        self.attempts += 1;
        self.lease_seq += 1;
        self.started_at = Some(now);
        self.heartbeat_at = Some(now);
        self.lease_expires_at = Some(now.saturating_add(lease));
        self.worker = worker;
        Ok(self.lease())
    }

    /// The current lease of a running task.
    pub fn lease(&self) -> Lease {
        Lease {
            task: self.clone(),
            token: LeaseToken(self.lease_seq),
            expires_at: self.lease_expires_at.unwrap_or(self.enqueued_at),
        }
    }

    /// Whether `token` is the current lease's token and the lease is still live at `now`.
    pub fn holds_lease(&self, token: LeaseToken, now: Timestamp) -> bool {
        self.status == TaskStatus::Running
            && token.0 == self.lease_seq
            && self.lease_expires_at.is_some_and(|exp| exp > now)
    }

    /// Extends the lease to `now + lease`.
    pub fn heartbeat(&mut self, now: Timestamp, lease: Duration) -> Result<Lease, TransitionError> {
        self.step(TaskEvent::Heartbeat)?;
        self.heartbeat_at = Some(now);
        self.lease_expires_at = Some(now.saturating_add(lease));
        Ok(self.lease())
    }

    /// Records success.
    pub fn complete(
        &mut self,
        now: Timestamp,
        result: Option<serde_json::Value>,
    ) -> Result<(), TransitionError> {
        self.step(TaskEvent::Complete)?;
        self.finished_at = Some(now);
        self.lease_expires_at = None;
        self.result = result;
        Ok(())
    }

    /// Records a failed attempt. `random` in `[0, 1)` feeds the backoff jitter. The task is
    /// retried (status `failed`, due at `scheduled_for`) while attempts remain and the failure
    /// allows it; otherwise it is dead.
    pub fn fail(
        &mut self,
        now: Timestamp,
        failure: Failure,
        random: f64,
    ) -> Result<(), TransitionError> {
        let delay = match failure.retry {
            Retry::Never => None,
            _ if self.attempts >= self.max_attempts => None,
            Retry::Backoff => Some(self.backoff.delay(self.attempts, random)),
            Retry::After(d) => Some(d),
        };
        // Check the transition before touching any field: a refused event changes nothing.
        match delay {
            Some(d) => {
                self.step(TaskEvent::FailRetry)?;
                self.scheduled_for = Some(now.saturating_add(d));
            }
            None => {
                self.step(TaskEvent::FailDead)?;
                self.finished_at = Some(now);
            }
        }
        self.last_error = Some(failure.error);
        self.lease_expires_at = None;
        Ok(())
    }

    /// Reclaims a running task whose lease ran out: back to `queued` while attempts remain,
    /// `dead` otherwise, with `last_error` saying so.
    pub fn expire_lease(&mut self, now: Timestamp) -> Result<(), TransitionError> {
        if self.attempts >= self.max_attempts {
            self.step(TaskEvent::LeaseExpiredDead)?;
            self.finished_at = Some(now);
            self.last_error = Some(format!(
                "lease expired on attempt {} of {}",
                self.attempts, self.max_attempts
            ));
        } else {
            self.step(TaskEvent::LeaseExpiredRetry)?;
            self.last_error = Some(format!("lease expired on attempt {}", self.attempts));
        }
        self.lease_expires_at = None;
        Ok(())
    }

    /// The lease holder hands a running task back unfinished (a worker shutting down, say):
    /// the lease is revoked and the task is `queued` again at once, with the interrupted
    /// attempt not counted (`attempts` goes back down by one, never below 0) — so a release
    /// never sends a task to the dead-letter set, even on its last attempt. `lease_seq` is
    /// kept, so the next reservation's token is still greater than the released one.
    /// `last_error` becomes `"released: <reason>"`; `started_at`, `heartbeat_at` and `worker`
    /// keep describing the interrupted attempt, as after a reclaimed lease.
    ///
    /// No timestamp is stored: when the task became ready again is the adapter's ready-since
    /// order (the release time), as for any task that becomes ready.
    pub fn release(&mut self, reason: &str) -> Result<(), TransitionError> {
        self.step(TaskEvent::Release)?;
        self.attempts = self.attempts.saturating_sub(1);
        self.lease_expires_at = None;
        self.last_error = Some(format!("released: {reason}"));
        Ok(())
    }

    /// Cancels a live task; a running task's lease is revoked.
    pub fn cancel(&mut self, now: Timestamp) -> Result<(), TransitionError> {
        self.step(TaskEvent::Cancel)?;
        self.finished_at = Some(now);
        self.lease_expires_at = None;
        Ok(())
    }

    /// Puts a dead or cancelled task back in the queue with fresh attempts.
    pub fn requeue(&mut self) -> Result<(), TransitionError> {
        self.step(TaskEvent::Requeue)?;
        self.attempts = 0;
        self.finished_at = None;
        self.scheduled_for = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::task::MaxAttempts;
    use proptest::prelude::*;

    const LEASE: Duration = Duration::from_secs(10);

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + ms)
    }

    fn task(max_attempts: u32) -> Task {
        let spec = TaskSpec::new(TaskKind::parse("k").unwrap(), serde_json::json!(1))
            .max_attempts(MaxAttempts::new(max_attempts).unwrap());
        Task::new(
            TaskId::from_parts(at(0), 1),
            QueueName::parse("q").unwrap(),
            spec,
            at(0),
        )
    }

    #[test]
    fn release_gives_the_attempt_back_and_keeps_the_fence() {
        let mut t = task(3);
        let worker = WorkerId::parse("w-1").unwrap();
        let lease = t.reserve(at(10), LEASE, Some(worker.clone())).unwrap();
        assert_eq!((t.attempts, t.lease_seq), (1, 1));

        t.release("worker shutting down").unwrap();
        assert_eq!(t.status, TaskStatus::Queued);
        assert_eq!(t.attempts, 0, "the interrupted attempt does not count");
        assert_eq!(t.lease_seq, 1, "the fence is kept");
        assert_eq!(t.lease_expires_at, None, "the lease is revoked");
        assert!(!t.holds_lease(lease.token, at(11)));
        assert_eq!(
            t.last_error.as_deref(),
            Some("released: worker shutting down")
        );
        assert_eq!(t.finished_at, None);
        assert_eq!(t.started_at, Some(at(10)), "still the interrupted attempt");
        assert_eq!(t.worker, Some(worker));

        let next = t.reserve(at(20), LEASE, None).unwrap();
        assert_eq!(t.attempts, 1);
        assert!(next.token > lease.token, "tokens keep increasing");
    }

    #[test]
    fn release_on_the_last_attempt_keeps_the_task_alive() {
        let mut t = task(1);
        for n in 0..3 {
            t.reserve(at(n), LEASE, None).unwrap();
            t.release("again").unwrap();
            assert_eq!((t.status, t.attempts), (TaskStatus::Queued, 0));
        }
        t.reserve(at(5), LEASE, None).unwrap();
        t.expire_lease(at(20_000)).unwrap();
        assert_eq!(
            t.status,
            TaskStatus::Dead,
            "a counted attempt still is the last"
        );
    }

    #[test]
    fn only_a_running_task_can_be_released_and_a_refusal_changes_nothing() {
        let mut t = task(3);
        let before = t.clone();
        let err = t.release("nope").unwrap_err();
        assert_eq!(
            (err.from, err.event),
            (TaskStatus::Queued, TaskEvent::Release)
        );
        assert_eq!(t, before);

        let lease = t.reserve(at(1), LEASE, None).unwrap();
        t.complete(at(2), None).unwrap();
        let done = t.clone();
        assert!(t.release("late").is_err());
        assert_eq!(t, done);
        assert!(!t.holds_lease(lease.token, at(3)));
    }

    #[test]
    fn attempts_never_go_below_zero() {
        // A running task with no counted attempt cannot come out of `reserve`, but a record
        // read back from a store might say so: the release saturates instead of wrapping.
        let mut t = task(1);
        t.reserve(at(0), LEASE, None).unwrap();
        t.attempts = 0;
        t.release("x").unwrap();
        assert_eq!(t.attempts, 0);
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Due,
        Reserve,
        Heartbeat,
        Complete,
        FailBackoff,
        FailNever,
        Expire,
        Release,
        Cancel,
        Requeue,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Due),
            Just(Op::Reserve),
            Just(Op::Heartbeat),
            Just(Op::Complete),
            Just(Op::FailBackoff),
            Just(Op::FailNever),
            Just(Op::Expire),
            Just(Op::Release),
            Just(Op::Cancel),
            Just(Op::Requeue),
        ]
    }

    fn apply(t: &mut Task, op: Op, now: Timestamp) -> Result<(), TransitionError> {
        let failure = |retry| Failure {
            error: "e".into(),
            retry,
        };
        match op {
            Op::Due => t.make_due(),
            Op::Reserve => t.reserve(now, LEASE, None).map(drop),
            Op::Heartbeat => t.heartbeat(now, LEASE).map(drop),
            Op::Complete => t.complete(now, None),
            Op::FailBackoff => t.fail(now, failure(Retry::Backoff), 0.5),
            Op::FailNever => t.fail(now, failure(Retry::Never), 0.5),
            Op::Expire => t.expire_lease(now),
            Op::Release => t.release("shutdown"),
            Op::Cancel => t.cancel(now),
            Op::Requeue => t.requeue(),
        }
    }

    proptest! {
        /// Any sequence of transitions, releases included, keeps the record's invariants:
        /// attempts stay within `0..=max_attempts`, fencing tokens only grow (by one per
        /// reservation), a lease expiry is set exactly while running, and a refused
        /// transition changes nothing.
        #[test]
        fn record_invariants_hold(max in 1u32..4, ops in proptest::collection::vec(op(), 0..80)) {
            let mut t = task(max);
            for (i, op) in ops.into_iter().enumerate() {
                let now = at(i as u64);
                let before = t.clone();
                match apply(&mut t, op, now) {
                    Ok(()) => {
                        let reserved = matches!(op, Op::Reserve);
                        prop_assert_eq!(t.lease_seq, before.lease_seq + u64::from(reserved));
                        if matches!(op, Op::Release) {
                            prop_assert_eq!(t.status, TaskStatus::Queued);
                            prop_assert_eq!(t.attempts + 1, before.attempts);
                        }
                    }
                    Err(_) => prop_assert_eq!(&t, &before),
                }
                prop_assert!(t.attempts <= t.max_attempts, "{:?}", t);
                prop_assert_eq!(t.status == TaskStatus::Running, t.lease_expires_at.is_some());
            }
        }
    }
}
