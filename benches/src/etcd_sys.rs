//! A real three-member etcd 3.4 cluster on loopback, and a small client over the etcd v3
//! gRPC API (see `proto/etcd_min.proto`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use baton_tests::now_ns as wall_ns;
use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::baton_sys::channel;
use crate::etcdpb as pb;
use crate::journal::Journal;
use crate::procs::{Proc, free_port};
use crate::system::{
    Arrivals, SessionGroup, SessionStats, Sessions, System, Writer, channels_over,
};
use crate::workloads::Ctx;

/// etcd's election settings, passed explicitly (they are etcd's defaults).
pub const HEARTBEAT_MS: u64 = 100;
pub const ELECTION_MS: u64 = 1000;

/// The group ids the members run with (member `i`: this plus `i`), by which a workload
/// cuts one member off ([`crate::cut`]). No group of that number needs to exist.
const MEMBER_GID_BASE: u32 = 61_100;

pub struct EtcdMember {
    pub name: String,
    pub client_addr: String,
    /// Where the member's peers reach it (Raft).
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub proc: Proc,
}

pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    pub dir: PathBuf,
    /// Recipe agents started by [`EtcdCluster::spawn_agent`], by server name.
    agents: Vec<(String, Proc)>,
    /// The driver binary (`bench-driver etcd-agent` runs the recipe's agents).
    driver_bin: PathBuf,
    /// The recipe's lease TTL (the counterpart of Baton's `--lease`), whole seconds.
    lease_s: u64,
    /// A KV client over every member (lazily connected), for the fan-out's puts and the
    /// revision reads.
    kv: Kv,
}

impl EtcdCluster {
    /// Start three members of `bin` in `dir`; the recipe's agents will run as `driver
    /// etcd-agent` with a lease TTL of `lease` (whole seconds, at least 1).
    pub async fn start(
        bin: &Path,
        driver: &Path,
        dir: &Path,
        lease: Duration,
    ) -> Result<EtcdCluster> {
        if lease.as_secs() == 0 || lease.subsec_nanos() != 0 {
            bail!("the etcd recipe's lease TTL is whole seconds, at least 1 (not {lease:?})");
        }
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
            let proc = Proc::spawn_as(
                &format!("etcd-{name}"),
                bin,
                args,
                vec![],
                dir.join(format!("{name}.log")),
                Some(MEMBER_GID_BASE + i as u32),
            )?;
            members.push(EtcdMember {
                name,
                client_addr,
                peer_port: peer_ports[i],
                data_dir,
                proc,
            });
        }
        let kv = Kv::connect(
            &members
                .iter()
                .map(|m| m.client_addr.clone())
                .collect::<Vec<_>>(),
        )
        .await?;
        let c = EtcdCluster {
            members,
            dir: dir.to_path_buf(),
            agents: Vec::new(),
            driver_bin: driver.to_path_buf(),
            lease_s: lease.as_secs(),
            kv,
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

    /// Start an etcd-recipe agent (`bench-driver etcd-agent`) for `server`, contending
    /// for `roles`, with the cluster's lease TTL.
    pub fn spawn_agent(&mut self, server: &str, roles: &[&str], command: &str) -> Result<()> {
        let args = vec![
            "etcd-agent".into(),
            "--server".into(),
            server.into(),
            "--endpoints".into(),
            self.endpoints().join(","),
            "--roles".into(),
            roles.join(","),
            "--ttl".into(),
            self.lease_s.to_string(),
            "--run".into(),
            command.into(),
        ];
        let p = Proc::spawn(
            &format!("etcd-agent-{server}"),
            &self.driver_bin,
            args,
            vec![],
            self.dir.join(format!("agent-{server}.log")),
        )?;
        self.agents.push((server.to_string(), p));
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

    pub fn shutdown(&mut self) {
        for (_, a) in &mut self.agents {
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

/// etcd's writes: 256-byte puts over 10,000 keys.
#[derive(Clone)]
pub struct EtcdWriter {
    /// KV clients (one per 32 writers).
    kvs: Vec<Kv>,
    /// The member each put goes to first (the leader when the writer was made).
    leader: usize,
    /// The value of every put (256 bytes, as the report's notes say).
    value: Arc<Vec<u8>>,
}

impl EtcdWriter {
    fn new(kvs: Vec<Kv>, leader: usize) -> EtcdWriter {
        EtcdWriter {
            kvs,
            leader,
            value: Arc::new(vec![b'x'; 256]),
        }
    }
}

impl Writer for EtcdWriter {
    async fn write(&self, i: usize, n: u64) -> Result<()> {
        let kv = &self.kvs[i / 32 % self.kvs.len()];
        let mut at = self.leader;
        let key = format!("/bench/k{:05}", (n as usize * 7919 + i) % 10_000);
        kv.put(
            &mut at,
            key.as_bytes(),
            &self.value,
            Duration::from_secs(10),
        )
        .await?;
        Ok(())
    }
}

/// A fan-out topic: puts to one key, whose value is the change's number.
#[derive(Clone)]
pub struct EtcdTopic {
    /// `/fan/{n}`: one key per fan-out size, so that sizes do not see each other's puts.
    key: Vec<u8>,
    /// The member the puts go to first.
    leader: usize,
}

/// When (wall ns) one of `addrs` first names a leader other than `old`.
async fn new_leader_at(addrs: Vec<String>, old: u64) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for a in &addrs {
            if let Ok(s) = EtcdCluster::status(a).await
                && s.leader != 0
                && s.leader != old
            {
                return Some(wall_ns());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// A watch stream on `key` (from now) on `ch`: the response stream and the sender that
/// keeps the request side open.
async fn watch_key(
    ch: Channel,
    key: Vec<u8>,
) -> Option<(
    mpsc::Sender<pb::WatchRequest>,
    tonic::Streaming<pb::WatchResponse>,
)> {
    let (tx, rx) = mpsc::channel(1);
    tx.try_send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key,
                range_end: vec![],
                start_revision: 0,
            },
        )),
    })
    .ok()?;
    let mut w = pb::watch_client::WatchClient::new(ch);
    let s = w.watch(ReceiverStream::new(rx)).await.ok()?.into_inner();
    Some((tx, s))
}

/// A granted lease (TTL 3 s) on `ch` with its keep-alive stream: the lease id, the
/// sender of keep-alive requests (one is queued already: etcd sends headers with the
/// first response) and the response stream.
async fn lease_with_keepalive(
    ch: Channel,
) -> Option<(
    i64,
    mpsc::Sender<pb::LeaseKeepAliveRequest>,
    tonic::Streaming<pb::LeaseKeepAliveResponse>,
)> {
    let mut lc = pb::lease_client::LeaseClient::new(ch);
    let g = lc
        .lease_grant(pb::LeaseGrantRequest { ttl: 3, id: 0 })
        .await
        .ok()?;
    let id = g.into_inner().id;
    let (tx, rx) = mpsc::channel(2);
    tx.try_send(pb::LeaseKeepAliveRequest { id }).ok()?;
    let s = lc
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .ok()?
        .into_inner();
    Some((id, tx, s))
}

/// One idle session of the etcd recipe: a lease kept alive every second plus a watch on
/// the agent's key, set up with retries (an overloaded member may refuse a grant or a
/// stream, and an agent would try again); counts `opened` once set up.
async fn idle_session(ch: Channel, i: usize, sem: Arc<Semaphore>, stats: Arc<SessionStats>) {
    let permit = sem.acquire_owned().await;
    let setup = async || {
        let (id, ktx, ka) = lease_with_keepalive(ch.clone()).await?;
        let (wtx, mut ws) = watch_key(ch.clone(), format!("/sess/{i}").into_bytes()).await?;
        if !matches!(ws.message().await, Ok(Some(r)) if r.created) {
            return None;
        }
        Some((id, ktx, ka, wtx, ws))
    };
    let mut got = None;
    for _ in 0..50 {
        got = setup().await;
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Some((id, ktx, mut ka, wtx, mut ws)) = got else {
        return;
    };
    stats.opened.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => if ktx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() { break },
            m = ka.message() => if !matches!(m, Ok(Some(_))) { break },
            m = ws.message() => if !matches!(m, Ok(Some(_))) { break },
        }
    }
    drop(wtx);
}

/// One busy session of the etcd recipe: a lease whose keep-alive stream sends its next
/// request as soon as the previous one is answered (`acks` counts the answers).
async fn busy_session(ch: Channel, stats: Arc<SessionStats>) {
    let Some((id, tx, mut s)) = lease_with_keepalive(ch).await else {
        return;
    };
    stats.opened.fetch_add(1, Ordering::Relaxed);
    let mut first = true;
    loop {
        if !first && tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
            break;
        }
        first = false;
        match s.message().await {
            Ok(Some(_)) => {
                stats.acks.fetch_add(1, Ordering::Relaxed);
            }
            _ => break,
        }
    }
}

impl System for EtcdCluster {
    const NAME: &'static str = "etcd";
    type Writer = EtcdWriter;
    type Topic = EtcdTopic;

    async fn start(ctx: &Ctx, name: &str, lease: Duration, sessions: Sessions) -> Result<Self> {
        if sessions != Sessions::Shared {
            bail!(
                "the etcd cluster runs in plain text with shared connections only (asked for {sessions:?})"
            );
        }
        EtcdCluster::start(&ctx.etcd_bin, &ctx.driver_bin, &ctx.dir(name), lease).await
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn addrs(&self) -> Vec<String> {
        self.endpoints()
    }

    fn describe(&self, i: usize) -> String {
        format!("member {}", self.members[i].name)
    }

    async fn leader(&self) -> Result<usize> {
        EtcdCluster::leader(self).await
    }

    async fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        EtcdCluster::wait_healthy(self, timeout).await.map(|_| ())
    }

    fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].proc.pid()
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.members[i].data_dir.clone()
    }

    fn net(&self, i: usize) -> crate::cut::Target {
        let m = &self.members[i];
        crate::cut::Target {
            ports: m
                .client_addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .into_iter()
                .chain([m.peer_port])
                .collect(),
            gid: MEMBER_GID_BASE + i as u32,
        }
    }

    fn kill_node(&mut self, i: usize) {
        self.members[i].proc.kill9();
    }

    fn stop_node(&mut self, i: usize) {
        self.members[i].proc.stop(Duration::from_secs(10));
    }

    fn start_node(&mut self, i: usize) -> Result<()> {
        self.members[i].proc.start()
    }

    async fn new_leader_watch(&self, old: usize) -> Result<BoxFuture<'static, Option<u64>>> {
        let old_id = EtcdCluster::status(&self.members[old].client_addr)
            .await?
            .leader;
        let survivors: Vec<String> = (0..self.members.len())
            .filter(|i| *i != old)
            .map(|i| self.members[i].client_addr.clone())
            .collect();
        Ok(Box::pin(new_leader_at(survivors, old_id)))
    }

    async fn raft_index(&self, i: usize) -> Result<u64> {
        Ok(EtcdCluster::status(&self.members[i].client_addr)
            .await?
            .raft_index)
    }

    async fn revision(&self, i: usize) -> Result<u64> {
        Ok(self.kv.local_revision(i, b"/x").await?.max(0) as u64)
    }

    async fn wait_serving(&self, i: usize, rev: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        // New channels: the old ones may back off after the member went away.
        let kv = Kv::connect(&self.endpoints()).await?;
        loop {
            if let Ok(r) = kv.local_revision(i, b"/x").await
                && r.max(0) as u64 >= rev
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "restarted etcd member {} did not serve within {timeout:?}",
                    self.members[i].name
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn bulk_writer(&mut self, _name: &str, _roles: usize) -> Result<EtcdWriter> {
        let leader = EtcdCluster::leader(self).await?;
        let mut kvs = Vec::new();
        for _ in 0..8 {
            kvs.push(Kv::connect(&self.endpoints()).await?);
        }
        Ok(EtcdWriter::new(kvs, leader))
    }

    async fn single_writer(&self, _role: &str) -> Result<EtcdWriter> {
        let mut kv = Kv::connect(&self.endpoints()).await?;
        // A short attempt timeout, so that a put stuck on a member without a leader is
        // retried elsewhere soon: etcd's best case.
        kv.attempt_timeout = Duration::from_millis(500);
        let leader = EtcdCluster::leader(self).await?;
        Ok(EtcdWriter::new(vec![kv], leader))
    }

    /// The recipe lets no role prefer a server: the first agent starts alone and wins
    /// every role, the others then contend and stand by.
    async fn start_roles(&mut self, servers: &[&str], roles: &[&str], j: &Journal) -> Result<()> {
        for (n, s) in servers.iter().enumerate() {
            self.spawn_agent(s, roles, &j.role_command())?;
            if n == 0 {
                for r in roles {
                    j.wait_for(r, Duration::from_secs(10), |_| true)
                        .await
                        .ok_or_else(|| anyhow!("etcd role {r} never started"))?;
                }
            }
        }
        // The standbys have granted their leases and watch the roles' keys.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }

    fn kill_agent(&mut self, server: &str) {
        if let Ok(a) = self.agent(server) {
            a.kill9();
        }
    }

    async fn restart_agent(&mut self, server: &str) -> Result<()> {
        self.agent(server)?.start()?;
        // The new standby has granted its lease and started watching.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }

    async fn topic(&mut self, n: usize) -> Result<EtcdTopic> {
        Ok(EtcdTopic {
            key: format!("/fan/{n}").into_bytes(),
            leader: EtcdCluster::leader(self).await?,
        })
    }

    async fn subscribe(topic: EtcdTopic, ch: Channel, arr: Arc<Arrivals>) {
        let Some((tx, mut s)) = watch_key(ch, topic.key).await else {
            return;
        };
        while let Ok(Some(r)) = s.message().await {
            if r.created {
                arr.ready.fetch_add(1, Ordering::Relaxed);
            }
            for ev in r.events {
                if let Some(k) = ev
                    .kv
                    .and_then(|kv| String::from_utf8(kv.value).ok())
                    .and_then(|v| v.parse::<usize>().ok())
                {
                    arr.arrived(k);
                }
            }
        }
        drop(tx);
    }

    async fn publish(&self, topic: &EtcdTopic, k: usize) -> Result<()> {
        let mut at = topic.leader;
        self.kv
            .put(
                &mut at,
                &topic.key,
                k.to_string().as_bytes(),
                Duration::from_secs(10),
            )
            .await?;
        Ok(())
    }

    /// Two streams per session: 50 sessions per connection keeps 100 streams on each,
    /// as for Baton. Counts as open once at least 90% are set up.
    async fn idle_sessions(&self, at: usize, n: usize) -> Result<SessionGroup> {
        let addr = self.members[at].client_addr.clone();
        let chans = channels_over(std::slice::from_ref(&addr), 2 * n).await?;
        let stats = Arc::new(SessionStats::default());
        let sem = Arc::new(Semaphore::new(64));
        let t0 = Instant::now();
        let mut group = SessionGroup {
            stats: stats.clone(),
            open: 0,
            issue_s: 0.0,
            tasks: Vec::new(),
        };
        for i in 0..n {
            let ch = chans[i % chans.len()].clone();
            group.tasks.push(tokio::spawn(idle_session(
                ch,
                i,
                sem.clone(),
                stats.clone(),
            )));
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        while (stats.opened.load(Ordering::Relaxed) as usize) < n {
            if Instant::now() > deadline || group.tasks.iter().all(|t| t.is_finished()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let n_ready = stats.opened.load(Ordering::Relaxed) as usize;
        if n_ready < n * 9 / 10 {
            bail!("only {n_ready} of {n} etcd sessions ready");
        }
        eprintln!(
            "  {n_ready} of {n} etcd sessions ready in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        group.open = n_ready;
        Ok(group)
    }

    async fn busy_sessions(&self, at: usize, k: usize) -> Result<SessionGroup> {
        let addr = self.members[at].client_addr.clone();
        let chans = channels_over(std::slice::from_ref(&addr), k).await?;
        let stats = Arc::new(SessionStats::default());
        let mut group = SessionGroup {
            stats: stats.clone(),
            open: k,
            issue_s: 0.0,
            tasks: Vec::new(),
        };
        for i in 0..k {
            let ch = chans[i % chans.len()].clone();
            group
                .tasks
                .push(tokio::spawn(busy_session(ch, stats.clone())));
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while (stats.opened.load(Ordering::Relaxed) as usize) < k {
            if Instant::now() > deadline {
                bail!("etcd keep-alive streams not ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(group)
    }
}
