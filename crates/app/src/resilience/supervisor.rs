//! The supervisor: a background task that probes the backend while anything is degraded and
//! runs the recovery (cache) and hand-overs (queue, progress) once it answers.

use std::sync::{Arc, Weak};
use std::time::Duration;

use spool_ports::Health;
use tokio::time::Instant;

use super::cache::ResilientCache;
use super::guard::Guard;
use super::progress::ResilientProgress;
use super::queue::ResilientQueue;
use super::status::ResilienceStatus;
use super::{limiter_back, Recovery, Resilient, SUPERVISOR_TICK};

/// While healthy, how often local leftovers (finished local tasks, expired local operations)
/// are looked at, so their bookkeeping is dropped once their retention ends.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// One round; see [`Resilient::recover`].
pub(super) async fn recover(
    guard: &Guard,
    status: &ResilienceStatus,
    health: &dyn Health,
    cache: &ResilientCache,
    queue: &ResilientQueue,
    progress: &ResilientProgress,
) -> Recovery {
    let mut out = Recovery::default();
    if !guard.admits() {
        return out;
    }
    if let Err(e) = guard.call(|| health.check()).await {
        tracing::debug!(error = %e, "recovery probe: backend still unavailable");
        return out;
    }
    out.probed = true;
    out.cache = cache.recover().await;
    limiter_back(status);
    out.queue = queue.hand_over().await.ok();
    out.progress = progress.hand_over().await.ok();
    out
}

struct Parts {
    cache: Weak<ResilientCache>,
    queue: Weak<ResilientQueue>,
    progress: Weak<ResilientProgress>,
    health: Weak<dyn Health>,
}

struct Live {
    cache: Arc<ResilientCache>,
    queue: Arc<ResilientQueue>,
    progress: Arc<ResilientProgress>,
    health: Arc<dyn Health>,
}

impl Parts {
    fn upgrade(&self) -> Option<Live> {
        Some(Live {
            cache: self.cache.upgrade()?,
            queue: self.queue.upgrade()?,
            progress: self.progress.upgrade()?,
            health: self.health.upgrade()?,
        })
    }
}

pub(super) fn spawn(r: &Resilient) -> tokio::task::JoinHandle<()> {
    let parts = Parts {
        cache: Arc::downgrade(&r.cache),
        queue: Arc::downgrade(&r.queue),
        progress: Arc::downgrade(&r.progress),
        health: Arc::downgrade(&r.health),
    };
    let guard = Arc::clone(&r.guard);
    let status = r.status.clone();
    tokio::spawn(async move {
        let mut pruned = Instant::now();
        loop {
            tokio::select! {
                () = status.woken() => {}
                () = tokio::time::sleep(SUPERVISOR_TICK) => {}
            }
            let Some(live) = parts.upgrade() else {
                tracing::debug!("resilience supervisor stops: the services are gone");
                return;
            };
            let leftovers = live.queue.local_tasks() > 0 || live.progress.local_operations() > 0;
            let prune = leftovers && pruned.elapsed() >= PRUNE_EVERY;
            if status.degraded() || prune {
                if prune {
                    pruned = Instant::now();
                }
                recover(
                    &guard,
                    &status,
                    &*live.health,
                    &live.cache,
                    &live.queue,
                    &live.progress,
                )
                .await;
            }
        }
    })
}
