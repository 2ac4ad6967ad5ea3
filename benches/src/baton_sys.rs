//! A real three-node Baton directory cluster on loopback, agents, and the client-side
//! pieces the workloads need (agent-style sessions, watch streams).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use baton_client::{Client, ClientConfig, v1};
use baton_tls::make::{self, Subject, Validity};
use baton_tls::{Permission, Security, Tls, TlsPaths};
// Role processes stamp their start with `date +%s%N`: the harness's wall clock.
use baton_tests::now_ns as wall_ns;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::journal::Journal;
use baton_tests::ClusterOpts;

use crate::procs::Proc;
use crate::system::{
    Arrivals, SessionGroup, SessionStats, Sessions, System, Writer, channels_over,
};
use crate::workloads::Ctx;

/// One directory node, started by the test harness's launcher ([`baton_tests::launch`]).
pub use baton_tests::DirNode as BatonNode;

pub struct BatonCluster {
    pub nodes: Vec<BatonNode>,
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub client: Client,
    pub lease: Duration,
    /// Agents started by [`BatonCluster::spawn_agent`], by server name.
    agents: Vec<(String, Proc)>,
    /// The agents' `--http` addresses (metrics), in the order they were spawned.
    agent_http: Vec<String>,
    /// Sessions that hold a server up for as long as the cluster runs (the writers'
    /// roles run there; the fan-out's roles are placed there).
    holds: Vec<mpsc::Sender<v1::AgentMessage>>,
    /// How the session workloads connect their sessions (and whether TLS is on).
    sessions: Sessions,
    /// Whether the fan-out's server `fan-srv` is held up already.
    fan_srv_up: bool,
    /// How the bench's own clients connect: as the admin client (TLS), or plain text.
    pub security: Security,
    /// With TLS: the cluster CA, to issue agent certificates.
    ca: Option<Ca>,
}

/// The cluster CA (PEM) and the directory its certificates are written to.
struct Ca {
    dir: PathBuf,
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    /// A new CA, and certificates for nodes 1..=3 and the admin client `bench`.
    fn make(dir: &Path) -> Result<Ca> {
        let ca = make::make_ca("Baton bench CA", Validity::for_(make::CA_VALID_FOR))?;
        make::write(dir, "ca", &ca, true)?;
        let ca = Ca {
            dir: dir.to_path_buf(),
            cert_pem: ca.cert_pem,
            key_pem: ca.key_pem,
        };
        for id in 1..=3 {
            ca.write(&Subject::Node { id, hosts: vec![] })?;
        }
        ca.write(&Subject::Client {
            name: "bench".into(),
            permission: Permission::Admin,
            server: None,
        })?;
        Ok(ca)
    }

    /// Issue a certificate for `subject` and write it (no fsync: scratch files).
    fn write(&self, subject: &Subject) -> Result<TlsPaths> {
        let issued = make::issue(
            &self.cert_pem,
            &self.key_pem,
            subject,
            Validity::for_(make::LEAF_VALID_FOR),
        )?;
        let paths = self.paths(&subject.file_stem());
        std::fs::write(&paths.key, &issued.key_pem)?;
        std::fs::write(&paths.cert, &issued.cert_pem)?;
        Ok(paths)
    }

    fn paths(&self, stem: &str) -> TlsPaths {
        TlsPaths {
            ca: self.dir.join("ca.pem"),
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        }
    }

    fn flags(&self, stem: &str) -> Vec<String> {
        let p = self.paths(stem);
        vec![
            "--ca".into(),
            p.ca.display().to_string(),
            "--cert".into(),
            p.cert.display().to_string(),
            "--key".into(),
            p.key.display().to_string(),
        ]
    }
}

/// A channel to one address (connected now, `TCP_NODELAY`), plain text.
pub async fn channel(addr: &str) -> Result<Channel> {
    secure_channel(addr, &Security::Insecure).await
}

/// A channel to one address (connected now, `TCP_NODELAY`), over TLS with the client
/// certificate of `security`, or plain text.
pub async fn secure_channel(addr: &str, security: &Security) -> Result<Channel> {
    let uri = if addr.starts_with("http") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let ep = Endpoint::from_shared(uri)?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2));
    Ok(security.connect(ep, None).await?)
}

/// The group ids the nodes run with (node `id`: this plus `id`), by which a workload cuts
/// one node off ([`crate::cut`]). No group of that number needs to exist.
const NODE_GID_BASE: u32 = 61_000;

impl BatonCluster {
    /// Start three nodes with `extra` flags (e.g. `--lease 2s`) and wait for a leader.
    /// With `tls`, mutual TLS as in production: a CA and certificates in `dir/tls`, and
    /// the bench's clients speak as an admin client; without, every process runs
    /// `--insecure`.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        lease: Duration,
        extra: &[String],
        tls: bool,
    ) -> Result<BatonCluster> {
        std::fs::create_dir_all(dir)?;
        let ca = if tls {
            Some(Ca::make(&dir.join("tls"))?)
        } else {
            None
        };
        let security = match &ca {
            Some(ca) => Security::Tls(Tls::load(ca.paths("client-bench"))?),
            None => Security::Insecure,
        };
        let opts = ClusterOpts {
            lease: Some(lease),
            extra: extra.to_vec(),
            insecure: ca.is_none(),
            bin: Some(bin.to_path_buf()),
            env: vec![("RUST_LOG".into(), "warn".into())],
            gid_base: Some(NODE_GID_BASE),
            ..Default::default()
        };
        // The harness's nodes die with the thread that started them (PR_SET_PDEATHSIG):
        // here the driver's main thread, which runs the workloads (`block_on`).
        let nodes = baton_tests::launch(dir, 3, &opts, |id| match &ca {
            Some(ca) => ca.flags(&format!("node-{id}")),
            None => vec!["--insecure".into()],
        })
        .with_context(|| format!("starting the directory nodes ({})", bin.display()))?;
        let client = Client::with_config(
            nodes.iter().map(|n| n.addr.clone()).collect(),
            ClientConfig {
                security: security.clone(),
                ..Default::default()
            },
        )?;
        let c = BatonCluster {
            nodes,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            client,
            lease,
            agents: Vec::new(),
            agent_http: Vec::new(),
            holds: Vec::new(),
            sessions: if tls {
                Sessions::OwnTls
            } else {
                Sessions::Shared
            },
            fan_srv_up: false,
            security,
            ca,
        };
        c.wait_healthy(Duration::from_secs(30)).await?;
        Ok(c)
    }

    pub fn is_tls(&self) -> bool {
        self.ca.is_some()
    }

    /// A new client of the cluster (the admin client with TLS) over `addrs`.
    pub fn new_client(&self, addrs: Vec<String>) -> Result<Client> {
        Ok(Client::with_config(
            addrs,
            ClientConfig {
                security: self.security.clone(),
                ..Default::default()
            },
        )?)
    }

    /// A channel to `addr` (connected now) as the bench's admin client.
    pub async fn channel(&self, addr: &str) -> Result<Channel> {
        secure_channel(addr, &self.security).await
    }

    /// How an agent of `server` connects: with TLS, a new agent certificate for that
    /// server name (the directory refuses a session for any other); plain text without.
    pub fn agent_security(&self, server: &str) -> Result<Security> {
        match &self.ca {
            Some(ca) => {
                let paths = ca.write(&Subject::Agent {
                    server: server.into(),
                })?;
                Ok(Security::Tls(Tls::load(paths)?))
            }
            None => Ok(Security::Insecure),
        }
    }

    /// A channel to `addr` (connected now) as the agent of `server`.
    pub async fn agent_channel(&self, addr: &str, server: &str) -> Result<Channel> {
        secure_channel(addr, &self.agent_security(server)?).await
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    pub fn node(&mut self, id: u64) -> &mut BatonNode {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node id")
    }

    /// The cluster's status as the leader sees it.
    pub async fn status(&self) -> Result<v1::ClusterStatusReply> {
        Ok(self.client.cluster_status().await?)
    }

    /// The status as one node sees it (`local`).
    pub async fn local_status(&self, id: u64) -> Result<v1::NodeStatus> {
        let addr = &self.nodes.iter().find(|n| n.id == id).expect("id").addr;
        let mut c = v1::directory_client::DirectoryClient::new(self.channel(addr).await?);
        let r = c
            .cluster_status(v1::ClusterStatusRequest { local: true })
            .await?
            .into_inner();
        r.nodes
            .into_iter()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow!("node {id} did not report itself"))
    }

    pub async fn leader(&self) -> Result<u64> {
        self.status()
            .await?
            .leader
            .ok_or_else(|| anyhow!("no leader"))
    }

    /// Wait until a leader leads all three nodes and every node answers.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = self.status().await
                && let Some(l) = s.leader
                && s.nodes.len() == 3
                && s.nodes
                    .iter()
                    .all(|n| n.state == "leader" || n.state == "follower")
            {
                return Ok(l);
            }
            if Instant::now() > deadline {
                bail!(
                    "baton cluster in {} not healthy within {timeout:?}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn apply(&self, cmd: v1::command::Command) -> Result<v1::WriteReply> {
        Ok(self
            .client
            .apply(v1::Command {
                command: Some(cmd),
                request_id: String::new(),
            })
            .await?)
    }

    /// Start `baton agent` for `server`, running kind `bench` with `command`.
    pub fn spawn_agent(&mut self, server: &str, command: &str) -> Result<()> {
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--server".into(),
            server.into(),
            "--directory".into(),
            self.addrs().join(","),
            "--run".into(),
            format!("bench={command}"),
            "--handover-grace".into(),
            "1s".into(),
        ];
        // Metrics on loopback: the leader-failure workload reads how long ago each agent's
        // last renewal was acknowledged.
        let http = format!("127.0.0.1:{}", baton_tests::free_port());
        args.extend(["--http".into(), http.clone()]);
        match &self.ca {
            Some(ca) => {
                ca.write(&Subject::Agent {
                    server: server.into(),
                })?;
                args.extend(ca.flags(&format!("agent-{server}")));
            }
            None => args.push("--insecure".into()),
        }
        let p = Proc::spawn(
            &format!("agent-{server}"),
            &self.bin,
            args,
            vec![("RUST_LOG".into(), "warn".into())],
            self.dir.join(format!("agent-{server}.log")),
        )?;
        self.agents.push((server.to_string(), p));
        self.agent_http.push(http);
        Ok(())
    }

    /// The agent of `server`.
    pub fn agent(&mut self, server: &str) -> Result<&mut Proc> {
        self.agents
            .iter_mut()
            .find(|(s, _)| s == server)
            .map(|(_, p)| p)
            .ok_or_else(|| anyhow!("no agent for server {server}"))
    }

    /// Wait until each of `servers` is up in the directory.
    pub async fn wait_servers_up(&self, servers: &[&str], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(list) = self.client.list_servers(true).await {
                let up = servers.iter().all(|s| {
                    list.servers
                        .iter()
                        .any(|x| x.name == *s && x.status == "up")
                });
                if up {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("servers {servers:?} not up within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop everything (agents first).
    pub fn shutdown(&mut self) {
        for (_, a) in &mut self.agents {
            a.stop(Duration::from_secs(2));
        }
        for n in &mut self.nodes {
            n.proc.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for BatonCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn set_role(role: &str, delay: u64) -> v1::command::Command {
    v1::command::Command::SetRole(v1::SetRole {
        role: role.into(),
        failback: None,
        failback_delay_ms: Some(delay),
        database: None,
    })
}

pub fn create_role(role: &str, servers: &[&str], kind: &str) -> v1::command::Command {
    v1::command::Command::CreateRole(v1::CreateRole {
        name: role.into(),
        kind: kind.into(),
        servers: servers.iter().map(|s| s.to_string()).collect(),
        failback: false,
        failback_delay_ms: 0,
        database: None,
    })
}

/// Open an agent-style session for `server` on `ch`: Hello, then a renewal every
/// `renew_every` (or, with `None`, a new renewal as soon as the previous one is acked).
/// Runs until the stream ends (the returned task then finishes); the returned sender
/// keeps it open (drop it to close).
pub async fn open_session(
    ch: Channel,
    server: String,
    renew_every: Option<Duration>,
    stats: Arc<SessionStats>,
) -> Result<(mpsc::Sender<v1::AgentMessage>, tokio::task::JoinHandle<()>)> {
    use v1::agent_message::Msg as Out;
    use v1::directory_message::Msg as In;
    let (tx, rx) = mpsc::channel(4);
    tx.send(v1::AgentMessage {
        msg: Some(Out::Hello(v1::Hello {
            server: server.clone(),
            kinds: vec![],
            main: false,
            min_revision: 0,
            instance: String::new(),
        })),
    })
    .await?;
    let mut client = v1::agent_client::AgentClient::new(ch);
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .with_context(|| format!("session for {server}"))?
        .into_inner();
    let out = tx.clone();
    let task = tokio::spawn(async move {
        let mut seq = 0u64;
        let mut opened = false;
        let mut ticker = renew_every.map(|d| {
            let mut t = tokio::time::interval(d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let renew = |seq: u64| v1::AgentMessage {
            msg: Some(Out::Renew(v1::Renew { seq })),
        };
        loop {
            tokio::select! {
                m = inbound.message() => {
                    match m {
                        Ok(Some(v1::DirectoryMessage { msg: Some(In::Assignments(_)) })) => {
                            if !opened {
                                opened = true;
                                stats.opened.fetch_add(1, Ordering::Relaxed);
                                stats.live.fetch_add(1, Ordering::Relaxed);
                                if ticker.is_none() {
                                    seq += 1;
                                    if out.send(renew(seq)).await.is_err() { break }
                                }
                            }
                        }
                        Ok(Some(v1::DirectoryMessage { msg: Some(In::RenewAck(_)) })) => {
                            stats.acks.fetch_add(1, Ordering::Relaxed);
                            if ticker.is_none() {
                                seq += 1;
                                if out.send(renew(seq)).await.is_err() { break }
                            }
                        }
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
                _ = async {
                    match ticker.as_mut() {
                        Some(t) => { t.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    seq += 1;
                    if out.send(renew(seq)).await.is_err() { break }
                }
            }
        }
        stats.ended.fetch_add(1, Ordering::Relaxed);
        if opened {
            stats.live.fetch_sub(1, Ordering::Relaxed);
        }
    });
    Ok((tx, task))
}

/// Baton's writes: role changes (SetRole toggling `failback_delay_ms`) through
/// baton-client, which routes them to the leader.
#[derive(Clone)]
pub struct BatonWriter {
    /// Clients (one per 32 writers).
    clients: Vec<Client>,
    /// The roles the writers toggle (writer `i` toggles `roles[i % len]`).
    roles: Arc<Vec<String>>,
}

impl Writer for BatonWriter {
    async fn write(&self, i: usize, n: u64) -> Result<()> {
        let c = &self.clients[i / 32 % self.clients.len()];
        c.apply(v1::Command {
            request_id: String::new(),
            command: Some(set_role(&self.roles[i % self.roles.len()], n % 2)),
        })
        .await?;
        Ok(())
    }
}

/// A fan-out topic: every history event of a role named `{prefix}{k}` after `rev`.
#[derive(Clone)]
pub struct BatonTopic {
    /// `fan{n}-`: change `k` creates role `fan{n}-{k}`.
    prefix: String,
    /// The revision the subscribers watch after (the cluster's before they start).
    rev: u64,
}

/// When (wall ns) one of `addrs` first reports itself leader.
async fn new_leader_at(addrs: Vec<String>, security: Security) -> Option<u64> {
    let mut clients = Vec::new();
    for a in &addrs {
        clients.push(v1::directory_client::DirectoryClient::new(
            secure_channel(a, &security).await.ok()?,
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for c in &mut clients {
            if let Ok(r) = c
                .cluster_status(v1::ClusterStatusRequest { local: true })
                .await
                && r.get_ref().nodes.iter().any(|n| n.state == "leader")
            {
                return Some(wall_ns());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

impl BatonCluster {
    /// Client security for each of `names` (with [`Sessions::OwnPlain`] or
    /// [`Sessions::OwnTls`], one each; with TLS an agent certificate each, issued,
    /// written and loaded), and the seconds that took.
    fn session_security(&self, names: &[String]) -> Result<(Vec<Security>, f64)> {
        let t0 = Instant::now();
        let v = match self.sessions {
            Sessions::Shared => vec![Security::Insecure],
            Sessions::OwnPlain | Sessions::OwnTls => names
                .iter()
                .map(|s| self.agent_security(s))
                .collect::<Result<Vec<_>>>()?,
        };
        let secs = t0.elapsed().as_secs_f64();
        if self.sessions == Sessions::OwnTls {
            eprintln!(
                "  {} agent certificates issued, written and loaded in {secs:.2} s ({:.2} ms each)",
                v.len(),
                secs * 1000.0 / v.len().max(1) as f64
            );
        }
        Ok((v, secs))
    }

    /// The channels `n` sessions on `addr` use, connected now: session `i` uses
    /// `chans[i % len]`.
    async fn session_channels(
        &self,
        addr: &str,
        n: usize,
        security: Vec<Security>,
    ) -> Result<Vec<Channel>> {
        use futures::StreamExt;
        if self.sessions == Sessions::Shared {
            return channels_over(&[addr.to_string()], n).await;
        }
        futures::stream::iter(security)
            .map(|s| async move { secure_channel(addr, &s).await })
            .buffered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Hold `server` up with one agent-style session (renewing every second) for as
    /// long as the cluster runs.
    async fn hold_server(&mut self, server: &str) -> Result<()> {
        let (hold, _) = open_session(
            self.agent_channel(&self.addrs()[0], server).await?,
            server.to_string(),
            Some(Duration::from_secs(1)),
            Arc::new(SessionStats::default()),
        )
        .await?;
        self.holds.push(hold);
        self.wait_servers_up(&[server], Duration::from_secs(10))
            .await
    }

    fn id(&self, i: usize) -> u64 {
        self.nodes[i].id
    }
}

impl System for BatonCluster {
    const NAME: &'static str = "baton";
    type Writer = BatonWriter;
    type Topic = BatonTopic;

    async fn start(ctx: &Ctx, name: &str, lease: Duration, sessions: Sessions) -> Result<Self> {
        let mut c = BatonCluster::start(
            &ctx.baton_bin,
            &ctx.dir(name),
            lease,
            &ctx.baton_args,
            sessions.tls(),
        )
        .await?;
        c.sessions = sessions;
        Ok(c)
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn addrs(&self) -> Vec<String> {
        BatonCluster::addrs(self)
    }

    fn describe(&self, i: usize) -> String {
        format!("node {}", self.id(i))
    }

    async fn leader(&self) -> Result<usize> {
        let id = BatonCluster::leader(self).await?;
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| anyhow!("leader {id} is not a node of this cluster"))
    }

    async fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        BatonCluster::wait_healthy(self, timeout).await.map(|_| ())
    }

    fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].proc.pid()
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].data_dir.clone()
    }

    fn net(&self, i: usize) -> crate::cut::Target {
        let n = &self.nodes[i];
        crate::cut::Target {
            ports: [&n.addr, &n.peer_addr]
                .iter()
                .filter_map(|a| a.rsplit(':').next()?.parse().ok())
                .collect(),
            gid: NODE_GID_BASE + n.id as u32,
        }
    }

    fn agent_metrics_addrs(&self) -> Vec<String> {
        self.agent_http.clone()
    }

    fn kill_node(&mut self, i: usize) {
        self.nodes[i].proc.kill9();
    }

    fn stop_node(&mut self, i: usize) {
        self.nodes[i].proc.stop(Duration::from_secs(10));
    }

    fn start_node(&mut self, i: usize) -> Result<()> {
        Ok(self.nodes[i].proc.try_start()?)
    }

    async fn new_leader_watch(&self, old: usize) -> Result<BoxFuture<'static, Option<u64>>> {
        let survivors: Vec<String> = (0..self.nodes.len())
            .filter(|i| *i != old)
            .map(|i| self.nodes[i].addr.clone())
            .collect();
        Ok(Box::pin(new_leader_at(survivors, self.security.clone())))
    }

    async fn raft_index(&self, i: usize) -> Result<u64> {
        Ok(self.local_status(self.id(i)).await?.last_applied)
    }

    async fn revision(&self, i: usize) -> Result<u64> {
        Ok(self.local_status(self.id(i)).await?.last_applied)
    }

    async fn wait_serving(&self, i: usize, rev: u64, timeout: Duration) -> Result<()> {
        let addr = &self.nodes[i].addr;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(ch) = self.channel(addr).await {
                let mut d = v1::directory_client::DirectoryClient::new(ch);
                if let Ok(r) = d
                    .list_roles(v1::ListRequest {
                        read: Some(v1::ReadOptions { stale: true }),
                    })
                    .await
                    && r.get_ref().revision >= rev
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "restarted node {} did not serve revision {rev} within {timeout:?}",
                    self.id(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn bulk_writer(&mut self, name: &str, roles: usize) -> Result<BatonWriter> {
        let srv = format!("{name}-srv");
        self.hold_server(&srv).await?;
        let names: Vec<String> = (0..roles).map(|i| format!("{name}-{i:03}")).collect();
        for r in &names {
            self.apply(create_role(r, &[&srv], "")).await?;
        }
        let addrs = if std::env::var_os("BENCH_LEADER_ONLY").is_some() {
            let l = System::leader(self).await?;
            vec![self.nodes[l].addr.clone()]
        } else {
            BatonCluster::addrs(self)
        };
        let clients = (0..8)
            .map(|_| self.new_client(addrs.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BatonWriter {
            clients,
            roles: Arc::new(names),
        })
    }

    async fn single_writer(&self, role: &str) -> Result<BatonWriter> {
        Ok(BatonWriter {
            clients: vec![self.new_client(BatonCluster::addrs(self))?],
            roles: Arc::new(vec![role.to_string()]),
        })
    }

    async fn start_roles(&mut self, servers: &[&str], roles: &[&str], j: &Journal) -> Result<()> {
        for s in servers {
            self.spawn_agent(s, &j.role_command())?;
        }
        self.wait_servers_up(servers, Duration::from_secs(20))
            .await?;
        for (i, r) in roles.iter().enumerate() {
            let mut list = servers.to_vec();
            list.rotate_left(i % servers.len());
            self.apply(create_role(r, &list, "bench")).await?;
        }
        for r in roles {
            j.wait_for(r, Duration::from_secs(10), |_| true)
                .await
                .ok_or_else(|| anyhow!("role {r} never started"))?;
        }
        Ok(())
    }

    fn kill_agent(&mut self, server: &str) {
        if let Ok(a) = self.agent(server) {
            a.kill9();
        }
    }

    async fn restart_agent(&mut self, server: &str) -> Result<()> {
        self.agent(server)?.start()?;
        self.wait_servers_up(&[server], Duration::from_secs(20))
            .await
    }

    async fn topic(&mut self, n: usize) -> Result<BatonTopic> {
        if !self.fan_srv_up {
            self.hold_server("fan-srv").await?;
            self.fan_srv_up = true;
        }
        let rev = self
            .status()
            .await?
            .nodes
            .iter()
            .map(|x| x.last_applied)
            .max()
            .unwrap_or(0);
        Ok(BatonTopic {
            prefix: format!("fan{n}-"),
            rev,
        })
    }

    async fn subscribe(topic: BatonTopic, ch: Channel, arr: Arc<Arrivals>) {
        let mut w = v1::watch_client::WatchClient::new(ch);
        let Ok(s) = w
            .events(v1::WatchRequest {
                role: None,
                after_revision: topic.rev,
                after: None,
            })
            .await
        else {
            return;
        };
        arr.ready.fetch_add(1, Ordering::Relaxed);
        let mut s = s.into_inner();
        while let Ok(Some(ev)) = s.message().await {
            if let Some(k) = ev
                .role
                .strip_prefix(&topic.prefix)
                .and_then(|k| k.parse::<usize>().ok())
            {
                arr.arrived(k);
            }
        }
    }

    async fn publish(&self, topic: &BatonTopic, k: usize) -> Result<()> {
        self.apply(create_role(
            &format!("{}{k}", topic.prefix),
            &["fan-srv"],
            "",
        ))
        .await?;
        Ok(())
    }

    async fn idle_sessions(&self, at: usize, n: usize) -> Result<SessionGroup> {
        let addr = self.nodes[at].addr.clone();
        let names: Vec<String> = (0..n).map(|i| format!("idle-{i:05}")).collect();
        let (security, issue_s) = self.session_security(&names)?;
        let stats = Arc::new(SessionStats::default());
        let t0 = Instant::now();
        let chans = self.session_channels(&addr, n, security).await?;
        // One supervisor per session: like an agent, it opens the session again when it
        // ends (a registration refused during a leader change, a broken stream).
        let sem = Arc::new(tokio::sync::Semaphore::new(256));
        let mut group = SessionGroup {
            stats: stats.clone(),
            open: n,
            issue_s,
            tasks: Vec::new(),
        };
        for (i, name) in names.into_iter().enumerate() {
            let ch = chans[i % chans.len()].clone();
            let (stats, sem) = (stats.clone(), sem.clone());
            group.tasks.push(tokio::spawn(async move {
                loop {
                    let permit = sem.acquire().await;
                    let r = tokio::time::timeout(
                        Duration::from_secs(10),
                        open_session(
                            ch.clone(),
                            name.clone(),
                            Some(Duration::from_secs(1)),
                            stats.clone(),
                        ),
                    )
                    .await;
                    drop(permit);
                    if let Ok(Ok((tx, task))) = r {
                        let _ = task.await;
                        drop(tx);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        while (stats.live.load(Ordering::Relaxed) as usize) < n {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {n} sessions open ({} opened in all)",
                    stats.live.load(Ordering::Relaxed),
                    stats.opened.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let reopened = stats.opened.load(Ordering::Relaxed) as usize - n;
        if reopened > 0 {
            eprintln!("  {reopened} sessions had to be opened again");
        }
        eprintln!(
            "  {n} sessions registered in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        Ok(group)
    }

    async fn busy_sessions(&self, at: usize, k: usize) -> Result<SessionGroup> {
        let addr = self.nodes[at].addr.clone();
        let stats = Arc::new(SessionStats::default());
        let names: Vec<String> = (0..k).map(|i| format!("ren-{i:05}")).collect();
        let (security, issue_s) = self.session_security(&names)?;
        let chans = self.session_channels(&addr, k, security).await?;
        let mut group = SessionGroup {
            stats: stats.clone(),
            open: k,
            issue_s,
            tasks: Vec::new(),
        };
        for (i, name) in names.into_iter().enumerate() {
            let (_tx, task) =
                open_session(chans[i % chans.len()].clone(), name, None, stats.clone()).await?;
            group.tasks.push(task);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while (stats.opened.load(Ordering::Relaxed) as usize) < k {
            if Instant::now() > deadline {
                bail!("sessions not registered");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(group)
    }
}
