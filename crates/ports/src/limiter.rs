//! The rate-limiter port.

use async_trait::async_trait;
use spool_domain::limit::{Cost, Decision, LimitCheck};

use crate::PortError;

/// Sliding-window rate limits over several policies at once.
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Checks (and, when every policy admits it, consumes) `cost` against all `checks`
    /// atomically.
    ///
    /// MUST be all-or-nothing: a refused request consumes nothing from any policy. MUST be one
    /// atomic backend round trip for the whole set. `retry_after` MUST be exact: with no other
    /// traffic, the same check after waiting it is admitted. A cost of 0 peeks. Different
    /// subjects and different policies never share state.
    ///
    /// # Errors
    /// `Invalid` when `checks` is empty, holds more than 16 checks, repeats a (policy,
    /// subject) pair, or `cost` exceeds a policy's limit; `Unavailable` when the backend
    /// cannot answer.
    async fn check(&self, checks: &[LimitCheck], cost: Cost) -> Result<Decision, PortError>;
}

/// Most checks in one call.
pub const MAX_CHECKS: usize = 16;

/// Validates the arguments of [`RateLimitStore::check`] the same way for every adapter.
///
/// # Errors
/// `Invalid` as documented on [`RateLimitStore::check`].
pub fn validate_checks(checks: &[LimitCheck], cost: Cost) -> Result<(), PortError> {
    if checks.is_empty() || checks.len() > MAX_CHECKS {
        return Err(PortError::invalid(
            "rate limit checks",
            format!("{} given; 1..={MAX_CHECKS} allowed", checks.len()),
        ));
    }
    for (i, c) in checks.iter().enumerate() {
        c.validate_cost(cost)?;
        if checks[..i]
            .iter()
            .any(|o| o.policy.name() == c.policy.name() && o.subject == c.subject)
        {
            return Err(PortError::invalid(
                "rate limit checks",
                format!("policy {} for {} appears twice", c.policy.name(), c.subject),
            ));
        }
    }
    Ok(())
}
