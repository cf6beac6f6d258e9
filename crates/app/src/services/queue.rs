//! `QueueManager`: typed enqueue, status, cancel, stats, and the lease operations HTTP
//! workers and the worker runtime use.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use spool_domain::backoff::Backoff;
use spool_domain::names::{CorrelationId, QueueName, TaskId, TaskKind, UniqueKey};
use spool_domain::task::{
    Failure, Lease, LeaseToken, MaxAttempts, Priority, QueueStats, Schedule, Task, TaskSpec,
};
use spool_ports::{Completion, Enqueued, PortError, QueueStore, ReserveOptions, TaskQuery};

use super::ServiceError;

/// Per-queue settings: worker concurrency and lease, and the defaults of tasks enqueued
/// without their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// Handlers running at once per worker process.
    pub concurrency: usize,
    /// Tasks a worker reserves ahead of its free slots (`None`: as many as `concurrency`).
    pub prefetch: Option<usize>,
    /// Lease per reservation.
    pub lease: Duration,
    /// Default attempts.
    pub max_attempts: MaxAttempts,
    /// Default backoff.
    pub backoff: Backoff,
    /// Default per-attempt timeout.
    pub timeout: Option<Duration>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            prefetch: None,
            lease: Duration::from_secs(30),
            max_attempts: MaxAttempts::default(),
            backoff: Backoff::default(),
            timeout: None,
        }
    }
}

/// Settings of every queue: the configured ones, and a default for the rest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueuePolicies {
    /// For queues without their own settings.
    pub default: QueueSettings,
    /// Per queue.
    pub queues: BTreeMap<QueueName, QueueSettings>,
}

impl QueuePolicies {
    /// The settings of `queue`.
    pub fn get(&self, queue: &QueueName) -> &QueueSettings {
        self.queues.get(queue).unwrap_or(&self.default)
    }

    /// Sets the settings of `queue`.
    pub fn insert(&mut self, queue: QueueName, settings: QueueSettings) {
        self.queues.insert(queue, settings);
    }
}

/// How to enqueue; every field defaults (to the queue's settings where it has one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnqueueOptions {
    /// Strict priority (default normal).
    pub priority: Priority,
    /// When it becomes ready (default now).
    pub schedule: Schedule,
    /// Attempts (default: the queue's).
    pub max_attempts: Option<MaxAttempts>,
    /// Backoff (default: the queue's).
    pub backoff: Option<Backoff>,
    /// Per-attempt timeout (default: the queue's).
    pub timeout: Option<Duration>,
    /// De-duplication key.
    pub unique_key: Option<UniqueKey>,
    /// Correlation ID carried into the task, its handler's span and progress events.
    pub correlation_id: Option<CorrelationId>,
}

impl EnqueueOptions {
    /// All defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the priority.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// Runs after `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.schedule = Schedule::After(delay);
        self
    }

    /// Sets the schedule.
    pub fn schedule(mut self, s: Schedule) -> Self {
        self.schedule = s;
        self
    }

    /// Sets the attempts.
    pub fn max_attempts(mut self, m: MaxAttempts) -> Self {
        self.max_attempts = Some(m);
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.backoff = Some(b);
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
}

struct Inner {
    store: Arc<dyn QueueStore>,
    policies: QueuePolicies,
}

/// Task queues over a [`QueueStore`]. Cheap to clone.
#[derive(Clone)]
pub struct QueueManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for QueueManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueManager")
            .field("policies", &self.inner.policies)
            .finish_non_exhaustive()
    }
}

fn record_correlation(c: Option<&CorrelationId>) {
    if let Some(c) = c {
        tracing::Span::current().record("correlation_id", tracing::field::display(c));
    }
}

impl QueueManager {
    /// A manager over `store`.
    pub fn new(store: Arc<dyn QueueStore>, policies: QueuePolicies) -> Self {
        Self {
            inner: Arc::new(Inner { store, policies }),
        }
    }

    /// Per-queue settings.
    pub fn policies(&self) -> &QueuePolicies {
        &self.inner.policies
    }

    /// The settings of `queue`.
    pub fn settings(&self, queue: &QueueName) -> &QueueSettings {
        self.inner.policies.get(queue)
    }

    /// The full spec `opts` describe for `queue`, with the queue's defaults filled in.
    pub fn spec(
        &self,
        queue: &QueueName,
        kind: TaskKind,
        payload: serde_json::Value,
        opts: EnqueueOptions,
    ) -> TaskSpec {
        let s = self.settings(queue);
        TaskSpec {
            id: None,
            kind,
            payload,
            priority: opts.priority,
            schedule: opts.schedule,
            max_attempts: opts.max_attempts.unwrap_or(s.max_attempts),
            backoff: opts.backoff.unwrap_or(s.backoff),
            timeout: opts.timeout.or(s.timeout),
            unique_key: opts.unique_key,
            correlation_id: opts.correlation_id,
        }
    }

    /// Enqueues a typed payload (serialised as JSON).
    ///
    /// # Errors
    /// [`ServiceError::Encode`] when the payload is not JSON-serialisable; `Invalid` for a
    /// payload over the size limit or a bad schedule; port errors.
    #[tracing::instrument(name = "queue.enqueue", skip_all, fields(queue = %queue, kind = %kind, task_id = tracing::field::Empty, correlation_id = tracing::field::Empty))]
    pub async fn enqueue<T: Serialize + ?Sized>(
        &self,
        queue: &QueueName,
        kind: &TaskKind,
        payload: &T,
        opts: EnqueueOptions,
    ) -> Result<Enqueued, ServiceError> {
        let value = serde_json::to_value(payload).map_err(|e| ServiceError::Encode {
            what: "task payload",
            message: e.to_string(),
        })?;
        let spec = self.spec(queue, kind.clone(), value, opts);
        self.submit(queue, spec).await
    }

    /// Enqueues a JSON payload as is (HTTP).
    ///
    /// # Errors
    /// As for [`QueueManager::enqueue`].
    #[tracing::instrument(name = "queue.enqueue", skip_all, fields(queue = %queue, kind = %kind, task_id = tracing::field::Empty, correlation_id = tracing::field::Empty))]
    pub async fn enqueue_json(
        &self,
        queue: &QueueName,
        kind: &TaskKind,
        payload: serde_json::Value,
        opts: EnqueueOptions,
    ) -> Result<Enqueued, ServiceError> {
        let spec = self.spec(queue, kind.clone(), payload, opts);
        self.submit(queue, spec).await
    }

    /// Enqueues a complete spec as given (no queue defaults applied).
    ///
    /// # Errors
    /// As for [`QueueManager::enqueue`].
    #[tracing::instrument(name = "queue.enqueue", skip_all, fields(queue = %queue, kind = %spec.kind, task_id = tracing::field::Empty, correlation_id = tracing::field::Empty))]
    pub async fn enqueue_spec(
        &self,
        queue: &QueueName,
        spec: TaskSpec,
    ) -> Result<Enqueued, ServiceError> {
        self.submit(queue, spec).await
    }

    async fn submit(&self, queue: &QueueName, spec: TaskSpec) -> Result<Enqueued, ServiceError> {
        record_correlation(spec.correlation_id.as_ref());
        let out = self.inner.store.enqueue(queue, spec).await?;
        let span = tracing::Span::current();
        span.record("task_id", tracing::field::display(&out.task().id));
        if let Enqueued::Duplicate(t) = &out {
            tracing::debug!(task_id = %t.id, "duplicate of a live task with the same unique key");
        }
        Ok(out)
    }

    /// Reads a task; `None` when unknown or past retention.
    ///
    /// # Errors
    /// Port errors.
    #[tracing::instrument(name = "queue.get", skip_all, fields(queue = %queue, task_id = %id))]
    pub async fn get(&self, queue: &QueueName, id: TaskId) -> Result<Option<Task>, ServiceError> {
        Ok(self.inner.store.get(queue, id).await?)
    }

    /// Reads a task's typed result, once it has one.
    ///
    /// # Errors
    /// `NotFound` for an unknown task; [`ServiceError::Decode`] when the result is not a
    /// `T`; port errors.
    pub async fn result<T: serde::de::DeserializeOwned>(
        &self,
        queue: &QueueName,
        id: TaskId,
    ) -> Result<Option<T>, ServiceError> {
        let task = self
            .get(queue, id)
            .await?
            .ok_or_else(|| spool_ports::PortError::not_found(format!("task {id}")))?;
        match task.result {
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| ServiceError::Decode {
                    what: "task result",
                    message: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    /// Cancels a live task.
    ///
    /// # Errors
    /// `Conflict` when it already finished; `NotFound`; port errors.
    #[tracing::instrument(name = "queue.cancel", skip_all, fields(queue = %queue, task_id = %id))]
    pub async fn cancel(&self, queue: &QueueName, id: TaskId) -> Result<Task, ServiceError> {
        Ok(self.inner.store.cancel(queue, id).await?)
    }

    /// Puts a dead or cancelled task back in its queue.
    ///
    /// # Errors
    /// `Conflict` when it is not dead or cancelled; `NotFound`; port errors.
    #[tracing::instrument(name = "queue.requeue", skip_all, fields(queue = %queue, task_id = %id))]
    pub async fn requeue(&self, queue: &QueueName, id: TaskId) -> Result<Task, ServiceError> {
        Ok(self.inner.store.requeue(queue, id).await?)
    }

    /// Depth per status of `queues` (of every known queue when empty).
    ///
    /// # Errors
    /// Port errors.
    #[tracing::instrument(name = "queue.stats", skip_all, fields(queues = queues.len()))]
    pub async fn stats(&self, queues: &[QueueName]) -> Result<Vec<QueueStats>, ServiceError> {
        Ok(self.inner.store.stats(queues).await?)
    }

    /// Up to `query.limit` tasks of `queue` in `query.listing`, in the listing's order (see
    /// [`QueueStore::list`]): what the dashboard shows.
    ///
    /// # Errors
    /// `Invalid` limit; port errors.
    #[tracing::instrument(name = "queue.list", skip_all, fields(queue = %queue, listing = query.listing.as_str()))]
    pub async fn list(
        &self,
        queue: &QueueName,
        query: TaskQuery,
    ) -> Result<Vec<Task>, ServiceError> {
        Ok(self.inner.store.list(queue, query).await?)
    }

    /// Reserves the next ready task of the first of `queues` that has one, waiting up to
    /// `opts.wait`.
    ///
    /// # Errors
    /// `Invalid` options; port errors.
    #[tracing::instrument(name = "queue.reserve", skip_all, fields(queues = ?queues.iter().map(QueueName::as_str).collect::<Vec<_>>(), task_id = tracing::field::Empty, correlation_id = tracing::field::Empty))]
    pub async fn reserve(
        &self,
        queues: &[QueueName],
        opts: ReserveOptions,
    ) -> Result<Option<Lease>, ServiceError> {
        let lease = self.inner.store.reserve(queues, opts).await?;
        if let Some(l) = &lease {
            tracing::Span::current().record("task_id", tracing::field::display(&l.task.id));
            record_correlation(l.task.correlation_id.as_ref());
        }
        Ok(lease)
    }

    /// Reserves up to `max` ready tasks at once, each under its own lease (see
    /// [`QueueStore::reserve_many`]); never waits.
    ///
    /// # Errors
    /// `Invalid` arguments; port errors.
    #[tracing::instrument(name = "queue.reserve_many", skip_all, fields(max = max, reserved = tracing::field::Empty))]
    pub async fn reserve_many(
        &self,
        queues: &[QueueName],
        max: usize,
        opts: ReserveOptions,
    ) -> Result<Vec<Lease>, ServiceError> {
        let leases = self.inner.store.reserve_many(queues, max, opts).await?;
        tracing::Span::current().record("reserved", leases.len());
        Ok(leases)
    }

    /// Extends a lease.
    ///
    /// # Errors
    /// `LeaseLost`; `NotFound`; port errors.
    #[tracing::instrument(name = "queue.heartbeat", skip_all, fields(queue = %queue, task_id = %id))]
    pub async fn heartbeat(
        &self,
        queue: &QueueName,
        id: TaskId,
        token: LeaseToken,
        lease: Duration,
    ) -> Result<Lease, ServiceError> {
        Ok(self.inner.store.heartbeat(queue, id, token, lease).await?)
    }

    /// Records success.
    ///
    /// # Errors
    /// `LeaseLost`; `NotFound`; `Invalid` result; port errors.
    #[tracing::instrument(name = "queue.complete", skip_all, fields(queue = %queue, task_id = %id))]
    pub async fn complete(
        &self,
        queue: &QueueName,
        id: TaskId,
        token: LeaseToken,
        result: Option<serde_json::Value>,
    ) -> Result<Task, ServiceError> {
        Ok(self.inner.store.complete(queue, id, token, result).await?)
    }

    /// Records the success of several tasks of `queue` at once, each under its own lease (see
    /// [`QueueStore::complete_many`]); one outcome per item, in order.
    ///
    /// # Errors
    /// `Invalid` batch size; port errors that cut the whole call short.
    #[tracing::instrument(name = "queue.complete_many", skip_all, fields(queue = %queue, tasks = batch.len()))]
    pub async fn complete_many(
        &self,
        queue: &QueueName,
        batch: Vec<Completion>,
    ) -> Result<Vec<Result<(), PortError>>, ServiceError> {
        Ok(self.inner.store.complete_many(queue, batch).await?)
    }

    /// Records a failed attempt.
    ///
    /// # Errors
    /// `LeaseLost`; `NotFound`; `Invalid` error text; port errors.
    #[tracing::instrument(name = "queue.fail", skip_all, fields(queue = %queue, task_id = %id))]
    pub async fn fail(
        &self,
        queue: &QueueName,
        id: TaskId,
        token: LeaseToken,
        failure: Failure,
    ) -> Result<Task, ServiceError> {
        Ok(self.inner.store.fail(queue, id, token, failure).await?)
    }

    /// Hands a running task back unfinished: ready again at once, the attempt not counted
    /// (see [`QueueStore::release`]).
    ///
    /// # Errors
    /// `LeaseLost`; `NotFound`; `Invalid` reason; port errors.
    #[tracing::instrument(name = "queue.release", skip_all, fields(queue = %queue, task_id = %id))]
    pub async fn release(
        &self,
        queue: &QueueName,
        id: TaskId,
        token: LeaseToken,
        reason: &str,
    ) -> Result<Task, ServiceError> {
        Ok(self.inner.store.release(queue, id, token, reason).await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde::Deserialize;
    use spool_domain::backoff::Jitter;
    use spool_domain::task::Retry;
    use spool_domain::Timestamp;
    use spool_ports::PortError;

    use super::*;
    use crate::services::mocks::{unavailable, MockQueue};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Embed {
        texts: Vec<String>,
    }

    fn policies() -> QueuePolicies {
        let mut p = QueuePolicies::default();
        p.insert(
            QueueName::embeddings(),
            QueueSettings {
                concurrency: 2,
                prefetch: None,
                lease: Duration::from_secs(10),
                max_attempts: MaxAttempts::new(7).unwrap(),
                backoff: Backoff::constant(Duration::from_secs(3)),
                timeout: Some(Duration::from_secs(90)),
            },
        );
        p
    }

    fn kind() -> TaskKind {
        TaskKind::parse("embed").unwrap()
    }

    fn task_from(queue: &QueueName, spec: TaskSpec) -> Task {
        Task::new(
            TaskId::from_parts(Timestamp::from_millis(1), 1),
            queue.clone(),
            spec,
            Timestamp::from_millis(1),
        )
    }

    #[tokio::test]
    async fn enqueue_fills_in_the_queue_defaults() {
        let mut mock = MockQueue::new();
        mock.expect_enqueue()
            .times(1)
            .withf(|q, spec| {
                q == &QueueName::embeddings()
                    && spec.kind.as_str() == "embed"
                    && spec.payload == serde_json::json!({"texts": ["hi"]})
                    && spec.max_attempts.get() == 7
                    && spec.backoff == Backoff::constant(Duration::from_secs(3))
                    && spec.timeout == Some(Duration::from_secs(90))
                    && spec.correlation_id.as_ref().map(CorrelationId::as_str) == Some("req-1")
            })
            .returning(|q, spec| Ok(Enqueued::Created(task_from(q, spec))));
        let m = QueueManager::new(Arc::new(mock), policies());
        let out = m
            .enqueue(
                &QueueName::embeddings(),
                &kind(),
                &Embed {
                    texts: vec!["hi".into()],
                },
                EnqueueOptions::new().correlation_id(CorrelationId::parse("req-1").unwrap()),
            )
            .await
            .unwrap();
        assert!(matches!(out, Enqueued::Created(_)));
    }

    #[tokio::test]
    async fn options_beat_queue_defaults_and_other_queues_use_the_default() {
        let mut mock = MockQueue::new();
        mock.expect_enqueue()
            .times(1)
            .withf(|_, spec| {
                spec.max_attempts.get() == 1
                    && spec.priority == Priority::new(5).unwrap()
                    && spec.schedule == Schedule::After(Duration::from_secs(9))
                    && spec.unique_key.as_ref().map(UniqueKey::as_str) == Some("u")
                    && spec.backoff == Backoff::constant(Duration::from_secs(3))
            })
            .returning(|q, spec| Ok(Enqueued::Duplicate(task_from(q, spec))));
        mock.expect_enqueue()
            .times(1)
            .withf(|_, spec| {
                spec.max_attempts == MaxAttempts::default()
                    && spec.backoff == Backoff::default()
                    && spec.timeout.is_none()
            })
            .returning(|q, spec| Ok(Enqueued::Created(task_from(q, spec))));
        let m = QueueManager::new(Arc::new(mock), policies());
        let out = m
            .enqueue_json(
                &QueueName::embeddings(),
                &kind(),
                serde_json::json!({}),
                EnqueueOptions::new()
                    .max_attempts(MaxAttempts::new(1).unwrap())
                    .priority(Priority::new(5).unwrap())
                    .delay(Duration::from_secs(9))
                    .unique_key(UniqueKey::parse("u").unwrap()),
            )
            .await
            .unwrap();
        assert!(
            matches!(out, Enqueued::Duplicate(_)),
            "duplicates pass through"
        );
        m.enqueue_json(
            &QueueName::exports(),
            &kind(),
            serde_json::json!(1),
            EnqueueOptions::new(),
        )
        .await
        .unwrap();
        assert_eq!(Backoff::default().jitter, Jitter::Full);
    }

    #[tokio::test]
    async fn unencodable_payloads_never_reach_the_store() {
        let m = QueueManager::new(Arc::new(MockQueue::new()), policies());
        let mut bad = std::collections::HashMap::new();
        bad.insert((1u8, 2u8), 3u8);
        let e = m
            .enqueue(
                &QueueName::embeddings(),
                &kind(),
                &bad,
                EnqueueOptions::new(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ServiceError::Encode {
                    what: "task payload",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn lease_operations_pass_through_with_their_errors() {
        let mut mock = MockQueue::new();
        mock.expect_complete().times(1).returning(|_, t, _, _| {
            Err(PortError::LeaseLost {
                task: t.to_string(),
            })
        });
        mock.expect_fail()
            .times(1)
            .withf(|_, _, token, f| token.get() == 3 && f.retry == Retry::Never && f.error == "bad")
            .returning(|_, _, _, _| Err(unavailable()));
        mock.expect_stats()
            .times(1)
            .returning(|_| Ok(vec![QueueStats::default()]));
        let m = QueueManager::new(Arc::new(mock), policies());
        let id = TaskId::from_parts(Timestamp::from_millis(1), 9);
        let q = QueueName::embeddings();
        let e = m
            .complete(&q, id, LeaseToken::new(3), None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "lease_lost");
        let e = m
            .fail(
                &q,
                id,
                LeaseToken::new(3),
                Failure {
                    error: "bad".into(),
                    retry: Retry::Never,
                },
            )
            .await
            .unwrap_err();
        assert!(e.is_transient());
        assert_eq!(m.stats(&[]).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn typed_results() {
        let mut mock = MockQueue::new();
        let q = QueueName::embeddings();
        let spec = TaskSpec::new(kind(), serde_json::json!({}));
        let mut done = task_from(&q, spec);
        done.result = Some(serde_json::json!({"texts": ["x"]}));
        let id = done.id;
        mock.expect_get()
            .returning(move |_, _| Ok(Some(done.clone())));
        let m = QueueManager::new(Arc::new(mock), policies());
        let r: Option<Embed> = m.result(&q, id).await.unwrap();
        assert_eq!(r.unwrap().texts, vec!["x".to_owned()]);
        let e = m.result::<u32>(&q, id).await.unwrap_err();
        assert!(matches!(e, ServiceError::Decode { .. }));
    }
}
