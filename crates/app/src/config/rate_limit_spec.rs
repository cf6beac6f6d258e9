//! The compact rate-limit syntax of `SPOOL_RATE_LIMITS`:
//!
//! ```text
//! SPOOL_RATE_LIMITS="ip:100/60s,user:1000/1h"
//! SPOOL_RATE_LIMITS="burst=ip:10/1s+sliding_log+closed, user:5000/1day"
//! ```
//!
//! Each comma-separated entry is `[name=]scope:limit/window[+option]*` where `scope` is
//! `user`, `project` or `ip`, `limit` a whole number, `window` a duration with a unit
//! (`250ms`, `60s`, `1h`), and options pick the algorithm (`sliding_window`, `sliding_log`)
//! and the failure mode (`local`, `open`, `closed`). Without a name the policy is called
//! `<scope>_<window>` (`ip_60s`). An empty string means no policies. The parser never panics;
//! errors name the entry and what is wrong with it.

use std::fmt;

use spool_domain::limit::Algorithm;

use super::rate_limits::RateLimitConfig;
use super::serde_util::{format_duration, parse_duration};
use crate::services::{FailureMode, Scope};

/// What is wrong with a `SPOOL_RATE_LIMITS` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RateLimitSpecError {
    /// 1-based position of the bad entry.
    pub entry: usize,
    /// The entry's text.
    pub text: String,
    /// Why it is wrong.
    pub reason: String,
}

impl fmt::Display for RateLimitSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {} ({:?}): {}", self.entry, self.text, self.reason)
    }
}

/// Parses the compact syntax described in the module docs.
///
/// # Errors
/// The first bad entry, with the reason.
pub fn parse_rate_limits(spec: &str) -> Result<Vec<RateLimitConfig>, RateLimitSpecError> {
    if spec.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<RateLimitConfig> = Vec::new();
    for (i, raw) in spec.split(',').enumerate() {
        let text = raw.trim();
        let fail = |reason: String| RateLimitSpecError {
            entry: i + 1,
            text: text.to_owned(),
            reason,
        };
        let parsed = parse_entry(text).map_err(fail)?;
        if out.iter().any(|o| o.name == parsed.name) {
            return Err(fail(format!(
                "policy name {:?} is used twice; name one of them: name={text}",
                parsed.name
            )));
        }
        out.push(parsed);
    }
    Ok(out)
}

fn parse_entry(text: &str) -> Result<RateLimitConfig, String> {
    if text.is_empty() {
        return Err("is empty; write scope:limit/window, e.g. ip:100/60s".to_owned());
    }
    let (name, rest) = match text.split_once('=') {
        Some((n, r)) => {
            let n = n.trim();
            if n.is_empty() {
                return Err("the name before '=' is empty".to_owned());
            }
            (Some(n.to_owned()), r.trim())
        }
        None => (None, text),
    };
    let mut parts = rest.split('+');
    let main = parts.next().unwrap_or_default().trim();
    let (scope_text, amount) = main
        .split_once(':')
        .ok_or_else(|| format!("{main:?} has no ':'; write scope:limit/window, e.g. ip:100/60s"))?;
    let scope = match scope_text.trim() {
        "user" => Scope::User,
        "project" => Scope::Project,
        "ip" => Scope::Ip,
        other => return Err(format!("scope {other:?} is not one of user, project, ip")),
    };
    let (limit_text, window_text) = amount
        .split_once('/')
        .ok_or_else(|| format!("{amount:?} has no '/'; write limit/window, e.g. 100/60s"))?;
    let limit_text = limit_text.trim();
    if limit_text.is_empty() || !limit_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("limit {limit_text:?} is not a whole number"));
    }
    let limit: u64 = limit_text
        .parse()
        .map_err(|_| format!("limit {limit_text:?} is too large"))?;
    let window_text = window_text.trim();
    let window = parse_duration(window_text).map_err(|e| format!("window {e}"))?;
    let mut algorithm = None;
    let mut failure_mode = None;
    for opt in parts {
        let opt = opt.trim();
        let conflict =
            |what: &str| format!("option {opt:?} conflicts with an earlier {what} option");
        match opt {
            "sliding_window" | "sliding_log" => {
                if algorithm.is_some() {
                    return Err(conflict("algorithm"));
                }
                algorithm = Some(if opt == "sliding_log" {
                    Algorithm::SlidingLog
                } else {
                    Algorithm::SlidingWindow
                });
            }
            "local" | "open" | "closed" => {
                if failure_mode.is_some() {
                    return Err(conflict("failure mode"));
                }
                failure_mode = Some(match opt {
                    "open" => FailureMode::Open,
                    "closed" => FailureMode::Closed,
                    _ => FailureMode::Local,
                });
            }
            other => {
                return Err(format!(
                "option {other:?} is not one of sliding_window, sliding_log, local, open, closed"
            ))
            }
        }
    }
    let name = name.unwrap_or_else(|| {
        let compact: String = window_text
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        format!("{}_{compact}", scope.as_str())
    });
    Ok(RateLimitConfig {
        name,
        scope,
        limit,
        window,
        algorithm: algorithm.unwrap_or_default(),
        failure_mode: failure_mode.unwrap_or_default(),
    })
}

/// Writes policies in the compact syntax; [`parse_rate_limits`] reads it back to the same
/// values.
pub fn render_rate_limits(policies: &[RateLimitConfig]) -> String {
    policies
        .iter()
        .map(|p| {
            let algo = match p.algorithm {
                Algorithm::SlidingWindow => "sliding_window",
                Algorithm::SlidingLog => "sliding_log",
            };
            format!(
                "{}={}:{}/{}+{algo}+{}",
                p.name,
                p.scope.as_str(),
                p.limit,
                format_duration(p.window).replace(' ', ""),
                p.failure_mode.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let got = parse_rate_limits("ip:100/60s,user:1000/1h").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "ip_60s");
        assert_eq!(got[0].scope, Scope::Ip);
        assert_eq!(got[0].limit, 100);
        assert_eq!(got[0].window, Duration::from_secs(60));
        assert_eq!(got[0].algorithm, Algorithm::SlidingWindow);
        assert_eq!(got[0].failure_mode, FailureMode::Local);
        assert_eq!(got[1].name, "user_1h");
        assert_eq!(got[1].window, Duration::from_secs(3600));
    }

    #[test]
    fn options_and_names() {
        let got = parse_rate_limits(" burst = ip:10/1s+sliding_log+closed , project:5/250ms+open")
            .unwrap();
        assert_eq!(got[0].name, "burst");
        assert_eq!(got[0].algorithm, Algorithm::SlidingLog);
        assert_eq!(got[0].failure_mode, FailureMode::Closed);
        assert_eq!(got[1].name, "project_250ms");
        assert_eq!(got[1].failure_mode, FailureMode::Open);
        assert!(parse_rate_limits("").unwrap().is_empty());
        assert!(parse_rate_limits("   ").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_entry_and_the_problem() {
        let cases = [
            ("ip:100/60s,usr:1/1s", 2, "scope"),
            ("ip:ten/60s", 1, "limit"),
            ("ip:10/60", 1, "no unit"),
            ("ip:10", 1, "'/'"),
            ("ip100/60s", 1, "':'"),
            ("ip:1/1s,ip:2/1s", 2, "used twice"),
            ("ip:1/1s+fast", 1, "option"),
            ("ip:1/1s+open+closed", 1, "conflicts"),
            ("ip:1/1s,", 2, "empty"),
            ("=ip:1/1s", 1, "name"),
            ("ip:99999999999999999999999/1s", 1, "too large"),
        ];
        for (spec, entry, needle) in cases {
            let e = parse_rate_limits(spec).unwrap_err();
            assert_eq!(e.entry, entry, "{spec}: {e}");
            assert!(e.to_string().contains(needle), "{spec}: {e}");
        }
    }

    fn arb_policy() -> impl Strategy<Value = RateLimitConfig> {
        (
            "[a-z][a-z0-9_-]{0,20}",
            prop_oneof![Just(Scope::User), Just(Scope::Project), Just(Scope::Ip)],
            1u64..10_000_000,
            1u64..(7 * 24 * 3600 * 1000),
            prop_oneof![Just(Algorithm::SlidingWindow), Just(Algorithm::SlidingLog)],
            prop_oneof![
                Just(FailureMode::Local),
                Just(FailureMode::Open),
                Just(FailureMode::Closed)
            ],
        )
            .prop_map(|(name, scope, limit, ms, algorithm, failure_mode)| {
                RateLimitConfig {
                    name,
                    scope,
                    limit,
                    window: Duration::from_millis(ms),
                    algorithm,
                    failure_mode,
                }
            })
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,60}") {
            let _ = parse_rate_limits(&s);
        }

        #[test]
        fn never_panics_on_near_misses(s in "[a-z=:/+, 0-9]{0,40}") {
            if let Err(e) = parse_rate_limits(&s) {
                prop_assert!(e.entry >= 1);
                prop_assert!(!e.reason.is_empty());
            }
        }

        #[test]
        fn render_then_parse_round_trips(policies in proptest::collection::vec(arb_policy(), 1..5)) {
            let mut unique = policies.clone();
            unique.dedup_by(|a, b| a.name == b.name);
            let mut seen = std::collections::HashSet::new();
            unique.retain(|p| seen.insert(p.name.clone()));
            let text = render_rate_limits(&unique);
            prop_assert_eq!(parse_rate_limits(&text).unwrap(), unique);
        }
    }
}
