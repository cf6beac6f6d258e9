//! `/v1/projects/{project}/cache/...`.

use spool_tests::{on_both_backends, Backend, TestServer};

use crate::expect_error;

async fn put_get_delete_round_trip_bytes(backend: Backend) {
    let s = TestServer::start(backend).await;
    let bytes: Vec<u8> = (0u8..=255).collect();
    let res = s
        .put("/v1/projects/acme/cache/user:42?ttl_secs=60")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(res.headers().contains_key("x-correlation-id"));

    let res = s
        .get("/v1/projects/acme/cache/user:42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    assert_eq!(res.bytes().await.unwrap().to_vec(), bytes);

    // Overwrite without a TTL (the default policy applies).
    let res = s
        .put("/v1/projects/acme/cache/user:42")
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = s
        .get("/v1/projects/acme/cache/user:42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "v2");

    let res = s
        .delete("/v1/projects/acme/cache/user:42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = s
        .get("/v1/projects/acme/cache/user:42")
        .send()
        .await
        .unwrap();
    expect_error(res, 404, "not_found").await;
    // Deleting again is fine.
    let res = s
        .delete("/v1/projects/acme/cache/user:42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
}

async fn invalidate_drops_one_project_only(backend: Backend) {
    let s = TestServer::start(backend).await;
    for (project, key) in [("acme", "a"), ("acme", "b"), ("other", "a")] {
        let res = s
            .put(&format!("/v1/projects/{project}/cache/{key}?ttl_secs=300"))
            .body(format!("{project}/{key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    let res = s
        .post("/v1/projects/acme/cache/invalidate")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    for key in ["a", "b"] {
        let res = s
            .get(&format!("/v1/projects/acme/cache/{key}"))
            .send()
            .await
            .unwrap();
        expect_error(res, 404, "not_found").await;
    }
    let res = s.get("/v1/projects/other/cache/a").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "other/a");
    // New writes after the invalidation are visible.
    s.put("/v1/projects/acme/cache/a")
        .body("fresh")
        .send()
        .await
        .unwrap();
    let res = s.get("/v1/projects/acme/cache/a").send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "fresh");
}

async fn percent_encoded_keys_are_decoded(backend: Backend) {
    let s = TestServer::start(backend).await;
    // `/` inside a key travels percent-encoded.
    let res = s
        .put("/v1/projects/acme/cache/reports%2F2026%2Fq1")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = s
        .get("/v1/projects/acme/cache/reports%2F2026%2Fq1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A key named like the invalidate action is just a key for PUT/GET.
    let res = s
        .put("/v1/projects/acme/cache/invalidate")
        .body("k")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = s
        .get("/v1/projects/acme/cache/invalidate")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "k");
}

on_both_backends!(
    put_get_delete_round_trip_bytes,
    invalidate_drops_one_project_only,
    percent_encoded_keys_are_decoded,
);
