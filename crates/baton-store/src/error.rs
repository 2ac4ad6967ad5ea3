//! The crate's error type, and its conversion into openraft's `StorageError`.

use std::path::PathBuf;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use crate::StorageError;

/// What an operator must do when a node's data is corrupt. Part of every
/// [`StoreError::Corrupt`] message (with `DIR` replaced by the data directory).
pub const REMEDY: &str = "this node's data cannot be trusted: stop the node, move DIR aside, \
and re-add the node to the cluster (baton cluster remove-node ID against the other nodes, \
then start it empty with --join ADDR instead of --peers: an empty node started with \
--peers whose peers know it held data refuses to start)";

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled could not open the data directory (missing permissions, another process holds
    /// its lock, or a damaged sled file).
    #[error(
        "cannot open the data directory {}: {source}; unless another process holds it, \
         its files are damaged and {}",
        dir.display(),
        remedy(dir)
    )]
    Open {
        /// The data directory.
        dir: PathBuf,
        /// sled's reason.
        source: sled::Error,
    },
    /// A sled operation failed after open (disk full, I/O error).
    #[error("storage I/O failed in {} while {doing}: {source}", dir.display())]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// What the store was doing, for the operator.
        doing: String,
        /// sled's reason.
        source: sled::Error,
    },
    /// Something stored does not verify. The node must not serve.
    #[error("corrupt data: {what} in {}: {detail}; {}", dir.display(), remedy(dir))]
    Corrupt {
        /// The data directory.
        dir: PathBuf,
        /// Which value: tree and key, or log index.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The directory was written by an incompatible version of this crate.
    #[error(
        "the data directory {} holds format {found:?}, this build reads {expected:?}; \
         use a matching baton build, or move the directory aside and re-add the node",
        dir.display()
    )]
    Format {
        /// The data directory.
        dir: PathBuf,
        /// The format marker found.
        found: String,
        /// The format marker this build writes.
        expected: &'static str,
    },
    /// A snapshot received from the leader is damaged or inconsistent. This node's disk is
    /// not at fault.
    #[error("received snapshot is invalid: {0}")]
    BadSnapshot(String),
    /// A backup file does not verify (see `crate::backup`). Nothing was changed.
    #[error("not a usable backup: {0}")]
    BadBackup(String),
    /// A new store cannot be seeded (see `crate::backup::seed`), or a survivor's store
    /// holds nothing to recover.
    #[error("cannot seed the data directory {}: {detail}", dir.display())]
    BadSeed {
        /// The data directory.
        dir: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Something is bigger than this crate allows (see the limits in the crate docs).
    #[error("{what} is {len} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value could not be encoded (a bug, not a disk problem).
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// serde_json's reason.
        source: serde_json::Error,
    },
    /// The high-water mark file could not be written (see the `mark` module).
    #[error("cannot write the high-water mark {}: {source}", path.display())]
    Mark {
        /// The mark file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file of the store could not be made durable (fsync): sled's data file, one of
    /// its blob files, or their directory.
    #[error("cannot make {} durable (fsync) while {doing}: {source}", path.display())]
    Sync {
        /// The file or directory.
        path: PathBuf,
        /// What the store was doing.
        doing: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The in-memory state lock was poisoned by a panic while applying an entry.
    #[error("the state machine lock is poisoned (an earlier apply panicked)")]
    Poisoned,
    /// A blocking task (snapshot encoding or decoding) failed.
    #[error("a background task failed: {0}")]
    Task(String),
}

fn remedy(dir: &std::path::Path) -> String {
    REMEDY.replace("DIR", &dir.display().to_string())
}

impl StoreError {
    /// True when the node's stored data is damaged and the node must be re-added.
    pub fn is_corruption(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }

    /// Wrap into openraft's error for `subject`, keeping this error's message.
    pub(crate) fn into_raft(self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError {
        if self.is_corruption() {
            tracing::error!("{self}");
        }
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }

    pub(crate) fn read_logs(self) -> StorageError {
        self.into_raft(ErrorSubject::Logs, ErrorVerb::Read)
    }
    pub(crate) fn write_logs(self) -> StorageError {
        self.into_raft(ErrorSubject::Logs, ErrorVerb::Write)
    }
    pub(crate) fn read_vote(self) -> StorageError {
        self.into_raft(ErrorSubject::Vote, ErrorVerb::Read)
    }
    pub(crate) fn write_vote(self) -> StorageError {
        self.into_raft(ErrorSubject::Vote, ErrorVerb::Write)
    }
    pub(crate) fn read_store(self) -> StorageError {
        self.into_raft(ErrorSubject::Store, ErrorVerb::Read)
    }
    pub(crate) fn write_store(self) -> StorageError {
        self.into_raft(ErrorSubject::Store, ErrorVerb::Write)
    }
    pub(crate) fn read_snapshot(self) -> StorageError {
        self.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Read)
    }
    pub(crate) fn write_snapshot(self) -> StorageError {
        self.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Write)
    }
    pub(crate) fn apply(self, log_id: crate::LogId) -> StorageError {
        self.into_raft(ErrorSubject::Apply(log_id), ErrorVerb::Write)
    }
}
