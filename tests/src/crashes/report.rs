//! What the campaigns found, and how it is printed.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::common::{percentiles, secs};
use super::damage::Kind;

/// One failed restart.
#[derive(Debug, Clone)]
pub struct FailedRestart {
    pub kill: usize,
    pub node: u64,
    pub what: String,
    pub log_tail: String,
}

/// What the crash campaign found.
#[derive(Debug, Default)]
pub struct CrashReport {
    pub seed: u64,
    pub kills: usize,
    pub leader_kills: usize,
    pub acked: usize,
    pub confirmed: usize,
    pub unknown: usize,
    pub unexplained: usize,
    pub unexplained_samples: Vec<String>,
    pub refused: Vec<String>,
    pub checks: usize,
    /// Acknowledged writes missing from a read-back (must be empty).
    pub lost: Vec<String>,
    pub failed_restarts: Vec<FailedRestart>,
    /// Nodes whose local copy differed from the leader's at the end.
    pub diverged: Vec<String>,
    /// Restart to caught up, per restart.
    pub restart_times: Vec<Duration>,
    /// Kill -9 of all three and restart done (and checked).
    pub full_restart: bool,
    pub full_restart_time: Duration,
    pub elapsed: Duration,
    /// Set when the campaign could not go on.
    pub aborted: Option<String>,
}

impl CrashReport {
    pub fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.failed_restarts.is_empty()
            && self.diverged.is_empty()
            && self.refused.is_empty()
            && self.aborted.is_none()
    }
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p50, p99, max) = percentiles(&self.restart_times);
        writeln!(f, "crash campaign (seed {})", self.seed)?;
        writeln!(
            f,
            "  kills done:        {} (leader {}, follower {}), plus a final kill -9 of all nodes: {}",
            self.kills,
            self.leader_kills,
            self.kills - self.leader_kills,
            if self.full_restart {
                "done"
            } else {
                "not reached"
            }
        )?;
        writeln!(
            f,
            "  writes acked:      {} ({:.0}/s; +{} confirmed by ALREADY_EXISTS on retry, {} outcome unknown)",
            self.acked,
            self.acked as f64 / self.elapsed.as_secs_f64().max(0.001),
            self.confirmed,
            self.unknown
        )?;
        if self.unexplained > 0 {
            writeln!(
                f,
                "    of which {} failed without a reason from the directory, e.g. {:?}",
                self.unexplained, self.unexplained_samples
            )?;
        }
        writeln!(f, "  read-backs:        {}", self.checks)?;
        writeln!(f, "  lost acks:         {}", self.lost.len())?;
        for l in self.lost.iter().take(20) {
            writeln!(f, "    lost: {l}")?;
        }
        writeln!(f, "  failed restarts:   {}", self.failed_restarts.len())?;
        for r in &self.failed_restarts {
            writeln!(f, "    kill {} node {}: {}", r.kill, r.node, r.what)?;
        }
        writeln!(f, "  diverged copies:   {}", self.diverged.len())?;
        for d in &self.diverged {
            writeln!(f, "    {d}")?;
        }
        if !self.refused.is_empty() {
            writeln!(f, "  unexpected refusals: {:?}", self.refused)?;
        }
        writeln!(
            f,
            "  restart to caught up: p50 {p50} ms, p99 {p99} ms, max {max} ms; all three: {} ms",
            self.full_restart_time.as_millis()
        )?;
        if let Some(a) = &self.aborted {
            writeln!(f, "  ABORTED: {a}")?;
        }
        write!(f, "  time taken:        {}", secs(self.elapsed))
    }
}

/// How a damaged node behaved when started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exited non-zero with an `error:` line that names the problem and says "re-add".
    Refused { line: String },
    /// Exited non-zero, but its message does not say how to re-add the node.
    RefusedWithoutRemedy { code: i32, line: String },
    /// Panicked instead of refusing.
    Panicked { code: i32, text: String },
    /// Neither served nor exited in time.
    Hung,
    /// Started and converged on the leader's data; its store still holds everything Raft
    /// needs that it held before the damage (the damaged bytes held nothing live, or sled
    /// rolled back to an earlier point that differs only in what Raft can do without: an
    /// older committed hint, snapshot or purge point; see `Verified::keeps_everything_of`).
    StartedIntact,
    /// Started and converged on the leader's data, but its store silently lost data (sled
    /// dropped what followed the damage, or a removed value was not missed): undetected
    /// damage, repaired by Raft.
    StartedLostData { detail: String },
    /// Started but never caught up with the leader: it keeps serving an old state.
    Stuck { detail: String },
    /// Started and served data that differs from the leader's at the same revision.
    WrongData { detail: String },
}

impl Outcome {
    pub(crate) fn column(&self) -> usize {
        match self {
            Outcome::Refused { .. } => 0,
            Outcome::RefusedWithoutRemedy { .. } => 1,
            Outcome::StartedIntact => 2,
            Outcome::StartedLostData { .. } => 3,
            Outcome::Stuck { .. } => 4,
            Outcome::WrongData { .. } => 5,
            Outcome::Panicked { .. } | Outcome::Hung => 6,
        }
    }

    /// Detected and refused as the issue asks.
    pub fn refused_with_remedy(&self) -> bool {
        matches!(self, Outcome::Refused { .. })
    }
}

/// One case of the corruption campaign.
#[derive(Clone, Debug)]
pub struct Case {
    pub n: usize,
    pub kind: Kind,
    /// What was damaged, exactly.
    pub damage: String,
    pub node: u64,
    /// How the node was stopped: "SIGTERM" or "kill -9".
    pub stop: &'static str,
    pub snapshot_every: u64,
    pub writes: usize,
    /// What `baton_store::open` saw before and after the damage.
    pub before: String,
    pub after: String,
    pub outcome: Outcome,
    /// The other two nodes took a write and served a linearizable read while the damaged
    /// node was down and while it was refusing or catching up.
    pub cluster_served: bool,
    /// Acknowledged writes missing cluster-wide at the end of the case.
    pub lost: Vec<String>,
    /// The final read-back through the other two nodes failed (why).
    pub unavailable: Option<String>,
    /// Panics in the logs of the other two (healthy) nodes.
    pub panics: Vec<String>,
    /// Re-adding a refusing node as its message says: None if not tried.
    pub readd: Option<std::result::Result<Duration, String>>,
    pub elapsed: Duration,
}

impl Case {
    /// Everything asked of this case: safe, and the damage either refused with the
    /// remedy or harmless (it hit bytes that held nothing live, the store is intact, and
    /// starting was right). A campaign that counted an intact store as a failure exited
    /// 1 on a case with nothing to detect.
    pub fn ok(&self) -> bool {
        self.safe()
            && matches!(
                self.outcome,
                Outcome::Refused { .. } | Outcome::StartedIntact
            )
    }

    /// The weaker property that holds even for damage the store cannot see: the cluster
    /// serves, nothing acknowledged is lost, and a node that starts converges on the
    /// leader's data (or refuses cleanly).
    pub fn safe(&self) -> bool {
        self.cluster_served
            && self.lost.is_empty()
            && self.unavailable.is_none()
            && self.panics.is_empty()
            && !matches!(self.readd, Some(Err(_)))
            && matches!(
                self.outcome,
                Outcome::Refused { .. } | Outcome::StartedIntact | Outcome::StartedLostData { .. }
            )
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match &self.outcome {
            Outcome::Refused { line } => format!("refused: {line}"),
            Outcome::RefusedWithoutRemedy { code, line } => {
                format!("refused WITHOUT remedy (exit {code}): {line}")
            }
            Outcome::Panicked { code, text } => format!("PANICKED (exit {code}): {text}"),
            Outcome::Hung => "HUNG (neither served nor exited)".into(),
            Outcome::StartedIntact => "started; store unchanged by the damage; converged".into(),
            Outcome::StartedLostData { detail } => {
                format!("started UNDETECTED, the store lost data ({detail}); converged")
            }
            Outcome::Stuck { detail } => format!("STUCK on old data: {detail}"),
            Outcome::WrongData { detail } => format!("WRONG DATA: {detail}"),
        };
        write!(
            f,
            "case {:>3} {:<18} node {} ({}, {} writes, snapshot every {}): {}\n      store before: {}\n      store after:  {}\n      -> {outcome}",
            self.n,
            self.kind.name(),
            self.node,
            self.stop,
            self.writes,
            self.snapshot_every,
            self.damage,
            self.before,
            self.after,
        )?;
        if !self.cluster_served {
            write!(f, "\n      the other nodes did NOT keep serving")?;
        }
        if !self.lost.is_empty() {
            write!(f, "\n      LOST ACKS: {:?}", self.lost)?;
        }
        if let Some(u) = &self.unavailable {
            write!(f, "\n      UNAVAILABLE at the end: {u}")?;
        }
        for p in &self.panics {
            write!(f, "\n      PANIC on a healthy node: {p}")?;
        }
        match &self.readd {
            Some(Ok(d)) => write!(
                f,
                "\n      re-added as its message says, caught up in {d:?}"
            )?,
            Some(Err(e)) => write!(f, "\n      RE-ADD FAILED: {e}")?,
            None => {}
        }
        write!(f, " [{}]", secs(self.elapsed))
    }
}

/// What the corruption campaign found.
#[derive(Debug, Default)]
pub struct CorruptReport {
    pub seed: u64,
    pub cases: Vec<Case>,
    pub elapsed: Duration,
}

impl CorruptReport {
    /// Every case detected, refused with the remedy, cluster served, nothing lost.
    pub fn clean(&self) -> bool {
        self.cases.iter().all(Case::ok)
    }
}

impl fmt::Display for CorruptReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "corruption campaign (seed {})", self.seed)?;
        writeln!(
            f,
            "  {:<18} {:>5} {:>8} {:>9} {:>7} {:>15} {:>6} {:>10} {:>10} {:>7}",
            "kind",
            "cases",
            "refused",
            "no-remedy",
            "intact",
            "lost-undetected",
            "stuck",
            "wrong-data",
            "panic/hang",
            "re-add"
        )?;
        let mut by_kind: BTreeMap<Kind, Vec<&Case>> = BTreeMap::new();
        for c in &self.cases {
            by_kind.entry(c.kind).or_default().push(c);
        }
        let mut totals = [0usize; 7];
        let mut readd_total = (0, 0);
        for (kind, cases) in &by_kind {
            let mut cols = [0usize; 7];
            for c in cases {
                cols[c.outcome.column()] += 1;
            }
            let tried = cases.iter().filter(|c| c.readd.is_some()).count();
            let worked = cases
                .iter()
                .filter(|c| matches!(c.readd, Some(Ok(_))))
                .count();
            readd_total.0 += worked;
            readd_total.1 += tried;
            for i in 0..7 {
                totals[i] += cols[i];
            }
            writeln!(
                f,
                "  {:<18} {:>5} {:>8} {:>9} {:>7} {:>15} {:>6} {:>10} {:>10} {:>7}",
                kind.name(),
                cases.len(),
                cols[0],
                cols[1],
                cols[2],
                cols[3],
                cols[4],
                cols[5],
                cols[6],
                format!("{worked}/{tried}")
            )?;
        }
        writeln!(
            f,
            "  {:<18} {:>5} {:>8} {:>9} {:>7} {:>15} {:>6} {:>10} {:>10} {:>7}",
            "total",
            self.cases.len(),
            totals[0],
            totals[1],
            totals[2],
            totals[3],
            totals[4],
            totals[5],
            totals[6],
            format!("{}/{}", readd_total.0, readd_total.1)
        )?;
        let served = self.cases.iter().filter(|c| c.cluster_served).count();
        let lost: usize = self.cases.iter().map(|c| c.lost.len()).sum();
        let unavailable = self
            .cases
            .iter()
            .filter(|c| c.unavailable.is_some())
            .count();
        let panics = self.cases.iter().filter(|c| !c.panics.is_empty()).count();
        writeln!(
            f,
            "  the other two nodes kept serving in {served}/{} cases; lost acks: {lost}",
            self.cases.len()
        )?;
        writeln!(
            f,
            "  cases where a healthy node panicked: {panics}; cluster unavailable at the end: {unavailable}"
        )?;
        let bad: Vec<&Case> = self.cases.iter().filter(|c| !c.ok()).collect();
        if !bad.is_empty() {
            writeln!(f, "  cases not detected-and-refused-with-remedy:")?;
            for c in bad {
                writeln!(f, "  {c}")?;
            }
        }
        write!(f, "  time taken: {}", secs(self.elapsed))
    }
}

#[cfg(test)]
mod case_tests {
    use super::*;

    fn case(outcome: Outcome) -> Case {
        Case {
            n: 1,
            kind: Kind::LogFlip,
            damage: String::new(),
            node: 1,
            stop: "kill -9",
            snapshot_every: 10,
            writes: 1,
            before: String::new(),
            after: String::new(),
            outcome,
            cluster_served: true,
            lost: Vec::new(),
            unavailable: None,
            panics: Vec::new(),
            readd: None,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn an_intact_store_is_a_clean_case_and_undetected_loss_is_not() {
        assert!(case(Outcome::StartedIntact).ok());
        assert!(case(Outcome::Refused { line: "x".into() }).ok());
        assert!(!case(Outcome::StartedLostData { detail: "x".into() }).ok());
        let mut lost = case(Outcome::StartedIntact);
        lost.lost.push("w1".into());
        assert!(!lost.ok(), "a lost write is never clean");
        let report = CorruptReport {
            seed: 1,
            cases: vec![case(Outcome::StartedIntact)],
            elapsed: Duration::ZERO,
        };
        assert!(report.clean());
    }
}
