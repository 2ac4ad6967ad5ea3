//! Errors of a directory node, and how refusals cross the wire.
//!
//! Two kinds, as in toydb: *deterministic* refusals come from `baton-core`'s apply and
//! go back to the client as a gRPC status (`NOT_FOUND`, `ALREADY_EXISTS`,
//! `FAILED_PRECONDITION`, `INVALID_ARGUMENT`); *local* failures (I/O, corruption, a fatal
//! Raft error) are [`DirectoryError`]s that stop the node.

use baton_core::{Refusal, RefusalKind};
use baton_proto::{LEADER_ADDR_KEY, LEADER_ID_KEY, REASON_KEY};
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("storage: {0}")]
    Store(#[from] baton_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
    /// This node must not start with this data directory or these peers.
    #[error("{0}")]
    Identity(String),
    #[error("joining the cluster through {addr} failed: {message}")]
    Join { addr: String, message: String },
}

/// The reason of a session refused because a live agent instance holds its server name;
/// the agent exits on it rather than retrying.
pub const SERVER_HELD: &str = baton_proto::SERVER_HELD;

/// A status with the machine-readable reason attached.
pub fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    let mut s = Status::new(code, message);
    if let Ok(v) = reason.parse() {
        s.metadata_mut().insert(REASON_KEY, v);
    }
    s
}

/// The machine-readable reason of a status, if it carries one.
pub fn reason(s: &Status) -> Option<&str> {
    s.metadata().get(REASON_KEY).and_then(|v| v.to_str().ok())
}

pub fn invalid(message: impl Into<String>) -> Status {
    status(Code::InvalidArgument, "INVALID_ARGUMENT", message)
}

/// OUT_OF_RANGE: a watcher asked to resume from before what the history still holds.
pub fn history_trimmed(gap: &baton_core::ResumeGap) -> Status {
    status(Code::OutOfRange, "HISTORY_TRIMMED", gap.to_string())
}

pub fn unavailable(message: impl Into<String>) -> Status {
    status(Code::Unavailable, "UNAVAILABLE", message)
}

/// Whether the leader's Raft membership address is also its client address, so that a
/// node may name it to clients. With a separate peer port it is not (clients cannot use
/// the peer port; only nodes get in): then a node names the address the leader
/// advertised in its own status, once its readiness check has learnt it
/// (`Node::leader_for_clients`), and until then the leader's id only (clients try their
/// other configured nodes; any of them forwards). Cleared by [`crate::start`] for a node
/// with a separate peer port; one such node per process.
pub static HINT_LEADER_ADDRESS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(true);

/// The refusal of a node that does not lead. `leader`: the leader's id and the address
/// clients reach it at, where known (`Node::leader_for_clients`); both go in the
/// metadata, so that a client follows at once.
pub fn not_leader(leader: Option<(u64, Option<String>)>) -> Status {
    let mut s = match &leader {
        Some((id, Some(addr))) => {
            unavailable(format!("not the leader; the leader is node {id} at {addr}"))
        }
        Some((id, None)) => unavailable(format!("not the leader; the leader is node {id}")),
        None => unavailable("not the leader, and no leader is known (election in progress?)"),
    };
    if let Some((id, addr)) = leader {
        hint_leader(s.metadata_mut(), id, addr.as_deref());
    }
    s
}

/// Name the leader in `metadata`: its id, and the address clients reach it at when
/// known. On a refusal, where to go instead; on a reply a follower served by forwarding,
/// where to go next time (baton-client switches to it, sparing the extra hop).
pub fn hint_leader(metadata: &mut tonic::metadata::MetadataMap, id: u64, addr: Option<&str>) {
    if let Ok(v) = id.to_string().parse() {
        metadata.insert(LEADER_ID_KEY, v);
    }
    if let Some(Ok(v)) = addr.map(str::parse) {
        metadata.insert(LEADER_ADDR_KEY, v);
    }
}

/// A deterministic refusal from apply, as a status.
pub fn refusal(r: &Refusal) -> Status {
    let (code, reason) = match r.kind {
        RefusalKind::NotFound => (Code::NotFound, "NOT_FOUND"),
        RefusalKind::AlreadyExists => (Code::AlreadyExists, "ALREADY_EXISTS"),
        RefusalKind::FailedPrecondition => (Code::FailedPrecondition, "FAILED_PRECONDITION"),
        RefusalKind::ServerHeld => (Code::FailedPrecondition, SERVER_HELD),
        RefusalKind::InvalidArgument => (Code::InvalidArgument, "INVALID_ARGUMENT"),
    };
    status(code, reason, r.message.clone())
}
