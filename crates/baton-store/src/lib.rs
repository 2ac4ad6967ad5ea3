//! # baton-store: the directory node's durable storage
//!
//! This crate holds the openraft type configuration ([`TypeConfig`]) and the two storage
//! halves openraft 0.9 (storage-v2) asks for: the Raft log ([`LogStore`]) and the state
//! machine with its snapshots ([`StateMachineStore`]). Both live in one sled database in the
//! node's data directory, opened with [`open`].
//!
//! ## What is stored where
//!
//! | tree   | key                          | value                                           |
//! | ------ | ---------------------------- | ----------------------------------------------- |
//! | `log`  | log index, 8 bytes big-endian | one `openraft::Entry<TypeConfig>`               |
//! | `meta` | `format`                     | the on-disk format marker ([`FORMAT`])          |
//! | `meta` | `vote`                       | the last vote this node made or accepted        |
//! | `meta` | `committed`                  | the last committed log id this node knew of     |
//! | `meta` | `last_purged`                | the last log id removed from the front of `log` |
//! | `meta` | `identity`                   | this node's id and its cluster's id ([`Identity`]) |
//! | `meta` | `peers_with_data`            | the peers that told this node they hold data    |
//! | `sm`   | `snapshot_meta`              | openraft's `SnapshotMeta` of the stored snapshot |
//! | `sm`   | `snapshot_data`              | the snapshot bytes, exactly as sent to followers |
//!
//! Big-endian keys sort like the numbers they encode, so sled's ordered iteration walks the
//! log in index order and "the last entry" is simply the tree's last key.
//!
//! The state machine ([`baton_core::State`]) itself lives in memory and is *not* written on
//! every apply. It reaches the disk only inside a snapshot: on open it is restored from the
//! stored snapshot and openraft re-applies the log from the snapshot's last log id up to the
//! committed log id it reads back from `meta`. So the applied state survives a restart as
//! long as the log between the snapshot and the committed index does, which is what purge
//! guarantees (openraft only purges behind a stored snapshot). Snapshots are built from the
//! state machine and the log is purged behind them, so the log, restart time and disk use
//! stay bounded however long the cluster runs.
//!
//! ## Why flush before acknowledging
//!
//! Invariant 2 of the design: nothing is acknowledged before it is fsynced on a quorum. A
//! follower's "I have these entries" is a vote towards the quorum, so it must be true after
//! a power cut. sled buffers writes in memory and syncs them in the background every 500 ms;
//! that is not durability. Nor is sled's own `flush` on Linux: it writes its buffers and
//! waits for them with `sync_file_range`, which neither flushes the device's write cache
//! nor records the file's new size, and it never syncs its blob files. So "flushed" in
//! this crate means `Disk::sync`: sled's `flush`, then `fdatasync` of sled's data file and
//! an fsync of every blob file not synced yet (and of their directory). Then:
//! - `append` writes the entries as one atomic sled batch, then syncs and raises the
//!   high-water mark (one blocking task for both), and only then reports the entries as
//!   persisted to openraft (`log_io_completed`). A failed sync reports the error, never
//!   `Ok`. openraft 0.9 waits for that report inside its core task before it does
//!   anything else (`RaftCore::append_to_log`), so reporting later from a background
//!   flusher would not let appends overlap; what one append costs is what a write costs
//!   (two fsyncs: the log, the mark), see docs/benchmarks.md, "Write path".
//! - `save_vote` syncs and raises the mark before it returns: a vote forgotten in a crash
//!   lets a node vote twice in one term.
//! - `truncate`, `purge`, `build_snapshot` and `install_snapshot` sync before returning.
//! - `save_committed` does *not* sync (it is on the path of every write and would add an
//!   fsync). That is safe: openraft only commits entries it has already appended, and
//!   our `append` syncs before it returns, so a durable committed id never points past the
//!   durable log; losing the latest committed id in a crash only means re-applying less on
//!   restart and learning the rest from the leader. The next sync of anything persists it,
//!   and so does dropping the last handle (sled flushes on drop): a clean shutdown keeps it.
//!
//! Syncs run in `spawn_blocking`, so the async runtime never blocks on the disk. Every
//! other sled call (insert, get, range scan) is made directly from the async
//! functions: they work on sled's in-memory page cache and IO buffers and take microseconds,
//! less than handing each one to `spawn_blocking` would cost. The slow, CPU-bound work
//! (encoding or decoding a whole snapshot) runs in `spawn_blocking`. [`open`] is synchronous
//! (it reads and checks the whole store); call it before serving, or from `spawn_blocking`.
//! [`LogStore::fsyncs`] counts the fsync-family calls the store made, for tests and
//! measurements.
//!
//! ## Checksum format
//!
//! Every value this crate writes, in every tree, is framed the same way:
//!
//! ```text
//! crc32(payload) as 4 bytes big-endian  ++  payload
//! ```
//!
//! where `crc32` is CRC-32/ISO-HDLC (crc32fast) and `payload` is JSON (serde_json).
//! Snapshot bytes carry the same frame *inside* them, so a snapshot is checked when it is
//! read from disk and again when a follower receives it. JSON rather than bincode: openraft's
//! types use serde attributes that a non-self-describing format may not round-trip, the
//! entries here are small, and a damaged value can be read by a person.
//!
//! ## How corruption is reported
//!
//! A value is *corrupt* when it is shorter than its 4-byte checksum, when the checksum does
//! not match, when the payload does not decode, or when it does not fit where it is stored
//! (a log entry under another index's key, a hole in the log, a term going backwards, a
//! snapshot whose metadata and contents disagree). Checks run on every read, and [`open`]
//! reads everything once ([`LogStore::verify`]) before the node may serve. Corruption is
//! never a panic: it is a [`StoreError::Corrupt`] naming the damaged value (tree, key or log
//! index) and the data directory, and telling the operator what to do: this node's data
//! cannot be trusted, so stop it, move the directory aside and re-add the node, which then
//! copies everything from the healthy majority. Raised inside openraft's storage calls, the
//! same message travels inside an `openraft::StorageError`, which stops the Raft node.
//!
//! ## Identity
//!
//! `meta/identity` records the node id the store was created for and, once the node
//! learns it, the id of its cluster ([`Identity`]); `meta/peers_with_data` the peers that
//! told this node they hold data of the cluster. Both use the same frame and are
//! fsynced before they are relied on. The directory node uses them to refuse a store of
//! another node, and to refuse to vote with an empty store in a cluster that knows this
//! node had data (a voter that forgot what it acknowledged can lose writes).
//!
//! ## Limits
//!
//! [`ENTRY_MAX_BYTES`] bounds one encoded log entry ([`COMMAND_MAX_BYTES`] the entry of
//! any valid command), [`SNAPSHOT_MAX_BYTES`] one snapshot
//! (built, received or read back), [`CACHE_CAPACITY_BYTES`] sled's page cache, and
//! [`PURGE_BATCH_KEYS`] the keys removed in one sled batch, [`LOCK_WAIT`] how long open
//! waits for the directory's lock.

pub mod backup;
mod codec;
mod disk;
mod error;
pub mod fault;
mod log_store;
mod mark;
mod state_machine;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

pub use disk::{Identity, Verified};
pub use error::{REMEDY, StoreError};
pub use log_store::{LogStats, LogStore};
pub use state_machine::{StateMachineStore, apply_entry};

openraft::declare_raft_types!(
    /// Baton's openraft type configuration.
    pub TypeConfig:
        D = baton_core::Entry,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// What applying one log entry returns to the node that proposed it: the outcome of each
/// write the entry carries, in order (`baton_core::State::apply_all`); one for an entry
/// of one write. Membership and blank entries carry no write and return none.
pub type Response = Vec<Result<baton_core::Outcome, baton_core::Refusal>>;
/// A Raft node with Baton's types.
pub type Raft = openraft::Raft<TypeConfig>;
/// A directory node's id.
pub type NodeId = u64;
/// A directory node's address as Raft stores it in the membership.
pub type Node = openraft::BasicNode;
/// The leader part of a log id: (term, node).
pub type CommittedLeaderId = openraft::CommittedLeaderId<NodeId>;
/// (leader, index) of one log entry.
pub type LogId = openraft::LogId<NodeId>;
/// A node's vote: term, candidate and whether it was committed.
pub type Vote = openraft::Vote<NodeId>;
/// One Raft log entry (not to be confused with [`baton_core::Entry`], its payload).
pub type LogEntry = openraft::Entry<TypeConfig>;
/// A membership configuration.
pub type Membership = openraft::Membership<NodeId, Node>;
/// A membership configuration with the log id it was found at.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// A snapshot: metadata plus bytes.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// openraft's storage error with Baton's node id.
pub type StorageError = openraft::StorageError<NodeId>;
/// Raft metrics with Baton's types.
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;

/// Raft RPC and API types instantiated with [`TypeConfig`].
pub mod rpc {
    use super::{Node, NodeId, TypeConfig};
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type RPCError<E = openraft::error::Infallible> =
        openraft::error::RPCError<NodeId, Node, RaftError<E>>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Node>;
}

/// Version of the on-disk layout, stored under `meta/format`. A directory written in
/// another format is refused rather than misread.
pub const FORMAT: &str = "baton-store/1";
/// Largest encoded log entry (checksum included). Commands are small (names are at most 64
/// bytes, lists are bounded by baton-core); this stops a runaway entry from reaching disk.
pub const ENTRY_MAX_BYTES: usize = 8 << 20;
/// Largest encoded log entry of any *valid* command (every kind at its limits stays below
/// it: the largest, a `servers_down` of 10,000 names, is about 1.3 MB; a test asserts
/// it). A node may refuse a command whose encoding is larger without decoding it: the
/// decode of an 8 MB payload blocks a thread for tens of milliseconds (hundreds in a
/// debug build), long enough to delay a leader's heartbeats.
pub const COMMAND_MAX_BYTES: usize = ENTRY_MAX_BYTES / 4;
/// Check, before proposing, that `entry` fits in the log: its encoding as a log entry,
/// with the largest possible log id and checksum included, is at most
/// [`ENTRY_MAX_BYTES`]. Returns that size. A proposer that skipped this would have the
/// append fail on every node, which stops Raft; refused here, the command changes
/// nothing. baton-core's validation already bounds every valid command far below the
/// limit (see the tests); this is the last line of defence.
pub fn check_entry_size(entry: &baton_core::Entry) -> Result<usize, StoreError> {
    let probe = LogEntry {
        log_id: LogId::new(
            openraft::CommittedLeaderId::new(u64::MAX, u64::MAX),
            u64::MAX,
        ),
        payload: openraft::EntryPayload::Normal(entry.clone()),
    };
    let len = codec::encode("a log entry", &probe)?.len();
    if len > ENTRY_MAX_BYTES {
        return Err(StoreError::TooLarge {
            what: format!("a {} command encoded as a log entry", entry.cmd.name()),
            len,
            max: ENTRY_MAX_BYTES,
        });
    }
    Ok(len)
}

/// Largest snapshot, built, received or read back. baton-core bounds the state to
/// 100,000 servers and roles; at a few kB each that stays well below this.
pub const SNAPSHOT_MAX_BYTES: usize = 1 << 30;
/// sled's page cache. sled's default is 1 GiB; the hot part of a directory (the log tail
/// and the metadata) is far smaller, and the node's memory should be bounded by its state.
pub const CACHE_CAPACITY_BYTES: u64 = 64 << 20;
/// Log keys removed per sled batch by `purge`, bounding the memory of one batch.
pub const PURGE_BATCH_KEYS: usize = 4096;
/// How long [`open`] waits for sled's file lock. sled's background threads release it a
/// moment after the last handle of a previous open in this process is dropped.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Open (or create) the store in `dir`, check all of it, and restore the state machine
/// from the stored snapshot.
///
/// Fails with [`StoreError::Corrupt`] if anything stored does not verify (see
/// [`LogStore::verify`]), with [`StoreError::Open`] if sled cannot open the directory (for
/// instance because another process holds it, after waiting [`LOCK_WAIT`]).
/// Synchronous: it reads the whole store.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    open_verified(dir).map(|(log, sm, _)| (log, sm))
}

/// [`open`], also returning what the check found (whether the store is blank, whose it
/// is).
pub fn open_verified(dir: &Path) -> Result<(LogStore, StateMachineStore, Verified), StoreError> {
    let disk = Arc::new(disk::Disk::open(dir)?);
    disk.finish_purge()?;
    let (verified, snapshot) = disk.verify_full()?;
    disk.check_mark(&verified)?;
    tracing::info!(dir = %disk.dir().display(), "storage verified: {verified}");
    let sm = StateMachineStore::restore(disk.clone(), snapshot);
    Ok((LogStore::new(disk), sm, verified))
}
