//! What a run found: the `--json` object, the human table, and the targets of issue 6
//! evaluated on the run's own numbers.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One operation at one concurrency level, spool and (on Redis) raw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    /// `cache.get`, ...
    pub op: String,
    /// Closed-loop clients (`queue.e2e`: worker concurrency).
    pub concurrency: usize,
    /// Calls per second through spool (`queue.e2e`: tasks completed per second).
    pub ops_per_sec: f64,
    /// Median latency through spool, µs.
    pub p50_us: f64,
    /// 99th percentile latency through spool, µs.
    pub p99_us: f64,
    /// The raw command compared with, on Redis.
    pub raw_op: Option<String>,
    /// Raw calls per second.
    pub raw_ops_per_sec: Option<f64>,
    /// Raw median latency, µs.
    pub raw_p50_us: Option<f64>,
    /// Raw 99th percentile latency, µs.
    pub raw_p99_us: Option<f64>,
}

/// The whole run; serialises to exactly the `--json` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `memory` or `redis`.
    pub backend: String,
    /// `redis <version>`; `null` on memory.
    pub server: Option<String>,
    /// One entry per operation and concurrency level.
    pub results: Vec<OpResult>,
    /// `--value-bytes` of the run (`None`: the default sizes). Not part of the `--json`
    /// object, whose fields issue 6 fixes; the table's first line names it.
    #[serde(skip)]
    pub value_bytes: Option<usize>,
}

/// One target of issue 6, checked against this run.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetCheck {
    /// What is compared, e.g. `cache.get @1 p50 <= 1.15 x raw GET p50`.
    pub target: String,
    /// The run's numbers.
    pub measured: String,
    /// Whether it holds; `None` when the run did not measure it.
    pub holds: Option<bool>,
}

impl Report {
    /// The result of `op` at concurrency `c`.
    pub fn find(&self, op: &str, c: usize) -> Option<&OpResult> {
        self.results
            .iter()
            .find(|r| r.op == op && r.concurrency == c)
    }

    /// The one-line JSON object of `--json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"error\": {}}}", serde_json::Value::from(e.to_string()))
        })
    }

    /// The targets of issue 6 that apply to this backend, checked on this run's numbers;
    /// none under `--value-bytes` (they are set for the default sizes).
    pub fn targets(&self) -> Vec<TargetCheck> {
        let mut out = Vec::new();
        if self.value_bytes.is_some() {
            return out;
        }
        if self.backend == "redis" {
            let get1 = self.find("cache.get", 1);
            let raw_get_p50 = get1.and_then(|r| r.raw_p50_us);
            let ratio_p50 = |op: &str, max: f64| {
                let spool = self.find(op, 1).map(|r| r.p50_us);
                let target = format!("{op} @1 p50 <= {max} x raw GET p50");
                match (spool, raw_get_p50) {
                    (Some(s), Some(raw)) if raw > 0.0 => TargetCheck {
                        measured: format!("{s:.1} us vs {raw:.1} us = {:.2} x", s / raw),
                        holds: Some(s <= max * raw),
                        target,
                    },
                    _ => TargetCheck {
                        target,
                        measured: "not measured".into(),
                        holds: None,
                    },
                }
            };
            out.push(ratio_p50("cache.get", 1.15));
            let target = "cache.get @64 ops/s >= 0.9 x raw GET ops/s".to_owned();
            out.push(
                match self
                    .find("cache.get", 64)
                    .and_then(|r| Some((r.ops_per_sec, r.raw_ops_per_sec?)))
                {
                    Some((s, raw)) if raw > 0.0 => TargetCheck {
                        measured: format!("{s:.0}/s vs {raw:.0}/s = {:.2} x", s / raw),
                        holds: Some(s >= 0.9 * raw),
                        target,
                    },
                    _ => TargetCheck {
                        target,
                        measured: "not measured".into(),
                        holds: None,
                    },
                },
            );
            out.push(ratio_p50("limiter.check", 1.5));
            out.push(ratio_p50("queue.enqueue", 1.5));
            out.push(ratio_p50("progress.update", 1.5));
            out.push(TargetCheck {
                target: "queue.reserve_complete: two round trips in total".into(),
                measured: "by construction: one reserve script + one complete script".into(),
                holds: self.find("queue.reserve_complete", 1).map(|_| true),
            });
            let target = "queue.e2e @16 >= 30000 tasks/s".to_owned();
            out.push(match self.find("queue.e2e", 16) {
                Some(r) => TargetCheck {
                    measured: format!("{:.0} tasks/s", r.ops_per_sec),
                    holds: Some(r.ops_per_sec >= 30_000.0),
                    target,
                },
                None => TargetCheck {
                    target,
                    measured: "not measured".into(),
                    holds: None,
                },
            });
        } else {
            let under = |op: &str, max_us: f64| {
                let target = format!("{op} @1 p50 < {max_us} us");
                match self.find(op, 1) {
                    Some(r) => TargetCheck {
                        measured: format!("{:.3} us", r.p50_us),
                        holds: Some(r.p50_us < max_us),
                        target,
                    },
                    None => TargetCheck {
                        target,
                        measured: "not measured".into(),
                        holds: None,
                    },
                }
            };
            out.push(under("cache.get", 1.0));
            out.push(under("limiter.check", 2.0));
        }
        out
    }

    /// The human table, then the targets.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let server = self.server.as_deref().unwrap_or("in process");
        let sizes = match self.value_bytes {
            Some(n) => format!("values and payloads of {n} bytes"),
            None => "default sizes".to_owned(),
        };
        let _ = writeln!(
            s,
            "spool bench: backend {} ({server}), {sizes}",
            self.backend
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<24} {:>5} {:>12} {:>10} {:>10}   {:<20} {:>12} {:>10} {:>10} {:>8}",
            "op",
            "conc",
            "ops/s",
            "p50 us",
            "p99 us",
            "raw op",
            "raw ops/s",
            "raw p50",
            "raw p99",
            "p50 x"
        );
        for r in &self.results {
            let opt = |v: Option<f64>, prec: usize| {
                v.map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"))
            };
            let ratio = match r.raw_p50_us {
                Some(raw) if raw > 0.0 => format!("{:.2}", r.p50_us / raw),
                _ => "-".to_owned(),
            };
            let p = if r.p50_us < 10.0 { 3 } else { 1 };
            let _ = writeln!(
                s,
                "{:<24} {:>5} {:>12.0} {:>10.p$} {:>10.p$}   {:<20} {:>12} {:>10} {:>10} {:>8}",
                r.op,
                r.concurrency,
                r.ops_per_sec,
                r.p50_us,
                r.p99_us,
                r.raw_op.as_deref().unwrap_or("-"),
                opt(r.raw_ops_per_sec, 0),
                opt(r.raw_p50_us, 1),
                opt(r.raw_p99_us, 1),
                ratio,
            );
        }
        let targets = self.targets();
        if self.value_bytes.is_some() {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "targets (issue 6): set for the default sizes, not checked with --value-bytes"
            );
        }
        if !targets.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "targets (issue 6):");
            for t in targets {
                let verdict = match t.holds {
                    Some(true) => "holds ",
                    Some(false) => "MISSES",
                    None => "  -   ",
                };
                let _ = writeln!(s, "  {verdict}  {:<52} {}", t.target, t.measured);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn row(op: &str, c: usize, ops: f64, p50: f64, raw: Option<(f64, f64)>) -> OpResult {
        OpResult {
            op: op.into(),
            concurrency: c,
            ops_per_sec: ops,
            p50_us: p50,
            p99_us: p50 * 2.0,
            raw_op: raw.map(|_| "GET".into()),
            raw_ops_per_sec: raw.map(|r| r.0),
            raw_p50_us: raw.map(|r| r.1),
            raw_p99_us: raw.map(|r| r.1 * 2.0),
        }
    }

    fn redis_report() -> Report {
        Report {
            backend: "redis".into(),
            server: Some("redis 7.0.15".into()),
            results: vec![
                row("cache.get", 1, 20_000.0, 55.0, Some((21_000.0, 50.0))),
                row("cache.get", 64, 80_000.0, 700.0, Some((100_000.0, 600.0))),
                row("limiter.check", 1, 15_000.0, 70.0, Some((20_000.0, 48.0))),
                row("queue.enqueue", 1, 10_000.0, 80.0, Some((20_000.0, 48.0))),
                row("queue.e2e", 16, 31_000.0, 9.0, None),
            ],
            value_bytes: None,
        }
    }

    #[test]
    fn the_json_object_has_exactly_the_issue_fields() {
        let json: serde_json::Value = serde_json::from_str(&redis_report().to_json()).unwrap();
        let obj = json.as_object().unwrap();
        let mut top: Vec<&str> = obj.keys().map(String::as_str).collect();
        top.sort_unstable();
        assert_eq!(top, ["backend", "results", "server"]);
        assert_eq!(json["server"], "redis 7.0.15");
        let first = json["results"][0].as_object().unwrap();
        let mut fields: Vec<&str> = first.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "concurrency",
                "op",
                "ops_per_sec",
                "p50_us",
                "p99_us",
                "raw_op",
                "raw_ops_per_sec",
                "raw_p50_us",
                "raw_p99_us"
            ]
        );
        assert!(json["results"][4]["raw_op"].is_null());
        assert!(json["results"][4]["raw_p50_us"].is_null());
        let memory = Report {
            backend: "memory".into(),
            server: None,
            results: vec![],
            value_bytes: None,
        };
        let sized = Report {
            value_bytes: Some(16384),
            ..redis_report()
        };
        assert_eq!(
            sized.to_json(),
            redis_report().to_json(),
            "no field of its own"
        );
        let json: serde_json::Value = serde_json::from_str(&memory.to_json()).unwrap();
        assert!(json["server"].is_null());
        assert!(!memory.to_json().contains('\n'), "one line");
    }

    #[test]
    fn targets_are_checked_on_the_runs_own_numbers() {
        let t = redis_report().targets();
        let by = |prefix: &str| t.iter().find(|c| c.target.starts_with(prefix)).unwrap();
        // 55 / 50 = 1.10 <= 1.15
        assert_eq!(by("cache.get @1").holds, Some(true));
        // 80k / 100k = 0.8 < 0.9
        assert_eq!(by("cache.get @64").holds, Some(false));
        // 70 / 50 = 1.4 <= 1.5 (compared with raw GET, not with INCR)
        assert_eq!(by("limiter.check").holds, Some(true));
        // 80 / 50 = 1.6 > 1.5
        assert_eq!(by("queue.enqueue").holds, Some(false));
        assert_eq!(by("progress.update").holds, None, "not measured");
        assert_eq!(by("queue.e2e").holds, Some(true));
        let table = redis_report().to_table();
        assert!(table.contains("MISSES"), "{table}");
        assert!(table.contains("cache.get"), "{table}");
    }

    #[test]
    fn memory_targets_are_absolute() {
        let r = Report {
            backend: "memory".into(),
            server: None,
            results: vec![
                row("cache.get", 1, 1e6, 0.8, None),
                row("limiter.check", 1, 1e6, 2.5, None),
            ],
            value_bytes: None,
        };
        let t = r.targets();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].holds, Some(true));
        assert_eq!(t[1].holds, Some(false));
        assert!(r.to_table().contains("in process"));
    }

    #[test]
    fn targets_are_not_checked_on_other_sizes() {
        let r = Report {
            value_bytes: Some(16384),
            ..redis_report()
        };
        assert!(r.targets().is_empty());
        let table = r.to_table();
        assert!(table.contains("of 16384 bytes"), "{table}");
        assert!(table.contains("not checked with --value-bytes"), "{table}");
        assert!(!table.contains("MISSES"), "{table}");
        assert!(redis_report().to_table().contains("default sizes"));
    }
}
