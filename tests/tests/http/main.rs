//! End-to-end tests of the HTTP API over real HTTP, each on the memory backend and on a real
//! Redis (`memory::*` and `redis::*` in every module).

#![allow(clippy::unwrap_used)]

mod bad_input;
mod cache;
mod health;
mod operations;
mod queues;
mod security;
mod sse;
mod task_lists;

use reqwest::Response;
use serde_json::Value;

/// The JSON body of a response.
pub async fn json(res: Response) -> Value {
    let status = res.status();
    let text = res.text().await.expect("a readable body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text:?}"))
}

/// Asserts `res` is an error with `status` and `code` in the contract's error body (and a
/// correlation ID); returns the body.
pub async fn expect_error(res: Response, status: u16, code: &str) -> Value {
    let url = res.url().to_string();
    assert_eq!(
        res.status().as_u16(),
        status,
        "{url}: {:?}",
        res.text().await
    );
    return_error_body(res, code, &url).await
}

async fn return_error_body(res: Response, code: &str, url: &str) -> Value {
    assert!(
        res.headers().contains_key("x-correlation-id"),
        "{url}: no correlation id on an error"
    );
    assert_eq!(
        res.headers()["content-type"],
        "application/json",
        "{url}: error content type"
    );
    let body = json(res).await;
    assert_eq!(body["error"]["code"], code, "{url}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{url}: empty message in {body}");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "{url}: only `error` at the top: {body}"
    );
    body
}

/// `<ms>-<seq>` as a pair, for ordering.
pub fn event_id(s: &str) -> (u64, u64) {
    let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
    (
        ms.parse().unwrap_or_else(|_| panic!("bad event id {s:?}")),
        seq.parse().unwrap_or_else(|_| panic!("bad event id {s:?}")),
    )
}
