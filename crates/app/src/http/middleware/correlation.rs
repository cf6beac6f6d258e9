//! Correlation IDs: `X-Correlation-ID` in and out, generated when missing, in the request's
//! span and its extensions.

use std::task::{Context, Poll};

use axum::http::{HeaderName, HeaderValue, Request, Response};
use futures::future::BoxFuture;
use spool_domain::names::CorrelationId;
use tower::{Layer, Service};
use tracing::Instrument;

/// `X-Correlation-ID`.
pub static CORRELATION_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// A fresh correlation ID (a ULID: 26 characters, time-ordered).
pub fn new_correlation_id() -> CorrelationId {
    CorrelationId::parse(ulid::Ulid::new().to_string())
        .expect("26 Crockford base-32 characters are a valid correlation id")
}

/// Reads `X-Correlation-ID` (1..=128 of `A-Z a-z 0-9 _ . : -`) or generates one; puts the
/// [`CorrelationId`] in the request's extensions, runs the inner service inside a
/// `http.request` span carrying `correlation_id`, and sets the header on every response.
///
/// A header that is not a valid correlation ID is replaced by a generated one (logged at
/// debug), never refused: tracing must not fail requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct CorrelationLayer;

impl CorrelationLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for CorrelationLayer {
    type Service = Correlation<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Correlation { inner }
    }
}

/// The service of [`CorrelationLayer`].
#[derive(Debug, Clone)]
pub struct Correlation<S> {
    inner: S,
}

fn from_request<B>(req: &Request<B>) -> CorrelationId {
    let given = req
        .headers()
        .get(&CORRELATION_HEADER)
        .map(|v| v.to_str().map(str::trim));
    match given {
        Some(Ok(s)) => match CorrelationId::parse(s) {
            Ok(id) => id,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring an invalid X-Correlation-ID");
                new_correlation_id()
            }
        },
        Some(Err(_)) => new_correlation_id(),
        None => new_correlation_id(),
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Correlation<S>
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

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let id = from_request(&req);
        let header = HeaderValue::from_str(id.as_str()).ok();
        let span = tracing::info_span!(
            "http.request",
            method = %req.method(),
            path = %req.uri().path(),
            correlation_id = %id,
        );
        req.extensions_mut().insert(id);
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let mut res = fut.await?;
                if let Some(h) = header {
                    res.headers_mut().insert(CORRELATION_HEADER.clone(), h);
                }
                Ok(res)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::routing::get;
    use axum::{Extension, Router};
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        Router::new()
            .route(
                "/",
                get(|Extension(id): Extension<CorrelationId>| async move { id.to_string() }),
            )
            .layer(CorrelationLayer::new())
    }

    async fn call(header: Option<&str>) -> (String, String) {
        let mut req = Request::builder().uri("/");
        if let Some(h) = header {
            req = req.header("x-correlation-id", h);
        }
        let res = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let echoed = res.headers()["x-correlation-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        (echoed, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn echoes_a_valid_id_into_extensions_and_response() {
        let (echoed, seen) = call(Some("req-42")).await;
        assert_eq!(echoed, "req-42");
        assert_eq!(seen, "req-42");
    }

    #[tokio::test]
    async fn generates_one_when_missing_or_invalid() {
        let (echoed, seen) = call(None).await;
        assert_eq!(echoed, seen);
        assert_eq!(echoed.len(), 26);
        let (echoed, seen) = call(Some("bad id with spaces*")).await;
        assert_eq!(echoed, seen);
        assert_ne!(echoed, "bad id with spaces*");
        assert!(CorrelationId::parse(echoed).is_ok());
    }
}
