//! The internal `Raft` service: openraft's RPCs, renewal batches from followers, and the
//! timer switches of a controlled leadership transfer.

use std::sync::Arc;

use baton_proto::v1 as pb;
use baton_proto::v1::raft_server::Raft as RaftRpc;
use baton_store::TypeConfig;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::error::invalid;
use crate::node::Node;

/// Metadata key of a forwarded write's request id (`pb::Command::request_id`), so the
/// leader deduplicates a retry that went through a follower as one sent to it directly.
pub const REQUEST_KEY: &str = "baton-request";

pub struct RaftService {
    pub node: Arc<Node>,
}

/// A Raft request in either wire format (see `crate::network::decode`).
fn decode<T: serde::de::DeserializeOwned>(p: &pb::RaftPayload) -> Result<T, Status> {
    crate::network::decode(&p.data).map_err(invalid)
}

/// A Raft reply, in the current wire format.
fn encode<T: Serialize>(v: &T) -> Result<Response<pb::RaftPayload>, Status> {
    crate::network::encode(v)
        .map(|data| Response::new(pb::RaftPayload { data }))
        .map_err(Status::internal)
}

/// A forwarded command: JSON, as it always was (its schema is baton-core's, and it is
/// sent once per forwarded write, not per follower).
fn decode_command(p: &pb::RaftPayload) -> Result<baton_core::Command, Status> {
    // Bounded before it is decoded: a member's runaway payload (the Raft service takes
    // messages of up to 64 MB) is refused at once, instead of stalling this thread (and
    // the heartbeats queued behind it) while it is parsed only to be refused for its size.
    if p.data.len() > baton_store::COMMAND_MAX_BYTES {
        return Err(invalid(format!(
            "a forwarded command of {} bytes is over the limit of {} bytes (no valid command \
             encodes larger)",
            p.data.len(),
            baton_store::COMMAND_MAX_BYTES
        )));
    }
    serde_json::from_slice(&p.data)
        .map_err(|e| invalid(format!("malformed forwarded command: {e}")))
}

/// A Raft message names its sender (the candidate of a vote, the leader of an append):
/// refuse one whose sender is not the node the connection's certificate names, so a
/// node's key cannot campaign or lead as another node.
fn check_sender<T>(req: &Request<T>, claimed: u64, what: &str) -> Result<(), Status> {
    match Caller::of(req)?.node() {
        Some(n) if n != claimed => Err(Status::permission_denied(format!(
            "this certificate is node {n}; the {what} claims to come from node {claimed}"
        ))),
        _ => Ok(()),
    }
}

impl RaftService {
    /// Calls that only make sense between members (forwarded writes, renewals, claims,
    /// timer switches): refuse a node certificate of a node outside the membership (a
    /// removed node, or one not added yet).
    fn check_member<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match Caller::of(req)?.node() {
            Some(n) if !self.node.members().0.contains_key(&n) => Err(Status::permission_denied(
                format!("node {n} is not a member of this cluster"),
            )),
            _ => Ok(()),
        }
    }

    /// Refuse Raft's own RPCs until the node's identity check passed: nothing may reach
    /// the store of a node that might have lost its data before it is found out.
    fn gate(&self) -> Result<(), Status> {
        if self.node.raft_open() {
            return Ok(());
        }
        Err(Status::unavailable(format!(
            "node {} is checking with its peers whether it held data before; it takes part \
             in Raft once that passes",
            self.node.id
        )))
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn identify(
        &self,
        req: Request<pb::IdentifyRequest>,
    ) -> Result<Response<pb::IdentifyReply>, Status> {
        crate::identity::answer(&self.node, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn append_entries(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        self.gate()?;
        let rpc: AppendEntriesRequest<TypeConfig> =
            crate::network::decode_append(&req.get_ref().data).map_err(invalid)?;
        check_sender(
            &req,
            rpc.vote.leader_id().voted_for().unwrap_or(0),
            "append",
        )?;
        let reply = self.node.raft.append_entries(rpc).await;
        if reply.as_ref().is_ok_and(|r| r.is_success()) {
            self.node.heard_from_leader();
        }
        encode(&reply)
    }

    async fn vote(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        self.gate()?;
        let rpc: VoteRequest<u64> = decode(req.get_ref())?;
        check_sender(
            &req,
            rpc.vote.leader_id().voted_for().unwrap_or(0),
            "vote request",
        )?;
        encode(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        self.gate()?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req.get_ref())?;
        check_sender(
            &req,
            rpc.vote.leader_id().voted_for().unwrap_or(0),
            "snapshot",
        )?;
        encode(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn forward_renewals(
        &self,
        req: Request<pb::RenewalBatch>,
    ) -> Result<Response<pb::RenewalBatchReply>, Status> {
        self.check_member(&req)?;
        let b = req.into_inner();
        if b.servers.len() > crate::session::RENEWAL_BATCH_MAX {
            return Err(invalid(format!(
                "renewal batch of {} servers exceeds the limit of {}",
                b.servers.len(),
                crate::session::RENEWAL_BATCH_MAX
            )));
        }
        if b.instances.len() != b.servers.len() {
            return Err(invalid(format!(
                "renewal batch names {} servers but {} agent instances",
                b.servers.len(),
                b.instances.len()
            )));
        }
        let renewals = b.servers.into_iter().zip(b.instances).collect();
        let (confirmed, read_index) = self.node.liveness.confirm(&self.node, renewals).await?;
        let (confirmed, confirmed_instances) = confirmed.into_iter().unzip();
        Ok(Response::new(pb::RenewalBatchReply {
            confirmed,
            confirmed_instances,
            read_index,
        }))
    }

    async fn propose(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        // A command a follower forwards to the leader. `Node::write` admits it as the
        // public `Apply` would (size, then validation) before it takes a log entry.
        self.check_member(&req)?;
        let cmd = decode_command(req.get_ref())?;
        // The author of an admin write travels with its forward; agents' reports and
        // the directory's own writes have none.
        let caller = if req.metadata().contains_key(crate::auth::BY_KEY) {
            Caller::of(&req)?
        } else {
            Caller::Anyone
        };
        if let Some(by) = caller.node() {
            tracing::debug!(by, "a forwarded write names a directory node as its author");
        }
        let request = match req.metadata().get(REQUEST_KEY) {
            None => String::new(),
            Some(v) => v
                .to_str()
                .map_err(|_| invalid("the forwarded request id is not ASCII"))?
                .to_string(),
        };
        self.node
            .write_as(cmd, &request, true, &caller)
            .await
            .map(Response::new)
    }

    async fn claim(
        &self,
        req: Request<pb::ClaimRequest>,
    ) -> Result<Response<pb::ClaimReply>, Status> {
        self.check_member(&req)?;
        let r = req.into_inner();
        baton_core::names::check_name("server", &r.server).map_err(|e| invalid(e.message))?;
        self.node
            .manager
            .claim(&self.node, r)
            .await
            .map(Response::new)
    }

    async fn control(
        &self,
        req: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::ControlReply>, Status> {
        self.check_member(&req)?;
        let c = req.into_inner();
        let off_for = match c.off_for_ms {
            0 => std::time::Duration::from_secs(5),
            ms => std::time::Duration::from_millis(ms.min(60_000)),
        };
        self.node.switch_timers(c.elect, c.heartbeat, off_for);
        if c.trigger_elect {
            self.node
                .raft
                .trigger()
                .elect()
                .await
                .map_err(|e| Status::unavailable(format!("cannot start an election: {e}")))?;
        }
        Ok(Response::new(pb::ControlReply {}))
    }
}
