//! [`EncryptedQueue`]: a [`QueueStore`] that encrypts task payloads and results of sensitive
//! queues.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use spool_domain::names::{QueueName, TaskId};
use spool_domain::task::{Failure, Lease, LeaseToken, QueueStats, Retry, Task, TaskSpec};
use spool_domain::Timestamp;
use spool_ports::{
    check_complete_many, complete_rest, Completion, Enqueued, PortError, QueueStore,
    ReserveOptions, TaskQuery,
};

use super::cache::{open_error, seal_error};
use super::{Context, CryptoError, Keyring};

/// How an encrypted payload or result is stored in the task's JSON: a string of this prefix
/// followed by the standard base64 of the [envelope](super::cipher).
pub const JSON_MARKER: &str = "spool-enc:";

/// Which field of a task a ciphertext belongs to (part of its context).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskField {
    /// The handler input.
    Payload,
    /// The handler's result.
    Result,
}

impl TaskField {
    fn as_str(self) -> &'static str {
        match self {
            TaskField::Payload => "payload",
            TaskField::Result => "result",
        }
    }
}

/// The context a task's payload or result is bound to: queue, task id and field.
pub fn task_context(queue: &QueueName, task: TaskId, field: TaskField) -> Context {
    let id = task.to_string();
    Context::new(["queue", queue.as_str(), id.as_str(), field.as_str()])
}

/// Encrypts the payload (on enqueue) and the result (on complete) of tasks in sensitive queues
/// before they reach the wrapped store, and decrypts both in every task it returns; other
/// queues pass through untouched.
///
/// Each ciphertext is bound to its queue, task id and field, so an enqueue without an id gets
/// one generated here (a ULID, as the stores make). A ciphertext moved to another task, a
/// tampered or truncated one, or a plaintext payload in a sensitive queue is a
/// [`PortError::Internal`] naming the task. A task reserved with a payload that cannot be
/// opened is failed at once (dead, `last_error` says why) and the reservation returns that
/// error, so a poison ciphertext is never handed to a handler nor redelivered forever.
///
/// `last_error`, kind, unique key and the other task fields stay in clear.
pub struct EncryptedQueue {
    inner: Arc<dyn QueueStore>,
    keyring: Arc<Keyring>,
    queues: BTreeSet<QueueName>,
}

impl std::fmt::Debug for EncryptedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedQueue")
            .field("keyring", &self.keyring)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    Timestamp::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

fn what(queue: &QueueName, task: TaskId, field: TaskField) -> String {
    format!("{} of task {task} in queue {queue}", field.as_str())
}

impl EncryptedQueue {
    /// Wraps `inner`, encrypting payloads and results of `queues` with `keyring`.
    pub fn new(
        inner: Arc<dyn QueueStore>,
        keyring: Arc<Keyring>,
        queues: BTreeSet<QueueName>,
    ) -> Self {
        Self {
            inner,
            keyring,
            queues,
        }
    }

    /// Whether `queue` is sensitive.
    pub fn is_sensitive(&self, queue: &QueueName) -> bool {
        self.queues.contains(queue)
    }

    fn seal_value(
        &self,
        queue: &QueueName,
        task: TaskId,
        field: TaskField,
        value: &serde_json::Value,
    ) -> Result<serde_json::Value, PortError> {
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(value).map_err(|e| PortError::invalid("payload", e.to_string()))?,
        );
        let sealed = self
            .keyring
            .seal(&plain, &task_context(queue, task, field))
            .map_err(|e| seal_error(what(queue, task, field), e))?;
        Ok(serde_json::Value::String(format!(
            "{JSON_MARKER}{}",
            STANDARD.encode(sealed)
        )))
    }

    fn open_value(
        &self,
        queue: &QueueName,
        task: TaskId,
        field: TaskField,
        value: &serde_json::Value,
    ) -> Result<serde_json::Value, PortError> {
        let err = |e: CryptoError| open_error(what(queue, task, field), e);
        let text = value
            .as_str()
            .and_then(|s| s.strip_prefix(JSON_MARKER))
            .ok_or_else(|| {
                err(CryptoError::Malformed(
                    "the stored value is not an encrypted value (written before encryption was enabled?)"
                        .to_owned(),
                ))
            })?;
        let sealed = STANDARD
            .decode(text)
            .map_err(|_| err(CryptoError::Malformed("bad base64".to_owned())))?;
        let plain = zeroize::Zeroizing::new(
            self.keyring
                .open(&sealed, &task_context(queue, task, field))
                .map_err(err)?,
        );
        serde_json::from_slice(&plain).map_err(|_| {
            err(CryptoError::Malformed(
                "the decrypted value is not JSON".to_owned(),
            ))
        })
    }

    /// Decrypts the payload and result of `task` when its queue is sensitive.
    fn open_task(&self, mut task: Task) -> Result<Task, PortError> {
        if !self.is_sensitive(&task.queue) {
            return Ok(task);
        }
        task.payload = self.open_value(&task.queue, task.id, TaskField::Payload, &task.payload)?;
        if let Some(r) = &task.result {
            task.result = Some(self.open_value(&task.queue, task.id, TaskField::Result, r)?);
        }
        Ok(task)
    }

    fn open_lease(&self, mut lease: Lease) -> Result<Lease, PortError> {
        lease.task = self.open_task(lease.task)?;
        Ok(lease)
    }

    /// The reserved task decrypted; one that cannot be opened is failed at once (dead, with
    /// why), so a poison ciphertext is never handed to a handler nor redelivered forever.
    async fn deliver(&self, lease: Lease) -> Result<Lease, PortError> {
        let (queue, id, token) = (lease.task.queue.clone(), lease.task.id, lease.token);
        match self.open_lease(lease) {
            Ok(lease) => Ok(lease),
            Err(e) => {
                let failure = Failure {
                    error: format!("not delivered: {e}"),
                    retry: Retry::Never,
                };
                if let Err(fail) = self.inner.fail(&queue, id, token, failure).await {
                    tracing::error!(task = %id, queue = %queue, error = %fail,
                        "could not dead-letter a task whose payload cannot be decrypted");
                }
                Err(e)
            }
        }
    }
}

#[async_trait]
impl QueueStore for EncryptedQueue {
    async fn enqueue(&self, queue: &QueueName, mut spec: TaskSpec) -> Result<Enqueued, PortError> {
        if self.is_sensitive(queue) {
            let id = *spec
                .id
                .get_or_insert_with(|| TaskId::from_parts(now(), rand::random::<u128>()));
            spec.payload = self.seal_value(queue, id, TaskField::Payload, &spec.payload)?;
        }
        Ok(match self.inner.enqueue(queue, spec).await? {
            Enqueued::Created(t) => Enqueued::Created(self.open_task(t)?),
            Enqueued::Duplicate(t) => Enqueued::Duplicate(self.open_task(t)?),
        })
    }

    async fn reserve(
        &self,
        queues: &[QueueName],
        opts: ReserveOptions,
    ) -> Result<Option<Lease>, PortError> {
        let Some(lease) = self.inner.reserve(queues, opts).await? else {
            return Ok(None);
        };
        self.deliver(lease).await.map(Some)
    }

    /// As [`QueueStore::reserve`], batched: a task whose payload cannot be opened is
    /// dead-lettered and left out, the others are delivered.
    async fn reserve_many(
        &self,
        queues: &[QueueName],
        max: usize,
        opts: ReserveOptions,
    ) -> Result<Vec<Lease>, PortError> {
        let mut delivered = Vec::new();
        for lease in self.inner.reserve_many(queues, max, opts).await? {
            if let Ok(lease) = self.deliver(lease).await {
                delivered.push(lease);
            }
        }
        Ok(delivered)
    }

    async fn heartbeat(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        lease: Duration,
    ) -> Result<Lease, PortError> {
        let lease = self.inner.heartbeat(queue, task, token, lease).await?;
        self.open_lease(lease)
    }

    async fn complete(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        result: Option<serde_json::Value>,
    ) -> Result<Task, PortError> {
        let result = match result {
            Some(r) if self.is_sensitive(queue) => {
                Some(self.seal_value(queue, task, TaskField::Result, &r)?)
            }
            other => other,
        };
        let t = self.inner.complete(queue, task, token, result).await?;
        self.open_task(t)
    }

    /// Each result sealed as `complete` seals it (an item that cannot be sealed fails
    /// alone), then one batched call.
    async fn complete_many(
        &self,
        queue: &QueueName,
        batch: Vec<Completion>,
    ) -> Result<Vec<Result<(), PortError>>, PortError> {
        check_complete_many(&batch)?;
        if !self.is_sensitive(queue) {
            return self.inner.complete_many(queue, batch).await;
        }
        let mut outcomes: Vec<Option<Result<(), PortError>>> = Vec::with_capacity(batch.len());
        let mut sealed = Vec::with_capacity(batch.len());
        for mut c in batch {
            if let Some(r) = c.result.take() {
                match self.seal_value(queue, c.task, TaskField::Result, &r) {
                    Ok(s) => c.result = Some(s),
                    Err(e) => {
                        outcomes.push(Some(Err(e)));
                        continue;
                    }
                }
            }
            outcomes.push(None);
            sealed.push(c);
        }
        complete_rest(outcomes, sealed, |rest| {
            self.inner.complete_many(queue, rest)
        })
        .await
    }

    async fn fail(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        failure: Failure,
    ) -> Result<Task, PortError> {
        let t = self.inner.fail(queue, task, token, failure).await?;
        self.open_task(t)
    }

    async fn release(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        reason: &str,
    ) -> Result<Task, PortError> {
        let t = self.inner.release(queue, task, token, reason).await?;
        self.open_task(t)
    }

    async fn cancel(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError> {
        let t = self.inner.cancel(queue, task).await?;
        self.open_task(t)
    }

    async fn requeue(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError> {
        let t = self.inner.requeue(queue, task).await?;
        self.open_task(t)
    }

    async fn get(&self, queue: &QueueName, task: TaskId) -> Result<Option<Task>, PortError> {
        self.inner
            .get(queue, task)
            .await?
            .map(|t| self.open_task(t))
            .transpose()
    }

    async fn stats(&self, queues: &[QueueName]) -> Result<Vec<QueueStats>, PortError> {
        self.inner.stats(queues).await
    }

    /// Every listed task is decrypted; one that cannot be is an error for the listing (as
    /// for [`QueueStore::get`]), never shown as ciphertext or garbage.
    /// A listing is an overview (the dashboard's): a task whose payload or result cannot be
    /// opened stays in it, with the sealed value left as stored (the `spool-enc:` string,
    /// never decrypted garbage) and a warning logged; `get` on that task is the error.
    async fn list(&self, queue: &QueueName, query: TaskQuery) -> Result<Vec<Task>, PortError> {
        Ok(self
            .inner
            .list(queue, query)
            .await?
            .into_iter()
            .map(|t| {
                let id = t.id;
                self.open_task(t.clone()).unwrap_or_else(|e| {
                    tracing::warn!(task = %id, error = %e, "listing a task that cannot be decrypted");
                    t
                })
            })
            .collect())
    }
}
