//! Small readers for script replies.

use std::borrow::Cow;

use fred::types::Value;
use spool_ports::PortError;

use crate::error::corrupt;

/// The text of a bulk/simple string or integer reply.
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string()),
        Value::Bytes(b) => String::from_utf8(b.to_vec()).ok(),
        Value::Integer(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

/// An integer reply (or its text).
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// The elements of an array reply.
pub(crate) fn array(v: Value) -> Result<Vec<Value>, PortError> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(Vec::new()),
        other => Err(corrupt(format!(
            "expected an array, got {:?}",
            other.kind()
        ))),
    }
}

/// A tagged script reply `{ tag, rest... }`.
pub(crate) fn tagged(v: Value) -> Result<(String, Vec<Value>), PortError> {
    let mut items = array(v)?.into_iter();
    let tag = items
        .next()
        .as_ref()
        .and_then(text)
        .ok_or_else(|| corrupt("script reply without a tag"))?;
    Ok((tag, items.collect()))
}

/// The fields of a hash (a task's ~20) by name: a short list searched in order. A task is
/// parsed on every queue transition, and for a list this short comparing names costs less
/// than hashing each one (SipHash) into a map: decoding a reserved task (`leases_from`, 16 tasks
/// a reply, release build) went from ~3.0 to ~1.3 µs.
#[derive(Debug, Default)]
pub(crate) struct Fields<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Fields<'a> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// The value of `name`, if present.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v.as_ref())
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub(crate) fn insert(&mut self, name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) {
        let (name, value) = (name.into(), value.into());
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Drops `name`, if present.
    pub(crate) fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| k.as_ref() != name);
    }
}

/// A flat `HGETALL`-style array as [`Fields`], borrowing the names and values from `items`
/// (no string is copied).
pub(crate) fn fields(items: &[Value]) -> Result<Fields<'_>, PortError> {
    if items.len() % 2 != 0 {
        return Err(corrupt("odd field list"));
    }
    let mut map = Fields::with_capacity(items.len() / 2 + 7);
    for pair in items.chunks_exact(2) {
        let k = pair[0]
            .as_str()
            .ok_or_else(|| corrupt("field name is not text"))?;
        let v = pair[1]
            .as_str()
            .ok_or_else(|| corrupt(format!("field {k} is not text")))?;
        // A hash's field names are unique: no search.
        map.0.push((k, v));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use fred::types::Value;

    use super::fields;

    #[test]
    fn fields_read_by_name_and_a_later_value_replaces_an_earlier_one() {
        let items = [
            Value::from("status"),
            Value::from("queued"),
            Value::from("worker"),
            Value::from("w1"),
        ];
        let mut f = fields(&items).unwrap();
        assert_eq!(f.get("status"), Some("queued"));
        assert_eq!(f.get("attempts"), None);
        f.insert("status", "running");
        f.insert("attempts", String::from("1"));
        assert_eq!(f.get("status"), Some("running"));
        assert_eq!(f.get("attempts"), Some("1"));
        f.remove("worker");
        assert_eq!(f.get("worker"), None);
        assert!(fields(&items[..3]).is_err(), "an odd list is refused");
    }
}
