//! The public `Directory` service: writes, reads, cluster status and membership.
//!
//! Writes go through Raft; a follower forwards them to the leader once. Reads are
//! linearizable unless the request asks for a stale read: the leader confirms its
//! leadership with a quorum round (read index) and reads its applied state; a follower
//! forwards the read to the leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use baton_proto::v1 as pb;
use baton_proto::v1::directory_client::DirectoryClient;
use baton_proto::v1::directory_server::Directory;
use openraft::ServerState;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use baton_tls::Permission;

use crate::auth::Caller;
use crate::convert::{command_from_proto, event_to_proto, role_to_proto, server_to_proto};
use crate::error::{self, invalid, not_leader, refusal};
use crate::node::Node;

/// Most events returned by one `Events` call (the history itself is bounded too).
const EVENTS_MAX: usize = 10_000;
/// Largest `Snapshot` reply: the Raft message limit (a state that big could not be
/// replicated as a snapshot either).
pub const SNAPSHOT_REPLY_MAX_BYTES: usize = crate::network::RAFT_MESSAGE_MAX_BYTES;
/// How long a forwarded `Snapshot` may take on the leader (encoding a large state).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node waits for a peer's own status when assembling `cluster status`.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(700);

pub struct DirectoryService {
    pub node: Arc<Node>,
}

/// Where a linearizable request is served.
enum Gate {
    /// Here: this node is the leader, confirmed, and has applied the read index.
    Local,
    /// On the leader, through this client (the request is marked as forwarded).
    Forward(DirectoryClient<Channel>),
}

fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(baton_proto::FORWARDED_KEY)
}

/// Wrap a message as a request that the leader must not forward again, on behalf of
/// `caller` (the leader checks the original caller's permission, and records it).
fn forwarded<T>(msg: T, caller: &Caller) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert(baton_proto::FORWARDED_KEY, "1".parse().expect("ascii"));
    if let Some(by) = caller.forward_value() {
        r.metadata_mut().insert(crate::auth::BY_KEY, by);
    }
    r.set_timeout(Duration::from_secs(5));
    r
}

impl DirectoryService {
    async fn gate(&self, forwarded: bool, stale: bool) -> Result<Gate, Status> {
        if stale {
            return Ok(Gate::Local);
        }
        match self.node.confirm_leadership().await {
            Ok(_) => Ok(Gate::Local),
            Err(Ok(Some((_, addr)))) if !forwarded => Ok(Gate::Forward(DirectoryClient::new(
                self.node.channel(&addr)?,
            ))),
            Err(Ok(_)) => Err(not_leader(self.node.leader_for_clients())),
            Err(Err(status)) => Err(status),
        }
    }

    /// A reply served through the leader (forwarded there), with the leader named in its
    /// metadata so that the client sends its next request there directly.
    fn hinted<T>(&self, reply: Result<Response<T>, Status>) -> Result<Response<T>, Status> {
        reply.map(|mut r| {
            // On the leader (most replies), nothing to name and nothing to look up.
            if !self.node.is_leader()
                && let Some((id, addr)) = self.node.leader_for_clients()
                && id != self.node.id
            {
                crate::error::hint_leader(r.metadata_mut(), id, addr.as_deref());
            }
            r
        })
    }

    fn local_status(&self) -> pb::NodeStatus {
        let m = self.node.raft.metrics().borrow().clone();
        let (members, voters) = self.node.members();
        let state = match m.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Follower if !voters.contains(&self.node.id) => "learner",
            ServerState::Follower => "follower",
            ServerState::Shutdown => "unreachable",
        };
        pb::NodeStatus {
            id: self.node.id,
            address: self.node.config.advertise.clone(),
            peer_address: members
                .get(&self.node.id)
                .cloned()
                .unwrap_or_else(|| self.node.config.peer_advertise.clone()),
            voter: voters.contains(&self.node.id),
            state: state.into(),
            last_applied: m.last_applied.map_or(0, |l| l.index),
            lag: None,
            sessions: self.node.sessions(),
            term: m.current_term,
        }
    }
}

#[tonic::async_trait]
impl Directory for DirectoryService {
    async fn apply(&self, req: Request<pb::Command>) -> Result<Response<pb::WriteReply>, Status> {
        let fwd = is_forwarded(&req);
        let caller = Caller::of(&req)?;
        let mut command = req.into_inner();
        // Checked where every write is admitted (`Node::write_entry`).
        let request = std::mem::take(&mut command.request_id);
        let mut cmd = command_from_proto(command)?;
        let needed = match cmd {
            baton_core::Command::SetLease { .. } => Permission::Admin,
            _ => Permission::Operator,
        };
        caller.require(needed, cmd.name())?;
        if let baton_core::Command::SetLease { lease_ms, grace_ms } = &mut cmd {
            // The grace must cover clock-rate error over the lease (see the agent's
            // fence derivation); 0 asks for the smallest safe value.
            let min = baton_core::controller::min_grace_ms(*lease_ms, self.node.config.rho_ppm);
            if *grace_ms == 0 {
                *grace_ms = crate::config::default_grace_ms(*lease_ms, self.node.config.rho_ppm);
            } else if *grace_ms < min {
                return Err(crate::error::invalid(format!(
                    "grace {grace_ms} ms is shorter than the clock-rate error over a {lease_ms} ms lease ({min} ms)"
                )));
            }
        }
        // Malformed input is refused here, before it takes a log entry.
        cmd.validate().map_err(|r| refusal(&r))?;
        let what = cmd.name();
        let reply = crate::metrics::timed(
            &self.node.metrics.write_seconds,
            self.node.write_as(cmd, &request, fwd, &caller),
        )
        .await?;
        if !fwd {
            // The audit line: who changed what, on the node the client called.
            tracing::info!(by = %caller.by(), command = what, revision = reply.revision, "admin write");
        }
        self.hinted(Ok(Response::new(reply)))
    }

    async fn get_role(
        &self,
        req: Request<pb::GetRoleRequest>,
    ) -> Result<Response<pb::Role>, Status> {
        let caller = Caller::of(&req)?;
        caller.require(Permission::Viewer, "reading a role")?;
        let fwd = is_forwarded(&req);
        let inner = req.into_inner();
        let stale = inner.read.as_ref().is_some_and(|r| r.stale);
        match self.gate(fwd, stale).await? {
            Gate::Forward(mut c) => self.hinted(c.get_role(forwarded(inner, &caller)).await),
            Gate::Local => self
                .node
                .read(|s| s.role(&inner.name).map(|r| role_to_proto(s, r)))
                .map(Response::new)
                .map_err(|r| refusal(&r)),
        }
    }

    async fn list_roles(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::RoleList>, Status> {
        let caller = Caller::of(&req)?;
        caller.require(Permission::Viewer, "listing roles")?;
        let fwd = is_forwarded(&req);
        let inner = req.into_inner();
        let stale = inner.read.as_ref().is_some_and(|r| r.stale);
        match self.gate(fwd, stale).await? {
            Gate::Forward(mut c) => self.hinted(c.list_roles(forwarded(inner, &caller)).await),
            Gate::Local => Ok(Response::new(self.node.read(|s| pb::RoleList {
                roles: s.roles.values().map(|r| role_to_proto(s, r)).collect(),
                revision: s.revision,
            }))),
        }
    }

    async fn candidates(
        &self,
        req: Request<pb::GetRoleRequest>,
    ) -> Result<Response<pb::CandidatesReply>, Status> {
        let caller = Caller::of(&req)?;
        caller.require(Permission::Viewer, "reading a role's candidates")?;
        let fwd = is_forwarded(&req);
        let inner = req.into_inner();
        let stale = inner.read.as_ref().is_some_and(|r| r.stale);
        match self.gate(fwd, stale).await? {
            Gate::Forward(mut c) => self.hinted(c.candidates(forwarded(inner, &caller)).await),
            Gate::Local => self
                .node
                .read(|s| s.candidates(&inner.name))
                .map(|servers| Response::new(pb::CandidatesReply { servers }))
                .map_err(|r| refusal(&r)),
        }
    }

    async fn list_servers(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ServerList>, Status> {
        let caller = Caller::of(&req)?;
        caller.require(Permission::Viewer, "listing servers")?;
        let fwd = is_forwarded(&req);
        let inner = req.into_inner();
        let stale = inner.read.as_ref().is_some_and(|r| r.stale);
        match self.gate(fwd, stale).await? {
            Gate::Forward(mut c) => self.hinted(c.list_servers(forwarded(inner, &caller)).await),
            Gate::Local => Ok(Response::new(self.node.read(|s| pb::ServerList {
                servers: s.servers.values().map(|v| server_to_proto(s, v)).collect(),
                revision: s.revision,
            }))),
        }
    }

    async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<pb::EventList>, Status> {
        let caller = Caller::of(&req)?;
        caller.require(Permission::Viewer, "reading the history")?;
        let fwd = is_forwarded(&req);
        let inner = req.into_inner();
        let stale = inner.read.as_ref().is_some_and(|r| r.stale);
        match self.gate(fwd, stale).await? {
            Gate::Forward(mut c) => self.hinted(c.events(forwarded(inner, &caller)).await),
            Gate::Local => {
                let (mut events, revision) = self.node.read(|s| {
                    let events = s
                        .history
                        .iter()
                        .filter(|e| inner.role.as_ref().is_none_or(|r| &e.role == r))
                        .rev()
                        .take(EVENTS_MAX)
                        .map(event_to_proto)
                        .collect::<Vec<_>>();
                    (events, s.revision)
                });
                events.reverse();
                Ok(Response::new(pb::EventList { events, revision }))
            }
        }
    }

    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        let caller = Caller::of(&req)?;
        caller.require(Permission::Viewer, "reading the cluster status")?;
        let fwd = is_forwarded(&req);
        let me = self.local_status();
        let m = self.node.raft.metrics().borrow().clone();
        let inner = req.into_inner();
        if !inner.local && !fwd && !self.node.is_leader() {
            // The leader knows each follower's replication lag: ask it, and assemble the
            // status here only if it cannot answer.
            if let Some((_, addr)) = self.node.leader()
                && let Ok(ch) = self.node.channel(&addr)
            {
                let mut c = DirectoryClient::new(ch);
                let mut r = forwarded(inner, &caller);
                r.set_timeout(PEER_STATUS_TIMEOUT * 2);
                if let Ok(reply) = c.cluster_status(r).await {
                    return Ok(reply);
                }
            }
        }
        if inner.local {
            let lease = self.node.lease();
            return Ok(Response::new(pb::ClusterStatusReply {
                leader: m.current_leader,
                term: m.current_term,
                nodes: vec![me],
                lease_ms: lease.lease_ms,
                grace_ms: lease.grace_ms,
                expiry_lease_ms: lease.expiry_lease_ms,
            }));
        }
        let (members, voters) = self.node.members();
        let mut probes = Vec::new();
        for (id, addr) in members.iter().filter(|(id, _)| **id != self.node.id) {
            let (id, addr) = (*id, addr.clone());
            let channel = self.node.channel(&addr);
            let voter = voters.contains(&id);
            probes.push(async move {
                let status = async {
                    let mut c = DirectoryClient::new(channel?);
                    let mut r = Request::new(pb::ClusterStatusRequest { local: true });
                    r.set_timeout(PEER_STATUS_TIMEOUT);
                    let reply = tokio::time::timeout(PEER_STATUS_TIMEOUT, c.cluster_status(r))
                        .await
                        .map_err(|_| error::unavailable("timeout"))??;
                    reply
                        .into_inner()
                        .nodes
                        .into_iter()
                        .next()
                        .ok_or_else(|| error::unavailable("empty status"))
                }
                .await;
                status.unwrap_or(pb::NodeStatus {
                    id,
                    address: addr.clone(),
                    peer_address: addr,
                    voter,
                    state: "unreachable".into(),
                    last_applied: 0,
                    lag: None,
                    sessions: 0,
                    term: 0,
                })
            });
        }
        let mut nodes: BTreeMap<u64, pb::NodeStatus> = futures::future::join_all(probes)
            .await
            .into_iter()
            .map(|n| (n.id, n))
            .collect();
        nodes.insert(me.id, me);
        // The leader knows how far each follower's log is behind its own.
        if let (Some(repl), Some(last)) = (&m.replication, m.last_log_index) {
            for (id, matched) in repl {
                if let (Some(n), Some(matched)) = (nodes.get_mut(id), matched) {
                    n.lag = Some(last.saturating_sub(matched.index));
                }
            }
        }
        // A node we reached but that has not been told of its membership (a joining
        // learner) still shows as what the leader's membership says.
        for n in nodes.values_mut() {
            n.voter = voters.contains(&n.id);
        }
        let mut leader = m.current_leader;
        let mut term = m.current_term;
        for n in nodes.values() {
            if n.state == "leader" && n.term >= term {
                leader = Some(n.id);
                term = n.term;
            }
        }
        let lease = self.node.lease();
        Ok(Response::new(pb::ClusterStatusReply {
            leader,
            term,
            nodes: nodes.into_values().collect(),
            lease_ms: lease.lease_ms,
            grace_ms: lease.grace_ms,
            expiry_lease_ms: lease.expiry_lease_ms,
        }))
    }

    async fn add_node(
        &self,
        req: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let fwd = is_forwarded(&req);
        let caller = Caller::of(&req)?;
        // A node may ask to be added as itself (`--join`); anything else is an admin's.
        if caller.node() != Some(req.get_ref().id) {
            caller.require(Permission::Admin, "adding a node")?;
        }
        let inner = req.into_inner();
        if inner.id == 0 {
            return Err(invalid("node id 0 is reserved; ids start at 1"));
        }
        if inner.address.is_empty() || inner.address.contains(char::is_whitespace) {
            return Err(invalid(format!("bad node address {:?}", inner.address)));
        }
        if inner.cluster_id.len() > baton_core::command::CLUSTER_ID_MAX {
            return Err(invalid(format!(
                "cluster id of {} bytes is longer than {}",
                inner.cluster_id.len(),
                baton_core::command::CLUSTER_ID_MAX
            )));
        }
        if let Gate::Forward(mut c) = self.gate(fwd, false).await? {
            return c.add_node(forwarded(inner, &caller)).await;
        }
        // A node that already belongs to another cluster must not join this one.
        crate::identity::check_same_cluster(
            &self.node,
            &format!("joining node {}", inner.id),
            &inner.cluster_id,
        )?;
        tracing::info!(by = %caller.by(), id = inner.id, address = %inner.address, "admin: add node");
        let summary = self
            .node
            .manager
            .add_node(&self.node, inner.id, inner.address)
            .await?;
        Ok(Response::new(pb::MembershipReply {
            summary,
            cluster_id: crate::identity::cluster_id(&self.node).unwrap_or_default(),
        }))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let caller = Caller::of(&req)?;
        caller.require(Permission::Admin, "removing a node")?;
        let fwd = is_forwarded(&req);
        let inner = req.into_inner();
        if let Gate::Forward(mut c) = self.gate(fwd, false).await? {
            return c.remove_node(forwarded(inner, &caller)).await;
        }
        tracing::info!(by = %caller.by(), id = inner.id, "admin: remove node");
        self.node
            .manager
            .remove_node(&self.node, inner.id)
            .await
            .map(|summary| {
                Response::new(pb::MembershipReply {
                    summary,
                    cluster_id: String::new(),
                })
            })
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let caller = Caller::of(&req)?;
        // A node asking by itself is the directory's own preferred-leader move.
        if caller.node().is_none() {
            caller.require(Permission::Admin, "transferring leadership")?;
        }
        let inner = req.into_inner();
        tracing::info!(by = %caller.by(), to = inner.id, "admin: transfer leadership");
        self.node
            .manager
            .transfer_leader(&self.node, inner.id, &caller)
            .await
            .map(|summary| {
                Response::new(pb::MembershipReply {
                    summary,
                    cluster_id: String::new(),
                })
            })
    }

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotReply>, Status> {
        let caller = Caller::of(&req)?;
        caller.require(Permission::Admin, "saving a snapshot")?;
        let fwd = is_forwarded(&req);
        let inner = req.into_inner();
        // Linearizable: on the leader, after a read-index round, so the state includes
        // every write acknowledged before this call.
        match self.gate(fwd, false).await? {
            Gate::Forward(c) => {
                let mut r = forwarded(inner, &caller);
                r.set_timeout(SNAPSHOT_TIMEOUT);
                c.max_decoding_message_size(SNAPSHOT_REPLY_MAX_BYTES)
                    .snapshot(r)
                    .await
            }
            Gate::Local => {
                let state = self.node.read(|s| s.clone());
                let (revision, cluster_id) = (state.revision, state.cluster_id.clone());
                let created_ms = self.node.wall_ms();
                let data = tokio::task::spawn_blocking(move || {
                    baton_store::backup::encode_backup(&state, created_ms)
                })
                .await
                .map_err(|e| Status::internal(format!("encoding the snapshot: {e}")))?
                .map_err(|e| Status::internal(e.to_string()))?;
                if data.len() > SNAPSHOT_REPLY_MAX_BYTES {
                    return Err(Status::resource_exhausted(format!(
                        "the snapshot is {} bytes, over the {SNAPSHOT_REPLY_MAX_BYTES} bytes \
                         one reply may carry",
                        data.len()
                    )));
                }
                tracing::info!(by = %caller.by(), revision, bytes = data.len(), "admin: snapshot saved");
                Ok(Response::new(pb::SnapshotReply {
                    data,
                    revision,
                    cluster_id: cluster_id.unwrap_or_default(),
                }))
            }
        }
    }
}
