//! # Running on Redis Cluster
//!
//! The application code does not change: only the [`RedisConfig`] does.
//!
//! ```no_run
//! use std::time::Duration;
//! use spool_adapter_redis::{secret_from_env, RedisBackend, RedisConfig, ReplicaAcks};
//!
//! # async fn run() -> Result<(), spool_ports::PortError> {
//! // SPOOL_REDIS_CLUSTER=10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000
//! let seeds = std::env::var("SPOOL_REDIS_CLUSTER").unwrap_or_default();
//! let config = RedisConfig::cluster(&seeds)?
//!     .credentials(Some("spool".into()), secret_from_env("SPOOL_REDIS_PASSWORD")?)
//!     // Optional: an `Ok` from a queue write means one replica has it too.
//!     .replica_acks(ReplicaAcks::new(1, Duration::from_millis(250)));
//! let backend = RedisBackend::connect(config).await?;
//! # let _ = backend; Ok(()) }
//! ```
//!
//! - **Seeds.** One reachable node is enough; the client reads the slot map (`CLUSTER SLOTS`),
//!   connects to every primary, follows `MOVED` / `ASK`, and after a failover reconnects using
//!   the seeds *and* every node of the last slot map. `rediss://host:port` seeds use TLS (every
//!   seed then must); the CA file, credentials, pool size and timeouts mean what they mean on
//!   one server. Node certificates must be valid for the addresses the cluster announces
//!   (`CLUSTER SLOTS`: IPs unless `cluster-announce-hostname` and
//!   `cluster-preferred-endpoint-type hostname` are set).
//! - **Connections.** Each pool client holds one connection per primary, plus one subscriber
//!   client per backend (also one connection per primary).
//! - **Redis version.** 7.0 or later is recommended: wake-ups then use sharded pub/sub
//!   (`SPUBLISH` / `SSUBSCRIBE`, below). On a cluster with a 6.x primary the adapter falls back
//!   to `PUBLISH`, chosen once at connect.
//! - **ACL.** ACL users are per node and not replicated: create the user (the one in the crate
//!   docs works unchanged — `&spool:*` covers the shard channels, `CLUSTER SLOTS` / `CLUSTER
//!   INFO` are not `@dangerous`) on **every** node, replicas included, or a promoted replica
//!   refuses the adapter.
//! - **Scripts.** They are `SCRIPT LOAD`ed on every primary at connect. A node that never saw
//!   them (a promoted replica, a node added later, a restart) answers `NOSCRIPT` once; the
//!   adapter then sends the body with `EVAL` to the same slot, which caches it there.
//! - **Health** probes every primary (see `RedisHealth`): one that does not answer fails the
//!   check, because its slots are unavailable.
//! - **Server settings.** `cluster-node-timeout` bounds how long a dead primary's slots stay
//!   unavailable (detection takes about the timeout, the election a second or two more);
//!   `cluster-require-full-coverage no` keeps the other shards serving meanwhile. Run primaries
//!   with persistence (AOF) or make sure a crashed primary does not restart before its replica
//!   took over: a primary that restarts empty within the node timeout keeps its slots and
//!   replicates its emptiness.
//!
//! ## Key and slot layout
//!
//! Every key of one atomic unit carries the same hash tag, so every script and every
//! multi-key command touches exactly one slot; the adapter checks this before sending any
//! script (a violation is an `Internal` error on every deployment, not a `CROSSSLOT` that only
//! shows on a cluster). The prefix is outside the tag, so it never moves a unit.
//!
//! | unit | hash tag | keys under `<prefix>:{tag}:` | commands | on which node |
//! |---|---|---|---|---|
//! | one project's cache scope | `{c:<project>}` | `k:<key>` values, `idx` | `GET`, `MGET` (one per project), scripts | the primary owning slot(`c:<project>`) |
//! | all rate limits | `{rl}` | `<policy>:<limit>:<window>:<algo>:<subject>` | one script per check | **one** primary for the whole deployment |
//! | one queue | `{q:<queue>}` | `ready`, `waiting`, `scheduled`, `running`, `succeeded`, `dead`, `cancelled`, `seq`, `t:<id>`, `u:<unique key>`; channel `wake` | one script per transition | the primary owning slot(`q:<queue>`) |
//! | one progress operation | `{p:<id>}` | `op`, `ev` stream; channel `wake` | one script per update / read, `GET` | the primary owning slot(`p:<id>`) |
//! | queue registry | none | `<prefix>:queues` | `SADD` (once per queue and process), `SMEMBERS` (stats of all queues) | the primary owning that key's slot |
//!
//! **What spreads and what does not.** Projects, queues and operations spread over the
//! primaries by name. One queue is one slot: its throughput is one primary's; a queue that
//! outgrows a primary is split into several names (`embeddings-0`..`embeddings-7`), reserved
//! from together. The limiter is one slot on purpose (a multi-subject check stays one atomic
//! script; see [`crate::limiter`]); its state is tiny, its CPU is the ceiling. `get_many` and
//! `set_many` run one command per project concurrently, so a batch over many projects talks to
//! several nodes at once. `stats` of all queues reads the registry, then one script per queue.
//!
//! **Resharding** moves whole slots, so whole units: a unit is never split. While its slot
//! migrates, a script may get `TRYAGAIN`; that is `Unavailable` (transient), retried by the
//! caller.
//!
//! ## Pub/sub
//!
//! Idle reservers and progress subscribers wait on a channel that shares the unit's tag
//! (`<prefix>:{q:<queue>}:wake`, `<prefix>:{p:<id>}:wake`). On a Redis 7 cluster the scripts
//! publish with `SPUBLISH` and the adapter subscribes with `SSUBSCRIBE`: a wake-up stays inside
//! the shard owning the unit instead of being broadcast over the cluster bus to every node (what
//! `PUBLISH` does — its cost grows with the node count). After any reconnect (a failover
//! included) the adapter subscribes again, retrying until the new primary answers, then wakes
//! every waiter so a message lost meanwhile costs nothing; waiters also re-check by themselves
//! within 1 s. Pub/sub only shortens waits: no task or event depends on a message arriving.
//!
//! ## Failover: what Redis Cluster can lose, and how `WAIT` narrows it
//!
//! Replication is asynchronous. A write the primary acknowledged may not have reached its
//! replica when the primary dies; the promoted replica does not have it. For spool that means:
//!
//! | lost write | effect |
//! |---|---|
//! | `enqueue` | the task is gone although the caller got its id |
//! | `complete` / `fail` / `release` / `cancel` / `requeue` | the task is back in its previous state; a running task's lease expires and it runs again (at-least-once holds; fencing still refuses the old lease) |
//! | `reserve` / `heartbeat` | the task is delivered again / its lease ends earlier (at-least-once) |
//! | cache `set` / `invalidate_project` | a miss / **a stale value may survive until its TTL** |
//! | limiter check | up to the lost requests pass again within the window |
//! | progress `update` | the event is missing; later events get later IDs (server time), so resuming still works |
//!
//! During a network partition a primary on the minority side keeps accepting writes for up to
//! `cluster-node-timeout`; those are lost when the partition heals.
//!
//! [`ReplicaAcks`] narrows the loss for the queue: after each successful `enqueue`,
//! `complete`, `fail`, `release`, `cancel` and `requeue` the adapter sends `WAIT <replicas> <timeout>` on
//! the connection that carried the write. With [`AckShortfall::Fail`] (the default) an `Ok`
//! then means the write is on the primary and on that many replicas; failover promotes the
//! most up-to-date replica, so an acknowledged task survives the loss of its primary (the
//! failover test in `tests/cluster_failover.rs` kills a primary and finds every acknowledged
//! task on the promoted replica). What it costs and what it does not do:
//!
//! - one extra round trip per queue write, and the replica's replication lag on top;
//! - a shortfall (a replica down, or none left after a failover until the old primary rejoins
//!   as a replica) fails the write as `Unavailable` after the timeout — **the write itself is
//!   still applied on the primary**, so a retried `enqueue` may create a duplicate unless the
//!   task has a unique key. [`AckShortfall::Warn`] logs instead and keeps writes available;
//! - right after a replica (re)synchronises, its primary may already list it as online while
//!   the first `WAIT` still times out (seen on Redis 7.0): expect a shortfall or two whenever
//!   a replica (re)joins;
//! - `WAIT` blocks its connection (shared by concurrent calls of that pool client) for up to
//!   the timeout when replicas are missing: keep the timeout short;
//! - it is not consensus: a partition can still lose an acknowledged write (Redis's own
//!   caveat), and cache, limiter and progress writes are never waited for.
//!
//! [`RedisConfig`]: crate::RedisConfig
//! [`ReplicaAcks`]: crate::ReplicaAcks
//! [`AckShortfall::Fail`]: crate::AckShortfall::Fail
//! [`AckShortfall::Warn`]: crate::AckShortfall::Warn

use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand};
use spool_domain::time::duration_millis;
use spool_ports::PortError;

use crate::config::{AckShortfall, ReplicaAcks};
use crate::error::classify;

/// `WAIT <replicas> <timeout>` on `client`'s connection to the node owning `slot` — the
/// connection that just carried the write — and the [`AckShortfall`] policy on its answer.
pub(crate) async fn wait_for_replicas(
    client: &Client,
    slot: u16,
    acks: &ReplicaAcks,
) -> Result<(), PortError> {
    let wait = CustomCommand::new_static("WAIT", ClusterHash::Custom(slot), false);
    let timeout_ms = duration_millis(acks.timeout).max(1);
    let confirmed: i64 = client
        .custom(
            wait,
            vec![acks.replicas.to_string(), timeout_ms.to_string()],
        )
        .await
        .map_err(classify)?;
    if confirmed >= i64::from(acks.replicas) {
        return Ok(());
    }
    let message = format!(
        "the write is applied on the primary but only {confirmed} of {} replicas confirmed it within {timeout_ms} ms; it may be lost if the primary fails now",
        acks.replicas
    );
    match acks.shortfall {
        AckShortfall::Fail => Err(PortError::Unavailable {
            message,
            source: None,
        }),
        AckShortfall::Warn => {
            tracing::warn!("{message}");
            Ok(())
        }
    }
}
