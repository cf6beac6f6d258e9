//! `GET /metrics`: Prometheus text exposition.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::http::{ApiError, AppState};
use crate::telemetry::PROMETHEUS_CONTENT_TYPE;

/// How long a scrape waits for fresh queue depths before it answers without them.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /metrics`: refreshes the queue-depth gauges (best effort) and the breaker state,
/// then renders every metric as Prometheus text (version 0.0.4).
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    match tokio::time::timeout(STATS_TIMEOUT, state.spool().queue().stats(&[])).await {
        Ok(Ok(stats)) => state.metrics().record_queue_stats(&stats),
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics: queue stats unavailable"),
        Err(_) => tracing::debug!("metrics: queue stats timed out"),
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
