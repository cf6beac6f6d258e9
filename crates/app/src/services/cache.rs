//! `CacheManager`: typed values over the byte cache port, with per-name TTL policies,
//! jitter, single-flight `get_or_compute` and project-scoped invalidation.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use spool_domain::names::{CacheKey, ProjectId, ScopedKey};
use spool_domain::time::duration_millis;
use spool_domain::ValidationError;
use spool_ports::{BoxError, CacheStore, PortError};
use tracing::Instrument;

use super::single_flight::SingleFlight;
use super::{Codec, ServiceError, SharedError};

/// The name of a cache inside a project (`users`, `embeddings`): lowercase letters, digits,
/// `_`, `-`, at most 64 bytes. Values live under the key `<name>:<key>`, and each name may
/// have its own TTL policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheName(String);

impl CacheName {
    /// Longest accepted name.
    pub const MAX_LEN: usize = 64;

    /// Validates a name.
    ///
    /// # Errors
    /// `invalid cache name: ...` saying what is wrong.
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        Self::check(&s)?;
        Ok(Self(s))
    }

    /// What [`CacheName::parse`] checks, without taking ownership (the hot path of every
    /// typed cache call validates the name without allocating).
    fn check(s: &str) -> Result<(), ValidationError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                "cache name",
                format!("must be 1..={} bytes long", Self::MAX_LEN),
            ));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
        {
            return Err(ValidationError::new(
                "cache name",
                format!("character {bad:?} is not allowed; use a-z, 0-9, _ and -"),
            ));
        }
        Ok(())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CacheName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A TTL and how much it is jittered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TtlPolicy {
    /// The nominal TTL.
    pub ttl: Duration,
    /// Each TTL moves by up to this fraction either way (`0.0..=0.5`).
    pub jitter: f64,
}

impl TtlPolicy {
    /// The TTL for one write, given `random` in `[0, 1)`: `ttl * (1 + jitter * (2r - 1))` in
    /// whole milliseconds, kept within `1 ms ..= max`.
    pub fn jittered(&self, max: Duration, random: f64) -> Duration {
        let base = duration_millis(self.ttl) as f64;
        let r = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let j = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let ms = (base * (1.0 + j * (2.0 * r - 1.0))).round();
        let max_ms = duration_millis(max).max(1);
        Duration::from_millis((ms as u64).clamp(1, max_ms))
    }
}

/// What the cache service is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// Policy of names without their own.
    pub default: TtlPolicy,
    /// Longest TTL handed out.
    pub max_ttl: Duration,
    /// Encoding of typed values.
    pub codec: Codec,
    /// Per-name policies.
    pub names: BTreeMap<CacheName, TtlPolicy>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            default: TtlPolicy {
                ttl: Duration::from_secs(3600),
                jitter: 0.1,
            },
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            codec: Codec::Json,
            names: BTreeMap::new(),
        }
    }
}

struct Inner {
    store: Arc<dyn CacheStore>,
    settings: CacheSettings,
    flights: SingleFlight<ScopedKey, Bytes>,
}

/// Typed cache over a [`CacheStore`]. Cheap to clone.
///
/// Typed values are addressed by `(project, cache name, key)` and stored under the key
/// `<name>:<key>` in the project's scope, with the name's TTL policy. The raw methods
/// (`*_bytes`) take a [`ScopedKey`] and store bytes untouched, for the HTTP API.
#[derive(Clone)]
pub struct CacheManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for CacheManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheManager")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl CacheManager {
    /// A manager over `store`.
    pub fn new(store: Arc<dyn CacheStore>, settings: CacheSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                settings,
                flights: SingleFlight::default(),
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &CacheSettings {
        &self.inner.settings
    }

    /// The codec of typed values.
    pub fn codec(&self) -> Codec {
        self.inner.settings.codec
    }

    /// The scoped key `<name>:<key>` in `project`.
    ///
    /// # Errors
    /// `Invalid` naming `cache name` or `cache key`.
    pub fn key(&self, project: &ProjectId, name: &str, key: &str) -> Result<ScopedKey, PortError> {
        CacheName::check(name)?;
        let mut full = String::with_capacity(name.len() + 1 + key.len());
        full.push_str(name);
        full.push(':');
        full.push_str(key);
        let key = CacheKey::parse(full)?;
        Ok(ScopedKey::new(project.clone(), key))
    }

    /// The TTL policy of `name` (the default policy when it has none).
    pub fn policy(&self, name: &str) -> TtlPolicy {
        let s = &self.inner.settings;
        if s.names.is_empty() {
            return s.default;
        }
        CacheName::parse(name)
            .ok()
            .and_then(|n| s.names.get(&n).copied())
            .unwrap_or(s.default)
    }

    /// A jittered TTL for one write under `name`.
    pub fn ttl_for(&self, name: &str) -> Duration {
        self.policy(name)
            .jittered(self.inner.settings.max_ttl, rand::random::<f64>())
    }

    fn default_ttl(&self) -> Duration {
        self.inner
            .settings
            .default
            .jittered(self.inner.settings.max_ttl, rand::random::<f64>())
    }

    fn check_ttl(&self, ttl: Duration) -> Result<(), PortError> {
        if ttl < Duration::from_millis(1) || ttl > self.inner.settings.max_ttl {
            return Err(PortError::invalid(
                "ttl",
                format!(
                    "{} ms is outside 1 ms..={} ms",
                    duration_millis(ttl),
                    duration_millis(self.inner.settings.max_ttl)
                ),
            ));
        }
        Ok(())
    }

    /// Reads a typed value; `None` when absent or expired.
    ///
    /// # Errors
    /// `Invalid` names; port errors; [`ServiceError::Decode`] when the stored bytes are not a
    /// `T`.
    #[tracing::instrument(name = "cache.get", skip_all, fields(project = %project, cache = name, key = key))]
    pub async fn get<T: DeserializeOwned>(
        &self,
        project: &ProjectId,
        name: &str,
        key: &str,
    ) -> Result<Option<T>, ServiceError> {
        let k = self.key(project, name, key)?;
        match self.inner.store.get(&k).await? {
            Some(bytes) => Ok(Some(self.codec().decode("cache value", &bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores a typed value with the name's TTL policy (jittered).
    ///
    /// # Errors
    /// `Invalid` names or a value over the size limit; port errors;
    /// [`ServiceError::Encode`].
    #[tracing::instrument(name = "cache.set", skip_all, fields(project = %project, cache = name, key = key))]
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        project: &ProjectId,
        name: &str,
        key: &str,
        value: &T,
    ) -> Result<(), ServiceError> {
        let k = self.key(project, name, key)?;
        let bytes = self.codec().encode("cache value", value)?;
        let ttl = self.ttl_for(name);
        Ok(self.inner.store.set(&k, bytes, ttl).await?)
    }

    /// Stores a typed value for exactly `ttl` (no jitter).
    ///
    /// # Errors
    /// As for [`CacheManager::set`], and `Invalid` for a TTL outside `1 ms..=max_ttl`.
    #[tracing::instrument(name = "cache.set", skip_all, fields(project = %project, cache = name, key = key))]
    pub async fn set_with_ttl<T: Serialize + ?Sized>(
        &self,
        project: &ProjectId,
        name: &str,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), ServiceError> {
        let k = self.key(project, name, key)?;
        self.check_ttl(ttl)?;
        let bytes = self.codec().encode("cache value", value)?;
        Ok(self.inner.store.set(&k, bytes, ttl).await?)
    }

    /// Removes a typed value; returns whether it existed.
    ///
    /// # Errors
    /// `Invalid` names; port errors.
    #[tracing::instrument(name = "cache.delete", skip_all, fields(project = %project, cache = name, key = key))]
    pub async fn delete(
        &self,
        project: &ProjectId,
        name: &str,
        key: &str,
    ) -> Result<bool, ServiceError> {
        let k = self.key(project, name, key)?;
        Ok(self.inner.store.delete(&k).await?)
    }

    /// Returns the cached value, or computes, stores and returns it.
    ///
    /// Concurrent misses for one key in this process compute once: later callers wait for
    /// the first one's result (value or error). Errors are never cached. Stored bytes that
    /// no longer decode as `T` count as a miss. When storing the computed value fails, the
    /// value is still returned (and the failure logged): the cache is an optimisation.
    ///
    /// # Errors
    /// `Invalid` names; port errors of the read; [`ServiceError::Compute`] when the
    /// computation fails (or panics).
    #[tracing::instrument(name = "cache.get_or_compute", skip_all, fields(project = %project, cache = name, key = key, hit = tracing::field::Empty))]
    pub async fn get_or_compute<T, F, Fut, E>(
        &self,
        project: &ProjectId,
        name: &str,
        key: &str,
        compute: F,
    ) -> Result<T, ServiceError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let k = self.key(project, name, key)?;
        let codec = self.codec();
        if let Some(bytes) = self.inner.store.get(&k).await? {
            match codec.decode("cache value", &bytes) {
                Ok(v) => {
                    tracing::Span::current().record("hit", true);
                    return Ok(v);
                }
                Err(e) => tracing::warn!(error = %e, "cached value does not decode; recomputing"),
            }
        }
        tracing::Span::current().record("hit", false);
        let store = Arc::clone(&self.inner.store);
        let ttl = self.ttl_for(name);
        let scoped = k.clone();
        let span = tracing::Span::current();
        let bytes = self
            .inner
            .flights
            .run(k, move || {
                async move {
                    let value = compute().await.map_err(|e| SharedError::from(e.into()))?;
                    let bytes = codec
                        .encode("cache value", &value)
                        .map_err(|e| Arc::new(e) as SharedError)?;
                    if let Err(e) = store.set(&scoped, bytes.clone(), ttl).await {
                        tracing::warn!(error = %e, "computed value could not be cached");
                    }
                    Ok(bytes)
                }
                .instrument(span)
            })
            .await
            .map_err(ServiceError::Compute)?;
        codec.decode("cache value", &bytes)
    }

    /// Drops every value of `project` (all names).
    ///
    /// # Errors
    /// Port errors.
    #[tracing::instrument(name = "cache.invalidate_project", skip_all, fields(project = %project))]
    pub async fn invalidate_project(&self, project: &ProjectId) -> Result<(), ServiceError> {
        Ok(self.inner.store.invalidate_project(project).await?)
    }

    /// Reads raw bytes.
    ///
    /// # Errors
    /// Port errors.
    #[tracing::instrument(name = "cache.get_bytes", skip_all, fields(project = %key.project, key = %key.key))]
    pub async fn get_bytes(&self, key: &ScopedKey) -> Result<Option<Bytes>, ServiceError> {
        Ok(self.inner.store.get(key).await?)
    }

    /// Reads several raw values, one slot per key.
    ///
    /// # Errors
    /// Port errors (`Invalid` over `max_batch`).
    #[tracing::instrument(name = "cache.get_many_bytes", skip_all, fields(keys = keys.len()))]
    pub async fn get_many_bytes(
        &self,
        keys: &[ScopedKey],
    ) -> Result<Vec<Option<Bytes>>, ServiceError> {
        Ok(self.inner.store.get_many(keys).await?)
    }

    /// Stores raw bytes for `ttl`, or for the default policy's jittered TTL when `None`.
    ///
    /// # Errors
    /// `Invalid` for a TTL outside `1 ms..=max_ttl` or a value over the size limit; port
    /// errors.
    #[tracing::instrument(name = "cache.set_bytes", skip_all, fields(project = %key.project, key = %key.key, bytes = value.len()))]
    pub async fn set_bytes(
        &self,
        key: &ScopedKey,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), ServiceError> {
        let ttl = match ttl {
            Some(t) => {
                self.check_ttl(t)?;
                t
            }
            None => self.default_ttl(),
        };
        Ok(self.inner.store.set(key, value, ttl).await?)
    }

    /// Removes a raw key; returns whether it existed.
    ///
    /// # Errors
    /// Port errors.
    #[tracing::instrument(name = "cache.delete_bytes", skip_all, fields(project = %key.project, key = %key.key))]
    pub async fn delete_bytes(&self, key: &ScopedKey) -> Result<bool, ServiceError> {
        Ok(self.inner.store.delete(key).await?)
    }
}

#[cfg(test)]
mod tests;
