//! [`ResilientCache`]: the primary cache, or a local [`MemoryCache`] while it is unavailable,
//! with the touched projects invalidated on the primary before it serves again.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use spool_adapter_memory::{Clock, MemoryCache};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{ProjectId, ScopedKey};
use spool_ports::{CacheEntry, CacheStore, PortError, Ttl};

use super::guard::{CallError, Guard};
use super::status::{ResilienceStatus, Service};
use crate::telemetry::ServiceMode;

/// Default bound of the set of projects written during an outage.
pub const DEFAULT_MAX_TOUCHED_PROJECTS: usize = 10_000;

struct State {
    mode: ServiceMode,
    /// The fallback; replaced by an empty one whenever the mode changes, so it only ever
    /// holds what was written during the current outage.
    local: Arc<MemoryCache>,
    /// Projects written, deleted from or invalidated on the fallback during this outage.
    touched: HashSet<ProjectId>,
    /// More projects were touched than `touched` may hold.
    overflowed: bool,
}

/// Where one call goes.
enum Route {
    Primary,
    Local(Arc<MemoryCache>),
}

/// A [`CacheStore`] over a primary with a local fallback. See the [module docs](super).
pub struct ResilientCache {
    primary: Arc<dyn CacheStore>,
    guard: Arc<Guard>,
    status: ResilienceStatus,
    limits: StoreLimits,
    clock: Arc<dyn Clock>,
    max_touched: usize,
    state: Mutex<State>,
    /// Held by the one recovery in progress.
    recovering: tokio::sync::Mutex<()>,
}

impl fmt::Debug for ResilientCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("ResilientCache")
            .field("mode", &st.mode)
            .field("touched", &st.touched.len())
            .finish_non_exhaustive()
    }
}

impl ResilientCache {
    /// Wraps `primary`; the fallback is a [`MemoryCache`] with `limits` on `clock`, and at
    /// most `max_touched` projects are remembered per outage.
    pub fn new(
        primary: Arc<dyn CacheStore>,
        guard: Arc<Guard>,
        status: ResilienceStatus,
        limits: StoreLimits,
        clock: Arc<dyn Clock>,
        max_touched: usize,
    ) -> Self {
        let local = Arc::new(MemoryCache::new(&limits, Arc::clone(&clock)));
        Self {
            primary,
            guard,
            status,
            limits,
            clock,
            max_touched: max_touched.max(1),
            state: Mutex::new(State {
                mode: ServiceMode::Primary,
                local,
                touched: HashSet::new(),
                overflowed: false,
            }),
            recovering: tokio::sync::Mutex::new(()),
        }
    }

    /// Primary or fallback.
    pub fn mode(&self) -> ServiceMode {
        self.state.lock().mode
    }

    /// Projects whose invalidation the primary is owed.
    pub fn touched_projects(&self) -> usize {
        self.state.lock().touched.len()
    }

    fn fresh_local(&self) -> Arc<MemoryCache> {
        Arc::new(MemoryCache::new(&self.limits, Arc::clone(&self.clock)))
    }

    fn touch(&self, st: &mut State, project: &ProjectId) {
        if st.touched.contains(project) {
            return;
        }
        if st.touched.len() >= self.max_touched {
            if !st.overflowed {
                st.overflowed = true;
                tracing::warn!(
                    max = self.max_touched,
                    "more projects written during the outage than can be remembered; \
                     values of the others may be served stale after recovery until they expire"
                );
            }
            return;
        }
        st.touched.insert(project.clone());
        self.status
            .set_pending(Service::Cache, st.touched.len() as u64);
    }

    /// Where a call about `projects` goes; a call on the fallback touches them (in the same
    /// step as the decision, so a recovery in progress sees them).
    fn route<'a>(&self, projects: impl IntoIterator<Item = &'a ProjectId>) -> Route {
        let mut st = self.state.lock();
        match st.mode {
            ServiceMode::Primary => Route::Primary,
            ServiceMode::Fallback => {
                for p in projects {
                    self.touch(&mut st, p);
                }
                let local = Arc::clone(&st.local);
                drop(st);
                if self.guard.admits() {
                    // The backend may be back: the supervisor recovers in the background.
                    self.status.wake();
                }
                Route::Local(local)
            }
        }
    }

    /// Switches to the fallback (an empty one when coming from the primary), touching
    /// `projects`; returns it.
    fn fall_back<'a>(
        &self,
        projects: impl IntoIterator<Item = &'a ProjectId>,
        why: &CallError,
    ) -> Arc<MemoryCache> {
        let mut st = self.state.lock();
        if st.mode == ServiceMode::Primary {
            tracing::warn!(error = %why, "cache backend unavailable; using the local cache");
            st.mode = ServiceMode::Fallback;
            st.local = self.fresh_local();
            st.touched.clear();
            st.overflowed = false;
            self.status.set_mode(Service::Cache, ServiceMode::Fallback);
        }
        for p in projects {
            self.touch(&mut st, p);
        }
        Arc::clone(&st.local)
    }

    /// Ends the outage when the primary is reachable: every project touched during it is
    /// invalidated on the primary (so no value overwritten, deleted or invalidated during the
    /// outage survives there), then the local cache is dropped and calls go to the primary.
    /// Calls made meanwhile keep using the fallback and their projects are invalidated too.
    ///
    /// Returns whether the cache is on the primary afterwards; `false` when the primary
    /// failed (the remaining projects stay owed) or another recovery is running.
    pub async fn recover(&self) -> bool {
        let Ok(_running) = self.recovering.try_lock() else {
            return false;
        };
        loop {
            let (batch, overflowed) = {
                let mut st = self.state.lock();
                if st.mode == ServiceMode::Primary {
                    return true;
                }
                if st.touched.is_empty() {
                    if st.overflowed {
                        tracing::warn!(
                            "cache recovered after an outage that touched more projects than \
                             were remembered; only the remembered ones were invalidated"
                        );
                    }
                    st.mode = ServiceMode::Primary;
                    st.local = self.fresh_local();
                    st.overflowed = false;
                    drop(st);
                    self.status.set_pending(Service::Cache, 0);
                    self.status.set_mode(Service::Cache, ServiceMode::Primary);
                    return true;
                }
                let batch: Vec<ProjectId> = st.touched.drain().collect();
                (batch, st.overflowed)
            };
            tracing::info!(
                projects = batch.len(),
                overflowed,
                "cache recovery: invalidating the projects written during the outage"
            );
            for (i, project) in batch.iter().enumerate() {
                if let Err(e) = self
                    .guard
                    .call(|| self.primary.invalidate_project(project))
                    .await
                {
                    tracing::warn!(error = %e, project = %project, "cache recovery stopped");
                    let mut st = self.state.lock();
                    st.touched.extend(batch[i..].iter().cloned());
                    self.status
                        .set_pending(Service::Cache, st.touched.len() as u64);
                    return false;
                }
            }
        }
    }
}

#[async_trait]
impl CacheStore for ResilientCache {
    async fn get(&self, key: &ScopedKey) -> Result<Option<Bytes>, PortError> {
        match self.route([]) {
            Route::Local(local) => local.get(key).await,
            Route::Primary => match self.guard.call(|| self.primary.get(key)).await {
                Ok(v) => Ok(v),
                Err(e) if e.wants_fallback() => self.fall_back([], &e).get(key).await,
                Err(e) => Err(e.into_port_error()),
            },
        }
    }

    async fn get_many(&self, keys: &[ScopedKey]) -> Result<Vec<Option<Bytes>>, PortError> {
        match self.route([]) {
            Route::Local(local) => local.get_many(keys).await,
            Route::Primary => match self.guard.call(|| self.primary.get_many(keys)).await {
                Ok(v) => Ok(v),
                Err(e) if e.wants_fallback() => self.fall_back([], &e).get_many(keys).await,
                Err(e) => Err(e.into_port_error()),
            },
        }
    }

    async fn set(&self, key: &ScopedKey, value: Bytes, ttl: Ttl) -> Result<(), PortError> {
        match self.route([&key.project]) {
            Route::Local(local) => local.set(key, value, ttl).await,
            Route::Primary => {
                match self
                    .guard
                    .call(|| self.primary.set(key, value.clone(), ttl))
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(e) if e.wants_fallback() => {
                        self.fall_back([&key.project], &e)
                            .set(key, value, ttl)
                            .await
                    }
                    Err(e) => Err(e.into_port_error()),
                }
            }
        }
    }

    async fn set_many(&self, entries: Vec<CacheEntry>) -> Result<(), PortError> {
        let projects: Vec<ProjectId> = entries.iter().map(|e| e.key.project.clone()).collect();
        match self.route(&projects) {
            Route::Local(local) => local.set_many(entries).await,
            Route::Primary => {
                match self
                    .guard
                    .call(|| self.primary.set_many(entries.clone()))
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(e) if e.wants_fallback() => {
                        self.fall_back(&projects, &e).set_many(entries).await
                    }
                    Err(e) => Err(e.into_port_error()),
                }
            }
        }
    }

    async fn delete(&self, key: &ScopedKey) -> Result<bool, PortError> {
        match self.route([&key.project]) {
            Route::Local(local) => local.delete(key).await,
            Route::Primary => match self.guard.call(|| self.primary.delete(key)).await {
                Ok(v) => Ok(v),
                Err(e) if e.wants_fallback() => {
                    self.fall_back([&key.project], &e).delete(key).await
                }
                Err(e) => Err(e.into_port_error()),
            },
        }
    }

    async fn invalidate_project(&self, project: &ProjectId) -> Result<(), PortError> {
        match self.route([project]) {
            Route::Local(local) => local.invalidate_project(project).await,
            Route::Primary => {
                match self
                    .guard
                    .call(|| self.primary.invalidate_project(project))
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(e) if e.wants_fallback() => {
                        self.fall_back([project], &e)
                            .invalidate_project(project)
                            .await
                    }
                    Err(e) => Err(e.into_port_error()),
                }
            }
        }
    }
}
