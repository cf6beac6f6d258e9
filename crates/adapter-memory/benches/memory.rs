//! Hot paths of the memory adapter: cache hit and write, rate-limit checks (one and three
//! policies), enqueue, reserve + complete, progress update.
//!
//! The adapter's futures never wait on I/O: each call is polled once inside a tokio runtime
//! context (`now_or_never`; a call that did not finish in one poll panics the bench), so the
//! numbers are the adapter's own cost. Run with `cargo bench -p spool-adapter-memory`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures::FutureExt;
use spool_adapter_memory::{
    MemoryCache, MemoryProgress, MemoryQueue, MemoryRateLimiter, TokioClock,
};
use spool_domain::limit::{Algorithm, Cost, LimitCheck, Policy};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{
    CacheKey, OperationId, PolicyName, ProjectId, QueueName, ScopedKey, StepName, Subject,
    TaskKind, UserId,
};
use spool_domain::progress::{OperationSpec, ProgressUpdate, StepRef, StepSpec};
use spool_domain::task::TaskSpec;
use spool_ports::{CacheStore, ProgressStore, QueueStore, RateLimitStore, ReserveOptions};
use tokio::runtime::Runtime;

/// Polls `f` once: the memory adapter finishes every call without waiting.
fn now<T>(f: impl std::future::Future<Output = T>) -> T {
    f.now_or_never()
        .expect("a memory adapter call finishes in one poll")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn clock() -> Arc<TokioClock> {
    Arc::new(TokioClock::new())
}

fn cache(c: &mut Criterion) {
    let rt = runtime();
    let _ctx = rt.enter();
    let limits = StoreLimits::default();
    let store = MemoryCache::new(&limits, clock());
    let project = ProjectId::parse("acme").unwrap();
    let hot = ScopedKey::new(project.clone(), CacheKey::parse("users:42").unwrap());
    let value = Bytes::from(vec![b'x'; 100]);
    now(store.set(&hot, value.clone(), Duration::from_secs(3600))).unwrap();
    c.bench_function("cache.get (hit)", |b| {
        b.iter(|| now(store.get(black_box(&hot))).unwrap())
    });
    let keys: Vec<ScopedKey> = (0..1024)
        .map(|i| ScopedKey::new(project.clone(), CacheKey::parse(format!("k{i}")).unwrap()))
        .collect();
    let mut i = 0usize;
    c.bench_function("cache.set (1024 keys)", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            now(store.set(&keys[i], value.clone(), Duration::from_secs(3600))).unwrap()
        })
    });
}

fn limiter(c: &mut Criterion) {
    let rt = runtime();
    let _ctx = rt.enter();
    let store = MemoryRateLimiter::new(&StoreLimits::default(), clock());
    let policy = |name: &str| {
        Policy::new(
            PolicyName::parse(name).unwrap(),
            Policy::MAX_LIMIT,
            Duration::from_secs(1),
            Algorithm::SlidingWindow,
        )
        .unwrap()
    };
    let user = Subject::User(UserId::parse("ada").unwrap());
    let one = vec![LimitCheck::new(policy("per_user"), user.clone())];
    let three = vec![
        LimitCheck::new(policy("per_user"), user),
        LimitCheck::new(
            policy("per_project"),
            Subject::Project(ProjectId::parse("acme").unwrap()),
        ),
        LimitCheck::new(
            policy("per_ip"),
            Subject::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        ),
    ];
    c.bench_function("limiter.check (1 policy)", |b| {
        b.iter(|| now(store.check(black_box(&one), Cost::ONE)).unwrap())
    });
    c.bench_function("limiter.check (3 policies)", |b| {
        b.iter(|| now(store.check(black_box(&three), Cost::ONE)).unwrap())
    });
}

fn queue(c: &mut Criterion) {
    let rt = runtime();
    let _ctx = rt.enter();
    let store = MemoryQueue::new(&StoreLimits::default(), clock());
    let q = QueueName::parse("bench").unwrap();
    let kind = TaskKind::parse("noop").unwrap();
    let spec = TaskSpec::new(kind, serde_json::json!({"n": 1}));
    c.bench_function("queue.enqueue", |b| {
        b.iter(|| now(store.enqueue(&q, spec.clone())).unwrap())
    });
    let rc = QueueName::parse("bench-rc").unwrap();
    let queues = [rc.clone()];
    c.bench_function("queue.reserve + complete", |b| {
        b.iter_batched(
            || now(store.enqueue(&rc, spec.clone())).unwrap(),
            |_| {
                now(async {
                    let lease = store
                        .reserve(&queues, ReserveOptions::new(Duration::from_secs(30)))
                        .await
                        .unwrap()
                        .unwrap();
                    store
                        .complete(&rc, lease.task.id, lease.token, None)
                        .await
                        .unwrap()
                })
            },
            BatchSize::SmallInput,
        )
    });
}

fn progress(c: &mut Criterion) {
    let rt = runtime();
    let _ctx = rt.enter();
    let store = MemoryProgress::new(&StoreLimits::default(), clock());
    let id = OperationId::parse("op-1").unwrap();
    let spec = OperationSpec {
        id: Some(id.clone()),
        correlation_id: None,
        steps: ["fetch", "embed", "store"]
            .into_iter()
            .map(|s| StepSpec {
                name: StepName::parse(s).unwrap(),
                weight: 1,
            })
            .collect(),
        message: None,
    };
    now(store.start(spec)).unwrap();
    let mut n = 0u64;
    c.bench_function("progress.update", |b| {
        b.iter(|| {
            n += 1;
            let update = ProgressUpdate {
                step: Some(StepRef::Index((n % 3) as usize)),
                fraction: Some((n % 100) as f64 / 100.0),
                message: None,
                state: None,
            };
            now(store.update(&id, update)).unwrap()
        })
    });
}

criterion_group!(benches, cache, limiter, queue, progress);
criterion_main!(benches);
