//! Encryption at rest for values marked sensitive by configuration.
//!
//! | what | configured by | stored as |
//! |---|---|---|
//! | cache values of keys `<name>:...` | `[encryption] caches = ["<name>", ...]` | the envelope's bytes |
//! | task payloads and results | `[encryption] queues = ["<queue>", ...]` | a JSON string `"spool-enc:<base64 envelope>"` |
//!
//! Values are sealed with ChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) under a random
//! 96-bit nonce per value, in a small versioned [envelope](cipher) that names the key id, so
//! keys rotate: list the new key, make it `active`, keep the old one listed while values
//! sealed with it live (they stay readable; new writes use the active key). Each ciphertext is
//! bound to where it lives (project + cache key; queue + task id + field), so one copied
//! elsewhere, tampered with or truncated fails with [`spool_ports::PortError::Internal`]
//! naming the value and the reason — never garbage.
//!
//! The layers ([`EncryptedCache`], [`EncryptedQueue`]) wrap the ports above the resilience
//! layer (see [`EncryptionSettings::wrap`], called by the wiring), so Redis and the local
//! fallback only ever see ciphertext.
//!
//! ```toml
//! [encryption]
//! keys = [
//!   { id = "k1", key_file = "/run/secrets/spool-k1" },  # 32 bytes as base64 or hex
//!   { id = "k2", key_env = "SPOOL_KEY_K2" },
//! ]
//! active = "k2"
//! caches = ["sessions"]          # keys "sessions:..." in any project
//! queues = ["agent_tasks"]
//! ```
//!
//! Make a key with `head -c 32 /dev/urandom | base64`.

mod cache;
pub mod cipher;
mod queue;
mod settings;

pub use cache::{cache_context, EncryptedCache};
pub use cipher::{generate_key_text, key_id_of, parse_key, Context, CryptoError, KeyId, Keyring};
pub use queue::{task_context, EncryptedQueue, TaskField, JSON_MARKER};
pub use settings::EncryptionSettings;
