//! `baton snapshot save|restore` and `baton recover`: backup and disaster recovery.
//!
//! - `snapshot save FILE` asks the leader for a consistent copy of the state (the
//!   `Snapshot` RPC, linearizable) and writes it atomically (temporary file, fsync,
//!   rename, fsync of the directory).
//! - `snapshot restore FILE --data-dir DIR --id N --peers ...` checks the file, then
//!   seeds a new, empty data directory for node N of a *new* cluster (see
//!   `baton_store::backup`). Run it once per node, with the same file and `--peers`, then
//!   start the nodes with those `--peers`.
//! - `recover --data-dir DIR --id N` turns a stopped survivor of a cluster that lost its
//!   quorum for good into a one-node cluster with everything it holds. It refuses while
//!   any other voter answers on its peer port. The old data directory is kept beside the
//!   new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use baton_store::backup::{self, Seed};

/// How long `recover` waits for each other voter's peer port to accept a connection.
const PEER_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Save a consistent copy of the directory state to FILE (admin permission). It
    /// includes every write acknowledged before the command started.
    Save {
        /// Where to write the backup (replaced atomically if it exists).
        file: PathBuf,
    },
    /// Seed an empty data directory for one node of a NEW cluster from a backup. Run it
    /// for every node with the same FILE and --peers, then start each node with
    /// `baton directory --id N --data-dir DIR --peers ...`.
    Restore {
        /// The backup written by `baton snapshot save`.
        file: PathBuf,
        /// The new node's data directory; must not exist or be empty.
        #[arg(long)]
        data_dir: PathBuf,
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// Every member of the new cluster by peer address: 1=ADDR,2=ADDR,3=ADDR (this
        /// node included), as given to `baton directory --peers`.
        #[arg(long)]
        peers: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct RecoverArgs {
    /// The stopped survivor's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// The survivor's node id.
    #[arg(long)]
    id: u64,
}

pub async fn snapshot(global: &baton_cli::GlobalOpts, cmd: SnapshotCmd) -> Result<()> {
    match cmd {
        SnapshotCmd::Save { file } => save(global, &file).await,
        SnapshotCmd::Restore {
            file,
            data_dir,
            id,
            peers,
        } => {
            let summary = restore(&file, &data_dir, id, &peers)?;
            println!("{summary}");
            Ok(())
        }
    }
}

async fn save(global: &baton_cli::GlobalOpts, file: &Path) -> Result<()> {
    let client = baton_cli::client(global)?;
    let reply = client.snapshot().await?;
    // Check what arrived before it replaces anything.
    let payload = backup::decode_backup(&reply.data).context("the leader's snapshot")?;
    backup::write_atomically(file, &reply.data)
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!(
        "snapshot saved to {}: revision {}, {} roles, {} servers, last epoch {}, {} bytes",
        file.display(),
        payload.revision,
        payload.state.roles.len(),
        payload.state.servers.len(),
        payload.state.last_epoch,
        reply.data.len()
    );
    Ok(())
}

/// Check `file` and seed `data_dir`; returns the summary line.
pub fn restore(file: &Path, data_dir: &Path, id: u64, peers: &str) -> Result<String> {
    let members =
        baton_directory::config::parse_peers(peers).map_err(|e| anyhow!("--peers: {e}"))?;
    if !members.contains_key(&id) {
        bail!(
            "--id {id} is not in --peers ({}): list every member of the new cluster, this node included",
            peers
        );
    }
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let payload = backup::decode_backup(&bytes).with_context(|| file.display().to_string())?;
    let revision = payload.revision;
    let last_epoch = payload.state.last_epoch;
    let roles = payload.state.roles.len();
    backup::seed(
        data_dir,
        Seed {
            node_id: id,
            members: members.clone(),
            // A new cluster: its first leader picks a new id.
            cluster_id: None,
            last_log_id: baton_store::LogId::new(openraft_leader(0, 0), revision),
            vote: None,
            state: payload.state,
        },
    )?;
    Ok(format!(
        "node {id} seeded in {} from {} (revision {revision}, {roles} roles, last epoch \
         {last_epoch}) for a new cluster of {:?}: start it with --peers {peers}",
        data_dir.display(),
        file.display(),
        members.keys().collect::<Vec<_>>()
    ))
}

fn openraft_leader(term: u64, node: u64) -> baton_store::CommittedLeaderId {
    baton_store::CommittedLeaderId::new(term, node)
}

pub async fn recover(args: RecoverArgs) -> Result<()> {
    let dir = args.data_dir.clone();
    let survivor = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || backup::read_survivor(&dir))
            .await
            .map_err(|e| anyhow!("reading the data directory: {e}"))??
    };
    if let Some(i) = &survivor.identity
        && i.node_id != args.id
    {
        bail!(
            "the data directory {} belongs to node {}, not --id {}",
            dir.display(),
            i.node_id,
            args.id
        );
    }
    let Some(own_addr) = survivor.members.get(&args.id).cloned() else {
        bail!(
            "node {} is not a member of the cluster its data directory holds (members {:?}): \
             recover from a node that was a voter",
            args.id,
            survivor.members.keys().collect::<Vec<_>>()
        );
    };
    // Refuse while any other voter answers: recovering then would make two clusters.
    let others: BTreeMap<u64, String> = survivor
        .members
        .iter()
        .filter(|(id, _)| **id != args.id && survivor.voters.contains(id))
        .map(|(id, a)| (*id, a.clone()))
        .collect();
    let mut answered = Vec::new();
    for (id, addr) in &others {
        if peer_answers(addr).await {
            answered.push(format!("node {id} at {addr}"));
        }
    }
    if !answered.is_empty() {
        bail!(
            "refusing to recover: {} answered on the peer port. Recovery is for a quorum \
             lost for good; while other voters run, stop them first (or, if they have a \
             quorum, re-add this node with --join instead)",
            answered.join(", ")
        );
    }
    let stamp = baton_directory::node::wall_ms();
    let name = dir
        .file_name()
        .ok_or_else(|| anyhow!("--data-dir {} names no directory", dir.display()))?
        .to_string_lossy()
        .to_string();
    let parent = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
    let fresh = parent.join(format!("{name}.recovering-{stamp}"));
    let kept = parent.join(format!("{name}.before-recover-{stamp}"));
    let last = survivor.last_log_id;
    let revision = survivor.state.revision;
    let last_epoch = survivor.state.last_epoch;
    let roles = survivor.state.roles.len();
    let cluster = survivor
        .identity
        .as_ref()
        .and_then(|i| i.cluster_id.clone());
    {
        let fresh = fresh.clone();
        let seed = Seed {
            node_id: args.id,
            members: BTreeMap::from([(args.id, own_addr.clone())]),
            cluster_id: survivor.state.cluster_id.clone().or(cluster),
            last_log_id: last,
            vote: survivor.vote,
            state: survivor.state,
        };
        tokio::task::spawn_blocking(move || backup::seed(&fresh, seed))
            .await
            .map_err(|e| anyhow!("seeding: {e}"))??;
    }
    std::fs::rename(&dir, &kept).with_context(|| {
        format!(
            "cannot move {} aside to {} (the recovered store is in {})",
            dir.display(),
            kept.display(),
            fresh.display()
        )
    })?;
    std::fs::rename(&fresh, &dir).with_context(|| {
        format!(
            "cannot move the recovered store {} to {} (the old one is in {})",
            fresh.display(),
            dir.display(),
            kept.display()
        )
    })?;
    println!(
        "node {} recovered as a one-node cluster at revision {revision} (log {last}, {roles} \
         roles, last epoch {last_epoch}); the old data directory is kept in {}. Start the \
         node as before; then wipe each other node's data directory and start it with \
         --join ADDR (this node's client address) instead of --peers",
        args.id,
        kept.display(),
    );
    Ok(())
}

/// Whether something accepts a TCP connection at `addr` within [`PEER_PROBE_TIMEOUT`].
async fn peer_answers(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(PEER_PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}
