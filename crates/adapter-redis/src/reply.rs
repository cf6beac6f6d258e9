//! Small readers for script replies.

use std::borrow::Cow;
use std::collections::HashMap;

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

/// A flat `HGETALL`-style array as a map, borrowing the names and values from `items` (a task
/// is parsed on every queue transition: no string is copied).
pub(crate) fn fields(items: &[Value]) -> Result<HashMap<Cow<'_, str>, Cow<'_, str>>, PortError> {
    if items.len() % 2 != 0 {
        return Err(corrupt("odd field list"));
    }
    let mut map = HashMap::with_capacity(items.len() / 2);
    for pair in items.chunks_exact(2) {
        let k = pair[0]
            .as_str()
            .ok_or_else(|| corrupt("field name is not text"))?;
        let v = pair[1]
            .as_str()
            .ok_or_else(|| corrupt(format!("field {k} is not text")))?;
        map.insert(k, v);
    }
    Ok(map)
}
