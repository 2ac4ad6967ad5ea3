//! Generated code for the `baton.v1` gRPC package (public API and internal Raft RPCs).

#![allow(clippy::large_enum_variant, clippy::derive_partial_eq_without_eq)]

pub mod v1 {
    tonic::include_proto!("baton.v1");

    /// Encoded file descriptors, served by gRPC reflection so stock tools work.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("baton_descriptor");
}

/// Metadata key carrying the machine-readable reason of an error status.
pub const REASON_KEY: &str = "baton-reason";
/// The reason (under [`REASON_KEY`]) of an agent session refused because another live
/// agent instance holds the server name: the agent must not retry as if it were transient.
pub const SERVER_HELD: &str = "SERVER_HELD";

/// Whether a status is the refusal of an agent session because another live instance
/// holds the server name (reason [`SERVER_HELD`]).
pub fn is_server_held(s: &tonic::Status) -> bool {
    s.metadata()
        .get(REASON_KEY)
        .is_some_and(|v| v.as_bytes() == SERVER_HELD.as_bytes())
}
/// Metadata key carrying the leader's node id on an UNAVAILABLE status.
pub const LEADER_ID_KEY: &str = "baton-leader-id";
/// Metadata key carrying the leader's address on an UNAVAILABLE status.
pub const LEADER_ADDR_KEY: &str = "baton-leader-addr";
/// Set on a request a node forwarded to the leader, so it is never forwarded twice.
pub const FORWARDED_KEY: &str = "baton-forwarded";
