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
//!
//! ## Cost
//!
//! The mark is written on every append, so its fsync is on the path of every write. Each
//! slot is therefore a file of exactly [`RECORD_BYTES`] bytes, overwritten in place
//! through a handle kept open: its size never changes after the first write of the
//! process, so `fdatasync` writes one data block and no inode or journal update (on this
//! kind of machine 0.17 ms against 0.6 ms for a file that is truncated and rewritten; see
//! docs/benchmarks.md, "Write path"). The JSON payload is padded with spaces to the
//! record size, inside the checksum; JSON allows trailing whitespace, so marks written
//! before padding existed and padded ones decode alike. A torn in-place write fails its
//! checksum and the other slot is used, exactly as a torn rewrite did.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::decode;
use crate::{LogId, StoreError, Vote};

/// The two slot files.
const SLOTS: [&str; 2] = ["mark-0", "mark-1"];
/// Size of every slot file written by this version: checksum, JSON, space padding. A
/// mark's JSON (two log ids and a vote) is under 300 bytes; [`MarkFile::write`] refuses
/// one that would not fit rather than change the size.
pub(crate) const RECORD_BYTES: usize = 512;

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
    /// The slots this process has written once (sized to [`RECORD_BYTES`]), kept open to
    /// be overwritten in place; `None` until then.
    open: [Option<File>; 2],
    /// How many times a slot was made durable (fdatasync) by this process: the store's
    /// fsync count for tests and the benchmark's notes.
    pub(crate) syncs: u64,
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
            open: [None, None],
            syncs: 0,
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
        let slot = (next.seq % 2) as usize;
        let path = self.dir.join(SLOTS[slot]);
        let bytes = encode_record(&next)?;
        let io = |source: std::io::Error| StoreError::Mark {
            path: path.clone(),
            source,
        };
        match &self.open[slot] {
            Some(f) => {
                // Same size, same blocks: a data-only fdatasync.
                f.write_all_at(&bytes, 0).map_err(io)?;
                f.sync_data().map_err(io)?;
            }
            None => {
                // The first write of this slot in this process: give it its size (a slot
                // from an older version may be shorter), with a full fsync.
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(io)?;
                f.write_all_at(&bytes, 0).map_err(io)?;
                f.sync_all().map_err(io)?;
                if self.current.seq == 0 {
                    // The first slot written in this directory: make its name durable too.
                    std::fs::File::open(&self.dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io)?;
                }
                self.open[slot] = Some(f);
            }
        }
        self.syncs += 1;
        self.current = next;
        Ok(())
    }
}

/// `next` framed and padded with spaces to exactly [`RECORD_BYTES`].
fn encode_record(next: &Mark) -> Result<Vec<u8>, StoreError> {
    let mut payload = serde_json::to_vec(next).map_err(|source| StoreError::Encode {
        what: "the high-water mark".into(),
        source,
    })?;
    let room = RECORD_BYTES - crate::codec::CHECKSUM_BYTES;
    if payload.len() > room {
        return Err(StoreError::TooLarge {
            what: "the high-water mark".into(),
            len: payload.len() + crate::codec::CHECKSUM_BYTES,
            max: RECORD_BYTES,
        });
    }
    payload.resize(room, b' ');
    Ok(crate::codec::frame(&payload))
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
