//! `deploy/docker-compose.yml`, `deploy/Dockerfile` and `deploy/spool.toml`, checked without
//! Docker: the compose file mounts the tested Redis files, sets only real settings, and
//! builds the real binary.

use std::collections::BTreeMap;

use serde_norway::Value;
use spool_app::config::{BackendKind, Config, EnvLayer};

use crate::{read, root, settings};

fn compose() -> Value {
    serde_norway::from_str(&read("deploy/docker-compose.yml"))
        .unwrap_or_else(|e| panic!("deploy/docker-compose.yml is not YAML: {e}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `./redis.conf:/usr/local/etc/redis/redis.conf:ro` → target of the mount of `source`.
fn mount_target(volumes: &[String], source: &str) -> String {
    volumes
        .iter()
        .find_map(|v| {
            let mut parts = v.split(':');
            (parts.next() == Some(source)).then(|| parts.next().unwrap_or_default().to_owned())
        })
        .unwrap_or_else(|| panic!("nothing mounts {source}: {volumes:?}"))
}

/// The spool service's environment.
pub(crate) fn spool_environment() -> BTreeMap<String, String> {
    let c = compose();
    let env = c["services"]["spool"]["environment"]
        .as_mapping()
        .expect("services.spool.environment is a mapping");
    env.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => panic!("{k:?}: unexpected value {other:?}"),
            };
            (k.as_str().expect("a variable name").to_owned(), value)
        })
        .collect()
}

#[test]
fn compose_runs_redis_7_with_the_tested_config_and_acl_files() {
    let c = compose();
    let redis = &c["services"]["redis"];
    let image = redis["image"].as_str().unwrap();
    assert!(image.starts_with("redis:7"), "Redis 7: {image}");
    let volumes = strings(&redis["volumes"]);
    let conf = mount_target(&volumes, "./redis.conf");
    let acl = mount_target(&volumes, "./users.acl");
    let command = strings(&redis["command"]);
    assert_eq!(command.first().map(String::as_str), Some("redis-server"));
    assert_eq!(
        command.get(1),
        Some(&conf),
        "the config file comes first: {command:?}"
    );
    let after = |flag: &str| {
        command
            .iter()
            .position(|a| a == flag)
            .and_then(|i| command.get(i + 1))
            .unwrap_or_else(|| panic!("{flag} is not set: {command:?}"))
            .clone()
    };
    assert_eq!(after("--aclfile"), acl);
    assert_eq!(after("--dir"), "/data");
    assert!(volumes.iter().any(|v| v.ends_with(":/data")), "{volumes:?}");
    // Every file the compose file names exists next to it.
    let secret = c["secrets"]["redis_password"]["file"].as_str().unwrap();
    for file in ["./redis.conf", "./users.acl", "./spool.toml", secret] {
        assert!(
            root().join("deploy").join(file).is_file(),
            "deploy/{file} is missing"
        );
    }
    assert!(
        c["services"]["redis"]["ports"].is_null(),
        "Redis must not be published on the host"
    );
}

#[test]
fn compose_sets_only_real_settings_and_they_load() {
    let env = spool_environment();
    let known = settings();
    let aliases = [
        ("SPOOL_BACKEND", "backend"),
        ("SPOOL_REDIS_URL", "redis.url"),
        ("SPOOL_HTTP_ADDR", "http.addr"),
        ("SPOOL_RATE_LIMITS", "rate_limits"),
    ];
    for var in env.keys().filter(|k| k.starts_with("SPOOL_")) {
        if var == "SPOOL_CONFIG" {
            continue;
        }
        let path = aliases.iter().find(|(a, _)| a == var).map_or_else(
            || {
                var["SPOOL_".len()..]
                    .to_ascii_lowercase()
                    .replace("__", ".")
            },
            |(_, p)| (*p).to_owned(),
        );
        assert!(
            known.contains_key(&path) || known.keys().any(|k| k.starts_with(&format!("{path}["))),
            "{var} sets `{path}`, which is not a setting"
        );
    }

    // The spool service's configuration: the mounted file named by SPOOL_CONFIG, then the env.
    let spool = &compose()["services"]["spool"];
    let volumes = strings(&spool["volumes"]);
    assert_eq!(mount_target(&volumes, "./spool.toml"), env["SPOOL_CONFIG"]);
    let config = Config::load_from(
        Some(&root().join("deploy/spool.toml")),
        &EnvLayer::from_pairs(env.clone()),
    )
    .unwrap_or_else(|e| panic!("the compose configuration is invalid: {e}"));
    assert_eq!(config.backend, BackendKind::Redis);
    assert_eq!(config.redis.username.as_deref(), Some("spool"));
    assert!(
        !config.http.api_keys.is_empty(),
        "spool listens on 0.0.0.0 in the container, which needs API keys"
    );
    // The ACL file's key pattern is the configured prefix.
    let acl = read("deploy/users.acl");
    let pattern = format!("~{}:*", config.redis.key_prefix);
    assert!(
        acl.lines()
            .any(|l| l.starts_with("user spool ") && l.split_whitespace().any(|r| r == pattern)),
        "users.acl must give the spool user {pattern}"
    );
}

#[test]
fn the_image_builds_the_spool_binary_with_a_supported_toolchain() {
    let dockerfile = read("deploy/Dockerfile");
    let c = compose();
    let build = &c["services"]["spool"]["build"];
    assert_eq!(build["context"].as_str(), Some(".."));
    assert_eq!(build["dockerfile"].as_str(), Some("deploy/Dockerfile"));

    let from: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(from.len(), 2, "a build stage and a runtime stage: {from:?}");
    let rust = from[0]
        .strip_prefix("rust:")
        .and_then(|t| t.split('-').next())
        .expect("the build stage is an official rust image");
    let workspace = read("Cargo.toml");
    let msrv = workspace
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("the workspace has a rust-version")
        .trim_matches('"');
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        version(rust) >= version(msrv),
        "the image's Rust {rust} is older than rust-version {msrv}"
    );
    assert!(dockerfile.contains("cargo build --release --locked -p spool-app --bin spool"));
    let app = read("crates/app/Cargo.toml");
    assert!(
        app.contains("[[bin]]\nname = \"spool\""),
        "crates/app has the spool binary"
    );
    assert!(dockerfile.contains("COPY --from=build /src/target/release/spool /usr/local/bin/spool"));
    assert!(
        dockerfile.contains("USER 10001"),
        "the runtime stage does not run as root"
    );
    assert!(dockerfile.contains(r#"CMD ["serve"]"#));

    let ignore = read("deploy/Dockerfile.dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        "target/ stays out of the context"
    );
}
