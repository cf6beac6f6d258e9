//! The in-memory [`CacheStore`]: a size-bounded moka cache with clock-driven expiry and O(1)
//! project-scope invalidation.
//!
//! ## Expiry
//!
//! Every entry stores its bytes and an `expires_at` [`Timestamp`] taken from the injected
//! [`Clock`]. Reads compare `expires_at` with the clock's "now", so a paused test clock
//! controls every TTL exactly: an entry is visible while `now < expires_at` and gone from
//! `now >= expires_at` on. moka's own per-entry expiry runs on real time and is set a little
//! past the TTL; it only reclaims memory and never decides what a read sees.
//!
//! ## Size
//!
//! The store holds at most [`StoreLimits::max_cache_entries`] entries; past that moka evicts
//! the least valuable ones (TinyLFU). An evicted entry reads as a miss, as in any cache.
//!
//! ## Project-scope invalidation: generation counters
//!
//! Each project has a *generation* (0 until its first invalidation) and every stored key
//! carries the generation current when it was written: the moka key is
//! `(project, generation, key)`. Reads and deletes look up the project's current generation
//! first, so [`CacheStore::invalidate_project`] only has to give the project a fresh generation
//! — one map update, O(1) — and every older entry of that project becomes unreachable at
//! once. Entries of other projects keep their generation and survive. The unreachable entries
//! stay in memory until moka evicts them or their backstop expiry passes.
//!
//! Generations come from one store-wide counter, so a project never gets a generation it had
//! before. The generation table only lists projects that were invalidated; to keep it
//! bounded, a project whose last invalidation is longer than `max_ttl` ago may be dropped from
//! it (back to generation 0). That is safe: every entry written at generation 0 before that
//! invalidation has expired by then (its TTL is at most `max_ttl`), and entries written since
//! merely become misses, which a cache may always produce.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use moka::sync::Cache;
use parking_lot::RwLock;
use spool_domain::limits::StoreLimits;
use spool_domain::names::{CacheKey, ProjectId, ScopedKey};
use spool_domain::Timestamp;
use spool_ports::{CacheEntry, CacheStore, PortError, Ttl};

use crate::Clock;

/// How long moka keeps an entry past its TTL (real time) before reclaiming it. Generous, so a
/// test clock that runs ahead of or behind real time never loses a live entry.
const BACKSTOP_SLACK: Duration = Duration::from_secs(5);

/// The table of generations is pruned only once it has at least this many projects.
const MIN_PRUNE_AT: usize = 1024;

/// The moka key: one key of one project at one generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StoredKey {
    project: ProjectId,
    generation: u64,
    key: CacheKey,
}

/// The moka value.
#[derive(Debug, Clone)]
struct StoredValue {
    value: Bytes,
    expires_at: Timestamp,
    /// Only for moka's memory-reclaim backstop.
    ttl: Duration,
}

impl StoredValue {
    fn live_at(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

/// moka's per-entry expiry: the TTL plus slack, counted from the last write. Reads leave it
/// unchanged.
struct Backstop;

impl moka::Expiry<StoredKey, StoredValue> for Backstop {
    fn expire_after_create(
        &self,
        _key: &StoredKey,
        value: &StoredValue,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl.saturating_add(BACKSTOP_SLACK))
    }

    fn expire_after_update(
        &self,
        _key: &StoredKey,
        value: &StoredValue,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl.saturating_add(BACKSTOP_SLACK))
    }
}

/// When a project was last invalidated and the generation it got.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    generation: u64,
    invalidated_at: Timestamp,
}

/// Current generation per invalidated project.
#[derive(Debug)]
struct Generations {
    by_project: HashMap<ProjectId, Stamp>,
    /// The last generation handed out, store-wide.
    last: u64,
    /// Prune the table when it reaches this many projects.
    prune_at: usize,
}

impl Generations {
    fn new() -> Self {
        Self {
            by_project: HashMap::new(),
            last: 0,
            prune_at: MIN_PRUNE_AT,
        }
    }

    fn current(&self, project: &ProjectId) -> u64 {
        self.by_project.get(project).map_or(0, |s| s.generation)
    }

    fn bump(&mut self, project: &ProjectId, now: Timestamp, max_ttl: Duration) {
        self.last += 1;
        self.by_project.insert(
            project.clone(),
            Stamp {
                generation: self.last,
                invalidated_at: now,
            },
        );
        if self.by_project.len() >= self.prune_at {
            // See the module docs: entries written before an invalidation older than max_ttl
            // have all expired, so forgetting it cannot resurrect anything.
            self.by_project
                .retain(|_, s| s.invalidated_at.saturating_add(max_ttl) > now);
            self.prune_at = MIN_PRUNE_AT.max(self.by_project.len().saturating_mul(2));
        }
    }
}

/// In-memory cache store: moka, bounded by `max_cache_entries`, expiry by the injected clock.
pub struct MemoryCache {
    entries: Cache<StoredKey, StoredValue>,
    generations: RwLock<Generations>,
    clock: Arc<dyn Clock>,
    max_value_bytes: usize,
    max_ttl: Duration,
    max_batch: usize,
}

impl MemoryCache {
    /// Builds the store.
    pub fn new(limits: &StoreLimits, clock: Arc<dyn Clock>) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(limits.max_cache_entries)
                .expire_after(Backstop)
                .build(),
            generations: RwLock::new(Generations::new()),
            clock,
            max_value_bytes: limits.max_value_bytes,
            max_ttl: limits.max_ttl,
            max_batch: limits.max_batch,
        }
    }

    fn check_batch(&self, len: usize) -> Result<(), PortError> {
        if len > self.max_batch {
            return Err(PortError::invalid(
                "cache batch",
                format!("{len} items given; at most {} allowed", self.max_batch),
            ));
        }
        Ok(())
    }

    fn check_entry(&self, key: &ScopedKey, value: &Bytes, ttl: Ttl) -> Result<(), PortError> {
        if value.len() > self.max_value_bytes {
            return Err(PortError::invalid(
                "cache value",
                format!(
                    "value for {}/{} is {} bytes; the maximum is {}",
                    key.project,
                    key.key,
                    value.len(),
                    self.max_value_bytes
                ),
            ));
        }
        if ttl < Duration::from_millis(1) || ttl > self.max_ttl {
            return Err(PortError::invalid(
                "cache ttl",
                format!(
                    "ttl for {}/{} is {ttl:?}; it must be between 1ms and {:?}",
                    key.project, key.key, self.max_ttl
                ),
            ));
        }
        Ok(())
    }

    /// The moka keys of `keys` at their projects' current generations, and "now" — both read
    /// under one lock, so an invalidation is either entirely before or entirely after.
    fn resolve<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a ScopedKey>,
    ) -> (Vec<StoredKey>, Timestamp) {
        let generations = self.generations.read();
        let now = self.clock.now();
        let resolved = keys
            .into_iter()
            .map(|k| StoredKey {
                project: k.project.clone(),
                generation: generations.current(&k.project),
                key: k.key.clone(),
            })
            .collect();
        (resolved, now)
    }

    /// [`MemoryCache::resolve`] of one key, without the vector (the single `get`).
    fn resolve_one(&self, key: &ScopedKey) -> (StoredKey, Timestamp) {
        let generations = self.generations.read();
        let now = self.clock.now();
        let stored = StoredKey {
            project: key.project.clone(),
            generation: generations.current(&key.project),
            key: key.key.clone(),
        };
        (stored, now)
    }

    fn read(&self, key: &StoredKey, now: Timestamp) -> Option<Bytes> {
        self.entries
            .get(key)
            .filter(|v| v.live_at(now))
            .map(|v| v.value)
    }

    /// Writes already validated entries.
    fn write(&self, entries: Vec<CacheEntry>) {
        let (keys, now) = self.resolve(entries.iter().map(|e| &e.key));
        for (stored_key, entry) in keys.into_iter().zip(entries) {
            self.entries.insert(
                stored_key,
                StoredValue {
                    value: entry.value,
                    expires_at: now.saturating_add(entry.ttl),
                    ttl: entry.ttl,
                },
            );
        }
    }
}

#[async_trait]
impl CacheStore for MemoryCache {
    async fn get(&self, key: &ScopedKey) -> Result<Option<Bytes>, PortError> {
        let (stored, now) = self.resolve_one(key);
        Ok(self.read(&stored, now))
    }

    async fn get_many(&self, keys: &[ScopedKey]) -> Result<Vec<Option<Bytes>>, PortError> {
        self.check_batch(keys.len())?;
        let (resolved, now) = self.resolve(keys);
        Ok(resolved.iter().map(|k| self.read(k, now)).collect())
    }

    async fn set(&self, key: &ScopedKey, value: Bytes, ttl: Ttl) -> Result<(), PortError> {
        self.check_entry(key, &value, ttl)?;
        self.write(vec![CacheEntry {
            key: key.clone(),
            value,
            ttl,
        }]);
        Ok(())
    }

    async fn set_many(&self, entries: Vec<CacheEntry>) -> Result<(), PortError> {
        self.check_batch(entries.len())?;
        for e in &entries {
            self.check_entry(&e.key, &e.value, e.ttl)?;
        }
        self.write(entries);
        Ok(())
    }

    async fn delete(&self, key: &ScopedKey) -> Result<bool, PortError> {
        let (keys, now) = self.resolve([key]);
        Ok(keys
            .first()
            .and_then(|k| self.entries.remove(k))
            .is_some_and(|v| v.live_at(now)))
    }

    async fn invalidate_project(&self, project: &ProjectId) -> Result<(), PortError> {
        let mut generations = self.generations.write();
        let now = self.clock.now();
        generations.bump(project, now, self.max_ttl);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use parking_lot::Mutex;

    /// A clock tests move by hand.
    struct ManualClock(Mutex<Timestamp>);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            let mut t = self.0.lock();
            *t = t.saturating_add(by);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Timestamp {
            *self.0.lock()
        }
    }

    fn store(limits: StoreLimits) -> (MemoryCache, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock(Mutex::new(Timestamp::from_millis(1_000_000))));
        (MemoryCache::new(&limits, clock.clone()), clock)
    }

    fn key(project: &str, key: &str) -> ScopedKey {
        ScopedKey::new(
            ProjectId::parse(project).unwrap(),
            CacheKey::parse(key).unwrap(),
        )
    }

    #[tokio::test]
    async fn entry_count_is_bounded() {
        let (cache, _) = store(StoreLimits {
            max_cache_entries: 10,
            ..StoreLimits::default()
        });
        for i in 0..200 {
            cache
                .set(
                    &key("p", &format!("k{i}")),
                    Bytes::from_static(b"v"),
                    Duration::from_secs(60),
                )
                .await
                .unwrap();
        }
        cache.entries.run_pending_tasks();
        assert!(
            cache.entries.entry_count() <= 10,
            "{}",
            cache.entries.entry_count()
        );
    }

    #[tokio::test]
    async fn invalidation_is_one_generation_bump() {
        let (cache, _) = store(StoreLimits::default());
        let k = key("p", "k");
        cache
            .set(&k, Bytes::from_static(b"v"), Duration::from_secs(60))
            .await
            .unwrap();
        cache
            .invalidate_project(&ProjectId::parse("p").unwrap())
            .await
            .unwrap();
        assert_eq!(cache.get(&k).await.unwrap(), None);
        let g = cache.generations.read();
        assert_eq!(g.current(&ProjectId::parse("p").unwrap()), 1);
        assert_eq!(g.current(&ProjectId::parse("other").unwrap()), 0);
    }

    #[tokio::test]
    async fn pruned_generations_never_resurrect_entries() {
        let max_ttl = Duration::from_secs(10);
        let (cache, clock) = store(StoreLimits {
            max_ttl,
            ..StoreLimits::default()
        });
        let p = ProjectId::parse("p").unwrap();
        let k = key("p", "k");
        // Written at generation 0 with the longest TTL, then invalidated.
        cache
            .set(&k, Bytes::from_static(b"old"), max_ttl)
            .await
            .unwrap();
        cache.invalidate_project(&p).await.unwrap();
        clock.advance(max_ttl);
        // Fill the table so the next invalidation prunes it, dropping `p`'s stale stamp.
        for i in 0..MIN_PRUNE_AT {
            cache
                .invalidate_project(&ProjectId::parse(format!("q{i}")).unwrap())
                .await
                .unwrap();
        }
        assert_eq!(cache.generations.read().current(&p), 0, "pruned");
        assert!(!cache.generations.read().by_project.contains_key(&p));
        // Back at generation 0 the old entry is still in moka (backstop uses real time) but
        // has expired by the clock.
        assert_eq!(cache.get(&k).await.unwrap(), None);
    }

    #[tokio::test]
    async fn sub_millisecond_ttl_is_invalid() {
        let (cache, _) = store(StoreLimits::default());
        let err = cache
            .set(
                &key("p", "k"),
                Bytes::from_static(b"v"),
                Duration::from_micros(999),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, PortError::Invalid(ref v) if v.component == "cache ttl"));
    }
}
