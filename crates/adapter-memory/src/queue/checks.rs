//! Input bounds checked before the store is touched: bad input is `Invalid`, never truncated.

use std::time::Duration;

use spool_domain::backoff::Backoff;
use spool_domain::names::QueueName;
use spool_domain::task::{Failure, Retry};
use spool_ports::{PortError, ReserveOptions};

/// A task result must serialise to at most `max_bytes` of JSON.
pub(super) fn result(
    result: Option<&serde_json::Value>,
    max_bytes: usize,
) -> Result<(), PortError> {
    let Some(value) = result else {
        return Ok(());
    };
    let size = serde_json::to_vec(value)
        .map_err(|e| PortError::invalid("result", e.to_string()))?
        .len();
    if size > max_bytes {
        return Err(PortError::invalid(
            "result",
            format!("{size} bytes exceeds the maximum of {max_bytes}"),
        ));
    }
    Ok(())
}

/// An error message must fit `max_bytes`; an explicit retry delay must not exceed the
/// longest backoff.
pub(super) fn failure(failure: &Failure, max_bytes: usize) -> Result<(), PortError> {
    let size = failure.error.len();
    if size > max_bytes {
        return Err(PortError::invalid(
            "error",
            format!("{size} bytes exceeds the maximum of {max_bytes}"),
        ));
    }
    if let Retry::After(d) = failure.retry {
        if d > Backoff::MAX {
            return Err(PortError::invalid("retry delay", "must be at most 7 days"));
        }
    }
    Ok(())
}

/// A release reason must fit `max_bytes` (it is stored as `"released: <reason>"`).
pub(super) fn reason(reason: &str, max_bytes: usize) -> Result<(), PortError> {
    let size = reason.len();
    if size > max_bytes {
        return Err(PortError::invalid(
            "reason",
            format!("{size} bytes exceeds the maximum of {max_bytes}"),
        ));
    }
    Ok(())
}

/// A lease length has the bounds of [`ReserveOptions::lease`].
pub(super) fn lease(lease: Duration) -> Result<(), PortError> {
    ReserveOptions::new(lease).validate()
}

/// A list of queues for `reserve` (`allow_empty = false`) or `stats` has at most
/// `max_batch` names.
pub(super) fn queues(
    queues: &[QueueName],
    allow_empty: AllowEmpty,
    max_batch: usize,
) -> Result<(), PortError> {
    if queues.is_empty() && allow_empty == AllowEmpty::No {
        return Err(PortError::invalid("queues", "name at least one queue"));
    }
    if queues.len() > max_batch {
        return Err(PortError::invalid(
            "queues",
            format!("{} queues exceed the maximum of {max_batch}", queues.len()),
        ));
    }
    Ok(())
}

/// Whether an empty list of queues is meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AllowEmpty {
    /// Empty means "every queue" (stats).
    Yes,
    /// A list is required (reserve).
    No,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounds_are_inclusive_and_name_the_component() {
        let v = json!("abcd"); // 6 bytes of JSON
        assert!(result(Some(&v), 6).is_ok());
        let err = result(Some(&v), 5).unwrap_err();
        assert!(err.to_string().contains("result"), "{err}");
        assert!(result(None, 0).is_ok());

        let f = |error: &str, retry| Failure {
            error: error.to_owned(),
            retry,
        };
        assert!(failure(&f("abcd", Retry::Never), 4).is_ok());
        assert!(failure(&f("abcde", Retry::Never), 4)
            .unwrap_err()
            .to_string()
            .contains("error"));
        assert!(failure(&f("", Retry::After(Backoff::MAX)), 4).is_ok());
        assert!(failure(
            &f("", Retry::After(Backoff::MAX + Duration::from_millis(1))),
            4
        )
        .is_err());

        assert!(reason("abcd", 4).is_ok());
        assert!(reason("abcde", 4)
            .unwrap_err()
            .to_string()
            .contains("reason"));

        assert!(lease(Duration::from_millis(1)).is_ok());
        assert!(lease(Duration::ZERO).is_err());

        let q = QueueName::parse("q").ok();
        let two: Vec<QueueName> = q.into_iter().cycle().take(2).collect();
        assert!(queues(&[], AllowEmpty::No, 10).is_err());
        assert!(queues(&[], AllowEmpty::Yes, 10).is_ok());
        assert!(queues(&two, AllowEmpty::No, 2).is_ok());
        assert!(queues(&two, AllowEmpty::No, 1).is_err());
    }
}
