//! Progress of multi-step operations: a plan of weighted steps, the operation snapshot, and
//! the events subscribers receive.
//!
//! The overall percent is derived from the steps: `100 * Σ(weight·fraction) / Σ weight`.
//! Terminal states (`succeeded`, `failed`, `cancelled`) refuse further updates; `succeeded`
//! completes every step.

mod event;
mod operation;

pub use event::{EventId, EventKind, ProgressEvent};
pub use operation::{
    percent, Operation, OperationSpec, OperationState, ProgressUpdate, Step, StepRef, StepSpec,
    UpdateError, MAX_MESSAGE_BYTES,
};
