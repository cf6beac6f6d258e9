//! Progress operation IDs and step names.

use super::ident::identifier;

identifier!(
    /// A progress operation ID: ASCII letters, digits, `_`, `-`, at most 128 bytes. Generated
    /// (a ULID) when the caller does not supply one.
    OperationId, component = "operation id", max = 128, extra = "_-", lowercase = false
);

identifier!(
    /// The name of one step of an operation's plan: ASCII letters, digits and `_ . : -`, at
    /// most 64 bytes.
    StepName, component = "step name", max = 64, extra = "_.:-", lowercase = false
);
