//! Secrets never appear in logs, errors or `Debug` output.
//!
//! Logs are captured at `TRACE` for every target — spool's `tracing` events and the Redis
//! client's `log` records (bridged) — while connecting with right and wrong passwords (given as
//! settings, inside the URL, through the app's configuration), while serving requests that
//! carry a bearer API key, and on every error path; each secret is a random string that
//! appears nowhere else, and none may be found in the captured text, in any error's
//! `Display`/`Debug` (with its whole `source()` chain), or in any configuration's `Debug`.
//!
//! The capture is scoped to the test's own thread (a current-thread runtime under
//! `tracing::subscriber::set_default`), so other tests running in parallel neither pollute
//! nor see it.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use spool_adapter_redis::testing::RedisServer;
use spool_adapter_redis::{RedisBackend, RedisConfig, Secret};
use spool_app::config::{Config, EnvLayer};
use spool_app::http::middleware::sha256_hex;
use spool_app::Spool;
use spool_domain::limits::StoreLimits;
use spool_domain::names::{CacheKey, ProjectId, ScopedKey};
use spool_ports::{CacheStore, Health};
use spool_tests::{Backend, TestServer, TestSetup};

/// A secret that appears nowhere else.
fn secret(tag: &str) -> String {
    format!("{tag}-{:016x}", rand::random::<u64>())
}

/// Runs `f` on a current-thread runtime with every log of this thread captured at TRACE.
fn captured<F, Fut, T>(f: F) -> (T, String)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    static BRIDGE: OnceLock<()> = OnceLock::new();
    BRIDGE.get_or_init(|| {
        // `log` records (the Redis client's) go to whichever tracing subscriber is current
        // on the thread that emits them; other threads have none and drop them.
        let _ = tracing_log::LogTracer::builder()
            .with_max_level(tracing_log::log::LevelFilter::Trace)
            .init();
    });
    let buffer = spool_tests::CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buffer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(f());
        // Shutting down runs the connections' last words under the capture too.
        rt.shutdown_timeout(Duration::from_secs(5));
        out
    });
    (out, buffer.text())
}

/// `Display` and `Debug` of an error and of every error in its `source()` chain.
fn everything_about(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("{e} | {e:?}");
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(" | {c} | {c:?}"));
        cause = c.source();
    }
    out
}

fn assert_absent(haystack: &str, secrets: &[&str], what: &str) {
    for s in secrets {
        assert!(
            !haystack.contains(s),
            "{what} shows the secret {s:?}:\n{haystack}"
        );
    }
}

fn key() -> ScopedKey {
    ScopedKey::new(
        ProjectId::parse("acme").unwrap(),
        CacheKey::parse("k").unwrap(),
    )
}

#[test]
fn secrets_never_reach_logs_errors_or_debug_when_connecting() {
    let server = RedisServer::spawn().unwrap_or_else(|e| panic!("{e}"));
    let right = secret("right");
    let wrong = [
        secret("wrong-setting"),
        secret("wrong-in-url"),
        secret("wrong-app-url"),
        secret("wrong-app-env"),
        secret("wrong-bad-url"),
    ];
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "app",
                "on",
                &format!(">{right}"),
                "~*",
                "&*",
                "+@all",
            ][..],
        )
        .exec(&mut admin)
        .unwrap();
    let host = format!("127.0.0.1:{}", server.port());

    let ((errors, debug), logs) = captured(|| async {
        let mut errors = Vec::new();
        let mut debug = Vec::new();
        let fast = |c: RedisConfig| {
            let mut c = c;
            c.connect_timeout = Duration::from_secs(2);
            c.command_timeout = Duration::from_secs(2);
            c.reconnect.max_attempts = 1;
            c
        };

        // The adapter: a wrong password as a setting, then inside the URL.
        let cfg = fast(
            RedisConfig::new(format!("redis://{host}"))
                .credentials(Some("app".into()), Some(Secret::new(wrong[0].as_str()))),
        );
        debug.push(format!("{cfg:?}"));
        let e = RedisBackend::connect(cfg).await.unwrap_err();
        assert_eq!(e.code(), "configuration", "{e:?}");
        errors.push(everything_about(&e));
        let cfg = fast(RedisConfig::new(format!("redis://app:{}@{host}", wrong[1])));
        debug.push(format!("{cfg:?}"));
        let e = RedisBackend::connect(cfg).await.unwrap_err();
        assert_eq!(e.code(), "configuration", "{e:?}");
        errors.push(everything_about(&e));
        // A malformed URL that holds a password.
        let cfg = fast(RedisConfig::new(format!(
            "redis://app:{}@{host}:notaport",
            wrong[4]
        )));
        debug.push(format!("{cfg:?}"));
        if let Err(e) = RedisBackend::connect(cfg).await {
            errors.push(everything_about(&e));
        }

        // The right password: connect, work, report health.
        let cfg = fast(
            RedisConfig::new(format!("redis://{host}"))
                .credentials(Some("app".into()), Some(Secret::new(right.as_str()))),
        );
        debug.push(format!("{cfg:?}"));
        let backend = RedisBackend::connect(cfg).await.unwrap();
        backend
            .cache()
            .set(&key(), Bytes::from_static(b"v"), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(backend.cache().get(&key()).await.unwrap().is_some());
        debug.push(format!("{:?}", backend.health().check().await.unwrap()));
        debug.push(format!("{backend:?}"));
        backend.shutdown().await;

        // The app, configured the way an operator would: URL with a password, then the
        // password through its env setting.
        for env in [
            vec![
                ("SPOOL_BACKEND", "redis".to_owned()),
                (
                    "SPOOL_REDIS_URL",
                    format!("redis://app:{}@{host}", wrong[2]),
                ),
                ("SPOOL_REDIS__CONNECT_TIMEOUT", "2s".to_owned()),
            ],
            vec![
                ("SPOOL_BACKEND", "redis".to_owned()),
                ("SPOOL_REDIS_URL", format!("redis://{host}")),
                ("SPOOL_REDIS__USERNAME", "app".to_owned()),
                ("SPOOL_REDIS__PASSWORD", wrong[3].clone()),
                ("SPOOL_REDIS__CONNECT_TIMEOUT", "2s".to_owned()),
            ],
        ] {
            let config = Config::load_from(None, &EnvLayer::from_pairs(env)).unwrap();
            debug.push(format!("{config:?}"));
            debug.push(format!("{:?}", config.validate().unwrap()));
            debug.push(format!(
                "{:?}",
                config.redis.to_adapter(&StoreLimits::default()).unwrap()
            ));
            let e = Spool::from_config(&config).await.unwrap_err();
            errors.push(everything_about(&e));
        }
        let config = Config::load_from(
            None,
            &EnvLayer::from_pairs([
                ("SPOOL_BACKEND", "redis".to_owned()),
                ("SPOOL_REDIS_URL", format!("redis://{host}")),
                ("SPOOL_REDIS__USERNAME", "app".to_owned()),
                ("SPOOL_REDIS__PASSWORD", right.clone()),
            ]),
        )
        .unwrap();
        debug.push(format!("{config:?}"));
        let spool = Spool::from_config(&config).await.unwrap();
        debug.push(format!(
            "{spool:?} {:?} {:?}",
            spool.config(),
            spool.settings()
        ));
        spool
            .cache()
            .set(&ProjectId::parse("acme").unwrap(), "users", "1", &"x")
            .await
            .unwrap();
        (errors, debug)
    });

    let mut all: Vec<&str> = wrong.iter().map(String::as_str).collect();
    all.push(&right);
    assert_absent(&logs, &all, "the logs");
    for e in &errors {
        assert_absent(e, &all, "an error");
    }
    for d in &debug {
        assert_absent(d, &all, "a Debug output");
    }
    // The capture worked: the adapter's and the client's logs are in it.
    assert!(
        logs.contains("connected to redis"),
        "nothing captured:\n{logs}"
    );
    assert!(
        logs.contains("fred"),
        "the client's log records were not captured:\n{logs}"
    );
    assert!(errors.len() >= 4, "{errors:?}");
    eprintln!(
        "secrets figures: {} bytes of TRACE logs, {} errors and {} Debug outputs checked for {} secrets",
        logs.len(),
        errors.len(),
        debug.len(),
        all.len()
    );
}

#[test]
fn secrets_bearer_keys_never_reach_the_logs() {
    let token = secret("bearer");
    let other = secret("bearer-unknown");
    let toml = format!(
        "[[http.api_keys]]\nid = \"team\"\nsha256 = \"{}\"\nprojects = [\"acme\"]\n",
        sha256_hex(&token)
    );
    let (statuses, logs) = captured(|| async {
        let s = TestServer::start_with(Backend::Memory, TestSetup::new().toml(&toml)).await;
        let mut statuses = Vec::new();
        for (auth, project) in [
            (format!("Bearer {token}"), "acme"),
            (format!("Bearer {token}"), "other"),
            (format!("Bearer {other}"), "acme"),
            (format!("Basic {token}"), "acme"),
        ] {
            let res = s
                .put(&format!("/v1/projects/{project}/cache/k"))
                .header("authorization", auth)
                .body("v")
                .send()
                .await
                .unwrap();
            statuses.push(res.status().as_u16());
        }
        s.stop().await;
        statuses
    });
    assert_eq!(statuses, [204, 403, 401, 401]);
    assert_absent(&logs, &[&token, &other], "the logs");
    assert!(!logs.is_empty(), "nothing captured");
}
