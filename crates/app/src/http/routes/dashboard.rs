//! The dashboard: its static assets (see [`crate::http::dashboard`]) and `GET /v1/dashboard`.

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;

use crate::http::dashboard::{APP_JS, CONTENT_SECURITY_POLICY, INDEX_HTML, STYLE_CSS};
use crate::http::middleware::Principal;
use crate::http::AppState;

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        ),
    ];
    (headers, body).into_response()
}

/// `GET /` (also `/?operation=<id>`): the page.
pub(crate) async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /dashboard/app.js`.
pub(crate) async fn script() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /dashboard/style.css`.
pub(crate) async fn style() -> Response {
    asset(STYLE_CSS, "text/css; charset=utf-8")
}

/// Who the request authenticated as.
#[derive(Debug, Serialize)]
pub(crate) struct SessionDto {
    /// `open` (no API keys configured: loopback only) or `api_key`.
    mode: &'static str,
    /// The key's id.
    key_id: Option<String>,
    /// The projects the key may use (project-scoped endpoints only).
    projects: Vec<String>,
}

/// One rate-limit policy.
#[derive(Debug, Serialize)]
pub(crate) struct PolicyDto {
    name: String,
    limit: u64,
    window_ms: u64,
    /// `user`, `project` or `ip`.
    scope: &'static str,
    /// `local`, `open` or `closed`: what it does while the backend is down.
    failure_mode: &'static str,
    /// `sliding_window` or `sliding_log`.
    algorithm: &'static str,
}

/// `GET /v1/dashboard`.
#[derive(Debug, Serialize)]
pub(crate) struct OverviewDto {
    session: SessionDto,
    /// `memory` or `redis`.
    backend: &'static str,
    rate_limits: Vec<PolicyDto>,
}

/// `GET /v1/dashboard`: the session and the rate-limit policies (health comes from
/// `/health/ready`, queues from `/v1/queues`).
pub(crate) async fn overview(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
) -> Json<OverviewDto> {
    let session = match principal {
        Some(Extension(p)) => SessionDto {
            mode: "api_key",
            key_id: Some(p.key_id().to_owned()),
            projects: p.projects().iter().map(ToString::to_string).collect(),
        },
        None => SessionDto {
            mode: "open",
            key_id: None,
            projects: Vec::new(),
        },
    };
    let rate_limits = state
        .spool()
        .limiter()
        .policies()
        .iter()
        .map(|p| PolicyDto {
            name: p.policy.name().to_string(),
            limit: p.policy.limit(),
            window_ms: p.policy.window_ms(),
            scope: p.scope.as_str(),
            failure_mode: p.failure_mode.as_str(),
            algorithm: match p.policy.algorithm() {
                spool_domain::limit::Algorithm::SlidingWindow => "sliding_window",
                spool_domain::limit::Algorithm::SlidingLog => "sliding_log",
            },
        })
        .collect();
    Json(OverviewDto {
        session,
        backend: state.spool().backend(),
        rate_limits,
    })
}
