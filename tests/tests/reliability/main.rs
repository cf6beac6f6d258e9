//! Reliability and security: spool's promises under faults, with figures
//! (`docs/RELIABILITY.md` explains them and quotes the numbers these tests print).
//!
//! | module | what it proves |
//! |---|---|
//! | `fault_proxy` | latency, a black hole, cut and reset connections between the Redis adapter and Redis: no call hangs past the command timeout, errors are `Unavailable`, the adapter recovers without being rebuilt, the circuit breaker opens and closes again through half-open |
//! | `crash_safety` | ≥ 1,000 tasks through several worker *processes* killed with `SIGKILL`, and a `redis-server` (AOF, `appendfsync always`) killed and restarted: 0 lost, 0 duplicated completions, duplicate executions counted |
//! | `poison` | a handler that panics or always fails sends its task to the dead-letter set with the error; other tasks and queues go on |
//! | `model` | random sequences of cache, limiter and queue operations on Redis, with the memory adapter as the model: any divergence fails, shrunk |
//! | `hostile_input` | names, JSON bodies, `Last-Event-ID`, rate-limit specs, config files: never a panic, always a clear error; hash slots never move |
//! | `secrets` | passwords never appear in logs, errors or `Debug` output |
//!
//! Everything runs on `127.0.0.1`, is bounded in count and time, and stops by itself. Print
//! the figures with `cargo test -p spool-tests --test reliability -- --nocapture`.

#![allow(clippy::unwrap_used)]

mod crash_safety;
mod fault_proxy;
mod hostile_input;
mod model;
mod poison;
mod secrets;
