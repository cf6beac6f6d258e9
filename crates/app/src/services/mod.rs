//! The four services users program against, each over an `Arc<dyn Port>` so the adapter
//! behind it (memory, Redis, or a resilient wrapper) is chosen by configuration:
//!
//! | service | port | what it adds |
//! |---|---|---|
//! | [`CacheManager`] | `CacheStore` | typed values ([`Codec`]), per-name TTL policies with jitter, single-flight `get_or_compute` |
//! | [`RateLimiter`] | `RateLimitStore` | named policies scoped to user / project / IP, one atomic check for all that apply |
//! | [`QueueManager`] | `QueueStore` | typed enqueue with per-queue defaults, status, cancel, stats, lease operations |
//! | [`ProgressTracker`] | `ProgressStore` | start / update / complete / fail / cancel, resumable subscriptions |
//!
//! Every method runs in a `tracing` span named `<service>.<operation>` carrying the project,
//! queue, task or operation ID and the correlation ID when there is one (payloads are never
//! recorded).

mod cache;
mod codec;
mod error;
mod limiter;
mod progress;
mod queue;
mod single_flight;

#[cfg(test)]
pub(crate) mod mocks;

pub use cache::{CacheManager, CacheName, CacheSettings, TtlPolicy};
pub use codec::Codec;
pub use error::{ServiceError, SharedError};
pub use limiter::{FailureMode, RateLimitRequest, RateLimiter, RatePolicy, Scope};
pub use progress::ProgressTracker;
pub use queue::{EnqueueOptions, QueueManager, QueuePolicies, QueueSettings};

pub(crate) use single_flight::panic_message;
