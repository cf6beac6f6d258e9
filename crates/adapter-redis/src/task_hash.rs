//! The packed fields of a task's hash.
//!
//! Fields the Lua scripts read (status, attempts, lease_seq, rank, max_attempts, unique_key,
//! timestamps, ...) are fields of their own. What only the client reads is packed, so every
//! `HGETALL` / `HSET` of a task (each field costs a script ~4k instructions to read and
//! reply) handles fewer fields:
//!
//! | field | holds |
//! |---|---|
//! | `spec` | JSON `{"kind", "priority", "timeout_ms"?, "correlation_id"?}` |
//! | `backoff` | `<initial ms> <max ms> <factor> <none\|full>` (parsed by `queue_fail.lua`) |
//!
//! Tasks stored by earlier versions keep these as separate fields (`kind`, `priority`,
//! `timeout_ms`, `correlation_id`, `backoff_initial_ms`, ...); the reader takes either form.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use spool_domain::backoff::{Backoff, Jitter};
use spool_domain::task::TaskSpec;
use spool_domain::time::duration_millis;
use spool_ports::PortError;

use crate::error::corrupt;

/// The `spec` field.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct PackedSpec<'a> {
    #[serde(borrow)]
    pub(crate) kind: Cow<'a, str>,
    pub(crate) priority: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout_ms: Option<u64>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub(crate) correlation_id: Option<Cow<'a, str>>,
}

impl<'a> PackedSpec<'a> {
    /// The `spec` field of a new task.
    pub(crate) fn encode(spec: &TaskSpec) -> String {
        let packed = PackedSpec {
            kind: Cow::Borrowed(spec.kind.as_str()),
            priority: i64::from(spec.priority.get()),
            timeout_ms: spec.timeout.map(duration_millis),
            correlation_id: spec
                .correlation_id
                .as_ref()
                .map(|c| Cow::Borrowed(c.as_str())),
        };
        serde_json::to_string(&packed).expect("a struct of strings and integers serialises")
    }

    /// Reads a stored `spec` field.
    ///
    /// # Errors
    /// `Internal` (corrupt data) when it is not one.
    pub(crate) fn decode(text: &'a str) -> Result<Self, PortError> {
        serde_json::from_str(text).map_err(|e| corrupt(format!("task field spec: {e}")))
    }
}

/// The `backoff` field.
pub(crate) fn encode_backoff(b: &Backoff) -> String {
    let jitter = match b.jitter {
        Jitter::None => "none",
        Jitter::Full => "full",
    };
    format!("{} {} {} {jitter}", b.initial_ms, b.max_ms, b.factor)
}

/// Reads a stored `backoff` field.
///
/// # Errors
/// `Internal` (corrupt data) when it is not one.
pub(crate) fn decode_backoff(text: &str) -> Result<Backoff, PortError> {
    let bad = || corrupt(format!("task field backoff: {text:?}"));
    let mut parts = text.split(' ');
    let mut num = || {
        parts
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .ok_or_else(bad)
    };
    let (initial_ms, max_ms, factor) = (num()?, num()?, num()?);
    let jitter = match parts.next() {
        Some("full") => Jitter::Full,
        Some("none") => Jitter::None,
        _ => return Err(bad()),
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Backoff {
        initial_ms,
        max_ms,
        factor: u32::try_from(factor).map_err(|_| bad())?,
        jitter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use spool_domain::names::{CorrelationId, TaskKind};
    use spool_domain::task::Priority;
    use std::time::Duration;

    #[test]
    fn spec_round_trips_with_and_without_the_optional_parts() {
        let mut spec = TaskSpec::new(TaskKind::parse("mail.send").unwrap(), json!({"to": 1}));
        let plain = PackedSpec::encode(&spec);
        assert_eq!(plain, r#"{"kind":"mail.send","priority":0}"#);
        let back = PackedSpec::decode(&plain).unwrap();
        assert_eq!((back.kind.as_ref(), back.priority), ("mail.send", 0));
        assert_eq!((back.timeout_ms, back.correlation_id), (None, None));

        spec.priority = Priority::new(-7).unwrap();
        spec.timeout = Some(Duration::from_millis(1500));
        spec.correlation_id = Some(CorrelationId::parse("req-42").unwrap());
        let full = PackedSpec::encode(&spec);
        let back = PackedSpec::decode(&full).unwrap();
        assert_eq!(back.priority, -7);
        assert_eq!(back.timeout_ms, Some(1500));
        assert_eq!(back.correlation_id.as_deref(), Some("req-42"));
        assert!(
            PackedSpec::decode("{\"priority\":1}").is_err(),
            "kind is required"
        );
    }

    #[test]
    fn backoff_round_trips_and_refuses_garbage() {
        let b = Backoff {
            initial_ms: 250,
            max_ms: 60_000,
            factor: 3,
            jitter: Jitter::Full,
        };
        assert_eq!(encode_backoff(&b), "250 60000 3 full");
        assert_eq!(decode_backoff("250 60000 3 full").unwrap(), b);
        for bad in [
            "",
            "1 2 3",
            "1 2 3 some",
            "1 2 x none",
            "1 2 3 none 4",
            "-1 2 3 none",
        ] {
            assert!(decode_backoff(bad).is_err(), "{bad:?}");
        }
    }
}
