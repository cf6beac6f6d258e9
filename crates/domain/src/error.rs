//! The one error of the domain: an input that breaks a rule.

/// An input that failed validation. The message names the component that was wrong
/// (`project`, `queue name`, `ttl`, ...) so the caller can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {component}: {reason}")]
pub struct ValidationError {
    /// Which component was invalid, e.g. `"project"`.
    pub component: &'static str,
    /// Why, in words a user can act on.
    pub reason: String,
}

impl ValidationError {
    /// Builds an error for `component` with a human-readable `reason`.
    pub fn new(component: &'static str, reason: impl Into<String>) -> Self {
        Self {
            component,
            reason: reason.into(),
        }
    }
}
