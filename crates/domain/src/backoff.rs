//! Retry backoff: exponential growth, a cap, and optional full jitter.
//!
//! `delay(n) = min(max, initial * factor^(n-1))` for the n-th retry (n >= 1); with full jitter
//! the delay is drawn uniformly from `[0, delay(n)]` using a caller-supplied random fraction,
//! so the function stays pure and the Redis adapter's scripts compute the same value.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::duration_millis;
use crate::ValidationError;

/// Whether the computed delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Exactly the exponential delay.
    None,
    /// Uniform in `[0, delay]` ("full jitter"): spreads retries of many clients.
    #[default]
    Full,
}

/// An exponential backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay before the first retry, in ms.
    pub initial_ms: u64,
    /// Upper bound of any delay, in ms.
    pub max_ms: u64,
    /// Growth factor per retry (1 = constant).
    pub factor: u32,
    /// Randomisation.
    pub jitter: Jitter,
}

impl Default for Backoff {
    /// 1 s, doubling, capped at 10 minutes, full jitter.
    fn default() -> Self {
        Self {
            initial_ms: 1000,
            max_ms: 600_000,
            factor: 2,
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// Longest accepted cap (7 days).
    pub const MAX: Duration = Duration::from_secs(7 * 24 * 3600);

    /// Validates a schedule: `initial <= max <= 7 days`, `1 <= factor <= 16`.
    pub fn new(
        initial: Duration,
        max: Duration,
        factor: u32,
        jitter: Jitter,
    ) -> Result<Self, ValidationError> {
        let b = Self {
            initial_ms: duration_millis(initial),
            max_ms: duration_millis(max),
            factor,
            jitter,
        };
        b.validate()?;
        Ok(b)
    }

    /// A schedule without growth or jitter: always `delay`.
    pub fn constant(delay: Duration) -> Self {
        let ms = duration_millis(delay).min(duration_millis(Self::MAX));
        Self {
            initial_ms: ms,
            max_ms: ms,
            factor: 1,
            jitter: Jitter::None,
        }
    }

    /// Checks the bounds of [`Backoff::new`] (useful after deserialising).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.initial_ms > self.max_ms || self.max_ms > duration_millis(Self::MAX) {
            return Err(ValidationError::new(
                "backoff",
                "initial must be at most max, and max at most 7 days",
            ));
        }
        if !(1..=16).contains(&self.factor) {
            return Err(ValidationError::new("backoff", "factor must be 1..=16"));
        }
        Ok(())
    }

    /// The un-jittered delay before retry number `retry` (1-based; 0 is treated as 1).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let mut d = self.initial_ms;
        for _ in 1..retry.max(1) {
            if d >= self.max_ms {
                break;
            }
            d = d.saturating_mul(u64::from(self.factor));
        }
        Duration::from_millis(d.min(self.max_ms))
    }

    /// The delay before retry number `retry`, with `random` in `[0, 1)` used for jitter
    /// (values outside are clamped).
    pub fn delay(&self, retry: u32, random: f64) -> Duration {
        let ceiling = duration_millis(self.ceiling(retry));
        match self.jitter {
            Jitter::None => Duration::from_millis(ceiling),
            Jitter::Full => {
                let r = if random.is_finite() {
                    random.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                // floor(ceiling * r) computed in f64; ceiling <= 7 days in ms < 2^53.
                Duration::from_millis(((ceiling as f64) * r).floor() as u64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_then_caps() {
        let b = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(1000),
            2,
            Jitter::None,
        )
        .unwrap();
        let got: Vec<u64> = (1..=6)
            .map(|n| b.delay(n, 0.5).as_millis() as u64)
            .collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn rejects_bad_schedules() {
        assert!(Backoff::new(
            Duration::from_secs(2),
            Duration::from_secs(1),
            2,
            Jitter::None
        )
        .is_err());
        assert!(Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(2),
            0,
            Jitter::None
        )
        .is_err());
    }

    proptest! {
        #[test]
        fn delay_is_bounded_and_monotone(
            initial in 0u64..10_000, extra in 0u64..1_000_000, factor in 1u32..=16,
            retry in 0u32..100, r in 0.0f64..1.0,
        ) {
            let b = Backoff::new(Duration::from_millis(initial), Duration::from_millis(initial + extra), factor, Jitter::Full).unwrap();
            let d = b.delay(retry, r);
            prop_assert!(d <= b.ceiling(retry));
            prop_assert!(b.ceiling(retry) <= Duration::from_millis(b.max_ms));
            prop_assert!(b.ceiling(retry) <= b.ceiling(retry + 1));
        }
    }
}
