//! Conformance tests of the queue port.
//!
//! Durations are short (leases and delays of 200–800 ms, advances well past them) because the
//! Redis run lets real time pass. Tests never assert how long something took; they assert
//! orderings between timestamps the store returned.
//!
//! Decision recorded here: a second `complete` with the same token (or any call with the
//! token of a finished task) is `LeaseLost` — the lease ended with the first completion.
//! Likewise a released token is dead for every later call, `release` included.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use spool_domain::backoff::Backoff;
use spool_domain::limits::StoreLimits;
use spool_domain::names::{QueueName, TaskId, TaskKind, UniqueKey, WorkerId};
use spool_domain::task::{
    Failure, Lease, LeaseToken, MaxAttempts, Priority, QueueStats, Retry, Schedule, Task, TaskSpec,
    TaskStatus,
};
use spool_domain::Timestamp;

use super::{Factory, Fixture};
use crate::{Completion, Enqueued, PortError, ReserveOptions, TaskListing, TaskQuery};

/// A lease no test outlives, even on a slow Redis.
const LONG: Duration = Duration::from_secs(30);

fn queue(name: &str) -> QueueName {
    QueueName::parse(name).expect("valid queue name")
}

fn spec(n: i64) -> TaskSpec {
    TaskSpec::new(
        TaskKind::parse("test.job").expect("valid kind"),
        json!({ "n": n }),
    )
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn failure(error: &str, retry: Retry) -> Failure {
    Failure {
        error: error.to_owned(),
        retry,
    }
}

async fn put(fx: &Fixture, q: &QueueName, spec: TaskSpec) -> Task {
    match fx.queue.enqueue(q, spec).await.expect("enqueue") {
        Enqueued::Created(t) => t,
        Enqueued::Duplicate(t) => panic!("expected a new task, got duplicate {}", t.id),
    }
}

async fn take(fx: &Fixture, q: &QueueName, lease: Duration) -> Option<Lease> {
    fx.queue
        .reserve(std::slice::from_ref(q), ReserveOptions::new(lease))
        .await
        .expect("reserve")
}

async fn take_some(fx: &Fixture, q: &QueueName, lease: Duration) -> Lease {
    take(fx, q, lease).await.expect("a ready task")
}

/// Reserves until the queue is empty; fails (instead of looping) past `expected` deliveries.
async fn drain(fx: &Fixture, q: &QueueName, expected: usize) -> Vec<TaskId> {
    let mut got = Vec::new();
    while let Some(lease) = take(fx, q, LONG).await {
        got.push(lease.task.id);
        assert!(got.len() <= expected, "more deliveries than tasks: {got:?}");
    }
    got
}

async fn get(fx: &Fixture, q: &QueueName, id: TaskId) -> Task {
    fx.queue
        .get(q, id)
        .await
        .expect("get")
        .expect("task exists")
}

async fn stats(fx: &Fixture, q: &QueueName) -> QueueStats {
    let mut all = fx
        .queue
        .stats(std::slice::from_ref(q))
        .await
        .expect("stats");
    assert_eq!(all.len(), 1, "one entry per queue asked for");
    all.remove(0)
}

fn unknown_id() -> TaskId {
    TaskId::from_parts(Timestamp::from_millis(1_000), 0x00c0_ffee)
}

fn assert_lease_lost<T: std::fmt::Debug>(r: Result<T, PortError>, what: &str) {
    assert!(
        matches!(r, Err(PortError::LeaseLost { .. })),
        "{what}: expected LeaseLost, got {r:?}"
    );
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, PortError>, what: &str) {
    assert!(
        matches!(r, Err(PortError::NotFound { .. })),
        "{what}: expected NotFound, got {r:?}"
    );
}

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, PortError>, what: &str) {
    assert!(
        matches!(r, Err(PortError::Invalid(_))),
        "{what}: expected Invalid, got {r:?}"
    );
}

fn assert_conflict<T: std::fmt::Debug>(r: Result<T, PortError>, what: &str) {
    assert!(
        matches!(r, Err(PortError::Conflict { .. })),
        "{what}: expected Conflict, got {r:?}"
    );
}

/// Tasks of one priority come out in enqueue order.
pub async fn fifo_within_priority(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("fifo");
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(put(&fx, &q, spec(n)).await.id);
    }
    assert_eq!(drain(&fx, &q, ids.len()).await, ids);
}

/// A higher priority always goes first, whatever the enqueue order; FIFO within each.
pub async fn strict_priority_order(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("prio");
    let p = |v| Priority::new(v).expect("valid priority");
    let low = put(&fx, &q, spec(1).priority(p(-50))).await.id;
    let normal = put(&fx, &q, spec(2)).await.id;
    let high_1 = put(&fx, &q, spec(3).priority(p(90))).await.id;
    let lowest = put(&fx, &q, spec(4).priority(Priority::MIN)).await.id;
    let high_2 = put(&fx, &q, spec(5).priority(p(90))).await.id;
    let highest = put(&fx, &q, spec(6).priority(Priority::MAX)).await.id;
    assert_eq!(
        drain(&fx, &q, 6).await,
        vec![highest, high_1, high_2, normal, low, lowest]
    );
}

/// A delayed task is `scheduled` and invisible until due, then reservable; a time in the past
/// means now.
pub async fn delayed_task_becomes_ready_when_due(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("delayed");
    let t = put(&fx, &q, spec(1).schedule(Schedule::After(ms(400)))).await;
    assert_eq!(t.status, TaskStatus::Scheduled);
    assert_eq!(t.scheduled_for, Some(t.enqueued_at.saturating_add(ms(400))));
    assert!(take(&fx, &q, LONG).await.is_none(), "not due yet");
    assert_eq!(get(&fx, &q, t.id).await.status, TaskStatus::Scheduled);
    assert_eq!(stats(&fx, &q).await.scheduled, 1);

    fx.clock.advance(ms(800)).await;
    let lease = take_some(&fx, &q, LONG).await;
    assert_eq!(lease.task.id, t.id);
    assert_eq!(lease.task.status, TaskStatus::Running);

    let past = put(
        &fx,
        &q,
        spec(2).schedule(Schedule::At(Timestamp::from_millis(1))),
    )
    .await;
    assert_eq!(past.status, TaskStatus::Queued, "a past instant is now");
    assert_eq!(take_some(&fx, &q, LONG).await.task.id, past.id);
}

/// An expired lease is reclaimed: the task is delivered again with the attempt counted and
/// the expiry recorded as its last error.
pub async fn expired_lease_is_redelivered(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("expiry");
    let t = put(&fx, &q, spec(1)).await;
    let first = take_some(&fx, &q, ms(200)).await;
    assert_eq!(first.task.attempts, 1);
    assert!(first.task.last_error.is_none());

    fx.clock.advance(ms(600)).await;
    let second = take_some(&fx, &q, LONG).await;
    assert_eq!(second.task.id, t.id);
    assert_eq!(second.task.attempts, 2);
    assert!(second.task.last_error.is_some(), "the expiry is recorded");
    assert!(second.token > first.token, "fencing tokens only grow");
}

/// After redelivery the old token is dead for complete, heartbeat and fail; the new one works.
pub async fn stale_token_is_lease_lost(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("stale");
    put(&fx, &q, spec(1)).await;
    let old = take_some(&fx, &q, ms(200)).await;
    fx.clock.advance(ms(600)).await;
    let new = take_some(&fx, &q, LONG).await;
    let id = new.task.id;

    assert_lease_lost(
        fx.queue.complete(&q, id, old.token, None).await,
        "complete with the old token",
    );
    assert_lease_lost(
        fx.queue.heartbeat(&q, id, old.token, LONG).await,
        "heartbeat with the old token",
    );
    assert_lease_lost(
        fx.queue
            .fail(&q, id, old.token, failure("late", Retry::Backoff))
            .await,
        "fail with the old token",
    );
    assert_lease_lost(
        fx.queue
            .complete(&q, id, LeaseToken::new(new.token.get() + 1), None)
            .await,
        "complete with a made-up token",
    );
    assert_eq!(get(&fx, &q, id).await.status, TaskStatus::Running);

    let done = fx
        .queue
        .complete(&q, id, new.token, Some(json!("ok")))
        .await
        .expect("the current holder completes");
    assert_eq!(done.status, TaskStatus::Succeeded);
}

/// A heartbeat extends the lease past its original expiry.
pub async fn heartbeat_extends_lease(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("heartbeat");
    put(&fx, &q, spec(1)).await;
    let lease = take_some(&fx, &q, ms(600)).await;

    fx.clock.advance(ms(300)).await;
    let extended = fx
        .queue
        .heartbeat(&q, lease.task.id, lease.token, ms(600))
        .await
        .expect("heartbeat within the lease");
    assert_eq!(extended.token, lease.token, "a heartbeat keeps the token");
    assert!(extended.expires_at > lease.expires_at);

    fx.clock.advance(ms(400)).await; // past the original expiry, before the new one
    assert!(
        take(&fx, &q, LONG).await.is_none(),
        "an extended lease is not reclaimed"
    );
    let done = fx
        .queue
        .complete(&q, lease.task.id, lease.token, None)
        .await
        .expect("still the holder");
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(done.attempts, 1);
}

/// A failure with retries left waits out the backoff as `failed`, then comes back.
pub async fn fail_with_retry_is_redelivered_after_backoff(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("retry");
    let t = put(&fx, &q, spec(1).backoff(Backoff::constant(ms(300)))).await;
    let lease = take_some(&fx, &q, LONG).await;
    let started = lease.task.started_at.expect("started_at on reserve");

    let failed = fx
        .queue
        .fail(&q, t.id, lease.token, failure("boom", Retry::Backoff))
        .await
        .expect("fail");
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(failed.last_error.as_deref(), Some("boom"));
    let due = failed.scheduled_for.expect("a retry time");
    assert!(
        due >= started.saturating_add(ms(300)),
        "the backoff is waited"
    );
    assert!(failed.finished_at.is_none(), "retrying is not finished");
    assert!(
        take(&fx, &q, LONG).await.is_none(),
        "not before the backoff"
    );
    let s = stats(&fx, &q).await;
    assert_eq!((s.scheduled, s.running, s.queued), (1, 0, 0));

    fx.clock.advance(ms(700)).await;
    let again = take_some(&fx, &q, LONG).await;
    assert_eq!(again.task.id, t.id);
    assert_eq!(again.task.attempts, 2);
    assert_eq!(again.task.last_error.as_deref(), Some("boom"));
    assert_eq!(
        again.task,
        get(&fx, &q, t.id).await,
        "the leased task is the stored one, field for field"
    );
}

/// `Retry::After` overrides the backoff.
pub async fn fail_with_explicit_delay(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("retry-after");
    put(&fx, &q, spec(1).backoff(Backoff::constant(ms(60_000)))).await;
    let lease = take_some(&fx, &q, LONG).await;
    let failed = fx
        .queue
        .fail(
            &q,
            lease.task.id,
            lease.token,
            failure("later", Retry::After(ms(300))),
        )
        .await
        .expect("fail");
    assert_eq!(failed.status, TaskStatus::Failed);
    let due = failed.scheduled_for.expect("a retry time");
    let started = lease.task.started_at.expect("started_at");
    assert!(due >= started.saturating_add(ms(300)));
    assert!(due < started.saturating_add(ms(60_000)), "not the backoff");
    fx.clock.advance(ms(700)).await;
    assert_eq!(take_some(&fx, &q, LONG).await.task.attempts, 2);
}

/// After `max_attempts` failures the task is dead with its last error: counted, not reservable.
pub async fn max_attempts_sends_to_dead_letter(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("dead-letter");
    let t = put(
        &fx,
        &q,
        spec(1)
            .max_attempts(MaxAttempts::new(2).expect("valid"))
            .backoff(Backoff::constant(ms(200))),
    )
    .await;
    let first = take_some(&fx, &q, LONG).await;
    let failed = fx
        .queue
        .fail(&q, t.id, first.token, failure("first", Retry::Backoff))
        .await
        .expect("fail 1");
    assert_eq!(failed.status, TaskStatus::Failed);

    fx.clock.advance(ms(600)).await;
    let second = take_some(&fx, &q, LONG).await;
    assert_eq!(second.task.attempts, 2);
    let dead = fx
        .queue
        .fail(&q, t.id, second.token, failure("second", Retry::Backoff))
        .await
        .expect("fail 2");
    assert_eq!(dead.status, TaskStatus::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("second"));
    assert!(dead.finished_at.is_some());

    assert!(take(&fx, &q, LONG).await.is_none());
    fx.clock.advance(ms(600)).await;
    assert!(take(&fx, &q, LONG).await.is_none(), "dead stays dead");
    assert_eq!(get(&fx, &q, t.id).await.status, TaskStatus::Dead);
    let s = stats(&fx, &q).await;
    assert_eq!((s.dead, s.queued, s.scheduled, s.running), (1, 0, 0, 0));
}

/// A lease that runs out on the last attempt sends the task to the dead-letter set.
pub async fn expired_lease_on_last_attempt_is_dead(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("expiry-dead");
    let t = put(
        &fx,
        &q,
        spec(1).max_attempts(MaxAttempts::new(1).expect("valid")),
    )
    .await;
    let lease = take_some(&fx, &q, ms(200)).await;
    fx.clock.advance(ms(600)).await;
    assert!(take(&fx, &q, LONG).await.is_none(), "no attempts left");
    let dead = get(&fx, &q, t.id).await;
    assert_eq!(dead.status, TaskStatus::Dead);
    assert_eq!(dead.attempts, 1);
    assert!(dead.last_error.is_some(), "the expiry is the last error");
    assert!(dead.finished_at.is_some());
    assert_lease_lost(
        fx.queue.complete(&q, t.id, lease.token, None).await,
        "complete after the task died",
    );
    assert_eq!(stats(&fx, &q).await.dead, 1);
}

/// `Retry::Never` kills the task at once, attempts left or not.
pub async fn retry_never_is_dead_at_once(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("never");
    let t = put(
        &fx,
        &q,
        spec(1).max_attempts(MaxAttempts::new(5).expect("valid")),
    )
    .await;
    let lease = take_some(&fx, &q, LONG).await;
    let dead = fx
        .queue
        .fail(&q, t.id, lease.token, failure("poison", Retry::Never))
        .await
        .expect("fail");
    assert_eq!(dead.status, TaskStatus::Dead);
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.last_error.as_deref(), Some("poison"));
    assert!(take(&fx, &q, LONG).await.is_none());
    assert_eq!(stats(&fx, &q).await.dead, 1);
}

/// A released task is ready again at once with the interrupted attempt not counted; the
/// released token is dead and the next reservation gets a greater one.
pub async fn release_returns_task_without_counting_the_attempt(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("release");
    let t = put(
        &fx,
        &q,
        spec(1).max_attempts(MaxAttempts::new(3).expect("valid")),
    )
    .await;
    let worker = WorkerId::parse("worker-r").expect("valid worker");
    let first = fx
        .queue
        .reserve(
            std::slice::from_ref(&q),
            ReserveOptions::new(LONG).worker(worker.clone()),
        )
        .await
        .expect("reserve")
        .expect("a ready task");
    assert_eq!(first.task.attempts, 1);

    let released = fx
        .queue
        .release(&q, t.id, first.token, "worker shutting down")
        .await
        .expect("the holder releases");
    assert_eq!(released.id, t.id);
    assert_eq!(released.status, TaskStatus::Queued);
    assert_eq!(
        released.attempts, 0,
        "the interrupted attempt does not count"
    );
    assert_eq!(released.lease_expires_at, None, "the lease is revoked");
    assert_eq!(
        released.last_error.as_deref(),
        Some("released: worker shutting down")
    );
    assert!(released.finished_at.is_none(), "a released task is live");
    assert_eq!(released.started_at, first.task.started_at);
    assert_eq!(released.worker, Some(worker));
    assert_eq!(
        get(&fx, &q, t.id).await,
        released,
        "get reads what release wrote"
    );
    let s = stats(&fx, &q).await;
    assert_eq!((s.queued, s.running, s.scheduled), (1, 0, 0));
    assert!(s.oldest_waiting_ms.is_some(), "it is waiting again");

    let second = take_some(&fx, &q, LONG).await;
    assert_eq!(second.task.id, t.id, "reservable again at once");
    assert_eq!(second.task.attempts, 1, "the first counted attempt");
    assert!(second.token > first.token, "fencing tokens only grow");
    assert_eq!(
        second.task.worker, None,
        "a reserve that names no worker leaves none of an earlier one"
    );
    assert_eq!(get(&fx, &q, t.id).await.worker, None);
    assert_lease_lost(
        fx.queue.complete(&q, t.id, first.token, None).await,
        "complete with the released token",
    );
    assert_lease_lost(
        fx.queue.heartbeat(&q, t.id, first.token, LONG).await,
        "heartbeat with the released token",
    );
    assert_lease_lost(
        fx.queue.release(&q, t.id, first.token, "twice").await,
        "release with the released token",
    );
    let done = fx
        .queue
        .complete(&q, t.id, second.token, None)
        .await
        .expect("the new holder completes");
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(done.attempts, 1);
}

/// Only the live lease releases: an expired token (reclaimed with its attempt counted), an
/// older token after redelivery and a made-up token are all `LeaseLost`, and change nothing.
pub async fn release_with_stale_token_is_lease_lost(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("release-stale");
    let t = put(&fx, &q, spec(1)).await;
    let old = take_some(&fx, &q, ms(200)).await;
    fx.clock.advance(ms(600)).await;
    assert_lease_lost(
        fx.queue.release(&q, t.id, old.token, "too late").await,
        "release after the lease ran out",
    );
    let reclaimed = get(&fx, &q, t.id).await;
    assert_eq!(
        reclaimed.status,
        TaskStatus::Queued,
        "reclaimed, not released"
    );
    assert_eq!(reclaimed.attempts, 1, "a reclaimed attempt counts");
    assert!(
        !reclaimed
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("released")),
        "the expiry is the last error: {reclaimed:?}"
    );

    let new = take_some(&fx, &q, LONG).await;
    assert_eq!(new.task.attempts, 2);
    assert_lease_lost(
        fx.queue.release(&q, t.id, old.token, "stale").await,
        "release with the pre-redelivery token",
    );
    assert_lease_lost(
        fx.queue
            .release(&q, t.id, LeaseToken::new(new.token.get() + 1), "made up")
            .await,
        "release with a made-up token",
    );
    let still = get(&fx, &q, t.id).await;
    assert_eq!(still.status, TaskStatus::Running, "the holder keeps it");
    assert_eq!(still.attempts, 2);
    assert_eq!(still.lease_expires_at, Some(new.expires_at));

    fx.queue
        .complete(&q, t.id, new.token, None)
        .await
        .expect("complete");
    assert_lease_lost(
        fx.queue
            .release(&q, t.id, new.token, "after complete")
            .await,
        "release of a finished task",
    );
    assert_eq!(get(&fx, &q, t.id).await.status, TaskStatus::Succeeded);
}

/// A release on the last allowed attempt does not kill the task: it is delivered again, as
/// often as it is released; a counted attempt is still the last one.
pub async fn release_on_last_attempt_does_not_kill_the_task(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("release-last");
    let t = put(
        &fx,
        &q,
        spec(1).max_attempts(MaxAttempts::new(1).expect("valid")),
    )
    .await;
    let mut last = None::<LeaseToken>;
    for _ in 0..3 {
        let lease = take_some(&fx, &q, LONG).await;
        assert_eq!(lease.task.id, t.id);
        assert_eq!(lease.task.attempts, 1);
        assert!(last.is_none_or(|prev| lease.token > prev));
        last = Some(lease.token);
        let released = fx
            .queue
            .release(&q, t.id, lease.token, "shutdown")
            .await
            .expect("release");
        assert_eq!(released.status, TaskStatus::Queued);
        assert_eq!(released.attempts, 0);
    }
    assert_eq!(stats(&fx, &q).await.dead, 0);

    let lease = take_some(&fx, &q, LONG).await;
    let dead = fx
        .queue
        .fail(&q, t.id, lease.token, failure("real", Retry::Backoff))
        .await
        .expect("fail");
    assert_eq!(
        dead.status,
        TaskStatus::Dead,
        "the counted attempt was the last"
    );
    assert_eq!(dead.attempts, 1);
}

/// A released task goes behind the tasks already ready at its priority, and ahead of lower
/// priorities.
pub async fn released_task_goes_behind_ready_tasks_of_its_priority(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("release-order");
    let first = put(&fx, &q, spec(1)).await;
    let second = put(&fx, &q, spec(2)).await;
    let low = put(&fx, &q, spec(3).priority(Priority::MIN)).await;
    let lease = take_some(&fx, &q, LONG).await;
    assert_eq!(lease.task.id, first.id);
    fx.queue
        .release(&q, first.id, lease.token, "back")
        .await
        .expect("release");
    assert_eq!(drain(&fx, &q, 3).await, vec![second.id, first.id, low.id]);
}

/// A waiting reserver is woken by a release, well before its wait runs out.
pub async fn release_wakes_a_waiting_reserver(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("release-wake");
    let t = put(&fx, &q, spec(1)).await;
    let held = take_some(&fx, &q, LONG).await;
    let wait = Duration::from_secs(1);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let store = fx.queue.clone();
    let qs = q.clone();
    let reserver = tokio::spawn(async move {
        let _ = started_tx.send(());
        store
            .reserve(
                std::slice::from_ref(&qs),
                ReserveOptions::new(LONG).wait(wait),
            )
            .await
    });
    started_rx.await.expect("reserver started");
    fx.queue
        .release(&q, t.id, held.token, "handing over")
        .await
        .expect("release");
    let lease = reserver
        .await
        .expect("reserver task")
        .expect("reserve")
        .expect("woken with the released task");
    assert_eq!(lease.task.id, t.id);
    assert_eq!(lease.task.attempts, 1);
    let held_since = held.task.started_at.expect("started_at");
    let started = lease.task.started_at.expect("started_at");
    assert!(
        started < held_since.saturating_add(wait),
        "woken by the release, not by the end of the wait"
    );
}

/// Cancelling a queued or scheduled task finishes it; it is never delivered.
pub async fn cancel_waiting_tasks(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("cancel");
    let queued = put(&fx, &q, spec(1)).await;
    let delayed = put(&fx, &q, spec(2).schedule(Schedule::After(ms(300)))).await;

    let c = fx.queue.cancel(&q, queued.id).await.expect("cancel queued");
    assert_eq!(c.status, TaskStatus::Cancelled);
    assert!(c.finished_at.is_some_and(|f| f >= queued.enqueued_at));
    let c = fx
        .queue
        .cancel(&q, delayed.id)
        .await
        .expect("cancel delayed");
    assert_eq!(c.status, TaskStatus::Cancelled);

    assert!(take(&fx, &q, LONG).await.is_none());
    fx.clock.advance(ms(600)).await;
    assert!(take(&fx, &q, LONG).await.is_none(), "not even when due");
    assert_eq!(get(&fx, &q, queued.id).await.status, TaskStatus::Cancelled);
    let s = stats(&fx, &q).await;
    assert_eq!((s.cancelled, s.queued, s.scheduled), (2, 0, 0));
}

/// Cancelling a running task revokes its lease.
pub async fn cancel_running_task_revokes_lease(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("cancel-running");
    let t = put(&fx, &q, spec(1)).await;
    let lease = take_some(&fx, &q, LONG).await;
    let c = fx.queue.cancel(&q, t.id).await.expect("cancel running");
    assert_eq!(c.status, TaskStatus::Cancelled);
    assert_lease_lost(
        fx.queue.heartbeat(&q, t.id, lease.token, LONG).await,
        "heartbeat after cancel",
    );
    assert_lease_lost(
        fx.queue.complete(&q, t.id, lease.token, None).await,
        "complete after cancel",
    );
    assert!(take(&fx, &q, LONG).await.is_none());
}

/// A finished task cannot be cancelled.
pub async fn cancel_finished_task_conflicts(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("cancel-finished");
    let t = put(&fx, &q, spec(1)).await;
    let lease = take_some(&fx, &q, LONG).await;
    fx.queue
        .complete(&q, t.id, lease.token, None)
        .await
        .expect("complete");
    assert_conflict(fx.queue.cancel(&q, t.id).await, "cancel a succeeded task");
    assert_eq!(get(&fx, &q, t.id).await.status, TaskStatus::Succeeded);

    let c = put(&fx, &q, spec(2)).await;
    fx.queue.cancel(&q, c.id).await.expect("cancel");
    assert_conflict(fx.queue.cancel(&q, c.id).await, "cancel twice");
}

/// A dead task goes back to the queue with its attempts reset; live tasks cannot be requeued.
pub async fn requeue_dead_task(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("requeue");
    let t = put(&fx, &q, spec(1)).await;
    assert_conflict(fx.queue.requeue(&q, t.id).await, "requeue a queued task");
    let lease = take_some(&fx, &q, LONG).await;
    assert_conflict(fx.queue.requeue(&q, t.id).await, "requeue a running task");
    fx.queue
        .fail(&q, t.id, lease.token, failure("poison", Retry::Never))
        .await
        .expect("fail");

    let back = fx.queue.requeue(&q, t.id).await.expect("requeue dead");
    assert_eq!(back.status, TaskStatus::Queued);
    assert_eq!(back.attempts, 0);
    assert!(back.finished_at.is_none());
    assert_eq!(stats(&fx, &q).await.dead, 0);

    let again = take_some(&fx, &q, LONG).await;
    assert_eq!(again.task.id, t.id);
    assert_eq!(again.task.attempts, 1);
    assert!(
        again.token > lease.token,
        "a requeued task never reuses a token"
    );
    assert_lease_lost(
        fx.queue.complete(&q, t.id, lease.token, None).await,
        "the pre-requeue token",
    );

    fx.queue.cancel(&q, t.id).await.expect("cancel");
    let back = fx.queue.requeue(&q, t.id).await.expect("requeue cancelled");
    assert_eq!(back.status, TaskStatus::Queued);
}

/// A live task holding a unique key absorbs duplicates; once finished the key is free.
pub async fn unique_key_deduplicates_live_tasks(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("unique");
    let key = UniqueKey::parse("doc-42").expect("valid key");
    let first = put(&fx, &q, spec(1).unique_key(key.clone())).await;

    let dup = fx
        .queue
        .enqueue(&q, spec(2).unique_key(key.clone()))
        .await
        .expect("enqueue");
    let Enqueued::Duplicate(existing) = dup else {
        panic!("expected Duplicate, got {dup:?}");
    };
    assert_eq!(existing.id, first.id);
    assert_eq!(existing.payload, json!({ "n": 1 }), "nothing was replaced");
    assert_eq!(stats(&fx, &q).await.queued, 1, "nothing was added");

    let other = queue("unique-other");
    put(&fx, &other, spec(3).unique_key(key.clone())).await; // keys are per queue

    let lease = take_some(&fx, &q, LONG).await;
    let dup = fx
        .queue
        .enqueue(&q, spec(4).unique_key(key.clone()))
        .await
        .expect("enqueue");
    assert!(
        matches!(&dup, Enqueued::Duplicate(t) if t.id == first.id),
        "a running task still holds its key: {dup:?}"
    );

    fx.queue
        .complete(&q, first.id, lease.token, None)
        .await
        .expect("complete");
    let fresh = put(&fx, &q, spec(5).unique_key(key)).await;
    assert_ne!(fresh.id, first.id);
}

/// A requeued task takes its unique key back, unless another live task holds it meanwhile:
/// two live tasks never share a key.
pub async fn requeue_refuses_while_another_live_task_holds_the_unique_key(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("unique-requeue");
    let key = UniqueKey::parse("doc-7").expect("valid key");
    let first = put(&fx, &q, spec(1).unique_key(key.clone())).await;
    fx.queue.cancel(&q, first.id).await.expect("cancel");
    let second = put(&fx, &q, spec(2).unique_key(key.clone())).await;
    assert_ne!(second.id, first.id, "a cancelled task frees its key");

    let err = fx
        .queue
        .requeue(&q, first.id)
        .await
        .expect_err("key is held");
    assert!(matches!(err, PortError::Conflict { .. }), "{err:?}");
    let unchanged = fx
        .queue
        .get(&q, first.id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(unchanged.status, TaskStatus::Cancelled);

    fx.queue.cancel(&q, second.id).await.expect("cancel");
    let back = fx.queue.requeue(&q, first.id).await.expect("requeue");
    assert_eq!(back.status, TaskStatus::Queued);
    let dup = fx
        .queue
        .enqueue(&q, spec(3).unique_key(key))
        .await
        .expect("enqueue");
    assert!(
        matches!(&dup, Enqueued::Duplicate(t) if t.id == first.id),
        "the requeued task holds its key again: {dup:?}"
    );
}

/// Stats count every status and report how long the oldest ready task has waited.
pub async fn stats_count_per_status(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("stats");
    let empty = stats(&fx, &q).await;
    assert_eq!(empty.name, "stats");
    assert_eq!(
        (empty.queued, empty.scheduled, empty.running, empty.dead),
        (0, 0, 0, 0)
    );
    assert_eq!(empty.oldest_waiting_ms, None);

    put(&fx, &q, spec(1)).await;
    let l = take_some(&fx, &q, LONG).await;
    fx.queue
        .fail(&q, l.task.id, l.token, failure("x", Retry::Never))
        .await
        .expect("dead");
    put(&fx, &q, spec(2)).await;
    let l = take_some(&fx, &q, LONG).await;
    fx.queue
        .complete(&q, l.task.id, l.token, None)
        .await
        .expect("succeeded");
    put(&fx, &q, spec(3)).await;
    take_some(&fx, &q, LONG).await; // running
    let c = put(&fx, &q, spec(4)).await;
    fx.queue.cancel(&q, c.id).await.expect("cancelled");
    put(&fx, &q, spec(5)).await; // queued
    put(
        &fx,
        &q,
        spec(6).schedule(Schedule::After(Duration::from_secs(60))),
    )
    .await;

    fx.clock.advance(ms(300)).await;
    let s = stats(&fx, &q).await;
    assert_eq!(s.name, "stats");
    assert_eq!(
        (
            s.queued,
            s.scheduled,
            s.running,
            s.succeeded,
            s.dead,
            s.cancelled
        ),
        (1, 1, 1, 1, 1, 1),
        "{s:?}"
    );
    let waited = s.oldest_waiting_ms.expect("a ready task is waiting");
    assert!(waited >= 300, "waited {waited} ms");
}

/// Empty `queues` lists every queue that received a task; results are sorted by name.
pub async fn stats_list_queues_sorted(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let (z, a, m) = (queue("zeta-q"), queue("alpha-q"), queue("mid-q"));
    put(&fx, &z, spec(1)).await;
    put(&fx, &a, spec(2)).await;
    put(&fx, &a, spec(3)).await;
    put(&fx, &m, spec(4)).await;

    let all = fx.queue.stats(&[]).await.expect("stats");
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted: {names:?}");
    for n in ["alpha-q", "mid-q", "zeta-q"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let alpha = all.iter().find(|s| s.name == "alpha-q").expect("alpha");
    assert_eq!(alpha.queued, 2);

    let some = fx.queue.stats(&[z, a]).await.expect("stats");
    let names: Vec<&str> = some.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["alpha-q", "zeta-q"]);
}

/// Every transition records its time, in order.
pub async fn timestamps_on_every_transition(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("timestamps");
    let t = put(&fx, &q, spec(1).schedule(Schedule::After(ms(300)))).await;
    assert!(t.started_at.is_none() && t.heartbeat_at.is_none() && t.finished_at.is_none());
    let due = t.scheduled_for.expect("scheduled_for on a delayed task");
    assert!(due > t.enqueued_at);

    fx.clock.advance(ms(600)).await;
    let worker = WorkerId::parse("worker-1").expect("valid worker");
    let lease = fx
        .queue
        .reserve(
            std::slice::from_ref(&q),
            ReserveOptions::new(LONG).worker(worker.clone()),
        )
        .await
        .expect("reserve")
        .expect("due task");
    let started = lease.task.started_at.expect("started_at");
    assert!(started >= due);
    assert_eq!(lease.task.heartbeat_at, Some(started));
    assert_eq!(lease.task.lease_expires_at, Some(lease.expires_at));
    assert_eq!(lease.expires_at, started.saturating_add(LONG));
    assert_eq!(lease.task.worker, Some(worker));
    assert_eq!(lease.task.enqueued_at, t.enqueued_at);

    fx.clock.advance(ms(200)).await;
    let beat = fx
        .queue
        .heartbeat(&q, t.id, lease.token, LONG)
        .await
        .expect("heartbeat");
    let beat_at = beat.task.heartbeat_at.expect("heartbeat_at");
    assert!(beat_at > started, "the heartbeat moved forward");
    assert_eq!(beat.task.started_at, Some(started));
    assert_eq!(beat.expires_at, beat_at.saturating_add(LONG));

    fx.clock.advance(ms(100)).await;
    let done = fx
        .queue
        .complete(&q, t.id, lease.token, Some(json!({ "ok": true })))
        .await
        .expect("complete");
    let finished = done.finished_at.expect("finished_at");
    assert!(finished >= beat_at);
    assert_eq!(done.result, Some(json!({ "ok": true })));
    assert_eq!(
        get(&fx, &q, t.id).await,
        done,
        "get reads what complete wrote"
    );
}

/// Only the first completion counts; the finished lease is lost for every later call.
pub async fn complete_is_exactly_once(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("once");
    let t = put(&fx, &q, spec(1)).await;
    let lease = take_some(&fx, &q, LONG).await;
    fx.queue
        .complete(&q, t.id, lease.token, Some(json!(1)))
        .await
        .expect("first complete");
    assert_lease_lost(
        fx.queue
            .complete(&q, t.id, lease.token, Some(json!(2)))
            .await,
        "second complete",
    );
    assert_lease_lost(
        fx.queue
            .fail(&q, t.id, lease.token, failure("late", Retry::Backoff))
            .await,
        "fail after complete",
    );
    let stored = get(&fx, &q, t.id).await;
    assert_eq!(stored.status, TaskStatus::Succeeded);
    assert_eq!(stored.result, Some(json!(1)));
    assert_eq!(stats(&fx, &q).await.succeeded, 1);
}

/// Concurrent reservers never get the same task.
pub async fn concurrent_reservers_never_share_a_task(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("concurrent");
    for n in 0..20 {
        put(&fx, &q, spec(n)).await;
    }
    let mut workers = Vec::new();
    for _ in 0..8 {
        let store = fx.queue.clone();
        let q = q.clone();
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let lease = store
                    .reserve(std::slice::from_ref(&q), ReserveOptions::new(LONG))
                    .await
                    .expect("reserve");
                let Some(lease) = lease else { break };
                got.push(lease.task.id);
                assert!(got.len() <= 20, "more deliveries than tasks");
                tokio::task::yield_now().await; // let the others in between
                store
                    .complete(&q, lease.task.id, lease.token, None)
                    .await
                    .expect("complete");
            }
            got
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker task"));
    }
    let unique: HashSet<TaskId> = all.iter().copied().collect();
    assert_eq!(all.len(), 20, "every task delivered once");
    assert_eq!(unique.len(), 20, "no task delivered twice");
    assert_eq!(stats(&fx, &q).await.succeeded, 20);
}

/// `reserve_many` takes up to `max` ready tasks in reservation order (first queue with work
/// first, then priority, FIFO), each under its own lease with its own fencing token, and
/// takes nothing more once the queues are empty.
pub async fn reserve_many_takes_tasks_in_order_each_under_its_own_lease(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let first = queue("many-first");
    let second = queue("many-second");
    let high = Priority::new(5).expect("valid priority");
    let a = put(&fx, &first, spec(1)).await.id;
    let b = put(&fx, &first, spec(2)).await.id;
    let urgent = put(&fx, &first, spec(3).priority(high)).await.id;
    let c = put(&fx, &second, spec(4)).await.id;
    let d = put(&fx, &second, spec(5)).await.id;
    let queues = [first.clone(), second.clone()];
    let worker = WorkerId::parse("many-worker").expect("valid worker");
    let opts = ReserveOptions::new(LONG).worker(worker.clone());

    let got = fx
        .queue
        .reserve_many(&queues, 4, opts.clone())
        .await
        .expect("reserve_many");
    let ids: Vec<TaskId> = got.iter().map(|l| l.task.id).collect();
    assert_eq!(
        ids,
        vec![urgent, a, b, c],
        "reservation order across queues"
    );
    for lease in &got {
        assert_eq!(lease.task.status, TaskStatus::Running);
        assert_eq!(lease.task.attempts, 1);
        assert_eq!(lease.task.worker.as_ref(), Some(&worker));
        assert!(lease.task.lease_expires_at.is_some());
    }
    let distinct: HashSet<TaskId> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "no task twice");

    let rest = fx
        .queue
        .reserve_many(&queues, 10, opts.clone())
        .await
        .expect("reserve_many");
    assert_eq!(
        rest.iter().map(|l| l.task.id).collect::<Vec<_>>(),
        vec![d],
        "fewer than max when fewer are ready"
    );
    assert!(
        fx.queue
            .reserve_many(&queues, 10, opts.clone())
            .await
            .expect("reserve_many")
            .is_empty(),
        "nothing when nothing is ready"
    );

    // Every lease is fenced on its own: each completes exactly once with its token.
    for lease in got.iter().chain(&rest) {
        let q = if lease.task.queue == first {
            &first
        } else {
            &second
        };
        let done = fx
            .queue
            .complete(q, lease.task.id, lease.token, None)
            .await
            .expect("complete with its own token");
        assert_eq!(done.status, TaskStatus::Succeeded);
        let again = fx
            .queue
            .complete(q, lease.task.id, lease.token, None)
            .await
            .expect_err("a finished lease");
        assert!(
            matches!(again, PortError::LeaseLost { .. }),
            "got {again:?}"
        );
    }
    assert_eq!(stats(&fx, &first).await.succeeded, 3);
    assert_eq!(stats(&fx, &second).await.succeeded, 2);
}

/// `reserve_many` validates its arguments: no queue, a `max` of 0 or over the bound, a bad
/// lease.
pub async fn reserve_many_validates_arguments(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = [queue("many-invalid")];
    let opts = ReserveOptions::new(LONG);
    for (queues, max, opts) in [
        (&[][..], 1, opts.clone()),
        (&q[..], 0, opts.clone()),
        (&q[..], crate::RESERVE_MANY_MAX + 1, opts.clone()),
        (&q[..], 1, ReserveOptions::new(Duration::ZERO)),
    ] {
        let err = fx
            .queue
            .reserve_many(queues, max, opts)
            .await
            .expect_err("invalid arguments");
        assert!(matches!(err, PortError::Invalid { .. }), "got {err:?}");
    }
    put(&fx, &q[0], spec(1)).await;
    let got = fx
        .queue
        .reserve_many(&q, crate::RESERVE_MANY_MAX, opts)
        .await
        .expect("the maximum is accepted");
    assert_eq!(got.len(), 1);
}

/// `complete_many` records each item as `complete` would, under its own lease: one item's
/// stale token, unknown task or repeat does not stop the others.
pub async fn complete_many_records_each_under_its_own_lease(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("complete-many");
    for n in 0..3 {
        put(&fx, &q, spec(n)).await;
    }
    let leases = fx
        .queue
        .reserve_many(std::slice::from_ref(&q), 3, ReserveOptions::new(LONG))
        .await
        .expect("reserve_many");
    let [a, b, c] = &leases[..] else {
        panic!("expected 3 leases, got {}", leases.len());
    };
    let unknown = unknown_id();
    let outcomes = fx
        .queue
        .complete_many(
            &q,
            vec![
                Completion {
                    task: a.task.id,
                    token: a.token,
                    result: Some(json!({ "ok": "a" })),
                },
                Completion {
                    task: b.task.id,
                    token: LeaseToken::new(b.token.get() + 1),
                    result: None,
                },
                Completion {
                    task: unknown,
                    token: a.token,
                    result: None,
                },
                Completion {
                    task: c.task.id,
                    token: c.token,
                    result: None,
                },
                Completion {
                    task: a.task.id,
                    token: a.token,
                    result: None,
                },
            ],
        )
        .await
        .expect("complete_many");
    assert_eq!(outcomes.len(), 5, "one outcome per item");
    assert!(outcomes[0].is_ok(), "got {:?}", outcomes[0]);
    assert!(
        matches!(outcomes[1], Err(PortError::LeaseLost { .. })),
        "a stale token: got {:?}",
        outcomes[1]
    );
    assert!(
        matches!(outcomes[2], Err(PortError::NotFound { .. })),
        "an unknown task: got {:?}",
        outcomes[2]
    );
    assert!(outcomes[3].is_ok(), "got {:?}", outcomes[3]);
    assert!(
        matches!(outcomes[4], Err(PortError::LeaseLost { .. })),
        "the same task again: got {:?}",
        outcomes[4]
    );

    let done = get(&fx, &q, a.task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(done.result, Some(json!({ "ok": "a" })));
    assert!(done.finished_at.is_some());
    assert_eq!(done.lease_expires_at, None);
    let plain = get(&fx, &q, c.task.id).await;
    assert_eq!(plain.status, TaskStatus::Succeeded);
    assert_eq!(plain.result, None);
    let still = get(&fx, &q, b.task.id).await;
    assert_eq!(
        still.status,
        TaskStatus::Running,
        "a refused item is untouched"
    );
    fx.queue
        .complete(&q, b.task.id, b.token, None)
        .await
        .expect("its own token still completes it");
    let st = stats(&fx, &q).await;
    assert_eq!((st.succeeded, st.running, st.queued), (3, 0, 0));
}

/// `complete_many` refuses an empty or oversized batch; a result over the payload limit is
/// that item's `Invalid`, and the other items are recorded.
pub async fn complete_many_validates_its_batch(factory: Factory) {
    let limits = StoreLimits {
        max_payload_bytes: 64,
        ..StoreLimits::default()
    };
    let fx = factory(limits).await;
    let q = queue("complete-many-invalid");
    let err = fx
        .queue
        .complete_many(&q, Vec::new())
        .await
        .expect_err("an empty batch");
    assert!(matches!(err, PortError::Invalid { .. }), "got {err:?}");
    let too_many = (0..=crate::COMPLETE_MANY_MAX)
        .map(|_| Completion {
            task: unknown_id(),
            token: LeaseToken::new(1),
            result: None,
        })
        .collect();
    let err = fx
        .queue
        .complete_many(&q, too_many)
        .await
        .expect_err("an oversized batch");
    assert!(matches!(err, PortError::Invalid { .. }), "got {err:?}");

    put(&fx, &q, spec(1)).await;
    put(&fx, &q, spec(2)).await;
    let leases = fx
        .queue
        .reserve_many(std::slice::from_ref(&q), 2, ReserveOptions::new(LONG))
        .await
        .expect("reserve_many");
    assert_eq!(leases.len(), 2);
    let outcomes = fx
        .queue
        .complete_many(
            &q,
            vec![
                Completion {
                    task: leases[0].task.id,
                    token: leases[0].token,
                    result: Some(json!("x".repeat(200))),
                },
                Completion {
                    task: leases[1].task.id,
                    token: leases[1].token,
                    result: Some(json!(1)),
                },
            ],
        )
        .await
        .expect("complete_many");
    assert!(
        matches!(outcomes[0], Err(PortError::Invalid { .. })),
        "got {:?}",
        outcomes[0]
    );
    assert!(outcomes[1].is_ok(), "got {:?}", outcomes[1]);
    assert_eq!(
        get(&fx, &q, leases[0].task.id).await.status,
        TaskStatus::Running
    );
    assert_eq!(get(&fx, &q, leases[1].task.id).await.result, Some(json!(1)));
}

/// A waiting reserver is woken by an enqueue, well before its wait runs out.
pub async fn waiting_reserve_wakes_on_enqueue(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("wake");
    let wait = Duration::from_secs(1);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let store = fx.queue.clone();
    let qs = q.clone();
    let reserver = tokio::spawn(async move {
        let _ = started_tx.send(());
        store
            .reserve(
                std::slice::from_ref(&qs),
                ReserveOptions::new(LONG).wait(wait),
            )
            .await
    });
    started_rx.await.expect("reserver started");
    let t = put(&fx, &q, spec(1)).await;
    let lease = reserver
        .await
        .expect("reserver task")
        .expect("reserve")
        .expect("woken with the task");
    assert_eq!(lease.task.id, t.id);
    let started = lease.task.started_at.expect("started_at");
    assert!(
        started < t.enqueued_at.saturating_add(wait),
        "woken by the enqueue, not by the end of the wait"
    );
}

/// A waiting reserver takes a delayed task as soon as it is due, and gives up empty-handed
/// when nothing comes.
pub async fn waiting_reserve_takes_task_that_becomes_due(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("wait-due");
    let opts = ReserveOptions::new(LONG).wait(ms(300));
    assert!(fx
        .queue
        .reserve(std::slice::from_ref(&q), opts)
        .await
        .expect("reserve")
        .is_none());

    let wait = Duration::from_secs(1);
    let t = put(&fx, &q, spec(1).schedule(Schedule::After(ms(300)))).await;
    let lease = fx
        .queue
        .reserve(
            std::slice::from_ref(&q),
            ReserveOptions::new(LONG).wait(wait),
        )
        .await
        .expect("reserve")
        .expect("the task became due while waiting");
    assert_eq!(lease.task.id, t.id);
    let started = lease.task.started_at.expect("started_at");
    assert!(
        started < t.enqueued_at.saturating_add(wait),
        "taken when due, not at the end of the wait"
    );
}

/// Several queues: the first (in the given order) with a ready task wins, whatever the
/// priorities in later queues.
pub async fn reserve_takes_from_first_queue_with_work(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let (a, b) = (queue("first-a"), queue("first-b"));
    let both = [a.clone(), b.clone()];
    let b1 = put(&fx, &b, spec(1)).await;
    let got = fx
        .queue
        .reserve(&both, ReserveOptions::new(LONG))
        .await
        .expect("reserve")
        .expect("b has work");
    assert_eq!(got.task.id, b1.id);
    assert_eq!(got.task.queue, b);

    let b2 = put(&fx, &b, spec(2).priority(Priority::MAX)).await;
    let a1 = put(&fx, &a, spec(3).priority(Priority::MIN)).await;
    let next = |qs: [QueueName; 2]| {
        let fx = fx.clone();
        async move {
            fx.queue
                .reserve(&qs, ReserveOptions::new(LONG))
                .await
                .expect("reserve")
                .expect("work")
                .task
                .id
        }
    };
    assert_eq!(next(both.clone()).await, a1.id, "the first queue wins");
    assert_eq!(next(both.clone()).await, b2.id);

    let a2 = put(&fx, &a, spec(4)).await;
    let b3 = put(&fx, &b, spec(5)).await;
    assert_eq!(
        next([b.clone(), a.clone()]).await,
        b3.id,
        "order is the caller's"
    );
    assert_eq!(next([b, a]).await, a2.id);
}

/// Payloads, results and error messages over their limits are refused, not truncated.
pub async fn oversized_input_is_invalid(factory: Factory) {
    let fx = factory(StoreLimits {
        max_payload_bytes: 64,
        max_error_bytes: 16,
        ..StoreLimits::default()
    })
    .await;
    let q = queue("sizes");
    let big = json!({ "data": "x".repeat(100) });
    let kind = TaskKind::parse("test.job").expect("kind");
    assert_invalid(
        fx.queue.enqueue(&q, TaskSpec::new(kind, big.clone())).await,
        "payload over the limit",
    );
    assert_eq!(stats(&fx, &q).await.queued, 0, "nothing was added");

    let t = put(&fx, &q, spec(1)).await;
    let lease = take_some(&fx, &q, LONG).await;
    assert_invalid(
        fx.queue.complete(&q, t.id, lease.token, Some(big)).await,
        "result over the limit",
    );
    assert_invalid(
        fx.queue
            .fail(
                &q,
                t.id,
                lease.token,
                failure(&"e".repeat(17), Retry::Backoff),
            )
            .await,
        "error over the limit",
    );
    assert_invalid(
        fx.queue
            .release(&q, t.id, lease.token, &"r".repeat(17))
            .await,
        "release reason over the limit",
    );
    assert_eq!(
        get(&fx, &q, t.id).await.status,
        TaskStatus::Running,
        "unchanged"
    );
    let done = fx
        .queue
        .complete(&q, t.id, lease.token, Some(json!("small")))
        .await
        .expect("a fitting result");
    assert_eq!(done.result, Some(json!("small")));
}

/// Unknown tasks: `get` is `None`, everything else `NotFound`; a task is only found in its
/// own queue.
pub async fn unknown_task(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("known");
    let t = put(&fx, &q, spec(1)).await;
    let id = unknown_id();
    let token = LeaseToken::new(1);
    assert_eq!(fx.queue.get(&q, id).await.expect("get"), None);
    assert_eq!(
        fx.queue.get(&queue("elsewhere"), t.id).await.expect("get"),
        None,
        "tasks belong to their queue"
    );
    assert_not_found(fx.queue.complete(&q, id, token, None).await, "complete");
    assert_not_found(
        fx.queue
            .fail(&q, id, token, failure("x", Retry::Backoff))
            .await,
        "fail",
    );
    assert_not_found(fx.queue.heartbeat(&q, id, token, LONG).await, "heartbeat");
    assert_not_found(fx.queue.release(&q, id, token, "x").await, "release");
    assert_not_found(fx.queue.cancel(&q, id).await, "cancel");
    assert_not_found(fx.queue.requeue(&q, id).await, "requeue");
    assert_not_found(
        fx.queue
            .complete(&queue("nowhere"), t.id, token, None)
            .await,
        "complete in an unknown queue",
    );
}

/// Bad reservation and heartbeat options are `Invalid`.
pub async fn invalid_reserve_options(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("options");
    let qs = std::slice::from_ref(&q);
    assert_invalid(
        fx.queue.reserve(&[], ReserveOptions::new(LONG)).await,
        "no queues",
    );
    assert_invalid(
        fx.queue
            .reserve(qs, ReserveOptions::new(Duration::ZERO))
            .await,
        "zero lease",
    );
    assert_invalid(
        fx.queue
            .reserve(qs, ReserveOptions::new(ReserveOptions::MAX_LEASE + ms(1)))
            .await,
        "lease over a day",
    );
    assert_invalid(
        fx.queue
            .reserve(
                qs,
                ReserveOptions::new(LONG).wait(ReserveOptions::MAX_WAIT + ms(1)),
            )
            .await,
        "wait over five minutes",
    );
    let t = put(&fx, &q, spec(1)).await;
    let lease = take_some(&fx, &q, LONG).await;
    assert_invalid(
        fx.queue
            .heartbeat(&q, t.id, lease.token, Duration::ZERO)
            .await,
        "zero heartbeat lease",
    );
}

/// Finished tasks stay readable for the retention time, then are gone; live tasks stay.
pub async fn finished_tasks_expire_after_retention(factory: Factory) {
    let fx = factory(StoreLimits {
        finished_retention: ms(500),
        ..StoreLimits::default()
    })
    .await;
    let q = queue("retention");
    let done = put(&fx, &q, spec(1)).await;
    let lease = take_some(&fx, &q, LONG).await;
    fx.queue
        .complete(&q, done.id, lease.token, None)
        .await
        .expect("complete");
    let cancelled = put(&fx, &q, spec(2)).await;
    fx.queue.cancel(&q, cancelled.id).await.expect("cancel");
    let live = put(&fx, &q, spec(3)).await;
    assert!(fx.queue.get(&q, done.id).await.expect("get").is_some());

    fx.clock.advance(ms(1_000)).await;
    assert_eq!(fx.queue.get(&q, done.id).await.expect("get"), None);
    assert_eq!(fx.queue.get(&q, cancelled.id).await.expect("get"), None);
    assert_eq!(get(&fx, &q, live.id).await.status, TaskStatus::Queued);
    let s = stats(&fx, &q).await;
    assert_eq!((s.succeeded, s.cancelled, s.queued), (0, 0, 1));
}

/// A task enqueued with a given ID is stored, listed and reserved under exactly that ID; the
/// ID scopes to its queue, and the store still stamps its own `enqueued_at`.
pub async fn given_id_is_kept(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("given-id");
    // Made "long ago" on purpose: the ID's time says nothing about when the store accepted it.
    let id = TaskId::from_parts(Timestamp::from_millis(1_600_000_000_000), 0x5eed_0001);
    let created = put(&fx, &q, spec(1).id(id)).await;
    assert_eq!(created.id, id);
    assert_eq!(created.status, TaskStatus::Queued);
    assert!(
        created.enqueued_at > id.created(),
        "enqueued_at is the store's clock, not the ID's"
    );
    assert_eq!(get(&fx, &q, id).await, created);

    let delayed_id = TaskId::from_parts(Timestamp::from_millis(1_600_000_000_000), 0x5eed_0002);
    let delayed = put(
        &fx,
        &q,
        spec(2)
            .id(delayed_id)
            .schedule(Schedule::After(Duration::from_secs(60))),
    )
    .await;
    assert_eq!(
        (delayed.id, delayed.status),
        (delayed_id, TaskStatus::Scheduled)
    );

    let lease = take_some(&fx, &q, LONG).await;
    assert_eq!(lease.task.id, id, "reserved under its given ID");
    fx.queue
        .complete(&q, id, lease.token, Some(json!("done")))
        .await
        .expect("complete by the given ID");
    assert_eq!(get(&fx, &q, id).await.status, TaskStatus::Succeeded);

    // The same ID in another queue is another task.
    let other = queue("given-id-other");
    let elsewhere = put(&fx, &other, spec(3).id(id)).await;
    assert_eq!(elsewhere.id, id);
    assert_eq!(elsewhere.payload, json!({ "n": 3 }));
    assert_eq!(get(&fx, &q, id).await.status, TaskStatus::Succeeded);
}

/// Enqueueing again with an ID that names a task of the queue — live or finished, until its
/// retention ends — adds nothing and returns that task; the ID check comes before the
/// unique-key check.
pub async fn enqueue_with_given_id_is_idempotent(factory: Factory) {
    let fx = factory(StoreLimits {
        finished_retention: ms(500),
        ..StoreLimits::default()
    })
    .await;
    let q = queue("given-id-again");
    let id = TaskId::from_parts(Timestamp::from_millis(1_700_000_000_000), 0x1d_0001);
    let key = UniqueKey::parse("doc-7").expect("valid key");
    let first = put(&fx, &q, spec(1).id(id).unique_key(key.clone())).await;

    // A retry of the same enqueue (even with another payload or key) is a duplicate.
    for again in [
        spec(2).id(id),
        spec(3)
            .id(id)
            .unique_key(UniqueKey::parse("doc-8").expect("valid key")),
    ] {
        let dup = fx.queue.enqueue(&q, again).await.expect("enqueue");
        let Enqueued::Duplicate(existing) = dup else {
            panic!("expected Duplicate, got {dup:?}");
        };
        assert_eq!(existing.id, id);
        assert_eq!(existing.payload, json!({ "n": 1 }), "nothing was replaced");
    }
    assert_eq!(stats(&fx, &q).await.queued, 1, "nothing was added");

    // A new ID whose unique key is held by a live task: that task, and the new ID unused.
    let fresh_id = TaskId::from_parts(Timestamp::from_millis(1_700_000_000_000), 0x1d_0002);
    let dup = fx
        .queue
        .enqueue(&q, spec(4).id(fresh_id).unique_key(key.clone()))
        .await
        .expect("enqueue");
    assert!(
        matches!(&dup, Enqueued::Duplicate(t) if t.id == first.id),
        "the unique key still deduplicates: {dup:?}"
    );
    assert_eq!(fx.queue.get(&q, fresh_id).await.expect("get"), None);

    // Finished tasks still hold their ID for the retention.
    let lease = take_some(&fx, &q, LONG).await;
    fx.queue
        .complete(&q, id, lease.token, None)
        .await
        .expect("complete");
    let dup = fx.queue.enqueue(&q, spec(5).id(id)).await.expect("enqueue");
    assert!(
        matches!(&dup, Enqueued::Duplicate(t) if t.id == id && t.status == TaskStatus::Succeeded),
        "a finished task still holds its ID: {dup:?}"
    );
    let s = stats(&fx, &q).await;
    assert_eq!((s.queued, s.succeeded), (0, 1), "nothing was added");
    assert!(take(&fx, &q, LONG).await.is_none(), "nothing to run twice");

    // After the retention the ID is free again.
    fx.clock.advance(ms(1_000)).await;
    assert_eq!(fx.queue.get(&q, id).await.expect("get"), None);
    let again = put(&fx, &q, spec(6).id(id)).await;
    assert_eq!((again.id, again.payload), (id, json!({ "n": 6 })));
}

async fn list(fx: &Fixture, q: &QueueName, listing: TaskListing, limit: usize) -> Vec<TaskId> {
    let tasks = fx
        .queue
        .list(q, TaskQuery::new(listing, limit))
        .await
        .expect("list");
    for t in &tasks {
        assert!(
            listing.includes(t.status),
            "{listing:?} listed a {:?} task",
            t.status
        );
        assert_eq!(&t.queue, q, "listed from its own queue");
    }
    tasks.into_iter().map(|t| t.id).collect()
}

/// Live tasks are listed per status: queued in reservation order, scheduled and retrying
/// soonest due first, running soonest lease expiry first; the limit cuts the list; an
/// unknown queue lists nothing.
pub async fn list_live_tasks_per_status(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("list-live");
    let p = |v| Priority::new(v).expect("valid priority");
    let low = put(&fx, &q, spec(1).priority(p(-5))).await.id;
    let normal = put(&fx, &q, spec(2)).await.id;
    let high = put(&fx, &q, spec(3).priority(p(5))).await.id;
    let late = put(
        &fx,
        &q,
        spec(4).schedule(Schedule::After(Duration::from_secs(120))),
    )
    .await
    .id;
    let soon = put(
        &fx,
        &q,
        spec(5).schedule(Schedule::After(Duration::from_secs(60))),
    )
    .await
    .id;
    assert_eq!(
        list(&fx, &q, TaskListing::Queued, 10).await,
        vec![high, normal, low],
        "reservation order"
    );
    assert_eq!(
        list(&fx, &q, TaskListing::Queued, 2).await,
        vec![high, normal]
    );
    assert_eq!(
        list(&fx, &q, TaskListing::Scheduled, 10).await,
        vec![soon, late]
    );
    assert!(list(&fx, &q, TaskListing::Retrying, 10).await.is_empty());
    assert!(list(&fx, &q, TaskListing::Running, 10).await.is_empty());

    let short = take_some(&fx, &q, Duration::from_secs(10)).await;
    let long = take_some(&fx, &q, LONG).await;
    assert_eq!((short.task.id, long.task.id), (high, normal));
    assert_eq!(
        list(&fx, &q, TaskListing::Running, 10).await,
        vec![short.task.id, long.task.id],
        "soonest lease expiry first"
    );
    fx.queue
        .fail(
            &q,
            high,
            short.token,
            failure("again", Retry::After(Duration::from_secs(30))),
        )
        .await
        .expect("fail with retry");
    assert_eq!(list(&fx, &q, TaskListing::Retrying, 10).await, vec![high]);
    assert_eq!(
        list(&fx, &q, TaskListing::Scheduled, 10).await,
        vec![soon, late],
        "a retrying task is not scheduled"
    );
    let retrying = fx
        .queue
        .list(&q, TaskQuery::new(TaskListing::Retrying, 1))
        .await
        .expect("list");
    assert_eq!(retrying[0].last_error.as_deref(), Some("again"));
    assert_eq!(retrying[0].attempts, 1);
    assert_eq!(list(&fx, &q, TaskListing::Queued, 10).await, vec![low]);
    assert!(list(&fx, &q, TaskListing::Finished, 10).await.is_empty());
    assert!(
        list(&fx, &queue("list-nothing-here"), TaskListing::Queued, 10)
            .await
            .is_empty(),
        "an unknown queue lists nothing"
    );
}

/// Finished tasks are listed newest first, per status or all together, only within their
/// retention.
pub async fn list_finished_tasks_newest_first(factory: Factory) {
    let fx = factory(StoreLimits {
        finished_retention: Duration::from_secs(2),
        ..StoreLimits::default()
    })
    .await;
    let q = queue("list-finished");
    let mut finish = Vec::new();
    for n in 0..3 {
        let t = put(&fx, &q, spec(n)).await;
        let l = take_some(&fx, &q, LONG).await;
        assert_eq!(l.task.id, t.id);
        fx.queue
            .fail(
                &q,
                t.id,
                l.token,
                failure(&format!("boom {n}"), Retry::Never),
            )
            .await
            .expect("dead");
        finish.push(t.id);
        fx.clock.advance(ms(20)).await;
    }
    let ok = put(&fx, &q, spec(10)).await;
    let l = take_some(&fx, &q, LONG).await;
    fx.queue
        .complete(&q, ok.id, l.token, None)
        .await
        .expect("complete");
    fx.clock.advance(ms(20)).await;
    let gone = put(&fx, &q, spec(11)).await;
    fx.queue.cancel(&q, gone.id).await.expect("cancel");
    put(&fx, &q, spec(12)).await; // live: never in a finished listing

    let dead = fx
        .queue
        .list(&q, TaskQuery::new(TaskListing::Dead, 10))
        .await
        .expect("list dead");
    let ids: Vec<TaskId> = dead.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![finish[2], finish[1], finish[0]], "newest first");
    assert_eq!(dead[0].last_error.as_deref(), Some("boom 2"));
    assert!(dead
        .iter()
        .all(|t| t.finished_at.is_some() && t.attempts == 1));
    assert_eq!(
        list(&fx, &q, TaskListing::Dead, 2).await,
        vec![finish[2], finish[1]]
    );
    assert_eq!(list(&fx, &q, TaskListing::Succeeded, 10).await, vec![ok.id]);
    assert_eq!(
        list(&fx, &q, TaskListing::Cancelled, 10).await,
        vec![gone.id]
    );
    assert_eq!(
        list(&fx, &q, TaskListing::Finished, 10).await,
        vec![gone.id, ok.id, finish[2], finish[1], finish[0]]
    );
    assert_eq!(
        list(&fx, &q, TaskListing::Finished, 3).await,
        vec![gone.id, ok.id, finish[2]]
    );

    // A requeued dead task leaves the dead listing and is queued again.
    fx.queue.requeue(&q, finish[1]).await.expect("requeue");
    assert_eq!(
        list(&fx, &q, TaskListing::Dead, 10).await,
        vec![finish[2], finish[0]]
    );
    assert!(list(&fx, &q, TaskListing::Queued, 10)
        .await
        .contains(&finish[1]));

    fx.clock.advance(ms(3_000)).await;
    assert!(
        list(&fx, &q, TaskListing::Finished, 10).await.is_empty(),
        "past retention"
    );
    assert!(list(&fx, &q, TaskListing::Dead, 10).await.is_empty());
}

/// Listing first brings the queue up to date: a due task is queued, not scheduled; an expired
/// lease is reclaimed.
pub async fn list_shows_status_after_maintenance(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("list-maintain");
    let delayed = put(&fx, &q, spec(1).schedule(Schedule::After(ms(300)))).await;
    assert_eq!(
        list(&fx, &q, TaskListing::Scheduled, 10).await,
        vec![delayed.id]
    );
    fx.clock.advance(ms(600)).await;
    assert!(list(&fx, &q, TaskListing::Scheduled, 10).await.is_empty());
    assert_eq!(
        list(&fx, &q, TaskListing::Queued, 10).await,
        vec![delayed.id]
    );

    let lease = take_some(&fx, &q, ms(300)).await;
    assert_eq!(
        list(&fx, &q, TaskListing::Running, 10).await,
        vec![lease.task.id]
    );
    fx.clock.advance(ms(600)).await;
    assert!(list(&fx, &q, TaskListing::Running, 10).await.is_empty());
    assert_eq!(
        list(&fx, &q, TaskListing::Queued, 10).await,
        vec![delayed.id]
    );
}

/// The limit must be `1 ..= TaskQuery::MAX_LIMIT`.
pub async fn list_limit_is_validated(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let q = queue("list-limit");
    put(&fx, &q, spec(1)).await;
    for bad in [0, TaskQuery::MAX_LIMIT + 1, usize::MAX] {
        let r = fx
            .queue
            .list(&q, TaskQuery::new(TaskListing::Queued, bad))
            .await;
        match r {
            Err(PortError::Invalid(e)) => {
                assert!(e.to_string().contains("limit"), "names the limit: {e}")
            }
            other => panic!("limit {bad}: expected Invalid, got {other:?}"),
        }
    }
    for listing in TaskListing::ALL {
        let r = fx
            .queue
            .list(&q, TaskQuery::new(listing, TaskQuery::MAX_LIMIT))
            .await
            .expect("the maximum is accepted");
        assert_eq!(r.len(), usize::from(listing == TaskListing::Queued));
    }
}

/// Lists this group's tests for [`crate::conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_queue {
    (#[$attr:meta] $factory:ident) => {
        $crate::__conformance_group!(
            #[$attr]
            $factory,
            conformance_queue,
            queue,
            [
                fifo_within_priority,
                strict_priority_order,
                delayed_task_becomes_ready_when_due,
                expired_lease_is_redelivered,
                stale_token_is_lease_lost,
                heartbeat_extends_lease,
                fail_with_retry_is_redelivered_after_backoff,
                fail_with_explicit_delay,
                max_attempts_sends_to_dead_letter,
                expired_lease_on_last_attempt_is_dead,
                retry_never_is_dead_at_once,
                release_returns_task_without_counting_the_attempt,
                release_with_stale_token_is_lease_lost,
                release_on_last_attempt_does_not_kill_the_task,
                released_task_goes_behind_ready_tasks_of_its_priority,
                release_wakes_a_waiting_reserver,
                cancel_waiting_tasks,
                cancel_running_task_revokes_lease,
                cancel_finished_task_conflicts,
                requeue_dead_task,
                unique_key_deduplicates_live_tasks,
                requeue_refuses_while_another_live_task_holds_the_unique_key,
                stats_count_per_status,
                stats_list_queues_sorted,
                timestamps_on_every_transition,
                complete_is_exactly_once,
                concurrent_reservers_never_share_a_task,
                waiting_reserve_wakes_on_enqueue,
                waiting_reserve_takes_task_that_becomes_due,
                reserve_takes_from_first_queue_with_work,
                oversized_input_is_invalid,
                unknown_task,
                invalid_reserve_options,
                reserve_many_takes_tasks_in_order_each_under_its_own_lease,
                reserve_many_validates_arguments,
                complete_many_records_each_under_its_own_lease,
                complete_many_validates_its_batch,
                finished_tasks_expire_after_retention,
                given_id_is_kept,
                enqueue_with_given_id_is_idempotent,
                list_live_tasks_per_status,
                list_finished_tasks_newest_first,
                list_shows_status_after_maintenance,
                list_limit_is_validated,
            ]
        );
    };
}
