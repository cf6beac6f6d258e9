//! Auth, rate limits, client IPs and correlation IDs.

use serde_json::json;
use spool_app::http::middleware::sha256_hex;
use spool_tests::{on_both_backends, Backend, TestServer, TestSetup};

use crate::{expect_error, json};

fn keys_toml() -> String {
    format!(
        "[[http.api_keys]]\nid = \"team-a\"\nsha256 = \"{}\"\nprojects = [\"a\"]\n\n\
         [[http.api_keys]]\nid = \"team-b\"\nsha256 = \"{}\"\nprojects = [\"b\", \"shared\"]\n",
        sha256_hex("key-a"),
        // Upper-case hex is accepted too.
        sha256_hex("key-b").to_uppercase(),
    )
}

async fn the_auth_matrix(backend: Backend) {
    let s = TestServer::start_with(backend, TestSetup::new().toml(&keys_toml())).await;
    let put = |auth: Option<&'static str>, project: &'static str| {
        let mut req = s.put(&format!("/v1/projects/{project}/cache/k")).body("v");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    // 401 without a key, with a wrong key, or with another scheme.
    let res = put(None, "a").await.unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    expect_error(res, 401, "unauthorized").await;
    expect_error(
        put(Some("Bearer key-c"), "a").await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        put(Some("Basic a2V5LWE="), "a").await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // 403 on another project's resources; nothing was written.
    expect_error(
        put(Some("Bearer key-a"), "b").await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    let res = s
        .get("/v1/projects/b/cache/k")
        .bearer_auth("key-b")
        .send()
        .await
        .unwrap();
    expect_error(res, 404, "not_found").await;
    // 2xx on its own projects.
    assert_eq!(put(Some("Bearer key-a"), "a").await.unwrap().status(), 204);
    assert_eq!(
        put(Some("Bearer key-b"), "shared").await.unwrap().status(),
        204
    );
    let res = s
        .get("/v1/projects/a/cache/k")
        .bearer_auth("key-a")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = s
        .get("/v1/projects/a/cache/k")
        .bearer_auth("key-b")
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "forbidden").await;

    // Non-project endpoints need a valid key, any project.
    expect_error(
        s.get("/v1/queues").send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let res = s
        .get("/v1/queues")
        .bearer_auth("key-b")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = s
        .post_json("/v1/operations", &json!({"steps": [{"name": "x"}]}))
        .send()
        .await
        .unwrap();
    expect_error(res, 401, "unauthorized").await;
    // Health and metrics are open.
    assert_eq!(s.get("/health/live").send().await.unwrap().status(), 200);
    assert_eq!(s.get("/metrics").send().await.unwrap().status(), 200);
}

const IP_LIMIT: &str =
    "[[rate_limits]]\nname = \"per_ip\"\nscope = \"ip\"\nlimit = 3\nwindow = \"60s\"\n";

async fn rate_limit_headers_on_allowed_and_refused_responses(backend: Backend) {
    let s = TestServer::start_with(backend, TestSetup::new().toml(IP_LIMIT)).await;
    for remaining in [2u64, 1, 0] {
        let res = s.get("/v1/queues").send().await.unwrap();
        assert_eq!(res.status(), 200);
        let h = res.headers();
        assert_eq!(h["ratelimit-policy"], "\"per_ip\";q=3;w=60");
        let state = h["ratelimit"].to_str().unwrap();
        assert!(
            state.starts_with(&format!("\"per_ip\";r={remaining};t=")),
            "{state}"
        );
        let t: u64 = state.rsplit("t=").next().unwrap().parse().unwrap();
        // A sliding window drains over up to two windows.
        assert!((1..=120).contains(&t), "{state}");
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], remaining.to_string().as_str());
        let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!((1..=120).contains(&reset));
        assert!(h.get("retry-after").is_none());
    }
    let res = s
        .get("/v1/queues")
        .header("x-correlation-id", "limited-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let h = res.headers().clone();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=120).contains(&retry), "Retry-After {retry}");
    assert_eq!(h["ratelimit-policy"], "\"per_ip\";q=3;w=60");
    assert!(h["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"per_ip\";r=0;t="));
    assert_eq!(h["x-ratelimit-limit"], "3");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(h["x-correlation-id"], "limited-1");
    let body = expect_error(res, 429, "rate_limited").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("per_ip"));

    // A refused request did not run: no queue was created by a refused enqueue.
    let res = s
        .post_json(
            "/v1/queues/refused/tasks",
            &json!({"kind": "k", "payload": 1}),
        )
        .send()
        .await
        .unwrap();
    expect_error(res, 429, "rate_limited").await;
    let stats = s.spool().queue().stats(&[]).await.unwrap();
    assert!(stats.iter().all(|q| q.name != "refused"), "{stats:?}");

    // Health and metrics are not limited.
    assert_eq!(s.get("/health/ready").send().await.unwrap().status(), 200);
    assert_eq!(s.get("/metrics").send().await.unwrap().status(), 200);
}

async fn spoofed_forwarded_for_from_untrusted_peers_is_ignored(backend: Backend) {
    let toml = IP_LIMIT.replace("limit = 3", "limit = 2");
    let s = TestServer::start_with(backend, TestSetup::new().toml(&toml)).await;
    for (i, ip) in ["1.1.1.1", "2.2.2.2", "3.3.3.3"].into_iter().enumerate() {
        let res = s
            .get("/v1/queues")
            .header("x-forwarded-for", ip)
            .send()
            .await
            .unwrap();
        // Every request counts against 127.0.0.1: the third is refused.
        let expected = if i < 2 { 200 } else { 429 };
        assert_eq!(res.status().as_u16(), expected, "request {i} from {ip}");
    }
}

async fn trusted_proxies_give_the_rightmost_untrusted_address(backend: Backend) {
    let toml = format!(
        "[http]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n\n{}",
        IP_LIMIT.replace("limit = 3", "limit = 1")
    );
    let s = TestServer::start_with(backend, TestSetup::new().toml(&toml)).await;
    let from = |xff: &'static str| s.get("/v1/queues").header("x-forwarded-for", xff).send();
    // Client 203.0.113.7 behind proxy 10.1.2.3; the leftmost entry is whatever the client
    // claims.
    assert_eq!(
        from("6.6.6.6, 203.0.113.7, 10.1.2.3")
            .await
            .unwrap()
            .status(),
        200
    );
    // Same client, another spoofed leftmost entry: same key, refused.
    assert_eq!(
        from("9.9.9.9, 203.0.113.7, 10.1.2.3")
            .await
            .unwrap()
            .status(),
        429
    );
    assert_eq!(from("203.0.113.7").await.unwrap().status(), 429);
    // Another client: its own key.
    assert_eq!(from("203.0.113.8, 10.1.2.3").await.unwrap().status(), 200);
}

async fn user_and_project_limits(backend: Backend) {
    // Without API keys, X-User-ID names the user.
    let toml = "[[rate_limits]]\nname = \"per_user\"\nscope = \"user\"\nlimit = 1\nwindow = \"60s\"\n\n\
                [[rate_limits]]\nname = \"per_project\"\nscope = \"project\"\nlimit = 1\nwindow = \"60s\"\n";
    let s = TestServer::start_with(backend, TestSetup::new().toml(toml)).await;
    let res = s
        .get("/v1/queues")
        .header("x-user-id", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["ratelimit-policy"], "\"per_user\";q=1;w=60");
    let res = s
        .get("/v1/queues")
        .header("x-user-id", "alice")
        .send()
        .await
        .unwrap();
    expect_error(res, 429, "rate_limited").await;
    let res = s
        .get("/v1/queues")
        .header("x-user-id", "bob")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Anonymous requests carry no user: only the project policy applies to project paths.
    let res = s.get("/v1/projects/p1/cache/k").send().await.unwrap();
    assert_eq!(
        res.headers()["ratelimit-policy"],
        "\"per_project\";q=1;w=60"
    );
    expect_error(res, 404, "not_found").await;
    let res = s.get("/v1/projects/p1/cache/k").send().await.unwrap();
    expect_error(res, 429, "rate_limited").await;
    let res = s.get("/v1/projects/p2/cache/k").send().await.unwrap();
    expect_error(res, 404, "not_found").await;

    // With API keys the user is the key: X-User-ID cannot buy a fresh quota.
    let toml = format!(
        "{}\n[[rate_limits]]\nname = \"per_user\"\nscope = \"user\"\nlimit = 1\nwindow = \"60s\"\n",
        keys_toml()
    );
    let s = TestServer::start_with(backend, TestSetup::new().toml(&toml)).await;
    let res = s
        .get("/v1/queues")
        .bearer_auth("key-a")
        .header("x-user-id", "u1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = s
        .get("/v1/queues")
        .bearer_auth("key-a")
        .header("x-user-id", "u2")
        .send()
        .await
        .unwrap();
    expect_error(res, 429, "rate_limited").await;
    let res = s
        .get("/v1/queues")
        .bearer_auth("key-b")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn correlation_ids_are_echoed_generated_and_carried(backend: Backend) {
    let s = TestServer::start(backend).await;
    let res = s
        .get("/health/live")
        .header("x-correlation-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-correlation-id"], "req-123");
    let a = s.get("/health/live").send().await.unwrap();
    let b = s.get("/health/live").send().await.unwrap();
    let (a, b) = (
        a.headers()["x-correlation-id"].to_str().unwrap().to_owned(),
        b.headers()["x-correlation-id"].to_str().unwrap().to_owned(),
    );
    assert!(!a.is_empty() && a != b, "{a} {b}");
    // An unusable header is replaced, not echoed.
    let res = s
        .get("/health/live")
        .header("x-correlation-id", "has spaces {and braces}")
        .send()
        .await
        .unwrap();
    let got = res.headers()["x-correlation-id"].to_str().unwrap();
    assert!(!got.contains(' ') && !got.is_empty());

    // Errors carry it too.
    let res = s
        .get("/v1/operations/none-such")
        .header("x-correlation-id", "req-404")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-correlation-id"], "req-404");
    expect_error(res, 404, "not_found").await;
    let res = s
        .get("/no/such/route")
        .header("x-correlation-id", "req-route")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-correlation-id"], "req-route");
    expect_error(res, 404, "not_found").await;

    // Into the enqueued task, and into a worker's lease.
    let res = s
        .post_json(
            "/v1/queues/agent_tasks/tasks",
            &json!({"kind": "echo", "payload": {}}),
        )
        .header("x-correlation-id", "req-task-9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let task = json(res).await;
    assert_eq!(task["correlation_id"], "req-task-9");
    let lease = json(
        s.post("/v1/queues/agent_tasks/reserve?wait_ms=1000")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(lease["task"]["correlation_id"], "req-task-9");
}

on_both_backends!(
    the_auth_matrix,
    rate_limit_headers_on_allowed_and_refused_responses,
    spoofed_forwarded_for_from_untrusted_peers_is_ignored,
    trusted_proxies_give_the_rightmost_untrusted_address,
    user_and_project_limits,
    correlation_ids_are_echoed_generated_and_carried,
);
