//! Behaviour only a real Redis has: ACL users, the key layout as seen by an independent
//! client, a server restart under a running adapter, idle reservers that do not poll, and the
//! `NOSCRIPT` fallback.
//!
//! Tests that reconfigure or restart a server spawn their own (`RedisServer`), never touching
//! the shared one.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use spool_adapter_redis::testing::{self, RedisServer};
use spool_adapter_redis::{ReconnectSettings, RedisBackend, RedisConfig, Secret};
use spool_domain::limit::{Algorithm, Cost, LimitCheck, Policy};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{
    CacheKey, KeyPrefix, OperationId, PolicyName, ProjectId, QueueName, ScopedKey, StepName,
    Subject, TaskKind, UniqueKey, UserId,
};
use spool_domain::progress::{OperationSpec, OperationState, ProgressUpdate, StepSpec};
use spool_domain::task::{Failure, Lease, Retry, Schedule, TaskSpec};
use spool_ports::{
    CacheStore, Health, PortError, ProgressStore, QueueStore, RateLimitStore, ReserveOptions,
};

fn own_server() -> RedisServer {
    RedisServer::spawn().unwrap_or_else(|e| panic!("{e}"))
}

/// A private server and a backend connected to it under a fresh prefix.
async fn own_backend() -> (RedisServer, KeyPrefix, RedisBackend) {
    let server = own_server();
    let prefix = testing::unique_prefix();
    let backend = RedisBackend::connect(config(server.url(), &prefix))
        .await
        .unwrap();
    (server, prefix, backend)
}

/// The next ready task of `q`, leased for `lease` without waiting; fails the test when none is.
async fn take(queue: &impl QueueStore, q: &QueueName, lease: Duration) -> Lease {
    queue
        .reserve(std::slice::from_ref(q), ReserveOptions::new(lease))
        .await
        .unwrap()
        .expect("a ready task")
}

fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn config(url: String, prefix: &KeyPrefix) -> RedisConfig {
    let mut c = RedisConfig::new(url).prefix(prefix.clone());
    c.pool_size = 2;
    c.command_timeout = Duration::from_millis(800);
    c.connect_timeout = Duration::from_millis(800);
    c.reconnect = ReconnectSettings {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_attempts: 0,
    };
    c
}

fn scoped(project: &str, key: &str) -> ScopedKey {
    ScopedKey::new(
        ProjectId::parse(project).unwrap(),
        CacheKey::parse(key).unwrap(),
    )
}

fn check(policy: &str, limit: u64, window_ms: u64, algo: Algorithm, user: &str) -> LimitCheck {
    LimitCheck::new(
        Policy::new(
            PolicyName::parse(policy).unwrap(),
            limit,
            Duration::from_millis(window_ms),
            algo,
        )
        .unwrap(),
        Subject::User(UserId::parse(user).unwrap()),
    )
}

fn task(n: i64) -> TaskSpec {
    TaskSpec::new(TaskKind::parse("t.job").unwrap(), json!({ "n": n }))
}

fn op_spec(id: &str) -> OperationSpec {
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

/// Runs one operation of every port; panics on any error.
async fn exercise(backend: &RedisBackend, tag: &str) {
    let cache = backend.cache();
    let k = scoped("acme", &format!("k-{tag}"));
    cache
        .set(&k, Bytes::from_static(b"v"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cache.get(&k).await.unwrap(), Some(Bytes::from_static(b"v")));
    backend
        .rate_limiter()
        .check(
            &[check("per-min", 10, 60_000, Algorithm::SlidingWindow, "u1")],
            Cost::ONE,
        )
        .await
        .unwrap();
    let q = QueueName::parse(format!("q-{tag}")).unwrap();
    let queue = backend.queue();
    queue.enqueue(&q, task(1)).await.unwrap();
    let lease = queue
        .reserve(
            std::slice::from_ref(&q),
            ReserveOptions::new(Duration::from_secs(30)).wait(Duration::from_millis(100)),
        )
        .await
        .unwrap()
        .expect("a task");
    queue
        .complete(&q, lease.task.id, lease.token, None)
        .await
        .unwrap();
    let progress = backend.progress();
    let id = OperationId::parse(format!("op-{tag}")).unwrap();
    progress.start(op_spec(id.as_str())).await.unwrap();
    progress
        .update(
            &id,
            ProgressUpdate {
                message: Some("half".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let h = backend.health().check().await.unwrap();
    assert_eq!(h.backend, "redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_right_password_works_wrong_one_is_a_configuration_error() {
    let server = own_server();
    let prefix = testing::unique_prefix();
    let mut admin = raw(&server.url());
    let acl = |user: &str, pass: &str, pattern: &str| {
        vec![
            "SETUSER".to_owned(),
            user.to_owned(),
            "on".to_owned(),
            format!(">{pass}"),
            format!("~{pattern}"),
            format!("&{pattern}"),
            // Least privilege: the prefix's keys and channels, no @dangerous command (KEYS,
            // FLUSH*, CONFIG, DEBUG, ...) except INFO for the health check.
            "+@all".to_owned(),
            "-@dangerous".to_owned(),
            "+info".to_owned(),
        ]
    };
    redis::cmd("ACL")
        .arg(acl("spool-app", "right-horse", &format!("{prefix}:*")))
        .exec(&mut admin)
        .unwrap();
    redis::cmd("ACL")
        .arg(acl("elsewhere", "other-pass", "other:*"))
        .exec(&mut admin)
        .unwrap();

    // The password comes from a file, as in production.
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("redis-password");
    std::fs::write(&pw_file, "right-horse\n").unwrap();
    let right = config(server.url(), &prefix).credentials(
        Some("spool-app".into()),
        Some(spool_adapter_redis::secret_from_file(&pw_file).unwrap()),
    );
    let backend = RedisBackend::connect(right).await.unwrap();
    exercise(&backend, "acl").await;

    let wrong = config(server.url(), &prefix)
        .credentials(Some("spool-app".into()), Some(Secret::new("wrong-staple")));
    let err = RedisBackend::connect(wrong).await.unwrap_err();
    assert!(
        matches!(err, PortError::Configuration { .. }),
        "wrong password: {err:?}"
    );
    assert!(!err.is_transient());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("wrong-staple"), "{shown}");

    // Right password, but no permission on this prefix: NOPERM is a configuration error too.
    let fenced = config(server.url(), &prefix)
        .credentials(Some("elsewhere".into()), Some(Secret::new("other-pass")));
    match RedisBackend::connect(fenced).await {
        Err(e) => assert!(matches!(e, PortError::Configuration { .. }), "{e:?}"),
        Ok(b) => {
            let e = b.cache().get(&scoped("acme", "x")).await.unwrap_err();
            assert!(matches!(e, PortError::Configuration { .. }), "{e:?}");
        }
    }
}

/// CRC16/XMODEM as Redis Cluster uses it, written here independently of any client.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The cluster slot of a key, honouring the first non-empty `{...}` hash tag.
fn slot(key: &str) -> u16 {
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed.as_bytes()) % 16384
}

#[test]
fn slot_function_matches_redis_reference_values() {
    assert_eq!(crc16(b"123456789"), 0x31C3);
    assert_eq!(slot("foo"), 12182);
    assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
    assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
    assert_ne!(slot("a:{x}:1"), slot("a:{y}:1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_layout_prefix_slots_and_ttls_as_seen_by_an_independent_client() {
    let server = own_server();
    let prefix = testing::unique_prefix();
    let limits = StoreLimits {
        finished_retention: Duration::from_secs(3600),
        ..StoreLimits::default()
    };
    let backend = RedisBackend::connect(config(server.url(), &prefix).limits(limits))
        .await
        .unwrap();

    // Cache: two projects.
    let cache = backend.cache();
    for (p, k) in [("alpha", "a:1"), ("alpha", "a/2"), ("beta", "b:1")] {
        cache
            .set(
                &scoped(p, k),
                Bytes::from_static(b"v"),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
    }
    // Limiter: both algorithms, two subjects, one call.
    backend
        .rate_limiter()
        .check(
            &[
                check("per-sec", 5, 1000, Algorithm::SlidingWindow, "u1"),
                check("exact", 5, 60_000, Algorithm::SlidingLog, "u2"),
            ],
            Cost::ONE,
        )
        .await
        .unwrap();
    // Queue: a live, a delayed, a running, a finished task, with a unique key.
    let queue = backend.queue();
    let q = QueueName::parse("layout").unwrap();
    queue
        .enqueue(
            &q,
            task(1).unique_key(UniqueKey::parse("only-one").unwrap()),
        )
        .await
        .unwrap();
    queue
        .enqueue(
            &q,
            task(2).schedule(Schedule::After(Duration::from_secs(600))),
        )
        .await
        .unwrap();
    queue.enqueue(&q, task(3)).await.unwrap();
    queue.enqueue(&q, task(4)).await.unwrap();
    let first = take(&queue, &q, Duration::from_secs(60)).await;
    queue
        .complete(&q, first.task.id, first.token, Some(json!({"ok": true})))
        .await
        .unwrap();
    let second = take(&queue, &q, Duration::from_secs(60)).await;
    queue
        .fail(
            &q,
            second.task.id,
            second.token,
            Failure {
                error: "boom".into(),
                retry: Retry::Never,
            },
        )
        .await
        .unwrap();
    let _running = take(&queue, &q, Duration::from_secs(60)).await;
    // Progress.
    let progress = backend.progress();
    let op = OperationId::parse("layout-op").unwrap();
    progress.start(op_spec(op.as_str())).await.unwrap();
    progress
        .update(
            &op,
            ProgressUpdate {
                state: Some(OperationState::Succeeded),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // Inspect everything on this private server.
    let mut con = raw(&server.url());
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    assert!(!keys.is_empty());
    let p = prefix.as_str();
    for k in &keys {
        assert!(k.starts_with(&format!("{p}:")), "{k} is outside the prefix");
    }

    // Keys of one atomic unit share a slot; units are identified by their tag.
    let mut units: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for k in &keys {
        let unit = match (k.find('{'), k.find('}')) {
            (Some(a), Some(b)) if b > a => k[a..=b].to_owned(),
            _ => k.clone(),
        };
        units.entry(unit).or_default().push(k);
    }
    for (unit, members) in &units {
        let slots: std::collections::BTreeSet<u16> = members.iter().map(|k| slot(k)).collect();
        assert_eq!(slots.len(), 1, "unit {unit} spans slots: {members:?}");
    }
    for unit in [
        "{c:alpha}",
        "{c:beta}",
        "{rl}",
        "{q:layout}",
        "{p:layout-op}",
    ] {
        assert!(units.contains_key(unit), "no keys for {unit}: {keys:?}");
    }
    assert!(
        units["{rl}"].len() >= 2,
        "both limiter keys share the {{rl}} tag"
    );
    assert_ne!(
        slot(&format!("{p}:{{c:alpha}}:idx")),
        slot(&format!("{p}:{{c:beta}}:idx"))
    );

    // TTLs: what DESIGN.md says expires, expires; queue structures and live tasks persist.
    let pttl = |con: &mut redis::Connection, k: &str| -> i64 {
        redis::cmd("PTTL").arg(k).query(con).unwrap()
    };
    let mut expiring = 0;
    for k in &keys {
        let ttl = pttl(&mut con, k);
        let rest = &k[p.len() + 1..];
        let must_expire = rest.starts_with("{c:")
            || rest.starts_with("{rl}")
            || rest.starts_with("{p:")
            || (rest.starts_with("{q:") && rest.contains(":t:") && {
                let status: Option<String> = redis::cmd("HGET")
                    .arg(k)
                    .arg("status")
                    .query(&mut con)
                    .unwrap();
                matches!(status.as_deref(), Some("succeeded" | "dead" | "cancelled"))
            });
        if must_expire {
            assert!(ttl > 0, "{k} must expire, PTTL {ttl}");
            expiring += 1;
        } else {
            assert_eq!(ttl, -1, "{k} is a persistent structure or a live task");
        }
    }
    // 3 cache values + 2 indexes + 2 limiter keys + 2 finished tasks + snapshot + stream.
    assert!(expiring >= 11, "{expiring} expiring keys in {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_unavailable_while_down_then_recovers_without_rebuilding() {
    let (mut server, prefix, backend) = own_backend().await;
    exercise(&backend, "before").await;

    server.stop();
    let k = scoped("acme", "down");
    let err = backend.cache().get(&k).await.unwrap_err();
    assert!(err.is_transient(), "cache get while down: {err:?}");
    let err = backend
        .cache()
        .set(&k, Bytes::from_static(b"v"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "cache set while down: {err:?}");
    let err = backend
        .rate_limiter()
        .check(
            &[check("per-min", 10, 60_000, Algorithm::SlidingWindow, "u1")],
            Cost::ONE,
        )
        .await
        .unwrap_err();
    assert!(err.is_transient(), "limiter while down: {err:?}");
    let q = QueueName::parse("down").unwrap();
    let err = backend.queue().enqueue(&q, task(1)).await.unwrap_err();
    assert!(err.is_transient(), "enqueue while down: {err:?}");
    let err = backend.health().check().await.unwrap_err();
    assert!(
        matches!(err, PortError::Unavailable { .. }),
        "health while down: {err:?}"
    );

    server.start().unwrap();
    // fred reconnects in the background; give it a bounded number of tries.
    let mut recovered = false;
    for _ in 0..60 {
        if backend.health().check().await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the adapter did not reconnect");
    // The restarted server has an empty script cache: the NOSCRIPT fallback reloads them.
    exercise(&backend, "after").await;
    // The wake-up subscription made before the restart is back (fred re-subscribes).
    let channel = format!("{prefix}:{{q:q-before}}:wake");
    let mut con = raw(&server.url());
    let mut resubscribed = false;
    for _ in 0..60 {
        let (_, subs): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query(&mut con)
            .unwrap();
        if subs == 1 {
            resubscribed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resubscribed, "queue wake-ups were not re-subscribed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_reload_after_script_flush() {
    let server = own_server();
    let backend = RedisBackend::connect(config(server.url(), &testing::unique_prefix()))
        .await
        .unwrap();
    let mut con = raw(&server.url());
    redis::cmd("SCRIPT").arg("FLUSH").exec(&mut con).unwrap();
    exercise(&backend, "flushed").await;
}

fn command_calls(con: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(&format!("cmdstat_{command}:calls="))?;
            rest.split(',').next()?.parse().ok()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reserver_does_not_busy_poll_and_is_woken_by_pubsub() {
    let (server, prefix, backend) = own_backend().await;
    let queue = backend.queue();
    let q = QueueName::parse("idle").unwrap();
    let mut con = raw(&server.url());
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut con)
        .unwrap();

    // An empty queue, a 2.5 s wait: at most one look per second (plus the first and last).
    let got = queue
        .reserve(
            std::slice::from_ref(&q),
            ReserveOptions::new(Duration::from_secs(30)).wait(Duration::from_millis(2500)),
        )
        .await
        .unwrap();
    assert!(got.is_none());
    let looks = command_calls(&mut con, "evalsha");
    assert!(
        (1..=5).contains(&looks),
        "{looks} reserve scripts while idle"
    );

    // The waiting reserver is subscribed to the queue's exact channel (no pattern).
    let channel = format!("{prefix}:{{q:idle}}:wake");
    let (_, subs): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&channel)
        .query(&mut con)
        .unwrap();
    assert_eq!(subs, 1, "one subscriber connection per backend");
    let patterns: u64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut con).unwrap();
    assert_eq!(patterns, 0);

    // A waiting reserver gets a task enqueued while it waits.
    let waiter = {
        let queue = queue.clone();
        let q = q.clone();
        tokio::spawn(async move {
            queue
                .reserve(
                    std::slice::from_ref(&q),
                    ReserveOptions::new(Duration::from_secs(30)).wait(Duration::from_secs(20)),
                )
                .await
        })
    };
    let created = queue.enqueue(&q, task(7)).await.unwrap();
    let lease = waiter.await.unwrap().unwrap().expect("woken with the task");
    assert_eq!(lease.task.id, created.task().id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_harness_backends_are_isolated_by_prefix() {
    let a = testing::backend(StoreLimits::default()).await;
    let b = testing::backend(StoreLimits::default()).await;
    let k = scoped("same-project", "same-key");
    a.cache()
        .set(&k, Bytes::from_static(b"a"), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(b.cache().get(&k).await.unwrap(), None);
    b.cache().invalidate_project(&k.project).await.unwrap();
    assert_eq!(
        a.cache().get(&k).await.unwrap(),
        Some(Bytes::from_static(b"a"))
    );
    let h = a.health().check().await.unwrap();
    assert!(h.version.is_some());
    assert!(h.used_memory.unwrap_or(0) > 0);
}

#[tokio::test]
async fn bad_urls_are_configuration_errors() {
    for url in ["http://localhost:6379", "redis://[bad", "rediss-nope://x"] {
        let err = RedisBackend::connect(RedisConfig::new(url))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PortError::Configuration { .. }),
            "{url}: {err:?}"
        );
    }
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    // A port nothing listens on: bind, read the port, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = RedisConfig::new(format!("redis://127.0.0.1:{port}"));
    c.connect_timeout = Duration::from_millis(500);
    let err = RedisBackend::connect(c).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

fn server_ms(con: &mut redis::Connection) -> u64 {
    let (sec, usec): (u64, u64) = redis::cmd("TIME").query(con).unwrap();
    sec * 1000 + usec / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_domain_backoff_on_the_server_clock() {
    use spool_domain::backoff::{Backoff, Jitter};
    use spool_domain::task::{MaxAttempts, TaskStatus};

    let backend = testing::backend(StoreLimits::default()).await;
    let mut con = raw(&testing::redis_url());
    let queue = backend.queue();
    let q = QueueName::parse("backoff").unwrap();
    let backoff = Backoff::new(
        Duration::from_millis(40),
        Duration::from_millis(400),
        3,
        Jitter::None,
    )
    .unwrap();
    let created = queue
        .enqueue(
            &q,
            task(1)
                .backoff(backoff)
                .max_attempts(MaxAttempts::new(4).unwrap()),
        )
        .await
        .unwrap();
    let id = created.task().id;
    for attempt in 1..=4u32 {
        let lease = queue
            .reserve(
                std::slice::from_ref(&q),
                ReserveOptions::new(Duration::from_secs(30)).wait(Duration::from_secs(5)),
            )
            .await
            .unwrap()
            .expect("the retry becomes due");
        assert_eq!(lease.task.id, id);
        assert_eq!(lease.task.attempts, attempt);
        let before = server_ms(&mut con);
        let failed = queue
            .fail(
                &q,
                id,
                lease.token,
                Failure {
                    error: format!("attempt {attempt}"),
                    retry: Retry::Backoff,
                },
            )
            .await
            .unwrap();
        let after = server_ms(&mut con);
        assert_eq!(
            failed.last_error.as_deref(),
            Some(format!("attempt {attempt}").as_str())
        );
        if attempt == 4 {
            assert_eq!(failed.status, TaskStatus::Dead, "no attempts left");
            let finished = failed.finished_at.unwrap().as_millis();
            assert!((before..=after).contains(&finished));
            break;
        }
        assert_eq!(failed.status, TaskStatus::Failed);
        let delay = backoff.delay(attempt, 0.5).as_millis() as u64;
        let due = failed.scheduled_for.unwrap().as_millis();
        assert!(
            (before + delay..=after + delay).contains(&due),
            "attempt {attempt}: due {due} not in [{before}+{delay}, {after}+{delay}]"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_queue_without_double_delivery_or_double_reclaim() {
    use std::collections::HashSet;

    // Two backends on one prefix stand for two processes.
    let first = testing::test_config(StoreLimits::default());
    let a = RedisBackend::connect(first.clone()).await.unwrap();
    let b = RedisBackend::connect(first).await.unwrap();
    let q = QueueName::parse("shared").unwrap();
    let n = 40;
    for i in 0..n {
        a.queue().enqueue(&q, task(i)).await.unwrap();
    }
    let drain = |backend: RedisBackend, lease: Duration| {
        let q = q.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(l) = backend
                .queue()
                .reserve(std::slice::from_ref(&q), ReserveOptions::new(lease))
                .await
                .unwrap()
            {
                got.push(l);
            }
            got
        })
    };
    // Round 1: short leases that nobody heartbeats.
    let (ra, rb) = (
        drain(a.clone(), Duration::from_millis(1500)),
        drain(b.clone(), Duration::from_millis(1500)),
    );
    let (ra, rb) = (ra.await.unwrap(), rb.await.unwrap());
    let ids: Vec<_> = ra.iter().chain(&rb).map(|l| l.task.id).collect();
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), n as usize, "every task delivered");
    assert_eq!(unique.len(), ids.len(), "no task delivered twice");

    // Round 2: once the leases ran out, both processes reclaim concurrently; each task comes
    // back exactly once, with its second attempt and a newer fencing token.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (ra2, rb2) = (
        drain(a.clone(), Duration::from_secs(30)),
        drain(b.clone(), Duration::from_secs(30)),
    );
    let (ra2, rb2) = (ra2.await.unwrap(), rb2.await.unwrap());
    let again: Vec<_> = ra2.iter().chain(&rb2).collect();
    assert_eq!(
        again.len(),
        n as usize,
        "every expired lease reclaimed once"
    );
    let unique2: HashSet<_> = again.iter().map(|l| l.task.id).collect();
    assert_eq!(unique2.len(), again.len());
    for l in &again {
        assert_eq!(l.task.attempts, 2, "reclaimed once, reserved again");
        assert_eq!(
            l.task.last_error.as_deref(),
            Some("lease expired on attempt 1")
        );
    }
    // The stale tokens of round 1 are fenced off.
    let stale = &ra.iter().chain(&rb).next().unwrap();
    let err = a
        .queue()
        .complete(&q, stale.task.id, stale.token, None)
        .await
        .unwrap_err();
    assert!(matches!(err, PortError::LeaseLost { .. }), "{err:?}");
}

/// A task stored by an earlier version (kind, priority, timeout, correlation id and backoff as
/// separate hash fields, before they were packed into `spec` and `backoff`) is still read,
/// reserved and retried with its own backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_stored_in_the_earlier_layout_still_work() {
    let (server, prefix, backend) = own_backend().await;
    let queue = backend.queue();
    let q = QueueName::parse("legacy").unwrap();
    let id = "01J00000000000000000000000";
    let base = format!("{prefix}:{{q:legacy}}:");
    let mut con = raw(&server.url());
    redis::cmd("HSET")
        .arg(format!("{base}t:{id}"))
        .arg(&[
            ("id", id),
            ("kind", "old.kind"),
            ("payload", "{\"n\":1}"),
            ("priority", "3"),
            ("rank", "97"),
            ("attempts", "0"),
            ("max_attempts", "3"),
            ("backoff_initial_ms", "60000"),
            ("backoff_max_ms", "120000"),
            ("backoff_factor", "2"),
            ("backoff_jitter", "none"),
            ("timeout_ms", "900"),
            ("correlation_id", "req-old"),
            ("enqueued_at", "1000"),
            ("lease_seq", "0"),
            ("status", "queued"),
            ("ready_at", "1000"),
        ])
        .exec(&mut con)
        .unwrap();
    redis::cmd("ZADD")
        .arg(format!("{base}ready"))
        .arg(97u64 << 40)
        .arg(id)
        .exec(&mut con)
        .unwrap();
    redis::cmd("ZADD")
        .arg(format!("{base}waiting"))
        .arg(1000)
        .arg(id)
        .exec(&mut con)
        .unwrap();

    let lease = take(&queue, &q, Duration::from_secs(30)).await;
    let t = &lease.task;
    assert_eq!(t.id.to_string(), id);
    assert_eq!(t.kind.as_str(), "old.kind");
    assert_eq!(t.payload, json!({"n": 1}));
    assert_eq!(t.priority.get(), 3);
    assert_eq!(t.timeout_ms, Some(900));
    assert_eq!(
        t.correlation_id.as_ref().map(|c| c.as_str()),
        Some("req-old")
    );
    assert_eq!((t.backoff.initial_ms, t.backoff.max_ms), (60_000, 120_000));

    let failed = queue
        .fail(
            &q,
            t.id,
            lease.token,
            Failure {
                error: "boom".into(),
                retry: Retry::Backoff,
            },
        )
        .await
        .expect("the old task's backoff is read by the fail script");
    let started = failed.started_at.expect("started").as_millis();
    let due = failed.scheduled_for.expect("a retry time").as_millis();
    assert!(
        due >= started + 60_000,
        "retried after its own initial backoff: due {due}, started {started}"
    );
}

/// Writes carrying `LARGE_WRITE_BYTES` of values go by `MULTI`/`EXEC` (plain `SET`s and the
/// index script by `EVAL`), so their values never pass through Lua; they are stored, expire
/// and are invalidated exactly like small ones, also right after the script cache was
/// flushed (the transaction never depends on a cached script).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_cache_writes_go_by_transaction_and_stay_indexed() {
    let (server, prefix, backend) = own_backend().await;
    let mut con = raw(&server.url());
    redis::cmd("SCRIPT").arg("FLUSH").exec(&mut con).unwrap();
    let cache = backend.cache();
    let big = |b: u8| Bytes::from(vec![b; spool_adapter_redis::LARGE_WRITE_BYTES]);
    let ttl = Duration::from_secs(60);
    let exec_before = command_calls(&mut con, "exec");

    cache
        .set(&scoped("big", "a"), big(b'a'), ttl)
        .await
        .unwrap();
    // One write of a small and a large value: the pair goes by transaction.
    cache
        .set_many(vec![
            spool_ports::CacheEntry {
                key: scoped("big", "b"),
                value: Bytes::from_static(b"small"),
                ttl,
            },
            spool_ports::CacheEntry {
                key: scoped("big", "c"),
                value: big(b'c'),
                ttl: Duration::from_secs(120),
            },
        ])
        .await
        .unwrap();
    // A small write alone: the script.
    cache
        .set(&scoped("big", "d"), Bytes::from_static(b"tiny"), ttl)
        .await
        .unwrap();
    assert_eq!(command_calls(&mut con, "exec") - exec_before, 2);

    for (k, v) in [
        ("a", big(b'a')),
        ("b", Bytes::from_static(b"small")),
        ("c", big(b'c')),
        ("d", Bytes::from_static(b"tiny")),
    ] {
        assert_eq!(cache.get(&scoped("big", k)).await.unwrap(), Some(v), "{k}");
    }
    let p = prefix.as_str();
    let idx = format!("{p}:{{c:big}}:idx");
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&idx)
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(members, ["a", "b", "d", "c"], "indexed by expiry");
    let pttl = |con: &mut redis::Connection, k: &str| -> i64 {
        redis::cmd("PTTL").arg(k).query(con).unwrap()
    };
    let a = pttl(&mut con, &format!("{p}:{{c:big}}:k:a"));
    assert!(a > 0 && a <= 60_000, "value ttl {a}");
    let i = pttl(&mut con, &idx);
    assert!(
        i > 60_000 && i <= 120_003,
        "the index outlives its longest member: {i}"
    );

    cache
        .invalidate_project(&ProjectId::parse("big").unwrap())
        .await
        .unwrap();
    for k in ["a", "b", "c", "d"] {
        assert_eq!(cache.get(&scoped("big", k)).await.unwrap(), None, "{k}");
    }
}
