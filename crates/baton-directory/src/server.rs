//! Start a node: bind, serve every gRPC service, run the Directory Manager, and stop it
//! all cleanly on request.

use std::sync::Arc;
use std::time::Duration;

use baton_proto::v1::agent_server::AgentServer;
use baton_proto::v1::directory_server::DirectoryServer;
use baton_proto::v1::raft_server::RaftServer;
use baton_proto::v1::watch_server::WatchServer;
use tokio::net::TcpListener;

use baton_tls::Security;
use tonic::service::interceptor::InterceptedService;

use crate::auth::{Interceptor, Port};
use crate::config::NodeConfig;
use crate::env::NodeEnv;
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
    peer_server: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    manager: tokio::task::JoinHandle<()>,
    /// The gRPC health service's statuses: [`start`] makes them follow readiness (see
    /// `crate::readiness`); served by [`serve`] alone they stay SERVING.
    pub health: tonic_health::server::HealthReporter,
}

/// How often a node looks at its certificate files for a rotation (SIGHUP: at once).
pub const TLS_RELOAD_EVERY: Duration = Duration::from_secs(2);

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, DirectoryError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DirectoryError::Listen {
            addr: addr.to_string(),
            source,
        })
}

/// Open storage, start Raft, bind the client port (and the peer port), serve, and
/// bootstrap or join.
pub async fn start(config: NodeConfig, faults: Faults) -> Result<RunningNode, DirectoryError> {
    config.validate()?;
    let client = bind(config.listen).await?;
    let peer = match config.peer_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let http = match config.http {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    if peer.is_some() {
        crate::error::HINT_LEADER_ADDRESS.store(false, std::sync::atomic::Ordering::Relaxed);
    }
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let security = config.security.clone();
    let mut env = NodeEnv::default();
    if security.is_tls() {
        let s = security.clone();
        env.connect = Arc::new(move |e| s.channel(e, None));
    }
    let node = Node::open_in(config, faults, env).await?;
    let running = match security.clone() {
        Security::Tls(tls) => {
            tls.spawn_reloader(TLS_RELOAD_EVERY);
            let peer = peer.map(|p| baton_tls::net::incoming(p, tls.clone()));
            serve(node, baton_tls::net::incoming(client, tls), peer).await
        }
        Security::Insecure => {
            tracing::warn!(
                "TLS is OFF (--insecure): anyone who reaches this node's ports can read and change the directory, join it, and speak for any agent"
            );
            let peer = peer.map(baton_tls::net::plain_incoming);
            serve(node, baton_tls::net::plain_incoming(client), peer).await
        }
    }?;
    let node = running.node.clone();
    tokio::spawn(crate::readiness::run(node.clone(), running.health.clone()));
    tokio::spawn(crate::metrics::count_history(node.clone()));
    if let Some(listener) = http {
        let tls = match security {
            Security::Tls(tls) => Some(tls),
            Security::Insecure => None,
        };
        crate::http::spawn(node, listener, tls);
    }
    Ok(running)
}

/// Serve every gRPC service of an opened node on the connections `incoming` (the
/// client port) and `peer` (the peer port) yield, run the Directory Manager, and
/// bootstrap or join. Without a peer port, the Raft service is served on the client
/// port (plain text only, see [`NodeConfig::peer_listen`]). [`start`] is this over
/// bound TCP listeners; a simulation passes its own listener's connections.
pub async fn serve<I, IO, IE, P, PIO, PIE>(
    node: Arc<Node>,
    incoming: I,
    peer: Option<P>,
) -> Result<RunningNode, DirectoryError>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    P: tokio_stream::Stream<Item = Result<PIO, PIE>> + Send + 'static,
    PIO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    PIE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let listen = node.config.listen;
    let tls = node.config.security.is_tls();
    if tls && peer.is_none() {
        return Err(DirectoryError::Config(
            "TLS needs a separate peer port: the client port never serves Raft".into(),
        ));
    }
    let client_port = Interceptor {
        tls,
        port: Port::Client,
    };
    let peer_port = Interceptor {
        tls,
        port: Port::Peer,
    };
    let (renew_tx, renew_rx) = renewal_queue();
    tokio::spawn(run_batcher(node.clone(), renew_rx));

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<DirectoryServer<DirectoryService>>()
        .await;
    health_reporter
        .set_serving::<AgentServer<AgentService>>()
        .await;
    health_reporter
        .set_serving::<WatchServer<WatchService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(baton_proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| DirectoryError::Config(format!("reflection: {e}")))?;

    let directory = |port| {
        InterceptedService::new(
            DirectoryServer::new(DirectoryService { node: node.clone() })
                .max_decoding_message_size(API_MESSAGE_MAX_BYTES),
            port,
        )
    };
    let raft = || {
        InterceptedService::new(
            RaftServer::new(RaftService { node: node.clone() })
                .max_decoding_message_size(RAFT_MESSAGE_MAX_BYTES)
                .max_encoding_message_size(RAFT_MESSAGE_MAX_BYTES),
            peer_port,
        )
    };
    let builder = || {
        tonic::transport::Server::builder()
            .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
            // No `tcp_nodelay` here: a server given its connections ignores it; both
            // accept loops (`baton_tls::net`) set it on every connection.
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
    };
    let router = builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(directory(client_port))
        .add_service(InterceptedService::new(
            AgentServer::new(AgentService {
                node: node.clone(),
                renewals: renew_tx,
            })
            .max_decoding_message_size(API_MESSAGE_MAX_BYTES),
            client_port,
        ))
        .add_service(InterceptedService::new(
            WatchServer::new(WatchService { node: node.clone() })
                .max_decoding_message_size(API_MESSAGE_MAX_BYTES),
            client_port,
        ))
        .add_optional_service(peer.is_none().then(raft));
    let mut shutdown = node.manager.shutdown_signal();
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = shutdown.wait_for(|s| *s).await;
    }));
    let peer_server = peer.map(|peer| {
        // Node-to-node only: Raft, and the Directory service for calls a node forwards.
        let router = builder()
            .add_service(raft())
            .add_service(directory(peer_port));
        let mut shutdown = node.manager.shutdown_signal();
        tokio::spawn(router.serve_with_incoming_shutdown(peer, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        }))
    });
    let manager = Manager::spawn(node.clone());
    if node.store.is_some() {
        // A node with a store takes part in Raft (and bootstraps or joins) only once its
        // peers confirmed it did not lose data it had (see `crate::identity`). In the
        // background: peers started one after the other must be able to answer it.
        let n = node.clone();
        let restarted = !node.blank_at_start;
        if restarted {
            node.hold_elections();
        }
        tokio::spawn(async move {
            match crate::identity::check_peers(&n, n.blank_at_start).await {
                Ok(peers) => {
                    n.open_raft();
                    if restarted {
                        tokio::spawn(n.clone().listen_before_campaigning());
                    }
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
    tracing::info!(
        node = node.id,
        %listen,
        peer = ?node.config.peer_listen,
        tls,
        "directory node serving"
    );
    Ok(RunningNode {
        node,
        server,
        peer_server,
        manager,
        health: health_reporter,
    })
}

/// [`serve`] with no peer port: everything, Raft included, on `incoming` (plain text
/// only). The in-process tests and the simulator run nodes this way.
pub async fn serve_one_port<I, IO, IE>(
    node: Arc<Node>,
    incoming: I,
) -> Result<RunningNode, DirectoryError>
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
    serve(node, incoming, None::<tokio_stream::Empty<Result<IO, IE>>>).await
}

impl RunningNode {
    /// Stop serving, stop the manager and Raft, and flush storage.
    pub async fn shutdown(self) {
        self.node.manager.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        if let Some(peer) = self.peer_server {
            let _ = tokio::time::timeout(Duration::from_secs(5), peer).await;
        }
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
