//! The outcome of a check: per policy, and combined.

use std::time::Duration;

use crate::names::PolicyName;

/// What one policy says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    /// The policy.
    pub policy: PolicyName,
    /// Whether this policy alone would admit the request.
    pub allowed: bool,
    /// The policy's limit.
    pub limit: u64,
    /// Window length, for the `RateLimit-Policy` header.
    pub window: Duration,
    /// Units still available after this decision (after consuming, when admitted).
    pub remaining: u64,
    /// Time until the subject's usage of this policy has fully drained (quota back to `limit`).
    pub reset_after: Duration,
    /// When refused: the exact wait after which the same request is admitted by this policy,
    /// given no other traffic. `None` when allowed.
    pub retry_after: Option<Duration>,
}

/// The combined outcome of one check over several policies (all-or-nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `true` only when every policy admits the request; then every policy consumed the cost.
    /// When `false`, no policy consumed anything.
    pub allowed: bool,
    /// Each policy's view, in the order the checks were given.
    pub policies: Vec<PolicyDecision>,
    /// When refused: the longest `retry_after` of the refusing policies. Each policy's usage
    /// only drains with time, so after this wait all of them admit the request.
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// Combines per-policy evaluations made against the same instant.
    ///
    /// The per-policy values must come from evaluations that assumed the request would be
    /// consumed only if all are allowed; callers then commit all or none.
    pub fn combine(policies: Vec<PolicyDecision>) -> Self {
        let allowed = policies.iter().all(|p| p.allowed);
        let retry_after = policies.iter().filter_map(|p| p.retry_after).max();
        Self {
            allowed,
            policies,
            retry_after: if allowed { None } else { retry_after },
        }
    }

    /// The policy with the fewest remaining units — the one to report in single-policy
    /// headers (`X-RateLimit-*`).
    pub fn most_restrictive(&self) -> Option<&PolicyDecision> {
        if let Some(denied) = self
            .policies
            .iter()
            .filter(|p| !p.allowed)
            .max_by_key(|p| p.retry_after)
        {
            return Some(denied);
        }
        self.policies.iter().min_by_key(|p| p.remaining)
    }
}
