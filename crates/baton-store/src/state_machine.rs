//! The state machine and its snapshots: openraft's `RaftStateMachine` and
//! `RaftSnapshotBuilder`.

use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use baton_core::State;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::watch;

use crate::codec::encode;
use crate::disk::{Disk, SnapshotPayload, decode_snapshot};
use crate::{
    LogEntry, LogId, Response, SNAPSHOT_MAX_BYTES, Snapshot, SnapshotMeta, StorageError,
    StoreError, StoredMembership, TypeConfig,
};

/// Apply one log entry to `state`: how an openraft entry becomes `baton-core`'s
/// deterministic apply. Shared with the simulator's in-memory store, so both apply
/// exactly alike. Returns the entry's response and, for a membership entry, the
/// membership to record as the last one applied.
pub fn apply_entry(state: &mut State, entry: LogEntry) -> (Response, Option<StoredMembership>) {
    let index = entry.log_id.index;
    match entry.payload {
        EntryPayload::Blank => {
            state.apply_blank(index);
            (Vec::new(), None)
        }
        EntryPayload::Normal(entry) => (state.apply_all(index, &entry), None),
        EntryPayload::Membership(membership) => {
            // Voters of a joint configuration count once each.
            let voters = u32::try_from(membership.voter_ids().count()).unwrap_or(u32::MAX);
            state.apply_membership(index, voters);
            let last = StoredMembership::new(Some(entry.log_id), membership);
            (Vec::new(), Some(last))
        }
    }
}

/// The state machine. A cheap handle: clones share the same state (openraft uses a clone
/// as the snapshot builder, the node keeps one to read the state).
#[derive(Clone)]
pub struct StateMachineStore {
    /// Everything shared between the clones.
    inner: Arc<Inner>,
}

struct Inner {
    /// The database, for snapshots.
    disk: Arc<Disk>,
    /// The directory's replicated state, readable by the rest of the node. Lock order:
    /// `state` before `applied`, so that a snapshot sees the two consistently.
    state: Arc<RwLock<State>>,
    /// openraft's bookkeeping of what `state` includes.
    applied: Mutex<Applied>,
    /// Carries the last applied log index to watchers (the directory's revision).
    applied_tx: watch::Sender<u64>,
    /// Serializes storing snapshots, so that a snapshot built from an older state never
    /// replaces a newer one installed meanwhile.
    snapshot_lock: tokio::sync::Mutex<()>,
    /// Makes snapshot ids unique within this process.
    snapshot_seq: AtomicU64,
}

/// What the state includes, in openraft's terms.
#[derive(Clone, Debug, Default)]
struct Applied {
    /// The last log entry applied to the state.
    last_applied: Option<LogId>,
    /// The last membership applied (openraft reads it back on start).
    last_membership: StoredMembership,
}

impl StateMachineStore {
    /// A state machine restored from the (verified) stored snapshot, or empty.
    pub(crate) fn restore(disk: Arc<Disk>, snapshot: Option<SnapshotPayload>) -> Self {
        let (state, applied) = match snapshot {
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
        StateMachineStore {
            inner: Arc::new(Inner {
                disk,
                state: Arc::new(RwLock::new(state)),
                applied: Mutex::new(applied),
                applied_tx,
                snapshot_lock: tokio::sync::Mutex::new(()),
                snapshot_seq: AtomicU64::new(0),
            }),
        }
    }

    /// The applied state. Hold the lock briefly and never across an `.await`; the apply
    /// loop waits for it. A panic inside apply poisons it: readers may use
    /// `PoisonError::into_inner` (the state is only ever replaced whole), or use [`Self::read`].
    pub fn state(&self) -> Arc<RwLock<State>> {
        self.inner.state.clone()
    }

    /// Run `f` on the applied state under the read lock.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let guard = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f(&guard)
    }

    /// A receiver of the last applied log index, updated after every applied batch and
    /// every installed snapshot. Starts at the restored snapshot's index (0 if none).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.applied_tx.subscribe()
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.inner.applied().last_applied
    }

    /// The last membership applied.
    pub fn last_membership(&self) -> StoredMembership {
        self.inner.applied().last_membership
    }

    /// Apply one entry outside Raft (reading a stopped node's log, see `crate::backup`).
    pub(crate) fn apply_entry(&self, entry: LogEntry) -> Result<(), StoreError> {
        self.inner.apply_one(entry).map(|_| ())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.inner.disk.dir()
    }

    /// What `build_snapshot` does to store what it built (for tests of its race with
    /// `install_snapshot`).
    #[cfg(test)]
    pub(crate) async fn store_snapshot_unless_older(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
    ) -> Result<bool, StoreError> {
        self.inner.store_snapshot(meta, data, false).await
    }
}

impl Inner {
    fn applied(&self) -> Applied {
        self.applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Apply one entry under both locks.
    fn apply_one(&self, entry: LogEntry) -> Result<Response, StoreError> {
        let mut state = self.state.write().map_err(|_| StoreError::Poisoned)?;
        let mut applied = self.applied.lock().map_err(|_| StoreError::Poisoned)?;
        let log_id = entry.log_id;
        let (response, membership) = apply_entry(&mut state, entry);
        if let Some(m) = membership {
            applied.last_membership = m;
        }
        applied.last_applied = Some(log_id);
        Ok(response)
    }

    /// Store a snapshot durably. Unless `force`, a snapshot older than the stored one is
    /// not stored (returns false).
    async fn store_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
        force: bool,
    ) -> Result<bool, StoreError> {
        let _serial = self.snapshot_lock.lock().await;
        if !force
            && let Some(stored) = self.disk.snapshot_meta()?
            && stored.last_log_id.map(|l| l.index) > meta.last_log_id.map(|l| l.index)
        {
            tracing::debug!(
                "not storing snapshot {}: the stored snapshot {} is newer",
                meta.snapshot_id,
                stored.snapshot_id
            );
            return Ok(false);
        }
        self.disk.put_snapshot(meta, data)?;
        self.disk.flush("flushing the snapshot").await?;
        Ok(true)
    }

    fn next_snapshot_id(&self, last: Option<LogId>) -> String {
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        match last {
            Some(l) => format!("{}-{}-{unix_ms}-{seq}", l.leader_id.term, l.index),
            None => format!("empty-{unix_ms}-{seq}"),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Copy under the locks (short), encode outside them, off the async threads.
        let payload = {
            let state = self
                .inner
                .state
                .read()
                .map_err(|_| StoreError::Poisoned.write_snapshot())?;
            let applied = self.inner.applied();
            SnapshotPayload {
                last_applied: applied.last_applied,
                last_membership: applied.last_membership,
                state: state.clone(),
            }
        };
        let meta = SnapshotMeta {
            last_log_id: payload.last_applied,
            last_membership: payload.last_membership.clone(),
            snapshot_id: self.inner.next_snapshot_id(payload.last_applied),
        };
        let data = tokio::task::spawn_blocking(move || encode("the snapshot", &payload))
            .await
            .map_err(|e| StoreError::Task(e.to_string()).write_snapshot())?
            .map_err(StoreError::write_snapshot)?;
        if data.len() > SNAPSHOT_MAX_BYTES {
            return Err(StoreError::TooLarge {
                what: format!("snapshot {}", meta.snapshot_id),
                len: data.len(),
                max: SNAPSHOT_MAX_BYTES,
            }
            .write_snapshot());
        }
        self.inner
            .store_snapshot(&meta, &data, false)
            .await
            .map_err(StoreError::write_snapshot)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.inner.applied();
        Ok((applied.last_applied, applied.last_membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut last = None;
        for entry in entries {
            let log_id = entry.log_id;
            // One entry per lock acquisition, so readers get in between entries.
            let response = self.inner.apply_one(entry).map_err(|e| e.apply(log_id))?;
            responses.push(response);
            last = Some(log_id.index);
        }
        if let Some(index) = last {
            self.inner.applied_tx.send_replace(index);
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
        if data.len() > SNAPSHOT_MAX_BYTES {
            return Err(StoreError::BadSnapshot(format!(
                "snapshot {} is {} bytes, over the limit of {SNAPSHOT_MAX_BYTES}",
                meta.snapshot_id,
                data.len()
            ))
            .write_snapshot());
        }
        let m = meta.clone();
        let (data, decoded) = tokio::task::spawn_blocking(move || {
            let decoded = decode_snapshot(&m, &data);
            (data, decoded)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()).write_snapshot())?;
        let payload = decoded.map_err(|detail| {
            StoreError::BadSnapshot(format!("snapshot {}: {detail}", meta.snapshot_id))
                .write_snapshot()
        })?;
        // Durable first: once the state is replaced, openraft may purge the log behind it.
        self.inner
            .store_snapshot(meta, &data, true)
            .await
            .map_err(StoreError::write_snapshot)?;
        let index = payload.last_applied.map_or(0, |l| l.index);
        {
            let mut state = self
                .inner
                .state
                .write()
                .map_err(|_| StoreError::Poisoned.write_snapshot())?;
            let mut applied = self
                .inner
                .applied
                .lock()
                .map_err(|_| StoreError::Poisoned.write_snapshot())?;
            *state = payload.state;
            applied.last_applied = payload.last_applied;
            applied.last_membership = payload.last_membership;
        }
        self.inner.applied_tx.send_replace(index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored = self
            .inner
            .disk
            .snapshot(false)
            .map_err(StoreError::read_snapshot)?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
