//! A subscriber's stream: the replay read at subscribe time, then the live channel.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use spool_domain::names::OperationId;
use spool_domain::progress::{EventId, ProgressEvent};
use spool_ports::{EventStream, PortError};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use super::store::Subscribed;
use super::Shared;

/// The state the stream unfolds from.
struct Subscription {
    shared: Arc<Shared>,
    id: OperationId,
    incarnation: u64,
    /// Events to deliver before reading the live channel again.
    pending: VecDeque<ProgressEvent>,
    live: Receiver<ProgressEvent>,
    /// The newest event delivered (or the resume point): live events up to it are skipped.
    last: Option<EventId>,
    done: bool,
}

/// Turns what `subscribe` read into the event stream.
pub(super) fn stream(
    shared: Arc<Shared>,
    id: OperationId,
    after: Option<EventId>,
    subscribed: Subscribed,
) -> EventStream {
    let done = subscribed.finished && subscribed.replay.is_empty();
    let subscription = Subscription {
        shared,
        id,
        incarnation: subscribed.incarnation,
        pending: subscribed.replay.into(),
        live: subscribed.live,
        last: after,
        done,
    };
    futures::stream::unfold(subscription, Subscription::next).boxed()
}

impl Subscription {
    async fn next(mut self) -> Option<(Result<ProgressEvent, PortError>, Self)> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last = Some(event.id);
                // The terminal event is the last one there will ever be.
                self.done = event.operation.state.is_terminal();
                return Some((Ok(event), self));
            }
            match self.live.recv().await {
                Ok(event) if self.last.is_some_and(|last| event.id <= last) => {}
                Ok(event) => self.pending.push_back(event),
                Err(RecvError::Lagged(_)) => {
                    // Missed live events: read them from the retained ones instead (or a
                    // snapshot when they were trimmed). Later duplicates are skipped by ID.
                    let after = self.last.unwrap_or_default();
                    let replay = {
                        let mut store = self.shared.store.lock();
                        let now = self.shared.clock.now();
                        store.catch_up(&self.id, self.incarnation, after, now)
                    };
                    match replay {
                        Some(events) => self.pending.extend(events),
                        None => return Some(self.gone()),
                    }
                }
                Err(RecvError::Closed) => return Some(self.gone()),
            }
        }
    }

    /// The operation expired while running: say so, then end.
    fn gone(mut self) -> (Result<ProgressEvent, PortError>, Self) {
        self.done = true;
        let error = PortError::not_found(format!("operation {} (expired)", self.id));
        (Err(error), self)
    }
}
