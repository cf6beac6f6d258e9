//! Rate limiting by user, project and client IP, with the IETF draft and legacy headers.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use spool_adapter_memory::{MemoryRateLimiter, TokioClock};
use spool_domain::limit::{Cost, Decision, LimitCheck};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{ProjectId, UserId};
use spool_domain::time::duration_millis;
use spool_ports::RateLimitStore;
use tower::{Layer, Service};

use super::{ClientIp, ProjectFromRequest};
use crate::http::ApiError;
use crate::services::{FailureMode, RateLimitRequest, RateLimiter};
use crate::telemetry::Metrics;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Limit` (legacy).
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining` (legacy).
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset` (legacy).
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    duration_millis(d).div_ceil(1000)
}

fn value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_str(&s).ok()
}

/// The headers describing `decision`; empty when no policy applied.
///
/// | header | value |
/// |---|---|
/// | `RateLimit-Policy` | each policy: `"<name>";q=<limit>;w=<window seconds>` |
/// | `RateLimit` | each policy: `"<name>";r=<remaining>;t=<seconds until its quota is back>` |
/// | `X-RateLimit-Limit` / `-Remaining` / `-Reset` | the most restrictive policy's limit, remaining units, and seconds until reset (a delta, not an epoch) |
/// | `Retry-After` | when refused: whole seconds, rounded up, after which the request is admitted |
pub fn rate_limit_headers(decision: &Decision) -> HeaderMap {
    let mut h = HeaderMap::new();
    if decision.policies.is_empty() {
        return h;
    }
    let policy = decision
        .policies
        .iter()
        .map(|p| {
            format!(
                "\"{}\";q={};w={}",
                p.policy,
                p.limit,
                ceil_secs(p.window).max(1)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let state = decision
        .policies
        .iter()
        .map(|p| {
            format!(
                "\"{}\";r={};t={}",
                p.policy,
                p.remaining,
                ceil_secs(p.reset_after)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(v) = value(policy) {
        h.insert(RATELIMIT_POLICY.clone(), v);
    }
    if let Some(v) = value(state) {
        h.insert(RATELIMIT.clone(), v);
    }
    if let Some(p) = decision.most_restrictive() {
        for (name, n) in [
            (&X_RATELIMIT_LIMIT, p.limit),
            (&X_RATELIMIT_REMAINING, p.remaining),
            (&X_RATELIMIT_RESET, ceil_secs(p.reset_after)),
        ] {
            h.insert(name.clone(), HeaderValue::from(n));
        }
    }
    if !decision.allowed {
        let wait = decision.retry_after.map_or(1, |d| ceil_secs(d).max(1));
        h.insert(header::RETRY_AFTER, HeaderValue::from(wait));
    }
    h
}

/// The 429 answer to a refused `decision`, with every header.
pub fn too_many_requests(decision: &Decision) -> ApiError {
    let wait = decision.retry_after.map_or(1, |d| ceil_secs(d).max(1));
    let refusing: Vec<String> = decision
        .policies
        .iter()
        .filter(|p| !p.allowed)
        .map(|p| p.policy.to_string())
        .collect();
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "rate limit exceeded ({}); retry in {wait} s",
            refusing.join(", ")
        ),
    )
    .with_headers(rate_limit_headers(decision))
}

enum Verdict {
    Allow(HeaderMap),
    Deny(ApiError),
}

/// Checks every configured policy whose subject the request carries, in one atomic call, and
/// answers 429 when one refuses; the rate-limit headers go on every response the policies
/// applied to.
///
/// Subjects:
///
/// | scope | from |
/// |---|---|
/// | `ip` | the [`ClientIp`] extension ([`super::ClientIpLayer`]) |
/// | `user` | a [`UserId`] extension — [`super::AuthLayer`] sets the API key's id; or, only when enabled with [`RateLimitLayer::user_header`], a request header |
/// | `project` | the request's project ([`ProjectFromRequest`]: `/…/projects/{project}/…` by default) |
///
/// When the limiter's backend is unavailable, each policy's failure mode applies: `closed`
/// answers 503, `open` admits, `local` (the default) counts in an in-process limiter (so one
/// instance enforces the limit alone until the backend is back).
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    project: ProjectFromRequest,
    user_header: Option<HeaderName>,
    metrics: Option<Metrics>,
    local: Arc<MemoryRateLimiter>,
}

struct Config {
    limiter: RateLimiter,
    project: ProjectFromRequest,
    user_header: Option<HeaderName>,
    metrics: Option<Metrics>,
    local: Arc<MemoryRateLimiter>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("policies", &self.limiter.policies().len())
            .field("user_header", &self.user_header)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// A layer checking `limiter`'s policies.
    pub fn new(limiter: RateLimiter) -> Self {
        Self {
            limiter,
            project: ProjectFromRequest::default(),
            user_header: None,
            metrics: None,
            local: Arc::new(MemoryRateLimiter::new(
                &StoreLimits::default(),
                Arc::new(TokioClock::new()),
            )),
        }
    }

    /// Finds the project of a request with `project`.
    pub fn project_from(mut self, project: ProjectFromRequest) -> Self {
        self.project = project;
        self
    }

    /// Takes the user from `header` when no [`UserId`] extension is set. Only for servers
    /// without authentication behind a gateway that sets it: clients can choose it freely.
    pub fn user_header(mut self, header: HeaderName) -> Self {
        self.user_header = Some(header);
        self
    }

    /// Counts decisions in `metrics`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl Config {
    fn subjects<B>(&self, req: &Request<B>) -> RateLimitRequest {
        let mut out = RateLimitRequest::new();
        if let Some(ClientIp(ip)) = req.extensions().get::<ClientIp>() {
            out.ip = Some(*ip);
        }
        out.user = req.extensions().get::<UserId>().cloned().or_else(|| {
            let name = self.user_header.as_ref()?;
            let v = req.headers().get(name)?.to_str().ok()?;
            UserId::parse(v.trim()).ok()
        });
        out.project = self
            .project
            .project(req.uri())
            .and_then(|p| ProjectId::parse(p).ok());
        out
    }

    fn verdict(&self, decision: &Decision) -> Verdict {
        if let Some(m) = &self.metrics {
            m.record_rate_limit(decision);
        }
        if decision.allowed {
            Verdict::Allow(rate_limit_headers(decision))
        } else {
            Verdict::Deny(too_many_requests(decision))
        }
    }

    async fn decide(&self, req: &RateLimitRequest) -> Verdict {
        match self.limiter.check(req, Cost::ONE).await {
            Ok(d) => self.verdict(&d),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "rate limiter backend unavailable; applying failure modes");
                self.fallback(req).await
            }
            Err(e) => Verdict::Deny(e.into()),
        }
    }

    async fn fallback(&self, req: &RateLimitRequest) -> Verdict {
        let mut local = Vec::new();
        for p in self.limiter.policies() {
            let Some(subject) = req.subject(p.scope) else {
                continue;
            };
            match p.failure_mode {
                FailureMode::Closed => {
                    return Verdict::Deny(ApiError::unavailable(format!(
                        "rate limiter unavailable; policy {} refuses requests until it is back",
                        p.policy.name()
                    )))
                }
                FailureMode::Local => local.push(LimitCheck::new(p.policy.clone(), subject)),
                FailureMode::Open => {}
            }
        }
        if local.is_empty() {
            return Verdict::Allow(HeaderMap::new());
        }
        match self.local.check(&local, Cost::ONE).await {
            Ok(d) => self.verdict(&d),
            Err(e) => {
                tracing::error!(error = %e, "local rate limiter failed; admitting");
                Verdict::Allow(HeaderMap::new())
            }
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            config: Arc::new(Config {
                limiter: self.limiter.clone(),
                project: self.project.clone(),
                user_header: self.user_header.clone(),
                metrics: self.metrics.clone(),
                local: Arc::clone(&self.local),
            }),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone is not ready; the ready one serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        Box::pin(async move {
            let subjects = config.subjects(&req);
            match config.decide(&subjects).await {
                Verdict::Allow(headers) => {
                    let mut res = inner.call(req).await?;
                    res.headers_mut().extend(headers);
                    Ok(res)
                }
                Verdict::Deny(e) => Ok(e.into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use spool_domain::limit::PolicyDecision;
    use spool_domain::names::PolicyName;

    use super::*;

    fn pd(name: &str, allowed: bool, remaining: u64, retry_ms: Option<u64>) -> PolicyDecision {
        PolicyDecision {
            policy: PolicyName::parse(name).unwrap(),
            allowed,
            limit: 10,
            window: Duration::from_millis(60_000),
            remaining,
            reset_after: Duration::from_millis(12_300),
            retry_after: retry_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn allowed_decisions_carry_every_header_but_retry_after() {
        let d = Decision::combine(vec![
            pd("per_ip", true, 7, None),
            pd("per_user", true, 3, None),
        ]);
        let h = rate_limit_headers(&d);
        assert_eq!(
            h["ratelimit-policy"],
            "\"per_ip\";q=10;w=60, \"per_user\";q=10;w=60"
        );
        assert_eq!(h["ratelimit"], "\"per_ip\";r=7;t=13, \"per_user\";r=3;t=13");
        assert_eq!(h["x-ratelimit-limit"], "10");
        assert_eq!(h["x-ratelimit-remaining"], "3");
        assert_eq!(h["x-ratelimit-reset"], "13");
        assert!(h.get("retry-after").is_none());
    }

    #[test]
    fn refusals_round_retry_after_up_to_whole_seconds() {
        let d = Decision::combine(vec![
            pd("per_ip", false, 0, Some(1_001)),
            pd("per_user", true, 3, None),
        ]);
        let h = rate_limit_headers(&d);
        assert_eq!(h["retry-after"], "2");
        assert_eq!(h["x-ratelimit-remaining"], "0");
        let e = too_many_requests(&d);
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(e.message().contains("per_ip"));
        let d = Decision::combine(vec![pd("p", false, 0, Some(1))]);
        assert_eq!(rate_limit_headers(&d)["retry-after"], "1");
    }

    #[test]
    fn no_policy_no_headers() {
        assert!(rate_limit_headers(&Decision::combine(vec![])).is_empty());
    }

    mod failure_modes {
        #![allow(clippy::unwrap_used)]

        use axum::body::Body;
        use axum::routing::get;
        use axum::Router;
        use spool_ports::PortError;
        use tower::ServiceExt;

        use super::super::*;
        use crate::services::mocks::{rate_policy, unavailable, MockLimiter};
        use crate::services::{RatePolicy, Scope};

        fn policy(name: &str, limit: u64, mode: FailureMode) -> RatePolicy {
            rate_policy(name, Scope::Ip, limit, mode)
        }

        fn app(policies: Vec<RatePolicy>, error: fn() -> PortError) -> Router {
            let mut store = MockLimiter::new();
            store.expect_check().returning(move |_, _| Err(error()));
            let limiter = RateLimiter::new(Arc::new(store), policies).unwrap();
            Router::new()
                .route("/x", get(|| async { "ok" }))
                .layer(RateLimitLayer::new(limiter))
        }

        async fn call(app: &Router) -> Response {
            let mut req = Request::builder().uri("/x").body(Body::empty()).unwrap();
            req.extensions_mut()
                .insert(ClientIp("10.0.0.1".parse().unwrap()));
            app.clone().oneshot(req).await.unwrap()
        }

        #[tokio::test]
        async fn closed_policies_refuse_while_the_backend_is_down() {
            let app = app(
                vec![
                    policy("open", 10, FailureMode::Open),
                    policy("closed", 10, FailureMode::Closed),
                ],
                unavailable,
            );
            let res = call(&app).await;
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(res.headers()["retry-after"], "1");
        }

        #[tokio::test]
        async fn open_policies_admit_without_headers() {
            let app = app(vec![policy("open", 1, FailureMode::Open)], unavailable);
            for _ in 0..3 {
                let res = call(&app).await;
                assert_eq!(res.status(), StatusCode::OK);
                assert!(res.headers().get("ratelimit").is_none());
            }
        }

        #[tokio::test]
        async fn local_policies_count_in_process() {
            let app = app(
                vec![
                    policy("local", 2, FailureMode::Local),
                    policy("open", 1, FailureMode::Open),
                ],
                unavailable,
            );
            let first = call(&app).await;
            assert_eq!(first.status(), StatusCode::OK);
            assert_eq!(first.headers()["ratelimit-policy"], "\"local\";q=2;w=60");
            assert_eq!(call(&app).await.status(), StatusCode::OK);
            let third = call(&app).await;
            assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
            assert!(third.headers().contains_key("retry-after"));
        }

        #[tokio::test]
        async fn other_errors_are_answered_as_such() {
            let app = app(vec![policy("p", 1, FailureMode::Open)], || {
                PortError::internal("corrupt counter")
            });
            assert_eq!(call(&app).await.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
}
