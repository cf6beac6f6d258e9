//! The router of the HTTP contract and [`serve`].

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use super::middleware::{
    AuthLayer, ClientIpLayer, CorrelationLayer, HttpMetricsLayer, RateLimitLayer,
};
use super::routes::{cache, dashboard, health, metrics, operations, queues};
use super::{sse, ApiError, AppState};

/// `X-User-ID`: the user of per-user limits, believed only while no API key is configured.
pub static USER_HEADER: HeaderName = HeaderName::from_static("x-user-id");

async fn request_timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(state.options().request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => queues::timeout_error().into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".to_owned());
    ApiError::internal(format!("handler panicked: {message}")).into_response()
}

/// Every endpoint of the HTTP contract with spool's middleware:
///
/// - on everything: correlation ID, client IP, request tracing, HTTP metrics, panics as 500,
///   the body limit (413), JSON 404 / 405 answers;
/// - on `/v1/...`: API-key auth (when keys are configured), rate limiting, and the request
///   timeout (except the reserve long-poll, which waits `wait_ms` plus the timeout, and SSE
///   streams).
///
/// `/health/*` and `/metrics` need no key and are not rate limited. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` (as [`serve`] does) so client IPs
/// are known.
pub fn router(state: AppState) -> Router {
    let options = state.options().clone();
    let timed = Router::new()
        .route(
            "/v1/projects/{project}/cache/{key}",
            put(cache::put).get(cache::get).delete(cache::delete),
        )
        .route(
            "/v1/projects/{project}/cache/invalidate",
            post(cache::invalidate)
                .put(cache::put_invalidate_key)
                .get(cache::get_invalidate_key)
                .delete(cache::delete_invalidate_key),
        )
        .route("/v1/queues", get(queues::stats))
        .route(
            "/v1/queues/{queue}/tasks",
            post(queues::enqueue).get(queues::list),
        )
        .route("/v1/queues/{queue}/tasks/{id}/retry", post(queues::retry))
        .route("/v1/dashboard", get(dashboard::overview))
        .route(
            "/v1/queues/{queue}/tasks/{id}",
            get(queues::get).delete(queues::cancel),
        )
        .route(
            "/v1/queues/{queue}/tasks/{id}/heartbeat",
            post(queues::heartbeat),
        )
        .route(
            "/v1/queues/{queue}/tasks/{id}/complete",
            post(queues::complete),
        )
        .route("/v1/queues/{queue}/tasks/{id}/fail", post(queues::fail))
        .route("/v1/operations", post(operations::start))
        .route("/v1/operations/{id}", get(operations::get))
        .route("/v1/operations/{id}/progress", post(operations::progress))
        .route_layer(from_fn_with_state(state.clone(), request_timeout));
    let untimed = Router::new()
        .route("/v1/queues/{queue}/reserve", post(queues::reserve))
        .route("/v1/operations/{id}/events", get(sse::events));

    let mut limit =
        RateLimitLayer::new(state.spool().limiter().clone()).metrics(state.metrics().clone());
    if options.api_keys.is_empty() {
        limit = limit.user_header(USER_HEADER.clone());
    }
    let v1 = timed
        .merge(untimed)
        .route_layer(limit)
        .route_layer(AuthLayer::new(options.api_keys.clone()))
        // Outside auth, so refusals (401 / 403 / 429 / 400) are audited too.
        .route_layer(from_fn_with_state(
            options.api_keys.clone(),
            crate::audit::http_audit,
        ));

    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(dashboard::index))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/style.css", get(dashboard::style))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(options.body_limit_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(HttpMetricsLayer::new(state.metrics().clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|_: &Request| tracing::Span::current())
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(ClientIpLayer::new(options.trusted_proxies.clone()))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .layer(CorrelationLayer::new())
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` completes, then stops accepting, ends
/// open SSE streams and waits for in-flight requests.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = state.shutdown_token();
    let app = router(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        token.cancel();
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use spool_adapter_memory::TokioClock;
    use spool_domain::limits::StoreLimits;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;
    use crate::http::HttpOptions;
    use crate::telemetry::Metrics;
    use crate::{memory_backends, Spool};

    fn state(timeout: Duration) -> AppState {
        let backends = memory_backends(&StoreLimits::default(), Arc::new(TokioClock::new()));
        let config = Config::default();
        let spool = Spool::from_backends(backends, &config).unwrap();
        let mut options = HttpOptions::from_config(&config.http).unwrap();
        options.request_timeout = timeout;
        AppState::new(spool, Metrics::new(), options)
    }

    #[tokio::test(start_paused = true)]
    async fn slow_requests_time_out_with_the_error_body() {
        let state = state(Duration::from_millis(50));
        let app: Router = Router::new()
            .route("/slow", get(std::future::pending::<&'static str>))
            .route("/fast", get(|| async { "ok" }))
            .route_layer(from_fn_with_state(state.clone(), request_timeout))
            .with_state(state);
        let res = app
            .clone()
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "timeout");
        let res = app
            .oneshot(Request::get("/fast").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn panics_become_internal_errors() {
        let res = Router::new()
            .route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("kaboom");
                    }
                    "unreachable"
                }),
            )
            .layer(CatchPanicLayer::custom(panic_response))
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        assert!(
            !String::from_utf8_lossy(&body).contains("kaboom"),
            "the cause stays in the logs"
        );
    }
}
