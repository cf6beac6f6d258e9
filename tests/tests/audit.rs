//! The audit trail: one `spool::audit` event per mutating HTTP call, with principal,
//! project, correlation id and outcome — denied calls included — and never the bearer key or
//! a payload.
//!
//! Logs are captured as JSON on the test's own thread (a current-thread runtime under
//! `tracing::subscriber::with_default`), so parallel tests neither pollute nor see them.

#![allow(clippy::unwrap_used)]

use spool_app::http::middleware::sha256_hex;
use spool_tests::{Backend, TestServer, TestSetup};

/// Runs `f` with every `INFO`+ log of this thread captured as JSON lines.
fn captured<F, Fut>(f: F) -> String
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let buffer = spool_tests::CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(buffer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f());
    });
    buffer.text()
}

/// The `fields` of every audit event, in order.
fn audit_events(logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["target"] == spool_app::audit::TARGET)
        .map(|j| j["fields"].clone())
        .collect()
}

fn setup(key_a: &str) -> TestSetup {
    TestSetup::new().toml(&format!(
        "[[http.api_keys]]\nid = \"team-a\"\nsha256 = \"{}\"\nprojects = [\"a\"]\n",
        sha256_hex(key_a)
    ))
}

#[test]
fn every_mutating_call_is_audited_once_with_who_what_and_outcome() {
    let key = format!("key-{:016x}", rand::random::<u64>());
    let secret_value = format!("VALUE-{:016x}", rand::random::<u64>());
    let payload = format!("PAYLOAD-{:016x}", rand::random::<u64>());
    let (k, v, p) = (key.clone(), secret_value.clone(), payload.clone());
    let logs = captured(|| async move {
        let server = TestServer::start_with(Backend::Memory, setup(&k)).await;
        let c = server.client();
        let put = c
            .put(server.url("/v1/projects/a/cache/users:1"))
            .bearer_auth(&k)
            .header("x-correlation-id", "corr-put")
            .body(v.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 204);
        // Reads are not audited.
        let got = c
            .get(server.url("/v1/projects/a/cache/users:1"))
            .bearer_auth(&k)
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        let denied = c
            .put(server.url("/v1/projects/b/cache/users:1"))
            .bearer_auth(&k)
            .header("x-correlation-id", "corr-denied")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(denied.status(), 403);
        let unknown = c
            .delete(server.url("/v1/projects/a/cache/users:1"))
            .bearer_auth("not-a-key")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 401);
        let enq = c
            .post(server.url("/v1/queues/exports/tasks"))
            .bearer_auth(&k)
            .header("x-correlation-id", "corr-enq")
            .json(&serde_json::json!({"kind": "export", "payload": {"p": p}}))
            .send()
            .await
            .unwrap();
        assert_eq!(enq.status(), 201);
        let task: serde_json::Value = enq.json().await.unwrap();
        let id = task["id"].as_str().unwrap().to_owned();
        let lease = c
            .post(server.url("/v1/queues/exports/reserve"))
            .bearer_auth(&k)
            .send()
            .await
            .unwrap();
        assert_eq!(lease.status(), 200);
        let lease: serde_json::Value = lease.json().await.unwrap();
        let done = c
            .post(server.url(&format!("/v1/queues/exports/tasks/{id}/complete")))
            .bearer_auth(&k)
            .json(&serde_json::json!({"lease_token": lease["lease_token"], "result": {"r": 1}}))
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 200);
        let stale = c
            .post(server.url(&format!("/v1/queues/exports/tasks/{id}/fail")))
            .bearer_auth(&k)
            .json(&serde_json::json!({"lease_token": lease["lease_token"], "error": "late"}))
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 409);
        let inval = c
            .post(server.url("/v1/projects/a/cache/invalidate"))
            .bearer_auth(&k)
            .send()
            .await
            .unwrap();
        assert_eq!(inval.status(), 204);
        server.stop().await;
    });

    let events = audit_events(&logs);
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("?").to_owned(),
                e["outcome"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("cache.set", "ok"),
        ("cache.set", "forbidden"),
        ("cache.delete", "unauthorized"),
        ("task.enqueue", "ok"),
        ("task.complete", "ok"),
        ("task.fail", "lease_lost"),
        ("cache.invalidate", "ok"),
    ]
    .iter()
    .map(|(a, o)| ((*a).to_owned(), (*o).to_owned()))
    .collect();
    assert_eq!(summary, expected, "{logs}");

    let put = &events[0];
    assert_eq!(put["principal"], "team-a");
    assert_eq!(put["project"], "a");
    assert_eq!(put["cache_key"], "users:1");
    assert_eq!(put["correlation_id"], "corr-put");
    assert_eq!(put["status"], 204);
    let denied = &events[1];
    assert_eq!(denied["principal"], "team-a");
    assert_eq!(denied["project"], "b");
    assert_eq!(denied["correlation_id"], "corr-denied");
    assert_eq!(denied["status"], 403);
    assert_eq!(events[2]["principal"], spool_app::audit::UNAUTHENTICATED);
    let enq = &events[3];
    assert_eq!(enq["queue"], "exports");
    assert_eq!(enq["correlation_id"], "corr-enq");
    assert!(enq["task"].as_str().is_some_and(|t| t.len() == 26), "{enq}");
    assert_eq!(events[4]["task"], enq["task"]);

    for s in [&key, &secret_value, &payload] {
        assert!(
            !logs.contains(s.as_str()),
            "{s} leaked into the logs:\n{logs}"
        );
    }
}

#[test]
fn without_api_keys_the_principal_is_anonymous() {
    let logs = captured(|| async {
        let server = TestServer::start(Backend::Memory).await;
        let res = server
            .post_json(
                "/v1/operations",
                &serde_json::json!({"steps": [{"name": "a"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let op: serde_json::Value = res.json().await.unwrap();
        let id = op["id"].as_str().unwrap().to_owned();
        let res = server
            .post_json(
                &format!("/v1/operations/{id}/progress"),
                &serde_json::json!({"step": "a", "fraction": 0.5}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let bad = server
            .post_json(
                "/v1/queues/exports/tasks",
                &serde_json::json!({"kind": "x"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        server.stop().await;
    });
    let events = audit_events(&logs);
    assert_eq!(events.len(), 3, "{logs}");
    assert!(
        events.iter().all(|e| e["principal"] == "anonymous"),
        "{logs}"
    );
    assert_eq!(events[0]["action"], "progress.start");
    assert_eq!(events[1]["action"], "progress.update");
    assert_eq!(events[0]["operation"], events[1]["operation"]);
    assert!(events[0]["operation"].as_str().is_some(), "{logs}");
    assert_eq!(events[2]["action"], "task.enqueue");
    assert_eq!(events[2]["outcome"], "invalid");
}

#[test]
fn the_in_process_worker_audits_its_completions_and_failures_as_itself() {
    use spool_app::services::EnqueueOptions;
    use spool_app::worker::{HandlerError, TaskContext};
    use spool_app::{config::Config, Spool};
    use spool_domain::names::{CorrelationId, QueueName, TaskKind};
    use tokio::sync::mpsc;

    let payload = format!("PAYLOAD-{:016x}", rand::random::<u64>());
    let p = payload.clone();
    // (worker id, task ids), filled in by the run.
    let mut seen = (String::new(), Vec::new());
    let logs = captured(|| async {
        let spool = Spool::from_config(&Config::default()).await.unwrap();
        let queue = QueueName::agent_tasks();
        let (good, bad) = (
            TaskKind::parse("audit.good").unwrap(),
            TaskKind::parse("audit.bad").unwrap(),
        );
        let mut ids = Vec::new();
        for kind in [&good, &bad] {
            let t = spool
                .queue()
                .enqueue(
                    &queue,
                    kind,
                    &serde_json::json!({ "secret": p }),
                    EnqueueOptions::new()
                        .correlation_id(CorrelationId::parse("audit-worker-1").unwrap()),
                )
                .await
                .unwrap();
            ids.push(t.task().id.to_string());
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let (tx_good, tx_bad) = (tx.clone(), tx);
        let runtime = spool
            .worker()
            .register(
                queue.clone(),
                good,
                move |_: TaskContext, _: serde_json::Value| {
                    let tx = tx_good.clone();
                    async move {
                        let _ = tx.send(());
                        Ok(None)
                    }
                },
            )
            .register(queue, bad, move |_: TaskContext, _: serde_json::Value| {
                let tx = tx_bad.clone();
                async move {
                    let _ = tx.send(());
                    Err(HandlerError::permanent("refused on purpose"))
                }
            })
            .build();
        let worker_id = runtime.worker_id().as_str().to_owned();
        // Both handlers ran; the drain then lets both attempts report before it returns.
        runtime
            .run_until(async move {
                rx.recv().await;
                rx.recv().await;
            })
            .await;
        seen = (worker_id, ids);
    });
    let (worker_id, ids) = seen;
    assert!(!logs.contains(&payload), "a payload reached the logs");
    let events = audit_events(&logs);
    let of = |id: &str| {
        events
            .iter()
            .find(|e| e["task"] == id)
            .unwrap_or_else(|| panic!("no audit event for task {id}: {events:?}"))
            .clone()
    };
    let done = of(&ids[0]);
    assert_eq!(done["action"], "task.complete", "{done}");
    assert_eq!(done["principal"], worker_id.as_str(), "{done}");
    assert_eq!(done["queue"], "agent_tasks", "{done}");
    assert_eq!(done["outcome"], "ok", "{done}");
    let failed = of(&ids[1]);
    assert_eq!(failed["action"], "task.fail", "{failed}");
    assert_eq!(failed["principal"], worker_id.as_str(), "{failed}");
    assert_eq!(failed["correlation_id"], "audit-worker-1", "{failed}");
    assert_eq!(done["correlation_id"], "audit-worker-1", "{done}");
}
