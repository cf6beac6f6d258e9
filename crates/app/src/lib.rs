//! # spool-app
//!
//! Configuration, wiring, services, resilience, HTTP and telemetry of spool.
