//! Network faults between the Redis adapter and Redis, injected by
//! [`FaultProxy`](spool_tests::fault_proxy::FaultProxy) in front of the shared test server.
//!
//! The adapter runs with a short command timeout (300 ms). Under every fault, every call must
//! come back as `Unavailable` (transient); a generous outer timeout fails the test if a call
//! hangs instead. Once the proxy passes traffic again the *same* adapter must work again
//! (fred reconnects by itself). The breaker tests drive the app's [`Guard`] (the domain's
//! circuit breaker on a real clock) through closed → open → half-open → closed and print the
//! timings quoted in `docs/RELIABILITY.md`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use spool_adapter_memory::TokioClock;
use spool_adapter_redis::testing;
use spool_adapter_redis::{ReconnectSettings, RedisBackend, RedisConfig};
use spool_app::resilience::{CallError, Guard, RetryPolicy};
use spool_domain::breaker::{BreakerConfig, BreakerState};
use spool_domain::limit::{Algorithm, Cost, LimitCheck, Policy};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{
    CacheKey, OperationId, PolicyName, ProjectId, QueueName, ScopedKey, StepName, Subject,
    TaskKind, UserId,
};
use spool_domain::progress::{OperationSpec, StepSpec};
use spool_domain::task::TaskSpec;
use spool_ports::{
    CacheStore, Health, PortError, ProgressStore, QueueStore, RateLimitStore, ReserveOptions,
};
use spool_tests::fault_proxy::{Fault, FaultProxy};

/// The adapter's command timeout in these tests.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(300);
/// A call that takes longer than this has hung: the test fails.
const HANG: Duration = Duration::from_secs(5);
/// How many times recovery is retried (every 100 ms) before the test fails.
const RECOVERY_TRIES: usize = 100;

/// The shared test server's address.
fn upstream() -> SocketAddr {
    let url = testing::redis_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("cannot resolve the test redis at {host_port}"))
}

async fn proxied() -> (FaultProxy, RedisBackend) {
    let proxy = FaultProxy::start(upstream()).await.unwrap();
    let mut config = RedisConfig::new(proxy.url_for(&testing::redis_url()))
        .prefix(testing::unique_prefix())
        .limits(StoreLimits::default());
    config.pool_size = 2;
    config.command_timeout = COMMAND_TIMEOUT;
    config.connect_timeout = COMMAND_TIMEOUT;
    config.reconnect = ReconnectSettings {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_attempts: 0,
    };
    let backend = RedisBackend::connect(config).await.unwrap();
    (proxy, backend)
}

fn key(k: &str) -> ScopedKey {
    ScopedKey::new(
        ProjectId::parse("acme").unwrap(),
        CacheKey::parse(k).unwrap(),
    )
}

fn check() -> LimitCheck {
    LimitCheck::new(
        Policy::new(
            PolicyName::parse("per-hour").unwrap(),
            1000,
            Duration::from_secs(3600),
            Algorithm::SlidingWindow,
        )
        .unwrap(),
        Subject::User(UserId::parse("u1").unwrap()),
    )
}

fn op(id: &str) -> OperationSpec {
    OperationSpec {
        id: Some(OperationId::parse(id).unwrap()),
        correlation_id: None,
        steps: vec![StepSpec {
            name: StepName::parse("only").unwrap(),
            weight: 1,
        }],
        message: None,
    }
}

/// How many ports [`one_call`] exercises.
const CALLS: usize = 7;

/// The `i`-th call of one per port, named; `Ok(())` when it worked.
async fn one_call(b: &RedisBackend, i: usize) -> (&'static str, Result<(), PortError>) {
    let q = QueueName::parse("faults").unwrap();
    match i {
        0 => (
            "cache.set",
            b.cache()
                .set(&key("k"), Bytes::from_static(b"v"), Duration::from_secs(60))
                .await,
        ),
        1 => ("cache.get", b.cache().get(&key("k")).await.map(drop)),
        2 => (
            "limiter.check",
            b.rate_limiter()
                .check(&[check()], Cost::ONE)
                .await
                .map(drop),
        ),
        3 => {
            let task = TaskSpec::new(TaskKind::parse("f.job").unwrap(), json!({}));
            ("queue.enqueue", b.queue().enqueue(&q, task).await.map(drop))
        }
        4 => (
            "queue.reserve",
            b.queue()
                .reserve(
                    std::slice::from_ref(&q),
                    ReserveOptions::new(Duration::from_secs(30)),
                )
                .await
                .map(drop),
        ),
        5 => (
            "progress.start",
            b.progress()
                .start(op(&format!("op-{:08x}", rand::random::<u32>())))
                .await
                .map(drop),
        ),
        _ => ("health.check", b.health().check().await.map(drop)),
    }
}

/// One call of every port, in order.
async fn every_port(b: &RedisBackend) -> Vec<(&'static str, Result<(), PortError>)> {
    let mut out = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        out.push(one_call(b, i).await);
    }
    out
}

/// One call of every port under a fault: each must fail as `Unavailable`, none may hang.
/// Returns the slowest call's duration.
async fn all_unavailable(b: &RedisBackend, fault: Fault) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..CALLS {
        let started = Instant::now();
        let (name, result) = tokio::time::timeout(HANG, one_call(b, i))
            .await
            .unwrap_or_else(|_| panic!("call {i} hung for {HANG:?} under {fault:?}"));
        slowest = slowest.max(started.elapsed());
        match result {
            Err(PortError::Unavailable { .. }) => {}
            other => panic!("{name} under {fault:?}: expected Unavailable, got {other:?}"),
        }
    }
    slowest
}

/// Waits (bounded: an external system reconnecting) until every port works again through
/// the same adapter; returns how long it took.
async fn recovers(b: &RedisBackend, after: Fault) -> Duration {
    let started = Instant::now();
    for _ in 0..RECOVERY_TRIES {
        let results = tokio::time::timeout(HANG, every_port(b))
            .await
            .unwrap_or_else(|_| panic!("a call hung after {after:?} ended"));
        if results.iter().all(|(_, r)| r.is_ok()) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = every_port(b).await;
    panic!("the adapter did not recover after {after:?}: {last:?}");
}

fn assert_all_ok(results: &[(&'static str, Result<(), PortError>)], when: &str) {
    for (name, r) in results {
        assert!(r.is_ok(), "{name} {when}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_latency_below_the_timeout_succeeds_above_it_is_unavailable() {
    let (proxy, b) = proxied().await;
    assert_all_ok(&every_port(&b).await, "before any fault");

    proxy.set(Fault::Latency(Duration::from_millis(60)));
    let started = Instant::now();
    assert_all_ok(&every_port(&b).await, "with 60 ms latency");
    eprintln!(
        "fault figures: 7 calls with 60 ms added latency (timeout {COMMAND_TIMEOUT:?}) took {:?}",
        started.elapsed()
    );

    proxy.set(Fault::Latency(Duration::from_millis(900)));
    let slowest = all_unavailable(&b, Fault::Latency(Duration::from_millis(900))).await;
    eprintln!(
        "fault figures: latency 900 ms > timeout {COMMAND_TIMEOUT:?}: every call Unavailable, slowest {slowest:?}"
    );

    proxy.set(Fault::Pass);
    let took = recovers(&b, Fault::Latency(Duration::from_millis(900))).await;
    eprintln!("fault figures: recovered {took:?} after the latency ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_black_hole_every_call_is_unavailable_then_the_same_adapter_recovers() {
    let (proxy, b) = proxied().await;
    assert_all_ok(&every_port(&b).await, "before any fault");

    proxy.set(Fault::BlackHole);
    let slowest = all_unavailable(&b, Fault::BlackHole).await;
    // A reservation that would wait is bounded too: its wait plus a timeout.
    let q = QueueName::parse("faults").unwrap();
    let waited = Instant::now();
    let r = tokio::time::timeout(
        HANG,
        b.queue().reserve(
            std::slice::from_ref(&q),
            ReserveOptions::new(Duration::from_secs(30)).wait(Duration::from_millis(500)),
        ),
    )
    .await
    .expect("a waiting reserve hung in a black hole");
    assert!(
        matches!(r, Err(PortError::Unavailable { .. })),
        "waiting reserve in a black hole: {r:?}"
    );
    eprintln!(
        "fault figures: black hole, timeout {COMMAND_TIMEOUT:?}: every call Unavailable, slowest {slowest:?}; a reserve waiting 500 ms gave up after {:?}",
        waited.elapsed()
    );

    proxy.set(Fault::Pass);
    let took = recovers(&b, Fault::BlackHole).await;
    eprintln!("fault figures: recovered {took:?} after the black hole ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_cut_and_reset_connections_then_the_same_adapter_reconnects() {
    let (proxy, b) = proxied().await;
    assert_all_ok(&every_port(&b).await, "before any fault");
    for fault in [Fault::Cut, Fault::Reset] {
        let accepted = proxy.connections_accepted();
        proxy.set(fault);
        let slowest = all_unavailable(&b, fault).await;
        proxy.set(Fault::Pass);
        let took = recovers(&b, fault).await;
        assert!(
            proxy.connections_accepted() > accepted,
            "the adapter reconnected after {fault:?}"
        );
        eprintln!(
            "fault figures: {fault:?}: every call Unavailable (slowest {slowest:?}); recovered {took:?} after it ended, {} new connections",
            proxy.connections_accepted() - accepted
        );
    }
}

const BREAKER: BreakerConfig = BreakerConfig {
    failure_rate_threshold: 0.5,
    window: Duration::from_secs(10),
    minimum_calls: 4,
    open_duration: Duration::from_secs(1),
    half_open_max_probes: 1,
};

/// One guarded call to the backend (a cache read); `calls` counts the calls that reached it.
async fn guarded(
    guard: &Guard,
    b: &RedisBackend,
    calls: &AtomicU32,
) -> Result<Option<Bytes>, CallError> {
    let cache = b.cache();
    tokio::time::timeout(
        HANG,
        guard.call(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            let cache = cache.clone();
            async move { cache.get(&key("breaker")).await }
        }),
    )
    .await
    .expect("a guarded call hung")
}

/// Closed → open under `fault` → a probe while still faulty reopens it → heal → half-open →
/// closed. Prints the timings.
async fn breaker_cycle(fault: Fault) {
    let (proxy, b) = proxied().await;
    let (guard, status) = Guard::new(
        "redis",
        BREAKER,
        RetryPolicy::none(),
        Arc::new(TokioClock::new()),
    )
    .unwrap();
    let calls = AtomicU32::new(0);
    const WARM_UP: u32 = 5;
    for _ in 0..WARM_UP {
        guarded(&guard, &b, &calls).await.unwrap();
    }
    assert_eq!(guard.state(), BreakerState::Closed);

    // Failures until the breaker opens: exactly as many as it takes for the window (which
    // holds the warm-up successes too: every call here is well within it) to reach the
    // threshold over at least `minimum_calls` calls.
    let expected = (1..)
        .find(|f: &u32| {
            WARM_UP + f >= BREAKER.minimum_calls
                && f64::from(*f) / f64::from(WARM_UP + f) >= BREAKER.failure_rate_threshold
        })
        .unwrap();
    proxy.set(fault);
    let faulted = Instant::now();
    let before = calls.load(Ordering::SeqCst);
    let mut failures = 0;
    while !matches!(guard.state(), BreakerState::Open { .. }) {
        let r = guarded(&guard, &b, &calls).await;
        assert!(matches!(r, Err(CallError::Transient(_))), "{r:?}");
        failures += 1;
        assert!(
            failures <= expected,
            "the breaker did not open after {expected} failures"
        );
    }
    let to_open = faulted.elapsed();
    assert_eq!(failures, expected);
    assert_eq!(calls.load(Ordering::SeqCst) - before, expected);
    assert!(matches!(
        status.breaker_state(),
        Some(BreakerState::Open { .. })
    ));

    // Open: calls fail fast without reaching the backend.
    let fast = Instant::now();
    let before = calls.load(Ordering::SeqCst);
    for _ in 0..20 {
        let r = guarded(&guard, &b, &calls).await;
        assert!(matches!(r, Err(CallError::Open { .. })), "{r:?}");
    }
    let rejected_in = fast.elapsed();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "an open breaker called the backend"
    );

    // The open duration passes (real time: the breaker's clock is the real clock); one
    // probe goes through, fails against the still-faulty backend, and reopens the breaker.
    tokio::time::sleep(guard.open_remaining()).await;
    assert!(
        matches!(guard.state(), BreakerState::HalfOpen { .. }),
        "{:?}",
        guard.state()
    );
    let r = guarded(&guard, &b, &calls).await;
    assert!(matches!(r, Err(CallError::Transient(_))), "{r:?}");
    assert!(
        matches!(guard.state(), BreakerState::Open { .. }),
        "{:?}",
        guard.state()
    );

    // Heal; probe after each open period until one succeeds and closes the breaker (the
    // first probe may still meet a connection being re-established).
    proxy.set(Fault::Pass);
    let healed = Instant::now();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(
            rounds <= 20,
            "the breaker did not close after the fault ended"
        );
        tokio::time::sleep(guard.open_remaining()).await;
        assert!(
            matches!(guard.state(), BreakerState::HalfOpen { .. }),
            "{:?}",
            guard.state()
        );
        match guarded(&guard, &b, &calls).await {
            Ok(_) => break,
            Err(CallError::Transient(_)) => continue,
            Err(e) => panic!("half-open probe: {e}"),
        }
    }
    let to_close = healed.elapsed();
    assert_eq!(guard.state(), BreakerState::Closed);
    assert_eq!(status.breaker_state(), Some(BreakerState::Closed));
    guarded(&guard, &b, &calls).await.unwrap();
    eprintln!(
        "breaker figures ({fault:?}; threshold 50 %, minimum {} calls, window {:?}, open {:?}, 1 probe, command timeout {COMMAND_TIMEOUT:?}): \
         opened {to_open:?} after the fault began, after {failures} failed calls (following {WARM_UP} successes); 20 calls rejected while open in {rejected_in:?} without reaching Redis; \
         a probe during the fault reopened it; closed {to_close:?} after the fault ended, through {rounds} half-open probe round(s)",
        BREAKER.minimum_calls, BREAKER.window, BREAKER.open_duration
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_breaker_opens_under_a_black_hole_and_closes_through_half_open() {
    breaker_cycle(Fault::BlackHole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_breaker_opens_under_resets_and_closes_through_half_open() {
    breaker_cycle(Fault::Reset).await;
}
