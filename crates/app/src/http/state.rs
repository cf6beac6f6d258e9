//! [`AppState`]: what every handler reaches, and [`HttpOptions`]: how the router behaves.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::middleware::ApiKeys;
use super::sse::SseStreams;
use crate::config::{ConfigError, HttpConfig, IpNetwork};
use crate::telemetry::Metrics;
use crate::Spool;

/// How the HTTP face behaves; [`HttpOptions::from_config`] reads `[http]`.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest request body (413 above).
    pub body_limit_bytes: usize,
    /// Longest a request may take (503 `timeout` after); SSE streams and the reserve
    /// long-poll (which gets its `wait_ms` on top) are exempt.
    pub request_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNetwork>,
    /// The API keys; none means no authentication (and `spool serve` binds only to
    /// loopback).
    pub api_keys: ApiKeys,
    /// Most SSE streams open at once (503 above).
    pub max_sse_streams: usize,
    /// Most SSE streams one client IP may hold open (429 above).
    pub max_sse_streams_per_ip: usize,
    /// Interval of SSE keep-alive comments.
    pub sse_keep_alive: Duration,
    /// Longest `/health/ready` waits for the backend.
    pub readiness_timeout: Duration,
}

impl HttpOptions {
    /// The options `[http]` describes; readiness waits up to 2 s.
    ///
    /// # Errors
    /// A malformed API key digest.
    pub fn from_config(http: &HttpConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            body_limit_bytes: http.body_limit_bytes,
            request_timeout: http.request_timeout,
            trusted_proxies: http.trusted_proxies.clone(),
            api_keys: ApiKeys::from_config(&http.api_keys)?,
            max_sse_streams: http.max_sse_streams,
            max_sse_streams_per_ip: http.max_sse_streams_per_ip.min(http.max_sse_streams),
            sse_keep_alive: http.sse_keep_alive,
            readiness_timeout: Duration::from_secs(2),
        })
    }
}

struct Inner {
    spool: Spool,
    metrics: Metrics,
    options: HttpOptions,
    sse: SseStreams,
    shutdown: CancellationToken,
}

/// The state behind every handler: the services, metrics, options and the SSE caps. Cheap
/// to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("spool", &self.inner.spool)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over `spool`, recording into `metrics` (which from now on also follows the
    /// services' modes and breaker state), behaving per `options`.
    pub fn new(spool: Spool, metrics: Metrics, options: HttpOptions) -> Self {
        spool.resilience().attach_metrics(&metrics);
        let sse = SseStreams::new(
            options.max_sse_streams,
            options.max_sse_streams_per_ip.max(1),
            metrics.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                spool,
                metrics,
                options,
                sse,
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// State over `spool` with the options of its `[http]` configuration and
    /// [`Metrics::global`].
    ///
    /// # Errors
    /// As for [`HttpOptions::from_config`].
    pub fn from_spool(spool: Spool) -> Result<Self, ConfigError> {
        let options = HttpOptions::from_config(&spool.config().http)?;
        Ok(Self::new(spool, Metrics::global().clone(), options))
    }

    /// The services.
    pub fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The options.
    pub fn options(&self) -> &HttpOptions {
        &self.inner.options
    }

    /// The SSE caps.
    pub fn sse(&self) -> &SseStreams {
        &self.inner.sse
    }

    /// Cancelled when the server shuts down: open SSE streams end, so a graceful shutdown
    /// does not wait for them.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }
}
