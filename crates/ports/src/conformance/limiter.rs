//! Conformance tests of the limiter port.
//!
//! The Redis run uses real time, so tests that let time pass use windows of about a second and
//! only ever wait a duration the store returned (`retry_after`, `reset_after`); they assert
//! bounds (`0 < retry_after <= 2 × window`), never exact waits. Tests that let no time pass use
//! long windows, so the little real time a round trip takes cannot change a decision.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use spool_domain::limit::{Algorithm, Cost, Decision, LimitCheck, Policy};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{PolicyName, ProjectId, Subject, UserId};

use crate::conformance::{Factory, Fixture};
use crate::PortError;

/// Lists this group's tests for [`crate::conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_limiter {
    (#[$attr:meta] $factory:ident) => {
        $crate::__conformance_group!(
            #[$attr]
            $factory,
            conformance_limiter,
            limiter,
            [
                allows_up_to_the_limit_then_denies,
                waiting_retry_after_admits_the_same_request,
                window_slides,
                several_policies_are_all_or_nothing,
                cost_zero_peeks,
                subjects_are_independent,
                policies_never_share_state,
                cost_counts_units,
                invalid_checks_are_refused,
                decision_reports_every_policy_in_order,
            ]
        );
    };
}

const BOTH: [Algorithm; 2] = [Algorithm::SlidingWindow, Algorithm::SlidingLog];
const LONG: Duration = Duration::from_secs(3600);
const SECOND: Duration = Duration::from_secs(1);

fn policy(name: &str, limit: u64, window: Duration, algorithm: Algorithm) -> Policy {
    Policy::new(PolicyName::parse(name).unwrap(), limit, window, algorithm).unwrap()
}

fn user(id: &str) -> Subject {
    Subject::User(UserId::parse(id).unwrap())
}

fn algo_tag(a: Algorithm) -> &'static str {
    match a {
        Algorithm::SlidingWindow => "counter",
        Algorithm::SlidingLog => "log",
    }
}

fn cost(units: u64) -> Cost {
    Cost::new(units).unwrap()
}

async fn check(fx: &Fixture, checks: &[LimitCheck], units: u64) -> Decision {
    fx.limiter.check(checks, cost(units)).await.unwrap()
}

async fn check_one(fx: &Fixture, c: &LimitCheck, units: u64) -> Decision {
    check(fx, std::slice::from_ref(c), units).await
}

/// Remaining units of one check, by a peek.
async fn peek_remaining(fx: &Fixture, c: &LimitCheck) -> u64 {
    let d = check_one(fx, c, 0).await;
    assert!(d.allowed, "a peek is always admitted");
    d.policies[0].remaining
}

/// The largest `retry_after` a refusal of `p` may report.
fn max_wait(p: &Policy) -> Duration {
    match p.algorithm() {
        Algorithm::SlidingWindow => p.window() * 2,
        Algorithm::SlidingLog => p.window(),
    }
}

fn assert_refused(d: &Decision, p: &Policy) -> Duration {
    assert!(!d.allowed, "{d:?}");
    let wait = d.retry_after.expect("a refusal says how long to wait");
    assert!(
        !wait.is_zero() && wait <= max_wait(p),
        "retry_after {wait:?} for {p:?}"
    );
    assert_eq!(d.policies[0].retry_after, Some(wait));
    wait
}

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, PortError>, what: &str) {
    match r {
        Err(PortError::Invalid(_)) => {}
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

/// Both algorithms admit `limit` requests, counting `remaining` down, then refuse with a
/// `retry_after` in `(0, 2 × window]`.
pub async fn allows_up_to_the_limit_then_denies(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    for algorithm in BOTH {
        let p = policy("per_hour", 5, LONG, algorithm);
        let c = LimitCheck::new(p.clone(), user(&format!("lim-{}", algo_tag(algorithm))));
        for i in 1..=5u64 {
            let d = check_one(&fx, &c, 1).await;
            assert!(d.allowed, "{algorithm:?} request {i}: {d:?}");
            assert_eq!(d.retry_after, None);
            assert_eq!(d.policies[0].limit, 5);
            assert_eq!(d.policies[0].remaining, 5 - i, "{algorithm:?} request {i}");
        }
        for _ in 0..2 {
            let d = check_one(&fx, &c, 1).await;
            assert_refused(&d, &p);
            assert_eq!(d.policies[0].remaining, 0);
        }
    }
}

/// `retry_after` is exact: after waiting it, the same request is admitted.
pub async fn waiting_retry_after_admits_the_same_request(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    for algorithm in BOTH {
        let p = policy("per_second", 3, SECOND, algorithm);
        let c = LimitCheck::new(p.clone(), user(&format!("retry-{}", algo_tag(algorithm))));
        for _ in 0..3 {
            assert!(check_one(&fx, &c, 1).await.allowed);
        }
        let wait = assert_refused(&check_one(&fx, &c, 1).await, &p);
        fx.clock.advance(wait).await;
        let d = check_one(&fx, &c, 1).await;
        assert!(d.allowed, "{algorithm:?} after waiting {wait:?}: {d:?}");
    }
}

/// Usage drains with time. The log forgets each request exactly one window after it; both
/// algorithms are back to the full limit once `reset_after` has passed.
pub async fn window_slides(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;

    // Sliding log: the older request leaves first, the newer one still counts.
    let p = policy("slide_log", 2, SECOND, Algorithm::SlidingLog);
    let c = LimitCheck::new(p.clone(), user("slide-log"));
    assert!(check_one(&fx, &c, 1).await.allowed);
    fx.clock.advance(Duration::from_millis(500)).await;
    assert!(check_one(&fx, &c, 1).await.allowed);
    let wait = assert_refused(&check_one(&fx, &c, 1).await, &p);
    assert!(
        wait <= Duration::from_millis(500),
        "the first request leaves the window at most 500 ms from now: {wait:?}"
    );
    fx.clock.advance(wait).await;
    let d = check_one(&fx, &c, 1).await;
    assert!(d.allowed, "the first request slid out: {d:?}");
    assert_eq!(d.policies[0].remaining, 0, "the second still counts");
    fx.clock.advance(SECOND).await;
    assert_eq!(
        peek_remaining(&fx, &c).await,
        2,
        "a full window later, all gone"
    );

    // Both algorithms: after `reset_after` the whole limit is back.
    for algorithm in BOTH {
        let p = policy("slide_reset", 4, SECOND, algorithm);
        let c = LimitCheck::new(p.clone(), user(&format!("reset-{}", algo_tag(algorithm))));
        let d = check_one(&fx, &c, 4).await;
        assert!(d.allowed);
        assert_eq!(d.policies[0].remaining, 0);
        let reset = d.policies[0].reset_after;
        assert!(
            !reset.is_zero() && reset <= max_wait(&p),
            "{algorithm:?} reset_after {reset:?}"
        );
        assert_refused(&check_one(&fx, &c, 1).await, &p);
        // Wait in two steps to keep each advance short.
        fx.clock.advance(reset / 2).await;
        fx.clock.advance(reset - reset / 2).await;
        assert_eq!(
            peek_remaining(&fx, &c).await,
            4,
            "{algorithm:?} fully drained"
        );
        assert!(check_one(&fx, &c, 4).await.allowed);
    }
}

/// A request refused by one policy consumes nothing from any other.
pub async fn several_policies_are_all_or_nothing(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let subject = user("multi");
    let tight = LimitCheck::new(
        policy("tight", 2, LONG, Algorithm::SlidingWindow),
        subject.clone(),
    );
    let loose = LimitCheck::new(
        policy("loose", 10, LONG, Algorithm::SlidingLog),
        subject.clone(),
    );
    let by_ip = LimitCheck::new(
        policy("per_ip", 10, LONG, Algorithm::SlidingWindow),
        Subject::Ip("192.0.2.7".parse().unwrap()),
    );
    for _ in 0..2 {
        assert!(
            check(&fx, &[tight.clone(), loose.clone(), by_ip.clone()], 1)
                .await
                .allowed
        );
    }
    assert_eq!(peek_remaining(&fx, &loose).await, 8);
    assert_eq!(peek_remaining(&fx, &by_ip).await, 8);

    for order in [
        vec![tight.clone(), loose.clone(), by_ip.clone()],
        vec![loose.clone(), by_ip.clone(), tight.clone()],
    ] {
        let d = check(&fx, &order, 1).await;
        assert!(!d.allowed);
        assert!(d.retry_after.is_some());
        for (pd, c) in d.policies.iter().zip(&order) {
            let is_tight = c.policy.name() == tight.policy.name();
            assert_eq!(pd.allowed, !is_tight, "{pd:?}");
            assert_eq!(pd.retry_after.is_some(), is_tight, "{pd:?}");
        }
        assert_eq!(
            peek_remaining(&fx, &loose).await,
            8,
            "refused: loose untouched"
        );
        assert_eq!(
            peek_remaining(&fx, &by_ip).await,
            8,
            "refused: ip untouched"
        );
        assert_eq!(peek_remaining(&fx, &tight).await, 0);
    }

    // A policy never used before, refused together with `tight`, stays fresh.
    let fresh = LimitCheck::new(
        policy("fresh", 3, LONG, Algorithm::SlidingLog),
        subject.clone(),
    );
    assert!(!check(&fx, &[fresh.clone(), tight.clone()], 1).await.allowed);
    assert_eq!(peek_remaining(&fx, &fresh).await, 3);

    // Alone, the other policies still admit.
    let d = check(&fx, &[loose.clone(), by_ip.clone()], 1).await;
    assert!(d.allowed);
    assert_eq!(d.policies[0].remaining, 7);
    assert_eq!(d.policies[1].remaining, 7);
}

/// Cost 0 never consumes, is always admitted and reports what remains.
pub async fn cost_zero_peeks(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    for algorithm in BOTH {
        let c = LimitCheck::new(
            policy("peeked", 3, LONG, algorithm),
            user(&format!("peek-{}", algo_tag(algorithm))),
        );
        for _ in 0..3 {
            let d = check_one(&fx, &c, 0).await;
            assert!(d.allowed);
            assert_eq!(d.retry_after, None);
            assert_eq!(d.policies[0].remaining, 3, "{algorithm:?} fresh");
        }
        assert_eq!(check_one(&fx, &c, 2).await.policies[0].remaining, 1);
        for _ in 0..3 {
            assert_eq!(peek_remaining(&fx, &c).await, 1, "{algorithm:?} after 2");
        }
        assert!(check_one(&fx, &c, 1).await.allowed);
        assert!(!check_one(&fx, &c, 1).await.allowed);
        let d = check_one(&fx, &c, 0).await;
        assert!(
            d.allowed,
            "{algorithm:?}: a peek at an exhausted limit is admitted"
        );
        assert_eq!(d.policies[0].remaining, 0);
    }
}

/// Each subject has its own budget: users, projects and IPs never share, even with equal text.
pub async fn subjects_are_independent(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    for algorithm in BOTH {
        let p = policy("one_each", 1, LONG, algorithm);
        let v4: IpAddr = "198.51.100.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let subjects = [
            user("subj-a"),
            user("subj-b"),
            Subject::Project(ProjectId::parse("subj-a").unwrap()),
            Subject::Ip(v4),
            Subject::Ip(v6),
        ];
        for s in &subjects {
            let c = LimitCheck::new(p.clone(), s.clone());
            assert!(check_one(&fx, &c, 1).await.allowed, "{algorithm:?} {s}");
        }
        for s in &subjects {
            let c = LimitCheck::new(p.clone(), s.clone());
            assert!(!check_one(&fx, &c, 1).await.allowed, "{algorithm:?} {s}");
        }
    }
}

/// Policies with different names, limits, windows or algorithms keep separate state for the
/// same subject.
pub async fn policies_never_share_state(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let s = user("shared-subject");
    let variants = [
        policy("alpha", 1, LONG, Algorithm::SlidingWindow),
        policy("beta", 1, LONG, Algorithm::SlidingWindow),
        policy("alpha", 2, LONG, Algorithm::SlidingWindow),
        policy("alpha", 1, LONG * 2, Algorithm::SlidingWindow),
        policy("alpha", 1, LONG, Algorithm::SlidingLog),
    ];
    for p in &variants {
        let c = LimitCheck::new(p.clone(), s.clone());
        let d = check_one(&fx, &c, 1).await;
        assert!(d.allowed, "{p:?} starts fresh: {d:?}");
        assert_eq!(d.policies[0].remaining, p.limit() - 1, "{p:?}");
    }
    let first = LimitCheck::new(variants[0].clone(), s.clone());
    assert!(!check_one(&fx, &first, 1).await.allowed);
}

/// A cost of n consumes n units; `remaining` drops by the cost, and a cost larger than what
/// remains is refused without consuming.
pub async fn cost_counts_units(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    for algorithm in BOTH {
        let p = policy("units", 10, LONG, algorithm);
        let c = LimitCheck::new(p.clone(), user(&format!("units-{}", algo_tag(algorithm))));
        assert_eq!(check_one(&fx, &c, 4).await.policies[0].remaining, 6);
        assert_eq!(check_one(&fx, &c, 3).await.policies[0].remaining, 3);
        let d = check_one(&fx, &c, 4).await;
        assert_refused(&d, &p);
        assert_eq!(d.policies[0].remaining, 3, "refused: nothing consumed");
        let d = check_one(&fx, &c, 3).await;
        assert!(d.allowed, "{algorithm:?} exactly what remains");
        assert_eq!(d.policies[0].remaining, 0);
    }
}

/// Empty, oversized and duplicate check sets, and a cost above a limit, are `Invalid` and
/// consume nothing.
pub async fn invalid_checks_are_refused(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let s = user("invalid");
    let big = LimitCheck::new(policy("big", 5, LONG, Algorithm::SlidingWindow), s.clone());
    let small = LimitCheck::new(policy("small", 2, LONG, Algorithm::SlidingLog), s.clone());

    assert_invalid(fx.limiter.check(&[], Cost::ONE).await, "no checks");
    assert_invalid(
        fx.limiter
            .check(&[big.clone(), small.clone()], cost(3))
            .await,
        "cost above one policy's limit",
    );
    assert_invalid(
        fx.limiter.check(std::slice::from_ref(&big), cost(6)).await,
        "cost 6 > 5",
    );
    assert_invalid(
        fx.limiter
            .check(&[big.clone(), big.clone()], Cost::ONE)
            .await,
        "duplicate (policy, subject)",
    );
    let many: Vec<LimitCheck> = (0..17)
        .map(|i| LimitCheck::new(big.policy.clone(), user(&format!("invalid-{i}"))))
        .collect();
    assert_invalid(fx.limiter.check(&many, Cost::ONE).await, "17 checks");
    assert!(
        check(&fx, &many[..16], 1).await.allowed,
        "16 checks are allowed"
    );

    assert_eq!(peek_remaining(&fx, &big).await, 5, "nothing consumed");
    assert_eq!(peek_remaining(&fx, &small).await, 2, "nothing consumed");
    // The same policy for two subjects is not a duplicate.
    let other = LimitCheck::new(big.policy.clone(), user("invalid-other"));
    assert!(check(&fx, &[big, other], 1).await.allowed);
}

/// The decision lists every policy in the order given, with its limit and window, and the
/// overall `retry_after` is the longest of the refusing policies'.
pub async fn decision_reports_every_policy_in_order(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let s = user("report");
    let a = LimitCheck::new(policy("a_log", 1, LONG, Algorithm::SlidingLog), s.clone());
    let b = LimitCheck::new(
        policy("b_counter", 1, LONG * 2, Algorithm::SlidingWindow),
        s.clone(),
    );
    let c = LimitCheck::new(policy("c_roomy", 100, LONG, Algorithm::SlidingLog), s);
    let checks = [a.clone(), b.clone(), c.clone()];

    let d = check(&fx, &checks, 1).await;
    assert!(d.allowed);
    assert_eq!(d.retry_after, None);
    let names: Vec<&str> = d.policies.iter().map(|p| p.policy.as_str()).collect();
    assert_eq!(names, ["a_log", "b_counter", "c_roomy"]);
    for (pd, ck) in d.policies.iter().zip(&checks) {
        assert!(pd.allowed);
        assert_eq!(pd.limit, ck.policy.limit());
        assert_eq!(pd.window, ck.policy.window());
        assert_eq!(pd.remaining, ck.policy.limit() - 1);
        assert_eq!(pd.retry_after, None);
        assert!(
            !pd.reset_after.is_zero() && pd.reset_after <= max_wait(&ck.policy),
            "{pd:?}"
        );
    }

    let d = check(&fx, &checks, 1).await;
    assert!(!d.allowed);
    let refusing: Vec<Duration> = d.policies.iter().filter_map(|p| p.retry_after).collect();
    assert_eq!(refusing.len(), 2, "a and b refuse, c admits: {d:?}");
    assert_eq!(d.retry_after, refusing.iter().copied().max());
    assert!(d.policies[2].allowed);
    assert_eq!(
        d.policies[2].remaining, 99,
        "c reports its unconsumed state"
    );
    for (pd, ck) in d.policies.iter().zip(&checks).take(2) {
        let wait = pd.retry_after.unwrap();
        assert!(!wait.is_zero() && wait <= max_wait(&ck.policy), "{pd:?}");
        assert_eq!(pd.remaining, 0);
    }
}
