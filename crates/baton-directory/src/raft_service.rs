//! The internal `Raft` service: openraft's RPCs, renewal batches from followers, and the
//! timer switches of a controlled leadership transfer.

use std::sync::Arc;

use baton_proto::v1 as pb;
use baton_proto::v1::raft_server::Raft as RaftRpc;
use baton_store::TypeConfig;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::error::invalid;
use crate::node::Node;

pub struct RaftService {
    pub node: Arc<Node>,
}

fn decode<T: serde::de::DeserializeOwned>(p: &pb::RaftPayload) -> Result<T, Status> {
    serde_json::from_slice(&p.data).map_err(|e| invalid(format!("malformed raft payload: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Response<pb::RaftPayload>, Status> {
    serde_json::to_vec(v)
        .map(|data| Response::new(pb::RaftPayload { data }))
        .map_err(|e| Status::internal(format!("encoding raft reply: {e}")))
}

impl RaftService {
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
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req.get_ref())?;
        encode(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        self.gate()?;
        let rpc: VoteRequest<u64> = decode(req.get_ref())?;
        encode(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        self.gate()?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req.get_ref())?;
        encode(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn forward_renewals(
        &self,
        req: Request<pb::RenewalBatch>,
    ) -> Result<Response<pb::RenewalBatchReply>, Status> {
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
        let (confirmed, read_index) = self
            .node
            .manager
            .confirm_renewals(&self.node, renewals)
            .await?;
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
        let cmd: baton_core::Command = decode(req.get_ref())?;
        self.node.write(cmd, true).await.map(Response::new)
    }

    async fn claim(
        &self,
        req: Request<pb::ClaimRequest>,
    ) -> Result<Response<pb::ClaimReply>, Status> {
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
