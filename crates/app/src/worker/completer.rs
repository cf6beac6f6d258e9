//! Batched completion: the successes of a worker's in-flight tasks go to the store in
//! [`QueueManager::complete_many`] calls instead of one `complete` each.
//!
//! A handler's success is queued here and its task waits for the outcome. One loop sends
//! everything queued while the previous call was in flight, one call per queue, so a lone
//! completion goes out at once and, under load, a batch costs one round trip (one script on
//! Redis) for as many tasks as finished meanwhile. Every item keeps its own lease and fencing
//! token: the store checks each as `complete` would, and a stale one fails alone.

use std::collections::BTreeMap;

use spool_domain::names::{QueueName, TaskId};
use spool_domain::task::LeaseToken;
use spool_ports::{Completion, PortError, COMPLETE_MANY_MAX};
use tokio::sync::{mpsc, oneshot};

use crate::services::{QueueManager, ServiceError};

/// One queued success and where its outcome goes.
struct Pending {
    queue: QueueName,
    completion: Completion,
    outcome: oneshot::Sender<Result<(), ServiceError>>,
}

/// The sending side, shared by the worker's tasks.
#[derive(Clone)]
pub(super) struct Completer {
    tx: mpsc::UnboundedSender<Pending>,
}

/// The receiving side, until [`Completions::spawn`] starts the loop.
pub(super) struct Completions {
    rx: mpsc::UnboundedReceiver<Pending>,
}

/// A connected pair; nothing runs until [`Completions::spawn`].
pub(super) fn channel() -> (Completer, Completions) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Completer { tx }, Completions { rx })
}

impl Completer {
    /// Records the success of `task` under `token`; the outcome `complete` would give.
    pub(super) async fn complete(
        &self,
        queue: &QueueName,
        task: TaskId,
        token: LeaseToken,
        result: Option<serde_json::Value>,
    ) -> Result<(), ServiceError> {
        let (outcome, rx) = oneshot::channel();
        let pending = Pending {
            queue: queue.clone(),
            completion: Completion {
                task,
                token,
                result,
            },
            outcome,
        };
        if self.tx.send(pending).is_err() {
            return Err(stopped());
        }
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

impl Completions {
    /// Runs the loop on the current runtime until every [`Completer`] is dropped.
    pub(super) fn spawn(self, queue: QueueManager) {
        tokio::spawn(run(queue, self.rx));
    }
}

async fn run(queue: QueueManager, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut buf = Vec::new();
    while rx.recv_many(&mut buf, COMPLETE_MANY_MAX).await > 0 {
        let mut by_queue: BTreeMap<QueueName, (Vec<Completion>, Vec<_>)> = BTreeMap::new();
        for p in buf.drain(..) {
            let (batch, outcomes) = by_queue.entry(p.queue).or_default();
            batch.push(p.completion);
            outcomes.push(p.outcome);
        }
        for (q, (batch, outcomes)) in by_queue {
            match queue.complete_many(&q, batch).await {
                Ok(results) => {
                    for (tx, r) in outcomes.into_iter().zip(results) {
                        let _ = tx.send(r.map_err(ServiceError::Port));
                    }
                }
                Err(e) => {
                    for tx in outcomes {
                        let _ = tx.send(Err(each(&e)));
                    }
                }
            }
        }
    }
}

/// The error of a whole failed batch, as each of its items reports it (same class, same
/// message; the cause chain stays with the one logged by the service span).
fn each(e: &ServiceError) -> ServiceError {
    ServiceError::Port(match e {
        ServiceError::Port(PortError::Unavailable { message, .. }) => PortError::Unavailable {
            message: message.clone(),
            source: None,
        },
        ServiceError::Port(PortError::Configuration { message, .. }) => PortError::Configuration {
            message: message.clone(),
            source: None,
        },
        other => PortError::internal(other.to_string()),
    })
}

fn stopped() -> ServiceError {
    ServiceError::Port(PortError::internal(
        "the worker's completion loop stopped before recording the success",
    ))
}

#[cfg(test)]
mod tests {
    use super::each;
    use crate::services::ServiceError;
    use spool_ports::PortError;

    #[test]
    fn a_failed_batch_keeps_its_class_for_every_item() {
        let down = ServiceError::Port(PortError::unavailable("redis down", "refused"));
        let e = each(&down);
        assert!(
            matches!(e, ServiceError::Port(ref p) if p.is_transient()),
            "{e:?}"
        );
        assert_eq!(e.to_string(), down.to_string());
        let bug = ServiceError::Port(PortError::internal("bad reply"));
        assert!(matches!(
            each(&bug),
            ServiceError::Port(PortError::Internal { .. })
        ));
    }
}
