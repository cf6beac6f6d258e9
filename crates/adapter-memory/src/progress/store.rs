//! Every operation with its retained events, and each port operation as one synchronous step
//! at a given "now".

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use spool_domain::names::OperationId;
use spool_domain::progress::{
    EventId, EventKind, Operation, OperationSpec, ProgressEvent, ProgressUpdate,
};
use spool_domain::Timestamp;
use spool_ports::PortError;
use tokio::sync::broadcast;

use super::id::generate_operation_id;

/// Capacity of each operation's live channel. A subscriber that falls further behind is
/// caught up from the retained events (see `subscription.rs`).
const LIVE_CAPACITY: usize = 64;

/// How often a generated ID is retried when it collides with an existing one.
const ID_ATTEMPTS: usize = 8;

/// One operation: its snapshot, its retained events and its live channel.
struct Entry {
    /// Distinguishes this operation from an earlier one with the same ID that expired.
    incarnation: u64,
    operation: Operation,
    /// Oldest first, at most `max_events`.
    events: VecDeque<ProgressEvent>,
    /// The latest event's ID (also when it was trimmed).
    last_id: EventId,
    /// The newest event dropped by the cap, if any: a resume point older than it has a gap.
    trimmed_through: Option<EventId>,
    /// When the operation and its events vanish: `operation_ttl` after the last change.
    expires_at: Timestamp,
    live: broadcast::Sender<ProgressEvent>,
}

impl Entry {
    fn snapshot(&self) -> ProgressEvent {
        ProgressEvent {
            id: self.last_id,
            kind: EventKind::Snapshot,
            operation: self.operation.clone(),
        }
    }

    /// Retains `event`, trims the oldest past `max_events`, and sends it to live subscribers.
    fn record(&mut self, event: ProgressEvent, max_events: usize) {
        self.last_id = event.id;
        self.operation = event.operation.clone();
        self.events.push_back(event.clone());
        while self.events.len() > max_events {
            if let Some(old) = self.events.pop_front() {
                self.trimmed_through = Some(old.id);
            }
        }
        // No receiver is not an error: nobody is watching.
        let _ = self.live.send(event);
    }

    /// What a subscriber resuming after `after` must see before the live events: the events
    /// after it, or a snapshot when it cannot get them all (none given, some trimmed, or an ID
    /// this operation never reached).
    fn replay(&self, after: Option<EventId>) -> Vec<ProgressEvent> {
        match after {
            Some(after)
                if after <= self.last_id && self.trimmed_through.is_none_or(|t| t <= after) =>
            {
                self.retained_after(Some(after)).cloned().collect()
            }
            _ => vec![self.snapshot()],
        }
    }

    fn retained_after(&self, after: Option<EventId>) -> impl Iterator<Item = &ProgressEvent> {
        let start = after.map_or(0, |a| self.events.partition_point(|e| e.id <= a));
        self.events.range(start..)
    }
}

/// What `subscribe` needs, read atomically with joining the live channel.
pub(super) struct Subscribed {
    pub(super) incarnation: u64,
    pub(super) replay: Vec<ProgressEvent>,
    pub(super) live: broadcast::Receiver<ProgressEvent>,
    /// Whether the operation is terminal, so no live event will ever come.
    pub(super) finished: bool,
}

/// Every operation, with an index by expiry for lazy pruning.
pub(super) struct Store {
    entries: HashMap<OperationId, Entry>,
    expiry: BTreeSet<(Timestamp, OperationId)>,
    max_events: usize,
    ttl: Duration,
    next_incarnation: u64,
}

impl Store {
    /// `max_events` below 1 is treated as 1: the latest event is always kept.
    pub(super) fn new(max_events: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            expiry: BTreeSet::new(),
            max_events: max_events.max(1),
            ttl,
            next_incarnation: 0,
        }
    }

    /// Drops every operation whose time ran out by `now`.
    fn prune(&mut self, now: Timestamp) {
        while let Some((at, _)) = self.expiry.first() {
            if *at > now {
                break;
            }
            if let Some((_, id)) = self.expiry.pop_first() {
                // Dropping the entry drops its sender: live subscribers see the end.
                self.entries.remove(&id);
            }
        }
    }

    fn live_entry(&mut self, id: &OperationId, now: Timestamp) -> Result<&mut Entry, PortError> {
        self.prune(now);
        self.entries
            .get_mut(id)
            .ok_or_else(|| PortError::not_found(format!("operation {id}")))
    }

    fn set_expiry(&mut self, id: &OperationId, old: Option<Timestamp>, new: Timestamp) {
        if let Some(old) = old {
            self.expiry.remove(&(old, id.clone()));
        }
        self.expiry.insert((new, id.clone()));
    }

    pub(super) fn start(
        &mut self,
        spec: OperationSpec,
        now: Timestamp,
    ) -> Result<ProgressEvent, PortError> {
        self.prune(now);
        let id = match &spec.id {
            Some(id) => id.clone(),
            None => self.fresh_id(now)?,
        };
        let operation = Operation::start(id.clone(), spec, now)?;
        if self.entries.contains_key(&id) {
            return Err(PortError::conflict(format!(
                "operation {id} already exists"
            )));
        }
        let event = ProgressEvent {
            id: EventId::default().next(now.as_millis()),
            kind: EventKind::Snapshot,
            operation,
        };
        let expires_at = now.saturating_add(self.ttl);
        let mut entry = Entry {
            incarnation: self.next_incarnation,
            operation: event.operation.clone(),
            events: VecDeque::new(),
            last_id: event.id,
            trimmed_through: None,
            expires_at,
            live: broadcast::channel(LIVE_CAPACITY).0,
        };
        self.next_incarnation += 1;
        entry.record(event.clone(), self.max_events);
        self.entries.insert(id.clone(), entry);
        self.set_expiry(&id, None, expires_at);
        Ok(event)
    }

    fn fresh_id(&self, now: Timestamp) -> Result<OperationId, PortError> {
        for _ in 0..ID_ATTEMPTS {
            let id = generate_operation_id(now)?;
            if !self.entries.contains_key(&id) {
                return Ok(id);
            }
        }
        Err(PortError::internal(
            "could not generate an unused operation id",
        ))
    }

    pub(super) fn update(
        &mut self,
        id: &OperationId,
        update: &ProgressUpdate,
        now: Timestamp,
    ) -> Result<ProgressEvent, PortError> {
        let max_events = self.max_events;
        let expires_at = now.saturating_add(self.ttl);
        let entry = self.live_entry(id, now)?;
        let mut operation = entry.operation.clone();
        operation.apply(update, now)?;
        let kind = if operation.state.is_terminal() {
            EventKind::End
        } else {
            EventKind::Progress
        };
        let event = ProgressEvent {
            id: entry.last_id.next(now.as_millis()),
            kind,
            operation,
        };
        entry.record(event.clone(), max_events);
        let old = std::mem::replace(&mut entry.expires_at, expires_at);
        self.set_expiry(id, Some(old), expires_at);
        Ok(event)
    }

    pub(super) fn get(&mut self, id: &OperationId, now: Timestamp) -> Option<Operation> {
        self.prune(now);
        self.entries.get(id).map(|e| e.operation.clone())
    }

    pub(super) fn events_after(
        &mut self,
        id: &OperationId,
        after: Option<EventId>,
        limit: usize,
        now: Timestamp,
    ) -> Result<Vec<ProgressEvent>, PortError> {
        let entry = self.live_entry(id, now)?;
        Ok(entry.retained_after(after).take(limit).cloned().collect())
    }

    /// Joins the live channel and reads the replay in one step, so no event falls between
    /// them and none is in both.
    pub(super) fn subscribe(
        &mut self,
        id: &OperationId,
        after: Option<EventId>,
        now: Timestamp,
    ) -> Result<Subscribed, PortError> {
        let entry = self.live_entry(id, now)?;
        Ok(Subscribed {
            incarnation: entry.incarnation,
            live: entry.live.subscribe(),
            replay: entry.replay(after),
            finished: entry.operation.state.is_terminal(),
        })
    }

    /// The replay after `after` for a subscriber that fell behind the live channel; `None`
    /// when the operation it follows is gone (expired, possibly replaced).
    pub(super) fn catch_up(
        &mut self,
        id: &OperationId,
        incarnation: u64,
        after: EventId,
        now: Timestamp,
    ) -> Option<Vec<ProgressEvent>> {
        let entry = self.live_entry(id, now).ok()?;
        (entry.incarnation == incarnation).then(|| entry.replay(Some(after)))
    }
}
