//! The replicated state and its deterministic `apply`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{Cause, Command, Entry, Outcome, Refusal, Write};
use crate::fences::{FenceReports, seconds_text};
use crate::history::{Trimmed, deserialize_history};
use crate::names::{
    check_database, check_delay, check_kinds, check_name, database_host, host_is_server,
    is_local_host,
};
use crate::requests::Requests;
use crate::{
    DEFAULT_KIND, HISTORY_MAX_DEFAULT, MAIN_VOTERS_MIN, OBJECTS_MAX, SERVERS_PER_ROLE_MAX,
};

/// A server's liveness as the directory has *decided* it (a replicated fact, unlike the
/// leader's in-memory last-seen times).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerStatus {
    /// Known (added by an operator) but no agent has registered yet.
    Unknown,
    /// An agent registered and has not been declared down since.
    Up,
    /// The controller declared its lease expired.
    Down,
}

impl ServerStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ServerStatus::Unknown => "unknown",
            ServerStatus::Up => "up",
            ServerStatus::Down => "down",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub name: String,
    /// Hosts a directory node too.
    pub main: bool,
    /// Kinds of role this server can run; empty means any.
    pub kinds: BTreeSet<String>,
    pub maintenance: bool,
    pub status: ServerStatus,
    /// Directory time ([`State::elapsed_ms`]) since which the server has been up and out
    /// of maintenance; the failback delay counts from here.
    pub eligible_since_ms: u64,
    /// The agent instance that holds this server name (see [`Command::RegisterAgent`]).
    #[serde(default)]
    pub instance: crate::AgentInstance,
    /// Wall-clock time (from the log) since which `instance` holds the name.
    #[serde(default)]
    pub instance_since_ms: u64,
    /// The fence reports of the agent instance recorded so far, so a resent report is
    /// recorded once (see `crate::fences`). Empty in snapshots written before it existed.
    #[serde(default, skip_serializing_if = "FenceReports::is_empty")]
    pub fence_reports: FenceReports,
}

impl Server {
    pub(crate) fn runs_kind(&self, kind: &str) -> bool {
        self.kinds.is_empty() || self.kinds.contains(kind)
    }
}

/// A graceful handover in progress: the active server has been asked to stop the role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub cause: Cause,
    /// The server the role is meant for once released (placement is computed again then).
    pub to: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub kind: String,
    /// Priority order: the first is the primary.
    pub servers: Vec<String>,
    pub failback: bool,
    pub failback_delay_ms: u64,
    pub database: Option<String>,
    /// The server holding `epoch`, if any.
    pub active: Option<String>,
    /// Epoch of the current (or last) assignment; 0 = never assigned.
    pub epoch: u64,
    pub release: Option<Release>,
    /// server -> directory time ([`State::elapsed_ms`]) until which the role may not run
    /// there. Shown to operators as a wall-clock estimate (see [`State::wall_estimate_ms`]).
    pub quarantine: BTreeMap<String, u64>,
    /// Why the role is where it is, or why it is not running.
    pub reason: String,
    /// Deleted by an operator while it ran: it is being stopped on its server, and
    /// disappears once that server acknowledges (or is declared down). Until then the
    /// name cannot be reused, so a re-created role never runs beside the old one.
    #[serde(default)]
    pub deleting: bool,
    /// server -> end (directory time) of this role's last quarantine there, kept until the failback delay
    /// has run out after it: a server counts as eligible for failback only from then.
    #[serde(default)]
    pub recovered: BTreeMap<String, u64>,
}

/// The role's state as users see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleState {
    Running,
    Handover,
    Unassigned,
    Deleting,
}

impl RoleState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RoleState::Running => "running",
            RoleState::Handover => "handover",
            RoleState::Unassigned => "unassigned",
            RoleState::Deleting => "deleting",
        }
    }
}

impl Role {
    pub fn state(&self) -> RoleState {
        if self.deleting {
            return RoleState::Deleting;
        }
        match (&self.active, &self.release) {
            (Some(_), Some(_)) => RoleState::Handover,
            (Some(_), None) => RoleState::Running,
            (None, _) => RoleState::Unassigned,
        }
    }
}

/// One assignment change, kept in the replicated history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub revision: u64,
    pub time_ms: u64,
    pub role: String,
    pub cause: Cause,
    pub from: Option<String>,
    pub to: Option<String>,
    pub epoch: u64,
    pub detail: String,
    /// 0-based rank of the event among those its revision recorded (one entry can move
    /// several roles): with `revision`, the position a watcher resumes from without
    /// losing the rest of a revision. Set by `State::push_event`; snapshots written
    /// before it existed are numbered on load.
    #[serde(default)]
    pub index: u32,
    /// Who asked for the change that recorded this event ([`crate::Entry::by`]); empty
    /// when the directory decided it itself or nobody was authenticated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
}

/// The whole replicated state. Serialized as the snapshot.
///
/// A snapshot written before directory time existed (no `elapsed_ms`) held its timers on
/// the wall clock; it loads with directory time 0 and its timers moved onto it (see
/// [`StateOnDisk`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StateOnDisk")]
pub struct State {
    /// Log index of the last applied entry: the directory's revision.
    pub revision: u64,
    /// Number of voters in the last applied membership.
    pub voters: u32,
    /// The last epoch handed out; epochs are never reused.
    pub last_epoch: u64,
    pub servers: BTreeMap<String, Server>,
    pub roles: BTreeMap<String, Role>,
    /// Assignment changes, oldest first, in strictly increasing (revision, index) order.
    #[serde(deserialize_with = "deserialize_history")]
    pub history: VecDeque<Event>,
    pub history_max: usize,
    /// What trimming the history to `history_max` has dropped, so that a watcher asking
    /// for dropped events is told so instead of silently skipping them. Snapshots written
    /// before it existed load as `Unknown` (see `crate::history`).
    #[serde(default = "Trimmed::unknown")]
    pub trimmed: Trimmed,
    /// The latest proposer wall time applied (max of the entries' `now_ms`): for what
    /// operators read (history timestamps), never for a timer.
    #[serde(default)]
    pub now_ms: u64,
    /// The cluster's lease, as agents are told it (0: not set yet; nodes then use their
    /// configured value). One value for the whole cluster, so no node acknowledges a
    /// renewal for longer than the leader waits before failing the server over.
    #[serde(default)]
    pub lease_ms: u64,
    /// The grace the leader adds to the lease before declaring a server down.
    #[serde(default)]
    pub grace_ms: u64,
    /// The lease the leader's expiry decisions use: at least `lease_ms`, and still the
    /// previous, longer lease after a shortening, until no agent can hold an
    /// acknowledgement of it any more (the leader then proposes `SettleLease`).
    #[serde(default)]
    pub expiry_lease_ms: u64,
    /// Directory time: the sum of the applied entries' `advance_ms` (each clamped to
    /// [`crate::ADVANCE_MAX_MS`]), that is the leaders' monotonic time measured between
    /// their proposals. It never goes back and no wall-clock step moves it.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// The cluster's id (see `Command::SetClusterId`); `None` until the first leader sets
    /// it, and in snapshots written before it existed.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// The outcomes of recent identified writes, so a retried write applies once (see
    /// `crate::requests`). Empty in snapshots written before it existed.
    #[serde(default)]
    pub requests: Requests,
}

/// [`State`] as stored, for loading snapshots of every version.
#[derive(Deserialize)]
struct StateOnDisk {
    revision: u64,
    voters: u32,
    last_epoch: u64,
    servers: BTreeMap<String, Server>,
    roles: BTreeMap<String, Role>,
    #[serde(deserialize_with = "deserialize_history")]
    history: VecDeque<Event>,
    history_max: usize,
    #[serde(default = "Trimmed::unknown")]
    trimmed: Trimmed,
    #[serde(default)]
    now_ms: u64,
    /// `None` in a snapshot written before directory time existed.
    #[serde(default)]
    elapsed_ms: Option<u64>,
    #[serde(default)]
    lease_ms: u64,
    #[serde(default)]
    grace_ms: u64,
    #[serde(default)]
    expiry_lease_ms: u64,
    #[serde(default)]
    cluster_id: Option<String>,
    #[serde(default)]
    requests: Requests,
}

impl From<StateOnDisk> for State {
    /// Loading a snapshot written before directory time existed: its timers are wall-clock
    /// times, which mean nothing on directory time (which starts at 0 here). They are
    /// moved onto it so that none ends early:
    /// - a quarantine keeps what remained of it at the last entry applied (`now_ms`), so
    ///   it ends that long after the upgrade (later by the time that passed between that
    ///   entry and the upgrade);
    /// - every server counts as eligible since the upgrade, and a quarantine that had
    ///   ended counts as ended then: a failback delay running at the upgrade starts over.
    ///
    /// Timers are stretched by the upgrade, never shortened.
    fn from(d: StateOnDisk) -> State {
        let mut st = State {
            revision: d.revision,
            voters: d.voters,
            last_epoch: d.last_epoch,
            servers: d.servers,
            roles: d.roles,
            history: d.history,
            history_max: d.history_max,
            trimmed: d.trimmed,
            now_ms: d.now_ms,
            elapsed_ms: d.elapsed_ms.unwrap_or(0),
            lease_ms: d.lease_ms,
            grace_ms: d.grace_ms,
            expiry_lease_ms: d.expiry_lease_ms,
            cluster_id: d.cluster_id,
            requests: d.requests,
        };
        if d.elapsed_ms.is_none() {
            let wall = st.now_ms;
            for s in st.servers.values_mut() {
                s.eligible_since_ms = 0;
            }
            for r in st.roles.values_mut() {
                for until in r.quarantine.values_mut() {
                    *until = until.saturating_sub(wall);
                }
                for end in r.recovered.values_mut() {
                    *end = end.saturating_sub(wall);
                }
            }
        }
        st
    }
}

impl Default for State {
    fn default() -> Self {
        State {
            revision: 0,
            voters: 0,
            last_epoch: 0,
            servers: BTreeMap::new(),
            roles: BTreeMap::new(),
            history: VecDeque::new(),
            history_max: HISTORY_MAX_DEFAULT,
            trimmed: Trimmed::Nothing,
            now_ms: 0,
            lease_ms: 0,
            grace_ms: 0,
            expiry_lease_ms: 0,
            elapsed_ms: 0,
            cluster_id: None,
            requests: Requests::default(),
        }
    }
}

/// One role assigned to a server, as the agent needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub role: String,
    pub epoch: u64,
    pub kind: String,
    pub database: Option<String>,
}

impl Assignment {
    fn of(r: &Role) -> Assignment {
        Assignment {
            role: r.name.clone(),
            epoch: r.epoch,
            kind: r.kind.clone(),
            database: r.database.clone(),
        }
    }
}

/// One server's roles as its agent needs them (see [`State::server_sets`]), each list in
/// role-name order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerSet {
    /// [`State::assignments`]: run these.
    pub run: Vec<Assignment>,
    /// [`State::releasing`]: stop these and acknowledge.
    pub stop: Vec<Assignment>,
}

/// One write of an entry, borrowed: the entry's own (head) write or one of its batch,
/// applied without copying its command or strings.
#[derive(Clone, Copy)]
struct WriteRef<'a> {
    now_ms: u64,
    cmd: &'a Command,
    by: &'a str,
    request: &'a str,
}

impl<'a> WriteRef<'a> {
    fn head_of(e: &'a Entry) -> Self {
        WriteRef {
            now_ms: e.now_ms,
            cmd: &e.cmd,
            by: &e.by,
            request: &e.request,
        }
    }

    fn of(w: &'a Write) -> Self {
        WriteRef {
            now_ms: w.now_ms,
            cmd: &w.cmd,
            by: &w.by,
            request: &w.request,
        }
    }
}

impl State {
    /// Apply one log entry at `index` and return its first write's outcome: for an
    /// entry of one write, its outcome; [`State::apply_all`] returns every write's.
    pub fn apply(&mut self, index: u64, entry: &Entry) -> Result<Outcome, Refusal> {
        let mut outcomes = self.apply_all(index, entry);
        debug_assert_eq!(outcomes.len(), entry.writes());
        outcomes.swap_remove(0)
    }

    /// Apply one log entry at `index`: its writes in order (`cmd`, then the `batch`), each
    /// as if it had an entry of its own at `index`, and return their outcomes in that
    /// order. Deterministic. Directory time advances once, by the entry's `advance_ms`
    /// (the time passed, whatever the writes), and `revision` always advances to `index`.
    ///
    /// Each write on its own: a refusal leaves the state untouched apart from the revision
    /// and the request table, which remembers the outcome of an identified write; a write
    /// whose request id was already applied (a retry, possibly earlier in this same entry)
    /// changes nothing else and returns the first outcome (see `crate::requests`). So a
    /// batch never refuses or applies as a whole: it is exactly its writes one after the
    /// other, and a write's outcome does not depend on which entry carried it.
    pub fn apply_all(&mut self, index: u64, entry: &Entry) -> Vec<Result<Outcome, Refusal>> {
        debug_assert!(
            index > self.revision || self.revision == 0,
            "log index went back"
        );
        self.elapsed_ms = self
            .elapsed_ms
            .saturating_add(entry.advance_ms.min(crate::ADVANCE_MAX_MS));
        let mut outcomes = Vec::with_capacity(entry.writes());
        outcomes.push(self.apply_write(index, WriteRef::head_of(entry)));
        for write in &entry.batch {
            outcomes.push(self.apply_write(index, WriteRef::of(write)));
        }
        outcomes
    }

    /// One write of an entry at `index` (see [`State::apply_all`]).
    fn apply_write(&mut self, index: u64, write: WriteRef<'_>) -> Result<Outcome, Refusal> {
        // A retry of a write already applied: the first outcome, and no change.
        if let Some(first) = self.requests.get(write.request) {
            self.revision = index;
            return first.clone();
        }
        let result = self.apply_new(index, write);
        self.requests.record(write.request, &result);
        result
    }

    /// [`State::apply_write`] of a write that is not a retry.
    fn apply_new(&mut self, index: u64, write: WriteRef<'_>) -> Result<Outcome, Refusal> {
        // Validate against an untouched state first, then mutate: a refusal may never
        // leave half a change behind. A refused write still advances the revision.
        if let Err(r) = self.check(write.cmd) {
            self.revision = index;
            return Err(r);
        }
        // Events this write records are numbered from here within the revision (earlier
        // writes of the same entry may have recorded some already).
        let first_rank = match self.history.back() {
            Some(last) if last.revision == index => last.index + 1,
            _ => 0,
        };
        // `check` finds every refusal before anything changes; after it passed, `mutate`
        // cannot fail, so the state is changed in place (no copy per command).
        self.revision = index;
        self.now_ms = self.now_ms.max(write.now_ms);
        let outcome = self.mutate(write.now_ms, write.cmd);
        self.place_affected(write.now_ms, write.cmd);
        if !write.by.is_empty() {
            // Every event this write recorded sits at the back of the history.
            for e in self.history.iter_mut().rev() {
                if e.revision != index || e.index < first_rank {
                    break;
                }
                e.by.clear();
                e.by.push_str(write.by);
            }
        }
        Ok(outcome)
    }

    /// Record a membership change (applied from a Raft membership entry).
    ///
    /// Main servers (hosting a directory node) may run roles only while the directory has
    /// failover, [`MAIN_VOTERS_MIN`] voters or more. When the voters drop below that, no
    /// role moves (a membership change alone never moves a running role): the main
    /// servers simply stop being eligible, so no role is placed on one, fails over or
    /// fails back to one, or is moved there, until the voters are back; a role running on
    /// one keeps running until it leaves by the usual ways. When the voters reach
    /// [`MAIN_VOTERS_MIN`] again, roles that run nowhere are placed (at the latest
    /// proposer time applied), since a main server may now take them.
    pub fn apply_membership(&mut self, index: u64, voters: u32) {
        let regained = self.voters < MAIN_VOTERS_MIN && voters >= MAIN_VOTERS_MIN;
        self.revision = index;
        self.voters = voters;
        if regained {
            let idle: Vec<String> = self
                .roles
                .values()
                .filter(|r| r.active.is_none() && !r.deleting)
                .map(|r| r.name.clone())
                .collect();
            for role in idle {
                self.place(&role, self.now_ms);
            }
        }
    }

    /// A wall-clock estimate, for operators, of when directory time will read (or read)
    /// `dir_ms`: the latest proposer wall time applied, moved by the difference. Only as
    /// good as that proposer's clock; no decision uses it.
    pub fn wall_estimate_ms(&self, dir_ms: u64) -> u64 {
        if dir_ms >= self.elapsed_ms {
            self.now_ms.saturating_add(dir_ms - self.elapsed_ms)
        } else {
            self.now_ms.saturating_sub(self.elapsed_ms - dir_ms)
        }
    }

    /// A main server while the directory has fewer than [`MAIN_VOTERS_MIN`] voters: no
    /// role may be placed on it (see [`State::apply_membership`]).
    pub fn main_without_failover(&self, server: &Server) -> bool {
        server.main && self.voters < MAIN_VOTERS_MIN
    }

    /// Record an entry that carries no command (a leader's blank entry).
    pub fn apply_blank(&mut self, index: u64) {
        self.revision = index;
    }

    /// The roles `server` must run now: active there and not being released.
    pub fn assignments(&self, server: &str) -> Vec<Assignment> {
        self.roles
            .values()
            .filter(|r| r.active.as_deref() == Some(server) && r.release.is_none())
            .map(Assignment::of)
            .collect()
    }

    /// The roles `server` must stop and acknowledge with `Released` (graceful handover).
    pub fn releasing(&self, server: &str) -> Vec<Assignment> {
        self.roles
            .values()
            .filter(|r| r.active.as_deref() == Some(server) && r.release.is_some())
            .map(Assignment::of)
            .collect()
    }

    /// [`State::assignments`] and [`State::releasing`] of every server that holds a role,
    /// in one pass over the roles. Each of those scans every role; a node serving many
    /// agents, all woken by the same change, builds this once instead of scanning once
    /// per agent (10,000 agents and 100,000 roles would be 10^9 roles looked at per
    /// change). A server that holds no role is absent.
    pub fn server_sets(&self) -> BTreeMap<String, ServerSet> {
        let mut sets: BTreeMap<String, ServerSet> = BTreeMap::new();
        for r in self.roles.values() {
            let Some(on) = &r.active else { continue };
            let set = match sets.get_mut(on.as_str()) {
                Some(set) => set,
                None => sets.entry(on.clone()).or_default(),
            };
            match r.release {
                None => set.run.push(Assignment::of(r)),
                Some(_) => set.stop.push(Assignment::of(r)),
            }
        }
        sets
    }

    /// Roles whose active server is `server` (including ones being handed over).
    pub fn roles_on(&self, server: &str) -> Vec<String> {
        self.roles
            .values()
            .filter(|r| r.active.as_deref() == Some(server))
            .map(|r| r.name.clone())
            .collect()
    }

    /// Known servers not in `role`'s list, sorted.
    pub fn candidates(&self, role: &str) -> Result<Vec<String>, Refusal> {
        let r = self.role(role)?;
        Ok(self
            .servers
            .keys()
            .filter(|s| !r.servers.contains(s))
            .cloned()
            .collect())
    }

    /// A role that may be edited: it exists and is not being deleted.
    fn live_role(&self, name: &str) -> Result<&Role, Refusal> {
        let r = self.role(name)?;
        if r.deleting {
            return Err(Refusal::precondition(format!(
                "role {name:?} is being deleted (it still stops on {})",
                r.active.as_deref().unwrap_or("its server")
            )));
        }
        Ok(r)
    }

    pub fn role(&self, name: &str) -> Result<&Role, Refusal> {
        self.roles
            .get(name)
            .ok_or_else(|| Refusal::not_found(format!("role {name:?} does not exist")))
    }

    fn server(&self, name: &str) -> Result<&Server, Refusal> {
        self.servers
            .get(name)
            .ok_or_else(|| Refusal::not_found(format!("server {name:?} does not exist")))
    }

    /// All validation that can be done without changing anything.
    fn check(&self, cmd: &Command) -> Result<(), Refusal> {
        cmd.validate()?;
        match cmd {
            Command::AddServer { name, kinds, .. } => {
                check_name("server", name)?;
                check_kinds(kinds)?;
                if self.servers.contains_key(name) {
                    return Err(Refusal::exists(format!("server {name:?} already exists")));
                }
                if self.servers.len() >= OBJECTS_MAX {
                    return Err(Refusal::precondition(format!(
                        "the directory holds {OBJECTS_MAX} servers, its limit"
                    )));
                }
            }
            Command::RemoveServer { name } => {
                self.server(name)?;
                let users: Vec<&str> = self
                    .roles
                    .values()
                    .filter(|r| r.servers.contains(name))
                    .map(|r| r.name.as_str())
                    .collect();
                if !users.is_empty() {
                    return Err(Refusal::precondition(format!(
                        "server {name:?} is listed by role(s) {}; remove it from them first",
                        users.join(", ")
                    )));
                }
                // A role may still be held by a server just taken out of its list (a
                // handover waiting for the acknowledgement). Removing the server would
                // leave nobody to acknowledge and no lease to expire: the role would be
                // stuck. Wait for the move (or the lease) first.
                let held = self.roles_on(name);
                if !held.is_empty() {
                    return Err(Refusal::precondition(format!(
                        "server {name:?} still runs role(s) {} (being handed over); wait until they have moved",
                        held.join(", ")
                    )));
                }
            }
            Command::CreateRole {
                name,
                kind,
                servers,
                failback_delay_ms,
                database,
                ..
            } => {
                check_name("role", name)?;
                if !kind.is_empty() {
                    check_name("kind", kind)?;
                }
                if let Some(old) = self.roles.get(name) {
                    if old.deleting {
                        return Err(Refusal::exists(format!(
                            "role {name:?} is being deleted and still stops on {}; create it again once it has stopped",
                            old.active.as_deref().unwrap_or("its server")
                        )));
                    }
                    return Err(Refusal::exists(format!("role {name:?} already exists")));
                }
                if self.roles.len() >= OBJECTS_MAX {
                    return Err(Refusal::precondition(format!(
                        "the directory holds {OBJECTS_MAX} roles, its limit"
                    )));
                }
                if servers.is_empty() {
                    return Err(Refusal::invalid(format!(
                        "role {name:?} needs at least one server"
                    )));
                }
                check_delay(*failback_delay_ms)?;
                self.check_server_list(name, servers, &[])?;
                self.check_database(name, database.as_deref(), servers)?;
            }
            Command::DeleteRole { name } => {
                self.role(name)?;
            }
            Command::AddRoleServer {
                role,
                server,
                position,
            } => {
                let r = self.live_role(role)?;
                self.server(server)?;
                if r.servers.contains(server) {
                    return Err(Refusal::exists(format!(
                        "server {server:?} is already in role {role:?}'s list"
                    )));
                }
                if let Some(p) = position
                    && (*p == 0 || *p as usize > r.servers.len() + 1)
                {
                    return Err(Refusal::invalid(format!(
                        "position {p} is out of range: role {role:?} has {} server(s), so positions run from 1 to {}",
                        r.servers.len(),
                        r.servers.len() + 1
                    )));
                }
                let mut list = r.servers.clone();
                list.push(server.clone());
                self.check_server_list(role, &list, &r.servers)?;
                self.check_database(role, r.database.as_deref(), &list)?;
            }
            Command::RemoveRoleServer { role, server } => {
                let r = self.live_role(role)?;
                if !r.servers.contains(server) {
                    return Err(Refusal::not_found(format!(
                        "server {server:?} is not in role {role:?}'s list"
                    )));
                }
                if r.servers.len() == 1 {
                    return Err(Refusal::precondition(format!(
                        "server {server:?} is the last server of role {role:?}; a role needs at least one (delete the role instead)"
                    )));
                }
            }
            Command::MoveRoleServer { role, server, up } => {
                let r = self.live_role(role)?;
                let Some(i) = r.servers.iter().position(|s| s == server) else {
                    return Err(Refusal::not_found(format!(
                        "server {server:?} is not in role {role:?}'s list"
                    )));
                };
                if *up && i == 0 {
                    return Err(Refusal::precondition(format!(
                        "server {server:?} is already first in role {role:?}'s list"
                    )));
                }
                if !*up && i + 1 == r.servers.len() {
                    return Err(Refusal::precondition(format!(
                        "server {server:?} is already last in role {role:?}'s list"
                    )));
                }
            }
            Command::SetRole {
                role,
                failback_delay_ms,
                database,
                ..
            } => {
                let r = self.live_role(role)?;
                if let Some(d) = failback_delay_ms {
                    check_delay(*d)?;
                }
                if let Some(db) = database {
                    self.check_database(role, db.as_deref(), &r.servers)?;
                }
            }
            Command::DrainServer { name } | Command::ResumeServer { name } => {
                self.server(name)?;
            }
            Command::MoveRole { role, server } => {
                let r = self.live_role(role)?;
                let s = self.server(server)?;
                if !r.servers.contains(server) {
                    return Err(Refusal::precondition(format!(
                        "server {server:?} is not in role {role:?}'s list; add it first"
                    )));
                }
                if r.active.as_deref() == Some(server.as_str()) && r.release.is_none() {
                    return Err(Refusal::precondition(format!(
                        "role {role:?} already runs on {server:?}"
                    )));
                }
                if let Some(reason) = self.ineligible(r, s) {
                    return Err(Refusal::precondition(format!(
                        "cannot move role {role:?} to {server:?}: {reason}"
                    )));
                }
                // With failback on, a higher-priority eligible server would take the
                // role straight back: refuse rather than bounce it.
                if r.failback
                    && let Some(above) = r
                        .servers
                        .iter()
                        .take_while(|x| *x != server)
                        .find(|x| self.eligible_now(role, x))
                {
                    return Err(Refusal::precondition(format!(
                        "role {role:?} has failback on and {above:?} ranks above {server:?} and is eligible: the role would move back at once; turn failback off first"
                    )));
                }
            }
            Command::RegisterAgent {
                server,
                kinds,
                instance,
                replaces,
                ..
            } => {
                check_name("server", server)?;
                check_kinds(kinds)?;
                if let Some(s) = self.servers.get(server)
                    && s.status == ServerStatus::Up
                    && s.instance.id != instance.id
                    && replaces.as_ref() != Some(&s.instance.id)
                {
                    return Err(Refusal::held(format!(
                        "server {server:?} is held by agent instance {:?} (from {}, since {} ms) whose lease has not run out; two agents must not run under one server name",
                        s.instance.id,
                        if s.instance.address.is_empty() {
                            "an unknown address"
                        } else {
                            &s.instance.address
                        },
                        s.instance_since_ms
                    )));
                }
                if !self.servers.contains_key(server) && self.servers.len() >= OBJECTS_MAX {
                    return Err(Refusal::precondition(format!(
                        "the directory holds {OBJECTS_MAX} servers, its limit"
                    )));
                }
            }
            Command::ServersDown { .. }
            | Command::Released { .. }
            | Command::RoleFailed { .. }
            | Command::SetLease { .. }
            | Command::SettleLease { .. }
            | Command::Tick => {}
            Command::ReportFenced {
                server,
                instance,
                role,
                epoch,
                ..
            } => {
                let s = self.server(server)?;
                // Only the agent holding the server name speaks for it: a report that
                // lands after another instance took the name over is not its to make.
                if s.instance.id != *instance {
                    return Err(Refusal::precondition(format!(
                        "fence report of server {server:?} from agent instance {instance:?}, but instance {:?} holds that name",
                        s.instance.id
                    )));
                }
                // Epochs only grow: a role never had an epoch beyond its current one,
                // and no role one beyond the last handed out.
                let (latest, whose) = match self.roles.get(role) {
                    Some(r) => (r.epoch, format!("role {role:?}")),
                    None => (self.last_epoch, "the directory".to_string()),
                };
                if *epoch > latest {
                    return Err(Refusal::invalid(format!(
                        "fence report of role {role:?} at epoch {epoch}, but {whose} never handed out an epoch beyond {latest}"
                    )));
                }
            }
            Command::SetClusterId { id } => {
                if let Some(current) = &self.cluster_id
                    && current != id
                {
                    return Err(Refusal::precondition(format!(
                        "this cluster's id is {current}; it cannot become {id}"
                    )));
                }
            }
            Command::Configure { history_max } => {
                if !crate::HISTORY_MAX_RANGE.contains(history_max) {
                    return Err(Refusal::invalid(format!(
                        "history size {history_max} is outside {}..={}",
                        crate::HISTORY_MAX_RANGE.start(),
                        crate::HISTORY_MAX_RANGE.end()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The list a role would have: bounded, no duplicates, every server known, and a main
    /// server newly listed (not in `listed` already) only with directory failover. A main
    /// server the role listed before the voters dropped does not block other edits (such
    /// as adding a server the role can move to).
    fn check_server_list(
        &self,
        role: &str,
        servers: &[String],
        listed: &[String],
    ) -> Result<(), Refusal> {
        if servers.len() > SERVERS_PER_ROLE_MAX {
            return Err(Refusal::invalid(format!(
                "role {role:?} lists {} servers; the limit is {SERVERS_PER_ROLE_MAX}",
                servers.len()
            )));
        }
        let mut seen = BTreeSet::new();
        for s in servers {
            check_name("server", s)?;
            if !seen.insert(s) {
                return Err(Refusal::invalid(format!(
                    "server {s:?} appears twice in role {role:?}'s list"
                )));
            }
            let srv = self.server(s)?;
            if self.main_without_failover(srv) && !listed.contains(s) {
                return Err(Refusal::precondition(format!(
                    "server {s:?} hosts a directory node, and the directory has {} voter(s): configure directory failover first ({MAIN_VOTERS_MIN} or more directory nodes) before a role may list a main server",
                    self.voters
                )));
            }
        }
        Ok(())
    }

    /// A role with more than one server must not keep its database on one of them (it
    /// would not follow the role): refused when the database's host is local
    /// ([`is_local_host`]: `(local)`, `localhost`, `.`, loopback) or one of the listed
    /// servers, by name or fully qualified name ([`host_is_server`]). The host is read
    /// from the SQL Server, `host:port` and URL forms by [`database_host`].
    fn check_database(
        &self,
        role: &str,
        database: Option<&str>,
        servers: &[String],
    ) -> Result<(), Refusal> {
        let Some(db) = database else { return Ok(()) };
        check_database(db)?;
        let host = database_host(db);
        if servers.len() > 1
            && (is_local_host(host) || servers.iter().any(|s| host_is_server(host, s)))
        {
            return Err(Refusal::precondition(format!(
                "role {role:?} has {} servers and its database {db:?} lives on one of them: move the role database to a remote server first",
                servers.len()
            )));
        }
        Ok(())
    }

    /// Change the state; called only after `check` passed. `now_ms` is the proposer's
    /// wall time, for history timestamps only; timers count on `self.elapsed_ms`.
    fn mutate(&mut self, now_ms: u64, cmd: &Command) -> Outcome {
        let summary = match cmd {
            Command::AddServer { name, main, kinds } => {
                self.servers.insert(
                    name.clone(),
                    Server {
                        name: name.clone(),
                        main: *main,
                        kinds: kinds.iter().cloned().collect(),
                        maintenance: false,
                        status: ServerStatus::Unknown,
                        eligible_since_ms: self.elapsed_ms,
                        instance: Default::default(),
                        instance_since_ms: 0,
                        fence_reports: FenceReports::default(),
                    },
                );
                format!("server {name} added")
            }
            Command::RemoveServer { name } => {
                self.servers.remove(name);
                format!("server {name} removed")
            }
            Command::CreateRole {
                name,
                kind,
                servers,
                failback,
                failback_delay_ms,
                database,
            } => {
                let kind = if kind.is_empty() { DEFAULT_KIND } else { kind };
                self.roles.insert(
                    name.clone(),
                    Role {
                        name: name.clone(),
                        kind: kind.to_string(),
                        servers: servers.clone(),
                        failback: *failback,
                        failback_delay_ms: *failback_delay_ms,
                        database: database.clone(),
                        active: None,
                        epoch: 0,
                        release: None,
                        quarantine: BTreeMap::new(),
                        reason: "no eligible server yet".into(),
                        deleting: false,
                        recovered: BTreeMap::new(),
                    },
                );
                format!("role {name} created")
            }
            Command::DeleteRole { name } => {
                let r = self.roles.get_mut(name).expect("checked");
                match r.active.clone() {
                    None => {
                        self.roles.remove(name);
                        format!("role {name} deleted")
                    }
                    Some(on) => {
                        // Like a handover with no target: the holder stops it and
                        // acknowledges (or its lease runs out); only then is the role
                        // gone and its name free again.
                        r.deleting = true;
                        if r.release.is_none() {
                            r.release = Some(Release {
                                cause: Cause::Operator,
                                to: None,
                            });
                        }
                        r.reason = format!("being deleted: stopping on {on}");
                        format!("role {name} deleted; it stops on {on} first")
                    }
                }
            }
            Command::AddRoleServer {
                role,
                server,
                position,
            } => {
                let r = self.roles.get_mut(role).expect("checked");
                let at = position.map_or(r.servers.len(), |p| p as usize - 1);
                r.servers.insert(at, server.clone());
                format!(
                    "server {server} added to role {role} at position {}",
                    at + 1
                )
            }
            Command::RemoveRoleServer { role, server } => {
                let r = self.roles.get_mut(role).expect("checked");
                r.servers.retain(|s| s != server);
                r.quarantine.remove(server);
                r.recovered.remove(server);
                format!("server {server} removed from role {role}")
            }
            Command::MoveRoleServer { role, server, up } => {
                let r = self.roles.get_mut(role).expect("checked");
                let i = r.servers.iter().position(|s| s == server).expect("checked");
                let j = if *up { i - 1 } else { i + 1 };
                r.servers.swap(i, j);
                format!(
                    "server {server} is now at position {} of role {role}",
                    j + 1
                )
            }
            Command::SetRole {
                role,
                failback,
                failback_delay_ms,
                database,
            } => {
                let r = self.roles.get_mut(role).expect("checked");
                if let Some(f) = failback {
                    r.failback = *f;
                }
                if let Some(d) = failback_delay_ms {
                    r.failback_delay_ms = *d;
                }
                if let Some(db) = database {
                    r.database = db.clone();
                }
                format!("role {role} updated")
            }
            Command::DrainServer { name } => {
                let s = self.servers.get_mut(name).expect("checked");
                s.maintenance = true;
                format!("server {name} drained")
            }
            Command::ResumeServer { name } => {
                let s = self.servers.get_mut(name).expect("checked");
                if s.maintenance {
                    s.maintenance = false;
                    s.eligible_since_ms = self.elapsed_ms;
                }
                format!("server {name} resumed")
            }
            Command::MoveRole { role, server } => {
                let r = self.roles.get_mut(role).expect("checked");
                match &r.active {
                    Some(from) if from != server => {
                        r.release = Some(Release {
                            cause: Cause::Operator,
                            to: Some(server.clone()),
                        });
                        r.reason = format!("operator move from {from} to {server}");
                    }
                    _ => {
                        // Nothing runs (or the role is being released already): assign
                        // directly, or retarget the release.
                        if r.active.is_some() {
                            r.release = Some(Release {
                                cause: Cause::Operator,
                                to: Some(server.clone()),
                            });
                        } else {
                            self.assign(role, Some(server.clone()), Cause::Operator, now_ms, "");
                        }
                    }
                }
                format!("role {role} moving to {server}")
            }
            Command::RegisterAgent {
                server,
                kinds,
                main,
                instance,
                ..
            } => {
                let s = self
                    .servers
                    .entry(server.clone())
                    .or_insert_with(|| Server {
                        name: server.clone(),
                        main: *main,
                        kinds: BTreeSet::new(),
                        maintenance: false,
                        status: ServerStatus::Unknown,
                        eligible_since_ms: self.elapsed_ms,
                        instance: Default::default(),
                        instance_since_ms: 0,
                        fence_reports: FenceReports::default(),
                    });
                s.kinds = kinds.iter().cloned().collect();
                let became_main = *main && !s.main;
                s.main = s.main || *main;
                if s.instance.id != instance.id || s.instance_since_ms == 0 {
                    s.instance_since_ms = now_ms;
                }
                s.instance = instance.clone();
                if s.status != ServerStatus::Up {
                    s.status = ServerStatus::Up;
                    s.eligible_since_ms = self.elapsed_ms;
                }
                // A server that registers as main only now, while the directory has no
                // failover, may not keep roles: those placed on it are handed over
                // gracefully (the agent stops them and acknowledges), and go to the next
                // eligible server, or wait unassigned saying why.
                if became_main && self.voters < MAIN_VOTERS_MIN {
                    let voters = self.voters;
                    for r in self.roles.values_mut() {
                        if r.active.as_deref() == Some(server.as_str()) && r.release.is_none() {
                            r.release = Some(Release {
                                cause: Cause::Placement,
                                to: None,
                            });
                            r.reason = format!(
                                "handing over from {server}: it registered as a main server (it hosts a directory node) and the directory has {voters} voter(s)"
                            );
                        }
                    }
                }
                format!("server {server} is up")
            }
            Command::ServersDown { servers } => {
                let mut downed = Vec::new();
                for name in servers {
                    if let Some(s) = self.servers.get_mut(name)
                        && s.status == ServerStatus::Up
                    {
                        s.status = ServerStatus::Down;
                        downed.push(name.clone());
                    }
                }
                // Roles on a down server: their agent has fenced itself, so the role is
                // free, whether it was running or being released.
                let roles: Vec<String> = self
                    .roles
                    .values()
                    .filter(|r| r.active.as_ref().is_some_and(|a| downed.contains(a)))
                    .map(|r| r.name.clone())
                    .collect();
                for role in roles {
                    let r = self.roles.get_mut(&role).expect("listed");
                    let cause = r
                        .release
                        .as_ref()
                        .map_or(Cause::LeaseExpired, |rel| rel.cause);
                    let from = r.active.take();
                    r.release = None;
                    if self.finish_delete(&role, from.clone(), now_ms) {
                        continue;
                    }
                    let target = self.first_eligible(&role);
                    self.assign_from(&role, from, target, cause, now_ms, "lease expired");
                }
                format!("server(s) {} down", downed.join(", "))
            }
            Command::Released {
                role,
                server,
                epoch,
            } => {
                let Some(r) = self.roles.get_mut(role) else {
                    return Outcome {
                        summary: format!("role {role} is gone"),
                    };
                };
                if r.epoch != *epoch
                    || r.release.is_none()
                    || r.active.as_deref() != Some(server.as_str())
                {
                    // A late or duplicate acknowledgement, or not from the holder.
                    return Outcome {
                        summary: format!("stale release of {role} epoch {epoch}"),
                    };
                }
                let rel = r.release.take().expect("checked");
                let from = r.active.take();
                if self.finish_delete(role, from.clone(), now_ms) {
                    return Outcome {
                        summary: format!("role {role} stopped and deleted"),
                    };
                }
                let target = match rel.to {
                    Some(to) if self.eligible_now(role, &to) => Some(to),
                    _ => self.first_eligible(role),
                };
                self.assign_from(role, from, target, rel.cause, now_ms, "");
                format!("role {role} released")
            }
            Command::RoleFailed {
                role,
                server,
                epoch,
                reason,
                cooldown_ms,
            } => {
                let Some(r) = self.roles.get_mut(role) else {
                    return Outcome {
                        summary: format!("role {role} is gone"),
                    };
                };
                if r.epoch != *epoch || r.active.as_deref() != Some(server.as_str()) {
                    return Outcome {
                        summary: format!("stale failure report of {role} epoch {epoch}"),
                    };
                }
                r.quarantine
                    .insert(server.clone(), self.elapsed_ms.saturating_add(*cooldown_ms));
                // The agent reports a failure only once it has stopped the process.
                let from = r.active.take();
                r.release = None;
                if self.finish_delete(role, from.clone(), now_ms) {
                    return Outcome {
                        summary: format!("role {role} stopped and deleted"),
                    };
                }
                let target = self.first_eligible(role);
                self.assign_from(role, from, target, Cause::RoleFailed, now_ms, reason);
                format!("role {role} failed on {server}: {reason}")
            }
            Command::Tick => "tick".into(),
            Command::Configure { history_max } => {
                self.history_max = *history_max as usize;
                self.trim_history();
                format!("history size set to {history_max}")
            }
            Command::SetLease { lease_ms, grace_ms } => {
                // A longer lease applies to expiry at once (expiring later is always
                // safe); a shorter one only once every acknowledgement of the longer
                // lease has run out (see `expiry_lease_ms`).
                let previous = self.lease_ms.max(self.expiry_lease_ms);
                self.lease_ms = *lease_ms;
                self.grace_ms = *grace_ms;
                self.expiry_lease_ms = (*lease_ms).max(previous);
                if self.expiry_lease_ms > *lease_ms {
                    format!(
                        "lease set to {lease_ms} ms, grace {grace_ms} ms; failovers keep waiting the previous {} ms until every agent has renewed under the new lease",
                        self.expiry_lease_ms
                    )
                } else {
                    format!("lease set to {lease_ms} ms, grace {grace_ms} ms")
                }
            }
            Command::SettleLease {
                expiry_lease_ms,
                lease_ms,
            } => {
                if self.expiry_lease_ms == *expiry_lease_ms && self.lease_ms == *lease_ms {
                    self.expiry_lease_ms = self.lease_ms;
                    format!("failovers now wait the lease of {} ms", self.lease_ms)
                } else {
                    format!("lease already settled at {} ms", self.expiry_lease_ms)
                }
            }
            Command::SetClusterId { id } => {
                if self.cluster_id.as_ref() == Some(id) {
                    format!("the cluster id is already {id}")
                } else {
                    self.cluster_id = Some(id.clone());
                    format!("cluster id set to {id}")
                }
            }
            Command::ReportFenced {
                server,
                instance,
                number,
                role,
                epoch,
                ago_ms,
            } => self.record_fence(now_ms, server, instance, *number, role, *epoch, *ago_ms),
        };
        Outcome { summary }
    }

    /// Record an agent's fence report (checked already): one `fenced` event, unless
    /// this report was recorded before. Moves nothing.
    #[allow(clippy::too_many_arguments)]
    fn record_fence(
        &mut self,
        now_ms: u64,
        server: &str,
        instance: &str,
        number: u64,
        role: &str,
        epoch: u64,
        ago_ms: u64,
    ) -> String {
        let s = self
            .servers
            .get_mut(server)
            .expect("checked: the server exists");
        if s.fence_reports.is_recorded(instance, number) {
            return format!("fence report {number} of server {server} already recorded");
        }
        s.fence_reports.record(instance, number);
        let mut detail = format!(
            "the agent on {server} stopped the role: no renewal acknowledged within its lease ({} before it could report it)",
            seconds_text(ago_ms)
        );
        if !self.roles.contains_key(role) {
            detail.push_str("; the role no longer exists");
        }
        self.push_event(Event {
            by: String::new(),
            revision: self.revision,
            time_ms: now_ms,
            role: role.to_string(),
            cause: Cause::Fenced,
            from: Some(server.to_string()),
            to: None,
            epoch,
            detail,
            index: 0,
        });
        format!("role {role} epoch {epoch} fenced on {server}")
    }

    /// The fence reports of `server` recorded for agent instance `instance` (numbers,
    /// settled-through watermark): what the session tells that agent. Empty for another
    /// instance.
    pub fn fences_recorded(&self, server: &str, instance: &str) -> (Vec<u64>, u64) {
        match self.servers.get(server).map(|s| &s.fence_reports) {
            Some(f) if f.instance == instance => {
                (f.numbers.iter().copied().collect(), f.settled_through)
            }
            _ => (Vec::new(), 0),
        }
    }

    /// A role being deleted has stopped on `from`: remove it for good. Returns whether
    /// the role was being deleted.
    fn finish_delete(&mut self, role: &str, from: Option<String>, now_ms: u64) -> bool {
        let Some(r) = self.roles.get(role) else {
            return false;
        };
        if !r.deleting {
            return false;
        }
        let epoch = r.epoch;
        self.roles.remove(role);
        self.push_event(Event {
            by: String::new(),
            revision: self.revision,
            time_ms: now_ms,
            role: role.to_string(),
            cause: Cause::Operator,
            from,
            to: None,
            epoch,
            detail: "deleted".into(),
            index: 0,
        });
        true
    }

    /// Why `server` cannot run `role` now (at directory time `elapsed_ms`), or `None`
    /// when it can.
    fn ineligible(&self, role: &Role, server: &Server) -> Option<String> {
        if server.status != ServerStatus::Up {
            return Some(format!(
                "server {} is {}",
                server.name,
                server.status.as_str()
            ));
        }
        if server.maintenance {
            return Some(format!("server {} is in maintenance", server.name));
        }
        if self.main_without_failover(server) {
            return Some(format!(
                "server {} hosts a directory node and the directory has {} voter(s): roles run on a main server only with directory failover ({MAIN_VOTERS_MIN} or more voters)",
                server.name, self.voters
            ));
        }
        if !server.runs_kind(&role.kind) {
            return Some(format!(
                "server {} does not run kind {}",
                server.name, role.kind
            ));
        }
        if let Some(until) = role.quarantine.get(&server.name)
            && *until > self.elapsed_ms
        {
            return Some(format!(
                "role {} is quarantined on {} (it crashed too often)",
                role.name, server.name
            ));
        }
        None
    }

    pub(crate) fn eligible_now(&self, role: &str, server: &str) -> bool {
        match (self.roles.get(role), self.servers.get(server)) {
            (Some(r), Some(s)) => {
                r.servers.iter().any(|x| x == server) && self.ineligible(r, s).is_none()
            }
            _ => false,
        }
    }

    pub(crate) fn first_eligible(&self, role: &str) -> Option<String> {
        let r = self.roles.get(role)?;
        r.servers
            .iter()
            .find(|s| self.eligible_now(role, s))
            .cloned()
    }

    /// Why no server of `role` is eligible (for the role's `reason`).
    pub(crate) fn why_unplaced(&self, role: &Role) -> String {
        let reasons: Vec<String> = role
            .servers
            .iter()
            .filter_map(|s| match self.servers.get(s) {
                Some(srv) => self.ineligible(role, srv),
                None => Some(format!("server {s} does not exist")),
            })
            .collect();
        format!("no eligible server: {}", reasons.join("; "))
    }

    /// Assign `role` (which runs nowhere) to `target` with a fresh epoch.
    pub(crate) fn assign(
        &mut self,
        role: &str,
        target: Option<String>,
        cause: Cause,
        now_ms: u64,
        detail: &str,
    ) {
        self.assign_from(role, None, target, cause, now_ms, detail)
    }

    fn assign_from(
        &mut self,
        role: &str,
        from: Option<String>,
        target: Option<String>,
        cause: Cause,
        now_ms: u64,
        detail: &str,
    ) {
        let epoch = if target.is_some() {
            self.last_epoch += 1;
            self.last_epoch
        } else {
            self.roles[role].epoch
        };
        let why = match &target {
            Some(_) => None,
            None => Some(self.why_unplaced(&self.roles[role])),
        };
        let r = self.roles.get_mut(role).expect("assign: role exists");
        debug_assert!(r.active.is_none(), "assign over a running role");
        r.active = target.clone();
        r.epoch = epoch;
        r.release = None;
        r.reason = match (&target, why) {
            (Some(t), _) => format!("{} ({})", cause_text(cause, t), from_text(&from)),
            (None, Some(w)) => w,
            (None, None) => String::new(),
        };
        if from.is_none() && target.is_none() {
            return; // nothing moved: no history
        }
        self.push_event(Event {
            by: String::new(),
            revision: self.revision,
            time_ms: now_ms,
            role: role.to_string(),
            cause,
            from,
            to: target,
            epoch,
            detail: detail.to_string(),
            index: 0,
        });
    }
}

fn cause_text(cause: Cause, to: &str) -> String {
    match cause {
        Cause::LeaseExpired => format!("moved to {to} after its server's lease expired"),
        Cause::Maintenance => format!("moved to {to} for maintenance"),
        Cause::Failback => format!("returned to {to} (failback)"),
        Cause::RoleFailed => format!("moved to {to} after crashing"),
        Cause::Operator => format!("moved to {to} by an operator"),
        Cause::Placement => format!("placed on {to}"),
        // A fence report assigns nothing; kept for completeness.
        Cause::Fenced => format!("on {to} after a fence"),
    }
}

fn from_text(from: &Option<String>) -> String {
    match from {
        Some(f) => format!("from {f}"),
        None => "was not running".into(),
    }
}
