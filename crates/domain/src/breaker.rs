//! Circuit breaker state machine (closed / open / half-open), driven by an injected clock.
//!
//! Placeholder until the breaker lands; see issue 2.
