//! Circuit breaker state machine (closed / open / half-open), driven by an injected clock.
//!
//! The breaker protects a backend that is failing: after too many failures it *opens* and
//! rejects calls outright for a while, then lets a few *probe* calls through (*half-open*),
//! and closes again when they all succeed.
//!
//! | state | calls | leaves when |
//! |---|---|---|
//! | `Closed` | all admitted; outcomes counted over a sliding window | the failure rate over the window reaches the threshold (after at least `minimum_calls`) → `Open` |
//! | `Open { until }` | all rejected with `retry_after = until - now` | `until` passes → `HalfOpen` |
//! | `HalfOpen` | at most `half_open_max_probes` in flight | `half_open_max_probes` probes succeeded → `Closed`; any probe failed → `Open` |
//!
//! It is a pure value: no I/O, no runtime, no clock. Every method takes `now`, and the caller
//! (the app's resilience layer) holds the breaker behind a lock. A clock that goes backwards
//! is treated as standing still.
//!
//! ## Reporting outcomes
//!
//! Every [`Permit`] from [`CircuitBreaker::try_acquire`] is handed back exactly once:
//!
//! - [`CircuitBreaker::on_success`] when the call worked;
//! - [`CircuitBreaker::on_failure`] **only** for failures that say the backend is unhealthy —
//!   transient ones (`PortError::is_transient`: unreachable, timed out). An `Invalid` or
//!   `NotFound` answer proves the backend is up and must not open the breaker;
//! - [`CircuitBreaker::release`] when the outcome says nothing about the backend (a
//!   non-transient error, a cancelled call).
//!
//! Outcomes of permits issued before the breaker last changed state are ignored: they describe
//! the backend as it was. A half-open round whose probes are *all* still outstanding
//! `open_duration` after the last one started is treated as failed (their results will never
//! arrive, e.g. because a cancelled caller dropped its permit), so a lost permit cannot wedge
//! the breaker.
//!
//! ## Sliding window
//!
//! Closed-state outcomes are counted in [`BUCKETS`] fixed time buckets of `window / BUCKETS`
//! each (rounded down to whole milliseconds), so memory is constant however many calls are
//! made. The rate covers the current bucket and the `BUCKETS - 1` before it, so a call counts
//! for at least nine tenths of `window` and never longer than `window`. The window is cleared
//! on every state change.
//!
//! ```
//! use std::time::Duration;
//! use spool_domain::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
//! use spool_domain::Timestamp;
//!
//! let mut breaker = CircuitBreaker::new(BreakerConfig {
//!     failure_rate_threshold: 0.5,
//!     window: Duration::from_secs(10),
//!     minimum_calls: 4,
//!     open_duration: Duration::from_secs(5),
//!     half_open_max_probes: 1,
//! })?;
//! let t0 = Timestamp::from_millis(1_700_000_000_000);
//!
//! // Four transient failures in a row: the breaker opens.
//! for _ in 0..4 {
//!     let permit = breaker.try_acquire(t0).expect("closed");
//!     breaker.on_failure(permit, t0);
//! }
//! assert!(matches!(breaker.state(t0), BreakerState::Open { .. }));
//! let rejected = breaker.try_acquire(t0).unwrap_err();
//! assert_eq!(rejected.retry_after, Duration::from_secs(5));
//!
//! // Once the open duration has passed, one probe goes through; its success closes it.
//! let later = t0.saturating_add(rejected.retry_after);
//! let probe = breaker.try_acquire(later).expect("half-open probe");
//! breaker.on_success(probe, later);
//! assert_eq!(breaker.state(later), BreakerState::Closed);
//! # Ok::<(), spool_domain::ValidationError>(())
//! ```

use std::fmt;
use std::time::Duration;

use crate::time::duration_millis;
use crate::{Timestamp, ValidationError};

/// Number of time buckets the sliding window is divided into.
pub const BUCKETS: usize = 10;

/// The settings of a breaker. Build it with struct syntax (or start from
/// [`BreakerConfig::default`]); [`CircuitBreaker::new`] validates it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Failure rate (`failures / calls` over the window) at which the breaker opens, in
    /// `(0, 1]`. Default 0.5.
    pub failure_rate_threshold: f64,
    /// How far back calls are counted, `10 ms..=24 h`. Default 10 s.
    pub window: Duration,
    /// Calls the window must hold before the rate counts, `>= 1`. Default 20.
    pub minimum_calls: u32,
    /// How long the breaker stays open before probing, `1 ms..=24 h`. Default 5 s.
    pub open_duration: Duration,
    /// Probes allowed in flight while half-open, and successes needed to close,
    /// `1..=1000`. Default 3.
    pub half_open_max_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 0.5,
            window: Duration::from_secs(10),
            minimum_calls: 20,
            open_duration: Duration::from_secs(5),
            half_open_max_probes: 3,
        }
    }
}

impl BreakerConfig {
    /// Longest accepted `window` and `open_duration`.
    pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
    /// Most probes a half-open breaker admits at once.
    pub const MAX_PROBES: u32 = 1000;

    /// Checks every setting; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let t = self.failure_rate_threshold;
        if !(t > 0.0 && t <= 1.0) {
            return Err(ValidationError::new(
                "breaker failure_rate_threshold",
                format!("{t} is outside (0, 1]"),
            ));
        }
        let min_window = Duration::from_millis(BUCKETS as u64);
        if self.window < min_window || self.window > Self::MAX_DURATION {
            return Err(ValidationError::new(
                "breaker window",
                format!(
                    "{:?} is outside {min_window:?}..={:?}",
                    self.window,
                    Self::MAX_DURATION
                ),
            ));
        }
        if self.minimum_calls == 0 {
            return Err(ValidationError::new(
                "breaker minimum_calls",
                "must be at least 1",
            ));
        }
        if self.open_duration < Duration::from_millis(1) || self.open_duration > Self::MAX_DURATION
        {
            return Err(ValidationError::new(
                "breaker open_duration",
                format!(
                    "{:?} is outside 1ms..={:?}",
                    self.open_duration,
                    Self::MAX_DURATION
                ),
            ));
        }
        if self.half_open_max_probes == 0 || self.half_open_max_probes > Self::MAX_PROBES {
            return Err(ValidationError::new(
                "breaker half_open_max_probes",
                format!(
                    "{} is outside 1..={}",
                    self.half_open_max_probes,
                    Self::MAX_PROBES
                ),
            ));
        }
        Ok(())
    }
}

/// Where a breaker is, as seen at some instant (for metrics, health and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are rejected until `until`.
    Open {
        /// When the breaker starts probing.
        until: Timestamp,
    },
    /// A few probe calls decide whether to close again.
    HalfOpen {
        /// Probes admitted and not yet reported.
        in_flight: u32,
        /// Probes that succeeded in this round.
        successes: u32,
    },
}

impl BreakerState {
    /// A stable lowercase name: `closed`, `open`, `half_open`.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

/// Permission to make one call. Hand it back through exactly one of
/// [`CircuitBreaker::on_success`], [`CircuitBreaker::on_failure`] or
/// [`CircuitBreaker::release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "report the call's outcome with on_success, on_failure or release"]
pub struct Permit {
    generation: u64,
}

/// The breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rejected {
    /// When open: exactly how long until the breaker admits a probe. When half-open with every
    /// probe slot taken: an upper bound (a slot frees as soon as a probe reports). Never zero.
    pub retry_after: Duration,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker open; retry after {} ms",
            duration_millis(self.retry_after)
        )
    }
}

impl std::error::Error for Rejected {}

/// Outcomes counted in the current window (closed state only; zero otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WindowCounts {
    /// Successful calls.
    pub successes: u64,
    /// Failed calls.
    pub failures: u64,
}

impl WindowCounts {
    /// All counted calls.
    pub fn calls(&self) -> u64 {
        self.successes.saturating_add(self.failures)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    successes: u64,
    failures: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open {
        until: Timestamp,
    },
    HalfOpen {
        in_flight: u32,
        successes: u32,
        /// When the latest probe was admitted (or the round began).
        last_probe: Timestamp,
    },
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Success,
    Failure,
}

/// A circuit breaker. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    bucket_ms: u64,
    buckets: [Bucket; BUCKETS],
    phase: Phase,
    /// Bumped on every state change; permits of older generations are ignored.
    generation: u64,
    /// The latest `now` seen, so time never runs backwards.
    latest: Timestamp,
}

impl CircuitBreaker {
    /// A closed breaker with `config`.
    ///
    /// # Errors
    /// A [`ValidationError`] naming the first bad setting.
    pub fn new(config: BreakerConfig) -> Result<Self, ValidationError> {
        config.validate()?;
        let window_ms = duration_millis(config.window);
        Ok(Self {
            config,
            bucket_ms: (window_ms / BUCKETS as u64).max(1),
            buckets: [Bucket::default(); BUCKETS],
            phase: Phase::Closed,
            generation: 0,
            latest: Timestamp::EPOCH,
        })
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Asks to make a call at `now`. Open: rejected until the open duration has passed, then
    /// the breaker turns half-open. Half-open: admitted while fewer than
    /// `half_open_max_probes` probes are in flight.
    ///
    /// # Errors
    /// [`Rejected`] with how long to wait.
    pub fn try_acquire(&mut self, now: Timestamp) -> Result<Permit, Rejected> {
        let now = self.observe(now);
        let max = self.config.half_open_max_probes;
        match &mut self.phase {
            Phase::Closed => Ok(Permit {
                generation: self.generation,
            }),
            Phase::Open { until } => Err(Rejected {
                retry_after: until.saturating_since(now).max(Duration::from_millis(1)),
            }),
            Phase::HalfOpen {
                in_flight,
                last_probe,
                ..
            } if *in_flight < max => {
                *in_flight += 1;
                *last_probe = now;
                Ok(Permit {
                    generation: self.generation,
                })
            }
            Phase::HalfOpen { last_probe, .. } => {
                let open = self.config.open_duration;
                let free_by = last_probe.saturating_add(open).saturating_add(open);
                Err(Rejected {
                    retry_after: free_by.saturating_since(now).max(Duration::from_millis(1)),
                })
            }
        }
    }

    /// Reports that the call behind `permit` succeeded at `now`.
    pub fn on_success(&mut self, permit: Permit, now: Timestamp) {
        let now = self.observe(now);
        if permit.generation != self.generation {
            return;
        }
        let max = self.config.half_open_max_probes;
        match &mut self.phase {
            Phase::Closed => self.record(now, Outcome::Success),
            Phase::HalfOpen {
                in_flight,
                successes,
                ..
            } => {
                *in_flight = in_flight.saturating_sub(1);
                *successes += 1;
                if *successes >= max {
                    self.transition(Phase::Closed);
                }
            }
            Phase::Open { .. } => {}
        }
    }

    /// Reports that the call behind `permit` failed at `now` in a way that says the backend is
    /// unhealthy. Callers report only transient failures here (unreachable, timed out); any
    /// other error goes to [`CircuitBreaker::release`].
    pub fn on_failure(&mut self, permit: Permit, now: Timestamp) {
        let now = self.observe(now);
        if permit.generation != self.generation {
            return;
        }
        match self.phase {
            Phase::Closed => {
                self.record(now, Outcome::Failure);
                let counts = self.counts_at(now);
                let calls = counts.calls();
                if calls >= u64::from(self.config.minimum_calls)
                    && counts.failures as f64 >= self.config.failure_rate_threshold * calls as f64
                {
                    self.open(now);
                }
            }
            Phase::HalfOpen { .. } => self.open(now),
            Phase::Open { .. } => {}
        }
    }

    /// Hands back a permit whose call says nothing about the backend's health (a
    /// non-transient error such as `Invalid`, or a cancelled call): it frees its probe slot
    /// and counts for nothing.
    pub fn release(&mut self, permit: Permit, now: Timestamp) {
        self.observe(now);
        if permit.generation != self.generation {
            return;
        }
        if let Phase::HalfOpen { in_flight, .. } = &mut self.phase {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// The state at `now`, as the next call would find it (an open breaker whose time is up
    /// reads as half-open).
    pub fn state(&self, now: Timestamp) -> BreakerState {
        let now = now.max(self.latest);
        match self.settled(now).0 {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } => BreakerState::Open { until },
            Phase::HalfOpen {
                in_flight,
                successes,
                ..
            } => BreakerState::HalfOpen {
                in_flight,
                successes,
            },
        }
    }

    /// The outcomes counted in the window at `now` (zero unless closed).
    pub fn window_counts(&self, now: Timestamp) -> WindowCounts {
        let now = now.max(self.latest);
        if self.settled(now).0 == Phase::Closed {
            self.counts_at(now)
        } else {
            WindowCounts::default()
        }
    }

    /// Moves the breaker's time to `now` (never backwards) and applies time-driven
    /// transitions. Returns the effective now.
    fn observe(&mut self, now: Timestamp) -> Timestamp {
        let now = now.max(self.latest);
        self.latest = now;
        let (phase, changed) = self.settled(now);
        if changed {
            self.transition(phase);
        }
        now
    }

    /// The phase after the time-driven transitions due by `now`, and whether any happened.
    fn settled(&self, now: Timestamp) -> (Phase, bool) {
        let open = self.config.open_duration;
        let max = self.config.half_open_max_probes;
        let mut phase = self.phase;
        let mut changed = false;
        loop {
            match phase {
                Phase::Open { until } if now >= until => {
                    phase = Phase::HalfOpen {
                        in_flight: 0,
                        successes: 0,
                        last_probe: until,
                    };
                }
                // Every probe slot taken and nothing heard for `open` after the last one: the
                // round failed at `last_probe + open`.
                Phase::HalfOpen {
                    in_flight,
                    last_probe,
                    ..
                } if in_flight >= max && now >= last_probe.saturating_add(open) => {
                    phase = Phase::Open {
                        until: last_probe.saturating_add(open).saturating_add(open),
                    };
                }
                _ => return (phase, changed),
            }
            changed = true;
        }
    }

    fn open(&mut self, now: Timestamp) {
        self.transition(Phase::Open {
            until: now.saturating_add(self.config.open_duration),
        });
    }

    fn transition(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
        self.buckets = [Bucket::default(); BUCKETS];
    }

    fn epoch(&self, now: Timestamp) -> u64 {
        now.as_millis() / self.bucket_ms
    }

    fn record(&mut self, now: Timestamp, outcome: Outcome) {
        let epoch = self.epoch(now);
        let bucket = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        match outcome {
            Outcome::Success => bucket.successes = bucket.successes.saturating_add(1),
            Outcome::Failure => bucket.failures = bucket.failures.saturating_add(1),
        }
    }

    fn counts_at(&self, now: Timestamp) -> WindowCounts {
        let epoch = self.epoch(now);
        self.buckets
            .iter()
            .filter(|b| b.epoch <= epoch && b.epoch + BUCKETS as u64 > epoch)
            .fold(WindowCounts::default(), |acc, b| WindowCounts {
                successes: acc.successes.saturating_add(b.successes),
                failures: acc.failures.saturating_add(b.failures),
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: Timestamp = Timestamp::from_millis(1_000_000);

    fn config(threshold: f64, min: u32, probes: u32) -> BreakerConfig {
        BreakerConfig {
            failure_rate_threshold: threshold,
            window: Duration::from_millis(1000),
            minimum_calls: min,
            open_duration: Duration::from_millis(500),
            half_open_max_probes: probes,
        }
    }

    fn at(ms: u64) -> Timestamp {
        T0.saturating_add(Duration::from_millis(ms))
    }

    fn fail(b: &mut CircuitBreaker, now: Timestamp) {
        let p = b.try_acquire(now).unwrap();
        b.on_failure(p, now);
    }

    fn succeed(b: &mut CircuitBreaker, now: Timestamp) {
        let p = b.try_acquire(now).unwrap();
        b.on_success(p, now);
    }

    #[test]
    fn validation_names_the_setting() {
        let cases: [(BreakerConfig, &str); 8] = [
            (
                BreakerConfig {
                    failure_rate_threshold: 0.0,
                    ..BreakerConfig::default()
                },
                "breaker failure_rate_threshold",
            ),
            (
                BreakerConfig {
                    failure_rate_threshold: f64::NAN,
                    ..BreakerConfig::default()
                },
                "breaker failure_rate_threshold",
            ),
            (
                BreakerConfig {
                    failure_rate_threshold: 1.01,
                    ..BreakerConfig::default()
                },
                "breaker failure_rate_threshold",
            ),
            (
                BreakerConfig {
                    window: Duration::from_millis(9),
                    ..BreakerConfig::default()
                },
                "breaker window",
            ),
            (
                BreakerConfig {
                    minimum_calls: 0,
                    ..BreakerConfig::default()
                },
                "breaker minimum_calls",
            ),
            (
                BreakerConfig {
                    open_duration: Duration::ZERO,
                    ..BreakerConfig::default()
                },
                "breaker open_duration",
            ),
            (
                BreakerConfig {
                    open_duration: Duration::from_secs(2 * 24 * 3600),
                    ..BreakerConfig::default()
                },
                "breaker open_duration",
            ),
            (
                BreakerConfig {
                    half_open_max_probes: 0,
                    ..BreakerConfig::default()
                },
                "breaker half_open_max_probes",
            ),
        ];
        for (c, component) in cases {
            let e = CircuitBreaker::new(c).unwrap_err();
            assert_eq!(e.component, component, "{e}");
        }
        assert!(CircuitBreaker::new(BreakerConfig::default()).is_ok());
        assert!(CircuitBreaker::new(config(1.0, 1, 1)).is_ok());
    }

    #[test]
    fn opens_only_after_minimum_calls() {
        let mut b = CircuitBreaker::new(config(0.5, 4, 1)).unwrap();
        for _ in 0..3 {
            fail(&mut b, T0);
            assert_eq!(b.state(T0), BreakerState::Closed);
        }
        fail(&mut b, T0);
        assert_eq!(
            b.state(T0),
            BreakerState::Open {
                until: T0.saturating_add(Duration::from_millis(500))
            }
        );
    }

    #[test]
    fn rate_below_threshold_stays_closed_and_at_threshold_opens() {
        let mut b = CircuitBreaker::new(config(0.5, 4, 1)).unwrap();
        succeed(&mut b, T0);
        succeed(&mut b, T0);
        succeed(&mut b, T0);
        fail(&mut b, T0);
        assert_eq!(b.state(T0), BreakerState::Closed, "1/4 < 0.5");
        assert_eq!(
            b.window_counts(T0),
            WindowCounts {
                successes: 3,
                failures: 1
            }
        );
        fail(&mut b, T0);
        assert_eq!(b.state(T0), BreakerState::Closed, "2/5 < 0.5");
        fail(&mut b, T0);
        assert!(matches!(b.state(T0), BreakerState::Open { .. }), "3/6");
    }

    #[test]
    fn old_calls_slide_out_of_the_window() {
        let mut b = CircuitBreaker::new(config(0.5, 2, 1)).unwrap();
        fail(&mut b, T0);
        assert_eq!(b.window_counts(T0).failures, 1);
        // A full window later the first failure no longer counts.
        let later = at(1000);
        assert_eq!(b.window_counts(later), WindowCounts::default());
        fail(&mut b, later);
        assert_eq!(b.state(later), BreakerState::Closed);
        fail(&mut b, later);
        assert!(matches!(b.state(later), BreakerState::Open { .. }));
    }

    #[test]
    fn open_rejects_with_exact_retry_after_then_half_opens() {
        let mut b = CircuitBreaker::new(config(1.0, 1, 2)).unwrap();
        fail(&mut b, T0);
        let r = b.try_acquire(at(100)).unwrap_err();
        assert_eq!(r.retry_after, Duration::from_millis(400));
        assert!(r.to_string().contains("400 ms"), "{r}");
        assert_eq!(
            b.state(at(500)),
            BreakerState::HalfOpen {
                in_flight: 0,
                successes: 0
            }
        );
        let p1 = b.try_acquire(at(500)).unwrap();
        let p2 = b.try_acquire(at(501)).unwrap();
        assert!(b.try_acquire(at(502)).is_err(), "only two probes");
        b.on_success(p1, at(510));
        assert_eq!(
            b.state(at(510)),
            BreakerState::HalfOpen {
                in_flight: 1,
                successes: 1
            }
        );
        b.on_success(p2, at(520));
        assert_eq!(b.state(at(520)), BreakerState::Closed);
        assert_eq!(b.window_counts(at(520)), WindowCounts::default());
    }

    #[test]
    fn a_failed_probe_reopens() {
        let mut b = CircuitBreaker::new(config(1.0, 1, 2)).unwrap();
        fail(&mut b, T0);
        let p1 = b.try_acquire(at(500)).unwrap();
        let p2 = b.try_acquire(at(500)).unwrap();
        b.on_failure(p1, at(600));
        assert_eq!(b.state(at(600)), BreakerState::Open { until: at(1100) });
        // The other probe's late success is stale and changes nothing.
        b.on_success(p2, at(601));
        assert_eq!(b.state(at(601)), BreakerState::Open { until: at(1100) });
    }

    #[test]
    fn stale_permits_from_the_closed_state_are_ignored() {
        let mut b = CircuitBreaker::new(config(1.0, 1, 1)).unwrap();
        let early = b.try_acquire(T0).unwrap();
        fail(&mut b, T0);
        let probe = b.try_acquire(at(500)).unwrap();
        // The call started while closed reports a failure during the probe: ignored.
        b.on_failure(early, at(501));
        assert_eq!(
            b.state(at(501)),
            BreakerState::HalfOpen {
                in_flight: 1,
                successes: 0
            }
        );
        b.on_success(probe, at(502));
        assert_eq!(b.state(at(502)), BreakerState::Closed);
    }

    #[test]
    fn release_frees_a_probe_slot_without_counting() {
        let mut b = CircuitBreaker::new(config(1.0, 1, 1)).unwrap();
        fail(&mut b, T0);
        let p = b.try_acquire(at(500)).unwrap();
        assert!(b.try_acquire(at(500)).is_err());
        b.release(p, at(501));
        assert_eq!(
            b.state(at(501)),
            BreakerState::HalfOpen {
                in_flight: 0,
                successes: 0
            }
        );
        let p = b.try_acquire(at(502)).unwrap();
        b.on_success(p, at(503));
        assert_eq!(b.state(at(503)), BreakerState::Closed);
    }

    #[test]
    fn released_calls_do_not_count_while_closed() {
        let mut b = CircuitBreaker::new(config(0.5, 1, 1)).unwrap();
        let p = b.try_acquire(T0).unwrap();
        b.release(p, T0);
        assert_eq!(b.window_counts(T0), WindowCounts::default());
        assert_eq!(b.state(T0), BreakerState::Closed);
    }

    #[test]
    fn lost_probes_do_not_wedge_the_breaker() {
        let mut b = CircuitBreaker::new(config(1.0, 1, 1)).unwrap();
        fail(&mut b, T0);
        let lost = b.try_acquire(at(500)).unwrap();
        drop(lost);
        let r = b.try_acquire(at(600)).unwrap_err();
        assert_eq!(r.retry_after, Duration::from_millis(900), "upper bound");
        // `open` after the last probe the round counts as failed...
        assert_eq!(b.state(at(1000)), BreakerState::Open { until: at(1500) });
        assert!(b.try_acquire(at(1000)).is_err());
        // ...and after another open duration probing starts over.
        let p = b.try_acquire(at(1500)).unwrap();
        b.on_success(p, at(1501));
        assert_eq!(b.state(at(1501)), BreakerState::Closed);
    }

    #[test]
    fn time_going_backwards_stands_still() {
        let mut b = CircuitBreaker::new(config(1.0, 1, 1)).unwrap();
        fail(&mut b, at(1000));
        let r = b.try_acquire(T0).unwrap_err();
        assert_eq!(r.retry_after, Duration::from_millis(500));
        assert!(matches!(b.state(T0), BreakerState::Open { .. }));
    }

    #[test]
    fn state_names_are_stable() {
        assert_eq!(BreakerState::Closed.name(), "closed");
        assert_eq!(BreakerState::Open { until: T0 }.name(), "open");
        assert_eq!(
            BreakerState::HalfOpen {
                in_flight: 0,
                successes: 0
            }
            .name(),
            "half_open"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Advance(u64),
        Acquire,
        Success(usize),
        Failure(usize),
        Release(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0u64..1500).prop_map(Op::Advance),
            4 => Just(Op::Acquire),
            2 => any::<usize>().prop_map(Op::Success),
            2 => any::<usize>().prop_map(Op::Failure),
            1 => any::<usize>().prop_map(Op::Release),
        ]
    }

    fn any_config() -> impl Strategy<Value = BreakerConfig> {
        (0.01f64..=1.0, 10u64..2000, 1u32..10, 1u64..1000, 1u32..5).prop_map(
            |(threshold, window, min, open, probes)| BreakerConfig {
                failure_rate_threshold: threshold,
                window: Duration::from_millis(window),
                minimum_calls: min,
                open_duration: Duration::from_millis(open),
                half_open_max_probes: probes,
            },
        )
    }

    proptest! {
        #[test]
        fn invariants_hold_under_any_sequence(
            config in any_config(),
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut b = CircuitBreaker::new(config).unwrap();
            let open = config.open_duration;
            let mut now = T0;
            let mut permits: Vec<Permit> = Vec::new();
            for op in ops {
                let before = b.state(now);
                match op {
                    Op::Advance(ms) => now = now.saturating_add(Duration::from_millis(ms)),
                    Op::Acquire => {
                        // What the state promises, checked on a copy first.
                        match (before, b.clone().try_acquire(now)) {
                            (BreakerState::Open { until }, r) => {
                                let r = r.unwrap_err();
                                prop_assert!(now < until);
                                prop_assert_eq!(r.retry_after, until.saturating_since(now));
                                // Waiting exactly that long is enough.
                                let mut copy = b.clone();
                                prop_assert!(copy.try_acquire(now.saturating_add(r.retry_after)).is_ok());
                            }
                            (BreakerState::Closed, r) => prop_assert!(r.is_ok()),
                            (BreakerState::HalfOpen { in_flight, .. }, r) => {
                                prop_assert_eq!(r.is_ok(), in_flight < config.half_open_max_probes);
                            }
                        }
                        if let Ok(p) = b.try_acquire(now) {
                            permits.push(p);
                        }
                    }
                    Op::Success(i) | Op::Failure(i) | Op::Release(i) if !permits.is_empty() => {
                        let p = permits.swap_remove(i % permits.len());
                        match op {
                            Op::Success(_) => b.on_success(p, now),
                            Op::Failure(_) => b.on_failure(p, now),
                            _ => b.release(p, now),
                        }
                    }
                    _ => {}
                }
                let after = b.state(now);
                match after {
                    BreakerState::HalfOpen { in_flight, successes } => {
                        prop_assert!(in_flight <= config.half_open_max_probes);
                        prop_assert!(successes < config.half_open_max_probes);
                    }
                    BreakerState::Open { until } => {
                        prop_assert!(until > now);
                        // A fresh opening lasts exactly the open duration.
                        if matches!(op, Op::Failure(_)) && !matches!(before, BreakerState::Open { .. }) {
                            prop_assert_eq!(until, now.saturating_add(open));
                        }
                    }
                    BreakerState::Closed => {
                        // Only a successful probe (or nothing) leads to closed.
                        if !matches!(before, BreakerState::Closed) {
                            prop_assert!(matches!(op, Op::Success(_)));
                        }
                    }
                }
                if matches!(op, Op::Success(_) | Op::Release(_) | Op::Acquire) {
                    prop_assert!(
                        !(matches!(after, BreakerState::Open { .. }) && before == BreakerState::Closed),
                        "only failures open a closed breaker"
                    );
                }
            }
        }

        #[test]
        fn a_rate_below_the_threshold_never_opens(
            threshold in 0.34f64..=1.0,
            min in 1u32..10,
            ops in proptest::collection::vec(prop_oneof![
                (0u64..3000).prop_map(Some),
                Just(None),
            ], 0..300),
            failing in proptest::collection::vec(any::<bool>(), 300),
        ) {
            // Every failure comes with two successes at the same instant, so no window ever
            // holds more than a third of failures.
            let mut b = CircuitBreaker::new(config(threshold, min, 1)).unwrap();
            let mut now = T0;
            for (op, fails) in ops.into_iter().zip(failing) {
                match op {
                    Some(ms) => now = now.saturating_add(Duration::from_millis(ms)),
                    None if fails => {
                        succeed(&mut b, now);
                        succeed(&mut b, now);
                        fail(&mut b, now);
                    }
                    None => succeed(&mut b, now),
                }
                prop_assert_eq!(b.state(now), BreakerState::Closed);
            }
        }

        #[test]
        fn minimum_calls_all_failing_opens(
            config in any_config(),
            successes_long_ago in 0u32..20,
        ) {
            let mut b = CircuitBreaker::new(config).unwrap();
            for _ in 0..successes_long_ago {
                succeed(&mut b, T0);
            }
            // Successes a full window back no longer dilute the rate.
            let now = T0.saturating_add(config.window);
            for i in 1..=config.minimum_calls {
                prop_assert_eq!(b.state(now), BreakerState::Closed);
                fail(&mut b, now);
                if i < config.minimum_calls {
                    prop_assert_eq!(b.state(now), BreakerState::Closed);
                }
            }
            prop_assert_eq!(b.state(now), BreakerState::Open { until: now.saturating_add(config.open_duration) });
        }
    }
}
