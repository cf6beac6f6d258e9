//! How typed values become bytes: JSON (default) or MessagePack.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ServiceError;

/// The encoding of typed cache values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Codec {
    /// JSON (default): readable, and what HTTP clients see.
    #[default]
    #[serde(rename = "json")]
    Json,
    /// MessagePack with field names: smaller and faster.
    #[serde(rename = "msgpack", alias = "messagepack")]
    MsgPack,
}

impl Codec {
    /// Serialises `value`.
    ///
    /// # Errors
    /// [`ServiceError::Encode`] naming `what`.
    pub fn encode<T: Serialize + ?Sized>(
        self,
        what: &'static str,
        value: &T,
    ) -> Result<Bytes, ServiceError> {
        let out = match self {
            Codec::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
            Codec::MsgPack => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
        };
        out.map(Bytes::from)
            .map_err(|message| ServiceError::Encode { what, message })
    }

    /// Deserialises `bytes`.
    ///
    /// # Errors
    /// [`ServiceError::Decode`] naming `what`.
    pub fn decode<T: DeserializeOwned>(
        self,
        what: &'static str,
        bytes: &[u8],
    ) -> Result<T, ServiceError> {
        let out = match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Codec::MsgPack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
        };
        out.map_err(|message| ServiceError::Decode { what, message })
    }

    /// The HTTP content type of encoded values.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::MsgPack => "application/msgpack",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Profile {
        name: String,
        tags: Vec<String>,
        score: Option<f64>,
    }

    #[test]
    fn both_codecs_round_trip_and_refuse_foreign_bytes() {
        let p = Profile {
            name: "ada".into(),
            tags: vec!["x".into()],
            score: Some(1.5),
        };
        for codec in [Codec::Json, Codec::MsgPack] {
            let bytes = codec.encode("v", &p).unwrap();
            assert_eq!(codec.decode::<Profile>("v", &bytes).unwrap(), p);
            let e = codec.decode::<Profile>("v", b"\xc1garbage").unwrap_err();
            assert_eq!(e.code(), "internal");
        }
        let json = Codec::Json.encode("v", &p).unwrap();
        let msgpack = Codec::MsgPack.encode("v", &p).unwrap();
        assert_ne!(json, msgpack);
        assert!(std::str::from_utf8(&json).unwrap().contains("\"ada\""));
    }

    #[test]
    fn unencodable_values_are_reported() {
        use std::collections::HashMap;
        let mut m: HashMap<(u8, u8), u8> = HashMap::new();
        m.insert((1, 2), 3);
        let e = Codec::Json.encode("cache value", &m).unwrap_err();
        assert!(
            matches!(
                e,
                ServiceError::Encode {
                    what: "cache value",
                    ..
                }
            ),
            "{e}"
        );
    }
}
