//! What a workload asks of the system it measures. Every workload is written once, over
//! [`System`]; Baton ([`crate::baton_sys::BatonCluster`]) and etcd
//! ([`crate::etcd_sys::EtcdCluster`]) each implement it their own way. Where the two
//! systems do different things for one concept (a Baton agent session against an etcd
//! lease with a keep-alive and a watch), the method names the concept and each
//! implementation documents what it does.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::future::BoxFuture;
use tonic::transport::Channel;

use crate::baton_sys::channel;
use crate::journal::Journal;
use crate::workloads::Ctx;

/// One durable write per call (Baton: a role change; etcd: a 256-byte put).
pub trait Writer: Clone + Send + Sync + 'static {
    /// The `n`th write of writer `i` (writers spread over the system's clients by `i`).
    fn write(&self, i: usize, n: u64) -> impl Future<Output = Result<()>> + Send;
}

/// How the session workloads (rss, renewals) connect their sessions, and whether the
/// whole cluster runs with mutual TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sessions {
    /// Plain text, 100 sessions per client connection (the rss and renewals rows).
    Shared,
    /// One connection per session, as real agents connect: plain text.
    OwnPlain,
    /// One mutual-TLS connection per session, each with an agent certificate for its
    /// server name (the directory refuses a session for a name its certificate lacks).
    OwnTls,
}

impl Sessions {
    /// Whether the cluster runs with mutual TLS.
    pub fn tls(self) -> bool {
        self == Sessions::OwnTls
    }
}

/// Counters shared by a group of sessions (Baton agent sessions, etcd lease sessions).
#[derive(Default)]
pub struct SessionStats {
    /// Sessions that got going (Baton: received their first assignment set, registered;
    /// etcd: lease granted and streams open).
    pub opened: AtomicU64,
    /// Renewals acknowledged (Baton: RenewAck; etcd: keep-alive responses).
    pub acks: AtomicU64,
    /// Sessions whose stream ended.
    pub ended: AtomicU64,
    /// Sessions opened and not ended.
    pub live: AtomicU64,
}

/// Sessions running in the background; their tasks are aborted on drop.
pub struct SessionGroup {
    pub stats: Arc<SessionStats>,
    /// How many sessions are open and count for the measurement.
    pub open: usize,
    /// Seconds spent issuing, writing and loading client certificates (0 without TLS).
    pub issue_s: f64,
    /// The tasks that run the sessions (aborted on drop).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SessionGroup {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Arrival bookkeeping of a fan-out: `changes` changes and `n` subscribers.
pub struct Arrivals {
    n: usize,
    count: Vec<AtomicUsize>,
    done: Mutex<Vec<Option<Instant>>>,
    /// Subscribers whose stream is set up (the changes start once all are).
    pub ready: AtomicUsize,
}

impl Arrivals {
    pub fn new(n: usize, changes: usize) -> Arc<Arrivals> {
        Arc::new(Arrivals {
            n,
            count: (0..changes).map(|_| AtomicUsize::new(0)).collect(),
            done: Mutex::new(vec![None; changes]),
            ready: AtomicUsize::new(0),
        })
    }

    /// Change `k` reached one more subscriber.
    pub fn arrived(&self, k: usize) {
        if k < self.count.len() && self.count[k].fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.done.lock().expect("lock")[k] = Some(Instant::now());
        }
    }

    /// When change `k` reached the last subscriber.
    pub async fn wait(&self, k: usize, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.done.lock().expect("lock")[k] {
                return Some(t);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }

    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.ready.load(Ordering::Relaxed) < self.n {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} subscribers ready",
                    self.ready.load(Ordering::Relaxed),
                    self.n
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Plain-text channels for `n` streams over `addrs` (connected now): 100 streams per
/// connection, at least one connection per address; stream `i` uses `v[i % len]`.
pub async fn channels_over(addrs: &[String], n: usize) -> Result<Vec<Channel>> {
    let mut v = Vec::new();
    for i in 0..n.div_ceil(100).max(addrs.len()) {
        v.push(channel(&addrs[i % addrs.len()]).await?);
    }
    Ok(v)
}

/// A running three-node cluster of one system. Nodes are named by their index (0..3)
/// in the cluster's own order.
pub trait System: Sized + Send + Sync + 'static {
    /// The report column this system fills ("baton", "etcd"); also names its work
    /// directories and error notes.
    const NAME: &'static str;
    /// The workloads' writes.
    type Writer: Writer;
    /// What every subscriber of one fan-out size watches.
    type Topic: Clone + Send + Sync + 'static;

    /// Start three nodes in a fresh work directory `ctx.work/name` and wait until they
    /// serve. `lease` is the session lease (Baton `--lease`, the etcd recipe's TTL is the
    /// agents'); `sessions` says how the session workloads connect (etcd: only `Shared`).
    fn start(
        ctx: &Ctx,
        name: &str,
        lease: Duration,
        sessions: Sessions,
    ) -> impl Future<Output = Result<Self>>;

    /// The cluster's work directory.
    fn dir(&self) -> &Path;
    /// The client addresses of the nodes, in index order.
    fn addrs(&self) -> Vec<String>;
    /// "node 2", "member m2": node `i` in progress output.
    fn describe(&self, i: usize) -> String;
    /// The node that leads, as the cluster reports it.
    fn leader(&self) -> impl Future<Output = Result<usize>>;
    /// Wait until every node serves under one leader.
    fn wait_healthy(&self, timeout: Duration) -> impl Future<Output = Result<()>>;

    /// Node `i`'s pid while it runs.
    fn pid(&self, i: usize) -> Option<u32>;
    /// Node `i`'s data directory.
    fn data_dir(&self, i: usize) -> PathBuf;
    /// How to recognise node `i`'s traffic, to cut it off with [`crate::cut::Cut`].
    fn net(&self, i: usize) -> crate::cut::Target;
    /// The agents' plain-HTTP metrics addresses, where the system's agents serve
    /// `baton_agent_last_renewal_ack_age_seconds` (Baton); empty where they do not (etcd).
    fn agent_metrics_addrs(&self) -> Vec<String> {
        Vec::new()
    }
    /// SIGKILL node `i`.
    fn kill_node(&mut self, i: usize);
    /// SIGTERM node `i` and wait (up to 10 s) for it to exit.
    fn stop_node(&mut self, i: usize);
    /// Start node `i` again with the same arguments (does not wait).
    fn start_node(&mut self, i: usize) -> Result<()>;
    /// Called before node `old` (the leader) is killed: a future, to spawn right after
    /// the kill, that resolves to when (wall ns) a surviving node first reports a new
    /// leader (`None` within 30 s).
    fn new_leader_watch(
        &self,
        old: usize,
    ) -> impl Future<Output = Result<BoxFuture<'static, Option<u64>>>>;
    /// Node `i`'s index in the replicated log, as the node itself reports it (Baton:
    /// last_applied; etcd: raftIndex).
    fn raft_index(&self, i: usize) -> impl Future<Output = Result<u64>>;
    /// The revision node `i` serves local reads at (Baton: last_applied; etcd: the
    /// header revision of a serializable read).
    fn revision(&self, i: usize) -> impl Future<Output = Result<u64>>;
    /// Wait until a freshly started node `i` answers a local read at `rev` or later
    /// (Baton: stale ListRoles; etcd: serializable Range), polling every 5 ms.
    fn wait_serving(
        &self,
        i: usize,
        rev: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<()>>;

    /// Writers for the closed-loop workloads: 8 client connections (one per 32
    /// writers). Baton: `roles` roles running on a server `{name}-srv` held up by one
    /// session, toggled with SetRole; etcd: 256-byte puts over 10,000 keys, aimed at the
    /// leader.
    fn bulk_writer(
        &mut self,
        name: &str,
        roles: usize,
    ) -> impl Future<Output = Result<Self::Writer>>;
    /// One client with the system's usual retry policy, writing to `role` (Baton; etcd
    /// puts keys and moves to the next endpoint after 500 ms).
    fn single_writer(&self, role: &str) -> impl Future<Output = Result<Self::Writer>>;

    /// Agents on `servers`, each able to run every role of `roles` with `journal`'s role
    /// command; role `i` prefers `servers[i % len]` where the system lets it choose.
    /// Returns once every role has started and the other agents stand by.
    fn start_roles(
        &mut self,
        servers: &[&str],
        roles: &[&str],
        journal: &Journal,
    ) -> impl Future<Output = Result<()>>;
    /// SIGKILL the agent of `server` (its role processes die with it).
    fn kill_agent(&mut self, server: &str);
    /// Start the agent of `server` again and wait until it stands by.
    fn restart_agent(&mut self, server: &str) -> impl Future<Output = Result<()>>;

    /// The topic of the fan-out with `n` subscribers.
    fn topic(&mut self, n: usize) -> impl Future<Output = Result<Self::Topic>>;
    /// One subscriber on `ch`: counts `ready` once its stream is set up and reports
    /// every change `k` it receives to `arr` until the stream ends.
    fn subscribe(
        topic: Self::Topic,
        ch: Channel,
        arr: Arc<Arrivals>,
    ) -> impl Future<Output = ()> + Send + 'static;
    /// Publish change `k` of `topic` (returns once it is committed).
    fn publish(&self, topic: &Self::Topic, k: usize) -> impl Future<Output = Result<()>>;

    /// `n` idle sessions on node `at`, renewing every second (3 s lease), open when this
    /// returns. Baton: an agent session each (Hello, Renew), opened again when it ends;
    /// etcd: the recipe's per-agent state, a lease with a keep-alive stream plus a
    /// watch on the agent's key.
    fn idle_sessions(&self, at: usize, n: usize) -> impl Future<Output = Result<SessionGroup>>;
    /// `k` sessions on node `at`, each renewing again as soon as its previous renewal is
    /// acknowledged (`stats.acks` counts them). Baton: agent sessions; etcd: lease
    /// keep-alive streams.
    fn busy_sessions(&self, at: usize, k: usize) -> impl Future<Output = Result<SessionGroup>>;
}
