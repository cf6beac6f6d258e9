//! Encryption at rest (`[encryption]`): round trips on both adapters, no plaintext in Redis as
//! seen by an independent client (the `redis` crate, not fred), key rotation, tampering and
//! ciphertexts moved to another key or task.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use spool_adapter_memory::TokioClock;
use spool_adapter_redis::testing::{redis_url, test_config};
use spool_adapter_redis::{RedisBackend, RedisConfig};
use spool_app::config::{Config, EnvLayer};
use spool_app::crypto::{generate_key_text, key_id_of, JSON_MARKER};
use spool_app::services::EnqueueOptions;
use spool_app::{memory_backends, Backends, ServiceError, Spool};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{ProjectId, QueueName, TaskKind, WorkerId};
use spool_domain::task::TaskStatus;
use spool_ports::{PortError, ReserveOptions};

/// A string that appears nowhere but in the values under test.
fn marker(tag: &str) -> String {
    format!("PLAINTEXT-{tag}-{:016x}", rand::random::<u64>())
}

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for id in ["k1", "k2"] {
            std::fs::write(dir.path().join(id), generate_key_text().expose()).unwrap();
        }
        Self { dir }
    }

    /// A configuration with `keys` listed, `active` sealing, `secrets` and `vault` sensitive.
    fn config(&self, keys: &[&str], active: &str) -> Config {
        let list: Vec<String> = keys
            .iter()
            .map(|id| {
                format!(
                    "{{ id = {id:?}, key_file = {:?} }}",
                    self.dir.path().join(id).display().to_string()
                )
            })
            .collect();
        let toml = format!(
            "[encryption]\nkeys = [{}]\nactive = {active:?}\ncaches = [\"secrets\"]\nqueues = [\"vault\"]\n",
            list.join(", ")
        );
        Config::from_toml_str(&toml, &EnvLayer::default()).unwrap()
    }
}

async fn redis_backends(config: &RedisConfig) -> Backends {
    let b = RedisBackend::connect(config.clone()).await.unwrap();
    Backends {
        name: "redis",
        cache: Arc::new(b.cache()),
        limiter: Arc::new(b.rate_limiter()),
        queue: Arc::new(b.queue()),
        progress: Arc::new(b.progress()),
        health: Arc::new(b.health()),
    }
}

fn memory() -> Backends {
    memory_backends(&StoreLimits::default(), Arc::new(TokioClock::new()))
}

/// Everything stored under `prefix`, as raw bytes, read by an independent client.
fn raw_dump(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut con = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut con).unwrap();
        let parts: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis::cmd("GET").arg(&key).query(&mut con).unwrap()],
            "hash" => redis::cmd("HGETALL").arg(&key).query(&mut con).unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut con)
                .unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut con)
                .unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(&key).query(&mut con).unwrap(),
            _ => Vec::new(),
        };
        out.push((key, parts.concat()));
    }
    out
}

fn holds(dump: &[(String, Vec<u8>)], needle: &str) -> bool {
    dump.iter()
        .any(|(k, v)| k.contains(needle) || v.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

fn raw_con() -> redis::Connection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn expect_decrypt_error<T: std::fmt::Debug>(r: Result<T, ServiceError>, needle: &str) {
    match r {
        Err(ServiceError::Port(PortError::Internal { message, .. })) => {
            assert!(message.contains(needle), "{message}");
        }
        other => panic!("expected a decryption error, got {other:?}"),
    }
}

fn acme() -> ProjectId {
    ProjectId::parse("acme").unwrap()
}

fn vault() -> QueueName {
    QueueName::parse("vault").unwrap()
}

/// Cache + queue round trip through the services; returns the plaintext markers used.
async fn round_trip(spool: &Spool) -> Vec<String> {
    let (secret, public) = (marker("cache-secret"), marker("cache-public"));
    let cache = spool.cache();
    cache
        .set(&acme(), "secrets", "token", &secret)
        .await
        .unwrap();
    cache.set(&acme(), "public", "note", &public).await.unwrap();
    let back: Option<String> = cache.get(&acme(), "secrets", "token").await.unwrap();
    assert_eq!(back.as_deref(), Some(secret.as_str()));
    let back: Option<String> = cache.get(&acme(), "public", "note").await.unwrap();
    assert_eq!(back.as_deref(), Some(public.as_str()));

    let (payload, result) = (marker("payload"), marker("result"));
    let kind = TaskKind::parse("sensitive").unwrap();
    let task = spool
        .queue()
        .enqueue(
            &vault(),
            &kind,
            &serde_json::json!({"card": payload}),
            EnqueueOptions::new(),
        )
        .await
        .unwrap()
        .into_task();
    assert_eq!(task.payload["card"], payload.as_str());
    let lease = spool
        .queue()
        .reserve(
            std::slice::from_ref(&vault()),
            ReserveOptions::new(std::time::Duration::from_secs(30))
                .worker(WorkerId::parse("w1").unwrap()),
        )
        .await
        .unwrap()
        .expect("the task is ready");
    assert_eq!(lease.task.id, task.id);
    assert_eq!(lease.task.payload["card"], payload.as_str());
    let done = spool
        .queue()
        .complete(
            &vault(),
            task.id,
            lease.token,
            Some(serde_json::json!({"out": result})),
        )
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(done.result.as_ref().unwrap()["out"], result.as_str());
    let read = spool.queue().get(&vault(), task.id).await.unwrap().unwrap();
    assert_eq!(read.payload["card"], payload.as_str());
    assert_eq!(read.result.unwrap()["out"], result.as_str());
    vec![secret, payload, result, public]
}

#[tokio::test]
async fn memory_round_trip() {
    let keys = Keys::new();
    let spool = Spool::from_backends(memory(), &keys.config(&["k1"], "k1")).unwrap();
    round_trip(&spool).await;
}

#[tokio::test]
async fn redis_round_trip_stores_no_plaintext() {
    let keys = Keys::new();
    let rc = test_config(StoreLimits::default());
    let prefix = rc.prefix.to_string();
    let spool =
        Spool::from_backends(redis_backends(&rc).await, &keys.config(&["k1"], "k1")).unwrap();
    let markers = round_trip(&spool).await;
    let dump = raw_dump(&prefix);
    let (sensitive, public) = markers.split_at(3);
    for m in sensitive {
        assert!(!holds(&dump, m), "{m} is stored in clear");
    }
    // The control: a value of a name that is not sensitive is found, so the scan works.
    assert!(
        holds(&dump, &public[0]),
        "the scan sees plaintext when there is some"
    );
    assert!(
        holds(&dump, JSON_MARKER),
        "payloads are stored as marked ciphertext"
    );
}

#[tokio::test]
async fn rotation_keeps_old_values_readable_and_seals_new_ones_with_the_active_key() {
    let keys = Keys::new();
    let rc = test_config(StoreLimits::default());
    let prefix = rc.prefix.to_string();
    let old = Spool::from_backends(redis_backends(&rc).await, &keys.config(&["k1"], "k1")).unwrap();
    old.cache()
        .set(&acme(), "secrets", "a", "old value")
        .await
        .unwrap();
    let kind = TaskKind::parse("k").unwrap();
    let old_task = old
        .queue()
        .enqueue(&vault(), &kind, &"old payload", EnqueueOptions::new())
        .await
        .unwrap()
        .into_task();

    let rotated =
        Spool::from_backends(redis_backends(&rc).await, &keys.config(&["k1", "k2"], "k2")).unwrap();
    let v: Option<String> = rotated.cache().get(&acme(), "secrets", "a").await.unwrap();
    assert_eq!(v.as_deref(), Some("old value"));
    let t = rotated
        .queue()
        .get(&vault(), old_task.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.payload, "old payload");
    rotated
        .cache()
        .set(&acme(), "secrets", "b", "new value")
        .await
        .unwrap();

    let mut con = raw_con();
    let raw = |con: &mut redis::Connection, k: &str| -> Vec<u8> {
        redis::cmd("GET")
            .arg(format!("{prefix}:{{c:acme}}:k:secrets:{k}"))
            .query(con)
            .unwrap()
    };
    assert_eq!(key_id_of(&raw(&mut con, "a")).unwrap(), "k1");
    assert_eq!(key_id_of(&raw(&mut con, "b")).unwrap(), "k2");

    // Once k1 is dropped from the ring, its values are a clear error, never garbage.
    let k2_only =
        Spool::from_backends(redis_backends(&rc).await, &keys.config(&["k2"], "k2")).unwrap();
    expect_decrypt_error(
        k2_only.cache().get::<String>(&acme(), "secrets", "a").await,
        "\"k1\"",
    );
    let v: Option<String> = k2_only.cache().get(&acme(), "secrets", "b").await.unwrap();
    assert_eq!(v.as_deref(), Some("new value"));
}

#[tokio::test]
async fn tampered_values_are_errors_and_a_tampered_task_is_dead_lettered() {
    let keys = Keys::new();
    let rc = test_config(StoreLimits::default());
    let prefix = rc.prefix.to_string();
    let spool =
        Spool::from_backends(redis_backends(&rc).await, &keys.config(&["k1"], "k1")).unwrap();
    spool
        .cache()
        .set(&acme(), "secrets", "a", "value")
        .await
        .unwrap();
    let mut con = raw_con();
    let key = format!("{prefix}:{{c:acme}}:k:secrets:a");
    let mut raw: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x01;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&raw)
        .arg("KEEPTTL")
        .query(&mut con)
        .unwrap();
    expect_decrypt_error(
        spool.cache().get::<String>(&acme(), "secrets", "a").await,
        "authentication failed",
    );
    raw.truncate(10);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&raw)
        .arg("KEEPTTL")
        .query(&mut con)
        .unwrap();
    expect_decrypt_error(
        spool.cache().get::<String>(&acme(), "secrets", "a").await,
        "truncated",
    );

    let kind = TaskKind::parse("k").unwrap();
    let task = spool
        .queue()
        .enqueue(&vault(), &kind, &"payload", EnqueueOptions::new())
        .await
        .unwrap()
        .into_task();
    let hash = format!("{prefix}:{{q:vault}}:t:{}", task.id);
    let stored: String = redis::cmd("HGET")
        .arg(&hash)
        .arg("payload")
        .query(&mut con)
        .unwrap();
    // The stored JSON string: flip one base64 character in the middle of the ciphertext.
    let mut chars: Vec<char> = stored.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let _: () = redis::cmd("HSET")
        .arg(&hash)
        .arg("payload")
        .arg(&tampered)
        .query(&mut con)
        .unwrap();
    expect_decrypt_error(
        spool.queue().get(&vault(), task.id).await,
        "authentication failed",
    );

    // A worker never receives it: the reservation fails and the task goes to dead letters.
    let r = spool
        .queue()
        .reserve(
            std::slice::from_ref(&vault()),
            ReserveOptions::new(std::time::Duration::from_secs(30)),
        )
        .await;
    expect_decrypt_error(r, "authentication failed");
    let status: String = redis::cmd("HGET")
        .arg(&hash)
        .arg("status")
        .query(&mut con)
        .unwrap();
    assert!(status.contains("dead"), "{status}");
    let last_error: String = redis::cmd("HGET")
        .arg(&hash)
        .arg("last_error")
        .query(&mut con)
        .unwrap();
    assert!(last_error.contains("cannot be decrypted"), "{last_error}");
}

#[tokio::test]
async fn ciphertext_moved_to_another_key_or_task_does_not_open() {
    let keys = Keys::new();
    let rc = test_config(StoreLimits::default());
    let prefix = rc.prefix.to_string();
    let spool =
        Spool::from_backends(redis_backends(&rc).await, &keys.config(&["k1"], "k1")).unwrap();
    spool
        .cache()
        .set(&acme(), "secrets", "a", "value of a")
        .await
        .unwrap();
    spool
        .cache()
        .set(&acme(), "secrets", "b", "value of b")
        .await
        .unwrap();
    let mut con = raw_con();
    let a = format!("{prefix}:{{c:acme}}:k:secrets:a");
    let b = format!("{prefix}:{{c:acme}}:k:secrets:b");
    let raw: Vec<u8> = redis::cmd("GET").arg(&a).query(&mut con).unwrap();
    let _: () = redis::cmd("SET")
        .arg(&b)
        .arg(&raw)
        .arg("KEEPTTL")
        .query(&mut con)
        .unwrap();
    expect_decrypt_error(
        spool.cache().get::<String>(&acme(), "secrets", "b").await,
        "authentication failed",
    );
    let v: Option<String> = spool.cache().get(&acme(), "secrets", "a").await.unwrap();
    assert_eq!(v.as_deref(), Some("value of a"));

    let kind = TaskKind::parse("k").unwrap();
    let t1 = spool
        .queue()
        .enqueue(&vault(), &kind, &"first", EnqueueOptions::new())
        .await
        .unwrap()
        .into_task();
    let t2 = spool
        .queue()
        .enqueue(&vault(), &kind, &"second", EnqueueOptions::new())
        .await
        .unwrap()
        .into_task();
    let h1 = format!("{prefix}:{{q:vault}}:t:{}", t1.id);
    let h2 = format!("{prefix}:{{q:vault}}:t:{}", t2.id);
    let p1: String = redis::cmd("HGET")
        .arg(&h1)
        .arg("payload")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&h2)
        .arg("payload")
        .arg(&p1)
        .query(&mut con)
        .unwrap();
    expect_decrypt_error(
        spool.queue().get(&vault(), t2.id).await,
        "authentication failed",
    );
    let ok = spool.queue().get(&vault(), t1.id).await.unwrap().unwrap();
    assert_eq!(ok.payload, "first");
}
