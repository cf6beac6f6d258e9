//! `GET /v1/queues/{queue}/tasks?status=…&limit=…` and `POST …/tasks/{id}/retry`: the
//! listings and the action behind the dashboard.

use serde_json::{json, Value};
use spool_tests::{on_both_backends, Backend, TestServer, TestSetup};

use crate::{expect_error, json};

async fn listing(s: &TestServer, queue: &str, query: &str) -> Value {
    let res = s
        .get(&format!("/v1/queues/{queue}/tasks?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{query}: {:?}", res.text().await);
    json(res).await
}

fn ids(list: &Value) -> Vec<String> {
    list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn list_dead_then_retry(backend: Backend) {
    let s = TestServer::start(backend).await;
    let q = "lists";
    let a = s
        .enqueue(None, q, &json!({"kind": "k", "payload": 1}))
        .await;
    let b = s
        .enqueue(None, q, &json!({"kind": "k", "payload": 2, "priority": 9}))
        .await;
    let waiting = s
        .enqueue(
            None,
            q,
            &json!({"kind": "k", "payload": 3, "delay_ms": 60000}),
        )
        .await;

    let queued = listing(&s, q, "status=queued").await;
    assert_eq!(queued["queue"], q);
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["limit"], 50, "the default limit");
    assert_eq!(
        ids(&queued),
        [&b["id"], &a["id"]].map(|v| v.as_str().unwrap().to_owned())
    );
    assert_eq!(
        ids(&listing(&s, q, "status=scheduled").await),
        [waiting["id"].as_str().unwrap()]
    );

    let dead = s.kill_next(q, "poison payload").await;
    assert_eq!(dead["id"], b["id"]);
    let list = listing(&s, q, "status=dead&limit=10").await;
    assert_eq!(list["limit"], 10);
    let tasks = list["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], b["id"]);
    assert_eq!(tasks[0]["last_error"], "poison payload");
    assert_eq!(tasks[0]["attempts"], 1);
    assert!(tasks[0]["finished_at"].is_string());
    assert_eq!(ids(&listing(&s, q, "status=finished").await), ids(&list));

    let path = format!("/v1/queues/{q}/tasks/{}/retry", b["id"].as_str().unwrap());
    let res = s.post(&path).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let back = json(res).await;
    assert_eq!(back["status"], "queued");
    assert_eq!(back["attempts"], 0);
    assert_eq!(back["finished_at"], Value::Null);
    assert!(ids(&listing(&s, q, "status=dead").await).is_empty());
    assert!(
        ids(&listing(&s, q, "status=queued").await).contains(&b["id"].as_str().unwrap().to_owned())
    );

    // Retrying a live task conflicts; an unknown one is 404.
    expect_error(s.post(&path).send().await.unwrap(), 409, "conflict").await;
    let unknown = format!("/v1/queues/{q}/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV/retry");
    expect_error(s.post(&unknown).send().await.unwrap(), 404, "not_found").await;
}

async fn bad_listing_queries_are_400(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.enqueue(None, "lists", &json!({"kind": "k", "payload": 1}))
        .await;
    for query in [
        "",
        "status=bogus",
        "status=queued&limit=0",
        "status=queued&limit=201",
        "status=queued&limit=-1",
        "status=queued&limit=ten",
        "status=queued&colour=red",
    ] {
        let res = s
            .get(&format!("/v1/queues/lists/tasks?{query}"))
            .send()
            .await
            .unwrap();
        let body = expect_error(res, 400, "invalid").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty(), "{query}: {body}");
    }
    let res = s
        .get("/v1/queues/bad%20name/tasks?status=queued")
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "invalid").await;
    let limit = listing(&s, "lists", "status=queued&limit=200").await;
    assert_eq!(ids(&limit).len(), 1);
    assert!(ids(&listing(&s, "never-used", "status=dead").await).is_empty());
}

async fn listings_need_a_key_when_keys_are_configured(backend: Backend) {
    let digest = spool_app::http::middleware::sha256_hex("list-secret");
    let setup = TestSetup::new().toml(&format!(
        "[[http.api_keys]]\nid = \"lister\"\nsha256 = \"{digest}\"\nprojects = [\"acme\"]\n"
    ));
    let s = TestServer::start_with(backend, setup).await;
    let res = s
        .get("/v1/queues/q/tasks?status=queued")
        .send()
        .await
        .unwrap();
    expect_error(res, 401, "unauthorized").await;
    let res = s
        .post("/v1/queues/q/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV/retry")
        .send()
        .await
        .unwrap();
    expect_error(res, 401, "unauthorized").await;
    let res = s
        .get("/v1/queues/q/tasks?status=queued")
        .bearer_auth("list-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = s
        .get("/v1/dashboard")
        .bearer_auth("list-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let overview = json(res).await;
    assert_eq!(overview["session"]["key_id"], "lister");
    assert_eq!(overview["session"]["projects"], json!(["acme"]));
}

on_both_backends!(
    list_dead_then_retry,
    bad_listing_queries_are_400,
    listings_need_a_key_when_keys_are_configured,
);
