//! Validated names: every user-supplied component of a key.
//!
//! Each newtype is built only through `parse`, which bounds the length and restricts the
//! characters to a safe set. None of the sets contains `{`, `}`, `*`, `?`, `[`, `]`, `\`,
//! whitespace or control characters, so no user input can change a Redis Cluster hash slot or
//! reach a glob pattern. Errors name the component (`invalid queue name: ...`).

mod cache_key;
mod correlation_id;
mod ident;
mod operation_id;
mod prefix;
mod project;
mod queue_name;
mod subject;
mod task_id;

pub use cache_key::{CacheKey, ScopedKey, UniqueKey};
pub use correlation_id::CorrelationId;
pub use operation_id::{OperationId, StepName};
pub use prefix::KeyPrefix;
pub use project::ProjectId;
pub use queue_name::{PolicyName, QueueName, TaskKind, WorkerId};
pub use subject::{Subject, UserId};
pub use task_id::TaskId;
