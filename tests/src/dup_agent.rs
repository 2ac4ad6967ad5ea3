//! The chaos runner's `dup-agent` fault: a second agent started under the name of a
//! server whose agent is alive, with the same role commands.
//!
//! The directory must refuse it: it runs no role, logs that the name "is held by another
//! live agent instance" naming the live agent's instance id, and exits non-zero, within
//! [`exit_bound`]. The duplicate carries [`DUP_ENV`] in its environment, which every
//! process it starts inherits: the chaos role writer then prefixes its journal lines
//! with [`DUP_LINE_PREFIX`], and the `/proc` sampler sees the variable, so the observer
//! tells the duplicate's role processes from the holder's by both journal and `/proc`.
//! This module holds what the runner checks and reports; starting the process is the
//! runner's.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::strip_ansi;

/// Set (to the fault number) in the duplicate agent's environment.
pub const DUP_ENV: &str = "CHAOS_DUP_AGENT";
/// A role writer with [`DUP_ENV`] set starts each journal line with this.
pub const DUP_LINE_PREFIX: &str = "dup ";

/// How long a duplicate may live: the directory waits for the holder to renew twice
/// (well under a lease), or for a pending claim to clear; three leases and ten seconds
/// are generous on a loaded two-core machine.
pub fn exit_bound(lease: Duration) -> Duration {
    lease * 3 + Duration::from_secs(10)
}

/// The instance id of the latest start in an agent's log (`agent starting ...
/// instance=ID`), and whether a session opened after that start.
pub fn latest_start(log: &str) -> Option<(String, bool)> {
    let text = strip_ansi(log);
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().rposition(|l| l.contains("agent starting"))?;
    let id = lines[at]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("instance="))?
        .trim_matches('"')
        .to_string();
    let open = lines[at + 1..].iter().any(|l| l.contains("session open"));
    (!id.is_empty()).then_some((id, open))
}

/// Whether a refused agent's log names `holder` as the live instance holding the name.
pub fn names_holder(log: &str, holder: &str) -> bool {
    strip_ansi(log).contains(&format!(
        "is held by another live agent instance \"{holder}\""
    ))
}

/// What became of one duplicate.
#[derive(Clone, Debug)]
pub struct DupOutcome {
    pub fault: usize,
    pub server: String,
    /// The live agent's instance id (from its log, confirmed by `server list`).
    pub holder: String,
    /// Why no duplicate was started (the holder was not settled), if so.
    pub skipped: Option<String>,
    /// Exit code (`None`: killed by a signal, or killed by the runner at the bound).
    pub code: Option<i32>,
    /// Time from start to exit, ms (`None`: still running at the bound).
    pub exited_after_ms: Option<f64>,
    pub names_holder: bool,
    /// The last lines of its log, for the report of a violation.
    pub log_tail: String,
}

impl DupOutcome {
    fn refused(&self) -> bool {
        self.exited_after_ms.is_some() && self.code.is_some_and(|c| c != 0) && self.names_holder
    }

    fn violations(&self, bound: Duration) -> Vec<String> {
        if self.skipped.is_some() {
            return Vec::new();
        }
        let who = format!(
            "dup-agent (fault {}, {} held by {})",
            self.fault, self.server, self.holder
        );
        let mut v = Vec::new();
        match (self.exited_after_ms, self.code) {
            (None, _) => v.push(format!(
                "{who}: still running {:.0} s after its start; killed",
                bound.as_secs_f64()
            )),
            (Some(t), None) => v.push(format!("{who}: killed by a signal after {t:.0} ms")),
            (Some(t), Some(0)) => v.push(format!("{who}: exited 0 after {t:.0} ms")),
            _ => {}
        }
        if !self.names_holder {
            v.push(format!(
                "{who}: its log does not say the name is held by instance {:?}; last lines:\n{}",
                self.holder, self.log_tail
            ));
        }
        v
    }
}

/// Every duplicate of a run, and what the observer saw of their role processes.
#[derive(Clone, Debug, Default)]
pub struct DupTally {
    pub outcomes: Vec<DupOutcome>,
    /// Journal lines written by a duplicate's role process (role, epoch, server, pid).
    pub journal_lines: Vec<(String, u64, String, u32)>,
    /// Role processes of a duplicate seen in `/proc`, described.
    pub processes: Vec<String>,
}

impl DupTally {
    fn started(&self) -> impl Iterator<Item = &DupOutcome> {
        self.outcomes.iter().filter(|o| o.skipped.is_none())
    }

    /// Distinct role processes (pids) of duplicates, by journal and `/proc` together.
    pub fn ran(&self) -> usize {
        let mut pids: Vec<u32> = self.journal_lines.iter().map(|l| l.3).collect();
        pids.extend(self.processes.iter().filter_map(|p| {
            p.split_whitespace()
                .skip_while(|w| *w != "pid")
                .nth(1)?
                .parse::<u32>()
                .ok()
        }));
        pids.sort_unstable();
        pids.dedup();
        pids.len()
    }

    pub fn violations(&self, lease: Duration) -> Vec<String> {
        let bound = exit_bound(lease);
        let mut v: Vec<String> = self
            .outcomes
            .iter()
            .flat_map(|o| o.violations(bound))
            .collect();
        let mut lines: BTreeMap<&(String, u64, String, u32), usize> = BTreeMap::new();
        for l in &self.journal_lines {
            *lines.entry(l).or_default() += 1;
        }
        for ((role, epoch, server, pid), n) in lines {
            v.push(format!(
                "dup-agent ran a role: {n} journal line(s) of role {role} epoch {epoch} on \
                 {server} from pid {pid}, a role process of a duplicate agent"
            ));
        }
        for p in &self.processes {
            v.push(format!("dup-agent ran a role: {p}"));
        }
        v
    }

    /// Exit times of refused duplicates, ms.
    pub fn exit_times(&self) -> Vec<f64> {
        self.started().filter_map(|o| o.exited_after_ms).collect()
    }

    /// `dup-agent: N started, N refused, 0 ran a role` (and skips, when any).
    pub fn summary(&self) -> String {
        let started = self.started().count();
        let refused = self.started().filter(|o| o.refused()).count();
        let skipped = self.outcomes.len() - started;
        format!(
            "dup-agent: {started} started, {refused} refused (exited non-zero, log naming the \
             holder), {} ran a role{}",
            self.ran(),
            if skipped > 0 {
                format!("; {skipped} not started (holder not settled)")
            } else {
                String::new()
            }
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "started": self.started().count(),
            "refused": self.started().filter(|o| o.refused()).count(),
            "ran_a_role": self.ran(),
            "log": self.outcomes.iter().map(|o| json!({
                "fault": o.fault,
                "server": o.server,
                "holder": o.holder,
                "skipped": o.skipped,
                "exit_code": o.code,
                "exited_after_ms": o.exited_after_ms,
                "log_names_holder": o.names_holder,
            })).collect::<Vec<_>>(),
            "journal_lines": self.journal_lines.len(),
            "processes": self.processes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2025-01-01T00:00:00.000Z  INFO baton_agent: agent starting server=srv-a instance=aaa
2025-01-01T00:00:00.100Z  INFO baton_agent: session open node=10.77.1.1:7001
2025-01-01T00:00:05.000Z  INFO baton_agent: agent starting server=srv-a instance=bbb
";

    #[test]
    fn latest_start_is_the_last_one() {
        assert_eq!(latest_start(LOG), Some(("bbb".to_string(), false)));
        let open = format!("{LOG}2025-01-01T00:00:05.200Z  INFO baton_agent: session open\n");
        assert_eq!(latest_start(&open), Some(("bbb".to_string(), true)));
        assert_eq!(latest_start("nothing here\n"), None);
    }

    #[test]
    fn the_refusal_must_name_the_holder() {
        let log = "ERROR baton_agent: server \"srv-a\" is held by another live agent instance \
                   \"bbb\" (from 10.77.1.11:5000, holding it since ...); this agent runs nothing";
        assert!(names_holder(log, "bbb"));
        assert!(!names_holder(log, "aaa"));
    }

    #[test]
    fn a_duplicate_that_ran_is_a_violation() {
        let mut t = DupTally::default();
        t.outcomes.push(DupOutcome {
            fault: 1,
            server: "srv-a".into(),
            holder: "bbb".into(),
            skipped: None,
            code: Some(1),
            exited_after_ms: Some(900.0),
            names_holder: true,
            log_tail: String::new(),
        });
        assert!(t.violations(Duration::from_secs(2)).is_empty());
        assert!(t.summary().starts_with("dup-agent: 1 started, 1 refused"));
        t.journal_lines.push(("r1".into(), 3, "srv-a".into(), 42));
        t.journal_lines.push(("r2".into(), 4, "srv-a".into(), 43));
        t.journal_lines.push(("r1".into(), 3, "srv-a".into(), 42));
        t.processes.push("role r1 epoch 3 on srv-a pid 42".into());
        assert_eq!(t.ran(), 2);
        // One per journal instance (however many lines), one per /proc process.
        assert_eq!(t.violations(Duration::from_secs(2)).len(), 3);
    }
}
