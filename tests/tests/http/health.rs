//! `/health/*` and `/metrics`.

use serde_json::json;
use spool_tests::prometheus;
use spool_tests::{on_both_backends, Backend, TestServer};

use crate::json;

async fn live_and_ready(backend: Backend) {
    let s = TestServer::start(backend).await;
    let res = s.get("/health/live").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await, json!({"status": "ok"}));

    let res = s.get("/health/ready").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let ready = json(res).await;
    assert_eq!(ready["status"], "ok", "{ready}");
    let name = match backend {
        Backend::Memory => "memory",
        Backend::Redis => "redis",
    };
    assert_eq!(ready["backend"], name);
    assert!(ready["latency_ms"].as_f64().unwrap() >= 0.0, "{ready}");
    for service in ["cache", "limiter", "queue", "progress"] {
        assert_eq!(ready["services"][service]["mode"], "primary", "{ready}");
    }
}

async fn metrics_are_valid_prometheus_text(backend: Backend) {
    let s = TestServer::start(backend).await;
    // Some traffic first.
    let res = s
        .post_json(
            "/v1/queues/embeddings/tasks",
            &json!({"kind": "embed", "payload": {}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    s.get("/v1/projects/acme/cache/missing")
        .send()
        .await
        .unwrap();
    s.get("/health/live").send().await.unwrap();

    let res = s.get("/metrics").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = res.text().await.unwrap();
    let exposition = prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    if let Some(verdict) = prometheus::promtool_check(&text) {
        verdict.unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    assert_eq!(
        exposition.value(
            "spool_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/v1/queues/{queue}/tasks"),
                ("status", "201")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        exposition.value(
            "spool_queue_tasks_enqueued_total",
            &[("queue", "embeddings")]
        ),
        Some(1.0)
    );
    assert_eq!(
        exposition.value(
            "spool_queue_depth",
            &[("queue", "embeddings"), ("status", "queued")]
        ),
        Some(1.0)
    );
    assert_eq!(exposition.value("spool_cache_misses_total", &[]), Some(1.0));
    assert_eq!(
        exposition.value("spool_degraded", &[("service", "queue")]),
        Some(0.0)
    );
    assert_eq!(
        exposition
            .types
            .get("spool_http_request_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
}

on_both_backends!(live_and_ready, metrics_are_valid_prometheus_text);
