//! Fault injection for tests: damage one stored value of a *closed* store, the way a bad
//! disk or a stray write would, so that tests can check that the damage is caught.
//!
//! Open the store again afterwards with [`crate::open`]; it must fail with a
//! [`crate::StoreError::Corrupt`] naming the damaged value.

use std::io;
use std::path::Path;

use crate::disk::raw::locate;

/// A stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The log entry at this index.
    LogEntry(u64),
    /// The saved vote.
    Vote,
    /// The saved committed log id.
    Committed,
    /// The purge mark.
    LastPurged,
    /// The format marker.
    Format,
    /// The node's identity (node id and cluster id).
    Identity,
    /// The peers known to hold data.
    PeersWithData,
    /// The stored snapshot's metadata.
    SnapshotMeta,
    /// The stored snapshot's bytes.
    SnapshotData,
}

/// What to do to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Flip one bit of the stored value.
    FlipBit {
        /// Offset in the stored value, checksum included (bytes 0..4 are the checksum).
        byte: usize,
        /// Which bit of that byte (taken modulo 8).
        bit: u8,
    },
    /// Keep only the first `len` bytes.
    Truncate(usize),
    /// Replace the value with these bytes.
    Replace(Vec<u8>),
    /// Remove the value.
    Remove,
}

/// Damage `target` in the store in `dir`, which must not be open. Fails if the value does
/// not exist (except for [`Damage::Replace`]) or the damage does not fit it.
pub fn damage(dir: &Path, target: Target, damage: Damage) -> io::Result<()> {
    let db = crate::disk::open_db(&sled::Config::new().path(dir)).map_err(io::Error::other)?;
    let (tree, key) = locate(&target);
    let tree = db.open_tree(tree).map_err(io::Error::other)?;
    let old = tree.get(&key).map_err(io::Error::other)?;
    let missing = || io::Error::new(io::ErrorKind::NotFound, format!("{target:?} is not stored"));
    match damage {
        Damage::FlipBit { byte, bit } => {
            let mut value = old.ok_or_else(missing)?.to_vec();
            let b = value.get_mut(byte).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{target:?} has no byte {byte}"),
                )
            })?;
            *b ^= 1 << (bit % 8);
            tree.insert(&key, value).map_err(io::Error::other)?;
        }
        Damage::Truncate(len) => {
            let mut value = old.ok_or_else(missing)?.to_vec();
            value.truncate(len);
            tree.insert(&key, value).map_err(io::Error::other)?;
        }
        Damage::Replace(value) => {
            tree.insert(&key, value).map_err(io::Error::other)?;
        }
        Damage::Remove => {
            old.ok_or_else(missing)?;
            tree.remove(&key).map_err(io::Error::other)?;
        }
    }
    db.flush().map_err(io::Error::other)?;
    Ok(())
}
