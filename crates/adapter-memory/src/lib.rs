//! # spool-adapter-memory
//!
//! Every spool port in process memory: for tests, for a single embedded process, and as the
//! fallback while Redis is down. Behaviour is identical to the Redis adapter — both pass the
//! same conformance suite.
//!
//! Time comes from a [`Clock`]; the default [`TokioClock`] follows tokio's clock, so tests
//! that pause tokio time (`#[tokio::test(start_paused = true)]`) control every TTL, delay and
//! lease without sleeping.
//!
//! ```
//! use std::sync::Arc;
//! use spool_adapter_memory::{MemoryCache, TokioClock};
//! use spool_domain::limits::StoreLimits;
//! use spool_ports::CacheStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cache: Arc<dyn CacheStore> = Arc::new(MemoryCache::new(&StoreLimits::default(), Arc::new(TokioClock::new())));
//! # let _ = cache; }
//! ```

mod cache;
mod clock;
mod health;
mod limiter;
mod progress;
mod queue;

pub use cache::MemoryCache;
pub use clock::{Clock, TokioClock};
pub use health::MemoryHealth;
pub use limiter::MemoryRateLimiter;
pub use progress::MemoryProgress;
pub use queue::MemoryQueue;
