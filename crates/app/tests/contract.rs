//! A black-box client of the HTTP contract (DESIGN.md, "HTTP API (v1) — contract") against
//! the real `spool serve` process, on the memory backend and on a real `redis-server`.
//!
//! It knows nothing of spool's code: it starts the binary, speaks plain HTTP/1.1 over a
//! socket, and checks every row of the table — paths, status codes, JSON shapes, the error
//! body, `X-Correlation-ID` and the rate-limit headers.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::Served;

use serde_json::{json, Value};

/// `spool serve` with `env`, its log drained in the background.
fn start(env: &[(&str, &str)]) -> Served {
    let mut s = support::serve(env);
    s.drain_log();
    s
}

/// One HTTP response: status, lower-cased headers, body.
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

/// A client of the served process.
trait Client {
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response;
    fn get(&self, path: &str) -> Response {
        self.call("GET", path, &[], b"")
    }
    fn send_json(&self, method: &str, path: &str, body: &Value) -> Response {
        self.call(
            method,
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }
}

impl Client for Served {
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut s = TcpStream::connect(&self.addr).expect("connects");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).expect("writes");
        s.write_all(body).expect("writes");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("reads the whole response");
        parse(&raw)
    }
}

fn parse(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete header");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..nl]);
        let size_text = size_text.split(';').next().unwrap_or("0").trim();
        let size = usize::from_str_radix(size_text, 16).expect("a chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[nl + 2..nl + 2 + size]);
        data = &data[nl + 2 + size + 2..];
    }
}

fn assert_error(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

fn assert_rfc3339_or_null(v: &Value, what: &str) {
    match v {
        Value::Null => {}
        Value::String(s) => assert!(
            s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T'),
            "{what}: {s:?} is not RFC 3339"
        ),
        other => panic!("{what}: {other} is neither a timestamp nor null"),
    }
}

fn assert_task(t: &Value) {
    for field in [
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
    ] {
        assert!(t.get(field).is_some(), "task without {field}: {t}");
    }
    for ts in [
        "enqueued_at",
        "scheduled_for",
        "started_at",
        "heartbeat_at",
        "finished_at",
    ] {
        assert_rfc3339_or_null(&t[ts], ts);
    }
}

fn assert_operation(op: &Value) {
    for field in [
        "id",
        "correlation_id",
        "state",
        "percent",
        "message",
        "steps",
        "updated_at",
    ] {
        assert!(op.get(field).is_some(), "operation without {field}: {op}");
    }
    for step in op["steps"].as_array().expect("steps is a list") {
        for field in ["name", "weight", "fraction"] {
            assert!(step.get(field).is_some(), "step without {field}: {step}");
        }
    }
    assert_rfc3339_or_null(&op["updated_at"], "updated_at");
}

/// Every row of the contract table, in order.
fn walk_the_contract(s: &Served, backend: &str) {
    // Health and metrics.
    let r = s.get("/health/live");
    assert_eq!(r.status, 200);
    assert!(!r.header("x-correlation-id").is_empty());
    let r = s.get("/health/ready");
    assert_eq!(r.status, 200, "{}", r.text());
    let ready = r.json();
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(ready["backend"], backend, "{ready}");
    assert!(ready["services"].is_object(), "{ready}");
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/plain"));
    assert!(r.text().contains("# TYPE "), "{}", r.text());

    // Cache.
    let r = s.call(
        "PUT",
        "/v1/projects/acme/cache/greeting?ttl_secs=60",
        &[],
        b"hello",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let r = s.get("/v1/projects/acme/cache/greeting");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello");
    let r = s.call("DELETE", "/v1/projects/acme/cache/greeting", &[], b"");
    assert_eq!(r.status, 204);
    assert_error(&s.get("/v1/projects/acme/cache/greeting"), 404, "not_found");
    s.call("PUT", "/v1/projects/acme/cache/a?ttl_secs=60", &[], b"1");
    let r = s.call("POST", "/v1/projects/acme/cache/invalidate", &[], b"");
    assert_eq!(r.status, 204);
    assert_error(&s.get("/v1/projects/acme/cache/a"), 404, "not_found");
    assert_error(
        &s.call("PUT", "/v1/projects/acme/cache/a?ttl_secs=-1", &[], b"1"),
        400,
        "invalid",
    );

    // Queue: producers.
    let r = s.call(
        "POST",
        "/v1/queues/exports/tasks",
        &[
            ("Content-Type", "application/json"),
            ("X-Correlation-ID", "contract-1"),
        ],
        json!({"kind": "export", "payload": {"rows": 3}, "priority": 5, "max_attempts": 2})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("x-correlation-id"), "contract-1");
    let task = r.json();
    assert_task(&task);
    assert_eq!(task["status"], "queued");
    assert_eq!(task["correlation_id"], "contract-1");
    let id = task["id"].as_str().expect("an id").to_owned();
    let r = s.get(&format!("/v1/queues/exports/tasks/{id}"));
    assert_eq!(r.status, 200);
    assert_task(&r.json());
    let r = s.call(
        "DELETE",
        &format!("/v1/queues/exports/tasks/{id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "cancelled");
    assert_error(
        &s.get("/v1/queues/exports/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        404,
        "not_found",
    );
    let r = s.get("/v1/queues");
    assert_eq!(r.status, 200);
    let stats = r.json();
    let exports = stats["queues"]
        .as_array()
        .expect("queues is a list")
        .iter()
        .find(|q| q["name"] == "exports")
        .unwrap_or_else(|| panic!("no exports queue in {stats}"))
        .clone();
    for field in [
        "queued",
        "scheduled",
        "running",
        "succeeded",
        "dead",
        "oldest_waiting_ms",
    ] {
        assert!(
            exports.get(field).is_some(),
            "stats without {field}: {exports}"
        );
    }

    // Queue: the HTTP worker protocol.
    let r = s.call(
        "POST",
        "/v1/queues/embeddings/reserve?wait_ms=0&lease_ms=30000",
        &[],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let r = s.send_json(
        "POST",
        "/v1/queues/embeddings/tasks",
        &json!({"kind": "embed", "payload": {"texts": ["x"]}, "max_attempts": 1}),
    );
    assert_eq!(r.status, 201);
    let r = s.call(
        "POST",
        "/v1/queues/embeddings/reserve?wait_ms=1000&lease_ms=30000",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let lease = r.json();
    assert_task(&lease["task"]);
    assert_eq!(lease["task"]["status"], "running");
    assert_rfc3339_or_null(&lease["lease_expires_at"], "lease_expires_at");
    let token = lease["lease_token"].as_str().expect("a token").to_owned();
    let id = lease["task"]["id"].as_str().expect("an id").to_owned();
    let path = |op: &str| format!("/v1/queues/embeddings/tasks/{id}/{op}");
    let r = s.send_json("POST", &path("heartbeat"), &json!({"lease_token": token}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.send_json(
        "POST",
        &path("complete"),
        &json!({"lease_token": token, "result": {"dims": 8}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let done = r.json();
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["result"], json!({"dims": 8}));
    assert_error(
        &s.send_json("POST", &path("complete"), &json!({"lease_token": token})),
        409,
        "lease_lost",
    );
    assert_error(
        &s.send_json("POST", &path("heartbeat"), &json!({"lease_token": token})),
        409,
        "lease_lost",
    );
    s.send_json(
        "POST",
        "/v1/queues/embeddings/tasks",
        &json!({"kind": "embed", "payload": {}, "max_attempts": 1}),
    );
    let lease = s
        .call(
            "POST",
            "/v1/queues/embeddings/reserve?wait_ms=1000&lease_ms=30000",
            &[],
            b"",
        )
        .json();
    let token = lease["lease_token"].as_str().expect("a token").to_owned();
    let id = lease["task"]["id"].as_str().expect("an id").to_owned();
    let fail = format!("/v1/queues/embeddings/tasks/{id}/fail");
    let r = s.send_json(
        "POST",
        &fail,
        &json!({"lease_token": token, "error": "boom", "retry": false}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let dead = r.json();
    assert_eq!(dead["status"], "dead");
    assert_eq!(dead["last_error"], "boom");
    assert_error(
        &s.send_json(
            "POST",
            &fail,
            &json!({"lease_token": token, "error": "again"}),
        ),
        409,
        "lease_lost",
    );
    assert_error(
        &s.call(
            "POST",
            "/v1/queues/embeddings/tasks",
            &[("Content-Type", "application/json")],
            b"{not json",
        ),
        400,
        "invalid",
    );

    // Progress.
    let r = s.send_json(
        "POST",
        "/v1/operations",
        &json!({"id": "op-1", "correlation_id": "c-9",
                "steps": [{"name": "download"}, {"name": "parse", "weight": 3}]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let op = r.json();
    assert_operation(&op);
    assert_eq!(op["state"], "running");
    assert_eq!(op["correlation_id"], "c-9");
    let r = s.send_json(
        "POST",
        "/v1/operations/op-1/progress",
        &json!({"step": "download", "fraction": 1.0, "message": "downloaded"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let op = r.json();
    assert_operation(&op);
    assert_eq!(op["percent"], 25.0);
    let r = s.get("/v1/operations/op-1");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["message"], "downloaded");
    assert_error(&s.get("/v1/operations/unknown-op"), 404, "not_found");
    let r = s.send_json(
        "POST",
        "/v1/operations/op-1/progress",
        &json!({"state": "succeeded"}),
    );
    assert_eq!(r.status, 200);
    // A finished operation's stream: its snapshot (in its terminal state), then the stream
    // ends (reading to the end of the response proves it closed).
    let r = s.get("/v1/operations/op-1/events");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/event-stream"));
    let text = r.text();
    assert!(text.contains("event: snapshot"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("id: ")), "{text}");
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let snapshot: Value = serde_json::from_str(data).expect("data is an operation");
    assert_operation(&snapshot);
    assert_eq!(snapshot["state"], "succeeded");
}

#[test]
fn contract_on_the_memory_backend() {
    let s = start(&[]);
    walk_the_contract(&s, "memory");
}

#[test]
fn contract_on_a_real_redis_server() {
    let url = spool_adapter_redis::testing::redis_url();
    let prefix = spool_adapter_redis::testing::unique_prefix();
    let s = start(&[
        ("SPOOL_BACKEND", "redis"),
        ("SPOOL_REDIS_URL", url.as_str()),
        ("SPOOL_REDIS__KEY_PREFIX", prefix.as_str()),
    ]);
    walk_the_contract(&s, "redis");
}

#[test]
fn contract_rate_limits_answer_429_with_every_header() {
    let s = start(&[("SPOOL_RATE_LIMITS", "ip:2/60s")]);
    for _ in 0..2 {
        let r = s.get("/v1/queues");
        assert_eq!(r.status, 200);
        for h in [
            "ratelimit-policy",
            "ratelimit",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert!(r.headers.contains_key(h), "no {h} on an allowed response");
        }
    }
    let r = s.get("/v1/queues");
    assert_error(&r, 429, "rate_limited");
    let retry_after: u64 = r.header("retry-after").parse().expect("whole seconds");
    // The sliding-window counter weighs the previous window: the wait can pass one window
    // (up to two when the requests came late in the current one), never more.
    assert!((1..=120).contains(&retry_after), "{retry_after}");
    assert_eq!(r.header("x-ratelimit-remaining"), "0");
    assert!(!r.header("x-correlation-id").is_empty());
}
