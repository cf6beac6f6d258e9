//! Closed-loop clients: `n` tasks, each sending its next call only after the previous one
//! returned, each recording every call's latency in its own HDR histogram.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::BenchError;

/// Highest latency a histogram records (longer ones count as this long): one hour, which
/// also covers the queueing time of a large `queue.e2e` backlog.
const MAX_NANOS: u64 = 3_600_000_000_000;

/// What one call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The call ran; its latency counts.
    Done,
    /// Nothing left to do (an empty queue); this client stops and the call does not count.
    Exhausted,
}

/// When the clients of one round stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// At this instant.
    After(Duration),
    /// After this many calls in total.
    Calls(u64),
}

/// A fresh histogram in nanoseconds, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NANOS, 3).expect("constant histogram bounds are valid")
}

/// Calls and latencies of one or more rounds.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    pub(crate) hist: Histogram<u64>,
    pub(crate) calls: u64,
    pub(crate) elapsed: Duration,
}

impl Measured {
    pub(crate) fn empty() -> Self {
        Self {
            hist: histogram(),
            calls: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// Adds another round: calls and times add up, histograms merge.
    pub(crate) fn absorb(&mut self, other: &Measured) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.calls += other.calls;
        self.elapsed += other.elapsed;
    }

    /// Calls per second of wall time.
    pub(crate) fn per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.calls as f64 / s
        } else {
            0.0
        }
    }

    /// The `q` quantile (`0.0..=1.0`) in microseconds.
    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs `concurrency` closed-loop clients of `call(client, n)` until `stop`; `n` counts calls
/// across clients from 0.
///
/// # Errors
/// The first failed call (the round stops at once).
pub(crate) async fn closed_loop<C, F>(
    concurrency: usize,
    stop: Stop,
    call: C,
) -> Result<Measured, BenchError>
where
    C: Fn(usize, u64) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Step, BenchError>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = match stop {
        Stop::After(d) => Some(start + d),
        Stop::Calls(_) => None,
    };
    let limit = match stop {
        Stop::Calls(n) => n,
        Stop::After(_) => u64::MAX,
    };
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..concurrency.max(1) {
        let call = Arc::clone(&call);
        let next = Arc::clone(&next);
        clients.spawn(async move {
            let mut hist = histogram();
            let mut calls = 0u64;
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                let t0 = Instant::now();
                match call(client, n).await? {
                    Step::Done => {
                        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        hist.saturating_record(ns.clamp(1, MAX_NANOS));
                        calls += 1;
                    }
                    Step::Exhausted => break,
                }
            }
            Ok::<_, BenchError>((hist, calls, Instant::now()))
        });
    }
    let mut total = Measured::empty();
    let mut last = start;
    while let Some(joined) = clients.join_next().await {
        let (hist, calls, ended) = match joined {
            Ok(r) => r?,
            Err(e) => {
                return Err(BenchError::Op {
                    op: "bench client",
                    message: format!("client task ended abnormally: {e}"),
                })
            }
        };
        let _ = total.hist.add(&hist);
        total.calls += calls;
        last = last.max(ended);
    }
    total.elapsed = last.duration_since(start);
    Ok(total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_call_budget_is_met_exactly_across_clients() {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let m = closed_loop(7, Stop::Calls(100), move |client, n| {
            let s = Arc::clone(&s);
            async move {
                assert!(client < 7);
                s.lock().push(n);
                tokio::task::yield_now().await;
                Ok(Step::Done)
            }
        })
        .await
        .unwrap();
        assert_eq!(m.calls, 100);
        assert_eq!(m.hist.len(), 100);
        let mut got = seen.lock().clone();
        got.sort_unstable();
        assert_eq!(got, (0..100).collect::<Vec<_>>(), "each call number once");
        assert!(m.per_sec() > 0.0);
        assert!(m.quantile_us(0.5) <= m.quantile_us(0.99));
    }

    #[tokio::test]
    async fn exhausted_clients_stop_and_their_last_call_does_not_count() {
        let m = closed_loop(4, Stop::Calls(1_000), |_, n| async move {
            Ok(if n < 10 { Step::Done } else { Step::Exhausted })
        })
        .await
        .unwrap();
        assert_eq!(m.calls, 10);
    }

    #[tokio::test]
    async fn the_first_error_ends_the_round() {
        let e = closed_loop(3, Stop::Calls(1_000_000), |_, n| async move {
            if n == 5 {
                Err(BenchError::Setup("boom".into()))
            } else {
                Ok(Step::Done)
            }
        })
        .await
        .unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
    }

    #[tokio::test]
    async fn a_time_budget_stops_every_client() {
        let m = closed_loop(2, Stop::After(Duration::from_millis(30)), |_, _| async {
            tokio::task::yield_now().await;
            Ok(Step::Done)
        })
        .await
        .unwrap();
        assert!(m.calls > 0);
        assert!(m.elapsed >= Duration::from_millis(30));
    }

    #[test]
    fn rounds_add_up() {
        let mut a = Measured::empty();
        let mut b = Measured::empty();
        b.hist.record(2_000).unwrap();
        b.hist.record(4_000).unwrap();
        b.calls = 2;
        b.elapsed = Duration::from_secs(1);
        a.absorb(&b);
        a.absorb(&b);
        assert_eq!(a.calls, 4);
        assert_eq!(a.hist.len(), 4);
        assert_eq!(a.elapsed, Duration::from_secs(2));
        assert!((a.per_sec() - 2.0).abs() < 1e-9);
        assert!((a.quantile_us(0.5) - 2.0).abs() < 0.01);
    }
}
