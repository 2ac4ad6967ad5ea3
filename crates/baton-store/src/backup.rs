//! Backups and disaster recovery: the backup file, seeding a new store from a state, and
//! reading what a surviving node holds.
//!
//! ## The backup file
//!
//! ```text
//! baton-backup VERSION\n  ++  crc32(payload) as 4 bytes big-endian  ++  payload
//! ```
//!
//! `VERSION` is [`BACKUP_VERSION`] in decimal; `payload` is the JSON of [`BackupPayload`]
//! (the whole replicated state with the revision it was read at). The first line says
//! what the file is to a person and lets a future version refuse an older reader by
//! name; the checksum is the same frame as every value in the store. A file that fails
//! any check is refused with what is wrong, before anything is written.
//!
//! ## Seeding a store
//!
//! [`seed`] writes a new data directory that holds nothing but a snapshot of a given
//! state (the log purged up to it), with a given membership and identity. A node started
//! on it restores the state from the snapshot as after any restart, and openraft sees an
//! initialized node: it campaigns with the membership of the snapshot and never calls
//! `initialize`. Such a store is not blank (it has a snapshot), so the directory's
//! "node that lost its data" check does not apply to it; and it records no peers with
//! data, so no peer holds it to an older cluster's history.
//!
//! - `baton snapshot restore` seeds every node of a *new* cluster from a backup: the
//!   snapshot sits at the backup's revision with term 0, the membership is `--peers`, the
//!   cluster id is cleared (the new cluster's first leader picks a new one, as for any new
//!   cluster). Epochs continue from the backup's `last_epoch`, so they keep increasing.
//! - `baton recover` seeds a one-node cluster from what a survivor holds ([`read_survivor`]):
//!   the snapshot sits at its last log entry (same term), its vote is kept, and so is
//!   the cluster id (the others rejoin it with `--join`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use baton_core::State;
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::disk::{Disk, Identity, SnapshotPayload};
use crate::state_machine::StateMachineStore;
use crate::{
    LogId, Membership, Node, SNAPSHOT_MAX_BYTES, SnapshotMeta, StoreError, StoredMembership, Vote,
};

/// The backup format this build writes and reads.
pub const BACKUP_VERSION: u32 = 1;
/// What every backup file starts with, before the version.
pub const BACKUP_MAGIC: &str = "baton-backup ";
/// Largest backup file: the snapshot limit (a backup is the state a snapshot holds).
pub const BACKUP_MAX_BYTES: usize = SNAPSHOT_MAX_BYTES;

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPayload {
    /// The directory revision (log index) the state was read at; equals `state.revision`.
    pub revision: u64,
    /// The cluster it was read from (the restored cluster gets a new one).
    pub cluster_id: Option<String>,
    /// When it was read, wall-clock ms since the Unix epoch (for people).
    pub created_ms: u64,
    /// The replicated state.
    pub state: State,
}

/// The bytes of a backup file of `state`.
pub fn encode_backup(state: &State, created_ms: u64) -> Result<Vec<u8>, StoreError> {
    let payload = BackupPayload {
        revision: state.revision,
        cluster_id: state.cluster_id.clone(),
        created_ms,
        state: state.clone(),
    };
    let mut out = format!("{BACKUP_MAGIC}{BACKUP_VERSION}\n").into_bytes();
    out.extend(encode("the backup", &payload)?);
    if out.len() > BACKUP_MAX_BYTES {
        return Err(StoreError::TooLarge {
            what: "the backup".into(),
            len: out.len(),
            max: BACKUP_MAX_BYTES,
        });
    }
    Ok(out)
}

/// Check and decode a backup file's bytes; the error says what is wrong with it.
pub fn decode_backup(bytes: &[u8]) -> Result<BackupPayload, StoreError> {
    let bad = StoreError::BadBackup;
    if bytes.len() > BACKUP_MAX_BYTES {
        return Err(bad(format!(
            "it is {} bytes, over the limit of {BACKUP_MAX_BYTES}",
            bytes.len()
        )));
    }
    let Some(rest) = bytes.strip_prefix(BACKUP_MAGIC.as_bytes()) else {
        return Err(bad(format!(
            "it is not a Baton backup (it does not start with {:?})",
            BACKUP_MAGIC.trim_end()
        )));
    };
    let Some(newline) = rest.iter().take(16).position(|b| *b == b'\n') else {
        return Err(bad(
            "its first line (the format version) is missing or too long".into(),
        ));
    };
    let version = std::str::from_utf8(&rest[..newline])
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| bad("its format version is not a number".into()))?;
    if version != BACKUP_VERSION {
        return Err(bad(format!(
            "it has format version {version}, this build reads version {BACKUP_VERSION}"
        )));
    }
    let payload: BackupPayload = decode(&rest[newline + 1..]).map_err(bad)?;
    if payload.state.revision != payload.revision || payload.revision == 0 {
        return Err(bad(format!(
            "its state is at revision {} but the backup says {}",
            payload.state.revision, payload.revision
        )));
    }
    Ok(payload)
}

/// Write `bytes` to `path` so that `path` holds either its old contents or all of
/// `bytes`, never a part: a temporary file beside it, fsynced, renamed over it, and
/// the directory fsynced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What a new store is seeded with (see the module docs).
#[derive(Clone, Debug)]
pub struct Seed {
    /// The node the store is for.
    pub node_id: u64,
    /// The voters of the cluster, by id, with their peer addresses.
    pub members: BTreeMap<u64, String>,
    /// The cluster id to record (`None`: the cluster's first leader picks one).
    pub cluster_id: Option<String>,
    /// The log id the snapshot ends at; its index must be `state.revision`.
    pub last_log_id: LogId,
    /// The vote to keep, if any.
    pub vote: Option<Vote>,
    /// The state. Its voter count and cluster id are set from the fields above.
    pub state: State,
}

/// Create the store of `seed.node_id` in `dir`, which must not exist or be empty. On an
/// error nothing usable is left behind: `dir` is removed again if this call created it.
pub fn seed(dir: &Path, seed: Seed) -> Result<(), StoreError> {
    let bad = |detail: String| StoreError::BadSeed {
        dir: dir.to_path_buf(),
        detail,
    };
    if seed.last_log_id.index != seed.state.revision || seed.state.revision == 0 {
        return Err(bad(format!(
            "the state is at revision {}, the snapshot would end at {}",
            seed.state.revision, seed.last_log_id
        )));
    }
    if !seed.members.contains_key(&seed.node_id) {
        return Err(bad(format!(
            "node {} is not one of the members {:?}",
            seed.node_id,
            seed.members.keys().collect::<Vec<_>>()
        )));
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(bad(
                    "it is not empty: give each node a new, empty data directory".into(),
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bad(format!("cannot read it: {e}"))),
    }
    let existed = dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create it: {e}")))?;
    let result = write_seed(dir, seed);
    if result.is_err() && !existed {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn write_seed(dir: &Path, seed: Seed) -> Result<(), StoreError> {
    let mut state = seed.state;
    state.voters = u32::try_from(seed.members.len()).unwrap_or(u32::MAX);
    state.cluster_id = seed.cluster_id.clone();
    let voters: BTreeSet<u64> = seed.members.keys().copied().collect();
    let nodes: BTreeMap<u64, Node> = seed
        .members
        .iter()
        .map(|(id, addr)| (*id, Node { addr: addr.clone() }))
        .collect();
    let membership =
        StoredMembership::new(Some(seed.last_log_id), Membership::new(vec![voters], nodes));
    let payload = SnapshotPayload {
        last_applied: Some(seed.last_log_id),
        last_membership: membership.clone(),
        state,
    };
    let meta = SnapshotMeta {
        last_log_id: Some(seed.last_log_id),
        last_membership: membership,
        snapshot_id: format!("seed-{}", seed.last_log_id.index),
    };
    let data = encode("the snapshot", &payload)?;
    let disk = Disk::open(dir)?;
    disk.put_snapshot(&meta, &data)?;
    disk.put_last_purged(&seed.last_log_id)?;
    disk.put_committed(Some(&seed.last_log_id))?;
    if let Some(vote) = &seed.vote {
        disk.put_vote(vote)?;
    }
    disk.put_identity(&Identity {
        node_id: seed.node_id,
        cluster_id: seed.cluster_id,
    })?;
    disk.flush_sync("flushing the seeded store")?;
    if let Some(vote) = seed.vote {
        disk.mark_vote(vote)?;
    }
    disk.mark_last_log(Some(seed.last_log_id))?;
    // Read it all back as a node would on start.
    let (verified, _) = disk.verify_full()?;
    disk.check_mark(&verified)?;
    Ok(())
}

/// What a surviving node holds: its state with every entry of its log applied (as it
/// would be once it led), the membership in force, and whose store it is.
#[derive(Clone, Debug)]
pub struct Survivor {
    /// The state after the last log entry.
    pub state: State,
    /// The log id of the last entry applied (the snapshot's, when the log ends there).
    pub last_log_id: LogId,
    /// The last membership: voters and learners, by id, with their peer addresses.
    pub members: BTreeMap<u64, String>,
    /// The voters of that membership.
    pub voters: BTreeSet<u64>,
    /// The stored vote.
    pub vote: Option<Vote>,
    /// The stored identity.
    pub identity: Option<Identity>,
}

/// Read a stopped node's store in `dir`: verified as on open, then its snapshot and
/// every log entry after it applied. Changes nothing in `dir` but the mark files.
pub fn read_survivor(dir: &Path) -> Result<Survivor, StoreError> {
    let disk = Arc::new(Disk::open(dir)?);
    disk.finish_purge()?;
    let (verified, snapshot) = disk.verify_full()?;
    disk.check_mark(&verified)?;
    let sm = StateMachineStore::restore(disk.clone(), snapshot);
    let start = sm.last_applied().map_or(0, |l| l.index + 1);
    for entry in disk.entries(start, None)? {
        sm.apply_entry(entry)?;
    }
    let last_log_id = sm.last_applied().ok_or_else(|| StoreError::BadSeed {
        dir: dir.to_path_buf(),
        detail: "the store holds no state (no snapshot and no log): nothing to recover".into(),
    })?;
    let membership = sm.last_membership();
    let members = membership
        .membership()
        .nodes()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    let voters = membership.membership().voter_ids().collect();
    Ok(Survivor {
        state: sm.read(|s| s.clone()),
        last_log_id,
        members,
        voters,
        vote: verified.vote,
        identity: verified.identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_at(revision: u64) -> State {
        State {
            revision,
            last_epoch: 41,
            cluster_id: Some("old".into()),
            ..State::default()
        }
    }

    fn members(ids: &[u64]) -> BTreeMap<u64, String> {
        ids.iter()
            .map(|id| (*id, format!("127.0.0.1:{}", 7100 + id)))
            .collect()
    }

    #[test]
    fn a_backup_round_trips_and_every_damage_is_named() {
        let bytes = encode_backup(&state_at(12), 99).unwrap();
        assert!(bytes.starts_with(b"baton-backup 1\n"));
        let back = decode_backup(&bytes).unwrap();
        assert_eq!((back.revision, back.created_ms), (12, 99));
        assert_eq!(back.state, state_at(12));
        assert_eq!(back.cluster_id.as_deref(), Some("old"));

        let err = |b: &[u8]| decode_backup(b).unwrap_err().to_string();
        // One flipped byte in the payload: the checksum.
        let mut flipped = bytes.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x01;
        assert!(
            err(&flipped).contains("checksum mismatch"),
            "{}",
            err(&flipped)
        );
        // Truncated.
        assert!(err(&bytes[..bytes.len() - 10]).contains("checksum mismatch"));
        assert!(err(&bytes[..17]).contains("shorter than its 4-byte checksum"));
        // Not a backup at all, another version, a broken header.
        assert!(err(b"{\"state\":1}").contains("not a Baton backup"));
        let mut v2 = b"baton-backup 2\n".to_vec();
        v2.extend_from_slice(&bytes[15..]);
        assert!(
            err(&v2).contains("format version 2, this build reads version 1"),
            "{}",
            err(&v2)
        );
        assert!(err(b"baton-backup x\n1234").contains("not a number"));
        assert!(err(b"baton-backup 1").contains("missing or too long"));
    }

    #[test]
    fn a_seeded_store_opens_at_the_state_with_the_membership() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node2");
        let log_id = LogId::new(openraft::CommittedLeaderId::new(0, 0), 12);
        seed(
            &dir,
            Seed {
                node_id: 2,
                members: members(&[1, 2, 3]),
                cluster_id: None,
                last_log_id: log_id,
                vote: None,
                state: state_at(12),
            },
        )
        .unwrap();
        let (log, sm, verified) = crate::open_verified(&dir).unwrap();
        assert!(!verified.is_blank());
        assert_eq!(verified.last_purged, Some(log_id));
        assert_eq!(
            verified.identity,
            Some(Identity {
                node_id: 2,
                cluster_id: None
            })
        );
        assert_eq!(sm.last_applied(), Some(log_id));
        let voters: Vec<u64> = sm.last_membership().membership().voter_ids().collect();
        assert_eq!(voters, vec![1, 2, 3]);
        sm.read(|s| {
            assert_eq!((s.revision, s.last_epoch, s.voters), (12, 41, 3));
            assert_eq!(s.cluster_id, None, "a restored cluster gets a new id");
        });
        drop((log, sm));

        // Seeding again, into a directory that holds something, is refused.
        let e = seed(
            &dir,
            Seed {
                node_id: 2,
                members: members(&[1, 2, 3]),
                cluster_id: None,
                last_log_id: log_id,
                vote: None,
                state: state_at(12),
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        // A state that is not where the snapshot ends, or a node outside the members.
        let other = tmp.path().join("x");
        let e = seed(
            &other,
            Seed {
                node_id: 4,
                members: members(&[1, 2, 3]),
                cluster_id: None,
                last_log_id: log_id,
                vote: None,
                state: state_at(12),
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("not one of the members"), "{e}");
        assert!(!other.exists(), "nothing is left behind");
    }

    #[test]
    fn a_survivor_reads_back_what_was_seeded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("n1");
        let log_id = LogId::new(openraft::CommittedLeaderId::new(7, 1), 12);
        let vote = Vote::new(8, 1);
        seed(
            &dir,
            Seed {
                node_id: 1,
                members: members(&[1, 2, 3]),
                cluster_id: Some("c".into()),
                last_log_id: log_id,
                vote: Some(vote),
                state: state_at(12),
            },
        )
        .unwrap();
        let s = read_survivor(&dir).unwrap();
        assert_eq!(s.last_log_id, log_id);
        assert_eq!(s.vote, Some(vote));
        assert_eq!(s.voters, [1, 2, 3].into_iter().collect());
        assert_eq!(s.members, members(&[1, 2, 3]));
        assert_eq!(s.state.last_epoch, 41);
        assert_eq!(s.identity.and_then(|i| i.cluster_id).as_deref(), Some("c"));
    }
}
