//! The Lua scripts (each in its own file under `lua/`), loaded once at connect and called by
//! SHA with a `NOSCRIPT` fallback (after a server restart or `SCRIPT FLUSH` the first call
//! sends the body with `EVAL`, which also re-caches it).

use fred::clients::Pool;
use fred::interfaces::LuaInterface;
use fred::types::scripts::Script;
use fred::types::{FromValue, Value};
use spool_ports::PortError;

use crate::error::classify;

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
    body: &'static str,
    script: Script,
}

impl LuaScript {
    fn new(name: &'static str, body: &'static str) -> Self {
        Self {
            name,
            body,
            script: Script::from_lua(body),
        }
    }

    /// `EVALSHA`, falling back to `EVAL` when the server does not know the script.
    pub(crate) async fn run<R: FromValue>(
        &self,
        pool: &Pool,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, PortError> {
        let sha = self.script.sha1().clone();
        match pool
            .evalsha::<Value, _, _, _>(sha, keys.clone(), args.clone())
            .await
        {
            Ok(v) => convert(v, self.name),
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                tracing::debug!(
                    script = self.name,
                    "script not cached on the server; sending it"
                );
                let v = pool
                    .eval::<Value, _, _, _>(self.body, keys, args)
                    .await
                    .map_err(classify)?;
                convert(v, self.name)
            }
            Err(e) => Err(classify(e)),
        }
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
    pub(crate) cache_delete: LuaScript,
    pub(crate) cache_invalidate: LuaScript,
    pub(crate) limit: LuaScript,
    pub(crate) queue_enqueue: LuaScript,
    pub(crate) queue_reserve: LuaScript,
    pub(crate) queue_heartbeat: LuaScript,
    pub(crate) queue_complete: LuaScript,
    pub(crate) queue_fail: LuaScript,
    pub(crate) queue_cancel: LuaScript,
    pub(crate) queue_requeue: LuaScript,
    pub(crate) queue_get: LuaScript,
    pub(crate) queue_stats: LuaScript,
    pub(crate) progress_start: LuaScript,
    pub(crate) progress_update: LuaScript,
    pub(crate) progress_read: LuaScript,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            cache_set: LuaScript::new("cache_set", include_str!("../lua/cache_set.lua")),
            cache_delete: LuaScript::new("cache_delete", include_str!("../lua/cache_delete.lua")),
            cache_invalidate: LuaScript::new(
                "cache_invalidate",
                include_str!("../lua/cache_invalidate.lua"),
            ),
            limit: LuaScript::new("limit", include_str!("../lua/limit.lua")),
            queue_enqueue: LuaScript::new("queue_enqueue", queue_script!("queue_enqueue.lua")),
            queue_reserve: LuaScript::new("queue_reserve", queue_script!("queue_reserve.lua")),
            queue_heartbeat: LuaScript::new(
                "queue_heartbeat",
                queue_script!("queue_heartbeat.lua"),
            ),
            queue_complete: LuaScript::new("queue_complete", queue_script!("queue_complete.lua")),
            queue_fail: LuaScript::new("queue_fail", queue_script!("queue_fail.lua")),
            queue_cancel: LuaScript::new("queue_cancel", queue_script!("queue_cancel.lua")),
            queue_requeue: LuaScript::new("queue_requeue", queue_script!("queue_requeue.lua")),
            queue_get: LuaScript::new("queue_get", queue_script!("queue_get.lua")),
            queue_stats: LuaScript::new("queue_stats", queue_script!("queue_stats.lua")),
            progress_start: LuaScript::new(
                "progress_start",
                include_str!("../lua/progress_start.lua"),
            ),
            progress_update: LuaScript::new(
                "progress_update",
                include_str!("../lua/progress_update.lua"),
            ),
            progress_read: LuaScript::new(
                "progress_read",
                include_str!("../lua/progress_read.lua"),
            ),
        }
    }

    fn all(&self) -> [&LuaScript; 16] {
        [
            &self.cache_set,
            &self.cache_delete,
            &self.cache_invalidate,
            &self.limit,
            &self.queue_enqueue,
            &self.queue_reserve,
            &self.queue_heartbeat,
            &self.queue_complete,
            &self.queue_fail,
            &self.queue_cancel,
            &self.queue_requeue,
            &self.queue_get,
            &self.queue_stats,
            &self.progress_start,
            &self.progress_update,
            &self.progress_read,
        ]
    }

    /// `SCRIPT LOAD`s every script once (at connect); a compile error surfaces here.
    pub(crate) async fn load(&self, pool: &Pool) -> Result<(), PortError> {
        for s in self.all() {
            pool.script_load::<String, _>(s.body)
                .await
                .map_err(|e| match classify(e) {
                    PortError::Internal { source, .. } => PortError::Internal {
                        message: format!("script {} does not load", s.name),
                        source,
                    },
                    other => other,
                })?;
        }
        Ok(())
    }
}
