//! The environment layer: `SPOOL_*` variables, nested with `__`, plus the short aliases.
//!
//! | variable | setting |
//! |---|---|
//! | `SPOOL_<SECTION>__<KEY>[__<KEY>...]` | `<section>.<key>...`, e.g. `SPOOL_REDIS__POOL_SIZE=8` |
//! | `SPOOL_BACKEND` | `backend` |
//! | `SPOOL_REDIS_URL` | `redis.url` |
//! | `SPOOL_REDIS_CLUSTER` | `redis.cluster` |
//! | `SPOOL_HTTP_ADDR` | `http.addr` |
//! | `SPOOL_RATE_LIMITS` | `rate_limits`, in the compact syntax of [`super::rate_limit_spec`] |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | `telemetry.otlp_endpoint` |
//! | `SPOOL_CONFIG` | the TOML file, when no path is passed |
//!
//! Other `SPOOL_*` variables (say `SPOOL_TEST_REDIS_URL`) are not settings and are ignored.
//! A nested variable beats its alias; values are read like TOML scalars (`8` is a number,
//! `true` a boolean), and text settings accept any value as text.

use std::collections::BTreeMap;
use std::sync::Arc;

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::rate_limit_spec::parse_rate_limits;
use super::ConfigError;

/// Top-level sections an environment variable may set.
const SECTIONS: &[&str] = &[
    "backend",
    "http",
    "redis",
    "limits",
    "cache",
    "rate_limits",
    "queues",
    "resilience",
    "telemetry",
    "worker",
];

/// A snapshot of environment variables to read settings from. Tests build one from pairs, so
/// they never touch (or race on) the process environment.
#[derive(Debug, Clone, Default)]
pub struct EnvLayer {
    vars: BTreeMap<String, String>,
}

impl EnvLayer {
    /// The process environment, now.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        }))
    }

    /// Explicit variables.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// One variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The settings these variables make, as a figment provider.
    ///
    /// # Errors
    /// `SPOOL_RATE_LIMITS` when it does not parse.
    pub fn provider(&self) -> Result<EnvProvider, ConfigError> {
        // (setting path, variable name, value); aliases first so nested variables win.
        let mut entries: Vec<(String, String, Value)> = Vec::new();
        let aliases = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
            ("SPOOL_REDIS_URL", "redis.url"),
            ("SPOOL_REDIS_CLUSTER", "redis.cluster"),
            ("SPOOL_HTTP_ADDR", "http.addr"),
        ];
        for (var, path) in aliases {
            if let Some(v) = self.get(var) {
                entries.push((path.to_owned(), var.to_owned(), Value::from(v.to_owned())));
            }
        }
        if let Some(spec) = self.get("SPOOL_RATE_LIMITS") {
            let policies = parse_rate_limits(spec)
                .map_err(|e| ConfigError::invalid("SPOOL_RATE_LIMITS", e.to_string()))?;
            let value = Value::serialize(&policies)
                .map_err(|e| ConfigError::invalid("SPOOL_RATE_LIMITS", e.to_string()))?;
            entries.push((
                "rate_limits".to_owned(),
                "SPOOL_RATE_LIMITS".to_owned(),
                value,
            ));
        }
        for (var, value) in &self.vars {
            let Some(rest) = var.strip_prefix("SPOOL_") else {
                continue;
            };
            let lower = rest.to_ascii_lowercase();
            let mut segments = lower.split("__");
            let section = segments.next().unwrap_or_default();
            if !SECTIONS.contains(&section) || (section == "rate_limits" && lower == "rate_limits")
            {
                continue;
            }
            if lower.split("__").any(str::is_empty) {
                return Err(ConfigError::invalid(
                    var.clone(),
                    "has an empty key segment (two '__' in a row, or a trailing '__')",
                ));
            }
            let path = lower.replace("__", ".");
            let parsed: Value = value.parse().unwrap_or_else(|_| Value::from(value.clone()));
            entries.push((path, var.clone(), parsed));
        }
        let mut dict = Dict::new();
        let mut names = BTreeMap::new();
        for (path, var, value) in entries {
            if let Some(nested) = figment::util::nest(&path, value).into_dict() {
                merge(&mut dict, nested);
            }
            names.insert(path, var);
        }
        Ok(EnvProvider {
            dict,
            names: Arc::new(names),
        })
    }
}

fn merge(into: &mut Dict, from: Dict) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, incoming)) => merge(existing, incoming),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// The settings of an [`EnvLayer`], a figment [`Provider`] whose errors name the variable.
///
/// ```
/// use figment::Figment;
/// use figment::providers::{Format, Toml};
/// use spool_app::config::{Config, EnvLayer};
///
/// let env = EnvLayer::from_pairs([("SPOOL_REDIS__POOL_SIZE", "8")]);
/// let figment = Figment::new()
///     .merge(Toml::string("[redis]\npool_size = 2"))
///     .merge(env.provider().unwrap());
/// assert_eq!(Config::from_provider(figment).unwrap().redis.pool_size, 8);
/// ```
pub struct EnvProvider {
    dict: Dict,
    names: Arc<BTreeMap<String, String>>,
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        let names = Arc::clone(&self.names);
        Metadata::named("environment variable").interpolater(move |_: &Profile, keys: &[&str]| {
            // The longest setting path that a variable set and that leads to `keys`.
            (1..=keys.len())
                .rev()
                .find_map(|n| names.get(&keys[..n].join(".")).cloned())
                .unwrap_or_else(|| format!("SPOOL_{}", keys.join("__").to_ascii_uppercase()))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut map = Map::new();
        map.insert(Profile::Default, self.dict.clone());
        Ok(map)
    }
}
