//! [`AuditEvent`] and [`record`]: one structured `tracing` event per mutating operation.

use std::borrow::Cow;

/// The `tracing` target of every audit event: route it with a filter such as
/// `RUST_LOG=info,spool::audit=info` or a per-layer `Targets` filter.
pub const TARGET: &str = "spool::audit";

/// The principal recorded when the HTTP API runs without API keys.
pub const ANONYMOUS: &str = "anonymous";

/// The principal recorded for a request whose API key is missing or unknown.
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// How the operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// It failed with this error code (`forbidden`, `invalid`, `lease_lost`, ...).
    Error(Cow<'static, str>),
}

impl Outcome {
    /// `ok` or the error code.
    pub fn as_str(&self) -> &str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error(code) => code,
        }
    }
}

/// One audited operation. Holds identifiers only: never a secret, a payload or a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// What was done: `task.enqueue`, `task.cancel`, `task.complete`, `cache.set`, ...
    pub action: Cow<'static, str>,
    /// Who: the API key id, [`ANONYMOUS`], [`UNAUTHENTICATED`], or a worker id.
    pub principal: String,
    /// The project, for project-scoped operations.
    pub project: Option<String>,
    /// The queue, for task operations.
    pub queue: Option<String>,
    /// The task id, when known.
    pub task: Option<String>,
    /// The cache key, for cache operations.
    pub cache_key: Option<String>,
    /// The progress operation id.
    pub operation: Option<String>,
    /// The request's (or task's) correlation id.
    pub correlation_id: Option<String>,
    /// The HTTP status, for HTTP requests.
    pub status: Option<u16>,
    /// How it ended.
    pub outcome: Outcome,
}

impl AuditEvent {
    /// An event for `action` by `principal`, outcome `ok`, with no other field set.
    pub fn new(action: impl Into<Cow<'static, str>>, principal: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            principal: principal.into(),
            project: None,
            queue: None,
            task: None,
            cache_key: None,
            operation: None,
            correlation_id: None,
            status: None,
            outcome: Outcome::Ok,
        }
    }

    /// Sets the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Sets the task id.
    pub fn task(mut self, task: impl ToString) -> Self {
        self.task = Some(task.to_string());
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: Option<impl ToString>) -> Self {
        self.correlation_id = id.map(|c| c.to_string());
        self
    }

    /// Sets the outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }
}

/// Emits `event` on [`TARGET`] at `INFO` (`WARN` when it failed), as one structured event
/// with the fields `action`, `principal`, `project`, `queue`, `task`, `cache_key`,
/// `operation`, `correlation_id`, `status` and `outcome` (fields without a value are left out).
pub fn record(event: &AuditEvent) {
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(
                target: TARGET,
                $level,
                action = %event.action,
                principal = %event.principal,
                project = event.project.as_deref(),
                queue = event.queue.as_deref(),
                task = event.task.as_deref(),
                cache_key = event.cache_key.as_deref(),
                operation = event.operation.as_deref(),
                correlation_id = event.correlation_id.as_deref(),
                status = event.status,
                outcome = event.outcome.as_str(),
                "audit"
            )
        };
    }
    match event.outcome {
        Outcome::Ok => emit!(tracing::Level::INFO),
        Outcome::Error(_) => emit!(tracing::Level::WARN),
    }
}
