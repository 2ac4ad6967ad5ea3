//! From what the run observed to figures and violations: the journal, stale writes,
//! `/proc`, acknowledged writes, recovery, false failovers, liveness, duplicates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;

use super::admin::AdminWrite;
use super::faults::Kind;
use super::fenced_journal::JournalState;
use super::report::ms;
use super::run::{Chaos, End, Roles};
use super::sampler::SamplerOut;
use super::world::World;
use super::{GRACE, OUTAGE_NS, SAMPLE_PERIOD, STALE_BOUND_NS, WINDOW_LEAD_NS};
use crate::dup_agent::DupTally;
use crate::journal;

/// Everything a run observed, for the analysis and the report.
pub(crate) struct Observed<'a> {
    pub(crate) world: &'a World,
    pub(crate) roles: &'a Roles,
    pub(crate) chaos: &'a Chaos,
    pub(crate) end: &'a End,
    pub(crate) js: &'a JournalState,
    pub(crate) so: &'a SamplerOut,
    pub(crate) writes: &'a [AdminWrite],
}

/// The run's figures and violations, worked out from what it observed.
pub(crate) struct Analysis {
    pub(crate) violations: Vec<String>,
    /// The journal's own check (overlaps, regressions, reused epochs).
    pub(crate) jr: journal::Report,
    /// Rejected writes right after a freeze of their server, and in flight.
    pub(crate) rej_freeze: usize,
    pub(crate) rej_flight: usize,
    /// Rejected writes that neither explains.
    pub(crate) rej_other: usize,
    /// Processes that wrote to the journal, and those of them the sampler never saw.
    pub(crate) writer_pids: usize,
    pub(crate) unsampled: Vec<String>,
    pub(crate) admin: AdminFigures,
    pub(crate) recovery: Recovery,
    pub(crate) false_failovers: Vec<String>,
    pub(crate) moves_by_cause: BTreeMap<String, usize>,
    /// The duplicates' tally with what the journal and the sampler saw of them.
    pub(crate) dups: DupTally,
}

/// The admin writes, read back.
#[derive(Default)]
pub(crate) struct AdminFigures {
    pub(crate) acked: usize,
    pub(crate) lost: Vec<String>,
    pub(crate) unacked_present: usize,
    /// Acknowledgement latencies (ms).
    pub(crate) latency: Vec<f64>,
    /// Failed writes per last line of the error.
    pub(crate) errors: BTreeMap<String, usize>,
}

/// Gaps in the roles' writes and the faults they are charged to.
#[derive(Default)]
pub(crate) struct Recovery {
    /// Per fault and interrupted role, the longest time without a writer (ms).
    pub(crate) outages: Vec<f64>,
    pub(crate) by_kind: BTreeMap<&'static str, Vec<f64>>,
    /// Per kind: (outages that moved the role, outages restarting it where it was).
    pub(crate) outcome_by_kind: BTreeMap<&'static str, (usize, usize)>,
    /// Roles stopped by a fault of the directory alone (their agent self-fenced because
    /// no renewal was acknowledged in time), though nothing moved.
    pub(crate) dir_fault_stops: Vec<String>,
    /// Every gap between two consecutive writes of a role (ms).
    pub(crate) all_gaps: Vec<f64>,
    /// Gaps longer than an outage with the same process on both sides: not a failover
    /// (nothing moved or restarted) but the writer, the observer or the host stalling.
    pub(crate) same_process_gaps: Vec<f64>,
    /// Changes of process that no fault explains, described.
    pub(crate) pre_fault_outages: Vec<String>,
}

/// (fault index, role) -> (longest gap across a change of process, epoch before, epoch
/// after: a move when they differ, else a restart in place).
type Outages<'a> = BTreeMap<(usize, &'a str), (u64, u64, u64)>;

impl Analysis {
    /// Runs every check in the order of the report's violation list.
    pub(crate) fn new(o: &Observed) -> Analysis {
        let mut violations = Vec::new();
        let lines = accepted_lines(o.js);
        let jr = journal::check(&lines);
        for x in &jr.overlaps {
            violations.push(format!("journal overlap: {x}"));
        }
        for r in &jr.regressions {
            violations.push(format!("journal epoch regression: {r}"));
        }
        for r in &jr.reused_epochs {
            violations.push(format!("journal epoch reuse: {r}"));
        }
        let (rej_freeze, rej_flight, rej_other) = stale_writes(o, &mut violations);
        for x in &o.so.overlaps {
            violations.push(format!("/proc overlap: {x}"));
        }
        for l in &o.so.lingering {
            violations.push(format!("stale process after thaw: {l}"));
        }
        let (writer_pids, unsampled) = coverage(o, &lines);
        if !o.chaos.interrupted {
            end_state(o, &mut violations);
        }
        let admin = admin_writes(o, &mut violations);
        let recovery = Recovery::new(o);
        for p in &recovery.pre_fault_outages {
            violations.push(format!("outage without a fault: {p}"));
        }
        let (false_failovers, moves_by_cause) = moves(o);
        for f in &false_failovers {
            violations.push(format!("false failover: {f}"));
        }
        liveness(o, &mut violations);
        for u in &o.world.unexpected {
            violations.push(format!("process exit: {u}"));
        }
        // The duplicates: refused, and none of their role processes ever seen.
        let mut dups = o.world.dups.clone();
        dups.journal_lines =
            o.js.dup
                .iter()
                .map(|x| (x.role.clone(), x.epoch, x.server.clone(), x.pid))
                .collect();
        dups.processes = o.so.dup_procs.clone();
        violations.extend(dups.violations(o.world.a.lease));
        Analysis {
            violations,
            jr,
            rej_freeze,
            rej_flight,
            rej_other,
            writer_pids,
            unsampled,
            admin,
            recovery,
            false_failovers,
            moves_by_cause,
            dups,
        }
    }

    /// Overlaps found by the journal's check.
    pub(crate) fn journal_overlaps(&self) -> usize {
        self.jr.overlaps.len() + self.jr.regressions.len() + self.jr.reused_epochs.len()
    }
}

/// The accepted writes as journal lines.
fn accepted_lines(js: &JournalState) -> Vec<journal::Line> {
    js.accepted
        .iter()
        .map(|w| journal::Line {
            t_ns: w.t_ns,
            role: w.role.clone(),
            epoch: w.epoch,
            server: w.server.clone(),
            pid: w.pid,
        })
        .collect()
}

/// Sorts the rejected (stale) writes: explained by a freeze of their server, in
/// flight, or not explained (a violation per writer). Returns the three counts.
fn stale_writes(o: &Observed, violations: &mut Vec<String>) -> (usize, usize, usize) {
    let mut first_of_epoch: HashMap<(String, u64), u64> = HashMap::new();
    for w in &o.js.accepted {
        let e = first_of_epoch
            .entry((w.role.clone(), w.epoch))
            .or_insert(w.t_ns);
        *e = (*e).min(w.t_ns);
    }
    let (mut rej_freeze, mut rej_flight, mut rej_other) = (0usize, 0usize, Vec::new());
    for r in &o.js.rejected {
        let after_freeze = o.chaos.faults.iter().any(|f| {
            f.kind == Kind::FreezeServer
                && f.server.as_deref() == Some(r.w.server.as_str())
                && r.w.recv_ns >= f.heal_ns.saturating_sub(SAMPLE_PERIOD.as_nanos() as u64)
                && r.w.recv_ns <= f.heal_ns + STALE_BOUND_NS
        });
        let in_flight = first_of_epoch
            .get(&(r.w.role.clone(), r.max_epoch))
            .is_some_and(|first| r.w.t_ns < *first);
        if after_freeze {
            rej_freeze += 1;
        } else if in_flight {
            rej_flight += 1;
        } else {
            rej_other.push(r.clone());
        }
    }
    // (role, epoch, server, pid) -> (lines, first, last, highest epoch then)
    type Instance = (String, u64, String, u32);
    let mut stale_by_pid: BTreeMap<Instance, (usize, u64, u64, u64)> = BTreeMap::new();
    for r in &rej_other {
        let e = stale_by_pid
            .entry((r.w.role.clone(), r.w.epoch, r.w.server.clone(), r.w.pid))
            .or_insert((0, u64::MAX, 0, r.max_epoch));
        e.0 += 1;
        e.1 = e.1.min(r.w.t_ns);
        e.2 = e.2.max(r.w.t_ns);
    }
    for ((role, epoch, server, pid), (n, first, last, max)) in &stale_by_pid {
        let since_new = first_of_epoch
            .get(&(role.clone(), *max))
            .map(|f| {
                format!(
                    "{:.1} ms after epoch {max} first wrote",
                    ms(first.saturating_sub(*f))
                )
            })
            .unwrap_or_default();
        violations.push(format!(
            "stale holder not explained by a freeze: role {role} epoch {epoch} on {server} pid {pid} \
             wrote {n} rejected line(s) from {first} to {last} ({since_new})"
        ));
    }
    (rej_freeze, rej_flight, rej_other.len())
}

/// The sampler's coverage: every process that wrote (and lived more than a few sample
/// periods) should have been seen in /proc. Returns (writers, those never seen).
fn coverage(o: &Observed, lines: &[journal::Line]) -> (usize, Vec<String>) {
    let mut lines_per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for w in &o.js.accepted {
        *lines_per_pid.entry(w.pid).or_default() += 1;
    }
    let unsampled_pids: BTreeSet<u32> = lines_per_pid
        .iter()
        .filter(|(p, n)| **n > 10 && !o.so.seen.contains_key(p))
        .map(|(p, _)| *p)
        .collect();
    let unsampled = journal::instances(
        &lines
            .iter()
            .filter(|l| unsampled_pids.contains(&l.pid))
            .cloned()
            .collect::<Vec<_>>(),
    )
    .iter()
    .map(|i| i.to_string())
    .collect();
    (lines_per_pid.len(), unsampled)
}

/// End state: exactly one role process per role.
fn end_state(o: &Observed, violations: &mut Vec<String>) {
    for (r, _, _) in &o.roles.all {
        let procs = o.so.current.get(r).cloned().unwrap_or_default();
        if procs.len() != 1 {
            violations.push(format!(
                "end state: role {r} has {} live role process(es): {procs:?}",
                procs.len()
            ));
        }
    }
}

/// Acknowledged admin writes, each read back in `server list`.
fn admin_writes(o: &Observed, violations: &mut Vec<String>) -> AdminFigures {
    let acked: Vec<&AdminWrite> = o.writes.iter().filter(|x| x.acked).collect();
    let mut a = AdminFigures {
        acked: acked.len(),
        ..AdminFigures::default()
    };
    match &o.end.server_list {
        Some(list) => {
            let names: BTreeSet<String> = list
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|s| s["name"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for x in &acked {
                if !names.contains(&x.name) {
                    a.lost.push(format!(
                        "{} (acknowledged at {}, after {:.0} ms)",
                        x.name,
                        x.end_ns,
                        ms(x.end_ns - x.start_ns)
                    ));
                }
            }
            a.unacked_present = o
                .writes
                .iter()
                .filter(|x| !x.acked && names.contains(&x.name))
                .count();
        }
        None if !o.chaos.interrupted => {
            violations.push("could not read the server list back within 60 s".into());
        }
        None => {}
    }
    for l in &a.lost {
        violations.push(format!("lost acknowledged write: server {l}"));
    }
    a.latency = acked.iter().map(|x| ms(x.end_ns - x.start_ns)).collect();
    for x in o.writes.iter().filter(|x| !x.acked) {
        let key: String = x
            .error
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(120)
            .collect();
        *a.errors.entry(key).or_default() += 1;
    }
    a
}

impl Recovery {
    /// Gaps between consecutive accepted writes of a role, charged to faults.
    fn new(o: &Observed) -> Recovery {
        let mut r = Recovery::default();
        let outage = r.charge_gaps(o);
        r.sum_up(o, &outage);
        r
    }

    /// Walks each role's writes since the faults began: every change of process is an
    /// interruption, however short, charged to the fault that explains it.
    fn charge_gaps<'a>(&mut self, o: &'a Observed) -> Outages<'a> {
        let faults = &o.chaos.faults;
        let (t_chaos, t_heal) = (o.chaos.t_chaos, o.end.t_heal);
        let mut times: BTreeMap<&str, Vec<(u64, u32, u64)>> = BTreeMap::new();
        for w in &o.js.accepted {
            if w.t_ns >= t_chaos {
                times
                    .entry(w.role.as_str())
                    .or_default()
                    .push((w.t_ns, w.pid, w.epoch));
            }
        }
        let mut outage = Outages::new();
        let settle_ns = (o.world.a.lease + GRACE + Duration::from_secs(2)).as_nanos() as u64;
        for (role, ts) in times.iter_mut() {
            ts.sort_unstable();
            for pair in ts.windows(2) {
                let ((t1, p1, e1), (t2, p2, e2)) = (pair[0], pair[1]);
                let gap = t2 - t1;
                self.all_gaps.push(ms(gap));
                if p1 == p2 {
                    if gap > OUTAGE_NS {
                        self.same_process_gaps.push(ms(gap));
                    }
                    continue;
                }
                // The latest fault that started before the gap ended and whose active
                // window [start, heal + settle] overlaps the gap (a fault that starts
                // while a role is already quiet, e.g. after a host stall, is still its
                // cause); else (a late effect) the last fault that started before the
                // gap.
                let idx = faults
                    .iter()
                    .rposition(|f| f.start_ns <= t2 && f.heal_ns + settle_ns >= t1)
                    .or_else(|| {
                        faults
                            .iter()
                            .rposition(|f| f.start_ns <= t1 + WINDOW_LEAD_NS && t1 <= t_heal)
                    });
                match idx {
                    Some(i) => {
                        let e = outage.entry((i, role)).or_insert((0, 0, 0));
                        if gap > e.0 {
                            *e = (gap, e1, e2);
                        }
                    }
                    None => self.pre_fault_outages.push(format!(
                        "role {role}: process {p1} (epoch {e1}) replaced by {p2} (epoch {e2}) \
                         after {:.0} ms without a writer, from {t1}, before any fault",
                        ms(gap)
                    )),
                }
            }
        }
        outage
    }

    /// Per fault kind, the outages and how many moved or restarted in place; the roles
    /// a directory-only fault stopped, with what became of them.
    fn sum_up(&mut self, o: &Observed, outage: &Outages) {
        let epoch_cause = epoch_causes(o.end.events.as_ref());
        for ((i, role), (gap, e_before, e_after)) in outage {
            let moved = e_before != e_after;
            let f = &o.chaos.faults[*i];
            self.outages.push(ms(*gap));
            self.by_kind
                .entry(f.kind.name())
                .or_default()
                .push(ms(*gap));
            let c = self.outcome_by_kind.entry(f.kind.name()).or_default();
            if moved {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
            if !f.kind.touches_server() {
                self.dir_fault_stops.push(format!(
                    "fault {} {} {} ({}): role {role} stopped {:.0} ms, {}",
                    f.n,
                    f.kind.name(),
                    f.target,
                    f.detail,
                    ms(*gap),
                    if moved {
                        format!(
                            "moved (epoch {e_before} -> {e_after}, cause {})",
                            epoch_cause
                                .get(&(role.to_string(), *e_after))
                                .map(String::as_str)
                                .unwrap_or("unknown")
                        )
                    } else {
                        format!("restarted in place, same epoch {e_before}")
                    }
                ));
            }
        }
    }
}

/// Why each epoch came to be, from the directory's history.
fn epoch_causes(events: Option<&Value>) -> HashMap<(String, u64), String> {
    events
        .and_then(Value::as_array)
        .map(|evs| {
            evs.iter()
                // An agent's fence report names an epoch it did not create.
                .filter(|e| e["cause"] != "fenced")
                .filter_map(|e| {
                    Some((
                        (e["role"].as_str()?.to_string(), e["epoch"].as_u64()?),
                        e["cause"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The directory's moves since the faults began, by cause, and the false failovers among
/// them: a lease_expired move while only the directory was faulted.
fn moves(o: &Observed) -> (Vec<String>, BTreeMap<String, usize>) {
    let mut false_failovers: Vec<String> = Vec::new();
    let mut moves_by_cause: BTreeMap<String, usize> = BTreeMap::new();
    let Some(evs) = o.end.events.as_ref().and_then(Value::as_array) else {
        return (false_failovers, moves_by_cause);
    };
    let faults = &o.chaos.faults;
    let settle = (o.world.a.lease + GRACE + Duration::from_secs(2)).as_nanos() as u64;
    for e in evs {
        let t = e["time_ms"].as_u64().unwrap_or(0) * 1_000_000;
        if t < o.chaos.t_chaos {
            continue;
        }
        let cause = e["cause"].as_str().unwrap_or("?").to_string();
        if cause == "fenced" {
            continue; // an agent's fence report: a pause, not a move
        }
        *moves_by_cause.entry(cause.clone()).or_default() += 1;
        if cause != "lease_expired" {
            continue;
        }
        // The fault in force (or most recent) at the time.
        let Some(f) = faults.iter().rev().find(|f| f.start_ns <= t) else {
            continue;
        };
        let recent_server_fault = faults
            .iter()
            .any(|g| g.kind.touches_server() && g.start_ns <= t && t <= g.heal_ns + settle);
        if !f.kind.touches_server() && !recent_server_fault {
            false_failovers.push(format!(
                "role {} moved {} -> {} (epoch {}, lease_expired) {:.1} s into fault {} ({} {})",
                e["role"].as_str().unwrap_or("?"),
                e["from"].as_str().unwrap_or("-"),
                e["to"].as_str().unwrap_or("-"),
                e["epoch"],
                ms(t.saturating_sub(f.start_ns)) / 1e3,
                f.n,
                f.kind.name(),
                f.target
            ));
        }
    }
    (false_failovers, moves_by_cause)
}

/// Liveness: every role writing again after the heal, and running at the end.
fn liveness(o: &Observed, violations: &mut Vec<String>) {
    for n in &o.end.not_live {
        violations.push(format!("liveness: {n}"));
    }
    if let Some(list) = o.end.role_list.as_ref().and_then(Value::as_array)
        && !o.chaos.interrupted
    {
        for r in list {
            if r["state"] != "running" || r["active_server"].is_null() {
                violations.push(format!(
                    "liveness: role {} is {} (active server {}) at the end",
                    r["name"], r["state"], r["active_server"]
                ));
            }
        }
    }
}
