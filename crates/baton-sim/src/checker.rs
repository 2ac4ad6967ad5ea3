//! The outside observer: every simulated agent and client reports to it, and it checks
//! the invariants as the run goes. It also keeps the run's trace.
//!
//! Agents report as *holders*, `server#instance`: two agent instances under one server
//! name are two holders, so a duplicate agent running a role its twin runs is a
//! single-active violation like any other; epochs and moves are counted per server.
//!
//! Checked continuously:
//! - single active: an agent may start holding a role only when no other agent holds it
//!   at that simulated instant. An agent holds a role from the moment it starts it until
//!   it stops it (set dropped it, crash) or until its fence time passes (the last moment
//!   its role process could still run: `stop_at + stop_bound`);
//! - epochs: one (role, epoch) belongs to one server; a role's epochs at hold start never
//!   decrease;
//! - monotonic revisions per agent (per incarnation: a restarted agent starts from 0);
//! - no false failover: in a run with only directory faults, no role is ever held by a
//!   second server;
//! - failback on time (when a run watches one, [`FailbackWatch`]): a role returns to its
//!   primary no sooner than its failback delay after the primary's agent came back,
//!   whatever the directory nodes' wall clocks do, and not much later either.
//!
//! At the end: every acknowledged admin write is read back, and every role is held
//! (liveness after healing).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

/// The server name of a holder `server#instance`.
pub fn server_of(holder: &str) -> &str {
    holder.split('#').next().unwrap_or(holder)
}

/// Simulated milliseconds since the start of the run.
pub fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// A role with failback on whose primary's agent the run crashes and restarts.
#[derive(Clone, Debug)]
pub struct FailbackWatch {
    pub role: String,
    pub primary: String,
    pub delay_ms: u64,
    /// How long after the delay the return may take at most: the agent registering
    /// after its restart, the controller noticing, the handover.
    pub slack_ms: u64,
    /// When the primary's agent restarted (simulated ms).
    pub back_ms: Option<u64>,
    /// When the role started on the primary again after that.
    pub returned_ms: Option<u64>,
}

#[derive(Clone, Debug)]
struct Hold {
    epoch: u64,
    until_ms: u64,
}

#[derive(Default)]
pub struct Checker {
    pub trace: Vec<String>,
    pub violations: Vec<String>,
    /// role -> server -> hold
    holds: BTreeMap<String, BTreeMap<String, Hold>>,
    /// role -> servers that ever held it
    ever_held: BTreeMap<String, BTreeSet<String>>,
    epoch_owner: BTreeMap<(String, u64), String>,
    max_epoch: BTreeMap<String, u64>,
    revision: BTreeMap<String, u64>,
    /// roles whose creation was acknowledged, by client
    pub acked: BTreeMap<String, BTreeSet<String>>,
    /// clients that finished reading back
    pub read_back: BTreeSet<String>,
    /// every role name the clients read back at the end
    pub found_roles: BTreeSet<String>,
    /// roles held at the liveness deadline (set by the harness)
    pub held_at_deadline: Option<BTreeSet<String>>,
    /// Whether a role moving counts as a violation (runs with directory faults only).
    pub forbid_moves: bool,
    /// Register histories (role -> operations) for the linearizability check.
    pub registers: BTreeMap<String, Vec<crate::linear::Op>>,
    /// The failback this run watches, if any.
    pub failback: Option<FailbackWatch>,
}

/// The checker shared by every host of one run.
pub type Shared = Arc<Mutex<Checker>>;

pub fn lock(c: &Shared) -> std::sync::MutexGuard<'_, Checker> {
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Checker {
    pub fn event(&mut self, now: u64, msg: impl AsRef<str>) {
        self.trace.push(format!("{now:>7} {}", msg.as_ref()));
    }

    pub fn violation(&mut self, now: u64, msg: impl AsRef<str>) {
        let m = format!("t={now}ms {}", msg.as_ref());
        self.trace
            .push(format!("{now:>7} VIOLATION {}", msg.as_ref()));
        self.violations.push(m);
    }

    /// `holder` (`server#instance`) starts running `role` at `epoch`; it may run until
    /// `until_ms`.
    pub fn hold_start(&mut self, now: u64, holder: &str, role: &str, epoch: u64, until_ms: u64) {
        let server = server_of(holder);
        self.event(now, format!("{server} starts {role}@{epoch}"));
        let others: Vec<(String, Hold)> = self
            .holds
            .get(role)
            .map(|m| {
                m.iter()
                    .filter(|(s, h)| s.as_str() != holder && h.until_ms > now)
                    .map(|(s, h)| (s.clone(), h.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (s, h) in others {
            let until = if h.until_ms == u64::MAX {
                "with no fence".to_string()
            } else {
                format!("until t={}ms", h.until_ms)
            };
            self.violation(
                now,
                format!(
                    "single active: {holder} starts {role}@{epoch} while {s} may run it @{} {until}",
                    h.epoch
                ),
            );
        }
        let key = (role.to_string(), epoch);
        match self.epoch_owner.get(&key) {
            Some(o) if o != server => {
                let o = o.clone();
                self.violation(
                    now,
                    format!("epoch reused: {role}@{epoch} held by {o} and now by {server}"),
                );
            }
            _ => {
                self.epoch_owner.insert(key, server.to_string());
            }
        }
        let max = self.max_epoch.entry(role.to_string()).or_default();
        if epoch < *max {
            let m = *max;
            self.violation(
                now,
                format!("epoch went back: {server} starts {role}@{epoch} after @{m} ran"),
            );
        } else {
            *max = epoch;
        }
        self.failback_start(now, server, role);
        let ever = self.ever_held.entry(role.to_string()).or_default();
        ever.insert(server.to_string());
        if self.forbid_moves && ever.len() > 1 {
            let ever = ever.clone();
            self.violation(
                now,
                format!(
                    "false failover: {role} moved with only directory faults (held by {ever:?})"
                ),
            );
        }
        self.holds
            .entry(role.to_string())
            .or_default()
            .insert(holder.to_string(), Hold { epoch, until_ms });
    }

    /// A hold start of the watched role on its primary after the primary came back: the
    /// failback. Earlier than the delay after the agent's restart is a violation (the
    /// agent registers after it restarts, so the directory saw the primary eligible for
    /// less than the delay).
    fn failback_start(&mut self, now: u64, server: &str, role: &str) {
        let Some(w) = &mut self.failback else { return };
        if w.role != role || w.primary != server || w.returned_ms.is_some() {
            return;
        }
        let Some(back) = w.back_ms else { return };
        w.returned_ms = Some(now);
        let (delay, after) = (w.delay_ms, now - back);
        self.event(
            now,
            format!("failback of {role} to {server}, {after} ms after it came back"),
        );
        if after < delay {
            self.violation(
                now,
                format!(
                    "early failback: {role} back on {server} {after} ms after its agent restarted, before its failback delay of {delay} ms"
                ),
            );
        }
    }

    /// The agent host of `server` restarted (for the failback watch).
    pub fn agent_restarted(&mut self, now: u64, server: &str) {
        if let Some(w) = &mut self.failback
            && w.primary == server
        {
            w.back_ms = Some(now);
            w.returned_ms = None;
        }
    }

    /// At the end of a run: a watched failback that was due long enough ago happened.
    pub fn failback_end(&mut self, now: u64) {
        let Some(w) = self.failback.clone() else {
            return;
        };
        let Some(back) = w.back_ms else { return };
        let latest = back + w.delay_ms + w.slack_ms;
        if w.returned_ms.is_none_or(|t| t > latest) && now > latest {
            self.violation(
                now,
                format!(
                    "late failback: {} not back on {} by t={latest}ms ({} ms delay after its agent restarted at t={back}ms)",
                    w.role, w.primary, w.delay_ms
                ),
            );
        }
    }

    /// `server`'s roles may now run until `until_ms` (a renewal was acknowledged).
    pub fn hold_extend(&mut self, server: &str, until_ms: u64) {
        for m in self.holds.values_mut() {
            if let Some(h) = m.get_mut(server) {
                h.until_ms = h.until_ms.max(until_ms);
            }
        }
    }

    /// `server` stopped `role` at `now`.
    pub fn hold_stop(&mut self, now: u64, server: &str, role: &str, why: &str) {
        if let Some(m) = self.holds.get_mut(role)
            && let Some(h) = m.remove(server)
        {
            // A fence that already passed ended the hold at its time, not now.
            let end = h.until_ms.min(now);
            self.event(end, format!("{server} stops {role}@{} ({why})", h.epoch));
        }
    }

    /// The agent host of `server` crashed: its role processes die with it, whichever
    /// instance ran them (duplicates run on hosts of their own and never crash).
    pub fn agent_crashed(&mut self, now: u64, server: &str) {
        let held: Vec<(String, String)> = self
            .holds
            .iter()
            .flat_map(|(r, m)| {
                m.keys()
                    .filter(|h| server_of(h) == server)
                    .map(|h| (r.clone(), h.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (r, h) in held {
            self.hold_stop(now, &h, &r, "agent crashed");
        }
        self.revision.retain(|h, _| server_of(h) != server);
    }

    /// `server` received an assignment set at `revision`.
    pub fn revision(&mut self, now: u64, server: &str, revision: u64) {
        let last = self.revision.entry(server.to_string()).or_default();
        if revision < *last {
            let l = *last;
            self.violation(
                now,
                format!("revision went back for {server}: {revision} after {l}"),
            );
        } else {
            *last = revision;
        }
    }

    /// Roles held by some agent at `now`.
    pub fn held_roles(&self, now: u64) -> BTreeSet<String> {
        self.holds
            .iter()
            .filter(|(_, m)| m.values().any(|h| h.until_ms > now))
            .map(|(r, _)| r.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two agent instances under one server name are two holders: if both run a role at
    /// once, that is a single-active violation; one instance taking over from a fenced
    /// predecessor (same epoch, same server) is not.
    #[test]
    fn a_duplicate_instance_running_a_role_is_a_violation() {
        let mut c = Checker::default();
        c.hold_start(100, "a1#i1", "r", 3, 2_000);
        assert!(c.violations.is_empty());
        c.hold_start(500, "a1#i2", "r", 3, 2_500);
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
        assert!(c.violations[0].contains("single active: a1#i2 starts r@3 while a1#i1"));

        let mut c = Checker {
            forbid_moves: true,
            ..Default::default()
        };
        c.hold_start(100, "a1#i1", "r", 3, 2_000);
        // The takeover, after the first instance's fence: no overlap, no move, and the
        // epoch stays with its server.
        c.hold_start(2_100, "a1#i2", "r", 3, 4_000);
        assert!(c.violations.is_empty(), "{:?}", c.violations);
    }
}
