//! The rate limiter: one `EVALSHA` of `lua/limit.lua` per check, over every policy at once.
//!
//! **Key layout trade-off.** Every limiter key shares the hash tag `{rl}`
//! (`<prefix>:{rl}:<policy>:<limit>:<window_ms>:<algo>:<subject>`), so a check that spans
//! several subjects and policies (user *and* IP, per-second *and* per-hour) is one atomic
//! script even on Redis Cluster. The price: on a cluster all limiter traffic lands on the one
//! node owning that slot. Limiter state is tiny (O(1) per counter key, PEXPIRE 2×window; logs
//! expire after one window), so that node's memory is not the issue — its CPU is the ceiling,
//! and a deployment that outgrows it splits the limiter onto its own Redis.
//!
//! The script mirrors `spool_domain::limit::{counter, log}` exactly in integer arithmetic; the
//! adapter rebuilds each [`PolicyDecision`] from its numbers and combines them with
//! [`Decision::combine`].
//!
//! Round trips: `check` 1.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::types::Value;
use spool_domain::limit::{Algorithm, Cost, Decision, LimitCheck, PolicyDecision};
use spool_ports::limiter::validate_checks;
use spool_ports::{PortError, RateLimitStore};

use crate::backend::Shared;
use crate::error::corrupt;

/// The Redis rate limiter.
#[derive(Clone)]
pub struct RedisRateLimiter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter").finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[async_trait]
impl RateLimitStore for RedisRateLimiter {
    async fn check(&self, checks: &[LimitCheck], cost: Cost) -> Result<Decision, PortError> {
        validate_checks(checks, cost)?;
        let keys: Vec<String> = checks.iter().map(|c| self.shared.keys.limit(c)).collect();
        let mut args: Vec<Value> = Vec::with_capacity(2 + 3 * checks.len());
        args.push(Value::from(cost.units().to_string()));
        args.push(Value::from(format!("{:016x}", rand::random::<u64>())));
        for c in checks {
            let algo = match c.policy.algorithm() {
                Algorithm::SlidingWindow => "sw",
                Algorithm::SlidingLog => "log",
            };
            args.push(Value::from(algo));
            args.push(Value::from(c.policy.limit().to_string()));
            args.push(Value::from(c.policy.window_ms().to_string()));
        }
        let reply: Vec<i64> = self
            .shared
            .scripts
            .limit
            .run(&self.shared.pool, keys, args)
            .await?;
        if reply.len() != 1 + 4 * checks.len() {
            return Err(corrupt(format!(
                "limit script returned {} numbers for {} checks",
                reply.len(),
                checks.len()
            )));
        }
        let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
        let policies = checks
            .iter()
            .zip(reply[1..].chunks_exact(4))
            .map(|(c, n)| {
                let allowed = n[0] == 1;
                PolicyDecision {
                    policy: c.policy.name().clone(),
                    allowed,
                    limit: c.policy.limit(),
                    window: c.policy.window(),
                    remaining: u64::try_from(n[1]).unwrap_or(0),
                    reset_after: ms(n[2]),
                    retry_after: (!allowed && n[3] >= 0).then(|| ms(n[3])),
                }
            })
            .collect();
        let decision = Decision::combine(policies);
        if decision.allowed != (reply[0] == 1) {
            return Err(corrupt(
                "limit script disagrees with its own per-policy results",
            ));
        }
        Ok(decision)
    }
}
