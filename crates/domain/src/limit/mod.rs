//! Rate limiting: policies, the pure sliding-window math, and decisions.
//!
//! Two algorithms:
//!
//! * [`counter`] — the **sliding-window counter** (default): two fixed windows, the previous
//!   one weighted by how much of it still overlaps the sliding window. O(1) state per key.
//! * [`log`] — the **exact sliding log**: every admitted request's time and cost. Exact, but
//!   O(limit) state per key; use it where a limit must never be exceeded by approximation.
//!
//! Both compute in whole milliseconds with integer arithmetic, so `retry_after` is exact:
//! with no other traffic, a request repeated after waiting `retry_after` is admitted.
//! Several policies combine all-or-nothing through [`decision::Decision::combine`]; a rejected
//! request consumes nothing from any policy. The Redis adapter's Lua scripts mirror this
//! module line by line.

pub mod counter;
pub mod decision;
pub mod log;
pub mod policy;

pub use decision::{Decision, PolicyDecision};
pub use policy::{Algorithm, Cost, LimitCheck, Policy};
