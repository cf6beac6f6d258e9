//! A strict parser of the Prometheus text exposition format (version 0.0.4), and
//! `promtool check metrics` when the binary is installed.
//!
//! Checked: `# HELP` / `# TYPE` syntax and placement (one `TYPE` per family, before its
//! samples, families contiguous); metric and label name syntax; quoted, escaped label values
//! without duplicates; numeric values; no duplicate series; non-negative counters; and for
//! histograms, `le` on every bucket, non-decreasing cumulative counts, and a `+Inf` bucket
//! equal to `_count`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name as written (`x_bucket`, `x_total`, ...).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// Declared type per family.
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of the sample `name` whose labels include every pair of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `{a="b",c="d"}` starting at `s[0] == '{'`; returns the labels and the rest after `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = &s[1..];
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = rest[..eq].trim();
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..].trim_start();
        rest = rest.strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next().ok_or("unterminated label value")?;
            match c {
                '\\' => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    other => return Err(format!("bad escape \\{other}")),
                },
                '"' => break i,
                '\n' => return Err("newline in label value".into()),
                c => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("duplicate label {name:?}"));
        }
        rest = rest[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base;
            }
        }
    }
    name
}

/// Parses and checks `text`.
///
/// # Errors
/// The first problem, with its line number.
pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut out = Exposition::default();
    let mut helps = BTreeSet::new();
    let mut seen_series = BTreeSet::new();
    let mut finished_families = BTreeSet::new();
    let mut current_family: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let parts: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match parts.first().copied() {
                Some("HELP") => {
                    let name = parts
                        .get(1)
                        .ok_or_else(|| at("HELP without a name".into()))?;
                    if !valid_metric_name(name) || !helps.insert((*name).to_owned()) {
                        return Err(at("bad or repeated HELP".into()));
                    }
                }
                Some("TYPE") => {
                    let name = parts
                        .get(1)
                        .ok_or_else(|| at("TYPE without a name".into()))?;
                    let ty = parts
                        .get(2)
                        .ok_or_else(|| at("TYPE without a type".into()))?;
                    if !valid_metric_name(name) {
                        return Err(at("bad metric name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(ty) {
                        return Err(at(format!("unknown type {ty:?}")));
                    }
                    if out
                        .types
                        .insert((*name).to_owned(), (*ty).to_owned())
                        .is_some()
                    {
                        return Err(at("second TYPE for a family".into()));
                    }
                    if out
                        .samples
                        .iter()
                        .any(|s| family_of(&s.name, &out.types) == *name)
                    {
                        return Err(at("TYPE after the family's samples".into()));
                    }
                }
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("sample without a value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let rest = &line[name_end..];
        let (labels, rest) = if rest.starts_with('{') {
            parse_labels(rest).map_err(at)?
        } else {
            (BTreeMap::new(), rest)
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.is_empty() || fields.len() > 2 {
            return Err(at("expected a value and an optional timestamp".into()));
        }
        let value = parse_value(fields[0]).map_err(at)?;
        if let Some(ts) = fields.get(1) {
            ts.parse::<i64>()
                .map_err(|_| at(format!("bad timestamp {ts:?}")))?;
        }
        let family = family_of(name, &out.types).to_owned();
        let ty = out
            .types
            .get(&family)
            .ok_or_else(|| at(format!("no TYPE for family {family:?}")))?
            .clone();
        if current_family.as_deref() != Some(family.as_str()) {
            if finished_families.contains(&family) {
                return Err(at(format!("family {family:?} is not contiguous")));
            }
            if let Some(prev) = current_family.replace(family.clone()) {
                finished_families.insert(prev);
            }
        }
        if !seen_series.insert((name.to_owned(), labels.clone())) {
            return Err(at("duplicate series".into()));
        }
        if ty == "counter" && (value < 0.0 || value.is_nan()) {
            return Err(at("negative counter".into()));
        }
        if ty == "histogram" && name.ends_with("_bucket") && !labels.contains_key("le") {
            return Err(at("histogram bucket without le".into()));
        }
        out.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    check_histograms(&out)?;
    Ok(out)
}

fn check_histograms(e: &Exposition) -> Result<(), String> {
    for (family, ty) in &e.types {
        if ty != "histogram" {
            continue;
        }
        // Per series (labels without `le`): buckets in order, then the count.
        let mut buckets: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        let mut counts: BTreeMap<BTreeMap<String, String>, f64> = BTreeMap::new();
        for s in &e.samples {
            if s.name == format!("{family}_bucket") {
                let mut key = s.labels.clone();
                let le = key
                    .remove("le")
                    .ok_or_else(|| format!("{family}: bucket without le"))?;
                let le = parse_value(&le)?;
                buckets.entry(key).or_default().push((le, s.value));
            } else if s.name == format!("{family}_count") {
                counts.insert(s.labels.clone(), s.value);
            }
        }
        for (key, bs) in &buckets {
            for w in bs.windows(2) {
                if !(w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
                    return Err(format!("{family}{key:?}: buckets out of order"));
                }
            }
            let last = bs.last().ok_or_else(|| format!("{family}: no bucket"))?;
            if last.0 != f64::INFINITY {
                return Err(format!("{family}{key:?}: no +Inf bucket"));
            }
            if counts.get(key) != Some(&last.1) {
                return Err(format!("{family}{key:?}: +Inf bucket differs from _count"));
            }
        }
    }
    Ok(())
}

/// Runs `promtool check metrics` on `text` when `promtool` is on `PATH`: `None` when it is
/// not installed, else its verdict.
pub fn promtool_check(text: &str) -> Option<Result<(), String>> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(text.as_bytes()));
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => return Some(Err(format!("promtool did not run: {e}"))),
    };
    if let Some(Err(e)) = written {
        return Some(Err(format!("cannot write to promtool: {e}")));
    }
    if out.status.success() {
        Some(Ok(()))
    } else {
        Some(Err(format!(
            "promtool check metrics failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP a_total Things\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
        # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";

    #[test]
    fn accepts_a_valid_exposition() {
        let e = parse(GOOD).expect("valid");
        assert_eq!(e.value("a_total", &[("x", "1")]), Some(3.0));
        assert_eq!(e.value("h_count", &[]), Some(2.0));
    }

    #[test]
    fn rejects_what_promtool_rejects() {
        for bad in [
            "a 1",                                                      // no trailing newline
            "a 1\n",                                                    // no TYPE
            "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",                   // duplicate label
            "# TYPE a gauge\na{x=1} 1\n",                               // unquoted
            "# TYPE a gauge\na one\n",                                  // bad value
            "# TYPE a gauge\na 1\na 2\n",                               // duplicate series
            "# TYPE a counter\na -1\n",                                 // negative counter
            "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"y\"} 1\n", // not contiguous
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n", // no +Inf
            "# TYPE 1a gauge\n",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
