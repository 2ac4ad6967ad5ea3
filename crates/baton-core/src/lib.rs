//! # baton-core: the directory's domain, as pure functions
//!
//! Everything the directory *decides* lives here: which servers and roles exist, which
//! server runs each role, with which epoch, and why. Nothing here does I/O, reads a clock
//! or spawns a task: time arrives as numbers inside commands, so every decision can be
//! replayed and tested exhaustively.
//!
//! ## The replicated state machine
//!
//! The directory is a Raft log of [`Command`]s. Each entry is applied with
//! [`State::apply`], a deterministic function of (state, log index, entry): every node
//! that applies the same log reaches the same state, byte for byte. An entry that makes no
//! sense (an unknown role, a duplicate server, a bad order) is a *refusal*: a typed,
//! deterministic result that leaves the state exactly as it was. Refusals are returned to
//! the client; they are never errors of the node. Failures of the node itself (I/O,
//! corruption) never reach this crate.
//!
//! ## Placement
//!
//! A role has an ordered server list (priority order). Its active server is the first
//! *eligible* server: up (its agent holds a lease), not in maintenance, able to run the
//! role's kind, and not quarantined for this role. Placement runs inside `apply`, after
//! every command, so it is part of the replicated state and never depends on which node
//! computes it. It is *sticky*: a running role stays where it is while that server stays
//! eligible, unless failback is on and a higher-priority server has been eligible for
//! the role's failback delay.
//!
//! ## Epochs (invariant 1, single active)
//!
//! Every assignment of a role to a server takes a fresh epoch from one counter shared by
//! all roles, so an epoch names exactly one (role, server) assignment and is never reused,
//! even if a role is deleted and created again. A move always gets a larger epoch than
//! every one before it. A role process is started with its epoch; anything that compares
//! epochs (a journal, a database) can fence an older holder.
//!
//! A role moves in one of two ways:
//! - **Failover**: the server was declared down (its lease ran out plus a grace). Its agent
//!   has fenced itself by then (see `baton-agent`), so the next server is assigned at once.
//! - **Graceful handover** (maintenance, failback, operator move, list edits): the role is
//!   first *released*: it leaves the old server's assignment set, the old agent stops the
//!   process and acknowledges with [`Command::Released`], and only then is the next server
//!   assigned, with a new epoch. If the old agent never acknowledges, its lease runs out and
//!   the failover path completes the move.
//!
//! ## Liveness is not replicated per heartbeat
//!
//! Renewals live in the leader's memory; only their consequences are Raft writes:
//! [`Command::RegisterAgent`] when an agent (re)appears and [`Command::ServersDown`] when
//! the controller finds a lease expired. [`controller`] holds those decisions as pure
//! functions of (last-seen times, now).

pub mod command;
pub mod controller;
pub mod fences;
pub mod history;
pub mod lease;
pub mod names;
mod placement;
pub mod readiness;
pub mod requests;
pub mod state;

pub use command::{
    AgentInstance, Cause, Command, Entry, Outcome, Refusal, RefusalKind, WRITES_PER_ENTRY_MAX,
    Write,
};
pub use fences::{FENCE_NUMBERS_KEPT, FenceReports};
pub use history::{Position, ResumeGap, Trimmed};
pub use lease::Fence;
pub use readiness::{Readiness, Standby};
pub use requests::{REQUEST_ID_MAX, REQUESTS_KEPT, Requests, check_request_id};
pub use state::{Event, Release, Role, RoleState, Server, ServerSet, ServerStatus, State};

/// The kind a role gets when none is given.
pub const DEFAULT_KIND: &str = "default";
/// Longest name of a server, role or kind, in bytes.
pub const NAME_MAX_BYTES: usize = 64;
/// Longest database name, in bytes.
pub const DATABASE_MAX_BYTES: usize = 256;
/// Longest failure reason an agent may report, in bytes. It is kept in the history and
/// printed to operators; the agent's own reasons are one short line.
pub const REASON_MAX_BYTES: usize = 512;
/// Most servers one role may list: placement scans the list on every apply.
pub const SERVERS_PER_ROLE_MAX: usize = 32;
/// Most kinds one server may advertise.
pub const KINDS_PER_SERVER_MAX: usize = 32;
/// Most servers and most roles the directory holds (each). A bound on snapshot size and on
/// the work of one apply.
pub const OBJECTS_MAX: usize = 100_000;
/// History events kept in the replicated state; older ones are dropped (and so compacted
/// away with the next snapshot).
pub const HISTORY_MAX_DEFAULT: usize = 1_000;
/// Bounds of a configured history size.
pub const HISTORY_MAX_RANGE: std::ops::RangeInclusive<u32> = 10..=1_000_000;

/// Leases the cluster accepts: long enough for an election to fit inside (with room),
/// short enough that a failover still happens within the hour. Agents refuse any other.
pub const LEASE_MS_RANGE: std::ops::RangeInclusive<u64> = 500..=3_600_000;
/// The lease a new cluster starts with, and the one an agent assumes until the directory
/// states its own. Two seconds: a directory leader failure (detection, election, agents
/// renewing with the new leader) fits inside an agent's fence margin at this lease with
/// the default election timeouts (docs/benchmarks.md, "Directory failover").
pub const LEASE_MS_DEFAULT: u64 = 2_000;
/// Most servers one [`Command::ServersDown`] may declare down. With names of at most
/// [`NAME_MAX_BYTES`] this keeps the entry near a megabyte, far below what the log
/// accepts; the directory splits a longer declaration into several entries.
pub const SERVERS_DOWN_MAX: usize = 10_000;
/// Voters the directory needs before a role may list, or run on, a main server (one that
/// hosts a directory node): with fewer, the directory has no failover of its own.
pub const MAIN_VOTERS_MIN: u32 = 3;
/// Longest failback delay accepted: a day.
pub const FAILBACK_DELAY_MAX_MS: u64 = 86_400_000;
/// Most directory time one entry may add ([`Entry::advance_ms`]); `apply` clamps larger
/// values. Directory time is the leader's monotonic time measured between its proposals,
/// and while a timer is pending the leader proposes at least every
/// [`TIMER_TICK_EVERY_MS`], so a healthy leader never reaches this bound. What does reach
/// it is a measurement that cannot be trusted to be time the directory watched pass: a
/// leader process stalled for minutes (a frozen VM whose monotonic clock jumps on resume),
/// or a bug. Without a bound one such entry would end every pending failback delay and
/// quarantine at once; with it, one entry shortens them by at most these 10 s. (While no
/// timer is pending the leader proposes nothing, and the time it does not pass on is
/// simply not counted: no timer was running to count it.)
pub const ADVANCE_MAX_MS: u64 = 10_000;
/// While a timer is pending, the leader proposes a `Tick` at least this often (half of
/// [`ADVANCE_MAX_MS`], leaving room for a slow write), so the time it measures reaches the
/// log without being clamped.
pub const TIMER_TICK_EVERY_MS: u64 = ADVANCE_MAX_MS / 2;
