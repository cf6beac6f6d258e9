//! Health: `PING` latency, then `INFO server memory` for the version and used memory.
//!
//! Round trips: `check` 2 (`PING`, `INFO`).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use fred::cmd;
use fred::interfaces::ClientLike;
use spool_ports::{BackendHealth, Health, PortError};

use crate::backend::Shared;
use crate::error::classify;

/// The Redis health probe.
#[derive(Clone)]
pub struct RedisHealth {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHealth").finish_non_exhaustive()
    }
}

impl RedisHealth {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// Reads `field:value` lines of an `INFO` reply.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == field).then_some(v.trim())
    })
}

#[async_trait]
impl Health for RedisHealth {
    async fn check(&self) -> Result<BackendHealth, PortError> {
        let pool = &self.shared.pool;
        let started = Instant::now();
        pool.ping::<String>(None).await.map_err(classify)?;
        let latency = started.elapsed();
        let info: String = pool
            .custom(cmd!("INFO"), vec!["server", "memory"])
            .await
            .map_err(classify)?;
        Ok(BackendHealth {
            backend: "redis",
            latency,
            version: info_field(&info, "redis_version").map(str::to_owned),
            used_memory: info_field(&info, "used_memory").and_then(|v| v.parse().ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::info_field;

    #[test]
    fn reads_info_fields() {
        let info = "# Server\r\nredis_version:7.0.15\r\n# Memory\r\nused_memory:1024\r\nused_memory_human:1K\r\n";
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(info, "used_memory"), Some("1024"));
        assert_eq!(info_field(info, "missing"), None);
    }
}
