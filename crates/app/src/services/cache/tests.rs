#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mockall::predicate::*;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use spool_domain::names::{CacheKey, ProjectId, ScopedKey};
use spool_ports::PortError;
use tokio::sync::oneshot;

use super::*;
use crate::services::mocks::{unavailable, MockCache};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u32,
    name: String,
}

fn acme() -> ProjectId {
    ProjectId::parse("acme").unwrap()
}

fn key(k: &str) -> ScopedKey {
    ScopedKey::new(acme(), CacheKey::parse(k).unwrap())
}

fn settings(codec: Codec) -> CacheSettings {
    let mut names = BTreeMap::new();
    names.insert(
        CacheName::parse("users").unwrap(),
        TtlPolicy {
            ttl: Duration::from_secs(600),
            jitter: 0.1,
        },
    );
    names.insert(
        CacheName::parse("exact").unwrap(),
        TtlPolicy {
            ttl: Duration::from_secs(60),
            jitter: 0.0,
        },
    );
    CacheSettings {
        default: TtlPolicy {
            ttl: Duration::from_secs(3600),
            jitter: 0.0,
        },
        max_ttl: Duration::from_secs(7200),
        codec,
        names,
    }
}

fn manager(mock: MockCache) -> CacheManager {
    CacheManager::new(Arc::new(mock), settings(Codec::Json))
}

fn ada() -> User {
    User {
        id: 42,
        name: "ada".into(),
    }
}

#[tokio::test]
async fn typed_get_reads_name_colon_key_in_the_project() {
    let mut mock = MockCache::new();
    mock.expect_get()
        .with(eq(key("users:42")))
        .times(1)
        .returning(|_| Ok(Some(Bytes::from_static(br#"{"id":42,"name":"ada"}"#))));
    let got: Option<User> = manager(mock).get(&acme(), "users", "42").await.unwrap();
    assert_eq!(got, Some(ada()));
}

#[tokio::test]
async fn typed_get_reports_undecodable_bytes() {
    let mut mock = MockCache::new();
    mock.expect_get()
        .returning(|_| Ok(Some(Bytes::from_static(b"not json"))));
    let e = manager(mock)
        .get::<User>(&acme(), "users", "42")
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::Decode { .. }), "{e}");
}

#[tokio::test]
async fn set_uses_the_name_policy_with_bounded_jitter() {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut mock = MockCache::new();
    let s = seen.clone();
    mock.expect_set()
        .with(eq(key("users:42")), always(), always())
        .times(50)
        .returning(move |_, v, ttl| {
            assert_eq!(&v[..], br#"{"id":42,"name":"ada"}"#);
            s.lock().push(ttl);
            Ok(())
        });
    let m = manager(mock);
    for _ in 0..50 {
        m.set(&acme(), "users", "42", &ada()).await.unwrap();
    }
    let seen = seen.lock();
    assert!(seen
        .iter()
        .all(|t| *t >= Duration::from_secs(540) && *t <= Duration::from_secs(660)));
    assert!(
        seen.iter().any(|t| *t != Duration::from_secs(600)),
        "jitter moves TTLs"
    );
}

#[tokio::test]
async fn names_without_a_policy_use_the_default_and_exact_policies_stay_exact() {
    let mut mock = MockCache::new();
    mock.expect_set()
        .with(eq(key("other:1")), always(), eq(Duration::from_secs(3600)))
        .times(1)
        .returning(|_, _, _| Ok(()));
    mock.expect_set()
        .with(eq(key("exact:1")), always(), eq(Duration::from_secs(60)))
        .times(1)
        .returning(|_, _, _| Ok(()));
    let m = manager(mock);
    m.set(&acme(), "other", "1", &1).await.unwrap();
    m.set(&acme(), "exact", "1", &1).await.unwrap();
}

#[tokio::test]
async fn bad_names_and_ttls_never_reach_the_store() {
    let m = manager(MockCache::new()); // any store call would panic: no expectations
    let e = m.get::<User>(&acme(), "Users", "1").await.unwrap_err();
    assert!(e.to_string().contains("cache name"), "{e}");
    let e = m.get::<User>(&acme(), "users", "a b").await.unwrap_err();
    assert!(e.to_string().contains("cache key"), "{e}");
    let e = m
        .set_bytes(&key("k"), Bytes::new(), Some(Duration::from_secs(7201)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ttl"), "{e}");
    assert_eq!(e.code(), "invalid");
    let e = m
        .set_with_ttl(&acme(), "users", "1", &1, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid");
}

#[tokio::test]
async fn port_errors_pass_through_classified() {
    let mut mock = MockCache::new();
    mock.expect_get().returning(|_| Err(unavailable()));
    mock.expect_delete()
        .returning(|_| Err(PortError::invalid("cache key", "x")));
    let m = manager(mock);
    let e = m.get::<User>(&acme(), "users", "1").await.unwrap_err();
    assert!(e.is_transient());
    assert_eq!(e.code(), "unavailable");
    let e = m.delete(&acme(), "users", "1").await.unwrap_err();
    assert!(!e.is_transient());
}

#[tokio::test]
async fn raw_bytes_pass_untouched() {
    let mut mock = MockCache::new();
    mock.expect_set()
        .with(
            eq(key("blob")),
            eq(Bytes::from_static(b"\x00\xff")),
            eq(Duration::from_secs(5)),
        )
        .times(1)
        .returning(|_, _, _| Ok(()));
    mock.expect_set()
        .with(eq(key("blob2")), always(), eq(Duration::from_secs(3600)))
        .times(1)
        .returning(|_, _, _| Ok(()));
    mock.expect_get()
        .with(eq(key("blob")))
        .returning(|_| Ok(Some(Bytes::from_static(b"\x00\xff"))));
    mock.expect_delete()
        .with(eq(key("blob")))
        .returning(|_| Ok(true));
    mock.expect_invalidate_project()
        .with(eq(acme()))
        .times(1)
        .returning(|_| Ok(()));
    let m = manager(mock);
    m.set_bytes(
        &key("blob"),
        Bytes::from_static(b"\x00\xff"),
        Some(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    m.set_bytes(&key("blob2"), Bytes::from_static(b"x"), None)
        .await
        .unwrap();
    assert_eq!(
        m.get_bytes(&key("blob")).await.unwrap().as_deref(),
        Some(&b"\x00\xff"[..])
    );
    assert!(m.delete_bytes(&key("blob")).await.unwrap());
    m.invalidate_project(&acme()).await.unwrap();
}

#[tokio::test]
async fn msgpack_codec_writes_msgpack() {
    let mut mock = MockCache::new();
    mock.expect_set().times(1).returning(|_, v, _| {
        let back: User = rmp_serde::from_slice(&v).unwrap();
        assert_eq!(back, ada());
        Ok(())
    });
    let m = CacheManager::new(Arc::new(mock), settings(Codec::MsgPack));
    m.set(&acme(), "users", "42", &ada()).await.unwrap();
}

#[tokio::test]
async fn get_or_compute_returns_a_hit_without_computing() {
    let mut mock = MockCache::new();
    mock.expect_get()
        .returning(|_| Ok(Some(Bytes::from_static(br#"{"id":42,"name":"ada"}"#))));
    let got: User = manager(mock)
        .get_or_compute(&acme(), "users", "42", || async {
            Err::<User, _>(std::io::Error::other("must not compute"))
        })
        .await
        .unwrap();
    assert_eq!(got, ada());
}

#[tokio::test]
async fn concurrent_misses_compute_once() {
    const CALLERS: usize = 8;
    let mut mock = MockCache::new();
    mock.expect_get().times(CALLERS).returning(|_| Ok(None));
    mock.expect_set()
        .with(eq(key("users:42")), always(), always())
        .times(1)
        .returning(|_, _, _| Ok(()));
    let m = manager(mock);
    let computed = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = oneshot::channel::<()>();
    let rx = Arc::new(parking_lot::Mutex::new(Some(rx)));
    let callers = (0..CALLERS).map(|_| {
        let m = m.clone();
        let computed = computed.clone();
        let rx = rx.clone();
        async move {
            m.get_or_compute(&acme(), "users", "42", move || async move {
                computed.fetch_add(1, Ordering::SeqCst);
                let rx = rx.lock().take().expect("second computation");
                rx.await.map_err(|_| std::io::Error::other("dropped"))?;
                Ok::<_, std::io::Error>(ada())
            })
            .await
        }
    });
    // join_all polls every caller (each misses, then joins the flight) before the release.
    let release = async {
        assert_eq!(m.inner.flights.in_flight(), 1);
        tx.send(()).unwrap();
    };
    let (results, ()) = futures::join!(futures::future::join_all(callers), release);
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    for r in results {
        assert_eq!(r.unwrap(), ada());
    }
}

#[tokio::test]
async fn failed_computations_are_shared_and_not_cached() {
    let mut mock = MockCache::new();
    mock.expect_get().times(3).returning(|_| Ok(None));
    mock.expect_set().times(1).returning(|_, _, _| Ok(()));
    let m = manager(mock);
    let (tx, rx) = oneshot::channel::<()>();
    let rx = Arc::new(parking_lot::Mutex::new(Some(rx)));
    let failing = |rx: Arc<parking_lot::Mutex<Option<oneshot::Receiver<()>>>>| {
        let m = m.clone();
        async move {
            m.get_or_compute(&acme(), "users", "7", move || async move {
                let rx = rx.lock().take().expect("second computation");
                let _ = rx.await;
                Err::<User, _>(std::io::Error::other("upstream down"))
            })
            .await
        }
    };
    let (a, b, ()) = futures::join!(failing(rx.clone()), failing(rx.clone()), async {
        tx.send(()).unwrap();
    });
    for r in [a, b] {
        let e = r.unwrap_err();
        assert!(matches!(e, ServiceError::Compute(_)), "{e}");
        assert!(e.to_string().contains("upstream down"), "{e}");
    }
    let again: User = m
        .get_or_compute(&acme(), "users", "7", || async {
            Ok::<_, std::io::Error>(ada())
        })
        .await
        .unwrap();
    assert_eq!(again, ada(), "the error was not cached");
}

#[tokio::test]
async fn get_or_compute_recomputes_undecodable_values_and_survives_a_failed_store() {
    let mut mock = MockCache::new();
    mock.expect_get()
        .returning(|_| Ok(Some(Bytes::from_static(b"{\"old\":\"schema\"}"))));
    mock.expect_set()
        .times(1)
        .returning(|_, _, _| Err(unavailable()));
    let got: User = manager(mock)
        .get_or_compute(&acme(), "users", "42", || async {
            Ok::<_, std::io::Error>(ada())
        })
        .await
        .unwrap();
    assert_eq!(got, ada());
}

#[tokio::test]
async fn get_or_compute_propagates_a_failed_read() {
    let mut mock = MockCache::new();
    mock.expect_get().returning(|_| Err(unavailable()));
    let e = manager(mock)
        .get_or_compute(&acme(), "users", "42", || async {
            Ok::<_, std::io::Error>(ada())
        })
        .await
        .unwrap_err();
    assert!(e.is_transient());
}

proptest! {
    #[test]
    fn jitter_stays_within_its_fraction_and_the_max(
        ttl_ms in 1u64..10_000_000, jitter in 0.0f64..=0.5, r in 0.0f64..1.0, max_ms in 1u64..20_000_000,
    ) {
        let p = TtlPolicy { ttl: Duration::from_millis(ttl_ms), jitter };
        let max = Duration::from_millis(max_ms);
        let t = p.jittered(max, r);
        prop_assert!(t >= Duration::from_millis(1));
        prop_assert!(t <= max);
        let lo = ((ttl_ms as f64) * (1.0 - jitter)).floor() as u64;
        let hi = ((ttl_ms as f64) * (1.0 + jitter)).ceil() as u64;
        let ms = t.as_millis() as u64;
        prop_assert!(ms <= hi.max(1));
        prop_assert!(ms >= lo.min(max_ms).max(1));
    }
}
