//! The worker runtime: handlers registered per (queue, kind) with typed payloads,
//! concurrency per queue, heartbeats, retries, dead letters and graceful drain.
//!
//! ```no_run
//! use spool_app::{config::Config, Spool};
//! use spool_app::worker::{shutdown_signal, HandlerError, TaskContext};
//! use spool_domain::names::{QueueName, TaskKind};
//!
//! #[derive(serde::Deserialize)]
//! struct Greet { name: String }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let spool = Spool::from_config(&Config::load(None)?).await?;
//! let report = spool
//!     .worker()
//!     .register(QueueName::agent_tasks(), TaskKind::parse("greet")?,
//!         |ctx: TaskContext, job: Greet| async move {
//!             if job.name.is_empty() {
//!                 return Err(HandlerError::permanent("no name"));   // dead at once
//!             }
//!             tracing::info!(task = %ctx.task_id(), "hello {}", job.name);
//!             Ok(Some(serde_json::json!({ "greeted": job.name })))
//!         })
//!     .build()
//!     .run_until(shutdown_signal())   // Ctrl-C or SIGTERM, then drain
//!     .await;
//! println!("{report:?}");
//! # Ok(()) }
//! ```
//!
//! How each attempt ends is described on [`WorkerRuntime`].

mod completer;
mod context;
pub mod examples;
mod registry;
mod runtime;

#[cfg(test)]
mod tests;

pub use context::{HandlerError, HandlerResult, TaskContext};
pub use examples::register_examples;
pub(crate) use runtime::MAX_PREFETCH;
pub use runtime::{WorkerBuilder, WorkerReport, WorkerRuntime, RELEASED_ON_SHUTDOWN};

/// Completes on Ctrl-C, or on SIGTERM on Unix: the usual trigger of a graceful drain.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
