//! What undetected damage costs: the rollback and stuck demonstrations.

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::common::{addrs_of, client, node_state, runtime};
use super::corrupt::write_many;
use super::damage::{copy_dir, describe, inspect, written_len};
use super::ledger::{Ledger, SharedLedger, read_all};
use crate::{Cluster, ClusterOpts, try_wait_until};

/// What [`rollback_demo`] found.
#[derive(Debug, Default)]
pub struct RollbackReport {
    /// Writes acknowledged while the follower and the leader formed the quorum.
    pub acked: usize,
    /// Of those, missing after the leader was lost and the cut follower came back.
    pub lost: Vec<String>,
    /// What the damaged follower's store held before and after its tail was cut.
    pub before: String,
    pub after: String,
    /// How the survivors answered in the end.
    pub end: String,
}

impl fmt::Display for RollbackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rollback demonstration")?;
        writeln!(f, "  follower's store before the cut: {}", self.before)?;
        writeln!(f, "  follower's store after the cut:  {}", self.after)?;
        writeln!(f, "  survivors: {}", self.end)?;
        write!(
            f,
            "  acknowledged while it was in the quorum: {}, lost: {}{}",
            self.acked,
            self.lost.len(),
            if self.lost.is_empty() {
                String::new()
            } else {
                format!(" (e.g. {:?})", &self.lost[..self.lost.len().min(5)])
            }
        )
    }
}

/// Shows what a silent rollback of one node's sled files costs once a second fault
/// follows: with node C down, the leader L and follower F acknowledge writes X; F is
/// stopped and the tail of its sled `db` file is cut just enough to drop X; L is lost;
/// C and F come back. If F's store noticed the damage, F would refuse and C alone could
/// not elect a leader (unavailable, nothing lost); if not, C and F elect a leader
/// without X and acknowledged writes are gone.
pub fn rollback_demo() -> Result<RollbackReport> {
    let rt = runtime();
    let mut c = Cluster::start(
        3,
        ClusterOpts {
            insecure: true,
            ..ClusterOpts::default()
        },
    );
    let ids = c.ids();
    let all = addrs_of(&c, &ids);
    let ledger: SharedLedger = Arc::default();
    write_many(&rt, &all, "r-base-", 20, &ledger)?;
    let admin = client(all.clone(), Duration::from_secs(10));
    let leader = rt
        .block_on(admin.cluster_status())?
        .leader
        .context("no leader")?;
    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    let (f_id, c_id) = (others[0], others[1]);
    c.kill9(c_id);
    let quorum = addrs_of(&c, &[leader, f_id]);
    let x = Arc::new(Mutex::new(Ledger::default()));
    write_many(&rt, &quorum, "r-x-", 30, &x)?;
    let (x_names, x_first) = {
        let l = x.lock().unwrap();
        let first = l.acked.values().copied().min().unwrap_or(0);
        (l.acked.keys().cloned().collect::<Vec<_>>(), first)
    };
    let f_addr = c.node(f_id).addr.clone();
    let x_last = x.lock().unwrap().max_revision;
    try_wait_until(Duration::from_secs(10), || {
        node_state(&rt, &f_addr, f_id).filter(|(_, a)| *a >= x_last)
    });
    c.stop(f_id);

    // Cut the tail of F's db file: the smallest cut (found on copies) that drops X.
    let dir = c.node(f_id).data_dir.clone();
    let scratch = c.dir().join("inspect");
    let before = inspect(&dir, &scratch);
    cut_below(&dir, &c.dir().join("trial"), &scratch, x_first)?;
    let after = inspect(&dir, &scratch);

    // Lose the leader; bring back C and the damaged F.
    c.kill9(leader);
    c.restart(c_id);
    c.restart(f_id);
    let survivors = addrs_of(&c, &[c_id, f_id]);
    let mut report = RollbackReport {
        acked: x_names.len(),
        before: describe(&before),
        after: describe(&after),
        ..RollbackReport::default()
    };
    match read_all(&rt, survivors, Duration::from_secs(30)) {
        Ok(read) => {
            report.end = format!(
                "C and F elected a leader and serve revision {} ({} servers)",
                read.revision,
                read.names.len()
            );
            report.lost = x_names
                .into_iter()
                .filter(|n| !read.names.contains(n))
                .collect();
        }
        Err(e) => {
            report.end = format!(
                "no linearizable read within 30 s ({e}); node {f_id} running: {}",
                c.is_running(f_id)
            );
        }
    }
    Ok(report)
}

/// Cuts the tail of the `db` file of the closed store in `dir` by the smallest amount
/// (searched on copies in `trial`) after which the store's last log index is below
/// `index`. Returns the bytes cut.
pub(crate) fn cut_below(dir: &Path, trial: &Path, scratch: &Path, index: u64) -> Result<u64> {
    let db = dir.join("db");
    let used = written_len(&db)?;
    let last_after_cut = |cut: u64| -> Option<u64> {
        let _ = std::fs::remove_dir_all(trial);
        copy_dir(dir, trial).ok()?;
        File::options()
            .write(true)
            .open(trial.join("db"))
            .ok()?
            .set_len(used - cut)
            .ok()?;
        let v = inspect(trial, scratch).ok()?;
        Some(v.last_log_id.map_or(0, |l| l.index))
    };
    let (mut lo, mut hi) = (1u64, used - 1);
    if last_after_cut(hi).is_none_or(|l| l >= index) {
        bail!(
            "no cut of {} brings its last log index below {index}",
            db.display()
        );
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        match last_after_cut(mid) {
            Some(l) if l < index => hi = mid,
            _ => lo = mid + 1,
        }
    }
    let _ = std::fs::remove_dir_all(trial);
    File::options().write(true).open(&db)?.set_len(used - hi)?;
    Ok(hi)
}

/// What [`stuck_demo`] found.
#[derive(Debug, Default)]
pub struct StuckReport {
    pub before: String,
    pub after: String,
    /// The follower's applied revision and the leader's, after the wait.
    pub follower_revision: u64,
    pub leader_revision: u64,
    pub waited: Duration,
    pub caught_up: bool,
}

impl fmt::Display for StuckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rolled-back follower behind the leader's purge point")?;
        writeln!(f, "  follower's store before the cut: {}", self.before)?;
        writeln!(f, "  follower's store after the cut:  {}", self.after)?;
        write!(
            f,
            "  after {:?}: follower at revision {}, leader at {}: {}",
            self.waited,
            self.follower_revision,
            self.leader_revision,
            if self.caught_up { "caught up" } else { "STUCK" }
        )
    }
}

/// A follower whose sled `db` tail is cut so that its log ends before the leader's purge
/// point (the leader must send it a snapshot): does it catch up?
pub fn stuck_demo(wait: Duration) -> Result<StuckReport> {
    let rt = runtime();
    let opts = ClusterOpts {
        extra: vec!["--snapshot-every".into(), "20".into()],
        // Plain text: this campaign drives the nodes with in-process clients and is
        // about storage, not about who may speak.
        insecure: true,
        ..ClusterOpts::default()
    };
    let mut c = Cluster::start(3, opts);
    let ids = c.ids();
    let all = addrs_of(&c, &ids);
    let ledger: SharedLedger = Arc::default();
    write_many(&rt, &all, "k-", 80, &ledger)?;
    let admin = client(all.clone(), Duration::from_secs(10));
    let leader = rt
        .block_on(admin.cluster_status())?
        .leader
        .context("no leader")?;
    let f_id = *ids.iter().find(|i| **i != leader).expect("a follower");
    let f_addr = c.node(f_id).addr.clone();
    let target = ledger.lock().unwrap().max_revision;
    try_wait_until(Duration::from_secs(10), || {
        node_state(&rt, &f_addr, f_id).filter(|(_, a)| *a >= target)
    });
    c.stop(f_id);
    let dir = c.node(f_id).data_dir.clone();
    let scratch = c.dir().join("inspect");
    let before = inspect(&dir, &scratch);
    cut_below(&dir, &c.dir().join("trial"), &scratch, 15)?;
    let after = inspect(&dir, &scratch);
    c.restart(f_id);
    let t = Instant::now();
    let caught_up = try_wait_until(wait, || {
        node_state(&rt, &f_addr, f_id).filter(|(_, a)| *a >= target)
    })
    .is_some();
    let follower_revision = node_state(&rt, &f_addr, f_id).map_or(0, |(_, a)| a);
    let leader_revision = read_all(&rt, all, Duration::from_secs(10))?.revision;
    Ok(StuckReport {
        before: describe(&before),
        after: describe(&after),
        follower_revision,
        leader_revision,
        waited: t.elapsed(),
        caught_up,
    })
}
