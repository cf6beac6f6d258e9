//! Connecting: the fred pool, the subscriber connection, scripts, and the store handles.

use std::collections::HashMap;
use std::sync::Arc;

use fred::clients::{Pool, SubscriberClient};
use fred::interfaces::ClientLike;
use fred::types::config::{
    ClusterDiscoveryPolicy, Config, ConnectionConfig, PerformanceConfig, ReconnectPolicy, Server,
    ServerConfig, TlsConfig, TlsConnector,
};
use fred::types::Builder;
use parking_lot::Mutex;
use spool_domain::limits::StoreLimits;
use spool_ports::PortError;
use tokio::sync::Notify;

use crate::config::{RedisConfig, ReplicaAcks, Topology, Transport};
use crate::error::classify;
use crate::keys::Keys;
use crate::scripts::Scripts;
use crate::wake::{WakeChannels, WakeHub};
use crate::{RedisCache, RedisHealth, RedisProgress, RedisQueue, RedisRateLimiter};

/// One server or a cluster (what the health probe and the pub/sub choice look at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deployment {
    Standalone,
    Cluster,
}

/// State shared by every store of one backend.
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) deployment: Deployment,
    /// `WAIT` after queue writes.
    pub(crate) replica_acks: Option<ReplicaAcks>,
    pub(crate) hub: Arc<WakeHub>,
    pub(crate) keys: Keys,
    pub(crate) limits: StoreLimits,
    pub(crate) scripts: Scripts,
    /// Queues this process already registered in `<prefix>:queues`.
    pub(crate) registered_queues: Mutex<std::collections::HashSet<String>>,
    /// Wake-up notifiers of queues this process reserves from (subscribed for its lifetime).
    pub(crate) queue_wakes: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let pool = self.pool.clone();
            let subscriber = self.hub.subscriber().clone();
            rt.spawn(async move {
                let _ = pool.quit().await;
                let _ = subscriber.quit().await;
            });
        }
    }
}

/// A connected Redis backend: hands out the five stores, which share its connections.
///
/// ```no_run
/// use std::sync::Arc;
/// use spool_adapter_redis::{RedisBackend, RedisConfig};
/// use spool_ports::{CacheStore, QueueStore};
///
/// # async fn run() -> Result<(), spool_ports::PortError> {
/// let backend = RedisBackend::connect(RedisConfig::new("redis://127.0.0.1:6379")).await?;
/// let cache: Arc<dyn CacheStore> = Arc::new(backend.cache());
/// let queue: Arc<dyn QueueStore> = Arc::new(backend.queue());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.shared.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects the pool and the subscriber connection and loads the scripts.
    ///
    /// On a cluster it discovers the nodes from the seeds, picks sharded pub/sub when every
    /// primary runs Redis 7 or later (plain pub/sub otherwise) and loads the scripts on every
    /// primary.
    ///
    /// # Errors
    /// `Unavailable` when the server cannot be reached in time; `Configuration` for a bad URL
    /// or seed list, TLS setup, refused credentials, or [`ReplicaAcks`] out of bounds.
    pub async fn connect(config: RedisConfig) -> Result<Self, PortError> {
        if let Some(acks) = &config.replica_acks {
            acks.validate(config.command_timeout)?;
        }
        let deployment = match config.server {
            Topology::Standalone { .. } => Deployment::Standalone,
            Topology::Cluster { .. } => Deployment::Cluster,
        };
        let builder = builder(&config)?;
        let pool = builder
            .build_pool(config.pool_size.max(1))
            .map_err(classify)?;
        let subscriber: SubscriberClient = builder.build_subscriber_client().map_err(classify)?;
        let connect = async {
            pool.init().await.map_err(classify)?;
            subscriber.init().await.map_err(classify)?;
            Ok::<(), PortError>(())
        };
        if let Err(e) = connect.await {
            let _ = pool.quit().await;
            let _ = subscriber.quit().await;
            return Err(e);
        }
        let prepared = async {
            let wake = wake_channels(&pool, deployment).await?;
            let scripts = Scripts::new(wake);
            scripts.load(&pool).await?;
            Ok::<_, PortError>((wake, scripts))
        };
        let (wake, scripts) = match prepared.await {
            Ok(ready) => ready,
            Err(e) => {
                let _ = pool.quit().await;
                let _ = subscriber.quit().await;
                return Err(e);
            }
        };
        tracing::debug!(server = %config.redacted_url(), ?wake, "connected to redis");
        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                deployment,
                replica_acks: config.replica_acks.clone(),
                hub: Arc::new(WakeHub::start(subscriber, wake)),
                keys: Keys::new(&config.prefix),
                limits: config.limits.clone(),
                scripts,
                registered_queues: Mutex::default(),
                queue_wakes: Mutex::default(),
            }),
        })
    }

    /// The cache store.
    pub fn cache(&self) -> RedisCache {
        RedisCache::new(self.shared.clone())
    }

    /// The rate limiter.
    pub fn rate_limiter(&self) -> RedisRateLimiter {
        RedisRateLimiter::new(self.shared.clone())
    }

    /// The queue store.
    pub fn queue(&self) -> RedisQueue {
        RedisQueue::new(self.shared.clone())
    }

    /// The progress store.
    pub fn progress(&self) -> RedisProgress {
        RedisProgress::new(self.shared.clone())
    }

    /// The health probe.
    pub fn health(&self) -> RedisHealth {
        RedisHealth::new(self.shared.clone())
    }

    /// The key prefix every key starts with.
    pub fn prefix(&self) -> &str {
        self.shared.keys.prefix()
    }

    /// The limits the stores enforce.
    pub fn limits(&self) -> &StoreLimits {
        &self.shared.limits
    }

    /// The command pool every store of this backend sends on, for raw commands next to the
    /// stores' (`spool bench` compares each operation with the closest raw command on this
    /// same pool and server). Commands sent here bypass the stores' validation, key layout,
    /// limits and error classification.
    pub fn raw_pool(&self) -> &Pool {
        &self.shared.pool
    }

    /// Closes the connections (the stores fail as `Unavailable` afterwards).
    pub async fn shutdown(&self) {
        let _ = self.shared.pool.quit().await;
        let _ = self.shared.hub.subscriber().quit().await;
    }
}

/// Sharded pub/sub on a cluster whose primaries all run Redis 7 or later; plain otherwise.
async fn wake_channels(pool: &Pool, deployment: Deployment) -> Result<WakeChannels, PortError> {
    if deployment == Deployment::Standalone {
        return Ok(WakeChannels::Global);
    }
    let reports = crate::health::probe_primaries(pool).await?;
    let all_7 = reports
        .iter()
        .all(|r| r.major_version().is_some_and(|major| major >= 7));
    if all_7 {
        Ok(WakeChannels::Sharded)
    } else {
        tracing::info!(
            "a cluster primary runs Redis < 7 (or hides its version): wake-ups use PUBLISH, which the cluster bus broadcasts to every node"
        );
        Ok(WakeChannels::Global)
    }
}

/// Translates [`RedisConfig`] into a fred builder.
fn builder(config: &RedisConfig) -> Result<Builder, PortError> {
    let bad_server = |reason: &str| PortError::Configuration {
        message: format!("redis server {} {reason}", config.redacted_url()),
        source: None,
    };
    let (mut fred_config, tls) = match &config.server {
        Topology::Standalone { url } => {
            let (plain_url, tls) = if let Some(rest) = url.strip_prefix("rediss://") {
                (format!("redis://{rest}"), true)
            } else if url.starts_with("redis://") {
                (url.clone(), false)
            } else {
                return Err(bad_server("must start with redis:// or rediss://"));
            };
            let fred_config =
                Config::from_url(&plain_url).map_err(|_| bad_server("is not a valid url"))?;
            (fred_config, tls)
        }
        Topology::Cluster { seeds, transport } => {
            if seeds.is_empty() {
                return Err(bad_server("has no seed node"));
            }
            let hosts = seeds
                .iter()
                .map(|s| Server::new(s.host.as_str(), s.port))
                .collect();
            let fred_config = Config {
                server: ServerConfig::Clustered {
                    hosts,
                    // Seeds first, then every node of the last slot map: reconnecting after a
                    // failover does not depend on the seeds that may have failed.
                    policy: ClusterDiscoveryPolicy::UseCache,
                },
                ..Config::default()
            };
            (fred_config, *transport == Transport::Tls)
        }
    };
    if config.username.is_some() {
        fred_config.username = config.username.clone();
    }
    if let Some(pw) = &config.password {
        fred_config.password = Some(pw.expose().to_owned());
    }
    if tls {
        fred_config.tls = Some(tls_config(config)?);
    } else if config.tls_ca_file.is_some() {
        return Err(bad_server("is not TLS but a TLS CA file is configured"));
    }
    let r = &config.reconnect;
    let mut policy = ReconnectPolicy::new_exponential(
        r.max_attempts,
        u32::try_from(r.min_delay.as_millis()).unwrap_or(u32::MAX),
        u32::try_from(r.max_delay.as_millis()).unwrap_or(u32::MAX),
        2,
    );
    policy.set_jitter(50);
    let mut builder = Builder::from_config(fred_config);
    builder
        .set_policy(policy)
        .set_performance_config(PerformanceConfig {
            default_command_timeout: config.command_timeout,
            broadcast_channel_capacity: 1024,
            ..PerformanceConfig::default()
        })
        .set_connection_config(ConnectionConfig {
            connection_timeout: config.connect_timeout,
            internal_command_timeout: config.connect_timeout,
            max_command_attempts: 2,
            ..ConnectionConfig::default()
        });
    Ok(builder)
}

fn tls_config(config: &RedisConfig) -> Result<TlsConfig, PortError> {
    let tls_err = |message: String, source: Option<spool_ports::BoxError>| {
        PortError::Configuration { message, source }
    };
    let Some(ca) = &config.tls_ca_file else {
        let connector = TlsConnector::default_rustls().map_err(|e| {
            tls_err(
                "cannot load the system TLS roots".to_owned(),
                Some(Box::new(e)),
            )
        })?;
        return Ok(connector.into());
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| {
        tls_err(
            format!("cannot read the TLS CA file {}", ca.display()),
            Some(Box::new(e)),
        )
    })?;
    for cert in certs {
        let cert = cert.map_err(|e| {
            tls_err(
                format!("bad certificate in {}", ca.display()),
                Some(Box::new(e)),
            )
        })?;
        roots.add(cert).map_err(|e| {
            tls_err(
                format!("unusable certificate in {}", ca.display()),
                Some(Box::new(e)),
            )
        })?;
    }
    if roots.is_empty() {
        return Err(tls_err(format!("no certificate in {}", ca.display()), None));
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err("TLS setup failed".to_owned(), Some(Box::new(e))))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(client).into())
}
