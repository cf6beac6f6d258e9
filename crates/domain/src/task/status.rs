//! The task status state machine.

use serde::{Deserialize, Serialize};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for its `scheduled_for` time.
    Scheduled,
    /// Ready to be reserved.
    Queued,
    /// Reserved by a worker under a lease.
    Running,
    /// Completed; finished and retained for the configured time.
    Succeeded,
    /// Failed an attempt and waits for its retry (`scheduled_for`).
    Failed,
    /// Out of attempts (or failed without retry); kept in the dead-letter set.
    Dead,
    /// Cancelled before it finished.
    Cancelled,
}

/// What happens to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskEvent {
    /// A scheduled or retrying task's time has come.
    Due,
    /// A worker takes it.
    Reserve,
    /// The lease holder extends its lease.
    Heartbeat,
    /// The lease holder reports success.
    Complete,
    /// The lease holder reports failure and the task will be retried later.
    FailRetry,
    /// The task fails for good (no attempts left, or no retry wanted).
    FailDead,
    /// The lease ran out and attempts remain: back to the queue.
    LeaseExpiredRetry,
    /// The lease ran out and no attempts remain.
    LeaseExpiredDead,
    /// The lease holder hands the task back unfinished (e.g. a worker shutting down): ready
    /// again at once, the interrupted attempt not counted.
    Release,
    /// Someone cancels it.
    Cancel,
    /// A dead or cancelled task is put back in the queue by hand.
    Requeue,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} task cannot take the event {event:?}")]
pub struct TransitionError {
    /// The status the task was in.
    pub from: TaskStatus,
    /// The refused event.
    pub event: TaskEvent,
}

impl TaskStatus {
    /// Every status, for exhaustive tests and stats.
    pub const ALL: [TaskStatus; 7] = [
        TaskStatus::Scheduled,
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Dead,
        TaskStatus::Cancelled,
    ];

    /// The lowercase name used on the wire and in Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Scheduled => "scheduled",
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Dead => "dead",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Parses [`TaskStatus::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Succeeded, dead and cancelled tasks are finished: retained for a while, then dropped.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Dead | TaskStatus::Cancelled
        )
    }

    /// The status after `event`, or an error when the machine does not allow it.
    pub fn apply(self, event: TaskEvent) -> Result<TaskStatus, TransitionError> {
        use TaskEvent as E;
        use TaskStatus as S;
        let next = match (self, event) {
            (S::Scheduled | S::Failed, E::Due) => S::Queued,
            (S::Queued, E::Reserve) => S::Running,
            (S::Running, E::Heartbeat) => S::Running,
            (S::Running, E::Complete) => S::Succeeded,
            (S::Running, E::FailRetry) => S::Failed,
            (S::Running, E::FailDead | E::LeaseExpiredDead) => S::Dead,
            (S::Running, E::LeaseExpiredRetry | E::Release) => S::Queued,
            (S::Scheduled | S::Queued | S::Running | S::Failed, E::Cancel) => S::Cancelled,
            (S::Dead | S::Cancelled, E::Requeue) => S::Queued,
            (from, event) => return Err(TransitionError { from, event }),
        };
        Ok(next)
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EVENTS: [TaskEvent; 11] = [
        TaskEvent::Due,
        TaskEvent::Reserve,
        TaskEvent::Heartbeat,
        TaskEvent::Complete,
        TaskEvent::FailRetry,
        TaskEvent::FailDead,
        TaskEvent::LeaseExpiredRetry,
        TaskEvent::LeaseExpiredDead,
        TaskEvent::Release,
        TaskEvent::Cancel,
        TaskEvent::Requeue,
    ];

    #[test]
    fn names_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
        }
    }

    proptest! {
        /// Any event sequence keeps the machine's invariants: only running tasks take worker
        /// events, a release always puts the task back in the queue, succeeded is final, and
        /// a finished task only leaves through requeue.
        #[test]
        fn invariants_hold(seq in proptest::collection::vec(0usize..EVENTS.len(), 0..60)) {
            let mut s = TaskStatus::Scheduled;
            for i in seq {
                let e = EVENTS[i];
                match s.apply(e) {
                    Ok(next) => {
                        if matches!(e, TaskEvent::Heartbeat | TaskEvent::Complete | TaskEvent::FailRetry | TaskEvent::FailDead | TaskEvent::Release) {
                            prop_assert_eq!(s, TaskStatus::Running);
                        }
                        if e == TaskEvent::Release {
                            prop_assert_eq!(next, TaskStatus::Queued);
                        }
                        if s.is_finished() {
                            prop_assert_eq!(e, TaskEvent::Requeue);
                            prop_assert_ne!(s, TaskStatus::Succeeded);
                        }
                        s = next;
                    }
                    Err(err) => prop_assert_eq!(err.from, s),
                }
            }
        }
    }
}
