//! The production kit (`deploy/`) and `docs/OPERATIONS.md`, exercised:
//!
//! | module | what it proves |
//! |---|---|
//! | [`redis_kit`] | `redis-server deploy/redis.conf` with `deploy/users.acl` starts, persists (RDB + AOF), and serves every spool service through the least-privilege `spool` user, which can do nothing else |
//! | [`observability`] | every metric the alert rules and the Grafana dashboard query is one spool exports (a real `/metrics` scrape) |
//! | [`compose`] | `docker-compose.yml`, `Dockerfile` and `spool.toml` agree with the code: mounts, real `SPOOL_*` settings, the binary |
//! | [`operations_doc`] | the settings table of `docs/OPERATIONS.md` lists every configuration setting, with its default and variable, and nothing else |
//!
//! The alert rules themselves are checked and unit-tested by `promtool` in `scripts/test`.

#![allow(clippy::unwrap_used)]

mod compose;
mod observability;
mod operations_doc;
mod redis_kit;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use spool_app::config::Config;

/// The repository root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A file of the repository, as text.
pub(crate) fn read(path: &str) -> String {
    let full = root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// Every setting of [`Config`], by its path (`redis.url`, `http.api_keys[].id`,
/// `queues.<queue>.lease`), with its default where the path has one (`None` for fields of
/// list entries, which have no default entry, and for required fields).
///
/// Found by serializing a configuration with one entry in every list of tables and every
/// map, so nested fields show up; a list or map that the sample leaves empty is one setting.
pub(crate) fn settings() -> BTreeMap<String, Option<Value>> {
    let input = json!({
        "http": {
            "api_keys": [{"id": "k", "sha256": "0".repeat(64), "projects": ["p"]}],
        },
        "rate_limits": [{"name": "r", "scope": "ip", "limit": 1, "window": "1s"}],
        "queues": {"<queue>": {}},
        "cache": {"policies": {"<name>": {"ttl": "1m"}}},
        "encryption": {"keys": [{"id": "k1", "key_file": "/k"}]},
    });
    let sample: Config = serde_json::from_value(input.clone())
        .unwrap_or_else(|e| panic!("the sample configuration no longer parses: {e}"));
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let mut out = BTreeMap::new();
    walk(
        &serde_json::to_value(&sample).unwrap(),
        "",
        &mut |path, sampled| {
            // Fields of list entries have no default; nor do fields the sample had to give.
            let default = if path.contains("[]") || lookup(&input, path).is_some() {
                None
            } else if path.contains('<') {
                Some(sampled.clone())
            } else {
                Some(lookup(&defaults, path).cloned().unwrap_or(Value::Null))
            };
            out.insert(path.to_owned(), default);
        },
    );
    out
}

fn walk(v: &Value, path: &str, leaf: &mut dyn FnMut(&str, &Value)) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                walk(v, &join(k), leaf);
            }
        }
        Value::Array(items) if items.first().is_some_and(Value::is_object) => {
            walk(&items[0], &format!("{path}[]"), leaf);
        }
        _ => leaf(path, v),
    }
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

#[test]
fn settings_cover_nested_tables_lists_and_maps() {
    let s = settings();
    assert_eq!(s["redis.url"], Some(json!("redis://127.0.0.1:6379")));
    assert_eq!(s["resilience.breaker.failure_rate"], Some(json!(0.5)));
    assert_eq!(s["http.api_keys[].sha256"], None);
    assert_eq!(s["queues.<queue>.backoff.factor"], Some(json!(2)));
    assert_eq!(s["cache.policies.<name>.jitter"], Some(Value::Null));
    assert_eq!(s["cache.policies.<name>.ttl"], None, "required: no default");
    assert!(s.contains_key("redis.password"));
    assert!(!s.contains_key("redis"), "sections are not settings");
}
