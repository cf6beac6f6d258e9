//! Hot paths of the domain: sliding-window math, key validation, the task state machine.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use spool_domain::limit::counter::{self, CounterState};
use spool_domain::limit::log::SlidingLog;
use spool_domain::limit::{Algorithm, Cost, Policy};
use spool_domain::names::{CacheKey, PolicyName, ProjectId, QueueName};
use spool_domain::task::{TaskEvent, TaskStatus};

fn policy(algorithm: Algorithm) -> Policy {
    Policy::new(
        PolicyName::parse("api").unwrap(),
        100,
        Duration::from_secs(60),
        algorithm,
    )
    .unwrap()
}

fn limiter(c: &mut Criterion) {
    let p = policy(Algorithm::SlidingWindow);
    let state = Some(CounterState {
        window_start: 1_764_115_200_000,
        current: 40,
        previous: 70,
    });
    c.bench_function("counter.evaluate", |b| {
        b.iter(|| {
            counter::evaluate(
                black_box(state),
                &p,
                black_box(1_764_115_230_000),
                Cost::ONE,
            )
        })
    });
    let p = policy(Algorithm::SlidingLog);
    let mut log = SlidingLog::default();
    for i in 0..90 {
        log.record(1_764_115_200_000 + i * 100, Cost::ONE);
    }
    c.bench_function("log.evaluate(90 entries)", |b| {
        b.iter(|| log.evaluate(&p, black_box(1_764_115_230_000), Cost::ONE))
    });
}

fn names(c: &mut Criterion) {
    c.bench_function("ProjectId::parse", |b| {
        b.iter(|| ProjectId::parse(black_box("acme-production")))
    });
    c.bench_function("CacheKey::parse", |b| {
        b.iter(|| CacheKey::parse(black_box("user:42:profile/avatar@v2")))
    });
    c.bench_function("QueueName::parse (invalid)", |b| {
        b.iter(|| QueueName::parse(black_box("bad{name}")))
    });
}

fn state_machine(c: &mut Criterion) {
    let events = [
        TaskEvent::Reserve,
        TaskEvent::FailRetry,
        TaskEvent::Due,
        TaskEvent::Reserve,
        TaskEvent::Complete,
    ];
    c.bench_function("TaskStatus::apply x5", |b| {
        b.iter(|| {
            let mut s = TaskStatus::Queued;
            for e in events {
                s = s.apply(black_box(e)).unwrap();
            }
            s
        })
    });
}

criterion_group!(benches, limiter, names, state_machine);
criterion_main!(benches);
