//! `GET /v1/operations/{id}/events` read by a real streaming HTTP client.

use std::time::Duration;

use serde_json::json;
use spool_tests::{
    on_both_backends, Backend, SseEvent, SseFrame, SseReader, TestServer, TestSetup,
};

use crate::{event_id, expect_error, json};

async fn start(s: &TestServer, id: &str) {
    let res = s
        .post_json(
            "/v1/operations",
            &json!({"id": id, "steps": [{"name": "a"}, {"name": "b"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

async fn update(s: &TestServer, id: &str, body: serde_json::Value) {
    let res = s
        .post_json(&format!("/v1/operations/{id}/progress"), &body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
}

async fn open(s: &TestServer, id: &str, last_event_id: Option<&str>) -> SseReader {
    let mut req = s.get(&format!("/v1/operations/{id}/events"));
    if let Some(l) = last_event_id {
        req = req.header("last-event-id", l);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(res.headers().contains_key("x-correlation-id"));
    SseReader::new(res)
}

fn id_of(e: &SseEvent) -> (u64, u64) {
    event_id(e.id.as_deref().expect("every event has an id"))
}

async fn snapshot_first_then_live_events_until_the_end(backend: Backend) {
    let s = TestServer::start(backend).await;
    start(&s, "live-1").await;
    let mut stream = open(&s, "live-1", None).await;
    let snapshot = stream.next_event().await.expect("a snapshot");
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.json()["state"], "running");
    assert_eq!(snapshot.json()["id"], "live-1");

    update(&s, "live-1", json!({"step": "a", "fraction": 0.5})).await;
    let p = stream.next_event().await.expect("a progress event");
    assert_eq!(p.event, "progress");
    assert_eq!(p.json()["steps"][0]["fraction"], 0.5);
    assert!(id_of(&p) > id_of(&snapshot));

    update(
        &s,
        "live-1",
        json!({"state": "succeeded", "message": "done"}),
    )
    .await;
    let end = stream.next_event().await.expect("the end event");
    assert_eq!(end.event, "end");
    assert_eq!(end.json()["state"], "succeeded");
    assert!(id_of(&end) > id_of(&p));
    // The server ends the stream after the terminal state.
    assert_eq!(stream.next_event().await, None);
}

async fn last_event_id_resumes_with_exactly_the_later_events(backend: Backend) {
    let s = TestServer::start(backend).await;
    start(&s, "resume-1").await;
    let mut first = open(&s, "resume-1", None).await;
    let snapshot = first.next_event().await.unwrap();
    update(&s, "resume-1", json!({"step": 0, "fraction": 1.0})).await;
    update(&s, "resume-1", json!({"step": 1, "fraction": 0.5})).await;
    update(
        &s,
        "resume-1",
        json!({"state": "failed", "message": "boom"}),
    )
    .await;
    let all = first.rest().await;
    let kinds: Vec<&str> = all.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["progress", "progress", "end"]);
    assert!(id_of(&all[0]) > id_of(&snapshot));

    // Resume after the first progress event: the second and the end, nothing else.
    let resumed = open(&s, "resume-1", all[0].id.as_deref())
        .await
        .rest()
        .await;
    assert_eq!(resumed, all[1..].to_vec());

    // The same through the query parameter (for clients that cannot set the header).
    let res = s
        .get(&format!(
            "/v1/operations/resume-1/events?last_event_id={}",
            all[1].id.as_deref().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(SseReader::new(res).rest().await, all[2..].to_vec());

    // Resuming after the end: nothing more, and the stream ends.
    assert!(open(&s, "resume-1", all[2].id.as_deref())
        .await
        .rest()
        .await
        .is_empty());
}

async fn a_finished_operation_streams_its_snapshot_and_ends(backend: Backend) {
    let s = TestServer::start(backend).await;
    start(&s, "done-1").await;
    update(&s, "done-1", json!({"state": "cancelled"})).await;
    let events = open(&s, "done-1", None).await.rest().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event, "snapshot");
    assert_eq!(events[0].json()["state"], "cancelled");
    assert!(events[0].id.is_some());
}

async fn keep_alive_comments_flow_while_idle(backend: Backend) {
    let s = TestServer::start_with(
        backend,
        TestSetup::new().sse_keep_alive(Duration::from_millis(20)),
    )
    .await;
    start(&s, "idle-1").await;
    let mut stream = open(&s, "idle-1", None).await;
    assert_eq!(stream.next_event().await.unwrap().event, "snapshot");
    // With no update, the next frame can only be a keep-alive comment.
    let next = stream.next_frame().await.unwrap();
    assert_eq!(next, SseFrame::Comment("keep-alive".into()));
}

async fn unknown_operations_and_bad_resume_points_are_refused(backend: Backend) {
    let s = TestServer::start(backend).await;
    let res = s.get("/v1/operations/missing/events").send().await.unwrap();
    expect_error(res, 404, "not_found").await;
    start(&s, "bad-resume").await;
    let res = s
        .get("/v1/operations/bad-resume/events")
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "invalid").await;
}

async fn open_streams_are_capped_per_ip_and_in_total(backend: Backend) {
    // Trust loopback as a proxy so X-Forwarded-For picks the client IP of each stream.
    let s = TestServer::start_with(
        backend,
        TestSetup::new().toml(
            "[http]\ntrusted_proxies = [\"127.0.0.1\"]\n\
                 max_sse_streams = 3\nmax_sse_streams_per_ip = 2\n",
        ),
    )
    .await;
    start(&s, "capped").await;
    let from = |ip: &'static str| {
        s.get("/v1/operations/capped/events")
            .header("x-forwarded-for", ip)
            .send()
    };
    let mut a1 = SseReader::new(from("10.0.0.1").await.unwrap());
    let mut a2 = SseReader::new(from("10.0.0.1").await.unwrap());
    assert_eq!(a1.next_event().await.unwrap().event, "snapshot");
    assert_eq!(a2.next_event().await.unwrap().event, "snapshot");
    let res = from("10.0.0.1").await.unwrap();
    let body = expect_error(res, 429, "too_many_streams").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("per client"));

    let mut b1 = SseReader::new(from("10.0.0.2").await.unwrap());
    assert_eq!(b1.next_event().await.unwrap().event, "snapshot");
    let res = from("10.0.0.3").await.unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    expect_error(res, 503, "too_many_streams").await;

    // Ending the operation ends every stream, and their slots are free again.
    update(&s, "capped", json!({"state": "succeeded"})).await;
    for stream in [a1, a2, b1] {
        let rest = stream.rest().await;
        assert_eq!(rest.last().map(|e| e.event.as_str()), Some("end"));
    }
    let again = from("10.0.0.1").await.unwrap();
    assert_eq!(again.status(), 200);
    let events = SseReader::new(again).rest().await;
    assert_eq!(events[0].event, "snapshot");
}

async fn progress_snapshots_carry_the_correlation_id(backend: Backend) {
    let s = TestServer::start(backend).await;
    let res = s
        .post_json(
            "/v1/operations",
            &json!({"id": "corr-op", "steps": [{"name": "x"}]}),
        )
        .header("x-correlation-id", "req-op-77")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-correlation-id"], "req-op-77");
    assert_eq!(json(res).await["correlation_id"], "req-op-77");
    let mut stream = open(&s, "corr-op", None).await;
    let snapshot = stream.next_event().await.unwrap();
    assert_eq!(snapshot.json()["correlation_id"], "req-op-77");
    // An explicit correlation_id in the body wins over the request's.
    let res = s
        .post_json(
            "/v1/operations",
            &json!({"id": "corr-op-2", "correlation_id": "job-9", "steps": [{"name": "x"}]}),
        )
        .header("x-correlation-id", "req-op-78")
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["correlation_id"], "job-9");
}

on_both_backends!(
    snapshot_first_then_live_events_until_the_end,
    last_event_id_resumes_with_exactly_the_later_events,
    a_finished_operation_streams_its_snapshot_and_ends,
    keep_alive_comments_flow_while_idle,
    unknown_operations_and_bad_resume_points_are_refused,
    open_streams_are_capped_per_ip_and_in_total,
    progress_snapshots_carry_the_correlation_id,
);
