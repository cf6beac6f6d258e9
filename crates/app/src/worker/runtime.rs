//! The worker runtime: reserve, run, heartbeat, report, drain.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use spool_domain::limits::StoreLimits;
use spool_domain::names::{QueueName, TaskKind, WorkerId};
use spool_domain::task::{Failure, Lease, Retry, TaskStatus};
use spool_ports::{PortError, ReserveOptions, RESERVE_MANY_MAX};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::completer::{self, Completer, Completions};
use super::context::{HandlerResult, TaskContext};
use super::registry::{Registry, StartError};
use crate::audit;
use crate::config::WorkerConfig;
use crate::services::{panic_message, ProgressTracker, QueueManager, ServiceError};

/// The reason given when the worker hands an in-flight task back to its queue on shutdown
/// (the task's `last_error` then reads `released: worker shutting down`).
pub const RELEASED_ON_SHUTDOWN: &str = "worker shutting down";

/// Shortest lease: heartbeats go every third of it.
const MIN_LEASE: Duration = Duration::from_millis(3);

/// Most tasks a lane reserves ahead of its free slots (`queues.<q>.prefetch`).
pub(crate) const MAX_PREFETCH: usize = 1024;

/// Shortest reservation wait, so an idle worker never spins.
pub(crate) const MIN_RESERVE_WAIT: Duration = Duration::from_millis(10);

/// Per-queue overrides set on the builder.
#[derive(Debug, Clone, Default)]
struct QueueOverride {
    concurrency: Option<usize>,
    prefetch: Option<usize>,
    lease: Option<Duration>,
}

/// Builds a [`WorkerRuntime`]: register handlers, adjust settings, `build()`.
///
/// ```
/// use spool_app::worker::{HandlerError, TaskContext, WorkerBuilder};
/// use spool_app::services::{ProgressTracker, QueueManager, QueuePolicies};
/// use spool_domain::names::{QueueName, TaskKind};
/// # use std::sync::Arc;
/// # use spool_adapter_memory::{MemoryQueue, MemoryProgress, TokioClock};
/// # use spool_domain::limits::StoreLimits;
///
/// #[derive(serde::Deserialize)]
/// struct Resize { url: String, width: u32 }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let clock = Arc::new(TokioClock::new());
/// # let queue = QueueManager::new(Arc::new(MemoryQueue::new(&StoreLimits::default(), clock.clone())), QueuePolicies::default());
/// # let progress = ProgressTracker::new(Arc::new(MemoryProgress::new(&StoreLimits::default(), clock)));
/// let runtime = WorkerBuilder::new(queue, progress)
///     .register(QueueName::parse("images").unwrap(), TaskKind::parse("resize").unwrap(),
///         |ctx: TaskContext, job: Resize| async move {
///             if job.width == 0 {
///                 return Err(HandlerError::permanent("width must be positive"));
///             }
///             tracing::info!(task = %ctx.task_id(), url = %job.url, "resizing");
///             Ok(Some(serde_json::json!({ "width": job.width })))
///         })
///     .concurrency(&QueueName::parse("images").unwrap(), 2)
///     .build();
/// // runtime.run_until(spool_app::worker::shutdown_signal()).await;
/// # drop(runtime); }
/// ```
pub struct WorkerBuilder {
    queue: QueueManager,
    progress: ProgressTracker,
    registry: Registry,
    overrides: BTreeMap<QueueName, QueueOverride>,
    worker_id: Option<WorkerId>,
    drain_timeout: Duration,
    reserve_wait: Duration,
    max_error_bytes: usize,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queues", &self.registry.queues())
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// A builder with the default `[worker]` settings.
    pub fn new(queue: QueueManager, progress: ProgressTracker) -> Self {
        Self::from_config(
            queue,
            progress,
            &WorkerConfig::default(),
            &StoreLimits::default(),
        )
    }

    /// A builder with `config`'s drain timeout, reserve wait and worker ID (an invalid ID
    /// is replaced by a generated one; `Config::validate` refuses it earlier).
    pub fn from_config(
        queue: QueueManager,
        progress: ProgressTracker,
        config: &WorkerConfig,
        limits: &StoreLimits,
    ) -> Self {
        Self {
            queue,
            progress,
            registry: Registry::default(),
            overrides: BTreeMap::new(),
            worker_id: config.id.as_deref().and_then(|id| WorkerId::parse(id).ok()),
            drain_timeout: config.drain_timeout,
            reserve_wait: config
                .reserve_wait
                .clamp(MIN_RESERVE_WAIT, ReserveOptions::MAX_WAIT),
            max_error_bytes: limits.max_error_bytes,
        }
    }

    /// Registers `handler` for tasks of `kind` on `queue`; the payload is deserialised into
    /// `T` (a payload that does not fit is dead at once, never retried). A second
    /// registration for the same pair replaces the first.
    pub fn register<T, F, Fut>(mut self, queue: QueueName, kind: TaskKind, handler: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(TaskContext, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.registry.insert(queue, kind, handler);
        self
    }

    /// Handlers of `queue` running at once (at least 1); default from `[queues.<name>]`.
    pub fn concurrency(mut self, queue: &QueueName, n: usize) -> Self {
        self.overrides.entry(queue.clone()).or_default().concurrency = Some(n.max(1));
        self
    }

    /// Tasks of `queue` reserved ahead of a free slot (at most 1024); default from
    /// `[queues.<name>]` (there: the queue's concurrency). See [`WorkerRuntime`].
    pub fn prefetch(mut self, queue: &QueueName, n: usize) -> Self {
        self.overrides.entry(queue.clone()).or_default().prefetch = Some(n.min(MAX_PREFETCH));
        self
    }

    /// Lease per reservation on `queue` (kept within `3 ms..=1 day`); default from
    /// `[queues.<name>]`.
    pub fn lease(mut self, queue: &QueueName, lease: Duration) -> Self {
        self.overrides.entry(queue.clone()).or_default().lease =
            Some(lease.clamp(MIN_LEASE, ReserveOptions::MAX_LEASE));
        self
    }

    /// How long in-flight tasks may finish after shutdown before they are released.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }

    /// How long one reservation waits for a task (`10 ms..=5 min`).
    pub fn reserve_wait(mut self, d: Duration) -> Self {
        self.reserve_wait = d.clamp(MIN_RESERVE_WAIT, ReserveOptions::MAX_WAIT);
        self
    }

    /// The worker ID recorded on reserved tasks.
    pub fn worker_id(mut self, id: WorkerId) -> Self {
        self.worker_id = Some(id);
        self
    }

    /// Queues with handlers, sorted.
    pub fn queues(&self) -> Vec<QueueName> {
        self.registry.queues()
    }

    /// The runtime.
    pub fn build(self) -> WorkerRuntime {
        let lanes = self
            .registry
            .queues()
            .into_iter()
            .map(|q| {
                let s = self.queue.settings(&q);
                let o = self.overrides.get(&q).cloned().unwrap_or_default();
                let concurrency = o.concurrency.unwrap_or(s.concurrency).max(1);
                Lane {
                    concurrency,
                    prefetch: o
                        .prefetch
                        .or(s.prefetch)
                        .unwrap_or(concurrency)
                        .min(MAX_PREFETCH),
                    recording: Arc::new(Semaphore::new(concurrency)),
                    lease: o
                        .lease
                        .unwrap_or(s.lease)
                        .clamp(MIN_LEASE, ReserveOptions::MAX_LEASE),
                    timeout: s.timeout,
                    queue: q,
                }
            })
            .collect();
        let worker_id = self.worker_id.unwrap_or_else(generated_worker_id);
        let (completer, completions) = completer::channel();
        WorkerRuntime {
            shared: Arc::new(Shared {
                completer,
                queue: self.queue,
                progress: self.progress,
                registry: self.registry,
                worker_id,
                reserve_wait: self.reserve_wait,
                max_error_bytes: self.max_error_bytes.max(16),
                stop: CancellationToken::new(),
                release: CancellationToken::new(),
                tracker: TaskTracker::new(),
                counts: Counts::default(),
            }),
            lanes,
            drain_timeout: self.drain_timeout,
            completions,
        }
    }
}

fn generated_worker_id() -> WorkerId {
    let id = format!(
        "worker-{}-{}",
        std::process::id(),
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    WorkerId::parse(id).expect("digits, letters and '-' form a valid worker id")
}

#[derive(Debug, Clone)]
struct Lane {
    queue: QueueName,
    /// Handlers running at once: a slot is held from the handler's start until it ends.
    concurrency: usize,
    /// Leased tasks held ready for the next free slots, beyond one per free slot.
    prefetch: usize,
    /// Outcomes being written (complete, fail, release), at most `concurrency` at once. A
    /// handler that ended frees its slot once its outcome holds one of these, so the next
    /// task starts while the outcome's round trip is in flight; when writes fall behind (a
    /// slow Redis), finished handlers wait here and hold their slots, which stops reserving.
    recording: Arc<Semaphore>,
    lease: Duration,
    timeout: Option<Duration>,
}

#[derive(Debug, Default)]
struct Counts {
    succeeded: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    released: AtomicU64,
    lease_lost: AtomicU64,
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Tasks completed.
    pub succeeded: u64,
    /// Failed attempts that will be retried.
    pub retried: u64,
    /// Tasks that went to the dead-letter set from this worker.
    pub dead: u64,
    /// Tasks released back to their queue on shutdown.
    pub released: u64,
    /// Attempts whose lease was lost (result dropped).
    pub lease_lost: u64,
}

struct Shared {
    /// Successes go out through it, batched ([`super::completer`]).
    completer: Completer,
    queue: QueueManager,
    progress: ProgressTracker,
    registry: Registry,
    worker_id: WorkerId,
    reserve_wait: Duration,
    max_error_bytes: usize,
    /// Stop reserving.
    stop: CancellationToken,
    /// Drain time is over: cancel handlers and release their tasks.
    release: CancellationToken,
    tracker: TaskTracker,
    counts: Counts,
}

/// Runs registered handlers: per queue, up to `concurrency` at once, each under a lease kept
/// alive by heartbeats, with retries, dead letters and a graceful drain.
///
/// A handler's slot is freed when the handler ends, not when its outcome is stored: the next
/// task starts while the outcome's write (batched for successes) is in flight, so a lane is
/// not idle for a round trip per task. At most `concurrency` outcomes per queue are in
/// flight; beyond that finished handlers keep their slots until writes catch up. The drain
/// waits for every outcome to be written.
///
/// **Prefetch.** A lane keeps up to `prefetch` leased tasks ready beyond its free slots
/// (default: as many as its concurrency), reserving the next batch while handlers run, so a
/// freed slot starts its next task without waiting for a round trip. Each task is still under
/// its own lease and fencing token from the moment it is reserved. A prefetched task that
/// waited half its lease without a free slot is released back to the queue (its attempt not
/// counted) instead of being started on a lease about to run out, and on shutdown every
/// prefetched task is released. Long-running handlers on many worker processes may want
/// `prefetch = 0`, so that no process holds tasks another idle process could run.
///
/// | outcome of an attempt | reported as |
/// |---|---|
/// | `Ok(result)` | `complete(result)` |
/// | `Err(HandlerError)` | `fail` with its retry policy (task backoff by default) |
/// | timeout (task's, else the queue's) | `fail(Retry::Backoff)`, handler cancelled |
/// | panic | `fail(Retry::Never)` with the panic message: dead |
/// | payload that does not deserialise | `fail(Retry::Never)`: dead |
/// | no handler for the kind | `fail(Retry::Never)`: dead |
/// | lease lost (cancelled, reclaimed) | nothing: the handler is cancelled, its result dropped |
/// | still running when the drain timeout ends | `release`: queued again at once, the attempt not counted |
pub struct WorkerRuntime {
    shared: Arc<Shared>,
    lanes: Vec<Lane>,
    drain_timeout: Duration,
    completions: Completions,
}

impl fmt::Debug for WorkerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerRuntime")
            .field("worker_id", &self.shared.worker_id)
            .field("lanes", &self.lanes)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

enum Outcome {
    Complete(Option<serde_json::Value>),
    Fail(Failure),
    LeaseLost(String),
    Release,
}

impl WorkerRuntime {
    /// The worker ID recorded on reserved tasks.
    pub fn worker_id(&self) -> &WorkerId {
        &self.shared.worker_id
    }

    /// Runs until `shutdown` completes, then drains: stops reserving, lets in-flight tasks
    /// finish for up to the drain timeout, then cancels the rest and releases their tasks
    /// back to the queue ([`QueueManager::release`] with [`RELEASED_ON_SHUTDOWN`]) so another
    /// worker picks them up at once, without the interrupted attempt counting against the
    /// task's `max_attempts`. Returns what was done.
    pub async fn run_until<S>(self, shutdown: S) -> WorkerReport
    where
        S: Future<Output = ()> + Send,
    {
        let shared = Arc::clone(&self.shared);
        // Ends once the last task (holding `shared`, so the completer) is done.
        self.completions.spawn(shared.queue.clone());
        tracing::info!(
            worker_id = %shared.worker_id,
            queues = ?self.lanes.iter().map(|l| l.queue.as_str()).collect::<Vec<_>>(),
            "worker started"
        );
        let lanes = futures::future::join_all(
            self.lanes
                .iter()
                .cloned()
                .map(|lane| reserve_loop(Arc::clone(&shared), lane)),
        );
        tokio::pin!(lanes);
        if self.lanes.is_empty() {
            tracing::warn!("no handlers registered; waiting for shutdown");
        }
        tokio::select! {
            () = shutdown => {}
            // Lanes only end once stopped; with none, wait for the shutdown alone.
            _ = &mut lanes, if !self.lanes.is_empty() => {}
        }
        tracing::info!(in_flight = shared.tracker.len(), "worker draining");
        shared.stop.cancel();
        lanes.await;
        shared.tracker.close();
        if tokio::time::timeout(self.drain_timeout, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = shared.tracker.len(),
                "drain timeout reached; releasing in-flight tasks"
            );
            shared.release.cancel();
            shared.tracker.wait().await;
        }
        let c = &shared.counts;
        let report = WorkerReport {
            succeeded: c.succeeded.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            dead: c.dead.load(Ordering::Relaxed),
            released: c.released.load(Ordering::Relaxed),
            lease_lost: c.lease_lost.load(Ordering::Relaxed),
        };
        tracing::info!(?report, "worker stopped");
        report
    }
}

/// What the reservation in flight brought.
enum Fetched {
    /// The leases of a batch (`asked` tasks asked for) or of one long poll (`waited`).
    Leases {
        leases: Vec<Lease>,
        asked: usize,
        waited: bool,
    },
    /// The reservation failed.
    Failed(ServiceError),
    /// The pause after a failure is over.
    Resumed,
}

/// What woke the reserve loop.
enum Wake {
    Stop,
    Fetched(Fetched),
    Slot(Result<OwnedSemaphorePermit, tokio::sync::AcquireError>),
}

/// Reserves tasks of one queue and starts them as concurrency slots free, until stopped.
///
/// While the queue has work, one batched reservation at a time ([`QueueManager::reserve_many`]:
/// one script call on Redis, each task still under its own lease and fencing token) asks for a
/// task per free slot plus the lane's prefetch, less what is already held; it runs while
/// handlers do, so slots that free up meanwhile start held tasks at once. Once a reservation
/// comes back short the lane waits with one long-polling reservation until work arrives.
async fn reserve_loop(shared: Arc<Shared>, lane: Lane) {
    let slots = Arc::new(Semaphore::new(lane.concurrency));
    // Leased tasks not started yet, each with the instant its lease began.
    let mut ahead: VecDeque<(Lease, Instant)> = VecDeque::new();
    let mut fetch: Option<BoxFuture<'static, Fetched>> = None;
    // Whether the reservation in flight is a long poll (dropped on stop; a batch is awaited).
    let mut polling = false;
    let mut failures: u32 = 0;
    let mut busy = true;
    loop {
        if fetch.is_none() {
            // One reservation takes at most RESERVE_MANY_MAX; the rest waits for the next.
            let want = (slots.available_permits() + lane.prefetch)
                .saturating_sub(ahead.len())
                .min(RESERVE_MANY_MAX);
            // Refill in batches: at once when nothing is held, else once half the prefetch
            // is used (each reservation has a fixed cost on the server; one per task freed
            // would spend it on batches of one or two).
            if want > 0 && (ahead.is_empty() || want >= (lane.prefetch / 2).max(1)) {
                polling = !busy;
                fetch = Some(start_fetch(&shared, &lane, want, busy));
            }
        }
        let wake = tokio::select! {
            biased;
            () = shared.stop.cancelled() => Wake::Stop,
            f = async {
                match fetch.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            } => Wake::Fetched(f),
            p = Arc::clone(&slots).acquire_owned(), if !ahead.is_empty() || fetch.is_none() => {
                Wake::Slot(p)
            }
        };
        match wake {
            Wake::Stop => break,
            Wake::Fetched(f) => {
                fetch = None;
                match f {
                    Fetched::Leases {
                        leases,
                        asked,
                        waited,
                    } => {
                        failures = 0;
                        busy = if waited {
                            !leases.is_empty()
                        } else {
                            leases.len() >= asked
                        };
                        let now = Instant::now();
                        ahead.extend(leases.into_iter().map(|l| (l, now)));
                    }
                    Fetched::Failed(e) => {
                        busy = false;
                        failures = failures.saturating_add(1);
                        let pause = Duration::from_millis(100u64 << failures.min(6))
                            .min(Duration::from_secs(5));
                        tracing::warn!(queue = %lane.queue, error = %e, retry_in = ?pause, "reserve failed");
                        polling = true;
                        fetch = Some(Box::pin(async move {
                            tokio::time::sleep(pause).await;
                            Fetched::Resumed
                        }));
                    }
                    Fetched::Resumed => {}
                }
            }
            Wake::Slot(Err(_)) => break,
            Wake::Slot(Ok(permit)) => match ahead.pop_front() {
                Some((lease, received)) if received.elapsed() < lane.lease / 2 => {
                    spawn_process(&shared, &lane, lease, received, permit);
                }
                Some((lease, _)) => {
                    drop(permit);
                    give_back(
                        &shared,
                        &lease,
                        "prefetched; no slot was free within half its lease",
                    )
                    .await;
                }
                // A slot freed while nothing was held: the next turn reserves for it.
                None => drop(permit),
            },
        }
    }
    // Stopped. A batch in flight does not wait: its leases are given back with the others
    // held; a long poll is dropped.
    if let (Some(f), false) = (fetch, polling) {
        if let Fetched::Leases { leases, .. } = f.await {
            let now = Instant::now();
            ahead.extend(leases.into_iter().map(|l| (l, now)));
        }
    }
    // All at once: a lane may hold up to 1024 of them.
    futures::future::join_all(ahead.iter().map(|(lease, _)| {
        give_back(
            &shared,
            lease,
            "prefetched; the worker stopped before it started",
        )
    }))
    .await;
}

/// The next reservation of a lane: a batch of `want` while the queue has work, else one long
/// poll.
fn start_fetch(
    shared: &Arc<Shared>,
    lane: &Lane,
    want: usize,
    busy: bool,
) -> BoxFuture<'static, Fetched> {
    let shared = Arc::clone(shared);
    let queues = [lane.queue.clone()];
    let opts = ReserveOptions::new(lane.lease).worker(shared.worker_id.clone());
    if busy {
        Box::pin(async move {
            match shared.queue.reserve_many(&queues, want, opts).await {
                Ok(leases) => Fetched::Leases {
                    leases,
                    asked: want,
                    waited: false,
                },
                Err(e) => Fetched::Failed(e),
            }
        })
    } else {
        Box::pin(async move {
            match shared
                .queue
                .reserve(&queues, opts.wait(shared.reserve_wait))
                .await
            {
                Ok(lease) => Fetched::Leases {
                    leases: lease.into_iter().collect(),
                    asked: 1,
                    waited: true,
                },
                Err(e) => Fetched::Failed(e),
            }
        })
    }
}

/// Releases a task that was reserved but never started (its attempt is not counted); a
/// failure only costs the task a wait for its lease to run out.
async fn give_back(shared: &Shared, lease: &Lease, why: &str) {
    let task = &lease.task;
    match shared
        .queue
        .release(&task.queue, task.id, lease.token, why)
        .await
    {
        Ok(_) => {
            tracing::debug!(queue = %task.queue, task_id = %task.id, reason = why, "task given back")
        }
        Err(e) => {
            tracing::warn!(queue = %task.queue, task_id = %task.id, error = %e, "could not give a prefetched task back; it returns when its lease runs out")
        }
    }
}

fn spawn_process(
    shared: &Arc<Shared>,
    lane: &Lane,
    lease: Lease,
    received: Instant,
    permit: OwnedSemaphorePermit,
) {
    shared.tracker.spawn(process(
        Arc::clone(shared),
        lane.clone(),
        lease,
        received,
        permit,
    ));
}

/// Runs one reserved task and reports its outcome.
async fn process(
    shared: Arc<Shared>,
    lane: Lane,
    lease: Lease,
    received: Instant,
    permit: OwnedSemaphorePermit,
) {
    let task = &lease.task;
    let span = tracing::info_span!(
        "task",
        queue = %task.queue,
        kind = %task.kind,
        task_id = %task.id,
        attempt = task.attempts,
        correlation_id = tracing::field::Empty,
        worker_id = %shared.worker_id,
    );
    if let Some(c) = &task.correlation_id {
        span.record("correlation_id", tracing::field::display(c));
    }
    async {
        let outcome = run(&shared, &lane, &lease, received).await;
        // The lane's semaphores are never closed, so this only waits.
        let recording = Arc::clone(&lane.recording).acquire_owned().await;
        drop(permit);
        report(&shared, &lease, outcome).await;
        drop(recording);
    }
    .instrument(span)
    .await;
}

async fn run(shared: &Shared, lane: &Lane, lease: &Lease, received: Instant) -> Outcome {
    let task = &lease.task;
    let Some(handler) = shared.registry.get(&task.queue, &task.kind) else {
        return Outcome::Fail(Failure {
            error: format!(
                "no handler for task kind {} on queue {} (registered: {})",
                task.kind,
                task.queue,
                shared
                    .registry
                    .kinds(&task.queue)
                    .iter()
                    .map(TaskKind::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            retry: Retry::Never,
        });
    };
    let cancel = CancellationToken::new();
    let ctx = TaskContext {
        task_id: task.id,
        queue: task.queue.clone(),
        kind: task.kind.clone(),
        attempt: task.attempts,
        max_attempts: task.max_attempts,
        correlation_id: task.correlation_id.clone(),
        progress: shared.progress.clone(),
        cancel: cancel.clone(),
    };
    let fut = match handler.start(ctx, &task.payload) {
        Ok(f) => f,
        Err(StartError::Poison(msg)) => {
            tracing::warn!(error = %msg, "poison payload");
            return Outcome::Fail(Failure {
                error: msg,
                retry: Retry::Never,
            });
        }
        Err(StartError::Panicked(msg)) => {
            return Outcome::Fail(Failure {
                error: format!("handler panicked: {msg}"),
                retry: Retry::Never,
            })
        }
    };
    let timeout = task.timeout_ms.map(Duration::from_millis).or(lane.timeout);
    let timed_out = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    // The handler is polled first: one that finishes on its first poll never arms the
    // heartbeat timer, the timeout or the drain's wait (each a registration with the runtime),
    // and a handler that finished wins over a lease loss, timeout or drain seen in the same
    // wake (the store still fences its outcome).
    let outcome = tokio::select! {
        biased;
        r = AssertUnwindSafe(fut).catch_unwind() => match r {
            Ok(Ok(result)) => Outcome::Complete(result),
            Ok(Err(e)) => Outcome::Fail(Failure { error: e.message().to_owned(), retry: e.retry_policy() }),
            Err(p) => {
                let msg = panic_message(&*p);
                tracing::error!(panic = %msg, "handler panicked");
                Outcome::Fail(Failure { error: format!("handler panicked: {msg}"), retry: Retry::Never })
            }
        },
        why = keep_alive(shared, lane, lease, received) => Outcome::LeaseLost(why),
        () = timed_out => Outcome::Fail(Failure {
            error: format!("timed out after {}", crate::config::serde_util::format_duration(timeout.unwrap_or_default())),
            retry: Retry::Backoff,
        }),
        () = shared.release.cancelled() => Outcome::Release,
    };
    // Whatever ended the attempt, work the handler started elsewhere should stop.
    cancel.cancel();
    outcome
}

/// Heartbeats every third of the lease; returns why the lease is gone once it is.
async fn keep_alive(shared: &Shared, lane: &Lane, lease: &Lease, received: Instant) -> String {
    let task = &lease.task;
    let every = (lane.lease / 3).max(Duration::from_millis(1));
    let mut deadline = received + lane.lease;
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        match shared
            .queue
            .heartbeat(&task.queue, task.id, lease.token, lane.lease)
            .await
        {
            Ok(_) => deadline = sent + lane.lease,
            Err(ServiceError::Port(
                e @ (PortError::LeaseLost { .. }
                | PortError::NotFound { .. }
                | PortError::Conflict { .. }),
            )) => return e.to_string(),
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                if Instant::now() >= deadline {
                    return format!("lease ran out while heartbeats failed: {e}");
                }
            }
        }
    }
}

fn bounded(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = max.saturating_sub(3);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str("...");
    s
}

/// One audit event for a complete / fail reported by this worker.
fn audit_report(shared: &Shared, lease: &Lease, action: &'static str, outcome: audit::Outcome) {
    let task = &lease.task;
    audit::record(
        &audit::AuditEvent::new(action, shared.worker_id.as_str())
            .queue(task.queue.as_str())
            .task(task.id)
            .correlation_id(task.correlation_id.as_ref())
            .outcome(outcome),
    );
}

fn audit_outcome<T>(r: &Result<T, ServiceError>) -> audit::Outcome {
    match r {
        Ok(_) => audit::Outcome::Ok,
        Err(ServiceError::Port(p)) => audit::Outcome::Error(p.code().into()),
        Err(_) => audit::Outcome::Error("internal".into()),
    }
}

async fn report(shared: &Shared, lease: &Lease, outcome: Outcome) {
    let task = &lease.task;
    let counts = &shared.counts;
    match outcome {
        Outcome::Complete(result) => {
            let done = shared
                .completer
                .complete(&task.queue, task.id, lease.token, result)
                .await;
            audit_report(shared, lease, "task.complete", audit_outcome(&done));
            match done {
                Ok(_) => {
                    counts.succeeded.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("task succeeded");
                }
                Err(ServiceError::Port(PortError::LeaseLost { .. })) => {
                    counts.lease_lost.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("task finished after its lease was lost; result dropped");
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not record success; the task will be redelivered after its lease")
                }
            }
        }
        Outcome::Fail(failure) => {
            let failure = Failure {
                error: bounded(failure.error, shared.max_error_bytes),
                retry: failure.retry,
            };
            tracing::warn!(error = %failure.error, retry = ?failure.retry, "task attempt failed");
            record_failure(shared, lease, failure).await;
        }
        Outcome::LeaseLost(why) => {
            counts.lease_lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(reason = %why, "lease lost; handler cancelled and result dropped");
        }
        Outcome::Release => {
            match shared
                .queue
                .release(&task.queue, task.id, lease.token, RELEASED_ON_SHUTDOWN)
                .await
            {
                Ok(t) => {
                    counts.released.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(attempts = t.attempts, "task released on shutdown");
                }
                Err(ServiceError::Port(PortError::LeaseLost { .. })) => {
                    counts.lease_lost.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("lease lost before the task was released");
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not release the task; it will be redelivered after its lease")
                }
            }
        }
    }
}

async fn record_failure(shared: &Shared, lease: &Lease, failure: Failure) {
    let task = &lease.task;
    let counts = &shared.counts;
    let failed = shared
        .queue
        .fail(&task.queue, task.id, lease.token, failure)
        .await;
    audit_report(shared, lease, "task.fail", audit_outcome(&failed));
    match failed {
        Ok(t) if t.status == TaskStatus::Dead => {
            counts.dead.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("task is dead");
        }
        Ok(_) => {
            counts.retried.fetch_add(1, Ordering::Relaxed);
        }
        Err(ServiceError::Port(PortError::LeaseLost { .. })) => {
            counts.lease_lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("lease lost before the failure was recorded");
        }
        Err(e) => {
            tracing::error!(error = %e, "could not record the failure; the task will be redelivered after its lease")
        }
    }
}

#[cfg(test)]
mod unit {
    use super::bounded;

    #[test]
    fn bounded_cuts_on_char_boundaries() {
        assert_eq!(bounded("short".into(), 10), "short");
        let long = "é".repeat(100);
        let b = bounded(long, 51);
        assert!(b.len() <= 51);
        assert!(b.ends_with("..."));
    }
}
