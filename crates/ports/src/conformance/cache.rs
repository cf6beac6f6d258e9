//! Conformance tests of the cache port.
//!
//! Durations stay short (each `advance` well under two seconds) because the Redis run lets
//! real time pass; every assertion is about what a read returns, never about elapsed time.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use spool_domain::limits::StoreLimits;
use spool_domain::names::{CacheKey, ProjectId, ScopedKey};

use crate::conformance::Factory;
use crate::{CacheEntry, PortError};

/// Lists this group's tests for [`crate::conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cache {
    (#[$attr:meta] $factory:ident) => {
        $crate::__conformance_group!(
            #[$attr]
            $factory,
            conformance_cache,
            cache,
            [
                set_get_delete,
                get_missing_is_none,
                values_are_opaque_bytes,
                batches_keep_order_across_projects,
                ttl_expires_by_the_backend_clock,
                overwrite_replaces_value_and_ttl,
                invalidate_project_spares_other_projects,
                oversized_value_is_invalid_and_not_stored,
                ttl_out_of_bounds_is_invalid,
                set_many_with_one_bad_entry_writes_nothing,
                batch_over_max_batch_is_invalid,
                invalid_key_components_are_rejected_at_parse,
            ]
        );
    };
}

fn key(project: &str, key: &str) -> ScopedKey {
    ScopedKey::new(
        ProjectId::parse(project).unwrap(),
        CacheKey::parse(key).unwrap(),
    )
}

fn bytes(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

const MINUTE: Duration = Duration::from_secs(60);

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, PortError>, what: &str) {
    match r {
        Err(PortError::Invalid(_)) => {}
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

/// `set` then `get` returns the value; `delete` removes it and says whether it existed.
pub async fn set_get_delete(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let k = key("cache-basic", "user:42:profile");
    fx.cache.set(&k, bytes("hello"), MINUTE).await.unwrap();
    assert_eq!(fx.cache.get(&k).await.unwrap(), Some(bytes("hello")));
    assert!(fx.cache.delete(&k).await.unwrap(), "the key existed");
    assert_eq!(fx.cache.get(&k).await.unwrap(), None, "deleted");
    assert!(!fx.cache.delete(&k).await.unwrap(), "already gone");
    // Deleting one key leaves its neighbours alone.
    let (a, b) = (key("cache-basic", "a"), key("cache-basic", "b"));
    fx.cache.set(&a, bytes("A"), MINUTE).await.unwrap();
    fx.cache.set(&b, bytes("B"), MINUTE).await.unwrap();
    assert!(fx.cache.delete(&a).await.unwrap());
    assert_eq!(fx.cache.get(&b).await.unwrap(), Some(bytes("B")));
}

/// A key never set reads as `None`, deletes as `false`; a project never used invalidates fine.
pub async fn get_missing_is_none(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let k = key("cache-missing", "nothing-here");
    assert_eq!(fx.cache.get(&k).await.unwrap(), None);
    assert!(!fx.cache.delete(&k).await.unwrap());
    fx.cache
        .invalidate_project(&ProjectId::parse("cache-never-used").unwrap())
        .await
        .unwrap();
    assert_eq!(
        fx.cache.get_many(&[k.clone(), k]).await.unwrap(),
        vec![None, None]
    );
}

/// Values are bytes: empty values and every byte value round-trip unchanged.
pub async fn values_are_opaque_bytes(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let all: Bytes = (0..=255u8).collect::<Vec<u8>>().into();
    let (k_all, k_empty) = (key("cache-bytes", "all"), key("cache-bytes", "empty"));
    fx.cache.set(&k_all, all.clone(), MINUTE).await.unwrap();
    fx.cache.set(&k_empty, Bytes::new(), MINUTE).await.unwrap();
    assert_eq!(fx.cache.get(&k_all).await.unwrap(), Some(all));
    assert_eq!(
        fx.cache.get(&k_empty).await.unwrap(),
        Some(Bytes::new()),
        "an empty value is a hit, not a miss"
    );
    assert!(fx.cache.delete(&k_empty).await.unwrap());
}

/// `set_many` / `get_many` across two projects: one slot per key, in order, `None` for misses.
pub async fn batches_keep_order_across_projects(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let a1 = key("cache-batch-a", "k1");
    let a2 = key("cache-batch-a", "k2");
    let b1 = key("cache-batch-b", "k1"); // same key text, other project
    let missing = key("cache-batch-b", "missing");
    fx.cache
        .set_many(vec![
            CacheEntry {
                key: a1.clone(),
                value: bytes("a1"),
                ttl: MINUTE,
            },
            CacheEntry {
                key: b1.clone(),
                value: bytes("b1"),
                ttl: MINUTE,
            },
            CacheEntry {
                key: a2.clone(),
                value: bytes("a2"),
                ttl: MINUTE,
            },
        ])
        .await
        .unwrap();
    let got = fx
        .cache
        .get_many(&[
            b1.clone(),
            missing.clone(),
            a1.clone(),
            a2.clone(),
            b1.clone(),
        ])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            Some(bytes("b1")),
            None,
            Some(bytes("a1")),
            Some(bytes("a2")),
            Some(bytes("b1")),
        ]
    );
    assert_eq!(fx.cache.get(&a1).await.unwrap(), Some(bytes("a1")));
    assert_eq!(
        fx.cache.get_many(&[]).await.unwrap(),
        Vec::<Option<Bytes>>::new()
    );
    fx.cache.set_many(Vec::new()).await.unwrap();
}

/// An entry is visible before its TTL and gone once the TTL has passed.
pub async fn ttl_expires_by_the_backend_clock(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let short = key("cache-ttl", "short");
    let long = key("cache-ttl", "long");
    fx.cache
        .set(&short, bytes("s"), Duration::from_millis(1500))
        .await
        .unwrap();
    fx.cache.set(&long, bytes("l"), MINUTE).await.unwrap();
    fx.clock.advance(Duration::from_millis(300)).await;
    assert_eq!(
        fx.cache.get(&short).await.unwrap(),
        Some(bytes("s")),
        "not yet expired"
    );
    fx.clock.advance(Duration::from_millis(1200)).await;
    assert_eq!(fx.cache.get(&short).await.unwrap(), None, "expired");
    assert!(
        !fx.cache.delete(&short).await.unwrap(),
        "an expired key does not exist"
    );
    assert_eq!(
        fx.cache.get_many(&[short, long.clone()]).await.unwrap(),
        vec![None, Some(bytes("l"))]
    );
    assert_eq!(fx.cache.get(&long).await.unwrap(), Some(bytes("l")));
}

/// Setting a key again replaces both its value and its TTL (longer or shorter).
pub async fn overwrite_replaces_value_and_ttl(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let k = key("cache-overwrite", "k");
    fx.cache
        .set(&k, bytes("v1"), Duration::from_millis(300))
        .await
        .unwrap();
    fx.cache
        .set(&k, bytes("v2"), Duration::from_millis(1400))
        .await
        .unwrap();
    assert_eq!(fx.cache.get(&k).await.unwrap(), Some(bytes("v2")));
    fx.clock.advance(Duration::from_millis(300)).await;
    assert_eq!(
        fx.cache.get(&k).await.unwrap(),
        Some(bytes("v2")),
        "the longer TTL of the overwrite applies"
    );
    fx.cache
        .set(&k, bytes("v3"), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(fx.cache.get(&k).await.unwrap(), Some(bytes("v3")));
    fx.clock.advance(Duration::from_millis(300)).await;
    assert_eq!(
        fx.cache.get(&k).await.unwrap(),
        None,
        "the shorter TTL of the overwrite applies"
    );
}

/// Invalidating a project drops all of its keys, spares other projects, and keys written
/// afterwards are visible again.
pub async fn invalidate_project_spares_other_projects(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    let gone = ProjectId::parse("cache-inv-gone").unwrap();
    let g1 = key("cache-inv-gone", "k1");
    let g2 = key("cache-inv-gone", "deep:nested/key");
    let kept = key("cache-inv-kept", "k1"); // same key text in another project
    let kept_prefix = key("cache-inv-gone2", "k1"); // project name extends the invalidated one
    for k in [&g1, &g2, &kept, &kept_prefix] {
        fx.cache.set(k, bytes("v"), MINUTE).await.unwrap();
    }
    fx.cache.invalidate_project(&gone).await.unwrap();
    assert_eq!(
        fx.cache
            .get_many(&[g1.clone(), g2.clone(), kept.clone(), kept_prefix.clone()])
            .await
            .unwrap(),
        vec![None, None, Some(bytes("v")), Some(bytes("v"))]
    );
    assert!(
        !fx.cache.delete(&g1).await.unwrap(),
        "an invalidated key does not exist"
    );
    // New writes after the invalidation are visible.
    fx.cache.set(&g1, bytes("new"), MINUTE).await.unwrap();
    assert_eq!(fx.cache.get(&g1).await.unwrap(), Some(bytes("new")));
    assert_eq!(fx.cache.get(&g2).await.unwrap(), None, "still invalidated");
    // A second invalidation drops the new writes too.
    fx.cache.invalidate_project(&gone).await.unwrap();
    assert_eq!(fx.cache.get(&g1).await.unwrap(), None);
    assert_eq!(fx.cache.get(&kept).await.unwrap(), Some(bytes("v")));
}

/// A value over `max_value_bytes` is `Invalid`; nothing is stored or truncated, and the
/// previous value survives. Exactly the maximum is fine.
pub async fn oversized_value_is_invalid_and_not_stored(factory: Factory) {
    let fx = factory(StoreLimits {
        max_value_bytes: 16,
        ..StoreLimits::default()
    })
    .await;
    let k = key("cache-size", "k");
    let fresh = key("cache-size", "fresh");
    fx.cache.set(&k, bytes("old"), MINUTE).await.unwrap();
    let too_big = Bytes::from(vec![b'x'; 17]);
    assert_invalid(
        fx.cache.set(&k, too_big.clone(), MINUTE).await,
        "17 bytes over k",
    );
    assert_invalid(
        fx.cache.set(&fresh, too_big, MINUTE).await,
        "17 bytes on a fresh key",
    );
    assert_eq!(fx.cache.get(&k).await.unwrap(), Some(bytes("old")));
    assert_eq!(fx.cache.get(&fresh).await.unwrap(), None);
    let max = Bytes::from(vec![b'y'; 16]);
    fx.cache.set(&fresh, max.clone(), MINUTE).await.unwrap();
    assert_eq!(fx.cache.get(&fresh).await.unwrap(), Some(max));
}

/// A TTL below 1 ms or above `max_ttl` is `Invalid` and stores nothing; `max_ttl` itself is
/// fine.
pub async fn ttl_out_of_bounds_is_invalid(factory: Factory) {
    let max_ttl = Duration::from_secs(10);
    let fx = factory(StoreLimits {
        max_ttl,
        ..StoreLimits::default()
    })
    .await;
    let k = key("cache-ttl-bounds", "k");
    for ttl in [
        Duration::ZERO,
        Duration::from_micros(500),
        max_ttl + Duration::from_millis(1),
        Duration::from_secs(365 * 24 * 3600),
    ] {
        assert_invalid(fx.cache.set(&k, bytes("v"), ttl).await, &format!("{ttl:?}"));
        assert_eq!(
            fx.cache.get(&k).await.unwrap(),
            None,
            "{ttl:?} stored nothing"
        );
    }
    fx.cache.set(&k, bytes("v"), max_ttl).await.unwrap();
    assert_eq!(fx.cache.get(&k).await.unwrap(), Some(bytes("v")));
    let one_ms = key("cache-ttl-bounds", "one-ms");
    fx.cache
        .set(&one_ms, bytes("v"), Duration::from_millis(1))
        .await
        .unwrap();
}

/// `set_many` validates every entry before writing any: one bad entry leaves all keys as they
/// were.
pub async fn set_many_with_one_bad_entry_writes_nothing(factory: Factory) {
    let fx = factory(StoreLimits {
        max_value_bytes: 8,
        max_ttl: Duration::from_secs(10),
        ..StoreLimits::default()
    })
    .await;
    let existing = key("cache-atomic", "existing");
    let fresh = key("cache-atomic", "fresh");
    let other = key("cache-atomic-2", "fresh");
    fx.cache
        .set(&existing, bytes("old"), MINUTE / 10)
        .await
        .unwrap();
    let good = |k: &ScopedKey| CacheEntry {
        key: k.clone(),
        value: bytes("new"),
        ttl: Duration::from_secs(5),
    };
    let oversized = CacheEntry {
        value: Bytes::from(vec![0u8; 9]),
        ..good(&other)
    };
    let zero_ttl = CacheEntry {
        ttl: Duration::ZERO,
        ..good(&other)
    };
    let long_ttl = CacheEntry {
        ttl: Duration::from_secs(11),
        ..good(&other)
    };
    for bad in [oversized, zero_ttl, long_ttl] {
        // The bad entry comes last, so a store that wrote as it validated would be caught.
        let r = fx
            .cache
            .set_many(vec![good(&existing), good(&fresh), bad])
            .await;
        assert_invalid(r, "set_many with a bad entry");
        assert_eq!(
            fx.cache
                .get_many(&[existing.clone(), fresh.clone(), other.clone()])
                .await
                .unwrap(),
            vec![Some(bytes("old")), None, None],
            "nothing written"
        );
    }
    fx.cache
        .set_many(vec![good(&existing), good(&fresh), good(&other)])
        .await
        .unwrap();
    assert_eq!(
        fx.cache.get_many(&[existing, fresh, other]).await.unwrap(),
        vec![Some(bytes("new")), Some(bytes("new")), Some(bytes("new"))]
    );
}

/// More than `max_batch` keys or entries is `Invalid` (and writes nothing); exactly
/// `max_batch` is fine.
pub async fn batch_over_max_batch_is_invalid(factory: Factory) {
    let fx = factory(StoreLimits {
        max_batch: 3,
        ..StoreLimits::default()
    })
    .await;
    let keys: Vec<ScopedKey> = (0..4)
        .map(|i| key("cache-max-batch", &format!("k{i}")))
        .collect();
    let entries = |n: usize| -> Vec<CacheEntry> {
        keys[..n]
            .iter()
            .map(|k| CacheEntry {
                key: k.clone(),
                value: bytes("v"),
                ttl: MINUTE,
            })
            .collect()
    };
    assert_invalid(fx.cache.get_many(&keys).await, "get_many of 4");
    assert_invalid(fx.cache.set_many(entries(4)).await, "set_many of 4");
    assert_eq!(
        fx.cache.get_many(&keys[..3]).await.unwrap(),
        vec![None, None, None],
        "the refused set_many wrote nothing"
    );
    assert_eq!(fx.cache.get(&keys[3]).await.unwrap(), None);
    fx.cache.set_many(entries(3)).await.unwrap();
    assert_eq!(
        fx.cache.get_many(&keys[..3]).await.unwrap(),
        vec![Some(bytes("v")), Some(bytes("v")), Some(bytes("v"))]
    );
}

/// Keys are built from validated components: braces, globs, spaces, empty and over-long
/// values never become a key.
pub async fn invalid_key_components_are_rejected_at_parse(factory: Factory) {
    let fx = factory(StoreLimits::default()).await;
    for bad in [
        "a{b", "a}b", "a*", "a?b", "a[b]", "a b", "a\\b", "", "é", "a\nb",
    ] {
        assert!(CacheKey::parse(bad).is_err(), "cache key {bad:?}");
        assert!(ProjectId::parse(bad).is_err(), "project {bad:?}");
    }
    assert!(CacheKey::parse("k".repeat(CacheKey::MAX_LEN + 1)).is_err());
    assert!(ProjectId::parse("p".repeat(ProjectId::MAX_LEN + 1)).is_err());
    // The longest valid components work end to end.
    let long = ScopedKey::new(
        ProjectId::parse("p".repeat(ProjectId::MAX_LEN)).unwrap(),
        CacheKey::parse("k".repeat(CacheKey::MAX_LEN)).unwrap(),
    );
    fx.cache.set(&long, bytes("v"), MINUTE).await.unwrap();
    assert_eq!(fx.cache.get(&long).await.unwrap(), Some(bytes("v")));
    let punct = key("Cache_Punct-1", "a_b.c:d/e@f=g+h-i");
    fx.cache.set(&punct, bytes("p"), MINUTE).await.unwrap();
    assert_eq!(fx.cache.get(&punct).await.unwrap(), Some(bytes("p")));
}
