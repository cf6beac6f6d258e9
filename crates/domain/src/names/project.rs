//! Projects: the tenancy unit of cache scopes, API keys and rate limits.

use super::ident::identifier;

identifier!(
    /// A project (tenant) identifier: ASCII letters, digits, `_`, `-`, at most 64 bytes.
    ProjectId, component = "project", max = 64, extra = "_-", lowercase = false
);
