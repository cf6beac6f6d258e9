//! # spool-ports
//!
//! The async traits (ports) every spool adapter implements, the one error type
//! [`PortError`], and — behind the `conformance` feature — the executable contract both
//! adapters must pass.
//!
//! | port | service |
//! |---|---|
//! | [`CacheStore`] | byte cache scoped by project |
//! | [`RateLimitStore`] | sliding-window limits, many policies per atomic check |
//! | [`QueueStore`] | named queues with priorities, delays, leases, retries, dead letters |
//! | [`ProgressStore`] | multi-step operations with resumable event streams |
//! | [`Health`] | backend liveness and latency |
//!
//! Every trait is dyn-compatible, so the app picks adapters at run time:
//!
//! ```
//! use std::sync::Arc;
//! use spool_ports::{CacheStore, QueueStore};
//!
//! struct Backends {
//!     cache: Arc<dyn CacheStore>,
//!     queue: Arc<dyn QueueStore>,
//! }
//! ```
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `conformance` | [`conformance`] test functions and the [`conformance_suite!`] macro |

pub mod cache;
pub mod error;
pub mod health;
pub mod limiter;
pub mod progress;
pub mod queue;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use cache::{CacheEntry, CacheStore, Ttl};
pub use error::{BoxError, PortError};
pub use health::{BackendHealth, Health};
pub use limiter::RateLimitStore;
pub use progress::{EventStream, ProgressStore};
pub use queue::{
    check_complete_many, check_reserve_many, complete_rest, Completion, Enqueued, QueueStore,
    ReserveOptions, TaskListing, TaskQuery, COMPLETE_MANY_MAX, RESERVE_MANY_MAX,
};
pub use spool_domain as domain;
