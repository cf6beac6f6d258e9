//! [`Metrics`]: every instrument spool records, on an OpenTelemetry meter provider whose
//! readers are a Prometheus registry (for `/metrics`) and, when configured, an OTLP exporter.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider as _, UpDownCounter};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::Resource;
use parking_lot::RwLock;
use prometheus::{Encoder, TextEncoder};
use spool_domain::breaker::BreakerState;
use spool_domain::limit::Decision;
use spool_domain::task::QueueStats;

use super::TelemetryError;

/// Bucket boundaries (seconds) of every duration histogram: 0.5 ms .. 60 s.
const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The content type of [`Metrics::render`]'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which implementation a service currently runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceMode {
    /// The configured backend.
    Primary,
    /// A local stand-in while the backend is unavailable (degraded).
    Fallback,
}

impl ServiceMode {
    /// `primary` or `fallback`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceMode::Primary => "primary",
            ServiceMode::Fallback => "fallback",
        }
    }
}

/// What [`Metrics`] knows about one service, as shown by `/health/ready`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStatus {
    /// Primary or fallback.
    pub mode: ServiceMode,
    /// The state of the service's circuit breaker, when it has one (`closed`, `open`,
    /// `half_open`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<&'static str>,
}

impl Default for ServiceStatus {
    fn default() -> Self {
        Self {
            mode: ServiceMode::Primary,
            breaker: None,
        }
    }
}

/// How a measured operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// It failed.
    Error,
}

impl Outcome {
    /// `ok` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
        }
    }
}

struct Instruments {
    operation_duration: Histogram<f64>,
    cache_hits: Counter<u64>,
    cache_misses: Counter<u64>,
    limiter_decisions: Counter<u64>,
    tasks_enqueued: Counter<u64>,
    tasks_completed: Counter<u64>,
    tasks_failed: Counter<u64>,
    tasks_dead: Counter<u64>,
    queue_depth: Gauge<u64>,
    queue_oldest_waiting: Gauge<f64>,
    breaker_state: Gauge<i64>,
    degraded: Gauge<u64>,
    backend_latency: Gauge<f64>,
    http_requests: Counter<u64>,
    http_duration: Histogram<f64>,
    sse_streams: UpDownCounter<i64>,
}

struct Inner {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    instruments: Instruments,
    services: RwLock<BTreeMap<String, ServiceStatus>>,
}

/// spool's metric instruments: a cheap, cloneable handle.
///
/// | Prometheus name | labels | recorded by |
/// |---|---|---|
/// | `spool_operation_duration_seconds` (histogram) | `service`, `operation`, `outcome` | [`Metrics::record_operation`]; every `<service>.<operation>` span when [`super::init`] installed the subscriber |
/// | `spool_cache_hits_total`, `spool_cache_misses_total` | — | [`Metrics::cache_hit`], [`Metrics::cache_miss`] |
/// | `spool_limiter_decisions_total` | `decision` = `allowed` / `denied` | [`Metrics::record_rate_limit`] |
/// | `spool_queue_tasks_enqueued_total`, `…_completed_total`, `…_failed_total`, `…_dead_total` | `queue` | [`Metrics::task_enqueued`] etc. |
/// | `spool_queue_depth` (gauge) | `queue`, `status` | [`Metrics::record_queue_stats`] (refreshed on every `/metrics` scrape) |
/// | `spool_queue_oldest_waiting_seconds` (gauge) | `queue` | [`Metrics::record_queue_stats`] |
/// | `spool_breaker_state` (gauge: 0 closed, 1 half-open, 2 open) | `breaker` | [`Metrics::set_breaker_state`] |
/// | `spool_degraded` (gauge: 1 while on the fallback) | `service` | [`Metrics::set_service_mode`] |
/// | `spool_backend_latency_seconds` (gauge) | `backend` | [`Metrics::record_backend_latency`]: the backend health check's round trip, on every `/health/ready` and `/metrics` scrape (the last successful one) |
/// | `spool_http_requests_total`, `spool_http_request_duration_seconds` | `method`, `route`, `status` | the HTTP router |
/// | `spool_sse_streams` (gauge) | — | open SSE streams |
///
/// [`Metrics::global`] is the process-wide handle that `spool serve` exports; tests and
/// embedders can make private ones with [`Metrics::new`].
///
/// ```
/// use spool_app::telemetry::{Metrics, ServiceMode};
///
/// let metrics = Metrics::new();
/// metrics.cache_hit();
/// metrics.set_service_mode("cache", ServiceMode::Fallback);
/// let text = metrics.render().unwrap();
/// assert!(text.contains("spool_cache_hits_total 1"));
/// assert!(text.contains(r#"spool_degraded{service="cache"} 1"#));
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

impl Metrics {
    /// A handle with its own Prometheus registry and no OTLP export.
    pub fn new() -> Self {
        // Building the Prometheus reader only fails when its registry refuses the
        // collector, which a fresh registry never does.
        Self::build("spool", None).unwrap_or_else(|_| Self::without_registry())
    }

    /// A handle whose meter provider also exports to `otlp` (a `PeriodicReader`), with
    /// `service.name = service_name`.
    ///
    /// # Errors
    /// When the Prometheus reader or the OTLP exporter cannot be built.
    pub fn with_exporters(
        service_name: &str,
        otlp: Option<opentelemetry_otlp::MetricExporter>,
    ) -> Result<Self, TelemetryError> {
        Self::build(service_name, otlp)
    }

    fn build(
        service_name: &str,
        otlp: Option<opentelemetry_otlp::MetricExporter>,
    ) -> Result<Self, TelemetryError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .without_target_info()
            .build()
            .map_err(|e| TelemetryError::Metrics(e.to_string()))?;
        let mut builder = SdkMeterProvider::builder()
            .with_resource(
                Resource::builder()
                    .with_service_name(service_name.to_owned())
                    .build(),
            )
            .with_reader(exporter);
        if let Some(otlp) = otlp {
            builder = builder.with_periodic_exporter(otlp);
        }
        Ok(Self::from_parts(builder.build(), registry))
    }

    fn without_registry() -> Self {
        Self::from_parts(
            SdkMeterProvider::builder().build(),
            prometheus::Registry::new(),
        )
    }

    fn from_parts(provider: SdkMeterProvider, registry: prometheus::Registry) -> Self {
        let meter = provider.meter("spool");
        let instruments = Instruments {
            operation_duration: meter
                .f64_histogram("spool.operation.duration")
                .with_unit("s")
                .with_description("Duration of service operations")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            cache_hits: meter
                .u64_counter("spool.cache.hits")
                .with_description("Cache reads that found a value")
                .build(),
            cache_misses: meter
                .u64_counter("spool.cache.misses")
                .with_description("Cache reads that found nothing")
                .build(),
            limiter_decisions: meter
                .u64_counter("spool.limiter.decisions")
                .with_description("Rate-limit checks by decision")
                .build(),
            tasks_enqueued: meter
                .u64_counter("spool.queue.tasks.enqueued")
                .with_description("Tasks accepted")
                .build(),
            tasks_completed: meter
                .u64_counter("spool.queue.tasks.completed")
                .with_description("Tasks completed")
                .build(),
            tasks_failed: meter
                .u64_counter("spool.queue.tasks.failed")
                .with_description("Failed attempts")
                .build(),
            tasks_dead: meter
                .u64_counter("spool.queue.tasks.dead")
                .with_description("Tasks moved to the dead-letter set")
                .build(),
            queue_depth: meter
                .u64_gauge("spool.queue.depth")
                .with_description("Tasks per queue and status")
                .build(),
            queue_oldest_waiting: meter
                .f64_gauge("spool.queue.oldest_waiting")
                .with_unit("s")
                .with_description("Age of the oldest ready task per queue")
                .build(),
            breaker_state: meter
                .i64_gauge("spool.breaker.state")
                .with_description("Circuit breaker state: 0 closed, 1 half-open, 2 open")
                .build(),
            degraded: meter
                .u64_gauge("spool.degraded")
                .with_description("1 while a service runs on its local fallback")
                .build(),
            backend_latency: meter
                .f64_gauge("spool.backend.latency")
                .with_unit("s")
                .with_description("Round trip of the last successful backend health check")
                .build(),
            http_requests: meter
                .u64_counter("spool.http.requests")
                .with_description("HTTP requests answered")
                .build(),
            http_duration: meter
                .f64_histogram("spool.http.request.duration")
                .with_unit("s")
                .with_description("HTTP request duration until the response head")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            sse_streams: meter
                .i64_up_down_counter("spool.sse.streams")
                .with_description("Open SSE streams")
                .build(),
        };
        let metrics = Self {
            inner: Arc::new(Inner {
                provider,
                registry,
                instruments,
                services: RwLock::new(BTreeMap::new()),
            }),
        };
        for service in ["cache", "limiter", "queue", "progress"] {
            metrics.set_service_mode(service, ServiceMode::Primary);
        }
        metrics
    }

    /// The process-wide handle: the one [`Metrics::install_global`] set, else a private
    /// handle made on first use.
    pub fn global() -> &'static Metrics {
        GLOBAL.get_or_init(Metrics::new)
    }

    /// Makes `self` the process-wide handle. Returns `false` (and changes nothing) when one
    /// was already set or used.
    pub fn install_global(&self) -> bool {
        GLOBAL.set(self.clone()).is_ok()
    }

    /// Records how long one service operation took.
    pub fn record_operation(
        &self,
        service: &str,
        operation: &str,
        outcome: Outcome,
        elapsed: Duration,
    ) {
        self.inner.instruments.operation_duration.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new("service", service.to_owned()),
                KeyValue::new("operation", operation.to_owned()),
                KeyValue::new("outcome", outcome.as_str()),
            ],
        );
    }

    /// A cache read found a value.
    pub fn cache_hit(&self) {
        self.inner.instruments.cache_hits.add(1, &[]);
    }

    /// A cache read found nothing.
    pub fn cache_miss(&self) {
        self.inner.instruments.cache_misses.add(1, &[]);
    }

    /// Counts one rate-limit decision (allowed or denied).
    pub fn record_rate_limit(&self, decision: &Decision) {
        let label = if decision.allowed {
            "allowed"
        } else {
            "denied"
        };
        self.inner
            .instruments
            .limiter_decisions
            .add(1, &[KeyValue::new("decision", label)]);
    }

    /// A task was accepted on `queue`.
    pub fn task_enqueued(&self, queue: &str) {
        self.inner
            .instruments
            .tasks_enqueued
            .add(1, &[KeyValue::new("queue", queue.to_owned())]);
    }

    /// A task of `queue` completed.
    pub fn task_completed(&self, queue: &str) {
        self.inner
            .instruments
            .tasks_completed
            .add(1, &[KeyValue::new("queue", queue.to_owned())]);
    }

    /// An attempt of a task of `queue` failed.
    pub fn task_failed(&self, queue: &str) {
        self.inner
            .instruments
            .tasks_failed
            .add(1, &[KeyValue::new("queue", queue.to_owned())]);
    }

    /// A task of `queue` went to the dead-letter set.
    pub fn task_dead(&self, queue: &str) {
        self.inner
            .instruments
            .tasks_dead
            .add(1, &[KeyValue::new("queue", queue.to_owned())]);
    }

    /// Sets the depth gauges of every queue in `stats`.
    pub fn record_queue_stats(&self, stats: &[QueueStats]) {
        let i = &self.inner.instruments;
        for q in stats {
            for (status, n) in [
                ("queued", q.queued),
                ("scheduled", q.scheduled),
                ("running", q.running),
                ("succeeded", q.succeeded),
                ("dead", q.dead),
                ("cancelled", q.cancelled),
            ] {
                i.queue_depth.record(
                    n,
                    &[
                        KeyValue::new("queue", q.name.clone()),
                        KeyValue::new("status", status),
                    ],
                );
            }
            let oldest = q.oldest_waiting_ms.map_or(0.0, |ms| ms as f64 / 1000.0);
            i.queue_oldest_waiting
                .record(oldest, &[KeyValue::new("queue", q.name.clone())]);
        }
    }

    /// Records the state of the breaker named `breaker` (`redis`, `cache`, ...). When the
    /// name is one of the services (`cache`, `limiter`, `queue`, `progress`), `/health/ready`
    /// shows it for that service.
    pub fn set_breaker_state(&self, breaker: &str, state: &BreakerState) {
        let value = match state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen { .. } => 1,
            BreakerState::Open { .. } => 2,
        };
        self.inner
            .instruments
            .breaker_state
            .record(value, &[KeyValue::new("breaker", breaker.to_owned())]);
        let mut services = self.inner.services.write();
        if let Some(s) = services.get_mut(breaker) {
            s.breaker = Some(state.name());
        }
    }

    /// Records which implementation `service` runs on; the `spool_degraded` gauge and
    /// `/health/ready` follow it.
    pub fn set_service_mode(&self, service: &str, mode: ServiceMode) {
        self.inner.instruments.degraded.record(
            u64::from(mode == ServiceMode::Fallback),
            &[KeyValue::new("service", service.to_owned())],
        );
        self.inner
            .services
            .write()
            .entry(service.to_owned())
            .or_default()
            .mode = mode;
    }

    /// Records the round trip of a successful health check of `backend` (`memory`,
    /// `redis`): the `spool_backend_latency_seconds` gauge.
    pub fn record_backend_latency(&self, backend: &str, latency: Duration) {
        self.inner.instruments.backend_latency.record(
            latency.as_secs_f64(),
            &[KeyValue::new("backend", backend.to_owned())],
        );
    }

    /// What is known about each service, by name.
    pub fn services(&self) -> BTreeMap<String, ServiceStatus> {
        self.inner.services.read().clone()
    }

    /// Records one answered HTTP request. `route` is the matched route template
    /// (`/v1/queues/{queue}/tasks`), never the raw path, so label values stay bounded.
    pub fn record_http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let attrs = [
            KeyValue::new("method", method.to_owned()),
            KeyValue::new("route", route.to_owned()),
            KeyValue::new("status", i64::from(status)),
        ];
        let i = &self.inner.instruments;
        i.http_requests.add(1, &attrs);
        i.http_duration.record(elapsed.as_secs_f64(), &attrs);
    }

    /// An SSE stream opened (`+1`) or closed (`-1`).
    pub fn sse_streams_changed(&self, delta: i64) {
        self.inner.instruments.sse_streams.add(delta, &[]);
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    ///
    /// # Errors
    /// When the encoder fails (it does not for the metrics recorded here).
    pub fn render(&self) -> Result<String, TelemetryError> {
        let families = self.inner.registry.gather();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .map_err(|e| TelemetryError::Metrics(e.to_string()))?;
        String::from_utf8(out).map_err(|e| TelemetryError::Metrics(e.to_string()))
    }

    /// Flushes and stops the exporters (OTLP gets its last batch).
    pub fn shutdown(&self) {
        if let Err(e) = self.inner.provider.shutdown() {
            tracing::debug!(error = %e, "metrics provider shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use spool_domain::Timestamp;

    use super::*;

    #[test]
    fn every_instrument_renders_with_its_prometheus_name() {
        let m = Metrics::new();
        m.record_operation("cache", "get", Outcome::Ok, Duration::from_millis(3));
        m.cache_hit();
        m.cache_miss();
        m.cache_miss();
        m.record_rate_limit(&Decision::combine(Vec::new()));
        m.task_enqueued("embeddings");
        m.task_completed("embeddings");
        m.task_failed("embeddings");
        m.task_dead("embeddings");
        m.record_queue_stats(&[QueueStats {
            name: "embeddings".into(),
            queued: 4,
            oldest_waiting_ms: Some(1500),
            ..QueueStats::default()
        }]);
        m.set_breaker_state(
            "cache",
            &BreakerState::Open {
                until: Timestamp::from_millis(1),
            },
        );
        m.set_service_mode("queue", ServiceMode::Fallback);
        m.record_http("GET", "/health/live", 200, Duration::from_millis(1));
        m.sse_streams_changed(1);
        let text = m.render().unwrap();
        for needle in [
            "# TYPE spool_operation_duration_seconds histogram",
            r#"spool_operation_duration_seconds_count{operation="get",outcome="ok",service="cache"} 1"#,
            "spool_cache_hits_total 1",
            "spool_cache_misses_total 2",
            r#"spool_limiter_decisions_total{decision="allowed"} 1"#,
            r#"spool_queue_tasks_enqueued_total{queue="embeddings"} 1"#,
            r#"spool_queue_tasks_completed_total{queue="embeddings"} 1"#,
            r#"spool_queue_tasks_failed_total{queue="embeddings"} 1"#,
            r#"spool_queue_tasks_dead_total{queue="embeddings"} 1"#,
            r#"spool_queue_depth{queue="embeddings",status="queued"} 4"#,
            r#"spool_queue_oldest_waiting_seconds{queue="embeddings"} 1.5"#,
            r#"spool_breaker_state{breaker="cache"} 2"#,
            r#"spool_degraded{service="queue"} 1"#,
            r#"spool_degraded{service="cache"} 0"#,
            r#"spool_http_requests_total{method="GET",route="/health/live",status="200"} 1"#,
            "# TYPE spool_http_request_duration_seconds histogram",
            "spool_sse_streams 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let services = m.services();
        assert_eq!(services["queue"].mode, ServiceMode::Fallback);
        assert_eq!(services["cache"].breaker, Some("open"));
        assert_eq!(services["limiter"], ServiceStatus::default());
    }

    #[test]
    fn backend_latency_is_a_gauge_of_the_last_check() {
        let m = Metrics::new();
        assert!(!m
            .render()
            .unwrap()
            .contains("spool_backend_latency_seconds"));
        m.record_backend_latency("redis", Duration::from_millis(250));
        m.record_backend_latency("redis", Duration::from_millis(4));
        let text = m.render().unwrap();
        assert!(
            text.contains("# TYPE spool_backend_latency_seconds gauge"),
            "{text}"
        );
        assert!(
            text.contains(r#"spool_backend_latency_seconds{backend="redis"} 0.004"#),
            "{text}"
        );
    }

    #[test]
    fn handles_share_their_instruments() {
        let a = Metrics::new();
        let b = a.clone();
        b.cache_hit();
        assert!(a.render().unwrap().contains("spool_cache_hits_total 1"));
        let other = Metrics::new();
        assert!(!other.render().unwrap().contains("spool_cache_hits_total 1"));
    }
}
