//! Thin handlers: parse and validate, call one service, map the result to the contract's
//! shape. One file per group of endpoints.

pub(crate) mod cache;
pub(crate) mod dashboard;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod operations;
pub(crate) mod queues;
