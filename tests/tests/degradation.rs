//! Graceful degradation against a real `redis-server`.
//!
//! - `redis_outage_is_served_by_the_fallbacks_and_handed_over_without_loss`: a server of its
//!   own (spawned through `spool_adapter_redis::testing::RedisServer`) is stopped mid-run;
//!   cache, queue, progress and limiter keep answering through their fallbacks and the
//!   status says degraded; the server comes back, the status says ok, no cache value
//!   changed during the outage is served stale, and every task accepted during the outage is
//!   in Redis and processed exactly once.
//! - `a_worker_killed_mid_task_is_redelivered_after_its_lease_and_completed_once`: a worker
//!   process (`src/bin/test_worker.rs`) is killed with SIGKILL while it runs a task; a second
//!   one gets the task after the lease and completes it, once.
//!
//! Waiting on external processes (a Redis restart and reconnect, a worker process) is done by
//! polling the store with a bounded loop; the sleeps between polls only pace that loop.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spool_adapter_redis::testing::{self, RedisServer};
use spool_app::config::{Config, EnvLayer};
use spool_app::resilience::Service;
use spool_app::services::EnqueueOptions;
use spool_app::telemetry::ServiceMode;
use spool_app::worker::TaskContext;
use spool_app::{redis_backends, RateLimitRequest, Spool};
use spool_domain::limit::Cost;
use spool_domain::names::{
    OperationId, PolicyName, ProjectId, QueueName, StepName, TaskId, TaskKind, UserId,
};
use spool_domain::progress::{OperationSpec, StepRef, StepSpec};
use spool_domain::task::{MaxAttempts, TaskStatus};
use tokio::sync::oneshot;

/// Tasks accepted while Redis is down.
const DURING_OUTAGE: usize = 25;

/// Pause between two polls of an external process's progress.
const POLL: Duration = Duration::from_millis(50);

fn toml(url: &str, prefix: &str) -> String {
    format!(
        r#"
backend = "redis"

[redis]
url = "{url}"
key_prefix = "{prefix}"
command_timeout = "300ms"
connect_timeout = "300ms"

[resilience.breaker]
failure_rate = 0.5
window = "10s"
min_calls = 2
open_for = "300ms"
half_open_probes = 1

[resilience.retry]
max_retries = 1
initial = "10ms"
max = "50ms"

[[rate_limits]]
name = "per_ip"
scope = "ip"
limit = 3
window = "60s"
failure_mode = "local"

[[rate_limits]]
name = "per_user"
scope = "user"
limit = 5
window = "60s"
failure_mode = "open"

[[rate_limits]]
name = "per_project"
scope = "project"
limit = 5
window = "60s"
failure_mode = "closed"

[queues.outage]
lease = "1s"
concurrency = 4

[queues.killme]
lease = "1s"
concurrency = 1

[worker]
reserve_wait = "200ms"
drain_timeout = "2s"
"#
    )
}

fn config(url: &str, prefix: &str) -> Config {
    Config::from_toml_str(&toml(url, prefix), &EnvLayer::default()).unwrap()
}

/// The same keys through Redis alone, no resilience layer: what Redis really holds.
async fn redis_only(config: &Config) -> Spool {
    let settings = config.validate().unwrap();
    let backends = redis_backends(config, &settings).await.unwrap();
    Spool::from_backends(backends, config).unwrap()
}

/// Polls `check` until it holds, at most `tries` times, `POLL` apart.
async fn eventually<F, Fut>(what: &str, tries: usize, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return;
        }
        // Waiting for an external process (redis-server, a worker), not for our own code.
        tokio::time::sleep(POLL).await;
    }
    panic!("gave up waiting: {what}");
}

fn policy(name: &str) -> PolicyName {
    PolicyName::parse(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_is_served_by_the_fallbacks_and_handed_over_without_loss() {
    // Persistence on, so the restarted server still holds what was written before the
    // outage (a cache value that must not be served stale, tasks that must not be lost).
    let mut server =
        RedisServer::spawn_with(&["--appendonly", "yes", "--appendfsync", "always"]).unwrap();
    let prefix = testing::unique_prefix();
    let config = config(&server.url(), prefix.as_str());
    let spool = Spool::from_config(&config).await.unwrap();
    let raw = redis_only(&config).await;
    let status = spool.resilience().clone();
    let (p1, p2) = (
        ProjectId::parse("p1").unwrap(),
        ProjectId::parse("p2").unwrap(),
    );
    let outage = QueueName::parse("outage").unwrap();
    let kind = TaskKind::parse("job").unwrap();
    let cache = spool.cache();

    // ---- Healthy.
    cache.set(&p1, "users", "1", "v1").await.unwrap();
    cache.set(&p2, "users", "2", "old").await.unwrap();
    assert_eq!(
        raw.cache()
            .get::<String>(&p1, "users", "1")
            .await
            .unwrap()
            .as_deref(),
        Some("v1")
    );
    let mut accepted: Vec<TaskId> = Vec::new();
    for n in 0..2 {
        let t = spool
            .queue()
            .enqueue(
                &outage,
                &kind,
                &serde_json::json!({ "n": n, "when": "before" }),
                EnqueueOptions::new(),
            )
            .await
            .unwrap();
        accepted.push(t.task().id);
    }
    assert!(!status.snapshot().degraded);

    // ---- Redis goes down.
    let mut server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();

    cache.set(&p1, "users", "1", "v1-new").await.unwrap();
    assert_eq!(
        cache
            .get::<String>(&p1, "users", "1")
            .await
            .unwrap()
            .as_deref(),
        Some("v1-new"),
        "served by the local cache"
    );
    cache.invalidate_project(&p2).await.unwrap();
    assert_eq!(cache.get::<String>(&p2, "users", "2").await.unwrap(), None);

    let mut during: Vec<TaskId> = Vec::new();
    for n in 0..DURING_OUTAGE {
        let t = spool
            .queue()
            .enqueue(
                &outage,
                &kind,
                &serde_json::json!({ "n": n, "when": "outage" }),
                EnqueueOptions::new(),
            )
            .await
            .unwrap();
        during.push(t.task().id);
    }
    let distinct: std::collections::HashSet<&TaskId> = during.iter().collect();
    assert_eq!(distinct.len(), DURING_OUTAGE, "each enqueue a new task");
    let seen = spool
        .queue()
        .get(&outage, during[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.status, TaskStatus::Queued, "readable while down");

    let op = spool
        .progress()
        .start(OperationSpec {
            id: None,
            correlation_id: None,
            steps: ["fetch", "store"]
                .iter()
                .map(|n| StepSpec {
                    name: StepName::parse(*n).unwrap(),
                    weight: 1,
                })
                .collect(),
            message: Some("started during the outage".into()),
        })
        .await
        .unwrap();
    let op_id: OperationId = op.operation.id.clone();
    spool
        .progress()
        .advance(&op_id, StepRef::Index(0), 0.5, None)
        .await
        .unwrap();

    let ip = RateLimitRequest::new().ip(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    let limiter = spool.limiter();
    for _ in 0..3 {
        let d = limiter
            .check_policies(&[policy("per_ip")], &ip, Cost::ONE)
            .await
            .unwrap();
        assert!(d.allowed, "local: counted in process");
    }
    let d = limiter
        .check_policies(&[policy("per_ip")], &ip, Cost::ONE)
        .await
        .unwrap();
    assert!(!d.allowed, "local: the limit still holds");
    let user = RateLimitRequest::new().user(UserId::parse("u1").unwrap());
    let d = limiter
        .check_policies(&[policy("per_user")], &user, Cost::ONE)
        .await
        .unwrap();
    assert!(d.allowed, "open: admitted");
    assert_eq!(d.policies[0].remaining, 5);
    let proj = RateLimitRequest::new().project(p1.clone());
    let d = limiter
        .check_policies(&[policy("per_project")], &proj, Cost::ONE)
        .await
        .unwrap();
    assert!(!d.allowed, "closed: refused");
    assert!(d.retry_after.unwrap() >= Duration::from_secs(1));

    let snap = status.snapshot();
    assert!(snap.degraded, "{snap:?}");
    for s in Service::ALL {
        assert_eq!(snap.service(s).mode, ServiceMode::Fallback, "{s}: {snap:?}");
        assert!(snap.service(s).breaker.is_some());
    }
    assert!(
        spool.health().check().await.is_err(),
        "health reports the real backend"
    );

    // ---- Redis comes back.
    let server = tokio::task::spawn_blocking(move || {
        server.start().unwrap();
        server
    })
    .await
    .unwrap();
    eventually("the status to say ok", 400, || async {
        !status.snapshot().degraded
    })
    .await;
    let snap = status.snapshot();
    for s in Service::ALL {
        let e = snap.service(s);
        assert_eq!(
            (e.mode, e.local_pending),
            (ServiceMode::Primary, 0),
            "{s}: {snap:?}"
        );
    }
    assert!(spool.health().check().await.is_ok());

    // No stale cache value: the key set during the outage is not served from Redis's old
    // copy, and the project invalidated during the outage is empty.
    assert_eq!(cache.get::<String>(&p1, "users", "1").await.unwrap(), None);
    assert_eq!(cache.get::<String>(&p2, "users", "2").await.unwrap(), None);
    assert_eq!(
        raw.cache().get::<String>(&p1, "users", "1").await.unwrap(),
        None,
        "invalidated in Redis"
    );
    cache.set(&p1, "users", "1", "v2").await.unwrap();
    assert_eq!(
        raw.cache()
            .get::<String>(&p1, "users", "1")
            .await
            .unwrap()
            .as_deref(),
        Some("v2"),
        "writes reach Redis again"
    );

    // Every task accepted during the outage is in Redis, under its id.
    for id in &accepted {
        let t = raw.queue().get(&outage, *id).await.unwrap();
        assert!(
            t.is_some(),
            "a task from before the outage survived the restart"
        );
    }
    let mut lost = 0;
    for (n, id) in during.iter().enumerate() {
        match raw.queue().get(&outage, *id).await.unwrap() {
            Some(t) => {
                assert_eq!(t.status, TaskStatus::Queued);
                assert_eq!(t.payload, serde_json::json!({ "n": n, "when": "outage" }));
            }
            None => lost += 1,
        }
    }
    assert_eq!(lost, 0, "accepted tasks lost");
    let stats = raw
        .queue()
        .stats(std::slice::from_ref(&outage))
        .await
        .unwrap();
    assert_eq!(
        stats[0].queued as usize,
        DURING_OUTAGE + 2,
        "each task once"
    );

    // The operation continues in Redis.
    let moved = raw.progress().get(&op_id).await.unwrap().unwrap();
    assert_eq!(moved.steps[0].fraction, 0.5);
    spool.progress().complete(&op_id, None).await.unwrap();
    let done = raw.progress().get(&op_id).await.unwrap().unwrap();
    assert_eq!(done.percent, 100.0);

    // The closed policy answers from Redis again.
    let d = limiter
        .check_policies(&[policy("per_project")], &proj, Cost::ONE)
        .await
        .unwrap();
    assert!(d.allowed);

    // ---- Every task is processed exactly once.
    accepted.extend(during.iter().copied());
    let runs: Arc<Mutex<HashMap<TaskId, u32>>> = Arc::default();
    let seen = Arc::clone(&runs);
    let worker = spool
        .worker()
        .register(
            outage.clone(),
            kind.clone(),
            move |ctx: TaskContext, _p: serde_json::Value| {
                let seen = Arc::clone(&seen);
                async move {
                    *seen.lock().unwrap().entry(ctx.task_id()).or_default() += 1;
                    Ok(None)
                }
            },
        )
        .build();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let total = accepted.len();
    eventually("every task to succeed", 600, || async {
        let s = raw
            .queue()
            .stats(std::slice::from_ref(&outage))
            .await
            .unwrap();
        s[0].succeeded as usize == total
    })
    .await;
    let _ = stop.send(());
    running.await.unwrap();

    let runs = runs.lock().unwrap().clone();
    let duplicates: u32 = runs.values().map(|n| n.saturating_sub(1)).sum();
    let missing = accepted.iter().filter(|id| !runs.contains_key(id)).count();
    for id in &accepted {
        let t = raw.queue().get(&outage, *id).await.unwrap().unwrap();
        assert_eq!(t.status, TaskStatus::Succeeded, "{id}");
    }
    eprintln!(
        "degradation: {DURING_OUTAGE} tasks accepted during the outage, {} in all; lost {missing}, duplicates {duplicates}",
        accepted.len()
    );
    assert_eq!(missing, 0, "tasks never processed");
    assert_eq!(duplicates, 0, "tasks processed twice");
    assert_eq!(runs.len(), total);
    drop(server);
}

/// A `test_worker` process on `config_file`, logging to `log`.
fn worker_process(config_file: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_test_worker"))
        .env("SPOOL_CONFIG", config_file)
        .env("TEST_WORKER_LOG", log)
        .env("TEST_WORKER_QUEUE", "killme")
        .spawn()
        .unwrap()
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

struct Cleanup(Vec<PathBuf>, Vec<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.1 {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_is_redelivered_after_its_lease_and_completed_once() {
    let prefix = testing::unique_prefix();
    let config = config(&testing::redis_url(), prefix.as_str());
    let dir = std::env::temp_dir();
    let config_file = dir.join(format!("spool-{prefix}.toml"));
    let log = dir.join(format!("spool-{prefix}.log"));
    std::fs::write(&config_file, toml(&testing::redis_url(), prefix.as_str())).unwrap();
    let mut cleanup = Cleanup(vec![config_file.clone(), log.clone()], Vec::new());
    let raw = redis_only(&config).await;
    let q = QueueName::parse("killme").unwrap();

    let id = raw
        .queue()
        .enqueue(
            &q,
            &TaskKind::parse("job").unwrap(),
            &serde_json::json!({ "hang_on_attempt": 1 }),
            EnqueueOptions::new().max_attempts(MaxAttempts::new(3).unwrap()),
        )
        .await
        .unwrap()
        .task()
        .id;

    cleanup.1.push(worker_process(&config_file, &log));
    let started = format!("start {id} 1");
    eventually("the first worker to start the task", 600, || async {
        log_lines(&log).contains(&started)
    })
    .await;
    let running = raw.queue().get(&q, id).await.unwrap().unwrap();
    assert_eq!((running.status, running.attempts), (TaskStatus::Running, 1));

    // SIGKILL: no drain, no release; only the lease can bring the task back.
    let mut first = cleanup.1.remove(0);
    first.kill().unwrap();
    first.wait().unwrap();

    cleanup.1.push(worker_process(&config_file, &log));
    eventually("the second worker to complete the task", 600, || async {
        raw.queue()
            .get(&q, id)
            .await
            .unwrap()
            .is_some_and(|t| t.status == TaskStatus::Succeeded)
    })
    .await;

    let t = raw.queue().get(&q, id).await.unwrap().unwrap();
    assert_eq!(t.attempts, 2, "redelivered once");
    assert_eq!(t.result, Some(serde_json::json!({ "attempt": 2 })));
    assert!(
        t.last_error
            .as_deref()
            .is_some_and(|e| e.contains("lease expired")),
        "{:?}",
        t.last_error
    );
    let lines = log_lines(&log);
    let starts: Vec<&String> = lines.iter().filter(|l| l.starts_with("start ")).collect();
    let dones: Vec<&String> = lines.iter().filter(|l| l.starts_with("done ")).collect();
    assert_eq!(starts, [&format!("start {id} 1"), &format!("start {id} 2")]);
    assert_eq!(dones, [&format!("done {id} 2")], "completed once");
}
