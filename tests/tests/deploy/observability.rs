//! The alert rules, the Grafana dashboard and the metrics list of `docs/OPERATIONS.md`
//! against what spool really exports: a `/metrics` scrape of spool on the kit's Redis after
//! one operation of every service.

use std::collections::{BTreeMap, BTreeSet};

use spool_tests::prometheus;

use crate::read;
use crate::redis_kit::Kit;

/// Metric families (name → type) of a real scrape.
async fn exported() -> BTreeMap<String, String> {
    let mut kit = Kit::start().await;
    kit.exercise().await;
    let text = kit.scrape().await;
    kit.stop_spool().await;
    let exposition = prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    if let Some(verdict) = prometheus::promtool_check(&text) {
        verdict.unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    exposition.types
}

/// Every `spool_*` metric name in a PromQL expression (quoted strings skipped).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut unquoted = String::new();
    let mut quote = None;
    for c in expr.chars() {
        match (quote, c) {
            (None, '"' | '\'' | '`') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) => unquoted.push(c),
            _ => {}
        }
    }
    for token in unquoted.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if token.starts_with("spool_") {
            names.insert(token.to_owned());
        }
    }
    names
}

/// The names in `exprs` that spool does not export (a histogram's `_bucket`, `_count` and
/// `_sum` series count as its family).
fn unknown(exprs: &[String], families: &BTreeMap<String, String>) -> Vec<String> {
    let known = |name: &str| {
        families.contains_key(name)
            || ["_bucket", "_count", "_sum"].iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|base| families.get(base).map(String::as_str) == Some("histogram"))
            })
    };
    exprs
        .iter()
        .flat_map(|e| metric_names(e))
        .filter(|n| !known(n))
        .collect()
}

/// Every alert rule: (name, expr, runbook annotation).
fn alerts() -> Vec<(String, String, String)> {
    let rules: serde_norway::Value = serde_norway::from_str(&read("deploy/prometheus/alerts.yml"))
        .unwrap_or_else(|e| panic!("alerts.yml is not YAML: {e}"));
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .expect("alerting rules only")
                .to_owned();
            let expr = rule["expr"].as_str().expect("expr").to_owned();
            let runbook = rule["annotations"]["runbook"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no runbook annotation"))
                .to_owned();
            out.push((name, expr, runbook));
        }
    }
    out
}

/// Every PromQL string of the dashboard (panel targets and template variable queries).
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone());
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| dashboard_queries(i, out)),
        _ => {}
    }
}

#[test]
fn metric_names_are_found_outside_quotes_only() {
    let names =
        metric_names(r#"sum by (le) (rate(spool_a_bucket{x="spool_not_me"}[5m])) / spool_b"#);
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["spool_a_bucket".to_owned(), "spool_b".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_query_only_exported_metrics() {
    let families = exported().await;
    // The families the alerts and panels are about are really there.
    for family in [
        "spool_breaker_state",
        "spool_degraded",
        "spool_queue_depth",
        "spool_queue_oldest_waiting_seconds",
        "spool_limiter_decisions_total",
        "spool_backend_latency_seconds",
        "spool_operation_duration_seconds",
        "spool_http_request_duration_seconds",
        "spool_cache_hits_total",
    ] {
        assert!(
            families.contains_key(family),
            "{family} not exported: {families:?}"
        );
    }

    let alert_exprs: Vec<String> = alerts().into_iter().map(|(_, e, _)| e).collect();
    let bad = unknown(&alert_exprs, &families);
    assert!(
        bad.is_empty(),
        "alerts.yml queries metrics spool does not export: {bad:?}"
    );

    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/spool.json")).expect("spool.json is JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(
        queries.len() >= 15,
        "the dashboard has its panels: {queries:?}"
    );
    let bad = unknown(&queries, &families);
    assert!(
        bad.is_empty(),
        "spool.json queries metrics spool does not export: {bad:?}"
    );

    // The operations guide lists every exported family.
    let doc = read("docs/OPERATIONS.md");
    let unlisted: Vec<&String> = families
        .keys()
        .filter(|f| !doc.contains(&format!("`{f}`")))
        .collect();
    assert!(
        unlisted.is_empty(),
        "docs/OPERATIONS.md does not list {unlisted:?}"
    );
}

#[test]
fn every_alert_has_a_runbook_in_the_operations_guide() {
    let doc = read("docs/OPERATIONS.md");
    let alerts = alerts();
    assert!(alerts.len() >= 7, "{alerts:?}");
    for (name, _, runbook) in alerts {
        assert_eq!(
            runbook,
            format!("docs/OPERATIONS.md#{}", name.to_ascii_lowercase()),
            "{name}"
        );
        let heading = format!("\n### {name}\n");
        let start = doc
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/OPERATIONS.md has no `### {name}` runbook"));
        let body = &doc[start + heading.len()..];
        let end = ["\n## ", "\n### "]
            .iter()
            .filter_map(|h| body.find(h))
            .min()
            .unwrap_or(body.len());
        let body = &body[..end];
        for part in ["**Means**", "**Check**", "**Fix**"] {
            assert!(body.contains(part), "the {name} runbook has no {part}");
        }
    }
}
