//! Differential test: `lua/limit.lua` computes exactly what `spool_domain::limit` computes.
//!
//! The script is run on the test Redis with one change — its `TIME` call replaced by an
//! instant passed in `ARGV` — so random request timelines can be replayed through both the
//! script and the domain's pure functions and every number compared (allowed, remaining,
//! reset, retry-after), including the all-or-nothing combination of several policies.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spool_adapter_redis::testing;
use spool_domain::limit::counter::{self, CounterState};
use spool_domain::limit::log::SlidingLog;
use spool_domain::limit::{Algorithm, Cost, Policy};
use spool_domain::names::PolicyName;

const SCRIPT: &str = include_str!("../lua/limit.lua");

fn script_at_fixed_time() -> String {
    let original = "local t = redis.call('TIME')";
    assert!(
        SCRIPT.contains(original),
        "limit.lua reads TIME differently now"
    );
    SCRIPT.replace(original, "local t = { ARGV[#ARGV - 1], ARGV[#ARGV] }")
}

enum Model {
    Counter(Option<CounterState>),
    Log(SlidingLog),
}

struct Case {
    policy: Policy,
    key: String,
    model: Model,
}

#[test]
fn limit_script_matches_the_domain_math() {
    let script = script_at_fixed_time();
    let mut con = redis::Client::open(testing::redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let prefix = testing::unique_prefix();
    let mut rng = StdRng::seed_from_u64(0x05e1_1001);
    let mut compared = 0usize;
    for seq in 0..60 {
        // Windows of at least 10 s, so Redis' real-time TTLs never expire state mid-sequence.
        let n_policies = rng.random_range(1..=3);
        let mut cases: Vec<Case> = (0..n_policies)
            .map(|i| {
                let algo = if rng.random_bool(0.5) {
                    Algorithm::SlidingWindow
                } else {
                    Algorithm::SlidingLog
                };
                let limit = rng.random_range(1..=20u64);
                let window = rng.random_range(10_000..=600_000u64);
                let policy = Policy::new(
                    PolicyName::parse(format!("p{i}")).unwrap(),
                    limit,
                    Duration::from_millis(window),
                    algo,
                )
                .unwrap();
                Case {
                    key: format!("{prefix}:{{rl}}:s{seq}:p{i}"),
                    model: match algo {
                        Algorithm::SlidingWindow => Model::Counter(None),
                        Algorithm::SlidingLog => Model::Log(SlidingLog::default()),
                    },
                    policy,
                }
            })
            .collect();
        let min_limit = cases.iter().map(|c| c.policy.limit()).min().unwrap();
        let max_window = cases.iter().map(|c| c.policy.window_ms()).max().unwrap();
        let mut now: u64 = 1_700_000_000_000 + rng.random_range(0..1_000_000u64);
        for _ in 0..25 {
            now += rng.random_range(0..=max_window / 3);
            let cost = Cost::new(rng.random_range(0..=min_limit)).unwrap();

            // The domain.
            let mut expected = Vec::new();
            let mut all = true;
            let mut counter_evals = Vec::new();
            let mut log_evals = Vec::new();
            for c in &mut cases {
                match &mut c.model {
                    Model::Counter(state) => {
                        let ev = counter::evaluate(*state, &c.policy, now, cost);
                        all &= ev.allowed;
                        counter_evals.push(Some(ev));
                        log_evals.push(None);
                    }
                    Model::Log(log) => {
                        log.prune(c.policy.window_ms(), now);
                        let ev = log.evaluate(&c.policy, now, cost);
                        all &= ev.allowed;
                        counter_evals.push(None);
                        log_evals.push(Some(ev));
                    }
                }
            }
            for (i, c) in cases.iter_mut().enumerate() {
                let d = match &mut c.model {
                    Model::Counter(state) => {
                        let ev = counter_evals[i].unwrap();
                        if all {
                            *state = Some(ev.consumed);
                        }
                        ev.decision(&c.policy, all)
                    }
                    Model::Log(log) => {
                        let ev = log_evals[i].unwrap();
                        if all {
                            log.record(now, cost);
                        }
                        ev.decision(&c.policy, all)
                    }
                };
                expected.push(d);
            }

            // The script at the same instant.
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(&script).arg(cases.len());
            for c in &cases {
                cmd.arg(&c.key);
            }
            cmd.arg(cost.units()).arg(format!("n{seq}x{now}"));
            for c in &cases {
                let algo = match c.policy.algorithm() {
                    Algorithm::SlidingWindow => "sw",
                    Algorithm::SlidingLog => "log",
                };
                cmd.arg(algo)
                    .arg(c.policy.limit())
                    .arg(c.policy.window_ms());
            }
            cmd.arg(now / 1000).arg((now % 1000) * 1000);
            let got: Vec<i64> = cmd.query(&mut con).unwrap();

            assert_eq!(got[0] == 1, all, "seq {seq} at {now}: combined verdict");
            for (i, d) in expected.iter().enumerate() {
                let n = &got[1 + 4 * i..5 + 4 * i];
                let ctx = format!(
                    "seq {seq} at {now}, policy {i} ({:?}), cost {}",
                    d,
                    cost.units()
                );
                assert_eq!(n[0] == 1, d.allowed, "allowed: {ctx}");
                assert_eq!(n[1] as u64, d.remaining, "remaining: {ctx}");
                assert_eq!(n[2] as u128, d.reset_after.as_millis(), "reset: {ctx}");
                let retry = (n[3] >= 0 && !d.allowed).then(|| n[3] as u128);
                assert_eq!(retry, d.retry_after.map(|r| r.as_millis()), "retry: {ctx}");
                compared += 1;
            }
        }
    }
    assert!(compared > 1000, "{compared} decisions compared");
}
