//! The Raft network: openraft's RPCs carried over gRPC (`baton.v1.Raft`).
//!
//! Payloads are openraft's own request and response types, serde-encoded (JSON): they
//! never leave the cluster and their schema is openraft's, versioned with it.
//!
//! Error mapping, which decides how openraft retries:
//! - the peer could not be connected to → [`Unreachable`] (openraft backs off);
//! - any other transport failure or a malformed reply → [`NetworkError`] (retried at once);
//! - the RPC's own deadline passed → [`Timeout`];
//! - the peer answered with a Raft error (higher vote, ...) → [`RemoteError`].
//!
//! Connections are lazy (`connect_lazy`), since `new_client` cannot fail and a peer may
//! be down when the leader first looks at it. Every RPC has a deadline: the one openraft
//! passes in [`RPCOption`].

use std::time::Duration;

use baton_proto::v1::RaftPayload;
use baton_proto::v1::raft_client::RaftClient;
use baton_store::TypeConfig;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftTypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::faults::Faults;

type NodeId = u64;

/// Largest Raft message accepted or sent, in bytes (a snapshot chunk or a batch of entries).
pub const RAFT_MESSAGE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Creates one [`Connection`] per peer.
#[derive(Clone)]
pub struct Network {
    /// This node's id, for fault injection (which links are cut).
    pub id: NodeId,
    /// How long to wait for a TCP connection to a peer.
    pub connect_timeout: Duration,
    /// Test-only switches that cut links; empty in production.
    pub faults: Faults,
    /// Turns an endpoint into a channel (`connect_lazy` in production).
    pub connect: crate::env::ChannelFactory,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        let endpoint = Endpoint::from_shared(crate::http_uri(&node.addr))
            .map(|e| {
                e.connect_timeout(self.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5))
            })
            .map(|e| (self.connect)(e));
        Connection {
            from: self.id,
            target,
            channel: endpoint.map_err(|e| e.to_string()),
            faults: self.faults.clone(),
        }
    }
}

impl Connection {
    /// A connection over an existing (cached) channel, for RPCs Baton sends itself.
    pub fn over(from: NodeId, target: NodeId, channel: Channel, faults: Faults) -> Connection {
        Connection {
            from,
            target,
            channel: Ok(channel),
            faults,
        }
    }
}

/// A lazy gRPC channel to one peer.
pub struct Connection {
    from: NodeId,
    target: NodeId,
    /// `Err` when the peer's address does not parse; every RPC then fails as unreachable.
    channel: Result<Channel, String>,
    faults: Faults,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.faults.is_cut(self.from, self.target) {
            return Err(RPCError::Unreachable(Unreachable::new(&Msg(format!(
                "link {} -> {} is cut (fault injection)",
                self.from, self.target
            )))));
        }
        let channel = match &self.channel {
            Ok(c) => c.clone(),
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&Msg(format!(
                    "bad address for node {}: {e}",
                    self.target
                )))));
            }
        };
        let data = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(RAFT_MESSAGE_MAX_BYTES)
            .max_encoding_message_size(RAFT_MESSAGE_MAX_BYTES);
        let ttl = option.hard_ttl();
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(ttl);
        let fut = async {
            match kind {
                Rpc::Append => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::Snapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: kind.action(),
                    id: self.from,
                    target: self.target,
                    timeout: ttl,
                }));
            }
            Ok(Err(status)) => return Err(map_status(self.target, status)),
            Ok(Ok(r)) => r.into_inner(),
        };
        let result: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&reply.data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl Rpc {
    fn action(self) -> openraft::network::RPCTypes {
        match self {
            Rpc::Append => openraft::network::RPCTypes::AppendEntries,
            Rpc::Vote => openraft::network::RPCTypes::Vote,
            Rpc::Snapshot => openraft::network::RPCTypes::InstallSnapshot,
        }
    }
}

/// A transport-level failure: could not connect → unreachable; anything else → network.
fn map_status<E: std::error::Error>(
    target: NodeId,
    status: tonic::Status,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    let msg = Msg(format!("node {target}: {status}"));
    match status.code() {
        // tonic reports a failed connect (refused, timed out) as UNAVAILABLE.
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&msg)),
        _ => RPCError::Network(NetworkError::new(&msg)),
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}

/// Keep the type parameter bound visible: our D and R must be serde types.
const _: fn() = || {
    fn assert_serde<T: Serialize + DeserializeOwned>() {}
    assert_serde::<<TypeConfig as RaftTypeConfig>::D>();
};
