//! The regression check behind `benches/run --check`: every Baton/etcd ratio of a report
//! against the bounds in `benches/thresholds.toml`.
//!
//! Ratios rather than absolute numbers: both systems run on the same machine in the same
//! run, so a loaded machine moves both, and the ratio moves far less than either.
//!
//! ```toml
//! [rows.write_throughput_c64]
//! min_ratio = 1.2     # Baton/etcd must be at least this
//! [rows.commit_latency_p50_c1]
//! max_ratio = 1.3     # Baton/etcd must be at most this
//! ```
//!
//! A row named in the thresholds but absent from the report (its workload was not run,
//! `--only`) is skipped and listed; a row present without a ratio (one half failed) fails.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `benches/thresholds.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Bounds by row (metric) name.
    pub rows: BTreeMap<String, Bound>,
}

/// The bounds of one row's Baton/etcd ratio; at least one is set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bound {
    /// The ratio must be at least this (rows where more is better).
    pub min_ratio: Option<f64>,
    /// The ratio must be at most this (rows where less is better).
    pub max_ratio: Option<f64>,
}

/// What a report row contributes: its name and ratio (the JSON report's `rows`).
#[derive(Debug, Deserialize)]
pub struct ReportRow {
    pub metric: String,
    pub ratio: Option<f64>,
}

/// The outcome of a check.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// One line per row that fell outside its bounds (or had no ratio).
    pub failed: Vec<String>,
    /// One line per row that held.
    pub passed: Vec<String>,
    /// Rows with thresholds that the report does not hold.
    pub skipped: Vec<String>,
}

/// Parse the thresholds file; every row needs a bound, and bounds are positive numbers.
pub fn parse_thresholds(text: &str) -> Result<Thresholds, String> {
    let t: Thresholds = toml::from_str(text).map_err(|e| e.to_string())?;
    for (name, b) in &t.rows {
        if b.min_ratio.is_none() && b.max_ratio.is_none() {
            return Err(format!("row {name} has neither min_ratio nor max_ratio"));
        }
        for v in [b.min_ratio, b.max_ratio].into_iter().flatten() {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("row {name}: bound {v} is not a positive number"));
            }
        }
    }
    Ok(t)
}

/// Compare `rows` (a report's) with `t`.
pub fn check(t: &Thresholds, rows: &[ReportRow]) -> Outcome {
    let mut out = Outcome::default();
    for (name, bound) in &t.rows {
        let Some(row) = rows.iter().find(|r| &r.metric == name) else {
            out.skipped.push(format!("{name}: not in the report"));
            continue;
        };
        let Some(ratio) = row.ratio else {
            out.failed
                .push(format!("{name}: no Baton/etcd ratio (a half of it failed)"));
            continue;
        };
        let mut bad = Vec::new();
        if let Some(min) = bound.min_ratio
            && ratio < min
        {
            bad.push(format!("below the minimum {min}"));
        }
        if let Some(max) = bound.max_ratio
            && ratio > max
        {
            bad.push(format!("above the maximum {max}"));
        }
        if bad.is_empty() {
            out.passed.push(format!("{name}: ratio {ratio} ok"));
        } else {
            out.failed
                .push(format!("{name}: ratio {ratio} {}", bad.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(metric: &str, ratio: Option<f64>) -> ReportRow {
        ReportRow {
            metric: metric.into(),
            ratio,
        }
    }

    const T: &str = "
        [rows.write_throughput_c64]
        min_ratio = 1.2
        [rows.commit_latency_p50_c1]
        max_ratio = 1.3
        [rows.fanout_p99_1000]
        max_ratio = 2.0
    ";

    #[test]
    fn every_row_out_of_bounds_is_named() {
        let t = parse_thresholds(T).unwrap();
        let o = check(
            &t,
            &[
                row("write_throughput_c64", Some(1.1)),
                row("commit_latency_p50_c1", Some(1.4)),
                row("fanout_p99_1000", Some(0.5)),
            ],
        );
        assert_eq!(o.failed.len(), 2, "{o:?}");
        assert!(o.failed[0].starts_with("commit_latency_p50_c1: ratio 1.4 above the maximum 1.3"));
        assert!(o.failed[1].starts_with("write_throughput_c64: ratio 1.1 below the minimum 1.2"));
        assert_eq!(o.passed, vec!["fanout_p99_1000: ratio 0.5 ok".to_string()]);
        assert!(o.skipped.is_empty());
    }

    #[test]
    fn bounds_are_inclusive_and_rows_not_run_are_skipped() {
        let t = parse_thresholds(T).unwrap();
        let o = check(
            &t,
            &[
                row("write_throughput_c64", Some(1.2)),
                row("commit_latency_p50_c1", Some(1.3)),
            ],
        );
        assert!(o.failed.is_empty(), "{o:?}");
        assert_eq!(o.passed.len(), 2);
        assert_eq!(
            o.skipped,
            vec!["fanout_p99_1000: not in the report".to_string()]
        );
    }

    #[test]
    fn a_row_without_a_ratio_fails() {
        let t = parse_thresholds(T).unwrap();
        let o = check(&t, &[row("write_throughput_c64", None)]);
        assert_eq!(o.failed.len(), 1);
        assert!(o.failed[0].contains("no Baton/etcd ratio"), "{o:?}");
    }

    #[test]
    fn bad_thresholds_are_refused() {
        assert!(
            parse_thresholds("[rows.x]\n")
                .unwrap_err()
                .contains("neither")
        );
        assert!(parse_thresholds("[rows.x]\nmin_ratio = -1.0\n").is_err());
        assert!(parse_thresholds("[rows.x]\nmin = 1.0\n").is_err());
        assert!(parse_thresholds("[other]\n").is_err());
    }

    #[test]
    fn the_repository_thresholds_parse() {
        let text = include_str!("../thresholds.toml");
        let t = parse_thresholds(text).unwrap();
        assert!(t.rows.contains_key("write_throughput_c64"));
    }
}
