//! Unit tests of the resilience layer, on a paused tokio clock: `mockall` ports where the
//! number of calls to the primary is the point, and memory ports behind a switch (`Flaky`)
//! where the hand-over's end result is.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::json;
use spool_adapter_memory::{Clock, MemoryProgress, MemoryQueue, TokioClock};
use spool_domain::breaker::{BreakerConfig, BreakerState};
use spool_domain::limit::{Algorithm, Cost, Decision, LimitCheck, Policy};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{
    CacheKey, OperationId, PolicyName, ProjectId, QueueName, ScopedKey, StepName, Subject, TaskId,
    TaskKind,
};
use spool_domain::progress::{
    EventId, EventKind, Operation, OperationSpec, ProgressEvent, ProgressUpdate, StepRef, StepSpec,
};
use spool_domain::task::{
    Failure, Lease, LeaseToken, QueueStats, Schedule, Task, TaskSpec, TaskStatus,
};
use spool_domain::Timestamp;
use spool_ports::{
    BackendHealth, CacheStore, Enqueued, EventStream, Health, PortError, ProgressStore, QueueStore,
    RateLimitStore, ReserveOptions, TaskQuery,
};

use super::*;
use crate::services::mocks::{
    unavailable, MockCache, MockHealth, MockLimiter, MockProgress, MockQueue,
};
use crate::telemetry::{Metrics, ServiceMode};
use crate::wiring::Backends;

const OPEN_FOR: Duration = Duration::from_secs(5);

fn options(min_calls: u32, retries: u32) -> ResilienceOptions {
    ResilienceOptions {
        breaker: BreakerConfig {
            failure_rate_threshold: 0.5,
            window: Duration::from_secs(10),
            minimum_calls: min_calls,
            open_duration: OPEN_FOR,
            half_open_max_probes: 1,
        },
        retry: RetryPolicy::new(
            retries,
            Duration::from_millis(10),
            Duration::from_millis(40),
        )
        .unwrap(),
        ..ResilienceOptions::new(StoreLimits::default())
    }
}

#[derive(Default)]
struct Ports {
    cache: Option<MockCache>,
    limiter: Option<MockLimiter>,
    queue: Option<Arc<dyn QueueStore>>,
    progress: Option<Arc<dyn ProgressStore>>,
    health: Option<Arc<dyn Health>>,
}

/// Every port a mock (which panics on any call it does not expect) unless given.
fn wrap(ports: Ports, options: &ResilienceOptions) -> Resilient {
    let backends = Backends {
        name: "redis",
        cache: Arc::new(ports.cache.unwrap_or_default()),
        limiter: Arc::new(ports.limiter.unwrap_or_default()),
        queue: ports
            .queue
            .unwrap_or_else(|| Arc::new(MockQueue::default())),
        progress: ports
            .progress
            .unwrap_or_else(|| Arc::new(MockProgress::default())),
        health: ports
            .health
            .unwrap_or_else(|| Arc::new(MockHealth::default())),
    };
    Resilient::wrap(backends, options, Arc::new(TokioClock::new())).unwrap()
}

fn healthy() -> MockHealth {
    let mut h = MockHealth::new();
    h.expect_check().returning(|| {
        Ok(BackendHealth {
            backend: "redis",
            latency: Duration::from_millis(1),
            version: None,
            used_memory: None,
        })
    });
    h
}

fn key(project: &str, k: &str) -> ScopedKey {
    ScopedKey::new(
        ProjectId::parse(project).unwrap(),
        CacheKey::parse(k).unwrap(),
    )
}

fn project(p: &str) -> ProjectId {
    ProjectId::parse(p).unwrap()
}

fn ttl() -> Duration {
    Duration::from_secs(60)
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

// ---------------------------------------------------------------------------------------
// Guard: retries and the breaker, through the cache wrapper.

#[tokio::test(start_paused = true)]
async fn retries_happen_only_for_transient_errors() {
    let calls = counter();
    let mut cache = MockCache::new();
    let c = Arc::clone(&calls);
    cache.expect_get().times(3).returning(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) < 2 {
            Err(unavailable())
        } else {
            Ok(Some(Bytes::from_static(b"primary")))
        }
    });
    cache
        .expect_set()
        .times(1)
        .returning(|_, _, _| Err(PortError::invalid("cache value", "too large")));
    let r = wrap(
        Ports {
            cache: Some(cache),
            ..Ports::default()
        },
        &options(100, 2),
    );
    let got = r.cache().get(&key("acme", "k")).await.unwrap();
    assert_eq!(
        got.as_deref(),
        Some(&b"primary"[..]),
        "the third attempt answered"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two retries");

    let err = r
        .cache()
        .set(&key("acme", "k"), Bytes::from_static(b"v"), ttl())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PortError::Invalid(_)),
        "passed through: {err:?}"
    );
    // set's `times(1)` proves it was not retried.
    assert_eq!(r.status().mode(Service::Cache), ServiceMode::Primary);
    assert_eq!(
        r.guard().state(),
        BreakerState::Closed,
        "errors that are answers do not count"
    );
}

#[tokio::test(start_paused = true)]
async fn after_the_configured_failures_the_breaker_opens_and_the_primary_is_not_called() {
    let mut cache = MockCache::new();
    cache
        .expect_get()
        .times(1)
        .returning(|_| Err(unavailable()));
    let opts = ResilienceOptions {
        failure_modes: modes(),
        ..options(3, 0)
    };
    let r = wrap(
        Ports {
            cache: Some(cache),
            limiter: Some(failing_limiter(2)),
            ..Ports::default()
        },
        &opts,
    );
    // One failed cache read: the cache serves locally from then on, without asking the
    // primary again, until a recovery.
    assert_eq!(r.cache().get(&key("acme", "k")).await.unwrap(), None);
    r.cache()
        .set(&key("acme", "k"), Bytes::from_static(b"local"), ttl())
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(
            r.cache().get(&key("acme", "k")).await.unwrap().as_deref(),
            Some(&b"local"[..])
        );
    }
    assert_eq!(
        r.guard().state(),
        BreakerState::Closed,
        "one failure of the three needed"
    );

    // Two more failures (the limiter still asks the primary each time) open the breaker...
    let loc = rate_policy("loc", 100);
    for _ in 0..2 {
        assert!(check(&r, &[limit_check(&loc, 1)]).await.allowed);
    }
    assert!(matches!(r.guard().state(), BreakerState::Open { .. }));
    // ...after which no service calls the primary: the mocks allow no more calls.
    for _ in 0..5 {
        assert!(check(&r, &[limit_check(&loc, 1)]).await.allowed);
    }
    let snap = r.status().snapshot();
    assert!(snap.degraded);
    assert_eq!(snap.service(Service::Cache).mode, ServiceMode::Fallback);
    assert_eq!(snap.service(Service::Limiter).mode, ServiceMode::Fallback);
    assert!(matches!(
        snap.service(Service::Cache).breaker,
        Some(BreakerState::Open { .. })
    ));
    assert_eq!(snap.service(Service::Queue).mode, ServiceMode::Primary);
    assert_eq!(
        snap.service(Service::Cache).local_pending,
        1,
        "acme is owed an invalidation"
    );
}

#[tokio::test(start_paused = true)]
async fn a_successful_probe_invalidates_the_touched_projects_flushes_and_switches_back() {
    let mut cache = MockCache::new();
    cache
        .expect_set()
        .times(1)
        .returning(|_, _, _| Err(unavailable()));
    let invalidated = Arc::new(Mutex::new(Vec::<String>::new()));
    let inv = Arc::clone(&invalidated);
    cache
        .expect_invalidate_project()
        .times(4)
        .returning(move |p| {
            inv.lock().push(p.to_string());
            Ok(())
        });
    let gets = counter();
    let g = Arc::clone(&gets);
    cache.expect_get().times(2).returning(move |_| {
        if g.fetch_add(1, Ordering::SeqCst) == 0 {
            Ok(Some(Bytes::from_static(b"fresh")))
        } else {
            Err(unavailable())
        }
    });
    let r = wrap(
        Ports {
            cache: Some(cache),
            health: Some(Arc::new(healthy())),
            ..Ports::default()
        },
        &options(1, 0),
    );
    let c = r.cache();
    // A failed write opens the breaker; it is kept locally, and so is the next one.
    c.set(&key("p1", "k"), Bytes::from_static(b"v1"), ttl())
        .await
        .unwrap();
    c.set(&key("p2", "k"), Bytes::from_static(b"v2"), ttl())
        .await
        .unwrap();
    // More changes during the outage, none reaching the primary.
    c.invalidate_project(&project("p3")).await.unwrap();
    assert!(!c.delete(&key("p4", "k")).await.unwrap());
    assert_eq!(
        c.get(&key("p1", "k")).await.unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(c.touched_projects(), 4);

    // Nothing recovers while the breaker is open (the health mock would answer).
    assert_eq!(r.recover().await, Recovery::default());
    assert_eq!(c.mode(), ServiceMode::Fallback);

    tokio::time::advance(OPEN_FOR).await;
    let rec = r.recover().await;
    assert!(rec.probed && rec.cache, "{rec:?}");
    let got: BTreeSet<String> = invalidated.lock().iter().cloned().collect();
    assert_eq!(
        got,
        ["p1", "p2", "p3", "p4"]
            .map(String::from)
            .into_iter()
            .collect(),
        "every touched project, once"
    );
    assert_eq!(c.mode(), ServiceMode::Primary);
    assert!(!r.status().degraded());
    assert_eq!(r.guard().state(), BreakerState::Closed);

    // Reads go to the primary again: the local value is never served.
    assert_eq!(
        c.get(&key("p1", "k")).await.unwrap().as_deref(),
        Some(&b"fresh"[..])
    );
    // The next outage starts from an empty local cache.
    assert_eq!(c.get(&key("p1", "k")).await.unwrap(), None);
    assert_eq!(c.mode(), ServiceMode::Fallback);
}

#[tokio::test(start_paused = true)]
async fn a_failed_recovery_keeps_the_projects_it_still_owes() {
    let mut cache = MockCache::new();
    cache
        .expect_set()
        .times(1)
        .returning(|_, _, _| Err(unavailable()));
    cache
        .expect_invalidate_project()
        .times(1)
        .returning(|_| Err(unavailable()));
    let r = wrap(
        Ports {
            cache: Some(cache),
            ..Ports::default()
        },
        &options(1, 0),
    );
    let c = r.cache();
    c.set(&key("p1", "k"), Bytes::from_static(b"v"), ttl())
        .await
        .unwrap();
    tokio::time::advance(OPEN_FOR).await;
    assert!(!c.recover().await, "the primary failed the invalidation");
    assert_eq!(c.mode(), ServiceMode::Fallback);
    assert_eq!(c.touched_projects(), 1, "still owed");
    assert_eq!(
        c.get(&key("p1", "k")).await.unwrap().as_deref(),
        Some(&b"v"[..]),
        "still served locally"
    );
}

// ---------------------------------------------------------------------------------------
// Limiter failure modes.

fn rate_policy(name: &str, limit: u64) -> Policy {
    Policy::new(
        PolicyName::parse(name).unwrap(),
        limit,
        Duration::from_secs(60),
        Algorithm::SlidingWindow,
    )
    .unwrap()
}

fn limit_check(policy: &Policy, user_ip: u8) -> LimitCheck {
    LimitCheck::new(
        policy.clone(),
        Subject::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, user_ip))),
    )
}

fn modes() -> HashMap<PolicyName, FailureMode> {
    [
        ("loc", FailureMode::Local),
        ("opn", FailureMode::Open),
        ("cls", FailureMode::Closed),
    ]
    .into_iter()
    .map(|(n, m)| (PolicyName::parse(n).unwrap(), m))
    .collect()
}

fn failing_limiter(times: usize) -> MockLimiter {
    let mut l = MockLimiter::new();
    l.expect_check()
        .times(times)
        .returning(|_, _| Err(unavailable()));
    l
}

async fn check(r: &Resilient, checks: &[LimitCheck]) -> Decision {
    r.limiter().check(checks, Cost::ONE).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn limiter_failure_modes_local_open_closed() {
    let opts = ResilienceOptions {
        failure_modes: modes(),
        ..options(1, 0)
    };
    let r = wrap(
        Ports {
            limiter: Some(failing_limiter(1)),
            ..Ports::default()
        },
        &opts,
    );
    let (loc, opn, cls) = (
        rate_policy("loc", 2),
        rate_policy("opn", 5),
        rate_policy("cls", 3),
    );

    // local: counted in process (the first call also opens the breaker).
    let d = check(&r, &[limit_check(&loc, 1)]).await;
    assert!(d.allowed);
    assert_eq!(d.policies[0].remaining, 1);
    assert!(check(&r, &[limit_check(&loc, 1)]).await.allowed);
    let d = check(&r, &[limit_check(&loc, 1)]).await;
    assert!(!d.allowed, "the local limit of 2 holds");
    assert!(d.retry_after.is_some());
    assert_eq!(r.status().mode(Service::Limiter), ServiceMode::Fallback);

    // open: admitted with the whole limit left.
    for _ in 0..10 {
        let d = check(&r, &[limit_check(&opn, 1)]).await;
        assert!(d.allowed);
        assert_eq!(d.policies[0].remaining, 5);
    }

    // closed: refused until the breaker may close.
    let d = check(&r, &[limit_check(&cls, 1)]).await;
    assert!(!d.allowed);
    assert_eq!(
        d.retry_after,
        Some(OPEN_FOR),
        "the breaker's remaining open time"
    );
    tokio::time::advance(Duration::from_millis(4_500)).await;
    let d = check(&r, &[limit_check(&cls, 1)]).await;
    assert_eq!(
        d.retry_after,
        Some(MIN_CLOSED_RETRY_AFTER),
        "at least one second"
    );

    // closed + local: refused, and the local policy consumed nothing.
    let d = check(&r, &[limit_check(&loc, 2), limit_check(&cls, 2)]).await;
    assert!(!d.allowed);
    assert_eq!(d.policies.len(), 2, "one decision per check, in order");
    assert_eq!(d.policies[0].policy.as_str(), "loc");
    assert_eq!(d.policies[0].remaining, 2, "peeked, not consumed");
    let d = check(&r, &[limit_check(&loc, 2)]).await;
    assert_eq!(
        d.policies[0].remaining, 1,
        "the refused request took nothing"
    );

    // local + open: all-or-nothing across the local ones, open ones always admit.
    let d = check(&r, &[limit_check(&opn, 3), limit_check(&loc, 3)]).await;
    assert!(d.allowed);
    assert_eq!((d.policies[0].remaining, d.policies[1].remaining), (5, 1));
}

#[tokio::test(start_paused = true)]
async fn a_closed_policy_waits_at_least_a_second_while_the_breaker_is_still_closed() {
    let opts = ResilienceOptions {
        failure_modes: modes(),
        ..options(100, 0)
    };
    let r = wrap(
        Ports {
            limiter: Some(failing_limiter(1)),
            ..Ports::default()
        },
        &opts,
    );
    let d = check(&r, &[limit_check(&rate_policy("cls", 3), 1)]).await;
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Some(MIN_CLOSED_RETRY_AFTER));
    assert_eq!(r.guard().state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn invalid_checks_are_refused_before_any_call() {
    let r = wrap(Ports::default(), &options(1, 0));
    let err = r.limiter().check(&[], Cost::ONE).await.unwrap_err();
    assert!(matches!(err, PortError::Invalid(_)), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// Queue routing, with mocks.

fn q(name: &str) -> QueueName {
    QueueName::parse(name).unwrap()
}

fn spec(n: i64) -> TaskSpec {
    TaskSpec::new(TaskKind::parse("job").unwrap(), json!({ "n": n }))
}

fn lease_for(ms: u64) -> ReserveOptions {
    ReserveOptions::new(Duration::from_millis(ms))
}

#[tokio::test(start_paused = true)]
async fn every_enqueue_is_named_first_and_a_retry_reuses_the_name() {
    let ids = Arc::new(Mutex::new(Vec::<TaskId>::new()));
    let seen = Arc::clone(&ids);
    let mut queue = MockQueue::new();
    queue
        .expect_enqueue()
        .times(2)
        .returning(move |queue, spec| {
            let id = spec.id.expect("named before the call");
            let mut seen = seen.lock();
            seen.push(id);
            if seen.len() == 1 {
                Err(unavailable())
            } else {
                Ok(Enqueued::Created(Task::new(
                    id,
                    queue.clone(),
                    spec,
                    Timestamp::from_millis(1),
                )))
            }
        });
    let r = wrap(
        Ports {
            queue: Some(Arc::new(queue)),
            ..Ports::default()
        },
        &options(100, 1),
    );
    let t = r.queue().enqueue(&q("jobs"), spec(1)).await.unwrap();
    let ids = ids.lock().clone();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1], "the retry is idempotent");
    assert_eq!(t.task().id, ids[0]);
    assert_eq!(r.queue().local_tasks(), 0);
}

#[tokio::test(start_paused = true)]
async fn queue_calls_route_by_where_the_task_lives() {
    let mut queue = MockQueue::new();
    queue
        .expect_enqueue()
        .times(1)
        .returning(|_, _| Err(unavailable()));
    let primary_task = Task::new(
        TaskId::from_parts(Timestamp::from_millis(5), 5),
        q("jobs"),
        spec(9),
        Timestamp::from_millis(5),
    );
    let pt = primary_task.clone();
    queue
        .expect_complete()
        .times(1)
        .withf(move |_, id, _, _| *id == pt.id)
        .returning(move |_, _, _, _| Ok(primary_task.clone()));
    let r = wrap(
        Ports {
            queue: Some(Arc::new(queue)),
            ..Ports::default()
        },
        &options(1, 0),
    );
    let rq = r.queue();
    let jobs = q("jobs");
    let accepted = rq.enqueue(&jobs, spec(1)).await.unwrap();
    let Enqueued::Created(local) = accepted else {
        panic!("expected a created task");
    };
    assert_eq!(rq.local_tasks(), 1);
    assert_eq!(r.status().mode(Service::Queue), ServiceMode::Fallback);

    // Served by the local queue first: the mock has no `reserve`, `heartbeat` or `get`.
    let lease = rq
        .reserve(std::slice::from_ref(&jobs), lease_for(1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.task.id, local.id);
    rq.heartbeat(&jobs, local.id, lease.token, Duration::from_secs(1))
        .await
        .unwrap();
    let done = rq
        .complete(&jobs, local.id, lease.token, None)
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(
        rq.get(&jobs, local.id).await.unwrap().unwrap().status,
        TaskStatus::Succeeded,
        "the final state stays readable locally"
    );
    let again = rq
        .complete(&jobs, local.id, lease.token, None)
        .await
        .unwrap_err();
    assert!(
        matches!(again, PortError::LeaseLost { .. }),
        "fenced: {again:?}"
    );

    // Any other task is the primary's: refused fast while the breaker is open...
    let other = TaskId::from_parts(Timestamp::from_millis(5), 5);
    let err = rq
        .complete(&jobs, other, LeaseToken::new(1), None)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    // ...and sent there once it admits calls.
    tokio::time::advance(OPEN_FOR).await;
    let t = rq
        .complete(&jobs, other, LeaseToken::new(1), None)
        .await
        .unwrap();
    assert_eq!(t.id, other);
}

// ---------------------------------------------------------------------------------------
// Memory ports behind a switch.

#[derive(Default)]
struct Switch {
    down: AtomicBool,
    /// Fail this many next calls before running them.
    fail_next: AtomicUsize,
    /// Run this many next calls, then report them failed (a lost reply).
    lose_next: AtomicUsize,
    calls: AtomicUsize,
}

impl Switch {
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn before(&self) -> Result<(), PortError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        let take = |n: &AtomicUsize| {
            n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                .is_ok()
        };
        if take(&self.fail_next) {
            return Err(unavailable());
        }
        Ok(())
    }

    fn after<T>(&self, r: Result<T, PortError>) -> Result<T, PortError> {
        if self
            .lose_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok()
        {
            return Err(unavailable());
        }
        r
    }
}

struct FlakyQueue {
    inner: Arc<MemoryQueue>,
    sw: Arc<Switch>,
}

#[async_trait]
impl QueueStore for FlakyQueue {
    async fn enqueue(&self, queue: &QueueName, spec: TaskSpec) -> Result<Enqueued, PortError> {
        self.sw.before()?;
        let r = self.inner.enqueue(queue, spec).await;
        self.sw.after(r)
    }
    async fn reserve(
        &self,
        queues: &[QueueName],
        opts: ReserveOptions,
    ) -> Result<Option<Lease>, PortError> {
        self.sw.before()?;
        self.inner.reserve(queues, opts).await
    }
    async fn heartbeat(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        lease: Duration,
    ) -> Result<Lease, PortError> {
        self.sw.before()?;
        self.inner.heartbeat(queue, task, token, lease).await
    }
    async fn complete(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        result: Option<serde_json::Value>,
    ) -> Result<Task, PortError> {
        self.sw.before()?;
        self.inner.complete(queue, task, token, result).await
    }
    async fn fail(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        failure: Failure,
    ) -> Result<Task, PortError> {
        self.sw.before()?;
        self.inner.fail(queue, task, token, failure).await
    }
    async fn release(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        reason: &str,
    ) -> Result<Task, PortError> {
        self.sw.before()?;
        self.inner.release(queue, task, token, reason).await
    }
    async fn cancel(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError> {
        self.sw.before()?;
        self.inner.cancel(queue, task).await
    }
    async fn requeue(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError> {
        self.sw.before()?;
        self.inner.requeue(queue, task).await
    }
    async fn get(&self, queue: &QueueName, task: TaskId) -> Result<Option<Task>, PortError> {
        self.sw.before()?;
        self.inner.get(queue, task).await
    }
    async fn stats(&self, queues: &[QueueName]) -> Result<Vec<QueueStats>, PortError> {
        self.sw.before()?;
        self.inner.stats(queues).await
    }
    async fn list(&self, queue: &QueueName, query: TaskQuery) -> Result<Vec<Task>, PortError> {
        self.sw.before()?;
        self.inner.list(queue, query).await
    }
}

struct FlakyProgress {
    inner: Arc<MemoryProgress>,
    sw: Arc<Switch>,
}

#[async_trait]
impl ProgressStore for FlakyProgress {
    async fn start(&self, spec: OperationSpec) -> Result<ProgressEvent, PortError> {
        self.sw.before()?;
        self.inner.start(spec).await
    }
    async fn update(
        &self,
        id: &OperationId,
        update: ProgressUpdate,
    ) -> Result<ProgressEvent, PortError> {
        self.sw.before()?;
        self.inner.update(id, update).await
    }
    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, PortError> {
        self.sw.before()?;
        self.inner.get(id).await
    }
    async fn events_after(
        &self,
        id: &OperationId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<ProgressEvent>, PortError> {
        self.sw.before()?;
        self.inner.events_after(id, after, limit).await
    }
    async fn subscribe(
        &self,
        id: &OperationId,
        after: Option<EventId>,
    ) -> Result<EventStream, PortError> {
        self.sw.before()?;
        self.inner.subscribe(id, after).await
    }
}

struct FlakyHealth {
    sw: Arc<Switch>,
}

#[async_trait]
impl Health for FlakyHealth {
    async fn check(&self) -> Result<BackendHealth, PortError> {
        if self.sw.down.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        Ok(BackendHealth {
            backend: "redis",
            latency: Duration::ZERO,
            version: None,
            used_memory: None,
        })
    }
}

struct Rig {
    r: Resilient,
    sw: Arc<Switch>,
    queue: Arc<MemoryQueue>,
    progress: Arc<MemoryProgress>,
}

fn rig() -> Rig {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let limits = StoreLimits::default();
    let sw = Arc::new(Switch::default());
    let queue = Arc::new(MemoryQueue::new(&limits, Arc::clone(&clock)));
    let progress = Arc::new(MemoryProgress::new(&limits, Arc::clone(&clock)));
    let r = wrap(
        Ports {
            queue: Some(Arc::new(FlakyQueue {
                inner: Arc::clone(&queue),
                sw: Arc::clone(&sw),
            })),
            progress: Some(Arc::new(FlakyProgress {
                inner: Arc::clone(&progress),
                sw: Arc::clone(&sw),
            })),
            health: Some(Arc::new(FlakyHealth {
                sw: Arc::clone(&sw),
            })),
            ..Ports::default()
        },
        &options(1, 0),
    );
    Rig {
        r,
        sw,
        queue,
        progress,
    }
}

impl Rig {
    /// The backend comes back and the breaker's open time passes.
    async fn back_up(&self) {
        self.sw.set_down(false);
        tokio::time::advance(OPEN_FOR).await;
    }
}

async fn put(rq: &ResilientQueue, queue: &QueueName, spec: TaskSpec) -> Task {
    match rq.enqueue(queue, spec).await.unwrap() {
        Enqueued::Created(t) => t,
        Enqueued::Duplicate(t) => panic!("unexpected duplicate {}", t.id),
    }
}

#[tokio::test(start_paused = true)]
async fn the_hand_over_moves_waiting_local_tasks_once_and_running_ones_finish_locally() {
    let rig = rig();
    let rq = rig.r.queue();
    let jobs = q("jobs");
    rig.sw.set_down(true);
    let running = put(rq, &jobs, spec(1)).await;
    let later = put(
        rq,
        &jobs,
        spec(2).schedule(Schedule::After(Duration::from_secs(60))),
    )
    .await;
    let ready = put(rq, &jobs, spec(3)).await;
    assert_eq!(rq.local_tasks(), 3);
    let lease = rq
        .reserve(std::slice::from_ref(&jobs), lease_for(600_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.task.id, running.id, "FIFO on the local queue");

    // While the backend is down nothing moves.
    assert_eq!(rig.r.recover().await, Recovery::default());
    assert!(rig.r.status().degraded());

    rig.back_up().await;
    let rec = rig.r.recover().await;
    assert!(rec.probed);
    assert_eq!(
        rec.queue,
        Some(HandoverReport {
            handed_over: 2,
            waiting: 0,
            running: 1
        })
    );
    let snap = rig.r.status().snapshot();
    assert_eq!(snap.service(Service::Queue).mode, ServiceMode::Primary);
    assert!(!snap.degraded, "{snap:?}");

    // On the primary, under the same IDs, due as before.
    let moved_ready = rig.queue.get(&jobs, ready.id).await.unwrap().unwrap();
    assert_eq!(moved_ready.status, TaskStatus::Queued);
    assert_eq!(moved_ready.payload, json!({ "n": 3 }));
    let moved_later = rig.queue.get(&jobs, later.id).await.unwrap().unwrap();
    assert_eq!(moved_later.status, TaskStatus::Scheduled);
    assert_eq!(moved_later.scheduled_for, later.scheduled_for);
    assert_eq!(
        rig.queue.get(&jobs, running.id).await.unwrap(),
        None,
        "still local"
    );
    // Reads follow: the wrapper answers from the primary (same record).
    assert_eq!(rq.get(&jobs, ready.id).await.unwrap().unwrap(), moved_ready);

    // Another pass adds nothing.
    let again = rig.r.recover().await;
    assert_eq!(again.queue.map(|h| h.handed_over), Some(0));
    let stats = rig.queue.stats(std::slice::from_ref(&jobs)).await.unwrap();
    assert_eq!((stats[0].queued, stats[0].scheduled), (1, 1));

    // The running local task finishes locally, once.
    let done = rq
        .complete(&jobs, running.id, lease.token, Some(json!("ok")))
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(
        rq.get(&jobs, running.id).await.unwrap().unwrap().status,
        TaskStatus::Succeeded
    );

    // Workers now get the handed-over task from the primary, exactly once.
    let l = rq
        .reserve(std::slice::from_ref(&jobs), lease_for(1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l.task.id, ready.id);
    rq.complete(&jobs, ready.id, l.token, None).await.unwrap();
    assert!(rq
        .reserve(std::slice::from_ref(&jobs), lease_for(1_000))
        .await
        .unwrap()
        .is_none());
    let stats = rq.stats(std::slice::from_ref(&jobs)).await.unwrap();
    assert_eq!(
        (stats[0].queued, stats[0].scheduled, stats[0].succeeded),
        (0, 1, 2),
        "one succeeded on each store"
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_hand_over_resumes_without_loss_or_duplicates() {
    let rig = rig();
    let rq = rig.r.queue();
    let jobs = q("jobs");
    rig.sw.set_down(true);
    let a = put(rq, &jobs, spec(1)).await;
    let b = put(rq, &jobs, spec(2)).await;

    rig.back_up().await;
    // The first enqueue of the hand-over reaches the primary but its reply is lost.
    rig.sw.lose_next.store(1, Ordering::SeqCst);
    let rec = rig.r.recover().await;
    assert!(rec.probed);
    assert_eq!(rec.queue, None, "the pass was interrupted");
    // The task in flight is neither lost nor shown as cancelled.
    let seen = rq.get(&jobs, a.id).await.unwrap().unwrap();
    assert_eq!(seen.status, TaskStatus::Queued, "{seen:?}");
    assert!(rig.r.status().degraded());

    tokio::time::advance(OPEN_FOR).await;
    let rec = rig.r.recover().await;
    assert_eq!(rec.queue.map(|h| h.handed_over), Some(2), "{rec:?}");
    let stats = rig.queue.stats(std::slice::from_ref(&jobs)).await.unwrap();
    assert_eq!(stats[0].queued, 2, "each task once");
    for t in [&a, &b] {
        let p = rig.queue.get(&jobs, t.id).await.unwrap().unwrap();
        assert_eq!((p.status, &p.payload), (TaskStatus::Queued, &t.payload));
    }
    assert!(!rig.r.status().degraded());
}

#[tokio::test(start_paused = true)]
async fn a_local_retry_is_handed_over_with_the_attempts_it_has_left() {
    let rig = rig();
    let rq = rig.r.queue();
    let jobs = q("jobs");
    rig.sw.set_down(true);
    let t = put(rq, &jobs, spec(1)).await;
    let lease = rq
        .reserve(std::slice::from_ref(&jobs), lease_for(1_000))
        .await
        .unwrap()
        .unwrap();
    let failed = rq
        .fail(
            &jobs,
            t.id,
            lease.token,
            Failure {
                error: "boom".into(),
                retry: spool_domain::task::Retry::After(Duration::from_secs(30)),
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);

    rig.back_up().await;
    rig.r.recover().await;
    let moved = rig.queue.get(&jobs, t.id).await.unwrap().unwrap();
    assert_eq!(moved.status, TaskStatus::Scheduled);
    assert_eq!(
        moved.scheduled_for, failed.scheduled_for,
        "due when its retry was"
    );
    assert_eq!(
        moved.max_attempts,
        t.max_attempts - 1,
        "the spent attempt counts"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_local_task_keeps_it_local_and_cancelled() {
    let rig = rig();
    let rq = rig.r.queue();
    let jobs = q("jobs");
    rig.sw.set_down(true);
    let t = put(rq, &jobs, spec(1)).await;
    let c = rq.cancel(&jobs, t.id).await.unwrap();
    assert_eq!(c.status, TaskStatus::Cancelled);
    rig.back_up().await;
    let rec = rig.r.recover().await;
    assert_eq!(rec.queue.map(|h| h.handed_over), Some(0));
    assert_eq!(rig.queue.get(&jobs, t.id).await.unwrap(), None);
    assert_eq!(
        rq.get(&jobs, t.id).await.unwrap().unwrap().status,
        TaskStatus::Cancelled
    );
}

// ---------------------------------------------------------------------------------------
// Progress.

fn plan(id: Option<&str>) -> OperationSpec {
    OperationSpec {
        id: id.map(|i| OperationId::parse(i).unwrap()),
        correlation_id: None,
        steps: ["fetch", "embed", "store"]
            .iter()
            .map(|n| StepSpec {
                name: StepName::parse(*n).unwrap(),
                weight: 1,
            })
            .collect(),
        message: Some("starting".into()),
    }
}

fn step(i: usize, fraction: f64) -> ProgressUpdate {
    ProgressUpdate {
        step: Some(StepRef::Index(i)),
        fraction: Some(fraction),
        ..ProgressUpdate::default()
    }
}

async fn next(stream: &mut EventStream) -> ProgressEvent {
    // A hang guard, not a synchronisation: on the paused clock it only fires when nothing
    // else can run.
    tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("an event")
        .expect("stream open")
        .expect("no error")
}

#[tokio::test(start_paused = true)]
async fn operations_started_during_an_outage_continue_on_the_primary_with_their_state() {
    let rig = rig();
    let rp = rig.r.progress();
    // One operation from before the outage lives on the primary.
    let old = rp.start(plan(Some("before"))).await.unwrap();
    rig.sw.set_down(true);

    let started = rp.start(plan(None)).await.unwrap();
    let id = started.operation.id.clone();
    assert_eq!(rp.local_operations(), 1);
    rp.update(&id, step(1, 0.5)).await.unwrap();
    rp.update(&id, step(0, 0.25)).await.unwrap();
    let mut sub = rp.subscribe(&id, None).await.unwrap();
    let first = next(&mut sub).await;
    assert_eq!(first.kind, EventKind::Snapshot);
    // The primary's own operation cannot be updated while it is down.
    let err = rp
        .update(&old.operation.id, step(0, 1.0))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(
        rig.r.status().mode(Service::Progress),
        ServiceMode::Fallback
    );

    rig.back_up().await;
    let rec = rig.r.recover().await;
    assert_eq!(rec.progress.map(|p| p.handed_over), Some(1), "{rec:?}");
    assert_eq!(rp.local_operations(), 0);
    let moved = rig.progress.get(&id).await.unwrap().unwrap();
    let fractions: Vec<f64> = moved.steps.iter().map(|s| s.fraction).collect();
    assert_eq!(fractions, vec![0.25, 0.5, 0.0], "every fraction exactly");
    assert_eq!(moved.message.as_deref(), Some("starting"));
    assert!(!rig.r.status().degraded());

    // From now on it is the primary's...
    rp.update(&id, step(2, 1.0)).await.unwrap();
    let on_primary = rig.progress.get(&id).await.unwrap().unwrap();
    assert_eq!(on_primary.steps[2].fraction, 1.0);
    // ...and the local subscription followed it there.
    let mut saw = false;
    for _ in 0..10 {
        let ev = next(&mut sub).await;
        if ev.operation.steps[2].fraction == 1.0 {
            saw = true;
            break;
        }
    }
    assert!(saw, "the subscriber saw the update made on the primary");
}

#[tokio::test(start_paused = true)]
async fn a_start_retried_after_a_lost_reply_returns_the_first_event() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let store = Arc::new(MemoryProgress::new(&StoreLimits::default(), clock));
    let sw = Arc::new(Switch::default());
    // The first start reaches the primary but its reply is lost; the guard retries once.
    sw.lose_next.store(1, Ordering::SeqCst);
    let r = wrap(
        Ports {
            progress: Some(Arc::new(FlakyProgress {
                inner: Arc::clone(&store),
                sw: Arc::clone(&sw),
            })),
            ..Ports::default()
        },
        &options(100, 1),
    );
    let ev = r.progress().start(plan(None)).await.unwrap();
    assert_eq!(ev.kind, EventKind::Snapshot);
    assert_eq!(r.progress().local_operations(), 0, "not started locally");
    let stored = store.get(&ev.operation.id).await.unwrap().unwrap();
    assert_eq!(
        stored, ev.operation,
        "the answer is the primary's first event"
    );
}

// ---------------------------------------------------------------------------------------
// Status and metrics.

#[tokio::test(start_paused = true)]
async fn the_status_is_recorded_into_attached_metrics() {
    let mut cache = MockCache::new();
    cache
        .expect_get()
        .times(1)
        .returning(|_| Err(unavailable()));
    let r = wrap(
        Ports {
            cache: Some(cache),
            ..Ports::default()
        },
        &options(1, 0),
    );
    let metrics = Metrics::new();
    r.status().attach_metrics(&metrics);
    assert_eq!(metrics.services()["cache"].mode, ServiceMode::Primary);
    assert_eq!(metrics.services()["cache"].breaker, Some("closed"));

    r.cache().get(&key("acme", "k")).await.unwrap();
    let services = metrics.services();
    assert_eq!(services["cache"].mode, ServiceMode::Fallback);
    assert_eq!(services["queue"].mode, ServiceMode::Primary);
    assert_eq!(
        services["queue"].breaker,
        Some("open"),
        "one breaker for the backend"
    );
    let text = metrics.render().unwrap();
    assert!(
        text.contains(r#"spool_degraded{service="cache"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"spool_breaker_state{breaker="cache"} 2"#),
        "{text}"
    );

    tokio::time::advance(OPEN_FOR).await;
    r.status().publish();
    assert_eq!(metrics.services()["cache"].breaker, Some("half_open"));
}

#[test]
fn options_follow_the_configuration() {
    let config = crate::config::Config::load_from(
        None,
        &crate::config::EnvLayer::from_pairs([
            ("SPOOL_RATE_LIMITS", "ip:100/60s,user:1000/1h"),
            ("SPOOL_RESILIENCE__BREAKER__MIN_CALLS", "4"),
            ("SPOOL_RESILIENCE__RETRY__MAX_RETRIES", "0"),
        ]),
    )
    .unwrap();
    let settings = config.validate().unwrap();
    let o = ResilienceOptions::from_config(&config.resilience, &settings).unwrap();
    assert_eq!(o.breaker.minimum_calls, 4);
    assert_eq!(o.retry.max_retries, 0);
    assert_eq!(o.failure_modes.len(), 2);
    assert!(o.failure_modes.values().all(|m| *m == FailureMode::Local));
    assert_eq!(o.limits, settings.limits);
}

#[tokio::test(start_paused = true)]
async fn a_batched_reserve_takes_local_tasks_first_then_the_primary_or_the_fallback() {
    let rig = rig();
    let rq = rig.r.queue();
    let jobs = q("batch");
    let queues = std::slice::from_ref(&jobs);
    // Up: three tasks on the primary come back from one batched call.
    for n in 0..3 {
        put(rq, &jobs, spec(n)).await;
    }
    let leases = rq
        .reserve_many(queues, 10, lease_for(60_000))
        .await
        .unwrap();
    assert_eq!(leases.len(), 3);
    assert_eq!(rq.local_tasks(), 0);
    let ids: std::collections::BTreeSet<_> = leases.iter().map(|l| l.task.id).collect();
    assert_eq!(ids.len(), 3, "three tasks, each under its own lease");

    // Down: tasks accepted locally are served locally, in batches too.
    rig.sw.set_down(true);
    for n in 3..5 {
        put(rq, &jobs, spec(n)).await;
    }
    let local = rq
        .reserve_many(queues, 10, lease_for(60_000))
        .await
        .unwrap();
    assert_eq!(local.len(), 2);
    assert!(rig.r.status().degraded());
    // Nothing ready anywhere while down: an empty batch, not an error.
    let none = rq
        .reserve_many(queues, 10, lease_for(60_000))
        .await
        .unwrap();
    assert!(none.is_empty());
    // Bad arguments are refused before any call.
    let e = rq
        .reserve_many(queues, 0, lease_for(60_000))
        .await
        .unwrap_err();
    assert!(matches!(e, PortError::Invalid { .. }), "{e:?}");
}
