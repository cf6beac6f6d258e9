//! `/v1/queues/...`: enqueue, status, cancel, stats, and the HTTP worker protocol
//! (reserve long-poll, heartbeat, complete, fail).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use spool_domain::names::{CorrelationId, QueueName, TaskId, TaskKind, UniqueKey, WorkerId};
use spool_domain::task::{Failure, LeaseToken, MaxAttempts, Priority, Retry, TaskStatus};
use spool_ports::{Enqueued, ReserveOptions, TaskListing, TaskQuery};

use crate::http::dto::{LeaseDto, QueueStatsDto, StatsDto, TaskDto, TaskListDto};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::{ApiError, AppState};
use crate::services::EnqueueOptions;

/// `POST /v1/queues/{queue}/tasks` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnqueueBody {
    kind: String,
    payload: serde_json::Value,
    priority: Option<i64>,
    delay_ms: Option<u64>,
    max_attempts: Option<u32>,
    unique_key: Option<String>,
    timeout_ms: Option<u64>,
}

/// A lease token as the decimal string spool sends, or as a JSON number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenRepr {
    Text(String),
    Number(u64),
}

impl TokenRepr {
    fn token(&self) -> Result<LeaseToken, ApiError> {
        match self {
            TokenRepr::Text(s) => Ok(LeaseToken::parse(s.trim())?),
            TokenRepr::Number(n) => Ok(LeaseToken::new(*n)),
        }
    }
}

/// Heartbeat body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeartbeatBody {
    lease_token: TokenRepr,
    /// New lease length (default: the queue's).
    lease_ms: Option<u64>,
}

/// Complete body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteBody {
    lease_token: TokenRepr,
    result: Option<serde_json::Value>,
}

/// Fail body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailBody {
    lease_token: TokenRepr,
    error: String,
    /// `true` (default): retry with the task's backoff while attempts remain; `false`: dead
    /// now.
    retry: Option<bool>,
    /// Retry after exactly this delay instead of the backoff.
    retry_after_ms: Option<u64>,
}

/// Reserve query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReserveQuery {
    /// How long to wait for a task (default 0, at most 300000).
    wait_ms: Option<u64>,
    /// Lease length (default: the queue's).
    lease_ms: Option<u64>,
    /// Recorded as the task's worker.
    worker_id: Option<String>,
}

fn queue_name(s: &str) -> Result<QueueName, ApiError> {
    Ok(QueueName::parse(s)?)
}

fn task_id(s: &str) -> Result<TaskId, ApiError> {
    Ok(TaskId::parse(s.trim())?)
}

fn millis(field: &'static str, ms: u64) -> Result<Duration, ApiError> {
    if ms == 0 {
        return Err(ApiError::invalid(format!(
            "invalid {field}: must be at least 1"
        )));
    }
    Ok(Duration::from_millis(ms))
}

/// `POST /v1/queues/{queue}/tasks`: 201 with the new task (`Location` names it), or 200 with
/// the live task that holds the same `unique_key`.
pub(crate) async fn enqueue(
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
    correlation: Option<Extension<CorrelationId>>,
    ApiJson(body): ApiJson<EnqueueBody>,
) -> Result<Response, ApiError> {
    let queue = queue_name(&queue)?;
    let kind = TaskKind::parse(body.kind)?;
    let mut opts = EnqueueOptions::new();
    if let Some(p) = body.priority {
        opts = opts.priority(Priority::new(p)?);
    }
    if let Some(ms) = body.delay_ms {
        opts = opts.delay(Duration::from_millis(ms));
    }
    if let Some(n) = body.max_attempts {
        opts = opts.max_attempts(MaxAttempts::new(n)?);
    }
    if let Some(k) = body.unique_key {
        opts = opts.unique_key(UniqueKey::parse(k)?);
    }
    if let Some(ms) = body.timeout_ms {
        opts = opts.timeout(millis("timeout_ms", ms)?);
    }
    if let Some(Extension(c)) = correlation {
        opts = opts.correlation_id(c);
    }
    let out = state
        .spool()
        .queue()
        .enqueue_json(&queue, &kind, body.payload, opts)
        .await?;
    let (status, task) = match &out {
        Enqueued::Created(t) => {
            state.metrics().task_enqueued(queue.as_str());
            (StatusCode::CREATED, t)
        }
        Enqueued::Duplicate(t) => (StatusCode::OK, t),
    };
    let location = format!("/v1/queues/{}/tasks/{}", task.queue, task.id);
    let mut res = (status, Json(TaskDto::from(task))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// `GET /v1/queues/{queue}/tasks/{id}`: 200 task or 404.
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath((queue, id)): ApiPath<(String, String)>,
) -> Result<Json<TaskDto>, ApiError> {
    let queue = queue_name(&queue)?;
    let id = task_id(&id)?;
    let task = state
        .spool()
        .queue()
        .get(&queue, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {id} in queue {queue}")))?;
    Ok(Json(TaskDto::from(&task)))
}

/// `DELETE /v1/queues/{queue}/tasks/{id}`: cancels; 200 with the task, 404, or 409 when it
/// already finished.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    ApiPath((queue, id)): ApiPath<(String, String)>,
) -> Result<Json<TaskDto>, ApiError> {
    let queue = queue_name(&queue)?;
    let id = task_id(&id)?;
    let task = state.spool().queue().cancel(&queue, id).await?;
    Ok(Json(TaskDto::from(&task)))
}

/// `GET /v1/queues/{queue}/tasks` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// The listing: `queued`, `scheduled`, `failed` (or `retrying`), `running`,
    /// `succeeded`, `dead`, `cancelled`, or `finished`.
    status: Option<String>,
    /// At most this many tasks (default 50, at most 200).
    limit: Option<usize>,
}

/// Default `limit` of a task listing.
const DEFAULT_LIST_LIMIT: usize = 50;

/// `GET /v1/queues/{queue}/tasks?status=dead&limit=50`: 200 with up to `limit` tasks of the
/// listing, in its order ([`TaskListing`]); 400 for a missing or unknown status or a limit
/// outside `1..=200`.
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<TaskListDto>, ApiError> {
    let queue = queue_name(&queue)?;
    let status = query.status.ok_or_else(|| {
        ApiError::invalid(
            "missing status: one of queued, scheduled, failed, running, succeeded, dead, \
             cancelled, finished",
        )
    })?;
    let listing = TaskListing::parse(status.trim())?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    let tasks = state
        .spool()
        .queue()
        .list(&queue, TaskQuery::new(listing, limit))
        .await?;
    Ok(Json(TaskListDto {
        queue: queue.to_string(),
        status: listing.as_str().to_owned(),
        limit,
        tasks: tasks.iter().map(TaskDto::from).collect(),
    }))
}

/// `POST /v1/queues/{queue}/tasks/{id}/retry`: puts a dead or cancelled task back in the
/// queue with fresh attempts; 200 with the task, 404, or 409 when it is not dead or
/// cancelled.
pub(crate) async fn retry(
    State(state): State<AppState>,
    ApiPath((queue, id)): ApiPath<(String, String)>,
) -> Result<Json<TaskDto>, ApiError> {
    let queue = queue_name(&queue)?;
    let id = task_id(&id)?;
    let task = state.spool().queue().requeue(&queue, id).await?;
    Ok(Json(TaskDto::from(&task)))
}

/// `GET /v1/queues`: stats of every queue.
pub(crate) async fn stats(State(state): State<AppState>) -> Result<Json<StatsDto>, ApiError> {
    let stats = state.spool().queue().stats(&[]).await?;
    state.metrics().record_queue_stats(&stats);
    Ok(Json(StatsDto {
        queues: stats.iter().map(QueueStatsDto::from).collect(),
    }))
}

/// `POST /v1/queues/{queue}/reserve?wait_ms=N&lease_ms=N`: 200 with a lease, or 204 when no
/// task became ready within `wait_ms`.
pub(crate) async fn reserve(
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
    ApiQuery(query): ApiQuery<ReserveQuery>,
) -> Result<Response, ApiError> {
    let queue = queue_name(&queue)?;
    let lease = match query.lease_ms {
        Some(ms) => millis("lease_ms", ms)?,
        None => state.spool().queue().settings(&queue).lease,
    };
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0));
    let mut opts = ReserveOptions::new(lease).wait(wait);
    if let Some(w) = query.worker_id {
        opts = opts.worker(WorkerId::parse(w)?);
    }
    opts.validate()?;
    // The request timeout applies on top of the wait, so a long poll is never cut short.
    let limit = wait + state.options().request_timeout;
    let reserved = tokio::time::timeout(
        limit,
        state
            .spool()
            .queue()
            .reserve(std::slice::from_ref(&queue), opts),
    )
    .await
    .map_err(|_| timeout_error())??;
    Ok(match reserved {
        Some(lease) => Json(LeaseDto::from(&lease)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

pub(crate) fn timeout_error() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        "the request took longer than the server allows",
    )
}

/// `POST /v1/queues/{queue}/tasks/{id}/heartbeat`: extends the lease; 200 with the lease,
/// 409 `lease_lost`.
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    ApiPath((queue, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<Json<LeaseDto>, ApiError> {
    let queue = queue_name(&queue)?;
    let id = task_id(&id)?;
    let token = body.lease_token.token()?;
    let lease = match body.lease_ms {
        Some(ms) => millis("lease_ms", ms)?,
        None => state.spool().queue().settings(&queue).lease,
    };
    let lease = state
        .spool()
        .queue()
        .heartbeat(&queue, id, token, lease)
        .await?;
    Ok(Json(LeaseDto::from(&lease)))
}

/// `POST /v1/queues/{queue}/tasks/{id}/complete`: 200 with the task, 409 `lease_lost`.
pub(crate) async fn complete(
    State(state): State<AppState>,
    ApiPath((queue, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<CompleteBody>,
) -> Result<Json<TaskDto>, ApiError> {
    let queue = queue_name(&queue)?;
    let id = task_id(&id)?;
    let token = body.lease_token.token()?;
    let task = state
        .spool()
        .queue()
        .complete(&queue, id, token, body.result)
        .await?;
    state.metrics().task_completed(queue.as_str());
    Ok(Json(TaskDto::from(&task)))
}

/// `POST /v1/queues/{queue}/tasks/{id}/fail`: 200 with the task (`failed` to be retried, or
/// `dead`), 409 `lease_lost`.
pub(crate) async fn fail(
    State(state): State<AppState>,
    ApiPath((queue, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<FailBody>,
) -> Result<Json<TaskDto>, ApiError> {
    let queue = queue_name(&queue)?;
    let id = task_id(&id)?;
    let token = body.lease_token.token()?;
    let retry = match (body.retry, body.retry_after_ms) {
        (Some(false), _) => Retry::Never,
        (_, Some(ms)) => Retry::After(Duration::from_millis(ms)),
        _ => Retry::Backoff,
    };
    let task = state
        .spool()
        .queue()
        .fail(
            &queue,
            id,
            token,
            Failure {
                error: body.error,
                retry,
            },
        )
        .await?;
    state.metrics().task_failed(queue.as_str());
    if task.status == TaskStatus::Dead {
        state.metrics().task_dead(queue.as_str());
    }
    Ok(Json(TaskDto::from(&task)))
}
