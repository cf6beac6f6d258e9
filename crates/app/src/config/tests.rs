#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::Duration;

use spool_domain::limit::Algorithm;
use spool_domain::names::QueueName;

use super::*;
use crate::services::{Codec, FailureMode, Scope};

fn env(pairs: &[(&str, &str)]) -> EnvLayer {
    EnvLayer::from_pairs(pairs.iter().copied())
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn err(r: Result<Config, ConfigError>) -> (String, String) {
    match r.unwrap_err() {
        ConfigError::Invalid { setting, message } => (setting, message),
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn defaults_are_memory_on_loopback() {
    let c = Config::load_from(None, &EnvLayer::default()).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.backend, BackendKind::Memory);
    assert_eq!(c.http.addr.to_string(), "127.0.0.1:8080");
    assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
    let s = c.validate().unwrap();
    assert_eq!(s.limits, StoreLimits::default());
    assert_eq!(s.key_prefix.as_str(), "spool");
    assert!(s.rate_limits.is_empty());
}

#[test]
fn env_beats_file_beats_defaults() {
    let f = file(
        r#"
backend = "redis"
[http]
addr = "0.0.0.0:9000"
request_timeout = "10s"
[redis]
pool_size = 8
command_timeout = "500ms"
[queues.embeddings]
concurrency = 2
"#,
    );
    let e = env(&[
        ("SPOOL_REDIS__POOL_SIZE", "16"),
        ("SPOOL_HTTP_ADDR", "127.0.0.1:7000"),
        ("SPOOL_QUEUES__EMBEDDINGS__LEASE", "45s"),
        ("SPOOL_QUEUES__EMBEDDINGS__PREFETCH", "0"),
    ]);
    let c = Config::load_from(Some(f.path()), &e).unwrap();
    assert_eq!(c.backend, BackendKind::Redis, "from the file");
    assert_eq!(c.redis.pool_size, 16, "env over file");
    assert_eq!(c.redis.command_timeout, Duration::from_millis(500));
    assert_eq!(c.http.addr.to_string(), "127.0.0.1:7000", "alias over file");
    assert_eq!(c.http.request_timeout, Duration::from_secs(10));
    let q = &c.queues["embeddings"];
    assert_eq!(q.concurrency, 2, "file value kept next to an env value");
    assert_eq!(q.lease, Duration::from_secs(45));
    assert_eq!(q.max_attempts, 3, "default kept");
    assert_eq!(q.prefetch, Some(0), "prefetch off from the environment");
    let s = c.validate().unwrap();
    assert_eq!(s.queues.get(&QueueName::embeddings()).concurrency, 2);
    assert_eq!(
        s.queues.get(&QueueName::exports()).prefetch,
        None,
        "default"
    );
    assert_eq!(
        s.queues.get(&QueueName::exports()).concurrency,
        4,
        "default"
    );
}

#[test]
fn aliases_and_their_nested_forms() {
    let c = Config::load_from(
        None,
        &env(&[
            ("SPOOL_BACKEND", "redis"),
            ("SPOOL_REDIS_URL", "redis://alias:1"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ]),
    )
    .unwrap();
    assert_eq!(c.backend, BackendKind::Redis);
    assert_eq!(c.redis.url, "redis://alias:1");
    assert_eq!(
        c.telemetry.otlp_endpoint.as_deref(),
        Some("http://collector:4317")
    );
    let c = Config::load_from(
        None,
        &env(&[
            ("SPOOL_REDIS_URL", "redis://alias:1"),
            ("SPOOL_REDIS__URL", "redis://nested:2"),
        ]),
    )
    .unwrap();
    assert_eq!(c.redis.url, "redis://nested:2", "nested beats alias");
}

#[test]
fn rate_limits_from_the_compact_env_syntax() {
    let f = file(
        r#"
[[rate_limits]]
name = "from_file"
scope = "project"
limit = 5
window = "1s"
"#,
    );
    let c = Config::load_from(
        Some(f.path()),
        &env(&[(
            "SPOOL_RATE_LIMITS",
            "ip:100/60s,user:1000/1h+sliding_log+closed",
        )]),
    )
    .unwrap();
    assert_eq!(c.rate_limits.len(), 2, "the env list replaces the file's");
    let s = c.validate().unwrap();
    assert_eq!(s.rate_limits[0].scope, Scope::Ip);
    assert_eq!(s.rate_limits[0].policy.limit(), 100);
    assert_eq!(s.rate_limits[0].policy.window(), Duration::from_secs(60));
    assert_eq!(s.rate_limits[1].policy.name().as_str(), "user_1h");
    assert_eq!(s.rate_limits[1].policy.algorithm(), Algorithm::SlidingLog);
    assert_eq!(s.rate_limits[1].failure_mode, FailureMode::Closed);

    let (setting, message) = err(Config::load_from(
        None,
        &env(&[("SPOOL_RATE_LIMITS", "ip:100/60s,ip:ten/1h")]),
    ));
    assert_eq!(setting, "SPOOL_RATE_LIMITS");
    assert!(
        message.contains("entry 2") && message.contains("limit"),
        "{message}"
    );
}

#[test]
fn config_file_from_spool_config_and_missing_files() {
    let f = file("backend = \"redis\"\n");
    let path = f.path().to_str().unwrap().to_owned();
    let c = Config::load_from(None, &env(&[("SPOOL_CONFIG", &path)])).unwrap();
    assert_eq!(c.backend, BackendKind::Redis);
    let missing = std::path::Path::new("/definitely/not/here/spool.toml");
    match Config::load_from(Some(missing), &EnvLayer::default()) {
        Err(ConfigError::Read { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected Read, got {other:?}"),
    }
}

#[test]
fn unrelated_spool_variables_are_ignored() {
    let c = Config::load_from(
        None,
        &env(&[
            ("SPOOL_TEST_REDIS_URL", "redis://x:1"),
            ("SPOOL_LOG", "debug"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn errors_name_the_setting_and_its_source() {
    let (setting, message) = err(Config::load_from(
        None,
        &env(&[("SPOOL_REDIS__POOL_SIZE", "lots")]),
    ));
    assert_eq!(setting, "redis.pool_size");
    assert!(message.contains("SPOOL_REDIS__POOL_SIZE"), "{message}");

    let (setting, message) = err(Config::load_from(
        None,
        &env(&[("SPOOL_REDIS__POOL_SIZE", "0")]),
    ));
    assert_eq!(setting, "redis.pool_size");
    assert!(message.contains("1..=64"), "{message}");

    let (setting, message) = err(Config::load_from(None, &env(&[("SPOOL_BACKEND", "Redis")])));
    assert_eq!(setting, "backend");
    assert!(message.contains("memory"), "{message}");

    let f = file("[redis]\npool_sise = 3\n");
    let (setting, message) = err(Config::load_from(Some(f.path()), &EnvLayer::default()));
    assert_eq!(setting, "redis.pool_sise");
    assert!(message.contains("unknown field"), "{message}");
    assert!(message.contains(f.path().to_str().unwrap()), "{message}");

    let f = file("[queues.embeddings]\nlease = \"1 fortnight\"\n");
    let (setting, _) = err(Config::load_from(Some(f.path()), &EnvLayer::default()));
    assert_eq!(setting, "queues.embeddings.lease");

    let f = file("[queues.embeddings]\nlease = 30\n");
    let (setting, message) = err(Config::load_from(Some(f.path()), &EnvLayer::default()));
    assert_eq!(setting, "queues.embeddings.lease");
    assert!(message.contains("no unit"), "{message}");

    let f = file("[queues.Bad]\nconcurrency = 1\n");
    let (setting, message) = err(Config::load_from(Some(f.path()), &EnvLayer::default()));
    assert_eq!(setting, "queues.Bad");
    assert!(message.contains("queue name"), "{message}");

    let f = file("[queues.embeddings]\nprefetch = 1025\n");
    let (setting, message) = err(Config::load_from(Some(f.path()), &EnvLayer::default()));
    assert_eq!(setting, "queues.embeddings.prefetch");
    assert!(message.contains("0..=1024"), "{message}");
}

#[test]
fn validation_errors_point_into_lists() {
    let f = file(
        r#"
[[rate_limits]]
name = "ok"
scope = "ip"
limit = 1
window = "1s"

[[rate_limits]]
name = "also_ok"
scope = "user"
limit = 1
window = "1s"

[[rate_limits]]
name = "too_long_window"
scope = "user"
limit = 1
window = "30days"
"#,
    );
    let (setting, message) = err(Config::load_from(Some(f.path()), &EnvLayer::default()));
    assert_eq!(setting, "rate_limits[2].window");
    assert!(message.contains("7days"), "{message}");

    let f =
        file("[[rate_limits]]\nname = \"x\"\nscope = \"ip\"\nlimit = \"many\"\nwindow = \"1s\"\n");
    let (setting, _) = err(Config::load_from(Some(f.path()), &EnvLayer::default()));
    assert_eq!(setting, "rate_limits[0].limit");

    let f = file("[[rate_limits]]\nname = \"x\"\nscope = \"galaxy\"\nlimit = 1\nwindow = \"1s\"\n");
    let (setting, _) = err(Config::load_from(Some(f.path()), &EnvLayer::default()));
    assert_eq!(setting, "rate_limits[0].scope");

    let (setting, _) = err(Config::load_from(
        None,
        &env(&[("SPOOL_RATE_LIMITS", "a=ip:1/1s,a2=ip:1/2s,A=ip:1/3s")]),
    ));
    assert_eq!(setting, "rate_limits[2].name");
}

#[test]
fn cache_policies_are_checked_against_the_limits() {
    let f = file(
        r#"
[limits]
max_ttl = "1day"
[cache]
max_ttl = "2days"
"#,
    );
    let (setting, message) = err(Config::load_from(Some(f.path()), &EnvLayer::default()));
    assert_eq!(setting, "cache.max_ttl");
    assert!(message.contains("limits.max_ttl"), "{message}");

    let f = file("[cache.policies.users]\nttl = \"10m\"\njitter = 0.9\n");
    let (setting, _) = err(Config::load_from(Some(f.path()), &EnvLayer::default()));
    assert_eq!(setting, "cache.policies.users.jitter");

    let f =
        file("[cache]\ncodec = \"msgpack\"\njitter = 0.0\n[cache.policies.users]\nttl = \"10m\"\n");
    let c = Config::load_from(Some(f.path()), &EnvLayer::default()).unwrap();
    let s = c.validate().unwrap();
    assert_eq!(s.cache.codec, Codec::MsgPack);
    let users = crate::services::CacheName::parse("users").unwrap();
    assert_eq!(s.cache.names[&users].ttl, Duration::from_secs(600));
    assert_eq!(
        s.cache.names[&users].jitter, 0.0,
        "inherits the default jitter"
    );
}

#[test]
fn secrets_read_as_text_and_never_show() {
    let c = Config::load_from(
        None,
        &env(&[
            ("SPOOL_REDIS__PASSWORD", "123456"),
            ("SPOOL_REDIS__USERNAME", "42"),
            ("SPOOL_REDIS_URL", "redis://app:urlpass@h:6379"),
        ]),
    )
    .unwrap();
    assert_eq!(c.redis.password.as_ref().unwrap().expose(), "123456");
    assert_eq!(c.redis.username.as_deref(), Some("42"));
    let shown = format!("{c:?}");
    assert!(!shown.contains("123456"), "{shown}");
    assert!(!shown.contains("urlpass"), "{shown}");
}

#[test]
fn api_keys_and_trusted_proxies_parse() {
    let f = file(&format!(
        r#"
[http]
trusted_proxies = ["10.0.0.0/8", "192.168.1.7"]
[[http.api_keys]]
id = "ci"
sha256 = "{}"
projects = ["acme", "beta"]
"#,
        "0f".repeat(32)
    ));
    let c = Config::load_from(Some(f.path()), &EnvLayer::default()).unwrap();
    assert_eq!(c.http.trusted_proxies.len(), 2);
    assert!(c.http.trusted_proxies[0].contains("10.2.3.4".parse().unwrap()));
    assert_eq!(c.http.api_keys[0].projects.len(), 2);
    assert_eq!(c.http.api_keys[0].digest().unwrap(), [0x0f; 32]);

    let f = file("[[http.api_keys]]\nid = \"ci\"\nsha256 = \"abc\"\nprojects = [\"acme\"]\n");
    let (setting, _) = err(Config::load_from(Some(f.path()), &EnvLayer::default()));
    assert_eq!(setting, "http.api_keys[0].sha256");

    let f = file("[http]\ntrusted_proxies = [\"10.0.0.0/40\"]\n");
    let (setting, _) = err(Config::load_from(Some(f.path()), &EnvLayer::default()));
    assert_eq!(setting, "http.trusted_proxies[0]");
}

#[test]
fn resilience_and_worker_settings() {
    let c = Config::load_from(
        None,
        &env(&[
            ("SPOOL_RESILIENCE__BREAKER__FAILURE_RATE", "0.25"),
            ("SPOOL_RESILIENCE__RETRY__MAX_RETRIES", "4"),
            ("SPOOL_WORKER__DRAIN_TIMEOUT", "5s"),
            ("SPOOL_TELEMETRY__LOG_FORMAT", "json"),
        ]),
    )
    .unwrap();
    assert_eq!(c.resilience.breaker.failure_rate, 0.25);
    assert_eq!(c.resilience.retry.max_retries, 4);
    assert_eq!(c.worker.drain_timeout, Duration::from_secs(5));
    assert_eq!(c.telemetry.log_format, LogFormat::Json);

    let (setting, _) = err(Config::load_from(
        None,
        &env(&[("SPOOL_RESILIENCE__BREAKER__FAILURE_RATE", "1.5")]),
    ));
    assert_eq!(setting, "resilience.breaker.failure_rate");
    let (setting, _) = err(Config::load_from(
        None,
        &env(&[("SPOOL_WORKER__ID", "has space")]),
    ));
    assert_eq!(setting, "worker.id");
}

#[test]
fn a_full_example_file_loads() {
    let f = file(
        r#"
backend = "memory"
[http]
addr = "0.0.0.0:8080"
body_limit_bytes = 1048576
[redis]
url = "rediss://redis.internal:6380"
username = "spool"
key_prefix = "myapp"
tls_ca = "/etc/ssl/redis-ca.pem"
[limits]
max_value_bytes = 65536
[cache]
default_ttl = "5m"
[cache.policies.users]
ttl = "10m"
[[rate_limits]]
name = "ip_minute"
scope = "ip"
limit = 100
window = "60s"
[queues.embeddings]
concurrency = 8
timeout = "2m"
backoff = { initial = "2s", max = "1m", factor = 3, jitter = "none" }
[resilience.breaker]
open_for = "5s"
[telemetry]
log_filter = "info,spool_app=debug"
"#,
    );
    let c = Config::load_from(Some(f.path()), &EnvLayer::default()).unwrap();
    let s = c.validate().unwrap();
    assert_eq!(s.key_prefix.as_str(), "myapp");
    assert_eq!(s.limits.max_value_bytes, 65536);
    let q = s.queues.get(&QueueName::embeddings());
    assert_eq!(q.timeout, Some(Duration::from_secs(120)));
    assert_eq!(q.backoff.factor, 3);
    assert_eq!(q.backoff.initial_ms, 2000);
}
