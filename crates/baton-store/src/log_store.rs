//! The Raft log and vote: openraft's `RaftLogStorage` and `RaftLogReader`.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};

use crate::disk::Disk;
use crate::{Identity, LogEntry, LogId, StorageError, StoreError, TypeConfig, Verified, Vote};

/// The Raft log and the vote. A cheap handle: clones share the same database.
///
/// openraft calls the writing methods from one task, one at a time, and clones the handle
/// as a log reader for its replication tasks.
#[derive(Clone)]
pub struct LogStore {
    /// The shared database (also used by the state machine).
    disk: Arc<Disk>,
    /// Figures of the durable path for the node's metrics, shared by every clone.
    stats: Arc<LogStats>,
}

/// What the log's durable path reports to metrics: the committed index openraft saved
/// last, and how long each append took to become durable (write, fsync, high-water mark),
/// which is the disk's share of every commit.
#[derive(Default)]
pub struct LogStats {
    /// Index of the last committed log id saved (0 before any).
    committed_index: AtomicU64,
    /// Called with each append's time to durability, once a node installs it.
    on_append: OnceLock<Box<dyn Fn(Duration) + Send + Sync>>,
}

impl LogStats {
    /// Index of the last committed entry openraft saved here (0 before any). It may lag
    /// the leader's commit by a heartbeat on a follower, as openraft saves it lazily.
    pub fn committed_index(&self) -> u64 {
        self.committed_index.load(Ordering::Relaxed)
    }

    /// Have `f` called with every append's time to durability. Only the first call
    /// installs an observer (one node owns a store); later ones are ignored.
    pub fn observe_appends(&self, f: impl Fn(Duration) + Send + Sync + 'static) {
        let _ = self.on_append.set(Box::new(f));
    }

    fn appended(&self, took: Duration) {
        if let Some(f) = self.on_append.get() {
            f(took);
        }
    }
}

impl LogStore {
    pub(crate) fn new(disk: Arc<Disk>) -> Self {
        LogStore {
            disk,
            stats: Arc::default(),
        }
    }

    /// The figures of this store's durable path, for metrics.
    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }

    /// The shared database, for tests that inject faults.
    #[cfg(test)]
    pub(crate) fn disk_for_tests(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.disk.dir()
    }

    /// Read and check everything stored: vote, committed, purge mark, every log entry
    /// (checksum, decoding, key, no holes, terms never going back) and the snapshot.
    /// [`crate::open`] does this already; use it for an offline check. On a store that is
    /// being written to it may report a false hole.
    pub fn verify(&self) -> Result<Verified, StoreError> {
        self.disk.verify()
    }

    /// fsync everything written so far (for a clean shutdown; every write that needs it
    /// flushes already).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.disk.flush("flushing on request").await
    }

    /// fsync-family calls this store has made since it was opened: sled's data file, its
    /// blob files, the high-water mark. One append costs two (the log, then the mark).
    pub fn fsyncs(&self) -> u64 {
        self.disk.syncs()
    }

    /// The saved vote (also available through openraft's `read_vote`).
    pub fn vote(&self) -> Result<Option<Vote>, StoreError> {
        self.disk.vote()
    }

    /// The saved committed log id.
    pub fn committed(&self) -> Result<Option<LogId>, StoreError> {
        self.disk.committed()
    }

    /// Whose store this is: the node id it was created for and the cluster id, once
    /// known. `None` for a store written before identities existed, or a new one.
    pub fn identity(&self) -> Result<Option<Identity>, StoreError> {
        self.disk.identity()
    }

    /// Write the identity and fsync it before returning.
    pub async fn save_identity(&self, identity: &Identity) -> Result<(), StoreError> {
        self.disk.put_identity(identity)?;
        self.disk.flush("flushing the identity").await
    }

    /// The peers that told this node they hold data of its cluster.
    pub fn peers_with_data(&self) -> Result<BTreeSet<u64>, StoreError> {
        self.disk.peers_with_data()
    }

    /// Record that `peer` holds data, fsynced before returning. Returns whether it was
    /// new.
    pub async fn add_peer_with_data(&self, peer: u64) -> Result<bool, StoreError> {
        let mut peers = self.disk.peers_with_data()?;
        if !peers.insert(peer) {
            return Ok(false);
        }
        self.disk.put_peers_with_data(&peers)?;
        self.disk.flush("flushing the peers with data").await?;
        Ok(true)
    }
}

/// Run blocking writes and fsyncs off the async runtime.
async fn blocking(
    f: impl FnOnce() -> Result<(), StoreError> + Send + 'static,
) -> Result<(), StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

/// `[start, end)` of a range of log indexes; `end = None` means "to the end of the log".
/// `None` when the range is empty.
fn index_range(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.checked_add(1),
        Bound::Excluded(e) => Some(*e),
        Bound::Unbounded => None,
    };
    match end {
        Some(e) if e <= start => None,
        _ => Some((start, end)),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let Some((start, end)) = index_range(&range) else {
            return Ok(Vec::new());
        };
        self.disk.entries(start, end).map_err(StoreError::read_logs)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged = self.disk.last_purged().map_err(StoreError::read_logs)?;
        let last = self.disk.last_entry_id().map_err(StoreError::read_logs)?;
        let last_log_id = match (last, last_purged) {
            (Some(l), Some(p)) if l.index <= p.index => Some(p),
            (Some(l), _) => Some(l),
            (None, p) => p,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.disk.put_vote(vote).map_err(StoreError::write_vote)?;
        // A vote forgotten in a crash lets this node vote twice in one term: durable, then
        // the mark raised, before returning.
        let (disk, vote) = (self.disk.clone(), *vote);
        blocking(move || {
            disk.sync("flushing the vote")?;
            disk.mark_vote(vote)
        })
        .await
        .map_err(StoreError::write_vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.disk.vote().map_err(StoreError::read_vote)
    }

    /// Written without a flush: see "Why flush before acknowledging" in the crate docs.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.disk
            .put_committed(committed.as_ref())
            .map_err(StoreError::write_store)?;
        if let Some(c) = committed {
            self.stats.committed_index.store(c.index, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed = self.disk.committed().map_err(StoreError::read_store)?;
        if let Some(c) = committed {
            self.stats.committed_index.store(c.index, Ordering::Relaxed);
        }
        Ok(committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Written as one atomic batch (readable at once), then fsynced, then the
        // high-water mark raised; only then are the entries reported as persisted
        // (invariant 2: nothing acknowledged before fsync, nor before the mark covers it).
        // Both syncs run in one blocking task: one hand-off per append, not two.
        let started = Instant::now();
        let mut last = None;
        if let Err(e) = self
            .disk
            .append(entries.into_iter().inspect(|e| last = Some(e.log_id)))
        {
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(e.write_logs());
        }
        let disk = self.disk.clone();
        let durable = blocking(move || {
            disk.sync("flushing appended log entries")?;
            if last.is_some() {
                disk.mark_last_log(last)?;
            }
            Ok(())
        });
        match durable.await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                self.stats.appended(started.elapsed());
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e.write_logs())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Lower the mark first: it must never claim more than the log holds.
        let before = self
            .disk
            .last_id_before(log_id.index)
            .map_err(StoreError::write_logs)?;
        let disk = self.disk.clone();
        blocking(move || disk.mark_last_log(before))
            .await
            .map_err(StoreError::write_logs)?;
        self.disk
            .remove_from(log_id.index)
            .map_err(StoreError::write_logs)?;
        self.disk
            .flush("flushing the truncated log")
            .await
            .map_err(StoreError::write_logs)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let current = self.disk.last_purged().map_err(StoreError::read_logs)?;
        if current.is_some_and(|c| c.index >= log_id.index) {
            return Ok(());
        }
        // The mark first, durably: the log must never look like it has a hole at its front.
        // A crash after this leaves entries at or below the mark, which open removes.
        self.disk
            .put_last_purged(&log_id)
            .map_err(StoreError::write_logs)?;
        self.disk
            .flush("flushing the purge mark")
            .await
            .map_err(StoreError::write_logs)?;
        self.disk
            .remove_upto(log_id.index)
            .map_err(StoreError::write_logs)?;
        self.disk
            .flush("flushing the purged log")
            .await
            .map_err(StoreError::write_logs)
    }
}

#[cfg(test)]
mod tests {
    use super::index_range;

    #[test]
    fn ranges() {
        assert_eq!(index_range(&(3..3)), None);
        assert_eq!(index_range(&(5..7)), Some((5, Some(7))));
        assert_eq!(index_range(&(0..)), Some((0, None)));
        assert_eq!(index_range(&(..=4)), Some((0, Some(5))));
        assert_eq!(index_range(&(2..=u64::MAX)), Some((2, None)));
        let (start, end) = (7, 3);
        assert_eq!(index_range(&(start..end)), None);
        assert_eq!(
            index_range(&(
                std::ops::Bound::Excluded(u64::MAX),
                std::ops::Bound::Unbounded
            )),
            None
        );
    }
}
