//! Crash safety: tasks processed by several worker **processes** while the workers are killed
//! with `SIGKILL` at random and `redis-server` (AOF, `appendfsync always`) is killed with
//! `SIGKILL` and restarted.
//!
//! Every accepted task must end `succeeded` or `dead` with a reason (0 lost); every completion
//! the store accepted must be accepted once only (fencing: the `done` records per task, and
//! the result the store kept names the lease that completed it); duplicate executions
//! (at-least-once delivery) are counted and reported.
//!
//! The chaos is driven by progress, not by the clock: the test polls the queue's stats (the
//! workers are other processes, so this is a bounded poll every 100 ms) and fires the next
//! kill or restart each time the number of finished tasks passes the next threshold, so every
//! kill and restart happens while tasks are in flight, however fast the machine is.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rand::Rng;
use serde_json::json;
use spool_adapter_redis::testing::{self, RedisServer};
use spool_adapter_redis::{ReconnectSettings, RedisBackend, RedisConfig};
use spool_domain::backoff::Backoff;
use spool_domain::names::{KeyPrefix, QueueName, TaskId, TaskKind};
use spool_domain::task::{MaxAttempts, TaskSpec, TaskStatus};
use spool_domain::Timestamp;
use spool_ports::QueueStore;
use spool_tests::chaos::{self, parse_log, Event, Record};

const TASKS: usize = 1_200;
const WORKERS: usize = 4;
const CONCURRENCY: usize = 2;
const LEASE_MS: u64 = 2_000;
const MAX_ATTEMPTS: u32 = 6;
const WORKER_KILLS: usize = 12;
const REDIS_RESTARTS: usize = 3;
/// Workers frozen with SIGSTOP past their lease, then resumed: their late calls must be fenced.
const WORKER_PAUSES: usize = 3;
/// The whole test fails past this (it normally takes a fraction of it).
const DEADLINE: Duration = Duration::from_secs(150);

struct WorkerProcess {
    name: String,
    child: Child,
    /// Held so the worker lives; dropping it makes the worker exit.
    _stdin: Option<ChildStdin>,
}

fn spawn_worker(
    dir: &Path,
    url: &str,
    prefix: &KeyPrefix,
    queue: &QueueName,
    name: &str,
) -> WorkerProcess {
    let log = dir.join(format!("{name}.log"));
    let stderr = std::fs::File::create(dir.join(format!("{name}.stderr"))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash_worker"))
        .args([
            "--url",
            url,
            "--prefix",
            prefix.as_str(),
            "--queue",
            queue.as_str(),
        ])
        .arg("--log")
        .arg(&log)
        .args(["--worker", name])
        .args(["--concurrency", &CONCURRENCY.to_string()])
        .args(["--lease-ms", &LEASE_MS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the crash worker: {e}"));
    let stdin = child.stdin.take();
    WorkerProcess {
        name: name.to_owned(),
        child,
        _stdin: stdin,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the store says about one task at the end.
#[derive(Debug, Default)]
struct Figures {
    tasks: usize,
    succeeded: usize,
    dead: usize,
    lost: Vec<String>,
    dead_without_reason: Vec<String>,
    duplicate_completions: Vec<String>,
    fencing_violations: Vec<String>,
    completions_accepted_unacknowledged: usize,
    executions: usize,
    duplicate_executions: usize,
    tasks_executed_more_than_once: usize,
    fenced_calls: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_safety_workers_and_redis_killed_nothing_lost_no_double_completion() {
    let started = Instant::now();
    let mut server = tokio::task::block_in_place(|| {
        RedisServer::spawn_with(&["--appendonly", "yes", "--appendfsync", "always"])
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let url = server.url();
    let port = server.port();
    let prefix = testing::unique_prefix();
    let queue = QueueName::parse("crash").unwrap();
    let dir = tempfile::tempdir().unwrap();

    let mut config = RedisConfig::new(url.clone()).prefix(prefix.clone());
    config.pool_size = 2;
    config.command_timeout = Duration::from_secs(1);
    config.connect_timeout = Duration::from_secs(1);
    config.reconnect = ReconnectSettings {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_attempts: 0,
    };
    let backend = RedisBackend::connect(config).await.unwrap();
    let store = Arc::new(backend.queue());

    // The tasks: 5 % always fail (dead after MAX_ATTEMPTS), 10 % fail their first attempt.
    let mut rng = rand::rng();
    let kind = TaskKind::parse("crash.job").unwrap();
    let specs: Vec<TaskSpec> = (0..TASKS)
        .map(|n| {
            let mode = match n % 20 {
                0 => "fail",
                5 | 15 => "flaky",
                _ => "ok",
            };
            let payload = json!({ "n": n, "mode": mode, "work_ms": rng.random_range(20..=80) });
            TaskSpec::new(kind.clone(), payload)
                .id(TaskId::from_parts(
                    Timestamp::from_millis(now_ms()),
                    rand::random::<u128>(),
                ))
                .max_attempts(MaxAttempts::new(MAX_ATTEMPTS).unwrap())
                .backoff(Backoff::constant(Duration::from_millis(50)))
        })
        .collect();
    let ids: Vec<TaskId> = specs.iter().filter_map(|s| s.id).collect();

    let mut workers: Vec<WorkerProcess> = (0..WORKERS)
        .map(|i| spawn_worker(dir.path(), &url, &prefix, &queue, &format!("w{i}-0")))
        .collect();
    let mut every_worker: Vec<String> = workers.iter().map(|w| w.name.clone()).collect();

    // Producer: enqueues while the chaos runs; an enqueue is retried with the same ID until
    // the store answers (a retry after a lost reply gets `Duplicate`: accepted once).
    let producer = {
        let store = Arc::clone(&store);
        let queue = queue.clone();
        tokio::spawn(async move {
            futures::stream::iter(specs)
                .map(|spec| {
                    let store = Arc::clone(&store);
                    let queue = queue.clone();
                    async move {
                        for _ in 0..400 {
                            match store.enqueue(&queue, spec.clone()).await {
                                Ok(_) => return Ok(()),
                                Err(e) if e.is_transient() => {
                                    tokio::time::sleep(Duration::from_millis(50)).await
                                }
                                Err(e) => return Err(format!("enqueue refused: {e}")),
                            }
                        }
                        Err("enqueue kept failing for 20 s".to_owned())
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<Result<(), String>>>()
                .await
        })
    };

    // Chaos thresholds (finished tasks), spread over the first ~80 % of the run.
    let spacing = TASKS / (WORKER_KILLS + 4);
    let mut kill_at: Vec<usize> = (1..=WORKER_KILLS)
        .map(|k| k * spacing + rng.random_range(0..spacing / 2))
        .collect();
    kill_at.reverse(); // popped from the back
    let mut restart_at: Vec<usize> = (1..=REDIS_RESTARTS)
        .map(|k| k * TASKS / (REDIS_RESTARTS + 2) + rng.random_range(0..spacing / 2))
        .collect();
    restart_at.reverse();
    let mut pause_at: Vec<usize> = (1..=WORKER_PAUSES)
        .map(|k| k * TASKS / (WORKER_PAUSES + 2) + spacing / 3 + rng.random_range(0..spacing / 3))
        .collect();
    pause_at.reverse();
    let mut frozen: Vec<(u32, Instant)> = Vec::new(); // (pid, resume at)
    let mut pauses = Vec::new(); // (finished when paused, worker)
    let mut kills = Vec::new(); // (finished when killed, worker)
    let mut restarts = Vec::new(); // (finished when killed, down for)
    let mut generation = 1;
    let mut finished = 0usize;

    loop {
        assert!(
            started.elapsed() < DEADLINE,
            "crash safety did not finish within {DEADLINE:?}: {finished}/{TASKS} finished, \
             {} kills, {} restarts; workers said:\n{}",
            kills.len(),
            restarts.len(),
            diagnostics(dir.path(), &every_worker)
        );
        for w in &mut workers {
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!(
                    "worker {} exited by itself ({status}):\n{}",
                    w.name,
                    diagnostics(dir.path(), std::slice::from_ref(&w.name))
                );
            }
        }
        // Polling an external system (Redis and the worker processes) — bounded by DEADLINE.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(stats) = store.stats(std::slice::from_ref(&queue)).await {
            if let Some(s) = stats.first() {
                let now = (s.succeeded + s.dead) as usize;
                // Finished tasks stay for the retention (a day): a drop means the store
                // forgot acknowledged work, e.g. across a restart.
                assert!(
                    now >= finished,
                    "finished tasks went from {finished} to {now}: acknowledged work was lost"
                );
                finished = now;
            }
        }
        frozen.retain(|(pid, resume_at)| {
            if Instant::now() < *resume_at {
                return true;
            }
            let _ = chaos::signal(*pid, "CONT");
            false
        });
        if restart_at.last().is_some_and(|t| finished >= *t) {
            restart_at.pop();
            let down = Instant::now();
            let pid = chaos::redis_pid(port).unwrap_or_else(|e| panic!("{e}"));
            chaos::sigkill(pid).unwrap_or_else(|e| panic!("{e}"));
            tokio::task::block_in_place(|| {
                server.stop();
                server.start()
            })
            .unwrap_or_else(|e| panic!("redis did not come back: {e}"));
            restarts.push((finished, down.elapsed()));
        } else if kill_at.last().is_some_and(|t| finished >= *t) {
            kill_at.pop();
            let victim = rng.random_range(0..workers.len());
            let name = format!("w{victim}-{generation}");
            generation += 1;
            let old = std::mem::replace(
                &mut workers[victim],
                spawn_worker(dir.path(), &url, &prefix, &queue, &name),
            );
            let mut child = old.child;
            frozen.retain(|(pid, _)| *pid != child.id());
            child.kill().unwrap(); // SIGKILL (a frozen process dies too)
            let _ = child.wait();
            kills.push((finished, old.name));
            every_worker.push(name);
        } else if pause_at.last().is_some_and(|t| finished >= *t) {
            pause_at.pop();
            let victim = &workers[rng.random_range(0..workers.len())];
            let pid = victim.child.id();
            if !frozen.iter().any(|(p, _)| *p == pid) {
                chaos::signal(pid, "STOP").unwrap_or_else(|e| panic!("{e}"));
                // Frozen past its lease: whatever it holds is reclaimed meanwhile.
                let resume_at = Instant::now() + Duration::from_millis(LEASE_MS + 1_000);
                frozen.push((pid, resume_at));
                pauses.push((finished, victim.name.clone()));
            }
        }
        if finished >= TASKS
            && kill_at.is_empty()
            && restart_at.is_empty()
            && pause_at.is_empty()
            && frozen.is_empty()
        {
            break;
        }
    }
    let enqueued = producer.await.unwrap();
    for mut w in workers {
        let _ = w.child.kill();
        let _ = w.child.wait();
    }
    let elapsed = started.elapsed();
    let refused: Vec<&String> = enqueued.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(refused.is_empty(), "enqueues not accepted: {refused:?}");

    // ---- the verdict: the store's final state against every worker's records ----
    let mut records: HashMap<String, Vec<(String, Record)>> = HashMap::new();
    for name in &every_worker {
        let text =
            std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
        for r in parse_log(&text) {
            records
                .entry(r.task.clone())
                .or_default()
                .push((name.clone(), r));
        }
    }
    let mut f = Figures {
        tasks: ids.len(),
        ..Figures::default()
    };
    for id in &ids {
        let key = id.to_string();
        let mine = records.remove(&key).unwrap_or_default();
        let count = |e: Event| mine.iter().filter(|(_, r)| r.event == e).count();
        let execs = count(Event::Exec);
        let failed = count(Event::Failed);
        f.executions += execs;
        f.fenced_calls += count(Event::Lost);
        if execs > 1 {
            f.tasks_executed_more_than_once += 1;
        }
        let dones: Vec<&(String, Record)> = mine
            .iter()
            .filter(|(_, r)| r.event == Event::Done)
            .collect();
        if dones.len() > 1 {
            f.duplicate_completions.push(format!("{key}: {dones:?}"));
        }
        let mut task = None;
        for _ in 0..50 {
            match store.get(&queue, *id).await {
                Ok(t) => {
                    task = Some(t);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let task = task.unwrap_or_else(|| panic!("cannot read task {key}"));
        match task {
            None => f.lost.push(format!("{key}: not found")),
            Some(t) if t.status == TaskStatus::Succeeded => {
                f.succeeded += 1;
                let result = t.result.clone().unwrap_or_default();
                let by = (
                    result["worker"].as_str().unwrap_or("").to_owned(),
                    result["token"].as_u64().unwrap_or(0),
                );
                match dones.as_slice() {
                    [] => {
                        // Accepted, but the worker died (or Redis did) before it heard so:
                        // the store's result must name a lease that was completing.
                        let sent = mine.iter().any(|(w, r)| {
                            matches!(r.event, Event::Completing | Event::Unknown)
                                && *w == by.0
                                && r.token == by.1
                        });
                        if sent {
                            f.completions_accepted_unacknowledged += 1;
                        } else {
                            f.fencing_violations.push(format!(
                                "{key}: succeeded by {by:?}, which never sent a completion"
                            ));
                        }
                    }
                    [(w, r)] if *w == by.0 && r.token == by.1 => {}
                    _ => f.fencing_violations.push(format!(
                        "{key}: the store kept the completion of {by:?}, the workers recorded {dones:?}"
                    )),
                }
                f.duplicate_executions += execs.saturating_sub(failed + 1);
            }
            Some(t) if t.status == TaskStatus::Dead => {
                f.dead += 1;
                if t.last_error.as_deref().unwrap_or("").is_empty() {
                    f.dead_without_reason.push(key.clone());
                }
                if !dones.is_empty() {
                    f.fencing_violations.push(format!(
                        "{key}: dead, yet a completion was accepted: {dones:?}"
                    ));
                }
                f.duplicate_executions += execs.saturating_sub(failed);
            }
            Some(t) => f.lost.push(format!("{key}: still {:?}", t.status)),
        }
    }
    let phantom: Vec<&String> = records.keys().collect();

    let kill_points: Vec<usize> = kills.iter().map(|(at, _)| *at).collect();
    let restart_points: Vec<(usize, u128)> = restarts
        .iter()
        .map(|(at, d)| (*at, d.as_millis()))
        .collect();
    let mut by_status = BTreeMap::new();
    by_status.insert("succeeded", f.succeeded);
    by_status.insert("dead", f.dead);
    eprintln!(
        "crash-safety figures: tasks={} {by_status:?} lost={} duplicate_completions={} \
         fencing_violations={} worker_kills={} (at finished={kill_points:?}) \
         worker_pauses={} (SIGSTOP past the lease, then SIGCONT) \
         redis_restarts={} (at finished, down ms={restart_points:?}) executions={} \
         duplicate_executions={} tasks_executed_more_than_once={} fenced_calls(LeaseLost)={} \
         completions_accepted_but_unacknowledged={} worker_processes={} elapsed={:.1}s",
        f.tasks,
        f.lost.len(),
        f.duplicate_completions.len(),
        f.fencing_violations.len(),
        kills.len(),
        pauses.len(),
        restarts.len(),
        f.executions,
        f.duplicate_executions,
        f.tasks_executed_more_than_once,
        f.fenced_calls,
        f.completions_accepted_unacknowledged,
        every_worker.len(),
        elapsed.as_secs_f64(),
    );

    assert!(f.tasks >= 1_000);
    assert!(kills.len() >= 10, "only {} worker kills", kills.len());
    assert!(
        restarts.len() >= 2,
        "only {} redis restarts",
        restarts.len()
    );
    assert!(
        kills.iter().all(|(at, _)| *at < TASKS) && restarts.iter().all(|(at, _)| *at < TASKS),
        "every kill and restart happened while tasks were left"
    );
    assert!(f.lost.is_empty(), "lost tasks: {:?}", f.lost);
    assert!(
        f.dead_without_reason.is_empty(),
        "dead without a reason: {:?}",
        f.dead_without_reason
    );
    assert!(
        f.duplicate_completions.is_empty(),
        "completions accepted twice: {:?}",
        f.duplicate_completions
    );
    assert!(
        f.fencing_violations.is_empty(),
        "fencing: {:?}",
        f.fencing_violations
    );
    assert!(
        phantom.is_empty(),
        "workers ran tasks nobody enqueued: {phantom:?}"
    );
    assert_eq!(f.succeeded + f.dead, TASKS);
    // The always-failing tasks must be dead, the rest (almost always) succeed; a task killed
    // on every one of its attempts may be dead too (with "lease expired" as its reason).
    assert!(f.dead >= TASKS / 20, "{} dead", f.dead);
    assert!(f.executions >= TASKS);
}

/// The tail of each worker's stderr, for a failing run.
fn diagnostics(dir: &Path, names: &[String]) -> String {
    names
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(format!("{n}.stderr"))).unwrap_or_default();
            let tail: String = text
                .chars()
                .rev()
                .take(400)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("[{n}] {tail}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
