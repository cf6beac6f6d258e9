//! Worker runtime tests on the memory adapter with a paused tokio clock: time only moves
//! when every task waits, so leases, backoffs and timeouts are exact and instant.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_adapter_memory::{Clock, TokioClock};
use spool_domain::backoff::Backoff;
use spool_domain::limits::StoreLimits;
use spool_domain::names::{CorrelationId, QueueName, TaskId, TaskKind};
use spool_domain::task::{MaxAttempts, Task, TaskStatus};
use spool_ports::ReserveOptions;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::services::{EnqueueOptions, ProgressTracker, QueueManager, QueuePolicies};
use crate::wiring::memory_backends;

/// Fails a test that would otherwise wait forever (virtual time, so it costs nothing).
const GUARD: Duration = Duration::from_secs(3600);

struct Env {
    queue: QueueManager,
    progress: ProgressTracker,
}

fn env() -> Env {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let b = memory_backends(&StoreLimits::default(), clock);
    Env {
        queue: QueueManager::new(b.queue, QueuePolicies::default()),
        progress: ProgressTracker::new(b.progress),
    }
}

fn q(name: &str) -> QueueName {
    QueueName::parse(name).unwrap()
}

fn k(name: &str) -> TaskKind {
    TaskKind::parse(name).unwrap()
}

impl Env {
    fn builder(&self) -> WorkerBuilder {
        WorkerBuilder::new(self.queue.clone(), self.progress.clone())
            .reserve_wait(Duration::from_secs(1))
            .drain_timeout(Duration::from_secs(30))
    }

    async fn enqueue(
        &self,
        queue: &str,
        kind: &str,
        payload: serde_json::Value,
        opts: EnqueueOptions,
    ) -> TaskId {
        self.queue
            .enqueue_json(&q(queue), &k(kind), payload, opts)
            .await
            .unwrap()
            .task()
            .id
    }

    /// `n` tasks of kind `job` on `queue`, their payloads `0..n`, in that order.
    async fn enqueue_jobs(&self, queue: &str, n: usize) -> Vec<TaskId> {
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(
                self.enqueue(queue, "job", serde_json::json!(i), EnqueueOptions::new())
                    .await,
            );
        }
        ids
    }

    async fn task(&self, queue: &str, id: TaskId) -> Task {
        self.queue.get(&q(queue), id).await.unwrap().unwrap()
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<WorkerReport>,
}

fn start(rt: WorkerRuntime) -> Running {
    let (stop, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(rt.run_until(async move {
        let _ = rx.await;
    }));
    Running { stop, handle }
}

impl Running {
    async fn stop(self) -> WorkerReport {
        let _ = self.stop.send(());
        tokio::time::timeout(GUARD, self.handle)
            .await
            .expect("the worker stops")
            .unwrap()
    }
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(GUARD, rx.recv())
        .await
        .expect("the handler runs")
        .expect("channel open")
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Add {
    a: i64,
    b: i64,
}

fn retry_fast(n: u32) -> EnqueueOptions {
    EnqueueOptions::new()
        .max_attempts(MaxAttempts::new(n).unwrap())
        .backoff(Backoff::constant(Duration::from_millis(10)))
}

#[tokio::test(start_paused = true)]
async fn a_handler_runs_and_its_task_succeeds_with_its_correlation_id() {
    let env = env();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = env
        .builder()
        .register(q("math"), k("add"), move |ctx: TaskContext, job: Add| {
            let tx = tx.clone();
            async move {
                tx.send((ctx.correlation_id().cloned(), ctx.attempt()))
                    .unwrap();
                Ok(Some(serde_json::json!({ "sum": job.a + job.b })))
            }
        })
        .build();
    let id = env
        .enqueue(
            "math",
            "add",
            serde_json::json!({"a": 2, "b": 3}),
            EnqueueOptions::new().correlation_id(CorrelationId::parse("req-7").unwrap()),
        )
        .await;
    let running = start(rt);
    let (corr, attempt) = recv(&mut rx).await;
    let report = running.stop().await;
    assert_eq!(corr.unwrap().as_str(), "req-7");
    assert_eq!(attempt, 1);
    let t = env.task("math", id).await;
    assert_eq!(t.status, TaskStatus::Succeeded);
    assert_eq!(t.result, Some(serde_json::json!({"sum": 5})));
    assert_eq!(report.succeeded, 1);
    assert_eq!(
        report,
        WorkerReport {
            succeeded: 1,
            ..WorkerReport::default()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn handler_errors_are_retried_then_dead_after_max_attempts() {
    let env = env();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let rt = env
        .builder()
        .register(
            q("flaky"),
            k("job"),
            move |ctx: TaskContext, _: serde_json::Value| {
                let tx = tx.clone();
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    tx.send(ctx.attempt()).unwrap();
                    Err(HandlerError::retry(format!("boom {n}")))
                }
            },
        )
        .build();
    let id = env
        .enqueue("flaky", "job", serde_json::json!(null), retry_fast(3))
        .await;
    let running = start(rt);
    assert_eq!(recv(&mut rx).await, 1);
    assert_eq!(recv(&mut rx).await, 2);
    assert_eq!(recv(&mut rx).await, 3);
    let report = running.stop().await;
    let t = env.task("flaky", id).await;
    assert_eq!(t.status, TaskStatus::Dead);
    assert_eq!(t.attempts, 3);
    assert_eq!(t.last_error.as_deref(), Some("boom 3"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!((report.retried, report.dead), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_dead_at_once() {
    let env = env();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = env
        .builder()
        .register(
            q("strict"),
            k("job"),
            move |_: TaskContext, _: serde_json::Value| {
                let tx = tx.clone();
                async move {
                    tx.send(()).unwrap();
                    Err(HandlerError::permanent("cannot ever work"))
                }
            },
        )
        .build();
    let id = env
        .enqueue("strict", "job", serde_json::json!(1), retry_fast(5))
        .await;
    let running = start(rt);
    recv(&mut rx).await;
    running.stop().await;
    let t = env.task("strict", id).await;
    assert_eq!(t.status, TaskStatus::Dead);
    assert_eq!(t.attempts, 1);
}

fn explode() -> HandlerResult {
    panic!("kaboom in handler")
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_sends_its_task_to_the_dead_letters_with_the_message() {
    let env = env();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = env
        .builder()
        .register(
            q("buggy"),
            k("job"),
            move |_: TaskContext, _: serde_json::Value| {
                let tx = tx.clone();
                async move {
                    tx.send(()).unwrap();
                    explode()
                }
            },
        )
        .build();
    let id = env
        .enqueue("buggy", "job", serde_json::json!(1), retry_fast(3))
        .await;
    let running = start(rt);
    recv(&mut rx).await;
    let report = running.stop().await;
    let t = env.task("buggy", id).await;
    assert_eq!(t.status, TaskStatus::Dead);
    assert_eq!(t.attempts, 1, "a panic is not retried");
    let err = t.last_error.unwrap();
    assert!(
        err.contains("panicked") && err.contains("kaboom in handler"),
        "{err}"
    );
    assert_eq!(report.dead, 1);
}

/// Runs `tasks` on a concurrency-1 queue followed by a marker task; returns once the marker
/// ran, i.e. once every earlier task was fully reported.
async fn run_before_marker(env: &Env, builder: WorkerBuilder, queue: &str) -> WorkerReport {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = builder
        .register(
            q(queue),
            k("marker"),
            move |_: TaskContext, _: serde_json::Value| {
                let tx = tx.clone();
                async move {
                    tx.send(()).unwrap();
                    Ok(None)
                }
            },
        )
        .concurrency(&q(queue), 1)
        .build();
    env.enqueue(
        queue,
        "marker",
        serde_json::json!(null),
        EnqueueOptions::new(),
    )
    .await;
    let running = start(rt);
    recv(&mut rx).await;
    running.stop().await
}

#[tokio::test(start_paused = true)]
async fn poison_payloads_and_unknown_kinds_are_dead_without_crashing_the_worker() {
    let env = env();
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    let builder = env
        .builder()
        .register(q("mixed"), k("add"), move |_: TaskContext, _: Add| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(None) }
        });
    let poison = env
        .enqueue(
            "mixed",
            "add",
            serde_json::json!({"a": "one"}),
            retry_fast(3),
        )
        .await;
    let unknown = env
        .enqueue("mixed", "mystery", serde_json::json!({}), retry_fast(3))
        .await;
    let report = run_before_marker(&env, builder, "mixed").await;
    assert_eq!(called.load(Ordering::SeqCst), 0);
    let t = env.task("mixed", poison).await;
    assert_eq!(t.status, TaskStatus::Dead);
    assert_eq!(t.attempts, 1);
    let err = t.last_error.unwrap();
    assert!(err.contains("payload does not match Add"), "{err}");
    let t = env.task("mixed", unknown).await;
    assert_eq!(t.status, TaskStatus::Dead);
    assert!(t
        .last_error
        .unwrap()
        .contains("no handler for task kind mystery"));
    assert_eq!((report.dead, report.succeeded), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn drain_lets_in_flight_tasks_finish() {
    let env = env();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = env
        .builder()
        .register(
            q("slowish"),
            k("job"),
            move |_: TaskContext, _: serde_json::Value| {
                let tx = tx.clone();
                async move {
                    tx.send(()).unwrap();
                    tokio::time::sleep(Duration::from_secs(5)).await; // the work
                    Ok(Some(serde_json::json!("done")))
                }
            },
        )
        .build();
    let id = env
        .enqueue(
            "slowish",
            "job",
            serde_json::json!(1),
            EnqueueOptions::new(),
        )
        .await;
    let running = start(rt);
    recv(&mut rx).await;
    let report = running.stop().await;
    assert_eq!(env.task("slowish", id).await.status, TaskStatus::Succeeded);
    assert_eq!((report.succeeded, report.released), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn drain_timeout_releases_in_flight_tasks_back_to_the_queue() {
    let env = env();
    let (tx, mut rx) = mpsc::unbounded_channel::<CancellationToken>();
    let rt = env
        .builder()
        .drain_timeout(Duration::from_secs(2))
        .register(
            q("stuck"),
            k("job"),
            move |ctx: TaskContext, _: serde_json::Value| {
                let tx = tx.clone();
                async move {
                    tx.send(ctx.cancellation().clone()).unwrap();
                    std::future::pending::<()>().await;
                    Ok(None)
                }
            },
        )
        .build();
    // One attempt only: if the release consumed it, the task would be dead.
    let id = env
        .enqueue("stuck", "job", serde_json::json!(1), retry_fast(1))
        .await;
    let running = start(rt);
    let token = recv(&mut rx).await;
    let report = running.stop().await;
    assert!(token.is_cancelled(), "the handler was told to stop");
    assert_eq!(
        (
            report.released,
            report.retried,
            report.dead,
            report.lease_lost
        ),
        (1, 0, 0, 0)
    );
    let t = env.task("stuck", id).await;
    assert_eq!(
        t.last_error.as_deref(),
        Some(format!("released: {RELEASED_ON_SHUTDOWN}").as_str())
    );
    assert_eq!(t.status, TaskStatus::Queued, "ready again at once");
    assert_eq!(t.attempts, 0, "the interrupted attempt is not consumed");
    assert_eq!(t.lease_expires_at, None);
    let again = env
        .queue
        .reserve(
            &[q("stuck")],
            ReserveOptions::new(Duration::from_secs(5)).wait(Duration::from_secs(1)),
        )
        .await
        .unwrap()
        .expect("the released task is redelivered");
    assert_eq!(again.task.id, id);
    assert_eq!(
        again.task.attempts, 1,
        "its only attempt is still available"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_per_queue_is_respected() {
    const TASKS: usize = 10;
    const LIMIT: usize = 3;
    let env = env();
    let running_now = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (r, m) = (running_now.clone(), max_seen.clone());
    let rt = env
        .builder()
        .concurrency(&q("wide"), LIMIT)
        .register(
            q("wide"),
            k("job"),
            move |_: TaskContext, _: serde_json::Value| {
                let (r, m, tx) = (r.clone(), m.clone(), tx.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await; // the work
                    r.fetch_sub(1, Ordering::SeqCst);
                    tx.send(()).unwrap();
                    Ok(None)
                }
            },
        )
        .build();
    env.enqueue_jobs("wide", TASKS).await;
    let running = start(rt);
    for _ in 0..TASKS {
        recv(&mut rx).await;
    }
    let report = running.stop().await;
    assert_eq!(report.succeeded, TASKS as u64);
    let max = max_seen.load(Ordering::SeqCst);
    assert!(
        max <= LIMIT,
        "{max} handlers ran at once; the limit is {LIMIT}"
    );
    assert_eq!(max, LIMIT, "the slots are used");
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_long_task_alive() {
    let env = env();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = env
        .builder()
        .lease(&q("long"), Duration::from_millis(300))
        .register(
            q("long"),
            k("job"),
            move |_: TaskContext, _: serde_json::Value| {
                let tx = tx.clone();
                async move {
                    tokio::time::sleep(Duration::from_secs(3)).await; // ten leases of work
                    tx.send(()).unwrap();
                    Ok(None)
                }
            },
        )
        .build();
    let id = env
        .enqueue("long", "job", serde_json::json!(1), retry_fast(3))
        .await;
    let running = start(rt);
    recv(&mut rx).await;
    let report = running.stop().await;
    let t = env.task("long", id).await;
    assert_eq!(t.status, TaskStatus::Succeeded);
    assert_eq!(t.attempts, 1, "the lease never ran out");
    assert!(t.heartbeat_at > t.started_at, "heartbeats were recorded");
    assert_eq!(report.lease_lost, 0);
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_cancels_the_handler_and_drops_its_result() {
    let env = env();
    let (tx, mut rx) = mpsc::unbounded_channel::<CancellationToken>();
    let rt = env
        .builder()
        .lease(&q("revoked"), Duration::from_millis(300))
        .register(
            q("revoked"),
            k("job"),
            move |ctx: TaskContext, _: serde_json::Value| {
                let tx = tx.clone();
                async move {
                    tx.send(ctx.cancellation().clone()).unwrap();
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(Some(serde_json::json!("too late")))
                }
            },
        )
        .build();
    let id = env
        .enqueue("revoked", "job", serde_json::json!(1), retry_fast(3))
        .await;
    let running = start(rt);
    let token = recv(&mut rx).await;
    env.queue.cancel(&q("revoked"), id).await.unwrap();
    tokio::time::timeout(GUARD, token.cancelled())
        .await
        .expect("the next heartbeat finds the lease gone");
    let report = running.stop().await;
    let t = env.task("revoked", id).await;
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert_eq!(t.result, None);
    assert_eq!((report.lease_lost, report.succeeded), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_task_timeout_cancels_the_attempt_and_retries_it() {
    let env = env();
    let (tx, mut rx) = mpsc::unbounded_channel::<CancellationToken>();
    let rt = env
        .builder()
        .register(
            q("timed"),
            k("job"),
            move |ctx: TaskContext, _: serde_json::Value| {
                let tx = tx.clone();
                async move {
                    tx.send(ctx.cancellation().clone()).unwrap();
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(None)
                }
            },
        )
        .build();
    let id = env
        .enqueue(
            "timed",
            "job",
            serde_json::json!(1),
            retry_fast(2).timeout(Duration::from_millis(200)),
        )
        .await;
    let running = start(rt);
    let first = recv(&mut rx).await;
    let second = recv(&mut rx).await;
    tokio::time::timeout(GUARD, second.cancelled())
        .await
        .unwrap();
    let report = running.stop().await;
    assert!(first.is_cancelled());
    let t = env.task("timed", id).await;
    assert_eq!(t.status, TaskStatus::Dead);
    assert_eq!(t.attempts, 2);
    assert!(t.last_error.unwrap().contains("timed out after 200ms"));
    assert_eq!((report.retried, report.dead), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn example_handlers_report_progress_with_the_correlation_id() {
    let env = env();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut builder = register_examples(env.builder());
    // A signal task behind the examples on each (concurrency-1) queue tells when they ran.
    for queue in [QueueName::embeddings(), QueueName::agent_tasks()] {
        let tx = tx.clone();
        builder = builder.concurrency(&queue, 1).register(
            queue,
            k("signal"),
            move |_: TaskContext, _: serde_json::Value| {
                let tx = tx.clone();
                async move {
                    tx.send(()).unwrap();
                    Ok(None)
                }
            },
        );
    }
    let rt = builder.build();
    let corr = CorrelationId::parse("corr-1").unwrap();
    let embed = env
        .enqueue(
            "embeddings",
            "embed",
            serde_json::json!({"texts": ["a", "b"], "dims": 4}),
            EnqueueOptions::new().correlation_id(corr.clone()),
        )
        .await;
    let echo = env
        .enqueue(
            "agent_tasks",
            "echo",
            serde_json::json!({"x": 1}),
            EnqueueOptions::new(),
        )
        .await;
    for queue in ["embeddings", "agent_tasks"] {
        env.enqueue(
            queue,
            "signal",
            serde_json::json!(null),
            EnqueueOptions::new(),
        )
        .await;
    }
    let running = start(rt);
    recv(&mut rx).await;
    recv(&mut rx).await;
    let report = running.stop().await;
    let e = env.task("agent_tasks", echo).await;
    assert_eq!(e.result, Some(serde_json::json!({"x": 1})));
    let t = env.task("embeddings", embed).await;
    assert_eq!(t.status, TaskStatus::Succeeded, "{:?}", t.last_error);
    let result = t.result.unwrap();
    assert_eq!(result["vectors"].as_array().unwrap().len(), 2);
    let op =
        spool_domain::names::OperationId::parse(result["operation_id"].as_str().unwrap()).unwrap();
    let snapshot = env.progress.get(&op).await.unwrap().unwrap();
    assert_eq!(snapshot.correlation_id, Some(corr));
    assert_eq!(snapshot.percent, 100.0);
    assert_eq!(report.succeeded, 4);
}

/// The memory queue, with every recorded success held until `open` gives it a permit: an
/// outcome write that is slow in flight.
struct GatedCompletions {
    inner: Arc<dyn spool_ports::QueueStore>,
    open: Arc<tokio::sync::Semaphore>,
}

impl GatedCompletions {
    async fn pass(&self) {
        self.open.acquire().await.unwrap().forget();
    }
}

#[async_trait::async_trait]
impl spool_ports::QueueStore for GatedCompletions {
    async fn enqueue(
        &self,
        queue: &QueueName,
        spec: spool_domain::task::TaskSpec,
    ) -> Result<spool_ports::Enqueued, spool_ports::PortError> {
        self.inner.enqueue(queue, spec).await
    }
    async fn reserve(
        &self,
        queues: &[QueueName],
        opts: ReserveOptions,
    ) -> Result<Option<spool_domain::task::Lease>, spool_ports::PortError> {
        self.inner.reserve(queues, opts).await
    }
    async fn heartbeat(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: spool_domain::task::LeaseToken,
        lease: Duration,
    ) -> Result<spool_domain::task::Lease, spool_ports::PortError> {
        self.inner.heartbeat(queue, task, token, lease).await
    }
    async fn complete(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: spool_domain::task::LeaseToken,
        result: Option<serde_json::Value>,
    ) -> Result<Task, spool_ports::PortError> {
        self.pass().await;
        self.inner.complete(queue, task, token, result).await
    }
    async fn complete_many(
        &self,
        queue: &QueueName,
        batch: Vec<spool_ports::Completion>,
    ) -> Result<Vec<Result<(), spool_ports::PortError>>, spool_ports::PortError> {
        self.pass().await;
        self.inner.complete_many(queue, batch).await
    }
    async fn fail(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: spool_domain::task::LeaseToken,
        failure: spool_domain::task::Failure,
    ) -> Result<Task, spool_ports::PortError> {
        self.inner.fail(queue, task, token, failure).await
    }
    async fn release(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: spool_domain::task::LeaseToken,
        reason: &str,
    ) -> Result<Task, spool_ports::PortError> {
        self.inner.release(queue, task, token, reason).await
    }
    async fn cancel(
        &self,
        queue: &QueueName,
        task: TaskId,
    ) -> Result<Task, spool_ports::PortError> {
        self.inner.cancel(queue, task).await
    }
    async fn requeue(
        &self,
        queue: &QueueName,
        task: TaskId,
    ) -> Result<Task, spool_ports::PortError> {
        self.inner.requeue(queue, task).await
    }
    async fn get(
        &self,
        queue: &QueueName,
        task: TaskId,
    ) -> Result<Option<Task>, spool_ports::PortError> {
        self.inner.get(queue, task).await
    }
    async fn stats(
        &self,
        queues: &[QueueName],
    ) -> Result<Vec<spool_domain::task::QueueStats>, spool_ports::PortError> {
        self.inner.stats(queues).await
    }
    async fn list(
        &self,
        queue: &QueueName,
        query: spool_ports::TaskQuery,
    ) -> Result<Vec<Task>, spool_ports::PortError> {
        self.inner.list(queue, query).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_slot_frees_when_its_handler_ends_and_outcomes_in_flight_are_bounded() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let b = memory_backends(&StoreLimits::default(), clock);
    let open = Arc::new(tokio::sync::Semaphore::new(0));
    let store = Arc::new(GatedCompletions {
        inner: b.queue,
        open: Arc::clone(&open),
    });
    let env = Env {
        queue: QueueManager::new(store, QueuePolicies::default()),
        progress: ProgressTracker::new(b.progress),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = env
        .builder()
        .concurrency(&q("one"), 1)
        .lease(&q("one"), Duration::from_secs(60))
        .register(q("one"), k("job"), move |_: TaskContext, i: u32| {
            let tx = tx.clone();
            async move {
                tx.send(i).unwrap();
                Ok(None)
            }
        })
        .build();
    let ids = env.enqueue_jobs("one", 3).await;
    let running = start(rt);
    // The first success is held in flight, yet the second task runs: its slot was freed.
    assert_eq!(recv(&mut rx).await, 0);
    assert_eq!(recv(&mut rx).await, 1);
    // One outcome in flight per slot: the second handler keeps its slot while the first
    // write is held, so the third task waits (ten seconds of virtual time, well inside the
    // leases, pass without it).
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        rx.try_recv().is_err(),
        "a third handler ran while two outcomes were unwritten"
    );
    assert_eq!(env.task("one", ids[0]).await.status, TaskStatus::Running);
    open.add_permits(1000);
    assert_eq!(recv(&mut rx).await, 2);
    let report = running.stop().await;
    assert_eq!(report.succeeded, 3);
    for id in ids {
        assert_eq!(env.task("one", id).await.status, TaskStatus::Succeeded);
    }
}

/// Yields until `cond` holds (the memory store answers within the same turns), or fails.
async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if cond().await {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(start_paused = true)]
async fn prefetched_tasks_are_given_back_on_shutdown_without_counting_an_attempt() {
    let env = env();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = env
        .builder()
        .concurrency(&q("ahead"), 1)
        .prefetch(&q("ahead"), 2)
        .register(q("ahead"), k("job"), move |_: TaskContext, i: u32| {
            let tx = tx.clone();
            async move {
                tx.send(i).unwrap();
                tokio::time::sleep(Duration::from_secs(5)).await; // the work
                Ok(None)
            }
        })
        .build();
    let ids = env.enqueue_jobs("ahead", 4).await;
    let running = start(rt);
    assert_eq!(recv(&mut rx).await, 0);
    // One task runs; two more are leased ahead of a free slot; the fourth stays queued.
    until("two tasks leased ahead", || async {
        env.task("ahead", ids[1]).await.status == TaskStatus::Running
            && env.task("ahead", ids[2]).await.status == TaskStatus::Running
    })
    .await;
    assert_eq!(env.task("ahead", ids[3]).await.status, TaskStatus::Queued);
    let report = running.stop().await;
    assert_eq!((report.succeeded, report.released), (1, 0));
    assert_eq!(
        env.task("ahead", ids[0]).await.status,
        TaskStatus::Succeeded
    );
    for id in &ids[1..] {
        let t = env.task("ahead", *id).await;
        assert_eq!(t.status, TaskStatus::Queued, "given back, not started");
        assert_eq!(
            t.attempts, 0,
            "an attempt that never started does not count"
        );
    }
    assert!(rx.try_recv().is_err(), "no prefetched handler ran");
}

#[tokio::test(start_paused = true)]
async fn a_prefetched_task_older_than_half_its_lease_is_given_back_and_reserved_afresh() {
    let env = env();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = env
        .builder()
        .concurrency(&q("stale"), 1)
        .prefetch(&q("stale"), 1)
        .lease(&q("stale"), Duration::from_secs(10))
        .register(q("stale"), k("job"), move |ctx: TaskContext, i: u32| {
            let tx = tx.clone();
            async move {
                tx.send((i, ctx.attempt())).unwrap();
                if i == 0 {
                    // Longer than half the lease: the task held ahead ages meanwhile.
                    tokio::time::sleep(Duration::from_secs(8)).await;
                }
                Ok(None)
            }
        })
        .build();
    let first = env
        .enqueue("stale", "job", serde_json::json!(0), EnqueueOptions::new())
        .await;
    let second = env
        .enqueue("stale", "job", serde_json::json!(1), EnqueueOptions::new())
        .await;
    let running = start(rt);
    assert_eq!(recv(&mut rx).await, (0, 1));
    until("the second task leased ahead", || async {
        env.task("stale", second).await.status == TaskStatus::Running
    })
    .await;
    let ahead_seq = env.task("stale", second).await.lease_seq;
    // It runs on a fresh lease, as its first counted attempt.
    assert_eq!(recv(&mut rx).await, (1, 1));
    let report = running.stop().await;
    assert_eq!(report.succeeded, 2);
    let t = env.task("stale", second).await;
    assert_eq!(t.status, TaskStatus::Succeeded);
    assert_eq!(t.attempts, 1);
    assert!(
        t.lease_seq > ahead_seq,
        "started under a newer lease than the aged one"
    );
    assert_eq!(env.task("stale", first).await.status, TaskStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn the_widest_lane_reserves_within_the_batch_limit() {
    let env = env();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = env
        .builder()
        .concurrency(&q("wide"), 1024)
        .prefetch(&q("wide"), 1024)
        .register(q("wide"), k("job"), move |_: TaskContext, i: u32| {
            let tx = tx.clone();
            async move {
                tx.send((i, tokio::time::Instant::now())).unwrap();
                Ok(None)
            }
        })
        .build();
    env.enqueue_jobs("wide", 3).await;
    let started = tokio::time::Instant::now();
    let running = start(rt);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (i, at) = recv(&mut rx).await;
        // One batch (1024 slots + 1024 ahead asked as one capped reservation): no refused
        // reservation and no retry pause (virtual time) before any of them.
        assert_eq!(at, started, "task {i} waited for a retry");
        seen.push(i);
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1, 2]);
    assert_eq!(running.stop().await.succeeded, 3);
}
