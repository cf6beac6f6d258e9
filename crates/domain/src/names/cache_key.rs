//! Cache keys and task unique keys.

use super::ident::identifier;
use super::ProjectId;

identifier!(
    /// A cache key inside one project: ASCII letters, digits and `_ . : / @ = + -`, at most
    /// 256 bytes. Services compose `name:key` here (e.g. `user:42:profile`).
    CacheKey, component = "cache key", max = 256, extra = "_.:/@=+-", lowercase = false
);

identifier!(
    /// A task's de-duplication key: while a task with this key is not finished, enqueueing
    /// another with the same key returns the existing task. Same characters as [`CacheKey`].
    UniqueKey, component = "unique key", max = 256, extra = "_.:/@=+-", lowercase = false
);

/// A cache key together with the project scope it lives in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopedKey {
    /// The project scope; invalidating it drops every key below.
    pub project: ProjectId,
    /// The key inside that scope.
    pub key: CacheKey,
}

impl ScopedKey {
    /// Pairs a project with a key.
    pub fn new(project: ProjectId, key: CacheKey) -> Self {
        Self { project, key }
    }
}
