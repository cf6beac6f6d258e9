//! Shared support of spool's end-to-end tests (`tests/tests/`).
//!
//! | item | what it does |
//! |---|---|
//! | [`TestServer`] | the real HTTP server on `127.0.0.1:0`, in process, over the memory or a real Redis backend |
//! | [`on_both_backends!`] | instantiates `async fn name(backend: Backend)` tests once per backend |
//! | [`CapturedLogs`] | an in-memory `tracing` writer, to assert on what was logged |
//! | [`SseReader`] | a streaming `text/event-stream` parser over a real HTTP response |
//! | [`prometheus`] | a strict parser of the Prometheus text exposition format, and `promtool` when it is installed |
//! | [`fault_proxy`] | a TCP proxy that injects latency, black holes, cuts and resets between a client and Redis |
//! | [`chaos`] | crash-safety support: the worker's record log, killing processes with SIGKILL |
//!
//! Redis comes from `spool_adapter_redis::testing` (`SPOOL_TEST_REDIS_URL`, or a spawned
//! `redis-server`); every server gets a fresh random key prefix, so tests run in parallel.

pub mod chaos;
pub mod fault_proxy;
mod log_capture;
pub mod prometheus;
mod server;
mod sse;

pub use log_capture::CapturedLogs;
pub use server::{Backend, TestServer, TestSetup};
pub use sse::{SseEvent, SseFrame, SseReader};

/// Instantiates each listed `async fn name(backend: Backend)` as a test on the memory
/// backend (`memory::name`) and on a real Redis (`redis::name`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Memory).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Redis).await
                }
            )*
        }
    };
}
