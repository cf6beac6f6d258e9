//! spool's HTTP face: the v1 contract of DESIGN.md over axum, so any language can use the
//! services, plus reusable [`middleware`] for Rust apps.
//!
//! | method and path | success | errors |
//! |---|---|---|
//! | `GET /health/live` | 200 `{"status":"ok"}` | |
//! | `GET /health/ready` | 200 `{"status":"ok"\|"degraded","backend","latency_ms","services":{name:{"mode","breaker"?,"local_pending"?}}}` | 503 when nothing can serve |
//! | `GET /metrics` | 200 Prometheus text | |
//! | `PUT /v1/projects/{project}/cache/{key}?ttl_secs=N` | 204 | 400, 413 |
//! | `GET /v1/projects/{project}/cache/{key}` | 200 bytes | 404 |
//! | `DELETE /v1/projects/{project}/cache/{key}` | 204 | 400 |
//! | `POST /v1/projects/{project}/cache/invalidate` | 204 | 400 |
//! | `POST /v1/queues/{queue}/tasks` | 201 task (200 with the live duplicate of a `unique_key`) | 400, 413, 415 |
//! | `GET /v1/queues/{queue}/tasks/{id}` | 200 task | 400, 404 |
//! | `DELETE /v1/queues/{queue}/tasks/{id}` | 200 task | 404, 409 |
//! | `GET /v1/queues` | 200 stats | |
//! | `POST /v1/queues/{queue}/reserve?wait_ms=N&lease_ms=N&worker_id=W` | 200 lease, 204 none | 400 |
//! | `POST /v1/queues/{queue}/tasks/{id}/heartbeat` `{lease_token, lease_ms?}` | 200 lease | 409 `lease_lost` |
//! | `POST /v1/queues/{queue}/tasks/{id}/complete` `{lease_token, result?}` | 200 task | 409 |
//! | `POST /v1/queues/{queue}/tasks/{id}/fail` `{lease_token, error, retry?, retry_after_ms?}` | 200 task | 409 |
//! | `POST /v1/operations` `{id?, correlation_id?, steps, message?}` | 201 operation | 400, 409 |
//! | `POST /v1/operations/{id}/progress` `{step?, fraction?, message?, state?}` | 200 operation | 404, 409 |
//! | `GET /v1/operations/{id}` | 200 operation | 404 |
//! | `GET /v1/operations/{id}/events` | 200 `text/event-stream` | 404, 429, 503 |
//! | `GET /v1/queues/{queue}/tasks?status=S&limit=N` (extra) | 200 `{queue, status, limit, tasks}` | 400 |
//! | `POST /v1/queues/{queue}/tasks/{id}/retry` (extra) | 200 task (a dead or cancelled task queued again) | 404, 409 |
//! | `GET /v1/dashboard` (extra) | 200 `{session, backend, rate_limits}` | |
//! | `GET /` (also `/?operation=<id>`) | 200 the web dashboard (see README) | |
//!
//! Every error is `{"error": {"code", "message"}}` ([`ApiError`]); every response carries
//! `X-Correlation-ID` and the rate-limit headers of the policies that applied. Shapes are in
//! [`dto`]; the SSE format in [`sse`].
//!
//! Decisions the contract leaves open:
//!
//! - **Auth**: with `http.api_keys` configured, every `/v1` request needs
//!   `Authorization: Bearer <key>`; cache endpoints (the only project-scoped ones) answer 403
//!   for a project the key does not list; queues and operations accept any valid key.
//!   `/health/*` and `/metrics` are open.
//! - **Users** for per-user limits are the API key's id; with no keys configured (loopback
//!   only) the `X-User-ID` header is believed instead.
//! - JSON endpoints require `Content-Type: application/json` (415 otherwise) and refuse
//!   unknown fields.
//!
//! ```no_run
//! use spool_app::config::Config;
//! use spool_app::http::{serve, AppState};
//! use spool_app::Spool;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load(None)?;
//! let spool = Spool::from_config(&config).await?;
//! let listener = tokio::net::TcpListener::bind(config.http.addr).await?;
//! serve(listener, AppState::from_spool(spool)?, spool_app::worker::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

mod dashboard;
pub mod dto;
mod error;
pub mod extract;
pub mod middleware;
mod router;
mod routes;
pub mod sse;
mod state;

pub use error::ApiError;
pub use router::{router, serve, USER_HEADER};
pub use state::{AppState, HttpOptions};
