//! Start a node: bind, serve every gRPC service, run the Directory Manager, and stop it
//! all cleanly on request.

use std::sync::Arc;
use std::time::Duration;

use baton_proto::v1::agent_server::AgentServer;
use baton_proto::v1::directory_server::DirectoryServer;
use baton_proto::v1::raft_server::RaftServer;
use baton_proto::v1::watch_server::WatchServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::NodeConfig;
use crate::error::DirectoryError;
use crate::faults::Faults;
use crate::manager::Manager;
use crate::network::RAFT_MESSAGE_MAX_BYTES;
use crate::node::Node;
use crate::raft_service::RaftService;
use crate::service::DirectoryService;
use crate::session::{AgentService, renewal_queue, run_batcher};
use crate::watch::WatchService;

/// Largest public API request accepted, in bytes. A role with the maximum server list is
/// a few kB; anything near this is malformed or hostile, and is refused by gRPC with
/// `RESOURCE_EXHAUSTED` naming the size.
pub const API_MESSAGE_MAX_BYTES: usize = 1024 * 1024;
/// Concurrent requests per client connection.
const CONCURRENCY_PER_CONNECTION: usize = 1024;

/// A running node. Dropping it does not stop it; call [`RunningNode::shutdown`].
pub struct RunningNode {
    pub node: Arc<Node>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    manager: tokio::task::JoinHandle<()>,
}

/// Open storage, start Raft, bind `config.listen`, serve, and bootstrap or join.
pub async fn start(config: NodeConfig, faults: Faults) -> Result<RunningNode, DirectoryError> {
    let listen = config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| DirectoryError::Listen {
            addr: listen.to_string(),
            source,
        })?;
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let node = Node::open(config, faults).await?;
    serve(node, TcpListenerStream::new(listener)).await
}

/// Serve every gRPC service of an opened node on the connections `incoming` yields, run
/// the Directory Manager, and bootstrap or join. [`start`] is this over a bound TCP
/// listener; a simulation passes its own listener's connections.
pub async fn serve<I, IO, IE>(node: Arc<Node>, incoming: I) -> Result<RunningNode, DirectoryError>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let listen = node.config.listen;
    let (renew_tx, renew_rx) = renewal_queue();
    tokio::spawn(run_batcher(node.clone(), renew_rx));

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<DirectoryServer<DirectoryService>>()
        .await;
    health_reporter
        .set_serving::<AgentServer<AgentService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(baton_proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| DirectoryError::Config(format!("reflection: {e}")))?;

    let mut shutdown = node.manager.shutdown_signal();
    let router = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(health)
        .add_service(reflection)
        .add_service(
            DirectoryServer::new(DirectoryService { node: node.clone() })
                .max_decoding_message_size(API_MESSAGE_MAX_BYTES),
        )
        .add_service(
            AgentServer::new(AgentService {
                node: node.clone(),
                renewals: renew_tx,
            })
            .max_decoding_message_size(API_MESSAGE_MAX_BYTES),
        )
        .add_service(
            WatchServer::new(WatchService { node: node.clone() })
                .max_decoding_message_size(API_MESSAGE_MAX_BYTES),
        )
        .add_service(
            RaftServer::new(RaftService { node: node.clone() })
                .max_decoding_message_size(RAFT_MESSAGE_MAX_BYTES)
                .max_encoding_message_size(RAFT_MESSAGE_MAX_BYTES),
        );
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = shutdown.wait_for(|s| *s).await;
    }));
    let manager = Manager::spawn(node.clone());
    if node.store.is_some() {
        // A node with a store takes part in Raft (and bootstraps or joins) only once its
        // peers confirmed it did not lose data it had (see `crate::identity`). In the
        // background: peers started one after the other must be able to answer it.
        let n = node.clone();
        tokio::spawn(async move {
            match crate::identity::check_peers(&n, n.blank_at_start).await {
                Ok(peers) => {
                    n.open_raft();
                    tokio::spawn(crate::identity::run(n.clone()));
                    if peers == crate::identity::Peers::ClusterExists {
                        // `--peers` forms a cluster only when none exists yet.
                        tracing::info!("the cluster exists: the leader brings this node up");
                    } else if let Err(e) = n.bootstrap().await {
                        n.refuse(e.to_string());
                    }
                }
                Err(e) => n.refuse(e.to_string()),
            }
        });
    } else {
        node.bootstrap().await?;
    }
    tracing::info!(node = node.id, %listen, "directory node serving");
    Ok(RunningNode {
        node,
        server,
        manager,
    })
}

impl RunningNode {
    /// Stop serving, stop the manager and Raft, and flush storage.
    pub async fn shutdown(self) {
        self.node.manager.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        let _ = self.manager.await;
        if let Err(e) = self.node.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }

    /// Resolves, with the reason, when the node refused to go on (see
    /// [`Node::refuse`]); the caller should shut it down and exit with an error.
    pub async fn refused(&self) -> String {
        self.node.refusal().await
    }

    /// Resolves when the gRPC server stops on its own (it should not).
    pub async fn wait(&mut self) {
        let _ = (&mut self.server).await;
    }
}
