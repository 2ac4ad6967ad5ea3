//! A directory node's configuration, with defaults in code. The `baton` binary layers a
//! config file and flags on top.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::DirectoryError;

/// Everything a directory node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Raft node id; unique in the cluster, never reused for a different data dir.
    pub id: u64,
    /// The client port: admin API, agent sessions, watch, health.
    pub listen: SocketAddr,
    /// The address clients and agents use to reach the client port; defaults to `listen`.
    pub advertise: String,
    /// The peer port: Raft and the other node-to-node calls, for directory nodes only.
    /// `None` serves those on the client port too, which only plain text allows (the
    /// in-process tests and the simulator do it); the `baton` binary always has one.
    pub peer_listen: Option<SocketAddr>,
    /// The address other nodes reach the peer port at: this node's address in the Raft
    /// membership. Defaults to `peer_listen` (or `advertise` without a peer port).
    pub peer_advertise: String,
    /// The HTTP port: status page, `/metrics`, `/healthz`, `/readyz` (see `crate::http`).
    /// `None`: not served.
    pub http: Option<SocketAddr>,
    /// Mutual TLS on both ports (the default of the binary), or plain text.
    pub security: baton_tls::Security,
    /// sled database and nothing else.
    pub data_dir: PathBuf,
    /// Initial members of a new cluster (id -> peer address), this node included. Empty when
    /// joining a running cluster with `join`.
    pub peers: BTreeMap<u64, String>,
    /// Client address of a running cluster's node to join through, as a learner.
    pub join: Option<String>,
    /// How long an agent may run its roles without hearing from the directory.
    pub lease_ms: u64,
    /// Extra time, past the lease, before the controller declares a server down.
    /// Must cover clock-rate error: at least `lease * rho`.
    pub grace_ms: u64,
    /// Bound on clock-rate error between any two hosts, in parts per million.
    pub rho_ppm: u64,
    /// Raft heartbeat interval.
    pub heartbeat_ms: u64,
    /// Raft election timeout range (a follower that hears nothing for a random time in
    /// this range starts an election).
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log behind it) every this many applied entries.
    pub snapshot_every: u64,
    /// How long a (role, server) pair stays quarantined after the role failed there.
    pub role_cooldown_ms: u64,
    /// Preferred leader order, highest priority first (node ids). Empty: no preference.
    pub priority: Vec<u64>,
    /// How long the preferred node must have been healthy before leadership moves back.
    pub priority_delay_ms: u64,
    /// History events kept in the replicated state. Cluster-wide: a new leader proposes
    /// its value when the state holds another one.
    pub history_max: u32,
    /// Most client writes the leader packs into one log entry (group commit: the writes
    /// that arrive while an entry is being made durable go out together, one fsync for
    /// all of them; see `crate::batcher`). 1 turns batching off, which keeps the Raft wire
    /// readable by the version before batches (for a rolling upgrade).
    pub write_batch_max: usize,
}

impl NodeConfig {
    /// A configuration with every default, for node `id`.
    pub fn new(id: u64, listen: SocketAddr, data_dir: PathBuf) -> Self {
        NodeConfig {
            id,
            listen,
            advertise: listen.to_string(),
            peer_listen: None,
            peer_advertise: listen.to_string(),
            http: None,
            security: baton_tls::Security::Insecure,
            data_dir,
            peers: BTreeMap::new(),
            join: None,
            lease_ms: baton_core::LEASE_MS_DEFAULT,
            grace_ms: default_grace_ms(baton_core::LEASE_MS_DEFAULT, 10_000),
            rho_ppm: 10_000,
            // A follower of a live leader campaigns only after openraft's leader lease
            // (the maximum election timeout) plus its own election timeout, checked on a
            // tick of 1.5 heartbeats: 300-445 ms of silence with these, twice that when
            // the first candidate's log is short and a second election follows. That and
            // the agents' next renewal must fit in an agent's fence margin (about 1 s
            // after the failure at a 2 s lease, see `warnings`): with 150-300 ms and 50 ms
            // heartbeats the agents of 20 leader kills went up to 1.75 s without a renewal
            // and fenced; with these, 1.31 s at most (docs/benchmarks.md, "Directory
            // failover inside a 2 s lease"). Three heartbeats fit in the shortest timeout.
            heartbeat_ms: 30,
            election_timeout_min_ms: 100,
            election_timeout_max_ms: 200,
            snapshot_every: 10_000,
            role_cooldown_ms: 60_000,
            priority: Vec::new(),
            priority_delay_ms: 5_000,
            history_max: baton_core::HISTORY_MAX_DEFAULT as u32,
            write_batch_max: 256,
        }
    }

    /// Refuse a configuration that would break an invariant or cannot work.
    pub fn validate(&self) -> Result<(), DirectoryError> {
        let bad = |m: String| Err(DirectoryError::Config(m));
        if self.lease_ms < 500 {
            return bad(format!(
                "lease {} ms is too short: the minimum is 500 ms",
                self.lease_ms
            ));
        }
        if self.lease_ms > 3_600_000 {
            return bad(format!("lease {} ms is longer than an hour", self.lease_ms));
        }
        let min_grace = baton_core::controller::min_grace_ms(self.lease_ms, self.rho_ppm);
        if self.grace_ms < min_grace {
            return bad(format!(
                "grace {} ms is below lease * rho = {min_grace} ms: a fast leader clock could declare a server down before its agent has fenced itself",
                self.grace_ms
            ));
        }
        if !(1..=baton_core::WRITES_PER_ENTRY_MAX).contains(&self.write_batch_max) {
            return bad(format!(
                "write_batch_max {} is out of range: 1 (no batching) to {}",
                self.write_batch_max,
                baton_core::WRITES_PER_ENTRY_MAX
            ));
        }
        if self.rho_ppm >= 100_000 {
            return bad(format!(
                "clock-rate bound {} ppm is above 10%",
                self.rho_ppm
            ));
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms * 2 > self.election_timeout_min_ms {
            return bad(format!(
                "heartbeat {} ms must be positive and at most half the minimum election timeout ({} ms)",
                self.heartbeat_ms, self.election_timeout_min_ms
            ));
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            return bad(format!(
                "election timeout range {}..{} ms is empty",
                self.election_timeout_min_ms, self.election_timeout_max_ms
            ));
        }
        if !baton_core::HISTORY_MAX_RANGE.contains(&self.history_max) {
            return bad(format!(
                "history size {} is outside {}..={}",
                self.history_max,
                baton_core::HISTORY_MAX_RANGE.start(),
                baton_core::HISTORY_MAX_RANGE.end()
            ));
        }
        if self.snapshot_every < 10 {
            return bad(format!(
                "snapshot interval {} entries is below 10",
                self.snapshot_every
            ));
        }
        if let baton_tls::Security::Tls(tls) = &self.security {
            if self.peer_listen.is_none() {
                return bad("TLS needs a separate peer port (--peer-listen)".into());
            }
            let id = tls.identity();
            if id.node != Some(self.id) {
                return bad(format!(
                    "the certificate {} is for {id}, not for node {}; issue one with `baton cert issue node --id {}`",
                    tls.paths().cert.display(),
                    self.id,
                    self.id
                ));
            }
        }
        if self.peers.is_empty() && self.join.is_none() {
            return bad(
                "give either the initial peers (--peers) or a node to join (--join)".into(),
            );
        }
        if !self.peers.is_empty() && !self.peers.contains_key(&self.id) {
            return bad(format!(
                "--peers does not name this node's id {}; list every initial member, this one included",
                self.id
            ));
        }
        if self.peers.is_empty() == self.join.is_none() {
            // both given
            return bad("give --peers or --join, not both".into());
        }
        Ok(())
    }

    /// Settings that work but that an operator should know about.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        // A leader failure, worst case: followers wait out openraft's leader lease (the
        // maximum election timeout), then up to two election timeouts (a first candidate
        // with a short log is refused but takes the term), each checked on a tick of 1.5
        // heartbeats; then 100 ms for the agents' next renewal (they retry every 100 ms).
        let election_ms = 3 * self.election_timeout_max_ms + 3 * self.heartbeat_ms + 100;
        // The agent's margin after the failure: it stops its roles at `stop_at_ms` after
        // sending its last acknowledged renewal, which can be a renewal period old when
        // the leader fails.
        let fence = baton_core::Fence {
            lease_ms: self.lease_ms,
            rho_ppm: self.rho_ppm,
        };
        let margin_ms = fence.stop_at_ms(0).saturating_sub(fence.renew_every_ms());
        if margin_ms < election_ms {
            w.push(format!(
                "lease {} ms is short next to a leader failure (up to about {election_ms} ms until agents renew again with these election timeouts): agents may pause their roles (stop and restart them in place) when a leader fails; roles never move because of one",
                self.lease_ms
            ));
        }
        w
    }

    /// The openraft configuration derived from this one.
    pub fn raft_config(&self) -> Result<openraft::Config, DirectoryError> {
        let c = openraft::Config {
            cluster_name: "baton".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: 1_000.min(self.snapshot_every),
            install_snapshot_timeout: 5_000,
            ..Default::default()
        };
        c.validate()
            .map_err(|e| DirectoryError::Config(format!("raft configuration: {e}")))
    }
}

/// The grace used when none is configured: what clock-rate error requires
/// (`lease * rho`), and at least 50 ms for the controller's check period and scheduling.
pub fn default_grace_ms(lease_ms: u64, rho_ppm: u64) -> u64 {
    baton_core::controller::min_grace_ms(lease_ms, rho_ppm).max(50)
}

/// Parse `1=127.0.0.1:7001,2=...` into a peer map.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, addr)) = part.split_once('=') else {
            return Err(format!("peer {part:?} is not of the form ID=ADDRESS"));
        };
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("peer id {id:?} is not a number"))?;
        if id == 0 {
            return Err("peer id 0 is reserved; ids start at 1".into());
        }
        let addr = addr.trim();
        if addr.is_empty() || addr.contains(char::is_whitespace) {
            return Err(format!("peer {id} has a bad address {addr:?}"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("peer id {id} appears twice"));
        }
    }
    if peers.is_empty() {
        return Err("the peer list is empty".into());
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_refuse() {
        let p = parse_peers("1=127.0.0.1:7001, 2=127.0.0.1:7002").unwrap();
        assert_eq!(p[&2], "127.0.0.1:7002");
        assert!(parse_peers("1=a,1=b").unwrap_err().contains("twice"));
        assert!(parse_peers("x=a").unwrap_err().contains("not a number"));
        assert!(parse_peers("1").unwrap_err().contains("ID=ADDRESS"));
        assert!(parse_peers("").unwrap_err().contains("empty"));
        assert!(parse_peers("0=a").unwrap_err().contains("reserved"));
    }

    #[test]
    fn short_leases_are_warned_about() {
        let mut c = NodeConfig::new(1, "127.0.0.1:7001".parse().unwrap(), "/tmp/x".into());
        assert!(
            c.warnings().is_empty(),
            "the defaults warn: {:?}",
            c.warnings()
        );
        // The election timing before the defaults of 2 s leases: its worst case (1.75 s)
        // does not fit in an agent's margin at 2 s (about 1.3 s).
        c.heartbeat_ms = 50;
        c.election_timeout_min_ms = 250;
        c.election_timeout_max_ms = 500;
        assert!(c.warnings()[0].contains("pause their roles"));
        // Nor do the default timings at a lease of 1 s.
        let mut c = NodeConfig::new(1, "127.0.0.1:7001".parse().unwrap(), "/tmp/x".into());
        c.lease_ms = 1_000;
        assert!(c.warnings()[0].contains("pause their roles"));
    }

    #[test]
    fn config_validation_names_the_problem() {
        let mut c = NodeConfig::new(1, "127.0.0.1:7001".parse().unwrap(), "/tmp/x".into());
        c.peers = parse_peers("1=127.0.0.1:7001").unwrap();
        c.validate().unwrap();
        c.raft_config().unwrap();
        let mut bad = c.clone();
        bad.grace_ms = 0;
        assert!(bad.validate().unwrap_err().to_string().contains("grace"));
        let mut bad = c.clone();
        bad.lease_ms = 100;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("minimum is 500")
        );
        let mut bad = c.clone();
        bad.peers = parse_peers("2=127.0.0.1:7002").unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("this node's id 1")
        );
        let mut bad = c;
        bad.join = Some("x:1".into());
        assert!(bad.validate().unwrap_err().to_string().contains("not both"));
    }
}
