//! Tower layers that any axum app can use, one file per concern.
//!
//! | layer | puts in the request | answers itself |
//! |---|---|---|
//! | [`CorrelationLayer`] | [`CorrelationId`](spool_domain::names::CorrelationId); a `http.request` span with `correlation_id` | never; sets `X-Correlation-ID` on every response |
//! | [`ClientIpLayer`] | [`ClientIp`]: the socket peer, or `X-Forwarded-For` from trusted proxies | never |
//! | [`AuthLayer`] | [`Principal`] and its [`UserId`](spool_domain::names::UserId) | 401 without / with a wrong key, 403 for another project |
//! | [`RateLimitLayer`] | — | 429 with `Retry-After`; rate-limit headers on every response a policy applied to |
//! | [`HttpMetricsLayer`] | — | never; counts requests by route and status |
//!
//! Order matters: the correlation layer outermost (so even refusals carry the header),
//! then client IP and auth, then rate limiting, which needs both. In axum the last
//! `.layer(...)` call is the outermost:
//!
//! ```
//! use std::net::SocketAddr;
//!
//! use axum::body::Body;
//! use axum::extract::ConnectInfo;
//! use axum::http::Request;
//! use axum::{routing::get, Router};
//! use spool_app::config::{Config, EnvLayer};
//! use spool_app::http::middleware::{
//!     ApiKeys, AuthLayer, ClientIpLayer, CorrelationLayer, RateLimitLayer,
//! };
//! use spool_app::Spool;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let env = EnvLayer::from_pairs([("SPOOL_RATE_LIMITS", "ip:100/60s")]);
//! let config = Config::load_from(None, &env)?;
//! let spool = Spool::from_config(&config).await?;
//!
//! let app = Router::new()
//!     .route("/hello", get(|| async { "hi" }))
//!     .layer(RateLimitLayer::new(spool.limiter().clone()))           // innermost
//!     .layer(AuthLayer::new(ApiKeys::from_config(&config.http.api_keys)?))
//!     .layer(ClientIpLayer::new(config.http.trusted_proxies.clone()))
//!     .layer(CorrelationLayer::new());                              // outermost
//!
//! // In production: axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
//! let mut req = Request::builder().uri("/hello").body(Body::empty())?;
//! req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 5000))));
//! let res = app.oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//! assert!(res.headers().contains_key("x-correlation-id"));
//! assert_eq!(res.headers()["ratelimit-policy"], "\"ip_60s\";q=100;w=60"); // named <scope>_<window>
//! assert_eq!(res.headers()["x-ratelimit-remaining"], "99");
//! # Ok(()) }
//! ```

mod auth;
mod client_ip;
mod correlation;
mod http_metrics;
mod rate_limit;

use std::fmt;
use std::sync::Arc;

use axum::http::Uri;

pub use auth::{sha256_hex, ApiKeys, Auth, AuthLayer, Principal};
pub use client_ip::{ClientIp, ClientIpLayer, ClientIpService, FORWARDED_FOR};
pub use correlation::{new_correlation_id, Correlation, CorrelationLayer, CORRELATION_HEADER};
pub use http_metrics::{HttpMetrics, HttpMetricsLayer};
pub use rate_limit::{
    rate_limit_headers, too_many_requests, RateLimit, RateLimitLayer, RATELIMIT, RATELIMIT_POLICY,
    X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
};

type ProjectFn = dyn Fn(&Uri) -> Option<String> + Send + Sync;

/// How [`AuthLayer`] and [`RateLimitLayer`] find the project a request is about. The
/// default takes the (percent-decoded) path segment after the first `projects` segment, so
/// `/v1/projects/acme/cache/k` is about `acme`.
#[derive(Clone)]
pub struct ProjectFromRequest(Arc<ProjectFn>);

impl fmt::Debug for ProjectFromRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProjectFromRequest")
    }
}

impl Default for ProjectFromRequest {
    fn default() -> Self {
        Self::new(project_from_path)
    }
}

impl ProjectFromRequest {
    /// A custom finder.
    pub fn new(f: impl Fn(&Uri) -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The project of a request for `uri`, if it names one.
    pub fn project(&self, uri: &Uri) -> Option<String> {
        (self.0)(uri)
    }
}

/// The percent-decoded segment after the first `projects` segment of `uri`'s path.
pub fn project_from_path(uri: &Uri) -> Option<String> {
    let mut segments = uri.path().split('/');
    segments.by_ref().find(|s| *s == "projects")?;
    let raw = segments.next()?;
    percent_decode(raw)
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn projects_come_from_the_path() {
        let p = |s: &str| project_from_path(&s.parse::<Uri>().unwrap());
        assert_eq!(p("/v1/projects/acme/cache/k").as_deref(), Some("acme"));
        assert_eq!(p("/v1/projects/a%2Ab/cache").as_deref(), Some("a*b"));
        assert_eq!(p("/v1/queues/x"), None);
        assert_eq!(p("/v1/projects"), None);
        assert_eq!(p("/v1/projects/%zz/x"), None);
    }
}
