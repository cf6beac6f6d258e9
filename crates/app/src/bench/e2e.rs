//! `queue.e2e`: enqueue N no-op tasks, then drain them with the worker runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::ops::{Fixture, Op};
use super::payload::TaskNumber;
use super::runner::{closed_loop, histogram, Step, Stop};
use super::{BenchError, BenchOptions, OpResult};
use crate::services::EnqueueOptions;
use crate::worker::{TaskContext, WorkerBuilder};

/// Lease of each task the workers hold.
const LEASE: Duration = Duration::from_secs(30);
/// Producers enqueueing the backlog.
const PRODUCERS: usize = 64;

/// Enqueues `options.e2e_tasks` tasks (payload: their number), then runs the worker runtime
/// with `options.e2e_concurrency` handlers until every task completed. Throughput is tasks
/// completed per second from the runtime's start to the last completion; latency is each
/// task's time from its enqueue returning to its handler starting.
///
/// # Errors
/// A failed enqueue; a run that did not complete every task exactly once.
pub(crate) async fn run(
    fixture: &Arc<Fixture>,
    options: &BenchOptions,
) -> Result<OpResult, BenchError> {
    let n = options.e2e_tasks;
    let len = usize::try_from(n).map_err(|_| BenchError::Invalid("too many e2e tasks".into()))?;
    let base = Instant::now();
    let enqueued_at: Arc<Vec<AtomicU64>> = Arc::new((0..len).map(|_| AtomicU64::new(0)).collect());

    let f = Arc::clone(fixture);
    let stamps = Arc::clone(&enqueued_at);
    closed_loop(PRODUCERS, Stop::Calls(n), move |_, i| {
        let f = Arc::clone(&f);
        let stamps = Arc::clone(&stamps);
        async move {
            f.queue
                .enqueue(&f.e2e_queue, &f.kind, &f.payload(i), EnqueueOptions::new())
                .await
                .map_err(|e| BenchError::op(Op::QueueE2e, format!("enqueue: {e}")))?;
            stamps[i as usize].store(nanos_since(base), Ordering::Relaxed);
            Ok(Step::Done)
        }
    })
    .await?;

    let latency = Arc::new(parking_lot::Mutex::new(histogram()));
    let handled = Arc::new(AtomicU64::new(0));
    let all_handled = Arc::new(Notify::new());
    let handler = {
        let latency = Arc::clone(&latency);
        let handled = Arc::clone(&handled);
        let all_handled = Arc::clone(&all_handled);
        let stamps = Arc::clone(&enqueued_at);
        move |_ctx: TaskContext, TaskNumber(i): TaskNumber| {
            let waited = stamps
                .get(i as usize)
                .map(|t| nanos_since(base).saturating_sub(t.load(Ordering::Relaxed)));
            if let Some(w) = waited {
                latency.lock().saturating_record(w.max(1));
            }
            if handled.fetch_add(1, Ordering::Relaxed) + 1 == n {
                all_handled.notify_one();
            }
            async { Ok(None) }
        }
    };
    let q = fixture.e2e_queue.clone();
    let runtime = WorkerBuilder::new(fixture.queue.clone(), fixture.progress.clone())
        .register(q.clone(), fixture.kind.clone(), handler)
        .concurrency(&q, options.e2e_concurrency)
        .lease(&q, LEASE)
        .build();
    let start = Instant::now();
    // Every handler ran: stop reserving; the drain waits for the last completions.
    let report = runtime
        .run_until(async move { all_handled.notified().await })
        .await;
    let elapsed = start.elapsed();
    if report.succeeded != n {
        return Err(BenchError::op(
            Op::QueueE2e,
            format!(
                "{} of {n} tasks completed ({} handled, {} retried, {} dead, {} leases lost, {} released)",
                report.succeeded,
                handled.load(Ordering::Relaxed),
                report.retried,
                report.dead,
                report.lease_lost,
                report.released
            ),
        ));
    }
    let hist = latency.lock();
    Ok(OpResult {
        op: Op::QueueE2e.name().to_owned(),
        concurrency: options.e2e_concurrency,
        ops_per_sec: n as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
        raw_op: None,
        raw_ops_per_sec: None,
        raw_p50_us: None,
        raw_p99_us: None,
    })
}

fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
