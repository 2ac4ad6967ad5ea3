//! Report rows, the JSON report and the markdown table.

use serde::Serialize;

#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// No goal: reported for context.
    None,
    /// baton >= k * etcd
    AtLeastTimesEtcd(f64),
    /// baton <= k * etcd
    AtMostTimesEtcd(f64),
    /// baton <= x
    AtMost(f64),
    /// baton < x
    Below(f64),
}

impl Goal {
    pub fn text(&self) -> String {
        match *self {
            Goal::None => "-".into(),
            Goal::AtLeastTimesEtcd(k) => format!(">= {k}x etcd"),
            Goal::AtMostTimesEtcd(1.0) => "<= etcd".into(),
            Goal::AtMostTimesEtcd(k) => format!("<= {k}x etcd"),
            Goal::AtMost(x) => format!("<= {x}"),
            Goal::Below(x) => format!("< {x}"),
        }
    }

    pub fn met(&self, baton: Option<f64>, etcd: Option<f64>) -> bool {
        let Some(b) = baton else { return false };
        match *self {
            Goal::None => true,
            Goal::AtLeastTimesEtcd(k) => etcd.is_some_and(|e| b >= k * e),
            Goal::AtMostTimesEtcd(k) => etcd.is_some_and(|e| b <= k * e),
            Goal::AtMost(x) => b <= x,
            Goal::Below(x) => b < x,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub metric: String,
    pub unit: String,
    pub baton: Option<f64>,
    pub etcd: Option<f64>,
    pub ratio: Option<f64>,
    pub goal: String,
    pub met: bool,
}

impl Row {
    pub fn new(metric: &str, unit: &str, baton: Option<f64>, etcd: Option<f64>, goal: Goal) -> Row {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        let ratio = match (baton, etcd) {
            (Some(b), Some(e)) if e != 0.0 => Some(r(b / e)),
            _ => None,
        };
        Row {
            metric: metric.into(),
            unit: unit.into(),
            baton: baton.map(r),
            etcd: etcd.map(r),
            ratio,
            goal: goal.text(),
            met: goal.met(baton, etcd),
        }
    }
}

fn cell(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| metric | unit | baton | etcd 3.4 | baton/etcd | goal | met |\n| --- | --- | ---: | ---: | ---: | --- | --- |\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.metric,
            r.unit,
            cell(r.baton),
            cell(r.etcd),
            cell(r.ratio),
            r.goal,
            if r.met { "yes" } else { "**no**" }
        ));
    }
    s
}

/// A `tls_cost` row: one metric of Baton in plain text and with mutual TLS.
#[derive(Clone, Debug, Serialize)]
pub struct TlsRow {
    pub metric: String,
    pub unit: String,
    pub plain: Option<f64>,
    pub tls: Option<f64>,
    /// tls / plain
    pub ratio: Option<f64>,
}

impl TlsRow {
    pub fn new(metric: &str, unit: &str, plain: Option<f64>, tls: Option<f64>) -> TlsRow {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        let ratio = match (plain, tls) {
            (Some(p), Some(t)) if p != 0.0 => Some(r(t / p)),
            _ => None,
        };
        TlsRow {
            metric: metric.into(),
            unit: unit.into(),
            plain: plain.map(r),
            tls: tls.map(r),
            ratio,
        }
    }
}

pub fn tls_markdown(rows: &[TlsRow]) -> String {
    let mut s = String::from(
        "| metric | unit | plain | TLS | TLS/plain |\n| --- | --- | ---: | ---: | ---: |\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.metric,
            r.unit,
            cell(r.plain),
            cell(r.tls),
            cell(r.ratio)
        ));
    }
    s
}
