//! What a node tells Prometheus: the metrics served at `/metrics` on the `--http` port
//! (see [`crate::http`]), in the OpenMetrics text format.
//!
//! Two kinds. *Event* metrics (counters, histograms) are recorded where the event
//! happens: a renewal answered ([`crate::session`]), a confirmation round, a client
//! write ([`crate::service`]), a history event this node applied ([`count_history`]).
//! *State* metrics (gauges) are read from Raft's metrics and the applied state at each
//! scrape ([`Metrics::refresh`]), so they are never stale and cost nothing between
//! scrapes.
//!
//! Every name starts with `baton_`; units are in the names (`_seconds`), and counters end
//! in `_total` (the encoder adds it). Counters count from this process's start, as
//! Prometheus expects of a counter.

use std::sync::Arc;

use baton_core::Position;
use openraft::ServerState;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::node::Node;

/// One label, e.g. `cause="lease_expired"`.
type Label = Vec<(&'static str, String)>;

/// Every metric of one node, and the registry that encodes them.
pub struct Metrics {
    /// Holds every metric below, for encoding.
    registry: Registry,
    /// The Raft term this node is in.
    pub term: Gauge,
    /// The leader this node knows of (0: none known).
    pub leader_id: Gauge,
    /// 1 while this node is the leader.
    pub is_leader: Gauge,
    /// The index of the last entry in this node's log.
    pub last_log_index: Gauge,
    /// The index of the last committed entry this node saved (a follower learns it
    /// with the next append or heartbeat).
    pub committed_index: Gauge,
    /// The index of the last entry this node applied to its state.
    pub applied_index: Gauge,
    /// How long each append of log entries took to become durable on this node (write,
    /// fsync, high-water mark): the disk's share of every commit.
    pub append_seconds: Histogram,
    /// On the node that proposed an entry (its own writes, agents' reports and client
    /// writes alike): the time from proposing it to its being committed by a quorum and
    /// applied here.
    pub commit_seconds: Histogram,
    /// On the node that proposed an entry: how many writes it carried (group commit;
    /// see `crate::batcher`). Mostly 1 at low load; many under concurrent writers.
    pub entry_writes: Histogram,
    /// On the leader: how many entries each follower's log is behind the leader's.
    pub replication_lag: Family<Label, Gauge>,
    /// Agent sessions attached to this node.
    pub agent_sessions: Gauge,
    /// Renewals this node acknowledged to its agents.
    pub renewals: Counter,
    /// Renewals this node could not confirm (no quorum, not the holder, timed out): the
    /// agent renews again, and fences itself if none is acknowledged in time.
    pub renewals_refused: Counter,
    /// How long a batch of renewals took to confirm (a quorum round on the leader, or
    /// the forward to it).
    pub confirmation_seconds: Histogram,
    /// How long a client write (`Directory.Apply`) took, from the request to the reply.
    pub write_seconds: Histogram,
    /// Servers by status: `up`, `down`, `unknown`, `maintenance` (a drained server
    /// counts there and not under its liveness).
    pub servers: Family<Label, Gauge>,
    /// Roles by state: `running`, `handover`, `unassigned`, `deleting`.
    pub roles: Family<Label, Gauge>,
    /// Roles none of whose standbys could take them over now (`role list`: AT RISK).
    pub roles_at_risk: Gauge,
    /// History events in which a role left a server, by cause.
    pub failovers: Family<Label, Counter>,
    /// Every history event this node applied, by cause.
    pub history_events: Family<Label, Counter>,
    /// Fences agents reported (`fenced` history events this node applied): roles an
    /// agent stopped because no renewal was acknowledged within its lease. No label: the
    /// events name the server and role, and a label per server could be thousands.
    pub fences_reported: Counter,
    /// 1 while this node is ready (see [`crate::readiness`]).
    pub ready: Gauge,
    /// The revision of the applied state.
    pub revision: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Causes and states, listed so that every label exists from the first scrape (a rate
/// over a series that appears only at its first event misses that event).
const CAUSES: [&str; 7] = [
    "placement",
    "lease_expired",
    "maintenance",
    "failback",
    "role_failed",
    "operator",
    "fenced",
];
/// The cause of an agent's fence report: an event that moves no role, so it is no
/// failover; counted by `baton_fences_reported_total` instead.
const FENCED: &str = "fenced";
const SERVER_STATUSES: [&str; 4] = ["up", "down", "unknown", "maintenance"];
const ROLE_STATES: [&str; 4] = ["running", "handover", "unassigned", "deleting"];

fn label(key: &'static str, value: impl Into<String>) -> Label {
    vec![(key, value.into())]
}

/// Latency buckets from 0.5 ms to about 4 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            term: Gauge::default(),
            leader_id: Gauge::default(),
            is_leader: Gauge::default(),
            last_log_index: Gauge::default(),
            committed_index: Gauge::default(),
            applied_index: Gauge::default(),
            append_seconds: latency_histogram(),
            commit_seconds: latency_histogram(),
            entry_writes: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            replication_lag: Family::default(),
            agent_sessions: Gauge::default(),
            renewals: Counter::default(),
            renewals_refused: Counter::default(),
            confirmation_seconds: latency_histogram(),
            write_seconds: latency_histogram(),
            servers: Family::default(),
            roles: Family::default(),
            roles_at_risk: Gauge::default(),
            failovers: Family::default(),
            history_events: Family::default(),
            fences_reported: Counter::default(),
            ready: Gauge::default(),
            revision: Gauge::default(),
        };
        for cause in CAUSES {
            if cause != FENCED {
                let _ = m.failovers.get_or_create(&label("cause", cause));
            }
            let _ = m.history_events.get_or_create(&label("cause", cause));
        }
        for status in SERVER_STATUSES {
            let _ = m.servers.get_or_create(&label("status", status));
        }
        for state in ROLE_STATES {
            let _ = m.roles.get_or_create(&label("state", state));
        }
        let r = &mut m.registry;
        r.register("baton_raft_term", "Raft term of this node", m.term.clone());
        r.register(
            "baton_raft_leader_id",
            "Leader this node knows of (0: none)",
            m.leader_id.clone(),
        );
        r.register(
            "baton_raft_is_leader",
            "1 while this node is the leader",
            m.is_leader.clone(),
        );
        r.register(
            "baton_raft_last_log_index",
            "Index of the last entry in this node's log",
            m.last_log_index.clone(),
        );
        r.register(
            "baton_raft_committed_index",
            "Index of the last committed entry this node saved",
            m.committed_index.clone(),
        );
        r.register(
            "baton_raft_append_duration_seconds",
            "Time for an append of log entries to become durable on this node",
            m.append_seconds.clone(),
        );
        r.register(
            "baton_raft_commit_duration_seconds",
            "Time from proposing an entry to its commit and apply on the proposing leader",
            m.commit_seconds.clone(),
        );
        r.register(
            "baton_raft_entry_writes",
            "Writes carried by each log entry this node proposed",
            m.entry_writes.clone(),
        );
        r.register(
            "baton_raft_applied_index",
            "Index of the last entry this node applied",
            m.applied_index.clone(),
        );
        r.register(
            "baton_raft_replication_lag_entries",
            "On the leader: entries each follower's log is behind the leader's",
            m.replication_lag.clone(),
        );
        r.register(
            "baton_agent_sessions",
            "Agent sessions attached to this node",
            m.agent_sessions.clone(),
        );
        r.register(
            "baton_renewals",
            "Lease renewals this node acknowledged",
            m.renewals.clone(),
        );
        r.register(
            "baton_renewals_refused",
            "Lease renewals this node could not confirm",
            m.renewals_refused.clone(),
        );
        r.register(
            "baton_confirmation_round_duration_seconds",
            "Time to confirm one batch of renewals",
            m.confirmation_seconds.clone(),
        );
        r.register(
            "baton_client_write_duration_seconds",
            "Time from a client write's request to its reply",
            m.write_seconds.clone(),
        );
        r.register(
            "baton_servers",
            "Servers by status (a drained server counts as maintenance)",
            m.servers.clone(),
        );
        r.register("baton_roles", "Roles by state", m.roles.clone());
        r.register(
            "baton_roles_at_risk",
            "Roles none of whose standbys could take them over now",
            m.roles_at_risk.clone(),
        );
        r.register(
            "baton_failovers",
            "History events in which a role left a server, by cause",
            m.failovers.clone(),
        );
        r.register(
            "baton_history_events",
            "History events this node applied, by cause",
            m.history_events.clone(),
        );
        r.register(
            "baton_fences_reported",
            "Fences agents reported: roles stopped because no renewal was acknowledged within the lease",
            m.fences_reported.clone(),
        );
        r.register(
            "baton_ready",
            "1 while this node is ready (leader known, caught up, quorum)",
            m.ready.clone(),
        );
        r.register(
            "baton_state_revision",
            "Revision of the applied state",
            m.revision.clone(),
        );
        m
    }

    /// Set every gauge from the node's current Raft metrics and applied state.
    pub fn refresh(&self, node: &Node) {
        let m = node.raft.metrics().borrow().clone();
        self.term.set(m.current_term as i64);
        self.leader_id.set(m.current_leader.unwrap_or(0) as i64);
        self.is_leader.set(i64::from(
            m.state == ServerState::Leader && m.current_leader == Some(node.id),
        ));
        self.last_log_index
            .set(m.last_log_index.unwrap_or(0) as i64);
        self.applied_index
            .set(m.last_applied.map_or(0, |l| l.index) as i64);
        if let Some(stats) = node.store.as_ref().map(|s| s.stats()) {
            self.committed_index.set(stats.committed_index() as i64);
        }
        self.replication_lag.clear();
        if let (Some(repl), Some(last)) = (&m.replication, m.last_log_index) {
            for (id, matched) in repl.iter().filter(|(id, _)| **id != node.id) {
                let behind = last.saturating_sub(matched.map_or(0, |l| l.index));
                self.replication_lag
                    .get_or_create(&label("peer", id.to_string()))
                    .set(behind as i64);
            }
        }
        self.agent_sessions.set(node.sessions() as i64);
        self.ready.set(i64::from(node.readiness.get().is_ok()));
        let (revision, servers, roles, at_risk) = node.read(|st| {
            let mut servers = [0i64; 4];
            for s in st.servers.values() {
                let i = if s.maintenance {
                    3
                } else {
                    match s.status {
                        baton_core::ServerStatus::Up => 0,
                        baton_core::ServerStatus::Down => 1,
                        baton_core::ServerStatus::Unknown => 2,
                    }
                };
                servers[i] += 1;
            }
            let mut roles = [0i64; 4];
            for r in st.roles.values() {
                let i = ROLE_STATES
                    .iter()
                    .position(|s| *s == r.state().as_str())
                    .unwrap_or(0);
                roles[i] += 1;
            }
            let at_risk = st
                .roles
                .keys()
                .filter(|r| st.standby_readiness(r).is_some_and(|x| x.at_risk()))
                .count();
            (st.revision, servers, roles, at_risk)
        });
        self.revision.set(revision as i64);
        self.roles_at_risk.set(at_risk as i64);
        for (name, n) in SERVER_STATUSES.iter().zip(servers) {
            self.servers.get_or_create(&label("status", *name)).set(n);
        }
        for (name, n) in ROLE_STATES.iter().zip(roles) {
            self.roles.get_or_create(&label("state", *name)).set(n);
        }
    }

    /// The OpenMetrics text of every metric, gauges refreshed first.
    pub fn encode(&self, node: &Node) -> String {
        self.refresh(node);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Every metric name this node serves, as Prometheus shows it (counters with
    /// `_total`); the docs' table is checked against it. A labelled family shows only
    /// once it has a series (the replication lag: on a leader with followers).
    pub fn names(&self) -> Vec<String> {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| {
                let (name, kind) = l.split_once(' ')?;
                Some(if kind == "counter" {
                    format!("{name}_total")
                } else {
                    name.to_string()
                })
            })
            .collect()
    }
}

/// Count, by cause, every history event this node applies from now on (events already
/// in the state when it starts are not counted: a counter starts at the process start).
/// Runs until the node shuts down.
pub async fn count_history(node: Arc<Node>) {
    let mut applied = node.subscribe();
    let mut shutdown = node.manager.shutdown_signal();
    let mut after = node.read(|st| st.history.back().map(|e| e.position()));
    loop {
        let new: Vec<(String, bool)> = node.read(|st| {
            // Revisions start at 1: `end_of(0)` is before every event.
            let from = after.unwrap_or(Position::end_of(0));
            let evs: Vec<_> = st.events_after(from).collect();
            if let Some(last) = evs.last() {
                after = Some(last.position());
            }
            evs.into_iter()
                .map(|e| {
                    let left = e.from.is_some() && e.from != e.to;
                    (e.cause.as_str().to_string(), left)
                })
                .collect()
        });
        for (cause, left) in new {
            node.metrics
                .history_events
                .get_or_create(&label("cause", cause.clone()))
                .inc();
            if cause == FENCED {
                node.metrics.fences_reported.inc();
            } else if left {
                node.metrics
                    .failovers
                    .get_or_create(&label("cause", cause))
                    .inc();
            }
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = crate::until_shutdown(&mut shutdown) => return,
        }
    }
}

/// Record how long `f` took in `histogram`.
pub async fn timed<T>(histogram: &Histogram, f: impl std::future::Future<Output = T>) -> T {
    let start = tokio::time::Instant::now();
    let out = f.await;
    histogram.observe(start.elapsed().as_secs_f64());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in the metric table of one section of docs/operating.md.
    fn documented(from: &str, to: &str) -> Vec<String> {
        let doc = include_str!("../../../docs/operating.md");
        let start = doc.find(from).expect("the section start");
        let end = start + doc[start..].find(to).expect("the section end");
        doc[start..end]
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`'))
            .map(|(name, _)| name.to_string())
            .filter(|n| n.starts_with("baton_"))
            .collect()
    }

    #[test]
    fn every_metric_is_documented() {
        let m = Metrics::new();
        // Only a leader with followers has lag series; an empty family is not shown.
        m.replication_lag.get_or_create(&label("peer", "2")).set(0);
        let mut served = m.names();
        served.sort();
        let mut doc = documented("**Metrics of a directory node.**", "**Agents.**");
        doc.sort();
        assert_eq!(
            served, doc,
            "docs/operating.md and the metrics served differ"
        );
    }

    #[test]
    fn every_cause_is_listed_from_the_start() {
        let m = Metrics::new();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        for cause in CAUSES {
            assert!(
                out.contains(&format!(
                    "baton_history_events_total{{cause=\"{cause}\"}} 0"
                )),
                "{out}"
            );
            // A fence report moves no role: no failover series for it.
            assert_eq!(
                out.contains(&format!("baton_failovers_total{{cause=\"{cause}\"}} 0")),
                cause != FENCED,
                "{out}"
            );
        }
        assert!(out.contains("baton_fences_reported_total 0"), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}
