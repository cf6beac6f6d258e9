//! Model-based tests: random sequences of cache, limiter and queue operations run against the
//! Redis adapter and, as the model, the memory adapter; every answer must match (values,
//! errors by code, task status / attempts / errors / results, limiter allowed / remaining).
//! A divergence fails the test and proptest shrinks the sequence to a minimal one.
//!
//! Time: the two stores cannot share a clock (Redis owns its own), so the generated
//! operations never depend on elapsed time — TTLs, lease lengths, delays and backoffs are an
//! hour or more, limiter windows an hour or two — and the memory adapter runs on a frozen
//! clock. The sliding-window counter counts in windows aligned to the epoch, so a case that
//! straddles a window boundary (rare: hour-long windows) is rejected rather than compared.
//! Timestamps are compared by presence only.
//!
//! Isolation: one Redis backend per test (a fresh key prefix); every case names its own
//! projects, users and queues, so cases never see each other's keys.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::{json, Value};
use spool_adapter_memory::{Clock, MemoryCache, MemoryQueue, MemoryRateLimiter};
use spool_adapter_redis::testing;
use spool_domain::backoff::Backoff;
use spool_domain::limit::{Algorithm, Cost, Decision, LimitCheck, Policy};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{
    CacheKey, PolicyName, ProjectId, QueueName, ScopedKey, Subject, TaskId, TaskKind, UniqueKey,
    UserId,
};
use spool_domain::task::{
    Failure, Lease, LeaseToken, MaxAttempts, Priority, Retry, Schedule, Task, TaskSpec,
};
use spool_domain::Timestamp;
use spool_ports::{
    CacheEntry, CacheStore, Enqueued, PortError, QueueStore, RateLimitStore, ReserveOptions,
};

/// Cases per test and the longest sequence: the whole module runs in seconds.
const CASES: u32 = 64;
const MAX_OPS: usize = 32;
const HOUR: Duration = Duration::from_secs(3600);

fn limits() -> StoreLimits {
    StoreLimits {
        max_value_bytes: 64,
        max_ttl: 2 * HOUR,
        max_payload_bytes: 256,
        max_error_bytes: 64,
        max_batch: 4,
        ..StoreLimits::default()
    }
}

/// The memory model's clock: it never moves.
struct Frozen(Timestamp);

impl Clock for Frozen {
    fn now(&self) -> Timestamp {
        self.0
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A unique namespace per case (cases share one Redis prefix per test).
fn case_tag() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("c{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// An error or value, compared across the two stores.
fn code<T>(r: &Result<T, PortError>) -> Result<(), &'static str> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(e.code()),
    }
}

/// Runs `body` over `CASES` random sequences from `ops`; on a divergence panics with the
/// shrunk sequence.
fn run_model<O, F>(rt: &tokio::runtime::Runtime, name: &str, ops: BoxedStrategy<Vec<O>>, body: F)
where
    O: fmt::Debug + Clone,
    F: Fn(&tokio::runtime::Runtime, Vec<O>) -> Result<(), TestCaseError>,
{
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::default()
    });
    match runner.run(&ops, |seq| body(rt, seq)) {
        Ok(()) => {}
        Err(TestError::Fail(why, minimal)) => {
            panic!("{name}: Redis diverged from the memory model: {why}\nminimal sequence: {minimal:#?}")
        }
        Err(TestError::Abort(why)) => panic!("{name}: aborted: {why}"),
    }
}

/// Fails the case when the two answers differ.
fn same<T: PartialEq + fmt::Debug>(
    step: usize,
    op: &dyn fmt::Debug,
    redis: T,
    model: T,
) -> Result<(), TestCaseError> {
    if redis == model {
        tally(op, &redis);
        Ok(())
    } else {
        Err(TestCaseError::fail(format!(
            "step {step} {op:?}: redis answered {redis:?}, the model {model:?}"
        )))
    }
}

/// How often each operation ended each way (over every case of the process), so the figures
/// show the sequences reach the interesting states, not only errors.
static OUTCOMES: Mutex<BTreeMap<(String, String), u64>> = Mutex::new(BTreeMap::new());

fn tally(op: &dyn fmt::Debug, answer: &dyn fmt::Debug) {
    let op = format!("{op:?}");
    let name: String = op
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '"' || *c == ' ')
        .collect();
    let name = name.trim().trim_matches('"').to_owned();
    let answer = format!("{answer:?}");
    let outcome = match answer.strip_prefix("Err(\"") {
        Some(rest) => rest.split('"').next().unwrap_or("error").to_owned(),
        None if answer.starts_with("Ok(None)") => "ok: none".to_owned(),
        None if answer.starts_with("Ok((false") && name == "Enqueue" => "ok: duplicate".to_owned(),
        None if answer.starts_with("Ok((false") => "ok: refused".to_owned(),
        None => "ok".to_owned(),
    };
    *OUTCOMES.lock().unwrap().entry((name, outcome)).or_default() += 1;
}

/// Prints the tally of the operations named in `ops`.
fn print_outcomes(test: &str, ops: &[&str]) {
    let all = OUTCOMES.lock().unwrap();
    let mine: Vec<String> = all
        .iter()
        .filter(|((op, _), _)| ops.contains(&op.as_str()))
        .map(|((op, outcome), n)| format!("{op} {outcome}: {n}"))
        .collect();
    eprintln!(
        "model figures ({test}, {CASES} cases of up to {MAX_OPS} ops): {}",
        mine.join(", ")
    );
}

// ---- cache -------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Ttl {
    Zero,
    Minute,
    Hour,
    TooLong,
}

impl Ttl {
    fn duration(self) -> Duration {
        match self {
            Ttl::Zero => Duration::ZERO,
            Ttl::Minute => Duration::from_secs(60),
            Ttl::Hour => HOUR,
            Ttl::TooLong => 3 * HOUR,
        }
    }
}

#[derive(Debug, Clone)]
enum CacheOp {
    Set(u8, u8, Vec<u8>, Ttl),
    Get(u8, u8),
    Delete(u8, u8),
    GetMany(Vec<(u8, u8)>),
    SetMany(Vec<(u8, u8, Vec<u8>, Ttl)>),
    Invalidate(u8),
}

fn ttl() -> impl Strategy<Value = Ttl> {
    prop_oneof![
        1 => Just(Ttl::Zero),
        6 => Just(Ttl::Minute),
        3 => Just(Ttl::Hour),
        1 => Just(Ttl::TooLong),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..8),
        1 => Just(vec![b'x'; 65]), // over max_value_bytes
    ]
}

fn cache_ops() -> BoxedStrategy<Vec<CacheOp>> {
    let slot = (0u8..2, 0u8..3);
    let op = prop_oneof![
        4 => (slot.clone(), value(), ttl()).prop_map(|((p, k), v, t)| CacheOp::Set(p, k, v, t)),
        4 => slot.clone().prop_map(|(p, k)| CacheOp::Get(p, k)),
        2 => slot.clone().prop_map(|(p, k)| CacheOp::Delete(p, k)),
        2 => proptest::collection::vec(slot.clone(), 0..6).prop_map(CacheOp::GetMany),
        2 => proptest::collection::vec((slot, value(), ttl()).prop_map(|((p, k), v, t)| (p, k, v, t)), 0..6)
            .prop_map(CacheOp::SetMany),
        1 => (0u8..2).prop_map(CacheOp::Invalidate),
    ];
    proptest::collection::vec(op, 1..MAX_OPS).boxed()
}

#[test]
fn model_cache_redis_matches_memory() {
    let rt = runtime();
    let redis = rt.block_on(testing::backend(limits()));
    let redis = Arc::new(redis.cache());
    run_model(&rt, "cache", cache_ops(), move |rt, ops| {
        let redis = Arc::clone(&redis);
        rt.block_on(async move {
            let model = MemoryCache::new(
                &limits(),
                Arc::new(Frozen(Timestamp::from_millis(now_ms()))),
            );
            let tag = case_tag();
            let project = |p: u8| ProjectId::parse(format!("p{p}-{tag}")).unwrap();
            let key = |p: u8, k: u8| {
                ScopedKey::new(project(p), CacheKey::parse(format!("k{k}")).unwrap())
            };
            for (step, op) in ops.iter().enumerate() {
                match op {
                    CacheOp::Set(p, k, v, t) => {
                        let (a, b) = (
                            redis
                                .set(&key(*p, *k), Bytes::from(v.clone()), t.duration())
                                .await,
                            model
                                .set(&key(*p, *k), Bytes::from(v.clone()), t.duration())
                                .await,
                        );
                        same(step, op, code(&a), code(&b))?;
                    }
                    CacheOp::Get(p, k) => {
                        let (a, b) = (redis.get(&key(*p, *k)).await, model.get(&key(*p, *k)).await);
                        same(step, op, a.map_err(|e| e.code()), b.map_err(|e| e.code()))?;
                    }
                    CacheOp::Delete(p, k) => {
                        let (a, b) = (
                            redis.delete(&key(*p, *k)).await,
                            model.delete(&key(*p, *k)).await,
                        );
                        same(step, op, a.map_err(|e| e.code()), b.map_err(|e| e.code()))?;
                    }
                    CacheOp::GetMany(slots) => {
                        let keys: Vec<ScopedKey> = slots.iter().map(|(p, k)| key(*p, *k)).collect();
                        let (a, b) = (redis.get_many(&keys).await, model.get_many(&keys).await);
                        same(step, op, a.map_err(|e| e.code()), b.map_err(|e| e.code()))?;
                    }
                    CacheOp::SetMany(entries) => {
                        let entries: Vec<CacheEntry> = entries
                            .iter()
                            .map(|(p, k, v, t)| CacheEntry {
                                key: key(*p, *k),
                                value: Bytes::from(v.clone()),
                                ttl: t.duration(),
                            })
                            .collect();
                        let (a, b) = (
                            redis.set_many(entries.clone()).await,
                            model.set_many(entries).await,
                        );
                        same(step, op, code(&a), code(&b))?;
                    }
                    CacheOp::Invalidate(p) => {
                        let (a, b) = (
                            redis.invalidate_project(&project(*p)).await,
                            model.invalidate_project(&project(*p)).await,
                        );
                        same(step, op, code(&a), code(&b))?;
                    }
                }
            }
            // Finally every key reads the same.
            for p in 0..2 {
                for k in 0..3 {
                    let (a, b) = (redis.get(&key(p, k)).await, model.get(&key(p, k)).await);
                    same(
                        ops.len(),
                        &"final read",
                        a.map_err(|e| e.code()),
                        b.map_err(|e| e.code()),
                    )?;
                }
            }
            Ok(())
        })
    });
    print_outcomes(
        "cache",
        &["Set", "Get", "Delete", "GetMany", "SetMany", "Invalidate"],
    );
}

/// The runtime a test's cases run on (the Redis backend must be built on it too: its
/// connections live on the runtime that made them).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---- limiter -----------------------------------------------------------------------------

/// (name, limit, window, algorithm) of the policies a check may use.
const POLICIES: [(&str, u64, u64, Algorithm); 3] = [
    ("per-hour", 5, 3600, Algorithm::SlidingWindow),
    ("log-hour", 3, 3600, Algorithm::SlidingLog),
    ("two-hours", 4, 7200, Algorithm::SlidingWindow),
];

#[derive(Debug, Clone)]
struct LimitOp {
    /// (policy index, subject index); duplicates are allowed (and refused by both).
    checks: Vec<(usize, u8)>,
    cost: u64,
}

fn limiter_ops() -> BoxedStrategy<Vec<LimitOp>> {
    let pairs: Vec<(usize, u8)> = (0..3).flat_map(|p| (0..2).map(move |s| (p, s))).collect();
    let op = (
        prop_oneof![
            // Mostly distinct (policy, subject) pairs; sometimes any list (empty, repeats).
            8 => proptest::sample::subsequence(pairs, 1..=3),
            1 => proptest::collection::vec((0usize..3, 0u8..2), 0..4),
        ],
        prop_oneof![1 => Just(0u64), 12 => 1u64..3, 1 => 3u64..7],
    )
        .prop_map(|(checks, cost)| LimitOp { checks, cost });
    proptest::collection::vec(op, 1..MAX_OPS).boxed()
}

/// The parts of a decision that do not depend on elapsed time.
fn decision_view(d: &Decision) -> (bool, Vec<(String, bool, u64, u64)>) {
    (
        d.allowed,
        d.policies
            .iter()
            .map(|p| (p.policy.to_string(), p.allowed, p.limit, p.remaining))
            .collect(),
    )
}

/// Whether `[from, to]` (ms, padded) crosses a boundary of any policy window.
fn straddles_a_window(from: u64, to: u64) -> bool {
    let (from, to) = (from.saturating_sub(2_000), to + 2_000);
    POLICIES
        .iter()
        .any(|(_, _, secs, _)| from / (secs * 1000) != to / (secs * 1000))
}

#[test]
fn model_limiter_redis_matches_memory() {
    let rt = runtime();
    let redis = rt.block_on(testing::backend(limits()));
    let redis = Arc::new(redis.rate_limiter());
    run_model(&rt, "limiter", limiter_ops(), move |rt, ops| {
        let redis = Arc::clone(&redis);
        let started = now_ms();
        let outcome = rt.block_on(async move {
            let model = MemoryRateLimiter::new(
                &limits(),
                Arc::new(Frozen(Timestamp::from_millis(started))),
            );
            let tag = case_tag();
            for (step, op) in ops.iter().enumerate() {
                let checks: Vec<LimitCheck> = op
                    .checks
                    .iter()
                    .map(|(p, s)| {
                        let (name, limit, secs, algo) = POLICIES[*p];
                        LimitCheck::new(
                            Policy::new(
                                PolicyName::parse(name).unwrap(),
                                limit,
                                Duration::from_secs(secs),
                                algo,
                            )
                            .unwrap(),
                            Subject::User(UserId::parse(format!("u{s}-{tag}")).unwrap()),
                        )
                    })
                    .collect();
                let cost = Cost::new(op.cost).unwrap();
                let (a, b) = (
                    redis.check(&checks, cost).await,
                    model.check(&checks, cost).await,
                );
                same(
                    step,
                    op,
                    a.as_ref().map(decision_view).map_err(|e| e.code()),
                    b.as_ref().map(decision_view).map_err(|e| e.code()),
                )?;
            }
            Ok(())
        });
        if straddles_a_window(started, now_ms()) {
            // The stores may legitimately disagree across a window boundary: not a case.
            return Err(TestCaseError::reject("straddles a limiter window boundary"));
        }
        outcome
    });
    print_outcomes("limiter", &["LimitOp"]);
}

// ---- queue -------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Token {
    Current,
    Stale,
    Bogus,
}

#[derive(Debug, Clone, Copy)]
enum FailHow {
    Backoff,
    Never,
    After,
    TooLong,
}

#[derive(Debug, Clone)]
enum QueueOp {
    Enqueue {
        queue: u8,
        priority: i8,
        delayed: bool,
        max_attempts: u32,
        unique: Option<u8>,
        too_big: bool,
        /// Reuse the ID of an earlier task (idempotent enqueue).
        reuse: Option<usize>,
    },
    Reserve(Vec<u8>),
    Complete(Target, Token, bool),
    Fail(Target, Token, FailHow),
    Release(Target, Token),
    Heartbeat(Target, Token),
    Cancel(Target),
    Requeue(Target),
    Get(Target, bool),
    Stats,
}

/// Which task a task operation addresses.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The task most recently reserved (running, unless something ended it since).
    Leased,
    /// The n-th task accepted (modulo their number).
    Nth(usize),
}

fn target() -> impl Strategy<Value = Target> + Clone {
    prop_oneof![2 => Just(Target::Leased), 3 => (0usize..8).prop_map(Target::Nth)]
}

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![8 => Just(Token::Current), 1 => Just(Token::Stale), 1 => Just(Token::Bogus)]
}

fn queue_ops() -> BoxedStrategy<Vec<QueueOp>> {
    let enqueue = (
        0u8..2,
        prop_oneof![Just(-1i8), Just(0), Just(1)],
        prop::bool::weighted(0.15),
        1u32..4,
        prop::option::weighted(0.3, 0u8..2),
        prop::bool::weighted(0.05),
        prop::option::weighted(0.1, 0usize..8),
    )
        .prop_map(
            |(queue, priority, delayed, max_attempts, unique, too_big, reuse)| QueueOp::Enqueue {
                queue,
                priority,
                delayed,
                max_attempts,
                unique,
                too_big,
                reuse,
            },
        );
    let task = target();
    let fail_how = prop_oneof![
        4 => Just(FailHow::Backoff),
        2 => Just(FailHow::Never),
        2 => Just(FailHow::After),
        1 => Just(FailHow::TooLong),
    ];
    let op = prop_oneof![
        6 => enqueue,
        6 => prop_oneof![
            1 => Just(Vec::new()),
            8 => proptest::collection::vec(0u8..2, 1..3),
        ]
        .prop_map(QueueOp::Reserve),
        3 => (task.clone(), token(), any::<bool>()).prop_map(|(t, k, r)| QueueOp::Complete(t, k, r)),
        3 => (task.clone(), token(), fail_how).prop_map(|(t, k, f)| QueueOp::Fail(t, k, f)),
        1 => (task.clone(), token()).prop_map(|(t, k)| QueueOp::Release(t, k)),
        1 => (task.clone(), token()).prop_map(|(t, k)| QueueOp::Heartbeat(t, k)),
        1 => task.clone().prop_map(QueueOp::Cancel),
        1 => task.clone().prop_map(QueueOp::Requeue),
        2 => (task, prop::bool::weighted(0.1)).prop_map(|(t, wrong)| QueueOp::Get(t, wrong)),
        1 => Just(QueueOp::Stats),
    ];
    proptest::collection::vec(op, 1..MAX_OPS).boxed()
}

/// Everything about a task that does not depend on either store's clock.
#[derive(Debug, PartialEq)]
struct TaskView {
    id: TaskId,
    queue: String,
    kind: String,
    payload: Value,
    priority: i8,
    status: String,
    attempts: u32,
    max_attempts: u32,
    unique_key: Option<String>,
    last_error: Option<String>,
    result: Option<Value>,
    lease_seq: u64,
    /// Which timestamps are set: scheduled_for, started, heartbeat, finished, lease expiry.
    stamps: [bool; 5],
}

fn view(t: &Task) -> TaskView {
    TaskView {
        id: t.id,
        queue: t.queue.to_string(),
        kind: t.kind.to_string(),
        payload: t.payload.clone(),
        priority: t.priority.get(),
        status: t.status.as_str().to_owned(),
        attempts: t.attempts,
        max_attempts: t.max_attempts,
        unique_key: t.unique_key.as_ref().map(ToString::to_string),
        last_error: t.last_error.clone(),
        result: t.result.clone(),
        lease_seq: t.lease_seq,
        stamps: [
            t.scheduled_for.is_some(),
            t.started_at.is_some(),
            t.heartbeat_at.is_some(),
            t.finished_at.is_some(),
            t.lease_expires_at.is_some(),
        ],
    }
}

fn task_result(r: &Result<Task, PortError>) -> Result<TaskView, &'static str> {
    r.as_ref().map(view).map_err(PortError::code)
}

fn lease_result(r: &Result<Option<Lease>, PortError>) -> Result<Option<TaskView>, &'static str> {
    r.as_ref()
        .map(|l| l.as_ref().map(|l| view(&l.task)))
        .map_err(PortError::code)
}

fn enqueued_result(r: &Result<Enqueued, PortError>) -> Result<(bool, TaskView), &'static str> {
    r.as_ref()
        .map(|e| (matches!(e, Enqueued::Created(_)), view(e.task())))
        .map_err(PortError::code)
}

/// The lease tokens one store handed out, per task: (current, previous).
#[derive(Default)]
struct Tokens(HashMap<TaskId, (LeaseToken, Option<LeaseToken>)>);

impl Tokens {
    fn record(&mut self, lease: &Lease) {
        let prev = self.0.get(&lease.task.id).map(|(cur, _)| *cur);
        self.0.insert(lease.task.id, (lease.token, prev));
    }

    fn pick(&self, task: TaskId, which: Token) -> LeaseToken {
        let bogus = LeaseToken::new(999_999);
        match (self.0.get(&task), which) {
            (Some((cur, _)), Token::Current) => *cur,
            (Some((_, Some(prev))), Token::Stale) => *prev,
            _ => bogus,
        }
    }
}

#[test]
fn model_queue_redis_matches_memory() {
    let rt = runtime();
    let redis = rt.block_on(testing::backend(limits()));
    let redis = Arc::new(redis.queue());
    run_model(&rt, "queue", queue_ops(), move |rt, ops| {
        let redis = Arc::clone(&redis);
        rt.block_on(async move { queue_case(&*redis, &ops).await })
    });
    print_outcomes(
        "queue",
        &[
            "Enqueue",
            "Reserve",
            "Complete",
            "Fail",
            "Release",
            "Heartbeat",
            "Cancel",
            "Requeue",
            "Get",
            "Stats",
        ],
    );
}

async fn queue_case(redis: &dyn QueueStore, ops: &[QueueOp]) -> Result<(), TestCaseError> {
    let model = MemoryQueue::new(
        &limits(),
        Arc::new(Frozen(Timestamp::from_millis(now_ms()))),
    );
    let tag = case_tag();
    let queues = [
        QueueName::parse(format!("q0-{tag}")).unwrap(),
        QueueName::parse(format!("q1-{tag}")).unwrap(),
    ];
    let kind = TaskKind::parse("model.job").unwrap();
    // Every task either store accepted, with its queue (in enqueue order).
    let mut tasks: Vec<(TaskId, usize)> = Vec::new();
    let mut redis_tokens = Tokens::default();
    let mut model_tokens = Tokens::default();
    let long = Backoff::constant(HOUR);
    // The task most recently reserved (from both stores: the answers matched).
    let mut leased: Option<(TaskId, usize)> = None;
    // The task a task-op addresses, or a never-enqueued ID while there is none.
    let target = |tasks: &Vec<(TaskId, usize)>, leased: Option<(TaskId, usize)>, t: Target| match (
        t, leased,
    ) {
        (Target::Leased, Some(l)) => l,
        _ if tasks.is_empty() => (TaskId::from_parts(Timestamp::from_millis(1), 42), 0),
        (Target::Nth(i), _) => tasks[i % tasks.len()],
        (Target::Leased, None) => tasks[0],
    };
    for (step, op) in ops.iter().enumerate() {
        match op {
            QueueOp::Enqueue {
                queue,
                priority,
                delayed,
                max_attempts,
                unique,
                too_big,
                reuse,
            } => {
                let q = &queues[usize::from(*queue)];
                let id = match reuse {
                    Some(i) if !tasks.is_empty() => tasks[i % tasks.len()].0,
                    _ => {
                        TaskId::from_parts(Timestamp::from_millis(now_ms()), rand::random::<u128>())
                    }
                };
                let payload = if *too_big {
                    json!({ "blob": "x".repeat(300) })
                } else {
                    json!({ "step": step })
                };
                let mut spec = TaskSpec::new(kind.clone(), payload)
                    .id(id)
                    .priority(Priority::new(i64::from(*priority)).unwrap())
                    .max_attempts(MaxAttempts::new(*max_attempts).unwrap())
                    .backoff(long);
                if *delayed {
                    spec = spec.schedule(Schedule::After(HOUR));
                }
                if let Some(u) = unique {
                    spec = spec.unique_key(UniqueKey::parse(format!("u{u}")).unwrap());
                }
                let (a, b) = (
                    redis.enqueue(q, spec.clone()).await,
                    model.enqueue(q, spec).await,
                );
                same(step, op, enqueued_result(&a), enqueued_result(&b))?;
                if let Ok(e) = &a {
                    let t = e.task();
                    if !tasks.iter().any(|(id, _)| *id == t.id) {
                        tasks.push((t.id, usize::from(*queue)));
                    }
                }
            }
            QueueOp::Reserve(which) => {
                let qs: Vec<QueueName> = which
                    .iter()
                    .map(|i| queues[usize::from(*i)].clone())
                    .collect();
                let opts = ReserveOptions::new(HOUR);
                let (a, b) = (
                    redis.reserve(&qs, opts.clone()).await,
                    model.reserve(&qs, opts).await,
                );
                same(step, op, lease_result(&a), lease_result(&b))?;
                if let (Ok(Some(la)), Ok(Some(lb))) = (&a, &b) {
                    redis_tokens.record(la);
                    model_tokens.record(lb);
                    leased = tasks.iter().copied().find(|(id, _)| *id == la.task.id);
                }
            }
            QueueOp::Complete(i, tok, with_result) => {
                let (id, qi) = target(&tasks, leased, *i);
                let result = with_result.then(|| json!({ "done": step }));
                let (a, b) = (
                    redis
                        .complete(&queues[qi], id, redis_tokens.pick(id, *tok), result.clone())
                        .await,
                    model
                        .complete(&queues[qi], id, model_tokens.pick(id, *tok), result)
                        .await,
                );
                same(step, op, task_result(&a), task_result(&b))?;
            }
            QueueOp::Fail(i, tok, how) => {
                let (id, qi) = target(&tasks, leased, *i);
                let failure = match how {
                    FailHow::Backoff => Failure {
                        error: format!("e{step}"),
                        retry: Retry::Backoff,
                    },
                    FailHow::Never => Failure {
                        error: format!("e{step}"),
                        retry: Retry::Never,
                    },
                    FailHow::After => Failure {
                        error: format!("e{step}"),
                        retry: Retry::After(HOUR),
                    },
                    FailHow::TooLong => Failure {
                        error: "e".repeat(65),
                        retry: Retry::Backoff,
                    },
                };
                let (a, b) = (
                    redis
                        .fail(
                            &queues[qi],
                            id,
                            redis_tokens.pick(id, *tok),
                            failure.clone(),
                        )
                        .await,
                    model
                        .fail(&queues[qi], id, model_tokens.pick(id, *tok), failure)
                        .await,
                );
                same(step, op, task_result(&a), task_result(&b))?;
            }
            QueueOp::Release(i, tok) => {
                let (id, qi) = target(&tasks, leased, *i);
                let (a, b) = (
                    redis
                        .release(&queues[qi], id, redis_tokens.pick(id, *tok), "model")
                        .await,
                    model
                        .release(&queues[qi], id, model_tokens.pick(id, *tok), "model")
                        .await,
                );
                same(step, op, task_result(&a), task_result(&b))?;
            }
            QueueOp::Heartbeat(i, tok) => {
                let (id, qi) = target(&tasks, leased, *i);
                let (a, b) = (
                    redis
                        .heartbeat(&queues[qi], id, redis_tokens.pick(id, *tok), HOUR)
                        .await,
                    model
                        .heartbeat(&queues[qi], id, model_tokens.pick(id, *tok), HOUR)
                        .await,
                );
                same(
                    step,
                    op,
                    a.as_ref().map(|l| view(&l.task)).map_err(PortError::code),
                    b.as_ref().map(|l| view(&l.task)).map_err(PortError::code),
                )?;
            }
            QueueOp::Cancel(i) => {
                let (id, qi) = target(&tasks, leased, *i);
                let (a, b) = (
                    redis.cancel(&queues[qi], id).await,
                    model.cancel(&queues[qi], id).await,
                );
                same(step, op, task_result(&a), task_result(&b))?;
            }
            QueueOp::Requeue(i) => {
                let (id, qi) = target(&tasks, leased, *i);
                let (a, b) = (
                    redis.requeue(&queues[qi], id).await,
                    model.requeue(&queues[qi], id).await,
                );
                same(step, op, task_result(&a), task_result(&b))?;
            }
            QueueOp::Get(i, wrong_queue) => {
                let (id, qi) = target(&tasks, leased, *i);
                let q = &queues[if *wrong_queue { 1 - qi } else { qi }];
                let (a, b) = (redis.get(q, id).await, model.get(q, id).await);
                same(
                    step,
                    op,
                    a.as_ref()
                        .map(|t| t.as_ref().map(view))
                        .map_err(PortError::code),
                    b.as_ref()
                        .map(|t| t.as_ref().map(view))
                        .map_err(PortError::code),
                )?;
            }
            QueueOp::Stats => {
                let counts = |r: &Result<Vec<spool_domain::task::QueueStats>, PortError>| {
                    r.as_ref()
                        .map(|v| {
                            v.iter()
                                .map(|s| {
                                    (
                                        s.name.clone(),
                                        s.queued,
                                        s.scheduled,
                                        s.running,
                                        s.succeeded,
                                        s.dead,
                                        s.cancelled,
                                    )
                                })
                                .collect::<Vec<_>>()
                        })
                        .map_err(PortError::code)
                };
                let (a, b) = (redis.stats(&queues).await, model.stats(&queues).await);
                same(step, op, counts(&a), counts(&b))?;
            }
        }
    }
    // Finally every task reads the same.
    for (id, qi) in &tasks {
        let (a, b) = (
            redis.get(&queues[*qi], *id).await,
            model.get(&queues[*qi], *id).await,
        );
        same(
            ops.len(),
            &"final read",
            a.as_ref()
                .map(|t| t.as_ref().map(view))
                .map_err(PortError::code),
            b.as_ref()
                .map(|t| t.as_ref().map(view))
                .map_err(PortError::code),
        )?;
    }
    Ok(())
}

/// The model test must be able to fail: a store that drops every write diverges at once.
#[test]
fn model_detects_a_divergence_and_shrinks_it() {
    let rt = runtime();
    let redis = rt.block_on(testing::backend(limits()));
    let redis = Arc::new(redis.cache());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_model(&rt, "broken cache", cache_ops(), move |rt, ops| {
            let redis = Arc::clone(&redis);
            rt.block_on(async move {
                // The "model" here forgets every write: any successful set followed by a read
                // of the same key diverges.
                let model = MemoryCache::new(
                    &limits(),
                    Arc::new(Frozen(Timestamp::from_millis(now_ms()))),
                );
                let tag = case_tag();
                let key = |p: u8, k: u8| {
                    ScopedKey::new(
                        ProjectId::parse(format!("p{p}-{tag}")).unwrap(),
                        CacheKey::parse(format!("k{k}")).unwrap(),
                    )
                };
                for (step, op) in ops.iter().enumerate() {
                    match op {
                        CacheOp::Set(p, k, v, t) => {
                            let _ = redis
                                .set(&key(*p, *k), Bytes::from(v.clone()), t.duration())
                                .await;
                        }
                        CacheOp::Get(p, k) => {
                            let (a, b) =
                                (redis.get(&key(*p, *k)).await, model.get(&key(*p, *k)).await);
                            same(step, op, a.map_err(|e| e.code()), b.map_err(|e| e.code()))?;
                        }
                        _ => {}
                    }
                }
                Ok(())
            })
        });
    }));
    let message = match outcome {
        Ok(()) => panic!("a store that drops writes was not caught in {CASES} cases"),
        Err(p) => p.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(message.contains("diverged"), "{message}");
    // Shrunk to the essence: one set and one get of the same key.
    let minimal = message
        .split("minimal sequence:")
        .nth(1)
        .unwrap_or_default();
    let sets = minimal.matches("Set(").count();
    let gets = minimal.matches("Get(").count();
    assert_eq!((sets, gets), (1, 1), "not minimal: {message}");
}
