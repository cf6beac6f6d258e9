//! `/v1/projects/{project}/cache/...`: raw bytes under a key, scoped by project.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use spool_domain::names::{CacheKey, ProjectId, ScopedKey};

use crate::http::extract::{ApiPath, ApiQuery, RawBody};
use crate::http::{ApiError, AppState};

fn scoped(project: &str, key: &str) -> Result<ScopedKey, ApiError> {
    let project = ProjectId::parse(project)?;
    let key = CacheKey::parse(key)?;
    Ok(ScopedKey::new(project, key))
}

/// `ttl_secs`: a positive whole number of seconds, or absent (the default policy).
fn ttl(query: &HashMap<String, String>) -> Result<Option<Duration>, ApiError> {
    let Some(raw) = query.get("ttl_secs") else {
        return Ok(None);
    };
    match raw.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(Some(Duration::from_secs(n.unsigned_abs()))),
        Ok(n) => Err(ApiError::invalid(format!(
            "invalid ttl_secs: {n}; it must be a positive whole number of seconds"
        ))),
        Err(_) => Err(ApiError::invalid(format!(
            "invalid ttl_secs: {raw:?} is not a whole number of seconds"
        ))),
    }
}

/// `PUT /v1/projects/{project}/cache/{key}?ttl_secs=N`: stores the body; 204.
pub(crate) async fn put(
    State(state): State<AppState>,
    ApiPath((project, key)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<HashMap<String, String>>,
    RawBody(body): RawBody,
) -> Result<StatusCode, ApiError> {
    put_key(&state, &project, &key, &query, body).await
}

async fn put_key(
    state: &AppState,
    project: &str,
    key: &str,
    query: &HashMap<String, String>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let key = scoped(project, key)?;
    let ttl = ttl(query)?;
    state.spool().cache().set_bytes(&key, body, ttl).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/projects/{project}/cache/{key}`: the stored bytes (200) or 404.
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath((project, key)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    get_key(&state, &project, &key).await
}

async fn get_key(state: &AppState, project: &str, key: &str) -> Result<Response, ApiError> {
    let scoped = scoped(project, key)?;
    let found = state.spool().cache().get_bytes(&scoped).await;
    match found {
        Ok(Some(bytes)) => {
            state.metrics().cache_hit();
            Ok((
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                )],
                bytes,
            )
                .into_response())
        }
        Ok(None) => {
            state.metrics().cache_miss();
            Err(ApiError::not_found(format!("cache key {key}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /v1/projects/{project}/cache/{key}`: removes it (present or not); 204.
pub(crate) async fn delete(
    State(state): State<AppState>,
    ApiPath((project, key)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete_key(&state, &project, &key).await
}

async fn delete_key(state: &AppState, project: &str, key: &str) -> Result<StatusCode, ApiError> {
    let key = scoped(project, key)?;
    state.spool().cache().delete_bytes(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The key literally named `invalidate`: its path is also the invalidate action's (POST),
/// so PUT, GET and DELETE on it are routed here.
const INVALIDATE: &str = "invalidate";

/// `PUT /v1/projects/{project}/cache/invalidate`: the key `invalidate`.
pub(crate) async fn put_invalidate_key(
    State(state): State<AppState>,
    ApiPath(project): ApiPath<String>,
    ApiQuery(query): ApiQuery<HashMap<String, String>>,
    RawBody(body): RawBody,
) -> Result<StatusCode, ApiError> {
    put_key(&state, &project, INVALIDATE, &query, body).await
}

/// `GET /v1/projects/{project}/cache/invalidate`: the key `invalidate`.
pub(crate) async fn get_invalidate_key(
    State(state): State<AppState>,
    ApiPath(project): ApiPath<String>,
) -> Result<Response, ApiError> {
    get_key(&state, &project, INVALIDATE).await
}

/// `DELETE /v1/projects/{project}/cache/invalidate`: the key `invalidate`.
pub(crate) async fn delete_invalidate_key(
    State(state): State<AppState>,
    ApiPath(project): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    delete_key(&state, &project, INVALIDATE).await
}

/// `POST /v1/projects/{project}/cache/invalidate`: drops the whole project scope; 204.
pub(crate) async fn invalidate(
    State(state): State<AppState>,
    ApiPath(project): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let project = ProjectId::parse(project)?;
    state.spool().cache().invalidate_project(&project).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn q(v: &str) -> HashMap<String, String> {
        HashMap::from([("ttl_secs".to_owned(), v.to_owned())])
    }

    #[test]
    fn ttls_are_positive_whole_seconds() {
        assert_eq!(ttl(&HashMap::new()).unwrap(), None);
        assert_eq!(ttl(&q("60")).unwrap(), Some(Duration::from_secs(60)));
        for bad in ["0", "-5", "1.5", "soon", ""] {
            let e = ttl(&q(bad)).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.message().contains("ttl_secs"));
        }
    }
}
