//! `ServiceError`: what a service call can fail with.

use std::sync::Arc;

use spool_domain::ValidationError;
use spool_ports::PortError;

/// A clonable error shared by every caller that waited on one computation.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a service call.
///
/// Most errors come straight from the port ([`ServiceError::Port`], classified by
/// [`PortError`]); the rest are about turning typed values into bytes and back, or a
/// `get_or_compute` computation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The backend refused or failed the operation (bad input is `PortError::Invalid`).
    #[error(transparent)]
    Port(#[from] PortError),
    /// A value could not be serialised (a caller's type that the codec cannot express).
    #[error("cannot encode {what}: {message}")]
    Encode {
        /// What was being encoded, e.g. `cache value`.
        what: &'static str,
        /// The codec's message.
        message: String,
    },
    /// Stored bytes do not decode into the requested type.
    #[error("cannot decode {what}: {message}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The codec's message.
        message: String,
    },
    /// The computation of `get_or_compute` failed; every caller that waited on it gets the
    /// same error. Nothing was cached.
    #[error("computing the value failed: {0}")]
    Compute(#[source] SharedError),
}

impl From<ValidationError> for ServiceError {
    fn from(e: ValidationError) -> Self {
        ServiceError::Port(PortError::Invalid(e))
    }
}

impl ServiceError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ServiceError::Port(p) if p.is_transient())
    }

    /// The port error, when this is one.
    pub fn as_port(&self) -> Option<&PortError> {
        match self {
            ServiceError::Port(p) => Some(p),
            _ => None,
        }
    }

    /// A short stable code for logs, metrics and HTTP bodies: the [`PortError::code`] of port
    /// errors, `invalid` for values that cannot be encoded, `internal` for stored bytes that
    /// cannot be decoded, `compute_failed` for a failed computation.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Port(p) => p.code(),
            ServiceError::Encode { .. } => "invalid",
            ServiceError::Decode { .. } => "internal",
            ServiceError::Compute(_) => "compute_failed",
        }
    }
}
