//! Failover on a Redis Cluster of its own (3 primaries + 3 replicas, `cluster-node-timeout`
//! 2 s, automatic promotion — no `CLUSTER FAILOVER` is sent): the primary owning a queue is
//! killed with SIGKILL, its replica is promoted by the cluster, the same backend resumes by
//! itself, and no task acknowledged under `WAIT` is lost.
//!
//! It always spawns its own cluster (it kills and restarts nodes), even when
//! `SPOOL_TEST_REDIS_CLUSTER` names one. The measured times are printed (`--nocapture`), never
//! asserted: the only time bound is a generous overall timeout per phase.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::json;
use spool_adapter_redis::testing::{self, ClusterOptions, RedisCluster};
use spool_adapter_redis::{
    AckShortfall, ReconnectSettings, RedisBackend, RedisConfig, ReplicaAcks, Secret,
};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{KeyPrefix, QueueName, TaskId, TaskKind};
use spool_domain::task::TaskSpec;
use spool_ports::{Health, PortError, QueueStore, ReserveOptions};

/// How long any phase may take before the test fails (not a performance bound).
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

fn task(n: i64) -> TaskSpec {
    TaskSpec::new(TaskKind::parse("t.job").unwrap(), json!({ "n": n }))
}

fn config(seeds: &str, prefix: &KeyPrefix, shortfall: AckShortfall) -> RedisConfig {
    let mut c = RedisConfig::cluster(seeds)
        .unwrap()
        .prefix(prefix.clone())
        .limits(StoreLimits {
            finished_retention: Duration::from_secs(3600),
            ..StoreLimits::default()
        })
        .credentials(
            Some("spool-app".into()),
            Some(Secret::new("failover-horse")),
        )
        .replica_acks(ReplicaAcks::new(1, Duration::from_millis(500)).on_shortfall(shortfall));
    c.pool_size = 2;
    c.connect_timeout = Duration::from_secs(1);
    c.command_timeout = Duration::from_secs(1);
    c.reconnect = ReconnectSettings {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(250),
        max_attempts: 0,
    };
    c
}

/// Retries `op` until it succeeds (bounded by [`PHASE_TIMEOUT`]); returns the value, the time
/// since `since`, and how many attempts failed.
async fn until_ok<T, F, Fut>(since: Instant, what: &str, mut op: F) -> (T, Duration, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let mut failures = 0;
    loop {
        match op().await {
            Ok(v) => return (v, since.elapsed(), failures),
            Err(e) => {
                assert!(
                    e.is_transient(),
                    "{what}: only transient errors are expected while the cluster recovers: {e:?}"
                );
                failures += 1;
                assert!(
                    since.elapsed() < PHASE_TIMEOUT,
                    "{what}: not back after {PHASE_TIMEOUT:?}; last error: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn info_field(cluster: &RedisCluster, port: u16, section: &str, field: &str) -> String {
    let mut con = cluster.connection(port).unwrap();
    let info: String = redis::cmd("INFO").arg(section).query(&mut con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO {section} of {port}"))
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_failover_promotes_the_replica_resumes_and_keeps_acknowledged_tasks() {
    let mut cluster = tokio::task::block_in_place(|| {
        RedisCluster::spawn_with(&ClusterOptions {
            // Short enough for a quick promotion, long enough that a loaded CI machine does not
            // trigger failovers of its own.
            node_timeout: Duration::from_millis(2000),
            ..ClusterOptions::default()
        })
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let seeds = cluster.seeds();
    let prefix = testing::unique_prefix();

    // The least-privilege user of the crate docs, on every node: ACLs are not replicated, and
    // the replica about to be promoted must know it too.
    for port in cluster.ports() {
        let mut con = cluster.connection(port).unwrap();
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("spool-app")
            .arg("on")
            .arg(">failover-horse")
            .arg(format!("~{prefix}:*"))
            .arg(format!("&{prefix}:*"))
            .arg("+@all")
            .arg("-@dangerous")
            .arg("+info")
            .exec(&mut con)
            .unwrap();
    }

    let q = QueueName::parse("failover").unwrap();
    let slot = testing::key_slot(&format!("{prefix}:{{q:failover}}:ready"));
    let any = cluster.ports()[0];
    let (primary, replicas) = cluster.primary_of_slot(any, slot).unwrap();
    assert_eq!(replicas.len(), 1, "one replica per primary");
    let replica = replicas[0];
    // SCRIPT LOAD reaches primaries only: the replica has never seen a script.
    assert_eq!(
        info_field(&cluster, replica, "memory", "number_of_cached_scripts"),
        "0"
    );

    let strict = RedisBackend::connect(config(&seeds, &prefix, AckShortfall::Fail))
        .await
        .unwrap();
    let queue = strict.queue();
    // A reserver that waited once holds the queue's wake-up subscription for its lifetime.
    assert!(queue
        .reserve(
            std::slice::from_ref(&q),
            ReserveOptions::new(Duration::from_secs(60)).wait(Duration::from_millis(10)),
        )
        .await
        .unwrap()
        .is_none());

    // Phase 1: every `Ok` means the task is on the primary and on its replica (WAIT 1).
    let mut acknowledged: Vec<TaskId> = Vec::new();
    for n in 0..20 {
        match queue.enqueue(&q, task(n)).await {
            Ok(t) => acknowledged.push(t.task().id),
            Err(e) => panic!("enqueue {n} before the failover: {e:?}"),
        }
    }

    // Phase 2: SIGKILL the primary; the cluster promotes the replica by itself.
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| cluster.kill(primary)).unwrap();
    // For the report only: when the replica itself says it is a primary.
    let promoted = {
        let mut con = cluster.connection(replica).unwrap();
        std::thread::spawn(move || {
            while killed_at.elapsed() < PHASE_TIMEOUT {
                let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut con).unwrap();
                if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
                    return Some(killed_at.elapsed());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        })
    };
    let (lease, resumed, failures) = until_ok(killed_at, "reserve after failover", || {
        queue.reserve(
            std::slice::from_ref(&q),
            ReserveOptions::new(Duration::from_secs(60)),
        )
    })
    .await;
    let promoted = promoted.join().unwrap().expect("the replica was promoted");
    eprintln!(
        "failover: SIGKILL of primary {primary}; replica promoted after {} ms; spool resumed after {} ms ({} ms after the promotion, {failures} failed attempts)",
        promoted.as_millis(),
        resumed.as_millis(),
        resumed.saturating_sub(promoted).as_millis()
    );
    let lease = lease.expect("the queue still holds the acknowledged tasks");
    assert!(acknowledged.contains(&lease.task.id));
    let (new_primary, _) = cluster.primary_of_slot(replica, slot).unwrap();
    assert_eq!(new_primary, replica, "the replica owns the slot now");

    // No acknowledged task is lost.
    for id in &acknowledged {
        let t = queue.get(&q, *id).await.unwrap();
        assert!(t.is_some(), "acknowledged task {id} was lost");
    }
    let stats = queue.stats(std::slice::from_ref(&q)).await.unwrap();
    assert_eq!(stats[0].queued + stats[0].running, 20, "{stats:?}");

    // The promoted replica never had the scripts: NOSCRIPT, then EVAL cached them there.
    let cached: u64 = info_field(&cluster, replica, "memory", "number_of_cached_scripts")
        .parse()
        .unwrap();
    assert!(cached > 0, "the new primary caches the scripts after EVAL");

    // The wake-up subscription followed the slot to the new primary.
    let channel = format!("{prefix}:{{q:failover}}:wake");
    let watching = Instant::now();
    loop {
        let mut con = cluster.connection(replica).unwrap();
        let (_, n): (String, u64) = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(&channel)
            .query(&mut con)
            .unwrap();
        if n == 1 {
            break;
        }
        assert!(
            watching.elapsed() < PHASE_TIMEOUT,
            "the queue's wake-up channel was not re-subscribed on the new primary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Phase 3: the new primary has no replica. A strict write is applied but refused as
    // unacknowledged; a `Warn` backend keeps writing.
    let refused = queue.enqueue(&q, task(100)).await.unwrap_err();
    assert!(
        matches!(&refused, PortError::Unavailable { message, .. } if message.contains("0 of 1 replicas")),
        "{refused:?}"
    );
    let lenient = RedisBackend::connect(config(&seeds, &prefix, AckShortfall::Warn))
        .await
        .unwrap();
    lenient.queue().enqueue(&q, task(101)).await.unwrap();
    let stats = queue.stats(std::slice::from_ref(&q)).await.unwrap();
    assert_eq!(
        stats[0].queued + stats[0].running,
        22,
        "the refused write is still applied on the primary: {stats:?}"
    );

    // Phase 4: the killed node comes back empty, rejoins as the new primary's replica, and
    // strict writes are acknowledged again.
    let restarted_at = Instant::now();
    tokio::task::block_in_place(|| cluster.restart(primary)).unwrap();
    let (_, replicated, _) = until_ok(restarted_at, "acknowledged enqueue after rejoin", || {
        queue.enqueue(&q, task(102))
    })
    .await;
    eprintln!(
        "failover: acknowledged writes resumed {} ms after the old primary restarted",
        replicated.as_millis()
    );
    tokio::task::block_in_place(|| cluster.wait_ready(PHASE_TIMEOUT)).unwrap();
    let (slot_owner, _) = cluster.primary_of_slot(replica, slot).unwrap();
    assert_eq!(slot_owner, replica, "the promoted replica keeps the slot");
    let link = info_field(&cluster, replica, "replication", "slave0");
    assert!(
        link.contains(&format!("port={primary},")),
        "the old primary is now the replica: {link}"
    );
    strict.health().check().await.unwrap();
    // The lease taken right after the failover is still the task's: it completes (through
    // the `Warn` backend — this checks fencing across the failover, not durability, and a
    // shortfall must not fail it if the cluster reshuffles again under load).
    let done = lenient
        .queue()
        .complete(&q, lease.task.id, lease.token, None)
        .await
        .unwrap();
    assert_eq!(done.id, lease.task.id);
}
