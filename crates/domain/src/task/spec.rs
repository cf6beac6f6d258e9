//! What a producer asks for when it enqueues.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::names::{CorrelationId, TaskKind, UniqueKey};
use crate::time::duration_millis;
use crate::{Timestamp, ValidationError};

/// Strict priority: higher runs first; FIFO within one priority. `-100..=100`, default `0`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Priority(i8);

impl Priority {
    /// The lowest priority.
    pub const MIN: Priority = Priority(-100);
    /// The highest priority.
    pub const MAX: Priority = Priority(100);
    /// The default priority.
    pub const NORMAL: Priority = Priority(0);

    /// Validates `-100..=100`.
    pub fn new(p: i64) -> Result<Self, ValidationError> {
        if !(-100..=100).contains(&p) {
            return Err(ValidationError::new(
                "priority",
                format!("{p} is out of range -100..=100"),
            ));
        }
        Ok(Self(p as i8))
    }

    /// The value.
    pub fn get(self) -> i8 {
        self.0
    }

    /// Position of this priority in the ready order: 0 for the highest, 200 for the lowest.
    /// Adapters order ready tasks by `(rank, sequence)`.
    pub fn rank(self) -> u64 {
        (100 - i64::from(self.0)) as u64
    }
}

impl TryFrom<i64> for Priority {
    type Error = ValidationError;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<Priority> for i64 {
    fn from(p: Priority) -> i64 {
        i64::from(p.0)
    }
}

/// How many times a task may be attempted: `1..=1000`, default 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct MaxAttempts(u32);

impl MaxAttempts {
    /// Validates `1..=1000`.
    pub fn new(n: u32) -> Result<Self, ValidationError> {
        if !(1..=1000).contains(&n) {
            return Err(ValidationError::new(
                "max attempts",
                format!("{n} is out of range 1..=1000"),
            ));
        }
        Ok(Self(n))
    }

    /// The value.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for MaxAttempts {
    fn default() -> Self {
        Self(3)
    }
}

impl TryFrom<u32> for MaxAttempts {
    type Error = ValidationError;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<MaxAttempts> for u32 {
    fn from(m: MaxAttempts) -> u32 {
        m.0
    }
}

/// When a task becomes ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    /// Ready at once.
    #[default]
    Now,
    /// Ready after this delay, measured by the backend's clock at enqueue.
    After(Duration),
    /// Ready at this instant (in the past means now).
    At(Timestamp),
}

impl Schedule {
    /// Longest accepted delay (365 days).
    pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

    /// The instant the task becomes ready, given the backend's `now`.
    pub fn due_at(self, now: Timestamp) -> Timestamp {
        match self {
            Schedule::Now => now,
            Schedule::After(d) => now.saturating_add(d),
            Schedule::At(t) => t.max(now),
        }
    }

    fn validate(self) -> Result<(), ValidationError> {
        match self {
            Schedule::After(d) if d > Self::MAX_DELAY => Err(ValidationError::new(
                "delay",
                format!("{} ms exceeds the maximum of 365 days", duration_millis(d)),
            )),
            _ => Ok(()),
        }
    }
}

/// Everything a producer says about a new task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// What the task is, for routing to a handler.
    pub kind: TaskKind,
    /// The handler's input.
    pub payload: serde_json::Value,
    /// Strict priority.
    pub priority: Priority,
    /// When it becomes ready.
    pub schedule: Schedule,
    /// Attempts before it goes to the dead-letter set.
    pub max_attempts: MaxAttempts,
    /// Delay between attempts after a failure.
    pub backoff: Backoff,
    /// How long one attempt may run; the worker runtime enforces it. `None`: the lease only.
    pub timeout: Option<Duration>,
    /// De-duplication: while a live task has this key, enqueue returns that task.
    pub unique_key: Option<UniqueKey>,
    /// Carried into the task, the handler's span and its progress events.
    pub correlation_id: Option<CorrelationId>,
}

impl TaskSpec {
    /// A task of `kind` with `payload` and every other field at its default.
    pub fn new(kind: TaskKind, payload: serde_json::Value) -> Self {
        Self {
            kind,
            payload,
            priority: Priority::NORMAL,
            schedule: Schedule::Now,
            max_attempts: MaxAttempts::default(),
            backoff: Backoff::default(),
            timeout: None,
            unique_key: None,
            correlation_id: None,
        }
    }

    /// Sets the priority.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// Sets the schedule.
    pub fn schedule(mut self, s: Schedule) -> Self {
        self.schedule = s;
        self
    }

    /// Sets max attempts.
    pub fn max_attempts(mut self, m: MaxAttempts) -> Self {
        self.max_attempts = m;
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Sets the unique key.
    pub fn unique_key(mut self, k: UniqueKey) -> Self {
        self.unique_key = Some(k);
        self
    }

    /// Sets the correlation ID.
    pub fn correlation_id(mut self, c: CorrelationId) -> Self {
        self.correlation_id = Some(c);
        self
    }

    /// Checks the parts a type cannot: schedule and backoff bounds, payload size.
    pub fn validate(&self, max_payload_bytes: usize) -> Result<(), ValidationError> {
        self.schedule.validate()?;
        self.backoff.validate()?;
        let size = serde_json::to_vec(&self.payload)
            .map_err(|e| ValidationError::new("payload", e.to_string()))?
            .len();
        if size > max_payload_bytes {
            return Err(ValidationError::new(
                "payload",
                format!("{size} bytes exceeds the maximum of {max_payload_bytes}"),
            ));
        }
        Ok(())
    }
}
