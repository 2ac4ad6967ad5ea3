//! A real three-member etcd 3.4 cluster on loopback, and a small client over the etcd v3
//! gRPC API (see `proto/etcd_min.proto`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use tonic::transport::Channel;

use crate::baton_sys::channel;
use crate::etcdpb as pb;
use crate::procs::{Proc, free_port};

/// etcd's election settings, passed explicitly (they are etcd's defaults).
pub const HEARTBEAT_MS: u64 = 100;
pub const ELECTION_MS: u64 = 1000;

pub struct EtcdMember {
    pub name: String,
    pub client_addr: String,
    pub data_dir: PathBuf,
    pub proc: Proc,
}

pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    pub dir: PathBuf,
    agents: Vec<Proc>,
}

impl EtcdCluster {
    pub async fn start(bin: &Path, dir: &Path) -> Result<EtcdCluster> {
        std::fs::create_dir_all(dir)?;
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let initial = peer_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{}=http://127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for i in 0..3 {
            let name = format!("m{}", i + 1);
            let client_addr = format!("127.0.0.1:{}", client_ports[i]);
            let peer = format!("http://127.0.0.1:{}", peer_ports[i]);
            let data_dir = dir.join(&name);
            let args: Vec<String> = vec![
                format!("--name={name}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--listen-client-urls=http://{client_addr}"),
                format!("--advertise-client-urls=http://{client_addr}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster={initial}"),
                "--initial-cluster-state=new".into(),
                "--initial-cluster-token=baton-bench".into(),
                format!("--heartbeat-interval={HEARTBEAT_MS}"),
                format!("--election-timeout={ELECTION_MS}"),
                "--quota-backend-bytes=8589934592".into(),
                "--logger=zap".into(),
                "--log-level=warn".into(),
            ];
            let proc = Proc::spawn(
                &format!("etcd-{name}"),
                bin,
                args,
                vec![],
                dir.join(format!("{name}.log")),
            )?;
            members.push(EtcdMember {
                name,
                client_addr,
                data_dir,
                proc,
            });
        }
        let c = EtcdCluster {
            members,
            dir: dir.to_path_buf(),
            agents: Vec::new(),
        };
        c.wait_healthy(Duration::from_secs(30)).await?;
        Ok(c)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_addr.clone()).collect()
    }

    pub async fn status(addr: &str) -> Result<pb::StatusResponse> {
        let mut c = pb::maintenance_client::MaintenanceClient::new(channel(addr).await?);
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_millis(500));
        Ok(c.status(req).await?.into_inner())
    }

    /// Index of the member that leads, as every running member agrees.
    pub async fn leader(&self) -> Result<usize> {
        let mut leader = None;
        let mut ids = Vec::new();
        for m in &self.members {
            let s = Self::status(&m.client_addr).await?;
            let me = s.header.as_ref().map_or(0, |h| h.member_id);
            ids.push(me);
            if s.leader == 0 || leader.is_some_and(|l| l != s.leader) {
                bail!("no agreed leader yet");
            }
            leader = Some(s.leader);
        }
        let l = leader.ok_or_else(|| anyhow!("no leader"))?;
        ids.iter()
            .position(|id| *id == l)
            .ok_or_else(|| anyhow!("leader {l:x} is not a member"))
    }

    pub async fn wait_healthy(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(l) = self.leader().await {
                // A write goes through: the cluster serves.
                let kv = Kv::connect(&self.endpoints()).await?;
                if kv.put_once(l, b"/bench/health", b"ok").await.is_ok() {
                    return Ok(l);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd cluster in {} not healthy within {timeout:?}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Start an etcd-recipe agent (`bench-driver etcd-agent`) for `server`.
    pub fn spawn_agent(
        &mut self,
        driver: &Path,
        server: &str,
        roles: &[&str],
        command: &str,
        ttl_s: u64,
    ) -> Result<usize> {
        let args = vec![
            "etcd-agent".into(),
            "--server".into(),
            server.into(),
            "--endpoints".into(),
            self.endpoints().join(","),
            "--roles".into(),
            roles.join(","),
            "--ttl".into(),
            ttl_s.to_string(),
            "--run".into(),
            command.into(),
        ];
        let p = Proc::spawn(
            &format!("etcd-agent-{server}"),
            driver,
            args,
            vec![],
            self.dir.join(format!("agent-{server}.log")),
        )?;
        self.agents.push(p);
        Ok(self.agents.len() - 1)
    }

    pub fn agent(&mut self, i: usize) -> &mut Proc {
        &mut self.agents[i]
    }

    pub fn shutdown(&mut self) {
        for a in &mut self.agents {
            a.stop(Duration::from_secs(2));
        }
        for m in &mut self.members {
            m.proc.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A KV client over a list of endpoints; `put` moves to the next endpoint on failure.
#[derive(Clone)]
pub struct Kv {
    pub channels: Vec<(String, Channel)>,
    /// Longest wait for one attempt on one member.
    pub attempt_timeout: Duration,
}

impl Kv {
    /// Channels to every endpoint, connected lazily (a dead member costs nothing here).
    pub async fn connect(endpoints: &[String]) -> Result<Kv> {
        let mut channels = Vec::new();
        for e in endpoints {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{e}"))?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_millis(500))
                .connect_lazy();
            channels.push((e.clone(), ch));
        }
        Ok(Kv {
            channels,
            attempt_timeout: Duration::from_secs(3),
        })
    }

    pub async fn put_once(&self, at: usize, key: &[u8], value: &[u8]) -> Result<i64> {
        let mut c = pb::kv_client::KvClient::new(self.channels[at % self.channels.len()].1.clone());
        let mut req = tonic::Request::new(pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease: 0,
        });
        req.set_timeout(self.attempt_timeout);
        let r = c.put(req).await?.into_inner();
        Ok(r.header.map_or(0, |h| h.revision))
    }

    /// Put through endpoint `*at`, moving on to the next one on failure, until
    /// `budget` runs out (as clientv3's balancer does).
    pub async fn put(
        &self,
        at: &mut usize,
        key: &[u8],
        value: &[u8],
        budget: Duration,
    ) -> Result<i64> {
        let deadline = Instant::now() + budget;
        let mut failures = 0usize;
        loop {
            match self.put_once(*at, key, value).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    if Instant::now() > deadline {
                        return Err(e);
                    }
                    *at = (*at + 1) % self.channels.len();
                    failures += 1;
                    if failures.is_multiple_of(self.channels.len()) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    }

    /// A serializable (local) read at endpoint `at`: its header revision.
    pub async fn local_revision(&self, at: usize, key: &[u8]) -> Result<i64> {
        let mut c = pb::kv_client::KvClient::new(self.channels[at].1.clone());
        let mut req = tonic::Request::new(pb::RangeRequest {
            key: key.to_vec(),
            serializable: true,
            ..Default::default()
        });
        req.set_timeout(Duration::from_millis(500));
        let r = c.range(req).await?.into_inner();
        Ok(r.header.map_or(0, |h| h.revision))
    }
}
