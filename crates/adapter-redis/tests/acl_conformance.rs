//! The whole conformance suite as a least-privilege ACL user, and proof that this user can do
//! nothing outside its prefix.
//!
//! Every fixture gets a fresh prefix `P` and its own user on a server this test process
//! spawned (users are server configuration, so the shared server is left alone):
//!
//! ```text
//! ACL SETUSER <user> on ><password> resetkeys ~P:* resetchannels &P:*
//!     +@all -@dangerous +info -scan -randomkey -pubsub
//! ```
//!
//! That is the crate docs' recipe (`~P:* &P:* +@all -@dangerous +info`) made stricter still:
//! the keyless commands that would list key or channel names outside the prefix (`SCAN`,
//! `RANDOMKEY`, `PUBSUB`) are gone too. ACL permissions only ever add up, so passing under this
//! user proves the adapter passes under the recipe. `INFO` is the only `@dangerous` command
//! the adapter needs — the health check reads the server version and memory from it —
//! and [`acl_info_is_the_only_dangerous_command_the_adapter_needs`] shows that without it
//! everything but the health check still works.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::json;
use spool_adapter_redis::testing::{self, RedisServer};
use spool_adapter_redis::{RedisBackend, RedisConfig, Secret};
use spool_domain::limit::{Algorithm, Cost, LimitCheck, Policy};
use spool_domain::limits::StoreLimits;
use spool_domain::names::{
    CacheKey, KeyPrefix, OperationId, PolicyName, ProjectId, QueueName, ScopedKey, StepName,
    Subject, TaskKind, UserId,
};
use spool_domain::progress::{OperationSpec, StepSpec};
use spool_domain::task::TaskSpec;
use spool_ports::conformance::{Fixture, TestClock};
use spool_ports::{
    CacheStore, Health, PortError, ProgressStore, QueueStore, RateLimitStore, ReserveOptions,
};

/// The permissions of the least-privilege user, after its key and channel patterns.
const LEAST_PRIVILEGE: &[&str] = &[
    "+@all",
    "-@dangerous",
    "+info",
    "-scan",
    "-randomkey",
    "-pubsub",
];

fn server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| RedisServer::spawn().unwrap_or_else(|e| panic!("{e}")))
}

fn admin() -> redis::Connection {
    redis::Client::open(server().url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Creates a user limited to `pattern`'s keys and channels with `rules`; returns its name
/// and password.
fn user(pattern: &str, rules: &[&str]) -> (String, String) {
    let name = format!("spool-{:08x}", rand::random::<u32>());
    let password = format!("pw-{:016x}", rand::random::<u64>());
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER")
        .arg(&name)
        .arg("on")
        .arg(format!(">{password}"))
        .arg("resetkeys")
        .arg(format!("~{pattern}"))
        .arg("resetchannels")
        .arg(format!("&{pattern}"));
    for r in rules {
        cmd.arg(*r);
    }
    cmd.exec(&mut admin()).unwrap();
    (name, password)
}

fn config(
    prefix: &KeyPrefix,
    limits: StoreLimits,
    (name, password): (String, String),
) -> RedisConfig {
    let mut c = RedisConfig::new(server().url())
        .prefix(prefix.clone())
        .limits(limits)
        .credentials(Some(name), Some(Secret::new(password)));
    c.pool_size = 2;
    c.connect_timeout = Duration::from_secs(5);
    c.command_timeout = Duration::from_secs(5);
    c
}

struct RealTime;

#[async_trait]
impl TestClock for RealTime {
    async fn advance(&self, by: Duration) {
        tokio::time::sleep(by).await;
    }
}

fn fixture(limits: StoreLimits) -> Pin<Box<dyn Future<Output = Fixture> + Send>> {
    Box::pin(async move {
        let prefix = testing::unique_prefix();
        let credentials = tokio::task::spawn_blocking({
            let pattern = format!("{prefix}:*");
            move || user(&pattern, LEAST_PRIVILEGE)
        })
        .await
        .unwrap();
        let backend = RedisBackend::connect(config(&prefix, limits.clone(), credentials))
            .await
            .unwrap_or_else(|e| panic!("the least-privilege user cannot connect: {e}"));
        Fixture {
            cache: Arc::new(backend.cache()),
            limiter: Arc::new(backend.rate_limiter()),
            queue: Arc::new(backend.queue()),
            progress: Arc::new(backend.progress()),
            health: Arc::new(backend.health()),
            clock: Arc::new(RealTime),
            limits,
        }
    })
}

/// `acl::conformance_<group>::<test>`: every conformance test as the least-privilege user.
mod acl {
    use super::fixture;

    spool_ports::conformance_suite!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        fixture
    );
}

// ---- outside the prefix ------------------------------------------------------------------------

fn scoped(project: &str, key: &str) -> ScopedKey {
    ScopedKey::new(
        ProjectId::parse(project).unwrap(),
        CacheKey::parse(key).unwrap(),
    )
}

fn check() -> LimitCheck {
    LimitCheck::new(
        Policy::new(
            PolicyName::parse("per-min").unwrap(),
            10,
            Duration::from_secs(60),
            Algorithm::SlidingWindow,
        )
        .unwrap(),
        Subject::User(UserId::parse("u1").unwrap()),
    )
}

fn op(id: &str) -> OperationSpec {
    OperationSpec {
        id: Some(OperationId::parse(id).unwrap()),
        correlation_id: None,
        steps: vec![StepSpec {
            name: StepName::parse("s").unwrap(),
            weight: 1,
        }],
        message: None,
    }
}

/// One call of every port, named.
async fn every_port(b: &RedisBackend) -> Vec<(&'static str, Result<(), PortError>)> {
    let q = QueueName::parse("acl").unwrap();
    let k = scoped("acme", "k");
    let task = || TaskSpec::new(TaskKind::parse("acl.job").unwrap(), json!({}));
    vec![
        (
            "cache.set",
            b.cache()
                .set(&k, Bytes::from_static(b"v"), Duration::from_secs(60))
                .await,
        ),
        (
            "cache.set (large: a transaction)",
            b.cache()
                .set(
                    &k,
                    Bytes::from(vec![b'v'; spool_adapter_redis::LARGE_WRITE_BYTES]),
                    Duration::from_secs(60),
                )
                .await,
        ),
        ("cache.get", b.cache().get(&k).await.map(drop)),
        (
            "cache.get_many",
            b.cache().get_many(std::slice::from_ref(&k)).await.map(drop),
        ),
        ("cache.delete", b.cache().delete(&k).await.map(drop)),
        (
            "cache.invalidate_project",
            b.cache().invalidate_project(&k.project).await,
        ),
        (
            "limiter.check",
            b.rate_limiter()
                .check(&[check()], Cost::ONE)
                .await
                .map(drop),
        ),
        (
            "queue.enqueue",
            b.queue().enqueue(&q, task()).await.map(drop),
        ),
        (
            "queue.reserve",
            b.queue()
                .reserve(
                    std::slice::from_ref(&q),
                    ReserveOptions::new(Duration::from_secs(30)).wait(Duration::from_millis(200)),
                )
                .await
                .map(drop),
        ),
        (
            "queue.stats",
            b.queue().stats(std::slice::from_ref(&q)).await.map(drop),
        ),
        (
            "progress.start",
            b.progress().start(op("acl-op")).await.map(drop),
        ),
        (
            "progress.get",
            b.progress()
                .get(&OperationId::parse("acl-op").unwrap())
                .await
                .map(drop),
        ),
        ("health.check", b.health().check().await.map(drop)),
    ]
}

/// Runs `args` as one command; the ACL must refuse it.
fn noperm(con: &mut redis::Connection, args: &[String]) {
    let mut cmd = redis::cmd(&args[0]);
    for a in &args[1..] {
        cmd.arg(a);
    }
    match cmd.query::<redis::Value>(con) {
        Ok(v) => panic!("{args:?} was allowed: {v:?}"),
        // Inside a script Redis words the refusal differently.
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.contains("NOPERM") || shown.contains("can't access"),
                "{args:?}: {shown}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_commands_outside_the_prefix_are_refused() {
    let mine = testing::unique_prefix();
    let credentials = user(&format!("{mine}:*"), LEAST_PRIVILEGE);

    // Inside its prefix the user can do everything the adapter does.
    let inside = RedisBackend::connect(config(&mine, StoreLimits::default(), credentials.clone()))
        .await
        .unwrap();
    for (name, r) in every_port(&inside).await {
        assert!(r.is_ok(), "{name} inside the prefix: {r:?}");
    }

    // The same user, pointed at another prefix: every call is refused, and the adapter says
    // so as a Configuration error (an operator must fix it; retrying cannot help).
    let elsewhere = testing::unique_prefix();
    match RedisBackend::connect(config(
        &elsewhere,
        StoreLimits::default(),
        credentials.clone(),
    ))
    .await
    {
        Err(e) => assert!(matches!(e, PortError::Configuration { .. }), "{e:?}"),
        Ok(outside) => {
            for (name, r) in every_port(&outside).await {
                if name == "health.check" {
                    // PING and INFO touch no key: the server itself is healthy.
                    assert!(r.is_ok(), "{name}: {r:?}");
                    continue;
                }
                match r {
                    Err(e @ PortError::Configuration { .. }) => {
                        assert!(!e.is_transient());
                        assert!(e.to_string().contains("NOPERM"), "{name}: {e}");
                    }
                    other => {
                        panic!("{name} outside the prefix: expected Configuration, got {other:?}")
                    }
                }
            }
        }
    }

    // The same user on a raw connection: keys and channels outside the prefix, pattern and
    // admin commands, and keys reached from inside a script are all refused.
    let mut con = redis::Client::open(server().url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("AUTH")
        .arg(&credentials.0)
        .arg(&credentials.1)
        .exec(&mut con)
        .unwrap();
    let other = format!("{elsewhere}:k");
    let ch = format!("{elsewhere}:ch");
    let refused: [&[&str]; 18] = [
        &["GET", &other],
        &["SET", &other, "x"],
        &["DEL", &other],
        &["PUBLISH", &ch, "x"],
        &["SUBSCRIBE", &ch],
        &["EVAL", "return redis.call('GET', ARGV[1])", "0", &other],
        &["KEYS", "*"],
        &["SCAN", "0"],
        &["RANDOMKEY"],
        &["PUBSUB", "CHANNELS"],
        &["FLUSHALL"],
        &["FLUSHDB"],
        &["CONFIG", "GET", "*"],
        &["LASTSAVE"],
        &["SLOWLOG", "GET"],
        &["ACL", "LIST"],
        &["CLIENT", "LIST"],
        &["MONITOR"],
    ];
    for args in refused {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        noperm(&mut con, &args);
    }
    // ...while its own keys work on the same connection.
    let own = format!("{mine}:raw");
    redis::cmd("SET").arg(&own).arg("x").exec(&mut con).unwrap();
    redis::cmd("DEL").arg(&own).exec(&mut con).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_info_is_the_only_dangerous_command_the_adapter_needs() {
    let prefix = testing::unique_prefix();
    let without_info: Vec<&str> = LEAST_PRIVILEGE
        .iter()
        .copied()
        .filter(|r| *r != "+info")
        .collect();
    let credentials = user(&format!("{prefix}:*"), &without_info);
    let backend = RedisBackend::connect(config(&prefix, StoreLimits::default(), credentials))
        .await
        .unwrap();
    for (name, r) in every_port(&backend).await {
        if name == "health.check" {
            let e = r.unwrap_err();
            assert!(matches!(e, PortError::Configuration { .. }), "{e:?}");
        } else {
            assert!(r.is_ok(), "{name} without INFO: {r:?}");
        }
    }
}
