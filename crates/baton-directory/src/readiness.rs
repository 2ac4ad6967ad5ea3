//! Whether a node is *ready*: worth sending clients and agents to. The HTTP `/readyz`
//! ([`crate::http`]), the gRPC health service and the `baton_ready` metric all follow
//! the one answer this module keeps.
//!
//! A node is ready when
//! 1. it knows a leader,
//! 2. it has applied its log up to within [`READY_LAG_MAX_ENTRIES`] of the leader's
//!    (a follower asks the leader for its applied index; on the leader, what it applied
//!    against its own log), and
//! 3. that leader has a quorum: on the leader, a quorum acknowledged it within the
//!    maximum election timeout (as the controller counts it, see `crate::manager`); on a
//!    follower, the leader answered it as leader in the follower's term, which it and
//!    this follower make a quorum of.
//!
//! The answer is computed every [`CHECK_EVERY`] by [`run`] (a node cut from its quorum
//! turns not-ready within that plus an election timeout), never per request: a flood of
//! `/readyz` requests costs the leader nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_proto::v1 as pb;
use baton_proto::v1::agent_server::AgentServer;
use baton_proto::v1::directory_client::DirectoryClient;
use baton_proto::v1::directory_server::DirectoryServer;
use baton_proto::v1::watch_server::WatchServer;
use openraft::ServerState;
use tonic_health::server::HealthReporter;

use crate::node::Node;
use crate::service::DirectoryService;
use crate::session::AgentService;
use crate::watch::WatchService;

/// How far (entries) a ready node's applied index may trail the leader's: a busy
/// cluster's followers are always a few entries behind; one that stays far behind is
/// not serving current reads.
pub const READY_LAG_MAX_ENTRIES: u64 = 100;
/// How often readiness is computed.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long a follower waits for the leader's answer.
const LEADER_TIMEOUT: Duration = Duration::from_millis(700);

/// The last readiness computed: `Err` holds the one-line reason it is not ready.
#[derive(Debug)]
pub struct Readiness {
    /// Starts not ready, until the first check.
    current: Mutex<Result<(), String>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            current: Mutex::new(Err("starting: readiness not checked yet".into())),
        }
    }
}

impl Readiness {
    pub fn get(&self) -> Result<(), String> {
        self.current.lock().expect("readiness lock").clone()
    }

    fn set(&self, r: Result<(), String>) {
        *self.current.lock().expect("readiness lock") = r;
    }
}

/// Compute the node's readiness now (see the module doc).
pub async fn check(node: &Node) -> Result<(), String> {
    if node.manager.is_shutting_down() {
        return Err("shutting down".into());
    }
    if !node.raft_open() {
        return Err("waiting for the identity check with the peers".into());
    }
    let m = node.raft.metrics().borrow().clone();
    let applied = m.last_applied.map_or(0, |l| l.index);
    let Some(leader) = m.current_leader else {
        return Err(format!(
            "no leader known in term {} (an election is running, or no quorum is reachable)",
            m.current_term
        ));
    };
    if leader == node.id {
        if m.state != ServerState::Leader {
            return Err(format!("becoming leader in term {}", m.current_term));
        }
        let stale_ms = node.config.election_timeout_max_ms;
        match m.millis_since_quorum_ack {
            Some(ms) if ms <= stale_ms && !node.manager.without_quorum() => {}
            Some(ms) => {
                return Err(format!(
                    "leader without a quorum: last acknowledged by a quorum {ms} ms ago"
                ));
            }
            None => return Err("leader without a quorum: none acknowledged it yet".into()),
        }
        let last = m.last_log_index.unwrap_or(0);
        if last.saturating_sub(applied) > READY_LAG_MAX_ENTRIES {
            return Err(format!(
                "applied index {applied} is {} entries behind the log ({last})",
                last - applied
            ));
        }
        return Ok(());
    }
    let Some((_, addr)) = node.leader() else {
        return Err(format!("leader {leader} has no address in the membership"));
    };
    let channel = node.channel(&addr).map_err(|e| e.message().to_string())?;
    let mut req = tonic::Request::new(pb::ClusterStatusRequest { local: true });
    req.set_timeout(LEADER_TIMEOUT);
    let reply = tokio::time::timeout(
        LEADER_TIMEOUT,
        DirectoryClient::new(channel).cluster_status(req),
    )
    .await;
    let status = match reply {
        Ok(Ok(r)) => r.into_inner().nodes.into_iter().next(),
        Ok(Err(e)) => return Err(format!("leader {leader} did not answer: {}", e.message())),
        Err(_) => {
            return Err(format!(
                "leader {leader} did not answer within {LEADER_TIMEOUT:?}"
            ));
        }
    };
    let Some(status) = status else {
        return Err(format!("leader {leader} sent an empty status"));
    };
    if status.state != "leader" || status.term != m.current_term {
        return Err(format!(
            "node {leader} is {} in term {}, not the leader of term {}",
            status.state, status.term, m.current_term
        ));
    }
    node.learn_leader_address(status.term, leader, status.address.clone());
    if status.last_applied.saturating_sub(applied) > READY_LAG_MAX_ENTRIES {
        return Err(format!(
            "applied index {applied} is {} entries behind the leader's ({})",
            status.last_applied - applied,
            status.last_applied
        ));
    }
    Ok(())
}

/// Keep `node.readiness` and the gRPC health of `Directory`, `Agent` and `Watch` (and
/// of the whole server, the empty service name) up to date until the node shuts down.
pub async fn run(node: Arc<Node>, health: HealthReporter) {
    let mut shutdown = node.manager.shutdown_signal();
    let mut was: Option<bool> = None;
    loop {
        let now = check(&node).await;
        let ready = now.is_ok();
        if was != Some(ready) {
            match &now {
                Ok(()) => tracing::info!(node = node.id, "ready"),
                Err(why) => tracing::info!(node = node.id, "not ready: {why}"),
            }
            set_health(&health, ready).await;
            was = Some(ready);
        }
        node.readiness.set(now);
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = crate::until_shutdown(&mut shutdown) => {
                node.readiness.set(Err("shutting down".into()));
                set_health(&health, false).await;
                return;
            }
        }
    }
}

async fn set_health(health: &HealthReporter, ready: bool) {
    use tonic_health::ServingStatus::{NotServing, Serving};
    let status = if ready { Serving } else { NotServing };
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <DirectoryServer<DirectoryService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(
            <AgentServer<AgentService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(
            <WatchServer<WatchService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}
