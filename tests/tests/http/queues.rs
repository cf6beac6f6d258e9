//! `/v1/queues/...`: producers and the HTTP worker protocol.

use serde_json::{json, Value};
use spool_tests::{on_both_backends, Backend, TestServer};

use crate::{expect_error, json};

const TASK_FIELDS: [&str; 16] = [
    "id",
    "queue",
    "kind",
    "payload",
    "priority",
    "status",
    "attempts",
    "max_attempts",
    "correlation_id",
    "enqueued_at",
    "scheduled_for",
    "started_at",
    "heartbeat_at",
    "finished_at",
    "last_error",
    "result",
];

fn assert_task_shape(t: &Value) {
    for f in TASK_FIELDS {
        assert!(t.get(f).is_some(), "task without {f}: {t}");
    }
    assert!(t["enqueued_at"].as_str().unwrap().ends_with('Z'), "{t}");
}

async fn enqueue(s: &TestServer, queue: &str, body: Value) -> Value {
    let res = s
        .post_json(&format!("/v1/queues/{queue}/tasks"), &body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    json(res).await
}

async fn enqueue_get_and_cancel(backend: Backend) {
    let s = TestServer::start(backend).await;
    let res = s
        .post_json(
            "/v1/queues/embeddings/tasks",
            &json!({"kind": "embed", "payload": {"texts": ["hi"]}, "priority": 5, "max_attempts": 2}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let task = json(res).await;
    assert_task_shape(&task);
    let id = task["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/queues/embeddings/tasks/{id}"));
    assert_eq!(task["queue"], "embeddings");
    assert_eq!(task["kind"], "embed");
    assert_eq!(task["payload"], json!({"texts": ["hi"]}));
    assert_eq!(task["priority"], 5);
    assert_eq!(task["status"], "queued");
    assert_eq!(task["attempts"], 0);
    assert_eq!(task["max_attempts"], 2);
    assert_eq!(task["started_at"], Value::Null);

    let res = s.get(&location).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let got = json(res).await;
    assert_eq!(got["id"], task["id"]);
    assert_eq!(got["enqueued_at"], task["enqueued_at"]);

    let res = s.delete(&location).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let cancelled = json(res).await;
    assert_task_shape(&cancelled);
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["finished_at"].is_string());

    // Cancelling a finished task conflicts.
    let res = s.delete(&location).send().await.unwrap();
    expect_error(res, 409, "conflict").await;
}

async fn delays_and_unique_keys(backend: Backend) {
    let s = TestServer::start(backend).await;
    let task = enqueue(
        &s,
        "exports",
        json!({"kind": "export", "payload": {"rows": 10}, "delay_ms": 3_600_000}),
    )
    .await;
    assert_eq!(task["status"], "scheduled");
    assert!(task["scheduled_for"].as_str().unwrap() > task["enqueued_at"].as_str().unwrap());

    let first = enqueue(
        &s,
        "exports",
        json!({"kind": "export", "payload": 1, "unique_key": "nightly:2026-11-25"}),
    )
    .await;
    // The same unique key while the first is live: 200 with the existing task.
    let res = s
        .post_json(
            "/v1/queues/exports/tasks",
            &json!({"kind": "export", "payload": 2, "unique_key": "nightly:2026-11-25"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let dup = json(res).await;
    assert_eq!(dup["id"], first["id"]);
    assert_eq!(dup["payload"], 1);
}

async fn stats_list_every_queue(backend: Backend) {
    let s = TestServer::start(backend).await;
    let res = s.get("/v1/queues").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await, json!({"queues": []}));

    enqueue(&s, "embeddings", json!({"kind": "embed", "payload": {}})).await;
    enqueue(&s, "embeddings", json!({"kind": "embed", "payload": {}})).await;
    enqueue(
        &s,
        "agent_tasks",
        json!({"kind": "echo", "payload": {}, "delay_ms": 3_600_000}),
    )
    .await;
    let res = s.get("/v1/queues").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let stats = json(res).await;
    let queues = stats["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 2, "{stats}");
    for q in queues {
        for f in [
            "name",
            "queued",
            "scheduled",
            "running",
            "succeeded",
            "dead",
            "oldest_waiting_ms",
        ] {
            assert!(q.get(f).is_some(), "stats without {f}: {q}");
        }
    }
    let by_name = |n: &str| queues.iter().find(|q| q["name"] == n).unwrap().clone();
    let e = by_name("embeddings");
    assert_eq!(
        (e["queued"].as_u64(), e["scheduled"].as_u64()),
        (Some(2), Some(0))
    );
    assert!(e["oldest_waiting_ms"].is_u64());
    let a = by_name("agent_tasks");
    assert_eq!(
        (a["queued"].as_u64(), a["scheduled"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(a["oldest_waiting_ms"], Value::Null);
}

async fn worker_protocol_reserve_heartbeat_complete(backend: Backend) {
    let s = TestServer::start(backend).await;
    // Nothing ready: 204 after waiting.
    let res = s
        .post("/v1/queues/embeddings/reserve?wait_ms=50&lease_ms=30000")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(res.headers().contains_key("x-correlation-id"));

    let task = enqueue(
        &s,
        "embeddings",
        json!({"kind": "embed", "payload": {"n": 1}}),
    )
    .await;
    let res = s
        .post("/v1/queues/embeddings/reserve?wait_ms=1000&lease_ms=30000&worker_id=w-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let lease = json(res).await;
    assert_eq!(lease["task"]["id"], task["id"]);
    assert_eq!(lease["task"]["status"], "running");
    assert_eq!(lease["task"]["attempts"], 1);
    assert_eq!(lease["task"]["worker"], "w-1");
    assert!(lease["task"]["started_at"].is_string());
    assert!(lease["lease_expires_at"].is_string());
    let token = lease["lease_token"].as_str().unwrap().to_owned();
    let id = task["id"].as_str().unwrap();

    let res = s
        .post_json(
            &format!("/v1/queues/embeddings/tasks/{id}/heartbeat"),
            &json!({"lease_token": token, "lease_ms": 60000}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let beat = json(res).await;
    assert_eq!(beat["lease_token"], token.as_str());
    assert!(
        beat["lease_expires_at"].as_str().unwrap() >= lease["lease_expires_at"].as_str().unwrap()
    );

    // A stale token (not the current lease): 409 lease_lost, nothing changes.
    let stale = (token.parse::<u64>().unwrap() + 7).to_string();
    let res = s
        .post_json(
            &format!("/v1/queues/embeddings/tasks/{id}/complete"),
            &json!({"lease_token": stale, "result": "nope"}),
        )
        .send()
        .await
        .unwrap();
    expect_error(res, 409, "lease_lost").await;

    let res = s
        .post_json(
            &format!("/v1/queues/embeddings/tasks/{id}/complete"),
            &json!({"lease_token": token, "result": {"vectors": [[0.5]]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let done = json(res).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["result"], json!({"vectors": [[0.5]]}));
    assert!(done["finished_at"].is_string());

    // Completing twice: the lease is gone.
    let res = s
        .post_json(
            &format!("/v1/queues/embeddings/tasks/{id}/complete"),
            &json!({"lease_token": token}),
        )
        .send()
        .await
        .unwrap();
    expect_error(res, 409, "lease_lost").await;
    let res = s
        .post_json(
            &format!("/v1/queues/embeddings/tasks/{id}/heartbeat"),
            &json!({"lease_token": token}),
        )
        .send()
        .await
        .unwrap();
    expect_error(res, 409, "lease_lost").await;
}

async fn worker_protocol_fail_retry_and_dead(backend: Backend) {
    let s = TestServer::start(backend).await;
    let task = enqueue(
        &s,
        "agent_tasks",
        json!({"kind": "echo", "payload": {}, "max_attempts": 3}),
    )
    .await;
    let id = task["id"].as_str().unwrap();
    let reserve = || async {
        let res = s
            .post("/v1/queues/agent_tasks/reserve?wait_ms=1000&lease_ms=30000")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        json(res).await
    };
    let lease = reserve().await;
    // Retry after 0 ms: failed, then ready again.
    let res = s
        .post_json(
            &format!("/v1/queues/agent_tasks/tasks/{id}/fail"),
            &json!({"lease_token": lease["lease_token"], "error": "flaky", "retry_after_ms": 0}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let failed = json(res).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["last_error"], "flaky");
    assert!(failed["scheduled_for"].is_string());

    let lease = reserve().await;
    assert_eq!(lease["task"]["id"], task["id"]);
    assert_eq!(lease["task"]["attempts"], 2);
    // No retry: dead at once, with its error.
    let res = s
        .post_json(
            &format!("/v1/queues/agent_tasks/tasks/{id}/fail"),
            &json!({"lease_token": lease["lease_token"], "error": "poison", "retry": false}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let dead = json(res).await;
    assert_eq!(dead["status"], "dead");
    assert_eq!(dead["last_error"], "poison");
    let stats = json(s.get("/v1/queues").send().await.unwrap()).await;
    assert_eq!(stats["queues"][0]["dead"], 1, "{stats}");
}

async fn a_waiting_reserve_gets_a_task_enqueued_meanwhile(backend: Backend) {
    let s = TestServer::start(backend).await;
    let waiting = {
        let req = s.post("/v1/queues/exports/reserve?wait_ms=20000&lease_ms=30000");
        tokio::spawn(async move { req.send().await })
    };
    let task = enqueue(
        &s,
        "exports",
        json!({"kind": "export", "payload": {"rows": 1}}),
    )
    .await;
    let res = waiting.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    let lease = json(res).await;
    assert_eq!(lease["task"]["id"], task["id"]);
}

on_both_backends!(
    enqueue_get_and_cancel,
    delays_and_unique_keys,
    stats_list_every_queue,
    worker_protocol_reserve_heartbeat_complete,
    worker_protocol_fail_retry_and_dead,
    a_waiting_reserve_gets_a_task_enqueued_meanwhile,
);
