//! The simulated agent: the real agent's decision code, [`baton_agent::AgentCore`], in a
//! simulated shell.
//!
//! Every decision is the real agent's: renewals and their schedule, what an ack proves,
//! the lease it adopts, the self-fence, which roles start and stop, the reports
//! (`Released`), abandoning a silent session. This shell supplies only what the real
//! agent's shell (`baton_agent::run`) supplies from the outside world:
//! - time: simulated milliseconds ([`now_ms`]) instead of CLOCK_BOOTTIME, and a wake-up
//!   at the core's next deadline (at most `CHECK_EVERY_MS` apart, as the real loop);
//! - the network: the real session protocol (`baton.v1.Agent/Session`) over turmoil's
//!   TCP, to the nodes in turn (the real agent races every node; which node answers
//!   first is the network's business, not a decision of the agent);
//! - processes: a "role process" is a hold in the checker. It starts when the core says
//!   [`Action::Start`], may run until the fence time plus the stop bound (the latest a
//!   real process could still run, as its wrapper's dead-man switch guarantees), and
//!   stops the moment the core says [`Action::Stop`], reporting its exit back at once.
//!   Simulated processes never crash and never outlive a stop, so the core's restart,
//!   crash-limit and kill paths are not exercised here (its unit tests cover them).
//!
//! Planted bug "no self-fence": the core's `planted_no_self_fence` switch (never set by
//! the real agent): the core then keeps roles past its lease, stopping them only when an
//! assignment set drops them, and the holds it reports have no end.

use std::collections::VecDeque;
use std::time::Duration;

use baton_agent::agent_core::StopWhy;
use baton_agent::{Action, AgentConfig, AgentCore};
use baton_proto::v1 as pb;
use baton_proto::v1::agent_client::AgentClient;
use baton_proto::v1::agent_message::Msg as Out;
use baton_proto::v1::directory_message::Msg as In;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::checker::{Shared, lock, now_ms};
use crate::net;

/// The kind every simulated agent advertises and every simulated role has.
pub const KIND: &str = "k";

/// The longest the shell waits between ticks of the core (as the real agent's loop).
const CHECK_EVERY_MS: u64 = 20;

/// How long a node may take to open a session.
const OPEN_TIMEOUT_MS: u64 = 500;

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

struct Agent {
    core: AgentCore,
    checker: Shared,
    /// How this agent reports to the checker: `server#instance`.
    holder: String,
    /// The directory refused this instance the server name (another live instance
    /// holds it): it runs nothing from then on, as the real agent exits.
    refused: bool,
    /// The core abandoned the session (no ack for a third of a lease).
    abandon: bool,
}

impl Agent {
    /// The latest time a process started or extended now could still run.
    fn until(&self, stop_at_ms: u64) -> u64 {
        if self.core.planted_no_self_fence {
            u64::MAX
        } else {
            stop_at_ms + self.core.fence().stop_bound_ms()
        }
    }

    /// Carry out the core's actions; messages for the directory go to `out`.
    fn execute(&mut self, actions: Vec<Action>, out: &mut Vec<pb::AgentMessage>) {
        let now = now_ms();
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(m) => out.push(m),
                Action::AbandonSession => self.abandon = true,
                Action::ExtendFence { stop_at_ms } => {
                    let until = self.until(stop_at_ms);
                    lock(&self.checker).hold_extend(&self.holder, until);
                }
                Action::Start {
                    role,
                    epoch,
                    fence_at_ms,
                    ..
                } => {
                    let until = self.until(fence_at_ms);
                    lock(&self.checker).hold_start(now, &self.holder, &role, epoch, until);
                }
                Action::Stop {
                    role, proc, why, ..
                } => {
                    let why = match why {
                        StopWhy::Dropped => "released",
                        StopWhy::LeaseExpired => "fenced",
                        StopWhy::Shutdown => "shutdown",
                    };
                    lock(&self.checker).hold_stop(now, &self.holder, &role, why);
                    queue.extend(self.core.process_exited(now, proc, false, why));
                }
                // Simulated processes exit on the stop itself, so no kill is ever due.
                Action::Kill { .. } => {}
            }
        }
    }

    /// Tick the core at its deadlines until `until_ms` (no session meanwhile).
    async fn idle(&mut self, until_ms: u64) {
        loop {
            let now = now_ms();
            if now >= until_ms {
                return;
            }
            let wake = self.wake_in(now).min(until_ms - now);
            tokio::time::sleep(Duration::from_millis(wake)).await;
            let actions = self.core.tick(now_ms());
            self.execute(actions, &mut Vec::new());
        }
    }

    /// Milliseconds until the core's next deadline, at most `CHECK_EVERY_MS`.
    fn wake_in(&self, now: u64) -> u64 {
        self.core
            .next_deadline(now)
            .map_or(CHECK_EVERY_MS, |t| (t - now).min(CHECK_EVERY_MS))
    }

    async fn session(&mut self, node: &str) -> Result<(), String> {
        let mut client = AgentClient::new(net::channel(node));
        let (tx, rx) = mpsc::channel(64);
        tx.try_send(pb::AgentMessage {
            msg: Some(Out::Hello(self.core.hello())),
        })
        .map_err(|e| e.to_string())?;
        // The core keeps time (fences, if due) while the node opens the session.
        let deadline = now_ms() + OPEN_TIMEOUT_MS;
        let open = client.session(ReceiverStream::new(rx));
        tokio::pin!(open);
        let open = loop {
            let now = now_ms();
            if now >= deadline {
                return Err(format!("session with {node} not opened in time"));
            }
            let wake = self.wake_in(now).min(deadline - now);
            tokio::select! {
                r = &mut open => break r,
                _ = tokio::time::sleep(Duration::from_millis(wake)) => {
                    let actions = self.core.tick(now_ms());
                    self.execute(actions, &mut Vec::new());
                }
            }
        }
        .map_err(|s| format!("session with {node}: {}", s.message()))?;
        let mut inbound = open.into_inner();
        lock(&self.checker).event(
            now_ms(),
            format!("{} opens a session with {node}", self.holder),
        );
        let mut actions = self.core.session_opened(now_ms());
        loop {
            let mut out = Vec::new();
            self.execute(actions, &mut out);
            if std::mem::take(&mut self.abandon) {
                return Err(format!(
                    "no ack from {node} for a third of a lease (fence at t={})",
                    self.core.stop_at_ms()
                ));
            }
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
            let wake = self.wake_in(now_ms());
            actions = tokio::select! {
                m = inbound.message() => match m {
                    Ok(Some(m)) => {
                        let now = now_ms();
                        if let Some(In::Assignments(set)) = &m.msg {
                            lock(&self.checker).revision(now, &self.holder, set.revision);
                        }
                        self.core.on_message(now, m)
                    }
                    Ok(None) => return Err(format!("{node} closed the session")),
                    Err(s) => {
                        if baton_proto::is_server_held(&s) {
                            self.refused = true;
                        }
                        return Err(format!("session with {node}: {}", s.message()));
                    }
                },
                _ = tokio::time::sleep(Duration::from_millis(wake)) => self.core.tick(now_ms()),
            };
        }
    }
}

/// Run one agent incarnation (turmoil restarts it from scratch after a crash).
pub async fn run(opts: AgentOpts, checker: Shared) -> turmoil::Result {
    // The real agent's configuration and defaults, but for the lease and rho the run
    // sets; the one command is never run.
    let mut config = AgentConfig::new(
        opts.server.clone(),
        opts.nodes.clone(),
        [(KIND.to_string(), "simulated".to_string())].into(),
    );
    config.lease_ms = opts.lease_ms;
    config.rho_ppm = opts.rho_ppm;
    // A restart is a new instance, as with the real agent: deterministic, from the host
    // and the simulated time it started.
    let instance = format!("{}@{}", opts.host, now_ms());
    let mut core = AgentCore::new(config.core(), instance.clone());
    core.planted_no_self_fence = opts.no_self_fence;
    let mut a = Agent {
        core,
        checker,
        holder: format!("{}#{instance}", opts.server),
        refused: false,
        abandon: false,
    };
    let mut next = opts.first;
    loop {
        let node = &opts.nodes[next % opts.nodes.len()];
        next += 1;
        if let Err(e) = a.session(node).await {
            lock(&a.checker).event(now_ms(), format!("{} session: {e}", a.holder));
        }
        let actions = a.core.session_closed(now_ms());
        a.execute(actions, &mut Vec::new());
        if a.refused {
            // It never ran anything under the held name (the real agent exits here).
            let actions = a.core.shutdown(now_ms());
            a.execute(actions, &mut Vec::new());
            lock(&a.checker).event(
                now_ms(),
                format!("{} refused: server name held; stops", a.holder),
            );
            std::future::pending::<()>().await;
        }
        a.idle(now_ms() + 100).await;
    }
}
