//! Bad input gets the right 4xx with the error body, and changes nothing.

use reqwest::Method;
use serde_json::json;
use spool_tests::{on_both_backends, Backend, TestServer, TestSetup};

use crate::{expect_error, json};

/// A request that must be refused.
struct Case {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(method: Method, path: &str, status: u16, code: &'static str) -> Case {
    Case {
        method,
        path: path.to_owned(),
        content_type: None,
        body: Vec::new(),
        status,
        code,
    }
}

fn with_json(mut c: Case, body: &str) -> Case {
    c.content_type = Some("application/json");
    c.body = body.as_bytes().to_vec();
    c
}

const VALID_TASK: &str = r#"{"kind": "embed", "payload": {}}"#;
const UNKNOWN_ULID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

fn cases() -> Vec<Case> {
    use Method as M;
    let long_project = "p".repeat(65);
    let long_queue = "q".repeat(65);
    let long_key = "k".repeat(257);
    let long_op = "o".repeat(129);
    let mut v = vec![
        // Invalid names: glob characters, braces, case, over-long.
        with_json(
            case(M::POST, "/v1/queues/a*b/tasks", 400, "invalid"),
            VALID_TASK,
        ),
        with_json(
            case(M::POST, "/v1/queues/a%3Fb/tasks", 400, "invalid"),
            VALID_TASK,
        ),
        with_json(
            case(M::POST, "/v1/queues/a%5Bb%5D/tasks", 400, "invalid"),
            VALID_TASK,
        ),
        with_json(
            case(M::POST, "/v1/queues/%7Bq%7D/tasks", 400, "invalid"),
            VALID_TASK,
        ),
        with_json(
            case(M::POST, "/v1/queues/Embeddings/tasks", 400, "invalid"),
            VALID_TASK,
        ),
        with_json(
            case(
                M::POST,
                &format!("/v1/queues/{long_queue}/tasks"),
                400,
                "invalid",
            ),
            VALID_TASK,
        ),
        case(M::PUT, "/v1/projects/a*b/cache/k", 400, "invalid"),
        case(M::PUT, "/v1/projects/%7Bslot%7D/cache/k", 400, "invalid"),
        case(
            M::PUT,
            &format!("/v1/projects/{long_project}/cache/k"),
            400,
            "invalid",
        ),
        case(M::PUT, "/v1/projects/acme/cache/a*", 400, "invalid"),
        case(M::PUT, "/v1/projects/acme/cache/%7Bx%7D", 400, "invalid"),
        case(M::PUT, "/v1/projects/acme/cache/a%20b", 400, "invalid"),
        case(
            M::PUT,
            &format!("/v1/projects/acme/cache/{long_key}"),
            400,
            "invalid",
        ),
        case(M::POST, "/v1/projects/a*/cache/invalidate", 400, "invalid"),
        case(M::GET, &format!("/v1/operations/{long_op}"), 400, "invalid"),
        case(M::GET, "/v1/operations/a*b", 400, "invalid"),
        case(M::POST, "/v1/queues/q%2Aq/reserve", 400, "invalid"),
        // TTLs.
        case(
            M::PUT,
            "/v1/projects/acme/cache/k?ttl_secs=-5",
            400,
            "invalid",
        ),
        case(
            M::PUT,
            "/v1/projects/acme/cache/k?ttl_secs=0",
            400,
            "invalid",
        ),
        case(
            M::PUT,
            "/v1/projects/acme/cache/k?ttl_secs=soon",
            400,
            "invalid",
        ),
        case(
            M::PUT,
            "/v1/projects/acme/cache/k?ttl_secs=99999999999",
            400,
            "invalid",
        ),
        // Malformed JSON, wrong fields, wrong content type.
        with_json(
            case(M::POST, "/v1/queues/embeddings/tasks", 400, "invalid"),
            r#"{"kind": "#,
        ),
        with_json(
            case(M::POST, "/v1/queues/embeddings/tasks", 400, "invalid"),
            r#"{"kind": 5, "payload": 1}"#,
        ),
        with_json(
            case(M::POST, "/v1/queues/embeddings/tasks", 400, "invalid"),
            r#"{"payload": 1}"#,
        ),
        with_json(
            case(M::POST, "/v1/queues/embeddings/tasks", 400, "invalid"),
            r#"{"kind": "k", "payload": 1, "colour": "red"}"#,
        ),
        with_json(
            case(M::POST, "/v1/queues/embeddings/tasks", 400, "invalid"),
            r#"{"kind": "a b", "payload": 1}"#,
        ),
        with_json(
            case(M::POST, "/v1/queues/embeddings/tasks", 400, "invalid"),
            r#"{"kind": "k", "payload": 1, "delay_ms": -5}"#,
        ),
        with_json(
            case(M::POST, "/v1/queues/embeddings/tasks", 400, "invalid"),
            r#"{"kind": "k", "payload": 1, "priority": 500}"#,
        ),
        with_json(
            case(M::POST, "/v1/queues/embeddings/tasks", 400, "invalid"),
            r#"{"kind": "k", "payload": 1, "max_attempts": 0}"#,
        ),
        with_json(
            case(M::POST, "/v1/queues/embeddings/tasks", 400, "invalid"),
            r#"{"kind": "k", "payload": 1, "unique_key": "{x}"}"#,
        ),
        with_json(
            case(M::POST, "/v1/operations", 400, "invalid"),
            r#"{"steps": []}"#,
        ),
        with_json(
            case(M::POST, "/v1/operations", 400, "invalid"),
            r#"{"steps": [{"name": "a"}, {"name": "a"}]}"#,
        ),
        with_json(
            case(M::POST, "/v1/operations", 400, "invalid"),
            r#"{"steps": [{"name": "a", "weight": 0}]}"#,
        ),
        with_json(
            case(M::POST, "/v1/operations", 400, "invalid"),
            r#"{"id": "x*", "steps": [{"name": "a"}]}"#,
        ),
        with_json(case(M::POST, "/v1/operations", 400, "invalid"), r#"[1, 2"#),
        // Oversized bodies (the test server accepts 1 KiB).
        case(
            M::PUT,
            "/v1/projects/acme/cache/big",
            413,
            "payload_too_large",
        ),
        with_json(
            case(
                M::POST,
                "/v1/queues/embeddings/tasks",
                413,
                "payload_too_large",
            ),
            &format!(r#"{{"kind": "k", "payload": "{}"}}"#, "x".repeat(2048)),
        ),
        // Unknown and malformed ids.
        case(
            M::GET,
            &format!("/v1/queues/embeddings/tasks/{UNKNOWN_ULID}"),
            404,
            "not_found",
        ),
        case(
            M::DELETE,
            &format!("/v1/queues/embeddings/tasks/{UNKNOWN_ULID}"),
            404,
            "not_found",
        ),
        case(
            M::GET,
            "/v1/queues/embeddings/tasks/not-a-ulid",
            400,
            "invalid",
        ),
        with_json(
            case(
                M::POST,
                &format!("/v1/queues/embeddings/tasks/{UNKNOWN_ULID}/complete"),
                404,
                "not_found",
            ),
            r#"{"lease_token": "1"}"#,
        ),
        with_json(
            case(
                M::POST,
                &format!("/v1/queues/embeddings/tasks/{UNKNOWN_ULID}/heartbeat"),
                404,
                "not_found",
            ),
            r#"{"lease_token": "1"}"#,
        ),
        with_json(
            case(
                M::POST,
                &format!("/v1/queues/embeddings/tasks/{UNKNOWN_ULID}/fail"),
                400,
                "invalid",
            ),
            r#"{"lease_token": "one", "error": "x"}"#,
        ),
        case(M::GET, "/v1/operations/unknown-op", 404, "not_found"),
        with_json(
            case(
                M::POST,
                "/v1/operations/unknown-op/progress",
                404,
                "not_found",
            ),
            r#"{"fraction": 0.5, "step": 0}"#,
        ),
        case(
            M::GET,
            "/v1/projects/acme/cache/never-set",
            404,
            "not_found",
        ),
        // Reserve bounds.
        case(
            M::POST,
            "/v1/queues/embeddings/reserve?lease_ms=0",
            400,
            "invalid",
        ),
        case(
            M::POST,
            "/v1/queues/embeddings/reserve?wait_ms=999999",
            400,
            "invalid",
        ),
        case(
            M::POST,
            "/v1/queues/embeddings/reserve?wait_ms=-1",
            400,
            "invalid",
        ),
        // Routing.
        case(M::GET, "/v1/nope", 404, "not_found"),
        case(M::PATCH, "/v1/queues", 405, "method_not_allowed"),
    ];
    // JSON endpoints need a JSON content type.
    let mut text = with_json(
        case(
            M::POST,
            "/v1/queues/embeddings/tasks",
            415,
            "unsupported_media_type",
        ),
        VALID_TASK,
    );
    text.content_type = Some("text/plain");
    v.push(text);
    let mut none = with_json(
        case(M::POST, "/v1/operations", 415, "unsupported_media_type"),
        r#"{"steps": [{"name": "a"}]}"#,
    );
    none.content_type = None;
    v.push(none);
    v
}

async fn bad_input_gets_a_clear_4xx_and_changes_nothing(backend: Backend) {
    let s = TestServer::start_with(
        backend,
        TestSetup::new().toml("[http]\nbody_limit_bytes = 1024\n"),
    )
    .await;
    for c in cases() {
        let mut req = s.client().request(c.method.clone(), s.url(&c.path));
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        let body = if c.status == 413 && c.body.is_empty() {
            vec![b'x'; 4096]
        } else {
            c.body.clone()
        };
        let res = req.body(body).send().await.unwrap();
        let what = format!("{} {}", c.method, c.path);
        assert_eq!(res.status().as_u16(), c.status, "{what}");
        expect_error(res, c.status, c.code).await;
    }

    // Nothing was created anywhere.
    let stats = json(s.get("/v1/queues").send().await.unwrap()).await;
    assert_eq!(stats, json!({"queues": []}), "no queue received a task");
    for key in ["k", "big", "a*", "invalidate"] {
        let res = s
            .get(&format!("/v1/projects/acme/cache/{key}"))
            .send()
            .await
            .unwrap();
        assert!(
            matches!(res.status().as_u16(), 404 | 400),
            "cache key {key}: {}",
            res.status()
        );
    }
    let ops = s
        .spool()
        .progress()
        .get(&spool_domain::names::OperationId::parse("x").unwrap())
        .await
        .unwrap();
    assert!(ops.is_none());
}

async fn a_bad_request_leaves_existing_state_alone(backend: Backend) {
    let s = TestServer::start(backend).await;
    let res = s
        .put("/v1/projects/acme/cache/k?ttl_secs=60")
        .body("original")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = s
        .put("/v1/projects/acme/cache/k?ttl_secs=-1")
        .body("replacement")
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "invalid").await;
    let res = s.get("/v1/projects/acme/cache/k").send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "original");

    let res = s
        .post_json(
            "/v1/operations",
            &json!({"id": "keep", "steps": [{"name": "a"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = s
        .post_json(
            "/v1/operations/keep/progress",
            &json!({"step": 0, "fraction": 7.0}),
        )
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "invalid").await;
    let res = s
        .post_json("/v1/operations/keep/progress", &json!({"step": "nope"}))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(res.status().as_u16(), 400 | 404),
        "{}",
        res.status()
    );
    let op = json(s.get("/v1/operations/keep").send().await.unwrap()).await;
    assert_eq!(op["percent"], 0.0);
    assert_eq!(op["state"], "running");
}

on_both_backends!(
    bad_input_gets_a_clear_4xx_and_changes_nothing,
    a_bad_request_leaves_existing_state_alone,
);
