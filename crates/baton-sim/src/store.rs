//! An in-memory Raft store that models durability, for the simulation.
//!
//! Each directory node has one [`Disk`], owned by the simulation harness so that it
//! outlives the node's crashes. A disk has two layers:
//! - `written`: what the node has written (the page cache): readable at once;
//! - `flushed`: what a flush made durable.
//!
//! A flush takes [`FLUSH_LATENCY`] of simulated time and then makes everything written so
//! far durable. A crash (the host is dropped by turmoil) loses `written`; the restarted
//! node starts from `flushed` ([`Disk::reopen`]). The store follows the same rules as the
//! sled store of `baton-store`: `append` reports the entries persisted only after the
//! flush, `save_vote`, `truncate`, `purge` and snapshots flush before returning, and
//! `save_committed` does not flush.
//!
//! Planted bug "ack before flush" ([`Disk::new`] with `ack_before_flush`): `append`
//! reports the entries persisted at once and leaves them to a background flush every
//! 500 ms, which is what sled does by default and is not durability.
//!
//! The state machine keeps [`baton_core::State`] in memory; it reaches the disk only in
//! snapshots, and on restart openraft re-applies the durable log, as with sled. Entries
//! are applied by the sled store's own [`baton_store::apply_entry`] (which calls
//! `baton-core`'s deterministic apply): only where the bytes live is simulated.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use baton_core::State;
use baton_directory::AppliedState;
use baton_store::{
    LogEntry, LogId, Response, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
    Vote,
};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    StorageIOError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Simulated time one flush (fsync) takes.
pub const FLUSH_LATENCY: Duration = Duration::from_millis(1);
/// Background flush period when the "ack before flush" bug is planted (sled's default).
pub const LAZY_FLUSH_PERIOD: Duration = Duration::from_millis(500);

/// One layer of a disk: everything a node stores.
#[derive(Clone, Debug, Default)]
struct Layer {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    log: BTreeMap<u64, LogEntry>,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

#[derive(Default)]
struct DiskInner {
    written: Layer,
    flushed: Layer,
}

/// A node's disk; survives the node's crashes. Cheap to clone (shared).
#[derive(Clone)]
pub struct Disk {
    inner: Arc<Mutex<DiskInner>>,
    ack_before_flush: bool,
    /// Reports snapshot events to the run's trace.
    trace: Arc<dyn Fn(String) + Send + Sync>,
}

/// What a snapshot's bytes hold.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    state: State,
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, msg: String) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, openraft::AnyError::error(msg)),
    }
}

impl Disk {
    pub fn new(ack_before_flush: bool, trace: Arc<dyn Fn(String) + Send + Sync>) -> Self {
        Disk {
            inner: Arc::default(),
            ack_before_flush,
            trace,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut DiskInner) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g)
    }

    /// After a crash: everything not flushed is gone.
    pub fn reopen(&self) {
        self.with(|d| d.written = d.flushed.clone());
    }

    /// Make everything written so far durable, after the simulated fsync latency.
    async fn flush(&self) {
        tokio::time::sleep(FLUSH_LATENCY).await;
        self.with(|d| d.flushed = d.written.clone());
    }

    /// Durable log length (for traces and tests).
    pub fn flushed_last_index(&self) -> Option<u64> {
        self.with(|d| d.flushed.log.keys().next_back().copied())
    }

    /// Open the store on this disk: a log store, a state machine restored from the stored
    /// snapshot, and the state machine's read view for the node.
    pub fn open(&self) -> (MemLog, MemSm, Arc<dyn AppliedState>) {
        if self.ack_before_flush {
            // The planted bug's background flush (sled's default period).
            let disk = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LAZY_FLUSH_PERIOD).await;
                    disk.with(|d| d.flushed = d.written.clone());
                }
            });
        }
        let snapshot = self.with(|d| d.written.snapshot.clone());
        let (state, applied) = match snapshot
            .and_then(|(_, data)| serde_json::from_slice::<SnapshotPayload>(&data).ok())
        {
            Some(p) => (
                p.state,
                Applied {
                    last_applied: p.last_applied,
                    last_membership: p.last_membership,
                },
            ),
            None => (State::default(), Applied::default()),
        };
        let (applied_tx, _) = watch::channel(applied.last_applied.map_or(0, |l| l.index));
        let sm = MemSm {
            disk: self.clone(),
            inner: Arc::new(SmInner {
                state: Arc::new(RwLock::new(state)),
                applied: Mutex::new(applied),
                applied_tx,
            }),
        };
        (MemLog { disk: self.clone() }, sm.clone(), Arc::new(sm))
    }
}

/// The Raft log and vote on a simulated disk.
#[derive(Clone)]
pub struct MemLog {
    disk: Disk,
}

impl RaftLogReader<TypeConfig> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(s) => Bound::Included(*s),
            Bound::Excluded(s) => Bound::Excluded(*s),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(s) => Bound::Included(*s),
            Bound::Excluded(s) => Bound::Excluded(*s),
            Bound::Unbounded => Bound::Unbounded,
        };
        if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
            (start, end)
            && s > e
        {
            return Ok(Vec::new());
        }
        Ok(self.disk.with(|d| {
            d.written
                .log
                .range((start, end))
                .map(|(_, e)| e.clone())
                .collect()
        }))
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(self.disk.with(|d| {
            let last = d.written.log.values().next_back().map(|e| e.log_id);
            LogState {
                last_purged_log_id: d.written.last_purged,
                last_log_id: last.or(d.written.last_purged),
            }
        }))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.disk.with(|d| d.written.vote = Some(*vote));
        self.disk.flush().await;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.disk.with(|d| d.written.vote))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.disk.with(|d| d.written.committed = committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.disk.with(|d| d.written.committed))
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
        self.disk.with(|d| {
            for e in entries {
                d.written.log.insert(e.log_id.index, e);
            }
        });
        if self.disk.ack_before_flush {
            // Planted bug: reported persisted while only in the page cache.
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        self.disk.flush().await;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.disk.with(|d| {
            let _ = d.written.log.split_off(&log_id.index);
        });
        self.disk.flush().await;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.disk.with(|d| {
            if d.written
                .last_purged
                .is_some_and(|p| p.index >= log_id.index)
            {
                return;
            }
            d.written.last_purged = Some(log_id);
            d.written.log = d.written.log.split_off(&(log_id.index + 1));
        });
        self.disk.flush().await;
        Ok(())
    }
}

#[derive(Clone, Debug, Default)]
struct Applied {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

struct SmInner {
    state: Arc<RwLock<State>>,
    applied: Mutex<Applied>,
    applied_tx: watch::Sender<u64>,
}

/// The state machine: [`State`] in memory, snapshots on the simulated disk.
#[derive(Clone)]
pub struct MemSm {
    disk: Disk,
    inner: Arc<SmInner>,
}

impl AppliedState for MemSm {
    fn state(&self) -> Arc<RwLock<State>> {
        self.inner.state.clone()
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.applied_tx.subscribe()
    }
}

impl MemSm {
    fn applied(&self) -> Applied {
        self.inner
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MemSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let payload = {
            let state = self
                .inner
                .state
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let applied = self.applied();
            SnapshotPayload {
                last_applied: applied.last_applied,
                last_membership: applied.last_membership,
                state: state.clone(),
            }
        };
        let meta = SnapshotMeta {
            last_log_id: payload.last_applied,
            last_membership: payload.last_membership.clone(),
            snapshot_id: format!("{:?}", payload.last_applied.map(|l| l.index)),
        };
        let data = serde_json::to_vec(&payload).map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Write,
                e.to_string(),
            )
        })?;
        self.disk
            .with(|d| d.written.snapshot = Some((meta.clone(), data.clone())));
        self.disk.flush().await;
        (self.disk.trace)(format!(
            "built a snapshot at {:?}",
            meta.last_log_id.map(|l| l.index)
        ));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MemSm {
    type SnapshotBuilder = MemSm;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let a = self.applied();
        Ok((a.last_applied, a.last_membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut last = None;
        for entry in entries {
            let mut state = self
                .inner
                .state
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let mut applied = self
                .inner
                .applied
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let log_id = entry.log_id;
            // The sled store's own apply, so both stores apply alike.
            let (response, membership) = baton_store::apply_entry(&mut state, entry);
            if let Some(m) = membership {
                applied.last_membership = m;
            }
            applied.last_applied = Some(log_id);
            responses.push(response);
            last = Some(log_id.index);
        }
        if let Some(i) = last {
            self.inner.applied_tx.send_replace(i);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let payload: SnapshotPayload = serde_json::from_slice(&data).map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e.to_string(),
            )
        })?;
        self.disk
            .with(|d| d.written.snapshot = Some((meta.clone(), data)));
        self.disk.flush().await;
        (self.disk.trace)(format!(
            "installed a snapshot at {:?}",
            meta.last_log_id.map(|l| l.index)
        ));
        let index = payload.last_applied.map_or(0, |l| l.index);
        {
            let mut state = self
                .inner
                .state
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let mut applied = self
                .inner
                .applied
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *state = payload.state;
            applied.last_applied = payload.last_applied;
            applied.last_membership = payload.last_membership;
        }
        self.inner.applied_tx.send_replace(index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.disk.with(|d| {
            d.written.snapshot.clone().map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            })
        }))
    }
}
