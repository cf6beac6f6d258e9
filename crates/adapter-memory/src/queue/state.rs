//! One queue's tasks and the indexes that order them.
//!
//! Every task sits in exactly one index, chosen by its status:
//!
//! | status | index | ordered by |
//! |---|---|---|
//! | `queued` | `ready` (+ `waiting`) | `(priority rank, ready since, seq)` (+ `(ready since, seq)`) |
//! | `scheduled`, `failed` | `scheduled` | `(due, seq)` |
//! | `running` | `running` | `(lease expiry, seq)` |
//! | `succeeded`, `dead`, `cancelled` | `finished` | `(finished at, seq)` |
//!
//! Transitions go through [`QueueState::transition`], which applies a domain [`Task`] method
//! to a copy, and only on success moves the task between indexes — so an index can never
//! disagree with a status, and a refused transition changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use spool_domain::names::{TaskId, UniqueKey};
use spool_domain::task::{QueueStats, Task, TaskStatus, TransitionError};
use spool_domain::time::duration_millis;
use spool_domain::Timestamp;
use spool_ports::{TaskListing, TaskQuery};

/// Where a task is indexed; the exact key, so detaching removes precisely that entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// In `ready` and `waiting`.
    Ready {
        rank: u64,
        since: Timestamp,
        seq: u64,
    },
    /// In `scheduled` (status `scheduled` or `failed`).
    Scheduled { due: Timestamp, seq: u64 },
    /// In `running`.
    Running { expires: Timestamp, seq: u64 },
    /// In `finished`.
    Finished { at: Timestamp, seq: u64 },
}

#[derive(Debug)]
struct Entry {
    task: Task,
    slot: Slot,
}

/// What a waiting reserver needs to know to decide whether to wake: whether a task became
/// ready since, and the earliest instant a timer must fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pulse {
    ready_added: u64,
    next_event: Option<Timestamp>,
}

impl Pulse {
    /// Whether going from `self` to `after` may wake a waiting reserver: a task became ready,
    /// or the next due time / lease expiry moved earlier than any waiter's timer.
    pub(super) fn should_wake(self, after: Pulse) -> bool {
        if after.ready_added != self.ready_added {
            return true;
        }
        match (self.next_event, after.next_event) {
            (None, Some(_)) => true,
            (Some(before), Some(now)) => now < before,
            _ => false,
        }
    }
}

/// One queue: its tasks, the indexes, live unique keys and per-status counts.
#[derive(Debug, Default)]
pub(super) struct QueueState {
    tasks: HashMap<TaskId, Entry>,
    ready: BTreeMap<(u64, Timestamp, u64), TaskId>,
    waiting: BTreeMap<(Timestamp, u64), TaskId>,
    scheduled: BTreeMap<(Timestamp, u64), TaskId>,
    running: BTreeMap<(Timestamp, u64), TaskId>,
    finished: BTreeMap<(Timestamp, u64), TaskId>,
    /// `finished` split by status (succeeded, dead, cancelled), for bounded listings.
    finished_by: [BTreeMap<(Timestamp, u64), TaskId>; 3],
    unique: HashMap<UniqueKey, TaskId>,
    counts: [u64; TaskStatus::ALL.len()],
    seq: u64,
    ready_added: u64,
}

fn status_index(s: TaskStatus) -> usize {
    match s {
        TaskStatus::Scheduled => 0,
        TaskStatus::Queued => 1,
        TaskStatus::Running => 2,
        TaskStatus::Succeeded => 3,
        TaskStatus::Failed => 4,
        TaskStatus::Dead => 5,
        TaskStatus::Cancelled => 6,
    }
}

/// The `finished_by` index of a finished status.
fn finished_index(s: TaskStatus) -> Option<usize> {
    match s {
        TaskStatus::Succeeded => Some(0),
        TaskStatus::Dead => Some(1),
        TaskStatus::Cancelled => Some(2),
        _ => None,
    }
}

impl QueueState {
    /// Up to `limit` tasks of `listing` in its order ([`TaskListing`]); bounded by `limit`
    /// (and [`TaskQuery::MAX_SCAN`] for the shared due-time index).
    pub(super) fn list(&self, listing: TaskListing, limit: usize) -> Vec<Task> {
        let pick = |id: &TaskId| self.get(id).cloned();
        let finished_of = |status| {
            finished_index(status)
                .map(|i| {
                    self.finished_by[i]
                        .values()
                        .rev()
                        .take(limit)
                        .filter_map(pick)
                        .collect()
                })
                .unwrap_or_default()
        };
        match listing {
            TaskListing::Queued => self.ready.values().take(limit).filter_map(pick).collect(),
            TaskListing::Running => self.running.values().take(limit).filter_map(pick).collect(),
            TaskListing::Scheduled | TaskListing::Retrying => self
                .scheduled
                .values()
                .take(TaskQuery::MAX_SCAN)
                .filter_map(pick)
                .filter(|t| listing.includes(t.status))
                .take(limit)
                .collect(),
            TaskListing::Succeeded => finished_of(TaskStatus::Succeeded),
            TaskListing::Dead => finished_of(TaskStatus::Dead),
            TaskListing::Cancelled => finished_of(TaskStatus::Cancelled),
            TaskListing::Finished => self
                .finished
                .values()
                .rev()
                .take(limit)
                .filter_map(pick)
                .collect(),
        }
    }

    /// The task, if held (finished tasks past retention are gone after [`Self::maintain`]).
    pub(super) fn get(&self, id: &TaskId) -> Option<&Task> {
        self.tasks.get(id).map(|e| &e.task)
    }

    /// Whether `id` is taken in this queue.
    pub(super) fn contains(&self, id: &TaskId) -> bool {
        self.tasks.contains_key(id)
    }

    /// The live (not finished) task holding `key`, if any.
    pub(super) fn unique_holder(&self, key: &UniqueKey) -> Option<&Task> {
        self.unique.get(key).and_then(|id| self.get(id))
    }

    /// Adds a new task; a `queued` one is ready since `now`.
    pub(super) fn insert(&mut self, task: Task, now: Timestamp) {
        let id = task.id;
        let slot = self.attach(&task, now);
        self.tasks.insert(id, Entry { task, slot });
    }

    /// Applies `f` (a domain transition) to task `id`. On success the task moves to the index
    /// of its new status — a task that becomes `queued` is ready since `ready_since` — and the
    /// result of `f` is returned; on failure nothing changes. `None` when `id` is unknown.
    pub(super) fn transition<R>(
        &mut self,
        id: &TaskId,
        ready_since: Timestamp,
        f: impl FnOnce(&mut Task) -> Result<R, TransitionError>,
    ) -> Option<Result<R, TransitionError>> {
        let entry = self.tasks.remove(id)?;
        let mut next = entry.task.clone();
        match f(&mut next) {
            Ok(out) => {
                self.detach(&entry.task, entry.slot);
                let slot = self.attach(&next, ready_since);
                self.tasks.insert(*id, Entry { task: next, slot });
                Some(Ok(out))
            }
            Err(e) => {
                self.tasks.insert(*id, entry);
                Some(Err(e))
            }
        }
    }

    /// Makes due scheduled/retrying tasks ready, reclaims expired leases (back to `queued`
    /// or `dead`), and drops finished tasks older than `retention`.
    pub(super) fn maintain(&mut self, now: Timestamp, retention: Duration) {
        while let Some((&(due, _), &id)) = self.scheduled.first_key_value() {
            if due > now {
                break;
            }
            // A scheduled/failed task always takes `Due`; if the machine ever refused, drop
            // it from the index rather than loop forever.
            if !matches!(self.transition(&id, due, Task::make_due), Some(Ok(()))) {
                self.scheduled.pop_first();
            }
        }
        while let Some((&(expires, _), &id)) = self.running.first_key_value() {
            if expires > now {
                break;
            }
            if !matches!(
                self.transition(&id, expires, |t| t.expire_lease(now)),
                Some(Ok(()))
            ) {
                self.running.pop_first();
            }
        }
        while let Some((&(at, _), &id)) = self.finished.first_key_value() {
            if at.saturating_add(retention) > now {
                break;
            }
            let entry = self.finished.pop_first();
            if let Some(e) = self.tasks.remove(&id) {
                if let (Some(i), Some((key, _))) = (finished_index(e.task.status), entry) {
                    self.finished_by[i].remove(&key);
                }
                let n = &mut self.counts[status_index(e.task.status)];
                *n = n.saturating_sub(1);
            }
        }
    }

    /// The next ready task: highest priority, then longest ready.
    pub(super) fn first_ready(&self) -> Option<TaskId> {
        self.ready.first_key_value().map(|(_, &id)| id)
    }

    /// The earliest due time or lease expiry: when a waiting reserver must look again.
    pub(super) fn next_event(&self) -> Option<Timestamp> {
        let due = self.scheduled.first_key_value().map(|(&(t, _), _)| t);
        let exp = self.running.first_key_value().map(|(&(t, _), _)| t);
        match (due, exp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The state a waiting reserver reacts to.
    pub(super) fn pulse(&self) -> Pulse {
        Pulse {
            ready_added: self.ready_added,
            next_event: self.next_event(),
        }
    }

    /// Depth per status, and the age of the oldest ready task at `now`.
    pub(super) fn stats(&self, name: &str, now: Timestamp) -> QueueStats {
        let n = |s| self.counts[status_index(s)];
        QueueStats {
            name: name.to_owned(),
            queued: n(TaskStatus::Queued),
            scheduled: n(TaskStatus::Scheduled) + n(TaskStatus::Failed),
            running: n(TaskStatus::Running),
            succeeded: n(TaskStatus::Succeeded),
            dead: n(TaskStatus::Dead),
            cancelled: n(TaskStatus::Cancelled),
            oldest_waiting_ms: self
                .waiting
                .first_key_value()
                .map(|(&(since, _), _)| duration_millis(now.saturating_since(since))),
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn attach(&mut self, t: &Task, ready_since: Timestamp) -> Slot {
        let seq = self.next_seq();
        self.counts[status_index(t.status)] += 1;
        if !t.status.is_finished() {
            if let Some(key) = &t.unique_key {
                self.unique.insert(key.clone(), t.id);
            }
        }
        let slot = match t.status {
            TaskStatus::Queued => {
                self.ready_added += 1;
                Slot::Ready {
                    rank: t.priority.rank(),
                    since: ready_since,
                    seq,
                }
            }
            TaskStatus::Scheduled | TaskStatus::Failed => Slot::Scheduled {
                due: t.scheduled_for.unwrap_or(ready_since),
                seq,
            },
            TaskStatus::Running => Slot::Running {
                expires: t.lease_expires_at.unwrap_or(ready_since),
                seq,
            },
            TaskStatus::Succeeded | TaskStatus::Dead | TaskStatus::Cancelled => Slot::Finished {
                at: t.finished_at.unwrap_or(ready_since),
                seq,
            },
        };
        match slot {
            Slot::Ready { rank, since, seq } => {
                self.ready.insert((rank, since, seq), t.id);
                self.waiting.insert((since, seq), t.id);
            }
            Slot::Scheduled { due, seq } => {
                self.scheduled.insert((due, seq), t.id);
            }
            Slot::Running { expires, seq } => {
                self.running.insert((expires, seq), t.id);
            }
            Slot::Finished { at, seq } => {
                self.finished.insert((at, seq), t.id);
                if let Some(i) = finished_index(t.status) {
                    self.finished_by[i].insert((at, seq), t.id);
                }
            }
        }
        slot
    }

    fn detach(&mut self, task: &Task, slot: Slot) {
        let n = &mut self.counts[status_index(task.status)];
        *n = n.saturating_sub(1);
        if let Some(key) = &task.unique_key {
            if self.unique.get(key) == Some(&task.id) {
                self.unique.remove(key);
            }
        }
        match slot {
            Slot::Ready { rank, since, seq } => {
                self.ready.remove(&(rank, since, seq));
                self.waiting.remove(&(since, seq));
            }
            Slot::Scheduled { due, seq } => {
                self.scheduled.remove(&(due, seq));
            }
            Slot::Running { expires, seq } => {
                self.running.remove(&(expires, seq));
            }
            Slot::Finished { at, seq } => {
                self.finished.remove(&(at, seq));
                if let Some(i) = finished_index(task.status) {
                    self.finished_by[i].remove(&(at, seq));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;
    use spool_domain::names::{QueueName, TaskKind};
    use spool_domain::task::{Failure, Priority, Retry, Schedule, TaskSpec};

    const RETENTION: Duration = Duration::from_secs(10);

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + ms)
    }

    fn task(n: u128, spec: TaskSpec, now: Timestamp) -> Task {
        Task::new(
            TaskId::from_parts(now, n),
            QueueName::parse("q").unwrap(),
            spec,
            now,
        )
    }

    fn spec() -> TaskSpec {
        TaskSpec::new(TaskKind::parse("k").unwrap(), json!(null))
    }

    fn add(st: &mut QueueState, n: u128, spec: TaskSpec, now: Timestamp) -> TaskId {
        let t = task(n, spec, now);
        let id = t.id;
        st.insert(t, now);
        id
    }

    fn run(st: &mut QueueState, id: TaskId, now: Timestamp) {
        st.transition(&id, now, |t| t.reserve(now, Duration::from_secs(1), None))
            .unwrap()
            .unwrap();
    }

    #[test]
    fn finished_tasks_are_dropped_after_retention() {
        let mut st = QueueState::default();
        let id = add(&mut st, 1, spec(), at(0));
        run(&mut st, id, at(0));
        st.transition(&id, at(100), |t| t.complete(at(100), None))
            .unwrap()
            .unwrap();
        assert_eq!(st.stats("q", at(100)).succeeded, 1);

        st.maintain(
            at(100).saturating_add(RETENTION - Duration::from_millis(1)),
            RETENTION,
        );
        assert!(st.get(&id).is_some(), "kept until the retention ends");
        st.maintain(at(100).saturating_add(RETENTION), RETENTION);
        assert!(st.get(&id).is_none(), "dropped once it ends");
        assert_eq!(st.stats("q", at(0)).succeeded, 0, "and no longer counted");
        assert!(st.finished.is_empty() && st.tasks.is_empty());
    }

    #[test]
    fn live_tasks_are_never_dropped_by_retention() {
        let mut st = QueueState::default();
        let id = add(&mut st, 1, spec(), at(0));
        st.maintain(at(0).saturating_add(RETENTION * 100), RETENTION);
        assert_eq!(st.get(&id).unwrap().status, TaskStatus::Queued);
    }

    #[test]
    fn a_due_task_ranks_by_its_due_time_not_by_when_it_was_noticed() {
        let mut st = QueueState::default();
        let delayed = add(
            &mut st,
            1,
            spec().schedule(Schedule::After(Duration::from_millis(100))),
            at(0),
        );
        let later = add(&mut st, 2, spec(), at(200));
        st.maintain(at(300), RETENTION);
        assert_eq!(
            st.first_ready(),
            Some(delayed),
            "ready since 100, before 200"
        );
        assert_eq!(st.stats("q", at(300)).oldest_waiting_ms, Some(200));
        run(&mut st, delayed, at(300));
        assert_eq!(st.first_ready(), Some(later));
    }

    #[test]
    fn priority_beats_age() {
        let mut st = QueueState::default();
        let old_low = add(
            &mut st,
            1,
            spec().priority(Priority::new(-1).unwrap()),
            at(0),
        );
        let new_high = add(
            &mut st,
            2,
            spec().priority(Priority::new(1).unwrap()),
            at(50),
        );
        assert_eq!(st.first_ready(), Some(new_high));
        // The oldest waiting task is the low one, whatever the priorities.
        assert_eq!(st.stats("q", at(100)).oldest_waiting_ms, Some(100));
        run(&mut st, new_high, at(100));
        assert_eq!(st.first_ready(), Some(old_low));
    }

    #[test]
    fn a_reclaimed_task_waits_since_its_lease_ran_out() {
        let mut st = QueueState::default();
        let id = add(&mut st, 1, spec(), at(0));
        run(&mut st, id, at(0)); // lease until 1000
        assert_eq!(st.next_event(), Some(at(1000)));
        st.maintain(at(1500), RETENTION);
        let t = st.get(&id).unwrap();
        assert_eq!(t.status, TaskStatus::Queued);
        assert!(t.last_error.is_some());
        assert_eq!(st.stats("q", at(1500)).oldest_waiting_ms, Some(500));
        assert_eq!(st.next_event(), None);
    }

    #[test]
    fn a_refused_transition_changes_nothing() {
        let mut st = QueueState::default();
        let id = add(&mut st, 1, spec(), at(0));
        let before = st.get(&id).unwrap().clone();
        // `Task::fail` writes last_error before the state machine refuses a queued task.
        let out = st.transition(&id, at(10), |t| {
            t.fail(
                at(10),
                Failure {
                    error: "e".into(),
                    retry: Retry::Never,
                },
                0.0,
            )
        });
        assert!(matches!(out, Some(Err(_))));
        assert_eq!(st.get(&id).unwrap(), &before);
        assert_eq!(st.first_ready(), Some(id), "still indexed as ready");
        assert_eq!(st.stats("q", at(10)).queued, 1);
        assert!(st
            .transition(&TaskId::from_parts(at(0), 99), at(0), |_| Ok(()))
            .is_none());
    }

    #[test]
    fn unique_keys_are_held_until_finished() {
        let mut st = QueueState::default();
        let key = UniqueKey::parse("k1").unwrap();
        let id = add(&mut st, 1, spec().unique_key(key.clone()), at(0));
        assert_eq!(st.unique_holder(&key).unwrap().id, id);
        run(&mut st, id, at(0));
        assert_eq!(
            st.unique_holder(&key).unwrap().id,
            id,
            "running still holds"
        );
        st.transition(&id, at(5), |t| t.cancel(at(5)))
            .unwrap()
            .unwrap();
        assert!(st.unique_holder(&key).is_none(), "finished releases");
        st.transition(&id, at(6), Task::requeue).unwrap().unwrap();
        assert_eq!(
            st.unique_holder(&key).unwrap().id,
            id,
            "requeued holds again"
        );
    }

    #[test]
    fn counts_follow_every_transition() {
        let mut st = QueueState::default();
        let a = add(&mut st, 1, spec(), at(0));
        add(
            &mut st,
            2,
            spec().schedule(Schedule::After(Duration::from_secs(5))),
            at(0),
        );
        run(&mut st, a, at(0));
        st.transition(&a, at(1), |t| {
            t.fail(
                at(1),
                Failure {
                    error: "e".into(),
                    retry: Retry::Backoff,
                },
                0.5,
            )
        })
        .unwrap()
        .unwrap();
        let s = st.stats("q", at(1));
        assert_eq!((s.queued, s.scheduled, s.running), (0, 2, 0));
        let total: usize = [
            st.ready.len(),
            st.scheduled.len(),
            st.running.len(),
            st.finished.len(),
        ]
        .iter()
        .sum();
        assert_eq!(total, st.tasks.len(), "every task in exactly one index");
        assert_eq!(st.waiting.len(), st.ready.len());
    }

    #[test]
    fn wake_when_ready_grows_or_the_next_event_moves_earlier() {
        let p = |ready_added, next_event: Option<u64>| Pulse {
            ready_added,
            next_event: next_event.map(at),
        };
        assert!(p(0, None).should_wake(p(1, None)));
        assert!(p(0, None).should_wake(p(0, Some(5))));
        assert!(p(0, Some(9)).should_wake(p(0, Some(5))));
        assert!(
            !p(0, Some(5)).should_wake(p(0, Some(9))),
            "later: timers fire anyway"
        );
        assert!(!p(0, Some(5)).should_wake(p(0, None)));
        assert!(!p(3, Some(5)).should_wake(p(3, Some(5))));
    }
}
