//! The kinds of damage, and doing them to a stopped node's files.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use baton_store::Verified;
use baton_store::fault::{self, Damage, Target};

use crate::tools::Rng;

/// A kind of damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    LogFlip,
    LogTruncate,
    VoteFlip,
    VoteTruncate,
    CommittedFlip,
    CommittedTruncate,
    PurgedFlip,
    PurgedTruncate,
    FormatFlip,
    FormatTruncate,
    SnapMetaFlip,
    SnapMetaTruncate,
    SnapDataFlip,
    SnapDataTruncate,
    SledFlip1,
    SledFlip8,
    SledTruncSmall,
    SledTruncLarge,
    SledSnapFlip,
    SledConfFlip,
    // Not in the default cycle (not a flipped bit or a truncated tail): a whole value gone.
    VoteRemove,
    LogRemoveLast,
}

impl Kind {
    /// The default cycle: flipped bits and truncated tails.
    pub const ALL: [Kind; 20] = [
        Kind::LogFlip,
        Kind::LogTruncate,
        Kind::VoteFlip,
        Kind::VoteTruncate,
        Kind::CommittedFlip,
        Kind::CommittedTruncate,
        Kind::PurgedFlip,
        Kind::PurgedTruncate,
        Kind::FormatFlip,
        Kind::FormatTruncate,
        Kind::SnapMetaFlip,
        Kind::SnapMetaTruncate,
        Kind::SnapDataFlip,
        Kind::SnapDataTruncate,
        Kind::SledFlip1,
        Kind::SledFlip8,
        Kind::SledTruncSmall,
        Kind::SledTruncLarge,
        Kind::SledSnapFlip,
        Kind::SledConfFlip,
    ];

    /// Further kinds, chosen only by name: a stored value removed outright.
    pub const EXTRA: [Kind; 2] = [Kind::VoteRemove, Kind::LogRemoveLast];

    /// The logical kinds (one stored value, through `baton_store::fault`).
    pub fn logical() -> Vec<Kind> {
        Kind::ALL.into_iter().filter(|k| !k.is_raw()).collect()
    }

    /// The raw kinds (sled's own files).
    pub fn raw() -> Vec<Kind> {
        Kind::ALL.into_iter().filter(|k| k.is_raw()).collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::LogFlip => "log-flip",
            Kind::LogTruncate => "log-truncate",
            Kind::VoteFlip => "vote-flip",
            Kind::VoteTruncate => "vote-truncate",
            Kind::CommittedFlip => "committed-flip",
            Kind::CommittedTruncate => "committed-truncate",
            Kind::PurgedFlip => "purged-flip",
            Kind::PurgedTruncate => "purged-truncate",
            Kind::FormatFlip => "format-flip",
            Kind::FormatTruncate => "format-truncate",
            Kind::SnapMetaFlip => "snapmeta-flip",
            Kind::SnapMetaTruncate => "snapmeta-truncate",
            Kind::SnapDataFlip => "snapdata-flip",
            Kind::SnapDataTruncate => "snapdata-truncate",
            Kind::SledFlip1 => "sled-flip-1",
            Kind::SledFlip8 => "sled-flip-8",
            Kind::SledTruncSmall => "sled-trunc-small",
            Kind::SledTruncLarge => "sled-trunc-large",
            Kind::SledSnapFlip => "sled-snap-flip",
            Kind::SledConfFlip => "sled-conf-flip",
            Kind::VoteRemove => "vote-remove",
            Kind::LogRemoveLast => "log-remove-last",
        }
    }

    pub fn about(self) -> &'static str {
        match self {
            Kind::LogFlip => "one bit of a stored log entry (checksum included)",
            Kind::LogTruncate => "a stored log entry cut short",
            Kind::VoteFlip => "one bit of the stored vote",
            Kind::VoteTruncate => "the stored vote cut short",
            Kind::CommittedFlip => "one bit of the stored committed log id",
            Kind::CommittedTruncate => "the stored committed log id cut short",
            Kind::PurgedFlip => "one bit of the purge mark",
            Kind::PurgedTruncate => "the purge mark cut short",
            Kind::FormatFlip => "one bit of the format marker",
            Kind::FormatTruncate => "the format marker cut short",
            Kind::SnapMetaFlip => "one bit of the stored snapshot's metadata",
            Kind::SnapMetaTruncate => "the stored snapshot's metadata cut short",
            Kind::SnapDataFlip => "one bit of the stored snapshot's bytes",
            Kind::SnapDataTruncate => "the stored snapshot's bytes cut short",
            Kind::SledFlip1 => "one bit flipped in the written part of sled's `db` file",
            Kind::SledFlip8 => "eight bits flipped in the written part of sled's `db` file",
            Kind::SledTruncSmall => "the last 1..512 written bytes of sled's `db` file cut off",
            Kind::SledTruncLarge => "up to half of the written part of sled's `db` file cut off",
            Kind::SledSnapFlip => {
                "one bit of sled's own page-table snapshot (`snap.*`, written when sled reopens)"
            }
            Kind::SledConfFlip => "one bit of sled's `conf` file",
            Kind::VoteRemove => "the stored vote removed (extra kind)",
            Kind::LogRemoveLast => "the last stored log entry removed (extra kind)",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .chain(Kind::EXTRA)
            .find(|k| k.name() == s)
    }

    pub fn is_raw(self) -> bool {
        matches!(
            self,
            Kind::SledFlip1
                | Kind::SledFlip8
                | Kind::SledTruncSmall
                | Kind::SledTruncLarge
                | Kind::SledSnapFlip
                | Kind::SledConfFlip
        )
    }

    /// Needs a stored snapshot (and, for the purge mark, a purge).
    pub(crate) fn needs_snapshot(self) -> bool {
        matches!(
            self,
            Kind::PurgedFlip
                | Kind::PurgedTruncate
                | Kind::SnapMetaFlip
                | Kind::SnapMetaTruncate
                | Kind::SnapDataFlip
                | Kind::SnapDataTruncate
        )
    }

    /// The stored value a logical kind damages (`None` for raw kinds; log entries are
    /// chosen per case).
    pub(crate) fn target(self) -> Option<Target> {
        Some(match self {
            Kind::VoteFlip | Kind::VoteTruncate | Kind::VoteRemove => Target::Vote,
            Kind::CommittedFlip | Kind::CommittedTruncate => Target::Committed,
            Kind::PurgedFlip | Kind::PurgedTruncate => Target::LastPurged,
            Kind::FormatFlip | Kind::FormatTruncate => Target::Format,
            Kind::SnapMetaFlip | Kind::SnapMetaTruncate => Target::SnapshotMeta,
            Kind::SnapDataFlip | Kind::SnapDataTruncate => Target::SnapshotData,
            _ => return None,
        })
    }

    pub(crate) fn is_flip(self) -> bool {
        matches!(
            self,
            Kind::LogFlip
                | Kind::VoteFlip
                | Kind::CommittedFlip
                | Kind::PurgedFlip
                | Kind::FormatFlip
                | Kind::SnapMetaFlip
                | Kind::SnapDataFlip
        )
    }
}

/// Copies the directory tree `from` to `to`.
pub(crate) fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// Opens a copy of the store in `dir` with `baton_store::open` (which verifies all of it)
/// and says what sled holds. The copy leaves out the high-water mark (`mark-*`), which
/// would refuse a rolled-back store: this looks at sled's own contents.
pub(crate) fn inspect(dir: &Path, scratch: &Path) -> std::result::Result<Verified, String> {
    let _ = std::fs::remove_dir_all(scratch);
    copy_dir(dir, scratch).map_err(|e| format!("cannot copy {}: {e}", dir.display()))?;
    for slot in ["mark-0", "mark-1"] {
        let _ = std::fs::remove_file(scratch.join(slot));
    }
    let s = scratch.to_path_buf();
    let r = std::panic::catch_unwind(move || {
        baton_store::open(&s)
            .and_then(|(log, _sm)| log.verify())
            .map_err(|e| e.to_string())
    });
    let _ = std::fs::remove_dir_all(scratch);
    match r {
        Ok(r) => r,
        Err(p) => Err(format!(
            "PANIC in baton_store::open: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

pub(crate) fn describe(v: &std::result::Result<Verified, String>) -> String {
    match v {
        Ok(v) => format!("verifies: {v}"),
        Err(e) => format!("refuses: {}", e.chars().take(300).collect::<String>()),
    }
}

/// The length of one stored value (sled opened directly; the store must be closed).
pub(crate) fn stored_len(dir: &Path, target: &Target) -> Result<usize> {
    let (tree, key): (&str, Vec<u8>) = match target {
        Target::LogEntry(i) => ("log", i.to_be_bytes().to_vec()),
        Target::Vote => ("meta", b"vote".to_vec()),
        Target::Committed => ("meta", b"committed".to_vec()),
        Target::LastPurged => ("meta", b"last_purged".to_vec()),
        Target::Format => ("meta", b"format".to_vec()),
        Target::Identity => ("meta", b"identity".to_vec()),
        Target::PeersWithData => ("meta", b"peers_with_data".to_vec()),
        Target::SnapshotMeta => ("sm", b"snapshot_meta".to_vec()),
        Target::SnapshotData => ("sm", b"snapshot_data".to_vec()),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let db = loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => break db,
            Err(e) if Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => bail!("sled cannot open {}: {e}", dir.display()),
        }
    };
    let v = db
        .open_tree(tree)?
        .get(&key)?
        .ok_or_else(|| anyhow!("{target:?} is not stored"))?;
    Ok(v.len())
}

/// The end of the written part of a file (after it, only zero bytes).
pub(crate) fn written_len(path: &Path) -> Result<u64> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    Ok(data
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |p| p as u64 + 1))
}

pub(crate) fn flip_bits(path: &Path, offsets: &[(u64, u8)]) -> Result<()> {
    let mut f = File::options().read(true).write(true).open(path)?;
    for (off, bit) in offsets {
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(*off))?;
        f.read_exact(&mut b)?;
        b[0] ^= 1 << (bit % 8);
        f.seek(SeekFrom::Start(*off))?;
        f.write_all(&b)?;
    }
    f.sync_all()?;
    Ok(())
}

/// Applies the case's damage to the closed store in `dir`; returns what was done.
pub(crate) fn apply_damage(
    rng: &mut Rng,
    kind: Kind,
    dir: &Path,
    before: &Verified,
) -> Result<String> {
    if kind.is_raw() {
        return raw_damage(rng, kind, dir);
    }
    let target = match kind.target() {
        Some(t) => t,
        None => {
            let (first, last) = match (before.first_log_id, before.last_log_id) {
                (Some(f), Some(l)) => (f.index, l.index),
                _ => bail!("the store holds no log entry"),
            };
            // The last entry (a truncated tail) a third of the time, else any.
            let i = if kind == Kind::LogRemoveLast || rng.chance(0.33) {
                last
            } else {
                rng.range(first, last)
            };
            Target::LogEntry(i)
        }
    };
    let len = stored_len(dir, &target)?;
    let damage = if matches!(kind, Kind::VoteRemove | Kind::LogRemoveLast) {
        Damage::Remove
    } else if kind.is_flip() {
        Damage::FlipBit {
            byte: rng.below(len as u64) as usize,
            bit: rng.below(8) as u8,
        }
    } else {
        Damage::Truncate(rng.below(len as u64) as usize)
    };
    let what = format!("{target:?} ({len} bytes): {damage:?}");
    fault::damage(dir, target, damage).with_context(|| format!("damaging {what}"))?;
    Ok(what)
}

pub(crate) fn raw_damage(rng: &mut Rng, kind: Kind, dir: &Path) -> Result<String> {
    let db = dir.join("db");
    let used = written_len(&db)?;
    let size = std::fs::metadata(&db)?.len();
    if used == 0 {
        bail!("{} holds nothing", db.display());
    }
    Ok(match kind {
        Kind::SledFlip1 | Kind::SledFlip8 => {
            let n = if kind == Kind::SledFlip1 { 1 } else { 8 };
            let offsets: Vec<(u64, u8)> = (0..n)
                .map(|_| (rng.below(used), rng.below(8) as u8))
                .collect();
            flip_bits(&db, &offsets)?;
            format!("db ({size} bytes, {used} written): bits flipped at {offsets:?}")
        }
        Kind::SledTruncSmall | Kind::SledTruncLarge => {
            let cut = if kind == Kind::SledTruncSmall {
                rng.range(1, 512.min(used))
            } else {
                rng.range(1, (used / 2).max(1))
            };
            let f = File::options().write(true).open(&db)?;
            f.set_len(used - cut)?;
            f.sync_all()?;
            format!(
                "db ({size} bytes, {used} written): cut to {} bytes ({cut} written bytes lost)",
                used - cut
            )
        }
        Kind::SledSnapFlip | Kind::SledConfFlip => {
            let snap = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("snap."))
                })
                .max();
            let (p, note) = match snap {
                Some(p) if kind == Kind::SledSnapFlip => (p, ""),
                _ if kind == Kind::SledSnapFlip => (dir.join("conf"), "no snap.* file; "),
                _ => (dir.join("conf"), ""),
            };
            let len = std::fs::metadata(&p)?.len();
            let at = (rng.below(len), rng.below(8) as u8);
            flip_bits(&p, &[at])?;
            format!(
                "{note}{} ({len} bytes): bit flipped at {at:?}",
                p.file_name().unwrap_or_default().to_string_lossy()
            )
        }
        _ => unreachable!("logical kind {kind:?}"),
    })
}
