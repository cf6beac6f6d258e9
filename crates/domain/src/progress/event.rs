//! Progress events and their IDs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::progress::Operation;
use crate::ValidationError;

/// A monotonically increasing event ID in Redis Stream form `<ms>-<seq>`, so SSE
/// `Last-Event-ID` values are the same on both adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl EventId {
    /// The next ID after `self` at time `now_ms`: `now_ms-0` when time moved on, else the
    /// same millisecond with the next sequence (so IDs never go backwards, even if the clock
    /// does).
    pub fn next(self, now_ms: u64) -> Self {
        if now_ms > self.ms {
            Self { ms: now_ms, seq: 0 }
        } else {
            Self {
                ms: self.ms,
                seq: self.seq + 1,
            }
        }
    }

    /// Parses `<ms>-<seq>` (or `<ms>`, meaning sequence 0).
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError::new("event id", format!("{s:?} is not <ms>-<seq>"));
        if s.is_empty() || s.len() > 41 {
            return Err(bad());
        }
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(Self {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EventId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What an event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The whole state, sent first to a new subscriber (and after a gap in a resumed stream).
    Snapshot,
    /// A change that leaves the operation running.
    Progress,
    /// The change that moved the operation to a terminal state; the stream ends after it.
    End,
}

/// One event: its ID, kind, and the operation as of that event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// Monotonically increasing per operation.
    pub id: EventId,
    /// What happened.
    pub kind: EventKind,
    /// The operation after the event.
    pub operation: Operation,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ids_round_trip(ms: u64, seq: u64) {
            let id = EventId { ms, seq };
            prop_assert_eq!(EventId::parse(&id.to_string()).unwrap(), id);
        }

        #[test]
        fn next_is_strictly_greater(ms in 0u64..u64::MAX / 2, seq in 0u64..1000, now in 0u64..u64::MAX / 2) {
            let id = EventId { ms, seq };
            prop_assert!(id.next(now) > id);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,50}") {
            let _ = EventId::parse(&s);
        }
    }
}
