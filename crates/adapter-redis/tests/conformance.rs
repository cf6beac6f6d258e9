//! The shared conformance suite against a real Redis (see `spool_adapter_redis::testing` for
//! how the server is found). Redis owns the clock, so the test clock lets real time pass.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use spool_adapter_redis::testing;
use spool_domain::limits::StoreLimits;
use spool_ports::conformance::{Fixture, TestClock};

struct RealTime;

#[async_trait]
impl TestClock for RealTime {
    async fn advance(&self, by: Duration) {
        tokio::time::sleep(by).await;
    }
}

fn fixture(limits: StoreLimits) -> Pin<Box<dyn Future<Output = Fixture> + Send>> {
    Box::pin(async move {
        let backend = testing::backend(limits.clone()).await;
        Fixture {
            cache: Arc::new(backend.cache()),
            limiter: Arc::new(backend.rate_limiter()),
            queue: Arc::new(backend.queue()),
            progress: Arc::new(backend.progress()),
            health: Arc::new(backend.health()),
            clock: Arc::new(RealTime),
            limits,
        }
    })
}

spool_ports::conformance_suite!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    fixture
);
