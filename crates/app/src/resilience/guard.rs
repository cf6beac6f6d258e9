//! [`Guard`]: the circuit breaker plus retries with exponential backoff and full jitter
//! around one call to the primary backend.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use spool_adapter_memory::Clock;
use spool_domain::backoff::{Backoff, Jitter};
use spool_domain::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit, Rejected};
use spool_domain::ValidationError;
use spool_ports::PortError;

use super::status::ResilienceStatus;

/// How transient failures are retried: `max_retries` more attempts after the first, waiting
/// `backoff.delay(n)` before the n-th.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first (`0..=10`).
    pub max_retries: u32,
    /// Delay before each retry.
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// Most retries accepted.
    pub const MAX_RETRIES: u32 = 10;

    /// `max_retries` retries, doubling from `initial` up to `max`, with full jitter.
    ///
    /// # Errors
    /// More than 10 retries, or `initial > max`.
    pub fn new(
        max_retries: u32,
        initial: Duration,
        max: Duration,
    ) -> Result<Self, ValidationError> {
        if max_retries > Self::MAX_RETRIES {
            return Err(ValidationError::new(
                "retry max_retries",
                format!("{max_retries} is more than {}", Self::MAX_RETRIES),
            ));
        }
        Ok(Self {
            max_retries,
            backoff: Backoff::new(initial, max, 2, Jitter::Full)?,
        })
    }

    /// No retries.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            backoff: Backoff::constant(Duration::ZERO),
        }
    }
}

/// The breaker of one backend behind a lock, read against a [`Clock`].
pub(crate) struct BreakerCell {
    breaker: Mutex<CircuitBreaker>,
    clock: Arc<dyn Clock>,
}

impl BreakerCell {
    pub(crate) fn new(
        config: BreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            breaker: Mutex::new(CircuitBreaker::new(config)?),
            clock,
        })
    }

    /// The state now.
    pub(crate) fn state(&self) -> BreakerState {
        self.breaker.lock().state(self.clock.now())
    }

    fn acquire(&self) -> Result<Permit, Rejected> {
        self.breaker.lock().try_acquire(self.clock.now())
    }

    fn report(&self, permit: Permit, outcome: Report) -> BreakerState {
        let now = self.clock.now();
        let mut b = self.breaker.lock();
        match outcome {
            Report::Success => b.on_success(permit, now),
            Report::Failure => b.on_failure(permit, now),
            Report::Release => b.release(permit, now),
        }
        b.state(now)
    }
}

#[derive(Debug, Clone, Copy)]
enum Report {
    Success,
    Failure,
    Release,
}

/// Why a guarded call did not produce a value.
#[derive(Debug)]
pub enum CallError {
    /// The breaker is open: the primary was not called.
    Open {
        /// How long until the breaker lets a probe through.
        retry_after: Duration,
    },
    /// The primary failed transiently on every attempt; this is the last error.
    Transient(PortError),
    /// A non-transient error (`Invalid`, `NotFound`, `Conflict`, ...): the backend answered,
    /// so it goes back to the caller untouched and says nothing about the backend's health.
    Permanent(PortError),
}

impl CallError {
    /// Whether a fallback should serve the call (the backend is unavailable).
    pub fn wants_fallback(&self) -> bool {
        !matches!(self, CallError::Permanent(_))
    }

    /// The error a caller without a fallback gets: `Unavailable` (keeping its cause) for an
    /// open breaker or a transient failure, the error itself otherwise.
    pub fn into_port_error(self) -> PortError {
        match self {
            CallError::Open { retry_after } => PortError::unavailable(
                "circuit breaker open; the backend is not called",
                Rejected {
                    retry_after: retry_after.max(Duration::from_millis(1)),
                },
            ),
            CallError::Transient(e) | CallError::Permanent(e) => e,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Open { retry_after } => {
                write!(
                    f,
                    "circuit breaker open for {} ms more",
                    retry_after.as_millis()
                )
            }
            CallError::Transient(e) => write!(f, "backend unavailable: {e}"),
            CallError::Permanent(e) => e.fmt(f),
        }
    }
}

/// Hands a permit back exactly once: on success, on a transient failure, or — when the call
/// is dropped half-way or ends with a non-transient error — as a release.
struct PermitGuard<'a> {
    guard: &'a Guard,
    permit: Option<Permit>,
}

impl PermitGuard<'_> {
    fn finish(mut self, outcome: Report) {
        if let Some(p) = self.permit.take() {
            self.guard.report(p, outcome);
        }
    }
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.guard.report(p, Report::Release);
        }
    }
}

/// The breaker and retry policy of one backend, shared by its four port wrappers.
///
/// [`Guard::call`] runs one operation: the breaker admits it (or it fails fast with
/// [`CallError::Open`]); a transient error counts as a breaker failure and is retried after a
/// jittered backoff while retries remain and the breaker still admits; a non-transient error
/// returns at once and counts for nothing; a success counts as one.
pub struct Guard {
    cell: Arc<BreakerCell>,
    retry: RetryPolicy,
    status: ResilienceStatus,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("breaker", &self.cell.state())
            .field("retry", &self.retry)
            .finish()
    }
}

impl Guard {
    /// A guard for `backend` with a breaker of `config` on `clock`; returns it with the
    /// status handle that reports it.
    ///
    /// # Errors
    /// A bad breaker setting, named.
    pub fn new(
        backend: &'static str,
        config: BreakerConfig,
        retry: RetryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<Guard>, ResilienceStatus), ValidationError> {
        let cell = Arc::new(BreakerCell::new(config, clock)?);
        let status = ResilienceStatus::with_breaker(backend, Arc::clone(&cell));
        let guard = Arc::new(Guard {
            cell,
            retry,
            status: status.clone(),
        });
        Ok((guard, status))
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        self.cell.state()
    }

    /// Whether a call now would reach the backend (closed, or half-open with a free probe
    /// slot). Takes nothing.
    pub fn admits(&self) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { in_flight, .. } => {
                in_flight < self.cell.breaker.lock().config().half_open_max_probes
            }
        }
    }

    /// How long the breaker stays open from now; zero when it is not open.
    pub fn open_remaining(&self) -> Duration {
        let now = self.cell.clock.now();
        match self.cell.breaker.lock().state(now) {
            BreakerState::Open { until } => until.saturating_since(now),
            _ => Duration::ZERO,
        }
    }

    fn report(&self, permit: Permit, outcome: Report) {
        let state = self.cell.report(permit, outcome);
        self.status.breaker_changed(state);
    }

    /// Runs `op` against the primary under the breaker, retrying transient errors.
    ///
    /// # Errors
    /// [`CallError::Open`] when the breaker refuses (before the first attempt, or before a
    /// retry); [`CallError::Transient`] when every attempt failed transiently;
    /// [`CallError::Permanent`] for any other error, at once.
    pub async fn call<T, F, Fut>(&self, mut op: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PortError>>,
    {
        let mut retries = 0u32;
        loop {
            let permit = match self.cell.acquire() {
                Ok(p) => p,
                Err(rejected) => {
                    self.status.breaker_changed(self.cell.state());
                    return Err(CallError::Open {
                        retry_after: rejected.retry_after,
                    });
                }
            };
            let permit = PermitGuard {
                guard: self,
                permit: Some(permit),
            };
            match op().await {
                Ok(v) => {
                    permit.finish(Report::Success);
                    return Ok(v);
                }
                Err(e) if e.is_transient() => {
                    permit.finish(Report::Failure);
                    if retries >= self.retry.max_retries {
                        return Err(CallError::Transient(e));
                    }
                    retries += 1;
                    let delay = self.retry.backoff.delay(retries, rand::random::<f64>());
                    tracing::debug!(error = %e, retry = retries, delay_ms = delay.as_millis() as u64, "transient backend error; retrying");
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                }
                Err(e) => {
                    permit.finish(Report::Release);
                    return Err(CallError::Permanent(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicU32, Ordering};

    use spool_adapter_memory::TokioClock;

    use super::*;
    use crate::services::mocks::unavailable;

    fn guard(min_calls: u32, retries: u32) -> Arc<Guard> {
        let config = BreakerConfig {
            failure_rate_threshold: 0.5,
            window: Duration::from_secs(10),
            minimum_calls: min_calls,
            open_duration: Duration::from_secs(5),
            half_open_max_probes: 1,
        };
        let retry = RetryPolicy::new(
            retries,
            Duration::from_millis(10),
            Duration::from_millis(100),
        )
        .unwrap();
        Guard::new("test", config, retry, Arc::new(TokioClock::new()))
            .unwrap()
            .0
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_then_reported() {
        let g = guard(100, 3);
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = g
            .call(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(unavailable())
            })
            .await;
        assert!(matches!(r, Err(CallError::Transient(_))), "{r:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "the first attempt and 3 retries"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_that_succeeds_returns_the_value() {
        let g = guard(100, 3);
        let calls = AtomicU32::new(0);
        let r = g
            .call(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(unavailable())
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn non_transient_errors_are_not_retried_and_do_not_count() {
        let g = guard(1, 3);
        let calls = AtomicU32::new(0);
        for _ in 0..5 {
            let r: Result<(), _> = g
                .call(|| async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(PortError::invalid("thing", "bad"))
                })
                .await;
            assert!(matches!(
                r,
                Err(CallError::Permanent(PortError::Invalid(_)))
            ));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 5, "one attempt each");
        assert_eq!(
            g.state(),
            BreakerState::Closed,
            "answers prove the backend is up"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_fails_fast_without_calling() {
        let g = guard(2, 0);
        for _ in 0..2 {
            let r: Result<(), _> = g.call(|| async { Err(unavailable()) }).await;
            assert!(matches!(r, Err(CallError::Transient(_))));
        }
        assert!(matches!(g.state(), BreakerState::Open { .. }));
        assert!(!g.admits());
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = g
            .call(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await;
        let Err(CallError::Open { retry_after }) = r else {
            panic!("expected Open, got {r:?}");
        };
        assert_eq!(retry_after, Duration::from_secs(5));
        assert_eq!(g.open_remaining(), Duration::from_secs(5));
        assert_eq!(calls.load(Ordering::SeqCst), 0, "the primary is not called");
        let e = CallError::Open { retry_after }.into_port_error();
        assert!(e.is_transient(), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_once_the_breaker_opens() {
        let g = guard(2, 5);
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = g
            .call(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(unavailable())
            })
            .await;
        assert!(matches!(r, Err(CallError::Open { .. })), "{r:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the breaker opened after two"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_open_probe_that_succeeds_closes_the_breaker() {
        let g = guard(1, 0);
        let _ = g.call(|| async { Err::<(), _>(unavailable()) }).await;
        assert!(matches!(g.state(), BreakerState::Open { .. }));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(g.state(), BreakerState::HalfOpen { .. }));
        assert!(g.admits());
        assert_eq!(g.call(|| async { Ok(1) }).await.unwrap(), 1);
        assert_eq!(g.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_releases_its_probe_slot() {
        let g = guard(1, 0);
        let _ = g.call(|| async { Err::<(), _>(unavailable()) }).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        {
            let pending = g.call(std::future::pending::<Result<(), PortError>>);
            let mut pending = Box::pin(pending);
            // Poll once so the probe is admitted, then drop the call.
            assert!(futures::poll!(pending.as_mut()).is_pending());
            assert!(!g.admits(), "the only probe slot is taken");
        }
        assert!(g.admits(), "dropping the call released its slot");
    }

    #[test]
    fn retry_policy_bounds() {
        assert!(RetryPolicy::new(11, Duration::ZERO, Duration::ZERO).is_err());
        assert!(RetryPolicy::new(1, Duration::from_secs(2), Duration::from_secs(1)).is_err());
        assert_eq!(RetryPolicy::none().max_retries, 0);
    }
}
