//! A tiny worker process for the end-to-end tests (`tests/tests/degradation.rs`): it runs the
//! `spool` worker runtime on the configuration in its `SPOOL_*` environment with one handler,
//! so a test can kill it with SIGKILL mid-task.
//!
//! The handler of kind `job` on queue `$TEST_WORKER_QUEUE` (default `killme`) appends
//! `start <task id> <attempt>` to the file `$TEST_WORKER_LOG` when an attempt begins. When
//! the payload's `hang_on_attempt` equals the attempt it then never finishes (the test kills
//! the process); otherwise it appends `done <task id> <attempt>` and returns
//! `{"attempt": <attempt>}`.

use std::io::Write;
use std::path::PathBuf;

use spool_app::config::Config;
use spool_app::worker::{shutdown_signal, HandlerError, TaskContext};
use spool_app::Spool;
use spool_domain::names::{QueueName, TaskKind};

fn record(log: &PathBuf, line: &str) -> Result<(), HandlerError> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| HandlerError::retry(format!("cannot open the log: {e}")))?;
    writeln!(f, "{line}")
        .and_then(|()| f.sync_all())
        .map_err(|e| HandlerError::retry(format!("cannot write the log: {e}")))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let log = PathBuf::from(std::env::var("TEST_WORKER_LOG")?);
    let queue = QueueName::parse(
        std::env::var("TEST_WORKER_QUEUE").unwrap_or_else(|_| "killme".to_owned()),
    )?;
    let config = Config::load(None)?;
    let spool = Spool::from_config(&config).await?;
    let report = spool
        .worker()
        .register(
            queue,
            TaskKind::parse("job")?,
            move |ctx: TaskContext, payload: serde_json::Value| {
                let log = log.clone();
                async move {
                    let (id, attempt) = (ctx.task_id(), ctx.attempt());
                    record(&log, &format!("start {id} {attempt}"))?;
                    let hang = payload.get("hang_on_attempt").and_then(|v| v.as_u64());
                    if hang == Some(u64::from(attempt)) {
                        std::future::pending::<()>().await;
                    }
                    record(&log, &format!("done {id} {attempt}"))?;
                    Ok(Some(serde_json::json!({ "attempt": attempt })))
                }
            },
        )
        .build()
        .run_until(shutdown_signal())
        .await;
    eprintln!("test_worker stopped: {report:?}");
    Ok(())
}
