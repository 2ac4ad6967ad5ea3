//! # baton-agent: run a server's roles, and never one it may no longer hold
//!
//! One agent runs on every server. It holds one session with any directory node and
//! runs, as child processes, exactly the roles in the latest assignment set it received,
//! *while its lease is valid*.
//!
//! Every decision (renewals, what an acknowledgement proves, the self-fence, which role
//! starts or stops and how hard, restarts and failure reports) is made by the pure state
//! machine [`agent_core::AgentCore`], whose documentation derives the fence and gives the
//! reason for each rule. This module is its shell: it feeds it the session's messages,
//! process exits and CLOCK_BOOTTIME readings ([`clock`]), and carries out its actions:
//! the gRPC session, role processes under their wrapper ([`process`]), cgroups and
//! signals ([`tree`]), and the metrics ([`http`]). The simulator (`baton-sim`) drives the
//! same core with simulated time, network and processes.

pub mod agent_core;
pub mod clock;
pub mod http;
pub mod process;
pub mod tree;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use baton_proto::v1 as pb;
use baton_proto::v1::agent_client::AgentClient;
use baton_proto::v1::agent_message::Msg as Out;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use crate::agent_core::{Action, AgentCore, CoreConfig};
pub use crate::agent_core::{Fence, LEASE_MS_RANGE};
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
            lease_ms: baton_core::LEASE_MS_DEFAULT,
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

    /// What the decision core needs of this configuration.
    pub fn core(&self) -> CoreConfig {
        CoreConfig {
            server: self.server.clone(),
            runs: self.runs.clone(),
            main: self.main,
            lease_ms: self.lease_ms,
            rho_ppm: self.rho_ppm,
            handover_grace_ms: self.handover_grace.as_millis() as u64,
            crash_limit: self.crash_limit,
            crash_window_ms: self.crash_window.as_millis() as u64,
            restart_backoff_min_ms: self.restart_backoff_min.as_millis() as u64,
            restart_backoff_max_ms: self.restart_backoff_max.as_millis() as u64,
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

/// A live session: where to send, what arrives.
struct Session {
    node: String,
    tx: mpsc::Sender<pb::AgentMessage>,
    rx: tonic::Streaming<pb::DirectoryMessage>,
}

/// The longest the loop sleeps between ticks of the core, whatever its next deadline: a
/// kill that is due is repeated at this pace until the process is gone.
const CHECK_EVERY: Duration = Duration::from_millis(20);

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
    // Set when the directory refused this instance the server name: stop and exit.
    let mut held: Option<String> = None;
    tracing::info!(server = %agent.config.server, instance = %agent.core.instance(), "agent starting");

    loop {
        if session.is_none() && !connecting && boot_ms() >= reconnect_at {
            connecting = true;
            let hello = agent.core.hello();
            let client = client.clone();
            let tx = conn_tx.clone();
            let avoid = avoid.clone();
            // A node that takes longer than this to open a session is as good as dead.
            let open_timeout = Duration::from_millis(agent.core.fence().lease_ms / 2);
            tokio::spawn(async move {
                let _ = tx
                    .send(connect(&client, hello, avoid, open_timeout).await)
                    .await;
            });
        }
        let now = boot_ms();
        let wake = agent.core.next_deadline(now).map_or(CHECK_EVERY, |t| {
            Duration::from_millis(t - now).min(CHECK_EVERY)
        });
        let actions = tokio::select! {
            _ = &mut shutdown => break,
            c = conn_rx.recv() => {
                connecting = false;
                match c {
                    Some(Ok(s)) => {
                        tracing::info!(node = %s.node, "session open");
                        session = Some(s);
                        agent.core.session_opened(boot_ms())
                    }
                    Some(Err(e)) => {
                        tracing::warn!("no session: {e}");
                        reconnect_at = boot_ms() + 200;
                        Vec::new()
                    }
                    None => Vec::new(),
                }
            }
            msg = async {
                match session.as_mut() {
                    Some(s) => s.rx.message().await,
                    None => std::future::pending().await,
                }
            } => match msg {
                Ok(Some(m)) => agent.core.on_message(boot_ms(), m),
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
                    agent.core.session_closed(boot_ms())
                }
            },
            e = exit_rx.recv() => match e {
                Some(e) => agent.on_exit(e),
                None => Vec::new(),
            },
            _ = tokio::time::sleep(wake) => agent.core.tick(boot_ms()),
        };
        agent.execute(actions, &exit_tx);
        if std::mem::take(&mut agent.abandon) {
            // Not back to the same node (it may be cut off from the leader).
            avoid = session.take().map(|s| s.node);
            reconnect_at = boot_ms();
        }
        agent.publish(session.is_some());
        if let Some(s) = &session {
            for m in agent.outbox.drain(..) {
                if s.tx.try_send(m).is_err() {
                    tracing::debug!("message not sent: session queue full or closed");
                }
            }
        } else {
            agent.outbox.clear();
        }
    }
    stop_all(&mut agent, &mut exit_rx, &exit_tx, session, held.is_some()).await;
    match held {
        Some(why) => Err(AgentError::ServerHeld(why)),
        None => Ok(()),
    }
}

/// Graceful shutdown: stop every role, wait (bounded) for them to exit, and tell the
/// directory this server is leaving.
async fn stop_all(
    agent: &mut Agent,
    exit_rx: &mut mpsc::Receiver<Exit>,
    exit_tx: &mpsc::Sender<Exit>,
    session: Option<Session>,
    held: bool,
) {
    // Graceful shutdown: stop every role, wait (bounded) for them to exit.
    tracing::info!("agent stopping: stopping every role");
    let actions = agent.core.shutdown(boot_ms());
    agent.execute(actions, exit_tx);
    let deadline = boot_ms() + agent.config.handover_grace.as_millis() as u64 + 1_000;
    while agent.core.any_running() && boot_ms() < deadline {
        let actions = tokio::select! {
            e = exit_rx.recv() => match e {
                Some(e) => agent.on_exit(e),
                None => Vec::new(),
            },
            _ = tokio::time::sleep(CHECK_EVERY) => agent.core.tick(boot_ms()),
        };
        agent.execute(actions, exit_tx);
    }
    // Every role has stopped: tell the directory, so the roles move now rather than after
    // lease + grace. Best effort, bounded: if it does not arrive, the lease does the job.
    if let Some(mut s) = session
        && !held
        && !agent.core.any_running()
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

/// One role process the shell runs for the core, by the core's process number.
struct Proc {
    /// The wrapper's pid (= process group id).
    pgid: u32,
    /// Tells the process's wrapper each new fence time (its dead-man switch).
    fence: FenceWriter,
    /// The process's cgroup, where the agent made one (see the `tree` module).
    cgroup: Option<RoleCgroup>,
}

/// Events from per-process waiter tasks: a process of which nothing is left.
struct Exit {
    proc: u64,
    status: String,
    /// The wrapper stopped the role because the fence time passed.
    fenced: bool,
}

/// The shell around [`AgentCore`]: it carries out the core's actions on real processes
/// and collects what to send.
struct Agent {
    core: AgentCore,
    config: AgentConfig,
    /// What the `--http` port serves (counted whether or not it is served).
    metrics: std::sync::Arc<http::AgentMetrics>,
    /// The core's fence, restart and dropped-fence-report totals already added to the
    /// metrics.
    counted: (u64, u64, u64),
    procs: BTreeMap<u64, Proc>,
    /// Messages for the directory, sent after each step.
    outbox: Vec<pb::AgentMessage>,
    /// The core gave up on the session (no acknowledgement for a third of a lease).
    abandon: bool,
    /// Where role cgroups are made, if they can be.
    cgroups: Option<CgroupBase>,
}

impl Agent {
    fn new(config: AgentConfig) -> Self {
        let core = AgentCore::new(config.core(), new_instance_id());
        Agent {
            core,
            config,
            metrics: Default::default(),
            counted: (0, 0, 0),
            procs: BTreeMap::new(),
            outbox: Vec::new(),
            abandon: false,
            cgroups: None,
        }
    }

    /// Publish what the `--http` port shows.
    fn publish(&mut self, session: bool) {
        let (fences, restarts, dropped) = (
            self.core.fences,
            self.core.restarts,
            self.core.fence_reports_dropped,
        );
        self.metrics.fences.inc_by(fences - self.counted.0);
        self.metrics.restarts.inc_by(restarts - self.counted.1);
        self.metrics
            .fence_reports_dropped
            .inc_by(dropped - self.counted.2);
        self.counted = (fences, restarts, dropped);
        let roles = self
            .core
            .role_states()
            .into_iter()
            .map(|(r, s)| (r, s.as_str()))
            .collect();
        self.metrics.publish(http::View {
            roles,
            last_ack_ms: self.core.last_ack_ms(),
            stop_at_ms: self.core.stop_at_ms(),
            session,
        });
    }

    /// A process's waiter reported it gone.
    fn on_exit(&mut self, e: Exit) -> Vec<Action> {
        self.procs.remove(&e.proc);
        self.core
            .process_exited(boot_ms(), e.proc, e.fenced, &e.status)
    }

    /// Carry out the core's actions (and those it answers a failed start with).
    fn execute(&mut self, actions: Vec<Action>, exits: &mpsc::Sender<Exit>) {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(m) => self.outbox.push(m),
                Action::AbandonSession => self.abandon = true,
                Action::ExtendFence { stop_at_ms } => {
                    for p in self.procs.values() {
                        p.fence.extend(stop_at_ms);
                    }
                }
                Action::Stop { proc, .. } => {
                    if let Some(p) = self.procs.get(&proc) {
                        signal_group(p.pgid, libc::SIGTERM);
                    }
                }
                Action::Kill { proc, .. } => {
                    // The whole role: its cgroup at once, its group, and whatever of it is
                    // left by pid. The waiter reports the exit only once nothing of it is
                    // left.
                    if let Some(p) = self.procs.get(&proc) {
                        if let Some(cg) = &p.cgroup {
                            cg.kill_all();
                        }
                        signal_group(p.pgid, libc::SIGKILL);
                    }
                }
                Action::Start {
                    role,
                    epoch,
                    proc,
                    command,
                    database,
                    fence_at_ms,
                    fence_grace_ms,
                    ..
                } => {
                    let env = RoleEnv {
                        role,
                        epoch,
                        server: self.config.server.clone(),
                        database,
                    };
                    let grace = Grace {
                        fence: Duration::from_millis(fence_grace_ms),
                        handover: self.config.handover_grace,
                    };
                    if let Err(e) = self.spawn(proc, &command, env, grace, fence_at_ms, exits) {
                        queue.extend(self.core.process_start_failed(boot_ms(), proc, &e));
                    }
                }
            }
        }
    }

    /// Start one role process and its waiter task.
    fn spawn(
        &mut self,
        proc: u64,
        command: &str,
        env: RoleEnv,
        grace: Grace,
        fence_at_ms: u64,
        exits: &mpsc::Sender<Exit>,
    ) -> Result<(), String> {
        let cgroup = self.cgroups.as_mut().and_then(|base| {
            base.make_role(&env.role, env.epoch)
                .inspect_err(
                    |e| tracing::warn!(role = %env.role, "no cgroup for this process: {e}"),
                )
                .ok()
        });
        let (mut child, fence) = match spawn_role(
            &self.config.exe,
            command,
            &env,
            grace,
            fence_at_ms,
            cgroup.as_ref(),
        ) {
            Ok(spawned) => spawned,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    cg.remove();
                }
                return Err(e.to_string());
            }
        };
        let pgid = child.id().unwrap_or(0);
        tracing::info!(role = %env.role, epoch = env.epoch, pid = pgid, "role started");
        self.procs.insert(
            proc,
            Proc {
                pgid,
                fence,
                cgroup: cgroup.clone(),
            },
        );
        let exits = exits.clone();
        let role = env.role;
        tokio::spawn(async move {
            let (status, fenced) = match child.wait().await {
                Ok(s) => (s.to_string(), s.code() == Some(process::FENCED_EXIT)),
                Err(e) => (format!("wait failed: {e}"), false),
            };
            // The wrapper leaves nothing behind when it exits by itself; when it was
            // killed, what is left of the role is killed now. Either way the role counts
            // as stopped only once nothing of it is left.
            wait_role_gone(&role, pgid, cgroup.as_ref()).await;
            let _ = exits
                .send(Exit {
                    proc,
                    status,
                    fenced,
                })
                .await;
        });
        Ok(())
    }
}
