//! Task IDs: ULIDs, ordered by creation time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Timestamp, ValidationError};

/// A task's ID: a ULID (26 Crockford base-32 characters), so IDs sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(ulid::Ulid);

impl TaskId {
    /// Builds an ID from its creation time and 80 random bits (the caller supplies both, so
    /// the domain stays free of clocks and randomness).
    pub fn from_parts(created: Timestamp, random: u128) -> Self {
        Self(ulid::Ulid::from_parts(created.as_millis(), random))
    }

    /// Parses the 26-character text form.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        ulid::Ulid::from_string(s)
            .map(Self)
            .map_err(|e| ValidationError::new("task id", format!("{s:?} is not a ULID: {e}")))
    }

    /// When the ID was made.
    pub fn created(&self) -> Timestamp {
        Timestamp::from_millis(self.0.timestamp_ms())
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for TaskId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ids_round_trip_and_sort_by_time(a in 0u64..(1 << 48), b in 0u64..(1 << 48), r: u128) {
            let (ia, ib) = (TaskId::from_parts(Timestamp::from_millis(a), r), TaskId::from_parts(Timestamp::from_millis(b), r));
            prop_assert_eq!(TaskId::parse(&ia.to_string()).unwrap(), ia);
            prop_assert_eq!(ia.created().as_millis(), a);
            if a < b { prop_assert!(ia < ib); }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = TaskId::parse(&s);
        }
    }
}
