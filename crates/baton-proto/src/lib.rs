//! Generated code for the `baton.v1` gRPC package (public API and internal Raft RPCs).

#![allow(clippy::large_enum_variant, clippy::derive_partial_eq_without_eq)]

pub mod v1 {
    tonic::include_proto!("baton.v1");

    /// Encoded file descriptors, served by gRPC reflection so stock tools work.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("baton_descriptor");
}

/// First size of the buffers a gRPC call encodes into and decodes from: tonic's default is
/// 8 KiB each, allocated for every streaming call. An idle agent session holds both for as
/// long as it lives, so at 10,000 sessions the defaults alone are 160 MiB. Baton's session
/// messages (renewals, acknowledgements, the assignment set of a server with a few roles)
/// are far smaller; a larger one (a Raft append, a snapshot chunk, a long list) grows its
/// buffer as it needs (prost reserves a message's whole length at once).
pub const CODEC_BUFFER_BYTES: usize = 512;
/// How much an encoder writes before it yields to the runtime (tonic's default).
pub const CODEC_YIELD_BYTES: usize = 32 * 1024;

/// tonic's prost codec with [`CODEC_BUFFER_BYTES`] buffers instead of 8 KiB ones: every
/// generated client and server of this crate uses it (`codec_path` in `build.rs`).
#[derive(Debug, Clone, Copy)]
pub struct SmallCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for SmallCodec<T, U> {
    fn default() -> Self {
        SmallCodec(std::marker::PhantomData)
    }
}

impl<T, U> SmallCodec<T, U> {
    fn buffers() -> tonic::codec::BufferSettings {
        tonic::codec::BufferSettings::new(CODEC_BUFFER_BYTES, CODEC_YIELD_BYTES)
    }
}

impl<T, U> tonic::codec::Codec for SmallCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(Self::buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(Self::buffers())
    }
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

#[cfg(test)]
mod tests {
    use tonic::codec::{BufferSettings, Codec, Decoder, Encoder};

    use super::*;

    /// Both directions of every call start with small buffers. (Messages larger than
    /// them, Raft appends and snapshots, cross real gRPC in the directory's tests.)
    #[test]
    fn every_call_starts_with_small_buffers() {
        let mut codec = SmallCodec::<v1::RaftPayload, v1::AgentMessage>::default();
        let small = format!(
            "{:?}",
            BufferSettings::new(CODEC_BUFFER_BYTES, CODEC_YIELD_BYTES)
        );
        assert!(small.contains("buffer_size: 512"), "{small}");
        assert_eq!(format!("{:?}", codec.encoder().buffer_settings()), small);
        assert_eq!(format!("{:?}", codec.decoder().buffer_settings()), small);
    }
}
