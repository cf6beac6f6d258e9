//! The audit trail: one structured `tracing` event per mutating operation, on its own target
//! ([`TARGET`] = `spool::audit`) so it can be routed apart from the other logs.
//!
//! | source | actions | principal |
//! |---|---|---|
//! | HTTP API ([`http_audit`], mounted on `/v1`) | `cache.set`, `cache.delete`, `cache.invalidate`, `task.enqueue`, `task.cancel`, `task.retry`, `task.complete`, `task.fail`, `progress.start`, `progress.update` | the API key id; `anonymous` without keys; `unauthenticated` for a missing or unknown key |
//! | worker runtime | `task.complete`, `task.fail` | the worker id |
//!
//! Every event carries `action`, `principal`, `outcome` (`ok` or the error code, e.g.
//! `forbidden`, `lease_lost`), and when they apply `project`, `queue`, `task`, `cache_key`,
//! `operation`, `correlation_id` and `status`. Never a secret, a payload, a result or a cached
//! value. Successes log at `INFO`, failures at `WARN`.
//!
//! Routing: `RUST_LOG=info,spool::audit=info` keeps them with the other logs (JSON with
//! `telemetry.log_format = "json"`); `RUST_LOG=info,spool::audit=off` drops them; an embedder
//! can send them to their own file with a `tracing_subscriber::filter::Targets` per layer
//! (`Targets::new().with_target(spool_app::audit::TARGET, Level::INFO)`).

mod event;
mod layer;

pub use event::{record, AuditEvent, Outcome, ANONYMOUS, TARGET, UNAUTHENTICATED};
pub use layer::{action_of, http_audit};
