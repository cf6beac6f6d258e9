//! The JSON shapes of the HTTP contract (DESIGN.md, "HTTP API (v1)"), mapped from the domain
//! types so the wire format changes only here. Timestamps are RFC 3339 strings or `null`;
//! enum values are lowercase snake_case.

use serde::Serialize;
use spool_domain::progress::{Operation, OperationState, Step};
use spool_domain::task::{Lease, QueueStats, Task, TaskStatus};
use spool_domain::Timestamp;

/// `task`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskDto {
    /// ULID.
    pub id: String,
    /// Queue name.
    pub queue: String,
    /// Task kind.
    pub kind: String,
    /// Handler input.
    pub payload: serde_json::Value,
    /// `-100..=100`.
    pub priority: i64,
    /// `scheduled | queued | running | succeeded | failed | dead | cancelled`.
    pub status: TaskStatus,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Correlation ID.
    pub correlation_id: Option<String>,
    /// Accepted at.
    pub enqueued_at: Timestamp,
    /// Due at (delays and retries).
    pub scheduled_for: Option<Timestamp>,
    /// Latest attempt started at.
    pub started_at: Option<Timestamp>,
    /// Latest heartbeat.
    pub heartbeat_at: Option<Timestamp>,
    /// Finished at (succeeded, dead, cancelled).
    pub finished_at: Option<Timestamp>,
    /// The latest error.
    pub last_error: Option<String>,
    /// The handler's result.
    pub result: Option<serde_json::Value>,
    /// De-duplication key (extra field).
    pub unique_key: Option<String>,
    /// Worker holding or last holding the lease (extra field).
    pub worker: Option<String>,
    /// When the current lease runs out (extra field).
    pub lease_expires_at: Option<Timestamp>,
    /// Per-attempt timeout in ms (extra field).
    pub timeout_ms: Option<u64>,
}

impl From<&Task> for TaskDto {
    fn from(t: &Task) -> Self {
        Self {
            id: t.id.to_string(),
            queue: t.queue.to_string(),
            kind: t.kind.to_string(),
            payload: t.payload.clone(),
            priority: i64::from(t.priority),
            status: t.status,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            correlation_id: t.correlation_id.as_ref().map(ToString::to_string),
            enqueued_at: t.enqueued_at,
            scheduled_for: t.scheduled_for,
            started_at: t.started_at,
            heartbeat_at: t.heartbeat_at,
            finished_at: t.finished_at,
            last_error: t.last_error.clone(),
            result: t.result.clone(),
            unique_key: t.unique_key.as_ref().map(ToString::to_string),
            worker: t.worker.as_ref().map(ToString::to_string),
            lease_expires_at: t.lease_expires_at,
            timeout_ms: t.timeout_ms,
        }
    }
}

/// `lease`.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseDto {
    /// The task, status `running`.
    pub task: TaskDto,
    /// Fencing token, a decimal string; present it to heartbeat, complete and fail.
    pub lease_token: String,
    /// When the lease runs out unless extended.
    pub lease_expires_at: Timestamp,
}

impl From<&Lease> for LeaseDto {
    fn from(l: &Lease) -> Self {
        Self {
            task: TaskDto::from(&l.task),
            lease_token: l.token.to_string(),
            lease_expires_at: l.expires_at,
        }
    }
}

/// One queue in `stats`.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStatsDto {
    /// Queue name.
    pub name: String,
    /// Ready.
    pub queued: u64,
    /// Waiting for a delay or a retry.
    pub scheduled: u64,
    /// Leased.
    pub running: u64,
    /// Succeeded, retained.
    pub succeeded: u64,
    /// Dead letters.
    pub dead: u64,
    /// Cancelled, retained (extra field).
    pub cancelled: u64,
    /// Age of the oldest ready task.
    pub oldest_waiting_ms: Option<u64>,
}

impl From<&QueueStats> for QueueStatsDto {
    fn from(s: &QueueStats) -> Self {
        Self {
            name: s.name.clone(),
            queued: s.queued,
            scheduled: s.scheduled,
            running: s.running,
            succeeded: s.succeeded,
            dead: s.dead,
            cancelled: s.cancelled,
            oldest_waiting_ms: s.oldest_waiting_ms,
        }
    }
}

/// `stats`.
#[derive(Debug, Clone, Serialize)]
pub struct StatsDto {
    /// Every queue, by name.
    pub queues: Vec<QueueStatsDto>,
}

/// `GET /v1/queues/{queue}/tasks`: one listing of a queue (extra endpoint, for the
/// dashboard).
#[derive(Debug, Clone, Serialize)]
pub struct TaskListDto {
    /// Queue name.
    pub queue: String,
    /// The listing: a status name, or `finished`.
    pub status: String,
    /// The limit applied.
    pub limit: usize,
    /// The tasks, in the listing's order.
    pub tasks: Vec<TaskDto>,
}

/// One step of an `operation`.
#[derive(Debug, Clone, Serialize)]
pub struct StepDto {
    /// Step name.
    pub name: String,
    /// Relative weight.
    pub weight: u32,
    /// Done fraction, `0.0..=1.0`.
    pub fraction: f64,
}

impl From<&Step> for StepDto {
    fn from(s: &Step) -> Self {
        Self {
            name: s.name.to_string(),
            weight: s.weight,
            fraction: s.fraction,
        }
    }
}

/// `operation`.
#[derive(Debug, Clone, Serialize)]
pub struct OperationDto {
    /// Operation ID.
    pub id: String,
    /// Correlation ID.
    pub correlation_id: Option<String>,
    /// `running | succeeded | failed | cancelled`.
    pub state: OperationState,
    /// Overall percent, `0.0..=100.0`.
    pub percent: f64,
    /// Latest message.
    pub message: Option<String>,
    /// The plan.
    pub steps: Vec<StepDto>,
    /// Last change.
    pub updated_at: Timestamp,
    /// Start (extra field).
    pub created_at: Timestamp,
}

impl From<&Operation> for OperationDto {
    fn from(o: &Operation) -> Self {
        Self {
            id: o.id.to_string(),
            correlation_id: o.correlation_id.as_ref().map(ToString::to_string),
            state: o.state,
            percent: o.percent,
            message: o.message.clone(),
            steps: o.steps.iter().map(StepDto::from).collect(),
            updated_at: o.updated_at,
            created_at: o.created_at,
        }
    }
}
