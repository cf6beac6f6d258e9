//! The sliding-window counter.
//!
//! Time is cut into fixed windows of `W` ms aligned to the epoch. With `e` ms elapsed in the
//! current window, `cur` units counted in it and `prev` in the one before, the usage of the
//! sliding window ending now is estimated as `prev * (W - e) / W + cur`. A request of cost `c`
//! is admitted when `prev * (W - e) + (cur + c) * W <= limit * W` — all integers, no rounding.
//!
//! **Exact `retry_after`.** The estimate only falls as time passes (linearly inside a window,
//! continuously across a boundary, where `prev <- cur` and `cur <- 0`). So the smallest wait `t`
//! that admits the request is found in closed form:
//!
//! * if `cur + c <= limit`, inside this window: `t = W - e - floor((limit - cur - c) * W / prev)`;
//! * otherwise in the next window at offset `e'`: `t = (W - e) + max(0, W - floor((limit - c) * W / cur))`.

use crate::limit::{Cost, Policy, PolicyDecision};
use std::time::Duration;

/// The stored state of one counter key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterState {
    /// Start of the window `current` counts, in ms since the epoch (a multiple of `W`).
    pub window_start: u64,
    /// Units counted in that window.
    pub current: u64,
    /// Units counted in the window before it.
    pub previous: u64,
}

impl CounterState {
    /// The state as seen at `now`: rolled forward so `window_start` is the window holding
    /// `now`.
    pub fn rolled(self, window_ms: u64, now_ms: u64) -> Self {
        let start = now_ms - now_ms % window_ms;
        if self.window_start == start {
            self
        } else if self.window_start + window_ms == start {
            Self {
                window_start: start,
                current: 0,
                previous: self.current,
            }
        } else {
            Self {
                window_start: start,
                current: 0,
                previous: 0,
            }
        }
    }
}

/// The result of evaluating one request against one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterEvaluation {
    /// Whether this policy admits the request.
    pub allowed: bool,
    /// The state to store if the request is consumed (only meaningful when `allowed`).
    pub consumed: CounterState,
    /// The state rolled to `now` without consuming.
    pub unconsumed: CounterState,
    remaining_consumed: u64,
    remaining_unconsumed: u64,
    reset_consumed: u64,
    reset_unconsumed: u64,
    retry_after_ms: Option<u64>,
}

impl CounterEvaluation {
    /// The policy decision, given whether the whole check consumed the cost.
    pub fn decision(&self, policy: &Policy, consumed: bool) -> PolicyDecision {
        let (remaining, reset) = if consumed {
            (self.remaining_consumed, self.reset_consumed)
        } else {
            (self.remaining_unconsumed, self.reset_unconsumed)
        };
        PolicyDecision {
            policy: policy.name().clone(),
            allowed: self.allowed,
            limit: policy.limit(),
            window: policy.window(),
            remaining,
            reset_after: Duration::from_millis(reset),
            retry_after: self.retry_after_ms.map(Duration::from_millis),
        }
    }

    /// The exact wait in ms when refused.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after_ms
    }
}

/// Evaluates a request of `cost` at `now_ms` against `state` (None = never seen).
///
/// The cost must not exceed the limit (see [`crate::limit::LimitCheck::validate_cost`]).
pub fn evaluate(
    state: Option<CounterState>,
    policy: &Policy,
    now_ms: u64,
    cost: Cost,
) -> CounterEvaluation {
    let w = u128::from(policy.window_ms());
    let limit = u128::from(policy.limit());
    let c = u128::from(cost.units());
    let s = state.unwrap_or_default().rolled(policy.window_ms(), now_ms);
    let e = u128::from(now_ms - s.window_start);
    let (prev, cur) = (u128::from(s.previous), u128::from(s.current));

    let used_scaled = prev * (w - e) + cur * w; // usage * W
    let allowed = used_scaled + c * w <= limit * w;
    let remaining_of = |scaled: u128| to_u64(limit.saturating_sub(scaled.div_ceil(w)));
    let reset_of = |cur: u128| -> u64 {
        if cur > 0 {
            to_u64((w - e) + w)
        } else if prev > 0 {
            to_u64(w - e)
        } else {
            0
        }
    };

    let retry_after_ms = if allowed {
        None
    } else if cur + c <= limit {
        // prev > 0 here, else the request would be allowed.
        let keep = (limit - cur - c) * w / prev;
        Some(to_u64(w - e - keep.min(w - e)))
    } else {
        let keep = (limit - c) * w / cur;
        Some(to_u64((w - e) + w.saturating_sub(keep)))
    };

    let consumed = CounterState {
        current: s.current + cost.units(),
        ..s
    };
    CounterEvaluation {
        allowed,
        consumed,
        unconsumed: s,
        remaining_consumed: remaining_of(used_scaled + c * w),
        remaining_unconsumed: remaining_of(used_scaled),
        reset_consumed: reset_of(cur + c),
        reset_unconsumed: reset_of(cur),
        retry_after_ms,
    }
}

fn to_u64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::Algorithm;
    use crate::names::PolicyName;
    use proptest::prelude::*;

    fn policy(limit: u64, window_ms: u64) -> Policy {
        Policy::new(
            PolicyName::parse("p").unwrap(),
            limit,
            Duration::from_millis(window_ms),
            Algorithm::SlidingWindow,
        )
        .unwrap()
    }

    /// Runs admitted requests through the counter; returns the final state.
    fn drive(p: &Policy, requests: &[(u64, u64)]) -> Option<CounterState> {
        let mut state = None;
        for &(at, cost) in requests {
            let ev = evaluate(state, p, at, Cost::new(cost).unwrap());
            state = Some(if ev.allowed {
                ev.consumed
            } else {
                ev.unconsumed
            });
        }
        state
    }

    #[test]
    fn admits_up_to_the_limit_then_refuses() {
        let p = policy(3, 1000);
        let mut state = None;
        for _ in 0..3 {
            let ev = evaluate(state, &p, 10_000, Cost::ONE);
            assert!(ev.allowed);
            state = Some(ev.consumed);
        }
        let ev = evaluate(state, &p, 10_000, Cost::ONE);
        assert!(!ev.allowed);
        // All three in the current window: wait for the next window, then the previous window
        // must have slid out enough: 1000 + (1000 - floor(2*1000/3)) = 1334.
        assert_eq!(ev.retry_after_ms(), Some(1334));
        assert!(evaluate(state, &p, 10_000 + 1334, Cost::ONE).allowed);
        assert!(!evaluate(state, &p, 10_000 + 1333, Cost::ONE).allowed);
    }

    #[test]
    fn peek_consumes_nothing() {
        let p = policy(1, 1000);
        let ev = evaluate(None, &p, 5, Cost::PEEK);
        assert!(ev.allowed);
        assert_eq!(ev.consumed, ev.unconsumed);
        assert_eq!(ev.decision(&p, true).remaining, 1);
    }

    proptest! {
        /// Waiting exactly `retry_after` admits the request; one millisecond less does not.
        #[test]
        fn retry_after_is_exact(
            limit in 1u64..50,
            window in 1u64..5000,
            reqs in proptest::collection::vec((0u64..4000, 1u64..5), 0..40),
            probe_gap in 0u64..3000,
            cost_seed in 0u64..50,
        ) {
            let p = policy(limit, window);
            let mut t = 1_000_000u64;
            let timeline: Vec<(u64, u64)> = reqs.iter().map(|&(gap, c)| { t += gap % (window * 2 + 1); (t, c.min(limit)) }).collect();
            let state = drive(&p, &timeline);
            let now = t + probe_gap;
            let cost = Cost::new(cost_seed % limit + 1).unwrap();
            let ev = evaluate(state, &p, now, cost);
            if let Some(wait) = ev.retry_after_ms() {
                prop_assert!(wait > 0);
                prop_assert!(evaluate(state, &p, now + wait, cost).allowed);
                prop_assert!(!evaluate(state, &p, now + wait - 1, cost).allowed);
            } else {
                prop_assert!(ev.allowed);
            }
        }

        /// The estimate never admits more than `limit` units inside one fixed window, and
        /// never more than twice `limit` in any sliding window.
        #[test]
        fn never_over_admits(
            limit in 1u64..30,
            window in 10u64..2000,
            gaps in proptest::collection::vec(0u64..300, 1..200),
        ) {
            let p = policy(limit, window);
            let mut state = None;
            let mut t = 0u64;
            let mut admitted: Vec<u64> = Vec::new();
            for g in gaps {
                t += g;
                let ev = evaluate(state, &p, t, Cost::ONE);
                if ev.allowed { admitted.push(t); state = Some(ev.consumed) } else { state = Some(ev.unconsumed) }
            }
            for &start in &admitted {
                let fixed = start - start % window;
                let in_fixed = admitted.iter().filter(|&&a| a >= fixed && a < fixed + window).count() as u64;
                prop_assert!(in_fixed <= limit);
                let in_sliding = admitted.iter().filter(|&&a| a >= start && a < start + window).count() as u64;
                prop_assert!(in_sliding <= 2 * limit);
            }
        }

        /// Remaining is never above the limit and a fresh key starts full.
        #[test]
        fn remaining_is_bounded(limit in 1u64..1000, window in 1u64..100_000, now in 0u64..1u64 << 45) {
            let p = policy(limit, window);
            let ev = evaluate(None, &p, now, Cost::PEEK);
            prop_assert_eq!(ev.decision(&p, false).remaining, limit);
            prop_assert_eq!(ev.decision(&p, false).reset_after, Duration::ZERO);
        }
    }
}
