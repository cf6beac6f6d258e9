//! # spool-app
//!
//! What other applications link: one call builds spool's four services from configuration,
//! over ports whose adapter (memory or Redis) is a configuration choice.
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | typed configuration: defaults → TOML file → `SPOOL_*` env vars, validated |
//! | [`wiring`] | [`Spool::from_config`]: the services over `Arc<dyn Port>`s ([`Backends`]) |
//! | [`services`] | [`CacheManager`], [`RateLimiter`], [`QueueManager`], [`ProgressTracker`] |
//! | [`resilience`] | circuit breaker, retries, local fallbacks and hand-over around the Redis ports; [`resilience::ResilienceStatus`] |
//! | [`worker`] | the worker runtime: typed handlers, concurrency, heartbeats, retries, drain |
//! | [`http`] | the HTTP API (axum), reusable tower [`http::middleware`], SSE, health, `/metrics` |
//! | [`telemetry`] | logs (pretty / JSON), OpenTelemetry metrics (Prometheus + OTLP) and traces |
//! | [`bench`](mod@bench) | `spool bench`: every operation next to the raw client, latency histograms |
//! | [`cli`] | the `spool` binary: `serve`, `worker`, `bench` |
//!
//! ```
//! use spool_app::config::{Config, EnvLayer};
//! use spool_app::services::EnqueueOptions;
//! use spool_app::Spool;
//! use spool_domain::names::{ProjectId, QueueName, TaskKind};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // SPOOL_BACKEND=redis (or `backend = "redis"` in the file) swaps the adapter; no code changes.
//! let config = Config::load_from(None, &EnvLayer::from_pairs([("SPOOL_BACKEND", "memory")]))?;
//! let spool = Spool::from_config(&config).await?;
//!
//! let project = ProjectId::parse("acme")?;
//! let _maybe: Option<String> = spool.cache().get(&project, "users", "42").await.unwrap_or(None);
//! let _queued = spool
//!     .queue()
//!     .enqueue(&QueueName::embeddings(), &TaskKind::parse("embed")?,
//!              &serde_json::json!({"texts": ["hi"]}), EnqueueOptions::new())
//!     .await;
//! # Ok(()) }
//! ```

pub mod audit;
pub mod bench;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod http;
pub mod resilience;
pub mod services;
pub mod telemetry;
pub mod wiring;
pub mod worker;

pub use config::{Config, ConfigError, Settings};
pub use services::{
    CacheManager, ProgressTracker, QueueManager, RateLimitRequest, RateLimiter, ServiceError,
};
pub use wiring::{memory_backends, redis_backends, Backends, Spool, WiringError};
pub use worker::{HandlerError, TaskContext, WorkerBuilder, WorkerRuntime};

/// The README's Rust examples, compiled (and run where not `no_run`) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExamples;
