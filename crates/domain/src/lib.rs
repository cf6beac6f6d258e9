//! # spool-domain
//!
//! The pure core of spool: validated names, timestamps, the sliding-window math of the rate
//! limiter, the task model and its status state machine, progress plans, retry backoff and the
//! circuit breaker. Nothing here performs I/O, spawns tasks or reads a clock: every function
//! that needs "now" or randomness takes it as an argument, so the same rules run inside the
//! memory adapter, are mirrored by the Redis adapter's Lua scripts, and are property-tested.
//!
//! ```
//! use spool_domain::names::{ProjectId, QueueName};
//!
//! let project = ProjectId::parse("acme").unwrap();
//! assert_eq!(project.as_str(), "acme");
//! assert!(QueueName::parse("bad name").is_err());
//! assert_eq!(QueueName::embeddings().as_str(), "embeddings");
//! ```

pub mod backoff;
pub mod breaker;
pub mod error;
pub mod limit;
pub mod limits;
pub mod names;
pub mod progress;
pub mod secret;
pub mod task;
pub mod time;

pub use error::ValidationError;
pub use time::Timestamp;
