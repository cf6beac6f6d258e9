//! [`init`]: logs, traces and metrics for a spool process, from `[telemetry]`.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::{Metrics, OperationMetricsLayer, TelemetryError};
use crate::config::{LogFormat, TelemetryConfig};

/// What [`init`] set up; keep it alive for the life of the process and call
/// [`Telemetry::shutdown`] at the end so the last OTLP batches are sent.
#[derive(Debug)]
pub struct Telemetry {
    metrics: Metrics,
    tracer_provider: Option<SdkTracerProvider>,
    subscriber_installed: bool,
}

impl Telemetry {
    /// The process-wide metrics (also [`Metrics::global`]).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether OTLP export is on.
    pub fn exports_otlp(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Whether this call installed the global `tracing` subscriber (`false` when one was
    /// already set, e.g. by a test harness).
    pub fn subscriber_installed(&self) -> bool {
        self.subscriber_installed
    }

    /// Flushes and stops the exporters.
    pub fn shutdown(self) {
        if let Some(p) = &self.tracer_provider {
            if let Err(e) = p.shutdown() {
                tracing::debug!(error = %e, "tracer provider shutdown");
            }
        }
        self.metrics.shutdown();
    }
}

/// `<base>/v1/<signal>` unless the per-signal variable overrides it (then the exporter reads
/// that variable itself).
fn signal_endpoint(base: &str, signal: &str, override_var: &str) -> Option<String> {
    if std::env::var_os(override_var).is_some_and(|v| !v.is_empty()) {
        return None;
    }
    Some(format!("{}/v1/{signal}", base.trim_end_matches('/')))
}

/// `RUST_LOG` when set and not blank, else the configured directive.
fn log_filter(configured: &str, rust_log: Option<&str>) -> Result<EnvFilter, TelemetryError> {
    let directive = match rust_log {
        Some(v) if !v.trim().is_empty() => v,
        _ => configured,
    };
    EnvFilter::try_new(directive).map_err(|e| TelemetryError::Filter(format!("{directive:?}: {e}")))
}

/// OTLP goes over plain HTTP (to a collector next to the process): this build carries no
/// TLS stack for it, so an `https://` endpoint is refused when the configuration is
/// validated and at start, instead of failing at every export. (A deliberate choice: a
/// second TLS stack only for telemetry would double the TLS code in the binary, and a local
/// collector is the recommended deployment anyway — it batches, retries and forwards over
/// TLS.)
pub(crate) fn check_endpoint(base: &str) -> Result<(), String> {
    if base.starts_with("http://") && base.len() > "http://".len() {
        Ok(())
    } else {
        Err(format!(
            "{base:?}: only http://host:port endpoints are supported (run an OpenTelemetry \
             collector next to spool and point it there; the collector can forward over TLS)"
        ))
    }
}

/// Sets up telemetry for a spool process from `config`:
///
/// - a `tracing` subscriber writing to stderr, `pretty` (human-readable) or `json` (one
///   object per line, with the current span's fields such as `correlation_id`), filtered by
///   `log_filter` (or `RUST_LOG` when set);
/// - [`Metrics`] on an OpenTelemetry meter provider read by a Prometheus registry (served at
///   `/metrics`), installed as [`Metrics::global`], plus an [`OperationMetricsLayer`] so
///   every service span is timed;
/// - when `otlp_endpoint` is set (`OTEL_EXPORTER_OTLP_ENDPOINT`): OTLP/HTTP (protobuf)
///   export of traces (every span, through `tracing-opentelemetry`) and metrics to
///   `<endpoint>/v1/traces` and `<endpoint>/v1/metrics`, with `service.name =
///   service_name`. The endpoint must be `http://` (a collector beside the process).
///
/// When a global subscriber is already installed (tests), logging is left as is and the
/// rest still happens.
///
/// # Errors
/// A bad `log_filter`; an `https://` or otherwise unusable OTLP endpoint.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let filter = log_filter(
        &config.log_filter,
        std::env::var("RUST_LOG").ok().as_deref(),
    )?;

    let (metrics, tracer_provider) = match &config.otlp_endpoint {
        Some(base) => {
            check_endpoint(base).map_err(TelemetryError::Otlp)?;
            let mut metric_exporter = opentelemetry_otlp::MetricExporter::builder().with_http();
            if let Some(ep) =
                signal_endpoint(base, "metrics", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            {
                metric_exporter = metric_exporter.with_endpoint(ep);
            }
            let metric_exporter = metric_exporter
                .build()
                .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
            let metrics = Metrics::with_exporters(&config.service_name, Some(metric_exporter))?;

            let mut span_exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
            if let Some(ep) = signal_endpoint(base, "traces", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            {
                span_exporter = span_exporter.with_endpoint(ep);
            }
            let span_exporter = span_exporter
                .build()
                .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(span_exporter)
                .with_resource(
                    Resource::builder()
                        .with_service_name(config.service_name.clone())
                        .build(),
                )
                .build();
            (metrics, Some(provider))
        }
        None => (Metrics::with_exporters(&config.service_name, None)?, None),
    };
    if !metrics.install_global() {
        tracing::debug!("a global Metrics handle was already in use; keeping it");
    }
    let metrics = Metrics::global().clone();

    let fmt_layer = match config.log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(true)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let otel_layer = tracer_provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("spool"))
            .boxed()
    });
    let subscriber_installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(OperationMetricsLayer::new(metrics.clone()))
        .with(otel_layer)
        .try_init()
        .is_ok();
    if let Some(base) = &config.otlp_endpoint {
        tracing::info!(endpoint = %base, "exporting traces and metrics over OTLP");
    }
    Ok(Telemetry {
        metrics,
        tracer_provider,
        subscriber_installed,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn signal_endpoints_append_the_signal_path() {
        assert_eq!(
            signal_endpoint("http://c:4318/", "traces", "SPOOL_TEST_NOT_SET_EVER").as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert_eq!(
            signal_endpoint("http://c:4318", "metrics", "SPOOL_TEST_NOT_SET_EVER").as_deref(),
            Some("http://c:4318/v1/metrics")
        );
    }

    #[test]
    fn only_plain_http_collectors() {
        assert!(check_endpoint("http://localhost:4318").is_ok());
        let e = check_endpoint("https://api.example:4318").unwrap_err();
        assert!(e.contains("collector"), "{e}");
    }

    #[test]
    fn filters_come_from_rust_log_first() {
        assert!(log_filter("info", None).is_ok());
        let e = log_filter("spool_app=notalevel[", None).unwrap_err();
        assert!(
            matches!(e, TelemetryError::Filter(ref m) if m.contains("notalevel")),
            "{e}"
        );
        assert!(log_filter("spool_app=notalevel[", Some("debug")).is_ok());
        assert!(log_filter("info", Some("  ")).is_ok());
        assert!(log_filter("info", Some("x=nope[")).is_err());
    }
}
