//! Who a node is, which cluster it belongs to, and whether it may vote.
//!
//! Raft assumes a voter never forgets what it voted for and acknowledged. A node whose
//! data directory was wiped and that is started again with its old `--peers` would come
//! back with no vote and no log, as a voter: together with one more failure that loses
//! acknowledged writes. So:
//!
//! - The store records the node id it was created for and, once known, the cluster id
//!   (`baton_store::Identity`). A node started with another `--id` refuses to start.
//! - The cluster id is chosen at random by the cluster's first leader and travels in the
//!   log (`Command::SetClusterId`), so every member agrees on it; each node copies it into
//!   its store. A node that joins learns it from the node it joins through.
//! - Once a node holds Raft state it tells every peer so (`Identify` with `has_data`), and
//!   each peer records that durably. A node that starts with `--peers` and a blank store
//!   first asks its peers; if one of them knows it held data, it refuses to start and
//!   says how to re-add it. Until that check passes it answers no Raft RPC, so nothing
//!   reaches its store before the check.
//! - Three fresh nodes started together still form a cluster: none of them has told
//!   the others it holds data before the check, so each passes it and `initialize`s as
//!   before. A blank node whose peers already form a cluster does not `initialize`
//!   (`--peers` forms a cluster only when none exists yet): listed as a voter, it waits
//!   for the leader; not listed, it refuses and says to use `--join`.
//! - Nodes of different clusters refuse each other: the `Identify` check and the join
//!   (`AddNode` carries the joiner's stored cluster id) name both ids.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_proto::v1 as pb;
use baton_proto::v1::raft_client::RaftClient;
use baton_store::{Identity, LogStore, Verified};
use tonic::{Code, Request, Status};

use crate::config::NodeConfig;
use crate::error::{DirectoryError, status};
use crate::node::Node;

/// How long one `Identify` call may take.
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a blank node waits for every peer to answer before it settles for a majority.
const ALL_PEERS_WAIT: Duration = Duration::from_secs(5);
/// How often the background task re-checks (announcements, cluster id). Short: a new
/// cluster gets its id within a tick of its first leader's election.
const TICK: Duration = Duration::from_millis(100);
/// The reason attached to a refusal between nodes of different clusters.
pub const OTHER_CLUSTER: &str = "OTHER_CLUSTER";

/// The remedy for a node that lost its data, as the operator must read it.
pub fn readd_remedy(id: u64) -> String {
    format!(
        "to re-add it: stop this node, run `baton cluster remove-node {id}` against the \
         other nodes, then start it again with an empty data directory and `--join ADDR` \
         (the address of a running node) instead of `--peers`"
    )
}

/// Check the stored identity against the configuration, and record it in a store that
/// has none yet. Runs when the store is opened, before Raft starts.
pub async fn check_store(
    config: &NodeConfig,
    log: &LogStore,
    verified: &Verified,
) -> Result<(), DirectoryError> {
    match &verified.identity {
        Some(found) if found.node_id != config.id => Err(DirectoryError::Identity(format!(
            "the data directory {} belongs to node {} (cluster {}), but this node was \
                 started with --id {}: start it with --id {}, or give node {} a data \
                 directory of its own",
            log.dir().display(),
            found.node_id,
            found.cluster_id.as_deref().unwrap_or("not known yet"),
            config.id,
            found.node_id,
            config.id
        ))),
        Some(_) => Ok(()),
        None => {
            // A new store, or one written before identities existed (which is this
            // node's: it was started with it).
            log.save_identity(&Identity {
                node_id: config.id,
                cluster_id: None,
            })
            .await?;
            Ok(())
        }
    }
}

/// This node's cluster id: the applied state's once it has one, else the stored one.
pub fn cluster_id(node: &Node) -> Option<String> {
    node.read(|st| st.cluster_id.clone()).or_else(|| {
        node.store
            .as_ref()
            .and_then(|s| s.identity().ok().flatten())
            .and_then(|i| i.cluster_id)
    })
}

fn other_cluster(ours: &str, who: &str, theirs: &str) -> Status {
    status(
        Code::FailedPrecondition,
        OTHER_CLUSTER,
        format!(
            "this node belongs to cluster {ours}, but {who} belongs to cluster {theirs}: \
             nodes of different clusters do not talk to each other (check --peers / --join, \
             and that each node has its own data directory)"
        ),
    )
}

/// Refuse a peer or joiner of another cluster. Empty ids (not known yet) match anything.
pub fn check_same_cluster(node: &Node, who: &str, theirs: &str) -> Result<(), Status> {
    match cluster_id(node) {
        Some(ours) if !theirs.is_empty() && ours != theirs => {
            Err(other_cluster(&ours, who, theirs))
        }
        _ => Ok(()),
    }
}

/// Serve `Identify`: record a peer that holds data (fsynced before the answer), and say
/// who this node is.
pub async fn answer(node: &Node, req: pb::IdentifyRequest) -> Result<pb::IdentifyReply, Status> {
    if req.from == 0 {
        return Err(crate::error::invalid(
            "node id 0 is reserved; ids start at 1",
        ));
    }
    if req.cluster_id.len() > baton_core::command::CLUSTER_ID_MAX {
        return Err(crate::error::invalid(format!(
            "cluster id of {} bytes is longer than {}",
            req.cluster_id.len(),
            baton_core::command::CLUSTER_ID_MAX
        )));
    }
    check_same_cluster(node, &format!("node {}", req.from), &req.cluster_id)?;
    let mut knows_you = false;
    if let Some(store) = &node.store {
        if req.has_data {
            let new = store
                .add_peer_with_data(req.from)
                .await
                .map_err(|e| Status::unavailable(format!("recording node {}: {e}", req.from)))?;
            if new {
                tracing::info!(peer = req.from, "peer holds data of this cluster");
            }
        }
        knows_you = store
            .peers_with_data()
            .map_err(|e| Status::unavailable(e.to_string()))?
            .contains(&req.from);
    }
    let (members, voters) = node.members();
    Ok(pb::IdentifyReply {
        id: node.id,
        cluster_id: cluster_id(node).unwrap_or_default(),
        initialized: !members.is_empty(),
        knows_you,
        voters: voters.into_iter().collect(),
    })
}

async fn identify(
    node: &Node,
    addr: &str,
    cluster_id: &str,
    has_data: bool,
) -> Result<pb::IdentifyReply, Status> {
    let mut c = RaftClient::new(node.channel(addr)?);
    let mut r = Request::new(pb::IdentifyRequest {
        from: node.id,
        cluster_id: cluster_id.to_string(),
        has_data,
    });
    r.set_timeout(IDENTIFY_TIMEOUT);
    tokio::time::timeout(IDENTIFY_TIMEOUT, c.identify(r))
        .await
        .map_err(|_| Status::unavailable("timeout"))?
        .map(|r| r.into_inner())
}

/// What the peers said of the cluster (see [`check_peers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peers {
    /// No peer that answered belongs to a cluster yet: `--peers` may form one.
    NoCluster,
    /// This blank node is a voter of a cluster that exists (an initial member that never
    /// held data): it must not bootstrap another; the leader brings it up to date.
    ClusterExists,
}

/// Before a node started with `--peers` votes, ask its peers about it. A blank store
/// whose peers know this node held data is refused (it lost its data); so is a peer of
/// another cluster, and a blank node that a formed cluster does not list as a voter
/// (`--peers` forms a new cluster only; a node is added to one with `--join`). A blank
/// node waits until every peer answered, or a majority of the peer list (itself
/// included) did and [`ALL_PEERS_WAIT`] passed: a cluster that exists has a majority of
/// those with data. A node with data asks once and does not wait.
pub async fn check_peers(node: &Node, blank: bool) -> Result<Peers, DirectoryError> {
    let peers: Vec<(u64, String)> = node
        .config
        .peers
        .iter()
        .filter(|(id, _)| **id != node.id)
        .map(|(id, a)| (*id, a.clone()))
        .collect();
    if peers.is_empty() || node.config.peers.is_empty() {
        return Ok(Peers::NoCluster);
    }
    let ours = cluster_id(node).unwrap_or_default();
    let majority = node.config.peers.len() / 2 + 1;
    let started = Instant::now();
    let mut answered: BTreeSet<u64> = BTreeSet::new();
    let mut exists = false;
    let mut last_log = Instant::now();
    loop {
        let ours_ref = ours.as_str();
        let asks =
            peers
                .iter()
                .filter(|(id, _)| !answered.contains(id))
                .map(|(id, addr)| async move {
                    (id, addr, identify(node, addr, ours_ref, false).await)
                });
        for (id, addr, reply) in futures::future::join_all(asks).await {
            match reply {
                Ok(reply) => {
                    if !ours.is_empty() && !reply.cluster_id.is_empty() && reply.cluster_id != ours
                    {
                        return Err(DirectoryError::Identity(format!(
                            "node {} at {addr} (in --peers) belongs to cluster {}, this node \
                             to cluster {ours}: check --peers and the data directory",
                            id, reply.cluster_id
                        )));
                    }
                    if blank && reply.knows_you {
                        return Err(DirectoryError::Identity(format!(
                            "node {}'s data directory {} is empty, but node {id} at {addr} \
                             knows this node held data of cluster {} (voters {:?}): it lost \
                             its data, and a voter that forgot what it acknowledged can lose \
                             writes, so it must not vote again as if it had not; {}",
                            node.id,
                            node.config.data_dir.display(),
                            if reply.cluster_id.is_empty() {
                                "(id not set yet)"
                            } else {
                                &reply.cluster_id
                            },
                            reply.voters,
                            readd_remedy(node.id)
                        )));
                    }
                    if blank && reply.initialized {
                        if !reply.voters.contains(&node.id) {
                            return Err(DirectoryError::Identity(format!(
                                "node {id} at {addr} (in --peers) belongs to a cluster whose \
                                 voters are {:?}, without this node ({}): --peers only forms \
                                 a new cluster; start this node with an empty data directory \
                                 and `--join ADDR` (the address of a running node) instead",
                                reply.voters, node.id
                            )));
                        }
                        exists = true;
                    }
                    answered.insert(*id);
                }
                Err(s) if s.code() == Code::FailedPrecondition => {
                    return Err(DirectoryError::Identity(format!(
                        "node {id} at {addr} (in --peers) refused this node: {}",
                        s.message()
                    )));
                }
                Err(_) => {}
            }
        }
        let found = if exists {
            Peers::ClusterExists
        } else {
            Peers::NoCluster
        };
        if !blank || answered.len() == peers.len() {
            return Ok(found);
        }
        if answered.len() + 1 >= majority && started.elapsed() >= ALL_PEERS_WAIT {
            return Ok(found);
        }
        if last_log.elapsed() >= ALL_PEERS_WAIT {
            tracing::warn!(
                answered = ?answered,
                "the data directory is empty: waiting for a majority of --peers to say \
                 whether this node held data before"
            );
            last_log = Instant::now();
        }
        if node.manager.is_shutting_down() {
            return Err(DirectoryError::Identity(
                "stopped while checking peers".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The background task of a node with a store: tell every member that this node holds
/// data, copy the cluster id from the applied state into the store, and, as the leader
/// of a cluster without an id, propose one.
pub async fn run(node: Arc<Node>) {
    let Some(store) = node.store.clone() else {
        return;
    };
    let mut told: BTreeSet<u64> = BTreeSet::new();
    let mut shutdown = node.manager.shutdown_signal();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        let applied = node.read(|st| st.cluster_id.clone());
        // The cluster id: the first leader proposes one; every node stores the applied one.
        match (&applied, store.identity()) {
            (None, _) if node.is_leader() => {
                let id = format!("{:032x}", rand::random::<u128>());
                match node
                    .write(baton_core::Command::SetClusterId { id: id.clone() }, true)
                    .await
                {
                    Ok(_) => tracing::info!(cluster = %id, "cluster id proposed"),
                    Err(e) => tracing::debug!("proposing a cluster id: {}", e.message()),
                }
            }
            (Some(id), Ok(Some(stored))) if stored.cluster_id.as_ref() != Some(id) => {
                if let Some(other) = &stored.cluster_id {
                    tracing::error!(
                        "this node's store says cluster {other}, but the cluster it is in \
                         has id {id}"
                    );
                } else if let Err(e) = store
                    .save_identity(&Identity {
                        node_id: node.id,
                        cluster_id: Some(id.clone()),
                    })
                    .await
                {
                    tracing::error!("storing the cluster id: {e}");
                } else {
                    tracing::info!(cluster = %id, "cluster id stored");
                }
            }
            _ => {}
        }
        // Tell every member that this node holds data, once per member and process.
        let (members, _) = node.members();
        if !members.contains_key(&node.id) {
            continue;
        }
        let ours = cluster_id(&node).unwrap_or_default();
        for (id, addr) in members.iter().filter(|(id, _)| **id != node.id) {
            if told.contains(id) {
                continue;
            }
            match identify(&node, addr, &ours, true).await {
                Ok(_) => {
                    tracing::info!("node {id} acknowledged that this node holds data");
                    told.insert(*id);
                }
                Err(s) if s.code() == Code::FailedPrecondition => {
                    tracing::error!("node {id} at {addr} refused this node: {}", s.message());
                }
                Err(_) => {}
            }
        }
    }
}
