//! Correlation IDs that follow a request into tasks, spans and progress events.

use super::ident::identifier;

identifier!(
    /// A correlation ID (`X-Correlation-ID`): ASCII letters, digits and `_ . : -`, at most 128
    /// bytes.
    CorrelationId, component = "correlation id", max = 128, extra = "_.:-", lowercase = false
);
