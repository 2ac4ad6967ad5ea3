//! # Liveness: the leader's renewal table and its confirmation round
//!
//! The one owner of what a lease depends on in a directory node. The leader keeps, per
//! server, when it last heard from the agent, on its own monotonic clock; this module
//! records renewals there, confirms them with a quorum round, and is what the
//! controller's expiry decision and the claim of a held server name read. On a follower
//! the table is empty.
//!
//! ## Who calls what
//!
//! ```text
//!  session.rs       run_batcher ──(this node leads)──> Liveness::confirm
//!                        └──(otherwise) ForwardRenewals to the leader, where
//!  raft_service.rs  forward_renewals ──> Liveness::confirm
//!  manager.rs       on gaining / losing leadership, quorum regained ──> become_leader,
//!                                             lose_leadership, restart_clocks
//!                   controller_loop ──> expire, declared
//!                   claim ──> claim, claim_done
//!  node.rs          write_entry (an agent registers) ──> touch
//!
//!  Liveness ──> node.rs for what a node has: Raft metrics (the vote a round sends, the
//!               membership), peer channels, the applied state, wait_applied
//! ```
//!
//! The manager and the node do not call each other on the renewal path: a renewal goes
//! from the session to [`Liveness::confirm`] and back, which checks leadership once (the
//! round's own view of Raft) and waits for the applied index once (the round's).
//!
//! ## Confirming a renewal (invariants 1 and 4 of docs/safety.md)
//!
//! Renewals are not Raft writes. A renewal is confirmed to the agent only if
//! 1. the leader recorded it: the server is held by that agent instance in the applied
//!    state, this leader has not declared it down, and has not handed its name to a
//!    claimant;
//! 2. a quorum round that started *after* it was recorded confirmed the leadership, so no
//!    other leader existed before that round ended, and any later leader restarts every
//!    clock after the renewal arrived;
//! 3. after that round (whose read index is applied here first) the server is still held
//!    by that instance in the applied state and still not declared down or superseded (a
//!    `ServersDown` of a previous term is committed by the time the round ends).
//!
//! ## One round for many renewals
//!
//! Rounds are numbered as they start, and a round takes its number before it reads the
//! vote it sends. A renewal reads the count of started rounds right after it is recorded,
//! under the table's lock, and is answered by the first round numbered above that count:
//! one that started after it was recorded. At most one round runs at a time. Whoever
//! waits when a round ends (the local batcher, a follower's forwarded batch) runs the
//! next one for everyone recorded meanwhile, and the others take its result: with 10,000
//! agents renewing through three nodes, one round answers all that arrived during the
//! previous one.
//!
//! ## Expiry and claims
//!
//! The controller's expiry decision ([`Liveness::expire`]) and the marking of
//! `declared_down` happen under the same lock as the recording of renewals, so a renewal
//! cannot slip in between "decided down" and "proposed down" and extend a lease that the
//! directory is about to revoke. A claim's takeover decision ([`Liveness::claim`]) marks
//! the holder superseded under that lock for the same reason.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baton_core::{ServerStatus, State};
use openraft::ServerState;
use tokio::time::Instant;
use tonic::Status;

use crate::error::{self, not_leader};
use crate::network::Connection;
use crate::node::{Lease, Node};

/// Renewals or confirmations: (server, agent instance).
pub type Renewals = Vec<(String, String)>;

/// The leader's liveness table and its confirmation rounds. One per node.
pub struct Liveness {
    /// Origin of the monotonic milliseconds in the table.
    origin: Instant,
    table: Mutex<Table>,
    rounds: Rounds,
    /// Planted bugs (test builds only).
    #[cfg(feature = "planted-bugs")]
    planted: crate::env::Planted,
}

/// What the leader knows of its agents. Empty on followers.
#[derive(Default)]
struct Table {
    /// The term in which this node leads, while it does.
    term: Option<u64>,
    /// When this node became leader (ms on `origin`'s clock): every server counts as seen
    /// then, which is how a new leader restarts every clock (leases only lengthen).
    leader_since_ms: u64,
    /// Last renewal received per server (ms on `origin`'s clock).
    last_seen_ms: BTreeMap<String, u64>,
    /// Servers this leader declared down, with the log index of that `ServersDown`
    /// entry (0 while it is in flight). Their renewals are refused until they register
    /// again after that index.
    declared_down: BTreeMap<String, u64>,
    /// Renewals recorded per server while this node leads: a claim watches the holder's
    /// count to learn whether the holder is still alive.
    renewals: BTreeMap<String, u64>,
    /// A new agent instance waiting to take a held server name over (see [`Claim`]).
    claims: BTreeMap<String, Claim>,
    /// Holders whose name this leader decided to hand to a claimant, by server: their
    /// renewals are refused from that decision on, as a declared-down server's are.
    superseded: BTreeMap<String, String>,
}

/// A claim of a held server name by a new agent instance (an agent restart, a replaced
/// host, or a mistake: a second agent under the same name). The holder is
/// - *alive* when it renews twice after the claim began (one renewal may have been in
///   flight when a killed holder died): the claimant is refused, it must not run;
/// - *gone* when its lease runs out (lease + grace after its last renewal, as for a
///   failover): the leader hands the name to the claimant, whose roles stay where they
///   are: a quick agent restart moves nothing. The holder has fenced itself by then, by
///   the same arithmetic that makes a failover safe.
struct Claim {
    instance: String,
    /// When the claim began and was last repeated (ms on `origin`'s clock).
    first_ms: u64,
    last_ms: u64,
    /// The holder's renewal count when the claim began.
    holder_renewals_at_first: u64,
}

/// What a claim decided.
pub enum ClaimDecision {
    /// No live holder, or the claimant holds the name already.
    Free,
    /// The holder's lease has not run out yet: ask again.
    Pending,
    /// The holder renewed twice since the claim began: it is alive.
    Held,
    /// Another new instance is claiming the name right now (its instance id).
    HeldByClaimant(String),
    /// The holder's lease ran out: hand the name over from this holder instance.
    TakeOver(String),
}

impl Table {
    /// Forget down-declarations whose server has registered again since (its status is
    /// up at a revision after the `ServersDown` entry): its renewals count again.
    fn forget_reregistered(&mut self, st: &State) {
        self.declared_down.retain(|s, idx| match st.servers.get(s) {
            None => false,
            Some(srv) => *idx == 0 || st.revision < *idx || srv.status != ServerStatus::Up,
        });
    }

    /// Forget every server: a leadership change.
    fn forget_servers(&mut self) {
        self.last_seen_ms.clear();
        self.declared_down.clear();
        self.renewals.clear();
        self.claims.clear();
        self.superseded.clear();
    }

    /// Whether a claim for `server` is being pursued: the controller then leaves the
    /// server to the claim (a takeover keeps the roles where they are) instead of
    /// declaring it down. A claim stops counting when the claimant stops repeating it,
    /// or after a few leases, so a claim that cannot complete never holds roles back.
    fn claim_pending(&self, server: &str, now: u64, lease_ms: u64) -> bool {
        self.claims.get(server).is_some_and(|c| {
            now.saturating_sub(c.last_ms) < lease_ms / 2
                && now.saturating_sub(c.first_ms) < 3 * lease_ms + 1_000
        })
    }
}

/// Whether `instance` holds `server` in the applied state.
fn holds(st: &State, server: &str, instance: &str) -> bool {
    st.servers
        .get(server)
        .is_some_and(|x| x.status == ServerStatus::Up && x.instance.id == instance)
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::new()
    }
}

impl Liveness {
    pub fn new() -> Self {
        Liveness {
            origin: Instant::now(),
            table: Mutex::new(Table::default()),
            rounds: Rounds::default(),
            #[cfg(feature = "planted-bugs")]
            planted: crate::env::Planted::default(),
        }
    }

    /// Switch on planted bugs (test builds only).
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, planted: crate::env::Planted) {
        self.planted = planted;
    }

    fn mono_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("liveness lock")
    }

    /// This node leads `term` from now on: every server counts as seen now.
    pub fn become_leader(&self, term: u64) {
        let now = self.mono_ms();
        let mut t = self.table();
        t.term = Some(term);
        t.leader_since_ms = now;
        #[cfg(feature = "planted-bugs")]
        if self.planted.no_clock_restart {
            // Planted bug: every server counts as last seen when this node started.
            t.leader_since_ms = 0;
        }
        t.forget_servers();
    }

    /// Count every server as seen now, as a new leader does (after this leader
    /// regained a quorum it had lost).
    pub fn restart_clocks(&self, term: u64) {
        #[cfg(feature = "planted-bugs")]
        if self.planted.no_clock_restart {
            return;
        }
        let now = self.mono_ms();
        let mut t = self.table();
        if t.term == Some(term) {
            t.leader_since_ms = t.leader_since_ms.max(now);
        }
    }

    /// This node no longer leads: forget the table.
    pub fn lose_leadership(&self) {
        let mut t = self.table();
        t.term = None;
        t.forget_servers();
    }

    /// Count `server` as seen now (a registration through this node while it leads).
    /// Not for a registration the state will refuse (another instance holds the name):
    /// that would extend the holder's lease on the claimant's behalf.
    pub fn touch(&self, node: &Node, server: &str, instance: &str, replaces: Option<&str>) {
        let held_by_other = node.read(|st| {
            st.servers.get(server).is_some_and(|x| {
                x.status == ServerStatus::Up
                    && x.instance.id != instance
                    && replaces != Some(x.instance.id.as_str())
            })
        });
        if held_by_other {
            return;
        }
        let now = self.mono_ms();
        let mut t = self.table();
        if t.term.is_some() {
            t.last_seen_ms.insert(server.to_string(), now);
        }
    }

    /// Record `renewals` and confirm them (see the module essay). Returns the confirmed
    /// ones and the round's read index, which this node has applied already; a node that
    /// forwarded the batch must apply it too before it acknowledges. Only the instance
    /// that holds a server name in the applied state renews it.
    pub async fn confirm(
        &self,
        node: &Node,
        renewals: Renewals,
    ) -> Result<(Renewals, u64), Status> {
        let (accepted, after) = self.record(node, renewals);
        if accepted.is_empty() {
            return Ok((accepted, 0));
        }
        let read_index = self.rounds.after(after, || run_round(node)).await?;
        let t = self.table();
        let confirmed = node.read(|st| {
            accepted
                .into_iter()
                .filter(|(s, i)| {
                    holds(st, s, i)
                        && !t.declared_down.contains_key(s)
                        && t.superseded.get(s) != Some(i)
                })
                .collect()
        });
        Ok((confirmed, read_index))
    }

    /// Record the renewals this leader accepts, at its "now". Returns them and the count
    /// of rounds started so far, read after the recording: a round numbered above it
    /// started after every one of these renewals was recorded.
    fn record(&self, node: &Node, renewals: Renewals) -> (Renewals, u64) {
        let now = self.mono_ms();
        let mut t = self.table();
        let t = &mut *t;
        let accepted = node.read(|st| {
            // A server that registered again is live again at once, not at the
            // controller's next pass (its first renewal would be refused meanwhile).
            t.forget_reregistered(st);
            t.superseded
                .retain(|s, i| st.servers.get(s).is_some_and(|x| &x.instance.id == i));
            renewals
                .into_iter()
                .filter(|(s, i)| {
                    !t.declared_down.contains_key(s)
                        && t.superseded.get(s) != Some(i)
                        && holds(st, s, i)
                })
                .inspect(|(s, _)| {
                    t.last_seen_ms.insert(s.clone(), now);
                    *t.renewals.entry(s.clone()).or_insert(0) += 1;
                })
                .collect()
        });
        (accepted, self.rounds.started())
    }

    /// A confirmation round that starts after this call (run or joined, as renewals
    /// do). Returns the read index, applied on this node.
    pub async fn round(&self, node: &Node) -> Result<u64, Status> {
        let after = self.rounds.started();
        self.rounds.after(after, || run_round(node)).await
    }

    /// How many confirmation rounds this node has started (each one shared by every
    /// renewal recorded before it started and after the previous one did).
    pub fn rounds_started(&self) -> u64 {
        self.rounds.started()
    }

    /// The controller's expiry pass in `term`, decided and marked under the table's lock
    /// (see the module essay). Returns the servers to declare down now: those whose
    /// lease (plus grace) ran out and no claim is pursuing, and earlier declarations
    /// whose write failed. `None` when this table no longer leads `term`.
    pub fn expire(&self, node: &Node, term: u64, lease: Lease) -> Option<Vec<String>> {
        let now = self.mono_ms();
        let mut t = self.table();
        let t = &mut *t;
        if t.term != Some(term) {
            return None;
        }
        let expired = node.read(|st| {
            baton_core::controller::expired_servers(
                st,
                &t.last_seen_ms,
                t.leader_since_ms,
                now,
                lease.expiry_lease_ms,
                lease.grace_ms,
            )
        });
        let fresh: Vec<String> = expired
            .into_iter()
            .filter(|s| !t.declared_down.contains_key(s))
            .filter(|s| !t.claim_pending(s, now, lease.lease_ms))
            .collect();
        for s in fresh {
            t.declared_down.insert(s, 0);
        }
        // Declarations whose write failed (index still 0: the controller awaits its
        // writes, so none is in flight now) are proposed again, or their roles would
        // never move. One whose server is no longer up was completed some other way.
        let mut to_propose = Vec::new();
        node.read(|st| {
            t.forget_reregistered(st);
            for (s, idx) in t.declared_down.iter_mut().filter(|(_, idx)| **idx == 0) {
                if st
                    .servers
                    .get(s)
                    .is_some_and(|x| x.status == ServerStatus::Up)
                {
                    to_propose.push(s.clone());
                } else {
                    *idx = st.revision.max(1);
                }
            }
        });
        Some(to_propose)
    }

    /// The `ServersDown` naming `servers` committed at `revision`: their renewals stay
    /// refused until they register again after it.
    pub fn declared(&self, servers: &[String], revision: u64) {
        let mut t = self.table();
        for s in servers {
            if let Some(idx) = t.declared_down.get_mut(s) {
                *idx = revision;
            }
        }
    }

    /// A new agent `instance` claims `server`, held in the applied state by `holder`
    /// (see [`Claim`]). Leader only: refused with the leader's address otherwise.
    pub fn claim(
        &self,
        node: &Node,
        server: &str,
        instance: &str,
        holder: Option<&str>,
        lease: Lease,
        quorum_fresh: bool,
    ) -> Result<ClaimDecision, Status> {
        let now = self.mono_ms();
        let mut t = self.table();
        let t = &mut *t;
        let holder = match holder {
            None => return Ok(ClaimDecision::Free),
            Some(h) if h == instance => {
                t.claims.remove(server);
                return Ok(ClaimDecision::Free);
            }
            Some(_) if t.term.is_none() => return Err(not_leader(node.leader_for_clients())),
            Some(h) => h,
        };
        let count = t.renewals.get(server).copied().unwrap_or(0);
        let c = t.claims.entry(server.to_string()).or_insert(Claim {
            instance: instance.to_string(),
            first_ms: now,
            last_ms: now,
            holder_renewals_at_first: count,
        });
        if c.instance != instance {
            if now.saturating_sub(c.last_ms) < lease.lease_ms / 2 {
                return Ok(ClaimDecision::HeldByClaimant(c.instance.clone()));
            }
            *c = Claim {
                instance: instance.to_string(),
                first_ms: now,
                last_ms: now,
                holder_renewals_at_first: count,
            };
        }
        c.last_ms = now;
        let holder_renewals_at_first = c.holder_renewals_at_first;
        let seen = t
            .last_seen_ms
            .get(server)
            .copied()
            .unwrap_or(t.leader_since_ms)
            .max(t.leader_since_ms);
        if count >= holder_renewals_at_first + 2 {
            t.claims.remove(server);
            Ok(ClaimDecision::Held)
        } else if quorum_fresh && now.saturating_sub(seen) >= lease.expiry_lease_ms + lease.grace_ms
        {
            // Decided under the lock: from here on the holder's renewals are refused, so
            // none can extend the lease being revoked.
            t.superseded.insert(server.to_string(), holder.to_string());
            Ok(ClaimDecision::TakeOver(holder.to_string()))
        } else {
            Ok(ClaimDecision::Pending)
        }
    }

    /// The claim of `server` is settled (the name was handed over).
    pub fn claim_done(&self, server: &str) {
        self.table().claims.remove(server);
    }
}

/// The confirmation rounds of one node: numbered as they start, one at a time, each
/// shared by everyone waiting for a round that started after a given count.
#[derive(Default)]
struct Rounds {
    /// Held by whoever runs a round. Tokio's mutex is fair: waiters take it in turn.
    driver: tokio::sync::Mutex<()>,
    /// Rounds started so far.
    started: AtomicU64,
    /// The last round that ended: its number and result.
    last: Mutex<Option<(u64, Result<u64, Status>)>>,
}

impl Rounds {
    fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// The result of the first round numbered above `after`: the last one to end if it
    /// is, otherwise a new one, run here with `run`. A round takes its number before
    /// `run` is called, so everything done before `after` was read happened before the
    /// round started. If the caller is dropped mid-round, the round is abandoned and the
    /// next waiter runs one of its own.
    async fn after<F, Fut>(&self, after: u64, run: F) -> Result<u64, Status>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<u64, Status>>,
    {
        let _driver = self.driver.lock().await;
        if let Some((n, r)) = &*self.last.lock().expect("rounds lock")
            && *n > after
        {
            return r.clone();
        }
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let r = run().await;
        *self.last.lock().expect("rounds lock") = Some((n, r.clone()));
        r
    }
}

/// Confirm this node's leadership for renewals: one empty AppendEntries with the
/// leader's vote to every other voter, sent now, and a majority of every configuration
/// (joint ones included) accepting it. A follower accepts only while it has seen no
/// higher vote, so no other leader was elected before this round's sends; any later
/// leader restarts every liveness clock after them. This is the read-index round of
/// docs/safety.md, done here rather than by `ensure_linearizable` because openraft gives
/// each follower only one heartbeat interval to answer that one, which a loaded host
/// misses, and a missed confirmation makes agents fence for nothing.
/// Returns the index the state machine must reach for the caller to read a state that
/// includes every entry committed before the round, once this node has applied it.
async fn run_round(node: &Node) -> Result<u64, Status> {
    use futures::StreamExt;
    use openraft::network::{RPCOption, RaftNetwork};
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
    // The one leadership check of a renewal: the vote this round sends must be this
    // node's as leader.
    let m = node.raft.metrics().borrow().clone();
    if m.state != ServerState::Leader || m.current_leader != Some(node.id) {
        return Err(not_leader(node.leader_for_clients()));
    }
    let read_index = m.last_log_index.unwrap_or(0);
    let membership = m.membership_config.membership().clone();
    let timeout = Duration::from_millis((node.lease().lease_ms / 4).max(100));
    let has_quorum = |granted: &std::collections::BTreeSet<u64>| {
        membership
            .get_joint_config()
            .iter()
            .all(|config| config.iter().filter(|v| granted.contains(v)).count() * 2 > config.len())
    };
    let mut granted: std::collections::BTreeSet<u64> = [node.id].into();
    let mut rounds = futures::stream::FuturesUnordered::new();
    for id in membership.voter_ids().filter(|v| *v != node.id) {
        let Some(peer) = membership.get_node(&id) else {
            continue;
        };
        // Cached channels: one connection per peer, not one per round.
        let mut conn =
            Connection::over(node.id, id, node.channel(&peer.addr)?, node.faults.clone());
        let rpc = AppendEntriesRequest {
            vote: m.vote,
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        rounds.push(async move {
            let r =
                tokio::time::timeout(timeout, conn.append_entries(rpc, RPCOption::new(timeout)))
                    .await;
            (id, r)
        });
    }
    // Stop at the first majority: the slowest follower does not delay every renewal.
    // A follower that answers with a higher vote does not grant, but it does not end
    // the round either: a higher vote is a candidacy, not a leader. A node that was
    // cut off comes back with a term raised by its failed elections (openraft has no
    // pre-vote), and until this leader's replication to it sees that vote and steps
    // down, which can take seconds of retry backoff, failing here would stop every
    // renewal and make agents fence for nothing. A majority that accepts this round's
    // vote is still proof that no other leader exists: each of its members would
    // reject the round had it voted for a higher term (found by tests/chaos:
    // partition-node faults restarted roles in place on heal).
    let mut higher_vote_seen = false;
    while !has_quorum(&granted) {
        let Some((id, r)) = rounds.next().await else {
            break;
        };
        match r {
            Ok(Ok(AppendEntriesResponse::HigherVote(_))) => higher_vote_seen = true,
            Ok(Ok(_)) => {
                granted.insert(id);
            }
            _ => {}
        }
    }
    if !has_quorum(&granted) && higher_vote_seen {
        return Err(not_leader(None));
    }
    if !has_quorum(&granted) {
        return Err(error::unavailable(format!(
            "leadership not confirmed: only nodes {granted:?} answered"
        )));
    }
    node.wait_applied(read_index, timeout).await?;
    Ok(read_index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::sync::Notify;

    /// A round stand-in that returns its own number once `gate` opens.
    async fn gated(rounds: &Rounds, gate: &Notify) -> Result<u64, Status> {
        let n = rounds.started();
        gate.notified().await;
        Ok(n)
    }

    /// A renewal recorded while a round runs is not answered by that round (it may have
    /// sent its vote before the renewal arrived), and every renewal recorded meanwhile
    /// shares the one next round.
    #[tokio::test]
    async fn renewals_recorded_during_a_round_share_the_next_one() {
        let rounds = Arc::new(Rounds::default());
        let gate = Arc::new(Notify::new());
        let first = {
            let (r, g) = (rounds.clone(), gate.clone());
            tokio::spawn(async move { r.after(0, || gated(&r, &g)).await })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while rounds.started() < 1 {
            assert!(Instant::now() < deadline, "the first round never started");
            tokio::task::yield_now().await;
        }
        // Ten callers "record" while round 1 runs: each reads the count, 1.
        let late: Vec<_> = (0..10)
            .map(|_| {
                let after = rounds.started();
                let (r, g) = (rounds.clone(), gate.clone());
                tokio::spawn(async move { r.after(after, || gated(&r, &g)).await })
            })
            .collect();
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        while rounds.started() < 2 {
            assert!(Instant::now() < deadline, "the second round never started");
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for h in late {
            assert_eq!(h.await.unwrap().unwrap(), 2, "answered by round 2 only");
        }
        assert_eq!(rounds.started(), 2, "one round for the ten");
    }

    /// A failed round's error reaches everyone who waited for it; the next caller runs
    /// a new round rather than taking the old result.
    #[tokio::test]
    async fn a_failed_round_is_shared_and_not_reused() {
        let rounds = Rounds::default();
        let r = rounds
            .after(0, || async { Err(error::unavailable("no quorum")) })
            .await;
        assert!(r.is_err());
        let after = rounds.started();
        let r = rounds.after(after, || async { Ok(7) }).await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(rounds.started(), 2);
    }
}
