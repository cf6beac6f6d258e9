//! Wiring: one call builds every service from configuration.
//!
//! The only place that knows which adapter backs the ports is [`Backends`]: five
//! `Arc<dyn Port>`s built by [`memory_backends`] and [`redis_backends`]. Every
//! service is built over those trait objects, so swapping memory ↔ Redis — or wrapping the
//! ports in resilience layers — is a configuration change, not a code change.
//!
//! ```
//! use spool_app::config::{Config, EnvLayer};
//! use spool_app::Spool;
//! use spool_domain::names::ProjectId;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load_from(None, &EnvLayer::default())?; // memory backend
//! let spool = Spool::from_config(&config).await?;
//! assert_eq!(spool.backend(), "memory");
//! let _project = ProjectId::parse("acme")?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;

use spool_adapter_memory::{
    Clock, MemoryCache, MemoryHealth, MemoryProgress, MemoryQueue, MemoryRateLimiter, TokioClock,
};
use spool_adapter_redis::RedisBackend;
use spool_domain::limits::StoreLimits;
use spool_domain::ValidationError;
use spool_ports::{CacheStore, Health, PortError, ProgressStore, QueueStore, RateLimitStore};

use crate::config::{BackendKind, Config, ConfigError, Settings};
use crate::resilience::{ResilienceOptions, ResilienceStatus, Resilient};
use crate::services::{CacheManager, ProgressTracker, QueueManager, RateLimiter};
use crate::worker::WorkerBuilder;

/// The ports the services run on, one trait object each.
#[derive(Clone)]
pub struct Backends {
    /// `memory`, `redis`, or what a wrapper calls itself.
    pub name: &'static str,
    /// The cache port.
    pub cache: Arc<dyn CacheStore>,
    /// The rate-limiter port.
    pub limiter: Arc<dyn RateLimitStore>,
    /// The queue port.
    pub queue: Arc<dyn QueueStore>,
    /// The progress port.
    pub progress: Arc<dyn ProgressStore>,
    /// The health port.
    pub health: Arc<dyn Health>,
}

impl fmt::Debug for Backends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backends")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every port in process memory, sharing `clock`.
pub fn memory_backends(limits: &StoreLimits, clock: Arc<dyn Clock>) -> Backends {
    Backends {
        name: "memory",
        cache: Arc::new(MemoryCache::new(limits, Arc::clone(&clock))),
        limiter: Arc::new(MemoryRateLimiter::new(limits, Arc::clone(&clock))),
        queue: Arc::new(MemoryQueue::new(limits, Arc::clone(&clock))),
        progress: Arc::new(MemoryProgress::new(limits, Arc::clone(&clock))),
        health: Arc::new(MemoryHealth::new(limits, clock)),
    }
}

/// The backends `config` asks for.
///
/// # Errors
/// A bad setting; backend connection errors.
pub async fn backends_for(config: &Config, settings: &Settings) -> Result<Backends, WiringError> {
    match config.backend {
        BackendKind::Memory => Ok(memory_backends(
            &settings.limits,
            Arc::new(TokioClock::new()),
        )),
        BackendKind::Redis => redis_backends(config, settings).await,
    }
}

/// Every port on Redis, through one connection pool (plus one pub/sub connection for
/// wake-ups).
///
/// # Errors
/// A bad `[redis]` setting; the server unreachable or refusing the credentials.
pub async fn redis_backends(config: &Config, settings: &Settings) -> Result<Backends, WiringError> {
    let adapter = config.redis.to_adapter(&settings.limits)?;
    let backend = RedisBackend::connect(adapter).await?;
    Ok(Backends {
        name: "redis",
        cache: Arc::new(backend.cache()),
        limiter: Arc::new(backend.rate_limiter()),
        queue: Arc::new(backend.queue()),
        progress: Arc::new(backend.progress()),
        health: Arc::new(backend.health()),
    })
}

/// Why the services could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WiringError {
    /// A setting is bad.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The backend refused to start (unreachable, bad credentials).
    #[error("backend: {0}")]
    Backend(#[from] PortError),
    /// A service refused its settings.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

struct Inner {
    backend: &'static str,
    cache: CacheManager,
    limiter: RateLimiter,
    queue: QueueManager,
    progress: ProgressTracker,
    health: Arc<dyn Health>,
    resilience: ResilienceStatus,
    settings: Settings,
    config: Config,
}

/// Every spool service, built from one configuration. Cheap to clone.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl fmt::Debug for Spool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spool")
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Validates `config`, builds the backend it names and every service over it. The Redis
    /// ports are wrapped in the [resilience layer](crate::resilience) (breaker, retries,
    /// local fallbacks, hand-over; its supervisor runs on the current runtime), so the
    /// services keep working while Redis is down; [`Spool::resilience`] tells how.
    ///
    /// # Errors
    /// A bad setting; a backend that is not wired or does not start.
    pub async fn from_config(config: &Config) -> Result<Spool, WiringError> {
        let settings = config.validate()?;
        let backends = backends_for(config, &settings).await?;
        if config.backend == BackendKind::Redis {
            let options = ResilienceOptions::from_config(&config.resilience, &settings)?;
            let resilient = Resilient::wrap(backends, &options, Arc::new(TokioClock::new()))?;
            resilient.spawn_supervisor();
            let status = resilient.status().clone();
            return Self::assemble(resilient.backends(), status, config, settings);
        }
        let status = ResilienceStatus::without_fallback(backends.name);
        Self::assemble(backends, status, config, settings)
    }

    /// Builds every service over the wrapped ports of `resilient` (tests, embedders), with
    /// its status behind [`Spool::resilience`]. The caller decides whether to
    /// [spawn its supervisor](Resilient::spawn_supervisor).
    ///
    /// # Errors
    /// A bad setting.
    pub fn from_resilient(resilient: &Resilient, config: &Config) -> Result<Spool, WiringError> {
        let settings = config.validate()?;
        let status = resilient.status().clone();
        Self::assemble(resilient.backends(), status, config, settings)
    }

    /// Builds every service over `backends` (tests, embedders, wrapped ports), with the
    /// service settings of `config`.
    ///
    /// # Errors
    /// A bad setting.
    pub fn from_backends(backends: Backends, config: &Config) -> Result<Spool, WiringError> {
        let settings = config.validate()?;
        let status = ResilienceStatus::without_fallback(backends.name);
        Self::assemble(backends, status, config, settings)
    }

    fn assemble(
        backends: Backends,
        resilience: ResilienceStatus,
        config: &Config,
        settings: Settings,
    ) -> Result<Spool, WiringError> {
        // Encryption sits above the resilience layer: Redis and the fallback see ciphertext.
        let backends = settings.encryption.wrap(backends);
        let cache = CacheManager::new(backends.cache, settings.cache.clone());
        let limiter = RateLimiter::new(backends.limiter, settings.rate_limits.clone())?;
        let queue = QueueManager::new(backends.queue, settings.queues.clone());
        let progress = ProgressTracker::new(backends.progress);
        tracing::info!(backend = backends.name, "spool services ready");
        Ok(Spool {
            inner: Arc::new(Inner {
                backend: backends.name,
                cache,
                limiter,
                queue,
                progress,
                health: backends.health,
                resilience,
                settings,
                config: config.clone(),
            }),
        })
    }

    /// `memory` or `redis`.
    pub fn backend(&self) -> &'static str {
        self.inner.backend
    }

    /// The cache service.
    pub fn cache(&self) -> &CacheManager {
        &self.inner.cache
    }

    /// The rate limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// The queues.
    pub fn queue(&self) -> &QueueManager {
        &self.inner.queue
    }

    /// Progress tracking.
    pub fn progress(&self) -> &ProgressTracker {
        &self.inner.progress
    }

    /// Backend health.
    pub fn health(&self) -> &Arc<dyn Health> {
        &self.inner.health
    }

    /// Each service's mode (primary / fallback), the backend's breaker state and whether
    /// anything is degraded — for `/health/ready` and metrics. On the memory backend (or
    /// ports given to [`Spool::from_backends`]) every service is always `primary` and there
    /// is no breaker.
    pub fn resilience(&self) -> &ResilienceStatus {
        &self.inner.resilience
    }

    /// The validated settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The configuration the services were built from.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A worker runtime builder over these services, with the `[worker]` and `[queues]`
    /// settings applied; register handlers, then `build()` and `run_until(shutdown)`.
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder::from_config(
            self.inner.queue.clone(),
            self.inner.progress.clone(),
            &self.inner.config.worker,
            &self.inner.settings.limits,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvLayer;

    #[tokio::test]
    async fn memory_is_the_default_backend() {
        let config = Config::default();
        let spool = Spool::from_config(&config).await.unwrap();
        assert_eq!(spool.backend(), "memory");
        let h = spool.health().check().await.unwrap();
        assert_eq!(h.backend, "memory");
    }

    #[tokio::test]
    async fn redis_backend_is_a_configuration_change() {
        let url = spool_adapter_redis::testing::redis_url();
        let prefix = spool_adapter_redis::testing::unique_prefix();
        let env = EnvLayer::from_pairs([
            ("SPOOL_BACKEND", "redis"),
            ("SPOOL_REDIS_URL", url.as_str()),
            ("SPOOL_REDIS__KEY_PREFIX", prefix.as_str()),
        ]);
        let config = Config::load_from(None, &env).unwrap();
        let spool = Spool::from_config(&config).await.unwrap();
        assert_eq!(spool.backend(), "redis");
        let h = spool.health().check().await.unwrap();
        assert_eq!(h.backend, "redis");
        assert!(h.version.is_some());
    }

    #[tokio::test]
    async fn redis_cluster_is_a_configuration_change() {
        let seeds = spool_adapter_redis::testing::cluster_seeds();
        let prefix = spool_adapter_redis::testing::unique_prefix();
        let env = EnvLayer::from_pairs([
            ("SPOOL_BACKEND", "redis"),
            ("SPOOL_REDIS_CLUSTER", seeds.as_str()),
            ("SPOOL_REDIS__KEY_PREFIX", prefix.as_str()),
        ]);
        let config = Config::load_from(None, &env).unwrap();
        let spool = Spool::from_config(&config).await.unwrap();
        assert_eq!(spool.backend(), "redis");
        let queue = spool_domain::names::QueueName::embeddings();
        let kind = spool_domain::names::TaskKind::parse("wired").unwrap();
        let enqueued = spool
            .queue()
            .enqueue(
                &queue,
                &kind,
                &serde_json::json!({"n": 1}),
                Default::default(),
            )
            .await
            .unwrap();
        let id = enqueued.task().id;
        let task = spool.queue().get(&queue, id).await.unwrap().unwrap();
        assert_eq!(task.kind.as_str(), "wired");
        let h = spool.health().check().await.unwrap();
        assert_eq!(h.backend, "redis");
    }

    #[tokio::test]
    async fn unreachable_redis_is_a_backend_error() {
        let env = EnvLayer::from_pairs([
            ("SPOOL_BACKEND", "redis"),
            ("SPOOL_REDIS_URL", "redis://127.0.0.1:1"),
            ("SPOOL_REDIS__CONNECT_TIMEOUT", "200ms"),
        ]);
        let config = Config::load_from(None, &env).unwrap();
        let e = Spool::from_config(&config).await.unwrap_err();
        assert!(matches!(e, WiringError::Backend(_)), "{e}");
    }

    #[tokio::test]
    async fn settings_reach_the_services() {
        let env = EnvLayer::from_pairs([
            ("SPOOL_RATE_LIMITS", "ip:100/60s,user:1000/1h"),
            ("SPOOL_QUEUES__EMBEDDINGS__CONCURRENCY", "7"),
            ("SPOOL_CACHE__CODEC", "msgpack"),
        ]);
        let config = Config::load_from(None, &env).unwrap();
        let backends = memory_backends(&StoreLimits::default(), Arc::new(TokioClock::new()));
        let spool = Spool::from_backends(backends, &config).unwrap();
        assert_eq!(spool.limiter().policies().len(), 2);
        assert_eq!(
            spool
                .queue()
                .settings(&spool_domain::names::QueueName::embeddings())
                .concurrency,
            7
        );
        assert_eq!(spool.cache().codec(), crate::services::Codec::MsgPack);
    }
}
