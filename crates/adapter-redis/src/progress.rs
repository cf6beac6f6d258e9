//! Progress: per operation (tag `{p:<id>}`) a snapshot string `op` and a capped stream `ev`
//! (`XADD ... MAXLEN <cap> *`), written together by one script; event IDs are the stream IDs
//! (server time), which the domain's [`EventId`] parses. Both keys live `operation_ttl` after
//! the last update.
//!
//! The update script mirrors [`Operation::apply`]. Step fractions are stored as the client's
//! exact decimal text and the percent is derived on read with the domain's [`percent`], so no
//! float ever passes through Lua arithmetic or `cjson` number formatting.
//!
//! Subscribers replay with `XRANGE` (through a read-only script that also detects trimmed
//! events via the stream's `max-deleted-entry-id`) and then follow live events: every update
//! `PUBLISH`es on the operation's channel and the subscriber, armed before each read, reads
//! again (no polling; a 1 s re-check covers a message lost during a reconnect). Reads always
//! continue from the last delivered ID, so there is no gap and no duplicate.
//!
//! Round trips: `start` 1, `update` 1, `get` 1 (`GET`), `events_after` 1, `subscribe` 1 to
//! start (plus one `SUBSCRIBE` unless another subscriber of this process follows the same
//! operation) and 1 per wake-up.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use fred::interfaces::KeysInterface;
use fred::types::Value;
use serde::{Deserialize, Serialize};
use spool_domain::names::{CorrelationId, OperationId, StepName};
use spool_domain::progress::{
    percent, EventId, EventKind, Operation, OperationSpec, OperationState, ProgressEvent,
    ProgressUpdate, Step, StepRef, UpdateError, MAX_MESSAGE_BYTES,
};
use spool_domain::time::duration_millis;
use spool_domain::{Timestamp, ValidationError};
use spool_ports::{EventStream, PortError, ProgressStore};

use crate::backend::Shared;
use crate::error::{classify, corrupt};
use crate::reply::{array, int, tagged, text};
use crate::wake::{WakeGuard, MAX_IDLE_WAIT};

/// Events read per replay round.
const BATCH: usize = 100;

/// The Redis progress store.
#[derive(Clone)]
pub struct RedisProgress {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisProgress").finish_non_exhaustive()
    }
}

/// The stored snapshot: an [`Operation`] without the derived percent, fractions as text.
#[derive(Debug, Serialize, Deserialize)]
struct StoredOp {
    id: OperationId,
    correlation_id: Option<CorrelationId>,
    state: OperationState,
    message: Option<String>,
    steps: Vec<StoredStep>,
    #[serde(default)]
    created_at: u64,
    #[serde(default)]
    updated_at: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredStep {
    name: StepName,
    weight: u32,
    fraction: String,
}

impl StoredOp {
    fn from_operation(op: &Operation) -> Self {
        Self {
            id: op.id.clone(),
            correlation_id: op.correlation_id.clone(),
            state: op.state,
            message: op.message.clone(),
            steps: op
                .steps
                .iter()
                .map(|s| StoredStep {
                    name: s.name.clone(),
                    weight: s.weight,
                    fraction: fraction_text(s.fraction),
                })
                .collect(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn into_operation(self) -> Result<Operation, PortError> {
        let steps = self
            .steps
            .into_iter()
            .map(|s| {
                let fraction = s
                    .fraction
                    .parse::<f64>()
                    .map_err(|_| corrupt(format!("step fraction {:?}", s.fraction)))?;
                Ok(Step {
                    name: s.name,
                    weight: s.weight,
                    fraction,
                })
            })
            .collect::<Result<Vec<_>, PortError>>()?;
        Ok(Operation {
            id: self.id,
            correlation_id: self.correlation_id,
            state: self.state,
            percent: percent(&steps),
            message: self.message,
            steps,
            created_at: Timestamp::from_millis(self.created_at),
            updated_at: Timestamp::from_millis(self.updated_at),
        })
    }
}

/// The exact decimal text of a fraction (Rust's shortest round-trip form).
fn fraction_text(f: f64) -> String {
    format!("{f}")
}

fn parse_operation(json: &str) -> Result<Operation, PortError> {
    serde_json::from_str::<StoredOp>(json)
        .map_err(|e| corrupt(format!("operation snapshot: {e}")))?
        .into_operation()
}

fn parse_kind(s: &str) -> Result<EventKind, PortError> {
    match s {
        "snapshot" => Ok(EventKind::Snapshot),
        "progress" => Ok(EventKind::Progress),
        "end" => Ok(EventKind::End),
        other => Err(corrupt(format!("event kind {other}"))),
    }
}

fn parse_id(s: &str) -> Result<EventId, PortError> {
    EventId::parse(s).map_err(|e| corrupt(format!("event id: {e}")))
}

/// One `XRANGE` entry: `[id, [field, value, ...]]`.
fn parse_entry(v: Value) -> Result<ProgressEvent, PortError> {
    let mut parts = array(v)?.into_iter();
    let id = parts
        .next()
        .as_ref()
        .and_then(text)
        .ok_or_else(|| corrupt("stream entry without id"))?;
    let fields = array(parts.next().unwrap_or(Value::Null))?;
    let (mut kind, mut op) = (None, None);
    for pair in fields.chunks_exact(2) {
        match text(&pair[0]).as_deref() {
            Some("k") => kind = text(&pair[1]),
            Some("o") => op = text(&pair[1]),
            _ => {}
        }
    }
    Ok(ProgressEvent {
        id: parse_id(&id)?,
        kind: parse_kind(&kind.ok_or_else(|| corrupt("stream entry without kind"))?)?,
        operation: parse_operation(&op.ok_or_else(|| corrupt("stream entry without op"))?)?,
    })
}

/// What the read script returned.
struct ReadResult {
    snapshot: Operation,
    last_id: Option<EventId>,
    trimmed: bool,
    terminal: bool,
    events: Vec<ProgressEvent>,
}

impl RedisProgress {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn ttl_ms(&self) -> String {
        duration_millis(self.shared.limits.operation_ttl)
            .max(1)
            .to_string()
    }

    fn cap(&self) -> String {
        self.shared
            .limits
            .max_events_per_operation
            .max(1)
            .to_string()
    }

    /// Reads events after `after` (at most `count`), with the snapshot; `None` when unknown.
    async fn read(
        &self,
        id: &OperationId,
        after: Option<&str>,
        count: usize,
    ) -> Result<Option<ReadResult>, PortError> {
        let keys = vec![
            self.shared.keys.op_snapshot(id),
            self.shared.keys.op_events(id),
        ];
        let args = vec![
            Value::from(after.unwrap_or("").to_owned()),
            Value::from(count.to_string()),
        ];
        let reply: Value = self
            .shared
            .scripts
            .progress_read
            .run(&self.shared.pool, keys, args)
            .await?;
        let (tag, rest) = tagged(reply)?;
        match tag.as_str() {
            "not_found" => return Ok(None),
            "ok" => {}
            other => return Err(corrupt(format!("read script tag {other}"))),
        }
        let mut rest = rest.into_iter();
        let snapshot = rest
            .next()
            .as_ref()
            .and_then(text)
            .ok_or_else(|| corrupt("snapshot"))?;
        let last_id = rest.next().as_ref().and_then(text).unwrap_or_default();
        let trimmed = rest.next().as_ref().and_then(int).unwrap_or(0) == 1;
        let state = rest.next().as_ref().and_then(text).unwrap_or_default();
        let events = array(rest.next().unwrap_or(Value::Null))?
            .into_iter()
            .map(parse_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(ReadResult {
            snapshot: parse_operation(&snapshot)?,
            last_id: if last_id.is_empty() {
                None
            } else {
                Some(parse_id(&last_id)?)
            },
            trimmed,
            terminal: state != "running",
            events,
        }))
    }
}

/// Checks the parts of an update the store can check without the operation, in the order of
/// [`Operation::apply`] (the terminal check, which comes first there, happens in the script).
fn pre_validate(update: &ProgressUpdate) -> Result<(), ValidationError> {
    if update.step.is_none()
        && update.fraction.is_none()
        && update.message.is_none()
        && update.state.is_none()
    {
        return Err(ValidationError::new(
            "update",
            "names no step, fraction, message or state",
        ));
    }
    if let Some(m) = &update.message {
        if m.len() > MAX_MESSAGE_BYTES {
            return Err(ValidationError::new(
                "message",
                format!(
                    "{} bytes exceeds the maximum of {MAX_MESSAGE_BYTES}",
                    m.len()
                ),
            ));
        }
    }
    let fraction = update.fraction.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&fraction) {
        return Err(ValidationError::new(
            "fraction",
            format!("{fraction} is outside 0.0..=1.0"),
        ));
    }
    if update.step.is_none() && update.fraction.is_some() {
        return Err(ValidationError::new("fraction", "a fraction needs a step"));
    }
    Ok(())
}

fn state_name(s: OperationState) -> &'static str {
    match s {
        OperationState::Running => "running",
        OperationState::Succeeded => "succeeded",
        OperationState::Failed => "failed",
        OperationState::Cancelled => "cancelled",
    }
}

fn parse_state(s: &str) -> Result<OperationState, PortError> {
    match s {
        "running" => Ok(OperationState::Running),
        "succeeded" => Ok(OperationState::Succeeded),
        "failed" => Ok(OperationState::Failed),
        "cancelled" => Ok(OperationState::Cancelled),
        other => Err(corrupt(format!("operation state {other}"))),
    }
}

/// A generated operation ID: a ULID (the clock only makes it sortable; it is no timestamp).
fn generate_id() -> Result<OperationId, PortError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(duration_millis)
        .unwrap_or(0);
    let ulid = spool_domain::names::TaskId::from_parts(
        Timestamp::from_millis(now),
        rand::random::<u128>(),
    );
    OperationId::parse(ulid.to_string()).map_err(PortError::from)
}

#[async_trait]
impl ProgressStore for RedisProgress {
    async fn start(&self, spec: OperationSpec) -> Result<ProgressEvent, PortError> {
        let id = match &spec.id {
            Some(id) => id.clone(),
            None => generate_id()?,
        };
        // The domain validates the plan; the script stamps the server's time.
        let op = Operation::start(id.clone(), spec, Timestamp::EPOCH)?;
        let stored = serde_json::to_string(&StoredOp::from_operation(&op))
            .map_err(|e| PortError::internal(format!("cannot encode the operation: {e}")))?;
        let keys = vec![
            self.shared.keys.op_snapshot(&id),
            self.shared.keys.op_events(&id),
        ];
        let args = vec![
            Value::from(stored),
            Value::from(self.ttl_ms()),
            Value::from(self.cap()),
        ];
        let reply: Value = self
            .shared
            .scripts
            .progress_start
            .run(&self.shared.pool, keys, args)
            .await?;
        let (tag, rest) = tagged(reply)?;
        match tag.as_str() {
            "ok" => {}
            "conflict" => {
                return Err(PortError::conflict(format!(
                    "operation {id} already exists"
                )))
            }
            other => return Err(corrupt(format!("start script tag {other}"))),
        }
        let event_id = rest
            .first()
            .and_then(text)
            .ok_or_else(|| corrupt("event id"))?;
        let json = rest
            .get(1)
            .and_then(text)
            .ok_or_else(|| corrupt("snapshot"))?;
        Ok(ProgressEvent {
            id: parse_id(&event_id)?,
            kind: EventKind::Snapshot,
            operation: parse_operation(&json)?,
        })
    }

    async fn update(
        &self,
        id: &OperationId,
        update: ProgressUpdate,
    ) -> Result<ProgressEvent, PortError> {
        let invalid = pre_validate(&update).err();
        let (step_ref, step_val) = match &update.step {
            None => ("", String::new()),
            Some(StepRef::Name(n)) => ("name", n.as_str().to_owned()),
            Some(StepRef::Index(i)) => ("index", i.to_string()),
        };
        let keys = vec![
            self.shared.keys.op_snapshot(id),
            self.shared.keys.op_events(id),
        ];
        let args = vec![
            Value::from(self.ttl_ms()),
            Value::from(self.cap()),
            Value::from(self.shared.keys.op_wake(id)),
            Value::from(step_ref),
            Value::from(step_val),
            Value::from(fraction_text(update.fraction.unwrap_or(1.0))),
            Value::from(if update.message.is_some() { "1" } else { "0" }),
            Value::from(update.message.clone().unwrap_or_default()),
            Value::from(update.state.map_or("", state_name)),
            Value::from(if invalid.is_some() { "1" } else { "0" }),
        ];
        let reply: Value = self
            .shared
            .scripts
            .progress_update
            .run(&self.shared.pool, keys, args)
            .await?;
        let (tag, rest) = tagged(reply)?;
        let detail = rest.first().and_then(text).unwrap_or_default();
        match tag.as_str() {
            "ok" => {}
            "not_found" => return Err(PortError::not_found(format!("operation {id}"))),
            "terminal" => return Err(UpdateError::Terminal(parse_state(&detail)?).into()),
            "invalid" => {
                return Err(PortError::Invalid(
                    invalid.unwrap_or_else(|| ValidationError::new("update", "refused")),
                ))
            }
            "unknown_step" => {
                return Err(PortError::Invalid(ValidationError::new(
                    "step",
                    format!("{detail} is not a step of this operation"),
                )))
            }
            "step_index" => {
                let i = match &update.step {
                    Some(StepRef::Index(i)) => *i,
                    _ => 0,
                };
                return Err(PortError::Invalid(ValidationError::new(
                    "step",
                    format!("index {i} is outside the plan of {detail} steps"),
                )));
            }
            other => return Err(corrupt(format!("update script tag {other}"))),
        }
        let event_id = detail;
        let kind = rest.get(1).and_then(text).ok_or_else(|| corrupt("kind"))?;
        let json = rest
            .get(2)
            .and_then(text)
            .ok_or_else(|| corrupt("snapshot"))?;
        Ok(ProgressEvent {
            id: parse_id(&event_id)?,
            kind: parse_kind(&kind)?,
            operation: parse_operation(&json)?,
        })
    }

    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, PortError> {
        let json: Option<String> = self
            .shared
            .pool
            .get(self.shared.keys.op_snapshot(id))
            .await
            .map_err(classify)?;
        json.map(|j| parse_operation(&j)).transpose()
    }

    async fn events_after(
        &self,
        id: &OperationId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<ProgressEvent>, PortError> {
        let after = after.map(|a| a.to_string());
        let count = limit.min(1_000_000);
        match self.read(id, after.as_deref(), count).await? {
            Some(r) => Ok(r.events),
            None => Err(PortError::not_found(format!("operation {id}"))),
        }
    }

    async fn subscribe(
        &self,
        id: &OperationId,
        after: Option<EventId>,
    ) -> Result<EventStream, PortError> {
        let guard = WakeGuard::acquire(&self.shared.hub, self.shared.keys.op_wake(id)).await;
        let not_found = || PortError::not_found(format!("operation {id}"));
        let mut pending = VecDeque::new();
        let cursor;
        let finished;
        match after {
            None => {
                let r = self.read(id, None, 0).await?.ok_or_else(not_found)?;
                let last = r.last_id.unwrap_or_default();
                cursor = last.to_string();
                finished = r.terminal;
                pending.push_back(ProgressEvent {
                    id: last,
                    kind: EventKind::Snapshot,
                    operation: r.snapshot,
                });
            }
            Some(after) => {
                let after = after.to_string();
                let r = self
                    .read(id, Some(&after), BATCH)
                    .await?
                    .ok_or_else(not_found)?;
                if r.trimmed {
                    // Events after `after` are gone: send the state instead, then go live.
                    let last = r.last_id.unwrap_or_default();
                    cursor = last.to_string();
                    finished = r.terminal;
                    pending.push_back(ProgressEvent {
                        id: last,
                        kind: EventKind::Snapshot,
                        operation: r.snapshot,
                    });
                } else {
                    cursor = r.events.last().map_or(after, |e| e.id.to_string());
                    finished = r.terminal && r.events.is_empty();
                    pending.extend(r.events);
                }
            }
        }
        let state = Subscription {
            store: self.clone(),
            id: id.clone(),
            guard,
            cursor,
            pending,
            finished,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, Subscription::next)))
    }
}

/// The state of one live subscription.
struct Subscription {
    store: RedisProgress,
    id: OperationId,
    guard: WakeGuard,
    /// The ID of the last event read.
    cursor: String,
    pending: VecDeque<ProgressEvent>,
    /// No events will follow the pending ones (the operation is terminal).
    finished: bool,
    /// The stream is over.
    done: bool,
}

impl Subscription {
    async fn next(mut self) -> Option<(Result<ProgressEvent, PortError>, Self)> {
        loop {
            if self.done {
                return None;
            }
            if let Some(ev) = self.pending.pop_front() {
                if ev.kind == EventKind::End || (self.finished && self.pending.is_empty()) {
                    self.done = true;
                }
                return Some((Ok(ev), self));
            }
            if self.finished {
                return None;
            }
            let notify = self.guard.notify.clone();
            let mut armed = notify.as_ref().map(|n| Box::pin(n.notified()));
            if let Some(f) = armed.as_mut() {
                f.as_mut().enable();
            }
            match self.store.read(&self.id, Some(&self.cursor), BATCH).await {
                Err(e) => {
                    self.done = true;
                    return Some((Err(e), self));
                }
                Ok(None) => {
                    self.done = true;
                    let e = PortError::not_found(format!("operation {}", self.id));
                    return Some((Err(e), self));
                }
                Ok(Some(r)) => {
                    if let Some(last) = r.events.last() {
                        self.cursor = last.id.to_string();
                    } else if r.terminal {
                        return None;
                    }
                    self.pending.extend(r.events);
                }
            }
            if self.pending.is_empty() {
                match armed {
                    Some(f) => {
                        let _ = tokio::time::timeout(MAX_IDLE_WAIT, f).await;
                    }
                    None => tokio::time::sleep(MAX_IDLE_WAIT).await,
                }
            }
        }
    }
}
