//! [`ApiError`]: the one HTTP error type. Clients get a status, a stable code and a safe
//! message in `{"error": {"code", "message"}}`; logs get the cause.

use std::error::Error as StdError;
use std::fmt;

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use spool_domain::ValidationError;
use spool_ports::PortError;

use crate::services::ServiceError;

type Cause = Box<dyn StdError + Send + Sync + 'static>;

/// An error answer: status, stable `code`, a message safe to show to clients, extra
/// headers, and (for logs only) the cause.
///
/// | status | code | when |
/// |---|---|---|
/// | 400 | `invalid` | a bad name, id, query parameter or body field (the message names it) |
/// | 401 | `unauthorized` | no or an unknown API key |
/// | 403 | `forbidden` | the key is not for this project |
/// | 404 | `not_found` | no such route, cache key, task or operation |
/// | 405 | `method_not_allowed` | a known path with another method |
/// | 409 | `conflict`, `lease_lost` | a state that refuses the request; a stale lease token |
/// | 413 | `payload_too_large` | a body over `http.body_limit_bytes` |
/// | 415 | `unsupported_media_type` | a JSON endpoint without `Content-Type: application/json` |
/// | 429 | `rate_limited`, `too_many_streams` | a rate limit; the SSE cap per client IP |
/// | 500 | `internal` | a bug or corrupt data (details only in the logs) |
/// | 503 | `unavailable`, `timeout`, `too_many_streams` | backend down; the request took too long; the total SSE cap |
#[derive(Debug)]
pub struct ApiError(Box<Repr>);

#[derive(Debug)]
struct Repr {
    status: StatusCode,
    code: &'static str,
    message: String,
    headers: HeaderMap,
    cause: Option<Cause>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with `status`, `code` and a client-safe `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self(Box::new(Repr {
            status,
            code,
            message: message.into(),
            headers: HeaderMap::new(),
            cause: None,
        }))
    }

    /// 400 `invalid`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// 404 `not_found`: "`what` not found".
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 401 `unauthorized`, with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 503 `unavailable` with `Retry-After: 1`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    /// 500 `internal`; the client sees only "internal error", `cause` goes to the logs.
    pub fn internal(cause: impl Into<Cause>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
        .with_cause(cause)
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.insert(name, value);
        self
    }

    /// Adds response headers (rate-limit headers, say).
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.0.headers.extend(headers);
        self
    }

    /// Keeps `cause` for the logs.
    pub fn with_cause(mut self, cause: impl Into<Cause>) -> Self {
        self.0.cause = Some(cause.into());
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.0.code
    }

    /// The client-safe message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// Maps a JSON body rejection: 400 for malformed JSON or wrong fields, 413 for a body
    /// over the limit, 415 without a JSON content type.
    pub fn from_json_rejection(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(b) => Self::from_bytes_rejection(b),
            JsonRejection::JsonSyntaxError(e) => {
                Self::invalid(format!("malformed JSON body: {}", source_text(&e)))
            }
            JsonRejection::JsonDataError(e) => {
                Self::invalid(format!("invalid JSON body: {}", source_text(&e)))
            }
            other => Self::invalid(other.body_text()),
        }
    }

    /// Maps a body read rejection: 413 when over the limit, else 400.
    pub fn from_bytes_rejection(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than the server accepts",
            )
        } else {
            Self::invalid(format!("cannot read the request body: {}", r.body_text()))
        }
    }

    /// Maps a path rejection (bad percent-encoding) to 400.
    pub fn from_path_rejection(r: PathRejection) -> Self {
        Self::invalid(r.body_text())
    }

    /// Maps a query-string rejection to 400.
    pub fn from_query_rejection(r: QueryRejection) -> Self {
        Self::invalid(r.body_text())
    }
}

/// The innermost message of an error chain (serde's, without axum's prefix).
fn source_text(e: &dyn StdError) -> String {
    let mut cur: &dyn StdError = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.0.status.as_u16(),
            self.0.code,
            self.0.message
        )
    }
}

impl StdError for ApiError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .cause
            .as_deref()
            .map(|c| c as &(dyn StdError + 'static))
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Port(p) => p.into(),
            ServiceError::Encode { .. } => Self::invalid(e.to_string()),
            ServiceError::Decode { .. } | ServiceError::Compute(_) => Self::internal(e),
        }
    }
}

impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        match e {
            PortError::Invalid(v) => v.into(),
            PortError::NotFound { what } => Self::not_found(what),
            PortError::Conflict { message } => Self::new(StatusCode::CONFLICT, "conflict", message),
            PortError::LeaseLost { task } => Self::new(
                StatusCode::CONFLICT,
                "lease_lost",
                format!("lease lost on task {task}: the token is stale or the lease ran out"),
            ),
            e @ PortError::Unavailable { .. } => {
                Self::unavailable("backend unavailable; retry later").with_cause(e)
            }
            e @ PortError::Configuration { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "backend misconfigured",
            )
            .with_cause(e),
            other => Self::internal(other),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.0.status.is_server_error() {
            match &self.0.cause {
                Some(cause) => tracing::error!(
                    status = self.0.status.as_u16(),
                    code = self.0.code,
                    error = %ErrorChain(cause.as_ref()),
                    "request failed"
                ),
                None => tracing::warn!(
                    status = self.0.status.as_u16(),
                    code = self.0.code,
                    message = %self.0.message,
                    "request failed"
                ),
            }
        } else {
            tracing::debug!(status = self.0.status.as_u16(), code = self.0.code, message = %self.0.message, "request refused");
        }
        let body = serde_json::to_vec(&Body {
            error: Detail {
                code: self.0.code,
                message: &self.0.message,
            },
        })
        .unwrap_or_else(|_| {
            br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec()
        });
        let mut res = (self.0.status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res.headers_mut().extend(self.0.headers);
        res
    }
}

/// `a: b: c` for an error and its sources.
struct ErrorChain<'a>(&'a (dyn StdError + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http_body_util::BodyExt;

    use super::*;

    async fn body(e: ApiError) -> (StatusCode, HeaderMap, serde_json::Value) {
        let res = e.into_response();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn port_errors_map_to_statuses_and_codes() {
        let cases: Vec<(PortError, u16, &str)> = vec![
            (PortError::invalid("queue name", "bad"), 400, "invalid"),
            (PortError::not_found("task x"), 404, "not_found"),
            (PortError::conflict("done"), 409, "conflict"),
            (PortError::LeaseLost { task: "t".into() }, 409, "lease_lost"),
            (
                PortError::unavailable("down", std::io::Error::other("refused")),
                503,
                "unavailable",
            ),
            (PortError::internal("corrupt"), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let (s, _, json) = body(ServiceError::Port(e).into()).await;
            assert_eq!(s.as_u16(), status);
            assert_eq!(json["error"]["code"], code);
            assert!(json["error"]["message"].is_string());
        }
    }

    #[tokio::test]
    async fn causes_stay_out_of_the_body() {
        let e = ApiError::from(PortError::Internal {
            message: "secret detail".into(),
            source: Some(Box::new(std::io::Error::other("deeper secret"))),
        });
        assert!(e.source().is_some());
        let (status, headers, json) = body(e).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "internal", "message": "internal error"}})
        );
    }

    #[tokio::test]
    async fn validation_messages_name_the_component() {
        let v = spool_domain::names::QueueName::parse("a*b").unwrap_err();
        let (status, _, json) = body(v.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("queue name"),
            "{json}"
        );
    }

    #[tokio::test]
    async fn unauthorized_asks_for_a_bearer_token() {
        let (status, headers, _) = body(ApiError::unauthorized("no key")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    }
}
