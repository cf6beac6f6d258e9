//! Counts HTTP requests by method, matched route and status.

use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::telemetry::Metrics;

/// Records `spool_http_requests_total` and `spool_http_request_duration_seconds` (time to
/// the response head) with the matched route template as label (`unmatched` for 404s of
/// unknown paths), so label values stay bounded. Add it with `Router::layer` so the route
/// is known.
#[derive(Debug, Clone)]
pub struct HttpMetricsLayer {
    metrics: Metrics,
}

impl HttpMetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`HttpMetricsLayer`].
#[derive(Debug, Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for HttpMetrics<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<ResB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let method = req.method().as_str().to_owned();
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            metrics.record_http(&method, &route, res.status().as_u16(), started.elapsed());
            Ok(res)
        })
    }
}
