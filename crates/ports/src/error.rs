//! `PortError`: the one error every port returns, saying what the caller can do about it.

use std::error::Error as StdError;

use spool_domain::progress::UpdateError;
use spool_domain::task::TransitionError;
use spool_domain::ValidationError;

/// A boxed error cause, kept so `source()` chains stay intact.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, classified by what the caller should do.
///
/// | variant | meaning | retry? |
/// |---|---|---|
/// | `Invalid` | bad input | never |
/// | `NotFound` | no such task / operation | no |
/// | `Conflict` | the thing exists or is in a state that refuses this | no |
/// | `LeaseLost` | the presented lease token is stale or expired | no: stop working on it |
/// | `Unavailable` | backend down or timing out | yes, with backoff ([`PortError::is_transient`]) |
/// | `Internal` | a bug or corrupt data | no |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// Bad input; the message names the component.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The named thing does not exist (or no longer: retention expired).
    #[error("{what} not found")]
    NotFound {
        /// What was looked up, e.g. `task 01J...`.
        what: String,
    },
    /// The request conflicts with the current state.
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicts.
        message: String,
    },
    /// The lease token is not the current one, or the lease ran out.
    #[error("lease lost on task {task}")]
    LeaseLost {
        /// The task.
        task: String,
    },
    /// The backend is unreachable, overloaded or timed out. Transient.
    #[error("backend unavailable: {message}")]
    Unavailable {
        /// Short description.
        message: String,
        /// The underlying cause.
        #[source]
        source: Option<BoxError>,
    },
    /// The backend refused the configuration (authentication, permissions). Not transient:
    /// an operator must fix the settings.
    #[error("backend configuration error: {message}")]
    Configuration {
        /// What is misconfigured; never contains secrets.
        message: String,
        /// The underlying cause.
        #[source]
        source: Option<BoxError>,
    },
    /// A bug, or data the adapter cannot read.
    #[error("internal error: {message}")]
    Internal {
        /// Short description.
        message: String,
        /// The underlying cause.
        #[source]
        source: Option<BoxError>,
    },
}

impl PortError {
    /// Whether retrying later may succeed (drives retries and the circuit breaker).
    pub fn is_transient(&self) -> bool {
        matches!(self, PortError::Unavailable { .. })
    }

    /// Shorthand for [`PortError::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        PortError::NotFound { what: what.into() }
    }

    /// Shorthand for [`PortError::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        PortError::Conflict {
            message: message.into(),
        }
    }

    /// Shorthand for [`PortError::Invalid`].
    pub fn invalid(component: &'static str, reason: impl Into<String>) -> Self {
        PortError::Invalid(ValidationError::new(component, reason))
    }

    /// Shorthand for [`PortError::Unavailable`] with a cause.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        PortError::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Shorthand for [`PortError::Internal`] without a cause.
    pub fn internal(message: impl Into<String>) -> Self {
        PortError::Internal {
            message: message.into(),
            source: None,
        }
    }

    /// A short stable code for logs, metrics and HTTP bodies.
    pub fn code(&self) -> &'static str {
        match self {
            PortError::Invalid(_) => "invalid",
            PortError::NotFound { .. } => "not_found",
            PortError::Conflict { .. } => "conflict",
            PortError::LeaseLost { .. } => "lease_lost",
            PortError::Unavailable { .. } => "unavailable",
            PortError::Configuration { .. } => "configuration",
            PortError::Internal { .. } => "internal",
        }
    }
}

impl From<TransitionError> for PortError {
    fn from(e: TransitionError) -> Self {
        PortError::Conflict {
            message: e.to_string(),
        }
    }
}

impl From<UpdateError> for PortError {
    fn from(e: UpdateError) -> Self {
        match e {
            UpdateError::Invalid(v) => PortError::Invalid(v),
            UpdateError::Terminal(_) => PortError::Conflict {
                message: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_transient() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "t");
        let e = PortError::unavailable("redis timed out", io);
        assert!(e.is_transient());
        assert!(e.source().is_some(), "source chain kept");
        assert!(!PortError::invalid("project", "empty").is_transient());
        assert!(!PortError::internal("x").is_transient());
        assert!(!PortError::LeaseLost { task: "t".into() }.is_transient());
    }
}
