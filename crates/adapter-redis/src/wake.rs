//! Wake-ups over pub/sub: one subscriber connection per backend fans messages out to
//! in-process [`Notify`]s, so idle reservers and progress subscribers wait without polling.
//!
//! Channels are exact names (`SUBSCRIBE`, never `PSUBSCRIBE`). fred re-subscribes after a
//! reconnect; a message lost in between is covered by the waiters' bounded wait (≤ 1 s), after
//! which they look again.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use fred::clients::SubscriberClient;
use fred::interfaces::{EventInterface, PubsubInterface};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::classify;
use spool_ports::PortError;

/// Longest an idle waiter sleeps before it looks again by itself.
pub(crate) const MAX_IDLE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Default)]
struct Channels {
    /// Channel → (notify, holders).
    map: HashMap<String, (Arc<Notify>, usize)>,
}

/// The subscriber connection and its channel table.
pub(crate) struct WakeHub {
    subscriber: SubscriberClient,
    channels: Arc<Mutex<Channels>>,
    /// Serialises SUBSCRIBE / UNSUBSCRIBE so a channel's state on the server follows the table.
    ops: tokio::sync::Mutex<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl WakeHub {
    /// Starts the dispatcher over an initialised subscriber client.
    pub(crate) fn start(subscriber: SubscriberClient) -> Self {
        let channels: Arc<Mutex<Channels>> = Arc::default();
        let mut rx = subscriber.message_rx();
        let weak: Weak<Mutex<Channels>> = Arc::downgrade(&channels);
        let dispatcher = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(msg) => {
                        let Some(channels) = weak.upgrade() else {
                            return;
                        };
                        let notify = channels
                            .lock()
                            .map
                            .get(&*msg.channel)
                            .map(|(n, _)| n.clone());
                        if let Some(n) = notify {
                            n.notify_waiters();
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Messages were dropped: wake everyone, they re-check.
                        let Some(channels) = weak.upgrade() else {
                            return;
                        };
                        for (n, _) in channels.lock().map.values() {
                            n.notify_waiters();
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let resubscriber = subscriber.manage_subscriptions();
        Self {
            subscriber,
            channels,
            ops: tokio::sync::Mutex::new(()),
            tasks: vec![dispatcher, resubscriber],
        }
    }

    /// Registers interest in `channel` (subscribing on first use) and returns its notifier.
    ///
    /// # Errors
    /// `Unavailable` when the subscription cannot be made; the table is left unchanged.
    pub(crate) async fn acquire(&self, channel: &str) -> Result<Arc<Notify>, PortError> {
        let _serial = self.ops.lock().await;
        if let Some((n, holders)) = self.channels.lock().map.get_mut(channel) {
            *holders += 1;
            return Ok(n.clone());
        }
        let notify = Arc::new(Notify::new());
        self.channels
            .lock()
            .map
            .insert(channel.to_owned(), (notify.clone(), 1));
        if let Err(e) = self.subscriber.subscribe(channel).await {
            self.channels.lock().map.remove(channel);
            return Err(classify(e));
        }
        Ok(notify)
    }

    /// Drops one holder of `channel`; the last one unsubscribes.
    pub(crate) async fn release(&self, channel: &str) {
        let _serial = self.ops.lock().await;
        let last = {
            let mut table = self.channels.lock();
            match table.map.get_mut(channel) {
                Some((_, holders)) if *holders > 1 => {
                    *holders -= 1;
                    false
                }
                Some(_) => {
                    table.map.remove(channel);
                    true
                }
                None => false,
            }
        };
        if last {
            if let Err(e) = self.subscriber.unsubscribe(channel).await {
                tracing::debug!(error = %e, "unsubscribe failed; the connection drops it on reconnect");
            }
        }
    }

    /// The subscriber client (for shutdown).
    pub(crate) fn subscriber(&self) -> &SubscriberClient {
        &self.subscriber
    }
}

impl Drop for WakeHub {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A held subscription that releases itself when dropped.
pub(crate) struct WakeGuard {
    hub: Weak<WakeHub>,
    channel: String,
    pub(crate) notify: Option<Arc<Notify>>,
}

impl WakeGuard {
    /// Acquires `channel`; when the subscription fails the guard holds no notifier and its
    /// owner falls back to the bounded idle wait.
    pub(crate) async fn acquire(hub: &Arc<WakeHub>, channel: String) -> Self {
        let notify = match hub.acquire(&channel).await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "pub/sub subscription failed; falling back to a 1 s re-check");
                None
            }
        };
        Self {
            hub: Arc::downgrade(hub),
            channel,
            notify,
        }
    }
}

impl Drop for WakeGuard {
    fn drop(&mut self) {
        if self.notify.is_none() {
            return;
        }
        let (Some(hub), Ok(rt)) = (self.hub.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let channel = std::mem::take(&mut self.channel);
        rt.spawn(async move { hub.release(&channel).await });
    }
}
