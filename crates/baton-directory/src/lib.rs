//! # baton-directory: a directory node
//!
//! A node is an openraft member whose log and state machine live in sled
//! (`baton-store`), whose Raft RPCs travel over gRPC ([`network`], [`raft_service`]), and
//! which serves Baton's public API ([`service`], [`session`], [`watch`]). The
//! [`manager`] (the Directory Manager) follows Raft leadership and runs the controller on
//! the leader only; [`liveness`] holds the leader's liveness table and confirms agents'
//! renewals. [`server::start`] puts it all together.
//!
//! Invariants this crate is responsible for (see `docs/safety.md`):
//! - durable acknowledgement: a write is answered only after `client_write` returned,
//!   which means a quorum has fsynced it (the store flushes before acknowledging);
//! - no false failover: only an expired lease (plus grace) moves a role away from a live
//!   agent; a new leader restarts every liveness clock;
//! - monotonic view: sessions and watches never serve a revision older than the client
//!   has seen;
//! - clear refusal: malformed requests are refused before they reach the log, invalid
//!   commands are refused by the deterministic apply, each with a precise message.

pub mod auth;
pub mod batcher;
pub mod config;
pub mod convert;
pub mod directory_time;
pub mod elected;
pub mod env;
pub mod error;
pub mod faults;
pub mod http;
pub mod identity;
pub mod liveness;
pub mod manager;
pub mod metrics;
pub mod network;
pub mod node;
pub mod raft_service;
pub mod readiness;
pub mod server;
pub mod service;
pub mod session;
pub mod watch;

pub use config::NodeConfig;
pub use env::{AppliedState, NodeEnv};
pub use error::DirectoryError;
pub use faults::Faults;
pub use node::Node;
pub use server::{RunningNode, serve, serve_one_port, start};

/// `host:port` or a full URI, as the `http://` URI tonic needs.
pub fn http_uri(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Resolves when the node's shutdown signal (`Manager::shutdown_signal`) is raised, or
/// its sender is gone. Holds no borrow of the channel across `.await`s (a `select!` arm
/// of `wait_for` would, which makes the future not `Send`).
pub(crate) async fn until_shutdown(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
