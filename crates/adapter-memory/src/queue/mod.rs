//! The task queue in memory.
//!
//! | file | concern |
//! |---|---|
//! | `state.rs` | one queue: tasks and their indexes (ready by priority then age, scheduled by due time, running by lease expiry, finished by finish time), unique keys, counts |
//! | `store.rs` | every queue; each port operation as one synchronous step at a given "now" |
//! | `wait.rs` | waking reservers on enqueue without polling |
//! | `checks.rs` | input bounds (`Invalid`) |
//!
//! The whole store sits behind one mutex, so every operation is atomic. Maintenance is lazy:
//! each operation first makes due tasks ready, reclaims expired leases and drops finished
//! tasks past retention on the queues it touches. Every status change goes through the
//! domain's [`Task`] methods, so timestamps and the state machine are the domain's.

mod checks;
mod state;
mod store;
mod wait;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use spool_domain::limits::StoreLimits;
use spool_domain::names::{QueueName, TaskId};
use spool_domain::task::{Failure, Lease, LeaseToken, QueueStats, Task, TaskSpec};
use spool_ports::{Enqueued, PortError, QueueStore, ReserveOptions, TaskQuery};
use tokio::time::Instant;

use crate::Clock;
use checks::AllowEmpty;
use store::{Reserved, Store};
use wait::Signals;

/// In-memory [`QueueStore`]: strict priorities, delays, fenced leases, retries with backoff,
/// dead letters and bounded retention, with reservers that sleep until an enqueue, a due
/// time or a lease expiry.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use spool_adapter_memory::{MemoryQueue, TokioClock};
/// use spool_domain::limits::StoreLimits;
/// use spool_domain::names::{QueueName, TaskKind};
/// use spool_domain::task::TaskSpec;
/// use spool_ports::{QueueStore, ReserveOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let queue = MemoryQueue::new(&StoreLimits::default(), Arc::new(TokioClock::new()));
/// let q = QueueName::embeddings();
/// let kind = TaskKind::parse("embed").unwrap();
/// queue.enqueue(&q, TaskSpec::new(kind, serde_json::json!({"doc": 1}))).await.unwrap();
/// let lease = queue.reserve(&[q.clone()], ReserveOptions::new(Duration::from_secs(30))).await.unwrap().unwrap();
/// queue.complete(&q, lease.task.id, lease.token, None).await.unwrap();
/// # }
/// ```
pub struct MemoryQueue {
    store: Mutex<Store>,
    signals: Signals,
    clock: Arc<dyn Clock>,
    max_payload_bytes: usize,
    max_error_bytes: usize,
    max_batch: usize,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue").finish_non_exhaustive()
    }
}

impl MemoryQueue {
    /// Builds the store: payloads and results up to `max_payload_bytes`, error messages up to
    /// `max_error_bytes`, finished tasks kept for `finished_retention`.
    pub fn new(limits: &StoreLimits, clock: Arc<dyn Clock>) -> Self {
        Self {
            store: Mutex::new(Store::new(limits.finished_retention)),
            signals: Signals::default(),
            clock,
            max_payload_bytes: limits.max_payload_bytes,
            max_error_bytes: limits.max_error_bytes,
            max_batch: limits.max_batch,
        }
    }

    /// Runs one step on the store under the lock, then wakes reservers of the queues it
    /// changed (after releasing the lock).
    fn step<R>(&self, f: impl FnOnce(&mut Store, spool_domain::Timestamp) -> R) -> R {
        let (out, wakes) = {
            let mut store = self.store.lock();
            let out = f(&mut store, self.clock.now());
            (out, store.take_wakes())
        };
        self.signals.notify(&wakes);
        out
    }
}

#[async_trait]
impl QueueStore for MemoryQueue {
    async fn enqueue(&self, queue: &QueueName, spec: TaskSpec) -> Result<Enqueued, PortError> {
        spec.validate(self.max_payload_bytes)?;
        Ok(self.step(|s, now| s.enqueue(queue, spec, now, rand::random::<u128>)))
    }

    async fn reserve(
        &self,
        queues: &[QueueName],
        opts: ReserveOptions,
    ) -> Result<Option<Lease>, PortError> {
        opts.validate()?;
        checks::queues(queues, AllowEmpty::No, self.max_batch)?;
        let deadline = Instant::now() + opts.wait;
        let subscription = (!opts.wait.is_zero()).then(|| self.signals.subscribe(queues));
        loop {
            // Armed before looking, so an enqueue right after the look still wakes us.
            let woken = subscription.as_ref().map(|s| s.armed());
            let (found, now) = self.step(|s, now| {
                (
                    s.reserve(queues, now, opts.lease, opts.worker.as_ref()),
                    now,
                )
            });
            let next_event = match found? {
                Reserved::Taken(lease) => return Ok(Some(*lease)),
                Reserved::Empty { next_event } => next_event,
            };
            let Some(woken) = woken else {
                return Ok(None);
            };
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let wake_at = next_event
                .and_then(|at| wait::instant_at(now, at))
                .map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn heartbeat(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        lease: Duration,
    ) -> Result<Lease, PortError> {
        checks::lease(lease)?;
        self.step(|s, now| s.heartbeat(queue, task, token, now, lease))
    }

    async fn complete(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        result: Option<serde_json::Value>,
    ) -> Result<Task, PortError> {
        checks::result(result.as_ref(), self.max_payload_bytes)?;
        self.step(|s, now| s.complete(queue, task, token, now, result))
    }

    async fn fail(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        failure: Failure,
    ) -> Result<Task, PortError> {
        checks::failure(&failure, self.max_error_bytes)?;
        let random = rand::random::<f64>();
        self.step(|s, now| s.fail(queue, task, token, now, failure, random))
    }

    async fn release(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        reason: &str,
    ) -> Result<Task, PortError> {
        checks::reason(reason, self.max_error_bytes)?;
        self.step(|s, now| s.release(queue, task, token, now, reason))
    }

    async fn cancel(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError> {
        self.step(|s, now| s.cancel(queue, task, now))
    }

    async fn requeue(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError> {
        self.step(|s, now| s.requeue(queue, task, now))
    }

    async fn get(&self, queue: &QueueName, task: TaskId) -> Result<Option<Task>, PortError> {
        Ok(self.step(|s, now| s.get(queue, task, now)))
    }

    async fn stats(&self, queues: &[QueueName]) -> Result<Vec<QueueStats>, PortError> {
        checks::queues(queues, AllowEmpty::Yes, self.max_batch)?;
        Ok(self.step(|s, now| s.stats(queues, now)))
    }

    async fn list(&self, queue: &QueueName, query: TaskQuery) -> Result<Vec<Task>, PortError> {
        query.validate()?;
        Ok(self.step(|s, now| s.list(queue, query, now)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::TokioClock;
    use spool_domain::names::TaskKind;
    use spool_domain::task::{Retry, Schedule};

    fn store() -> Arc<MemoryQueue> {
        Arc::new(MemoryQueue::new(
            &StoreLimits::default(),
            Arc::new(TokioClock::new()),
        ))
    }

    fn q() -> QueueName {
        QueueName::parse("q").unwrap()
    }

    fn spec() -> TaskSpec {
        TaskSpec::new(TaskKind::parse("k").unwrap(), serde_json::json!(1))
    }

    /// Spawns a reserver waiting up to `wait` and lets it reach its wait.
    async fn waiting_reserver(
        s: &Arc<MemoryQueue>,
        wait: Duration,
    ) -> tokio::task::JoinHandle<Option<Lease>> {
        let s = Arc::clone(s);
        let handle = tokio::spawn(async move {
            s.reserve(
                &[q()],
                ReserveOptions::new(Duration::from_secs(60)).wait(wait),
            )
            .await
            .unwrap()
        });
        tokio::task::yield_now().await; // current-thread runtime: the reserver runs to its wait
        handle
    }

    #[tokio::test(start_paused = true)]
    async fn an_enqueue_wakes_a_waiting_reserver_without_time_passing() {
        let s = store();
        let reserver = waiting_reserver(&s, Duration::from_secs(60)).await;
        assert_eq!(s.signals.len(), 1, "the reserver is waiting");
        let start = Instant::now();
        let t = s.enqueue(&q(), spec()).await.unwrap().into_task();
        let lease = reserver.await.unwrap().expect("woken with the task");
        assert_eq!(lease.task.id, t.id);
        assert_eq!(Instant::now(), start, "no timer was needed");
        assert_eq!(s.signals.len(), 0, "the subscription is gone");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_reserver_reclaims_an_expired_lease_when_it_runs_out() {
        let s = store();
        s.enqueue(&q(), spec()).await.unwrap();
        let first = s
            .reserve(&[q()], ReserveOptions::new(Duration::from_millis(200)))
            .await
            .unwrap()
            .unwrap();
        let start = Instant::now();
        let again = waiting_reserver(&s, Duration::from_secs(60))
            .await
            .await
            .unwrap()
            .expect("redelivered");
        assert_eq!(again.task.id, first.task.id);
        assert_eq!(again.task.attempts, 2);
        assert_eq!(Instant::now() - start, Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_scheduled_while_waiting_moves_the_timer_earlier() {
        let s = store();
        s.enqueue(&q(), spec()).await.unwrap();
        let lease = s
            .reserve(&[q()], ReserveOptions::new(Duration::from_secs(600)))
            .await
            .unwrap()
            .unwrap();
        let start = Instant::now();
        let reserver = waiting_reserver(&s, Duration::from_secs(60)).await;
        let failure = Failure {
            error: "later".into(),
            retry: Retry::After(Duration::from_millis(300)),
        };
        s.fail(&q(), lease.task.id, lease.token, failure)
            .await
            .unwrap();
        let again = reserver
            .await
            .unwrap()
            .expect("the retry, not the deadline");
        assert_eq!(again.task.attempts, 2);
        assert_eq!(Instant::now() - start, Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_reserver_gives_up_at_its_deadline() {
        let s = store();
        s.enqueue(
            &q(),
            spec().schedule(Schedule::After(Duration::from_secs(3600))),
        )
        .await
        .unwrap();
        let start = Instant::now();
        let got = s
            .reserve(
                &[q()],
                ReserveOptions::new(Duration::from_secs(1)).wait(Duration::from_secs(2)),
            )
            .await
            .unwrap();
        assert!(got.is_none());
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_reserve_leaves_no_subscription() {
        let s = store();
        let opts = ReserveOptions::new(Duration::from_secs(1)).wait(Duration::from_secs(60));
        let r = tokio::time::timeout(Duration::from_secs(1), s.reserve(&[q()], opts)).await;
        assert!(r.is_err(), "still waiting when dropped");
        assert_eq!(s.signals.len(), 0);
    }
}
