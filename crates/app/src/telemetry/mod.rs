//! Telemetry: logs through `tracing` (pretty or JSON), OpenTelemetry metrics served as
//! Prometheus text at `/metrics`, and OTLP export of traces and metrics when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (`telemetry.otlp_endpoint`) is set.
//!
//! | item | what it is |
//! |---|---|
//! | [`init`] | installs the subscriber and exporters from `[telemetry]`; returns a [`Telemetry`] guard |
//! | [`Metrics`] | a cheap cloneable handle to every instrument; [`Metrics::global`] is the process's |
//! | [`OperationMetricsLayer`] | times every service span (`cache.get`, `queue.enqueue`, ...) into `spool_operation_duration_seconds` |
//! | [`ServiceMode`], [`ServiceStatus`] | each service's mode and breaker state, shown by `/health/ready` |
//!
//! Resilience code reports through the same handle, and health and metrics follow:
//!
//! ```
//! use spool_app::telemetry::{Metrics, ServiceMode};
//! use spool_domain::breaker::BreakerState;
//!
//! let metrics = Metrics::global();
//! metrics.set_breaker_state("cache", &BreakerState::Closed);
//! metrics.set_service_mode("cache", ServiceMode::Primary);
//! ```

mod metrics;
mod setup;
mod span_metrics;

pub use metrics::{Metrics, Outcome, ServiceMode, ServiceStatus, PROMETHEUS_CONTENT_TYPE};
pub(crate) use setup::check_endpoint;
pub use setup::{init, Telemetry};
pub use span_metrics::OperationMetricsLayer;

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// `telemetry.log_filter` (or `RUST_LOG`) is not a valid filter.
    #[error("invalid setting `telemetry.log_filter`: {0}")]
    Filter(String),
    /// The OTLP exporter cannot be built (bad endpoint).
    #[error("invalid setting `telemetry.otlp_endpoint`: {0}")]
    Otlp(String),
    /// The metrics pipeline failed.
    #[error("metrics: {0}")]
    Metrics(String),
}
