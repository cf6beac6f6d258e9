//! Waking reservers without polling: one [`Notify`] per queue that has waiters.
//!
//! A reserver [`Signals::subscribe`]s to its queues, *enables* the `Notified` futures, and
//! only then checks the store; a writer changes the store, releases the lock, and then calls
//! [`Signals::notify`]. Either the change happened before the check (the check sees it) or the
//! notification happens after the futures were enabled (they complete) — no lost wake-up.
//! Timers for due tasks and lease expiries are computed by the reserver from the store's
//! next event, so nothing has to fire on its own.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use spool_domain::names::QueueName;
use spool_domain::Timestamp;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The per-queue notifiers. An entry exists only while some reserver waits on the queue.
#[derive(Debug, Default)]
pub(super) struct Signals {
    map: Mutex<HashMap<QueueName, Arc<Notify>>>,
}

impl Signals {
    /// Registers interest in `queues`; dropping the subscription forgets unused notifiers.
    pub(super) fn subscribe<'a>(&'a self, queues: &[QueueName]) -> Subscription<'a> {
        let mut map = self.map.lock();
        let notifies = queues
            .iter()
            .map(|q| (q.clone(), Arc::clone(map.entry(q.clone()).or_default())))
            .collect();
        Subscription {
            signals: self,
            notifies,
        }
    }

    /// Wakes every reserver currently waiting on one of `queues`.
    pub(super) fn notify(&self, queues: &[QueueName]) {
        if queues.is_empty() {
            return;
        }
        let map = self.map.lock();
        for q in queues {
            if let Some(n) = map.get(q) {
                n.notify_waiters();
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// A reserver's interest in some queues.
#[derive(Debug)]
pub(super) struct Subscription<'a> {
    signals: &'a Signals,
    notifies: Vec<(QueueName, Arc<Notify>)>,
}

impl Subscription<'_> {
    /// A future that completes on the next [`Signals::notify`] of any subscribed queue. It is
    /// registered before it returns, so a notification sent after this call is never missed
    /// even if the future is first polled later.
    pub(super) fn armed(&self) -> impl Future<Output = ()> + Send + '_ {
        let mut waits: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> = self
            .notifies
            .iter()
            .map(|(_, n)| Box::pin(n.notified()))
            .collect();
        for w in &mut waits {
            w.as_mut().enable();
        }
        async move {
            if !waits.is_empty() {
                futures::future::select_all(waits).await;
            }
        }
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut map = self.signals.map.lock();
        for (q, n) in self.notifies.drain(..) {
            drop(n);
            // Only the map holds it: nobody waits on this queue any more.
            if map.get(&q).is_some_and(|n| Arc::strong_count(n) == 1) {
                map.remove(&q);
            }
        }
    }
}

/// The tokio instant at which the store's clock, reading `now` at this moment, reaches `at`.
/// The store clock follows tokio's clock, so a paused test clock drives these timers too.
/// Never earlier than 1 ms from now: an event that is already due was handled by the look
/// that reported it, and a zero timer would turn the wait into a spin.
pub(super) fn instant_at(now: Timestamp, at: Timestamp) -> Option<Instant> {
    Instant::now().checked_add(at.saturating_since(now).max(MIN_TIMER))
}

const MIN_TIMER: Duration = Duration::from_millis(1);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use futures::FutureExt;

    fn q(name: &str) -> QueueName {
        QueueName::parse(name).unwrap()
    }

    #[test]
    fn a_notification_between_arming_and_polling_is_not_lost() {
        let signals = Signals::default();
        let sub = signals.subscribe(&[q("a"), q("b")]);
        let armed = sub.armed();
        signals.notify(&[q("b")]);
        assert!(armed.now_or_never().is_some());
    }

    #[test]
    fn other_queues_do_not_wake() {
        let signals = Signals::default();
        let sub = signals.subscribe(&[q("a")]);
        let armed = sub.armed();
        signals.notify(&[q("c")]);
        assert!(armed.now_or_never().is_none());
    }

    #[test]
    fn notifiers_live_only_while_someone_waits() {
        let signals = Signals::default();
        let one = signals.subscribe(&[q("a"), q("b")]);
        let two = signals.subscribe(&[q("a")]);
        assert_eq!(signals.len(), 2);
        drop(one);
        assert_eq!(signals.len(), 1, "a is still watched by the second");
        drop(two);
        assert_eq!(signals.len(), 0);
        signals.notify(&[q("a")]); // nobody waits: a no-op
    }

    #[tokio::test(start_paused = true)]
    async fn timers_are_never_zero() {
        let now = Timestamp::from_millis(1_000);
        let start = Instant::now();
        assert_eq!(
            instant_at(now, Timestamp::from_millis(1_250)),
            Some(start + Duration::from_millis(250))
        );
        assert_eq!(
            instant_at(now, Timestamp::from_millis(10)),
            Some(start + MIN_TIMER),
            "an event in the past still sleeps a little"
        );
    }
}
