//! `deploy/redis.conf` + `deploy/users.acl` on a real `redis-server`, and spool on top of it
//! configured exactly as `deploy/docker-compose.yml` configures it (its `SPOOL_*` variables
//! and `deploy/spool.toml`), with only the address and the password file's path changed.
//!
//! The server runs `redis-server deploy/redis.conf --port <free> --bind 127.0.0.1
//! --dir <temp dir> --logfile redis.log --aclfile <copy of users.acl>`. The copy is the file
//! verbatim plus one `kit-admin` user, which only the assertions use (the kit's `default`
//! user is off, so nobody else could read the server's configuration).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use spool_adapter_redis::testing::RedisServer;
use spool_app::config::{Config, EnvLayer};
use spool_app::http::{serve, AppState, HttpOptions};
use spool_app::telemetry::{Metrics, OperationMetricsLayer};
use spool_app::Spool;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{compose, read, root};

const ADMIN: (&str, &str) = ("kit-admin", "kit-admin-password");
/// The dev API key whose digest `deploy/spool.toml` holds.
const DEV_API_KEY: &str = "spool-dev-api-key";

/// The process's metrics handle, fed by the operation-timing layer too (installed once),
/// so a scrape shows every family a production `spool serve` shows.
fn metrics() -> Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS
        .get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let m = Metrics::new();
            let subscriber =
                tracing_subscriber::registry().with(OperationMetricsLayer::new(m.clone()));
            // Another test binary's subscriber cannot be installed in this process; if one
            // is, operation timings simply go there.
            let _ = tracing::subscriber::set_global_default(subscriber);
            m
        })
        .clone()
}

/// A `redis-server` started from the kit, and `spool serve` on it over HTTP.
pub(crate) struct Kit {
    redis: RedisServer,
    _acl_dir: tempfile::TempDir,
    base: String,
    client: Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Kit {
    /// Starts Redis from `deploy/`, then spool configured like the compose file's service.
    pub(crate) async fn start() -> Kit {
        let acl_dir = tempfile::tempdir().unwrap();
        let acl = acl_dir.path().join("users.acl");
        let file = read("deploy/users.acl");
        std::fs::write(
            &acl,
            format!("{file}user {} on >{} ~* &* +@all\n", ADMIN.0, ADMIN.1),
        )
        .unwrap();
        let redis = RedisServer::spawn_with_config(
            &root().join("deploy/redis.conf"),
            &["--aclfile", acl.to_str().unwrap()],
        )
        .unwrap_or_else(|e| panic!("deploy/redis.conf does not start: {e}"));

        let config = Config::load_from(
            Some(&root().join("deploy/spool.toml")),
            &EnvLayer::from_pairs(spool_env(&redis)),
        )
        .unwrap_or_else(|e| panic!("the compose configuration does not load: {e}"));
        let spool = Spool::from_config(&config)
            .await
            .unwrap_or_else(|e| panic!("spool cannot use the kit's Redis: {e}"));
        let options = HttpOptions::from_config(&config.http).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let state = AppState::new(spool, metrics(), options);
        let task = tokio::spawn(serve(listener, state, async move {
            let _ = rx.await;
        }));
        Kit {
            redis,
            _acl_dir: acl_dir,
            base,
            client: Client::builder().no_proxy().build().unwrap(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A request with the dev API key.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(DEV_API_KEY)
    }

    /// `POST path` with a JSON body.
    pub(crate) fn post_json(&self, path: &str, body: &Value) -> RequestBuilder {
        self.request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// One operation of every service over HTTP (the rate limiter checks each request).
    /// Returns the completed task's id.
    pub(crate) async fn exercise(&self) -> String {
        use reqwest::Method;
        let res = self
            .request(Method::PUT, "/v1/projects/demo/cache/greeting?ttl_secs=300")
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::NO_CONTENT,
            "{:?}",
            res.text().await
        );
        let res = self
            .request(Method::GET, "/v1/projects/demo/cache/greeting")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        for h in ["ratelimit-policy", "x-ratelimit-remaining"] {
            assert!(
                res.headers().contains_key(h),
                "no {h}: the limiter did not run"
            );
        }
        assert_eq!(res.text().await.unwrap(), "hello");
        let res = self
            .request(Method::GET, "/v1/projects/demo/cache/missing")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);

        let task = self
            .json(
                self.post_json(
                    "/v1/queues/embeddings/tasks",
                    &json!({"kind": "embed", "payload": {"texts": ["hi"]}}),
                ),
                StatusCode::CREATED,
            )
            .await;
        let lease = self
            .json(
                self.request(
                    Method::POST,
                    "/v1/queues/embeddings/reserve?wait_ms=5000&lease_ms=30000",
                ),
                StatusCode::OK,
            )
            .await;
        assert_eq!(lease["task"]["id"], task["id"]);
        let id = task["id"].as_str().unwrap().to_owned();
        let done = self
            .json(
                self.post_json(
                    &format!("/v1/queues/embeddings/tasks/{id}/complete"),
                    &json!({"lease_token": lease["lease_token"], "result": {"dims": 8}}),
                ),
                StatusCode::OK,
            )
            .await;
        assert_eq!(done["status"], "succeeded", "{done}");

        self.json(
            self.post_json(
                "/v1/operations",
                &json!({"id": "kit-op", "steps": [{"name": "download"}, {"name": "parse"}]}),
            ),
            StatusCode::CREATED,
        )
        .await;
        let op = self
            .json(
                self.post_json(
                    "/v1/operations/kit-op/progress",
                    &json!({"step": "download", "fraction": 1.0}),
                ),
                StatusCode::OK,
            )
            .await;
        assert_eq!(op["percent"], 50.0, "{op}");
        // A live stream: its snapshot arrives, then the client goes away.
        let mut stream = self
            .request(Method::GET, "/v1/operations/kit-op/events")
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        let first = stream.chunk().await.unwrap().unwrap_or_default();
        assert!(!first.is_empty(), "the stream sends its snapshot");
        drop(stream);

        // A task that fails for good: a dead letter.
        let poison = self
            .json(
                self.post_json(
                    "/v1/queues/embeddings/tasks",
                    &json!({"kind": "embed", "payload": {}, "max_attempts": 1}),
                ),
                StatusCode::CREATED,
            )
            .await;
        let lease = self
            .json(
                self.request(
                    Method::POST,
                    "/v1/queues/embeddings/reserve?wait_ms=5000&lease_ms=30000",
                ),
                StatusCode::OK,
            )
            .await;
        assert_eq!(lease["task"]["id"], poison["id"]);
        let dead = self
            .json(
                self.post_json(
                    &format!("/v1/queues/embeddings/tasks/{}/fail", poison["id"].as_str().unwrap()),
                    &json!({"lease_token": lease["lease_token"], "error": "poison", "retry": false}),
                ),
                StatusCode::OK,
            )
            .await;
        assert_eq!(dead["status"], "dead", "{dead}");
        id
    }

    async fn json(&self, req: RequestBuilder, status: StatusCode) -> Value {
        let res = req.send().await.unwrap();
        let got = res.status();
        let text = res.text().await.unwrap();
        assert_eq!(got, status, "{text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// `GET /metrics`.
    pub(crate) async fn scrape(&self) -> String {
        let res = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.text().await.unwrap()
    }

    /// Stops spool (gracefully), leaving Redis up.
    pub(crate) async fn stop_spool(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// The compose file's environment for the spool service, pointed at `redis` and at the
/// repository's copy of the dev password file.
fn spool_env(redis: &RedisServer) -> BTreeMap<String, String> {
    let mut env = compose::spool_environment();
    let url = env
        .get_mut("SPOOL_REDIS_URL")
        .expect("compose sets SPOOL_REDIS_URL");
    *url = redis.url();
    let pw = env
        .get_mut("SPOOL_REDIS__PASSWORD_FILE")
        .expect("compose sets SPOOL_REDIS__PASSWORD_FILE");
    *pw = dev_password_file().to_string_lossy().into_owned();
    env.remove("SPOOL_CONFIG");
    env.insert("SPOOL_RATE_LIMITS".into(), "ip:1000/60s".into());
    env
}

fn dev_password_file() -> PathBuf {
    root().join("deploy/dev-redis-password")
}

fn dev_password() -> String {
    read("deploy/dev-redis-password").trim_end().to_owned()
}

fn connect(redis: &RedisServer, user: Option<(&str, &str)>) -> redis::Connection {
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    if let Some((name, password)) = user {
        redis::cmd("AUTH")
            .arg(name)
            .arg(password)
            .exec(&mut con)
            .unwrap_or_else(|e| panic!("AUTH {name}: {e}"));
    }
    con
}

fn config_get(con: &mut redis::Connection, name: &str) -> String {
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(con)
        .unwrap();
    assert_eq!(pair.len(), 2, "CONFIG GET {name}: {pair:?}");
    pair[1].clone()
}

/// Every key in the server (the admin's view; the server belongs to this test).
fn all_keys(con: &mut redis::Connection) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

fn refused(con: &mut redis::Connection, args: &[&str], expected: &str) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<redis::Value>(con) {
        Ok(v) => panic!("{args:?} was allowed: {v:?}"),
        Err(e) => assert!(e.to_string().contains(expected), "{args:?}: {e}"),
    }
}

#[test]
fn the_dev_password_matches_the_acl_files_hash() {
    let acl = read("deploy/users.acl");
    let spool = acl
        .lines()
        .find(|l| l.starts_with("user spool "))
        .expect("users.acl defines the spool user");
    let digest = hex_sha256(&dev_password());
    assert!(
        spool.split_whitespace().any(|r| r == format!("#{digest}")),
        "users.acl must hold #<sha256 of deploy/dev-redis-password>: {spool}"
    );
    assert!(
        !spool.split_whitespace().any(|r| r.starts_with('>')),
        "no clear-text password in users.acl"
    );
}

fn hex_sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_serves_every_service_through_the_least_privilege_user() {
    let mut kit = Kit::start().await;
    let task = kit.exercise().await;
    kit.stop_spool().await;

    let redis = &kit.redis;

    // The production settings are in force (the harness overrides only port, bind, dir, logfile
    // and aclfile).
    let mut admin = connect(redis, Some(ADMIN));
    for (name, want) in [
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("save", "3600 1 300 100 60 10000"),
        ("maxmemory-policy", "noeviction"),
        ("maxmemory", "2147483648"),
        ("protected-mode", "yes"),
        ("latency-monitor-threshold", "100"),
    ] {
        assert_eq!(config_get(&mut admin, name), want, "CONFIG GET {name}");
    }
    assert!(
        redis.dir().join("appendonlydir").is_dir(),
        "no AOF directory in {}",
        redis.dir().display()
    );

    // Every key spool wrote is under the ACL's prefix, and every unit left some.
    let keys = all_keys(&mut admin);
    for k in &keys {
        assert!(k.starts_with("spool:"), "a key outside spool:*: {k}");
    }
    for unit in [
        "spool:{c:demo}:",
        "spool:{q:embeddings}:",
        "spool:{p:kit-op}:",
        "spool:{rl}:",
    ] {
        assert!(
            keys.iter().any(|k| k.starts_with(unit)),
            "no key starting with {unit}: {keys:?}"
        );
    }
    let task_key = format!("spool:{{q:embeddings}}:t:{task}");
    assert!(keys.contains(&task_key), "{task_key} not in {keys:?}");

    // The default user is off: an unauthenticated client gets nothing.
    let mut anonymous = connect(redis, None);
    refused(&mut anonymous, &["PING"], "NOAUTH");
    refused(&mut anonymous, &["GET", &task_key], "NOAUTH");
    for password in ["", "nopass", "default"] {
        refused(&mut anonymous, &["AUTH", "default", password], "WRONGPASS");
    }

    // The spool user: its own keys yes; other keys, dangerous and listing commands no.
    let password = dev_password();
    let mut spool = connect(redis, Some(("spool", &password)));
    let kind: String = redis::cmd("TYPE").arg(&task_key).query(&mut spool).unwrap();
    assert_eq!(kind, "hash");
    for args in [
        &["GET", "other:k"][..],
        &["SET", "other:k", "x"],
        &["PUBLISH", "other:ch", "x"],
        &["EVAL", "return redis.call('GET', KEYS[1])", "1", "other:k"],
        &["KEYS", "*"],
        &["SCAN", "0"],
        &["FLUSHALL"],
        &["FLUSHDB"],
        &["CONFIG", "GET", "appendonly"],
        &["CONFIG", "SET", "appendonly", "no"],
        &["ACL", "LIST"],
        &["SHUTDOWN", "NOSAVE"],
        &["BGSAVE"],
        &["MONITOR"],
    ] {
        refused(&mut spool, args, "NOPERM");
    }

    // Persistence: the completed task survives a restart of the server.
    kit.redis.stop();
    kit.redis
        .start()
        .unwrap_or_else(|e| panic!("the kit's Redis does not restart: {e}"));
    let mut admin = connect(&kit.redis, Some(ADMIN));
    let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(&task_key)
        .query(&mut admin)
        .unwrap();
    assert!(
        !fields.is_empty(),
        "the task hash {task_key} was lost across a restart; redis.log:\n{}",
        std::fs::read_to_string(kit.redis.dir().join("redis.log")).unwrap_or_default()
    );
}
