//! Placement: after every applied command, bring every role to where the policy wants it.
//!
//! Runs inside `apply` (so it is replicated and deterministic) and only ever *starts*
//! moves: a role that runs somewhere it should not is released (graceful handover), never
//! reassigned directly; a role that runs nowhere is assigned to its first eligible server.

use crate::command::{Cause, Command};
use crate::state::{Release, ServerStatus, State};

impl State {
    /// Place the roles `cmd` can have affected: the role it names, or the roles that list
    /// (or run on) the servers it names, or every role for a `Tick`. Placement of one
    /// role never depends on another, so the rest cannot have changed; this keeps an
    /// apply proportional to what it touches, not to the size of the directory.
    pub(crate) fn place_affected(&mut self, now_ms: u64, cmd: &Command) {
        let servers: Vec<&String> = match cmd {
            Command::Tick => return self.place_all(now_ms),
            Command::CreateRole { name: role, .. }
            | Command::AddRoleServer { role, .. }
            | Command::RemoveRoleServer { role, .. }
            | Command::MoveRoleServer { role, .. }
            | Command::SetRole { role, .. }
            | Command::MoveRole { role, .. }
            | Command::Released { role, .. }
            | Command::RoleFailed { role, .. } => {
                if self.roles.contains_key(role) {
                    self.place(&role.clone(), now_ms);
                }
                return;
            }
            Command::DeleteRole { .. }
            | Command::AddServer { .. }
            | Command::RemoveServer { .. }
            | Command::Configure { .. }
            | Command::SetLease { .. }
            | Command::SettleLease { .. }
            | Command::SetClusterId { .. }
            | Command::ReportFenced { .. } => {
                return;
            }
            Command::DrainServer { name } | Command::ResumeServer { name } => vec![name],
            Command::RegisterAgent { server, .. } => vec![server],
            Command::ServersDown { servers } => servers.iter().collect(),
        };
        let roles: Vec<String> = self
            .roles
            .values()
            .filter(|r| {
                servers
                    .iter()
                    .any(|s| r.active.as_ref() == Some(*s) || r.servers.iter().any(|x| x == *s))
            })
            .map(|r| r.name.clone())
            .collect();
        for name in roles {
            self.place(&name, now_ms);
        }
    }

    pub(crate) fn place_all(&mut self, now_ms: u64) {
        let names: Vec<String> = self.roles.keys().cloned().collect();
        for name in names {
            self.place(&name, now_ms);
        }
    }

    /// Bring `name` to where the policy wants it at directory time `elapsed_ms`;
    /// `now_ms` (the proposer's wall time) only stamps the history events it records.
    pub(crate) fn place(&mut self, name: &str, now_ms: u64) {
        // An ended quarantine moves to `recovered` (its end still delays failback to that
        // server), and is forgotten once the failback delay has run out after it, so
        // the state stays bounded.
        let now = self.elapsed_ms;
        let r = self.roles.get_mut(name).expect("placing a known role");
        let ended: Vec<(String, u64)> = r
            .quarantine
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(s, u)| (s.clone(), *u))
            .collect();
        for (server, until) in ended {
            r.quarantine.remove(&server);
            r.recovered.insert(server, until);
        }
        let delay = r.failback_delay_ms;
        r.recovered
            .retain(|_, until| until.saturating_add(delay) > now);
        let role = &self.roles[name];
        if role.release.is_some() {
            return; // waiting for the old server's acknowledgement (or its lease)
        }
        let Some(active) = role.active.clone() else {
            let target = self.first_eligible(name);
            if target.is_some() {
                self.assign(name, target, Cause::Placement, now_ms, "");
            } else {
                let why = self.why_unplaced(&self.roles[name]);
                self.roles.get_mut(name).expect("known").reason = why;
            }
            return;
        };
        let server = self.servers.get(&active);
        let cause = match server {
            // Defensive: a down server's roles are freed by ServersDown itself.
            None => Some(Cause::Placement),
            Some(s) if s.status == ServerStatus::Down => Some(Cause::LeaseExpired),
            Some(_) if !role.servers.contains(&active) => Some(Cause::Placement),
            Some(s) if s.maintenance => Some(Cause::Maintenance),
            Some(s) if !s.kinds.is_empty() && !s.kinds.contains(&role.kind) => {
                Some(Cause::Placement)
            }
            Some(_) => self.failback_target(name, &active).map(|_| Cause::Failback),
        };
        let Some(cause) = cause else { return };
        let to = if cause == Cause::Failback {
            self.failback_target(name, &active)
        } else {
            self.first_eligible(name).filter(|t| t != &active)
        };
        let r = self.roles.get_mut(name).expect("known");
        r.reason = format!(
            "handing over from {active} ({}){}",
            cause.as_str(),
            to.as_ref().map(|t| format!(" to {t}")).unwrap_or_default()
        );
        r.release = Some(Release { cause, to });
    }

    /// With failback on: the highest-priority server above `active` that has been
    /// eligible for the role's failback delay (in directory time).
    pub(crate) fn failback_target(&self, name: &str, active: &str) -> Option<String> {
        let role = &self.roles[name];
        if !role.failback {
            return None;
        }
        role.servers
            .iter()
            .take_while(|s| s.as_str() != active)
            .find(|s| {
                self.eligible_now(name, s)
                    && self
                        .eligible_since(name, s)
                        .saturating_add(role.failback_delay_ms)
                        <= self.elapsed_ms
            })
            .cloned()
    }

    /// Since when `server` has been eligible for `role` (ignoring kind), for anti-flap.
    pub(crate) fn eligible_since(&self, role: &str, server: &str) -> u64 {
        let since = self
            .servers
            .get(server)
            .map_or(u64::MAX, |s| s.eligible_since_ms);
        let r = &self.roles[role];
        let quarantine_end = r
            .quarantine
            .get(server)
            .or_else(|| r.recovered.get(server))
            .copied()
            .unwrap_or(0);
        since.max(quarantine_end)
    }
}
