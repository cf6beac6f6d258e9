//! Poison tasks through the worker runtime, on a real Redis: handlers that panic, handlers
//! that always fail, payloads that do not deserialise and kinds nobody handles all end in the
//! dead-letter set with their error recorded, while the other tasks of the same queue and of
//! another queue succeed and the worker keeps running.
//!
//! No sleeps: handlers report on a channel; the worker is shut down once every terminal
//! attempt has started, and its drain waits for those attempts to be reported. On the poison
//! queue (concurrency 1, FIFO) the poison payload and the unknown kind come first, so they are
//! reported before any later task of that queue is even reserved.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use spool_adapter_redis::testing;
use spool_app::config::Config;
use spool_app::services::EnqueueOptions;
use spool_app::{Backends, HandlerError, Spool, TaskContext};
use spool_domain::backoff::Backoff;
use spool_domain::limits::StoreLimits;
use spool_domain::names::{QueueName, TaskId, TaskKind};
use spool_domain::task::{MaxAttempts, TaskStatus};
use tokio::sync::mpsc;

#[derive(Debug, Deserialize)]
struct Job {
    n: u32,
}

#[derive(Debug, Deserialize)]
struct Strict {
    #[allow(dead_code)]
    must_have: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Signal {
    Ran(&'static str, u32),
    LastFailingAttempt,
    Panicking,
}

const MAX_ATTEMPTS: u32 = 3;
const POISON_NORMAL: u32 = 5;
const HEALTHY: u32 = 10;
const PANICS: u32 = 2;
const FAILING: u32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_tasks_go_dead_with_their_error_and_nothing_else_is_affected() {
    let b = testing::backend(StoreLimits::default()).await;
    let backends = Backends {
        name: "redis",
        cache: Arc::new(b.cache()),
        limiter: Arc::new(b.rate_limiter()),
        queue: Arc::new(b.queue()),
        progress: Arc::new(b.progress()),
        health: Arc::new(b.health()),
    };
    let spool = Spool::from_backends(backends, &Config::default()).unwrap();
    let queue = spool.queue().clone();
    let poison = QueueName::parse("poison").unwrap();
    let healthy = QueueName::parse("healthy").unwrap();
    let k = |s: &str| TaskKind::parse(s).unwrap();
    let retry_fast = || {
        EnqueueOptions::new()
            .max_attempts(MaxAttempts::new(MAX_ATTEMPTS).unwrap())
            .backoff(Backoff::constant(Duration::from_millis(10)))
    };

    // FIFO on the poison queue: poison payload and unknown kind first.
    let mut ids: Vec<(&str, TaskId)> = Vec::new();
    let mut add = |label, id| ids.push((label, id));
    let enq = |q: &QueueName, kind: &str, payload: serde_json::Value| {
        let queue = queue.clone();
        let q = q.clone();
        let kind = k(kind);
        let opts = retry_fast();
        async move {
            queue
                .enqueue_json(&q, &kind, payload, opts)
                .await
                .unwrap()
                .task()
                .id
        }
    };
    add(
        "bad-payload",
        enq(&poison, "strict", json!({ "nope": true })).await,
    );
    add("unknown-kind", enq(&poison, "nobody", json!({})).await);
    for n in 0..PANICS {
        add("panics", enq(&poison, "explode", json!({ "n": n })).await);
    }
    for n in 0..FAILING {
        add(
            "always-fails",
            enq(&poison, "always-fail", json!({ "n": n })).await,
        );
    }
    for n in 0..POISON_NORMAL {
        add("normal", enq(&poison, "job", json!({ "n": n })).await);
    }
    let mut healthy_ids = Vec::new();
    for n in 0..HEALTHY {
        healthy_ids.push(enq(&healthy, "job", json!({ "n": n })).await);
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<Signal>();
    let on = |tx: &mpsc::UnboundedSender<Signal>| tx.clone();
    let (t1, t2, t3, t4) = (on(&tx), on(&tx), on(&tx), on(&tx));
    let runtime = spool
        .worker()
        .register(
            poison.clone(),
            k("job"),
            move |_ctx: TaskContext, job: Job| {
                let tx = t1.clone();
                async move {
                    let _ = tx.send(Signal::Ran("poison", job.n));
                    Ok(Some(json!({ "n": job.n })))
                }
            },
        )
        .register(
            poison.clone(),
            k("strict"),
            |_ctx: TaskContext, _s: Strict| async { Ok(None) },
        )
        .register(
            poison.clone(),
            k("explode"),
            move |_ctx: TaskContext, job: Job| {
                let tx = t2.clone();
                async move {
                    let _ = tx.send(Signal::Panicking);
                    panic!("poison pill {}", job.n);
                }
            },
        )
        .register(
            poison.clone(),
            k("always-fail"),
            move |ctx: TaskContext, job: Job| {
                let tx = t3.clone();
                async move {
                    if ctx.is_last_attempt() {
                        let _ = tx.send(Signal::LastFailingAttempt);
                    }
                    Err(HandlerError::retry(format!(
                        "always fails ({}, attempt {})",
                        job.n,
                        ctx.attempt()
                    )))
                }
            },
        )
        .register(
            healthy.clone(),
            k("job"),
            move |_ctx: TaskContext, job: Job| {
                let tx = t4.clone();
                async move {
                    let _ = tx.send(Signal::Ran("healthy", job.n));
                    Ok(Some(json!({ "n": job.n })))
                }
            },
        )
        .concurrency(&poison, 1)
        .concurrency(&healthy, 2)
        .reserve_wait(Duration::from_millis(200))
        .drain_timeout(Duration::from_secs(30))
        .build();
    drop(tx);

    // Shut down once every terminal attempt has started; the drain waits for their reports.
    let expected = POISON_NORMAL + HEALTHY + PANICS + FAILING;
    let shutdown = async move {
        let mut seen = Vec::new();
        while (seen.len() as u32) < expected {
            match rx.recv().await {
                Some(s) => seen.push(s),
                None => break,
            }
        }
        seen
    };
    let (report, seen) = tokio::time::timeout(Duration::from_secs(60), async {
        let (signal_tx, signal_rx) = tokio::sync::oneshot::channel();
        let worker = tokio::spawn(runtime.run_until(async move {
            let _ = signal_rx.await;
        }));
        let seen = shutdown.await;
        let _ = signal_tx.send(());
        (worker.await.unwrap(), seen)
    })
    .await
    .expect("the worker did not get through the tasks within 60 s");

    assert_eq!(seen.len() as u32, expected, "signals: {seen:?}");
    assert_eq!(
        report.succeeded,
        u64::from(POISON_NORMAL + HEALTHY),
        "{report:?}"
    );
    assert_eq!(report.dead, u64::from(2 + PANICS + FAILING), "{report:?}");
    assert_eq!(
        report.retried,
        u64::from(FAILING * (MAX_ATTEMPTS - 1)),
        "{report:?}"
    );

    for (label, id) in &ids {
        let t = queue.get(&poison, *id).await.unwrap().unwrap();
        let err = t.last_error.clone().unwrap_or_default();
        match *label {
            "normal" => assert_eq!(t.status, TaskStatus::Succeeded, "{label}: {t:?}"),
            "always-fails" => {
                assert_eq!(t.status, TaskStatus::Dead, "{label}: {t:?}");
                assert_eq!(t.attempts, MAX_ATTEMPTS, "dead after max_attempts");
                assert!(err.contains("always fails"), "{label}: {err:?}");
                assert!(err.contains(&format!("attempt {MAX_ATTEMPTS}")), "{err:?}");
            }
            "panics" => {
                // The runtime treats a panic as permanent: dead at its first attempt.
                assert_eq!(t.status, TaskStatus::Dead, "{label}: {t:?}");
                assert_eq!(t.attempts, 1);
                assert!(
                    err.contains("panicked") && err.contains("poison pill"),
                    "{err:?}"
                );
            }
            "bad-payload" => {
                assert_eq!(t.status, TaskStatus::Dead, "{label}: {t:?}");
                assert_eq!(t.attempts, 1);
                assert!(err.contains("payload does not match"), "{err:?}");
            }
            "unknown-kind" => {
                assert_eq!(t.status, TaskStatus::Dead, "{label}: {t:?}");
                assert!(err.contains("no handler"), "{err:?}");
            }
            other => unreachable!("{other}"),
        }
    }
    for id in &healthy_ids {
        let t = queue.get(&healthy, *id).await.unwrap().unwrap();
        assert_eq!(t.status, TaskStatus::Succeeded, "{t:?}");
        assert_eq!(t.attempts, 1, "a healthy task was not retried: {t:?}");
    }
    let stats = queue
        .stats(&[healthy.clone(), poison.clone()])
        .await
        .unwrap();
    let by_name = |n: &QueueName| stats.iter().find(|s| s.name == n.as_str()).unwrap().clone();
    let h = by_name(&healthy);
    assert_eq!(
        (h.succeeded, h.dead, h.queued, h.running),
        (u64::from(HEALTHY), 0, 0, 0)
    );
    let p = by_name(&poison);
    assert_eq!(
        (p.succeeded, p.dead, p.queued, p.running),
        (
            u64::from(POISON_NORMAL),
            u64::from(2 + PANICS + FAILING),
            0,
            0
        )
    );
}
