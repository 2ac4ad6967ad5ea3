//! Group commit: the leader packs concurrent writes into one log entry.
//!
//! openraft 0.9 appends each proposed entry on its own and waits for it to be durable
//! (two fsyncs here: the log, then the high-water mark) before it reads the next
//! proposal. With one write per entry, the leader's throughput is one write per durable
//! append however many clients write at once. So every write of this node goes through
//! one [`Batcher`]: a task takes the writes waiting in its queue (up to
//! `write_batch_max`, and [`BATCH_BYTES_MAX`] encoded) and proposes them as one entry
//! (`baton_core::Entry::batch`). While that entry is made durable and replicated, the
//! next writes queue up and go out together in the next entry: one fsync makes many
//! writes durable, and a lone writer pays nothing (its entry goes out at once, alone).
//!
//! What does not change, and why it is safe:
//! - *Durable before acknowledged*: a write's reply waits for its entry's commit, which
//!   openraft reports only after the quorum's appends (each fsynced) of the whole entry.
//! - *Each write on its own*: the state applies a batch's writes one after the other at
//!   the entry's log index, each validated, refused, deduplicated by request id and
//!   audited as if it had its own entry (`baton_core::State::apply_all`). A refusal of one
//!   write is that write's reply only. The outcome of a write never depends on which
//!   writes shared its entry, beyond their order, which is the order of arrival here.
//! - *Linearizable*: a write is in the queue only while its client waits for it, so
//!   writes that share an entry were concurrent and any order among them is allowed.
//! - *Bounded*: the queue holds at most [`QUEUE_MAX`] writes (callers wait for room),
//!   at most [`IN_FLIGHT_MAX`] entries are being proposed at once, and an entry holds at
//!   most `write_batch_max` writes and about [`BATCH_BYTES_MAX`] bytes.
//!
//! On a follower the proposal fails with "forward to the leader", which every write of
//! the entry receives; each is then forwarded on its own (see `Node::write_as`).

use std::sync::Arc;

use baton_core::{Entry, Outcome, Refusal, Write};
use baton_store::{NodeId, Raft};
use openraft::BasicNode;
use openraft::error::{ClientWriteError, RaftError};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Writes waiting for an entry, at most. Past it a writer waits for room (backpressure
/// rather than memory).
pub const QUEUE_MAX: usize = 4_096;
/// Entries being proposed at once. Two, so that while one entry is replicated and
/// applied the next one is already in openraft's hands; more would only split the
/// queue into smaller entries behind openraft's one-at-a-time appends.
pub const IN_FLIGHT_MAX: usize = 2;
/// Encoded size of the writes of one entry, about at most (each write was measured
/// as an entry of its own): half of `baton_store::ENTRY_MAX_BYTES`, so that an entry
/// always fits in the log whatever its framing adds.
pub const BATCH_BYTES_MAX: usize = baton_store::ENTRY_MAX_BYTES / 2;

/// Why a write was not committed: openraft's error, shared by every write of the entry.
pub type WriteError = RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>;

/// A write that was committed and applied.
#[derive(Debug)]
pub struct Committed {
    /// The log index of the entry that carried it: the revision it is visible at.
    pub index: u64,
    /// Its own outcome.
    pub result: Result<Outcome, Refusal>,
}

/// One write waiting in the queue.
struct Pending {
    write: Write,
    /// Directory time the proposer measured when it admitted the write (0 on a
    /// follower): the entry carries the sum of its writes'.
    advance_ms: u64,
    /// Its size as an entry of its own (`baton_store::check_entry_size`).
    bytes: usize,
    /// Where its result goes; a writer that gave up has dropped the other end.
    done: oneshot::Sender<Result<Committed, WriteError>>,
}

/// The queue in front of this node's Raft proposals. Dropping it (with the node) ends
/// its task once the entries in flight are answered.
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Start the task that proposes this node's writes to `raft`, up to `batch_max`
    /// writes per entry, observing each entry's number of writes in `entry_writes`.
    pub fn start(raft: Raft, batch_max: usize, entry_writes: Histogram) -> Batcher {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        let batch_max = batch_max.clamp(1, baton_core::WRITES_PER_ENTRY_MAX);
        tokio::spawn(run(raft, rx, batch_max, entry_writes));
        Batcher { tx }
    }

    /// Propose `entry` (one write; its `batch` must be empty) and wait until it is
    /// committed and applied, or failed. `bytes` is its size as an entry of its own.
    pub async fn write(&self, entry: Entry, bytes: usize) -> Result<Committed, WriteError> {
        debug_assert!(entry.batch.is_empty(), "one write at a time");
        let (done, result) = oneshot::channel();
        let Entry {
            now_ms,
            cmd,
            advance_ms,
            by,
            request,
            batch: _,
        } = entry;
        let pending = Pending {
            write: Write {
                now_ms,
                cmd,
                by,
                request,
            },
            advance_ms,
            bytes,
            done,
        };
        let stopped = || RaftError::Fatal(openraft::error::Fatal::Stopped);
        self.tx.send(pending).await.map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

/// The batcher's task: take what is queued, propose it as one entry, repeat.
async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>, batch_max: usize, sizes: Histogram) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    // A write that did not fit in the previous entry: first in the next one.
    let mut carried: Option<Pending> = None;
    loop {
        // A slot first, then the writes: while both slots are busy the queue fills, and
        // the next entry takes all of it.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(p) if bytes.saturating_add(p.bytes) <= BATCH_BYTES_MAX => {
                    bytes += p.bytes;
                    batch.push(p);
                }
                Ok(p) => {
                    carried = Some(p);
                    break;
                }
                Err(_) => break,
            }
        }
        sizes.observe(batch.len() as f64);
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, batch).await;
            drop(slot);
        });
    }
}

/// Propose `batch` as one entry and give every write its result.
async fn propose(raft: &Raft, batch: Vec<Pending>) {
    let advance_ms = batch
        .iter()
        .fold(0u64, |sum, p| sum.saturating_add(p.advance_ms));
    let (writes, dones): (Vec<Write>, Vec<_>) =
        batch.into_iter().map(|p| (p.write, p.done)).unzip();
    let Some(entry) = Entry::of_writes(writes, advance_ms) else {
        return;
    };
    match raft.client_write(entry).await {
        Ok(resp) => {
            let index = resp.log_id.index;
            if resp.data.len() != dones.len() {
                // The state answers every write of an entry (`State::apply_all`); if that
                // ever broke, no write may be told it committed with another's outcome.
                tracing::error!(
                    writes = dones.len(),
                    outcomes = resp.data.len(),
                    "an entry's outcomes do not match its writes"
                );
                let broken = Refusal::invalid(
                    "internal error: the entry's outcomes do not match its writes",
                );
                for done in dones {
                    let _ = done.send(Ok(Committed {
                        index,
                        result: Err(broken.clone()),
                    }));
                }
                return;
            }
            for (done, result) in dones.into_iter().zip(resp.data) {
                let _ = done.send(Ok(Committed { index, result }));
            }
        }
        Err(e) => {
            for done in dones {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}
