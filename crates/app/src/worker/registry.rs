//! Handlers by (queue, kind), type-erased so one registry holds every payload type.

use std::any::type_name;
use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use serde::de::DeserializeOwned;
use spool_domain::names::{QueueName, TaskKind};

use super::context::{HandlerResult, TaskContext};
use crate::services::panic_message;

/// Why a handler could not even start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StartError {
    /// The payload does not deserialise into the handler's type.
    Poison(String),
    /// The handler panicked before returning its future.
    Panicked(String),
}

/// A handler with its payload type erased.
pub(crate) trait ErasedHandler: Send + Sync {
    /// Deserialises `payload` and starts the handler.
    fn start(
        &self,
        ctx: TaskContext,
        payload: &serde_json::Value,
    ) -> Result<BoxFuture<'static, HandlerResult>, StartError>;
}

struct Typed<T, F> {
    f: F,
    _payload: PhantomData<fn() -> T>,
}

impl<T, F, Fut> ErasedHandler for Typed<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(TaskContext, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn start(
        &self,
        ctx: TaskContext,
        payload: &serde_json::Value,
    ) -> Result<BoxFuture<'static, HandlerResult>, StartError> {
        // Read from the lease's payload in place: no deep copy of the JSON tree per attempt.
        let payload = T::deserialize(payload).map_err(|e| {
            StartError::Poison(format!(
                "payload does not match {}: {e}",
                short_type_name::<T>()
            ))
        })?;
        catch_unwind(AssertUnwindSafe(|| (self.f)(ctx, payload).boxed()))
            .map_err(|p| StartError::Panicked(panic_message(&*p)))
    }
}

fn short_type_name<T>() -> &'static str {
    let full = type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Handlers by queue, then kind.
#[derive(Default, Clone)]
pub(crate) struct Registry {
    handlers: BTreeMap<QueueName, BTreeMap<TaskKind, Arc<dyn ErasedHandler>>>,
}

impl Registry {
    /// Adds (or replaces) the handler of `kind` on `queue`.
    pub(crate) fn insert<T, F, Fut>(&mut self, queue: QueueName, kind: TaskKind, f: F)
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(TaskContext, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler: Arc<dyn ErasedHandler> = Arc::new(Typed {
            f,
            _payload: PhantomData,
        });
        self.handlers
            .entry(queue)
            .or_default()
            .insert(kind, handler);
    }

    /// The handler of `kind` on `queue`.
    pub(crate) fn get(&self, queue: &QueueName, kind: &TaskKind) -> Option<Arc<dyn ErasedHandler>> {
        self.handlers.get(queue).and_then(|m| m.get(kind)).cloned()
    }

    /// Queues with at least one handler, sorted.
    pub(crate) fn queues(&self) -> Vec<QueueName> {
        self.handlers.keys().cloned().collect()
    }

    /// The kinds registered on `queue`.
    pub(crate) fn kinds(&self, queue: &QueueName) -> Vec<TaskKind> {
        self.handlers
            .get(queue)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}
