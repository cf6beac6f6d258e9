//! Connecting: the fred pool, the subscriber connection, scripts, and the store handles.

use std::collections::HashMap;
use std::sync::Arc;

use fred::clients::{Pool, SubscriberClient};
use fred::interfaces::ClientLike;
use fred::types::config::{
    Config, ConnectionConfig, PerformanceConfig, ReconnectPolicy, TlsConfig, TlsConnector,
};
use fred::types::Builder;
use parking_lot::Mutex;
use spool_domain::limits::StoreLimits;
use spool_ports::PortError;
use tokio::sync::Notify;

use crate::config::RedisConfig;
use crate::error::classify;
use crate::keys::Keys;
use crate::scripts::Scripts;
use crate::wake::WakeHub;
use crate::{RedisCache, RedisHealth, RedisProgress, RedisQueue, RedisRateLimiter};

/// State shared by every store of one backend.
pub(crate) struct Shared {
    pub(crate) pool: Pool,
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
    /// # Errors
    /// `Unavailable` when the server cannot be reached in time; `Configuration` for a bad URL,
    /// TLS setup, or refused credentials.
    pub async fn connect(config: RedisConfig) -> Result<Self, PortError> {
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
        let scripts = Scripts::new();
        if let Err(e) = scripts.load(&pool).await {
            let _ = pool.quit().await;
            let _ = subscriber.quit().await;
            return Err(e);
        }
        tracing::debug!(url = %config.redacted_url(), "connected to redis");
        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                hub: Arc::new(WakeHub::start(subscriber)),
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

    /// The limits the stores enforce.
    pub fn limits(&self) -> &StoreLimits {
        &self.shared.limits
    }

    /// Closes the connections (the stores fail as `Unavailable` afterwards).
    pub async fn shutdown(&self) {
        let _ = self.shared.pool.quit().await;
        let _ = self.shared.hub.subscriber().quit().await;
    }
}

/// Translates [`RedisConfig`] into a fred builder.
fn builder(config: &RedisConfig) -> Result<Builder, PortError> {
    let bad_url = |reason: &str| PortError::Configuration {
        message: format!("redis url {} {reason}", config.redacted_url()),
        source: None,
    };
    let (plain_url, tls) = if let Some(rest) = config.url.strip_prefix("rediss://") {
        (format!("redis://{rest}"), true)
    } else if config.url.starts_with("redis://") {
        (config.url.clone(), false)
    } else {
        return Err(bad_url("must start with redis:// or rediss://"));
    };
    let mut fred_config = Config::from_url(&plain_url).map_err(|_| bad_url("is not valid"))?;
    if config.username.is_some() {
        fred_config.username = config.username.clone();
    }
    if let Some(pw) = &config.password {
        fred_config.password = Some(pw.expose().to_owned());
    }
    if tls {
        fred_config.tls = Some(tls_config(config)?);
    } else if config.tls_ca_file.is_some() {
        return Err(bad_url("is not rediss:// but a TLS CA file is configured"));
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
