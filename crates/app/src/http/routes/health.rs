//! `/health/live` and `/health/ready`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use spool_domain::time::duration_millis;

use crate::http::AppState;
use crate::telemetry::ServiceMode;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `GET /health/live`: the process is up.
pub(crate) async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// One service in `/health/ready`.
#[derive(Debug, Serialize)]
struct ServiceView {
    /// `primary`, `fallback`, or `unavailable` (backend down and no fallback to switch to).
    mode: &'static str,
    /// The backend breaker's state, when the service has one (`closed`, `open`,
    /// `half_open`).
    #[serde(skip_serializing_if = "Option::is_none")]
    breaker: Option<&'static str>,
    /// Work held locally that the backend has not received yet (omitted when 0).
    #[serde(skip_serializing_if = "is_zero")]
    local_pending: u64,
}

/// The `/health/ready` body.
#[derive(Debug, Serialize)]
struct Ready {
    /// `ok` when the backend answers, every service runs on it and nothing is waiting to be
    /// handed over; else `degraded`.
    status: &'static str,
    /// `memory` or `redis`.
    backend: &'static str,
    /// Round trip of the backend's health check, in milliseconds (null when it failed).
    latency_ms: Option<f64>,
    /// The backend server's version, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    /// Why the backend check failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Each service's mode.
    services: BTreeMap<String, ServiceView>,
}

/// `GET /health/ready`: 200 `ok` or `degraded` while any service can serve; 503 when none
/// can (the backend is down and no service has a fallback).
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let timeout = state.options().readiness_timeout;
    let check = tokio::time::timeout(timeout, state.spool().health().check()).await;
    let (latency_ms, version, error) = match check {
        Ok(Ok(h)) => {
            state
                .metrics()
                .record_backend_latency(state.spool().backend(), h.latency);
            (Some(h.latency.as_secs_f64() * 1000.0), h.version, None)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: backend check failed");
            (
                None,
                None,
                Some(format!("backend check failed: {}", e.code())),
            )
        }
        Err(_) => (
            None,
            None,
            Some(format!(
                "backend check timed out after {} ms",
                duration_millis(timeout)
            )),
        ),
    };
    let backend_ok = error.is_none();
    let snapshot = state.spool().resilience().snapshot();
    let mut services = BTreeMap::new();
    let mut any_serving = false;
    for s in &snapshot.services {
        // A service behind the resilience layer (it has a breaker) switches to its local
        // fallback on its next failed call, so it can still serve while the backend is down.
        let mode = match s.mode {
            ServiceMode::Fallback => "fallback",
            ServiceMode::Primary if backend_ok || s.breaker.is_some() => "primary",
            ServiceMode::Primary => "unavailable",
        };
        any_serving |= mode != "unavailable";
        services.insert(
            s.name().to_owned(),
            ServiceView {
                mode,
                breaker: s.breaker.as_ref().map(|b| b.name()),
                local_pending: s.local_pending,
            },
        );
    }
    let body = Ready {
        status: if backend_ok && !snapshot.degraded {
            "ok"
        } else {
            "degraded"
        },
        backend: state.spool().backend(),
        latency_ms,
        version,
        error,
        services,
    };
    let status = if any_serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use spool_adapter_memory::TokioClock;
    use spool_domain::limits::StoreLimits;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;
    use crate::http::{router, HttpOptions};
    use crate::resilience::Service;
    use crate::services::mocks::{unavailable, MockHealth};
    use crate::telemetry::Metrics;
    use crate::{memory_backends, Spool};

    async fn ready_with(fallback: Option<Service>) -> (StatusCode, serde_json::Value) {
        let mut backends = memory_backends(&StoreLimits::default(), Arc::new(TokioClock::new()));
        let mut health = MockHealth::new();
        health.expect_check().returning(|| Err(unavailable()));
        backends.health = Arc::new(health);
        let config = Config::default();
        let spool = Spool::from_backends(backends, &config).unwrap();
        if let Some(service) = fallback {
            spool.resilience().set_mode(service, ServiceMode::Fallback);
        }
        let options = HttpOptions::from_config(&config.http).unwrap();
        let app = router(AppState::new(spool, Metrics::new(), options));
        let res = app
            .oneshot(Request::get("/health/ready").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_down_backend_without_fallback_cannot_serve() {
        let (status, body) = ready_with(None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["latency_ms"], serde_json::Value::Null);
        assert!(body["error"].as_str().unwrap().contains("unavailable"));
        for s in ["cache", "limiter", "queue", "progress"] {
            assert_eq!(body["services"][s]["mode"], "unavailable", "{body}");
        }
    }

    #[tokio::test]
    async fn a_service_on_its_fallback_keeps_the_server_ready_but_degraded() {
        let (status, body) = ready_with(Some(Service::Cache)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["services"]["cache"]["mode"], "fallback");
        assert_eq!(body["services"]["queue"]["mode"], "unavailable");
    }
}
