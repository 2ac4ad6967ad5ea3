//! The sled database and every read and write of it. Both store handles share one `Disk`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, decode, encode, log_index, log_key, show_key};
use crate::mark::{self, MarkFile};
use crate::{
    CACHE_CAPACITY_BYTES, ENTRY_MAX_BYTES, FORMAT, LOCK_WAIT, LogEntry, LogId, PURGE_BATCH_KEYS,
    SNAPSHOT_MAX_BYTES, SnapshotMeta, StoreError, StoredMembership, Vote,
};

/// Tree of log entries, keyed by big-endian index.
const TREE_LOG: &str = "log";
/// Tree of Raft metadata.
const TREE_META: &str = "meta";
/// Tree of the stored snapshot.
const TREE_SM: &str = "sm";

/// `meta` keys.
const KEY_FORMAT: &str = "format";
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_IDENTITY: &str = "identity";
const KEY_PEERS_WITH_DATA: &str = "peers_with_data";
/// `sm` keys.
const KEY_SNAPSHOT_META: &str = "snapshot_meta";
const KEY_SNAPSHOT_DATA: &str = "snapshot_data";

/// What a snapshot's bytes hold (inside the checksum frame).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotPayload {
    /// The last log entry the state includes; must equal the metadata's `last_log_id`.
    pub last_applied: Option<LogId>,
    /// The membership in force at `last_applied`; must equal the metadata's.
    pub last_membership: StoredMembership,
    /// The directory's replicated state.
    pub state: baton_core::State,
}

/// Who this store belongs to: written when the node first starts with it, and the
/// cluster id once the node learns it. A node refuses a store of another node id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The node id the store was created for.
    pub node_id: u64,
    /// The cluster the node belongs to; `None` until it learns it.
    pub cluster_id: Option<String>,
}

/// The stored snapshot as read back from disk.
pub(crate) struct StoredSnapshot {
    /// Its metadata (verified).
    pub meta: SnapshotMeta,
    /// Its bytes, checksum frame included (verified).
    pub data: Vec<u8>,
    /// The decoded bytes, when the caller asked for them.
    pub payload: Option<SnapshotPayload>,
}

/// What [`crate::LogStore::verify`] found; logged by [`crate::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Log entries read and checked.
    pub entries: u64,
    /// First log entry present (after the purged prefix).
    pub first_log_id: Option<LogId>,
    /// Last log entry present.
    pub last_log_id: Option<LogId>,
    /// Last log id purged from the front of the log.
    pub last_purged: Option<LogId>,
    /// Last committed log id saved.
    pub committed: Option<LogId>,
    /// The saved vote.
    pub vote: Option<Vote>,
    /// Metadata of the stored snapshot.
    pub snapshot: Option<SnapshotMeta>,
    /// Whose store this is.
    pub identity: Option<Identity>,
}

impl Verified {
    /// True when the store holds no Raft state at all: no vote, no log, no snapshot.
    pub fn is_blank(&self) -> bool {
        self.vote.is_none()
            && self.entries == 0
            && self.last_purged.is_none()
            && self.committed.is_none()
            && self.snapshot.is_none()
    }

    /// Whether this store still holds everything Raft needs that the store `before` held,
    /// as when a damaged sled file rolls the store back to an earlier consistent point.
    ///
    /// - The vote and the last log id are the same. Within one node's history, the same
    ///   last log id means the same log before it (Raft's log matching property).
    /// - The saved committed log id may only be older: openraft saves it as a hint so a
    ///   restart re-applies sooner, and a node that lost it learns the commit point from the
    ///   leader. A newer one would claim commits that never happened.
    /// - The purge point and the snapshot may be older, as long as the snapshot still
    ///   covers every purged entry: an older snapshot with the log after it rebuilds the same
    ///   state. A rolled-back compaction loses nothing.
    pub fn keeps_everything_of(&self, before: &Verified) -> bool {
        let snapshot_at = |v: &Verified| v.snapshot.as_ref().and_then(|s| s.last_log_id);
        let index = |l: Option<LogId>| l.map(|l| l.index);
        self.vote == before.vote
            && self.last_log_id == before.last_log_id
            && self.committed <= before.committed
            && self.last_purged <= before.last_purged
            && snapshot_at(self) <= snapshot_at(before)
            && index(snapshot_at(self)) >= index(self.last_purged)
    }
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn id(x: &Option<LogId>) -> String {
            x.as_ref().map_or("none".into(), |l| l.to_string())
        }
        write!(
            f,
            "{} log entries ({}..={}), last purged {}, committed {}, vote {}, snapshot {}, {}",
            self.entries,
            id(&self.first_log_id),
            id(&self.last_log_id),
            id(&self.last_purged),
            id(&self.committed),
            self.vote.as_ref().map_or("none".into(), |v| v.to_string()),
            self.snapshot
                .as_ref()
                .map_or("none".into(), |s| format!("at {}", id(&s.last_log_id))),
            match &self.identity {
                None => "no identity".to_string(),
                Some(i) => format!(
                    "node {} of cluster {}",
                    i.node_id,
                    i.cluster_id.as_deref().unwrap_or("(not known yet)")
                ),
            },
        )
    }
}

/// Open a sled database, waiting up to [`LOCK_WAIT`] for its file lock.
///
/// sled releases the lock only when its last internal reference goes, and its background
/// threads hold references for a moment after the last handle is dropped. So a store
/// reopened in the same process (a node restarted in a test, or after a Raft shutdown) can
/// find the lock still held; it is retried. Another live process holding the directory
/// still fails, after the wait.
pub(crate) fn open_db(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The open sled database of one node.
pub(crate) struct Disk {
    /// The data directory (canonical when possible), for messages.
    dir: PathBuf,
    /// The database; flushing it makes every tree durable.
    db: sled::Db,
    /// Log entries.
    log: sled::Tree,
    /// Vote, committed, last purged, format marker.
    meta: sled::Tree,
    /// The stored snapshot.
    sm: sled::Tree,
    /// The high-water mark, outside sled (see `crate::mark`). Written by the one task
    /// that writes the log and the vote; the lock only makes `Disk` shareable.
    mark: std::sync::Mutex<MarkFile>,
    /// sled's data file (`db`), opened only to fsync it: sled's own flush on Linux ends
    /// with `sync_file_range`, which neither flushes the disk's write cache nor records
    /// the file's new size, so it is not durable by itself (see [`Disk::sync`]).
    db_file: File,
    /// sled's blob files (`blobs/`, large values and pages) already fsynced; sled writes
    /// them without any sync.
    synced_blobs: std::sync::Mutex<BTreeSet<OsString>>,
    /// fsync-family calls this store made on sled's files (the mark counts its own).
    syncs: AtomicU64,
    /// Test fault: the next syncs fail as a disk error would.
    #[cfg(test)]
    pub(crate) fail_syncs: std::sync::atomic::AtomicBool,
}

/// sled's data file inside its directory (sled 0.34's layout).
const SLED_DATA_FILE: &str = "db";
/// sled's directory of blob files.
const SLED_BLOB_DIR: &str = "blobs";

impl Disk {
    /// Open sled in `dir` and check (or write) the format marker.
    pub(crate) fn open(dir: &Path) -> Result<Disk, StoreError> {
        // sled's own corruption checks are corruption too: the node must refuse and the
        // operator must be told how to re-add it, as for our checksums.
        let open_err = |source: sled::Error| match source {
            sled::Error::Corruption { .. } => StoreError::Corrupt {
                dir: dir.to_path_buf(),
                what: "sled's own files".into(),
                detail: source.to_string(),
            },
            source => StoreError::Open {
                dir: dir.to_path_buf(),
                source,
            },
        };
        let db = open_db(
            &sled::Config::new()
                .path(dir)
                .cache_capacity(CACHE_CAPACITY_BYTES),
        )
        .map_err(open_err)?;
        let log = db.open_tree(TREE_LOG).map_err(open_err)?;
        let meta = db.open_tree(TREE_META).map_err(open_err)?;
        let sm = db.open_tree(TREE_SM).map_err(open_err)?;
        let db_path = dir.join(SLED_DATA_FILE);
        let db_file = File::open(&db_path).map_err(|source| StoreError::Sync {
            path: db_path,
            doing: "opening sled's data file".into(),
            source,
        })?;
        let disk = Disk {
            dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
            db,
            log,
            meta,
            sm,
            mark: std::sync::Mutex::new(MarkFile::load(dir)),
            db_file,
            synced_blobs: Default::default(),
            syncs: AtomicU64::new(0),
            #[cfg(test)]
            fail_syncs: Default::default(),
        };
        disk.check_format()?;
        Ok(disk)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_format(&self) -> Result<(), StoreError> {
        match self.get_meta::<String>(KEY_FORMAT)? {
            Some(found) if found == FORMAT => Ok(()),
            Some(found) => Err(StoreError::Format {
                dir: self.dir.clone(),
                found,
                expected: FORMAT,
            }),
            None if self.log.is_empty() && self.meta.is_empty() && self.sm.is_empty() => {
                self.put_meta(KEY_FORMAT, FORMAT)?;
                self.sync("flushing the format marker")
            }
            None => Err(self.corrupt(
                meta_what(KEY_FORMAT),
                "the format marker is missing although the store holds data",
            )),
        }
    }

    // --- errors ---------------------------------------------------------------------------

    pub(crate) fn io(&self, doing: &str, source: sled::Error) -> StoreError {
        StoreError::Io {
            dir: self.dir.clone(),
            doing: doing.to_string(),
            source,
        }
    }

    pub(crate) fn corrupt(&self, what: impl Into<String>, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            dir: self.dir.clone(),
            what: what.into(),
            detail: detail.into(),
        }
    }

    // --- durability -----------------------------------------------------------------------

    /// Make everything written so far durable, off the async threads (see [`Disk::sync`]).
    pub(crate) async fn flush(self: &Arc<Self>, doing: &'static str) -> Result<(), StoreError> {
        let disk = self.clone();
        tokio::task::spawn_blocking(move || disk.sync(doing))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Make everything written so far durable. Blocking.
    ///
    /// sled's `flush` writes its buffers and, on Linux, waits for them with
    /// `sync_file_range`: the pages reach the device, but neither the device's write cache
    /// nor the file's metadata (its size grows as sled appends) is made durable, and blob
    /// files are not synced at all. So after it: `fdatasync` of sled's data file, and an
    /// fsync of every blob file not synced yet (and of their directory when one is new).
    pub(crate) fn sync(&self, doing: &str) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.io(doing, e))?;
        let failed = |path: PathBuf, source: std::io::Error| StoreError::Sync {
            path,
            doing: doing.to_string(),
            source,
        };
        #[cfg(test)]
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(failed(
                self.dir.join(SLED_DATA_FILE),
                std::io::Error::other("injected fsync failure"),
            ));
        }
        self.db_file
            .sync_data()
            .map_err(|e| failed(self.dir.join(SLED_DATA_FILE), e))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_blobs(doing)
    }

    /// fsync the blob files written since the last call, and their directory if any is new.
    fn sync_blobs(&self, doing: &str) -> Result<(), StoreError> {
        let blobs = self.dir.join(SLED_BLOB_DIR);
        let failed = |path: PathBuf, source: std::io::Error| StoreError::Sync {
            path,
            doing: doing.to_string(),
            source,
        };
        let listing = match std::fs::read_dir(&blobs) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(failed(blobs, e)),
        };
        let mut synced = self.synced_blobs.lock().map_err(|_| StoreError::Poisoned)?;
        let mut present = BTreeSet::new();
        let mut new = false;
        for entry in listing {
            let entry = entry.map_err(|e| failed(blobs.clone(), e))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()).and_then(|f| f.sync_all()) {
                    Ok(()) => {}
                    // sled removed it meanwhile (a rewritten page): nothing to keep.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(failed(entry.path(), e)),
                }
                self.syncs.fetch_add(1, Ordering::Relaxed);
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&blobs)
                .and_then(|d| d.sync_all())
                .map_err(|e| failed(blobs.clone(), e))?;
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        *synced = present;
        Ok(())
    }

    /// fsync-family calls this store has made so far (sled's files and the mark).
    pub(crate) fn syncs(&self) -> u64 {
        let mark = self.mark.lock().map(|m| m.syncs).unwrap_or(0);
        self.syncs.load(Ordering::Relaxed) + mark
    }

    /// fsync everything written so far, on this thread (offline tools, seeding).
    pub(crate) fn flush_sync(&self, doing: &str) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.io(doing, e))
    }

    // --- the high-water mark ---------------------------------------------------------------

    /// Check sled's vote and last log id (`verified`) against the mark, then raise the
    /// mark to them (they were just read from disk, so they are durable). Refuses a store
    /// that rolled back.
    pub(crate) fn check_mark(&self, verified: &Verified) -> Result<(), StoreError> {
        let last_log = match (verified.last_log_id, verified.last_purged) {
            (Some(l), Some(p)) if l.index <= p.index => Some(p),
            (Some(l), _) => Some(l),
            (None, p) => p,
        };
        let mut m = self.mark.lock().map_err(|_| StoreError::Poisoned)?;
        mark::check(m.current(), verified.vote.as_ref(), last_log.as_ref())
            .map_err(|detail| self.corrupt("the store as a whole", detail))?;
        m.write(verified.vote, last_log)
    }

    /// Record `vote` as made durable (after the flush that made it so). Blocking.
    pub(crate) fn mark_vote(&self, vote: Vote) -> Result<(), StoreError> {
        let mut m = self.mark.lock().map_err(|_| StoreError::Poisoned)?;
        let last_log = m.current().last_log;
        m.write(Some(vote), last_log)
    }

    /// Record `last_log` as the end of the durable log: after the flush when the log
    /// grew, *before* the truncation when it shrinks. Blocking.
    pub(crate) fn mark_last_log(&self, last_log: Option<LogId>) -> Result<(), StoreError> {
        let mut m = self.mark.lock().map_err(|_| StoreError::Poisoned)?;
        let vote = m.current().vote;
        m.write(vote, last_log)
    }

    /// The id the log ends at once everything from `index` on is removed.
    pub(crate) fn last_id_before(&self, index: u64) -> Result<Option<LogId>, StoreError> {
        let purged = self.last_purged()?;
        let Some(prev) = index.checked_sub(1) else {
            return Ok(None);
        };
        if purged.is_some_and(|p| p.index >= prev) {
            return Ok(purged);
        }
        Ok(self
            .entries(prev, Some(index))?
            .pop()
            .map(|e| e.log_id)
            .or(purged))
    }

    // --- meta -----------------------------------------------------------------------------

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let Some(value) = self
            .meta
            .get(key)
            .map_err(|e| self.io(&format!("reading meta/{key}"), e))?
        else {
            return Ok(None);
        };
        decode(&value)
            .map(Some)
            .map_err(|detail| self.corrupt(meta_what(key), detail))
    }

    fn put_meta<T: Serialize + ?Sized>(&self, key: &str, v: &T) -> Result<(), StoreError> {
        let value = encode(key, v)?;
        self.meta
            .insert(key, value)
            .map_err(|e| self.io(&format!("writing meta/{key}"), e))?;
        Ok(())
    }

    pub(crate) fn vote(&self) -> Result<Option<Vote>, StoreError> {
        self.get_meta(KEY_VOTE)
    }

    /// Write the vote (not flushed).
    pub(crate) fn put_vote(&self, vote: &Vote) -> Result<(), StoreError> {
        self.put_meta(KEY_VOTE, vote)
    }

    pub(crate) fn committed(&self) -> Result<Option<LogId>, StoreError> {
        self.get_meta(KEY_COMMITTED)
    }

    /// Write (or clear) the committed log id (not flushed).
    pub(crate) fn put_committed(&self, committed: Option<&LogId>) -> Result<(), StoreError> {
        match committed {
            Some(c) => self.put_meta(KEY_COMMITTED, c),
            None => self
                .meta
                .remove(KEY_COMMITTED)
                .map(|_| ())
                .map_err(|e| self.io("clearing meta/committed", e)),
        }
    }

    pub(crate) fn identity(&self) -> Result<Option<Identity>, StoreError> {
        self.get_meta(KEY_IDENTITY)
    }

    /// Write the identity (not flushed).
    pub(crate) fn put_identity(&self, identity: &Identity) -> Result<(), StoreError> {
        self.put_meta(KEY_IDENTITY, identity)
    }

    pub(crate) fn peers_with_data(&self) -> Result<BTreeSet<u64>, StoreError> {
        Ok(self.get_meta(KEY_PEERS_WITH_DATA)?.unwrap_or_default())
    }

    /// Write the set of peers known to hold data (not flushed).
    pub(crate) fn put_peers_with_data(&self, peers: &BTreeSet<u64>) -> Result<(), StoreError> {
        self.put_meta(KEY_PEERS_WITH_DATA, peers)
    }

    pub(crate) fn last_purged(&self) -> Result<Option<LogId>, StoreError> {
        self.get_meta(KEY_LAST_PURGED)
    }

    /// Write the last purged log id (not flushed).
    pub(crate) fn put_last_purged(&self, log_id: &LogId) -> Result<(), StoreError> {
        self.put_meta(KEY_LAST_PURGED, log_id)
    }

    // --- log ------------------------------------------------------------------------------

    /// Decode one stored log entry and check that it belongs under its key.
    fn decode_entry(&self, key: &[u8], value: &[u8]) -> Result<LogEntry, StoreError> {
        let index = log_index(key).map_err(|detail| {
            self.corrupt(
                format!("a key in tree `{TREE_LOG}` ({})", show_key(key)),
                detail,
            )
        })?;
        let what = || {
            format!(
                "log entry {index} (tree `{TREE_LOG}`, key {})",
                show_key(key)
            )
        };
        let entry: LogEntry = decode(value).map_err(|detail| self.corrupt(what(), detail))?;
        if entry.log_id.index != index {
            return Err(self.corrupt(
                what(),
                format!("it holds log id {} instead of index {index}", entry.log_id),
            ));
        }
        Ok(entry)
    }

    /// Entries with `start <= index < end` (`end = None`: to the end of the log).
    pub(crate) fn entries(
        &self,
        start: u64,
        end: Option<u64>,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let iter = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => self.log.range(log_key(start)..log_key(end)),
            None => self.log.range(log_key(start)..),
        };
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(|e| self.io("reading the log", e))?;
            out.push(self.decode_entry(&key, &value)?);
        }
        Ok(out)
    }

    /// Log id of the last entry present.
    pub(crate) fn last_entry_id(&self) -> Result<Option<LogId>, StoreError> {
        match self
            .log
            .last()
            .map_err(|e| self.io("reading the last log entry", e))?
        {
            Some((key, value)) => Ok(Some(self.decode_entry(&key, &value)?.log_id)),
            None => Ok(None),
        }
    }

    /// Write `entries` as one atomic batch (not flushed). Returns how many.
    pub(crate) fn append(
        &self,
        entries: impl IntoIterator<Item = LogEntry>,
    ) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for entry in entries {
            let value = encode("a log entry", &entry)?;
            if value.len() > ENTRY_MAX_BYTES {
                return Err(StoreError::TooLarge {
                    what: format!("log entry {}", entry.log_id),
                    len: value.len(),
                    max: ENTRY_MAX_BYTES,
                });
            }
            batch.insert(&log_key(entry.log_id.index), value);
            n += 1;
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| self.io("appending to the log", e))?;
        Ok(n)
    }

    /// Remove entries with index `>= index` (not flushed).
    pub(crate) fn remove_from(&self, index: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(log_key(index)..).keys() {
            batch.remove(key.map_err(|e| self.io("truncating the log", e))?);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| self.io("truncating the log", e))
    }

    /// Remove entries with index `<= index`, in batches of [`PURGE_BATCH_KEYS`] (not
    /// flushed). The caller has made the purge mark durable first, so a crash half-way
    /// leaves only entries that [`Disk::finish_purge`] removes on the next open.
    pub(crate) fn remove_upto(&self, index: u64) -> Result<(), StoreError> {
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for key in self
                .log
                .range(..=log_key(index))
                .keys()
                .take(PURGE_BATCH_KEYS)
            {
                batch.remove(key.map_err(|e| self.io("purging the log", e))?);
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            self.log
                .apply_batch(batch)
                .map_err(|e| self.io("purging the log", e))?;
        }
    }

    /// Complete a purge interrupted by a crash: remove entries at or below the purge mark.
    pub(crate) fn finish_purge(&self) -> Result<(), StoreError> {
        let Some(purged) = self.last_purged()? else {
            return Ok(());
        };
        let first = self
            .log
            .first()
            .map_err(|e| self.io("reading the first log entry", e))?;
        if let Some((key, _)) = first
            && log_index(&key).is_ok_and(|i| i <= purged.index)
        {
            tracing::info!(dir = %self.dir.display(), "finishing an interrupted purge up to {purged}");
            self.remove_upto(purged.index)?;
            self.sync("flushing the finished purge")?;
        }
        Ok(())
    }

    // --- snapshot -------------------------------------------------------------------------

    /// Store a snapshot (metadata and bytes in one atomic batch; not flushed).
    pub(crate) fn put_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(KEY_SNAPSHOT_META, encode("snapshot metadata", meta)?);
        batch.insert(KEY_SNAPSHOT_DATA, data);
        self.sm
            .apply_batch(batch)
            .map_err(|e| self.io("storing the snapshot", e))
    }

    /// Metadata of the stored snapshot, verified.
    pub(crate) fn snapshot_meta(&self) -> Result<Option<SnapshotMeta>, StoreError> {
        let Some(value) = self
            .sm
            .get(KEY_SNAPSHOT_META)
            .map_err(|e| self.io("reading the snapshot metadata", e))?
        else {
            return Ok(None);
        };
        decode(&value)
            .map(Some)
            .map_err(|detail| self.corrupt(sm_what(KEY_SNAPSHOT_META), detail))
    }

    /// The stored snapshot, checksums verified; `payload` also decodes its contents and
    /// checks them against the metadata.
    pub(crate) fn snapshot(&self, payload: bool) -> Result<Option<StoredSnapshot>, StoreError> {
        let meta = self.snapshot_meta()?;
        let data = self
            .sm
            .get(KEY_SNAPSHOT_DATA)
            .map_err(|e| self.io("reading the snapshot", e))?;
        let (meta, data) = match (meta, data) {
            (None, None) => return Ok(None),
            (Some(meta), Some(data)) => (meta, data.to_vec()),
            (Some(_), None) => {
                return Err(self.corrupt(
                    sm_what(KEY_SNAPSHOT_DATA),
                    "it is missing although the snapshot metadata is present",
                ));
            }
            (None, Some(_)) => {
                return Err(self.corrupt(
                    sm_what(KEY_SNAPSHOT_META),
                    "it is missing although the snapshot data is present",
                ));
            }
        };
        let what = || {
            format!(
                "{} of snapshot {}",
                sm_what(KEY_SNAPSHOT_DATA),
                meta.snapshot_id
            )
        };
        if data.len() > SNAPSHOT_MAX_BYTES {
            return Err(self.corrupt(
                what(),
                format!(
                    "it is {} bytes, over the limit of {SNAPSHOT_MAX_BYTES}",
                    data.len()
                ),
            ));
        }
        let payload = if payload {
            let p = decode_snapshot(&meta, &data).map_err(|detail| self.corrupt(what(), detail))?;
            Some(p)
        } else {
            codec::unframe(&data).map_err(|detail| self.corrupt(what(), detail))?;
            None
        };
        Ok(Some(StoredSnapshot {
            meta,
            data,
            payload,
        }))
    }

    // --- verify ---------------------------------------------------------------------------

    /// Read and check everything: the metadata, every log entry (checksum, decoding, key,
    /// contiguity, terms never going back) and the snapshot (checksums, decoding, agreement
    /// with its metadata). Returns the decoded snapshot too, for restoring the state machine.
    ///
    /// Meant for a store nobody is writing to (open, or an offline check): a concurrent
    /// append or purge may make it report a false hole.
    pub(crate) fn verify_full(&self) -> Result<(Verified, Option<SnapshotPayload>), StoreError> {
        self.check_format()?;
        let vote = self.vote()?;
        let committed = self.committed()?;
        let last_purged = self.last_purged()?;
        let identity = self.identity()?;
        self.peers_with_data()?;

        let mut entries = 0u64;
        let mut first: Option<LogId> = None;
        let mut prev: Option<LogId> = None;
        for item in self.log.iter() {
            let (key, value) = item.map_err(|e| self.io("reading the log", e))?;
            let entry = self.decode_entry(&key, &value)?;
            let id = entry.log_id;
            if last_purged.is_some_and(|p| id.index <= p.index) {
                // Left by a purge interrupted by a crash; `finish_purge` removes it.
                continue;
            }
            let what = || format!("log entry {} (tree `{TREE_LOG}`)", id.index);
            match prev {
                None => {
                    if let Some(p) = last_purged
                        && id.index != p.index + 1
                    {
                        return Err(self.corrupt(
                            what(),
                            format!(
                                "the log was purged up to {p}, so it must continue at index {}, \
                                 but its first entry is {}: entries are missing",
                                p.index + 1,
                                id.index
                            ),
                        ));
                    }
                    first = Some(id);
                }
                Some(prev) => {
                    if id.index != prev.index + 1 {
                        return Err(self.corrupt(
                            what(),
                            format!(
                                "the log has a hole: entry {} is followed by entry {} \
                                 (entries {}..={} are missing)",
                                prev.index,
                                id.index,
                                prev.index + 1,
                                id.index - 1
                            ),
                        ));
                    }
                    if id.leader_id.term < prev.leader_id.term {
                        return Err(self.corrupt(
                            what(),
                            format!(
                                "its term {} is lower than the term {} of entry {}",
                                id.leader_id.term, prev.leader_id.term, prev.index
                            ),
                        ));
                    }
                }
            }
            prev = Some(id);
            entries += 1;
        }

        let snapshot = self.snapshot(true)?;
        let (snapshot_meta, payload) = match snapshot {
            Some(s) => (Some(s.meta), s.payload),
            None => (None, None),
        };
        Ok((
            Verified {
                entries,
                first_log_id: first,
                last_log_id: prev,
                last_purged,
                committed,
                vote,
                snapshot: snapshot_meta,
                identity,
            },
            payload,
        ))
    }

    /// [`Disk::verify_full`] without the decoded snapshot.
    pub(crate) fn verify(&self) -> Result<Verified, StoreError> {
        self.verify_full().map(|(v, _)| v)
    }
}

/// Decode snapshot bytes and check them against their metadata. The error is the detail.
pub(crate) fn decode_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Result<SnapshotPayload, String> {
    let payload: SnapshotPayload = decode(data)?;
    if payload.last_applied != meta.last_log_id {
        return Err(format!(
            "its contents end at {:?} but its metadata says {:?}",
            payload.last_applied, meta.last_log_id
        ));
    }
    if payload.last_membership != meta.last_membership {
        return Err(format!(
            "its contents hold membership {} but its metadata says {}",
            payload.last_membership, meta.last_membership
        ));
    }
    if payload.state.revision != meta.last_log_id.map_or(0, |l| l.index) {
        return Err(format!(
            "its state is at revision {} but its metadata ends at {:?}",
            payload.state.revision, meta.last_log_id
        ));
    }
    Ok(payload)
}

fn meta_what(key: &str) -> String {
    format!("the {key} record (tree `{TREE_META}`, key `{key}`)")
}

fn sm_what(key: &str) -> String {
    let label = if key == KEY_SNAPSHOT_META {
        "the snapshot metadata"
    } else {
        "the snapshot data"
    };
    format!("{label} (tree `{TREE_SM}`, key `{key}`)")
}

/// Raw access for the fault-injection helpers in [`crate::fault`].
pub(crate) mod raw {
    use super::*;

    /// Which tree and key a fault target lives at.
    pub(crate) fn locate(target: &crate::fault::Target) -> (&'static str, Vec<u8>) {
        use crate::fault::Target;
        match target {
            Target::LogEntry(i) => (TREE_LOG, log_key(*i).to_vec()),
            Target::Vote => (TREE_META, KEY_VOTE.as_bytes().to_vec()),
            Target::Committed => (TREE_META, KEY_COMMITTED.as_bytes().to_vec()),
            Target::LastPurged => (TREE_META, KEY_LAST_PURGED.as_bytes().to_vec()),
            Target::Format => (TREE_META, KEY_FORMAT.as_bytes().to_vec()),
            Target::Identity => (TREE_META, KEY_IDENTITY.as_bytes().to_vec()),
            Target::PeersWithData => (TREE_META, KEY_PEERS_WITH_DATA.as_bytes().to_vec()),
            Target::SnapshotMeta => (TREE_SM, KEY_SNAPSHOT_META.as_bytes().to_vec()),
            Target::SnapshotData => (TREE_SM, KEY_SNAPSHOT_DATA.as_bytes().to_vec()),
        }
    }
}
