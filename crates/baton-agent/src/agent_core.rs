//! # The agent's decisions, as a pure state machine
//!
//! [`AgentCore`] is everything the agent *decides*: which renewal to send and when, what
//! an acknowledgement proves, which roles may run, which must stop and how hard, when a
//! crashed role restarts or is reported failed, and what to tell the directory. It does
//! no I/O and reads no clock: every input carries `now_ms`, a reading of the agent's
//! clock (CLOCK_BOOTTIME in the real agent, simulated time in `baton-sim`), and every
//! input returns [`Action`]s for a shell to carry out. Two shells drive it: the real
//! agent (`run` in this crate: the gRPC session, role processes, cgroups, signals) and the
//! simulator's agent (`baton-sim`: a simulated network, simulated processes). So the
//! simulator checks this code, not a copy of it.
//!
//! ## The protocol
//!
//! One session with any directory node: the agent sends `Hello` (server name, kinds it
//! runs, the highest revision it has seen, its instance id), then `Renew { seq }` every
//! `lease/5`. The node sends, on the same ordered stream, `AssignmentSet`s (what this
//! server must run, what it must release, the lease) and `RenewAck { seq }` once the
//! leader confirmed a renewal. The agent answers a set with `Released` for each role it
//! was asked to release once nothing of it runs, and `RoleFailed` for a role that keeps
//! crashing.
//!
//! ## Lease and self-fencing (invariant 1)
//!
//! Each renewal is stamped with its send time on the agent's clock. A renewal
//! acknowledged by the directory proves that the leader saw it and confirmed its
//! leadership afterwards (see `baton-directory`'s manager). The agent must have stopped
//! every role by
//!
//! ```text
//!     t_send(last acknowledged renewal) + lease * (1 - rho)
//! ```
//!
//! so it *starts* stopping at that instant minus `stop_bound` ([`Fence::stop_at_ms`]),
//! and `stop_bound` covers the SIGTERM grace plus the SIGKILL. Derivation: clock rates
//! are within `[1-rho, 1+rho]` of real time. If the agent's clock runs slow,
//! `lease*(1-rho)` on it is at most `lease` of real time since `t_send`. The leader
//! declares the server down only `lease + grace` after it *received* that renewal (no
//! earlier than `t_send`) on its own clock; if that clock runs fast, that is still at
//! least `(lease+grace)/(1+rho) >= lease` of real time when `grace >= rho*lease` (which
//! the directory enforces). So the old holder has stopped before the directory can hand
//! the role to anyone else. Reachability plays no part: the agent fences itself whether
//! or not it can talk to the directory.
//!
//! Why each rule:
//! - *the send time, not the receive time, of the acknowledged renewal*: the leader's
//!   clock starts no earlier than the send, so counting from the send is never late;
//! - *only an acknowledgement moves the fence*: an unanswered renewal proves nothing (the
//!   node may be cut off from the leader, or the leader deposed);
//! - *an ack for an unknown or superseded seq extends nothing*: it cannot be tied to a
//!   send time;
//! - *a lease stated by the directory outside [`LEASE_MS_RANGE`] is ignored*: no value
//!   received may overflow the arithmetic or push the fence out of reach;
//! - *when fencing, the SIGTERM grace counts from the fence time*, not from when the
//!   agent noticed: an agent frozen or suspended past it kills at once.
//!
//! After a fence the agent runs roles again only once a new renewal is acknowledged. The
//! directory sends any assignment change committed before that acknowledgement ahead of
//! it on the same stream, so the agent never restarts a role that moved away meanwhile.
//! A set older than one already seen (a lagging node) is ignored (invariant 5).
//!
//! ## Reports
//!
//! `Released` and `RoleFailed` are what the directory waits for to move a role. Each is
//! sent when it becomes due, and again after every acknowledged renewal and on a new
//! session while the latest set still shows it pending: the set sent ahead of an ack
//! reflects every change committed before that ack, so a report lost in an election is
//! sent again, and one that was committed is not. The directory applies duplicates as
//! no-ops.
//!
//! `Fenced` tells the directory of a self-fence, which it could not see (the agent could
//! not reach it). Each fence of a role is numbered (1, 2, ... per agent start) and kept
//! pending (at most [`FENCE_REPORTS_MAX`], the oldest dropped and counted); pending
//! fences go out after every acknowledged renewal ([`FENCE_REPORTS_PER_ACK`] at a
//! time, oldest first), by the same rule as the reports above, until the set sent ahead of an ack lists their numbers as recorded
//! (`AssignmentSet.fences_recorded`). A node whose sets lack that field predates the
//! message and would end the session on it: it is sent none.
//!
//! ## Role health
//!
//! A role process that exits on its own is restarted with exponential backoff. After
//! `crash_limit` exits within `crash_window`, the agent stops trying that epoch and reports
//! the role failed; the directory quarantines (role, server) and moves the role on. A
//! process that ended because the lease ran out was fenced, not crashed: it does not
//! count (that would quarantine a healthy role).
//!
//! ## Session upkeep
//!
//! Renewals go out every `lease/5`, and every [`RENEW_RETRY_MS`] while the newest one is
//! unanswered (an election: the first renewal the new leader can confirm goes out at
//! once). A session with no acknowledgement for a third of a lease is abandoned
//! ([`Action::AbandonSession`]) so the shell can attach elsewhere with most of the lease
//! left.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use baton_proto::v1 as pb;
use baton_proto::v1::agent_message::Msg as Out;
use baton_proto::v1::directory_message::Msg as In;

/// Leases the agent accepts from the directory: the directory's own bounds. A lease
/// outside them is refused, so no value received can overflow the fence arithmetic or
/// push the fence time out of reach.
pub const LEASE_MS_RANGE: std::ops::RangeInclusive<u64> = 500..=3_600_000;

/// How often to renew while renewals go unanswered.
pub const RENEW_RETRY_MS: u64 = 100;

/// Renewals remembered while unacknowledged; older ones cannot extend the lease further
/// than newer ones, so dropping them is harmless.
const RENEWALS_TRACKED_MAX: usize = 64;

/// Fence reports kept pending until the directory records them; beyond this the oldest
/// is dropped (and counted). The directory remembers as many recorded numbers per
/// server, so a pending number is never older than all of those unless it was recorded.
pub const FENCE_REPORTS_MAX: usize = baton_core::FENCE_NUMBERS_KEPT;

/// Fence reports sent per acknowledged renewal (the oldest first): the session's send
/// queue holds 64 messages and drops what does not fit, renewals included, so a long
/// backlog goes out over a few acks instead of at once.
pub const FENCE_REPORTS_PER_ACK: usize = 16;

/// The fencing arithmetic lives in the core, where the directory checks its lease
/// settings against it (`NodeConfig::warnings`).
pub use baton_core::Fence;

/// What the core needs to know of the agent's configuration (times in ms).
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub server: String,
    /// kind -> command: the kinds advertised, and what a role of each kind runs.
    pub runs: BTreeMap<String, String>,
    pub main: bool,
    /// The lease assumed until the directory states its own.
    pub lease_ms: u64,
    pub rho_ppm: u64,
    pub handover_grace_ms: u64,
    pub crash_limit: u32,
    pub crash_window_ms: u64,
    pub restart_backoff_min_ms: u64,
    pub restart_backoff_max_ms: u64,
}

/// Why a role is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopWhy {
    /// The latest set no longer assigns this epoch here (handover, drain, delete): a
    /// graceful stop with the handover grace.
    Dropped,
    /// The lease ran out: a fence, with the short fence grace counted from the fence time.
    LeaseExpired,
    /// The agent is shutting down.
    Shutdown,
}

/// What the shell must do, in order.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Send this on the session (only produced while a session is open).
    Send(pb::AgentMessage),
    /// Start a process for a role. `proc` names it in later actions and inputs.
    Start {
        role: String,
        epoch: u64,
        proc: u64,
        kind: String,
        command: String,
        database: Option<String>,
        /// The fence time the process's dead-man switch starts with.
        fence_at_ms: u64,
        /// Its SIGTERM-to-SIGKILL grace when fenced or orphaned.
        fence_grace_ms: u64,
    },
    /// Ask a process to stop (SIGTERM); it gets SIGKILL ([`Action::Kill`]) at `kill_at_ms`.
    Stop {
        role: String,
        epoch: u64,
        proc: u64,
        why: StopWhy,
        kill_at_ms: u64,
    },
    /// Kill whatever is left of a process being stopped (repeated until it has exited).
    Kill { role: String, proc: u64 },
    /// Every running process may now run until this fence time (an ack extended it).
    ExtendFence { stop_at_ms: u64 },
    /// No acknowledgement for a third of a lease: drop this session and attach to
    /// another node.
    AbandonSession,
}

/// A role's state, as [`AgentCore::role_states`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleState {
    Running,
    Stopping,
    Backoff,
    Failed,
}

impl RoleState {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleState::Running => "running",
            RoleState::Stopping => "stopping",
            RoleState::Backoff => "backoff",
            RoleState::Failed => "failed",
        }
    }
}

/// A fence the directory has not recorded yet (see the module documentation, "Reports").
#[derive(Clone, Debug, PartialEq, Eq)]
struct PendingFence {
    /// This agent start's count of its fences: the directory records each number once.
    number: u64,
    role: String,
    epoch: u64,
    /// When the role was stopped (the agent's clock); sent as "how long ago".
    at_ms: u64,
}

/// One role this agent is responsible for.
#[derive(Debug)]
struct RoleProc {
    epoch: u64,
    /// The process, while one exists.
    proc: Option<u64>,
    phase: Phase,
    /// Exit times of recent crashes, for the crash limit.
    crashes: VecDeque<u64>,
}

#[derive(Debug)]
enum Phase {
    Running,
    /// Told to stop; killed at `kill_at`.
    Stopping {
        kill_at: u64,
    },
    /// Crashed; restart at `restart_at`.
    Backoff {
        restart_at: u64,
    },
    /// Crashed too often (or cannot run here); reported, with this reason, until the
    /// directory moves the role; not restarted for this epoch.
    Failed {
        reason: String,
    },
}

/// The agent's session view and role states; see the module documentation.
#[derive(Debug)]
pub struct AgentCore {
    config: CoreConfig,
    /// This agent start's identity (see `Hello.instance`).
    instance: String,
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
    /// Renewal seq -> send time, for the ones not acknowledged yet.
    sent: BTreeMap<u64, u64>,
    next_seq: u64,
    /// When to start stopping every role; 0 = no valid lease.
    stop_at: u64,
    /// When the last renewal was acknowledged.
    last_ack_ms: Option<u64>,
    /// When the current session opened or last acknowledged a renewal.
    last_ack_or_open: u64,
    /// A session is open: renewals and reports go out.
    session: bool,
    /// When the next scheduled renewal is due (on a session).
    next_renew_at: u64,
    /// The next process name handed out.
    next_proc: u64,
    /// When the last "waiting for the holder's lease" was logged.
    waiting_logged_ms: Option<u64>,
    /// Set by shutdown: nothing is started any more.
    shutting_down: bool,
    /// Roles stopped because the lease ran out, and restarts scheduled after a crash
    /// (totals, for the metrics).
    pub fences: u64,
    pub restarts: u64,
    /// Fences not recorded by the directory yet, oldest first, at most
    /// [`FENCE_REPORTS_MAX`].
    fence_reports: VecDeque<PendingFence>,
    /// The number the next fence gets.
    next_fence_number: u64,
    /// The session's node accepts `Fenced` reports: its latest set carried
    /// `fences_recorded`. False until then on every session.
    node_takes_fence_reports: bool,
    /// Fence reports dropped unsent because more than [`FENCE_REPORTS_MAX`] were
    /// pending (total, for the metrics).
    pub fence_reports_dropped: u64,
    out: Vec<Action>,
    /// Exists only for the simulator's planted-bug check ("no self-fence"): the agent
    /// then treats any lease it ever had as valid forever, so it never stops a role
    /// because its lease ran out. The simulator must catch the overlaps this causes.
    /// Never set by the real agent.
    pub planted_no_self_fence: bool,
}

impl AgentCore {
    pub fn new(config: CoreConfig, instance: String) -> Self {
        let fence = Fence {
            lease_ms: config.lease_ms,
            rho_ppm: config.rho_ppm,
        };
        AgentCore {
            config,
            instance,
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
            last_ack_ms: None,
            last_ack_or_open: 0,
            session: false,
            next_renew_at: 0,
            next_proc: 1,
            waiting_logged_ms: None,
            shutting_down: false,
            fences: 0,
            restarts: 0,
            fence_reports: VecDeque::new(),
            next_fence_number: 1,
            node_takes_fence_reports: false,
            fence_reports_dropped: 0,
            out: Vec::new(),
            planted_no_self_fence: false,
        }
    }

    /// The first message of every session.
    pub fn hello(&self) -> pb::Hello {
        pb::Hello {
            server: self.config.server.clone(),
            kinds: self.config.runs.keys().cloned().collect(),
            main: self.config.main,
            min_revision: self.revision,
            instance: self.instance.clone(),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The fence arithmetic with the lease in force.
    pub fn fence(&self) -> Fence {
        self.fence
    }

    /// When the agent starts stopping every role; 0 before the first ack.
    pub fn stop_at_ms(&self) -> u64 {
        self.stop_at
    }

    pub fn last_ack_ms(&self) -> Option<u64> {
        self.last_ack_ms
    }

    /// Some process of a role still exists.
    pub fn any_running(&self) -> bool {
        self.roles.values().any(|p| p.proc.is_some())
    }

    pub fn role_states(&self) -> Vec<(String, RoleState)> {
        self.roles
            .iter()
            .map(|(r, p)| {
                let s = match p.phase {
                    Phase::Running => RoleState::Running,
                    Phase::Stopping { .. } => RoleState::Stopping,
                    Phase::Backoff { .. } => RoleState::Backoff,
                    Phase::Failed { .. } => RoleState::Failed,
                };
                (r.clone(), s)
            })
            .collect()
    }

    /// A session opened: renew at once, and report pending releases and failed roles
    /// again (what was sent on the old session may have been lost with it).
    pub fn session_opened(&mut self, now_ms: u64) -> Vec<Action> {
        self.session = true;
        self.node_takes_fence_reports = false;
        self.last_ack_or_open = now_ms;
        self.next_renew_at = now_ms;
        self.resend_reports = true;
        self.step(now_ms)
    }

    /// The session ended (closed, failed, or abandoned).
    pub fn session_closed(&mut self, now_ms: u64) -> Vec<Action> {
        self.session = false;
        self.node_takes_fence_reports = false;
        self.step(now_ms)
    }

    /// Time passed: renew, fence, kill, restart as due.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        self.step(now_ms)
    }

    /// A message from the directory on the session.
    pub fn on_message(&mut self, now_ms: u64, m: pb::DirectoryMessage) -> Vec<Action> {
        self.receive(now_ms, m);
        self.step(now_ms)
    }

    /// A process ended (the whole of it: nothing of the role is left). `fenced`: its
    /// dead-man switch stopped it because the fence time passed.
    pub fn process_exited(
        &mut self,
        now_ms: u64,
        proc: u64,
        fenced: bool,
        status: &str,
    ) -> Vec<Action> {
        self.exited(now_ms, proc, fenced, status);
        self.step(now_ms)
    }

    /// The shell could not start a process: counts as a crash, retried after the
    /// longest backoff.
    pub fn process_start_failed(&mut self, now_ms: u64, proc: u64, error: &str) -> Vec<Action> {
        if let Some((role, p)) = self.roles.iter_mut().find(|(_, p)| p.proc == Some(proc)) {
            tracing::error!(role = %role, "cannot start role: {error}");
            p.proc = None;
            p.crashes.push_back(now_ms);
            p.phase = Phase::Backoff {
                restart_at: now_ms + self.config.restart_backoff_max_ms,
            };
        }
        self.step(now_ms)
    }

    /// Stop every role for good (the agent is exiting); nothing starts any more.
    pub fn shutdown(&mut self, now_ms: u64) -> Vec<Action> {
        self.shutting_down = true;
        self.desired.clear();
        self.releasing.clear();
        self.step(now_ms)
    }

    /// The earliest time after `now_ms` at which [`AgentCore::tick`] has something to
    /// do; `None`: nothing until an input arrives. A kill that is due is repeated by
    /// every tick until the process has exited, so a shell should also tick now and then.
    pub fn next_deadline(&self, now_ms: u64) -> Option<u64> {
        let mut at: Vec<u64> = Vec::new();
        if self.session {
            at.push(self.next_renew_at);
            at.push(self.last_ack_or_open + self.fence.lease_ms / 3 + 1);
            if let Some((_, sent)) = self.sent.last_key_value() {
                at.push(sent + RENEW_RETRY_MS);
            }
        }
        if !self.planted_no_self_fence && self.stop_at > 0 && !self.roles.is_empty() {
            at.push(self.stop_at);
        }
        for p in self.roles.values() {
            match p.phase {
                Phase::Stopping { kill_at } => at.push(kill_at),
                Phase::Backoff { restart_at } => at.push(restart_at),
                _ => {}
            }
        }
        at.into_iter().filter(|t| *t > now_ms).min()
    }

    fn lease_valid(&self, now_ms: u64) -> bool {
        if self.planted_no_self_fence {
            return self.stop_at > 0;
        }
        now_ms < self.stop_at
    }

    fn next_renewal(&mut self, now_ms: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sent.insert(seq, now_ms);
        while self.sent.len() > RENEWALS_TRACKED_MAX {
            self.sent.pop_first();
        }
        seq
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
            // Renew at once and then on the new period: the renewal scheduled on the old
            // period may come later than a third of the new lease, and the session would
            // be abandoned as silent while its node answers every renewal.
            self.next_renew_at = 0;
        } else {
            tracing::warn!(
                lease_ms,
                "ignoring a lease outside {}..={} ms from the directory",
                LEASE_MS_RANGE.start(),
                LEASE_MS_RANGE.end()
            );
        }
    }

    fn receive(&mut self, now: u64, m: pb::DirectoryMessage) {
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
                if let Some(recorded) = set.fences_recorded {
                    self.node_takes_fence_reports = true;
                    self.fence_reports.retain(|f| {
                        f.number > recorded.settled_through && !recorded.numbers.contains(&f.number)
                    });
                }
                if self.shutting_down {
                    return;
                }
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
                self.last_ack_or_open = now;
                self.last_ack_ms = Some(now);
                // Whatever the set sent ahead of this ack still shows pending was not
                // committed (yet): report it again.
                self.resend_reports = true;
                if let Some(t_send) = self.sent.get(&ack.seq).copied() {
                    let before = self.stop_at;
                    self.stop_at = self.stop_at.max(self.fence.stop_at_ms(t_send));
                    self.sent.retain(|s, _| *s > ack.seq);
                    if self.stop_at > before {
                        self.out.push(Action::ExtendFence {
                            stop_at_ms: self.stop_at,
                        });
                    }
                }
            }
            Some(In::Waiting(w)) => {
                // The node is alive and working on our claim: stay on this session.
                self.last_ack_or_open = now;
                if self
                    .waiting_logged_ms
                    .is_none_or(|t| now.saturating_sub(t) >= 5_000)
                {
                    self.waiting_logged_ms = Some(now);
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

    fn exited(&mut self, now: u64, proc: u64, fenced_by_wrapper: bool, status: &str) {
        let Some((role, p)) = self.roles.iter_mut().find(|(_, p)| p.proc == Some(proc)) else {
            return; // an older process of a role
        };
        let role = role.clone();
        p.proc = None;
        // A process that ended because the lease ran out was fenced, not crashed: it
        // must not count toward the crash limit (that would quarantine a healthy role).
        let fenced = fenced_by_wrapper || now >= self.stop_at;
        if fenced && matches!(p.phase, Phase::Running) {
            tracing::warn!(role = %role, epoch = p.epoch, "role fenced: lease ran out ({status})");
            let epoch = p.epoch;
            self.roles.remove(&role);
            // Its dead-man switch stopped it at the fence time (or the agent saw the
            // exit late, after the fence time).
            let at = if self.stop_at > 0 {
                now.min(self.stop_at)
            } else {
                now
            };
            self.fenced(role, epoch, at);
            return;
        }
        match p.phase {
            Phase::Stopping { .. } => {
                tracing::info!(role = %role, epoch = p.epoch, "role stopped ({status})");
                self.roles.remove(&role);
            }
            Phase::Running => {
                p.crashes.push_back(now);
                let window = self.config.crash_window_ms;
                while p
                    .crashes
                    .front()
                    .is_some_and(|t| now.saturating_sub(*t) > window)
                {
                    p.crashes.pop_front();
                }
                let n = p.crashes.len() as u32;
                if n >= self.config.crash_limit {
                    tracing::warn!(role = %role, epoch = p.epoch, "role failed {n} times; reporting");
                    let reason = format!(
                        "exited {n} times within {:?} on {} (last: {status})",
                        std::time::Duration::from_millis(window),
                        self.config.server
                    );
                    let epoch = p.epoch;
                    p.phase = Phase::Failed {
                        reason: reason.clone(),
                    };
                    self.send(role_failed(&role, epoch, reason));
                } else {
                    let backoff = self
                        .config
                        .restart_backoff_min_ms
                        .saturating_mul(1 << (n - 1).min(16))
                        .min(self.config.restart_backoff_max_ms);
                    tracing::warn!(role = %role, "role exited ({status}); restarting in {:?}", std::time::Duration::from_millis(backoff));
                    self.restarts += 1;
                    p.phase = Phase::Backoff {
                        restart_at: now + backoff,
                    };
                }
            }
            Phase::Backoff { .. } | Phase::Failed { .. } => {}
        }
    }

    /// A role was stopped because the lease ran out: count it, and keep a report for the
    /// directory, dropping the oldest beyond [`FENCE_REPORTS_MAX`].
    fn fenced(&mut self, role: String, epoch: u64, at_ms: u64) {
        self.fences += 1;
        let number = self.next_fence_number;
        self.next_fence_number += 1;
        self.fence_reports.push_back(PendingFence {
            number,
            role,
            epoch,
            at_ms,
        });
        while self.fence_reports.len() > FENCE_REPORTS_MAX {
            if let Some(old) = self.fence_reports.pop_front() {
                self.fence_reports_dropped += 1;
                tracing::warn!(
                    role = %old.role,
                    epoch = old.epoch,
                    "more than {FENCE_REPORTS_MAX} fences unreported: dropping the oldest report"
                );
            }
        }
    }

    fn send(&mut self, m: pb::AgentMessage) {
        self.out.push(Action::Send(m));
    }

    /// After every input: keep the session up, bring the roles in line with (lease,
    /// desired set), and hand back what to do. Sends are dropped while no session is
    /// open: what matters is reported again on the next one.
    fn step(&mut self, now: u64) -> Vec<Action> {
        self.upkeep(now);
        self.reconcile(now);
        let session = self.session;
        let mut out = std::mem::take(&mut self.out);
        if !session {
            out.retain(|a| !matches!(a, Action::Send(_)));
        }
        out
    }

    /// Renew on schedule, renew again while unanswered, abandon a silent session.
    fn upkeep(&mut self, now: u64) {
        if !self.session || self.shutting_down {
            return;
        }
        // A session whose node stopped answering (frozen, cut off from the leader) is
        // abandoned well before the lease runs out, so the agent can renew through
        // another node. A third of a lease: renewals go out every fifth of a lease and
        // are answered within milliseconds, so this is several missed answers; what is left
        // of the lease (at least half of it) is for attaching elsewhere and renewing
        // before the roles must stop.
        if now.saturating_sub(self.last_ack_or_open) > self.fence.lease_ms / 3 {
            tracing::warn!("no renewal acknowledged for a third of a lease; trying another node");
            self.session = false;
            self.out.push(Action::AbandonSession);
            return;
        }
        let due = now >= self.next_renew_at;
        // While renewals go unanswered (an election, a node that lost the leader), renew
        // every RENEW_RETRY_MS rather than every fifth of a lease, so the first renewal the
        // new leader can confirm is sent right away.
        let unanswered = self
            .sent
            .last_key_value()
            .is_some_and(|(_, sent)| now.saturating_sub(*sent) >= RENEW_RETRY_MS);
        if due || unanswered {
            if due {
                self.next_renew_at = now + self.fence.renew_every_ms();
            }
            let seq = self.next_renewal(now);
            self.send(pb::AgentMessage {
                msg: Some(Out::Renew(pb::Renew { seq })),
            });
        }
    }

    /// Bring the processes in line with (lease, desired set).
    fn reconcile(&mut self, now: u64) {
        let valid = self.lease_valid(now);
        self.stop_unwanted(now, valid);
        self.report(now);
        if !valid || self.shutting_down {
            return;
        }
        // Start (or restart after backoff) what must run.
        let to_start: Vec<pb::Assignment> = self
            .desired
            .values()
            .filter(|a| match self.roles.get(&a.role) {
                None => true,
                Some(p) => {
                    matches!(p.phase, Phase::Backoff { restart_at } if restart_at <= now && p.epoch == a.epoch)
                }
            })
            .cloned()
            .collect();
        for a in to_start {
            self.start(a);
        }
    }

    /// Stop what must not run: what the set dropped (gracefully), everything when the
    /// lease ran out (the fence), and kill what outlived its grace.
    fn stop_unwanted(&mut self, now: u64, valid: bool) {
        // When fencing, the grace counts from the fence time, not from when the agent
        // noticed it: an agent that was frozen or suspended past it kills at once.
        let fence_kill_at = self.stop_at.saturating_add(self.fence.fence_grace_ms());
        let mut forget = Vec::new();
        let mut fenced = Vec::new();
        for (role, p) in self.roles.iter_mut() {
            let wanted = valid && self.desired.get(role).is_some_and(|a| a.epoch == p.epoch);
            if matches!(p.phase, Phase::Running) && !wanted {
                let (kill_at, why) = if valid {
                    let why = if self.shutting_down {
                        StopWhy::Shutdown
                    } else {
                        StopWhy::Dropped
                    };
                    (now + self.config.handover_grace_ms, why)
                } else {
                    tracing::warn!(role, epoch = p.epoch, "lease ran out: fencing");
                    fenced.push((role.clone(), p.epoch));
                    (fence_kill_at, StopWhy::LeaseExpired)
                };
                if let Some(proc) = p.proc {
                    self.out.push(Action::Stop {
                        role: role.clone(),
                        epoch: p.epoch,
                        proc,
                        why,
                        kill_at_ms: kill_at,
                    });
                }
                p.phase = Phase::Stopping { kill_at };
            }
            match p.phase {
                Phase::Stopping { ref mut kill_at } => {
                    if !valid {
                        *kill_at = (*kill_at).min(fence_kill_at);
                    }
                    if now >= *kill_at
                        && let Some(proc) = p.proc
                    {
                        self.out.push(Action::Kill {
                            role: role.clone(),
                            proc,
                        });
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
        for (role, epoch) in fenced {
            self.fenced(role, epoch, now);
        }
    }

    /// Report what the directory waits for until it has committed it: releases of roles
    /// of which nothing runs here any more, roles that failed here, and fences not
    /// recorded yet (see the module documentation, "Reports").
    fn report(&mut self, now: u64) {
        let resend = std::mem::take(&mut self.resend_reports);
        let releasing = &self.releasing;
        self.released_sent
            .retain(|(role, epoch)| releasing.get(role) == Some(epoch));
        let mut msgs = Vec::new();
        for (role, epoch) in &self.releasing {
            let running = self.roles.get(role).is_some_and(|p| p.proc.is_some());
            if !running && (self.released_sent.insert((role.clone(), *epoch)) || resend) {
                msgs.push(pb::AgentMessage {
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
                    msgs.push(role_failed(role, p.epoch, reason.clone()));
                }
            }
            if self.node_takes_fence_reports {
                for f in self.fence_reports.iter().take(FENCE_REPORTS_PER_ACK) {
                    msgs.push(pb::AgentMessage {
                        msg: Some(Out::Fenced(pb::Fenced {
                            role: f.role.clone(),
                            epoch: f.epoch,
                            ago_ms: now.saturating_sub(f.at_ms),
                            number: f.number,
                        })),
                    });
                }
            }
        }
        for m in msgs {
            self.send(m);
        }
    }

    fn start(&mut self, a: pb::Assignment) {
        let Some(command) = self.config.runs.get(&a.kind).cloned() else {
            // Placement only sends kinds we advertise; a mismatch means the config
            // changed under a running session. Report, do not run.
            let reason = format!(
                "server {} has no command for kind {}",
                self.config.server, a.kind
            );
            self.send(role_failed(&a.role, a.epoch, reason.clone()));
            self.roles.insert(
                a.role.clone(),
                RoleProc {
                    epoch: a.epoch,
                    proc: None,
                    phase: Phase::Failed { reason },
                    crashes: VecDeque::new(),
                },
            );
            return;
        };
        let crashes = self
            .roles
            .remove(&a.role)
            .map(|p| p.crashes)
            .unwrap_or_default();
        let proc = self.next_proc;
        self.next_proc += 1;
        self.roles.insert(
            a.role.clone(),
            RoleProc {
                epoch: a.epoch,
                proc: Some(proc),
                phase: Phase::Running,
                crashes,
            },
        );
        self.out.push(Action::Start {
            role: a.role,
            epoch: a.epoch,
            proc,
            kind: a.kind,
            command,
            database: a.database,
            fence_at_ms: self.stop_at,
            fence_grace_ms: self.fence.fence_grace_ms(),
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A boot-clock reading to start from (any; not 0, which means "no lease").
    const T0: u64 = 1_000_000;

    fn core() -> AgentCore {
        let mut runs = BTreeMap::new();
        runs.insert("k".to_string(), "true".to_string());
        AgentCore::new(
            CoreConfig {
                server: "srv-a".into(),
                runs,
                main: false,
                lease_ms: 3_000,
                rho_ppm: 10_000,
                handover_grace_ms: 5_000,
                crash_limit: 3,
                crash_window_ms: 30_000,
                restart_backoff_min_ms: 200,
                restart_backoff_max_ms: 5_000,
            },
            "i1".into(),
        )
    }

    /// A core with a session open at `T0`.
    fn opened() -> AgentCore {
        let mut a = core();
        a.session_opened(T0);
        a
    }

    fn assignments(roles: &[(&str, u64)]) -> Vec<pb::Assignment> {
        roles
            .iter()
            .map(|(r, e)| pb::Assignment {
                role: r.to_string(),
                epoch: *e,
                kind: "k".into(),
                database: None,
            })
            .collect()
    }

    fn set(revision: u64, roles: &[(&str, u64)]) -> pb::DirectoryMessage {
        pb::DirectoryMessage {
            msg: Some(In::Assignments(pb::AssignmentSet {
                revision,
                assignments: assignments(roles),
                releasing: vec![],
                lease_ms: 0,
                fences_recorded: None,
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
                releasing: assignments(roles),
                lease_ms: 0,
                fences_recorded: None,
            })),
        }
    }

    /// A set from a node that accepts fence reports and has recorded `numbers` (and every
    /// number up to `settled_through`) of this agent's.
    fn set_recorded(
        revision: u64,
        roles: &[(&str, u64)],
        numbers: &[u64],
        settled_through: u64,
    ) -> pb::DirectoryMessage {
        pb::DirectoryMessage {
            msg: Some(In::Assignments(pb::AssignmentSet {
                revision,
                assignments: assignments(roles),
                releasing: vec![],
                lease_ms: 0,
                fences_recorded: Some(pb::FencesRecorded {
                    numbers: numbers.to_vec(),
                    settled_through,
                }),
            })),
        }
    }

    /// The fence reports among `actions`: (number, role, epoch, ago_ms).
    fn fence_reports(actions: &[Action]) -> Vec<(u64, String, u64, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(pb::AgentMessage {
                    msg: Some(Out::Fenced(f)),
                }) => Some((f.number, f.role.clone(), f.epoch, f.ago_ms)),
                _ => None,
            })
            .collect()
    }

    /// The reports among `actions`: (kind, role, epoch).
    fn reports(actions: Vec<Action>) -> Vec<(&'static str, String, u64)> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Send(m) => match m.msg {
                    Some(Out::Released(r)) => Some(("released", r.role, r.epoch)),
                    Some(Out::RoleFailed(f)) => Some(("failed", f.role, f.epoch)),
                    Some(Out::Fenced(f)) => Some(("fenced", f.role, f.epoch)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// The process started for `role` among `actions`.
    fn started(actions: &[Action], role: &str) -> Option<(u64, u64)> {
        actions.iter().find_map(|a| match a {
            Action::Start {
                role: r,
                epoch,
                proc,
                ..
            } if r == role => Some((*epoch, *proc)),
            _ => None,
        })
    }

    /// Renew now and have the renewal acknowledged at once.
    fn acked(a: &mut AgentCore, now: u64) -> Vec<Action> {
        let seq = a.next_renewal(now);
        a.on_message(now, ack(seq, 3_000))
    }

    #[test]
    fn a_release_is_reported_again_after_each_ack_until_the_directory_commits_it() {
        let mut a = opened();
        let once = vec![("released", "r1".to_string(), 3)];
        assert_eq!(reports(a.on_message(T0, releasing(5, &[("r1", 3)]))), once);
        assert_eq!(reports(a.tick(T0)), vec![], "not again without an ack");
        // The report was lost (an election): the next ack's set still lists it.
        assert_eq!(reports(acked(&mut a, T0)), once);
        // A new session reports it too.
        assert_eq!(reports(a.session_opened(T0)), once);
        // Committed: the set ahead of the next ack no longer lists it.
        assert_eq!(reports(a.on_message(T0, releasing(6, &[]))), vec![]);
        assert_eq!(reports(acked(&mut a, T0)), vec![]);
    }

    #[test]
    fn a_failed_role_is_reported_again_until_the_directory_moves_it() {
        let mut a = opened();
        a.on_message(T0, set(5, &[("r1", 4)]));
        let (epoch, mut proc) = started(&acked(&mut a, T0), "r1").expect("started");
        assert_eq!(epoch, 4);
        // Three crashes within the window: restarted after 200 ms, then 400 ms, then
        // reported failed.
        let mut now = T0 + 10;
        for backoff in [200, 400] {
            assert_eq!(
                reports(a.process_exited(now, proc, false, "exit 1")),
                vec![]
            );
            assert!(a.next_deadline(now).is_some_and(|t| t <= now + backoff));
            assert!(started(&a.tick(now + backoff - 1), "r1").is_none());
            now += backoff;
            (_, proc) = started(&a.tick(now), "r1").expect("restarted after the backoff");
            now += 10;
        }
        let failed = vec![("failed", "r1".to_string(), 4)];
        assert_eq!(
            reports(a.process_exited(now, proc, false, "exit 1")),
            failed
        );
        assert_eq!(a.restarts, 2);
        assert_eq!(reports(a.tick(now)), vec![], "not again without an ack");
        assert!(started(&a.tick(now + 300), "r1").is_none(), "not restarted");
        let now = now + 10;
        assert_eq!(reports(acked(&mut a, now)), failed);
        // Moved away (quarantined): no more reports.
        a.on_message(now, set(6, &[]));
        assert_eq!(reports(acked(&mut a, now)), vec![]);
    }

    #[test]
    fn an_older_assignment_set_is_ignored() {
        // Invariant 5: after seeing revision 10, a set from revision 7 (a lagging node)
        // must not bring back a role that moved away.
        let mut a = core();
        a.on_message(T0, set(10, &[]));
        a.on_message(T0, set(7, &[("r1", 3)]));
        assert!(a.desired.is_empty());
        assert_eq!(a.hello().min_revision, 10);
        a.on_message(T0, set(12, &[("r1", 5)]));
        assert_eq!(a.desired["r1"].epoch, 5);
    }

    #[test]
    fn the_lease_counts_from_the_send_time_of_the_acknowledged_renewal() {
        let mut a = core();
        assert!(!a.lease_valid(T0), "no lease before the first ack");
        let seq = a.next_renewal(T0);
        let sent = a.sent[&seq];
        a.on_message(T0 + 40, ack(seq, 3_000));
        assert_eq!(a.stop_at, a.fence.stop_at_ms(sent));
        assert!(a.lease_valid(T0 + 40));
        // An ack for an unknown or already superseded renewal extends nothing.
        let before = a.stop_at;
        a.on_message(T0 + 50, ack(seq, 3_000));
        a.on_message(T0 + 50, ack(999, 3_000));
        assert_eq!(a.stop_at, before);
    }

    #[test]
    fn a_directory_lease_shorter_than_assumed_shortens_the_fence() {
        let mut a = core();
        let seq = a.next_renewal(T0);
        let sent = a.sent[&seq];
        a.on_message(T0, ack(seq, 1_000));
        assert_eq!(a.fence.lease_ms, 1_000);
        assert_eq!(
            a.stop_at,
            Fence {
                lease_ms: 1_000,
                rho_ppm: 10_000
            }
            .stop_at_ms(sent)
        );
        // A lease outside the directory's bounds is ignored.
        a.on_message(T0, ack(0, u64::MAX));
        a.on_message(T0, ack(0, 10));
        assert_eq!(a.fence.lease_ms, 1_000);
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

    #[test]
    fn nothing_runs_before_the_first_ack_and_a_lapsed_lease_fences_every_role() {
        let mut a = opened();
        assert!(started(&a.on_message(T0, set(3, &[("r1", 2)])), "r1").is_none());
        let acts = acked(&mut a, T0);
        assert!(acts.contains(&Action::ExtendFence {
            stop_at_ms: a.stop_at
        }));
        let (_, proc) = started(&acts, "r1").expect("started once the lease is valid");
        let stop_at = a.stop_at;
        assert!(a.next_deadline(stop_at - 1).is_some_and(|t| t <= stop_at));
        assert!(
            a.tick(stop_at - 1)
                .iter()
                .all(|x| !matches!(x, Action::Stop { .. }))
        );
        // The directory is silent: at the fence time every role is stopped, with the
        // fence grace counted from the fence time.
        let kill_at = stop_at + a.fence.fence_grace_ms();
        let acts = a.tick(stop_at + 7);
        assert!(
            acts.contains(&Action::Stop {
                role: "r1".into(),
                epoch: 2,
                proc,
                why: StopWhy::LeaseExpired,
                kill_at_ms: kill_at,
            }),
            "{acts:?}"
        );
        assert_eq!(a.fences, 1);
        assert!(
            !a.tick(kill_at - 1)
                .iter()
                .any(|x| matches!(x, Action::Kill { .. }))
        );
        assert!(a.tick(kill_at).contains(&Action::Kill {
            role: "r1".into(),
            proc
        }));
        a.process_exited(kill_at + 1, proc, false, "killed");
        assert!(!a.any_running());
        // Back on a session: the same epoch runs again only after a new ack.
        let now = kill_at + 100;
        assert!(started(&a.session_opened(now), "r1").is_none());
        let (epoch, _) = started(&acked(&mut a, now), "r1").expect("runs again");
        assert_eq!(epoch, 2);
    }

    #[test]
    fn a_dropped_role_stops_gracefully_and_is_released_once_gone() {
        let mut a = opened();
        a.on_message(T0, set(3, &[("r1", 2)]));
        let (_, proc) = started(&acked(&mut a, T0), "r1").expect("started");
        let now = T0 + 100;
        let acts = a.on_message(now, releasing(4, &[("r1", 2)]));
        assert!(acts.contains(&Action::Stop {
            role: "r1".into(),
            epoch: 2,
            proc,
            why: StopWhy::Dropped,
            kill_at_ms: now + 5_000,
        }));
        assert_eq!(reports(acts), vec![], "not released while it runs");
        assert_eq!(
            reports(a.process_exited(now + 50, proc, false, "exit 0")),
            vec![("released", "r1".to_string(), 2)]
        );
    }

    #[test]
    fn renewals_follow_the_schedule_and_a_silent_session_is_abandoned() {
        let renews = |acts: &[Action]| {
            acts.iter()
                .filter(|x| matches!(x, Action::Send(m) if matches!(m.msg, Some(Out::Renew(_)))))
                .count()
        };
        let mut a = core();
        assert_eq!(renews(&a.tick(T0)), 0, "no session, no renewal");
        assert_eq!(renews(&a.session_opened(T0)), 1, "at once on a new session");
        // Unanswered: again every RENEW_RETRY_MS.
        assert_eq!(renews(&a.tick(T0 + RENEW_RETRY_MS - 1)), 0);
        assert_eq!(renews(&a.tick(T0 + RENEW_RETRY_MS)), 1);
        // Answered: the next one a fifth of a lease after the last scheduled one.
        let seq = *a.sent.last_key_value().unwrap().0;
        a.on_message(T0 + RENEW_RETRY_MS + 5, ack(seq, 3_000));
        assert_eq!(renews(&a.tick(T0 + 599)), 0);
        assert_eq!(renews(&a.tick(T0 + 600)), 1);
        // No ack for a third of a lease (1 s) since the last one: abandon the session.
        let last = T0 + RENEW_RETRY_MS + 5;
        assert!(!a.tick(last + 1_000).contains(&Action::AbandonSession));
        assert_eq!(a.tick(last + 1_001), vec![Action::AbandonSession]);
        assert_eq!(renews(&a.tick(last + 1_200)), 0, "no session, no renewal");
    }

    #[test]
    fn a_shorter_lease_from_the_directory_renews_on_its_period_at_once() {
        // The agent assumes 3 s (renewals every 600 ms); the directory states 2 s, whose
        // session is abandoned after 666 ms without an ack. Renewals must follow the new
        // period from the moment it is known, or a session whose node answers every
        // renewal within 5 ms is abandoned.
        let mut a = core();
        let mut pending: Vec<(u64, u64)> = Vec::new();
        let mut acts = a.session_opened(T0);
        let mut now = T0;
        let mut lease = 3_000;
        while now < T0 + 5_000 {
            assert!(
                !acts.contains(&Action::AbandonSession),
                "abandoned at +{} ms",
                now - T0
            );
            for x in &acts {
                if let Action::Send(m) = x
                    && let Some(Out::Renew(r)) = &m.msg
                {
                    pending.push((now + 5, r.seq));
                }
            }
            now += 1;
            acts = a.tick(now);
            if let Some(i) = pending.iter().position(|(at, _)| *at <= now) {
                let (_, seq) = pending.remove(i);
                acts.extend(a.on_message(now, ack(seq, 2_000)));
                lease = a.fence.lease_ms;
            }
        }
        assert_eq!(lease, 2_000);
    }

    #[test]
    fn the_planted_no_self_fence_switch_keeps_roles_past_the_lease() {
        let mut a = opened();
        a.planted_no_self_fence = true;
        a.on_message(T0, set(3, &[("r1", 2)]));
        assert!(started(&acked(&mut a, T0), "r1").is_some());
        let late = a.stop_at + 60_000;
        a.session_closed(late);
        assert!(
            a.tick(late)
                .iter()
                .all(|x| !matches!(x, Action::Stop { .. }))
        );
    }

    #[test]
    fn a_fence_is_reported_after_the_next_ack_until_the_directory_records_it() {
        let mut a = opened();
        a.on_message(T0, set_recorded(3, &[("r1", 2)], &[], 0));
        let (_, proc) = started(&acked(&mut a, T0), "r1").expect("started");
        // Cut off: the session is abandoned, and at the fence time r1 is stopped.
        let stop_at = a.stop_at;
        assert!(a.tick(T0 + 1_001).contains(&Action::AbandonSession));
        let fenced_at = stop_at + 7;
        let acts = a.tick(fenced_at);
        assert!(acts.iter().any(|x| matches!(
            x,
            Action::Stop {
                why: StopWhy::LeaseExpired,
                ..
            }
        )));
        a.process_exited(fenced_at + 5, proc, false, "terminated");
        assert_eq!(a.fences, 1);
        // Back on a session: nothing before the node proved it takes fence reports and
        // acknowledged a renewal.
        let now = fenced_at + 2_000;
        assert_eq!(fence_reports(&a.session_opened(now)), vec![]);
        assert_eq!(
            fence_reports(&a.on_message(now, set_recorded(4, &[("r1", 2)], &[], 0))),
            vec![]
        );
        let once = vec![(1, "r1".to_string(), 2, now + 10 - fenced_at)];
        assert_eq!(fence_reports(&acked(&mut a, now + 10)), once);
        assert_eq!(
            fence_reports(&a.tick(now + 11)),
            vec![],
            "not without an ack"
        );
        // Not recorded yet (lost in an election): again after the next ack, and on a
        // new session after its first ack.
        let later = vec![(1, "r1".to_string(), 2, now + 20 - fenced_at)];
        assert_eq!(fence_reports(&acked(&mut a, now + 20)), later);
        a.session_closed(now + 30);
        a.session_opened(now + 30);
        a.on_message(now + 30, set_recorded(4, &[("r1", 2)], &[], 0));
        assert_eq!(fence_reports(&acked(&mut a, now + 30)).len(), 1);
        // Recorded: the set ahead of the next ack lists it, and it is sent no more.
        a.on_message(now + 40, set_recorded(5, &[("r1", 2)], &[1], 0));
        assert_eq!(fence_reports(&acked(&mut a, now + 40)), vec![]);
        assert!(a.fence_reports.is_empty());
    }

    #[test]
    fn a_node_without_fence_reports_is_sent_none() {
        let mut a = opened();
        a.fenced("r1".into(), 2, T0);
        a.on_message(T0, set(3, &[]));
        assert_eq!(fence_reports(&acked(&mut a, T0)), vec![]);
        assert_eq!(a.fence_reports.len(), 1, "kept for a node that takes it");
        // A later node that takes them gets it; a new session forgets what the last
        // node could take.
        a.session_opened(T0);
        a.on_message(T0, set_recorded(3, &[], &[], 0));
        assert_eq!(fence_reports(&acked(&mut a, T0)).len(), 1);
        a.session_opened(T0);
        a.on_message(T0, set(3, &[]));
        assert_eq!(fence_reports(&acked(&mut a, T0)), vec![]);
    }

    #[test]
    fn a_role_its_wrapper_fenced_is_reported_as_of_the_fence_time() {
        let mut a = opened();
        a.on_message(T0, set_recorded(3, &[("r1", 2)], &[], 0));
        let (_, proc) = started(&acked(&mut a, T0), "r1").expect("started");
        // The agent was frozen past its fence time: the wrapper stopped the role, and
        // the agent learns of it late.
        let stop_at = a.stop_at;
        a.process_exited(stop_at + 3_000, proc, true, "fenced by wrapper");
        assert_eq!(a.fences, 1);
        a.session_opened(stop_at + 3_000);
        a.on_message(stop_at + 3_000, set_recorded(3, &[("r1", 2)], &[], 0));
        assert_eq!(
            fence_reports(&acked(&mut a, stop_at + 3_100)),
            vec![(1, "r1".to_string(), 2, 3_100)]
        );
    }

    #[test]
    fn pending_fence_reports_are_bounded_and_the_dropped_counted() {
        let mut a = opened();
        let n = FENCE_REPORTS_MAX as u64 + 6;
        for i in 1..=n {
            a.fenced(format!("r{i}"), i, T0);
        }
        assert_eq!(a.fences, n);
        assert_eq!(a.fence_reports.len(), FENCE_REPORTS_MAX);
        assert_eq!(a.fence_reports_dropped, 6);
        assert_eq!(a.fence_reports.front().map(|f| f.number), Some(7));
        // Settled through 10, and 12 recorded: those are sent no more; the oldest of
        // the rest go out, a batch per ack.
        a.on_message(T0, set_recorded(3, &[], &[12], 10));
        let numbers = |acts: Vec<Action>| -> Vec<u64> {
            fence_reports(&acts)
                .into_iter()
                .map(|(number, ..)| number)
                .collect()
        };
        let expected: Vec<u64> = (11..=n).filter(|x| *x != 12).collect();
        let first = numbers(acked(&mut a, T0));
        assert_eq!(first, expected[..FENCE_REPORTS_PER_ACK]);
        // Those recorded, the next batch follows with the next ack.
        a.on_message(T0, set_recorded(4, &[], &first, 10));
        assert_eq!(
            numbers(acked(&mut a, T0)),
            expected[FENCE_REPORTS_PER_ACK..2 * FENCE_REPORTS_PER_ACK]
        );
    }
}
