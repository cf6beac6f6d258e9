//! The payload of the bench's tasks: the task's number, padded to `--value-bytes` when given.
//!
//! Without `--value-bytes` a payload is the bare number (`17`); with it, an object
//! `{"n":17,"pad":"xxx…"}` whose padding makes it at most that many bytes. Enqueues serialise
//! [`Payload`]; the `queue.e2e` handler reads it back as a [`TaskNumber`], which takes the
//! number and skips the padding without copying it, as a worker reads the fields it needs.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A task's payload as enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(crate) enum Payload<'a> {
    /// The default: the number alone.
    Number(u64),
    /// Under `--value-bytes`.
    Padded {
        /// The task's number.
        n: u64,
        /// Filler up to the requested size.
        pad: &'a str,
    },
}

/// The number of a task, read from either form of [`Payload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskNumber(pub(crate) u64);

impl<'de> Deserialize<'de> for TaskNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;

        /// The keys of a padded payload: `n`, and anything else (skipped).
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            N,
            #[serde(other)]
            Other,
        }

        impl<'de> Visitor<'de> for Either {
            type Value = TaskNumber;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a task number or an object with the field n")
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<TaskNumber, E> {
                Ok(TaskNumber(n))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TaskNumber, A::Error> {
                let mut n = None;
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::N => n = Some(map.next_value::<u64>()?),
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                n.map(TaskNumber)
                    .ok_or_else(|| de::Error::missing_field("n"))
            }
        }

        d.deserialize_any(Either)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{json, Value};

    use super::*;

    fn read(v: &Value) -> Result<TaskNumber, serde_json::Error> {
        TaskNumber::deserialize(v)
    }

    #[test]
    fn both_forms_round_trip_through_the_stored_json() {
        let plain = serde_json::to_value(Payload::Number(17)).unwrap();
        assert_eq!(plain, json!(17));
        assert_eq!(read(&plain).unwrap(), TaskNumber(17));
        let padded = serde_json::to_value(Payload::Padded { n: 5, pad: "xyz" }).unwrap();
        assert_eq!(padded, json!({"n": 5, "pad": "xyz"}));
        assert_eq!(read(&padded).unwrap(), TaskNumber(5));
        let text = serde_json::to_string(&Payload::Padded { n: 5, pad: "" }).unwrap();
        assert_eq!(text, r#"{"n":5,"pad":""}"#);
        let owned: TaskNumber = serde_json::from_str(&text).unwrap();
        assert_eq!(owned, TaskNumber(5), "from text too, not only from a Value");
    }

    #[test]
    fn anything_else_is_an_error() {
        for bad in [
            json!("17"),
            json!(-1),
            json!({"pad": "x"}),
            json!({"n": "5"}),
        ] {
            assert!(read(&bad).is_err(), "{bad}");
        }
    }
}
