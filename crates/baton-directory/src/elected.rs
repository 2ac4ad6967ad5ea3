//! A node does not come back from a restart as the leader: it is elected again.
//!
//! openraft 0.9 restores a node whose stored vote is its own committed one as the leader
//! at once, without an election. Such a leader answers linearizable reads with the read
//! index `max(first entry of its term, commit index)`, and the commit index it restored
//! is only the last one it happened to store: it is written after entries are
//! acknowledged, and not fsynced. Entries it acknowledged after that point are in its log
//! but neither known committed nor covered by the read index, so a read served after the
//! restart, before replication commits them again, does not see acknowledged writes
//! (found by the end-to-end test that kills all three nodes: an acknowledged
//! `role delete` read back undone). The same stale state would feed the controller.
//!
//! [`Elected`] wraps the log storage and reports the node's own committed vote as not
//! committed when openraft reads it at startup, so the node starts as a follower and
//! becomes leader only by an election like any other candidate. An elected leader
//! appends a blank entry after every entry it holds and serves reads only once that one
//! is committed, so reads include everything acknowledged before the restart. Nothing
//! stored changes (the stored vote is never lowered), and the node still never votes for
//! another candidate in that term: an uncommitted vote for itself refuses them too.

use std::fmt::Debug;
use std::ops::RangeBounds;

use baton_store::{LogEntry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};

/// Log storage whose own committed vote reads back as not committed (see the module
/// docs). Everything else is passed through.
pub struct Elected<LS> {
    id: u64,
    inner: LS,
}

impl<LS> Elected<LS> {
    /// Wrap the log storage of node `id`.
    pub fn new(id: u64, inner: LS) -> Self {
        Elected { id, inner }
    }
}

/// The vote openraft starts from: `vote`, except that this node's own committed vote
/// (it was the leader when it stopped) is not committed.
pub fn startup_vote(id: u64, vote: Vote) -> Vote {
    if vote.is_committed() && vote.leader_id().voted_for() == Some(id) {
        Vote::new(vote.leader_id().get_term(), id)
    } else {
        vote
    }
}

impl<LS: RaftLogStorage<TypeConfig>> RaftLogReader<TypeConfig> for Elected<LS> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError> {
        self.inner.try_get_log_entries(range).await
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<LogEntry>, StorageError> {
        self.inner.limited_get_log_entries(start, end).await
    }
}

impl<LS: RaftLogStorage<TypeConfig>> RaftLogStorage<TypeConfig> for Elected<LS> {
    type LogReader = LS::LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.inner.get_log_state().await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.inner.get_log_reader().await
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.inner.save_vote(vote).await
    }

    /// openraft reads the vote once, at startup.
    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let id = self.id;
        Ok(self.inner.read_vote().await?.map(|v| startup_vote(id, v)))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.inner.save_committed(committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.inner.read_committed().await
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
        self.inner.append(entries, callback).await
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.inner.truncate(log_id).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.inner.purge(log_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_own_committed_vote_is_uncommitted() {
        let own = Vote::new_committed(4, 2);
        assert_eq!(startup_vote(2, own), Vote::new(4, 2));
        // Another leader's committed vote, and uncommitted votes, are kept as they are.
        assert_eq!(startup_vote(1, own), own);
        assert_eq!(startup_vote(2, Vote::new(4, 2)), Vote::new(4, 2));
        assert_eq!(startup_vote(1, Vote::new(4, 2)), Vote::new(4, 2));
    }
}
