//! [`ResilienceStatus`]: which implementation each service runs on and the breaker's state,
//! readable by `/health/ready` and recorded into [`Metrics`].

use std::fmt;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use spool_domain::breaker::BreakerState;
use tokio::sync::Notify;

use super::guard::BreakerCell;
use crate::telemetry::{Metrics, ServiceMode};

/// One of the four services the resilience layer wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// The cache.
    Cache,
    /// The rate limiter.
    Limiter,
    /// The queue.
    Queue,
    /// Progress tracking.
    Progress,
}

impl Service {
    /// Every service, in report order.
    pub const ALL: [Service; 4] = [
        Service::Cache,
        Service::Limiter,
        Service::Queue,
        Service::Progress,
    ];

    /// `cache`, `limiter`, `queue` or `progress` (the names metrics and health use).
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Cache => "cache",
            Service::Limiter => "limiter",
            Service::Queue => "queue",
            Service::Progress => "progress",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One service as [`ResilienceStatus::snapshot`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSnapshot {
    /// The service.
    pub service: Service,
    /// `Primary` (the configured backend) or `Fallback` (the local stand-in).
    pub mode: ServiceMode,
    /// The backend's breaker, when the service has one (Redis); `None` on memory.
    pub breaker: Option<BreakerState>,
    /// Work held locally that the backend has not received yet: tasks waiting to be handed
    /// over (queue), running operations started during the outage (progress), projects whose
    /// invalidation is owed to the backend (cache). 0 for the limiter.
    pub local_pending: u64,
}

impl ServiceSnapshot {
    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.service.as_str()
    }
}

/// Every service's mode and the breaker, at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResilienceSnapshot {
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// The four services, in [`Service::ALL`] order.
    pub services: Vec<ServiceSnapshot>,
    /// Whether any service runs on its fallback or still holds work for the backend.
    pub degraded: bool,
}

impl ResilienceSnapshot {
    /// The entry of `service`.
    pub fn service(&self, service: Service) -> &ServiceSnapshot {
        // `services` always holds the four, in order.
        &self.services[service.index()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    mode: ServiceMode,
    pending: u64,
}

struct Inner {
    backend: &'static str,
    breaker: Option<Arc<BreakerCell>>,
    entries: Mutex<[Entry; 4]>,
    /// The breaker state name last recorded into metrics.
    published_breaker: Mutex<Option<&'static str>>,
    metrics: RwLock<Vec<Metrics>>,
    wake: Notify,
}

/// Where each service runs and how the breaker stands: a cheap, cloneable handle shared by
/// the resilient wrappers (which write it) and health / metrics (which read it).
///
/// ```
/// use spool_app::resilience::{ResilienceStatus, Service};
/// use spool_app::telemetry::ServiceMode;
///
/// let status = ResilienceStatus::without_fallback("memory");
/// let snap = status.snapshot();
/// assert!(!snap.degraded);
/// assert_eq!(snap.service(Service::Queue).mode, ServiceMode::Primary);
/// assert_eq!(snap.service(Service::Queue).breaker, None);
/// ```
#[derive(Clone)]
pub struct ResilienceStatus {
    inner: Arc<Inner>,
}

impl fmt::Debug for ResilienceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceStatus")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl ResilienceStatus {
    /// The status of a backend with no breaker and no fallback (memory): every service is
    /// always `Primary`.
    pub fn without_fallback(backend: &'static str) -> Self {
        Self::build(backend, None)
    }

    /// The status of a guarded backend whose breaker is `breaker`.
    pub(crate) fn with_breaker(backend: &'static str, breaker: Arc<BreakerCell>) -> Self {
        Self::build(backend, Some(breaker))
    }

    fn build(backend: &'static str, breaker: Option<Arc<BreakerCell>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                breaker,
                entries: Mutex::new(
                    [Entry {
                        mode: ServiceMode::Primary,
                        pending: 0,
                    }; 4],
                ),
                published_breaker: Mutex::new(None),
                metrics: RwLock::new(Vec::new()),
                wake: Notify::new(),
            }),
        }
    }

    /// `memory` or `redis`.
    pub fn backend(&self) -> &'static str {
        self.inner.backend
    }

    /// Every service's mode, the breaker's state now, and whether anything is degraded.
    pub fn snapshot(&self) -> ResilienceSnapshot {
        let breaker = self.breaker_state();
        let entries = *self.inner.entries.lock();
        let services: Vec<ServiceSnapshot> = Service::ALL
            .iter()
            .map(|&service| {
                let e = entries[service.index()];
                ServiceSnapshot {
                    service,
                    mode: e.mode,
                    breaker,
                    local_pending: e.pending,
                }
            })
            .collect();
        let degraded = services
            .iter()
            .any(|s| s.mode == ServiceMode::Fallback || s.local_pending > 0);
        ResilienceSnapshot {
            backend: self.inner.backend,
            services,
            degraded,
        }
    }

    /// Whether any service runs on its fallback or holds work for the backend.
    pub fn degraded(&self) -> bool {
        self.snapshot().degraded
    }

    /// The mode of `service`.
    pub fn mode(&self, service: Service) -> ServiceMode {
        self.inner.entries.lock()[service.index()].mode
    }

    /// The breaker's state now (`None` without a breaker).
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.inner.breaker.as_ref().map(|b| b.state())
    }

    /// Records the service modes and the breaker state into `metrics` from now on (the
    /// `spool_degraded` and `spool_breaker_state` gauges, and what
    /// [`Metrics::services`] reports), starting with the current values.
    pub fn attach_metrics(&self, metrics: &Metrics) {
        self.inner.metrics.write().push(metrics.clone());
        let snap = self.snapshot();
        for s in &snap.services {
            metrics.set_service_mode(s.name(), s.mode);
            if let Some(b) = &s.breaker {
                metrics.set_breaker_state(s.name(), b);
            }
        }
    }

    /// Re-reads the breaker (whose state also changes with time alone, open → half-open)
    /// and records it into the attached metrics when it changed. Cheap; call it before
    /// rendering `/metrics`.
    pub fn publish(&self) {
        if let Some(state) = self.breaker_state() {
            self.breaker_changed(state);
        }
    }

    /// Sets the mode of `service`; logs and records a change.
    pub(crate) fn set_mode(&self, service: Service, mode: ServiceMode) {
        let changed = {
            let mut entries = self.inner.entries.lock();
            let e = &mut entries[service.index()];
            let changed = e.mode != mode;
            e.mode = mode;
            changed
        };
        if changed {
            match mode {
                ServiceMode::Fallback => tracing::warn!(
                    service = service.as_str(),
                    backend = self.inner.backend,
                    "backend unavailable; serving from the local fallback"
                ),
                ServiceMode::Primary => tracing::info!(
                    service = service.as_str(),
                    backend = self.inner.backend,
                    "back on the backend"
                ),
            }
            for m in self.inner.metrics.read().iter() {
                m.set_service_mode(service.as_str(), mode);
            }
            self.wake();
        }
    }

    /// Sets how much work `service` holds locally for the backend.
    pub(crate) fn set_pending(&self, service: Service, pending: u64) {
        self.inner.entries.lock()[service.index()].pending = pending;
    }

    /// Records a breaker state into the attached metrics when its name changed.
    pub(crate) fn breaker_changed(&self, state: BreakerState) {
        let name = state.name();
        {
            let mut last = self.inner.published_breaker.lock();
            if *last == Some(name) {
                return;
            }
            *last = Some(name);
        }
        tracing::info!(
            backend = self.inner.backend,
            breaker = name,
            "circuit breaker changed state"
        );
        for m in self.inner.metrics.read().iter() {
            for s in Service::ALL {
                m.set_breaker_state(s.as_str(), &state);
            }
        }
        if name != "closed" {
            self.wake();
        }
    }

    /// Wakes the supervisor (recovery and hand-over run there).
    pub(crate) fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Resolves at the next [`ResilienceStatus::wake`] (or at once when one is pending).
    pub(crate) async fn woken(&self) {
        self.inner.wake.notified().await;
    }
}
