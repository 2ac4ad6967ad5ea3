//! The Raft network: openraft's RPCs carried over gRPC (`baton.v1.Raft`).
//!
//! Payloads are openraft's own request and response types, serde-encoded: they never
//! leave the cluster and their schema is openraft's, versioned with it. The encoding is
//! bincode 1 behind a version byte ([`WIRE_V1`]); payloads from nodes that sent JSON
//! (before the version byte) are still read, anything else is refused by name (see
//! [`decode`]). Binary rather than JSON because every write crosses it twice per follower
//! (the append and its reply) and a snapshot's bytes would be a JSON array of numbers.
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
use openraft::{BasicNode, Entry, EntryPayload, LogId, Membership, RaftTypeConfig, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
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
    /// Send `data` (an encoded request) and decode the reply.
    async fn call<Resp, E>(
        &mut self,
        kind: Rpc,
        data: Result<Vec<u8>, String>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
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
        let data = data.map_err(|e| RPCError::Network(NetworkError::new(&Msg(e))))?;
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
        let result: Result<Resp, RaftError<NodeId, E>> = decode(&reply.data).map_err(|e| {
            RPCError::Network(NetworkError::new(&Msg(format!(
                "node {}: {e}",
                self.target
            ))))
        })?;
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
        self.call(Rpc::Append, encode_append(&rpc), &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::Snapshot, encode(&rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, encode(&rpc), &option).await
    }
}

/// Keep the type parameter bound visible: our D and R must be serde types.
const _: fn() = || {
    fn assert_serde<T: Serialize + DeserializeOwned>() {}
    assert_serde::<<TypeConfig as RaftTypeConfig>::D>();
};

// ---------------------------------------------------------------------------------------
// The payload codec
// ---------------------------------------------------------------------------------------

/// First byte of a Raft payload in the current format: bincode 1 of openraft's types, with
/// log entries carried as [`WireEntry`].
pub const WIRE_V1: u8 = 1;
/// First byte of an append request whose entries also carry the client's request id
/// (`baton_core::Entry::request`). Every other payload is still written as [`WIRE_V1`]
/// (its layout did not change), and an append in [`WIRE_V1`] is still read (with no
/// request ids), so a node of the version before reads all but the new appends: upgrade
/// followers first and move leadership last, as for the version byte itself.
pub const WIRE_V2: u8 = 2;
/// First byte of an append request with an entry that carries a batch of writes
/// (`baton_core::Entry::batch`, group commit). Appends without one are still written as
/// [`WIRE_V2`]; a node of the version before batches cannot read this one: upgrade every
/// node before letting the leader batch, or run with `write_batch_max = 1` meanwhile.
pub const WIRE_V3: u8 = 3;
/// First byte of a payload from a node before the version byte existed: a JSON object.
/// Still read, so that during a rolling upgrade the upgraded nodes understand the others;
/// a node before the version byte cannot read [`WIRE_V1`] (its replies say "malformed
/// raft payload"), so upgrade followers first and move leadership last.
pub const LEGACY_JSON: u8 = b'{';
/// Largest collection a decoded payload may announce (bincode's limit), as a whole.
const DECODE_LIMIT_BYTES: u64 = RAFT_MESSAGE_MAX_BYTES as u64;

fn bincode_options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_limit(DECODE_LIMIT_BYTES)
}

/// `v` as a [`WIRE_V1`] payload. For types without log entries (votes, snapshots, every
/// reply); an append request goes through [`encode_append`].
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    use bincode::Options;
    let mut out = vec![WIRE_V1];
    bincode_options()
        .serialize_into(&mut out, v)
        .map_err(|e| format!("encoding a raft payload: {e}"))?;
    Ok(out)
}

/// Decode a payload of either format; an empty one or an unknown first byte is refused
/// with what was found.
pub fn decode<T: DeserializeOwned>(data: &[u8]) -> Result<T, String> {
    use bincode::Options;
    match data.first() {
        Some(&v @ (WIRE_V1 | WIRE_V2 | WIRE_V3)) => bincode_options()
            .deserialize(&data[1..])
            .map_err(|e| format!("malformed raft payload (format {v}): {e}")),
        Some(&LEGACY_JSON) => {
            serde_json::from_slice(data).map_err(|e| format!("malformed raft payload (JSON): {e}"))
        }
        Some(other) => Err(format!(
            "raft payload in an unknown format {other} (this node reads {WIRE_V1} to {WIRE_V3} and JSON): \
             is the sender a newer version?"
        )),
        None => Err("empty raft payload".into()),
    }
}

/// A log entry on the wire. openraft's own entry cannot go through bincode as it is: its
/// payload, [`baton_core::Entry`], leaves `by`, `request` and `batch` out when empty
/// (`skip_serializing_if`), which only a self-describing format can read back. So every
/// field is written, in the layout of the format: `C` is the command of one version.
#[derive(Serialize, Deserialize)]
struct WireEntry<C> {
    log_id: LogId<NodeId>,
    payload: WirePayload<C>,
}

#[derive(Serialize, Deserialize)]
enum WirePayload<C> {
    Blank,
    Normal(C),
    Membership(Membership<NodeId, BasicNode>),
}

/// An append request on the wire, its entries in the layout `C`.
#[derive(Serialize, Deserialize)]
struct WireAppend<C> {
    vote: Vote<NodeId>,
    prev_log_id: Option<LogId<NodeId>>,
    leader_commit: Option<LogId<NodeId>>,
    entries: Vec<WireEntry<C>>,
}

/// A normal entry in [`WIRE_V3`]: every field of [`baton_core::Entry`].
#[derive(Deserialize)]
struct WireCommandV3 {
    now_ms: u64,
    cmd: baton_core::Command,
    advance_ms: u64,
    by: String,
    request: String,
    batch: Vec<baton_core::Write>,
}

/// A normal entry in [`WIRE_V2`]: no batch.
#[derive(Deserialize)]
struct WireCommandV2 {
    now_ms: u64,
    cmd: baton_core::Command,
    advance_ms: u64,
    by: String,
    request: String,
}

/// A normal entry in [`WIRE_V1`], as nodes of two versions before write it: no request
/// id and no batch.
#[derive(Serialize, Deserialize)]
struct WireCommandV1 {
    now_ms: u64,
    cmd: baton_core::Command,
    advance_ms: u64,
    by: String,
}

/// [`WireCommandV3`] borrowed from an entry, for encoding without a copy (the same
/// layout: bincode writes `&str` as `String` and a slice as a `Vec`).
#[derive(Serialize)]
struct WireCommandV3Ref<'a> {
    now_ms: u64,
    cmd: &'a baton_core::Command,
    advance_ms: u64,
    by: &'a str,
    request: &'a str,
    batch: &'a [baton_core::Write],
}

/// [`WireCommandV2`] borrowed from an entry without a batch (see [`encode_append`]).
#[derive(Serialize)]
struct WireCommandV2Ref<'a> {
    now_ms: u64,
    cmd: &'a baton_core::Command,
    advance_ms: u64,
    by: &'a str,
    request: &'a str,
}

impl<'a> From<&'a baton_core::Entry> for WireCommandV3Ref<'a> {
    fn from(e: &'a baton_core::Entry) -> Self {
        // Every field, by name: a field added to the entry must be added here.
        let baton_core::Entry {
            now_ms,
            cmd,
            advance_ms,
            by,
            request,
            batch,
        } = e;
        WireCommandV3Ref {
            now_ms: *now_ms,
            cmd,
            advance_ms: *advance_ms,
            by,
            request,
            batch,
        }
    }
}

impl<'a> From<&'a baton_core::Entry> for WireCommandV2Ref<'a> {
    fn from(e: &'a baton_core::Entry) -> Self {
        debug_assert!(e.batch.is_empty(), "a batch cannot be written as format 2");
        WireCommandV2Ref {
            now_ms: e.now_ms,
            cmd: &e.cmd,
            advance_ms: e.advance_ms,
            by: &e.by,
            request: &e.request,
        }
    }
}

impl From<WireCommandV3> for baton_core::Entry {
    fn from(c: WireCommandV3) -> Self {
        baton_core::Entry {
            now_ms: c.now_ms,
            cmd: c.cmd,
            advance_ms: c.advance_ms,
            by: c.by,
            request: c.request,
            batch: c.batch,
        }
    }
}

impl From<WireCommandV2> for baton_core::Entry {
    fn from(c: WireCommandV2) -> Self {
        baton_core::Entry {
            now_ms: c.now_ms,
            cmd: c.cmd,
            advance_ms: c.advance_ms,
            by: c.by,
            request: c.request,
            batch: Vec::new(),
        }
    }
}

impl From<WireCommandV1> for baton_core::Entry {
    fn from(c: WireCommandV1) -> Self {
        baton_core::Entry {
            now_ms: c.now_ms,
            cmd: c.cmd,
            advance_ms: c.advance_ms,
            by: c.by,
            request: String::new(),
            batch: Vec::new(),
        }
    }
}

impl<C> WireAppend<C> {
    /// openraft's request in the layout `C`, borrowing its entries' commands.
    fn from_rpc<'a>(rpc: &'a AppendEntriesRequest<TypeConfig>) -> Self
    where
        C: From<&'a baton_core::Entry>,
    {
        WireAppend {
            vote: rpc.vote,
            prev_log_id: rpc.prev_log_id,
            leader_commit: rpc.leader_commit,
            entries: rpc
                .entries
                .iter()
                .map(|e| WireEntry {
                    log_id: e.log_id,
                    payload: match &e.payload {
                        EntryPayload::Blank => WirePayload::Blank,
                        EntryPayload::Normal(n) => WirePayload::Normal(C::from(n)),
                        EntryPayload::Membership(m) => WirePayload::Membership(m.clone()),
                    },
                })
                .collect(),
        }
    }

    /// Back to openraft's request.
    fn into_rpc(self) -> AppendEntriesRequest<TypeConfig>
    where
        baton_core::Entry: From<C>,
    {
        AppendEntriesRequest {
            vote: self.vote,
            prev_log_id: self.prev_log_id,
            leader_commit: self.leader_commit,
            entries: self
                .entries
                .into_iter()
                .map(|e| Entry {
                    log_id: e.log_id,
                    payload: match e.payload {
                        WirePayload::Blank => EntryPayload::Blank,
                        WirePayload::Normal(c) => EntryPayload::Normal(c.into()),
                        WirePayload::Membership(m) => EntryPayload::Membership(m),
                    },
                })
                .collect(),
        }
    }
}

/// An append request as a payload: [`WIRE_V3`] when an entry carries a batch, otherwise
/// [`WIRE_V2`], which the version before batches reads, so a cluster whose leader does
/// not batch (`write_batch_max = 1`) stays readable by it during a rolling upgrade.
pub fn encode_append(rpc: &AppendEntriesRequest<TypeConfig>) -> Result<Vec<u8>, String> {
    let batched = rpc
        .entries
        .iter()
        .any(|e| matches!(&e.payload, EntryPayload::Normal(n) if !n.batch.is_empty()));
    let (version, mut out) = if batched {
        (
            WIRE_V3,
            encode(&WireAppend::<WireCommandV3Ref>::from_rpc(rpc))?,
        )
    } else {
        (
            WIRE_V2,
            encode(&WireAppend::<WireCommandV2Ref>::from_rpc(rpc))?,
        )
    };
    out[0] = version;
    Ok(out)
}

/// Decode an append request of any format.
pub fn decode_append(data: &[u8]) -> Result<AppendEntriesRequest<TypeConfig>, String> {
    Ok(match data.first() {
        Some(&WIRE_V3) => decode::<WireAppend<WireCommandV3>>(data)?.into_rpc(),
        Some(&WIRE_V2) => decode::<WireAppend<WireCommandV2>>(data)?.into_rpc(),
        Some(&WIRE_V1) => decode::<WireAppend<WireCommandV1>>(data)?.into_rpc(),
        _ => decode(data)?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::raft::{VoteRequest, VoteResponse};
    use openraft::{CommittedLeaderId, SnapshotMeta, StoredMembership};

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn append() -> AppendEntriesRequest<TypeConfig> {
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2, 3])],
            BTreeMap::from([(1, BasicNode::new("127.0.0.1:7101"))]),
        );
        let normal = |index, by: &str, request: &str| Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(baton_core::Entry {
                now_ms: 1_700_000_000_000 + index,
                cmd: baton_core::Command::AddServer {
                    name: format!("srv-{index}"),
                    main: index % 2 == 0,
                    kinds: vec!["plugin".into()],
                },
                advance_ms: index,
                by: by.into(),
                request: request.into(),
                batch: Vec::new(),
            }),
        };
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(1, 9)),
            leader_commit: Some(log_id(1, 8)),
            entries: vec![
                Entry {
                    log_id: log_id(2, 10),
                    payload: EntryPayload::Blank,
                },
                normal(11, "", ""),
                normal(12, "operator bob", "r-7f3a"),
                Entry {
                    log_id: log_id(2, 13),
                    payload: EntryPayload::Membership(membership),
                },
            ],
        }
    }

    /// openraft's request has no `PartialEq`; its parts do.
    fn assert_same(a: &AppendEntriesRequest<TypeConfig>, b: &AppendEntriesRequest<TypeConfig>) {
        assert_eq!(a.vote, b.vote);
        assert_eq!(a.prev_log_id, b.prev_log_id);
        assert_eq!(a.leader_commit, b.leader_commit);
        assert_eq!(a.entries, b.entries);
    }

    /// Every entry kind, with and without an author (which JSON leaves out when empty),
    /// comes back as it was sent, and in fewer bytes than JSON.
    #[test]
    fn append_requests_round_trip_and_are_smaller_than_json() {
        let rpc = append();
        let bytes = encode_append(&rpc).unwrap();
        assert_eq!(bytes[0], WIRE_V2);
        let back = decode_append(&bytes).unwrap();
        assert_same(&back, &rpc);
        let json = serde_json::to_vec(&rpc).unwrap();
        assert!(
            bytes.len() < json.len(),
            "{} vs {}",
            bytes.len(),
            json.len()
        );
    }

    /// An entry that carries a batch goes out as [`WIRE_V3`] and comes back whole; the
    /// same append without one is [`WIRE_V2`], which the version before batches reads.
    #[test]
    fn batches_travel_as_format_3_and_appends_without_one_as_format_2() {
        let mut rpc = append();
        let EntryPayload::Normal(n) = &mut rpc.entries[1].payload else {
            unreachable!("entry 11 is a normal entry")
        };
        n.batch = vec![
            baton_core::Write {
                now_ms: 9,
                cmd: baton_core::Command::RemoveServer { name: "x".into() },
                by: "operator eve".into(),
                request: "r-2".into(),
            },
            baton_core::Write {
                now_ms: 10,
                cmd: baton_core::Command::Tick,
                by: String::new(),
                request: String::new(),
            },
        ];
        let bytes = encode_append(&rpc).unwrap();
        assert_eq!(bytes[0], WIRE_V3);
        assert_same(&decode_append(&bytes).unwrap(), &rpc);
        assert_eq!(encode_append(&append()).unwrap()[0], WIRE_V2);
    }

    /// An append as a node of the version before writes it ([`WIRE_V1`], entries without
    /// a request id) still reads, with empty request ids. The layout is written out here
    /// field by field, as that version had it.
    #[test]
    fn a_version_1_append_reads_with_no_request_ids() {
        #[derive(Serialize)]
        struct AppendV1<'a> {
            vote: &'a Vote<NodeId>,
            prev_log_id: &'a Option<LogId<NodeId>>,
            leader_commit: &'a Option<LogId<NodeId>>,
            entries: Vec<EntryV1<'a>>,
        }
        #[derive(Serialize)]
        struct EntryV1<'a> {
            log_id: &'a LogId<NodeId>,
            payload: PayloadV1<'a>,
        }
        #[derive(Serialize)]
        enum PayloadV1<'a> {
            #[allow(dead_code)]
            Blank,
            Normal {
                now_ms: u64,
                cmd: &'a baton_core::Command,
                advance_ms: u64,
                by: &'a str,
            },
        }
        let mut rpc = append();
        rpc.entries
            .retain(|e| matches!(e.payload, EntryPayload::Normal(_)));
        let entries = rpc
            .entries
            .iter()
            .map(|e| {
                let EntryPayload::Normal(n) = &e.payload else {
                    unreachable!("kept only normal entries")
                };
                EntryV1 {
                    log_id: &e.log_id,
                    payload: PayloadV1::Normal {
                        now_ms: n.now_ms,
                        cmd: &n.cmd,
                        advance_ms: n.advance_ms,
                        by: &n.by,
                    },
                }
            })
            .collect();
        let bytes = encode(&AppendV1 {
            vote: &rpc.vote,
            prev_log_id: &rpc.prev_log_id,
            leader_commit: &rpc.leader_commit,
            entries,
        })
        .unwrap();
        assert_eq!(bytes[0], WIRE_V1);
        let back = decode_append(&bytes).unwrap();
        for e in &mut rpc.entries {
            if let EntryPayload::Normal(n) = &mut e.payload {
                n.request.clear();
            }
        }
        assert_same(&back, &rpc);
    }

    /// A node before the version byte sends JSON; it still reads.
    #[test]
    fn legacy_json_payloads_still_decode() {
        let rpc = append();
        let json = serde_json::to_vec(&rpc).unwrap();
        assert_same(&decode_append(&json).unwrap(), &rpc);
        let vote = VoteRequest::new(Vote::new(3, 2), Some(log_id(2, 13)));
        let json = serde_json::to_vec(&vote).unwrap();
        assert_eq!(decode::<VoteRequest<NodeId>>(&json).unwrap(), vote);
    }

    /// Votes, snapshots and replies (results with openraft's errors) round-trip.
    #[test]
    fn other_messages_round_trip() {
        let vote = VoteRequest::new(Vote::new(3, 2), Some(log_id(2, 13)));
        assert_eq!(
            decode::<VoteRequest<NodeId>>(&encode(&vote).unwrap()).unwrap(),
            vote
        );
        let reply: Result<VoteResponse<NodeId>, RaftError<NodeId>> = Ok(VoteResponse::new(
            Vote::new(3, 2),
            Some(log_id(2, 13)),
            true,
        ));
        let back: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            decode(&encode(&reply).unwrap()).unwrap();
        assert_eq!(back, reply);
        let fatal: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            Err(RaftError::Fatal(openraft::error::Fatal::Stopped));
        let back: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            decode(&encode(&fatal).unwrap()).unwrap();
        assert_eq!(back, fatal);
        let snap = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(2, 13)),
                last_membership: StoredMembership::default(),
                snapshot_id: "2-13-1".into(),
            },
            offset: 0,
            data: vec![7; 1000],
            done: true,
        };
        let back: InstallSnapshotRequest<TypeConfig> = decode(&encode(&snap).unwrap()).unwrap();
        assert_eq!(back.data, snap.data);
        assert_eq!(back.meta, snap.meta);
    }

    /// Bad input is refused with a precise error, never a panic.
    #[test]
    fn unknown_formats_and_garbage_are_refused() {
        let e = decode::<VoteRequest<NodeId>>(&[9, 1, 2]).unwrap_err();
        assert!(e.contains("unknown format 9"), "{e}");
        assert!(
            decode::<VoteRequest<NodeId>>(&[])
                .unwrap_err()
                .contains("empty")
        );
        let e = decode_append(&[WIRE_V1, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(e.contains("malformed raft payload (format 1)"), "{e}");
        // A length prefix far past the limit is refused before anything is allocated.
        let mut huge = vec![WIRE_V1];
        huge.extend_from_slice(&encode_append(&append()).unwrap()[1..20]);
        huge.extend_from_slice(&[0xff; 16]);
        assert!(decode_append(&huge).is_err());
        let e = decode_append(b"{not json").unwrap_err();
        assert!(e.contains("JSON"), "{e}");
    }
}
