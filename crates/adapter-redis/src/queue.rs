//! The task queue: every transition is one Lua script over the queue's keys (tag
//! `{q:<name>}`), which first promotes due tasks, reclaims expired leases and prunes finished
//! tasks past retention (bounded batches of 100, atomic, safe from many processes at once) —
//! only when the queue's maintenance hint (`next`) says something may be due, so a transition
//! with nothing due pays one `GET` for it — and records its timestamps from the server's
//! `TIME`.
//!
//! | key (under `<prefix>:{q:<name>}:`) | what |
//! |---|---|
//! | `ready` | zset of queued tasks, score `rank·2^40 + seq` (strict priority, FIFO within one) |
//! | `waiting` | zset of queued tasks by the time they became ready (oldest-waiting stat) |
//! | `scheduled` | zset of scheduled and failed (awaiting retry) tasks by due time |
//! | `running` | zset of running tasks by lease expiry |
//! | `succeeded`, `dead`, `cancelled` | zsets of finished tasks by finish time, pruned past retention |
//! | `t:<id>` | hash per task; finished tasks `PEXPIRE` after `finished_retention` |
//! | `u:<unique key>` | the live task holding a unique key |
//! | `seq` | FIFO sequence |
//! | `next` | maintenance hint: no task is due, no lease expires and nothing is to be pruned before this ms |
//! | channel `wake` | published when a task becomes ready |
//!
//! Task IDs are ULIDs made inside the script from the server time plus 80 random bits sent
//! by the client. Payloads and results are stored as the client's JSON text, never re-encoded
//! by Lua.
//!
//! **Idle reservers** do not poll: before looking they arm a wake-up on each queue's channel
//! (one subscriber connection per backend fans messages out to in-process `Notify`s), then
//! sleep until a wake-up, the next due time / lease expiry the script reported, or 1 s —
//! whichever is first — bounded by the caller's wait.
//!
//! With [`crate::ReplicaAcks`] configured, `enqueue`, `complete`, `fail`, `release`, `cancel`
//! and `requeue` send one more command after a successful write: `WAIT` (see [`crate::cluster`]).
//!
//! Round trips per operation: `enqueue` 1 (plus one concurrent `SADD` to the queue registry
//! the first time this process enqueues to a queue); `reserve` 1 per queue tried, in order
//! (plus one `SUBSCRIBE` the first time this process waits on a queue), repeated after each
//! wake-up while waiting; `reserve_many` 1 per queue tried until `max` tasks are leased (one
//! script reserves up to all of them); `heartbeat`, `complete`, `fail`, `release`, `cancel`,
//! `requeue`, `get` 1;
//! `stats` 1 per queue (concurrent) plus 1 `SMEMBERS` when no queue is named.
//! `list` 1 (`lua/queue_list.lua`: at most `limit` entries of the listing's index, or
//! [`TaskQuery::MAX_SCAN`] of the due-time index for scheduled / retrying tasks).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::interfaces::SetsInterface;
use fred::types::Value;
use spool_domain::backoff::{Backoff, Jitter};
use spool_domain::names::{CorrelationId, QueueName, TaskId, TaskKind, UniqueKey, WorkerId};
use spool_domain::task::{
    Failure, Lease, LeaseToken, Priority, QueueStats, Retry, Schedule, Task, TaskSpec, TaskStatus,
};
use spool_domain::time::duration_millis;
use spool_domain::Timestamp;
use spool_ports::{
    check_complete_many, complete_rest, Completion, Enqueued, PortError, QueueStore,
    ReserveOptions, TaskQuery,
};
use tokio::sync::Notify;

use crate::backend::Shared;
use crate::error::{classify, corrupt};
use crate::keys::concat;
use crate::reply::{array, fields, int, tagged, text, Fields};
use crate::scripts::LuaScript;
use crate::task_hash::{decode_backoff, encode_backoff, PackedSpec};
use crate::wake::MAX_IDLE_WAIT;

/// The Redis queue store.
#[derive(Clone)]
pub struct RedisQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue").finish_non_exhaustive()
    }
}

/// Whether a queue write waits for replicas (when [`crate::ReplicaAcks`] are configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    /// Done when the primary applied it (reads, reserve, heartbeat).
    Primary,
    /// Followed by `WAIT` (enqueue, complete, fail, release, cancel, requeue).
    Replicas,
}

/// What one reserve script found.
enum ReserveOutcome {
    Leased(Box<Lease>),
    /// Nothing ready; the earliest due time / lease expiry, relative to the server's now.
    Empty(Option<Duration>),
}

impl RedisQueue {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// KEYS[1..8] of every queue script (+ the task hash when given).
    fn keys(&self, queue: &QueueName, task: Option<TaskId>) -> (Vec<String>, String) {
        let base = self.shared.keys.queue_base(queue);
        // Concatenated, not format!ted: this runs on every queue script call (the formatting
        // machinery cost ~8k instructions a call for these nine strings).
        let with = |tail: &str| concat([base.as_str(), tail].iter());
        let mut keys = Vec::with_capacity(9);
        keys.extend(
            [
                "ready",
                "waiting",
                "scheduled",
                "running",
                "succeeded",
                "dead",
                "cancelled",
                "seq",
            ]
            .map(with),
        );
        if let Some(id) = task {
            keys.push(format!("{base}t:{id}"));
        }
        (keys, base)
    }

    fn retention_ms(&self) -> String {
        duration_millis(self.shared.limits.finished_retention)
            .max(1)
            .to_string()
    }

    /// Runs a queue script; returns its tag and the rest of the reply. With `Ack::Replicas`
    /// and [`crate::ReplicaAcks`] configured, a successful write (tag `ok` / `created`) is
    /// followed by `WAIT` on the same client, so on the connection that carried the write.
    async fn run(
        &self,
        script: &LuaScript,
        queue: &QueueName,
        task: Option<TaskId>,
        extra: Vec<Value>,
        ack: Ack,
    ) -> Result<(String, Vec<Value>), PortError> {
        let (keys, base) = self.keys(queue, task);
        let mut args = Vec::with_capacity(2 + extra.len());
        args.push(Value::from(base));
        args.push(Value::from(self.retention_ms()));
        args.extend(extra);
        let acks = match ack {
            Ack::Replicas => self.shared.replica_acks.as_ref(),
            Ack::Primary => None,
        };
        let Some(acks) = acks else {
            let reply: Value = script.run(&self.shared.pool, keys, args).await?;
            return tagged(reply);
        };
        let slot = script.slot_of(&keys)?;
        let client = self.shared.pool.next();
        let reply: Value = script.run(client, keys, args).await?;
        let (tag, rest) = tagged(reply)?;
        if matches!(tag.as_str(), "ok" | "created") {
            crate::cluster::wait_for_replicas(client, slot, acks).await?;
        }
        Ok((tag, rest))
    }

    /// Runs a script about one task and maps its error tags.
    async fn run_task(
        &self,
        script: &LuaScript,
        queue: &QueueName,
        task: TaskId,
        extra: Vec<Value>,
        event: &str,
        ack: Ack,
    ) -> Result<Task, PortError> {
        let (tag, rest) = self.run(script, queue, Some(task), extra, ack).await?;
        match tag.as_str() {
            "ok" => task_from(queue, rest.into_iter().next()),
            "not_found" => Err(PortError::not_found(format!("task {task}"))),
            "lease_lost" => Err(PortError::LeaseLost {
                task: task.to_string(),
            }),
            "conflict" => {
                let from = rest.first().and_then(text).unwrap_or_default();
                Err(PortError::conflict(format!(
                    "a {from} task cannot take the event {event}"
                )))
            }
            other => Err(corrupt(format!("queue script tag {other}"))),
        }
    }

    /// Whether this process registered `queue` already.
    fn is_registered(&self, queue: &QueueName) -> bool {
        self.shared
            .registered_queues
            .lock()
            .contains(queue.as_str())
    }

    /// Registers the queue in `<prefix>:queues`; called while [`Self::is_registered`] says
    /// not yet (two first enqueues racing both add it, which is harmless).
    async fn register(&self, queue: &QueueName) -> Result<(), PortError> {
        self.shared
            .pool
            .sadd::<i64, _, _>(self.shared.keys.queue_registry(), queue.as_str())
            .await
            .map_err(classify)?;
        self.shared
            .registered_queues
            .lock()
            .insert(queue.as_str().to_owned());
        Ok(())
    }

    /// The wake-up notifier of `queue`, subscribing on first use; `None` when pub/sub is
    /// unavailable (the caller then re-checks every second).
    async fn wake_for(&self, queue: &QueueName) -> Option<Arc<Notify>> {
        if let Some(n) = self.shared.queue_wakes.lock().get(queue.as_str()) {
            return Some(n.clone());
        }
        match self
            .shared
            .hub
            .acquire(&self.shared.keys.queue_wake(queue))
            .await
        {
            Ok(n) => {
                let mut wakes = self.shared.queue_wakes.lock();
                let entry = wakes.entry(queue.as_str().to_owned()).or_insert(n);
                Some(entry.clone())
            }
            Err(e) => {
                tracing::warn!(queue = %queue, error = %e, "cannot subscribe to queue wake-ups; re-checking every second");
                None
            }
        }
    }

    async fn reserve_one(
        &self,
        queue: &QueueName,
        opts: &ReserveOptions,
    ) -> Result<ReserveOutcome, PortError> {
        let extra = vec![
            Value::from(duration_millis(opts.lease).to_string()),
            Value::from(opts.worker.as_ref().map_or("", |w| w.as_str()).to_owned()),
        ];
        let (tag, rest) = self
            .run(
                &self.shared.scripts.queue_reserve,
                queue,
                None,
                extra,
                Ack::Primary,
            )
            .await?;
        match tag.as_str() {
            "ok" => {
                let lease = leases_from(queue, rest, opts.worker.as_ref())?
                    .into_iter()
                    .next()
                    .ok_or_else(|| corrupt("reserve reply: ok without a task"))?;
                Ok(ReserveOutcome::Leased(Box::new(lease)))
            }
            "empty" => {
                let now = rest.first().and_then(int).unwrap_or(0);
                let next = rest.get(1).and_then(int).unwrap_or(-1);
                Ok(ReserveOutcome::Empty((next >= 0).then(|| {
                    Duration::from_millis(u64::try_from(next - now).unwrap_or(0))
                })))
            }
            other => Err(corrupt(format!("reserve script tag {other}"))),
        }
    }

    /// A task result as the JSON text stored, refused when over `max_payload_bytes`.
    fn result_text(&self, result: Option<&serde_json::Value>) -> Result<Option<String>, PortError> {
        let Some(v) = result else { return Ok(None) };
        let s =
            serde_json::to_string(v).map_err(|e| PortError::invalid("result", e.to_string()))?;
        let max = self.shared.limits.max_payload_bytes;
        if s.len() > max {
            return Err(PortError::invalid(
                "result",
                format!("{} bytes exceeds the maximum of {max}", s.len()),
            ));
        }
        Ok(Some(s))
    }

    async fn stats_one(&self, queue: &QueueName) -> Result<QueueStats, PortError> {
        let (keys, base) = self.keys(queue, None);
        let args = vec![Value::from(base), Value::from(self.retention_ms())];
        let reply: Value = self
            .shared
            .scripts
            .queue_stats
            .run(&self.shared.pool, keys, args)
            .await?;
        let n: Vec<i64> = array(reply)?.iter().filter_map(int).collect();
        if n.len() != 7 {
            return Err(corrupt("stats script reply"));
        }
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(QueueStats {
            name: queue.as_str().to_owned(),
            queued: u(n[0]),
            scheduled: u(n[1]),
            running: u(n[2]),
            succeeded: u(n[3]),
            dead: u(n[4]),
            cancelled: u(n[5]),
            oldest_waiting_ms: (n[6] >= 0).then(|| u(n[6])),
        })
    }
}

fn check_lease(lease: Duration) -> Result<(), PortError> {
    ReserveOptions::new(lease).validate()
}

/// 16 Crockford base-32 characters of fresh randomness: the tail of a ULID.
fn ulid_tail() -> String {
    let id = TaskId::from_parts(Timestamp::EPOCH, rand::random::<u128>());
    id.to_string()[10..].to_owned()
}

#[async_trait]
impl QueueStore for RedisQueue {
    async fn enqueue(&self, queue: &QueueName, spec: TaskSpec) -> Result<Enqueued, PortError> {
        spec.validate(self.shared.limits.max_payload_bytes)?;
        let payload = serde_json::to_string(&spec.payload)
            .map_err(|e| PortError::invalid("payload", e.to_string()))?;
        let (sched, sched_ms) = match spec.schedule {
            Schedule::Now => ("now", 0),
            Schedule::After(d) => ("after", duration_millis(d)),
            Schedule::At(t) => ("at", t.as_millis()),
        };
        let extra: Vec<Value> = vec![
            ulid_tail().into(),
            PackedSpec::encode(&spec).into(),
            payload.into(),
            spec.priority.rank().to_string().into(),
            spec.max_attempts.get().to_string().into(),
            encode_backoff(&spec.backoff).into(),
            spec.unique_key
                .as_ref()
                .map_or("", |k| k.as_str())
                .to_owned()
                .into(),
            sched.into(),
            sched_ms.to_string().into(),
            spec.id.map(|id| id.to_string()).unwrap_or_default().into(),
        ];
        let script = self.run(
            &self.shared.scripts.queue_enqueue,
            queue,
            None,
            extra,
            Ack::Replicas,
        );
        // The first enqueue of a queue in this process also registers it, concurrently; the
        // registration's future is boxed so that it does not add ~7 KB to every enqueue's
        // future (the boxed future of this method is moved whole, every call).
        let (outcome, registered) = if self.is_registered(queue) {
            (script.await, Ok(()))
        } else {
            futures::join!(script, Box::pin(self.register(queue)))
        };
        let (tag, rest) = outcome?;
        if let Err(e) = registered {
            // The task is stored; only the stats registry missed it. The next enqueue retries.
            tracing::warn!(queue = %queue, error = %e, "could not register the queue for stats");
        }
        match tag.as_str() {
            "created" => Ok(Enqueued::Created(created_task(queue, spec, &rest)?)),
            "duplicate" => Ok(Enqueued::Duplicate(task_from(
                queue,
                rest.into_iter().next(),
            )?)),
            "collision" => Err(PortError::internal("task id collision; retry the enqueue")),
            other => Err(corrupt(format!("enqueue script tag {other}"))),
        }
    }

    async fn reserve(
        &self,
        queues: &[QueueName],
        opts: ReserveOptions,
    ) -> Result<Option<Lease>, PortError> {
        if queues.is_empty() {
            return Err(PortError::invalid("queues", "name at least one queue"));
        }
        opts.validate()?;
        let deadline = tokio::time::Instant::now() + opts.wait;
        let mut notifies = Vec::new();
        if !opts.wait.is_zero() {
            for q in queues {
                if let Some(n) = self.wake_for(q).await {
                    notifies.push(n);
                }
            }
        }
        loop {
            // Arm the wake-ups before looking, so an enqueue right after the look still wakes us.
            let mut armed: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> = notifies
                .iter()
                .map(|n| {
                    let mut f = Box::pin(n.notified());
                    f.as_mut().enable();
                    f
                })
                .collect();
            let mut next: Option<Duration> = None;
            for q in queues {
                match self.reserve_one(q, &opts).await? {
                    ReserveOutcome::Leased(lease) => return Ok(Some(*lease)),
                    ReserveOutcome::Empty(hint) => {
                        next = match (next, hint) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut nap = (deadline - now).min(MAX_IDLE_WAIT);
            if let Some(hint) = next {
                nap = nap.min(hint.max(Duration::from_millis(1)));
            }
            if armed.is_empty() {
                tokio::time::sleep(nap).await;
            } else {
                let any_wake = futures::future::select_all(armed.iter_mut().map(|f| f.as_mut()));
                tokio::select! {
                    _ = any_wake => {}
                    _ = tokio::time::sleep(nap) => {}
                }
            }
        }
    }

    /// One script call per queue tried (in order) reserving up to the rest of `max` at once.
    async fn reserve_many(
        &self,
        queues: &[QueueName],
        max: usize,
        opts: ReserveOptions,
    ) -> Result<Vec<Lease>, PortError> {
        spool_ports::check_reserve_many(queues, max)?;
        opts.validate()?;
        let mut leases = Vec::new();
        for q in queues {
            let want = max - leases.len();
            if want == 0 {
                break;
            }
            let extra = vec![
                Value::from(duration_millis(opts.lease).to_string()),
                Value::from(opts.worker.as_ref().map_or("", |w| w.as_str()).to_owned()),
                Value::from(want.to_string()),
            ];
            let (tag, rest) = self
                .run(
                    &self.shared.scripts.queue_reserve,
                    q,
                    None,
                    extra,
                    Ack::Primary,
                )
                .await?;
            match tag.as_str() {
                "ok" => leases.extend(leases_from(q, rest, opts.worker.as_ref())?),
                "empty" => {}
                other => return Err(corrupt(format!("reserve script tag {other}"))),
            }
        }
        Ok(leases)
    }

    async fn heartbeat(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        lease: Duration,
    ) -> Result<Lease, PortError> {
        check_lease(lease)?;
        let extra = vec![
            Value::from(token.get().to_string()),
            Value::from(duration_millis(lease).to_string()),
        ];
        let t = self
            .run_task(
                &self.shared.scripts.queue_heartbeat,
                queue,
                task,
                extra,
                "Heartbeat",
                Ack::Primary,
            )
            .await?;
        Ok(t.lease())
    }

    async fn complete(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        result: Option<serde_json::Value>,
    ) -> Result<Task, PortError> {
        let result_text = self.result_text(result.as_ref())?;
        let extra = vec![
            Value::from(token.get().to_string()),
            Value::from(if result_text.is_some() { "1" } else { "0" }),
            Value::from(result_text.unwrap_or_default()),
        ];
        self.run_task(
            &self.shared.scripts.queue_complete,
            queue,
            task,
            extra,
            "Complete",
            Ack::Replicas,
        )
        .await
    }

    /// One script call for the whole batch; an item whose result is too large is refused
    /// here and never sent.
    async fn complete_many(
        &self,
        queue: &QueueName,
        batch: Vec<Completion>,
    ) -> Result<Vec<Result<(), PortError>>, PortError> {
        check_complete_many(&batch)?;
        let mut decided: Vec<Option<Result<(), PortError>>> = Vec::with_capacity(batch.len());
        let mut sent = Vec::with_capacity(batch.len());
        let mut extra = vec![Value::Null];
        for c in batch {
            match self.result_text(c.result.as_ref()) {
                Ok(text) => {
                    decided.push(None);
                    extra.push(Value::from(c.task.to_string()));
                    extra.push(Value::from(c.token.get().to_string()));
                    extra.push(Value::from(if text.is_some() { "1" } else { "0" }));
                    extra.push(Value::from(text.unwrap_or_default()));
                    sent.push(c);
                }
                Err(e) => decided.push(Some(Err(e))),
            }
        }
        complete_rest(decided, sent, |sent| async move {
            // The item count, known once the refused ones are out.
            extra[0] = Value::from(sent.len().to_string());
            let (tag, rest) = self
                .run(
                    &self.shared.scripts.queue_complete_many,
                    queue,
                    None,
                    extra,
                    Ack::Replicas,
                )
                .await?;
            if tag != "ok" || rest.len() != sent.len() {
                return Err(corrupt(format!(
                    "complete_many reply: {tag} with {} outcomes for {} items",
                    rest.len(),
                    sent.len()
                )));
            }
            sent.iter()
                .zip(&rest)
                .map(|(c, outcome)| match outcome.as_str().as_deref() {
                    Some("ok") => Ok(Ok(())),
                    Some("lease_lost") => Ok(Err(PortError::LeaseLost {
                        task: c.task.to_string(),
                    })),
                    Some("not_found") => Ok(Err(PortError::not_found(format!("task {}", c.task)))),
                    _ => Err(corrupt("complete_many reply: unknown outcome")),
                })
                .collect()
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
        let max = self.shared.limits.max_error_bytes;
        if failure.error.len() > max {
            return Err(PortError::invalid(
                "error",
                format!("{} bytes exceeds the maximum of {max}", failure.error.len()),
            ));
        }
        let (mode, after) = match failure.retry {
            Retry::Backoff => ("backoff", 0),
            Retry::After(d) => {
                if d > Backoff::MAX {
                    return Err(PortError::invalid("retry", "delay must be at most 7 days"));
                }
                ("after", duration_millis(d))
            }
            Retry::Never => ("never", 0),
        };
        let extra = vec![
            Value::from(token.get().to_string()),
            Value::from(failure.error),
            Value::from(mode),
            Value::from(after.to_string()),
            Value::from(rand::random::<f64>().to_string()),
        ];
        self.run_task(
            &self.shared.scripts.queue_fail,
            queue,
            task,
            extra,
            "Fail",
            Ack::Replicas,
        )
        .await
    }

    async fn release(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        reason: &str,
    ) -> Result<Task, PortError> {
        let max = self.shared.limits.max_error_bytes;
        if reason.len() > max {
            return Err(PortError::invalid(
                "reason",
                format!("{} bytes exceeds the maximum of {max}", reason.len()),
            ));
        }
        let extra = vec![
            Value::from(token.get().to_string()),
            Value::from(reason.to_owned()),
        ];
        self.run_task(
            &self.shared.scripts.queue_release,
            queue,
            task,
            extra,
            "Release",
            Ack::Replicas,
        )
        .await
    }

    async fn cancel(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError> {
        self.run_task(
            &self.shared.scripts.queue_cancel,
            queue,
            task,
            Vec::new(),
            "Cancel",
            Ack::Replicas,
        )
        .await
    }

    async fn requeue(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError> {
        self.run_task(
            &self.shared.scripts.queue_requeue,
            queue,
            task,
            Vec::new(),
            "Requeue",
            Ack::Replicas,
        )
        .await
    }

    async fn get(&self, queue: &QueueName, task: TaskId) -> Result<Option<Task>, PortError> {
        match self
            .run_task(
                &self.shared.scripts.queue_get,
                queue,
                task,
                Vec::new(),
                "Get",
                Ack::Primary,
            )
            .await
        {
            Ok(t) => Ok(Some(t)),
            Err(PortError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn stats(&self, queues: &[QueueName]) -> Result<Vec<QueueStats>, PortError> {
        let max = self.shared.limits.max_batch;
        if queues.len() > max {
            return Err(PortError::invalid(
                "queues",
                format!("{} queues exceed the maximum of {max}", queues.len()),
            ));
        }
        let mut names: Vec<QueueName> = if queues.is_empty() {
            let members: Vec<String> = self
                .shared
                .pool
                .smembers(self.shared.keys.queue_registry())
                .await
                .map_err(classify)?;
            members
                .into_iter()
                .filter_map(|m| QueueName::parse(m).ok())
                .collect()
        } else {
            queues.to_vec()
        };
        names.sort();
        names.dedup();
        futures::future::try_join_all(names.iter().map(|q| self.stats_one(q))).await
    }

    async fn list(&self, queue: &QueueName, query: TaskQuery) -> Result<Vec<Task>, PortError> {
        query.validate()?;
        let (keys, base) = self.keys(queue, None);
        let args = vec![
            Value::from(base),
            Value::from(self.retention_ms()),
            Value::from(query.listing.as_str()),
            Value::from(query.limit.to_string()),
            Value::from(TaskQuery::MAX_SCAN.to_string()),
        ];
        let reply: Value = self
            .shared
            .scripts
            .queue_list
            .run(&self.shared.pool, keys, args)
            .await?;
        array(reply)?
            .into_iter()
            .map(|fields| task_from(queue, Some(fields)))
            .collect()
    }
}

/// The task an enqueue stored, from the spec sent and the script's `id, now, due` (the script
/// returns only what the server decided, so no payload travels back or is parsed again).
fn created_task(queue: &QueueName, spec: TaskSpec, reply: &[Value]) -> Result<Task, PortError> {
    let [id, now, due] = reply else {
        return Err(corrupt("enqueue reply: expected id, time and due time"));
    };
    let id = id
        .as_str()
        .and_then(|s| TaskId::parse(s.as_ref()).ok())
        .ok_or_else(|| corrupt("enqueue reply: task id"))?;
    let ms = |v: &Value, what: &str| {
        int(v)
            .and_then(|n| u64::try_from(n).ok())
            .map(Timestamp::from_millis)
            .ok_or_else(|| corrupt(format!("enqueue reply: {what}")))
    };
    let (now, due) = (ms(now, "time")?, ms(due, "due time")?);
    let mut task = Task::new(id, queue.clone(), spec, now);
    // The script's due time is what it stored (the same rule as Schedule::due_at).
    if due > now {
        task.status = TaskStatus::Scheduled;
        task.scheduled_for = Some(due);
    } else {
        task.status = TaskStatus::Queued;
        task.scheduled_for = None;
    }
    Ok(task)
}

/// Builds a [`Task`] from its hash.
fn task_from(queue: &QueueName, reply: Option<Value>) -> Result<Task, PortError> {
    let items = array(reply.ok_or_else(|| corrupt("task reply without fields"))?)?;
    task_from_fields(queue, &fields(&items)?)
}

/// The fields `queue_reserve.lua` returns of a task by position (its READ values), in order:
/// the id from the ready set's member, the others read with one `HMGET`.
const RESERVE_READ: [&str; 9] = [
    "id",
    "spec",
    "payload",
    "max_attempts",
    "backoff",
    "enqueued_at",
    "unique_key",
    "scheduled_for",
    "last_error",
];

/// The leases of a reserve script's `ok` reply (`now, expiry`, then per task: `p` and the
/// values of [`RESERVE_READ`], or `f` and all its fields for a task of the earlier layout;
/// its new attempts; its new lease_seq): each task with what the lease changed applied —
/// status running, started and heartbeat now, the expiry, the worker.
fn leases_from(
    queue: &QueueName,
    rest: Vec<Value>,
    worker: Option<&WorkerId>,
) -> Result<Vec<Lease>, PortError> {
    if rest.len() < 2 || (rest.len() - 2) % 4 != 0 {
        return Err(corrupt(
            "reserve reply: expected time, expiry and four elements per task",
        ));
    }
    let mut items = rest.into_iter();
    let stamp = |v: Option<Value>, what: &str| {
        v.as_ref()
            .and_then(int)
            .and_then(|n| u64::try_from(n).ok())
            .map(|n| n.to_string())
            .ok_or_else(|| corrupt(format!("reserve reply: {what}")))
    };
    let now = stamp(items.next(), "time")?;
    let expires = stamp(items.next(), "lease expiry")?;
    let mut leases = Vec::with_capacity(items.len() / 4);
    while let (Some(form), Some(values), Some(attempts), Some(seq)) =
        (items.next(), items.next(), items.next(), items.next())
    {
        let values = array(values)?;
        let mut f = match form.as_str().as_deref() {
            Some("p") => positional(&values)?,
            Some("f") => fields(&values)?,
            _ => return Err(corrupt("reserve reply: unknown task form")),
        };
        let text = |v: &Value, what: &str| {
            v.as_str()
                .map(|s| s.into_owned())
                .ok_or_else(|| corrupt(format!("reserve reply: {what}")))
        };
        f.insert("status", "running");
        f.insert("attempts", text(&attempts, "attempts")?);
        f.insert("lease_seq", text(&seq, "lease_seq")?);
        f.insert("started_at", now.as_str());
        f.insert("heartbeat_at", now.as_str());
        f.insert("lease_expires_at", expires.as_str());
        match worker {
            Some(w) => f.insert("worker", w.as_str()),
            None => f.remove("worker"),
        }
        leases.push(task_from_fields(queue, &f)?.lease());
    }
    Ok(leases)
}

/// The fields of a task read by position ([`RESERVE_READ`]); absent ones (nil) are left out.
fn positional(values: &[Value]) -> Result<Fields<'_>, PortError> {
    if values.len() != RESERVE_READ.len() {
        return Err(corrupt(format!(
            "reserve reply: {} task fields, expected {}",
            values.len(),
            RESERVE_READ.len()
        )));
    }
    let mut map = Fields::with_capacity(RESERVE_READ.len() + 7);
    for (name, v) in RESERVE_READ.iter().zip(values) {
        if matches!(v, Value::Null) {
            continue;
        }
        let v = v
            .as_str()
            .ok_or_else(|| corrupt(format!("task field {name} is not text")))?;
        map.insert(*name, v);
    }
    Ok(map)
}

/// Builds a [`Task`] from its hash fields.
fn task_from_fields(queue: &QueueName, f: &Fields<'_>) -> Result<Task, PortError> {
    let get = |k: &str| f.get(k);
    let need = |k: &str| get(k).ok_or_else(|| corrupt(format!("task field {k} missing")));
    let num = |k: &str| -> Result<u64, PortError> {
        need(k)?
            .parse::<u64>()
            .map_err(|_| corrupt(format!("task field {k} is not a number")))
    };
    let opt_num = |k: &str| -> Result<Option<u64>, PortError> {
        get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| corrupt(format!("task field {k} is not a number")))
            })
            .transpose()
    };
    let ts = |k: &str| -> Result<Option<Timestamp>, PortError> {
        Ok(opt_num(k)?.map(Timestamp::from_millis))
    };
    let bad = |k: &'static str| {
        move |e: spool_domain::ValidationError| corrupt(format!("task field {k}: {e}"))
    };
    let json = |k: &str, s: &str| -> Result<serde_json::Value, PortError> {
        serde_json::from_str(s).map_err(|e| corrupt(format!("task field {k}: {e}")))
    };
    let small = |k: &str| -> Result<u32, PortError> {
        u32::try_from(num(k)?).map_err(|_| corrupt(format!("task field {k} out of range")))
    };
    // The packed fields, or the separate ones of tasks stored by earlier versions.
    let packed = get("spec").map(PackedSpec::decode).transpose()?;
    let (kind, priority, timeout_ms, correlation_id) = match &packed {
        Some(p) => (
            p.kind.as_ref(),
            p.priority,
            p.timeout_ms,
            p.correlation_id.as_deref(),
        ),
        None => (
            need("kind")?,
            need("priority")?
                .parse::<i64>()
                .map_err(|_| corrupt("task field priority"))?,
            opt_num("timeout_ms")?,
            get("correlation_id"),
        ),
    };
    let backoff = match get("backoff") {
        Some(b) => decode_backoff(b)?,
        None => Backoff {
            initial_ms: num("backoff_initial_ms")?,
            max_ms: num("backoff_max_ms")?,
            factor: small("backoff_factor")?,
            jitter: if need("backoff_jitter")? == "full" {
                Jitter::Full
            } else {
                Jitter::None
            },
        },
    };
    let status = TaskStatus::parse(need("status")?).ok_or_else(|| corrupt("task field status"))?;
    // Only a running task has a lease: `queue_complete_many.lua` leaves the expiry of the
    // last lease in the hash (one command less per completed task) and it means nothing once
    // the task has moved on.
    let lease_expires_at = if status == TaskStatus::Running {
        ts("lease_expires_at")?
    } else {
        None
    };
    Ok(Task {
        id: TaskId::parse(need("id")?).map_err(bad("id"))?,
        queue: queue.clone(),
        kind: TaskKind::parse(kind).map_err(bad("kind"))?,
        payload: json("payload", need("payload")?)?,
        priority: Priority::new(priority).map_err(bad("priority"))?,
        status,
        attempts: small("attempts")?,
        max_attempts: small("max_attempts")?,
        backoff,
        timeout_ms,
        unique_key: get("unique_key")
            .map(UniqueKey::parse)
            .transpose()
            .map_err(bad("unique_key"))?,
        correlation_id: correlation_id
            .map(CorrelationId::parse)
            .transpose()
            .map_err(bad("correlation_id"))?,
        enqueued_at: Timestamp::from_millis(num("enqueued_at")?),
        scheduled_for: ts("scheduled_for")?,
        started_at: ts("started_at")?,
        heartbeat_at: ts("heartbeat_at")?,
        finished_at: ts("finished_at")?,
        lease_expires_at,
        worker: get("worker")
            .map(WorkerId::parse)
            .transpose()
            .map_err(bad("worker"))?,
        last_error: get("last_error").map(str::to_owned),
        result: get("result").map(|r| json("result", r)).transpose()?,
        lease_seq: num("lease_seq")?,
    })
}
