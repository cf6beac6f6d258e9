//! Resilience and graceful degradation around a remote backend (Redis).
//!
//! [`Resilient::wrap`] puts each of the backend's four ports behind a wrapper that implements
//! the same port trait over the backend (the *primary*) and an in-process memory store (the
//! *fallback*, built with the same [`StoreLimits`]). The services cannot tell the difference;
//! [`ResilienceStatus`] says which side each one is on.
//!
//! | file | concern |
//! |---|---|
//! | `guard.rs` | [`Guard`]: one circuit breaker per backend + retries with backoff and full jitter |
//! | `cache.rs` | [`ResilientCache`]: local cache during an outage, invalidation of touched projects on recovery |
//! | `limiter.rs` | [`ResilientLimiter`]: each policy's failure mode (`local`, `open`, `closed`) |
//! | `queue.rs` | [`ResilientQueue`]: local queue during an outage, hand-over by ID on recovery |
//! | `progress.rs` | [`ResilientProgress`]: local operations during an outage, hand-over on recovery |
//! | `status.rs` | [`ResilienceStatus`]: mode and breaker per service, for health and metrics |
//! | `supervisor.rs` | the background task that probes the backend and runs recovery and hand-over |
//!
//! # Guard: breaker and retries
//!
//! One breaker per backend, shared by the four wrappers (`[resilience.breaker]`: failure rate
//! over a sliding window, minimum calls, open duration, half-open probes; the pure state
//! machine is [`spool_domain::breaker`]), running on a [`Clock`] — the same [`TokioClock`] as
//! the memory adapter, so tests on a paused tokio clock are deterministic. Every call to the
//! primary goes through [`Guard::call`]:
//!
//! - breaker open → the primary is **not called**; the call fails fast to the fallback;
//! - a transient error ([`is_transient`](spool_ports::PortError::is_transient): unreachable,
//!   timed out) counts as a breaker failure and is retried (`[resilience.retry]`:
//!   `max_retries`, then delays doubling from `initial` up to `max`, each drawn uniformly from
//!   `[0, delay]` — full jitter) while the breaker still admits; when retries run out the
//!   fallback serves the call;
//! - any other error (`Invalid`, `NotFound`, `Conflict`, `LeaseLost`, ...) proves the backend
//!   answered: it goes back to the caller untouched, is never retried and does not count;
//! - a success counts as one; enough half-open successes close the breaker.
//!
//! # Degradation per service
//!
//! **Cache.** While the primary is unavailable every call is served by a local
//! [`MemoryCache`](spool_adapter_memory::MemoryCache) that starts empty at each outage: the
//! first call that finds the primary unavailable (breaker open, or transient failures after
//! the retries) switches the whole cache to the fallback, and it stays there until the
//! recovery below. Reads never mix: one read goes either to the primary or to the fallback,
//! and no read in between alternates between the two. Projects written,
//! deleted from or invalidated during the outage are remembered (at most
//! [`cache::DEFAULT_MAX_TOUCHED_PROJECTS`]; the primary cannot be enumerated without a scan,
//! so past the bound the extra projects are not remembered, a warning is logged, and their
//! values may be served stale until their TTL ends). Recovery ([`ResilientCache::recover`],
//! run by the supervisor once a probe reaches the primary) invalidates every remembered
//! project **on the primary** — so no value that was overwritten, deleted or invalidated
//! during the outage survives there — and only then drops the local cache and sends calls to
//! the primary again. Writes made during the recovery still go local and their projects are
//! invalidated too before the switch.
//!
//! **Limiter.** When the primary cannot answer a check, each policy follows its
//! `failure_mode`: `local` (default) is decided by a local
//! [`MemoryRateLimiter`](spool_adapter_memory::MemoryRateLimiter), all `local` policies of
//! one check together, all-or-nothing; `open` admits and reports its whole limit remaining;
//! `closed` refuses with `retry_after` = the breaker's remaining open time, at least 1 s. The
//! parts combine with [`Decision::combine`](spool_domain::limit::Decision::combine); when a
//! `closed` policy refuses, the local ones only peek, so a refused request consumes nothing.
//!
//! **Queue.** Every enqueue is named (a ULID in [`TaskSpec::id`](spool_domain::task::TaskSpec))
//! before its first attempt, so a retry after a lost reply and the fallback reuse the same
//! ID and the store's ID idempotency means no task is accepted twice. While the primary is
//! unavailable enqueues go to a local [`MemoryQueue`](spool_adapter_memory::MemoryQueue)
//! (at most [`queue::DEFAULT_MAX_LOCAL_TASKS`]; past that, `Unavailable` — refused, never
//! dropped; and the fallback is process memory: it carries accepted tasks through an outage
//! of Redis, not through a crash of this process during one). `reserve` serves ready local
//! tasks first, then the primary (and waits on the
//! local queue while the primary is down). Heartbeat, complete, fail, release, cancel,
//! requeue and get go to where the task lives: the wrapper remembers the IDs it accepted
//! locally, everything else is the primary's. Fencing stays per store, so no task completes
//! twice. On recovery the hand-over ([`ResilientQueue::hand_over`]) moves every waiting local
//! task (queued, scheduled, failed awaiting its retry) to the primary with an `enqueue` under
//! the same ID — first taking it off the local store through an exclusive reservation (or a
//! cancel, for tasks not due within a second), then enqueueing, then forgetting it: an
//! interrupted hand-over simply runs again and the primary answers `Duplicate`. Clients never
//! see the local cancel: until the primary has the task, `get` shows it as it was, and
//! afterwards `get` reads the primary. A handed-over task keeps its kind, payload, priority,
//! backoff, timeout, unique key and correlation ID, is due when it was due, and gets the
//! attempts it had left as its `max_attempts`; its history (`last_error`, timestamps) starts
//! afresh on the primary. Running local tasks finish locally, and their final state stays
//! readable locally for the retention time. Unique keys are enforced per store during an
//! outage; a handed-over task whose key a live primary task holds is handed over without the
//! key rather than lost. Queue stats add the local queued / scheduled / running / succeeded /
//! dead counts to the primary's (local `cancelled` counts are left out: they are mostly
//! copies already handed over); during an outage they describe the local queue only.
//!
//! **Progress.** Operations started during an outage live in a local
//! [`MemoryProgress`](spool_adapter_memory::MemoryProgress) (at most
//! [`progress::DEFAULT_MAX_LOCAL_OPERATIONS`]) and every call about them goes there (route by
//! ID: local first); new operations go to the primary once it answers. Operations that
//! already lived on the primary cannot be updated during the outage (`Unavailable`). On
//! recovery each running local operation is started on the primary under the same ID with
//! its plan, correlation ID and message, and its step fractions are replayed; from then on it
//! is the primary's. Finished local operations stay local until they expire. **SSE resume**:
//! event IDs differ between the stores. A subscription opened on the local store switches to
//! the primary by itself, resuming after the last event it delivered; a client that
//! reconnects with a local `Last-Event-ID` is served by the primary, which — per the port
//! contract for IDs it does not know or that are newer than its latest — starts with a
//! `snapshot`, so no state is missed (IDs may repeat their millisecond part but never hide
//! an update).
//!
//! **Health.** The health port reports the backend's real health (it is not wrapped); the
//! readiness view — each service's mode, the breaker's state, `degraded` — comes from
//! [`ResilienceStatus::snapshot`], and [`ResilienceStatus::attach_metrics`] records the same
//! into the `spool_degraded` and `spool_breaker_state` gauges.
//!
//! # Recovery
//!
//! The supervisor ([`Resilient::spawn_supervisor`]) wakes on every mode change and every
//! half-second while anything is degraded. When the breaker admits a call it probes the
//! backend's health port through the guard; when that answers, it recovers the cache, sets
//! the limiter back to primary, and runs the queue and progress hand-overs
//! ([`Resilient::recover`] does one such round, for tests and embedders).
//!
//! ```
//! use std::sync::Arc;
//! use spool_adapter_memory::TokioClock;
//! use spool_app::memory_backends;
//! use spool_app::resilience::{Resilient, ResilienceOptions, Service};
//! use spool_app::telemetry::ServiceMode;
//! use spool_domain::limits::StoreLimits;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = Arc::new(TokioClock::new());
//! // Any ports can be the primary; production wraps the Redis ones.
//! let primary = memory_backends(&StoreLimits::default(), clock.clone());
//! let resilient = Resilient::wrap(primary, &ResilienceOptions::new(StoreLimits::default()), clock)?;
//! let backends = resilient.backends(); // what the services run on
//! let status = resilient.status().snapshot();
//! assert!(!status.degraded);
//! assert_eq!(status.service(Service::Cache).mode, ServiceMode::Primary);
//! # let _ = backends; Ok(()) }
//! ```

mod cache;
mod guard;
mod limiter;
mod progress;
mod queue;
mod status;
mod supervisor;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use spool_adapter_memory::{Clock, TokioClock};
use spool_domain::breaker::BreakerConfig;
use spool_domain::limits::StoreLimits;
use spool_domain::names::PolicyName;
use spool_domain::ValidationError;
use spool_ports::Health;

pub use cache::{ResilientCache, DEFAULT_MAX_TOUCHED_PROJECTS};
pub use guard::{CallError, Guard, RetryPolicy};
pub use limiter::{ResilientLimiter, MIN_CLOSED_RETRY_AFTER};
pub use progress::{ProgressHandover, ResilientProgress, DEFAULT_MAX_LOCAL_OPERATIONS};
pub use queue::{HandoverReport, ResilientQueue, DEFAULT_MAX_LOCAL_TASKS};
pub use status::{ResilienceSnapshot, ResilienceStatus, Service, ServiceSnapshot};

use crate::config::{ResilienceConfig, Settings};
use crate::services::FailureMode;
use crate::telemetry::ServiceMode;
use crate::wiring::Backends;

/// Everything [`Resilient::wrap`] needs besides the ports and the clock.
#[derive(Debug, Clone, PartialEq)]
pub struct ResilienceOptions {
    /// The breaker of the backend.
    pub breaker: BreakerConfig,
    /// Retries of transient errors.
    pub retry: RetryPolicy,
    /// Bounds of the fallback stores (the backend's own).
    pub limits: StoreLimits,
    /// Failure mode per rate-limit policy; policies not listed are `local`.
    pub failure_modes: HashMap<PolicyName, FailureMode>,
    /// Projects the cache remembers per outage.
    pub max_touched_projects: usize,
    /// Tasks the queue holds locally at once.
    pub max_local_tasks: usize,
    /// Operations progress holds locally at once.
    pub max_local_operations: usize,
}

impl ResilienceOptions {
    /// The defaults of `[resilience]` with fallbacks bounded by `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        let d = ResilienceConfig::default();
        let retry = RetryPolicy::new(d.retry.max_retries, d.retry.initial, d.retry.max)
            .unwrap_or_else(|_| RetryPolicy::none());
        Self {
            breaker: d.breaker.to_domain(),
            retry,
            limits,
            failure_modes: HashMap::new(),
            max_touched_projects: DEFAULT_MAX_TOUCHED_PROJECTS,
            max_local_tasks: DEFAULT_MAX_LOCAL_TASKS,
            max_local_operations: DEFAULT_MAX_LOCAL_OPERATIONS,
        }
    }

    /// The options `[resilience]` and the validated settings (limits, rate-limit failure
    /// modes) describe.
    ///
    /// # Errors
    /// A breaker or retry setting the domain refuses, named.
    pub fn from_config(
        config: &ResilienceConfig,
        settings: &Settings,
    ) -> Result<Self, ValidationError> {
        let breaker = config.breaker.to_domain();
        breaker.validate()?;
        let r = &config.retry;
        Ok(Self {
            breaker,
            retry: RetryPolicy::new(r.max_retries, r.initial, r.max)?,
            limits: settings.limits.clone(),
            failure_modes: settings
                .rate_limits
                .iter()
                .map(|p| (p.policy.name().clone(), p.failure_mode))
                .collect(),
            ..Self::new(settings.limits.clone())
        })
    }
}

/// What one [`Resilient::recover`] round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Whether the backend answered the probe (nothing else runs otherwise).
    pub probed: bool,
    /// Whether the cache is on the primary afterwards.
    pub cache: bool,
    /// The queue hand-over, when it completed.
    pub queue: Option<HandoverReport>,
    /// The progress hand-over, when it completed.
    pub progress: Option<ProgressHandover>,
}

/// The four resilient wrappers of one backend, their guard and status.
pub struct Resilient {
    name: &'static str,
    cache: Arc<ResilientCache>,
    limiter: Arc<ResilientLimiter>,
    queue: Arc<ResilientQueue>,
    progress: Arc<ResilientProgress>,
    health: Arc<dyn Health>,
    guard: Arc<Guard>,
    status: ResilienceStatus,
}

impl fmt::Debug for Resilient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilient")
            .field("backend", &self.name)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Resilient {
    /// Wraps every port of `primary` (its health port stays as is: it reports the backend's
    /// real health), with fallbacks on `clock`.
    ///
    /// # Errors
    /// A bad breaker setting.
    pub fn wrap(
        primary: Backends,
        options: &ResilienceOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ValidationError> {
        let (guard, status) = Guard::new(
            primary.name,
            options.breaker,
            options.retry,
            Arc::clone(&clock),
        )?;
        let limits = &options.limits;
        Ok(Self {
            name: primary.name,
            cache: Arc::new(ResilientCache::new(
                primary.cache,
                Arc::clone(&guard),
                status.clone(),
                limits.clone(),
                Arc::clone(&clock),
                options.max_touched_projects,
            )),
            limiter: Arc::new(ResilientLimiter::new(
                primary.limiter,
                Arc::clone(&guard),
                status.clone(),
                options.failure_modes.clone(),
                limits,
                Arc::clone(&clock),
            )),
            queue: Arc::new(ResilientQueue::new(
                primary.queue,
                Arc::clone(&guard),
                status.clone(),
                limits,
                Arc::clone(&clock),
                options.max_local_tasks,
            )),
            progress: Arc::new(ResilientProgress::new(
                primary.progress,
                Arc::clone(&guard),
                status.clone(),
                limits,
                clock,
                options.max_local_operations,
            )),
            health: primary.health,
            guard,
            status,
        })
    }

    /// [`Resilient::wrap`] with a [`TokioClock`].
    ///
    /// # Errors
    /// As for [`Resilient::wrap`].
    pub fn wrap_with_tokio_clock(
        primary: Backends,
        options: &ResilienceOptions,
    ) -> Result<Self, ValidationError> {
        Self::wrap(primary, options, Arc::new(TokioClock::new()))
    }

    /// The wrapped ports, for the services.
    pub fn backends(&self) -> Backends {
        Backends {
            name: self.name,
            cache: self.cache.clone(),
            limiter: self.limiter.clone(),
            queue: self.queue.clone(),
            progress: self.progress.clone(),
            health: Arc::clone(&self.health),
        }
    }

    /// Mode and breaker per service.
    pub fn status(&self) -> &ResilienceStatus {
        &self.status
    }

    /// The backend's guard.
    pub fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }

    /// The cache wrapper.
    pub fn cache(&self) -> &Arc<ResilientCache> {
        &self.cache
    }

    /// The limiter wrapper.
    pub fn limiter(&self) -> &Arc<ResilientLimiter> {
        &self.limiter
    }

    /// The queue wrapper.
    pub fn queue(&self) -> &Arc<ResilientQueue> {
        &self.queue
    }

    /// The progress wrapper.
    pub fn progress(&self) -> &Arc<ResilientProgress> {
        &self.progress
    }

    /// One recovery round: when the breaker admits a call, probes the backend's health
    /// through the guard; when it answers, recovers the cache, puts the limiter back on the
    /// primary and runs the queue and progress hand-overs.
    pub async fn recover(&self) -> Recovery {
        supervisor::recover(
            &self.guard,
            &self.status,
            &*self.health,
            &self.cache,
            &self.queue,
            &self.progress,
        )
        .await
    }

    /// Spawns the supervisor on the current tokio runtime (see the [module docs](self)). It
    /// holds only weak references and ends once the wrappers are dropped.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_supervisor(&self) -> tokio::task::JoinHandle<()> {
        supervisor::spawn(self)
    }
}

/// How long the supervisor waits between rounds while anything is degraded.
pub const SUPERVISOR_TICK: Duration = Duration::from_millis(500);

fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Resilient>();
    is::<ResilienceStatus>();
}

/// Marks the limiter as served by the primary again (its next check goes there).
fn limiter_back(status: &ResilienceStatus) {
    status.set_mode(Service::Limiter, ServiceMode::Primary);
}
