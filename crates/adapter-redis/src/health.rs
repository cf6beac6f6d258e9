//! Health: `PING` latency, then `INFO server memory` for the version and used memory.
//!
//! On one server: 2 round trips. On a cluster the probe asks **every primary** in the client's
//! slot map, concurrently, because one unreachable primary makes its slots (so some queues,
//! operations and cache scopes) unavailable even when the others answer:
//!
//! - it fails (`Unavailable`, naming the node) when any primary fails or the slot map is empty;
//! - `latency` is the slowest primary's `PING`;
//! - `version` is the primaries' distinct versions, lowest first, comma-separated (one value
//!   unless an upgrade is rolling through);
//! - `used_memory` is the sum over the primaries (replicas hold copies and are not counted).
//!
//! Round trips: `check` 2 on one server, 2 per primary (concurrent) on a cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fred::clients::Pool;
use fred::cmd;
use fred::interfaces::{ClientLike, ClusterInterface};
use fred::types::config::Server;
use spool_ports::{BackendHealth, Health, PortError};

use crate::backend::{Deployment, Shared};
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

/// What one node reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeReport {
    pub(crate) latency: Duration,
    pub(crate) version: Option<String>,
    pub(crate) used_memory: Option<u64>,
}

impl NodeReport {
    /// The major version, when readable.
    pub(crate) fn major_version(&self) -> Option<u32> {
        self.version.as_deref()?.split('.').next()?.parse().ok()
    }
}

/// `PING` then `INFO server memory` on one client (routed to `node` on a cluster).
async fn probe<C: ClientLike>(client: &C) -> Result<NodeReport, fred::error::Error> {
    let started = Instant::now();
    client.ping::<String>(None).await?;
    let latency = started.elapsed();
    let info: String = client
        .custom(cmd!("INFO"), vec!["server", "memory"])
        .await?;
    Ok(NodeReport {
        latency,
        version: info_field(&info, "redis_version").map(str::to_owned),
        used_memory: info_field(&info, "used_memory").and_then(|v| v.parse().ok()),
    })
}

/// The primaries of the pool's current slot map.
fn primaries(pool: &Pool) -> Vec<Server> {
    pool.next()
        .cached_cluster_state()
        .map(|state| state.unique_primary_nodes())
        .unwrap_or_default()
}

/// Probes every primary of a cluster, concurrently; fails on the first that does not answer.
pub(crate) async fn probe_primaries(pool: &Pool) -> Result<Vec<NodeReport>, PortError> {
    let nodes = primaries(pool);
    if nodes.is_empty() {
        return Err(PortError::Unavailable {
            message: "redis cluster: no primary in the slot map".to_owned(),
            source: None,
        });
    }
    let client = pool.next();
    let probes = nodes.iter().map(|node| async move {
        probe(&client.with_cluster_node(node.clone()))
            .await
            .map_err(|e| match classify(e) {
                PortError::Unavailable { message, source } => PortError::Unavailable {
                    message: format!("{message} (cluster node {}:{})", node.host, node.port),
                    source,
                },
                other => other,
            })
    });
    futures::future::try_join_all(probes).await
}

/// Combines per-primary reports (see the module docs).
pub(crate) fn combine(reports: &[NodeReport]) -> BackendHealth {
    let latency = reports.iter().map(|r| r.latency).max().unwrap_or_default();
    let mut versions: Vec<&str> = reports
        .iter()
        .filter_map(|r| r.version.as_deref())
        .collect();
    versions.sort_by_key(|v| {
        v.split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    versions.dedup();
    let used_memory = reports.iter().map(|r| r.used_memory).sum::<Option<u64>>();
    BackendHealth {
        backend: "redis",
        latency,
        version: (!versions.is_empty()).then(|| versions.join(", ")),
        used_memory,
    }
}

#[async_trait]
impl Health for RedisHealth {
    async fn check(&self) -> Result<BackendHealth, PortError> {
        let pool = &self.shared.pool;
        match self.shared.deployment {
            Deployment::Standalone => {
                let report = probe(pool).await.map_err(classify)?;
                Ok(combine(&[report]))
            }
            Deployment::Cluster => Ok(combine(&probe_primaries(pool).await?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_info_fields() {
        let info = "# Server\r\nredis_version:7.0.15\r\n# Memory\r\nused_memory:1024\r\nused_memory_human:1K\r\n";
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(info, "used_memory"), Some("1024"));
        assert_eq!(info_field(info, "missing"), None);
    }

    fn report(ms: u64, version: &str, memory: Option<u64>) -> NodeReport {
        NodeReport {
            latency: Duration::from_millis(ms),
            version: Some(version.to_owned()),
            used_memory: memory,
        }
    }

    #[test]
    fn cluster_reports_combine() {
        let h = combine(&[
            report(3, "7.2.4", Some(100)),
            report(9, "7.0.15", Some(50)),
            report(1, "7.2.4", Some(7)),
        ]);
        assert_eq!(h.latency, Duration::from_millis(9), "the slowest primary");
        assert_eq!(h.version.as_deref(), Some("7.0.15, 7.2.4"));
        assert_eq!(h.used_memory, Some(157));
        let unknown = combine(&[report(1, "7.0.15", None), report(1, "7.0.15", Some(1))]);
        assert_eq!(unknown.version.as_deref(), Some("7.0.15"));
        assert_eq!(
            unknown.used_memory, None,
            "a sum with an unknown part is unknown"
        );
        assert_eq!(report(1, "6.2.14", None).major_version(), Some(6));
        assert_eq!(report(1, "x", None).major_version(), None);
    }
}
