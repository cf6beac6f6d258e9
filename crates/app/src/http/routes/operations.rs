//! `/v1/operations/...`: start, update and read multi-step operations (the event stream is
//! in [`crate::http::sse`]).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use spool_domain::names::{CorrelationId, OperationId, StepName};
use spool_domain::progress::{OperationSpec, OperationState, ProgressUpdate, StepRef, StepSpec};

use crate::http::dto::OperationDto;
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::{ApiError, AppState};

/// One planned step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepBody {
    name: String,
    weight: Option<u32>,
}

/// `POST /v1/operations` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    id: Option<String>,
    correlation_id: Option<String>,
    steps: Vec<StepBody>,
    message: Option<String>,
}

/// A step by name or by 0-based position.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StepRepr {
    Index(usize),
    Name(String),
}

/// `POST /v1/operations/{id}/progress` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProgressBody {
    step: Option<StepRepr>,
    fraction: Option<f64>,
    message: Option<String>,
    state: Option<OperationState>,
}

/// `POST /v1/operations`: 201 with the snapshot (`Location` names it); 409 when the ID
/// exists. The correlation ID defaults to the request's.
pub(crate) async fn start(
    State(state): State<AppState>,
    correlation: Option<Extension<CorrelationId>>,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<Response, ApiError> {
    let id = body.id.map(OperationId::parse).transpose()?;
    let correlation_id = match body.correlation_id {
        Some(c) => Some(CorrelationId::parse(c)?),
        None => correlation.map(|Extension(c)| c),
    };
    let mut steps = Vec::with_capacity(body.steps.len());
    for s in body.steps {
        steps.push(StepSpec {
            name: StepName::parse(s.name)?,
            weight: s.weight.unwrap_or(1),
        });
    }
    let event = state
        .spool()
        .progress()
        .start(OperationSpec {
            id,
            correlation_id,
            steps,
            message: body.message,
        })
        .await?;
    let location = format!("/v1/operations/{}", event.operation.id);
    let mut res = (
        StatusCode::CREATED,
        Json(OperationDto::from(&event.operation)),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// `POST /v1/operations/{id}/progress`: 200 with the snapshot; 404; 409 when it already
/// ended.
pub(crate) async fn progress(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ProgressBody>,
) -> Result<Json<OperationDto>, ApiError> {
    let id = OperationId::parse(id)?;
    let step = match body.step {
        Some(StepRepr::Index(i)) => Some(StepRef::Index(i)),
        Some(StepRepr::Name(n)) => Some(StepRef::Name(StepName::parse(n)?)),
        None => None,
    };
    let event = state
        .spool()
        .progress()
        .update(
            &id,
            ProgressUpdate {
                step,
                fraction: body.fraction,
                message: body.message,
                state: body.state,
            },
        )
        .await?;
    Ok(Json(OperationDto::from(&event.operation)))
}

/// `GET /v1/operations/{id}`: 200 with the snapshot, or 404.
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OperationDto>, ApiError> {
    let id = OperationId::parse(id)?;
    let op = state
        .spool()
        .progress()
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("operation {id}")))?;
    Ok(Json(OperationDto::from(&op)))
}
