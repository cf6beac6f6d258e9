//! The shared conformance suite against the memory adapter, on a paused tokio clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use spool_adapter_memory::{
    Clock, MemoryCache, MemoryHealth, MemoryProgress, MemoryQueue, MemoryRateLimiter, TokioClock,
};
use spool_domain::limits::StoreLimits;
use spool_ports::conformance::{Fixture, TestClock};

struct PausedClock;

#[async_trait]
impl TestClock for PausedClock {
    async fn advance(&self, by: Duration) {
        tokio::time::advance(by).await;
    }
}

fn fixture(limits: StoreLimits) -> Pin<Box<dyn Future<Output = Fixture> + Send>> {
    Box::pin(async move {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
        Fixture {
            cache: Arc::new(MemoryCache::new(&limits, clock.clone())),
            limiter: Arc::new(MemoryRateLimiter::new(&limits, clock.clone())),
            queue: Arc::new(MemoryQueue::new(&limits, clock.clone())),
            progress: Arc::new(MemoryProgress::new(&limits, clock.clone())),
            health: Arc::new(MemoryHealth::new(&limits, clock)),
            clock: Arc::new(PausedClock),
            limits,
        }
    })
}

spool_ports::conformance_suite!(
    #[tokio::test(start_paused = true)]
    fixture
);
