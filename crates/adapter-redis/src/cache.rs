//! The cache: plain `GET` / `MGET` for reads, Lua for writes that keep the scope index.
//!
//! Invalidation uses a per-scope index (`<prefix>:{c:<project>}:idx`, a zset of the scope's
//! keys scored by expiry ms): `invalidate_project` deletes exactly the indexed keys, so it is
//! O(keys in the scope) and never scans the keyspace. Writes prune expired members (bounded
//! batch) and keep the index alive exactly as long as its longest-lived member.
//!
//! **Large values stay out of Lua.** Redis's Lua hashes every byte of every string a script
//! receives (~1.6 µs per KiB here, docs/PERFORMANCE.md), so a write carrying
//! [`LARGE_WRITE_BYTES`] or more of values is one `MULTI`/`EXEC` instead of one script: a plain
//! `SET … PX` per value, then `cache_index.lua` with the members and TTLs only, sent with
//! `EVAL` (a `NOSCRIPT` inside a transaction would leave the values stored but not indexed,
//! so invisible to an invalidation). Both ways are atomic and one round trip; below the
//! threshold the single script is cheaper overall (see [`LARGE_WRITE_BYTES`]).
//!
//! Round trips: `get` 1 (`GET`), `get_many` 1 per project (`MGET`, sent concurrently),
//! `set` 1, `set_many` 1 per project, `delete` 1, `invalidate_project` 1.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use fred::interfaces::{KeysInterface, TransactionInterface};
use fred::types::{Expiration, Value};
use spool_domain::names::{ProjectId, ScopedKey};
use spool_domain::time::duration_millis;
use spool_ports::{CacheEntry, CacheStore, PortError, Ttl};

use crate::backend::Shared;
use crate::error::classify;

/// Values of one write, in bytes, from which it goes by `MULTI`/`EXEC` rather than by one
/// script. Measured with `spool bench --value-bytes` (docs/PERFORMANCE.md): at 64 KiB the
/// transaction takes the server 28–31 µs a write instead of 139–140 and the p50 of a write
/// falls by a quarter; at 8 and 16 KiB its four commands (`MULTI`, `SET`, `EVAL`, `EXEC`)
/// cost server and client more than the Lua hashing of the value they avoid, and at 64
/// clients throughput fell by 20–40 % (with connections of their own for the transactions
/// as well).
pub const LARGE_WRITE_BYTES: usize = 64 << 10;

/// The Redis cache store.
#[derive(Clone)]
pub struct RedisCache {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache").finish_non_exhaustive()
    }
}

impl RedisCache {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn check_batch(&self, n: usize) -> Result<(), PortError> {
        let max = self.shared.limits.max_batch;
        if n > max {
            return Err(PortError::invalid(
                "batch",
                format!("{n} items exceed the maximum of {max}"),
            ));
        }
        Ok(())
    }

    /// Validates one entry; returns the TTL in ms.
    fn check_entry(&self, value: &Bytes, ttl: Ttl) -> Result<u64, PortError> {
        let limits = &self.shared.limits;
        if value.len() > limits.max_value_bytes {
            return Err(PortError::invalid(
                "cache value",
                format!(
                    "{} bytes exceed the maximum of {}",
                    value.len(),
                    limits.max_value_bytes
                ),
            ));
        }
        let ms = duration_millis(ttl);
        if ms == 0 || ttl > limits.max_ttl {
            return Err(PortError::invalid(
                "ttl",
                format!("{ttl:?} is outside 1 ms ..= {:?}", limits.max_ttl),
            ));
        }
        Ok(ms)
    }

    /// Stores `entries` (all of `project`) and indexes them, atomically, in one round trip:
    /// one script, or for [`LARGE_WRITE_BYTES`] of values and more one transaction.
    async fn write_scope(
        &self,
        project: &ProjectId,
        entries: Vec<(&ScopedKey, Bytes, u64)>,
    ) -> Result<(), PortError> {
        let keys = &self.shared.keys;
        let index = keys.cache_index(project);
        let large = entries.iter().map(|(_, v, _)| v.len()).sum::<usize>() >= LARGE_WRITE_BYTES;
        if large {
            return self.write_large(index, entries).await;
        }
        let mut redis_keys = Vec::with_capacity(entries.len() + 1);
        let mut args = Vec::with_capacity(entries.len() * 3);
        redis_keys.push(index);
        for (key, value, ttl_ms) in entries {
            redis_keys.push(keys.cache_value(key));
            args.push(Value::from(key.key.as_str()));
            args.push(Value::from(ttl_ms.to_string()));
            args.push(Value::Bytes(value));
        }
        self.shared
            .scripts
            .cache_set
            .run::<Value, _>(&self.shared.pool, redis_keys, args)
            .await?;
        Ok(())
    }

    /// [`RedisCache::write_scope`] for large values: `MULTI`, a `SET … PX` per value,
    /// `cache_index.lua` by `EVAL`, `EXEC` (sent together; every key shares the scope's slot).
    async fn write_large(
        &self,
        index: String,
        entries: Vec<(&ScopedKey, Bytes, u64)>,
    ) -> Result<(), PortError> {
        let keys = &self.shared.keys;
        let tx = self.shared.pool.next().multi();
        let mut args = Vec::with_capacity(entries.len() * 2);
        let n = entries.len();
        for (key, value, ttl_ms) in entries {
            let ms = i64::try_from(ttl_ms)
                .map_err(|_| PortError::invalid("ttl", format!("{ttl_ms} ms is too long")))?;
            tx.set::<(), _, _>(
                keys.cache_value(key),
                value,
                Some(Expiration::PX(ms)),
                None,
                false,
            )
            .await
            .map_err(classify)?;
            args.push(Value::from(key.key.as_str()));
            args.push(Value::from(ttl_ms.to_string()));
        }
        self.shared
            .scripts
            .cache_index
            .queue_eval(&tx, vec![index], args)
            .await?;
        let replies: Vec<Value> = tx.exec(true).await.map_err(classify)?;
        if replies.len() != n + 1 {
            return Err(PortError::internal(format!(
                "cache write: {} replies to {} commands",
                replies.len(),
                n + 1
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl CacheStore for RedisCache {
    async fn get(&self, key: &ScopedKey) -> Result<Option<Bytes>, PortError> {
        self.shared
            .pool
            .get::<Option<Bytes>, _>(self.shared.keys.cache_value(key))
            .await
            .map_err(classify)
    }

    async fn get_many(&self, keys: &[ScopedKey]) -> Result<Vec<Option<Bytes>>, PortError> {
        self.check_batch(keys.len())?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // Group positions by project: one MGET per project (its keys share a slot).
        let mut groups: BTreeMap<&ProjectId, Vec<usize>> = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            groups.entry(&k.project).or_default().push(i);
        }
        let calls = groups.values().map(|positions| {
            let redis_keys: Vec<String> = positions
                .iter()
                .map(|&i| self.shared.keys.cache_value(&keys[i]))
                .collect();
            async move {
                let values: Vec<Option<Bytes>> = if let [only] = redis_keys.as_slice() {
                    vec![self
                        .shared
                        .pool
                        .get::<Option<Bytes>, _>(only.as_str())
                        .await
                        .map_err(classify)?]
                } else {
                    self.shared
                        .pool
                        .mget::<Vec<Option<Bytes>>, _>(redis_keys)
                        .await
                        .map_err(classify)?
                };
                Ok::<_, PortError>(values)
            }
        });
        let results = futures::future::try_join_all(calls).await?;
        let mut out = vec![None; keys.len()];
        for (positions, values) in groups.values().zip(results) {
            if values.len() != positions.len() {
                return Err(crate::error::corrupt("MGET returned a different count"));
            }
            for (&i, v) in positions.iter().zip(values) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    async fn set(&self, key: &ScopedKey, value: Bytes, ttl: Ttl) -> Result<(), PortError> {
        let ms = self.check_entry(&value, ttl)?;
        self.write_scope(&key.project, vec![(key, value, ms)]).await
    }

    async fn set_many(&self, entries: Vec<CacheEntry>) -> Result<(), PortError> {
        self.check_batch(entries.len())?;
        let mut groups: BTreeMap<&ProjectId, Vec<(&ScopedKey, Bytes, u64)>> = BTreeMap::new();
        for e in &entries {
            let ms = self.check_entry(&e.value, e.ttl)?;
            groups
                .entry(&e.key.project)
                .or_default()
                .push((&e.key, e.value.clone(), ms));
        }
        let calls = groups
            .into_iter()
            .map(|(project, group)| self.write_scope(project, group));
        futures::future::try_join_all(calls).await?;
        Ok(())
    }

    async fn delete(&self, key: &ScopedKey) -> Result<bool, PortError> {
        let keys = &self.shared.keys;
        let n: i64 = self
            .shared
            .scripts
            .cache_delete
            .run(
                &self.shared.pool,
                vec![keys.cache_value(key), keys.cache_index(&key.project)],
                vec![Value::from(key.key.as_str())],
            )
            .await?;
        Ok(n > 0)
    }

    async fn invalidate_project(&self, project: &ProjectId) -> Result<(), PortError> {
        let keys = &self.shared.keys;
        self.shared
            .scripts
            .cache_invalidate
            .run::<Value, _>(
                &self.shared.pool,
                vec![keys.cache_index(project)],
                vec![Value::from(format!("{}k:", keys.cache_scope(project)))],
            )
            .await?;
        Ok(())
    }
}
