//! A simulated agent. It is NOT the real `baton-agent` (whose `Agent` is private and runs
//! real processes on CLOCK_BOOTTIME): it speaks the real session protocol
//! (`baton.v1.Agent/Session`: Hello, Renew with seq, RenewAck, AssignmentSet with
//! revision and lease, Released) and fences with the real [`baton_agent::Fence`]
//! arithmetic on simulated time. Its "role processes" are entries in the checker: a role
//! is held from the moment the agent starts it until the set drops it, the agent crashes,
//! or its fence time passes (`stop_at + stop_bound`, the latest a real process could
//! still run).
//!
//! Planted bug "no self-fence": the agent never stops a role because its lease ran out,
//! only when an assignment set drops it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use baton_agent::Fence;
use baton_proto::v1 as pb;
use baton_proto::v1::agent_client::AgentClient;
use baton_proto::v1::agent_message::Msg as Out;
use baton_proto::v1::directory_message::Msg as In;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::checker::{Shared, lock, now_ms};
use crate::net;

/// How often to renew while renewals go unanswered (as the real agent).
const RENEW_RETRY_MS: u64 = 100;

/// The kind every simulated agent advertises and every simulated role has.
pub const KIND: &str = "k";

pub struct AgentOpts {
    pub server: String,
    /// The simulated host it runs on (a duplicate runs under another host's server name).
    pub host: String,
    pub nodes: Vec<String>,
    pub lease_ms: u64,
    pub rho_ppm: u64,
    /// Index of the first node to try.
    pub first: usize,
    pub no_self_fence: bool,
}

struct Agent<'a> {
    opts: &'a AgentOpts,
    checker: Shared,
    fence: Fence,
    revision: u64,
    desired: BTreeMap<String, u64>,
    releasing: BTreeMap<String, u64>,
    released_sent: BTreeSet<(String, u64)>,
    held: BTreeMap<String, u64>,
    sent: BTreeMap<u64, u64>,
    next_seq: u64,
    stop_at: u64,
    last_ack_or_open: u64,
    /// This incarnation's instance id (a restart is a new instance, as with the real
    /// agent): deterministic, from the host and the simulated time it started.
    instance: String,
    /// How this agent reports to the checker: `server#instance`.
    holder: String,
    /// The directory refused this instance the server name (another live instance
    /// holds it): it runs nothing from then on, as the real agent exits.
    refused: bool,
}

impl Agent<'_> {
    fn valid(&self, now: u64) -> bool {
        if self.opts.no_self_fence {
            self.stop_at > 0
        } else {
            now < self.stop_at
        }
    }

    /// The latest time a role process could still be running.
    fn until(&self) -> u64 {
        if self.opts.no_self_fence {
            u64::MAX
        } else {
            self.stop_at + self.fence.stop_bound_ms()
        }
    }

    /// Stop what must not run, start what must; returns the Released messages to send.
    fn reconcile(&mut self) -> Vec<pb::AgentMessage> {
        let now = now_ms();
        let valid = self.valid(now);
        let server = &self.holder;
        let mut c = lock(&self.checker);
        let held: Vec<(String, u64)> = self.held.iter().map(|(r, e)| (r.clone(), *e)).collect();
        for (role, epoch) in held {
            if !(valid && self.desired.get(&role) == Some(&epoch)) {
                self.held.remove(&role);
                c.hold_stop(
                    now,
                    server,
                    &role,
                    if valid { "released" } else { "fenced" },
                );
            }
        }
        let mut out = Vec::new();
        for (role, epoch) in &self.releasing {
            if !self.held.contains_key(role) && self.released_sent.insert((role.clone(), *epoch)) {
                out.push(pb::AgentMessage {
                    msg: Some(Out::Released(pb::Released {
                        role: role.clone(),
                        epoch: *epoch,
                    })),
                });
            }
        }
        if valid {
            let until = self.until();
            for (role, epoch) in &self.desired {
                if !self.held.contains_key(role) {
                    self.held.insert(role.clone(), *epoch);
                    c.hold_start(now, server, role, *epoch, until);
                }
            }
        }
        out
    }

    fn on_message(&mut self, m: pb::DirectoryMessage) {
        let now = now_ms();
        match m.msg {
            Some(In::Assignments(set)) => {
                lock(&self.checker).revision(now, &self.holder, set.revision);
                if set.revision < self.revision {
                    return;
                }
                self.revision = set.revision;
                if set.lease_ms >= 500 {
                    self.fence.lease_ms = set.lease_ms;
                }
                self.desired = set
                    .assignments
                    .into_iter()
                    .map(|a| (a.role, a.epoch))
                    .collect();
                self.releasing = set
                    .releasing
                    .into_iter()
                    .map(|a| (a.role, a.epoch))
                    .collect();
            }
            Some(In::RenewAck(ack)) => {
                if ack.lease_ms >= 500 {
                    self.fence.lease_ms = ack.lease_ms;
                }
                self.last_ack_or_open = now;
                // As the real agent: releases the set ahead of this ack still lists were
                // not committed (lost in an election, say): report them again.
                self.released_sent.clear();
                if let Some(t_send) = self.sent.get(&ack.seq).copied() {
                    self.stop_at = self.stop_at.max(self.fence.stop_at_ms(t_send));
                    self.sent.retain(|s, _| *s > ack.seq);
                    let until = self.until();
                    lock(&self.checker).hold_extend(&self.holder, until);
                }
            }
            // A restart waits for its previous incarnation's lease: stay on the session.
            Some(In::Waiting(_)) => self.last_ack_or_open = now,
            None => {}
        }
    }

    async fn session(&mut self, node: &str) -> Result<(), String> {
        let mut client = AgentClient::new(net::channel(node));
        let (tx, rx) = mpsc::channel(64);
        let hello = pb::Hello {
            server: self.opts.server.clone(),
            kinds: vec![KIND.to_string()],
            main: false,
            min_revision: self.revision,
            instance: self.instance.clone(),
        };
        tx.try_send(pb::AgentMessage {
            msg: Some(Out::Hello(hello)),
        })
        .map_err(|e| e.to_string())?;
        let open = tokio::time::timeout(
            Duration::from_millis(500),
            client.session(ReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| format!("session with {node} not opened in time"))?
        .map_err(|s| format!("session with {node}: {}", s.message()))?;
        let mut inbound = open.into_inner();
        lock(&self.checker).event(
            now_ms(),
            format!("{} opens a session with {node}", self.holder),
        );
        self.released_sent.clear();
        self.last_ack_or_open = now_ms();
        let mut renew = tokio::time::interval(Duration::from_millis(self.fence.renew_every_ms()));
        // As the real agent: check every 20 ms whether acks are overdue (then try another
        // node), and renew every 100 ms while the newest renewal is unanswered.
        let mut check = tokio::time::interval(Duration::from_millis(20));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let now = now_ms();
            // Wake when the lease runs out, to fence.
            let fence_in = if self.held.is_empty() || self.stop_at <= now {
                Duration::from_secs(3600)
            } else {
                Duration::from_millis(self.stop_at - now)
            };
            let mut out = Vec::new();
            let mut renew_now = false;
            tokio::select! {
                _ = renew.tick() => renew_now = true,
                _ = check.tick() => {
                    // A third of a lease, as baton-agent's `ack_overdue`.
                    if now.saturating_sub(self.last_ack_or_open) > self.fence.lease_ms / 3 {
                        return Err(format!(
                            "no ack from {node} since t={} (fence at t={})",
                            self.last_ack_or_open, self.stop_at
                        ));
                    }
                    renew_now = self
                        .sent
                        .last_key_value()
                        .is_some_and(|(_, t)| now.saturating_sub(*t) >= RENEW_RETRY_MS);
                }
                m = inbound.message() => {
                    match m {
                        Ok(Some(m)) => {
                            out.extend(self.reconcile());
                            self.on_message(m);
                        }
                        Ok(None) => return Err(format!("{node} closed the session")),
                        Err(s) => {
                            if baton_proto::is_server_held(&s) {
                                self.refused = true;
                            }
                            return Err(format!("session with {node}: {}", s.message()));
                        }
                    }
                }
                _ = tokio::time::sleep(fence_in) => {}
            }
            if renew_now {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.sent.insert(seq, now);
                while self.sent.len() > 64 {
                    self.sent.pop_first();
                }
                out.push(pb::AgentMessage {
                    msg: Some(Out::Renew(pb::Renew { seq })),
                });
            }
            out.extend(self.reconcile());
            for m in out {
                match tx.try_send(m) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        return Err("session send buffer full".into());
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        return Err(format!("session with {node} closed"));
                    }
                }
            }
        }
    }
}

/// Run one agent incarnation (turmoil restarts it from scratch after a crash).
pub async fn run(opts: AgentOpts, checker: Shared) -> turmoil::Result {
    let mut a = Agent {
        fence: Fence {
            lease_ms: opts.lease_ms,
            rho_ppm: opts.rho_ppm,
        },
        opts: &opts,
        checker,
        revision: 0,
        desired: BTreeMap::new(),
        releasing: BTreeMap::new(),
        released_sent: BTreeSet::new(),
        held: BTreeMap::new(),
        sent: BTreeMap::new(),
        next_seq: 1,
        stop_at: 0,
        last_ack_or_open: 0,
        instance: format!("{}@{}", opts.host, now_ms()),
        holder: String::new(),
        refused: false,
    };
    a.holder = format!("{}#{}", opts.server, a.instance);
    let mut next = opts.first;
    loop {
        let node = &opts.nodes[next % opts.nodes.len()];
        next += 1;
        a.reconcile();
        if let Err(e) = a.session(node).await {
            lock(&a.checker).event(now_ms(), format!("{} session: {e}", a.holder));
        }
        if a.refused {
            // It never ran anything under the held name (the real agent exits here).
            a.desired.clear();
            a.reconcile();
            lock(&a.checker).event(
                now_ms(),
                format!("{} refused: server name held; stops", a.holder),
            );
            std::future::pending::<()>().await;
        }
        a.reconcile();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
