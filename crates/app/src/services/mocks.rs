//! `mockall` mocks of every port, for unit tests of the services and the middleware.

#![allow(missing_docs, unreachable_pub)]

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use spool_domain::limit::{Cost, Decision, LimitCheck};
use spool_domain::names::{OperationId, ProjectId, QueueName, ScopedKey, TaskId};
use spool_domain::progress::{EventId, Operation, OperationSpec, ProgressEvent, ProgressUpdate};
use spool_domain::task::{Failure, Lease, LeaseToken, QueueStats, Task, TaskSpec};
use spool_ports::{
    BackendHealth, CacheEntry, CacheStore, Enqueued, EventStream, Health, PortError, ProgressStore,
    QueueStore, RateLimitStore, ReserveOptions, TaskQuery,
};

mockall::mock! {
    pub Cache {}
    #[async_trait]
    impl CacheStore for Cache {
        async fn get(&self, key: &ScopedKey) -> Result<Option<Bytes>, PortError>;
        async fn get_many(&self, keys: &[ScopedKey]) -> Result<Vec<Option<Bytes>>, PortError>;
        async fn set(&self, key: &ScopedKey, value: Bytes, ttl: Duration) -> Result<(), PortError>;
        async fn set_many(&self, entries: Vec<CacheEntry>) -> Result<(), PortError>;
        async fn delete(&self, key: &ScopedKey) -> Result<bool, PortError>;
        async fn invalidate_project(&self, project: &ProjectId) -> Result<(), PortError>;
    }
}

mockall::mock! {
    pub Limiter {}
    #[async_trait]
    impl RateLimitStore for Limiter {
        async fn check(&self, checks: &[LimitCheck], cost: Cost) -> Result<Decision, PortError>;
    }
}

mockall::mock! {
    pub Queue {}
    #[async_trait]
    impl QueueStore for Queue {
        async fn enqueue(&self, queue: &QueueName, spec: TaskSpec) -> Result<Enqueued, PortError>;
        async fn reserve(&self, queues: &[QueueName], opts: ReserveOptions) -> Result<Option<Lease>, PortError>;
        async fn heartbeat(&self, queue: &QueueName, task: TaskId, token: LeaseToken, lease: Duration) -> Result<Lease, PortError>;
        async fn complete(&self, queue: &QueueName, task: TaskId, token: LeaseToken, result: Option<serde_json::Value>) -> Result<Task, PortError>;
        async fn fail(&self, queue: &QueueName, task: TaskId, token: LeaseToken, failure: Failure) -> Result<Task, PortError>;
        async fn release(&self, queue: &QueueName, task: TaskId, token: LeaseToken, reason: &str) -> Result<Task, PortError>;
        async fn cancel(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError>;
        async fn requeue(&self, queue: &QueueName, task: TaskId) -> Result<Task, PortError>;
        async fn get(&self, queue: &QueueName, task: TaskId) -> Result<Option<Task>, PortError>;
        async fn stats(&self, queues: &[QueueName]) -> Result<Vec<QueueStats>, PortError>;
        async fn list(&self, queue: &QueueName, query: TaskQuery) -> Result<Vec<Task>, PortError>;
    }
}

mockall::mock! {
    pub Progress {}
    #[async_trait]
    impl ProgressStore for Progress {
        async fn start(&self, spec: OperationSpec) -> Result<ProgressEvent, PortError>;
        async fn update(&self, id: &OperationId, update: ProgressUpdate) -> Result<ProgressEvent, PortError>;
        async fn get(&self, id: &OperationId) -> Result<Option<Operation>, PortError>;
        async fn events_after(&self, id: &OperationId, after: Option<EventId>, limit: usize) -> Result<Vec<ProgressEvent>, PortError>;
        async fn subscribe(&self, id: &OperationId, after: Option<EventId>) -> Result<EventStream, PortError>;
    }
}

mockall::mock! {
    pub Health {}
    #[async_trait]
    impl Health for Health {
        async fn check(&self) -> Result<BackendHealth, PortError>;
    }
}

/// A one-minute sliding-window policy `name` of `limit` requests, on `scope`, with `mode`.
pub fn rate_policy(
    name: &str,
    scope: super::Scope,
    limit: u64,
    mode: super::FailureMode,
) -> super::RatePolicy {
    super::RatePolicy {
        policy: spool_domain::limit::Policy::new(
            spool_domain::names::PolicyName::parse(name).expect("a valid policy name"),
            limit,
            Duration::from_secs(60),
            spool_domain::limit::Algorithm::SlidingWindow,
        )
        .expect("a valid policy"),
        scope,
        failure_mode: mode,
    }
}

/// A transient error, as a backend that is down returns.
pub fn unavailable() -> PortError {
    PortError::Unavailable {
        message: "backend down".into(),
        source: None,
    }
}
