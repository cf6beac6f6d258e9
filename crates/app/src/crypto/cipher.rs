//! The keyring and the versioned envelope every encrypted value is stored in.
//!
//! ```text
//! offset  size  field
//! 0       3     magic "SPE"
//! 3       1     version (1)
//! 4       1     key id length n (1..=32)
//! 5       n     key id (ASCII: A-Z a-z 0-9 _ . -)
//! 5+n     12    nonce (random per value, from the OS)
//! 17+n    ..    ChaCha20-Poly1305 ciphertext followed by its 16-byte tag
//! ```
//!
//! The associated data is the header (bytes `0..5+n`) followed by the value's
//! [context](Context): where the value lives (cache key, queue + task id + field). A value
//! copied under another key or task, a flipped bit, a truncated value, or one sealed with a key
//! that is not in the ring all fail to open with a [`CryptoError`], never as garbage.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::config::Secret;

/// First bytes of every envelope.
pub const MAGIC: &[u8; 3] = b"SPE";
/// The envelope version this build writes (and the only one it reads).
pub const VERSION: u8 = 1;
/// Bytes of a key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a value cannot be sealed or opened. Messages never contain key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The bytes are not an envelope of a version this build reads (plaintext, truncated,
    /// foreign data).
    #[error("not an encrypted value: {0}")]
    Malformed(String),
    /// The envelope names a key id the keyring does not hold.
    #[error("encrypted with key id {0:?}, which is not configured in [encryption] keys")]
    UnknownKey(String),
    /// Authentication failed: the value was tampered with, truncated, moved to another key or
    /// task, or sealed with a different key under the same id.
    #[error("authentication failed: the encrypted value was tampered with, moved, or sealed with another key")]
    Authentication,
    /// Sealing failed (the AEAD refused; not expected in practice).
    #[error("encryption failed")]
    Seal,
}

/// A key id: 1..=32 of `A-Z a-z 0-9 _ . -`, stored in clear in every envelope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Longest id.
    pub const MAX_LEN: usize = 32;

    /// Validates an id.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(s: impl Into<String>) -> Result<Self, String> {
        let s = s.into();
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(format!("{s:?} must be 1..={} bytes long", Self::MAX_LEN));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(format!(
                "character {bad:?} is not allowed in a key id; use A-Z, a-z, 0-9, _ . -"
            ));
        }
        Ok(Self(s))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decodes a key written as base64 (44 characters, e.g. `head -c 32 /dev/urandom | base64`)
/// or hex (64 digits) into its 32 bytes. Surrounding whitespace is ignored.
///
/// # Errors
/// A message saying what length or encoding was expected (never the text itself).
pub fn parse_key(text: &Secret) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    let t = text.expose().trim();
    let mut decoded = Zeroizing::new(Vec::new());
    if t.len() == 2 * KEY_LEN && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        *decoded = hex::decode(t).map_err(|_| "the key is not valid hex".to_owned())?;
    } else {
        STANDARD
            .decode_vec(t, &mut decoded)
            .map_err(|_| "the key is neither 64 hex digits nor base64".to_owned())?;
    }
    if decoded.len() != KEY_LEN {
        return Err(format!(
            "the key decodes to {} bytes; a key is exactly {KEY_LEN} bytes (32 random bytes \
             as base64 or hex, e.g. `head -c 32 /dev/urandom | base64`)",
            decoded.len()
        ));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&decoded);
    Ok(key)
}

/// A fresh random key as base64 text (tests, tooling).
pub fn generate_key_text() -> Secret {
    let mut key = ChaCha20Poly1305::generate_key(&mut OsRng);
    let text = STANDARD.encode(key.as_slice());
    key.as_mut_slice().zeroize();
    Secret::new(text)
}

/// Where a value lives, bound to its ciphertext as associated data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context(Vec<u8>);

impl Context {
    /// A context from its parts, joined unambiguously (each part is length-prefixed).
    pub fn new<'a>(parts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(&(p.len() as u32).to_be_bytes());
            out.extend_from_slice(p.as_bytes());
        }
        Self(out)
    }
}

struct KeyEntry {
    id: KeyId,
    /// Zeroizes its key on drop.
    cipher: ChaCha20Poly1305,
    /// First 8 bytes of SHA-256 of the key: tells keys apart without revealing them.
    fingerprint: [u8; 8],
}

/// The keys values are sealed with: one active key for new values, every listed key for
/// reading. Key material never prints (`Debug` shows ids only) and is zeroized on drop.
pub struct Keyring {
    keys: Vec<KeyEntry>,
    active: usize,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "keys",
                &self.keys.iter().map(|k| &k.id.0).collect::<Vec<_>>(),
            )
            .field("active", &self.active_id().0)
            .finish()
    }
}

impl PartialEq for Keyring {
    fn eq(&self, other: &Self) -> bool {
        self.active == other.active
            && self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(&other.keys)
                .all(|(a, b)| a.id == b.id && a.fingerprint == b.fingerprint)
    }
}

impl Keyring {
    /// A ring of `keys` sealing new values with `active`.
    ///
    /// # Errors
    /// No key, a duplicate id, or `active` not among the ids.
    pub fn new(
        keys: impl IntoIterator<Item = (KeyId, Zeroizing<[u8; KEY_LEN]>)>,
        active: &KeyId,
    ) -> Result<Self, String> {
        let mut entries: Vec<KeyEntry> = Vec::new();
        for (id, key) in keys {
            if entries.iter().any(|e| e.id == id) {
                return Err(format!("key id {id:?} is listed twice"));
            }
            let digest = Sha256::digest(key.as_slice());
            let mut fingerprint = [0u8; 8];
            fingerprint.copy_from_slice(&digest[..8]);
            entries.push(KeyEntry {
                cipher: ChaCha20Poly1305::new(key.as_slice().into()),
                id,
                fingerprint,
            });
        }
        if entries.is_empty() {
            return Err("no key is configured".to_owned());
        }
        let active = entries
            .iter()
            .position(|e| &e.id == active)
            .ok_or_else(|| {
                format!(
                    "{active:?} is not one of the configured key ids ({})",
                    entries
                        .iter()
                        .map(|e| e.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        Ok(Self {
            keys: entries,
            active,
        })
    }

    /// The id new values are sealed with.
    pub fn active_id(&self) -> &KeyId {
        &self.keys[self.active].id
    }

    /// Every id the ring can open, in configuration order.
    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.iter().map(|k| &k.id)
    }

    /// Seals `plaintext` for `context` with the active key, under a fresh random nonce.
    ///
    /// # Errors
    /// [`CryptoError::Seal`] if the AEAD refuses (not expected).
    pub fn seal(&self, plaintext: &[u8], context: &Context) -> Result<Vec<u8>, CryptoError> {
        let key = &self.keys[self.active];
        let id = key.id.as_str().as_bytes();
        let mut out = Vec::with_capacity(5 + id.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        let header_len = out.len();
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = aad(&out[..header_len], context);
        let sealed = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens an envelope sealed for `context` with any key of the ring.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] for bytes that are not a v1 envelope;
    /// [`CryptoError::UnknownKey`] for a key id not in the ring;
    /// [`CryptoError::Authentication`] for a tampered, truncated or moved value.
    pub fn open(&self, envelope: &[u8], context: &Context) -> Result<Vec<u8>, CryptoError> {
        let parsed = Parsed::read(envelope)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id.as_str() == parsed.key_id)
            .ok_or_else(|| CryptoError::UnknownKey(parsed.key_id.to_owned()))?;
        let aad = aad(parsed.header, context);
        key.cipher
            .decrypt(
                parsed.nonce.into(),
                Payload {
                    msg: parsed.sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Authentication)
    }
}

/// The key id an envelope names (without opening it): which key a stored value needs.
///
/// # Errors
/// [`CryptoError::Malformed`] for bytes that are not a v1 envelope.
pub fn key_id_of(envelope: &[u8]) -> Result<&str, CryptoError> {
    Parsed::read(envelope).map(|p| p.key_id)
}

/// Whether `bytes` start like an envelope (magic and version).
pub fn looks_sealed(bytes: &[u8]) -> bool {
    bytes.len() > 4 && &bytes[..3] == MAGIC && bytes[3] == VERSION
}

fn aad(header: &[u8], context: &Context) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + 1 + context.0.len());
    aad.extend_from_slice(header);
    aad.push(0);
    aad.extend_from_slice(&context.0);
    aad
}

struct Parsed<'a> {
    header: &'a [u8],
    key_id: &'a str,
    nonce: &'a [u8; NONCE_LEN],
    sealed: &'a [u8],
}

impl<'a> Parsed<'a> {
    fn read(b: &'a [u8]) -> Result<Self, CryptoError> {
        let bad = |why: &str| CryptoError::Malformed(why.to_owned());
        if b.len() < 5 || &b[..3] != MAGIC {
            return Err(bad("missing the SPE envelope header"));
        }
        if b[3] != VERSION {
            return Err(CryptoError::Malformed(format!(
                "envelope version {} is not supported (this build reads {VERSION})",
                b[3]
            )));
        }
        let n = usize::from(b[4]);
        if n == 0 || n > KeyId::MAX_LEN {
            return Err(bad("bad key id length"));
        }
        let header_len = 5 + n;
        if b.len() < header_len + NONCE_LEN + TAG_LEN {
            return Err(bad("truncated envelope"));
        }
        let key_id = std::str::from_utf8(&b[5..header_len]).map_err(|_| bad("bad key id"))?;
        let nonce: &[u8; NONCE_LEN] = b[header_len..header_len + NONCE_LEN]
            .try_into()
            .map_err(|_| bad("truncated envelope"))?;
        Ok(Self {
            header: &b[..header_len],
            key_id,
            nonce,
            sealed: &b[header_len + NONCE_LEN..],
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ring(keys: &[(&str, &Secret)], active: &str) -> Keyring {
        Keyring::new(
            keys.iter()
                .map(|(id, k)| (KeyId::parse(*id).unwrap(), parse_key(k).unwrap())),
            &KeyId::parse(active).unwrap(),
        )
        .unwrap()
    }

    fn ctx(s: &str) -> Context {
        Context::new(["test", s])
    }

    #[test]
    fn seals_and_opens_with_fresh_nonces() {
        let k = generate_key_text();
        let r = ring(&[("k1", &k)], "k1");
        let a = r.seal(b"hello", &ctx("x")).unwrap();
        let b = r.seal(b"hello", &ctx("x")).unwrap();
        assert_ne!(a, b, "a nonce is never reused");
        assert_eq!(r.open(&a, &ctx("x")).unwrap(), b"hello");
        assert_eq!(key_id_of(&a).unwrap(), "k1");
        assert!(looks_sealed(&a));
        assert!(!a.windows(5).any(|w| w == b"hello"));
        assert_eq!(a.len(), 5 + 2 + 12 + 5 + 16);
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_fails() {
        let k = generate_key_text();
        let r = ring(&[("k1", &k)], "k1");
        let sealed = r.seal(b"secret value", &ctx("x")).unwrap();
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = sealed.clone();
                t[i] ^= bit;
                assert!(r.open(&t, &ctx("x")).is_err(), "byte {i} bit {bit:#x}");
            }
        }
        for len in 0..sealed.len() {
            assert!(r.open(&sealed[..len], &ctx("x")).is_err(), "length {len}");
        }
    }

    #[test]
    fn another_context_or_key_fails_and_rotation_keeps_old_values() {
        let (k1, k2) = (generate_key_text(), generate_key_text());
        let old = ring(&[("k1", &k1)], "k1");
        let v1 = old.seal(b"v1", &ctx("x")).unwrap();
        assert_eq!(
            old.open(&v1, &ctx("y")).unwrap_err(),
            CryptoError::Authentication
        );
        let rotated = ring(&[("k1", &k1), ("k2", &k2)], "k2");
        assert_eq!(rotated.open(&v1, &ctx("x")).unwrap(), b"v1");
        let v2 = rotated.seal(b"v2", &ctx("x")).unwrap();
        assert_eq!(key_id_of(&v2).unwrap(), "k2");
        assert_eq!(
            old.open(&v2, &ctx("x")).unwrap_err(),
            CryptoError::UnknownKey("k2".into())
        );
        // The same id with another key: authentication fails, no garbage.
        let impostor = ring(&[("k1", &k2)], "k1");
        assert_eq!(
            impostor.open(&v1, &ctx("x")).unwrap_err(),
            CryptoError::Authentication
        );
        assert!(matches!(
            rotated.open(b"plain text", &ctx("x")),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn keys_parse_from_base64_or_hex_and_never_print() {
        let hex_key = Secret::new("00".repeat(32));
        assert_eq!(*parse_key(&hex_key).unwrap(), [0u8; 32]);
        let b64 = generate_key_text();
        assert_eq!(parse_key(&b64).unwrap().len(), 32);
        let short = Secret::new(STANDARD.encode([1u8; 16]));
        let e = parse_key(&short).unwrap_err();
        assert!(e.contains("16 bytes") && e.contains("32"), "{e}");
        assert!(parse_key(&Secret::new("not a key!")).is_err());
        let r = ring(&[("k1", &b64)], "k1");
        let printed = format!("{r:?}");
        assert!(!printed.contains(b64.expose()), "{printed}");
        assert!(printed.contains("k1"));
    }

    #[test]
    fn bad_rings_are_refused() {
        let k = generate_key_text();
        let id = KeyId::parse("k1").unwrap();
        let e = Keyring::new(
            [(id.clone(), parse_key(&k).unwrap())],
            &KeyId::parse("k9").unwrap(),
        )
        .unwrap_err();
        assert!(e.contains("k9"), "{e}");
        let e = Keyring::new(
            [
                (id.clone(), parse_key(&k).unwrap()),
                (id.clone(), parse_key(&k).unwrap()),
            ],
            &id,
        )
        .unwrap_err();
        assert!(e.contains("twice"), "{e}");
        assert!(KeyId::parse("has space").is_err());
        assert!(KeyId::parse("x".repeat(33)).is_err());
    }
}
