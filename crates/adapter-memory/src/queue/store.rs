//! The whole queue store as plain synchronous data: every operation takes "now" (and any
//! randomness) as arguments, runs to completion under the caller's lock, and records which
//! queues changed in a way a waiting reserver must hear about.

use std::collections::BTreeMap;
use std::time::Duration;

use spool_domain::names::{QueueName, TaskId, WorkerId};
use spool_domain::task::{Failure, Lease, LeaseToken, QueueStats, Task, TaskSpec, TransitionError};
use spool_domain::Timestamp;
use spool_ports::{Enqueued, PortError, TaskQuery};

use super::state::QueueState;

/// What one reservation attempt found.
#[derive(Debug)]
pub(super) enum Reserved {
    /// A task, now running under this lease.
    Taken(Box<Lease>),
    /// Nothing ready; look again at `next_event` (a due time or lease expiry) at the latest.
    Empty {
        /// The earliest due time or lease expiry among the queues.
        next_event: Option<Timestamp>,
    },
}

/// Every queue, by name (sorted, for stats).
#[derive(Debug)]
pub(super) struct Store {
    queues: BTreeMap<QueueName, QueueState>,
    retention: Duration,
    wakes: Vec<QueueName>,
}

fn not_found(id: &TaskId) -> PortError {
    PortError::not_found(format!("task {id}"))
}

impl Store {
    /// An empty store keeping finished tasks for `retention`.
    pub(super) fn new(retention: Duration) -> Self {
        Self {
            queues: BTreeMap::new(),
            retention,
            wakes: Vec::new(),
        }
    }

    /// The queues whose waiting reservers must be woken since the last call.
    pub(super) fn take_wakes(&mut self) -> Vec<QueueName> {
        std::mem::take(&mut self.wakes)
    }

    /// Runs `f` on `queue` after bringing it up to date at `now` (due tasks ready, expired
    /// leases reclaimed, old finished tasks dropped). `None` when the queue never received a
    /// task.
    fn touch<R>(
        &mut self,
        queue: &QueueName,
        now: Timestamp,
        f: impl FnOnce(&mut QueueState) -> R,
    ) -> Option<R> {
        let state = self.queues.get_mut(queue)?;
        Some(run(state, queue, now, self.retention, &mut self.wakes, f))
    }

    /// [`Self::touch`], creating the queue when it is new.
    fn touch_or_create<R>(
        &mut self,
        queue: &QueueName,
        now: Timestamp,
        f: impl FnOnce(&mut QueueState) -> R,
    ) -> R {
        let state = self.queues.entry(queue.clone()).or_default();
        run(state, queue, now, self.retention, &mut self.wakes, f)
    }

    /// Accepts a task, or returns the task already holding its given ID (any status, within
    /// retention) or the live task holding its unique key. `random` feeds the random part of
    /// a generated ID.
    pub(super) fn enqueue(
        &mut self,
        queue: &QueueName,
        spec: TaskSpec,
        now: Timestamp,
        mut random: impl FnMut() -> u128,
    ) -> Enqueued {
        self.touch_or_create(queue, now, |st| {
            if let Some(existing) = spec.id.as_ref().and_then(|id| st.get(id)) {
                return Enqueued::Duplicate(existing.clone());
            }
            if let Some(existing) = spec.unique_key.as_ref().and_then(|k| st.unique_holder(k)) {
                return Enqueued::Duplicate(existing.clone());
            }
            let id = match spec.id {
                Some(id) => id,
                None => {
                    let mut id = TaskId::from_parts(now, random());
                    while st.contains(&id) {
                        id = TaskId::from_parts(now, random());
                    }
                    id
                }
            };
            let task = Task::new(id, queue.clone(), spec, now);
            st.insert(task.clone(), now);
            Enqueued::Created(task)
        })
    }

    /// Takes the next ready task from the first of `queues` that has one.
    ///
    /// # Errors
    /// `Internal` if a ready task refuses to be reserved (a broken index).
    pub(super) fn reserve(
        &mut self,
        queues: &[QueueName],
        now: Timestamp,
        lease: Duration,
        worker: Option<&WorkerId>,
    ) -> Result<Reserved, PortError> {
        // Promote and reclaim everywhere first, so "first queue with work" sees due tasks.
        for q in queues {
            self.touch(q, now, |_| ());
        }
        for q in queues {
            let taken = self.touch(q, now, |st| {
                let id = st.first_ready()?;
                let lease = st
                    .transition(&id, now, |t| t.reserve(now, lease, worker.cloned()))
                    .ok_or_else(|| PortError::internal(format!("ready task {id} is missing")))
                    .and_then(|r| {
                        r.map_err(|e| {
                            PortError::internal(format!("ready task {id} refused a lease: {e}"))
                        })
                    });
                Some(lease)
            });
            if let Some(Some(lease)) = taken {
                return lease.map(|l| Reserved::Taken(Box::new(l)));
            }
        }
        let next_event = queues
            .iter()
            .filter_map(|q| self.queues.get(q)?.next_event())
            .min();
        Ok(Reserved::Empty { next_event })
    }

    /// Runs `f` on task `id` if `token` is its live lease (an expired lease is reclaimed first,
    /// in the same step, and counts as lost).
    fn with_lease<R>(
        &mut self,
        queue: &QueueName,
        id: TaskId,
        token: LeaseToken,
        now: Timestamp,
        f: impl FnOnce(&mut Task) -> Result<R, TransitionError>,
    ) -> Result<R, PortError> {
        self.touch(queue, now, |st| {
            let task = st.get(&id).ok_or_else(|| not_found(&id))?;
            if !task.holds_lease(token, now) {
                return Err(PortError::LeaseLost {
                    task: id.to_string(),
                });
            }
            st.transition(&id, now, f)
                .ok_or_else(|| not_found(&id))?
                .map_err(PortError::from)
        })
        .unwrap_or_else(|| Err(not_found(&id)))
    }

    /// Extends a live lease to `now + lease`.
    pub(super) fn heartbeat(
        &mut self,
        queue: &QueueName,
        id: TaskId,
        token: LeaseToken,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Lease, PortError> {
        self.with_lease(queue, id, token, now, |t| t.heartbeat(now, lease))
    }

    /// Records success.
    pub(super) fn complete(
        &mut self,
        queue: &QueueName,
        id: TaskId,
        token: LeaseToken,
        now: Timestamp,
        result: Option<serde_json::Value>,
    ) -> Result<Task, PortError> {
        self.with_lease(queue, id, token, now, |t| {
            t.complete(now, result)?;
            Ok(t.clone())
        })
    }

    /// Records a failed attempt; `random` in `[0, 1)` feeds the backoff jitter.
    pub(super) fn fail(
        &mut self,
        queue: &QueueName,
        id: TaskId,
        token: LeaseToken,
        now: Timestamp,
        failure: Failure,
        random: f64,
    ) -> Result<Task, PortError> {
        self.with_lease(queue, id, token, now, |t| {
            t.fail(now, failure, random)?;
            Ok(t.clone())
        })
    }

    /// Hands a running task back: ready again since `now`, the attempt not counted.
    pub(super) fn release(
        &mut self,
        queue: &QueueName,
        id: TaskId,
        token: LeaseToken,
        now: Timestamp,
        reason: &str,
    ) -> Result<Task, PortError> {
        self.with_lease(queue, id, token, now, |t| {
            t.release(reason)?;
            Ok(t.clone())
        })
    }

    /// Cancels a live task (revoking a running task's lease).
    pub(super) fn cancel(
        &mut self,
        queue: &QueueName,
        id: TaskId,
        now: Timestamp,
    ) -> Result<Task, PortError> {
        self.touch(queue, now, |st| {
            st.transition(&id, now, |t| {
                t.cancel(now)?;
                Ok(t.clone())
            })
            .ok_or_else(|| not_found(&id))?
            .map_err(PortError::from)
        })
        .unwrap_or_else(|| Err(not_found(&id)))
    }

    /// Puts a dead or cancelled task back in the queue with fresh attempts.
    ///
    /// # Errors
    /// `Conflict` also when another live task of the queue now holds its unique key: two live
    /// tasks never share a key.
    pub(super) fn requeue(
        &mut self,
        queue: &QueueName,
        id: TaskId,
        now: Timestamp,
    ) -> Result<Task, PortError> {
        self.touch(queue, now, |st| {
            let task = st.get(&id).ok_or_else(|| not_found(&id))?;
            if let Some(key) = &task.unique_key {
                if let Some(holder) = st.unique_holder(key).filter(|h| h.id != id) {
                    return Err(PortError::conflict(format!(
                        "unique key {key} is held by live task {}",
                        holder.id
                    )));
                }
            }
            st.transition(&id, now, |t| {
                t.requeue()?;
                Ok(t.clone())
            })
            .ok_or_else(|| not_found(&id))?
            .map_err(PortError::from)
        })
        .unwrap_or_else(|| Err(not_found(&id)))
    }

    /// Reads a task still held at `now`.
    pub(super) fn get(&mut self, queue: &QueueName, id: TaskId, now: Timestamp) -> Option<Task> {
        self.touch(queue, now, |st| st.get(&id).cloned()).flatten()
    }

    /// Up to `query.limit` tasks of `query.listing` in `queue`, after maintenance at `now`.
    pub(super) fn list(
        &mut self,
        queue: &QueueName,
        query: TaskQuery,
        now: Timestamp,
    ) -> Vec<Task> {
        self.touch(queue, now, |st| st.list(query.listing, query.limit))
            .unwrap_or_default()
    }

    /// Depth per status of `queues` (every known queue when empty), sorted by name.
    pub(super) fn stats(&mut self, queues: &[QueueName], now: Timestamp) -> Vec<QueueStats> {
        let mut names: Vec<QueueName> = if queues.is_empty() {
            self.queues.keys().cloned().collect()
        } else {
            queues.to_vec()
        };
        names.sort();
        names.dedup();
        names
            .iter()
            .map(|q| {
                self.touch(q, now, |st| st.stats(q.as_str(), now))
                    .unwrap_or_else(|| QueueStats {
                        name: q.as_str().to_owned(),
                        ..QueueStats::default()
                    })
            })
            .collect()
    }
}

/// Brings `state` up to date, runs `f`, and notes `queue` in `wakes` when waiting reservers
/// must look again.
fn run<R>(
    state: &mut QueueState,
    queue: &QueueName,
    now: Timestamp,
    retention: Duration,
    wakes: &mut Vec<QueueName>,
    f: impl FnOnce(&mut QueueState) -> R,
) -> R {
    let before = state.pulse();
    state.maintain(now, retention);
    let out = f(state);
    if before.should_wake(state.pulse()) && !wakes.contains(queue) {
        wakes.push(queue.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;
    use spool_domain::names::{TaskKind, UniqueKey};
    use spool_domain::task::{Retry, Schedule, TaskStatus};

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(5_000_000 + ms)
    }

    fn q(name: &str) -> QueueName {
        QueueName::parse(name).unwrap()
    }

    fn spec() -> TaskSpec {
        TaskSpec::new(TaskKind::parse("k").unwrap(), json!(1))
    }

    fn counter() -> impl FnMut() -> u128 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    fn put(s: &mut Store, queue: &QueueName, spec: TaskSpec, now: Timestamp) -> Task {
        s.enqueue(queue, spec, now, counter()).into_task()
    }

    fn take(s: &mut Store, queue: &QueueName, now: Timestamp) -> Option<Lease> {
        match s
            .reserve(
                std::slice::from_ref(queue),
                now,
                Duration::from_secs(1),
                None,
            )
            .unwrap()
        {
            Reserved::Taken(l) => Some(*l),
            Reserved::Empty { .. } => None,
        }
    }

    #[test]
    fn colliding_random_ids_are_redrawn() {
        let mut s = Store::new(Duration::from_secs(60));
        let a = s.enqueue(&q("a"), spec(), at(0), || 7).into_task();
        let mut draws = [7u128, 7, 8].into_iter();
        let b = s
            .enqueue(&q("a"), spec(), at(0), move || draws.next().unwrap_or(9))
            .into_task();
        assert_ne!(a.id, b.id);
        assert_eq!(s.stats(&[q("a")], at(0))[0].queued, 2);
    }

    #[test]
    fn requeue_refuses_when_another_live_task_holds_the_key() {
        let mut s = Store::new(Duration::from_secs(60));
        let queue = q("a");
        let key = UniqueKey::parse("k").unwrap();
        let first = put(&mut s, &queue, spec().unique_key(key.clone()), at(0));
        s.cancel(&queue, first.id, at(1)).unwrap();
        let second = put(&mut s, &queue, spec().unique_key(key.clone()), at(2));
        assert_ne!(first.id, second.id);
        let err = s.requeue(&queue, first.id, at(3)).unwrap_err();
        assert!(matches!(err, PortError::Conflict { .. }), "{err:?}");
        assert_eq!(
            s.get(&queue, first.id, at(3)).unwrap().status,
            TaskStatus::Cancelled
        );
        s.cancel(&queue, second.id, at(4)).unwrap();
        assert_eq!(
            s.requeue(&queue, first.id, at(5)).unwrap().status,
            TaskStatus::Queued
        );
    }

    #[test]
    fn reading_unknown_queues_creates_nothing() {
        let mut s = Store::new(Duration::from_secs(60));
        assert!(take(&mut s, &q("ghost"), at(0)).is_none());
        assert!(s
            .get(&q("ghost"), TaskId::from_parts(at(0), 1), at(0))
            .is_none());
        let st = s.stats(&[q("ghost")], at(0));
        assert_eq!(st[0].name, "ghost");
        assert_eq!(st[0].queued, 0);
        assert!(s.stats(&[], at(0)).is_empty(), "never received a task");
        assert!(s.take_wakes().is_empty());
    }

    #[test]
    fn stats_are_sorted_and_deduplicated() {
        let mut s = Store::new(Duration::from_secs(60));
        put(&mut s, &q("b"), spec(), at(0));
        put(&mut s, &q("a"), spec(), at(0));
        let names = |v: Vec<QueueStats>| v.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(s.stats(&[], at(0))), ["a", "b"]);
        assert_eq!(names(s.stats(&[q("b"), q("a"), q("b")], at(0))), ["a", "b"]);
    }

    #[test]
    fn wakes_name_only_queues_where_a_waiter_has_something_new() {
        let mut s = Store::new(Duration::from_secs(60));
        let (a, b) = (q("a"), q("b"));
        put(&mut s, &a, spec(), at(0));
        assert_eq!(
            s.take_wakes(),
            std::slice::from_ref(&a),
            "a task became ready"
        );

        put(
            &mut s,
            &b,
            spec().schedule(Schedule::After(Duration::from_secs(10))),
            at(0),
        );
        assert_eq!(
            s.take_wakes(),
            std::slice::from_ref(&b),
            "a new, earlier timer"
        );
        put(
            &mut s,
            &b,
            spec().schedule(Schedule::After(Duration::from_secs(20))),
            at(0),
        );
        assert!(s.take_wakes().is_empty(), "a later timer changes nothing");

        let lease = take(&mut s, &a, at(1)).unwrap();
        assert_eq!(
            s.take_wakes(),
            std::slice::from_ref(&a),
            "the lease expiry is a new timer"
        );
        s.heartbeat(
            &a,
            lease.task.id,
            lease.token,
            at(2),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(s.take_wakes().is_empty(), "a later expiry changes nothing");
        s.fail(
            &a,
            lease.task.id,
            lease.token,
            at(3),
            Failure {
                error: "e".into(),
                retry: Retry::After(Duration::from_millis(10)),
            },
            0.0,
        )
        .unwrap();
        assert_eq!(
            s.take_wakes(),
            std::slice::from_ref(&a),
            "the retry is due sooner"
        );
        s.get(&a, lease.task.id, at(4));
        assert!(s.take_wakes().is_empty());
        s.get(&a, lease.task.id, at(20));
        assert_eq!(
            s.take_wakes(),
            [a],
            "a read that makes a task due wakes too"
        );
    }

    #[test]
    fn an_expired_lease_is_reclaimed_by_the_call_that_finds_it() {
        let mut s = Store::new(Duration::from_secs(60));
        let queue = q("a");
        let t = put(&mut s, &queue, spec(), at(0));
        let lease = take(&mut s, &queue, at(0)).unwrap(); // until 1000
        let err = s
            .complete(&queue, t.id, lease.token, at(1000), None)
            .unwrap_err();
        assert!(matches!(err, PortError::LeaseLost { .. }), "{err:?}");
        let now = s.get(&queue, t.id, at(1000)).unwrap();
        assert_eq!(now.status, TaskStatus::Queued, "reclaimed in the same step");
        assert!(now.last_error.is_some());
    }

    #[test]
    fn a_release_wakes_waiters_and_is_ready_since_the_release() {
        let mut s = Store::new(Duration::from_secs(60));
        let queue = q("a");
        let first = put(&mut s, &queue, spec(), at(0));
        let second = put(&mut s, &queue, spec(), at(10));
        let lease = take(&mut s, &queue, at(20)).unwrap();
        assert_eq!(lease.task.id, first.id);
        s.take_wakes();

        let released = s
            .release(&queue, first.id, lease.token, at(30), "bye")
            .unwrap();
        assert_eq!(
            (released.status, released.attempts),
            (TaskStatus::Queued, 0)
        );
        assert_eq!(
            s.take_wakes(),
            std::slice::from_ref(&queue),
            "a task became ready"
        );
        let st = &s.stats(std::slice::from_ref(&queue), at(50))[0];
        assert_eq!(
            st.oldest_waiting_ms,
            Some(40),
            "the other task has waited longest"
        );
        assert_eq!(take(&mut s, &queue, at(50)).unwrap().task.id, second.id);
        let st = &s.stats(std::slice::from_ref(&queue), at(50))[0];
        assert_eq!(st.oldest_waiting_ms, Some(20), "ready since the release");
        let again = take(&mut s, &queue, at(50)).unwrap();
        assert_eq!((again.task.id, again.task.attempts), (first.id, 1));
    }

    #[test]
    fn the_first_listed_queue_with_work_wins() {
        let mut s = Store::new(Duration::from_secs(60));
        let (a, b) = (q("a"), q("b"));
        let tb = put(&mut s, &b, spec(), at(0));
        let ta = put(
            &mut s,
            &a,
            spec().schedule(Schedule::After(Duration::from_millis(10))),
            at(0),
        );
        let got = |s: &mut Store, now| match s
            .reserve(&[a.clone(), b.clone()], now, Duration::from_secs(1), None)
            .unwrap()
        {
            Reserved::Taken(l) => l.task.id,
            Reserved::Empty { .. } => panic!("expected work"),
        };
        assert_eq!(got(&mut s, at(20)), ta.id, "a became due first");
        assert_eq!(got(&mut s, at(20)), tb.id);
        match s
            .reserve(&[a, b], at(20), Duration::from_secs(1), None)
            .unwrap()
        {
            Reserved::Empty { next_event } => {
                assert_eq!(next_event, Some(at(1020)), "the earliest lease expiry")
            }
            Reserved::Taken(l) => panic!("unexpected {l:?}"),
        }
    }
}
