//! `[telemetry]` and `[worker]`: logs, OTLP export, and the worker process.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_domain::names::WorkerId;
use spool_ports::ReserveOptions;

use super::serde_util::{duration, lenient_opt_string, lenient_string};
use super::{ConfigError, Validate};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable (default).
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[telemetry]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `pretty` (default) or `json`.
    pub log_format: LogFormat,
    /// A `tracing` filter directive, e.g. `info,spool_app=debug` (default `info`).
    #[serde(deserialize_with = "lenient_string")]
    pub log_filter: String,
    /// OTLP/HTTP endpoint for traces and metrics, `http://host:port` of a collector next to
    /// spool (`https://` is refused: forward over TLS from the collector); read from
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`. No export when absent.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported telemetry (default `spool`).
    #[serde(deserialize_with = "lenient_string")]
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
            log_filter: "info".to_owned(),
            otlp_endpoint: None,
            service_name: "spool".to_owned(),
        }
    }
}

impl Validate for TelemetryConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.log_filter.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.log_filter"),
                "must not be empty; e.g. \"info\"",
            ));
        }
        if let Some(e) = &self.otlp_endpoint {
            crate::telemetry::check_endpoint(e)
                .map_err(|why| ConfigError::invalid(format!("{at}.otlp_endpoint"), why))?;
        }
        if self.service_name.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.service_name"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

/// `[worker]` settings of `spool worker` and [`crate::worker::WorkerRuntime`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Worker ID recorded on reserved tasks (default: generated per process).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub id: Option<String>,
    /// How long in-flight tasks may finish after a shutdown signal before they are released
    /// back to their queue (default `30s`).
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
    /// How long one reservation waits for a task (default `5s`, `10ms..=5m`).
    #[serde(with = "duration")]
    pub reserve_wait: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: None,
            drain_timeout: Duration::from_secs(30),
            reserve_wait: Duration::from_secs(5),
        }
    }
}

impl Validate for WorkerConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if let Some(id) = &self.id {
            WorkerId::parse(id.as_str())
                .map_err(|e| ConfigError::invalid(format!("{at}.id"), e.to_string()))?;
        }
        if self.reserve_wait < Duration::from_millis(10)
            || self.reserve_wait > ReserveOptions::MAX_WAIT
        {
            return Err(ConfigError::invalid(
                format!("{at}.reserve_wait"),
                "must be 10ms..=5m",
            ));
        }
        Ok(())
    }
}
