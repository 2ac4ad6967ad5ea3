//! One directory node: storage, Raft, gRPC server, Directory Manager, all started together
//! and stopped together.
//!
//! Shutdown follows mini-redis: a `watch` flips once to tell every task to stop; the
//! gRPC server drains, the Directory Manager stops the controller, and Raft shuts down
//! last, after which the sled files are flushed and closed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{Command, Entry, Outcome, State};
use baton_proto::v1::directory_client::DirectoryClient;
use baton_proto::v1::raft_client::RaftClient;
use baton_proto::v1::{AddNodeRequest, RaftPayload, WriteReply};
use baton_store::{Raft, TypeConfig};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, ServerState};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::auth::Caller;
use crate::config::NodeConfig;
use crate::directory_time::DirectoryTime;
use crate::env::{AppliedState, NodeEnv};
use crate::error::{self, DirectoryError};
use crate::faults::Faults;
use crate::liveness::Liveness;
use crate::manager::Manager;
use crate::network::Network;

/// HTTP/2 PING interval and answer deadline on node-to-node channels (see [`Node::channel`]).
const PEER_KEEPALIVE: Duration = Duration::from_secs(2);

/// The endpoint of a node-to-node channel (see [`Node::channel`]), not yet connected.
pub fn peer_endpoint(addr: &str) -> Result<Endpoint, Status> {
    Ok(Endpoint::from_shared(crate::http_uri(addr))
        .map_err(|e| error::unavailable(format!("bad node address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        // Renewal forwarding and confirmation rounds ride this channel. Without a
        // keepalive, a connection to a peer that went silent without a FIN or RST (host
        // gone, route blackholed, a middlebox dropping state) stays "up" until TCP's
        // retransmissions give up (minutes), and every call on it waits out its own
        // timeout. An HTTP/2 PING every 2 s, answered within 2 s, closes it, so the next
        // call reconnects. tests/keepalive.rs holds a connection silent to check this.
        .http2_keep_alive_interval(PEER_KEEPALIVE)
        .keep_alive_timeout(PEER_KEEPALIVE)
        .keep_alive_while_idle(true))
}

/// The state shared by every service and task of one node.
pub struct Node {
    pub id: u64,
    pub config: NodeConfig,
    pub raft: Raft,
    /// The applied state (read side) and its revision channel.
    pub sm: Arc<dyn AppliedState>,
    /// How this node connects to others and reads the wall clock.
    pub env: NodeEnv,
    /// The Directory Manager: leadership, membership, controller.
    pub manager: Manager,
    /// Every write of this node goes to Raft through it: concurrent writes share a log
    /// entry (group commit, see `crate::batcher`).
    batcher: crate::batcher::Batcher,
    /// The leader's liveness table and the confirmation round of renewals.
    pub liveness: Liveness,
    /// While this node leads: the monotonic time it measured for directory time.
    pub directory_time: DirectoryTime,
    /// Agent sessions attached to this node right now (shown in `cluster status`).
    pub sessions: AtomicU64,
    /// What `/metrics` serves (see `crate::metrics`).
    pub metrics: crate::metrics::Metrics,
    /// Whether the node is ready, as `crate::readiness::run` last found.
    pub readiness: crate::readiness::Readiness,
    /// The leader's address for clients (its `--advertise`), as (term, leader id,
    /// address), learnt from the leader's own status by the readiness check. With a
    /// separate peer port the membership holds only peer addresses, which clients cannot
    /// use; this is what a follower names when it tells a client where the leader is.
    leader_client_addr: Mutex<Option<(u64, u64, String)>>,
    /// Channels to other nodes by address, for forwarding; bounded by the membership.
    channels: Mutex<HashMap<String, Channel>>,
    /// Test-only link cuts between nodes.
    pub faults: Faults,
    /// Until when (ms on `origin`) writes are refused (UNAVAILABLE, clients retry)
    /// during a controlled leadership transfer, so the followers' logs and leader leases
    /// hold still. A deadline rather than a flag: the pause always ends.
    writes_paused_until_ms: std::sync::atomic::AtomicU64,
    /// Origin of `writes_paused_until_ms`.
    origin: tokio::time::Instant,
    /// Bumped by every change of the Raft timer switches: a scheduled "turn back on"
    /// applies only if nothing changed the switches since.
    switch_generation: Arc<std::sync::atomic::AtomicU64>,
    /// The sled store (for its identity records); `None` over a simulation's storage.
    pub store: Option<baton_store::LogStore>,
    /// The store held no Raft state when the node started.
    pub blank_at_start: bool,
    /// Whether Raft RPCs are served: not until the identity check with the peers passed
    /// (see `crate::identity`).
    raft_open: std::sync::atomic::AtomicBool,
    /// Set by the first `AppendEntries` accepted from a leader (see
    /// [`Node::listen_before_campaigning`]).
    heard_leader: watch::Sender<bool>,
    /// Why the node refused to go on, once it did.
    refusal: watch::Sender<Option<String>>,
    /// Every server's assignment set at the last revision an agent session read, shared
    /// by all the sessions that change woke (see `crate::session::SetsCache`).
    pub(crate) server_sets: crate::session::SetsCache,
}

/// The cluster's lease settings in force on this node (see [`Node::lease`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// What agents are told: they renew and fence on it.
    pub lease_ms: u64,
    /// Added to the expiry lease before a server is declared down.
    pub grace_ms: u64,
    /// What expiry decisions wait: at least `lease_ms` (longer right after a shortening).
    pub expiry_lease_ms: u64,
}

/// Wall-clock milliseconds since the Unix epoch, stamped on every proposed entry.
pub fn wall_ms() -> u64 {
    crate::env::system_wall_ms()
}

impl Node {
    /// Open storage and start Raft (without the gRPC server; see [`crate::server`]).
    pub async fn open(config: NodeConfig, faults: Faults) -> Result<Arc<Node>, DirectoryError> {
        Node::open_in(config, faults, NodeEnv::default()).await
    }

    /// [`Node::open`] with another environment (TLS channels to the other nodes).
    pub async fn open_in(
        config: NodeConfig,
        faults: Faults,
        env: NodeEnv,
    ) -> Result<Arc<Node>, DirectoryError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            DirectoryError::Config(format!(
                "cannot create data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        // Opening reads and verifies the whole store: blocking work, off the runtime.
        let dir = config.data_dir.clone();
        let (log, sm, verified) =
            tokio::task::spawn_blocking(move || baton_store::open_verified(&dir))
                .await
                .map_err(|e| DirectoryError::Config(format!("opening storage: {e}")))??;
        crate::identity::check_store(&config, &log, &verified).await?;
        let view = Arc::new(sm.clone());
        let store = Some((log.clone(), verified.is_blank()));
        Node::open_inner(config, faults, log, sm, view, env, store).await
    }

    /// Start Raft over the given storage, with the given environment (a simulation's
    /// in-memory store and network). [`Node::open`] is this with sled and production's
    /// environment. `view` must read the state that `sm` applies to.
    pub async fn open_with<LS, SM>(
        config: NodeConfig,
        faults: Faults,
        log: LS,
        sm: SM,
        view: Arc<dyn AppliedState>,
        env: NodeEnv,
    ) -> Result<Arc<Node>, DirectoryError>
    where
        LS: RaftLogStorage<TypeConfig>,
        SM: RaftStateMachine<TypeConfig>,
    {
        Node::open_inner(config, faults, log, sm, view, env, None).await
    }

    /// [`Node::open_with`], with the sled store's handle and whether it was blank.
    async fn open_inner<LS, SM>(
        config: NodeConfig,
        faults: Faults,
        log: LS,
        sm: SM,
        view: Arc<dyn AppliedState>,
        env: NodeEnv,
        store: Option<(baton_store::LogStore, bool)>,
    ) -> Result<Arc<Node>, DirectoryError>
    where
        LS: RaftLogStorage<TypeConfig>,
        SM: RaftStateMachine<TypeConfig>,
    {
        config.validate()?;
        let network = Network {
            id: config.id,
            connect_timeout: Duration::from_millis(500),
            faults: faults.clone(),
            connect: env.connect.clone(),
        };
        let raft_config = Arc::new(config.raft_config()?);
        // Elected again after a restart, never restored as leader (see `crate::elected`).
        let log = crate::elected::Elected::new(config.id, log);
        let raft = Raft::new(config.id, raft_config, network, log, sm)
            .await
            .map_err(|e| DirectoryError::Raft(e.to_string()))?;
        let manager = Manager::new(&config);
        #[allow(unused_mut)]
        let mut liveness = Liveness::new();
        #[cfg(feature = "planted-bugs")]
        liveness.plant(env.planted);
        let metrics = crate::metrics::Metrics::new();
        let batcher = crate::batcher::Batcher::start(
            raft.clone(),
            config.write_batch_max,
            metrics.entry_writes.clone(),
        );
        if let Some((s, _)) = &store {
            let appends = metrics.append_seconds.clone();
            s.stats()
                .observe_appends(move |took| appends.observe(took.as_secs_f64()));
        }
        Ok(Arc::new(Node {
            id: config.id,
            config,
            raft,
            sm: view,
            env,
            manager,
            batcher,
            liveness,
            directory_time: DirectoryTime::default(),
            sessions: AtomicU64::new(0),
            metrics,
            readiness: crate::readiness::Readiness::default(),
            leader_client_addr: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            faults,
            writes_paused_until_ms: std::sync::atomic::AtomicU64::new(0),
            origin: tokio::time::Instant::now(),
            switch_generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            raft_open: std::sync::atomic::AtomicBool::new(store.is_none()),
            heard_leader: watch::channel(false).0,
            refusal: watch::channel(None).0,
            server_sets: Default::default(),
            blank_at_start: store.as_ref().is_some_and(|(_, blank)| *blank),
            store: store.map(|(s, _)| s),
        }))
    }

    /// Form the cluster on first start: every initial member calls `initialize` with the
    /// same membership, which openraft allows, so start order does not matter. A node
    /// that already has state skips it. A joining node asks the cluster to add it.
    pub async fn bootstrap(self: &Arc<Self>) -> Result<(), DirectoryError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| DirectoryError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        if !self.config.peers.is_empty() {
            let members: BTreeMap<u64, BasicNode> = self
                .config
                .peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            match self.raft.initialize(members).await {
                Ok(()) => {}
                // Another member's initialize reached us first: the cluster exists.
                Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(DirectoryError::Raft(format!("initialize: {e}"))),
            }
            return Ok(());
        }
        if let Some(join) = &self.config.join {
            let this = self.clone();
            let join = join.clone();
            // Joining needs our gRPC server up (the leader will replicate to us), so it
            // runs in the background, retrying with a bounded backoff until it succeeds.
            tokio::spawn(async move {
                let mut backoff = Duration::from_millis(200);
                loop {
                    match this.ask_to_join(&join).await {
                        Ok(()) => {
                            tracing::info!(%join, "joined the cluster");
                            return;
                        }
                        Err(s) if error::reason(&s) == Some(crate::identity::OTHER_CLUSTER) => {
                            tracing::error!("join via {join} refused: {}", s.message());
                            return;
                        }
                        Err(e) => tracing::warn!("join via {join}: {}; retrying", e.message()),
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if this.manager.is_shutting_down() {
                        return;
                    }
                }
            });
        }
        Ok(())
    }

    async fn ask_to_join(&self, addr: &str) -> Result<(), Status> {
        let mut client = DirectoryClient::new(self.channel(addr)?);
        let reply = client
            .add_node(AddNodeRequest {
                id: self.id,
                address: self.config.peer_advertise.clone(),
                cluster_id: crate::identity::cluster_id(self).unwrap_or_default(),
            })
            .await?
            .into_inner();
        // Learn the cluster id from the node joined through, and keep it.
        if let Some(store) = &self.store
            && !reply.cluster_id.is_empty()
        {
            let stored = store
                .identity()
                .map_err(|e| Status::unavailable(e.to_string()))?;
            if stored.as_ref().is_none_or(|i| i.cluster_id.is_none()) {
                store
                    .save_identity(&baton_store::Identity {
                        node_id: self.id,
                        cluster_id: Some(reply.cluster_id.clone()),
                    })
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                tracing::info!(cluster = %reply.cluster_id, "cluster id learned on joining");
            }
        }
        Ok(())
    }

    /// Whether Raft RPCs are served yet (see `crate::identity`).
    pub fn raft_open(&self) -> bool {
        self.raft_open.load(Ordering::SeqCst)
    }

    /// Give up: log `reason`, stop serving, and let [`Node::refusal`] waiters know (the
    /// binary then exits non-zero).
    pub fn refuse(&self, reason: String) {
        tracing::error!("{reason}");
        self.refusal.send_replace(Some(reason));
        self.manager.shutdown();
    }

    /// Resolves with the reason once the node refused to go on.
    pub async fn refusal(&self) -> String {
        let mut rx = self.refusal.subscribe();
        match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    }

    /// Serve Raft RPCs from now on.
    pub fn open_raft(&self) {
        self.raft_open.store(true, Ordering::SeqCst);
    }

    /// Record that a leader's `AppendEntries` reached this node and was accepted.
    pub fn heard_from_leader(&self) {
        // Every accepted append calls this: a shared read, and the write only once.
        if !*self.heard_leader.borrow() {
            self.heard_leader.send_replace(true);
        }
    }

    /// How long a node that restarted with data waits to hear from the leader before it
    /// may campaign: two maximum election timeouts, plus a second for the leader's
    /// replication to come back to it (openraft waits 500 ms between attempts at a peer
    /// it could not reach, and the first append to a restarted node may time out while
    /// its connection is set up).
    pub fn listen_first_ms(&self) -> u64 {
        2 * self.config.election_timeout_max_ms + 1_000
    }

    /// A node that restarts with data listens before it campaigns: its election timer
    /// stays off (it was turned off before Raft started serving) until a leader's
    /// append reaches it, or [`Node::listen_first_ms`] passes without one.
    ///
    /// Why: a restarted node is unreachable to the leader while it restarts and checks
    /// its identity with its peers, so the leader's replication to it backs off (500 ms
    /// between attempts), and with 30 ms heartbeats the first append to it can time out
    /// while its connection is set up. Meanwhile its own election timer (100-200 ms)
    /// ran out: it campaigned with a log as long as the leader's and won, deposing a
    /// healthy leader (e2e tests that restart a follower saw it under load). openraft
    /// 0.9 has no pre-vote; this holds the effect for the case that costs most. A whole
    /// cluster restarting at once elects a leader that much later.
    pub async fn listen_before_campaigning(self: Arc<Self>) {
        let limit = Duration::from_millis(self.listen_first_ms());
        let generation = self.switch_generation.load(Ordering::SeqCst);
        let mut heard = self.heard_leader.subscribe();
        let in_time = tokio::time::timeout(limit, heard.wait_for(|h| *h))
            .await
            .is_ok();
        // A leadership transfer that switched the timers since decides them itself.
        if self.switch_generation.load(Ordering::SeqCst) == generation {
            self.raft.runtime_config().elect(true);
        }
        if !in_time {
            tracing::info!(
                "no leader reached this node within {limit:?} of its restart: it may campaign"
            );
        }
    }

    /// Turn the election timer off until [`Node::listen_before_campaigning`] turns it on.
    pub fn hold_elections(&self) {
        self.raft.runtime_config().elect(false);
    }

    /// A (cached, lazily connected) channel to another node.
    pub fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = (self.env.connect)(peer_endpoint(addr)?);
        // Bounded: addresses come from the membership, which is small; reset if it grows
        // beyond any sane cluster (a node re-added at many addresses).
        if channels.len() > 64 {
            channels.clear();
        }
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Wall-clock ms from this node's environment.
    pub fn wall_ms(&self) -> u64 {
        (self.env.wall_ms)()
    }

    /// The current leader as (id, address), if known.
    pub fn leader(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    /// The current leader's id and, where known, the address clients reach it at: the
    /// one it advertised in its status in this term, else its membership address when
    /// that is also its client address (no separate peer port). `None`: no leader known.
    pub fn leader_for_clients(&self) -> Option<(u64, Option<String>)> {
        // Borrowed, not cloned: every write's reply asks (see `DirectoryService::hinted`).
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let id = m.current_leader?;
        let learnt = self
            .leader_client_addr
            .lock()
            .expect("leader address lock")
            .clone()
            .filter(|(term, leader, _)| *term == m.current_term && *leader == id)
            .map(|(_, _, addr)| addr);
        let shared = error::HINT_LEADER_ADDRESS.load(std::sync::atomic::Ordering::Relaxed);
        let addr = learnt.or_else(|| {
            shared
                .then(|| {
                    m.membership_config
                        .membership()
                        .get_node(&id)
                        .map(|n| n.addr.clone())
                })
                .flatten()
        });
        Some((id, addr))
    }

    /// Record the client address the leader of `term` advertised (see
    /// [`Node::leader_for_clients`]).
    pub fn learn_leader_address(&self, term: u64, leader: u64, addr: String) {
        *self.leader_client_addr.lock().expect("leader address lock") = Some((term, leader, addr));
    }

    /// Resolves once this node no longer sees `from` as the leader (another leader, or
    /// none known), or when the Raft node is gone.
    pub async fn leader_changed(&self, from: Option<u64>) {
        let mut m = self.raft.metrics();
        let _ = m.wait_for(|m| m.current_leader != from).await;
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Refuse writes (UNAVAILABLE) for at most `limit` (a controlled leadership
    /// transfer); `None` resumes them. The pause ends by itself at the limit, so no
    /// path that forgets to resume (a cancelled handler) can leave writes paused.
    pub fn pause_writes(&self, limit: Option<Duration>) {
        let until = limit.map_or(0, |d| self.mono_ms() + d.as_millis() as u64);
        self.writes_paused_until_ms.store(until, Ordering::SeqCst);
    }

    /// Turn this node's election timer and heartbeats on or off. What is turned off
    /// comes back on by itself after `off_for` unless the switches change again first.
    pub fn switch_timers(&self, elect: Option<bool>, heartbeat: Option<bool>, off_for: Duration) {
        let generation = self.switch_generation.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(e) = elect {
            self.raft.runtime_config().elect(e);
        }
        if let Some(h) = heartbeat {
            self.raft.runtime_config().heartbeat(h);
        }
        if elect == Some(false) || heartbeat == Some(false) {
            let raft = self.raft.clone();
            let current = self.switch_generation.clone();
            tokio::spawn(async move {
                tokio::time::sleep(off_for).await;
                if current.load(Ordering::SeqCst) == generation {
                    tracing::warn!(
                        "timer switches still off after {off_for:?}: turning them back on"
                    );
                    raft.runtime_config().elect(true);
                    raft.runtime_config().heartbeat(true);
                }
            });
        }
    }

    fn writes_paused(&self) -> bool {
        self.mono_ms() < self.writes_paused_until_ms.load(Ordering::SeqCst)
    }

    fn mono_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Propose one command. On a follower the command is forwarded to the leader once
    /// (unless `forwarded`, in which case the client is told where the leader is).
    ///
    /// Every command is admitted like the public `Apply` admits it, here, before it takes
    /// a log entry: it must fit in one log entry (`baton_store::check_entry_size`) and
    /// pass `Command::validate`; otherwise it is refused (INVALID_ARGUMENT) and changes
    /// nothing. This covers agent sessions, the controller, and commands forwarded by a
    /// follower, which arrive through the Raft service's `propose`.
    ///
    /// A `ServersDown` naming more servers than one entry may hold
    /// ([`baton_core::SERVERS_DOWN_MAX`]; the controller can find more expired at once)
    /// is proposed as several entries, in order; the reply is the last one's. If one
    /// fails, the earlier ones stay applied, which is harmless: declaring a server down
    /// twice changes nothing the second time.
    pub async fn write(&self, cmd: Command, forwarded: bool) -> Result<WriteReply, Status> {
        self.write_as(cmd, "", forwarded, &Caller::Anyone).await
    }

    /// [`Node::write`] on behalf of `caller`, whom the entry records as its author (the
    /// audit trail) and a forward to the leader names.
    ///
    /// `request` is the client's id for the write ("" for none): a retry of a write that
    /// already committed returns the first outcome and changes nothing (see
    /// `baton_core::requests`). A `ServersDown` split into parts carries none (only the
    /// controller writes it, and the parts must not be taken for retries of each other).
    pub async fn write_as(
        &self,
        cmd: Command,
        request: &str,
        forwarded: bool,
        caller: &Caller,
    ) -> Result<WriteReply, Status> {
        if let Command::ServersDown { servers } = &cmd
            && servers.len() > baton_core::SERVERS_DOWN_MAX
        {
            let mut last = None;
            for part in servers.chunks(baton_core::SERVERS_DOWN_MAX) {
                let part = Command::ServersDown {
                    servers: part.to_vec(),
                };
                last = Some(self.write_entry(part, "", forwarded, caller).await?);
            }
            return Ok(last.expect("a long list has parts"));
        }
        self.write_entry(cmd, request, forwarded, caller).await
    }

    async fn write_entry(
        &self,
        cmd: Command,
        request: &str,
        forwarded: bool,
        caller: &Caller,
    ) -> Result<WriteReply, Status> {
        if self.writes_paused() {
            return Err(error::unavailable(
                "leadership is being transferred; retry in a moment",
            ));
        }
        let mut entry = Entry {
            by: caller.by(),
            request: request.to_string(),
            ..Entry::new(self.wall_ms(), cmd)
        };
        baton_core::check_request_id(request).map_err(error::invalid)?;
        // Size first: the bound of everything after it, validation included.
        let bytes =
            baton_store::check_entry_size(&entry).map_err(|e| error::invalid(e.to_string()))?;
        entry.cmd.validate().map_err(|r| error::refusal(&r))?;
        // Directory time, taken once the entry is admitted (a refused one carries none):
        // what this node measured as leader since its previous entry. On a follower it
        // is 0 and the leader it forwards to measures its own.
        if self.is_leader() {
            let term = self.raft.metrics().borrow().current_term;
            entry.advance_ms = self.directory_time.take(term);
        }
        if let Command::RegisterAgent {
            server,
            instance,
            replaces,
            ..
        } = &entry.cmd
        {
            // A registration counts as hearing from the agent: without this a server
            // that registers with a leader that has led for longer than a lease would
            // be declared down at once.
            self.liveness
                .touch(self, server, &instance.id, replaces.as_deref());
        }
        let proposed = std::time::Instant::now();
        let written = self.batcher.write(entry.clone(), bytes).await;
        if written.is_ok() {
            self.metrics
                .commit_seconds
                .observe(proposed.elapsed().as_secs_f64());
        }
        match written {
            Ok(committed) => match committed.result {
                Ok(Outcome { summary }) => Ok(WriteReply {
                    revision: committed.index,
                    summary,
                }),
                Err(r) => Err(error::refusal(&r)),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = f.leader_id.zip(f.leader_node.map(|n| n.addr));
                match leader {
                    Some((_, addr)) if !forwarded => {
                        let data = serde_json::to_vec(&entry.cmd)
                            .map_err(|e| Status::internal(format!("encoding a command: {e}")))?;
                        let mut client = RaftClient::new(self.channel(&addr)?);
                        let mut req = Request::new(RaftPayload { data });
                        req.set_timeout(Duration::from_secs(5));
                        if let Some(by) = caller.forward_value() {
                            req.metadata_mut().insert(crate::auth::BY_KEY, by);
                        }
                        if !request.is_empty() {
                            // Checked printable ASCII above, so always a valid value.
                            let value = request.parse().map_err(|_| {
                                error::invalid("request id is not a valid header value")
                            })?;
                            req.metadata_mut()
                                .insert(crate::raft_service::REQUEST_KEY, value);
                        }
                        client
                            .propose(req)
                            .await
                            .map(|r| r.into_inner())
                            .map_err(|s| {
                                // A refusal from the leader passes through as it is; a broken
                                // forward (the leader died meanwhile) is UNAVAILABLE, so the
                                // client retries. The write's outcome is then unknown.
                                if s.metadata().contains_key(baton_proto::REASON_KEY) {
                                    s
                                } else {
                                    error::unavailable(format!(
                                        "forwarding to the leader at {addr} failed: {}",
                                        s.message()
                                    ))
                                }
                            })
                    }
                    _ => Err(error::not_leader(self.leader_for_clients())),
                }
            }
            Err(RaftError::APIError(e)) => Err(error::unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => {
                Err(error::unavailable(format!("this node's Raft stopped: {e}")))
            }
        }
    }

    /// Wait until this node is confirmed leader by a quorum round that started now, and
    /// its state machine has applied up to the read index. Returns the read index.
    /// `Err(Some(leader))` when another node leads.
    pub async fn confirm_leadership(&self) -> Result<u64, Result<Option<(u64, String)>, Status>> {
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(Ok(f.leader_id.zip(f.leader_node.map(|n| n.addr))))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => Err(Err(
                error::unavailable(format!("the leader cannot reach a quorum: {q}")),
            )),
            Err(RaftError::Fatal(e)) => Err(Err(error::unavailable(format!(
                "this node's Raft stopped: {e}"
            )))),
        }
    }

    /// The cluster's lease settings: from the replicated state once set, this node's
    /// configured values before (a new cluster, until its first leader seeds them).
    pub fn lease(&self) -> Lease {
        let (lease_ms, grace_ms, expiry_lease_ms) =
            self.read(|s| (s.lease_ms, s.grace_ms, s.expiry_lease_ms));
        if lease_ms == 0 {
            return Lease {
                lease_ms: self.config.lease_ms,
                grace_ms: self.config.grace_ms,
                expiry_lease_ms: self.config.lease_ms,
            };
        }
        Lease {
            lease_ms,
            grace_ms,
            expiry_lease_ms: expiry_lease_ms.max(lease_ms),
        }
    }

    /// Read the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let state = self.sm.state();
        let guard = state.read().expect("state lock");
        f(&guard)
    }

    /// The last applied revision.
    pub fn revision(&self) -> u64 {
        *self.sm.subscribe().borrow()
    }

    /// Wait (bounded) until this node has applied at least `revision`.
    pub async fn wait_applied(&self, revision: u64, timeout: Duration) -> Result<(), Status> {
        let mut rx = self.sm.subscribe();
        let wait = rx.wait_for(|r| *r >= revision);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(error::unavailable("node is shutting down")),
            Err(_) => Err(error::unavailable(format!(
                "node {} has not applied revision {revision} within {timeout:?}",
                self.id
            ))),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sm.subscribe()
    }

    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Ids and addresses of all members (voters and learners), and which are voters.
    pub fn members(&self) -> (BTreeMap<u64, String>, BTreeSet<u64>) {
        let m = self.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        let nodes = mem.nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
        let voters = mem.voter_ids().collect();
        (nodes, voters)
    }
}
