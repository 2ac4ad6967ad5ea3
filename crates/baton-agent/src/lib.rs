//! # baton-agent: run a server's roles, and never one it may no longer hold
//!
//! One agent runs on every server. It holds one session with any directory node and
//! runs, as child processes, exactly the roles in the latest assignment set it received,
//! *while its lease is valid*.
//!
//! ## Lease and self-fencing (invariant 1)
//!
//! The agent renews every `lease/4`, stamping each renewal with its send time on
//! CLOCK_BOOTTIME. A renewal acknowledged by the directory proves that the leader saw it
//! and confirmed its leadership afterwards (see `baton-directory`'s manager). The agent
//! must have stopped every role by
//!
//! ```text
//!     t_send(last acknowledged renewal) + lease * (1 - rho)
//! ```
//!
//! so it *starts* stopping at that instant minus `stop_bound`, and `stop_bound` covers the
//! SIGTERM grace plus the SIGKILL. Derivation: clock rates are within `[1-rho, 1+rho]` of
//! real time. If the agent's clock runs slow, `lease*(1-rho)` on it is at most `lease` of
//! real time since `t_send`. The leader declares the server down only `lease + grace`
//! after it *received* that renewal (no earlier than `t_send`) on its own clock; if that
//! clock runs fast, that is still at least `(lease+grace)/(1+rho) >= lease` of real time
//! when `grace >= rho*lease` (which the directory enforces). So the old holder has
//! stopped before the directory can hand the role to anyone else. Reachability plays no
//! part: the agent fences itself whether or not it can talk to the directory.
//!
//! After a fence the agent runs roles again only once a new renewal is acknowledged. The
//! directory sends any assignment change committed before that acknowledgement ahead of
//! it on the same stream, so the agent never restarts a role that moved away meanwhile.
//!
//! ## Role health
//!
//! A role process that exits on its own is restarted with exponential backoff. After
//! `crash_limit` exits within `crash_window`, the agent stops trying that epoch and reports
//! the role failed; the directory quarantines (role, server) and moves the role on.

pub mod clock;
pub mod http;
pub mod process;
pub mod tree;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use baton_proto::v1 as pb;
use baton_proto::v1::agent_client::AgentClient;
use baton_proto::v1::agent_message::Msg as Out;
use baton_proto::v1::directory_message::Msg as In;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::clock::boot_ms;
use crate::process::{FenceWriter, Grace, RoleEnv, signal_group, spawn_role};
use crate::tree::{CgroupBase, RoleCgroup};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("bad agent configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Client(#[from] baton_client::ClientError),
    /// Another live agent instance holds this server name: this one ran nothing.
    #[error("{0}")]
    ServerHeld(String),
}

/// An agent's configuration. Defaults in [`AgentConfig::new`].
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// This server's name, as roles list it.
    pub server: String,
    /// Directory node addresses; the session goes to any of them.
    pub directory: Vec<String>,
    /// kind -> shell command. The kinds are advertised: only roles of these kinds are
    /// placed here.
    pub runs: BTreeMap<String, String>,
    /// This server also hosts a directory node.
    pub main: bool,
    /// The lease assumed until the directory states its own in the first ack.
    pub lease_ms: u64,
    /// Bound on clock-rate error, parts per million (must match the directory's).
    pub rho_ppm: u64,
    /// SIGTERM-to-SIGKILL grace for a graceful handover (drain, failback, move).
    pub handover_grace: Duration,
    /// Crashes within `crash_window` after which the role is reported failed here.
    pub crash_limit: u32,
    pub crash_window: Duration,
    /// Restart backoff after a crash: from `restart_backoff_min`, doubling, capped.
    pub restart_backoff_min: Duration,
    pub restart_backoff_max: Duration,
    /// The `baton` executable, which provides the `role-exec` wrapper.
    pub exe: PathBuf,
    /// Put each role process in a cgroup v2 of its own where the hierarchy is writable
    /// (see the `tree` module): then nothing a role starts can outlive it, even a process
    /// that leaves its process group. Off, or where no cgroup can be made, the process
    /// group is all the agent tracks.
    pub cgroups: bool,
    /// Mutual TLS with the directory (the binary's default), or plain text.
    pub security: baton_tls::Security,
    /// Serve `/healthz` and `/metrics` here, in plain HTTP (see [`http`]); `None`: off.
    pub http: Option<std::net::SocketAddr>,
}

/// How often the agent looks at its certificate files for a rotation (SIGHUP: at once).
pub const TLS_RELOAD_EVERY: Duration = Duration::from_secs(2);

impl AgentConfig {
    pub fn new(server: String, directory: Vec<String>, runs: BTreeMap<String, String>) -> Self {
        AgentConfig {
            server,
            directory,
            runs,
            main: false,
            lease_ms: 3_000,
            rho_ppm: 10_000,
            handover_grace: Duration::from_secs(5),
            crash_limit: 3,
            crash_window: Duration::from_secs(30),
            restart_backoff_min: Duration::from_millis(200),
            restart_backoff_max: Duration::from_secs(5),
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("baton")),
            cgroups: true,
            security: baton_tls::Security::Insecure,
            http: None,
        }
    }

    pub fn validate(&self) -> Result<(), AgentError> {
        baton_core::names::check_name("server", &self.server)
            .map_err(|r| AgentError::Config(r.message))?;
        if self.directory.is_empty() {
            return Err(AgentError::Config("no directory address given".into()));
        }
        if let Some(id) = self.security.identity()
            && id.server.as_deref() != Some(self.server.as_str())
        {
            return Err(AgentError::Config(format!(
                "the certificate is for {id}, not for server {:?}; issue one with `baton cert issue agent --server {}`",
                self.server, self.server
            )));
        }
        if self.runs.is_empty() {
            return Err(AgentError::Config(
                "no role kinds given: pass --run KIND=COMMAND at least once".into(),
            ));
        }
        for (kind, cmd) in &self.runs {
            baton_core::names::check_name("kind", kind)
                .map_err(|r| AgentError::Config(r.message))?;
            if cmd.trim().is_empty() {
                return Err(AgentError::Config(format!(
                    "kind {kind:?} has an empty command"
                )));
            }
        }
        if self.crash_limit == 0 {
            return Err(AgentError::Config("crash limit must be at least 1".into()));
        }
        Ok(())
    }
}

/// The fencing arithmetic, kept apart so it can be tested on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    pub lease_ms: u64,
    pub rho_ppm: u64,
}

impl Fence {
    /// Time reserved to stop every role: the SIGTERM grace plus the SIGKILL and reaping.
    /// A quarter of the lease, at most 500 ms: longer would only shorten the time the
    /// agent can ride out a leader election without stopping its roles.
    pub fn stop_bound_ms(&self) -> u64 {
        (self.lease_ms / 4).min(500)
    }

    /// How often to renew: four times per lease, so the last acknowledged renewal is
    /// never more than a quarter of a lease old when the directory goes quiet.
    pub fn renew_every_ms(&self) -> u64 {
        self.lease_ms / 4
    }

    /// The SIGTERM grace used when fencing (and by the wrapper when the agent dies).
    pub fn fence_grace_ms(&self) -> u64 {
        self.stop_bound_ms() * 4 / 5
    }

    /// When to start stopping every role, given the send time of the last acknowledged
    /// renewal (CLOCK_BOOTTIME ms).
    pub fn stop_at_ms(&self, t_send_ms: u64) -> u64 {
        let usable = self.lease_ms - self.lease_ms * self.rho_ppm / 1_000_000;
        (t_send_ms + usable).saturating_sub(self.stop_bound_ms())
    }
}

/// One role process this agent is responsible for.
struct RoleProc {
    epoch: u64,
    /// The wrapper's pid (= process group id) while a process exists.
    pgid: Option<u32>,
    phase: Phase,
    /// Exit times of recent crashes (boot ms), for the crash limit.
    crashes: VecDeque<u64>,
    /// Tells the process's wrapper each new fence time (its dead-man switch).
    fence: Option<FenceWriter>,
    /// The process's cgroup, where the agent made one (see the `tree` module).
    cgroup: Option<RoleCgroup>,
}

#[derive(Debug)]
enum Phase {
    Running,
    /// Told to stop; SIGKILL to the group at `kill_at` (boot ms).
    Stopping {
        kill_at: u64,
    },
    /// Crashed; restart at `restart_at` (boot ms).
    Backoff {
        restart_at: u64,
    },
    /// Crashed too often (or cannot run here); reported, with this reason, until the
    /// directory moves the role; not restarted for this epoch.
    Failed {
        reason: String,
    },
}

/// Events from per-process waiter tasks.
struct Exit {
    role: String,
    pgid: u32,
    status: String,
    /// The wrapper stopped the role because the fence time passed.
    fenced: bool,
}

/// A live session: where to send, what arrives.
struct Session {
    node: String,
    tx: mpsc::Sender<pb::AgentMessage>,
    rx: tonic::Streaming<pb::DirectoryMessage>,
}

/// Run the agent until `shutdown` resolves; then stop every role gracefully.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    config.validate()?;
    // A connect attempt is bounded by a quarter lease: one round of attempts must leave
    // most of the lease for opening the session and renewing.
    let client_config = baton_client::ClientConfig {
        connect_timeout: Duration::from_millis((config.lease_ms / 4).clamp(50, 1_000)),
        security: config.security.clone(),
        ..Default::default()
    };
    match &config.security {
        baton_tls::Security::Tls(tls) => tls.spawn_reloader(TLS_RELOAD_EVERY),
        baton_tls::Security::Insecure => tracing::warn!(
            "TLS is OFF (--insecure): anyone on the network can pose as the directory to this agent"
        ),
    }
    let client = baton_client::Client::with_config(config.directory.clone(), client_config)?;
    let mut agent = Agent::new(config);
    let _http = match agent.config.http {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| AgentError::Config(format!("cannot listen on {addr}: {e}")))?;
            tracing::info!(%addr, "agent metrics and health served (plain HTTP)");
            Some(AbortOnDrop(http::spawn(listener, agent.metrics.clone())))
        }
        None => None,
    };
    if agent.config.cgroups {
        match CgroupBase::make(&agent.config.server) {
            Ok(base) => {
                tracing::info!(cgroup = %base.dir().display(), "each role process runs in a cgroup of its own");
                agent.cgroups = Some(base);
            }
            Err(why) => tracing::info!(
                "role processes are tracked by process group only ({why}): a process that leaves its role's group (setsid) is not stopped with the role"
            ),
        }
    }
    tokio::pin!(shutdown);
    let (exit_tx, mut exit_rx) = mpsc::channel::<Exit>(256);
    let (conn_tx, mut conn_rx) = mpsc::channel::<Result<Session, String>>(1);
    let mut session: Option<Session> = None;
    // The node of a session abandoned for want of acknowledgements: the next session goes
    // elsewhere when another node answers.
    let mut avoid: Option<String> = None;
    let mut connecting = false;
    let mut reconnect_at = 0u64;
    let mut renew = tokio::time::interval(Duration::from_millis(agent.fence.renew_every_ms()));
    // Set when the directory refused this instance the server name: stop and exit.
    let mut held: Option<String> = None;
    tracing::info!(server = %agent.config.server, instance = %agent.instance, "agent starting");
    let mut check = tokio::time::interval(Duration::from_millis(20));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    loop {
        if session.is_none() && !connecting && boot_ms() >= reconnect_at {
            connecting = true;
            let hello = agent.hello();
            let client = client.clone();
            let tx = conn_tx.clone();
            let avoid = avoid.clone();
            // A node that takes longer than this to open a session is as good as dead.
            let open_timeout = Duration::from_millis(agent.fence.lease_ms / 2);
            tokio::spawn(async move {
                let _ = tx
                    .send(connect(&client, hello, avoid, open_timeout).await)
                    .await;
            });
        }
        tokio::select! {
            _ = &mut shutdown => break,
            c = conn_rx.recv() => {
                connecting = false;
                match c {
                    Some(Ok(s)) => {
                        tracing::info!(node = %s.node, "session open");
                        agent.on_session_open();
                        session = Some(s);
                        renew.reset_immediately();
                    }
                    Some(Err(e)) => {
                        tracing::warn!("no session: {e}");
                        reconnect_at = boot_ms() + 200;
                    }
                    None => {}
                }
            }
            msg = async {
                match session.as_mut() {
                    Some(s) => s.rx.message().await,
                    None => std::future::pending().await,
                }
            } => match msg {
                Ok(Some(m)) => agent.on_message(m),
                Err(e) if baton_proto::is_server_held(&e) => {
                    tracing::error!("{}; this agent runs nothing and exits", e.message());
                    held = Some(e.message().to_string());
                    break;
                }
                Ok(None) | Err(_) => {
                    let why = match msg { Err(e) => e.message().to_string(), _ => "closed".into() };
                    tracing::warn!("session lost ({why}); reconnecting");
                    session = None;
                    reconnect_at = boot_ms() + 100;
                }
            },
            _ = renew.tick() => {
                if let Some(s) = &session {
                    let seq = agent.next_renewal();
                    let m = pb::AgentMessage { msg: Some(Out::Renew(pb::Renew { seq })) };
                    if s.tx.try_send(m).is_err() {
                        tracing::debug!("renewal not sent: session queue full or closed");
                    }
                }
            }
            e = exit_rx.recv() => if let Some(e) = e { agent.on_exit(e) },
            _ = check.tick() => {
                // A session whose node stopped answering (frozen, cut off from the
                // leader) is abandoned well before the lease runs out, so the agent can
                // renew through another node.
                if session.is_some() && agent.ack_overdue() {
                    tracing::warn!("no renewal acknowledged for a third of a lease; trying another node");
                    // Not back to the same node (it may be cut off from the leader).
                    avoid = session.take().map(|s| s.node);
                    reconnect_at = boot_ms();
                }
                // While renewals go unanswered (an election, a node that lost the leader),
                // renew every RETRY_MS rather than every quarter lease, so the first
                // renewal the new leader can confirm is sent right away.
                if let Some(s) = &session
                    && agent.renewal_unanswered()
                {
                    let seq = agent.next_renewal();
                    let m = pb::AgentMessage { msg: Some(Out::Renew(pb::Renew { seq })) };
                    let _ = s.tx.try_send(m);
                }
            }
        }
        // The directory states its lease with every set and ack: renew on its schedule.
        let period = Duration::from_millis(agent.fence.renew_every_ms());
        if renew.period() != period {
            renew = tokio::time::interval(period);
        }
        agent.reconcile(&exit_tx);
        agent.publish(session.is_some());
        if let Some(s) = &session {
            for m in agent.outbox.drain(..) {
                let _ = s.tx.try_send(m);
            }
        } else {
            agent.outbox.clear();
        }
    }
    // Graceful shutdown: stop every role, wait (bounded) for them to exit.
    tracing::info!("agent stopping: stopping every role");
    agent.desired.clear();
    agent.releasing.clear();
    agent.reconcile(&exit_tx);
    let deadline = boot_ms() + agent.config.handover_grace.as_millis() as u64 + 1_000;
    while agent.roles.values().any(|p| p.pgid.is_some()) && boot_ms() < deadline {
        tokio::select! {
            e = exit_rx.recv() => if let Some(e) = e { agent.on_exit(e) },
            _ = check.tick() => {}
        }
        agent.reconcile(&exit_tx);
    }
    // Every role has stopped: tell the directory, so the roles move now rather than after
    // lease + grace. Best effort, bounded: if it does not arrive, the lease does the job.
    if let Some(mut s) = session
        && held.is_none()
        && agent.roles.values().all(|p| p.pgid.is_none())
    {
        let leaving = pb::AgentMessage {
            msg: Some(Out::Leaving(pb::Leaving {})),
        };
        if s.tx.send(leaving).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(Some(_)) = s.rx.message().await {}
            })
            .await;
            tracing::info!("told the directory this server is leaving");
        }
    }
    if let Some(base) = &agent.cgroups {
        base.remove();
    }
    match held {
        Some(why) => Err(AgentError::ServerHeld(why)),
        None => Ok(()),
    }
}

/// A random id for this agent start (128 bits from the kernel, in hex). Falls back to
/// the pid and boot time if getrandom fails, which only weakens uniqueness across hosts.
fn new_instance_id() -> String {
    let mut buf = [0u8; 16];
    // SAFETY: writing at most 16 bytes into a 16-byte buffer.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return format!("{:x}-{:x}", std::process::id(), boot_ms());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn role_failed(role: &str, epoch: u64, reason: String) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(Out::RoleFailed(pb::RoleFailed {
            role: role.to_string(),
            epoch,
            reason,
        })),
    }
}

/// Waits until no process of a role whose wrapper has exited is left, killing what is.
/// Unbounded on purpose: a process that survives SIGKILL (stuck in the kernel) still
/// holds whatever the role holds, so the role must not count as stopped; it is logged.
async fn wait_role_gone(role: &str, pgid: u32, cgroup: Option<&RoleCgroup>) {
    let started = boot_ms();
    let mut warned = false;
    loop {
        let left = tree::remaining(pgid, cgroup, 0);
        if left.is_empty() {
            if let Some(cg) = cgroup {
                cg.remove();
            }
            return;
        }
        if let Some(cg) = cgroup {
            cg.kill_all();
        }
        signal_group(pgid, libc::SIGKILL);
        tree::kill_remaining(pgid, cgroup, 0);
        if !warned && boot_ms().saturating_sub(started) > 1_000 {
            warned = true;
            tracing::error!(role, pids = ?left, "processes of a stopped role survive SIGKILL; the role counts as running until they are gone");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn connect(
    client: &baton_client::Client,
    hello: pb::Hello,
    avoid: Option<String>,
    open_timeout: Duration,
) -> Result<Session, String> {
    // Races every node (the avoided one only if no other answers): a dead or cut-off
    // node must not eat the lease this agent has left to reach the new leader.
    let picked = client
        .channel_avoiding(avoid.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let (node, channel) = picked;
    let (tx, rx) = mpsc::channel(64);
    tx.send(pb::AgentMessage {
        msg: Some(Out::Hello(hello)),
    })
    .await
    .map_err(|_| "session queue closed".to_string())?;
    let mut c = AgentClient::new(channel);
    let reply = tokio::time::timeout(open_timeout, c.session(ReceiverStream::new(rx)))
        .await
        .map_err(|_| format!("node {node} did not open a session within {open_timeout:?}"))?
        .map_err(|s| format!("node {node}: {}", s.message()))?;
    Ok(Session {
        node,
        tx,
        rx: reply.into_inner(),
    })
}

/// Aborts a task when dropped (the agent's HTTP server ends with the agent).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The agent's state machine: everything but the I/O loop.
struct Agent {
    /// What the `--http` port serves (counted whether or not it is served).
    metrics: std::sync::Arc<http::AgentMetrics>,
    /// When the last renewal was acknowledged (boot ms).
    last_ack_ms: Option<u64>,
    config: AgentConfig,
    /// This agent start's identity (see `Hello.instance`).
    instance: String,
    /// When the last "waiting for the holder's lease" was logged (boot ms).
    waiting_logged_ms: u64,
    fence: Fence,
    /// Highest directory revision seen: sent in Hello so no node serves an older view.
    revision: u64,
    /// role -> assignment, from the latest set.
    desired: BTreeMap<String, pb::Assignment>,
    /// role -> epoch the directory asked us to release.
    releasing: BTreeMap<String, u64>,
    /// (role, epoch) releases reported while the directory still lists them.
    released_sent: BTreeSet<(String, u64)>,
    /// Report pending releases and failures again at the next step (set by an ack and by
    /// a new session).
    resend_reports: bool,
    roles: BTreeMap<String, RoleProc>,
    /// Renewal seq -> send time (boot ms), for the ones not acknowledged yet.
    sent: BTreeMap<u64, u64>,
    next_seq: u64,
    /// When to start stopping every role; 0 = no valid lease.
    stop_at: u64,
    /// When the current session opened or last acknowledged a renewal (boot ms).
    last_ack_or_open: u64,
    /// Messages for the directory, sent after each step.
    outbox: Vec<pb::AgentMessage>,
    /// Where role cgroups are made, if they can be.
    cgroups: Option<CgroupBase>,
}

/// Leases the agent accepts from the directory: the directory's own bounds. A lease
/// outside them is refused, so no value received can overflow the fence arithmetic or
/// push the fence time out of reach.
pub const LEASE_MS_RANGE: std::ops::RangeInclusive<u64> = 500..=3_600_000;

/// How often to renew while renewals go unanswered.
const RENEW_RETRY_MS: u64 = 100;

/// Renewals remembered while unacknowledged; older ones cannot extend the lease further
/// than newer ones, so dropping them is harmless.
const RENEWALS_TRACKED_MAX: usize = 64;

impl Agent {
    fn new(config: AgentConfig) -> Self {
        let fence = Fence {
            lease_ms: config.lease_ms,
            rho_ppm: config.rho_ppm,
        };
        Agent {
            metrics: Default::default(),
            last_ack_ms: None,
            config,
            instance: new_instance_id(),
            waiting_logged_ms: 0,
            fence,
            revision: 0,
            desired: BTreeMap::new(),
            releasing: BTreeMap::new(),
            released_sent: BTreeSet::new(),
            resend_reports: false,
            roles: BTreeMap::new(),
            sent: BTreeMap::new(),
            next_seq: 1,
            stop_at: 0,
            last_ack_or_open: 0,
            outbox: Vec::new(),
            cgroups: None,
        }
    }

    /// Publish what the `--http` port shows.
    fn publish(&self, session: bool) {
        let roles = self
            .roles
            .iter()
            .map(|(r, p)| {
                let state = match p.phase {
                    Phase::Running => "running",
                    Phase::Stopping { .. } => "stopping",
                    Phase::Backoff { .. } => "backoff",
                    Phase::Failed { .. } => "failed",
                };
                (r.clone(), state)
            })
            .collect();
        self.metrics.publish(http::View {
            roles,
            last_ack_ms: self.last_ack_ms,
            stop_at_ms: self.stop_at,
            session,
        });
    }

    fn hello(&self) -> pb::Hello {
        pb::Hello {
            server: self.config.server.clone(),
            kinds: self.config.runs.keys().cloned().collect(),
            main: self.config.main,
            min_revision: self.revision,
            instance: self.instance.clone(),
        }
    }

    fn next_renewal(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sent.insert(seq, boot_ms());
        while self.sent.len() > RENEWALS_TRACKED_MAX {
            self.sent.pop_first();
        }
        seq
    }

    /// A new session: report pending releases and failed roles again (what was sent on
    /// the old session may have been lost with it).
    fn on_session_open(&mut self) {
        self.last_ack_or_open = boot_ms();
        self.resend_reports = true;
    }

    /// The newest renewal is unacknowledged and was sent at least `RENEW_RETRY_MS` ago.
    fn renewal_unanswered(&self) -> bool {
        self.sent
            .last_key_value()
            .is_some_and(|(_, sent)| boot_ms().saturating_sub(*sent) >= RENEW_RETRY_MS)
    }

    fn ack_overdue(&self) -> bool {
        // A third of a lease: renewals go out every quarter lease and are answered within
        // milliseconds, so this is several missed answers; what is left of the lease
        // (at least half of it) is for attaching elsewhere and renewing before the
        // roles must stop.
        boot_ms().saturating_sub(self.last_ack_or_open) > self.fence.lease_ms / 3
    }

    fn lease_valid(&self) -> bool {
        boot_ms() < self.stop_at
    }

    /// Take the lease the directory states, if it is within [`LEASE_MS_RANGE`]. Anything
    /// else (0 from an older node, or a value so large that the fence time would overflow
    /// or never come) is ignored with a warning, and the lease in force stays.
    fn adopt_lease(&mut self, lease_ms: u64) {
        if lease_ms == self.fence.lease_ms || lease_ms == 0 {
            return;
        }
        if LEASE_MS_RANGE.contains(&lease_ms) {
            self.fence.lease_ms = lease_ms;
        } else {
            tracing::warn!(
                lease_ms,
                "ignoring a lease outside {}..={} ms from the directory",
                LEASE_MS_RANGE.start(),
                LEASE_MS_RANGE.end()
            );
        }
    }

    fn on_message(&mut self, m: pb::DirectoryMessage) {
        match m.msg {
            Some(In::Assignments(set)) => {
                if set.revision < self.revision {
                    // Invariant 5: never step back to an older view.
                    tracing::warn!(
                        got = set.revision,
                        seen = self.revision,
                        "ignoring an older assignment set"
                    );
                    return;
                }
                self.revision = set.revision;
                self.adopt_lease(set.lease_ms);
                self.desired = set
                    .assignments
                    .into_iter()
                    .map(|a| (a.role.clone(), a))
                    .collect();
                self.releasing = set
                    .releasing
                    .into_iter()
                    .map(|a| (a.role, a.epoch))
                    .collect();
            }
            Some(In::RenewAck(ack)) => {
                self.adopt_lease(ack.lease_ms);
                self.last_ack_or_open = boot_ms();
                self.last_ack_ms = Some(self.last_ack_or_open);
                // Whatever the set sent ahead of this ack still shows pending was not
                // committed (yet): report it again.
                self.resend_reports = true;
                if let Some(t_send) = self.sent.get(&ack.seq).copied() {
                    let before = self.stop_at;
                    self.stop_at = self.stop_at.max(self.fence.stop_at_ms(t_send));
                    self.sent.retain(|s, _| *s > ack.seq);
                    if self.stop_at > before {
                        for p in self.roles.values() {
                            if let Some(f) = &p.fence {
                                f.extend(self.stop_at);
                            }
                        }
                    }
                }
            }
            Some(In::Waiting(w)) => {
                // The node is alive and working on our claim: stay on this session.
                self.last_ack_or_open = boot_ms();
                if boot_ms().saturating_sub(self.waiting_logged_ms) >= 5_000 {
                    self.waiting_logged_ms = boot_ms();
                    tracing::warn!(
                        holder = %w.holder_instance,
                        from = %w.holder_address,
                        since_ms = w.holder_since_ms,
                        "server name held by another agent instance: waiting for its lease to run out (a restart) or for it to prove alive (then this agent exits)"
                    );
                }
            }
            None => {}
        }
    }

    fn on_exit(&mut self, e: Exit) {
        let now = boot_ms();
        let Some(p) = self.roles.get_mut(&e.role) else {
            return;
        };
        if p.pgid != Some(e.pgid) {
            return; // an older process of this role
        }
        p.pgid = None;
        // A process that ended because the lease ran out was fenced, not crashed: it
        // must not count toward the crash limit (that would quarantine a healthy role).
        let fenced = e.fenced || now >= self.stop_at;
        if fenced && matches!(p.phase, Phase::Running) {
            tracing::warn!(role = %e.role, epoch = p.epoch, "role fenced: lease ran out ({})", e.status);
            self.metrics.fences.inc();
            self.roles.remove(&e.role);
            return;
        }
        match p.phase {
            Phase::Stopping { .. } => {
                tracing::info!(role = %e.role, epoch = p.epoch, "role stopped ({})", e.status);
                self.roles.remove(&e.role);
            }
            Phase::Running => {
                p.crashes.push_back(now);
                let window = self.config.crash_window.as_millis() as u64;
                while p
                    .crashes
                    .front()
                    .is_some_and(|t| now.saturating_sub(*t) > window)
                {
                    p.crashes.pop_front();
                }
                let n = p.crashes.len() as u32;
                if n >= self.config.crash_limit {
                    tracing::warn!(role = %e.role, epoch = p.epoch, "role failed {n} times; reporting");
                    let reason = format!(
                        "exited {n} times within {:?} on {} (last: {})",
                        self.config.crash_window, self.config.server, e.status
                    );
                    self.outbox
                        .push(role_failed(&e.role, p.epoch, reason.clone()));
                    p.phase = Phase::Failed { reason };
                } else {
                    let backoff = self
                        .config
                        .restart_backoff_min
                        .saturating_mul(1 << (n - 1).min(16))
                        .min(self.config.restart_backoff_max);
                    tracing::warn!(role = %e.role, "role exited ({}); restarting in {backoff:?}", e.status);
                    self.metrics.restarts.inc();
                    p.phase = Phase::Backoff {
                        restart_at: now + backoff.as_millis() as u64,
                    };
                }
            }
            Phase::Backoff { .. } | Phase::Failed { .. } => {}
        }
    }

    /// Bring the processes in line with (lease, desired set). Called after every event.
    fn reconcile(&mut self, exits: &mpsc::Sender<Exit>) {
        let now = boot_ms();
        let valid = self.lease_valid();
        // When fencing, the grace counts from the fence time, not from when the agent
        // noticed it: an agent that was frozen or suspended past it kills at once.
        let fence_kill_at = self.stop_at.saturating_add(self.fence.fence_grace_ms());
        // 1. Stop what must not run.
        let mut forget = Vec::new();
        for (role, p) in self.roles.iter_mut() {
            let wanted = valid && self.desired.get(role).is_some_and(|a| a.epoch == p.epoch);
            if matches!(p.phase, Phase::Running) && !wanted {
                let kill_at = if valid {
                    now + self.config.handover_grace.as_millis() as u64
                } else {
                    tracing::warn!(role, epoch = p.epoch, "lease ran out: fencing");
                    self.metrics.fences.inc();
                    fence_kill_at
                };
                if let Some(pgid) = p.pgid {
                    signal_group(pgid, libc::SIGTERM);
                }
                p.phase = Phase::Stopping { kill_at };
            }
            match p.phase {
                Phase::Stopping { ref mut kill_at } => {
                    if !valid {
                        *kill_at = (*kill_at).min(fence_kill_at);
                    }
                    if now >= *kill_at
                        && let Some(pgid) = p.pgid
                    {
                        // The whole role: its cgroup at once, its group, and whatever
                        // of it is left by pid. The waiter reports the exit only once
                        // nothing of it is left.
                        if let Some(cg) = &p.cgroup {
                            cg.kill_all();
                        }
                        signal_group(pgid, libc::SIGKILL);
                    }
                }
                Phase::Backoff { .. } | Phase::Failed { .. } if !wanted => {
                    forget.push(role.clone())
                }
                _ => {}
            }
        }
        for r in forget {
            self.roles.remove(&r);
        }
        // 2. Report what the directory waits for until it has committed it: releases of
        //    roles of which nothing runs here any more, and roles that failed here. Each
        //    is sent when it becomes due, and again after every acknowledged renewal (and
        //    on a new session) while the latest set still shows it pending: the set sent
        //    ahead of an ack reflects every change committed before that ack, so a report
        //    lost in an election or a leader transfer is sent again, and one that was
        //    committed is not. The directory applies duplicates as no-ops.
        let resend = std::mem::take(&mut self.resend_reports);
        let releasing = &self.releasing;
        self.released_sent
            .retain(|(role, epoch)| releasing.get(role) == Some(epoch));
        for (role, epoch) in &self.releasing {
            let running = self.roles.get(role).is_some_and(|p| p.pgid.is_some());
            if !running && (self.released_sent.insert((role.clone(), *epoch)) || resend) {
                self.outbox.push(pb::AgentMessage {
                    msg: Some(Out::Released(pb::Released {
                        role: role.clone(),
                        epoch: *epoch,
                    })),
                });
            }
        }
        if resend {
            for (role, p) in &self.roles {
                if let Phase::Failed { reason } = &p.phase
                    && self.desired.get(role).is_some_and(|a| a.epoch == p.epoch)
                {
                    self.outbox.push(role_failed(role, p.epoch, reason.clone()));
                }
            }
        }
        if !valid {
            return;
        }
        // 3. Start (or restart after backoff) what must run.
        let to_start: Vec<pb::Assignment> = self
            .desired
            .values()
            .filter(|a| match self.roles.get(&a.role) {
                None => true,
                Some(p) => matches!(p.phase, Phase::Backoff { restart_at } if restart_at <= now && p.epoch == a.epoch),
            })
            .cloned()
            .collect();
        for a in to_start {
            self.start(a, exits);
        }
    }

    fn start(&mut self, a: pb::Assignment, exits: &mpsc::Sender<Exit>) {
        let Some(command) = self.config.runs.get(&a.kind).cloned() else {
            // Placement only sends kinds we advertise; a mismatch means the config
            // changed under a running session. Report, do not run.
            let reason = format!(
                "server {} has no command for kind {}",
                self.config.server, a.kind
            );
            self.outbox
                .push(role_failed(&a.role, a.epoch, reason.clone()));
            self.roles.insert(
                a.role.clone(),
                RoleProc {
                    epoch: a.epoch,
                    pgid: None,
                    phase: Phase::Failed { reason },
                    crashes: VecDeque::new(),
                    fence: None,
                    cgroup: None,
                },
            );
            return;
        };
        let env = RoleEnv {
            role: a.role.clone(),
            epoch: a.epoch,
            server: self.config.server.clone(),
            database: a.database.clone(),
        };
        let grace = Grace {
            fence: Duration::from_millis(self.fence.fence_grace_ms()),
            handover: self.config.handover_grace,
        };
        let crashes = self
            .roles
            .remove(&a.role)
            .map(|p| p.crashes)
            .unwrap_or_default();
        let cgroup = self.cgroups.as_mut().and_then(|base| {
            base.make_role(&a.role, a.epoch)
                .inspect_err(|e| tracing::warn!(role = %a.role, "no cgroup for this process: {e}"))
                .ok()
        });
        match spawn_role(
            &self.config.exe,
            &command,
            &env,
            grace,
            self.stop_at,
            cgroup.as_ref(),
        ) {
            Ok((mut child, fence)) => {
                let pgid = child.id().unwrap_or(0);
                tracing::info!(role = %a.role, epoch = a.epoch, pid = pgid, "role started");
                self.roles.insert(
                    a.role.clone(),
                    RoleProc {
                        epoch: a.epoch,
                        pgid: Some(pgid),
                        phase: Phase::Running,
                        crashes,
                        fence: Some(fence),
                        cgroup: cgroup.clone(),
                    },
                );
                let exits = exits.clone();
                let role = a.role;
                tokio::spawn(async move {
                    let (status, fenced) = match child.wait().await {
                        Ok(s) => (s.to_string(), s.code() == Some(process::FENCED_EXIT)),
                        Err(e) => (format!("wait failed: {e}"), false),
                    };
                    // The wrapper leaves nothing behind when it exits by itself; when it
                    // was killed, what is left of the role is killed now. Either way the
                    // role counts as stopped only once nothing of it is left.
                    wait_role_gone(&role, pgid, cgroup.as_ref()).await;
                    let _ = exits
                        .send(Exit {
                            role,
                            pgid,
                            status,
                            fenced,
                        })
                        .await;
                });
            }
            Err(e) => {
                tracing::error!(role = %a.role, "cannot start role: {e}");
                if let Some(cg) = &cgroup {
                    cg.remove();
                }
                let mut crashes = crashes;
                crashes.push_back(boot_ms());
                self.roles.insert(
                    a.role.clone(),
                    RoleProc {
                        epoch: a.epoch,
                        pgid: None,
                        phase: Phase::Backoff {
                            restart_at: boot_ms()
                                + self.config.restart_backoff_max.as_millis() as u64,
                        },
                        crashes,
                        fence: None,
                        cgroup: None,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent {
        let mut runs = BTreeMap::new();
        runs.insert("k".to_string(), "true".to_string());
        Agent::new(AgentConfig::new(
            "srv-a".into(),
            vec!["127.0.0.1:1".into()],
            runs,
        ))
    }

    fn set(revision: u64, roles: &[(&str, u64)]) -> pb::DirectoryMessage {
        pb::DirectoryMessage {
            msg: Some(In::Assignments(pb::AssignmentSet {
                revision,
                assignments: roles
                    .iter()
                    .map(|(r, e)| pb::Assignment {
                        role: r.to_string(),
                        epoch: *e,
                        kind: "k".into(),
                        database: None,
                    })
                    .collect(),
                releasing: vec![],
                lease_ms: 0,
            })),
        }
    }

    fn ack(seq: u64, lease_ms: u64) -> pb::DirectoryMessage {
        pb::DirectoryMessage {
            msg: Some(In::RenewAck(pb::RenewAck { seq, lease_ms })),
        }
    }

    fn releasing(revision: u64, roles: &[(&str, u64)]) -> pb::DirectoryMessage {
        pb::DirectoryMessage {
            msg: Some(In::Assignments(pb::AssignmentSet {
                revision,
                assignments: vec![],
                releasing: roles
                    .iter()
                    .map(|(r, e)| pb::Assignment {
                        role: r.to_string(),
                        epoch: *e,
                        kind: "k".into(),
                        database: None,
                    })
                    .collect(),
                lease_ms: 0,
            })),
        }
    }

    /// What one step sends: (kind, role, epoch).
    fn step(a: &mut Agent) -> Vec<(&'static str, String, u64)> {
        let (tx, _rx) = mpsc::channel(1);
        a.reconcile(&tx);
        a.outbox
            .drain(..)
            .filter_map(|m| match m.msg {
                Some(Out::Released(r)) => Some(("released", r.role, r.epoch)),
                Some(Out::RoleFailed(f)) => Some(("failed", f.role, f.epoch)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_release_is_reported_again_after_each_ack_until_the_directory_commits_it() {
        let mut a = agent();
        a.on_message(releasing(5, &[("r1", 3)]));
        let once = vec![("released", "r1".to_string(), 3)];
        assert_eq!(step(&mut a), once);
        assert_eq!(step(&mut a), vec![], "not again without an ack");
        // The report was lost (an election): the next ack's set still lists it.
        let seq = a.next_renewal();
        a.on_message(ack(seq, 3_000));
        assert_eq!(step(&mut a), once);
        // A new session reports it too.
        a.on_session_open();
        assert_eq!(step(&mut a), once);
        // Committed: the set ahead of the next ack no longer lists it.
        a.on_message(releasing(6, &[]));
        let seq = a.next_renewal();
        a.on_message(ack(seq, 3_000));
        assert_eq!(step(&mut a), vec![]);
    }

    #[test]
    fn a_failed_role_is_reported_again_until_the_directory_moves_it() {
        let mut a = agent();
        a.on_message(set(5, &[("r1", 4)]));
        a.roles.insert(
            "r1".into(),
            RoleProc {
                epoch: 4,
                pgid: None,
                phase: Phase::Failed {
                    reason: "exited 3 times".into(),
                },
                crashes: VecDeque::new(),
                fence: None,
                cgroup: None,
            },
        );
        let seq = a.next_renewal();
        a.on_message(ack(seq, 3_000));
        assert_eq!(step(&mut a), vec![("failed", "r1".to_string(), 4)]);
        assert_eq!(step(&mut a), vec![], "not again without an ack");
        // Moved away (quarantined): no more reports.
        a.on_message(set(6, &[]));
        let seq = a.next_renewal();
        a.on_message(ack(seq, 3_000));
        assert_eq!(step(&mut a), vec![]);
    }

    #[test]
    fn an_older_assignment_set_is_ignored() {
        // Invariant 5: after seeing revision 10, a set from revision 7 (a lagging node)
        // must not bring back a role that moved away.
        let mut a = agent();
        a.on_message(set(10, &[]));
        a.on_message(set(7, &[("r1", 3)]));
        assert!(a.desired.is_empty());
        assert_eq!(a.hello().min_revision, 10);
        a.on_message(set(12, &[("r1", 5)]));
        assert_eq!(a.desired["r1"].epoch, 5);
    }

    #[test]
    fn the_lease_counts_from_the_send_time_of_the_acknowledged_renewal() {
        let mut a = agent();
        assert!(!a.lease_valid(), "no lease before the first ack");
        let seq = a.next_renewal();
        let sent = a.sent[&seq];
        a.on_message(ack(seq, 3_000));
        assert_eq!(a.stop_at, a.fence.stop_at_ms(sent));
        assert!(a.lease_valid());
        // An ack for an unknown or already superseded renewal extends nothing.
        let before = a.stop_at;
        a.on_message(ack(seq, 3_000));
        a.on_message(ack(999, 3_000));
        assert_eq!(a.stop_at, before);
    }

    #[test]
    fn a_directory_lease_shorter_than_assumed_shortens_the_fence() {
        let mut a = agent();
        let seq = a.next_renewal();
        let sent = a.sent[&seq];
        a.on_message(ack(seq, 1_000));
        assert_eq!(a.fence.lease_ms, 1_000);
        assert_eq!(
            a.stop_at,
            Fence {
                lease_ms: 1_000,
                rho_ppm: 10_000
            }
            .stop_at_ms(sent)
        );
    }

    #[test]
    fn fence_stops_before_the_lease_even_with_a_slow_clock() {
        for lease_ms in [500u64, 1_000, 3_000, 60_000] {
            let f = Fence {
                lease_ms,
                rho_ppm: 10_000,
            };
            let t_send = 1_000_000;
            let stop_at = f.stop_at_ms(t_send);
            // Stopping is finished by stop_at + stop_bound, which must be at most
            // lease*(1-rho) after the send on the agent's clock.
            let done = stop_at + f.stop_bound_ms();
            assert!(
                done <= t_send + lease_ms - lease_ms / 100,
                "lease {lease_ms}"
            );
            // A slow clock (rate 1-rho) reaches `done` after at most `lease` real ms.
            let real_ms = (done - t_send) as f64 / (1.0 - 0.01);
            assert!(
                real_ms <= lease_ms as f64 + 0.5,
                "lease {lease_ms}: {real_ms}"
            );
            // The fence grace fits inside the stop bound, with room for SIGKILL.
            assert!(f.fence_grace_ms() < f.stop_bound_ms());
            // Renewals leave room for two misses before a fence.
            assert!(
                stop_at - t_send > 2 * f.renew_every_ms(),
                "lease {lease_ms}"
            );
        }
    }
}
