//! `GET /metrics`: Prometheus text exposition.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::http::{ApiError, AppState};
use crate::telemetry::PROMETHEUS_CONTENT_TYPE;

/// How long a scrape waits for fresh queue depths before it answers without them.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /metrics`: refreshes the queue-depth gauges and the backend latency (best effort,
/// concurrently) and the breaker state, then renders every metric as Prometheus text
/// (version 0.0.4).
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (stats, health) = tokio::join!(
        tokio::time::timeout(STATS_TIMEOUT, state.spool().queue().stats(&[])),
        tokio::time::timeout(STATS_TIMEOUT, state.spool().health().check()),
    );
    match stats {
        Ok(Ok(stats)) => state.metrics().record_queue_stats(&stats),
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics: queue stats unavailable"),
        Err(_) => tracing::debug!("metrics: queue stats timed out"),
    }
    match health {
        Ok(Ok(h)) => state
            .metrics()
            .record_backend_latency(state.spool().backend(), h.latency),
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics: backend check failed"),
        Err(_) => tracing::debug!("metrics: backend check timed out"),
    }
    state.spool().resilience().publish();
    let text = state.metrics().render().map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
        )],
        text,
    )
        .into_response())
}
