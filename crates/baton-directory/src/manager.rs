//! # The Directory Manager: the directory's own failover
//!
//! Every node runs one. It is the only place that decides "am I the leader": it follows
//! `Raft::metrics()` and
//! - on gaining leadership (or a new term as leader): restarts every server's liveness
//!   clock at its own "now" and starts the controller;
//! - on losing it: stops the controller at once and forgets the liveness table.
//!
//! It also owns membership changes (add a learner, promote it once caught up, remove a
//! node without losing quorum), the controlled leadership transfer, and the optional
//! preferred-leader order (the directory's own "force execution on highest priority
//! server").
//!
//! ## Liveness (invariants 1 and 4)
//!
//! The liveness table and the confirmation round of renewals belong to
//! [`crate::liveness`]: the manager resets that table on gaining and losing leadership
//! (and restarts its clocks when a leader regains its quorum), and its controller asks
//! it which leases ran out. Renewals do not pass through the manager.
//!
//! ```text
//!  Raft metrics ──> Manager::spawn ──> Liveness::become_leader / lose_leadership
//!                        └──> controller_loop ──> Liveness::expire, restart_clocks;
//!                                                 ServersDown write ──> Liveness::declared
//!  session.rs / raft_service.rs claim ──> Manager::claim ──> Liveness::claim, claim_done
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use baton_core::{Command, ServerStatus};
use baton_proto::v1 as pb;
use baton_proto::v1::directory_client::DirectoryClient;
use baton_proto::v1::raft_client::RaftClient;
use openraft::{BasicNode, ServerState};
use tokio::sync::watch;
use tonic::{Request, Status};

use crate::config::NodeConfig;
use crate::error::{self, invalid, not_leader, status};
use crate::liveness::ClaimDecision;
use crate::node::Node;

/// How long a membership change may take (a learner catching up included).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node waits for a peer's answer during membership checks and transfers.
const PEER_TIMEOUT: Duration = Duration::from_millis(700);

pub struct Manager {
    /// Origin of the monotonic milliseconds of the controller's own timers.
    origin: Instant,
    role_cooldown_ms: u64,
    /// Flipped once to stop every background task of the node.
    shutdown: watch::Sender<bool>,
    /// Serialises membership changes and transfers: one at a time per node.
    membership: tokio::sync::Mutex<()>,
    /// Whether the controller counts this leader as without a quorum (its liveness
    /// decisions paused until the quorum returns and every clock restarts).
    without_quorum: std::sync::atomic::AtomicBool,
}

impl Manager {
    pub fn new(config: &NodeConfig) -> Self {
        Manager {
            origin: Instant::now(),
            role_cooldown_ms: config.role_cooldown_ms,
            shutdown: watch::channel(false).0,
            membership: tokio::sync::Mutex::new(()),
            without_quorum: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn role_cooldown_ms(&self) -> u64 {
        self.role_cooldown_ms
    }

    /// Whether this node's controller counts it as a leader without a quorum: liveness
    /// decisions paused, every clock restarted when the quorum returns.
    pub fn without_quorum(&self) -> bool {
        self.without_quorum.load(Ordering::SeqCst)
    }

    fn mono_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Follow Raft's metrics for the life of the node: start the controller on gaining
    /// leadership, stop it on losing it.
    pub fn spawn(node: Arc<Node>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut metrics = node.raft.metrics();
            let mut shutdown = node.manager.shutdown_signal();
            let mut controller: Option<(u64, tokio::task::JoinHandle<()>)> = None;
            let mut priority_task: Option<tokio::task::JoinHandle<()>> = None;
            loop {
                let (leading, term) = {
                    let m = metrics.borrow_and_update();
                    (
                        m.state == ServerState::Leader && m.current_leader == Some(node.id),
                        m.current_term,
                    )
                };
                let running_term = controller.as_ref().map(|(t, _)| *t);
                if leading && running_term != Some(term) {
                    if let Some((_, h)) = controller.take() {
                        h.abort();
                    }
                    node.liveness.become_leader(term);
                    tracing::info!(
                        node = node.id,
                        term,
                        "leader: liveness clocks restarted, controller started"
                    );
                    controller = Some((term, tokio::spawn(controller_loop(node.clone(), term))));
                    if !node.config.priority.is_empty() && priority_task.is_none() {
                        priority_task = Some(tokio::spawn(priority_loop(node.clone(), term)));
                    }
                } else if !leading && let Some((t, h)) = controller.take() {
                    h.abort();
                    node.manager.without_quorum.store(false, Ordering::SeqCst);
                    node.liveness.lose_leadership();
                    if let Some(p) = priority_task.take() {
                        p.abort();
                    }
                    tracing::info!(
                        node = node.id,
                        term = t,
                        "no longer leader: controller stopped"
                    );
                }
                tokio::select! {
                    r = metrics.changed() => if r.is_err() { break },
                    _ = shutdown.changed() => break,
                }
            }
            if let Some((_, h)) = controller.take() {
                h.abort();
            }
            if let Some(p) = priority_task.take() {
                p.abort();
            }
        })
    }

    /// A new agent instance claims a server name held by another instance (see
    /// [`Claim`]). Leader only.
    pub async fn claim(
        &self,
        node: &Node,
        req: pb::ClaimRequest,
    ) -> Result<pb::ClaimReply, Status> {
        if !node.is_leader() {
            return Err(not_leader(node.leader_for_clients()));
        }
        let holder = node.read(|st| {
            st.servers
                .get(&req.server)
                .filter(|s| s.status == ServerStatus::Up)
                .map(|s| (s.instance.clone(), s.instance_since_ms))
        });
        let reply = |outcome: &str, revision: u64| {
            let (h, since) = holder.clone().unwrap_or_default();
            pb::ClaimReply {
                outcome: outcome.to_string(),
                revision,
                holder_instance: h.id,
                holder_address: h.address,
                holder_since_ms: since,
            }
        };
        let lease = node.lease();
        let quorum_fresh = node
            .raft
            .metrics()
            .borrow()
            .millis_since_quorum_ack
            .is_some_and(|ms| ms <= node.config.election_timeout_max_ms);
        let holder_id = holder.as_ref().map(|(h, _)| h.id.as_str());
        let decision = node.liveness.claim(
            node,
            &req.server,
            &req.instance,
            holder_id,
            lease,
            quorum_fresh,
        )?;
        match decision {
            ClaimDecision::Free => Ok(reply("free", 0)),
            ClaimDecision::Pending => Ok(reply("pending", 0)),
            ClaimDecision::Held => Ok(reply("held", 0)),
            ClaimDecision::HeldByClaimant(other) => Ok(pb::ClaimReply {
                holder_instance: other,
                holder_address: "another new instance claiming it".into(),
                ..reply("held", 0)
            }),
            ClaimDecision::TakeOver(old) => {
                let cmd = Command::RegisterAgent {
                    server: req.server.clone(),
                    kinds: req.kinds.clone(),
                    main: req.main,
                    instance: baton_core::AgentInstance {
                        id: req.instance.clone(),
                        address: req.address.clone(),
                    },
                    replaces: Some(old.clone()),
                };
                let r = tokio::time::timeout(
                    Duration::from_millis(lease.lease_ms),
                    node.write(cmd, true),
                )
                .await
                .map_err(|_| error::unavailable("taking the server name over timed out"))??;
                tracing::info!(server = %req.server, from = %old, to = %req.instance, "holder's lease ran out: server name taken over by the new agent instance");
                node.liveness.claim_done(&req.server);
                Ok(reply("granted", r.revision))
            }
        }
    }

    /// Add node `id` at `addr`: as a learner first (blocking until it has caught up), then
    /// promoted to voter.
    pub async fn add_node(&self, node: &Node, id: u64, addr: String) -> Result<String, Status> {
        let _one = self.membership.lock().await;
        let (members, voters) = node.members();
        if voters.contains(&id) {
            if members.get(&id) == Some(&addr) {
                return Ok(format!("node {id} is already a voter at {addr}"));
            }
            return Err(status(
                tonic::Code::AlreadyExists,
                "ALREADY_EXISTS",
                format!(
                    "node {id} is already a voter at {}; remove it first to change its address",
                    members[&id]
                ),
            ));
        }
        let raft = &node.raft;
        tokio::time::timeout(
            MEMBERSHIP_TIMEOUT,
            raft.add_learner(id, BasicNode { addr: addr.clone() }, true),
        )
        .await
        .map_err(|_| {
            error::unavailable(format!(
                "node {id} at {addr} did not catch up within {MEMBERSHIP_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| error::unavailable(format!("adding node {id} as a learner: {e}")))?;
        let mut new_voters = voters.clone();
        new_voters.insert(id);
        tokio::time::timeout(
            MEMBERSHIP_TIMEOUT,
            raft.change_membership(new_voters, false),
        )
        .await
        .map_err(|_| error::unavailable("membership change timed out"))?
        .map_err(|e| error::unavailable(format!("promoting node {id} to voter: {e}")))?;
        Ok(format!("node {id} at {addr} joined as a voter"))
    }

    /// Remove node `id`, refusing when that would remove the last voter or leave fewer
    /// reachable voters than a quorum of the new membership.
    pub async fn remove_node(&self, node: &Node, id: u64) -> Result<String, Status> {
        let _one = self.membership.lock().await;
        let (members, voters) = node.members();
        if !members.contains_key(&id) {
            return Err(status(
                tonic::Code::NotFound,
                "NOT_FOUND",
                format!("node {id} is not a member of the cluster"),
            ));
        }
        let new_voters: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != id).collect();
        if new_voters.is_empty() {
            return Err(status(
                tonic::Code::FailedPrecondition,
                "FAILED_PRECONDITION",
                format!("node {id} is the last voter; a cluster needs at least one"),
            ));
        }
        let mut reachable = 0;
        for v in &new_voters {
            if *v == node.id || probe(node, &members[v]).await {
                reachable += 1;
            }
        }
        let quorum = new_voters.len() / 2 + 1;
        if reachable < quorum {
            return Err(status(
                tonic::Code::FailedPrecondition,
                "FAILED_PRECONDITION",
                format!(
                    "removing node {id} would leave {reachable} reachable voter(s) of {}, below a quorum of {quorum}: the cluster would stop serving",
                    new_voters.len()
                ),
            ));
        }
        // `retain = false`: a removed voter does not linger as a learner.
        let change = if voters.contains(&id) {
            openraft::ChangeMembers::RemoveVoters([id].into())
        } else {
            openraft::ChangeMembers::RemoveNodes([id].into())
        };
        tokio::time::timeout(
            MEMBERSHIP_TIMEOUT,
            node.raft.change_membership(change, false),
        )
        .await
        .map_err(|_| error::unavailable("membership change timed out"))?
        .map_err(|e| error::unavailable(format!("removing node {id}: {e}")))?;
        Ok(format!("node {id} removed"))
    }

    /// Move leadership to `target` by a controlled election: the other followers stop
    /// electing and the leader stops heartbeats, so that only `target` times out; then
    /// `target` is told to elect, and every switch is turned back on.
    /// `caller` is who asked (named to the leader when this node forwards the request).
    pub async fn transfer_leader(
        &self,
        node: &Node,
        target: u64,
        caller: &crate::auth::Caller,
    ) -> Result<String, Status> {
        let (members, voters) = node.members();
        if !voters.contains(&target) {
            return Err(invalid(format!("node {target} is not a voter")));
        }
        let Some((leader, leader_addr)) = node.leader() else {
            return Err(not_leader(None));
        };
        if leader == target {
            return Ok(format!("node {target} already leads"));
        }
        if leader != node.id {
            // Forward to the leader, which orchestrates.
            let mut c = DirectoryClient::new(node.channel(&leader_addr)?);
            let mut r = Request::new(pb::TransferLeaderRequest { id: target });
            r.set_timeout(Duration::from_secs(10));
            if let Some(by) = caller.forward_value() {
                r.metadata_mut().insert(crate::auth::BY_KEY, by);
            }
            return c.transfer_leader(r).await.map(|r| r.into_inner().summary);
        }
        let _one = self.membership.lock().await;
        let others: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|v| *v != target && *v != node.id)
            .collect();
        // Everything below is undone on every path: at the end, on an error, and when
        // this handler is dropped midway (its caller gave up). And each switch has a
        // bound of its own, so even a crash of this node leaves nothing off for long.
        let bound = Duration::from_millis(node.config.election_timeout_max_ms * 4 + 5_000);
        let _undo = TransferGuard {
            node,
            peers: voters
                .iter()
                .filter(|v| **v != node.id)
                .filter_map(|v| node.channel(&members[v]).ok())
                .collect(),
        };
        // Pause writes: replicated entries would keep refreshing the followers' leader
        // lease (so they refuse the target's vote) and could leave the target's log
        // behind theirs. Clients see UNAVAILABLE and retry; it lasts about a second.
        node.pause_writes(Some(bound));
        let caught_up = node
            .raft
            .wait(Some(Duration::from_secs(2)))
            .metrics(
                |m| {
                    let last = m.last_log_index;
                    m.replication
                        .as_ref()
                        .is_some_and(|r| r.get(&target).cloned().flatten().map(|l| l.index) == last)
                },
                "target caught up",
            )
            .await
            .is_ok();
        if !caught_up {
            return Err(error::unavailable(format!(
                "node {target} has not caught up with the leader's log; try again"
            )));
        }
        for o in &others {
            let _ = control(node, &members[o], Some(false), None, false, bound).await;
        }
        node.switch_timers(None, Some(false), bound);
        // The followers refuse votes while their leader lease (the maximum election
        // timeout since they last heard from the leader) runs: let it run out.
        let wait = Duration::from_millis(node.config.election_timeout_max_ms + 100);
        tokio::time::sleep(wait).await;
        let elect = control(node, &members[&target], None, None, true, bound).await;
        let won = node
            .raft
            .wait(Some(Duration::from_secs(5)))
            .metrics(|m| m.current_leader == Some(target), "transfer")
            .await
            .is_ok();
        match (elect, won) {
            (_, true) => Ok(format!("node {target} now leads")),
            (Err(e), false) => Err(error::unavailable(format!(
                "could not reach node {target} to start its election: {e}"
            ))),
            (Ok(()), false) => Err(error::unavailable(format!(
                "node {target} did not win the election within 5 s; leadership stays where it is"
            ))),
        }
    }
}

/// Whether the node at `addr` answers a local status request.
async fn probe(node: &Node, addr: &str) -> bool {
    let Ok(ch) = node.channel(addr) else {
        return false;
    };
    let mut c = DirectoryClient::new(ch);
    let mut r = Request::new(pb::ClusterStatusRequest { local: true });
    r.set_timeout(PEER_TIMEOUT);
    matches!(
        tokio::time::timeout(PEER_TIMEOUT, c.cluster_status(r)).await,
        Ok(Ok(_))
    )
}

async fn control(
    node: &Node,
    addr: &str,
    elect: Option<bool>,
    heartbeat: Option<bool>,
    trigger_elect: bool,
    off_for: Duration,
) -> Result<(), Status> {
    let mut c = RaftClient::new(node.channel(addr)?);
    let mut r = Request::new(pb::ControlRequest {
        elect,
        heartbeat,
        trigger_elect,
        off_for_ms: off_for.as_millis() as u64,
    });
    r.set_timeout(PEER_TIMEOUT);
    c.control(r).await.map(|_| ())
}

/// Undoes a leadership transfer's switches when dropped, whichever way the transfer
/// ends: writes resume, this node's timers come back on, and every other voter is told
/// to turn its timers back on (in a task of its own, since a drop cannot wait).
struct TransferGuard<'a> {
    node: &'a Node,
    peers: Vec<tonic::transport::Channel>,
}

impl Drop for TransferGuard<'_> {
    fn drop(&mut self) {
        self.node.pause_writes(None);
        self.node
            .switch_timers(Some(true), Some(true), Duration::ZERO);
        for ch in self.peers.drain(..) {
            tokio::spawn(async move {
                let mut r = Request::new(pb::ControlRequest {
                    elect: Some(true),
                    heartbeat: Some(true),
                    trigger_elect: false,
                    off_for_ms: 0,
                });
                r.set_timeout(PEER_TIMEOUT);
                let _ = RaftClient::new(ch).control(r).await;
            });
        }
    }
}

/// The leader-only loop: declare expired servers down, and tick time-based placement.
async fn controller_loop(node: Arc<Node>, term: u64) {
    let m = &node.manager;
    // Check often enough that detection adds at most a few percent of the lease.
    let period = Duration::from_millis((node.lease().lease_ms / 50).clamp(10, 100));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick_ms = 0u64;
    // Directory time: from now on, entries this node proposes in `term` carry the
    // monotonic time it measured since its previous one.
    node.directory_time.lead(term);
    // A leader that has not heard from a quorum for this long counts as without one.
    let quorum_stale_ms = node.config.election_timeout_max_ms;
    let mut quorum_lost = false;
    // Cluster-wide settings travel in the log: propose ours if the state differs.
    let history_max = node.config.history_max;
    if node.read(|st| st.history_max != history_max as usize) {
        match bounded_write(&node, Command::Configure { history_max }).await {
            Ok(r) => tracing::info!("{}", r.summary),
            Err(e) => tracing::warn!("setting the history size failed: {e}"),
        }
    }
    seed_lease(&node).await;
    // A shortened lease waiting to settle: (the expiry lease and the lease it waits
    // for, since when this leader has seen that pair, ms on the manager's clock).
    let mut settling: Option<(u64, u64, u64)> = None;
    loop {
        let wait_from_ms = m.mono_ms();
        ticker.tick().await;
        // A leader that was itself paused (SIGSTOP, a VM or GC stall) confirmed no
        // renewal meanwhile, yet its followers may answer its first heartbeat after the
        // pause before this loop looks at the quorum: restart every clock, as on a
        // regained quorum (leases only lengthen). A quarter lease is far below what a
        // pause needs to expire a lease renewed every fifth of one. Found by the e2e
        // test `crash_quarantine_and_directory_freeze` (every node frozen, then resumed:
        // roles moved) once heartbeats came every 30 ms.
        // (Only the wait for the tick is timed, where the loop spends its time: a slow
        // write of the loop's own does not count as a pause.)
        let paused_ms = m.mono_ms().saturating_sub(wait_from_ms);
        if paused_ms > period.as_millis() as u64 + node.lease().lease_ms / 4 {
            node.liveness.restart_clocks(term);
            tracing::warn!(
                term,
                paused_ms,
                "this leader was paused: liveness clocks restarted"
            );
        }
        settle_lease(&node, &mut settling).await;
        let since_quorum_ack = {
            let metrics = node.raft.metrics();
            let metrics = metrics.borrow();
            if metrics.current_term != term {
                return;
            }
            metrics.millis_since_quorum_ack
        };
        // 0. A leader without a quorum confirms no renewal: agents cannot keep their
        //    leases, through no fault of theirs. It decides nothing meanwhile, and on
        //    regaining its quorum restarts every clock, as a new leader would (leases
        //    only lengthen; invariant 4). Found by baton-sim (seed 380 of its first
        //    version): a leader whose one follower crashed while the link to the other
        //    was broken kept its term, and declared every server down when the crashed
        //    follower came back.
        if since_quorum_ack.is_none_or(|ms| ms > quorum_stale_ms) {
            if !quorum_lost {
                tracing::warn!(term, "leader without a quorum: liveness decisions paused");
            }
            quorum_lost = true;
            m.without_quorum.store(true, Ordering::SeqCst);
            continue;
        }
        if quorum_lost {
            quorum_lost = false;
            node.liveness.restart_clocks(term);
            m.without_quorum.store(false, Ordering::SeqCst);
            tracing::info!(term, "quorum regained: liveness clocks restarted");
        }
        let lease = node.lease();
        // 1. Expired leases, decided and marked under the liveness table's lock.
        let Some(expired) = node.liveness.expire(&node, term, lease) else {
            return;
        };
        if !expired.is_empty() {
            tracing::warn!(servers = ?expired, "leases expired: declaring servers down");
            match bounded_write(
                &node,
                Command::ServersDown {
                    servers: expired.clone(),
                },
            )
            .await
            {
                Ok(reply) => node.liveness.declared(&expired, reply.revision),
                Err(e) => {
                    tracing::warn!("declaring {expired:?} down failed: {e}");
                    // Keep them marked: their renewals stay refused while we lead.
                }
            }
        }
        // 2. Time-based placement (failback delays, quarantine ends), on directory time:
        //    the applied state's plus what this leader measured and has not proposed.
        //    While a timer is pending, a Tick also carries that time to the log often
        //    enough (`tick_due`); with none pending nothing is written.
        let unproposed = node.directory_time.unproposed_ms(term);
        let due = node.read(|st| baton_core::controller::tick_due(st, unproposed));
        let now = m.mono_ms();
        if due && now.saturating_sub(last_tick_ms) >= 200 {
            last_tick_ms = now;
            if let Err(e) = bounded_write(&node, Command::Tick).await {
                tracing::debug!("tick failed: {e}");
            }
        }
    }
}

/// A new cluster takes the lease and grace of its first leader's configuration. After
/// that the cluster's values rule: a node configured otherwise says so and follows them
/// (`baton cluster set` changes them).
async fn seed_lease(node: &Node) {
    let (lease_ms, grace_ms) = node.read(|st| (st.lease_ms, st.grace_ms));
    let (want_lease, want_grace) = (node.config.lease_ms, node.config.grace_ms);
    if lease_ms == 0 {
        let cmd = Command::SetLease {
            lease_ms: want_lease,
            grace_ms: want_grace,
        };
        match bounded_write(node, cmd).await {
            Ok(r) => tracing::info!("new cluster: {}", r.summary),
            Err(e) => tracing::warn!("seeding the cluster's lease failed: {e}"),
        }
    } else if (lease_ms, grace_ms) != (want_lease, want_grace) {
        tracing::warn!(
            cluster_lease_ms = lease_ms,
            cluster_grace_ms = grace_ms,
            configured_lease_ms = want_lease,
            configured_grace_ms = want_grace,
            "this node's --lease/--grace differ from the cluster's, which apply (they only seed a new cluster; change them with `baton cluster set`)"
        );
    }
}

/// After a shortening, failovers keep waiting the longest lease any agent may still
/// hold an acknowledgement of (`expiry_lease_ms`, the longest lease since the last
/// settle). This leader waits that lease twice plus the grace, counted from when it saw
/// the current (expiry, lease) pair: once for the acknowledgements themselves, once
/// more for renewals whose confirmation round began before the change committed (they
/// may still be acknowledged with an older lease). Any later change of the lease starts
/// the wait again, and the settle names the pair it waited for, so a change committed
/// meanwhile makes it a no-op. A new leader starts counting anew. Found by the
/// simulator: a settle timed from an earlier shortening let a second one fail servers
/// over while agents still held acknowledgements of the lease in between.
async fn settle_lease(node: &Node, settling: &mut Option<(u64, u64, u64)>) {
    let lease = node.lease();
    if lease.expiry_lease_ms <= lease.lease_ms {
        *settling = None;
        return;
    }
    let now = node.manager.mono_ms();
    let since = match *settling {
        Some((expiry, l, since)) if expiry == lease.expiry_lease_ms && l == lease.lease_ms => since,
        _ => {
            *settling = Some((lease.expiry_lease_ms, lease.lease_ms, now));
            now
        }
    };
    let wait = 2 * lease.expiry_lease_ms + lease.grace_ms;
    if now.saturating_sub(since) >= wait {
        let cmd = Command::SettleLease {
            expiry_lease_ms: lease.expiry_lease_ms,
            lease_ms: lease.lease_ms,
        };
        match bounded_write(node, cmd).await {
            Ok(r) => tracing::info!("{}", r.summary),
            Err(e) => tracing::debug!("settling the lease failed: {e}"),
        }
    }
}

/// A controller write, bounded by a lease: while a write hangs (the quorum is gone) the
/// controller must get back to watching the quorum, so that it pauses its decisions and
/// restarts every clock when the quorum returns, instead of declaring every server down.
/// A write that times out may still commit later; every controller write is safe to
/// repeat (a `ServersDown` of a server already down, a `Tick`, settings).
async fn bounded_write(node: &Node, cmd: Command) -> Result<pb::WriteReply, Status> {
    node.faults.controller_write(node.id, cmd.name());
    let limit = Duration::from_millis(node.lease().lease_ms);
    tokio::time::timeout(limit, node.write(cmd, true))
        .await
        .map_err(|_| {
            error::unavailable(format!("controller write not committed within {limit:?}"))
        })?
}

/// With a preferred-leader order: when a node ranked above this leader has been healthy
/// (answering and caught up) for the configured delay, hand leadership to it.
async fn priority_loop(node: Arc<Node>, term: u64) {
    let order = node.config.priority.clone();
    let delay = Duration::from_millis(node.config.priority_delay_ms);
    let mut healthy_since: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticker.tick().await;
        if node.raft.metrics().borrow().current_term != term || !node.is_leader() {
            return;
        }
        let my_rank = order
            .iter()
            .position(|id| *id == node.id)
            .unwrap_or(usize::MAX);
        let (members, voters) = node.members();
        let m = node.raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        for (rank, id) in order.iter().enumerate() {
            if rank >= my_rank {
                break;
            }
            if !voters.contains(id) {
                continue;
            }
            let caught_up = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .is_some_and(|l| last.saturating_sub(l.index) <= 10);
            let healthy = caught_up && probe(&node, &members[id]).await;
            if !healthy {
                healthy_since.remove(id);
                continue;
            }
            let since = *healthy_since.entry(*id).or_insert_with(Instant::now);
            if since.elapsed() >= delay {
                tracing::info!(
                    target = id,
                    "preferred leader is healthy: transferring leadership"
                );
                // In its own task: losing leadership aborts this loop, and the transfer
                // must still turn every node's election timer back on.
                let (n, target) = (node.clone(), *id);
                let t = tokio::spawn(async move {
                    n.manager
                        .transfer_leader(&n, target, &crate::auth::Caller::Anyone)
                        .await
                });
                match t.await {
                    Ok(Ok(s)) => tracing::info!("{s}"),
                    Ok(Err(e)) => tracing::warn!("preferred-leader transfer failed: {e}"),
                    Err(e) => tracing::warn!("preferred-leader transfer task: {e}"),
                }
                healthy_since.clear();
            }
            break; // only the highest-ranked candidate matters
        }
    }
}
