//! `baton directory`: run one directory node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Result, anyhow};
use baton_directory::NodeConfig;
use serde::Deserialize;

use crate::settings::{Dur, load, ms, parse_duration};

#[derive(clap::Args, Debug)]
pub struct DirectoryArgs {
    /// TOML config file; flags and BATON_* variables override it.
    #[arg(long, env = "BATON_CONFIG")]
    config: Option<PathBuf>,
    /// This node's Raft id (1, 2, 3, ...).
    #[arg(long, env = "BATON_ID")]
    id: Option<u64>,
    /// The client port: admin API, agent sessions, watch, e.g. 127.0.0.1:7001.
    #[arg(long, env = "BATON_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address clients and agents reach the client port at (default: --listen).
    #[arg(long, env = "BATON_ADVERTISE")]
    advertise: Option<String>,
    /// The peer port: Raft and node-to-node calls, directory nodes only, e.g. 127.0.0.1:7101.
    #[arg(long, env = "BATON_PEER_LISTEN")]
    peer_listen: Option<SocketAddr>,
    /// Address other nodes reach the peer port at (default: this node's entry in --peers,
    /// else --peer-listen).
    #[arg(long, env = "BATON_PEER_ADVERTISE")]
    peer_advertise: Option<String>,
    /// The HTTP port: status page, /metrics, /healthz, /readyz, e.g. 127.0.0.1:7201 (off
    /// when unset). Same security as the client port: TLS with a viewer certificate.
    #[arg(long, env = "BATON_HTTP")]
    http: Option<SocketAddr>,
    /// Where this node keeps its sled database.
    #[arg(long, env = "BATON_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Initial members of a new cluster by peer address: 1=ADDR,2=ADDR,3=ADDR (this node
    /// included).
    #[arg(long, env = "BATON_PEERS")]
    peers: Option<String>,
    /// Join a running cluster through a node's client address instead of --peers.
    #[arg(long, env = "BATON_JOIN")]
    join: Option<String>,
    /// Agent lease (default 2s; at least 500ms).
    #[arg(long, env = "BATON_LEASE", value_parser = parse_duration)]
    lease: Option<std::time::Duration>,
    /// Extra time past the lease before a server is declared down (default: what clock-rate
    /// error needs, lease x 1%, at least 50ms).
    #[arg(long, env = "BATON_GRACE", value_parser = parse_duration)]
    grace: Option<std::time::Duration>,
    /// Raft heartbeat interval (default 30ms).
    #[arg(long, env = "BATON_HEARTBEAT", value_parser = parse_duration)]
    heartbeat: Option<std::time::Duration>,
    /// Minimum Raft election timeout (default 100ms; the maximum is twice this).
    #[arg(long, env = "BATON_ELECTION_TIMEOUT", value_parser = parse_duration)]
    election_timeout: Option<std::time::Duration>,
    /// Snapshot (and purge the log) every N entries (default 10000).
    #[arg(long, env = "BATON_SNAPSHOT_EVERY")]
    snapshot_every: Option<u64>,
    /// Quarantine of a (role, server) after the role failed there (default 60s).
    #[arg(long, env = "BATON_ROLE_COOLDOWN", value_parser = parse_duration)]
    role_cooldown: Option<std::time::Duration>,
    /// Preferred leader order, e.g. 1,2,3: leadership returns to the first healthy one.
    #[arg(long, env = "BATON_PRIORITY", value_delimiter = ',')]
    priority: Option<Vec<u64>>,
    /// How long a preferred node must be healthy before leadership moves back (default 5s).
    #[arg(long, env = "BATON_PRIORITY_DELAY", value_parser = parse_duration)]
    priority_delay: Option<std::time::Duration>,
    /// History events kept, cluster-wide (default 1000; the leader's value wins).
    #[arg(long, env = "BATON_HISTORY_MAX")]
    history_max: Option<u32>,
    /// Most client writes the leader packs into one log entry (default 256; 1 turns
    /// batching off, for a rolling upgrade from a version without it).
    #[arg(long, env = "BATON_WRITE_BATCH_MAX")]
    write_batch_max: Option<usize>,
    /// Log lines as text (colours only on a terminal) or as one JSON object per line.
    #[arg(long, env = "BATON_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: crate::LogFormat,
}

/// The `[directory]` keys of a config file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct DirectoryFile {
    id: Option<u64>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    peer_listen: Option<SocketAddr>,
    peer_advertise: Option<String>,
    http: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    insecure: Option<bool>,
    /// Either a table { 1 = "addr", ... } or a string "1=addr,...".
    peers: Option<Peers>,
    join: Option<String>,
    lease: Option<Dur>,
    grace: Option<Dur>,
    heartbeat: Option<Dur>,
    election_timeout: Option<Dur>,
    snapshot_every: Option<u64>,
    role_cooldown: Option<Dur>,
    priority: Option<Vec<u64>>,
    priority_delay: Option<Dur>,
    history_max: Option<u32>,
    write_batch_max: Option<usize>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Peers {
    Text(String),
    Table(BTreeMap<String, String>),
}

impl Peers {
    fn to_text(&self) -> String {
        match self {
            Peers::Text(s) => s.clone(),
            Peers::Table(t) => t
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// Merge file and flags into a node configuration.
pub fn node_config(global: &baton_cli::GlobalOpts, args: DirectoryArgs) -> Result<NodeConfig> {
    let file: DirectoryFile = match &args.config {
        Some(p) => load(p)?,
        None => DirectoryFile::default(),
    };
    let id = args
        .id
        .or(file.id)
        .ok_or_else(|| anyhow!("missing --id (this node's Raft id)"))?;
    let listen = args
        .listen
        .or(file.listen)
        .ok_or_else(|| anyhow!("missing --listen (address to listen on)"))?;
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .ok_or_else(|| anyhow!("missing --data-dir (where this node keeps its data)"))?;
    let peer_listen = args.peer_listen.or(file.peer_listen).ok_or_else(|| {
        anyhow!("missing --peer-listen (the address for Raft and node-to-node calls, e.g. 127.0.0.1:7101)")
    })?;
    if peer_listen == listen {
        return Err(anyhow!(
            "--peer-listen {peer_listen} is the client port too; nodes need a port of their own"
        ));
    }
    let mut c = NodeConfig::new(id, listen, data_dir);
    if let Some(a) = args.advertise.or(file.advertise) {
        c.advertise = a;
    }
    c.peer_listen = Some(peer_listen);
    c.peer_advertise = peer_listen.to_string();
    let peers = args.peers.or(file.peers.map(|p| p.to_text()));
    if let Some(p) = peers {
        c.peers = baton_directory::config::parse_peers(&p).map_err(|e| anyhow!("--peers: {e}"))?;
        // Other nodes reach this one where the peer list says, when it says something.
        if let Some(addr) = c.peers.get(&id) {
            c.peer_advertise = addr.clone();
        }
    }
    if let Some(a) = args.peer_advertise.or(file.peer_advertise) {
        c.peer_advertise = a;
    }

    c.http = args.http.or(file.http);
    if let Some(h) = c.http
        && (h == listen || h == peer_listen)
    {
        return Err(anyhow!(
            "--http {h} is already the client or peer port; give the HTTP port one of its own"
        ));
    }
    c.join = args.join.or(file.join);
    if let Some(d) = args.lease.or(file.lease.map(|d| d.0)) {
        c.lease_ms = ms(d);
    }
    match args.grace.or(file.grace.map(|d| d.0)) {
        Some(d) => c.grace_ms = ms(d),
        None => c.grace_ms = baton_directory::config::default_grace_ms(c.lease_ms, c.rho_ppm),
    }
    if let Some(d) = args.heartbeat.or(file.heartbeat.map(|d| d.0)) {
        c.heartbeat_ms = ms(d);
    }
    if let Some(d) = args.election_timeout.or(file.election_timeout.map(|d| d.0)) {
        c.election_timeout_min_ms = ms(d);
        c.election_timeout_max_ms = ms(d) * 2;
    }
    if let Some(n) = args.snapshot_every.or(file.snapshot_every) {
        c.snapshot_every = n;
    }
    if let Some(d) = args.role_cooldown.or(file.role_cooldown.map(|d| d.0)) {
        c.role_cooldown_ms = ms(d);
    }
    if let Some(p) = args.priority.or(file.priority) {
        c.priority = p;
    }
    if let Some(d) = args.priority_delay.or(file.priority_delay.map(|d| d.0)) {
        c.priority_delay_ms = ms(d);
    }
    if let Some(n) = args.history_max.or(file.history_max) {
        c.history_max = n;
    }
    if let Some(n) = args.write_batch_max.or(file.write_batch_max) {
        c.write_batch_max = n;
    }
    // The values first (their errors name a key), then the certificate files.
    c.validate().map_err(|e| anyhow!("{e}"))?;
    c.security = crate::settings::security(global, file.ca, file.cert, file.key, file.insecure)?;
    c.validate().map_err(|e| anyhow!("{e}"))?;
    Ok(c)
}

pub async fn run(global: &baton_cli::GlobalOpts, args: DirectoryArgs) -> Result<()> {
    crate::init_logging(
        "info,openraft=warn,sled=warn,h2=warn,tower=warn",
        args.log_format,
    );
    let config = node_config(global, args)?;
    let node = baton_directory::start(config, baton_directory::Faults::default())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    tokio::select! {
        _ = crate::termination() => {
            tracing::info!("signal received: shutting down");
            node.shutdown().await;
            Ok(())
        }
        reason = node.refused() => {
            node.shutdown().await;
            Err(anyhow!("{reason}"))
        }
    }
}
