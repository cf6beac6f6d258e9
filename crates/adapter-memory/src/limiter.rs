//! The in-memory [`RateLimitStore`]: the domain's sliding-window math over a size-bounded
//! moka map.
//!
//! ## Keys
//!
//! State is kept per `(policy name, window, limit, algorithm, subject)`, so two policies never
//! share state — not even two versions of one policy name with different limits or windows,
//! and not the two algorithms (whose states differ in shape anyway).
//!
//! ## Atomicity
//!
//! One mutex covers a whole [`RateLimitStore::check`]: read every key's state, evaluate every
//! check at one "now" with [`counter::evaluate`] or [`SlidingLog::evaluate`], combine with
//! [`Decision::combine`], and — only when every policy admits a non-zero cost — write every
//! new state. A refused request or a peek (cost 0) writes nothing.
//!
//! ## Bounds
//!
//! The map holds at most [`StoreLimits::max_limiter_keys`] keys (moka evicts beyond that; an
//! evicted key starts afresh). Every key also expires (real time) `2 × window` plus a little
//! slack after its last write: by then its state has fully drained, so dropping it changes no
//! decision. Correctness never depends on that expiry — the math rolls and prunes stale state
//! against the injected clock's "now". A counter key is O(1); a sliding-log key holds at most
//! `limit` entries.
//!
//! ## Writes in place
//!
//! A counter key is re-inserted into moka (which sets its expiry) on its first write in a
//! window; later writes in the same window, within a second or a window of real time from that
//! insert (whichever is shorter), update the stored state in place. The insert happened in the
//! same window, so its backstop already outlives the state, and a moka insert — by far the
//! most expensive part of a check — happens about once per key per window instead of once per
//! check.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;
use parking_lot::Mutex;
use spool_domain::limit::counter::{self, CounterEvaluation, CounterState};
use spool_domain::limit::log::{LogEvaluation, SlidingLog};
use spool_domain::limit::{Algorithm, Cost, Decision, LimitCheck, Policy, PolicyDecision};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{PolicyName, Subject};
use spool_ports::{limiter::validate_checks, PortError, RateLimitStore};

use crate::Clock;

/// Real-time slack added to a key's backstop expiry, so a test clock that runs behind real
/// time never loses live state.
const BACKSTOP_SLACK: Duration = Duration::from_secs(5);

/// Identifies one policy counting for one subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LimiterKey {
    policy: PolicyName,
    window_ms: u64,
    limit: u64,
    algorithm: Algorithm,
    subject: Subject,
}

impl LimiterKey {
    fn of(check: &LimitCheck) -> Self {
        let p = &check.policy;
        Self {
            policy: p.name().clone(),
            window_ms: p.window_ms(),
            limit: p.limit(),
            algorithm: p.algorithm(),
            subject: check.subject.clone(),
        }
    }
}

/// The stored state of one key.
#[derive(Debug, Clone)]
enum KeyState {
    Counter(CounterState),
    Log(SlidingLog),
}

/// One key's moka value: its state (written in place while the window lasts, see the module
/// docs) and the real time it was inserted.
#[derive(Debug)]
struct Slot {
    state: Mutex<KeyState>,
    inserted: std::time::Instant,
}

impl Slot {
    fn new(state: KeyState) -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(state),
            inserted: std::time::Instant::now(),
        })
    }
}

/// Longest real time a counter is written in place after its insert.
const MAX_IN_PLACE: Duration = Duration::from_secs(1);

/// moka's per-key expiry: `2 × window` + slack after the last write; reads do not extend it.
struct Backstop;

impl Backstop {
    fn of(key: &LimiterKey) -> Duration {
        Duration::from_millis(key.window_ms)
            .saturating_mul(2)
            .saturating_add(BACKSTOP_SLACK)
    }
}

impl moka::Expiry<LimiterKey, Arc<Slot>> for Backstop {
    fn expire_after_create(
        &self,
        key: &LimiterKey,
        _value: &Arc<Slot>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Self::of(key))
    }

    fn expire_after_update(
        &self,
        key: &LimiterKey,
        _value: &Arc<Slot>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(Self::of(key))
    }
}

/// One policy's evaluation plus the state to commit if the whole check is admitted.
enum Evaluated {
    Counter(CounterEvaluation),
    Log(LogEvaluation, SlidingLog),
}

impl Evaluated {
    fn allowed(&self) -> bool {
        match self {
            Evaluated::Counter(ev) => ev.allowed,
            Evaluated::Log(ev, _) => ev.allowed,
        }
    }

    fn decision(&self, policy: &Policy, consumed: bool) -> PolicyDecision {
        match self {
            Evaluated::Counter(ev) => ev.decision(policy, consumed),
            Evaluated::Log(ev, _) => ev.decision(policy, consumed),
        }
    }

    /// The state after consuming `cost` at `now_ms`.
    fn committed(self, now_ms: u64, cost: Cost) -> KeyState {
        match self {
            Evaluated::Counter(ev) => KeyState::Counter(ev.consumed),
            Evaluated::Log(_, mut log) => {
                log.record(now_ms, cost);
                KeyState::Log(log)
            }
        }
    }
}

/// In-memory rate limiter: sliding-window counter or exact log per policy, all-or-nothing.
pub struct MemoryRateLimiter {
    keys: Cache<LimiterKey, Arc<Slot>>,
    /// Serialises checks; holds the latest "now" used, so time never runs backwards for the
    /// math even if the injected clock does.
    commit: Mutex<u64>,
    clock: Arc<dyn Clock>,
}

impl MemoryRateLimiter {
    /// Builds the store.
    pub fn new(limits: &StoreLimits, clock: Arc<dyn Clock>) -> Self {
        Self {
            keys: Cache::builder()
                .max_capacity(limits.max_limiter_keys)
                .expire_after(Backstop)
                .build(),
            commit: Mutex::new(0),
            clock,
        }
    }

    /// Evaluates one check; returns the stored slot too, for an in-place write.
    fn evaluate(
        &self,
        key: &LimiterKey,
        policy: &Policy,
        now_ms: u64,
        cost: Cost,
    ) -> (Evaluated, Option<Arc<Slot>>) {
        let stored = self.keys.get(key);
        let ev = match policy.algorithm() {
            Algorithm::SlidingWindow => {
                let state = match stored.as_deref().map(|s| s.state.lock().clone()) {
                    Some(KeyState::Counter(s)) => Some(s),
                    _ => None,
                };
                Evaluated::Counter(counter::evaluate(state, policy, now_ms, cost))
            }
            Algorithm::SlidingLog => {
                let mut log = match stored.as_deref().map(|s| s.state.lock().clone()) {
                    Some(KeyState::Log(l)) => l,
                    _ => SlidingLog::default(),
                };
                log.prune(policy.window_ms(), now_ms);
                let ev = log.evaluate(policy, now_ms, cost);
                Evaluated::Log(ev, log)
            }
        };
        (ev, stored)
    }
}

#[async_trait]
impl RateLimitStore for MemoryRateLimiter {
    async fn check(&self, checks: &[LimitCheck], cost: Cost) -> Result<Decision, PortError> {
        validate_checks(checks, cost)?;
        let mut last_now = self.commit.lock();
        let now_ms = self.clock.now().as_millis().max(*last_now);
        *last_now = now_ms;

        let evaluated: Vec<(LimiterKey, Evaluated, Option<Arc<Slot>>)> = checks
            .iter()
            .map(|c| {
                let key = LimiterKey::of(c);
                let (ev, slot) = self.evaluate(&key, &c.policy, now_ms, cost);
                (key, ev, slot)
            })
            .collect();
        let consumed = evaluated.iter().all(|(_, ev, _)| ev.allowed());
        let decision = Decision::combine(
            checks
                .iter()
                .zip(&evaluated)
                .map(|(c, (_, ev, _))| ev.decision(&c.policy, consumed))
                .collect(),
        );
        if consumed && cost.units() > 0 {
            for (key, ev, slot) in evaluated {
                let state = ev.committed(now_ms, cost);
                match slot {
                    Some(slot) if in_place(&slot, &state, key.window_ms) => {
                        *slot.state.lock() = state;
                    }
                    _ => self.keys.insert(key, Slot::new(state)),
                }
            }
        }
        drop(last_now);
        Ok(decision)
    }
}

/// Whether `new` may overwrite `slot` in place: both counters of the same window, and the slot
/// inserted less than a window (at most [`MAX_IN_PLACE`]) of real time ago.
fn in_place(slot: &Slot, new: &KeyState, window_ms: u64) -> bool {
    let KeyState::Counter(new) = new else {
        return false;
    };
    let same_window = matches!(
        &*slot.state.lock(),
        KeyState::Counter(old) if old.window_start == new.window_start
    );
    same_window && slot.inserted.elapsed() < Duration::from_millis(window_ms).min(MAX_IN_PLACE)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use spool_domain::names::UserId;
    use spool_domain::Timestamp;

    struct FixedClock;

    impl Clock for FixedClock {
        fn now(&self) -> Timestamp {
            Timestamp::from_millis(5_000_000)
        }
    }

    fn check(name: &str, limit: u64, user: &str) -> LimitCheck {
        LimitCheck::new(
            Policy::new(
                PolicyName::parse(name).unwrap(),
                limit,
                Duration::from_secs(60),
                Algorithm::SlidingWindow,
            )
            .unwrap(),
            Subject::User(UserId::parse(user).unwrap()),
        )
    }

    #[tokio::test]
    async fn key_count_is_bounded() {
        let limiter = MemoryRateLimiter::new(
            &StoreLimits {
                max_limiter_keys: 10,
                ..StoreLimits::default()
            },
            Arc::new(FixedClock),
        );
        for i in 0..200 {
            let d = limiter
                .check(&[check("p", 5, &format!("u{i}"))], Cost::ONE)
                .await
                .unwrap();
            assert!(d.allowed);
        }
        limiter.keys.run_pending_tasks();
        assert!(
            limiter.keys.entry_count() <= 10,
            "{}",
            limiter.keys.entry_count()
        );
    }

    #[tokio::test]
    async fn peeks_and_refusals_write_no_key() {
        let limiter = MemoryRateLimiter::new(&StoreLimits::default(), Arc::new(FixedClock));
        let d = limiter
            .check(&[check("p", 5, "peeker")], Cost::PEEK)
            .await
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.policies[0].remaining, 5);
        let tight = check("tight", 1, "u");
        assert!(
            limiter
                .check(std::slice::from_ref(&tight), Cost::ONE)
                .await
                .unwrap()
                .allowed
        );
        // Refused by `tight`: the fresh policy `loose` must not get a key.
        let d = limiter
            .check(&[check("loose", 5, "u"), tight], Cost::ONE)
            .await
            .unwrap();
        assert!(!d.allowed);
        limiter.keys.run_pending_tasks();
        assert_eq!(limiter.keys.entry_count(), 1);
    }

    #[tokio::test]
    async fn same_name_with_another_limit_is_another_key() {
        let limiter = MemoryRateLimiter::new(&StoreLimits::default(), Arc::new(FixedClock));
        assert!(
            limiter
                .check(&[check("p", 1, "u")], Cost::ONE)
                .await
                .unwrap()
                .allowed
        );
        assert!(
            !limiter
                .check(&[check("p", 1, "u")], Cost::ONE)
                .await
                .unwrap()
                .allowed
        );
        assert!(
            limiter
                .check(&[check("p", 2, "u")], Cost::ONE)
                .await
                .unwrap()
                .allowed
        );
    }
}
