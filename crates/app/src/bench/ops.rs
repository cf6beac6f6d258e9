//! The fixture (services over the chosen backend, the raw pool, pre-made names) and every
//! operation, through spool and raw.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::Pool;
use fred::interfaces::{KeysInterface, ListInterface, StreamsInterface};
use fred::types::lists::LMoveDirection;
use fred::types::Expiration;
use spool_adapter_memory::TokioClock;
use spool_adapter_redis::{RedisBackend, RedisConfig};
use spool_domain::limit::{Algorithm, Cost, Policy};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{
    KeyPrefix, OperationId, PolicyName, ProjectId, QueueName, StepName, TaskKind, UserId,
};
use spool_domain::progress::{OperationSpec, ProgressUpdate, StepRef, StepSpec};
use spool_ports::ReserveOptions;

use super::payload::Payload;
use super::runner::{closed_loop, Measured, Step, Stop};
use super::{BenchBackend, BenchError, BenchOptions, Budget, OpResult};
use crate::services::{
    CacheManager, CacheSettings, EnqueueOptions, FailureMode, ProgressTracker, QueueManager,
    QueuePolicies, RateLimitRequest, RateLimiter, RatePolicy, Scope, TtlPolicy,
};
use crate::wiring::{memory_backends, Backends};

/// How long everything the bench stores lives (cache TTLs, finished tasks, operations).
const KEEP: Duration = Duration::from_secs(600);
/// Distinct keys `cache.set` cycles through.
const SET_KEYS: usize = 1024;
/// Rounds per measurement, alternating which side goes first. Ten short rounds rather than
/// three long ones: a burst of a noisy neighbour (these VMs have second-long ones) then lands
/// on both sides more evenly, and with pairs in the order AB BA AB … a linear drift weighs
/// both sides exactly alike (limiter.check @1 ÷ raw GET over four runs each: 1.63–2.06 with
/// three rounds, 1.75–1.88 with ten; docs/PERFORMANCE.md).
const ROUNDS: u32 = 10;
/// The typed value `cache.get` reads and `cache.set` writes (~100 bytes of JSON) unless
/// `--value-bytes` is given.
const VALUE: &str = "a cached value of about one hundred bytes, as a session or a small profile would be: 0123456789";
/// The bytes of a padded payload besides its padding, at most: `{"n":` + 20 digits +
/// `,"pad":"` + `"}`.
const PAYLOAD_FRAME: usize = 35;
/// Lease of `queue.reserve_complete` reservations.
const LEASE: Duration = Duration::from_secs(60);

/// One measured operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A cache hit.
    CacheGet,
    /// A cache write.
    CacheSet,
    /// A rate-limit check against one policy.
    LimiterCheck,
    /// A rate-limit check against three policies at once.
    LimiterCheck3,
    /// An enqueue.
    QueueEnqueue,
    /// A reserve followed by its complete.
    QueueReserveComplete,
    /// A progress update.
    ProgressUpdate,
    /// A backlog of no-op tasks drained by the worker runtime.
    QueueE2e,
}

impl Op {
    /// Every operation, in the table's order.
    pub const ALL: [Op; 8] = [
        Op::CacheGet,
        Op::CacheSet,
        Op::LimiterCheck,
        Op::LimiterCheck3,
        Op::QueueEnqueue,
        Op::QueueReserveComplete,
        Op::ProgressUpdate,
        Op::QueueE2e,
    ];

    /// The name in the report (`cache.get`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Op::CacheGet => "cache.get",
            Op::CacheSet => "cache.set",
            Op::LimiterCheck => "limiter.check",
            Op::LimiterCheck3 => "limiter.check3",
            Op::QueueEnqueue => "queue.enqueue",
            Op::QueueReserveComplete => "queue.reserve_complete",
            Op::ProgressUpdate => "progress.update",
            Op::QueueE2e => "queue.e2e",
        }
    }

    /// The operation called `name`.
    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    /// The raw command it is compared with on Redis (`None`: no raw counterpart).
    pub fn raw_command(self) -> Option<&'static str> {
        match self {
            Op::CacheGet => Some("GET"),
            Op::CacheSet => Some("SET PX"),
            Op::LimiterCheck => Some("INCR"),
            Op::LimiterCheck3 => Some("INCR x3 (pipeline)"),
            Op::QueueEnqueue => Some("LPUSH"),
            Op::QueueReserveComplete => Some("LMOVE + LREM"),
            Op::ProgressUpdate => Some("XADD MAXLEN"),
            Op::QueueE2e => None,
        }
    }
}

/// Which side of the comparison a call runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Spool,
    Raw,
}

/// Raw-client state: the adapter's own pool and the bench's raw key names.
pub(crate) struct Raw {
    pub(crate) backend: RedisBackend,
    hot: String,
    set_keys: Vec<String>,
    counters: Vec<[String; 3]>,
    stream: Vec<String>,
    /// Per concurrency level: the list `LPUSH` fills and the list `LMOVE` moves to.
    lists: Vec<(usize, String, String)>,
    value: Bytes,
    event: Bytes,
}

impl Raw {
    fn pool(&self) -> &Pool {
        self.backend.raw_pool()
    }

    fn list(&self, c: usize) -> Result<(&str, &str), BenchError> {
        self.lists
            .iter()
            .find(|(k, _, _)| *k == c)
            .map(|(_, list, taken)| (list.as_str(), taken.as_str()))
            .ok_or_else(|| BenchError::Setup(format!("no raw list for concurrency {c}")))
    }
}

/// Everything the operations run on.
pub(crate) struct Fixture {
    backend_name: &'static str,
    server: Option<String>,
    pub(crate) cache: CacheManager,
    limiter1: RateLimiter,
    limiter3: RateLimiter,
    pub(crate) queue: QueueManager,
    pub(crate) progress: ProgressTracker,
    pub(crate) raw: Option<Raw>,
    project: ProjectId,
    set_keys: Vec<String>,
    /// The cache value (a JSON string of `--value-bytes` in all).
    value: String,
    /// The padding of task payloads under `--value-bytes`.
    pad: Option<String>,
    /// Under `--value-bytes`: the most tasks `queue.enqueue` keeps queued per side and
    /// concurrency level ([`BenchOptions::MAX_QUEUED_BYTES`] of payloads).
    max_queued: Option<u64>,
    requests: Vec<RateLimitRequest>,
    operations: Vec<OperationId>,
    pub(crate) kind: TaskKind,
    /// Per concurrency level: queued entries and the enqueue pace.
    stock: Vec<(usize, Stock)>,
    /// The queue of `queue.enqueue` / `queue.reserve_complete` per concurrency level.
    queues: Vec<(usize, QueueName)>,
    /// The queue of `queue.e2e`.
    pub(crate) e2e_queue: QueueName,
}

fn setup(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

fn limits() -> StoreLimits {
    StoreLimits {
        finished_retention: KEEP,
        operation_ttl: KEEP,
        ..StoreLimits::default()
    }
}

fn policy(name: &str, scope: Scope) -> Result<RatePolicy, BenchError> {
    // A limit no run reaches: every check is admitted and counted.
    let policy = Policy::new(
        PolicyName::parse(name).map_err(setup)?,
        Policy::MAX_LIMIT,
        Duration::from_secs(1),
        Algorithm::SlidingWindow,
    )
    .map_err(setup)?;
    Ok(RatePolicy {
        policy,
        scope,
        failure_mode: FailureMode::Local,
    })
}

impl Fixture {
    /// Builds the services on the chosen backend (Redis: under a fresh key prefix) and stores
    /// what the operations read.
    pub(crate) async fn connect(options: &BenchOptions) -> Result<Fixture, BenchError> {
        let limits = limits();
        let (backends, raw, server) = match options.backend {
            BenchBackend::Memory => (
                memory_backends(&limits, Arc::new(TokioClock::new())),
                None,
                None,
            ),
            BenchBackend::Redis => {
                let tail = ulid::Ulid::new().to_string().to_ascii_lowercase();
                let prefix =
                    KeyPrefix::parse(format!("spool-bench-{}", &tail[10..])).map_err(setup)?;
                let config = RedisConfig::new(options.redis_url.clone())
                    .prefix(prefix)
                    .limits(limits.clone());
                let backend = RedisBackend::connect(config).await.map_err(setup)?;
                let health = backend.health();
                let version = spool_ports::Health::check(&health)
                    .await
                    .map_err(setup)?
                    .version;
                let server = Some(match version {
                    Some(v) => format!("redis {v}"),
                    None => "redis".to_owned(),
                });
                let backends = Backends {
                    name: "redis",
                    cache: Arc::new(backend.cache()),
                    limiter: Arc::new(backend.rate_limiter()),
                    queue: Arc::new(backend.queue()),
                    progress: Arc::new(backend.progress()),
                    health: Arc::new(health),
                };
                let max_c = options
                    .concurrency
                    .iter()
                    .copied()
                    .max()
                    .unwrap_or(1)
                    .max(options.e2e_concurrency);
                let p = backend.prefix().to_owned();
                let raw = Raw {
                    hot: format!("{p}:raw:hot"),
                    set_keys: (0..SET_KEYS).map(|i| format!("{p}:raw:k{i}")).collect(),
                    counters: (0..max_c)
                        .map(|c| {
                            [
                                format!("{p}:raw:n:{c}:a"),
                                format!("{p}:raw:n:{c}:b"),
                                format!("{p}:raw:n:{c}:c"),
                            ]
                        })
                        .collect(),
                    stream: (0..max_c).map(|c| format!("{p}:raw:s:{c}")).collect(),
                    lists: options
                        .concurrency
                        .iter()
                        .map(|c| {
                            (
                                *c,
                                format!("{p}:raw:list:{c}"),
                                format!("{p}:raw:taken:{c}"),
                            )
                        })
                        .collect(),
                    value: Bytes::new(),
                    event: Bytes::new(),
                    backend,
                };
                (backends, Some(raw), server)
            }
        };
        Self::build(backends, raw, server, options).await
    }

    async fn build(
        backends: Backends,
        raw: Option<Raw>,
        server: Option<String>,
        options: &BenchOptions,
    ) -> Result<Fixture, BenchError> {
        let cache = CacheManager::new(
            backends.cache,
            CacheSettings {
                default: TtlPolicy {
                    ttl: KEEP,
                    jitter: 0.1,
                },
                ..CacheSettings::default()
            },
        );
        let limiter1 = RateLimiter::new(
            Arc::clone(&backends.limiter),
            vec![policy("per_user", Scope::User)?],
        )
        .map_err(setup)?;
        let limiter3 = RateLimiter::new(
            backends.limiter,
            vec![
                policy("per_user", Scope::User)?,
                policy("per_project", Scope::Project)?,
                policy("per_ip", Scope::Ip)?,
            ],
        )
        .map_err(setup)?;
        let queue = QueueManager::new(backends.queue, QueuePolicies::default());
        let progress = ProgressTracker::new(backends.progress);
        let project = ProjectId::parse("bench").map_err(setup)?;
        let max_c = options
            .concurrency
            .iter()
            .copied()
            .max()
            .unwrap_or(1)
            .max(options.e2e_concurrency);
        let requests = (0..max_c)
            .map(|c| {
                Ok(RateLimitRequest::new()
                    .user(UserId::parse(format!("user-{c}")).map_err(setup)?)
                    .project(project.clone())
                    .ip(IpAddr::V4(Ipv4Addr::new(10, 0, (c >> 8) as u8, c as u8))))
            })
            .collect::<Result<Vec<_>, BenchError>>()?;
        let mut operations = Vec::with_capacity(max_c);
        let mut snapshot = Bytes::new();
        for c in 0..max_c {
            let spec = OperationSpec {
                id: Some(OperationId::parse(format!("bench-op-{c}")).map_err(setup)?),
                correlation_id: None,
                steps: ["fetch", "embed", "store"]
                    .into_iter()
                    .map(|s| {
                        Ok(StepSpec {
                            name: StepName::parse(s).map_err(setup)?,
                            weight: 1,
                        })
                    })
                    .collect::<Result<_, BenchError>>()?,
                message: None,
            };
            let event = progress.start(spec).await.map_err(setup)?;
            snapshot = serde_json::to_vec(&event.operation).map_err(setup)?.into();
            operations.push(event.operation.id);
        }
        // Stored as JSON: a string of n - 2 characters is n bytes with its quotes.
        let value = options
            .value_bytes
            .map_or_else(|| VALUE.to_owned(), |n| "x".repeat(n.saturating_sub(2)));
        let pad = options
            .value_bytes
            .map(|n| "x".repeat(n.saturating_sub(PAYLOAD_FRAME)));
        cache
            .set(&project, "bench", "hot", &value)
            .await
            .map_err(setup)?;
        let raw = match raw {
            Some(mut r) => {
                r.value = serde_json::to_vec(&value).map_err(setup)?.into();
                r.event = snapshot;
                r.pool()
                    .set::<(), _, _>(
                        r.hot.as_str(),
                        r.value.clone(),
                        Some(Expiration::PX(KEEP.as_millis() as i64)),
                        None,
                        false,
                    )
                    .await
                    .map_err(setup)?;
                Some(r)
            }
            None => None,
        };
        Ok(Fixture {
            backend_name: backends.name,
            server,
            cache,
            limiter1,
            limiter3,
            queue,
            progress,
            raw,
            project,
            set_keys: (0..SET_KEYS).map(|i| format!("k{i}")).collect(),
            value,
            pad,
            max_queued: options
                .value_bytes
                .map(|n| (BenchOptions::MAX_QUEUED_BYTES / n as u64).max(1)),
            requests,
            operations,
            kind: TaskKind::parse("noop").map_err(setup)?,
            stock: options
                .concurrency
                .iter()
                .map(|&c| (c, Stock::default()))
                .collect(),
            queues: options
                .concurrency
                .iter()
                .map(|&c| Ok((c, QueueName::parse(format!("bench-c{c}")).map_err(setup)?)))
                .collect::<Result<_, BenchError>>()?,
            e2e_queue: QueueName::parse("bench-e2e").map_err(setup)?,
        })
    }

    /// `memory` or `redis`.
    pub(crate) fn backend_name(&self) -> &'static str {
        self.backend_name
    }

    /// `redis <version>` on Redis.
    pub(crate) fn server(&self) -> Option<&str> {
        self.server.as_deref()
    }

    /// Whether the `queue.enqueue` queue of `side` at `c` holds as many padded tasks as the
    /// bench keeps queued, counting the `n` calls of the current round: its enqueues stop.
    fn full(&self, side: Side, c: usize, n: u64) -> Result<bool, BenchError> {
        let Some(max) = self.max_queued else {
            return Ok(false);
        };
        Ok(self.stock(c)?.count(side).load(Ordering::Relaxed) + n >= max)
    }

    /// The payload of task number `n`.
    pub(crate) fn payload(&self, n: u64) -> Payload<'_> {
        match &self.pad {
            None => Payload::Number(n),
            Some(pad) => Payload::Padded { n, pad },
        }
    }

    /// The queue of `queue.enqueue` / `queue.reserve_complete` at concurrency `c`.
    fn queue_for(&self, c: usize) -> Result<&QueueName, BenchError> {
        self.queues
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, q)| q)
            .ok_or_else(|| BenchError::Setup(format!("no queue for concurrency {c}")))
    }

    /// The queued entries and enqueue pace at concurrency `c`.
    fn stock(&self, c: usize) -> Result<&Stock, BenchError> {
        self.stock
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, s)| s)
            .ok_or_else(|| BenchError::Setup(format!("no queue for concurrency {c}")))
    }

    /// Deletes the raw keys by name and drains tasks still queued; errors are only reported
    /// (everything left expires anyway).
    pub(crate) async fn cleanup(&self) {
        let all = self.queues.iter().map(|(_, q)| q).chain([&self.e2e_queue]);
        for q in all {
            let queues = std::slice::from_ref(q);
            loop {
                match self.queue.reserve(queues, ReserveOptions::new(LEASE)).await {
                    Ok(Some(l)) => {
                        if let Err(e) = self
                            .queue
                            .complete(&queues[0], l.task.id, l.token, None)
                            .await
                        {
                            eprintln!("spool bench: cleanup of {}: {e}", queues[0]);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("spool bench: cleanup of {}: {e}", queues[0]);
                        break;
                    }
                }
            }
        }
        if let Some(raw) = &self.raw {
            let mut keys = vec![raw.hot.clone()];
            keys.extend(raw.set_keys.iter().cloned());
            keys.extend(raw.counters.iter().flatten().cloned());
            keys.extend(raw.stream.iter().cloned());
            for (_, list, taken) in &raw.lists {
                keys.push(list.clone());
                keys.push(taken.clone());
            }
            for chunk in keys.chunks(256) {
                if let Err(e) = raw.pool().del::<i64, _>(chunk.to_vec()).await {
                    eprintln!("spool bench: deleting the raw keys: {e}");
                }
            }
            raw.backend.shutdown().await;
        }
    }

    /// One call of `op` on `side` by `client` (call number `n`).
    async fn call(
        &self,
        side: Side,
        op: Op,
        c: usize,
        client: usize,
        n: u64,
    ) -> Result<Step, BenchError> {
        let err = |e: &dyn std::fmt::Display| BenchError::op(op, e);
        match side {
            Side::Spool => match op {
                Op::CacheGet => {
                    let v: Option<String> = self
                        .cache
                        .get(&self.project, "bench", "hot")
                        .await
                        .map_err(|e| err(&e))?;
                    if v.is_none() {
                        return Err(err(&"the stored value is missing"));
                    }
                }
                Op::CacheSet => {
                    let key = &self.set_keys[n as usize % SET_KEYS];
                    self.cache
                        .set(&self.project, "bench", key, &self.value)
                        .await
                        .map_err(|e| err(&e))?;
                }
                Op::LimiterCheck => {
                    self.limiter1
                        .check(&self.requests[client], Cost::ONE)
                        .await
                        .map_err(|e| err(&e))?;
                }
                Op::LimiterCheck3 => {
                    self.limiter3
                        .check(&self.requests[client], Cost::ONE)
                        .await
                        .map_err(|e| err(&e))?;
                }
                Op::QueueEnqueue => {
                    if self.full(side, c, n)? {
                        return Ok(Step::Exhausted);
                    }
                    let q = self.queue_for(c)?;
                    self.queue
                        .enqueue(q, &self.kind, &self.payload(n), EnqueueOptions::new())
                        .await
                        .map_err(|e| err(&e))?;
                }
                Op::QueueReserveComplete => {
                    let q = std::slice::from_ref(self.queue_for(c)?);
                    let Some(lease) = self
                        .queue
                        .reserve(q, ReserveOptions::new(LEASE))
                        .await
                        .map_err(|e| err(&e))?
                    else {
                        return Ok(Step::Exhausted);
                    };
                    self.queue
                        .complete(&q[0], lease.task.id, lease.token, None)
                        .await
                        .map_err(|e| err(&e))?;
                }
                Op::ProgressUpdate => {
                    let update = ProgressUpdate {
                        step: Some(StepRef::Index((n % 3) as usize)),
                        fraction: Some((n % 100) as f64 / 100.0),
                        message: None,
                        state: None,
                    };
                    self.progress
                        .update(&self.operations[client], update)
                        .await
                        .map_err(|e| err(&e))?;
                }
                Op::QueueE2e => return Err(err(&"queue.e2e is not a closed-loop operation")),
            },
            Side::Raw => {
                let Some(raw) = &self.raw else {
                    return Err(err(&"no raw client on this backend"));
                };
                let pool = raw.pool();
                match op {
                    Op::CacheGet => {
                        let v: Option<Bytes> =
                            pool.get(raw.hot.as_str()).await.map_err(|e| err(&e))?;
                        if v.is_none() {
                            return Err(err(&"the raw value is missing"));
                        }
                    }
                    Op::CacheSet => {
                        pool.set::<(), _, _>(
                            raw.set_keys[n as usize % SET_KEYS].as_str(),
                            raw.value.clone(),
                            Some(Expiration::PX(KEEP.as_millis() as i64)),
                            None,
                            false,
                        )
                        .await
                        .map_err(|e| err(&e))?;
                    }
                    Op::LimiterCheck => {
                        pool.incr::<i64, _>(raw.counters[client][0].as_str())
                            .await
                            .map_err(|e| err(&e))?;
                    }
                    Op::LimiterCheck3 => {
                        let pipe = pool.next().pipeline();
                        for k in &raw.counters[client] {
                            let () = pipe.incr(k.as_str()).await.map_err(|e| err(&e))?;
                        }
                        pipe.all::<Vec<i64>>().await.map_err(|e| err(&e))?;
                    }
                    Op::QueueEnqueue => {
                        if self.full(side, c, n)? {
                            return Ok(Step::Exhausted);
                        }
                        let (list, _) = raw.list(c)?;
                        let payload =
                            serde_json::to_string(&self.payload(n)).map_err(|e| err(&e))?;
                        pool.lpush::<i64, _, _>(list, payload)
                            .await
                            .map_err(|e| err(&e))?;
                    }
                    Op::QueueReserveComplete => {
                        let (list, taken) = raw.list(c)?;
                        let v: Option<Bytes> = pool
                            .lmove(list, taken, LMoveDirection::Right, LMoveDirection::Left)
                            .await
                            .map_err(|e| err(&e))?;
                        let Some(v) = v else {
                            return Ok(Step::Exhausted);
                        };
                        pool.lrem::<i64, _, _>(taken, 1, v)
                            .await
                            .map_err(|e| err(&e))?;
                    }
                    Op::ProgressUpdate => {
                        pool.xadd::<String, _, _, _, _>(
                            raw.stream[client].as_str(),
                            false,
                            ("MAXLEN", "=", 1000),
                            "*",
                            vec![
                                ("k", Bytes::from_static(b"progress")),
                                ("o", raw.event.clone()),
                            ],
                        )
                        .await
                        .map_err(|e| err(&e))?;
                    }
                    Op::QueueE2e => return Err(err(&"queue.e2e has no raw counterpart")),
                }
            }
        }
        Ok(Step::Done)
    }

    /// Keeps at least `want` entries queued for `queue.reserve_complete` at concurrency `c`
    /// (unmeasured enqueues at concurrency 64), or as many as a full queue holds.
    async fn top_up(self: &Arc<Self>, side: Side, c: usize, want: u64) -> Result<(), BenchError> {
        let count = self.stock(c)?.count(side);
        let have = count.load(Ordering::Relaxed);
        if have >= want {
            return Ok(());
        }
        let missing = want - have;
        let me = Arc::clone(self);
        let made = closed_loop(64, Stop::Calls(missing), move |client, n| {
            let me = Arc::clone(&me);
            async move { me.call(side, Op::QueueEnqueue, c, client, n).await }
        })
        .await?;
        // All that was missing, unless the queue filled up (`--value-bytes`).
        count.fetch_add(made.calls, Ordering::Relaxed);
        Ok(())
    }
}

/// Entries queued for `queue.reserve_complete` at one concurrency level, per side, and the
/// most enqueues one round managed there (sizes the top-ups).
#[derive(Debug, Default)]
struct Stock {
    spool: AtomicU64,
    raw: AtomicU64,
    pace: AtomicU64,
}

impl Stock {
    fn count(&self, side: Side) -> &AtomicU64 {
        match side {
            Side::Spool => &self.spool,
            Side::Raw => &self.raw,
        }
    }
}

/// One round of `op` on `side`: closed-loop clients for `stop`.
async fn round(
    fixture: &Arc<Fixture>,
    side: Side,
    op: Op,
    c: usize,
    stop: Stop,
) -> Result<Measured, BenchError> {
    if op == Op::QueueReserveComplete {
        // Enough queued entries for the round: its call budget, or (timed) twice as many as
        // the fastest enqueue round at this concurrency made, which reserve+complete (two
        // round trips) does not outrun; a round that still runs dry ends early.
        let want = match stop {
            Stop::Calls(n) => n,
            Stop::After(d) => {
                let pace = fixture.stock(c)?.pace.load(Ordering::Relaxed);
                if pace > 0 {
                    pace.saturating_mul(2)
                } else {
                    // No enqueue round ran (`--only`): assume 100k calls/s.
                    (d.as_secs_f64() * 100_000.0) as u64 + 1000
                }
            }
        };
        fixture.top_up(side, c, want).await?;
    }
    let f = Arc::clone(fixture);
    let m = closed_loop(c, stop, move |client, n| {
        let f = Arc::clone(&f);
        async move { f.call(side, op, c, client, n).await }
    })
    .await?;
    let stock = fixture.stock(c)?;
    match op {
        Op::QueueEnqueue => {
            stock.count(side).fetch_add(m.calls, Ordering::Relaxed);
            stock.pace.fetch_max(m.calls, Ordering::Relaxed);
        }
        Op::QueueReserveComplete => {
            let _ = stock
                .count(side)
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                    Some(s.saturating_sub(m.calls))
                });
        }
        _ => {}
    }
    Ok(m)
}

/// Measures `op` at concurrency `c`: a warm-up, then [`ROUNDS`] rounds alternating spool and
/// raw (raw only on Redis).
pub(crate) async fn measure(
    f: &Arc<Fixture>,
    op: Op,
    c: usize,
    options: &BenchOptions,
) -> Result<OpResult, BenchError> {
    let with_raw = f.raw.is_some() && op.raw_command().is_some();
    let (warm, per_round) = match options.budget {
        Budget::Time(d) => (
            Stop::After((d / 10).min(Duration::from_millis(300))),
            Stop::After(d / ROUNDS),
        ),
        Budget::Ops(n) => (
            Stop::Calls((n / 10).clamp(1, 10_000)),
            Stop::Calls(n.div_ceil(u64::from(ROUNDS))),
        ),
    };
    round(f, Side::Spool, op, c, warm).await?;
    if with_raw {
        round(f, Side::Raw, op, c, warm).await?;
    }
    let mut spool = Measured::empty();
    let mut raw = Measured::empty();
    for r in 0..ROUNDS {
        let order = if r % 2 == 0 {
            [Side::Spool, Side::Raw]
        } else {
            [Side::Raw, Side::Spool]
        };
        for side in order {
            match side {
                Side::Spool => spool.absorb(&round(f, side, op, c, per_round).await?),
                Side::Raw if with_raw => raw.absorb(&round(f, side, op, c, per_round).await?),
                Side::Raw => {}
            }
        }
    }
    if spool.calls == 0 {
        return Err(BenchError::op(op, "no call completed"));
    }
    let raw = (with_raw && raw.calls > 0).then_some(raw);
    Ok(OpResult {
        op: op.name().to_owned(),
        concurrency: c,
        ops_per_sec: spool.per_sec(),
        p50_us: spool.quantile_us(0.5),
        p99_us: spool.quantile_us(0.99),
        raw_op: raw.as_ref().and(op.raw_command()).map(str::to_owned),
        raw_ops_per_sec: raw.as_ref().map(Measured::per_sec),
        raw_p50_us: raw.as_ref().map(|m| m.quantile_us(0.5)),
        raw_p99_us: raw.as_ref().map(|m| m.quantile_us(0.99)),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn fixture(value_bytes: Option<usize>) -> Fixture {
        let options = BenchOptions {
            value_bytes,
            ..BenchOptions::defaults()
        };
        Fixture::connect(&options).await.unwrap()
    }

    #[tokio::test]
    async fn value_bytes_sizes_the_stored_cache_value_and_every_payload() {
        for n in [
            BenchOptions::MIN_VALUE_BYTES,
            4096,
            BenchOptions::MAX_VALUE_BYTES,
        ] {
            let f = fixture(Some(n)).await;
            assert_eq!(serde_json::to_vec(&f.value).unwrap().len(), n);
            for task in [0, 7, 123_456, u64::MAX] {
                let len = serde_json::to_vec(&f.payload(task)).unwrap().len();
                // The frame is sized for the longest number; shorter ones leave it short.
                assert!(len <= n && len + 19 >= n, "{n}: task {task} is {len} bytes");
            }
        }
        let f = fixture(None).await;
        assert_eq!(f.value, VALUE);
        assert_eq!(serde_json::to_string(&f.payload(7)).unwrap(), "7");
        assert_eq!(f.max_queued, None, "no cap at the default sizes");
    }

    #[tokio::test]
    async fn padded_enqueues_stop_at_the_queued_bytes_cap() {
        let n = 64 << 10;
        let mut f = fixture(Some(n)).await;
        let cap = BenchOptions::MAX_QUEUED_BYTES / n as u64;
        assert_eq!(f.max_queued, Some(cap));
        // A small cap for the test: the rule, not the size, is what is checked.
        f.max_queued = Some(5);
        let f = Arc::new(f);
        let m = round(&f, Side::Spool, Op::QueueEnqueue, 1, Stop::Calls(20))
            .await
            .unwrap();
        assert_eq!(m.calls, 5, "the round ends when the queue is full");
        let again = round(&f, Side::Spool, Op::QueueEnqueue, 1, Stop::Calls(20))
            .await
            .unwrap();
        assert_eq!(again.calls, 0);
        // reserve_complete drains what is there, then a top-up refills only up to the cap.
        let drained = round(&f, Side::Spool, Op::QueueReserveComplete, 1, Stop::Calls(3))
            .await
            .unwrap();
        assert_eq!(drained.calls, 3);
        f.top_up(Side::Spool, 1, 100).await.unwrap();
        assert_eq!(
            f.stock(1)
                .unwrap()
                .count(Side::Spool)
                .load(Ordering::Relaxed),
            5
        );
    }
}
