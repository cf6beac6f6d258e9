//! [`ResilientLimiter`]: the primary rate limiter, or each policy's failure mode while it is
//! unavailable.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use spool_adapter_memory::{Clock, MemoryRateLimiter};
use spool_domain::limit::{Cost, Decision, LimitCheck, PolicyDecision};
use spool_domain::limits::StoreLimits;
use spool_domain::names::PolicyName;
use spool_ports::limiter::validate_checks;
use spool_ports::{PortError, RateLimitStore};

use super::guard::{CallError, Guard};
use super::status::{ResilienceStatus, Service};
use crate::services::FailureMode;
use crate::telemetry::ServiceMode;

/// The shortest `retry_after` a `closed` policy reports while the backend is down.
pub const MIN_CLOSED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A [`RateLimitStore`] over a primary; while it is unavailable each policy follows its
/// [`FailureMode`]. See the [module docs](super).
pub struct ResilientLimiter {
    primary: Arc<dyn RateLimitStore>,
    local: MemoryRateLimiter,
    guard: Arc<Guard>,
    status: ResilienceStatus,
    modes: HashMap<PolicyName, FailureMode>,
}

impl fmt::Debug for ResilientLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilientLimiter")
            .field("modes", &self.modes)
            .finish_non_exhaustive()
    }
}

impl ResilientLimiter {
    /// Wraps `primary`; `modes` gives each policy's failure mode (policies not listed are
    /// `local`); the local limiter is a [`MemoryRateLimiter`] with `limits` on `clock`.
    pub fn new(
        primary: Arc<dyn RateLimitStore>,
        guard: Arc<Guard>,
        status: ResilienceStatus,
        modes: HashMap<PolicyName, FailureMode>,
        limits: &StoreLimits,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            primary,
            local: MemoryRateLimiter::new(limits, clock),
            guard,
            status,
            modes,
        }
    }

    fn mode_of(&self, check: &LimitCheck) -> FailureMode {
        self.modes
            .get(check.policy.name())
            .copied()
            .unwrap_or_default()
    }

    /// The decision while the primary is unavailable: `local` policies are checked together
    /// (all-or-nothing) on the local limiter, `open` ones admit with their whole limit left,
    /// `closed` ones refuse until the breaker may close (at least 1 s). A refusal by a
    /// `closed` policy makes the local check a peek, so a refused request consumes nothing.
    async fn decide_locally(
        &self,
        checks: &[LimitCheck],
        cost: Cost,
        why: &CallError,
    ) -> Result<Decision, PortError> {
        self.status
            .set_mode(Service::Limiter, ServiceMode::Fallback);
        let modes: Vec<FailureMode> = checks.iter().map(|c| self.mode_of(c)).collect();
        let any_closed = modes.contains(&FailureMode::Closed);
        let local_checks: Vec<LimitCheck> = checks
            .iter()
            .zip(&modes)
            .filter(|(_, m)| **m == FailureMode::Local)
            .map(|(c, _)| c.clone())
            .collect();
        let mut local = if local_checks.is_empty() {
            Vec::new()
        } else {
            let local_cost = if any_closed { Cost::PEEK } else { cost };
            self.local.check(&local_checks, local_cost).await?.policies
        }
        .into_iter();
        let closed_wait = match why {
            CallError::Open { retry_after } => *retry_after,
            _ => self.guard.open_remaining(),
        }
        .max(MIN_CLOSED_RETRY_AFTER);
        let mut policies = Vec::with_capacity(checks.len());
        for (check, mode) in checks.iter().zip(modes) {
            let p = &check.policy;
            let decision = match mode {
                FailureMode::Local => local.next().ok_or_else(|| {
                    PortError::internal("local limiter returned fewer decisions than checks")
                })?,
                FailureMode::Open => PolicyDecision {
                    policy: p.name().clone(),
                    allowed: true,
                    limit: p.limit(),
                    window: p.window(),
                    remaining: p.limit(),
                    reset_after: Duration::ZERO,
                    retry_after: None,
                },
                FailureMode::Closed => PolicyDecision {
                    policy: p.name().clone(),
                    allowed: false,
                    limit: p.limit(),
                    window: p.window(),
                    remaining: 0,
                    reset_after: closed_wait,
                    retry_after: Some(closed_wait),
                },
            };
            policies.push(decision);
        }
        Ok(Decision::combine(policies))
    }
}

#[async_trait]
impl RateLimitStore for ResilientLimiter {
    async fn check(&self, checks: &[LimitCheck], cost: Cost) -> Result<Decision, PortError> {
        validate_checks(checks, cost)?;
        match self.guard.call(|| self.primary.check(checks, cost)).await {
            Ok(d) => {
                self.status.set_mode(Service::Limiter, ServiceMode::Primary);
                Ok(d)
            }
            Err(e) if e.wants_fallback() => self.decide_locally(checks, cost, &e).await,
            Err(e) => Err(e.into_port_error()),
        }
    }
}
