//! The conformance suite: the ports' contract, executable.
//!
//! Each adapter instantiates the whole suite with one macro call, giving a test attribute and
//! a [`Factory`] that builds fresh, isolated stores:
//!
//! ```ignore
//! fn fixture(limits: StoreLimits) -> BoxFuture<'static, Fixture> { /* ... */ }
//! spool_ports::conformance_suite!(#[tokio::test(start_paused = true)] fixture);
//! ```
//!
//! That expands to one module per service (`conformance_cache`, `conformance_limiter`,
//! `conformance_queue`, `conformance_progress`), so every test's path contains `conformance`
//! and `cargo test conformance` runs them all.
//!
//! Time: tests let time pass only through [`Fixture::clock`]. The memory adapter advances a
//! paused tokio clock (instant); a Redis adapter owns no clock — Redis' `TIME` is the truth —
//! so its fixture lets real time pass. Tests therefore keep durations short (well under two
//! seconds) and never assert on how long something took.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use spool_domain::limits::StoreLimits;

use crate::{CacheStore, Health, ProgressStore, QueueStore, RateLimitStore};

pub mod cache;
pub mod limiter;
pub mod progress;
pub mod queue;

/// Moves the backend's notion of time forward.
#[async_trait]
pub trait TestClock: Send + Sync {
    /// Lets at least `by` pass as seen by the stores of the fixture.
    async fn advance(&self, by: Duration);
}

/// Fresh, isolated stores for one test.
#[derive(Clone)]
pub struct Fixture {
    /// The cache.
    pub cache: Arc<dyn CacheStore>,
    /// The rate limiter.
    pub limiter: Arc<dyn RateLimitStore>,
    /// The queue.
    pub queue: Arc<dyn QueueStore>,
    /// Progress.
    pub progress: Arc<dyn ProgressStore>,
    /// Health.
    pub health: Arc<dyn Health>,
    /// Time control.
    pub clock: Arc<dyn TestClock>,
    /// The limits the stores were built with.
    pub limits: StoreLimits,
}

/// Builds a fixture whose stores enforce `limits`.
pub type Factory = fn(StoreLimits) -> Pin<Box<dyn Future<Output = Fixture> + Send>>;

/// Instantiates every conformance test for an adapter: `conformance_suite!(#[attr] factory);`
/// where `factory` is a [`Factory`] in scope at the call site.
#[macro_export]
macro_rules! conformance_suite {
    (#[$attr:meta] $factory:ident) => {
        $crate::__conformance_cache!(
            #[$attr]
            $factory
        );
        $crate::__conformance_limiter!(
            #[$attr]
            $factory
        );
        $crate::__conformance_queue!(
            #[$attr]
            $factory
        );
        $crate::__conformance_progress!(
            #[$attr]
            $factory
        );
    };
}

/// Expands one group of tests; used by the per-service macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_group {
    (#[$attr:meta] $factory:ident, $module:ident, $group:ident, [$($name:ident),* $(,)?]) => {
        mod $module {
            $(
                #[$attr]
                async fn $name() {
                    $crate::conformance::$group::$name(super::$factory).await
                }
            )*
        }
    };
}
