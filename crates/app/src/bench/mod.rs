//! `spool bench`: every operation through spool's service layer, side by side with the
//! closest raw [`fred`] command on the same connection pool and server, in the same run.
//!
//! ```text
//! spool bench --backend redis --redis-url redis://127.0.0.1:6379 --concurrency 1,64 --json
//! spool bench --backend memory --ops 100000
//! spool bench --backend redis --value-bytes 16384 --only cache.get,queue.enqueue
//! ```
//!
//! `--value-bytes` sizes every cache value and task payload (and the raw side's values) like
//! `redis-benchmark -d`; the targets of issue 6 are checked only at the default sizes.
//!
//! | op | spool call | raw command (Redis) |
//! |---|---|---|
//! | `cache.get` | [`CacheManager::get`](crate::CacheManager::get) of a stored value (a hit) | `GET` |
//! | `cache.set` | [`CacheManager::set`](crate::CacheManager::set) over 1024 keys | `SET … PX` |
//! | `limiter.check` | [`RateLimiter::check`](crate::RateLimiter::check), one policy | `INCR` |
//! | `limiter.check3` | [`RateLimiter::check`](crate::RateLimiter::check), three policies (user, project, IP) | `INCR` ×3 in one pipeline |
//! | `queue.enqueue` | [`QueueManager::enqueue`](crate::QueueManager::enqueue) | `LPUSH` |
//! | `queue.reserve_complete` | `reserve` then `complete` of one task | `LMOVE` then `LREM` (the reliable-list pattern) |
//! | `progress.update` | [`ProgressTracker::update`](crate::ProgressTracker::update) | `XADD … MAXLEN` |
//! | `queue.e2e` | enqueue N no-op tasks, then drain them with the [worker runtime](crate::worker) at concurrency 16 | — |
//!
//! **Method.** Each operation runs as closed-loop clients (each waits for its reply before
//! sending the next request) at every `--concurrency` level; each client records the latency
//! of every call in an HDR histogram (nanosecond resolution, 3 significant digits). The time
//! (or operation count) of one measurement is split into ten rounds that alternate spool
//! and raw (spool first, then raw first, and so on), after an unrecorded warm-up, so
//! slow drifts of a shared machine hit both sides alike. Throughput is operations over the
//! wall time of the round. `queue.e2e` reports completed tasks per second, from the first
//! reservation to the last completion, and its latency columns are each task's time from its
//! enqueue to its handler starting (with the whole backlog enqueued first, that is mostly
//! queueing time). No tracing subscriber is installed while measuring.
//!
//! **Isolation.** On Redis every key lives under a fresh prefix `spool-bench-<random>`;
//! nothing is flushed or scanned. Afterwards the raw keys are deleted by name and tasks still
//! queued are drained; the rest (finished tasks, progress operations, limiter windows, cache
//! entries) expires within ten minutes.
//!
//! | module | concern |
//! |---|---|
//! | `args` | the command-line arguments and their validation into [`BenchOptions`] |
//! | `runner` | closed-loop clients at one concurrency, per-call latency histograms |
//! | `ops` | the fixtures and each operation, spool and raw |
//! | `e2e` | `queue.e2e`: a backlog drained by the worker runtime |
//! | `payload` | the tasks' payload: their number, padded to `--value-bytes` |
//! | `report` | the human table, the targets of issue 6, and the `--json` object |

mod args;
mod e2e;
mod ops;
mod payload;
mod report;
mod runner;

pub use args::{BenchArgs, BenchBackend, BenchOptions, Budget};
pub use ops::Op;
pub use report::{OpResult, Report, TargetCheck};

/// Why a benchmark could not run or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A bad argument.
    #[error("invalid bench argument: {0}")]
    Invalid(String),
    /// The backend could not be set up.
    #[error("bench setup: {0}")]
    Setup(String),
    /// An operation failed while measuring.
    #[error("{op} failed: {message}")]
    Op {
        /// The operation.
        op: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl BenchError {
    pub(crate) fn op(op: Op, e: impl std::fmt::Display) -> Self {
        BenchError::Op {
            op: op.name(),
            message: e.to_string(),
        }
    }
}

/// Runs every selected operation on the chosen backend and returns the report.
///
/// # Errors
/// Setup failures (Redis unreachable) and the first failed operation.
pub async fn run(options: &BenchOptions) -> Result<Report, BenchError> {
    let fixture = std::sync::Arc::new(ops::Fixture::connect(options).await?);
    let mut results = Vec::new();
    let outcome = async {
        for op in options.ops.iter().copied() {
            if op == Op::QueueE2e {
                eprintln!(
                    "spool bench: {} ({} tasks, {} workers)",
                    op.name(),
                    options.e2e_tasks,
                    options.e2e_concurrency
                );
                results.push(e2e::run(&fixture, options).await?);
                continue;
            }
            for &c in &options.concurrency {
                eprintln!("spool bench: {} @{c}", op.name());
                results.push(ops::measure(&fixture, op, c, options).await?);
            }
        }
        Ok::<(), BenchError>(())
    }
    .await;
    fixture.cleanup().await;
    outcome?;
    Ok(Report {
        backend: fixture.backend_name().to_owned(),
        server: fixture.server().map(str::to_owned),
        results,
        value_bytes: options.value_bytes,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn tiny(backend: BenchBackend, redis_url: String) -> BenchOptions {
        BenchOptions {
            backend,
            redis_url,
            budget: Budget::Ops(30),
            concurrency: vec![1, 3],
            e2e_tasks: 40,
            ..BenchOptions::defaults()
        }
    }

    fn check_shape(report: &Report, with_raw: bool) {
        let expected: Vec<(String, usize)> = Op::ALL
            .iter()
            .flat_map(|op| {
                let levels = if *op == Op::QueueE2e {
                    vec![16]
                } else {
                    vec![1, 3]
                };
                levels.into_iter().map(|c| (op.name().to_owned(), c))
            })
            .collect();
        let got: Vec<(String, usize)> = report
            .results
            .iter()
            .map(|r| (r.op.clone(), r.concurrency))
            .collect();
        assert_eq!(got, expected);
        for r in &report.results {
            assert!(r.ops_per_sec > 0.0, "{r:?}");
            assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us, "{r:?}");
            let raw = with_raw && r.op != "queue.e2e";
            assert_eq!(r.raw_op.is_some(), raw, "{r:?}");
            assert_eq!(r.raw_ops_per_sec.is_some(), raw, "{r:?}");
            assert_eq!(r.raw_p50_us.is_some(), raw, "{r:?}");
            assert_eq!(r.raw_p99_us.is_some(), raw, "{r:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_operation_runs_on_memory() {
        let report = run(&tiny(BenchBackend::Memory, String::new()))
            .await
            .unwrap();
        assert_eq!(report.backend, "memory");
        assert_eq!(report.server, None);
        check_shape(&report, false);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_operation_runs_on_redis_next_to_the_raw_client() {
        let url = spool_adapter_redis::testing::redis_url();
        let report = run(&tiny(BenchBackend::Redis, url)).await.unwrap();
        assert_eq!(report.backend, "redis");
        assert!(
            report
                .server
                .as_deref()
                .is_some_and(|s| s.starts_with("redis ")),
            "{:?}",
            report.server
        );
        check_shape(&report, true);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_operation_runs_on_redis_with_padded_values_and_payloads() {
        let url = spool_adapter_redis::testing::redis_url();
        let options = BenchOptions {
            value_bytes: Some(4096),
            ..tiny(BenchBackend::Redis, url)
        };
        let report = run(&options).await.unwrap();
        check_shape(&report, true);
        assert_eq!(report.value_bytes, Some(4096));
        assert!(report.targets().is_empty(), "set for the default sizes");
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_a_setup_error() {
        let mut o = tiny(BenchBackend::Redis, "redis://127.0.0.1:1".into());
        o.ops = vec![Op::CacheGet];
        let e = run(&o).await.unwrap_err();
        assert!(matches!(e, BenchError::Setup(_)), "{e}");
    }
}
