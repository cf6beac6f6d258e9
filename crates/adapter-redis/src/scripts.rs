//! The Lua scripts (each in its own file under `lua/`), loaded once at connect and called by
//! SHA with a `NOSCRIPT` fallback: after a server restart, a `SCRIPT FLUSH`, or on a cluster
//! node that never saw `SCRIPT LOAD` (a promoted replica, a node added later) the first call
//! sends the body with `EVAL` to the node owning the keys' slot, which also caches it there.
//! The one exception is a script queued in a transaction ([`LuaScript::queue_eval`], the
//! cache's large writes): it always goes as `EVAL`, since a `NOSCRIPT` there would not undo
//! the commands queued before it.
//!
//! Every script is prefixed with one line defining `WAKE_PUBLISH` (`PUBLISH` or, on a Redis 7
//! cluster, `SPUBLISH`; see [`WakeChannels`]), so the SHA differs between the two modes.
//!
//! Before anything is sent, [`LuaScript::run`] checks that the call's keys share one hash
//! slot, so a layout bug is an `Internal` error naming the script on every deployment — not a
//! `CROSSSLOT` that only shows on a cluster.

use fred::clients::{Pool, Transaction};
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, FromValue, Key, Value};
use spool_ports::PortError;

use crate::error::classify;
use crate::keys::{hashed_part, slot, tag_range};
use crate::wake::WakeChannels;

/// Queue scripts share a prelude (keys, time, maintenance); it is prepended at compile time.
macro_rules! queue_script {
    ($file:literal) => {
        concat!(
            include_str!("../lua/queue_common.lua"),
            "\n",
            include_str!(concat!("../lua/", $file))
        )
    };
}

/// One script: its body and SHA-1.
#[derive(Debug, Clone)]
pub(crate) struct LuaScript {
    name: &'static str,
    body: String,
    script: Script,
}

impl LuaScript {
    fn new(name: &'static str, source: &'static str, wake: WakeChannels) -> Self {
        let body = format!(
            "local WAKE_PUBLISH = '{}'\n{source}",
            wake.publish_command()
        );
        Self {
            name,
            script: Script::from_lua(body.as_str()),
            body,
        }
    }

    /// The hash slot shared by `keys`.
    ///
    /// # Errors
    /// `Internal` when they span several slots (a layout bug) or there are none.
    pub(crate) fn slot_of(&self, keys: &[String]) -> Result<u16, PortError> {
        Ok(slot(self.one_slot(keys)?))
    }

    /// The hash tag (or whole key) that decides the slot shared by `keys`, without computing
    /// the slot.
    ///
    /// # Errors
    /// As for [`LuaScript::slot_of`].
    fn one_slot<'k>(&self, keys: &'k [String]) -> Result<&'k [u8], PortError> {
        let (head, rest) = keys.split_first().ok_or_else(|| {
            PortError::internal(format!("script {} called without keys", self.name))
        })?;
        let h = head.as_bytes();
        let tag = hashed_part(h);
        // Keys of one script are built from one base, so they start with the same bytes
        // through the end of its hash tag: a prefix compare tells them apart, with no scan for
        // the braces and no CRC (this runs on every script call). Others compare their tags;
        // only a differing tag needs the CRC.
        let same_base = tag_range(h).map(|r| &h[..=r.end]);
        for k in rest.iter().map(String::as_bytes) {
            if same_base.is_some_and(|base| k.starts_with(base)) {
                continue;
            }
            let other = hashed_part(k);
            if other != tag && slot(other) != slot(tag) {
                return Err(PortError::internal(format!(
                    "script {} would touch keys of several hash slots",
                    self.name
                )));
            }
        }
        Ok(tag)
    }

    /// `EVALSHA` (routed to the node owning the keys' slot), falling back to `EVAL` when that
    /// node does not know the script. Works on a [`Pool`] or on one of its clients.
    pub(crate) async fn run<R: FromValue, C: LuaInterface + Sync>(
        &self,
        client: &C,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, PortError> {
        self.one_slot(&keys)?;
        // As fred keys (shared bytes) the copies kept for a NOSCRIPT retry cost no allocation
        // per key.
        let keys: Vec<Key> = keys.into_iter().map(Key::from).collect();
        let sha = self.script.sha1().clone();
        match client
            .evalsha::<Value, _, _, _>(sha, keys.clone(), args.clone())
            .await
        {
            Ok(v) => convert(v, self.name),
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                tracing::debug!(
                    script = self.name,
                    "script not cached on the server; sending it"
                );
                let v = client
                    .eval::<Value, _, _, _>(self.body.as_str(), keys, args)
                    .await
                    .map_err(classify)?;
                convert(v, self.name)
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// Queues `EVAL` of the script in `tx`: with its body, since a `NOSCRIPT` inside a
    /// transaction would not undo the commands before it.
    ///
    /// # Errors
    /// As for [`LuaScript::slot_of`]; what fred reports while queuing.
    pub(crate) async fn queue_eval(
        &self,
        tx: &Transaction,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<(), PortError> {
        // fred's transactions have no `eval`: the command by hand, routed to the keys' slot.
        let slot = self.slot_of(&keys)?;
        let mut argv = Vec::with_capacity(2 + keys.len() + args.len());
        argv.push(Value::from(self.body.as_str()));
        argv.push(Value::from(keys.len() as i64));
        argv.extend(keys.into_iter().map(Value::from));
        argv.extend(args);
        let eval = CustomCommand::new_static("EVAL", ClusterHash::Custom(slot), false);
        tx.custom::<(), _>(eval, argv).await.map_err(classify)
    }

    /// The SHA-1 the script is called by.
    #[cfg(test)]
    pub(crate) fn sha(&self) -> &str {
        self.script.sha1()
    }
}

fn convert<R: FromValue>(v: Value, name: &str) -> Result<R, PortError> {
    R::from_value(v).map_err(|e| PortError::Internal {
        message: format!("unexpected reply from script {name}"),
        source: Some(Box::new(e)),
    })
}

/// Every script the adapter uses.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) cache_set: LuaScript,
    pub(crate) cache_index: LuaScript,
    pub(crate) cache_delete: LuaScript,
    pub(crate) cache_invalidate: LuaScript,
    pub(crate) limit: LuaScript,
    pub(crate) queue_enqueue: LuaScript,
    pub(crate) queue_reserve: LuaScript,
    pub(crate) queue_heartbeat: LuaScript,
    pub(crate) queue_complete: LuaScript,
    pub(crate) queue_complete_many: LuaScript,
    pub(crate) queue_fail: LuaScript,
    pub(crate) queue_release: LuaScript,
    pub(crate) queue_cancel: LuaScript,
    pub(crate) queue_requeue: LuaScript,
    pub(crate) queue_get: LuaScript,
    pub(crate) queue_stats: LuaScript,
    pub(crate) queue_list: LuaScript,
    pub(crate) progress_start: LuaScript,
    pub(crate) progress_update: LuaScript,
    pub(crate) progress_read: LuaScript,
}

impl Scripts {
    /// Every script, publishing wake-ups with `wake`'s command.
    pub(crate) fn new(wake: WakeChannels) -> Self {
        Self {
            cache_set: LuaScript::new(
                "cache_set",
                concat!(
                    include_str!("../lua/cache_set.lua"),
                    "\n",
                    include_str!("../lua/cache_index.lua")
                ),
                wake,
            ),
            cache_index: LuaScript::new(
                "cache_index",
                concat!("local STRIDE = 2\n", include_str!("../lua/cache_index.lua")),
                wake,
            ),
            cache_delete: LuaScript::new(
                "cache_delete",
                include_str!("../lua/cache_delete.lua"),
                wake,
            ),
            cache_invalidate: LuaScript::new(
                "cache_invalidate",
                include_str!("../lua/cache_invalidate.lua"),
                wake,
            ),
            limit: LuaScript::new("limit", include_str!("../lua/limit.lua"), wake),
            queue_enqueue: LuaScript::new(
                "queue_enqueue",
                queue_script!("queue_enqueue.lua"),
                wake,
            ),
            queue_reserve: LuaScript::new(
                "queue_reserve",
                queue_script!("queue_reserve.lua"),
                wake,
            ),
            queue_heartbeat: LuaScript::new(
                "queue_heartbeat",
                queue_script!("queue_heartbeat.lua"),
                wake,
            ),
            queue_complete: LuaScript::new(
                "queue_complete",
                queue_script!("queue_complete.lua"),
                wake,
            ),
            queue_complete_many: LuaScript::new(
                "queue_complete_many",
                queue_script!("queue_complete_many.lua"),
                wake,
            ),
            queue_fail: LuaScript::new("queue_fail", queue_script!("queue_fail.lua"), wake),
            queue_release: LuaScript::new(
                "queue_release",
                queue_script!("queue_release.lua"),
                wake,
            ),
            queue_cancel: LuaScript::new("queue_cancel", queue_script!("queue_cancel.lua"), wake),
            queue_requeue: LuaScript::new(
                "queue_requeue",
                queue_script!("queue_requeue.lua"),
                wake,
            ),
            queue_get: LuaScript::new("queue_get", queue_script!("queue_get.lua"), wake),
            queue_stats: LuaScript::new("queue_stats", queue_script!("queue_stats.lua"), wake),
            queue_list: LuaScript::new("queue_list", queue_script!("queue_list.lua"), wake),
            progress_start: LuaScript::new(
                "progress_start",
                include_str!("../lua/progress_start.lua"),
                wake,
            ),
            progress_update: LuaScript::new(
                "progress_update",
                include_str!("../lua/progress_update.lua"),
                wake,
            ),
            progress_read: LuaScript::new(
                "progress_read",
                include_str!("../lua/progress_read.lua"),
                wake,
            ),
        }
    }

    fn all(&self) -> [&LuaScript; 20] {
        [
            &self.cache_set,
            &self.cache_index,
            &self.cache_delete,
            &self.cache_invalidate,
            &self.limit,
            &self.queue_enqueue,
            &self.queue_reserve,
            &self.queue_heartbeat,
            &self.queue_complete,
            &self.queue_complete_many,
            &self.queue_fail,
            &self.queue_release,
            &self.queue_cancel,
            &self.queue_requeue,
            &self.queue_get,
            &self.queue_stats,
            &self.queue_list,
            &self.progress_start,
            &self.progress_update,
            &self.progress_read,
        ]
    }

    /// `SCRIPT LOAD`s every script once (at connect; on a cluster on every primary); a
    /// compile error surfaces here.
    pub(crate) async fn load(&self, pool: &Pool) -> Result<(), PortError> {
        // A lazy iterator: each future goes straight to the heap (an array of them, built on
        // the stack first, overflows a 2 MB thread stack in debug builds).
        let loads = self.all().into_iter().map(|s| async move {
            // On a single server `script_load_cluster` is a plain `SCRIPT LOAD`.
            pool.script_load_cluster::<String, _>(s.body.as_str())
                .await
                .map_err(|e| match classify(e) {
                    PortError::Internal { source, .. } => PortError::Internal {
                        message: format!("script {} does not load", s.name),
                        source,
                    },
                    other => other,
                })
        });
        futures::future::try_join_all(loads).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wake_command_is_chosen_per_mode() {
        let global = Scripts::new(WakeChannels::Global);
        let sharded = Scripts::new(WakeChannels::Sharded);
        for (g, s) in global.all().iter().zip(sharded.all()) {
            assert!(g.body.starts_with("local WAKE_PUBLISH = 'PUBLISH'\n"));
            assert!(s.body.starts_with("local WAKE_PUBLISH = 'SPUBLISH'\n"));
            assert_ne!(g.sha(), s.sha(), "{}", g.name);
            // No script publishes behind the prelude's back.
            assert!(!g.body.contains("'PUBLISH',"), "{}", g.name);
            assert!(!g.body.contains("'SPUBLISH',"), "{}", g.name);
        }
        assert!(global
            .queue_enqueue
            .body
            .contains("redis.call(WAKE_PUBLISH"));
        assert!(global
            .progress_update
            .body
            .contains("redis.call(WAKE_PUBLISH"));
    }

    #[test]
    fn keys_of_several_slots_are_refused_before_sending() {
        let scripts = Scripts::new(WakeChannels::Global);
        let one = vec!["p:{q:a}:ready".to_owned(), "p:{q:a}:t:1".to_owned()];
        assert!(scripts.queue_get.slot_of(&one).is_ok());
        let two = vec!["p:{q:a}:ready".to_owned(), "p:{q:b}:ready".to_owned()];
        let e = scripts.queue_get.slot_of(&two).expect_err("cross-slot");
        assert_eq!(e.code(), "internal");
        assert!(e.to_string().contains("queue_get"), "{e}");
        assert!(scripts.queue_get.slot_of(&[]).is_err());
        // Not one base, one tag: the same slot.
        let tagged = vec!["p:{q:a}:ready".to_owned(), "other:{q:a}".to_owned()];
        assert_eq!(
            scripts.queue_get.slot_of(&tagged).expect("one slot"),
            crate::keys::slot(b"q:a")
        );
        // A head without a tag is its own hashed part; a longer key is not the same slot.
        let bare = vec!["abc".to_owned(), "abcd".to_owned()];
        assert!(scripts.queue_get.slot_of(&bare).is_err());
        let same = vec!["abc".to_owned(), "x{abc}".to_owned()];
        assert!(scripts.queue_get.slot_of(&same).is_ok());
    }
}
