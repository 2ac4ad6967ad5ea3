//! The `scale` workload: how the directory's state machine and store grow with the number
//! of roles, at 1,000 / 10,000 / 100,000 roles over one server per ten roles.
//!
//! It drives the real store (`baton-store`: sled, fsync, the checksummed snapshot) and
//! the real apply (`baton_core::State` through the store's state machine) in this
//! process, without Raft replication or the network, so each figure is the cost of the
//! state itself as it grows, apart from the cluster's (which the other workloads measure):
//!
//! - apply: every server registered (an agent's `RegisterAgent`, so it is up and roles
//!   are placed at once), then every role created with a three-server list, appended to
//!   the log in batches of 1,000 and applied; reported per role and in all;
//! - memory: the process's resident memory growth over the apply (the state in memory);
//! - snapshot: building one snapshot of the whole state (serialize, checksum, fsync) and
//!   its size;
//! - restart: opening the store again as a node does at start (read and verify every
//!   record, load the snapshot);
//! - install: a blank store installing that snapshot, as a new or re-added node does.
//!
//! Growth is judged by the per-role figures: flat means linear.

use std::io::Cursor;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use baton_core::{AgentInstance, Command, Entry};
use baton_store::{CommittedLeaderId, LogEntry, LogId};
use openraft::EntryPayload;
use openraft::storage::{RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};

use crate::procs::rss_kb;
use crate::report::Goal;
use crate::workloads::Ctx;

/// Roles per server: each server is in the lists of about thirty roles.
const ROLES_PER_SERVER: usize = 10;
/// Entries appended and applied at once (as openraft hands them over in bursts).
const BATCH: usize = 1_000;

/// What one size measured.
struct Figures {
    apply: Duration,
    rss_kb: u64,
    snapshot: Duration,
    snapshot_bytes: usize,
    restart: Duration,
    install: Duration,
}

pub async fn scale(ctx: &mut Ctx) -> Result<()> {
    let sizes: &[usize] = if ctx.quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    ctx.param("scale_sizes", sizes.to_vec());
    for &roles in sizes {
        let dir = ctx.dir(&format!("scale-{roles}"));
        let f = measure(&dir, roles)
            .await
            .with_context(|| format!("{roles} roles"))?;
        let k = roles / 1_000;
        let us_per_role = |d: Duration| Some(d.as_secs_f64() * 1e6 / roles as f64);
        ctx.row(
            &format!("scale_apply_total_{k}k_roles"),
            "s",
            Some(f.apply.as_secs_f64()),
            None,
            Goal::None,
        );
        ctx.row(
            &format!("scale_apply_per_role_{k}k_roles"),
            "us",
            us_per_role(f.apply),
            None,
            Goal::None,
        );
        ctx.row(
            &format!("scale_memory_per_role_{k}k_roles"),
            "B",
            Some(f.rss_kb as f64 * 1024.0 / roles as f64),
            None,
            Goal::None,
        );
        ctx.row(
            &format!("scale_snapshot_build_{k}k_roles"),
            "ms",
            Some(f.snapshot.as_secs_f64() * 1e3),
            None,
            Goal::None,
        );
        ctx.row(
            &format!("scale_snapshot_size_{k}k_roles"),
            "MB",
            Some(f.snapshot_bytes as f64 / 1e6),
            None,
            Goal::None,
        );
        ctx.row(
            &format!("scale_restart_{k}k_roles"),
            "ms",
            Some(f.restart.as_secs_f64() * 1e3),
            None,
            Goal::None,
        );
        ctx.row(
            &format!("scale_snapshot_install_{k}k_roles"),
            "ms",
            Some(f.install.as_secs_f64() * 1e3),
            None,
            Goal::None,
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    ctx.note(
        "scale",
        "In-process: the real sled store and apply, no replication or network. Servers are registered up, \
         one per ten roles, each role on a three-server list. Flat per-role figures mean linear growth.",
    );
    Ok(())
}

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn entry(index: u64, cmd: Command) -> LogEntry {
    LogEntry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Entry {
            now_ms: 1_700_000_000_000 + index,
            cmd,
            advance_ms: 1,
            by: String::new(),
            request: String::new(),
            batch: Vec::new(),
        }),
    }
}

/// Every command of one size, in order: servers registered, then roles created.
fn commands(roles: usize) -> Vec<Command> {
    let servers = roles.div_ceil(ROLES_PER_SERVER);
    let name = |i: usize| format!("srv-{i:06}");
    let mut out = Vec::with_capacity(servers + roles);
    for i in 0..servers {
        out.push(Command::RegisterAgent {
            server: name(i),
            kinds: vec![],
            main: false,
            instance: AgentInstance {
                id: format!("inst-{i}"),
                address: String::new(),
            },
            replaces: None,
        });
    }
    for r in 0..roles {
        out.push(Command::CreateRole {
            name: format!("role-{r:07}"),
            kind: String::new(),
            servers: (0..3).map(|k| name((r + k * 7) % servers)).collect(),
            failback: false,
            failback_delay_ms: 0,
            database: None,
        });
    }
    out
}

async fn measure(dir: &std::path::Path, roles: usize) -> Result<Figures> {
    let pid = std::process::id();
    let store = dir.join("store");
    let (mut log, mut sm, _) = baton_store::open_verified(&store)?;
    let cmds = commands(roles);
    let rss_before = rss_kb(pid)?;
    let started = Instant::now();
    let mut index = 0u64;
    for chunk in cmds.chunks(BATCH) {
        let entries: Vec<LogEntry> = chunk
            .iter()
            .map(|c| {
                index += 1;
                entry(index, c.clone())
            })
            .collect();
        log.blocking_append(entries.clone()).await?;
        for r in sm.apply(entries).await?.into_iter().flatten() {
            if let Err(refusal) = r {
                anyhow::bail!("a generated command was refused: {refusal}");
            }
        }
    }
    let apply = started.elapsed();
    let rss = rss_kb(pid)?.saturating_sub(rss_before);

    let started = Instant::now();
    let snap = sm.get_snapshot_builder().await.build_snapshot().await?;
    let snapshot = started.elapsed();
    let meta = snap.meta.clone();
    let data = snap.snapshot.into_inner();
    drop((log, sm));

    let started = Instant::now();
    let (log, sm, verified) = baton_store::open_verified(&store)?;
    let restart = started.elapsed();
    anyhow::ensure!(
        verified.last_log_id.map(|l| l.index) == Some(index),
        "the reopened store ends at {:?}, not {index}",
        verified.last_log_id
    );
    drop((log, sm));

    let (_log2, mut blank, _) = baton_store::open_verified(&dir.join("installed"))?;
    let started = Instant::now();
    blank
        .install_snapshot(&meta, Box::new(Cursor::new(data.clone())))
        .await?;
    let install = started.elapsed();
    Ok(Figures {
        apply,
        rss_kb: rss,
        snapshot,
        snapshot_bytes: data.len(),
        restart,
        install,
    })
}
