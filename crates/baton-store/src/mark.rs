//! The high-water mark: a lower bound on what this node has promised, kept outside sled.
//!
//! ## Why
//!
//! A follower's "I have these entries" and "I voted for you" count towards a quorum, so
//! they must never be forgotten (invariant 2). sled 0.34 has a blind spot: a damaged or
//! truncated record in its `db` file looks to it like the torn end of its log, so on open
//! it silently drops that record *and everything written after it*: flushed entries,
//! votes, snapshots. Our own checksums cannot see this: what is left verifies perfectly,
//! it is just old. A node that comes back like that rejoins with a shorter log or an
//! older vote than it acknowledged, and one such node plus the loss of the leader loses
//! acknowledged writes (or, in debug builds, openraft's leader panics on the "reversion").
//!
//! ## What
//!
//! After every flushed append and vote, the store also records the highest vote and the
//! last log id it has made durable, in a small file of its own, fsynced. On open, sled's
//! vote and last log id must be at least the mark's; if they are not, the store refuses
//! to open with [`crate::StoreError::Corrupt`] and the operator's remedy (re-add the node).
//!
//! The mark is only ever a *lower bound* of what sled holds:
//! - raising (append, vote): sled is flushed first, then the mark is written. A crash in
//!   between leaves the mark lower than sled, which is allowed.
//! - lowering (truncate, which drops conflicting uncommitted entries): the mark is
//!   written first, then sled. A crash in between leaves it lower again.
//!
//! ## Torn writes
//!
//! The mark alternates between two files, `mark-0` and `mark-1`, each framed with a
//! crc32 and carrying a sequence number; the valid one with the higher sequence wins. A
//! crash while one is being written leaves the other, an older (lower) mark: still a
//! valid lower bound. A damaged mark file is therefore not an error by itself; the older
//! mark is used. A store written before the mark existed (no mark file) gets one on open.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::{LogId, StoreError, Vote};

/// The two slot files.
const SLOTS: [&str; 2] = ["mark-0", "mark-1"];

/// What the mark records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mark {
    /// Increases with every write; picks the newer slot.
    pub seq: u64,
    /// The highest vote made durable.
    pub vote: Option<Vote>,
    /// The last log id made durable (after a truncate: the new, lower one).
    pub last_log: Option<LogId>,
}

/// The mark's files in a data directory, and the current mark.
pub(crate) struct MarkFile {
    dir: PathBuf,
    current: Mark,
}

impl MarkFile {
    /// Read the newest valid slot in `dir` (an empty mark when there is none).
    pub(crate) fn load(dir: &Path) -> MarkFile {
        let current = SLOTS
            .iter()
            .filter_map(|slot| {
                let bytes = std::fs::read(dir.join(slot)).ok()?;
                match decode::<Mark>(&bytes) {
                    Ok(m) => Some(m),
                    Err(detail) => {
                        // A torn write of the newest slot, or damage: the other slot is
                        // an older, still valid lower bound.
                        tracing::warn!(
                            "ignoring the damaged mark file {}: {detail}",
                            dir.join(slot).display()
                        );
                        None
                    }
                }
            })
            .max_by_key(|m| m.seq)
            .unwrap_or_default();
        MarkFile {
            dir: dir.to_path_buf(),
            current,
        }
    }

    pub(crate) fn current(&self) -> &Mark {
        &self.current
    }

    /// Write `vote` and `last_log` as the new mark, durably, in the slot not holding the
    /// current one. Blocking (a small write and an fsync).
    pub(crate) fn write(
        &mut self,
        vote: Option<Vote>,
        last_log: Option<LogId>,
    ) -> Result<(), StoreError> {
        if self.current.vote == vote && self.current.last_log == last_log {
            return Ok(());
        }
        let next = Mark {
            seq: self.current.seq + 1,
            vote,
            last_log,
        };
        let path = self.dir.join(SLOTS[(next.seq % 2) as usize]);
        let bytes = encode("the high-water mark", &next)?;
        let io = |source: std::io::Error| StoreError::Mark {
            path: path.clone(),
            source,
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_data().map_err(io)?;
        if self.current.seq == 0 {
            // The first slot written in this directory: make its name durable too.
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        self.current = next;
        Ok(())
    }
}

/// Does sled's state (`vote`, `last_log`) hold everything the mark promises? `Err` holds
/// what went missing, for the corruption message.
pub(crate) fn check(
    mark: &Mark,
    vote: Option<&Vote>,
    last_log: Option<&LogId>,
) -> Result<(), String> {
    if let Some(promised) = &mark.vote {
        let kept = vote.is_some_and(|v| v >= promised);
        if !kept {
            return Err(format!(
                "the stored vote is {}, older than the vote {promised} this node had made \
                 durable: the store rolled back (sled dropped what was written after a \
                 damaged record)",
                vote.map_or("none".to_string(), |v| v.to_string())
            ));
        }
    }
    if let Some(promised) = &mark.last_log {
        let kept = last_log.is_some_and(|l| l >= promised);
        if !kept {
            return Err(format!(
                "the log ends at {}, before {promised}, which this node had made durable \
                 and may have acknowledged: the store rolled back (sled dropped what was \
                 written after a damaged record)",
                last_log.map_or("nothing".to_string(), |l| l.to_string())
            ));
        }
    }
    Ok(())
}
