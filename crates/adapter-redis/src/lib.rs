//! # spool-adapter-redis
//!
//! Every spool port on Redis through [`fred`]: one round trip per operation, Lua scripts
//! (each in its own file under `lua/`, loaded once, called by SHA with a `NOSCRIPT`
//! fallback) wherever a change must be atomic, and time taken only from the server (`TIME`
//! inside scripts), so many instances agree.
//!
//! ```no_run
//! use std::sync::Arc;
//! use spool_adapter_redis::{secret_from_env, RedisBackend, RedisConfig};
//! use spool_ports::{CacheStore, Health};
//!
//! # async fn run() -> Result<(), spool_ports::PortError> {
//! let config = RedisConfig::new("redis://127.0.0.1:6379")
//!     .credentials(Some("spool".into()), secret_from_env("SPOOL_REDIS_PASSWORD")?);
//! let backend = RedisBackend::connect(config).await?;
//! let cache: Arc<dyn CacheStore> = Arc::new(backend.cache());
//! println!("{:?}", backend.health().check().await?);
//! # let _ = cache; Ok(()) }
//! ```
//!
//! ## Redis Cluster
//!
//! [`RedisConfig::cluster`] (`"host:port,host:port"`, the format of `SPOOL_REDIS_CLUSTER`)
//! runs every port unchanged on a Redis Cluster — the whole conformance suite runs against a
//! 3 + 3 node cluster. The [`cluster`] module documents how to run it, the key/slot layout,
//! what lives on which node, sharded pub/sub, failover, and what [`ReplicaAcks`] (`WAIT`)
//! protects.
//!
//! ## Keys
//!
//! Every key starts with the configured [`KeyPrefix`](spool_domain::names::KeyPrefix) and
//! carries one Redis Cluster hash tag per atomic unit — `{c:<project>}` per cache scope,
//! `{q:<queue>}` per queue, `{p:<operation>}` per progress operation, and one shared `{rl}`
//! for the limiter (so a multi-subject check stays atomic on a cluster; see [`limiter`]'s
//! trade-off). Components are validated newtypes that cannot contain `{`, `}` or glob
//! characters. Nothing here uses `KEYS`, `FLUSH*` or `SCAN`. Every script call checks that its
//! keys share one slot before it is sent.
//!
//! ## A least-privilege ACL user
//!
//! The adapter needs only the keys and channels under its prefix and no `@dangerous` command
//! except `INFO` (health). With the default prefix:
//!
//! ```text
//! ACL SETUSER spool on >CHANGE-ME resetchannels ~spool:* &spool:* +@all -@dangerous +info
//! ```
//!
//! Give the password through [`secret_from_env`] or [`secret_from_file`]; it is never
//! printed ([`RedisConfig`]'s `Debug` redacts it, also inside the URL). The test suite runs
//! every port under exactly this ACL (on a cluster too, where the user must exist on every
//! node).
//!
//! ## TLS
//!
//! `rediss://` URLs (and `rediss://host:port` cluster seeds) connect with rustls;
//! [`RedisConfig::tls_ca_file`] names a PEM CA for private certificates (the system roots are
//! used otherwise). A rejected certificate is a
//! `Configuration` error, not a transient one.
//!
//! ## Round trips per operation
//!
//! | port | operation | round trips |
//! |---|---|---|
//! | cache | `get` | 1 (`GET`) |
//! | cache | `get_many` | 1 `MGET` per project, concurrently |
//! | cache | `set`, `delete`, `invalidate_project` | 1 script |
//! | cache | `set_many` | 1 script per project, concurrently |
//! | limiter | `check` | 1 script |
//! | queue | `enqueue` | 1 script (+1 concurrent `SADD` the first time a process uses a queue) |
//! | queue | `reserve` | 1 script per queue tried (+1 `SUBSCRIBE` — `SSUBSCRIBE` on a Redis 7 cluster — the first time a process waits on a queue); again after each wake-up |
//! | queue | `heartbeat`, `complete`, `fail`, `cancel`, `requeue`, `get` | 1 script |
//! | queue | `stats` | 1 script per queue, concurrently (+1 `SMEMBERS` when no queue is named) |
//! | progress | `start`, `update`, `events_after` | 1 script |
//! | progress | `get` | 1 (`GET`) |
//! | progress | `subscribe` | 1 script (+1 `SUBSCRIBE` / `SSUBSCRIBE` for the first local subscriber), then 1 per wake-up |
//! | health | `check` | 2 (`PING`, `INFO`); on a cluster 2 per primary, concurrently |
//!
//! With [`ReplicaAcks`], queue writes (`enqueue`, `complete`, `fail`, `release`, `cancel`,
//! `requeue`) add one `WAIT`.
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `testing` | the `testing` module: finds or spawns a `redis-server` — or a 3 + 3 node Redis Cluster — for integration tests |

mod backend;
mod cache;
pub mod cluster;
mod config;
mod error;
mod health;
mod keys;
pub mod limiter;
mod progress;
mod queue;
mod reply;
mod scripts;
mod task_hash;
mod wake;

#[cfg(feature = "testing")]
pub mod testing;

pub use backend::RedisBackend;
pub use cache::{RedisCache, LARGE_WRITE_BYTES};
pub use config::{
    redact_url, secret_from_env, secret_from_file, AckShortfall, ClusterNode, ReconnectSettings,
    RedisConfig, ReplicaAcks, Secret, Topology, Transport,
};
pub use health::RedisHealth;
pub use limiter::RedisRateLimiter;
pub use progress::RedisProgress;
pub use queue::RedisQueue;
