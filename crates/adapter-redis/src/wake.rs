//! Wake-ups over pub/sub: one subscriber connection per backend fans messages out to
//! in-process [`Notify`]s, so idle reservers and progress subscribers wait without polling.
//!
//! Channels are exact names (`SUBSCRIBE` / `SSUBSCRIBE`, never `PSUBSCRIBE`), each under the
//! hash tag of the queue or operation it belongs to. On a Redis 7 cluster the scripts
//! `SPUBLISH` and the hub `SSUBSCRIBE`s ([`WakeChannels::Sharded`]): a message then travels only
//! within the shard owning the channel's slot, instead of being broadcast over the cluster bus
//! to every node as `PUBLISH` is.
//!
//! After every reconnect the hub subscribes its whole table again — retrying with backoff
//! until it succeeds, so a failover that is still in progress cannot leave a channel
//! unsubscribed — and then wakes every waiter, because a message may have been lost in
//! between. A waiter also looks again by itself after at most [`MAX_IDLE_WAIT`], so a lost
//! wake-up costs latency, never a task or an event.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::{EventInterface, PubsubInterface};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::classify;
use spool_ports::PortError;

/// Longest an idle waiter sleeps before it looks again by itself.
pub(crate) const MAX_IDLE_WAIT: Duration = Duration::from_secs(1);

/// Which pub/sub the wake-ups use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WakeChannels {
    /// `PUBLISH` / `SUBSCRIBE`: one server, or a cluster older than Redis 7.
    Global,
    /// `SPUBLISH` / `SSUBSCRIBE` (Redis 7 sharded pub/sub): a Redis 7 cluster.
    Sharded,
}

impl WakeChannels {
    /// The command the scripts publish with.
    pub(crate) fn publish_command(self) -> &'static str {
        match self {
            Self::Global => "PUBLISH",
            Self::Sharded => "SPUBLISH",
        }
    }
}

#[derive(Default)]
struct Channels {
    /// Channel → (notify, holders).
    map: HashMap<String, (Arc<Notify>, usize)>,
}

impl Channels {
    fn wake_all(&self) {
        for (n, _) in self.map.values() {
            n.notify_waiters();
        }
    }
}

/// The subscriber connection and its channel table.
pub(crate) struct WakeHub {
    subscriber: SubscriberClient,
    mode: WakeChannels,
    channels: Arc<Mutex<Channels>>,
    /// Serialises SUBSCRIBE / UNSUBSCRIBE so a channel's state on the server follows the table.
    ops: Arc<tokio::sync::Mutex<()>>,
    tasks: Vec<JoinHandle<()>>,
}

async fn subscribe(
    subscriber: &SubscriberClient,
    mode: WakeChannels,
    channel: &str,
) -> Result<(), fred::error::Error> {
    match mode {
        WakeChannels::Global => subscriber.subscribe(channel).await,
        WakeChannels::Sharded => subscriber.ssubscribe(channel).await,
    }
}

async fn unsubscribe(
    subscriber: &SubscriberClient,
    mode: WakeChannels,
    channel: &str,
) -> Result<(), fred::error::Error> {
    match mode {
        WakeChannels::Global => subscriber.unsubscribe(channel).await,
        WakeChannels::Sharded => subscriber.sunsubscribe(channel).await,
    }
}

/// After a reconnect: subscribes every channel of the table again, retrying until it works
/// (or the hub is gone), then wakes every waiter.
async fn resubscribe_after_reconnects(
    subscriber: SubscriberClient,
    mode: WakeChannels,
    channels: Weak<Mutex<Channels>>,
    ops: Weak<tokio::sync::Mutex<()>>,
) {
    let mut reconnects = subscriber.reconnect_rx();
    loop {
        match reconnects.recv().await {
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
        // A cluster reconnect reports every node; one pass covers them all.
        while reconnects.try_recv().is_ok() {}
        let mut backoff = Duration::from_millis(50);
        loop {
            let (Some(table), Some(ops)) = (channels.upgrade(), ops.upgrade()) else {
                return;
            };
            let serial = ops.lock().await;
            let names: Vec<String> = table.lock().map.keys().cloned().collect();
            let all = futures::future::try_join_all(
                names.iter().map(|c| subscribe(&subscriber, mode, c)),
            )
            .await;
            drop(serial);
            match all {
                Ok(_) => {
                    tracing::debug!(channels = names.len(), "pub/sub subscriptions restored");
                    table.lock().wake_all();
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "re-subscribing after a reconnect failed; retrying");
                    // Waiters re-check now instead of after their idle wait.
                    table.lock().wake_all();
                    drop((table, ops));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_IDLE_WAIT);
                }
            }
        }
    }
}

impl WakeHub {
    /// Starts the dispatcher and the re-subscriber over an initialised subscriber client.
    pub(crate) fn start(subscriber: SubscriberClient, mode: WakeChannels) -> Self {
        let channels: Arc<Mutex<Channels>> = Arc::default();
        let ops: Arc<tokio::sync::Mutex<()>> = Arc::default();
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
                        channels.lock().wake_all();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let resubscriber = tokio::spawn(resubscribe_after_reconnects(
            subscriber.clone(),
            mode,
            Arc::downgrade(&channels),
            Arc::downgrade(&ops),
        ));
        Self {
            subscriber,
            mode,
            channels,
            ops,
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
        if let Err(e) = subscribe(&self.subscriber, self.mode, channel).await {
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
            if let Err(e) = unsubscribe(&self.subscriber, self.mode, channel).await {
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
