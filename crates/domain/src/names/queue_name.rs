//! Queue names, task kinds, worker IDs and rate-limit policy names.

use super::ident::identifier;

identifier!(
    /// A queue name: lowercase letters, digits, `_`, `-`, at most 64 bytes. `embeddings`,
    /// `agent_tasks` and `exports` are the well-known queues; any valid name works.
    QueueName, component = "queue name", max = 64, extra = "_-", lowercase = true
);

impl QueueName {
    /// The well-known `embeddings` queue.
    pub fn embeddings() -> Self {
        Self("embeddings".to_owned())
    }

    /// The well-known `agent_tasks` queue.
    pub fn agent_tasks() -> Self {
        Self("agent_tasks".to_owned())
    }

    /// The well-known `exports` queue.
    pub fn exports() -> Self {
        Self("exports".to_owned())
    }
}

identifier!(
    /// What a task is, so a worker can route it to a handler: ASCII letters, digits and
    /// `_ . : -`, at most 128 bytes.
    TaskKind, component = "task kind", max = 128, extra = "_.:-", lowercase = false
);

identifier!(
    /// Who holds a lease: ASCII letters, digits and `_ . : @ -`, at most 128 bytes.
    WorkerId, component = "worker id", max = 128, extra = "_.:@-", lowercase = false
);

identifier!(
    /// A rate-limit policy name: lowercase letters, digits, `_`, `-`, at most 64 bytes.
    PolicyName, component = "policy name", max = 64, extra = "_-", lowercase = true
);
