//! `docs/OPERATIONS.md`'s settings table against the configuration code: every setting is
//! listed once with its environment variable and its default, and nothing else is.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{read, settings};

const BEGIN: &str = "<!-- settings:begin -->";
const END: &str = "<!-- settings:end -->";

/// One row of the table: (env cell, default cell), by setting path.
fn table() -> BTreeMap<String, (String, String)> {
    let doc = read("docs/OPERATIONS.md");
    let start = doc
        .find(BEGIN)
        .expect("docs/OPERATIONS.md has the settings markers")
        + BEGIN.len();
    let end = doc[start..]
        .find(END)
        .expect("the settings table is closed")
        + start;
    let mut rows = BTreeMap::new();
    for line in doc[start..end].lines().map(str::trim) {
        let Some(line) = line.strip_prefix("| `") else {
            continue;
        };
        let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
        assert!(cells.len() >= 4, "a settings row needs 4 cells: {line}");
        let path = cells[0].trim_end_matches('`').to_owned();
        let previous = rows.insert(path.clone(), (cells[1].to_owned(), cells[2].to_owned()));
        assert!(previous.is_none(), "`{path}` is listed twice");
    }
    rows
}

/// How the table shows a default.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "—".to_owned(),
        Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

/// `SPOOL_REDIS__POOL_SIZE` for `redis.pool_size`.
fn env_var(path: &str) -> String {
    format!("SPOOL_{}", path.replace('.', "__").to_ascii_uppercase())
}

#[test]
fn the_settings_table_lists_every_setting_with_its_default_and_variable() {
    let code = settings();
    let doc = table();
    let missing: Vec<String> = code
        .iter()
        .filter(|(p, _)| !doc.contains_key(*p))
        .map(|(p, d)| {
            let env = if p.contains("[]") {
                "—".to_owned()
            } else {
                format!("`{}`", env_var(p))
            };
            let default = d.as_ref().map_or("—".to_owned(), shown);
            format!("| `{p}` | {env} | {default} | ... |")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "settings missing from docs/OPERATIONS.md (rows to add):\n{}",
        missing.join("\n")
    );
    let extra: Vec<&String> = doc.keys().filter(|p| !code.contains_key(*p)).collect();
    assert!(
        extra.is_empty(),
        "the table lists settings that do not exist: {extra:?}"
    );
    for (path, (env, default)) in &doc {
        if let Some(Some(expected)) = code.get(path) {
            assert_eq!(default, &shown(expected), "default of `{path}`");
        }
        if !path.contains("[]") {
            let var = env_var(path);
            assert!(
                env.contains(&format!("`{var}`")),
                "`{path}`: the variable cell must name {var}: {env}"
            );
        }
    }
}
