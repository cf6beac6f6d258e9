//! The whole conformance suite — and what only a cluster shows — against a Redis Cluster:
//! `SPOOL_TEST_REDIS_CLUSTER` when set, else 3 primaries + 3 replicas spawned once for this
//! test process (see `spool_adapter_redis::testing`). Every test path contains `cluster`, the
//! suite's also `conformance` (`cluster::conformance_queue::...`), so
//! `cargo test -p spool-adapter-redis cluster` runs exactly these (and the failover test).
//!
//! Nothing here changes the cluster: tests write under random prefixes and only read what
//! they check.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::json;
use spool_adapter_redis::testing::{self, NodeInfo};
use spool_domain::limit::{Algorithm, Cost, LimitCheck, Policy};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{
    CacheKey, OperationId, PolicyName, ProjectId, QueueName, ScopedKey, StepName, Subject,
    TaskKind, UserId,
};
use spool_domain::progress::{OperationSpec, ProgressUpdate, StepSpec};
use spool_domain::task::TaskSpec;
use spool_ports::conformance::{Fixture, TestClock};
use spool_ports::{CacheStore, Health, ProgressStore, QueueStore, RateLimitStore, ReserveOptions};

struct RealTime;

#[async_trait]
impl TestClock for RealTime {
    async fn advance(&self, by: Duration) {
        tokio::time::sleep(by).await;
    }
}

fn fixture(limits: StoreLimits) -> Pin<Box<dyn Future<Output = Fixture> + Send>> {
    Box::pin(async move {
        let backend = testing::cluster_backend(limits.clone()).await;
        Fixture {
            cache: Arc::new(backend.cache()),
            limiter: Arc::new(backend.rate_limiter()),
            queue: Arc::new(backend.queue()),
            progress: Arc::new(backend.progress()),
            health: Arc::new(backend.health()),
            clock: Arc::new(RealTime),
            limits,
        }
    })
}

mod cluster {
    use super::fixture;

    spool_ports::conformance_suite!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        fixture
    );
}

// ---- what only a cluster shows ---------------------------------------------------------------

fn raw(host: &str, port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://{host}:{port}/"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
}

/// The cluster's nodes as the first answering seed sees them, with that seed's host.
fn topology() -> (String, Vec<NodeInfo>) {
    testing::cluster_nodes(&testing::cluster_seeds()).unwrap()
}

fn owner(nodes: &[NodeInfo], slot: u16) -> u16 {
    testing::slot_owner(nodes, slot).unwrap_or_else(|| panic!("no primary serves slot {slot}"))
}

/// Every key under `prefix` on the node at `port` (`SCAN`, test inspection only).
fn keys_on(host: &str, port: u16, prefix: &str) -> Vec<String> {
    let mut con = raw(host, port);
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            return keys;
        }
    }
}

fn scoped(project: &str, key: &str) -> ScopedKey {
    ScopedKey::new(
        ProjectId::parse(project).unwrap(),
        CacheKey::parse(key).unwrap(),
    )
}

fn task(n: i64) -> TaskSpec {
    TaskSpec::new(TaskKind::parse("t.job").unwrap(), json!({ "n": n }))
}

/// `count` names `<stem>-<i>` whose hash tag `{<tag>:<name>}` falls evenly into each third
/// of the slot space (so on a cluster with several primaries, on several of them).
fn spread_names(stem: &str, tag: &str, count: usize) -> Vec<String> {
    let mut by_third: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for i in 0.. {
        let name = format!("{stem}-{i}");
        let tag = format!("{{{tag}:{name}}}");
        let third = testing::key_slot(&tag) / 5462;
        let bucket = by_third.entry(third).or_default();
        if bucket.len() < count.div_ceil(3) {
            bucket.push(name);
        }
        if by_third.values().map(Vec::len).sum::<usize>() >= count {
            break;
        }
    }
    by_third.into_values().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_units_spread_over_primaries_and_each_unit_lives_in_one_slot() {
    let backend = testing::cluster_backend(StoreLimits::default()).await;
    let prefix = backend.prefix().to_owned();
    let projects = spread_names("proj", "c", 6);
    let queues = spread_names("queue", "q", 6);
    let ops = spread_names("op", "p", 6);

    let cache = backend.cache();
    for p in &projects {
        cache
            .set_many(
                ["a", "b"]
                    .iter()
                    .map(|k| spool_ports::CacheEntry {
                        key: scoped(p, k),
                        value: Bytes::from_static(b"v"),
                        ttl: Duration::from_secs(60),
                    })
                    .collect(),
            )
            .await
            .unwrap();
    }
    // One get_many across every project: one MGET per project, on their nodes.
    let all: Vec<ScopedKey> = projects.iter().map(|p| scoped(p, "b")).collect();
    let got = cache.get_many(&all).await.unwrap();
    assert!(got.iter().all(|v| v.as_deref() == Some(b"v".as_slice())));
    // A large write is a transaction (SETs + EVAL of the index script): on its slot's node.
    let large = Bytes::from(vec![b'L'; spool_adapter_redis::LARGE_WRITE_BYTES]);
    for p in &projects {
        cache
            .set(&scoped(p, "large"), large.clone(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            cache.get(&scoped(p, "large")).await.unwrap(),
            Some(large.clone())
        );
    }
    let queue = backend.queue();
    for q in &queues {
        let q = QueueName::parse(q.as_str()).unwrap();
        queue.enqueue(&q, task(1)).await.unwrap();
        let lease = queue
            .reserve(
                std::slice::from_ref(&q),
                ReserveOptions::new(Duration::from_secs(30)),
            )
            .await
            .unwrap()
            .unwrap();
        queue
            .complete(&q, lease.task.id, lease.token, None)
            .await
            .unwrap();
    }
    let stats = queue.stats(&[]).await.unwrap();
    assert_eq!(stats.len(), queues.len(), "the registry lists every queue");
    assert!(stats.iter().all(|s| s.succeeded == 1), "{stats:?}");
    let progress = backend.progress();
    for o in &ops {
        let id = OperationId::parse(o.as_str()).unwrap();
        progress
            .start(OperationSpec {
                id: Some(id.clone()),
                correlation_id: None,
                steps: vec![StepSpec {
                    name: StepName::parse("only").unwrap(),
                    weight: 1,
                }],
                message: None,
            })
            .await
            .unwrap();
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
    }
    let limiter = backend.rate_limiter();
    let check = |user: &str| {
        LimitCheck::new(
            Policy::new(
                PolicyName::parse("per-min").unwrap(),
                10,
                Duration::from_secs(60),
                Algorithm::SlidingWindow,
            )
            .unwrap(),
            Subject::User(UserId::parse(user).unwrap()),
        )
    };
    assert!(
        limiter
            .check(&[check("u1"), check("u2")], Cost::ONE)
            .await
            .unwrap()
            .allowed
    );

    // Where every key of this prefix is, node by node.
    let (host, nodes) = topology();
    let primaries: Vec<u16> = nodes.iter().filter(|n| n.primary).map(|n| n.port).collect();
    let mut found: BTreeMap<String, u16> = BTreeMap::new();
    for &port in &primaries {
        for k in keys_on(&host, port, &prefix) {
            found.insert(k, port);
        }
    }
    assert!(!found.is_empty());
    let mut units: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for (key, port) in &found {
        let slot = testing::key_slot(key);
        assert_eq!(
            *port,
            owner(&nodes, slot),
            "{key} is not on its slot's primary"
        );
        let unit = match (key.find('{'), key.find('}')) {
            (Some(a), Some(b)) if b > a => key[a..=b].to_owned(),
            _ => key.clone(),
        };
        units.entry(unit).or_default().insert(slot);
    }
    for (unit, slots) in &units {
        assert_eq!(slots.len(), 1, "unit {unit} spans slots {slots:?}");
    }
    for p in &projects {
        assert!(units.contains_key(&format!("{{c:{p}}}")), "{p}: {units:?}");
    }
    for q in &queues {
        assert!(units.contains_key(&format!("{{q:{q}}}")), "{q}: {units:?}");
    }
    for o in &ops {
        assert!(units.contains_key(&format!("{{p:{o}}}")), "{o}: {units:?}");
    }
    assert!(units.contains_key("{rl}"));
    assert!(units.contains_key(&format!("{prefix}:queues")));
    // Units spread: as many primaries hold them as own the names' slots.
    let expected: BTreeSet<u16> = units
        .values()
        .flat_map(|s| s.iter().map(|&slot| owner(&nodes, slot)))
        .collect();
    let actual: BTreeSet<u16> = found.values().copied().collect();
    assert_eq!(actual, expected);
    if primaries.len() >= 3 {
        assert!(
            actual.len() >= 2,
            "everything landed on one primary: {actual:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wake_ups_use_sharded_pubsub_on_the_queue_shard() {
    let backend = testing::cluster_backend(StoreLimits::default()).await;
    let prefix = backend.prefix().to_owned();
    let queue = backend.queue();
    let q = QueueName::parse("wake-me").unwrap();
    let channel = format!("{prefix}:{{q:wake-me}}:wake");
    let (host, nodes) = topology();
    let shard = owner(&nodes, testing::key_slot(&channel));

    // An independent sharded subscriber on the shard's primary.
    let mut listener = raw(&host, shard);
    redis::cmd("SSUBSCRIBE")
        .arg(&channel)
        .exec(&mut listener)
        .unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    // An idle reserver subscribes (sharded) and gets a task enqueued while it waits.
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
    let mut shard_con = raw(&host, shard);
    let mut subscribed = false;
    for _ in 0..100 {
        let (_, n): (String, u64) = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(&channel)
            .query(&mut shard_con)
            .unwrap();
        // Ours plus the reserver's.
        if n >= 2 {
            subscribed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(subscribed, "the reserver did not SSUBSCRIBE on the shard");
    let (_, plain): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&channel)
        .query(&mut shard_con)
        .unwrap();
    assert_eq!(plain, 0, "no plain SUBSCRIBE on a Redis 7 cluster");

    let created = queue.enqueue(&q, task(7)).await.unwrap();
    let lease = waiter.await.unwrap().unwrap().expect("woken with the task");
    assert_eq!(lease.task.id, created.task().id);

    // The enqueue script SPUBLISHed on the queue's channel.
    let message = tokio::task::spawn_blocking(move || listener.recv_response())
        .await
        .unwrap();
    match message {
        Ok(redis::Value::Array(parts)) | Ok(redis::Value::Push { data: parts, .. }) => {
            let words: Vec<String> = parts
                .iter()
                .filter_map(|v| match v {
                    redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                words.first().map(String::as_str),
                Some("smessage"),
                "{words:?}"
            );
            assert_eq!(words.get(1), Some(&channel));
        }
        Ok(other) => panic!("unexpected message {other:?}"),
        Err(e) => panic!("no SPUBLISH reached the shard within 10 s: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_health_asks_every_primary() {
    let backend = testing::cluster_backend(StoreLimits::default()).await;
    let h = backend.health().check().await.unwrap();
    assert_eq!(h.backend, "redis");
    let (host, nodes) = topology();
    let mut single_max = 0u64;
    let mut versions = BTreeSet::new();
    for n in nodes.iter().filter(|n| n.primary) {
        let mut con = raw(&host, n.port);
        let info: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
        let v = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap()
            .trim()
            .to_owned();
        versions.insert(v);
        let mem: String = redis::cmd("INFO").arg("memory").query(&mut con).unwrap();
        let used: u64 = mem
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        single_max = single_max.max(used);
    }
    let shown = h.version.unwrap();
    for v in &versions {
        assert!(shown.contains(v.as_str()), "{shown} lacks {v}");
    }
    let used = h.used_memory.unwrap();
    if nodes.iter().filter(|n| n.primary).count() > 1 {
        // A sum over every primary: more than any one of them holds (each holds > 1 MB).
        assert!(used > single_max, "{used} <= {single_max}");
    }
}
