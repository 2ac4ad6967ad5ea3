//! A real three-node Baton directory cluster on loopback, agents, and the client-side
//! pieces the workloads need (agent-style sessions, watch streams).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use baton_client::{Client, ClientConfig, v1};
use baton_tls::make::{self, Subject, Validity};
use baton_tls::{Permission, Security, Tls, TlsPaths};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::procs::{Proc, free_port};

pub struct BatonNode {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    pub proc: Proc,
}

pub struct BatonCluster {
    pub nodes: Vec<BatonNode>,
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub client: Client,
    pub lease: Duration,
    agents: Vec<Proc>,
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
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let peers = peer_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let addr = format!("127.0.0.1:{p}");
            let data_dir = dir.join(format!("node{id}"));
            let mut args: Vec<String> = vec![
                "directory".into(),
                "--id".into(),
                id.to_string(),
                "--listen".into(),
                addr.clone(),
                "--peer-listen".into(),
                format!("127.0.0.1:{}", peer_ports[i]),
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--peers".into(),
                peers.clone(),
                "--lease".into(),
                format!("{}ms", lease.as_millis()),
            ];
            match &ca {
                Some(ca) => args.extend(ca.flags(&format!("node-{id}"))),
                None => args.push("--insecure".into()),
            }
            args.extend(extra.iter().cloned());
            let proc = Proc::spawn(
                &format!("baton-node{id}"),
                bin,
                args,
                vec![("RUST_LOG".into(), "warn".into())],
                dir.join(format!("node{id}.log")),
            )?;
            nodes.push(BatonNode {
                id,
                addr,
                data_dir,
                proc,
            });
        }
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
    pub fn spawn_agent(&mut self, server: &str, command: &str) -> Result<usize> {
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
        self.agents.push(p);
        Ok(self.agents.len() - 1)
    }

    pub fn agent(&mut self, i: usize) -> &mut Proc {
        &mut self.agents[i]
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
        for a in &mut self.agents {
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

/// Counters shared by a group of agent-style sessions.
#[derive(Default)]
pub struct SessionStats {
    /// Sessions that received their first assignment set (registered).
    pub opened: AtomicU64,
    pub acks: AtomicU64,
    pub ended: AtomicU64,
    /// Sessions registered and not ended.
    pub live: AtomicU64,
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
