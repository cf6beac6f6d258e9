//! `[encryption]`: keys (from files or environment variables) and which values are sensitive.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spool_domain::names::QueueName;

use super::ConfigError;
use crate::crypto::{parse_key, EncryptionSettings, KeyId, Keyring};
use crate::services::CacheName;
use spool_domain::secret::Secret;

/// `[encryption]` settings. Nothing is encrypted by default.
///
/// ```toml
/// [encryption]
/// keys = [{ id = "k1", key_file = "/run/secrets/k1" }, { id = "k2", key_env = "SPOOL_KEY_K2" }]
/// active = "k2"
/// caches = ["sessions"]
/// queues = ["agent_tasks"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Every key that may have sealed a stored value; the ids are stored with each value.
    pub keys: Vec<EncryptionKeyConfig>,
    /// The id new values are sealed with; may be left out when exactly one key is listed.
    pub active: Option<String>,
    /// Cache names whose values are encrypted (keys `<name>:...`, any project).
    pub caches: Vec<String>,
    /// Queues whose task payloads and results are encrypted.
    pub queues: Vec<String>,
}

/// One key: 32 random bytes as base64 or hex, read from exactly one of a file or an
/// environment variable (never written in the configuration itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionKeyConfig {
    /// The key id stored with every value sealed with it (`A-Z a-z 0-9 _ . -`, at most 32).
    pub id: String,
    /// A file holding the key (e.g. a mounted secret).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// An environment variable holding the key.
    #[serde(default)]
    pub key_env: Option<String>,
}

impl EncryptionKeyConfig {
    fn read(&self, at: &str) -> Result<Secret, ConfigError> {
        match (&self.key_file, &self.key_env) {
            (Some(path), None) => std::fs::read_to_string(path).map(Secret::new).map_err(|e| {
                ConfigError::invalid(
                    format!("{at}.key_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            }),
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) => Ok(Secret::new(v)),
                Err(std::env::VarError::NotPresent) => Err(ConfigError::invalid(
                    format!("{at}.key_env"),
                    format!("environment variable {var} is not set"),
                )),
                Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::invalid(
                    format!("{at}.key_env"),
                    format!("environment variable {var} is not valid UTF-8"),
                )),
            },
            _ => Err(ConfigError::invalid(
                at.to_owned(),
                "give exactly one of key_file or key_env",
            )),
        }
    }
}

impl EncryptionConfig {
    /// Reads every key and validates the section; `at` is its path (`encryption`).
    ///
    /// # Errors
    /// The bad setting, named: a key that cannot be read or is not 32 bytes
    /// (`encryption.keys[1].key_file`), a duplicate or malformed id, an `active` id that is
    /// not listed, a bad cache or queue name, or sensitive values with no key. Key material
    /// never appears in a message.
    pub fn settings(&self, at: &str) -> Result<EncryptionSettings, ConfigError> {
        let mut caches = BTreeSet::new();
        for (i, name) in self.caches.iter().enumerate() {
            let parsed = CacheName::parse(name.as_str())
                .map_err(|e| ConfigError::invalid(format!("{at}.caches[{i}]"), e.to_string()))?;
            caches.insert(parsed);
        }
        let mut queues = BTreeSet::new();
        for (i, name) in self.queues.iter().enumerate() {
            let parsed = QueueName::parse(name.as_str())
                .map_err(|e| ConfigError::invalid(format!("{at}.queues[{i}]"), e.to_string()))?;
            queues.insert(parsed);
        }
        if self.keys.is_empty() {
            if !caches.is_empty() || !queues.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.keys"),
                    "values are marked sensitive (encryption.caches / encryption.queues) but \
                     no key is configured",
                ));
            }
            if let Some(active) = &self.active {
                return Err(ConfigError::invalid(
                    format!("{at}.active"),
                    format!("{active:?} names a key but encryption.keys is empty"),
                ));
            }
            return Ok(EncryptionSettings::default());
        }
        let mut keys = Vec::with_capacity(self.keys.len());
        for (i, k) in self.keys.iter().enumerate() {
            let here = format!("{at}.keys[{i}]");
            let id = KeyId::parse(k.id.as_str())
                .map_err(|m| ConfigError::invalid(format!("{here}.id"), m))?;
            if keys.iter().any(|(other, _)| other == &id) {
                return Err(ConfigError::invalid(
                    format!("{here}.id"),
                    format!("{id:?} is used by an earlier key"),
                ));
            }
            let source = if k.key_file.is_some() {
                "key_file"
            } else {
                "key_env"
            };
            let text = k.read(&here)?;
            let key = parse_key(&text)
                .map_err(|m| ConfigError::invalid(format!("{here}.{source}"), m))?;
            keys.push((id, key));
        }
        let active = match &self.active {
            Some(a) => KeyId::parse(a.as_str())
                .map_err(|m| ConfigError::invalid(format!("{at}.active"), m))?,
            None if keys.len() == 1 => keys[0].0.clone(),
            None => {
                return Err(ConfigError::invalid(
                    format!("{at}.active"),
                    "several keys are listed: name the one new values are sealed with",
                ))
            }
        };
        let keyring = Keyring::new(keys, &active)
            .map_err(|m| ConfigError::invalid(format!("{at}.active"), m))?;
        Ok(EncryptionSettings {
            keyring: Some(Arc::new(keyring)),
            caches,
            queues,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{Config, EnvLayer};
    use crate::crypto::generate_key_text;

    fn key_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{text}\n")).unwrap();
        path.display().to_string()
    }

    fn load(toml: &str) -> Result<crate::config::Settings, ConfigError> {
        Config::from_toml_str(toml, &EnvLayer::default())?.validate()
    }

    #[test]
    fn keys_from_files_with_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = key_file(&dir, "k1", generate_key_text().expose());
        let k2 = key_file(&dir, "k2", &"ab".repeat(32));
        let s = load(&format!(
            "[encryption]\nkeys = [{{ id = \"k1\", key_file = {k1:?} }}, \
             {{ id = \"k2\", key_file = {k2:?} }}]\nactive = \"k2\"\n\
             caches = [\"sessions\"]\nqueues = [\"agent_tasks\"]\n"
        ))
        .unwrap();
        let ring = s.encryption.keyring.as_ref().unwrap();
        assert_eq!(ring.active_id().as_str(), "k2");
        assert_eq!(ring.ids().count(), 2);
        assert!(s.encryption.is_active());
        assert!(s
            .encryption
            .queues
            .contains(&QueueName::parse("agent_tasks").unwrap()));
    }

    #[test]
    fn bad_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = key_file(&dir, "good", generate_key_text().expose());
        let short = key_file(&dir, "short", &"ab".repeat(16));
        let cases = [
            (
                "[encryption]\ncaches = [\"sessions\"]\n".to_owned(),
                "encryption.keys",
                "no key",
            ),
            (
                format!("[encryption]\nkeys = [{{ id = \"k1\", key_file = {good:?} }}]\nactive = \"k9\"\n"),
                "encryption.active",
                "k9",
            ),
            (
                format!("[encryption]\nkeys = [{{ id = \"k1\", key_file = {short:?} }}]\n"),
                "encryption.keys[0].key_file",
                "exactly 32 bytes",
            ),
            (
                "[encryption]\nkeys = [{ id = \"k1\", key_file = \"/nonexistent/spool-key\" }]\n"
                    .to_owned(),
                "encryption.keys[0].key_file",
                "cannot read",
            ),
            (
                "[encryption]\nkeys = [{ id = \"k1\", key_env = \"SPOOL_TEST_SURELY_UNSET_KEY_4821\" }]\n"
                    .to_owned(),
                "encryption.keys[0].key_env",
                "not set",
            ),
            (
                "[encryption]\nkeys = [{ id = \"k1\" }]\n".to_owned(),
                "encryption.keys[0]",
                "exactly one",
            ),
            (
                format!(
                    "[encryption]\nkeys = [{{ id = \"k1\", key_file = {good:?} }}, \
                     {{ id = \"k1\", key_file = {good:?} }}]\nactive = \"k1\"\n"
                ),
                "encryption.keys[1].id",
                "earlier",
            ),
            (
                format!(
                    "[encryption]\nkeys = [{{ id = \"k1\", key_file = {good:?} }}, \
                     {{ id = \"k2\", key_file = {good:?} }}]\n"
                ),
                "encryption.active",
                "several",
            ),
            (
                format!("[encryption]\nkeys = [{{ id = \"k1\", key_file = {good:?} }}]\nqueues = [\"Bad Name\"]\n"),
                "encryption.queues[0]",
                "",
            ),
        ];
        for (toml, setting, needle) in cases {
            let e = load(&toml).unwrap_err();
            assert_eq!(e.setting(), Some(setting), "{toml}: {e}");
            assert!(e.to_string().contains(needle), "{toml}: {e}");
        }
    }

    #[test]
    fn key_material_never_appears_in_errors_or_debug() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "cd".repeat(20); // 20 bytes: the wrong length
        let path = key_file(&dir, "k", &secret);
        let toml = format!("[encryption]\nkeys = [{{ id = \"k1\", key_file = {path:?} }}]\n");
        let e = load(&toml).unwrap_err();
        assert!(!format!("{e} {e:?}").contains(&secret));
        let good = generate_key_text();
        let path = key_file(&dir, "g", good.expose());
        let toml = format!("[encryption]\nkeys = [{{ id = \"k1\", key_file = {path:?} }}]\n");
        let s = load(&toml).unwrap();
        assert!(!format!("{s:?}").contains(good.expose()));
    }
}
