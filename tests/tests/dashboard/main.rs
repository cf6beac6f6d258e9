//! The web dashboard (`GET /`) in a real headless Chromium, driven through chromedriver
//! (see `browser.rs`), against an in-process spool server on 127.0.0.1.
//!
//! Every wait is a bounded wait for a DOM condition (fantoccini's wait API); nothing sleeps
//! for a fixed time. The page marks what it shows with `data-*` attributes (`data-queue`,
//! `data-col` + `data-value`, `data-listing`, `data-task` + `data-status`, `data-live`), which
//! the tests select on.
//!
//! Set `SPOOL_DASHBOARD_SCREENSHOT=<path>` to save the screenshot that
//! `the_page_shows_a_queue_the_test_just_filled` takes (README's docs/dashboard.png is made
//! that way).

#![allow(clippy::unwrap_used)]

mod browser;

use serde_json::{json, Value};
use spool_app::http::middleware::sha256_hex;
use spool_tests::{Backend, TestServer, TestSetup};

use browser::Browser;

async fn json_of(res: reqwest::Response) -> Value {
    let status = res.status();
    let text = res.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
}

async fn task_status(s: &TestServer, queue: &str, id: &str) -> Value {
    json_of(
        s.get(&format!("/v1/queues/{queue}/tasks/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn progress(s: &TestServer, key: Option<&str>, op: &str, body: Value) {
    let mut req = s.post_json(&format!("/v1/operations/{op}/progress"), &body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
}

async fn start_operation(s: &TestServer, key: Option<&str>, op: &str) {
    let mut req = s.post_json(
        "/v1/operations",
        &json!({"id": op, "steps": [{"name": "download"}, {"name": "parse", "weight": 3}]}),
    );
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_queue_the_test_just_filled() {
    let setup = TestSetup::new().toml(
        "[[rate_limits]]\nname = \"per_ip\"\nscope = \"ip\"\nlimit = 100000\nwindow = \"60s\"\n",
    );
    let s = TestServer::start_with(Backend::Memory, setup).await;
    for n in 0..5 {
        s.enqueue(
            None,
            "embeddings",
            &json!({"kind": "embed", "payload": {"doc": n}}),
        )
        .await;
    }
    s.enqueue(
        None,
        "embeddings",
        &json!({"kind": "embed", "payload": {"doc": 99}, "delay_ms": 600000}),
    )
    .await;
    s.kill_next("embeddings", "model returned 503: upstream overloaded")
        .await;
    s.enqueue(
        None,
        "exports",
        &json!({"kind": "export", "payload": {"rows": 10}}),
    )
    .await;

    let b = Browser::start().await;
    b.goto(&s.url("/")).await;
    b.wait_for(r#"tr[data-queue="embeddings"] td[data-col="queued"][data-value="4"]"#)
        .await;
    b.wait_for(r#"tr[data-queue="embeddings"] td[data-col="scheduled"][data-value="1"]"#)
        .await;
    b.wait_for(r#"tr[data-queue="embeddings"] td[data-col="dead"][data-value="1"]"#)
        .await;
    b.wait_for(r#"tr[data-queue="exports"] td[data-col="queued"][data-value="1"]"#)
        .await;
    let age = b
        .text(r#"tr[data-queue="embeddings"] td[data-col="oldest_waiting"]"#)
        .await;
    assert_ne!(age, "—", "a ready task has an age");
    // The first queue is selected: its dead task shows with its error, its queued tasks too.
    b.wait_for(r#"[data-listing="dead"] tr[data-status="dead"]"#)
        .await;
    let dead = b.text(r#"[data-listing="dead"] tbody"#).await;
    assert!(dead.contains("model returned 503"), "{dead}");
    assert_eq!(b.count(r#"[data-listing="queued"] tbody tr"#).await, 4);
    // Health and the rate-limit policy.
    b.wait_for(r##"#health.ok"##).await;
    b.wait_for(r#"#rate-limits tr[data-policy="per_ip"]"#).await;
    b.wait_for(r#"#services tr[data-service="queue"]"#).await;

    let png = b.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    if let Ok(path) = std::env::var("SPOOL_DASHBOARD_SCREENSHOT") {
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_action_requeues_a_dead_task_and_cancel_cancels_a_queued_one() {
    let s = TestServer::start(Backend::Memory).await;
    let q = "agent_tasks";
    s.enqueue(None, q, &json!({"kind": "plan", "payload": 1}))
        .await;
    let dead = s.kill_next(q, "poison payload").await;
    let dead_id = dead["id"].as_str().unwrap().to_owned();
    let queued = s
        .enqueue(None, q, &json!({"kind": "plan", "payload": 2}))
        .await;
    let queued_id = queued["id"].as_str().unwrap().to_owned();

    let b = Browser::start().await;
    b.goto(&s.url(&format!("/?queue={q}"))).await;
    let retry = b
        .wait_for(&format!(
            r#"[data-listing="dead"] tr[data-task="{dead_id}"] button.retry"#
        ))
        .await;
    retry.click().await.unwrap();
    b.wait_for(&format!(
        r#"[data-listing="queued"] tr[data-task="{dead_id}"][data-status="queued"]"#
    ))
    .await;
    let t = task_status(&s, q, &dead_id).await;
    assert_eq!(t["status"], "queued", "{t}");
    assert_eq!(t["attempts"], 0, "{t}");
    b.wait_for(r#"[data-listing="dead"] p.muted"#).await; // "none"

    let cancel = b
        .wait_for(&format!(
            r#"[data-listing="queued"] tr[data-task="{queued_id}"] button.cancel"#
        ))
        .await;
    cancel.click().await.unwrap();
    b.wait_for(&format!(
        r#"[data-listing="finished"] tr[data-task="{queued_id}"][data-status="cancelled"]"#
    ))
    .await;
    assert_eq!(task_status(&s, q, &queued_id).await["status"], "cancelled");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_update_appears_on_the_operation_page_without_reload() {
    let s = TestServer::start(Backend::Memory).await;
    start_operation(&s, None, "import-1").await;

    let b = Browser::start().await;
    b.goto(&s.url("/?operation=import-1")).await;
    b.wait_for(r#"#op-percent[data-value="0.0"]"#).await;
    b.wait_for(r#"body[data-live="live"]"#).await; // the EventSource is connected
    b.eval("window.__same_page = 'yes'; return null;").await;

    progress(
        &s,
        None,
        "import-1",
        json!({"step": "download", "fraction": 1.0, "message": "downloaded"}),
    )
    .await;
    b.wait_for(r#"#op-percent[data-value="25.0"]"#).await;
    b.wait_for(r#"tr[data-step="download"] td[data-col="fraction"][data-value="100"]"#)
        .await;
    assert_eq!(b.text("#op-message").await, "downloaded");
    progress(
        &s,
        None,
        "import-1",
        json!({"step": "parse", "fraction": 0.5}),
    )
    .await;
    b.wait_for(r#"#op-percent[data-value="62.5"]"#).await;
    progress(&s, None, "import-1", json!({"state": "succeeded"})).await;
    b.wait_for(r#"body[data-live="finished"]"#).await;
    b.wait_for("#op-state.succeeded").await;
    assert_eq!(
        b.eval("return window.__same_page || null;").await,
        json!("yes"),
        "updated in place, never reloaded"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_api_keys_the_page_asks_for_a_key_and_shows_only_its_scope() {
    let toml = format!(
        "[[http.api_keys]]\nid = \"team-a\"\nsha256 = \"{}\"\nprojects = [\"acme\"]\n\n\
         [[http.api_keys]]\nid = \"team-b\"\nsha256 = \"{}\"\nprojects = [\"beta\"]\n",
        sha256_hex("secret-a"),
        sha256_hex("secret-b"),
    );
    let s = TestServer::start_with(Backend::Memory, TestSetup::new().toml(&toml)).await;
    s.enqueue(
        Some("secret-b"),
        "exports",
        &json!({"kind": "export", "payload": 1}),
    )
    .await;
    start_operation(&s, Some("secret-a"), "op-a").await;

    let b = Browser::start().await;
    b.goto(&s.url("/")).await;
    b.wait_for("#login:not([hidden])").await;
    assert_eq!(
        b.count("#queues tbody tr").await,
        0,
        "no data without a key"
    );

    let input = b.wait_for("#api-key").await;
    input.send_keys("not-a-key").await.unwrap();
    b.wait_for("#key-submit").await.click().await.unwrap();
    b.wait_for("#login-error:not([hidden])").await;
    assert!(b.text("#login-error").await.contains("invalid API key"));
    assert_eq!(
        b.count("#queues tbody tr").await,
        0,
        "no data with a bad key"
    );
    assert_eq!(
        b.eval("return sessionStorage.getItem('spool.apiKey');")
            .await,
        Value::Null,
        "a refused key is forgotten"
    );

    b.wait_for("#api-key")
        .await
        .send_keys("secret-a")
        .await
        .unwrap();
    b.wait_for("#key-submit").await.click().await.unwrap();
    // Queues are not owned by a project: any valid key sees them, as on GET /v1/queues.
    b.wait_for(r#"tr[data-queue="exports"] td[data-col="queued"][data-value="1"]"#)
        .await;
    let session = b.text("#session").await;
    assert!(
        session.contains("team-a") && session.contains("acme"),
        "{session}"
    );
    assert!(
        !session.contains("beta") && !session.contains("team-b"),
        "{session}"
    );
    assert_eq!(
        b.eval("return sessionStorage.getItem('spool.apiKey');")
            .await,
        json!("secret-a")
    );

    // The operation page streams with the key through the fetch()-based reader.
    b.goto(&s.url("/?operation=op-a")).await;
    b.wait_for(r#"body[data-live="live"]"#).await;
    b.eval("window.__same_page = 'yes'; return null;").await;
    progress(
        &s,
        Some("secret-a"),
        "op-a",
        json!({"step": "download", "fraction": 1.0}),
    )
    .await;
    b.wait_for(r#"#op-percent[data-value="25.0"]"#).await;
    progress(
        &s,
        Some("secret-a"),
        "op-a",
        json!({"state": "failed", "message": "disk full"}),
    )
    .await;
    b.wait_for(r#"body[data-live="finished"]"#).await;
    assert_eq!(b.text("#op-message").await, "disk full");
    assert_eq!(
        b.eval("return window.__same_page || null;").await,
        json!("yes")
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_by_spool_itself_with_a_strict_policy() {
    let s = TestServer::start(Backend::Memory).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let res = s.get(path).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        let csp = res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        let body = res.text().await.unwrap();
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
    }
}
