//! Commands (one or more per Raft entry), their outcomes, and deterministic refusals.

use serde::{Deserialize, Serialize};

/// One Raft entry's payload: the command, the proposer's wall-clock time, and how far the
/// entry moves the directory's own clock.
///
/// Both times are read once, by the node that proposes the entry, and travel in the log,
/// so every node applies the same times.
///
/// - `now_ms` (wall clock, ms since the Unix epoch) only stamps what operators read:
///   history events, since when an agent instance holds its name. Wall clocks step (NTP,
///   a VM resume) and differ between nodes, so no timer counts on it.
/// - `advance_ms` moves the *directory time* ([`crate::State::elapsed_ms`]) forward, at
///   most [`crate::ADVANCE_MAX_MS`] per entry. Only the leader sets it: the monotonic
///   milliseconds it measured since the previous advance it proposed in its term (a new
///   leader starts measuring when it takes over). Failback delays and quarantine
///   cooldowns (anti-flap policy) count on directory time, so no clock step shortens or
///   stretches them. Leases (safety) use neither: they live on the leader's monotonic
///   clock and never touch the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub now_ms: u64,
    pub cmd: Command,
    /// 0 in entries written before directory time existed, and in entries a node
    /// proposes while it does not lead.
    #[serde(default)]
    pub advance_ms: u64,
    /// Who asked for this change, as their certificate names them (`operator bob`): the
    /// audit trail, copied onto the history events the entry records. Empty for the
    /// directory's own writes, agents' reports and a cluster running without TLS.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
    /// The id the client gave this write, the same on every retry of it: an entry whose
    /// id the state has already applied changes nothing and returns the first outcome
    /// (see `crate::requests`). Empty: no deduplication.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request: String,
    /// Further writes committed in this same log entry, applied after `cmd` and in order,
    /// each as if it had its own entry at the same log index (group commit: the leader
    /// packs the writes that arrive while an append is in flight into one entry, so one
    /// fsync makes many durable). Each keeps its own time stamp, author, request id,
    /// validation and outcome; a refusal of one never touches the others. Empty in
    /// single-write entries and in every entry written before batches existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<Write>,
}

/// Most writes one log entry carries (`Entry::cmd` and its `batch`): bounds the work of
/// applying one entry, and with the commands' own bounds its size.
pub const WRITES_PER_ENTRY_MAX: usize = 1_024;

/// One write of an [`Entry`]'s batch: the fields of an entry that belong to one write.
/// Directory time (`advance_ms`) belongs to the entry as a whole.
///
/// Every field is always serialized (no `skip_serializing_if`), so the type goes through
/// formats that are not self-describing (the Raft wire format) as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The proposer's wall clock when it admitted this write (see [`Entry`]).
    pub now_ms: u64,
    pub cmd: Command,
    /// Who asked for it (see [`Entry::by`]).
    pub by: String,
    /// The client's id for it (see [`Entry::request`]).
    pub request: String,
}

impl Entry {
    /// An entry of one write with no author, request id or directory time: the common
    /// case of the directory's own writes and of tests.
    pub fn new(now_ms: u64, cmd: Command) -> Entry {
        Entry {
            now_ms,
            cmd,
            advance_ms: 0,
            by: String::new(),
            request: String::new(),
            batch: Vec::new(),
        }
    }

    /// The write `cmd` of this entry (its first), without the batch.
    pub fn head(&self) -> Write {
        Write {
            now_ms: self.now_ms,
            cmd: self.cmd.clone(),
            by: self.by.clone(),
            request: self.request.clone(),
        }
    }

    /// The entry carrying `writes` in order, with `advance_ms` of directory time. `None`
    /// for no writes.
    pub fn of_writes(writes: Vec<Write>, advance_ms: u64) -> Option<Entry> {
        let mut writes = writes.into_iter();
        let head = writes.next()?;
        Some(Entry {
            now_ms: head.now_ms,
            cmd: head.cmd,
            advance_ms,
            by: head.by,
            request: head.request,
            batch: writes.collect(),
        })
    }

    /// How many writes this entry carries (1 + the batch).
    pub fn writes(&self) -> usize {
        1 + self.batch.len()
    }
}

/// Which agent process registers (or holds) a server name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInstance {
    /// A random id the agent chooses at every start ("" from agents that send none).
    pub id: String,
    /// The agent's session address as its node saw it: for operators, never for logic.
    #[serde(default)]
    pub address: String,
}

/// Longest agent instance id accepted.
pub const INSTANCE_ID_MAX: usize = 64;
/// Longest agent address accepted.
pub const ADDRESS_MAX: usize = 256;

/// Every change to the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    // --- operator commands -----------------------------------------------------------
    AddServer {
        name: String,
        main: bool,
        kinds: Vec<String>,
    },
    RemoveServer {
        name: String,
    },
    CreateRole {
        name: String,
        kind: String,
        servers: Vec<String>,
        failback: bool,
        failback_delay_ms: u64,
        database: Option<String>,
    },
    DeleteRole {
        name: String,
    },
    AddRoleServer {
        role: String,
        server: String,
        /// 1-based; `None` appends.
        position: Option<u32>,
    },
    RemoveRoleServer {
        role: String,
        server: String,
    },
    MoveRoleServer {
        role: String,
        server: String,
        up: bool,
    },
    SetRole {
        role: String,
        failback: Option<bool>,
        failback_delay_ms: Option<u64>,
        /// `Some(None)` clears the database.
        database: Option<Option<String>>,
    },
    DrainServer {
        name: String,
    },
    ResumeServer {
        name: String,
    },
    MoveRole {
        role: String,
        server: String,
    },

    // --- agent and controller commands -------------------------------------------------
    /// An agent opened a session (or came back after being declared down): the server
    /// exists from now on, with these kinds, and is up.
    ///
    /// A server name is held by one agent instance at a time. While the server is up,
    /// a registration by another instance is refused ([`RefusalKind::ServerHeld`]) unless
    /// it `replaces` exactly the holder: the leader proposes that only once the holder's
    /// lease has run out (a restarted agent, a replaced host), never for a live holder.
    RegisterAgent {
        server: String,
        kinds: Vec<String>,
        main: bool,
        #[serde(default)]
        instance: AgentInstance,
        /// The holder instance this registration takes the name over from.
        #[serde(default)]
        replaces: Option<String>,
    },
    /// The controller found these servers' leases expired (plus grace). Their agents have
    /// fenced themselves; their roles move at once.
    ServersDown {
        servers: Vec<String>,
    },
    /// The agent of `server`, holding `epoch` of `role`, stopped it, as asked by a
    /// handover (or a delete).
    Released {
        role: String,
        server: String,
        epoch: u64,
    },
    /// The role kept crashing on `server` under `epoch`: quarantine the pair for
    /// `cooldown_ms` of directory time and move the role on. The agent has stopped the
    /// process.
    RoleFailed {
        role: String,
        server: String,
        epoch: u64,
        reason: String,
        cooldown_ms: u64,
    },
    /// Re-evaluate time-based placement (failback delays, quarantine ends) at the
    /// directory time the entry's `advance_ms` brings. The leader proposes one when a
    /// timer falls due, and regularly while one is pending, so that its measured time
    /// reaches the log in steps below [`crate::ADVANCE_MAX_MS`].
    Tick,
    /// Cluster-wide settings that must be the same on every node, so they travel in the
    /// log (the leader proposes its configured values when they differ).
    Configure {
        history_max: u32,
    },
    /// The cluster's lease and grace (an administrator's `cluster set`, or the first
    /// leader seeding its configured values into a new cluster).
    SetLease {
        lease_ms: u64,
        grace_ms: u64,
    },
    /// The leader saw no acknowledgement of a previous, longer lease can still be valid:
    /// failovers may now wait only the current lease. Applies only if the state still has
    /// exactly this expiry lease *and* this lease: a lease changed meanwhile (even
    /// shortened again) needs its own wait.
    SettleLease {
        expiry_lease_ms: u64,
        #[serde(default)]
        lease_ms: u64,
    },
    /// The cluster's id, chosen at random by its first leader. The first one applied
    /// stays: a later one naming another id is refused. Nodes compare it before they talk
    /// (a node of one cluster refuses to join another).
    SetClusterId {
        id: String,
    },
    /// The agent of `server`, instance `instance`, fenced itself: it stopped `epoch` of
    /// `role` because no renewal was acknowledged within its lease, `ago_ms` before it
    /// could report it. Records one `fenced` history event and changes no assignment
    /// (see `crate::fences`). `number` is the instance's count of its fences: a report
    /// whose number was recorded already changes nothing.
    ///
    /// Refused: an unknown server, a report from an instance that does not hold the
    /// server name, and an epoch the role (or, for a role that no longer exists, the
    /// directory) never handed out. Recorded as-is: a role deleted since (the fence
    /// happened all the same), and an epoch the role had on another server (the
    /// history that would tell may have been trimmed away).
    ReportFenced {
        server: String,
        instance: String,
        number: u64,
        role: String,
        epoch: u64,
        ago_ms: u64,
    },
}

/// Longest cluster id accepted (lowercase hexadecimal; a new cluster gets 32 digits).
pub const CLUSTER_ID_MAX: usize = 64;

/// Check a cluster id's shape: 1 to [`CLUSTER_ID_MAX`] lowercase hexadecimal digits.
pub fn check_cluster_id(id: &str) -> Result<(), Refusal> {
    if id.is_empty()
        || id.len() > CLUSTER_ID_MAX
        || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(Refusal::invalid(format!(
            "cluster id {:?} is not 1 to {CLUSTER_ID_MAX} lowercase hexadecimal digits",
            id.chars().take(CLUSTER_ID_MAX + 1).collect::<String>()
        )));
    }
    Ok(())
}

impl Command {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::AddServer { .. } => "add_server",
            Command::RemoveServer { .. } => "remove_server",
            Command::CreateRole { .. } => "create_role",
            Command::DeleteRole { .. } => "delete_role",
            Command::AddRoleServer { .. } => "add_role_server",
            Command::RemoveRoleServer { .. } => "remove_role_server",
            Command::MoveRoleServer { .. } => "move_role_server",
            Command::SetRole { .. } => "set_role",
            Command::DrainServer { .. } => "drain_server",
            Command::ResumeServer { .. } => "resume_server",
            Command::MoveRole { .. } => "move_role",
            Command::RegisterAgent { .. } => "register_agent",
            Command::ServersDown { .. } => "servers_down",
            Command::Released { .. } => "released",
            Command::RoleFailed { .. } => "role_failed",
            Command::Tick => "tick",
            Command::Configure { .. } => "configure",
            Command::SetLease { .. } => "set_lease",
            Command::SettleLease { .. } => "settle_lease",
            Command::SetClusterId { .. } => "set_cluster_id",
            Command::ReportFenced { .. } => "report_fenced",
        }
    }
}

impl Command {
    /// Every check that needs no state: names, sizes, limits, list shape. The service
    /// runs it before proposing, so malformed input never reaches the log; `apply` runs
    /// it again (the log is the authority), followed by the checks against the state.
    pub fn validate(&self) -> Result<(), Refusal> {
        use crate::names::{check_database, check_delay, check_kinds, check_name, check_text};
        match self {
            Command::AddServer { name, kinds, .. } => {
                check_name("server", name)?;
                check_kinds(kinds)?;
            }
            Command::RemoveServer { name }
            | Command::DrainServer { name }
            | Command::ResumeServer { name } => check_name("server", name)?,
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
                if servers.is_empty() {
                    return Err(Refusal::invalid(format!(
                        "role {name:?} needs at least one server"
                    )));
                }
                if servers.len() > crate::SERVERS_PER_ROLE_MAX {
                    return Err(Refusal::invalid(format!(
                        "role {name:?} lists {} servers; the limit is {}",
                        servers.len(),
                        crate::SERVERS_PER_ROLE_MAX
                    )));
                }
                for (i, s) in servers.iter().enumerate() {
                    check_name("server", s)?;
                    if servers[..i].contains(s) {
                        return Err(Refusal::invalid(format!(
                            "server {s:?} appears twice in role {name:?}'s list"
                        )));
                    }
                }
                check_delay(*failback_delay_ms)?;
                if let Some(db) = database {
                    check_database(db)?;
                }
            }
            Command::DeleteRole { name } => check_name("role", name)?,
            Command::AddRoleServer { role, server, .. }
            | Command::RemoveRoleServer { role, server }
            | Command::MoveRoleServer { role, server, .. }
            | Command::MoveRole { role, server } => {
                check_name("role", role)?;
                check_name("server", server)?;
            }
            Command::SetRole {
                role,
                failback_delay_ms,
                database,
                ..
            } => {
                check_name("role", role)?;
                if let Some(d) = failback_delay_ms {
                    check_delay(*d)?;
                }
                if let Some(Some(db)) = database {
                    check_database(db)?;
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
                check_text("agent instance id", &instance.id, INSTANCE_ID_MAX)?;
                check_text("agent address", &instance.address, ADDRESS_MAX)?;
                if let Some(r) = replaces {
                    check_text("replaced agent instance id", r, INSTANCE_ID_MAX)?;
                }
            }
            Command::SetClusterId { id } => check_cluster_id(id)?,
            Command::Configure { history_max } => {
                if !crate::HISTORY_MAX_RANGE.contains(history_max) {
                    return Err(Refusal::invalid(format!(
                        "history size {history_max} is outside {}..={}",
                        crate::HISTORY_MAX_RANGE.start(),
                        crate::HISTORY_MAX_RANGE.end()
                    )));
                }
            }
            Command::SetLease { lease_ms, grace_ms } => {
                if !crate::LEASE_MS_RANGE.contains(lease_ms) {
                    return Err(Refusal::invalid(format!(
                        "lease {lease_ms} ms is outside {}..={} ms",
                        crate::LEASE_MS_RANGE.start(),
                        crate::LEASE_MS_RANGE.end()
                    )));
                }
                if *grace_ms == 0 || grace_ms > lease_ms {
                    return Err(Refusal::invalid(format!(
                        "grace {grace_ms} ms must be more than 0 and at most the lease ({lease_ms} ms)"
                    )));
                }
            }
            Command::SettleLease { .. } => {}
            // Agent and controller commands: the names and text come from an agent's
            // session, so they get the same checks as an operator's.
            Command::ServersDown { servers } => {
                if servers.len() > crate::SERVERS_DOWN_MAX {
                    return Err(Refusal::invalid(format!(
                        "{} servers declared down in one command; the limit is {}",
                        servers.len(),
                        crate::SERVERS_DOWN_MAX
                    )));
                }
                for s in servers {
                    check_name("server", s)?;
                }
            }
            Command::Released { role, server, .. } => {
                check_name("role", role)?;
                check_name("server", server)?;
            }
            Command::RoleFailed {
                role,
                server,
                reason,
                ..
            } => {
                check_name("role", role)?;
                check_name("server", server)?;
                check_text("failure reason", reason, crate::REASON_MAX_BYTES)?;
            }
            Command::Tick => {}
            Command::ReportFenced {
                server,
                instance,
                number,
                role,
                epoch,
                ..
            } => {
                check_name("server", server)?;
                check_name("role", role)?;
                check_text("agent instance id", instance, INSTANCE_ID_MAX)?;
                if *number == 0 {
                    return Err(Refusal::invalid(
                        "fence report number 0: agents number their fences from 1",
                    ));
                }
                if *epoch == 0 {
                    return Err(Refusal::invalid(format!(
                        "fence report of role {role:?} at epoch 0: no role ever runs at epoch 0"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Why a role moved. Recorded in the history with every assignment change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    /// The active server's lease ran out.
    LeaseExpired,
    /// The active server was drained for scheduled downtime.
    Maintenance,
    /// A higher-priority server came back and failback is on.
    Failback,
    /// The role crashed too often on its server.
    RoleFailed,
    /// An operator moved the role.
    Operator,
    /// First placement, or an edit of the role's list or kind.
    Placement,
    /// An agent reported that it fenced itself: it stopped the role because no renewal
    /// was acknowledged within its lease. Moves nothing (the event's `to` is empty);
    /// a failover, if any, has its own event.
    Fenced,
}

impl Cause {
    pub fn as_str(&self) -> &'static str {
        match self {
            Cause::LeaseExpired => "lease_expired",
            Cause::Maintenance => "maintenance",
            Cause::Failback => "failback",
            Cause::RoleFailed => "role_failed",
            Cause::Operator => "operator",
            Cause::Placement => "placement",
            Cause::Fenced => "fenced",
        }
    }
}

/// What an accepted command did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// One line for the operator: "role cam-1 created".
    pub summary: String,
}

/// The class of a refusal; maps one to one onto gRPC status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalKind {
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    /// A second agent instance under a server name that a live instance holds.
    ServerHeld,
    InvalidArgument,
}

/// A deterministic refusal: the command was invalid against the state it met, and changed
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

impl Refusal {
    pub fn not_found(m: impl Into<String>) -> Self {
        Refusal {
            kind: RefusalKind::NotFound,
            message: m.into(),
        }
    }
    pub fn exists(m: impl Into<String>) -> Self {
        Refusal {
            kind: RefusalKind::AlreadyExists,
            message: m.into(),
        }
    }
    pub fn precondition(m: impl Into<String>) -> Self {
        Refusal {
            kind: RefusalKind::FailedPrecondition,
            message: m.into(),
        }
    }
    pub fn held(m: impl Into<String>) -> Self {
        Refusal {
            kind: RefusalKind::ServerHeld,
            message: m.into(),
        }
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Refusal {
            kind: RefusalKind::InvalidArgument,
            message: m.into(),
        }
    }
}
