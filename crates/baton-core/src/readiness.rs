//! Standby readiness: for each role, which servers of its list could take it over *now*
//! if its active server went away.
//!
//! A pure read of the replicated state (no clock: directory time is the state's own
//! `elapsed_ms`), so every node answers the same for the same revision. It uses the same
//! eligibility rules as placement, so "ready" means exactly "placement would pick this
//! server if the ones before it were gone".

use crate::state::{Role, Server, ServerStatus, State};

/// Why a standby is not ready. Short, fixed words: operators read them in a table and
/// tools match on them in JSON.
pub mod reason {
    /// The server's agent has not registered since the server was added.
    pub const UNKNOWN: &str = "no agent yet";
    /// The server was declared down (its agent's lease ran out).
    pub const DOWN: &str = "down";
    /// The server is drained (`baton server drain`).
    pub const MAINTENANCE: &str = "maintenance";
    /// The server does not advertise the role's kind.
    pub const KIND: &str = "does not run the kind";
    /// The role crashed too often on the server and is in its cooldown there.
    pub const QUARANTINED: &str = "quarantined";
    /// The server hosts a directory node and the directory has too few voters for
    /// roles to run on main servers.
    pub const MAIN_WITHOUT_FAILOVER: &str = "main server without directory failover";
    /// The role lists a server the directory does not know.
    pub const NO_SUCH_SERVER: &str = "no such server";
}

/// One server of a role's list other than its active server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standby {
    /// The server's name.
    pub server: String,
    /// Placement would assign the role here now if its active server went away.
    pub ready: bool,
    /// Why not, when not ready (one of [`reason`]'s words); `None` when ready.
    pub reason: Option<&'static str>,
}

/// A role's standbys, in the role's priority order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Readiness {
    /// Every server of the list except the active one.
    pub standbys: Vec<Standby>,
    /// The role is being deleted: it has no standbys and is not at risk (it is going
    /// away on purpose).
    pub deleting: bool,
}

impl Readiness {
    /// How many standbys are ready.
    pub fn ready(&self) -> usize {
        self.standbys.iter().filter(|s| s.ready).count()
    }

    /// How many standbys the role has (servers of its list other than the active one).
    pub fn total(&self) -> usize {
        self.standbys.len()
    }

    /// No standby could take the role over: losing its active server (or, for a role
    /// that runs nowhere, staying as things are) leaves it stopped. A role that lists a
    /// single server is at risk too: it has nowhere to fail over to.
    pub fn at_risk(&self) -> bool {
        !self.deleting && self.ready() == 0
    }
}

impl State {
    /// The standbys of `role` and whether each is ready, or `None` for an unknown role.
    /// A role being deleted has no standbys (it is going away, nothing is at risk).
    pub fn standby_readiness(&self, role: &str) -> Option<Readiness> {
        let r = self.roles.get(role)?;
        if r.deleting {
            return Some(Readiness {
                standbys: Vec::new(),
                deleting: true,
            });
        }
        let standbys = r
            .servers
            .iter()
            .filter(|s| r.active.as_deref() != Some(s.as_str()))
            .map(|name| {
                let reason = match self.servers.get(name) {
                    None => Some(reason::NO_SUCH_SERVER),
                    Some(server) => self.not_ready(r, server),
                };
                Standby {
                    server: name.clone(),
                    ready: reason.is_none(),
                    reason,
                }
            })
            .collect();
        Some(Readiness {
            standbys,
            deleting: false,
        })
    }

    /// The first reason `server` could not take `role` now, in the order placement
    /// checks them (see `State::ineligible`).
    fn not_ready(&self, role: &Role, server: &Server) -> Option<&'static str> {
        match server.status {
            ServerStatus::Unknown => return Some(reason::UNKNOWN),
            ServerStatus::Down => return Some(reason::DOWN),
            ServerStatus::Up => {}
        }
        if server.maintenance {
            return Some(reason::MAINTENANCE);
        }
        if self.main_without_failover(server) {
            return Some(reason::MAIN_WITHOUT_FAILOVER);
        }
        if !server.runs_kind(&role.kind) {
            return Some(reason::KIND);
        }
        if role
            .quarantine
            .get(&server.name)
            .is_some_and(|until| *until > self.elapsed_ms)
        {
            return Some(reason::QUARANTINED);
        }
        None
    }
}
