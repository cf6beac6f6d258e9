//! Hostile input (property tests; no nightly, so no cargo-fuzz): every way in — validated
//! names, JSON bodies and path segments over real HTTP, `Last-Event-ID`, the rate-limit env
//! syntax, whole configuration files — answers with a clear error, never a panic (a panic in
//! a handler would be a 500), and nothing a user types can reach a glob pattern or move a
//! key to another hash slot.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestError, TestRunner};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};
use spool_adapter_redis::testing::{self, RedisServer};
use spool_adapter_redis::{RedisBackend, RedisConfig};
use spool_app::config::{Config, ConfigError, EnvLayer};
use spool_app::Spool;
use spool_domain::limit::{Algorithm, Cost, LimitCheck, Policy};
use spool_domain::names::{
    CacheKey, CorrelationId, KeyPrefix, OperationId, PolicyName, ProjectId, QueueName, ScopedKey,
    StepName, Subject, TaskId, TaskKind, UniqueKey, UserId, WorkerId,
};
use spool_domain::progress::{EventId, OperationSpec, StepSpec};
use spool_domain::task::{LeaseToken, TaskSpec};
use spool_domain::ValidationError;
use spool_ports::{CacheStore, ProgressStore, QueueStore, RateLimitStore};
use spool_tests::{Backend, TestServer, TestSetup};

fn config(cases: u32) -> PropConfig {
    PropConfig {
        cases,
        failure_persistence: None,
        ..PropConfig::default()
    }
}

/// Runs `body` over `cases` inputs on `rt`; panics with the shrunk input on failure.
fn run<T: std::fmt::Debug + Clone>(
    rt: &tokio::runtime::Runtime,
    name: &str,
    cases: u32,
    strategy: impl Strategy<Value = T>,
    body: impl Fn(&tokio::runtime::Runtime, T) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(config(cases));
    match runner.run(&strategy, |v| body(rt, v)) {
        Ok(()) => {}
        Err(TestError::Fail(why, minimal)) => panic!("{name}: {why}\nminimal input: {minimal:#?}"),
        Err(TestError::Abort(why)) => panic!("{name}: aborted: {why}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Characters that must never reach a key or a pattern.
const FORBIDDEN: &[char] = &['{', '}', '*', '?', '[', ']', '\\', '^'];

/// Strings an attacker would try: any Unicode, glob and brace soup, near-misses of the
/// allowed sets, over-long values, control characters.
fn hostile() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "\\PC{0,80}",
        3 => "[a-zA-Z0-9{}*?\\[\\]\\\\^ :._/@=+%-]{0,40}",
        2 => "[a-z0-9_-]{1,70}",
        1 => "[a-z]{120,300}",
        1 => "[\\x00-\\x1f\\x7f]{1,4}",
        1 => "[a-zа-яé]{1,10}",
        1 => Just(String::new()),
    ]
    .boxed()
}

type Parser = (&'static str, fn(&str) -> Result<String, ValidationError>);

/// Every validated name, by the component its errors name.
const PARSERS: &[Parser] = &[
    ("project", |s| ProjectId::parse(s).map(|v| v.to_string())),
    ("cache key", |s| CacheKey::parse(s).map(|v| v.to_string())),
    ("unique key", |s| UniqueKey::parse(s).map(|v| v.to_string())),
    ("queue name", |s| QueueName::parse(s).map(|v| v.to_string())),
    ("task kind", |s| TaskKind::parse(s).map(|v| v.to_string())),
    ("worker id", |s| WorkerId::parse(s).map(|v| v.to_string())),
    ("policy name", |s| {
        PolicyName::parse(s).map(|v| v.to_string())
    }),
    ("operation id", |s| {
        OperationId::parse(s).map(|v| v.to_string())
    }),
    ("step name", |s| StepName::parse(s).map(|v| v.to_string())),
    ("correlation id", |s| {
        CorrelationId::parse(s).map(|v| v.to_string())
    }),
    ("user id", |s| UserId::parse(s).map(|v| v.to_string())),
    ("key prefix", |s| KeyPrefix::parse(s).map(|v| v.to_string())),
];

proptest! {
    #![proptest_config(config(512))]

    /// Every name type: never a panic; what is accepted is kept byte for byte (never
    /// altered or truncated) and holds no brace, glob character, whitespace or control
    /// character; what is refused says which component was wrong.
    #[test]
    fn hostile_names_are_refused_clearly_or_accepted_safe(s in hostile()) {
        for (component, parse) in PARSERS {
            match parse(&s) {
                Ok(v) => {
                    prop_assert_eq!(&v, &s, "{} altered its input", component);
                    prop_assert!(!v.contains(FORBIDDEN), "{} accepted {:?}", component, v);
                    prop_assert!(!v.chars().any(|c| c.is_whitespace() || c.is_control()), "{} accepted {:?}", component, v);
                    prop_assert!(!v.is_empty() && v.len() <= 256, "{} accepted {} bytes", component, v.len());
                }
                Err(e) => {
                    prop_assert_eq!(e.component, *component);
                    let shown = e.to_string();
                    prop_assert!(shown.starts_with(&format!("invalid {component}: ")), "{}", shown);
                    prop_assert!(!e.reason.is_empty());
                }
            }
        }
        // The other parsed inputs: IDs, tokens, resume points.
        if let Err(e) = TaskId::parse(&s) { prop_assert_eq!(e.component, "task id"); }
        if let Err(e) = LeaseToken::parse(&s) { prop_assert_eq!(e.component, "lease token"); }
        if let Ok(id) = EventId::parse(&s) {
            // What parses prints back to something that parses to the same point.
            prop_assert_eq!(EventId::parse(&id.to_string()).ok(), Some(id));
        }
    }
}

// ---- hash slots, seen by an independent client ---------------------------------------------

/// CRC16/XMODEM, written here independently of the adapter.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash tag Redis Cluster reads from `key`: the text between the first `{` and the first
/// `}` after it, when that is not empty.
fn redis_hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')? + open + 1;
    (close > open + 1).then(|| &key[open + 1..close])
}

#[derive(Debug, Clone)]
struct Names {
    project: String,
    key: String,
    queue: String,
    unique: String,
    op: String,
    user: String,
    policy: String,
}

fn valid_names() -> impl Strategy<Value = Names> {
    (
        "[A-Za-z0-9_-]{1,64}",
        "[A-Za-z0-9_.:/@=+-]{1,100}",
        "[a-z0-9_-]{1,64}",
        "[A-Za-z0-9_.:/@=+-]{1,60}",
        "[A-Za-z0-9_-]{1,100}",
        "[A-Za-z0-9_.:@-]{1,100}",
        "[a-z0-9_-]{1,64}",
    )
        .prop_map(|(project, key, queue, unique, op, user, policy)| Names {
            project,
            key,
            queue,
            unique,
            op,
            user,
            policy,
        })
}

fn command_calls(con: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(&format!("cmdstat_{command}:calls="))?;
            rest.split(',').next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Random valid names through every port of a real Redis: every key the adapter wrote
/// carries exactly the hash tag of its unit (`c:<project>`, `q:<queue>`, `p:<operation>` or
/// `rl`) as Redis reads it, its slot is that tag's slot, and no pattern command was ever sent.
#[test]
fn hostile_valid_names_never_move_a_key_out_of_its_units_slot() {
    let rt = runtime();
    // A server of our own: its command statistics are ours alone.
    let server = RedisServer::spawn().unwrap_or_else(|e| panic!("{e}"));
    let prefix = testing::unique_prefix();
    let mut cfg = RedisConfig::new(server.url()).prefix(prefix.clone());
    cfg.pool_size = 2;
    let backend: RedisBackend = rt.block_on(RedisBackend::connect(cfg)).unwrap();
    let mut con = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let my_keys_calls = std::cell::Cell::new(0u64);
    let con = std::sync::Mutex::new(&mut con);
    run(&rt, "slots", 48, valid_names(), |rt, n| {
        let project = ProjectId::parse(n.project.as_str()).unwrap();
        let queue = QueueName::parse(n.queue.as_str()).unwrap();
        let op = OperationId::parse(n.op.as_str()).unwrap();
        rt.block_on(async {
            let key = ScopedKey::new(project.clone(), CacheKey::parse(n.key.as_str()).unwrap());
            backend
                .cache()
                .set(&key, Bytes::from_static(b"v"), Duration::from_secs(60))
                .await
                .unwrap();
            let check = LimitCheck::new(
                Policy::new(
                    PolicyName::parse(n.policy.as_str()).unwrap(),
                    10,
                    Duration::from_secs(60),
                    Algorithm::SlidingLog,
                )
                .unwrap(),
                Subject::User(UserId::parse(n.user.as_str()).unwrap()),
            );
            backend
                .rate_limiter()
                .check(&[check], Cost::ONE)
                .await
                .unwrap();
            let spec = TaskSpec::new(TaskKind::parse("slot.job").unwrap(), json!({}))
                .unique_key(UniqueKey::parse(n.unique.as_str()).unwrap());
            backend.queue().enqueue(&queue, spec).await.unwrap();
            backend
                .progress()
                .start(OperationSpec {
                    id: Some(op.clone()),
                    correlation_id: None,
                    steps: vec![StepSpec {
                        name: StepName::parse("s").unwrap(),
                        weight: 1,
                    }],
                    message: None,
                })
                .await
                .map(drop)
                .or_else(|e| {
                    if e.code() == "conflict" {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .unwrap();
        });
        let expected: BTreeSet<String> = [
            format!("c:{project}"),
            format!("q:{queue}"),
            format!("p:{op}"),
            "rl".to_owned(),
        ]
        .into();
        // The keys this case's units wrote, read by an independent client.
        let mut con = con.lock().unwrap();
        let mut found: BTreeSet<String> = BTreeSet::new();
        for tag in &expected {
            // Valid names hold no glob character, so the tag is a literal in this pattern.
            let pattern = format!("{prefix}:{{{tag}}}*");
            my_keys_calls.set(my_keys_calls.get() + 1);
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut **con).unwrap();
            prop_assert!(!keys.is_empty(), "no key for unit {}", tag);
            for k in keys {
                let tag_seen = redis_hash_tag(&k);
                prop_assert_eq!(
                    tag_seen,
                    Some(tag.as_str()),
                    "key {} carries another tag",
                    k
                );
                prop_assert_eq!(
                    testing::key_slot(&k),
                    crc16(tag.as_bytes()) % 16384,
                    "slot of {}",
                    k
                );
                found.insert(tag.clone());
            }
        }
        prop_assert_eq!(found, expected);
        Ok(())
    });
    let con = con.into_inner().unwrap();
    // Every key under the prefix belongs to a unit, except the registry of queue names.
    let all: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(con)
        .unwrap();
    my_keys_calls.set(my_keys_calls.get() + 1);
    for k in &all {
        let ok = k == &format!("{prefix}:queues")
            || redis_hash_tag(k).is_some_and(|t| {
                t == "rl" || ["c:", "q:", "p:"].iter().any(|unit| t.starts_with(unit))
            });
        assert!(ok, "key {k} belongs to no unit");
    }
    for pattern_command in ["scan", "psubscribe", "punsubscribe", "flushall", "flushdb"] {
        assert_eq!(
            command_calls(con, pattern_command),
            0,
            "the adapter sent {pattern_command}"
        );
    }
    assert_eq!(
        command_calls(con, "keys"),
        my_keys_calls.get(),
        "KEYS came only from this test"
    );
}

// ---- JSON bodies, path segments and Last-Event-ID over real HTTP ----------------------------

/// Any JSON value, a few levels deep.
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{0,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A valid body of each endpoint, to mutate.
fn templates() -> Vec<(&'static str, Value)> {
    vec![
        (
            "enqueue",
            json!({ "kind": "k", "payload": {"a": 1}, "priority": 1, "delay_ms": 0, "max_attempts": 2, "unique_key": "u", "timeout_ms": 1000 }),
        ),
        (
            "start",
            json!({ "id": "op-x", "correlation_id": "c-1", "steps": [{"name": "a", "weight": 1}], "message": "m" }),
        ),
        (
            "progress",
            json!({ "step": "a", "fraction": 0.5, "message": "m", "state": "running" }),
        ),
        ("heartbeat", json!({ "lease_token": "1", "lease_ms": 1000 })),
        (
            "complete",
            json!({ "lease_token": "1", "result": {"ok": true} }),
        ),
        (
            "fail",
            json!({ "lease_token": "1", "error": "boom", "retry": true }),
        ),
    ]
}

#[derive(Debug, Clone)]
enum Body {
    /// A template with one field replaced, removed, or an extra field added.
    Mutated(usize, String, Option<Value>),
    /// Any JSON at all.
    Json(Value),
    /// Bytes that may not be JSON.
    Raw(Vec<u8>),
}

fn bodies() -> impl Strategy<Value = (usize, Body)> {
    let field = prop_oneof![
        Just("kind".to_owned()),
        Just("payload".to_owned()),
        Just("priority".to_owned()),
        Just("delay_ms".to_owned()),
        Just("max_attempts".to_owned()),
        Just("unique_key".to_owned()),
        Just("timeout_ms".to_owned()),
        Just("id".to_owned()),
        Just("steps".to_owned()),
        Just("step".to_owned()),
        Just("fraction".to_owned()),
        Just("state".to_owned()),
        Just("lease_token".to_owned()),
        Just("lease_ms".to_owned()),
        Just("result".to_owned()),
        Just("error".to_owned()),
        Just("retry".to_owned()),
        "[a-z_]{1,8}",
    ];
    (
        0usize..6,
        prop_oneof![
            6 => (0usize..6, field, prop::option::weighted(0.9, any_json()))
                .prop_map(|(t, f, v)| Body::Mutated(t, f, v)),
            2 => any_json().prop_map(Body::Json),
            1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Body::Raw),
        ],
    )
}

/// A 4xx must carry the contract's error body; a 5xx means the input broke something.
async fn judge(res: reqwest::Response, what: &str) -> Result<u16, TestCaseError> {
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    prop_assert!(!status.is_server_error(), "{}: {} {}", what, status, text);
    if status.is_client_error() {
        let body: Value = serde_json::from_str(&text).map_err(|e| {
            TestCaseError::fail(format!("{what}: {status} body is not JSON ({e}): {text}"))
        })?;
        let code = body["error"]["code"].as_str().unwrap_or("");
        let message = body["error"]["message"].as_str().unwrap_or("");
        prop_assert!(
            !code.is_empty() && !message.is_empty(),
            "{}: {} {}",
            what,
            status,
            text
        );
    }
    Ok(status.as_u16())
}

/// Random and mutated JSON bodies to every endpoint that reads one: 2xx or a clear 4xx,
/// never a 5xx.
#[test]
fn hostile_json_bodies_get_a_clear_4xx_never_a_5xx() {
    let rt = runtime();
    let server = rt.block_on(TestServer::start(Backend::Memory));
    // A live task (with its lease) and operation to aim the worker and progress calls at.
    let (task, token) = rt.block_on(async {
        let res = server
            .post_json(
                "/v1/queues/hostile/tasks",
                &json!({ "kind": "k", "payload": {} }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let res = server
            .post("/v1/queues/hostile/reserve?wait_ms=0&lease_ms=600000")
            .send()
            .await
            .unwrap();
        let lease: Value = res.json().await.unwrap();
        let started = server
            .post_json(
                "/v1/operations",
                &json!({ "id": "target", "steps": [{"name": "a"}] }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), StatusCode::CREATED);
        (
            lease["task"]["id"].as_str().unwrap().to_owned(),
            lease["lease_token"].clone(),
        )
    });
    let paths = [
        "/v1/queues/hostile/tasks".to_owned(),
        "/v1/operations".to_owned(),
        "/v1/operations/target/progress".to_owned(),
        format!("/v1/queues/hostile/tasks/{task}/heartbeat"),
        format!("/v1/queues/hostile/tasks/{task}/complete"),
        format!("/v1/queues/hostile/tasks/{task}/fail"),
    ];
    let templates = templates();
    let mut statuses = BTreeSet::new();
    let statuses_cell = std::sync::Mutex::new(&mut statuses);
    run(&rt, "json bodies", 256, bodies(), |rt, (endpoint, body)| {
        let bytes = match &body {
            Body::Mutated(t, field, value) => {
                let mut v = templates[*t].1.clone();
                if let Some(obj) = v.as_object_mut() {
                    if obj.contains_key("lease_token") {
                        obj.insert("lease_token".to_owned(), token.clone());
                    }
                    match value {
                        Some(x) => obj.insert(field.clone(), x.clone()),
                        None => obj.remove(field),
                    };
                }
                v.to_string().into_bytes()
            }
            Body::Json(v) => v.to_string().into_bytes(),
            Body::Raw(b) => b.clone(),
        };
        let path = &paths[endpoint];
        let status = rt.block_on(async {
            let res = server
                .client()
                .post(server.url(path))
                .header("content-type", "application/json")
                .body(bytes)
                .send()
                .await
                .unwrap();
            judge(res, path).await
        })?;
        statuses_cell.lock().unwrap().insert(status);
        Ok(())
    });
    eprintln!("hostile figures: JSON bodies answered with statuses {statuses:?}");
    assert!(
        statuses.iter().any(|s| (400..500).contains(s)),
        "no refusal at all?"
    );
}

/// Random path segments (percent-encoded by the client) as project, cache key, queue and
/// operation names: 2xx, 404 or a clear 4xx, never a 5xx.
#[test]
fn hostile_path_segments_get_a_clear_4xx_never_a_5xx() {
    let rt = runtime();
    let server = rt.block_on(TestServer::start(Backend::Memory));
    let routes: [(Method, &[&str]); 5] = [
        (Method::PUT, &["v1", "projects", "_", "cache", "_"]),
        (Method::GET, &["v1", "projects", "_", "cache", "_"]),
        (Method::POST, &["v1", "queues", "_", "tasks"]),
        (Method::GET, &["v1", "queues", "_", "tasks", "_"]),
        (Method::GET, &["v1", "operations", "_", "events"]),
    ];
    run(
        &rt,
        "path segments",
        128,
        (0usize..5, hostile(), hostile()),
        |rt, (r, a, b)| {
            let (method, template) = &routes[r];
            let mut url = Url::parse(server.base()).unwrap();
            {
                let mut segments = url.path_segments_mut().unwrap();
                let mut holes = [a.as_str(), b.as_str()].into_iter();
                for part in *template {
                    if *part == "_" {
                        segments.push(holes.next().unwrap_or("x"));
                    } else {
                        segments.push(part);
                    }
                }
            }
            let what = format!("{method} {url}");
            rt.block_on(async {
                let res = server
                    .client()
                    .request(method.clone(), url)
                    .header("content-type", "application/json")
                    .body(r#"{"kind":"k","payload":{}}"#)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .unwrap();
                judge(res, &what).await
            })?;
            Ok(())
        },
    );
}

/// `Last-Event-ID` values of every shape on a finished operation's stream (which ends by
/// itself): 200 or 400, never a 5xx.
#[test]
fn hostile_last_event_ids_get_a_stream_or_a_400() {
    let rt = runtime();
    let server = rt.block_on(TestServer::start_with(
        Backend::Memory,
        TestSetup::new().sse_per_ip(10_000),
    ));
    rt.block_on(async {
        let res = server
            .post_json(
                "/v1/operations",
                &json!({ "id": "done", "steps": [{"name": "a"}] }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let res = server
            .post_json(
                "/v1/operations/done/progress",
                &json!({ "state": "succeeded" }),
            )
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    });
    let ids = prop_oneof![
        3 => "[ -~]{0,40}",
        3 => "[0-9]{1,22}-[0-9]{1,22}",
        1 => "[0-9]{1,22}",
        1 => "-?[0-9]{0,3}-?[0-9]{0,3}",
    ];
    let mut seen = BTreeSet::new();
    let seen_cell = std::sync::Mutex::new(&mut seen);
    run(&rt, "last-event-id", 128, ids, |rt, id| {
        let status = rt.block_on(async {
            let res = tokio::time::timeout(
                Duration::from_secs(10),
                server
                    .get("/v1/operations/done/events")
                    .header("last-event-id", id.as_str())
                    .send(),
            )
            .await
            .map_err(|_| TestCaseError::fail(format!("{id:?}: no answer")))?
            .unwrap();
            let status = res.status();
            if status == StatusCode::OK {
                // The stream of a finished operation ends by itself.
                tokio::time::timeout(Duration::from_secs(10), res.bytes())
                    .await
                    .map_err(|_| TestCaseError::fail(format!("{id:?}: the stream did not end")))?
                    .unwrap();
                Ok(200)
            } else {
                judge(res, &format!("Last-Event-ID {id:?}")).await
            }
        })?;
        prop_assert!(status == 200 || status == 400, "{:?}: {}", id, status);
        seen_cell.lock().unwrap().insert(status);
        Ok(())
    });
    assert_eq!(
        seen,
        BTreeSet::from([200, 400]),
        "both outcomes were exercised"
    );
}

// ---- configuration: the rate-limit env syntax and whole files --------------------------------

fn assert_clear(e: &ConfigError, input: &str) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(!shown.is_empty(), "empty error for {:?}", input);
    match e {
        ConfigError::Invalid { setting, message } => {
            prop_assert!(
                !setting.is_empty() && !message.is_empty(),
                "{:?}: {}",
                input,
                shown
            );
        }
        other => prop_assert!(false, "{:?}: unexpected {:?}", input, other),
    }
    Ok(())
}

fn rate_limit_specs() -> BoxedStrategy<String> {
    let entry = (
        prop::option::of("[a-z_-]{0,8}="),
        prop_oneof![
            Just("ip"),
            Just("user"),
            Just("project"),
            Just("IP"),
            Just("x"),
            Just("")
        ],
        "[0-9]{0,21}",
        "[0-9]{0,6}",
        prop_oneof![
            Just("ms"),
            Just("s"),
            Just("m"),
            Just("h"),
            Just("d"),
            Just(""),
            Just("y"),
            Just("µs")
        ],
        proptest::collection::vec(
            prop_oneof![
                Just("+sliding_log"),
                Just("+sliding_window"),
                Just("+open"),
                Just("+closed"),
                Just("+local"),
                Just("+bogus"),
                Just("+"),
            ],
            0..3,
        ),
    )
        .prop_map(|(name, scope, limit, window, unit, opts)| {
            format!(
                "{}{scope}:{limit}/{window}{unit}{}",
                name.unwrap_or_default(),
                opts.concat()
            )
        });
    prop_oneof![
        4 => proptest::collection::vec(entry, 0..20).prop_map(|v| v.join(",")),
        1 => "\\PC{0,60}",
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(512))]

    /// `SPOOL_RATE_LIMITS` through the whole configuration load: never a panic, a config
    /// that loads validates, and an error names the setting.
    #[test]
    fn hostile_rate_limit_env_is_refused_clearly(spec in rate_limit_specs()) {
        let env = EnvLayer::from_pairs([("SPOOL_RATE_LIMITS", spec.as_str())]);
        match Config::load_from(None, &env) {
            Ok(c) => {
                let settings = c.validate().map_err(|e| TestCaseError::fail(format!("{spec:?} loaded but does not validate: {e}")))?;
                prop_assert!(settings.rate_limits.len() <= 16);
            }
            Err(e) => {
                assert_clear(&e, &spec)?;
                let setting = e.setting().unwrap_or_default().to_ascii_lowercase();
                prop_assert!(setting.contains("rate_limits"), "{:?}: {}", spec, e);
            }
        }
    }
}

/// TOML-ish documents: real sections and keys with values of every type and shape, and
/// random lines.
fn toml_docs() -> BoxedStrategy<String> {
    let section = prop_oneof![
        Just("[http]"),
        Just("[redis]"),
        Just("[limits]"),
        Just("[cache]"),
        Just("[cache.policies.users]"),
        Just("[[rate_limits]]"),
        Just("[queues.embeddings]"),
        Just("[queues.\"Bad Name\"]"),
        Just("[resilience.breaker]"),
        Just("[resilience.retry]"),
        Just("[telemetry]"),
        Just("[worker]"),
        Just("[[http.api_keys]]"),
        Just("[bogus]"),
    ]
    .prop_map(str::to_owned);
    let key = prop_oneof![
        Just("backend"),
        Just("addr"),
        Just("trusted_proxies"),
        Just("body_limit_bytes"),
        Just("url"),
        Just("username"),
        Just("password"),
        Just("pool_size"),
        Just("key_prefix"),
        Just("connect_timeout"),
        Just("command_timeout"),
        Just("default_ttl"),
        Just("codec"),
        Just("ttl"),
        Just("name"),
        Just("scope"),
        Just("limit"),
        Just("window"),
        Just("algorithm"),
        Just("failure_mode"),
        Just("concurrency"),
        Just("lease"),
        Just("timeout"),
        Just("max_attempts"),
        Just("failure_rate"),
        Just("min_calls"),
        Just("open_for"),
        Just("half_open_probes"),
        Just("max_retries"),
        Just("initial"),
        Just("max"),
        Just("log_format"),
        Just("id"),
        Just("sha256"),
        Just("projects"),
        Just("max_value_bytes"),
        Just("max_ttl"),
        Just("drain_timeout"),
        Just("reserve_wait"),
        Just("nonsense"),
    ];
    let scalar = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        prop_oneof![
            Just("5s"),
            Just("0s"),
            Just("-1s"),
            Just("1y"),
            Just("250ms"),
            Just("abc"),
            Just("redis"),
            Just("memory"),
            Just("json"),
            Just("pretty"),
            Just("msgpack"),
            Just("0.0.0.0:99999"),
            Just("127.0.0.1:8080"),
            Just("redis://u:p@h:1"),
            Just("10.0.0.0/8"),
            Just("10.0.0.0/99"),
            Just("ip"),
            Just("sliding_log"),
            Just(""),
        ]
        .prop_map(|s| format!("{s:?}")),
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
    ];
    let value = scalar.clone().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3)
                .prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|v| {
                format!(
                    "{{ {} }}",
                    v.into_iter()
                        .map(|(k, v)| format!("{k} = {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
        ]
    });
    let line = prop_oneof![
        2 => section,
        6 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "\\PC{0,30}",
    ];
    proptest::collection::vec(line, 0..14)
        .prop_map(|l| l.join("\n"))
        .boxed()
}

/// Whole configuration files: never a panic; an error names the setting; and a file that
/// loads really builds the services (validation has no gap the wiring would trip over).
#[test]
fn hostile_config_files_are_refused_clearly_or_build() {
    let rt = runtime();
    let mut loaded = 0u32;
    let loaded_cell = std::sync::Mutex::new(&mut loaded);
    run(&rt, "config files", 384, toml_docs(), |rt, doc| {
        match Config::from_toml_str(&doc, &EnvLayer::default()) {
            Ok(c) => {
                c.validate().map_err(|e| {
                    TestCaseError::fail(format!("loaded but does not validate: {e}"))
                })?;
                spool_app::http::HttpOptions::from_config(&c.http).map_err(|e| {
                    TestCaseError::fail(format!("loaded but the HTTP options refuse it: {e}"))
                })?;
                if c.backend == spool_app::config::BackendKind::Memory {
                    rt.block_on(Spool::from_config(&c)).map_err(|e| {
                        TestCaseError::fail(format!("loaded but does not build: {e}"))
                    })?;
                }
                **loaded_cell.lock().unwrap() += 1;
            }
            Err(e) => assert_clear(&e, &doc)?,
        }
        Ok(())
    });
    eprintln!("hostile figures: {loaded} of 384 random config files loaded (and built), the rest were refused with a named setting");
}
