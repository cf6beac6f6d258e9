//! [`http_audit`]: the HTTP middleware that audits every mutating `/v1` request.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, Response};
use axum::middleware::Next;
use spool_domain::names::CorrelationId;

use super::event::{record, AuditEvent, Outcome, ANONYMOUS, UNAUTHENTICATED};
use crate::http::middleware::ApiKeys;

/// Longest body read back to find an error code or a new operation's id (spool's own JSON
/// bodies are far smaller).
const MAX_INSPECTED_BODY: usize = 1 << 20;
/// Longest path value copied into an event.
const MAX_FIELD: usize = 256;

/// The audited action of a route, `None` for reads and lease bookkeeping (reserve,
/// heartbeat). Unknown mutating routes are audited as `http.<method> <route>`.
pub fn action_of(method: &Method, route: &str) -> Option<Cow<'static, str>> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let known = match (method.as_str(), route) {
        (
            "PUT",
            "/v1/projects/{project}/cache/{key}" | "/v1/projects/{project}/cache/invalidate",
        ) => "cache.set",
        (
            "DELETE",
            "/v1/projects/{project}/cache/{key}" | "/v1/projects/{project}/cache/invalidate",
        ) => "cache.delete",
        ("POST", "/v1/projects/{project}/cache/invalidate") => "cache.invalidate",
        ("POST", "/v1/queues/{queue}/tasks") => "task.enqueue",
        ("DELETE", "/v1/queues/{queue}/tasks/{id}") => "task.cancel",
        ("POST", "/v1/queues/{queue}/tasks/{id}/complete") => "task.complete",
        ("POST", "/v1/queues/{queue}/tasks/{id}/fail") => "task.fail",
        (
            "POST",
            "/v1/queues/{queue}/tasks/{id}/retry" | "/v1/queues/{queue}/tasks/{id}/requeue",
        ) => "task.retry",
        ("POST", "/v1/operations") => "progress.start",
        ("POST", "/v1/operations/{id}/progress") => "progress.update",
        ("POST", "/v1/queues/{queue}/reserve" | "/v1/queues/{queue}/tasks/{id}/heartbeat") => {
            return None
        }
        _ => return Some(Cow::Owned(format!("http.{} {route}", method.as_str()))),
    };
    Some(Cow::Borrowed(known))
}

fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_FIELD);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Who sent `req`: the API key's id, [`ANONYMOUS`] without keys, [`UNAUTHENTICATED`] for a
/// missing or unknown key. Only identifies: the auth layer enforces.
fn principal(keys: &ApiKeys, req: &Request) -> String {
    if keys.is_empty() {
        return ANONYMOUS.to_owned();
    }
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .and_then(|token| keys.authenticate(token))
        .map_or_else(|| UNAUTHENTICATED.to_owned(), |p| p.key_id().to_owned())
}

/// Fills the event's fields from the route's parameters (`{project}`, `{queue}`, `{id}`,
/// `{key}`), matching the template against the request path segment by segment.
fn fill_from_path(event: &mut AuditEvent, route: &str, path: &str) {
    let under_operations = route.starts_with("/v1/operations");
    for (tpl, actual) in route.split('/').zip(path.split('/')) {
        let value = Some(bounded(actual));
        match tpl {
            "{project}" => event.project = value,
            "{queue}" => event.queue = value,
            "{key}" => event.cache_key = value,
            "{id}" if under_operations => event.operation = value,
            "{id}" => event.task = value,
            _ => {}
        }
    }
    if route == "/v1/projects/{project}/cache/invalidate" && event.action != "cache.invalidate" {
        event.cache_key = Some("invalidate".to_owned());
    }
}

async fn read_json(res: Response<Body>) -> (Response<Body>, Option<serde_json::Value>) {
    let (parts, body) = res.into_parts();
    match axum::body::to_bytes(body, MAX_INSPECTED_BODY).await {
        Ok(bytes) => {
            let json = serde_json::from_slice(&bytes).ok();
            (Response::from_parts(parts, Body::from(bytes)), json)
        }
        Err(_) => (Response::from_parts(parts, Body::empty()), None),
    }
}

/// Audits every mutating `/v1` request (see [`action_of`]) with one event on
/// [`TARGET`](super::TARGET) after the response is known: principal, project / queue / task /
/// cache key / operation from the route, correlation id, HTTP status and outcome (`ok` or the
/// error code of the JSON error body). Refusals by the layers inside it — 401 / 403 from
/// auth, 429 from rate limiting, 400 from bad input — are audited too.
///
/// Mount it as a route layer outside the auth layer:
/// `.route_layer(from_fn_with_state(api_keys, http_audit))`.
pub async fn http_audit(State(keys): State<ApiKeys>, req: Request, next: Next) -> Response<Body> {
    let Some(route) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    let Some(action) = action_of(req.method(), &route) else {
        return next.run(req).await;
    };
    let mut event = AuditEvent::new(action, principal(&keys, &req));
    fill_from_path(&mut event, &route, req.uri().path());
    event.correlation_id = req
        .extensions()
        .get::<CorrelationId>()
        .map(|c| c.as_str().to_owned());

    let res = next.run(req).await;
    event.status = Some(res.status().as_u16());
    let res = if res.status().is_success() {
        if event.action == "task.enqueue" {
            event.task = res
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.rsplit('/').next())
                .map(bounded);
            res
        } else if event.action == "progress.start" {
            let (res, json) = read_json(res).await;
            event.operation = json
                .as_ref()
                .and_then(|j| j.get("id"))
                .and_then(|v| v.as_str())
                .map(bounded);
            res
        } else {
            res
        }
    } else {
        let (res, json) = read_json(res).await;
        let code = json
            .as_ref()
            .and_then(|j| j.pointer("/error/code"))
            .and_then(|c| c.as_str())
            .map_or_else(
                || Cow::Owned(format!("http_{}", res.status().as_u16())),
                |c| Cow::Owned(bounded(c)),
            );
        event.outcome = Outcome::Error(code);
        res
    };
    record(&event);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_cover_the_mutating_routes_only() {
        let a = |m: Method, r: &str| action_of(&m, r).map(|c| c.into_owned());
        assert_eq!(a(Method::GET, "/v1/queues/{queue}/tasks/{id}"), None);
        assert_eq!(a(Method::POST, "/v1/queues/{queue}/reserve"), None);
        assert_eq!(
            a(Method::POST, "/v1/queues/{queue}/tasks").as_deref(),
            Some("task.enqueue")
        );
        assert_eq!(
            a(Method::POST, "/v1/projects/{project}/cache/invalidate").as_deref(),
            Some("cache.invalidate")
        );
        assert_eq!(
            a(Method::DELETE, "/v1/projects/{project}/cache/invalidate").as_deref(),
            Some("cache.delete")
        );
        assert_eq!(
            a(Method::POST, "/v1/new/{thing}").as_deref(),
            Some("http.POST /v1/new/{thing}")
        );
    }

    #[test]
    fn path_parameters_fill_the_event() {
        let mut e = AuditEvent::new("task.cancel", "x");
        fill_from_path(
            &mut e,
            "/v1/queues/{queue}/tasks/{id}",
            "/v1/queues/exports/tasks/01J000",
        );
        assert_eq!(e.queue.as_deref(), Some("exports"));
        assert_eq!(e.task.as_deref(), Some("01J000"));
        let mut e = AuditEvent::new("progress.update", "x");
        fill_from_path(
            &mut e,
            "/v1/operations/{id}/progress",
            "/v1/operations/op1/progress",
        );
        assert_eq!(e.operation.as_deref(), Some("op1"));
        assert_eq!(e.task, None);
        let long = "k".repeat(1000);
        let mut e = AuditEvent::new("cache.set", "x");
        fill_from_path(
            &mut e,
            "/v1/projects/{project}/cache/{key}",
            &format!("/v1/projects/acme/cache/{long}"),
        );
        assert_eq!(e.project.as_deref(), Some("acme"));
        assert_eq!(e.cache_key.map(|k| k.len()), Some(MAX_FIELD));
    }
}
