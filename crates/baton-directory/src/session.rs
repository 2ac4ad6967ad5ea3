//! Agent sessions: the `Agent` service and the renewal pipeline.
//!
//! An agent holds one bidirectional stream with any node. The node
//! 1. registers the agent's server (a Raft write: the server exists and is up),
//! 2. sends the server's complete assignment set, and again every time it changes, tagged
//!    with the node's applied revision (sets are idempotent: whatever the agent runs that
//!    is not in the latest set must stop),
//! 3. acknowledges renewals. Renewals from every session on this node go through one
//!    bounded queue to a batcher, which has the leader's liveness table confirm them in
//!    one call per batch (`crate::liveness`: locally when this node leads, through
//!    `ForwardRenewals` otherwise). The batcher answers a session only once this node
//!    has applied the batch's read index (the leader has by the time its table answers;
//!    a follower may still have to). The session then sends any changed assignment set
//!    first, and the ack after it, on the same ordered stream: when an agent processes
//!    an ack, it already holds every assignment change committed before that ack was
//!    granted. That ordering is what lets an agent restart its roles after a fence
//!    without running one that moved away meanwhile (invariant 1).
//!
//! A node cut off from the leader cannot confirm anything, so its agents' leases run out
//! and they fence themselves, exactly as if the directory had vanished.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use baton_core::{Command, ServerStatus};
use baton_proto::v1 as pb;
use baton_proto::v1::agent_message::Msg as In;
use baton_proto::v1::agent_server::Agent;
use baton_proto::v1::directory_message::Msg as Out;
use baton_proto::v1::raft_client::RaftClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::error::{invalid, unavailable};
use crate::liveness::Renewals;
use crate::node::Node;

/// Most servers confirmed in one batch.
pub const RENEWAL_BATCH_MAX: usize = 10_000;
/// Renewals queued on one node waiting for a batch. A full queue refuses new renewals
/// (the agent simply renews again), it never blocks a session.
pub const RENEWAL_QUEUE_MAX: usize = 16_384;
/// Outbound messages buffered per session.
const SESSION_BUFFER: usize = 16;
/// How long a new session may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A renewal waiting for its batch.
pub struct PendingRenewal {
    server: String,
    /// The renewing agent instance: only the one holding the server name renews it.
    instance: String,
    reply: oneshot::Sender<Answer>,
}

/// What the batcher tells a session about its renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// Confirmed, and this node has applied the round's read index: send the agent any
    /// changed assignment set, then the acknowledgement.
    Confirmed,
    /// Confirmed by the leader, but this node did not apply the round's read index in
    /// time: no acknowledgement (the agent renews again).
    Behind,
    /// Not confirmed.
    Refused,
}

pub type RenewalSender = mpsc::Sender<PendingRenewal>;

pub fn renewal_queue() -> (RenewalSender, mpsc::Receiver<PendingRenewal>) {
    mpsc::channel(RENEWAL_QUEUE_MAX)
}

/// Confirm queued renewals in batches until the queue closes.
pub async fn run_batcher(node: Arc<Node>, mut rx: mpsc::Receiver<PendingRenewal>) {
    let timeout = Duration::from_millis(node.lease().lease_ms / 3);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < RENEWAL_BATCH_MAX {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let renewals: Renewals = batch
            .iter()
            .map(|p| (p.server.clone(), p.instance.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // A batch in flight to a leader that has since been replaced (cut off: its
        // answer may never come) is given up at once: its renewals go unanswered and
        // the agents' next ones, 100 ms later, go to the new leader. Waiting out the
        // timeout instead held every renewal of this node back for up to a third of a
        // lease after an election.
        let leader_then = node.raft.metrics().borrow().current_leader;
        let confirmed_or_replaced = async {
            tokio::select! {
                r = confirm(&node, renewals) => r,
                () = node.leader_changed(leader_then) => Err(unavailable(
                    "the leader changed while the renewals were being confirmed",
                )),
            }
        };
        let result = crate::metrics::timed(
            &node.metrics.confirmation_seconds,
            tokio::time::timeout(timeout, confirmed_or_replaced),
        )
        .await;
        let (confirmed, read_index) = match result {
            Ok(Ok((c, ri))) => (c.into_iter().collect::<BTreeSet<_>>(), ri),
            Ok(Err(e)) => {
                tracing::debug!("renewal batch not confirmed: {e}");
                (BTreeSet::new(), 0)
            }
            Err(_) => {
                tracing::debug!("renewal batch timed out after {timeout:?}");
                (BTreeSet::new(), 0)
            }
        };
        if node.revision() >= read_index {
            answer(&node, batch, &confirmed, true);
        } else {
            // Confirmed by the leader, ahead of this node's applied state: wait for it
            // in a task of its own, so the next batch does not wait behind this one.
            let node = node.clone();
            tokio::spawn(async move {
                let wait = Duration::from_millis(node.lease().lease_ms / 2);
                let applied = node.wait_applied(read_index, wait).await.is_ok();
                answer(&node, batch, &confirmed, applied);
            });
        }
    }
}

/// Tell each session of `batch` whether its renewal was confirmed (`applied`: and this
/// node has applied the round's read index).
fn answer(
    node: &Node,
    batch: Vec<PendingRenewal>,
    confirmed: &BTreeSet<(String, String)>,
    applied: bool,
) {
    for PendingRenewal {
        server,
        instance,
        reply,
    } in batch
    {
        let answer = match (confirmed.contains(&(server, instance)), applied) {
            (true, true) => Answer::Confirmed,
            (true, false) => Answer::Behind,
            (false, _) => Answer::Refused,
        };
        match answer {
            Answer::Confirmed => node.metrics.renewals.inc(),
            _ => node.metrics.renewals_refused.inc(),
        };
        let _ = reply.send(answer);
    }
}

/// Confirm a batch: by this node's liveness table when it leads (the table checks
/// leadership in its round; this check only picks the way), by the leader's otherwise.
async fn confirm(node: &Node, renewals: Renewals) -> Result<(Renewals, u64), Status> {
    if node.is_leader() {
        return node.liveness.confirm(node, renewals).await;
    }
    let Some((leader, addr)) = node.leader() else {
        return Err(unavailable("no leader known"));
    };
    // A cut link drops packets, as a real partition does: the forward to that leader gets
    // no answer until the link heals (or the batch is given up).
    while node.faults.is_cut(node.id, leader) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (servers, instances) = renewals.into_iter().unzip();
    let mut c = RaftClient::new(node.channel(&addr)?);
    let r = c
        .forward_renewals(pb::RenewalBatch { servers, instances })
        .await?
        .into_inner();
    if r.confirmed_instances.len() != r.confirmed.len() {
        return Err(unavailable(
            "the leader answered renewals without agent instances (an older version?)",
        ));
    }
    Ok((
        r.confirmed.into_iter().zip(r.confirmed_instances).collect(),
        r.read_index,
    ))
}

/// Ask the leader about a claim of a held server name (see the manager's `Claim`).
async fn claim(node: &Node, req: pb::ClaimRequest) -> Result<pb::ClaimReply, Status> {
    if node.is_leader() {
        return node.manager.claim(node, req).await;
    }
    let Some((_, addr)) = node.leader() else {
        return Err(unavailable("no leader known"));
    };
    let mut c = RaftClient::new(node.channel(&addr)?);
    let mut r = Request::new(req);
    r.set_timeout(Duration::from_secs(2));
    Ok(c.claim(r).await?.into_inner())
}

/// The refusal of a session whose server name another live instance holds.
fn held_status(server: &str, mine: &str, holder: &str, address: &str, since_ms: u64) -> Status {
    crate::error::status(
        tonic::Code::FailedPrecondition,
        crate::error::SERVER_HELD,
        format!(
            "server {server:?} is held by another live agent instance {holder:?} (from {}, holding it since {}); this instance {mine:?} must not run its roles: two agents must not share a server name",
            if address.is_empty() {
                "an unknown address"
            } else {
                address
            },
            fmt_wall_ms(since_ms)
        ),
    )
}

/// Wall-clock ms as RFC 3339 (UTC), for messages.
fn fmt_wall_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Claim the server name for `instance` until the leader grants it (the holder's lease
/// ran out) or refuses it (the holder proved alive). While waiting, the agent is told so
/// every claim period, which also keeps it from abandoning the session.
async fn claim_name(
    node: &Node,
    hello: &pb::Hello,
    instance: &baton_core::AgentInstance,
    tx: &Outbound,
) -> Result<(), Status> {
    let lease_ms = node.lease().lease_ms;
    let period = Duration::from_millis((lease_ms / 8).clamp(25, 500));
    // The holder is declared gone lease + grace after its last renewal; a few leases
    // more is the bound for everything else (an election meanwhile).
    let deadline = Instant::now() + Duration::from_millis(4 * lease_ms + 5_000);
    let register = Command::RegisterAgent {
        server: hello.server.clone(),
        kinds: hello.kinds.clone(),
        main: hello.main,
        instance: instance.clone(),
        replaces: None,
    };
    loop {
        let req = pb::ClaimRequest {
            server: hello.server.clone(),
            instance: instance.id.clone(),
            kinds: hello.kinds.clone(),
            main: hello.main,
            address: instance.address.clone(),
        };
        match claim(node, req).await {
            Ok(r) => match r.outcome.as_str() {
                "granted" => {
                    return node
                        .wait_applied(r.revision, Duration::from_millis(lease_ms))
                        .await;
                }
                "free" => match Box::pin(node.write(register.clone(), false)).await {
                    Ok(w) => {
                        return node
                            .wait_applied(w.revision, Duration::from_millis(lease_ms))
                            .await;
                    }
                    Err(e) if !baton_proto::is_server_held(&e) => return Err(e),
                    Err(_) => {} // taken meanwhile: claim again
                },
                "held" => {
                    return Err(held_status(
                        &hello.server,
                        &instance.id,
                        &r.holder_instance,
                        &r.holder_address,
                        r.holder_since_ms,
                    ));
                }
                _ => {
                    let w = pb::DirectoryMessage {
                        msg: Some(Out::Waiting(pb::Waiting {
                            holder_instance: r.holder_instance,
                            holder_address: r.holder_address,
                            holder_since_ms: r.holder_since_ms,
                        })),
                    };
                    tx.send(Ok(Box::new(w)))
                        .await
                        .map_err(|_| Status::cancelled("agent went away"))?;
                }
            },
            Err(e) => tracing::debug!(server = %hello.server, "claim not answered: {e}"),
        }
        if Instant::now() >= deadline {
            return Err(unavailable(format!(
                "could not take server name {:?} over within {} ms; reconnect",
                hello.server,
                4 * lease_ms + 5_000
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = tx.closed() => return Err(Status::cancelled("agent went away")),
        }
    }
}

pub struct AgentService {
    pub node: Arc<Node>,
    pub renewals: RenewalSender,
}

/// Counts the session in `cluster status` for as long as it lives.
struct SessionGuard(Arc<Node>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A session's outbound queue. Messages are boxed: tokio's channel allocates its first
/// block of 32 slots when it is created, and a `DirectoryMessage` is 96 bytes inline
/// against 8 for a box, so every idle session held about 3 KiB of empty slots (of 13 kB
/// in all at 10,000 sessions); boxed, 0.5 KiB.
type Outbound = mpsc::Sender<Result<Box<pb::DirectoryMessage>, Status>>;

#[tonic::async_trait]
impl Agent for AgentService {
    type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::DirectoryMessage, Status>> + Send>>;

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // The agent's address as this node sees it: shown to operators with the instance.
        let address = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let caller = crate::auth::Caller::of(&req)?;
        let mut inbound = req.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(pb::AgentMessage {
                msg: Some(In::Hello(h)),
            }))) => h,
            Ok(Ok(_)) => return Err(invalid("a session must open with a Hello message")),
            Ok(Err(s)) => return Err(s),
            Err(_) => return Err(invalid("no Hello within 5 s")),
        };
        baton_core::names::check_name("server", &hello.server).map_err(|r| invalid(r.message))?;
        // An agent speaks only for the server its certificate names.
        caller.may_run(&hello.server).inspect_err(|e| {
            tracing::warn!(%address, "agent session refused: {}", e.message());
        })?;
        let instance = baton_core::AgentInstance {
            id: hello.instance.clone(),
            address,
        };
        baton_core::Command::RegisterAgent {
            server: hello.server.clone(),
            kinds: hello.kinds.clone(),
            main: hello.main,
            instance: instance.clone(),
            replaces: None,
        }
        .validate()
        .map_err(|r| invalid(r.message))?;
        let (tx, rx) = mpsc::channel(SESSION_BUFFER);
        let node = self.node.clone();
        let renewals = self.renewals.clone();
        tokio::spawn(async move {
            node.sessions.fetch_add(1, Ordering::Relaxed);
            let _guard = SessionGuard(node.clone());
            let server = hello.server.clone();
            if let Err(s) = run_session(&node, hello, instance, inbound, &tx, renewals).await {
                tracing::debug!(%server, "session ended: {s}");
                let _ = tx.send(Err(s)).await;
            }
        });
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|m| m.map(|boxed| *boxed)),
        )))
    }
}

/// What one assignment set tells the agent: (assignments, releasing, fence reports
/// recorded).
type SetContent = (Vec<pb::Assignment>, Vec<pb::Assignment>, pb::FencesRecorded);

/// What this session last told its agent.
struct Sent {
    /// The content of the last set sent.
    assignments: Option<SetContent>,
    /// The revision the set was last read at. The set is a function of the state, and
    /// the state of the revision (see [`SetsCache`]): at the same revision there is
    /// nothing to read again. Most renewal acks find it so.
    read_at: Option<u64>,
    /// The agent instance of the session: the fence reports recorded are its own.
    instance: String,
}

fn to_proto(a: baton_core::state::Assignment) -> pb::Assignment {
    pb::Assignment {
        role: a.role,
        epoch: a.epoch,
        kind: a.kind,
        database: a.database,
    }
}

fn to_protos(v: Vec<baton_core::state::Assignment>) -> Vec<pb::Assignment> {
    v.into_iter().map(to_proto).collect()
}

/// Sessions on a node from which they share one pass over the roles (see [`SetsCache`]):
/// the pass costs about ten scans.
const SHARED_SETS_SESSIONS_MIN: u64 = 10;

/// Every server's assignment set (roles to run, roles to release) at one revision.
///
/// Every agent session on a node wakes on each applied revision and reads its server's
/// set. Read per session, that is a scan of every role per session per change (10,000
/// agents and 100,000 roles: 10^9 roles looked at for one write). With many sessions,
/// the first to read a revision builds every server's set in one pass
/// ([`baton_core::State::server_sets`]) and the others look theirs up: one pass per
/// change, and per session only its own roles. The pass copies every assigned role, so
/// it costs about ten scans (`cargo bench -p baton-benches --bench core -- sessions`:
/// 75 ms against 7.8 ms at 100,000 roles); below [`SHARED_SETS_SESSIONS_MIN`] sessions
/// each scans for itself.
///
/// Keyed by revision: every applied entry sets the revision, and the state at a revision
/// is the same on every node and at every read (a snapshot installs the state of its own
/// revision), so a set built at revision R is the set at R.
#[derive(Default)]
pub(crate) struct SetsCache(std::sync::Mutex<Option<Arc<CachedSets>>>);

struct CachedSets {
    revision: u64,
    sets: std::collections::BTreeMap<String, (Vec<pb::Assignment>, Vec<pb::Assignment>)>,
}

impl SetsCache {
    /// `server`'s roles to run and to release in `s` (read under the state's lock, so
    /// that the revision and the sets are of one state).
    fn of(
        &self,
        s: &baton_core::State,
        server: &str,
        sessions: u64,
    ) -> (Vec<pb::Assignment>, Vec<pb::Assignment>) {
        if sessions < SHARED_SETS_SESSIONS_MIN {
            return (
                to_protos(s.assignments(server)),
                to_protos(s.releasing(server)),
            );
        }
        let cached = {
            // Held while building: the sessions woken by the same change wait for the
            // one build instead of each scanning the roles.
            let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match cache.as_ref() {
                Some(c) if c.revision == s.revision => c.clone(),
                _ => {
                    let sets = s
                        .server_sets()
                        .into_iter()
                        .map(|(server, set)| (server, (to_protos(set.run), to_protos(set.stop))))
                        .collect();
                    let c = Arc::new(CachedSets {
                        revision: s.revision,
                        sets,
                    });
                    *cache = Some(c.clone());
                    c
                }
            }
        };
        cached.sets.get(server).cloned().unwrap_or_default()
    }
}

impl Sent {
    /// Send the server's assignment set if it differs from the last one sent.
    async fn update(&mut self, node: &Node, server: &str, tx: &Outbound) -> Result<(), Status> {
        let read = node.read(|s| {
            if self.read_at == Some(s.revision) {
                return None;
            }
            let (run, stop) = node.server_sets.of(s, server, node.sessions());
            let (numbers, settled_through) = s.fences_recorded(server, &self.instance);
            let fences = pb::FencesRecorded {
                numbers,
                settled_through,
            };
            Some((s.revision, (run, stop, fences)))
        });
        let Some((revision, set)) = read else {
            return Ok(());
        };
        self.read_at = Some(revision);
        if self.assignments.as_ref() == Some(&set) {
            return Ok(());
        }
        self.assignments = Some(set.clone());
        let msg = pb::DirectoryMessage {
            msg: Some(Out::Assignments(pb::AssignmentSet {
                revision,
                assignments: set.0,
                releasing: set.1,
                lease_ms: node.lease().lease_ms,
                fences_recorded: Some(set.2),
            })),
        };
        tx.send(Ok(Box::new(msg)))
            .await
            .map_err(|_| Status::cancelled("agent went away"))
    }
}

async fn run_session(
    node: &Arc<Node>,
    hello: pb::Hello,
    instance: baton_core::AgentInstance,
    mut inbound: Streaming<pb::AgentMessage>,
    tx: &Outbound,
    renewals: RenewalSender,
) -> Result<(), Status> {
    let server = hello.server.clone();
    let lease = Duration::from_millis(node.lease().lease_ms);
    // Invariant 5: never serve an agent a revision older than one it has seen.
    node.wait_applied(hello.min_revision, lease).await?;
    let register = Command::RegisterAgent {
        server: server.clone(),
        kinds: hello.kinds.clone(),
        main: hello.main,
        instance: instance.clone(),
        replaces: None,
    };
    // Registering is a Raft write; an agent that is up already with the same kinds
    // (re-attaching after its node died) needs none, so it can attach during an election.
    let known = node.read(|s| {
        s.servers.get(&server).is_some_and(|x| {
            x.status == ServerStatus::Up
                && x.kinds.iter().eq(hello
                    .kinds
                    .iter()
                    .collect::<std::collections::BTreeSet<_>>())
                && (x.main || !hello.main)
                && x.instance.id == instance.id
        })
    });
    if !known {
        match Box::pin(node.write(register.clone(), false)).await {
            Ok(reply) => node.wait_applied(reply.revision, lease).await?,
            // Another instance holds the name: claim it (a restart takes it over once
            // the holder's lease has run out; a live holder gets this session refused).
            Err(e) if baton_proto::is_server_held(&e) => {
                Box::pin(claim_name(node, &hello, &instance, tx)).await?
            }
            Err(e) => return Err(e),
        }
    }
    tracing::info!(%server, node = node.id, "agent session opened");

    let mut sent = Sent {
        assignments: None,
        read_at: None,
        instance: instance.id.clone(),
    };
    sent.update(node, &server, tx).await?;
    let mut applied = node.subscribe();
    let mut inflight: Option<(u64, oneshot::Receiver<Answer>)> = None;
    let mut queued: Option<u64> = None;
    let mut last_register = Instant::now();

    let start = |seq: u64| -> Option<(u64, oneshot::Receiver<Answer>)> {
        let (reply, rx) = oneshot::channel();
        renewals
            .try_send(PendingRenewal {
                server: server.clone(),
                instance: instance.id.clone(),
                reply,
            })
            .ok()
            .map(|()| (seq, rx))
    };

    loop {
        tokio::select! {
            msg = inbound.message() => {
                let Some(msg) = msg? else { return Ok(()) };
                match msg.msg {
                    Some(In::Renew(r)) => {
                        if inflight.is_none() {
                            inflight = start(r.seq);
                        } else {
                            queued = Some(r.seq);
                        }
                    }
                    Some(In::Released(r)) => {
                        let node = node.clone();
                        let server = server.clone();
                        tokio::spawn(async move {
                            let cmd = Command::Released { role: r.role, server, epoch: r.epoch };
                            if let Err(e) = Box::pin(node.write(cmd, false)).await {
                                tracing::warn!("recording a release failed: {e}");
                            }
                        });
                    }
                    Some(In::RoleFailed(f)) => {
                        let node = node.clone();
                        let server = server.clone();
                        tokio::spawn(async move {
                            let cmd = Command::RoleFailed {
                                role: f.role,
                                server,
                                epoch: f.epoch,
                                reason: f.reason,
                                cooldown_ms: node.manager.role_cooldown_ms(),
                            };
                            if let Err(e) = Box::pin(node.write(cmd, false)).await {
                                tracing::warn!("recording a role failure failed: {e}");
                            }
                        });
                    }
                    Some(In::Fenced(f)) => {
                        // Recorded once per number (a resend changes nothing); the agent
                        // sends it again after its next ack until the set lists it.
                        let node = node.clone();
                        let cmd = Command::ReportFenced {
                            server: server.clone(),
                            instance: instance.id.clone(),
                            number: f.number,
                            role: f.role,
                            epoch: f.epoch,
                            ago_ms: f.ago_ms,
                        };
                        tokio::spawn(async move {
                            if let Err(e) = Box::pin(node.write(cmd, false)).await {
                                tracing::warn!("recording a fence report failed: {e}");
                            }
                        });
                    }
                    Some(In::Leaving(_)) => {
                        // The agent stopped every role before saying so: its roles are
                        // free now, as if its lease had run out.
                        let cmd = Command::ServersDown { servers: vec![server.clone()] };
                        Box::pin(node.write(cmd, false)).await?;
                        tracing::info!(%server, "agent left: server declared down");
                        return Ok(());
                    }
                    Some(In::Hello(_)) => return Err(invalid("Hello sent twice on one session")),
                    None => return Err(invalid("empty agent message")),
                }
            }
            r = applied.changed() => {
                if r.is_err() {
                    return Err(unavailable("node is shutting down"));
                }
                sent.update(node, &server, tx).await?;
            }
            res = async {
                match inflight.as_mut() {
                    Some((_, rx)) => rx.await,
                    None => std::future::pending().await,
                }
            } => {
                let (seq, _) = inflight.take().expect("in flight");
                match res {
                    Ok(Answer::Confirmed) => {
                        // The batcher answers once this node applied the round's read
                        // index: the set sent here includes every change before it.
                        sent.update(node, &server, tx).await?;
                        let ack = pb::DirectoryMessage {
                            msg: Some(Out::RenewAck(pb::RenewAck {
                                seq,
                                lease_ms: node.lease().lease_ms,
                            })),
                        };
                        tx.send(Ok(Box::new(ack))).await.map_err(|_| Status::cancelled("agent went away"))?;
                    }
                    Ok(Answer::Behind) => {}
                    Ok(Answer::Refused) | Err(_) => {
                        // Not confirmed. If the directory declared this server down, the
                        // agent is alive again: register it anew (rate-limited), after
                        // which its renewals count again.
                        // Another instance took the name over (this one was cut off or
                        // frozen past its lease): this agent must stop for good.
                        let taken = node.read(|s| {
                            s.servers.get(&server).filter(|x| {
                                x.status == ServerStatus::Up && x.instance.id != instance.id
                            }).map(|x| (x.instance.clone(), x.instance_since_ms))
                        });
                        if let Some((h, since)) = taken {
                            return Err(held_status(&server, &instance.id, &h.id, &h.address, since));
                        }
                        let down = node.read(|s| {
                            s.servers.get(&server).is_none_or(|x| x.status != ServerStatus::Up)
                        });
                        if down && last_register.elapsed() >= lease / 2 {
                            last_register = Instant::now();
                            let node = node.clone();
                            let cmd = register.clone();
                            tokio::spawn(async move {
                                if let Err(e) = Box::pin(node.write(cmd, false)).await {
                                    tracing::debug!("re-registering failed: {e}");
                                }
                            });
                        }
                    }
                }
                if let Some(q) = queued.take() {
                    inflight = start(q);
                }
            }
            _ = tx.closed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{SHARED_SETS_SESSIONS_MIN, SetsCache};
    use baton_core::{Command, Entry, State};

    fn apply(s: &mut State, cmd: Command) {
        let index = s.revision + 1;
        let entry = Entry {
            by: Default::default(),
            request: Default::default(),
            now_ms: 1_700_000_000_000,
            advance_ms: 0,
            cmd,
            batch: Vec::new(),
        };
        s.apply(index, &entry).expect("accepted");
    }

    fn roles(sets: &[baton_proto::v1::Assignment]) -> Vec<&str> {
        sets.iter().map(|a| a.role.as_str()).collect()
    }

    /// The shared sets are rebuilt at each revision: every session reads its own
    /// server's current roles, never another revision's, whether it shares the pass or
    /// scans for itself.
    #[test]
    fn the_shared_sets_follow_every_revision() {
        let mut s = State::default();
        s.apply_membership(1, 3);
        for server in ["a", "b"] {
            apply(
                &mut s,
                Command::RegisterAgent {
                    server: server.into(),
                    kinds: vec![],
                    main: false,
                    instance: Default::default(),
                    replaces: None,
                },
            );
        }
        let cache = SetsCache::default();
        // As many sessions read it (the shared pass), and as few do (each scans): the same.
        let of = |s: &State, server: &str| {
            let shared = cache.of(s, server, SHARED_SETS_SESSIONS_MIN);
            assert_eq!(shared, cache.of(s, server, 1), "{server}");
            shared
        };
        for (role, list) in [("r1", ["a", "b"]), ("r2", ["b", "a"]), ("r3", ["a", "b"])] {
            apply(
                &mut s,
                Command::CreateRole {
                    name: role.into(),
                    kind: String::new(),
                    servers: list.iter().map(|x| x.to_string()).collect(),
                    failback: false,
                    failback_delay_ms: 0,
                    database: None,
                },
            );
            // Read after every change, as the sessions do.
            for server in ["a", "b"] {
                let expected = s.assignments(server);
                let expected: Vec<&str> = expected.iter().map(|x| x.role.as_str()).collect();
                assert_eq!(roles(&of(&s, server).0), expected, "{server}");
            }
        }
        assert_eq!(roles(&of(&s, "a").0), ["r1", "r3"]);
        assert_eq!(roles(&of(&s, "b").0), ["r2"]);
        // A server with no roles, and one the directory does not know, get empty sets.
        assert_eq!(of(&s, "nobody"), (vec![], vec![]));

        // "a" goes down: its roles move to "b" at the next revision.
        apply(
            &mut s,
            Command::ServersDown {
                servers: vec!["a".into()],
            },
        );
        assert_eq!(of(&s, "a"), (vec![], vec![]));
        assert_eq!(roles(&of(&s, "b").0), ["r1", "r2", "r3"]);
    }
}
