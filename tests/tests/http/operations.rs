//! `/v1/operations/...` (the event stream is in `sse.rs`).

use serde_json::{json, Value};
use spool_tests::{on_both_backends, Backend, TestServer};

use crate::{expect_error, json};

fn assert_operation_shape(op: &Value) {
    for f in [
        "id",
        "correlation_id",
        "state",
        "percent",
        "message",
        "steps",
        "updated_at",
    ] {
        assert!(op.get(f).is_some(), "operation without {f}: {op}");
    }
    for step in op["steps"].as_array().unwrap() {
        for f in ["name", "weight", "fraction"] {
            assert!(step.get(f).is_some(), "step without {f}: {step}");
        }
    }
}

async fn start_update_and_read(backend: Backend) {
    let s = TestServer::start(backend).await;
    let res = s
        .post_json(
            "/v1/operations",
            &json!({"id": "import-7", "steps": [{"name": "download"}, {"name": "parse", "weight": 3}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["location"], "/v1/operations/import-7");
    let op = json(res).await;
    assert_operation_shape(&op);
    assert_eq!(op["id"], "import-7");
    assert_eq!(op["state"], "running");
    assert_eq!(op["percent"], 0.0);
    assert_eq!(
        op["steps"][0],
        json!({"name": "download", "weight": 1, "fraction": 0.0})
    );
    assert_eq!(op["steps"][1]["weight"], 3);

    let res = s
        .post_json(
            "/v1/operations/import-7/progress",
            &json!({"step": "download", "fraction": 1.0, "message": "downloaded"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let op = json(res).await;
    assert_eq!(op["percent"], 25.0);
    assert_eq!(op["message"], "downloaded");

    // By index.
    let res = s
        .post_json(
            "/v1/operations/import-7/progress",
            &json!({"step": 1, "fraction": 0.5}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["percent"], 62.5);

    let res = s.get("/v1/operations/import-7").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let got = json(res).await;
    assert_operation_shape(&got);
    assert_eq!(got["percent"], 62.5);

    let res = s
        .post_json(
            "/v1/operations/import-7/progress",
            &json!({"state": "succeeded"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let done = json(res).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["percent"], 100.0);

    // Terminal: further updates conflict and change nothing.
    let res = s
        .post_json(
            "/v1/operations/import-7/progress",
            &json!({"message": "late"}),
        )
        .send()
        .await
        .unwrap();
    expect_error(res, 409, "conflict").await;
    let got = json(s.get("/v1/operations/import-7").send().await.unwrap()).await;
    assert_eq!(got["message"], "downloaded");
}

async fn generated_ids_and_duplicate_ids(backend: Backend) {
    let s = TestServer::start(backend).await;
    let res = s
        .post_json("/v1/operations", &json!({"steps": [{"name": "only"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let op = json(res).await;
    let id = op["id"].as_str().unwrap();
    assert!(!id.is_empty());
    let res = s
        .post_json(
            "/v1/operations",
            &json!({"id": id, "steps": [{"name": "only"}]}),
        )
        .send()
        .await
        .unwrap();
    expect_error(res, 409, "conflict").await;
    let res = s
        .post_json(
            "/v1/operations/nope-404/progress",
            &json!({"step": 0, "fraction": 0.5}),
        )
        .send()
        .await
        .unwrap();
    expect_error(res, 404, "not_found").await;
    let res = s.get("/v1/operations/nope-404").send().await.unwrap();
    expect_error(res, 404, "not_found").await;
}

on_both_backends!(start_update_and_read, generated_ids_and_duplicate_ids);
