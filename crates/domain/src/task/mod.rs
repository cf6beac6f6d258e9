//! Tasks: what is enqueued ([`TaskSpec`]), what is stored ([`Task`]), and the status state
//! machine ([`TaskStatus`]) every adapter applies.
//!
//! ```text
//!   enqueue ──► scheduled ──due──► queued ──reserve──► running ──complete──► succeeded
//!                   ▲                ▲  ▲                 │
//!                   │ retry later    │  └─expired/release─┤ (attempts left / released)
//!                 failed ◄───────────┼─────fail(retry)────┤
//!                   │                └──requeue── dead ◄──┤ (no attempts left / fail(never))
//!                   └──────cancel──► cancelled ◄──────────┘ (cancel from any live state)
//! ```

mod record;
mod spec;
mod status;

pub use record::{Failure, Lease, LeaseToken, QueueStats, Retry, Task};
pub use spec::{MaxAttempts, Priority, Schedule, TaskSpec};
pub use status::{TaskEvent, TaskStatus, TransitionError};
