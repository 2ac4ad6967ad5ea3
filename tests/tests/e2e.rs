//! End-to-end tests: the real `baton` binary, directory nodes on loopback, agents whose
//! roles write a journal. One test binary (one link) for every scenario:
//! - `directory`: replication, refusals, leader kill, durable acknowledgement;
//! - `failover`: kill -9, failback, drain, role health, directory freeze, history;
//! - `manager`: the directory's own failover (leader and session-node kills move
//!   no role, membership changes, preferred leader, sessions spread over the nodes);
//! - `http`: the `--http` port: metrics scraped over mutual TLS, readiness and gRPC
//!   health without a quorum, refusals, the status page in headless Chromium;
//! - `instance`: one agent instance per server name (a second one is refused; a restart
//!   takes the name over without a failover);
//! - `lease`: one lease for the cluster (different node flags; a shortening is safe);
//! - `reports`: releases reported again until committed (a leader transfer, an election),
//!   and a frozen agent's fence reported once it is back (history, status page, metrics);
//! - `stop`: a role is stopped only when no process of it is left (workers that ignore
//!   SIGTERM, through a drain, a kill -9 of the agent and a frozen agent).
//!
//! Run with `cargo test -p baton-tests`; `BATON_BIN` picks a prebuilt binary and
//! `BATON_E2E_KEEP=1` keeps the temporary directories (logs, journals, data).

#[path = "e2e/conventions.rs"]
mod conventions;
#[path = "e2e/directory.rs"]
mod directory;
#[path = "e2e/durability.rs"]
mod durability;
#[path = "e2e/failover.rs"]
mod failover;
#[path = "e2e/http.rs"]
mod http;
#[path = "e2e/instance.rs"]
mod instance;
#[path = "e2e/lease.rs"]
mod lease;
#[path = "e2e/manager.rs"]
mod manager;
#[path = "e2e/recovery.rs"]
mod recovery;
#[path = "e2e/reports.rs"]
mod reports;
#[path = "e2e/security.rs"]
mod security;
#[path = "e2e/standby.rs"]
mod standby;
#[path = "e2e/stop.rs"]
mod stop;

/// The harness itself: a failing test leaves no process and no directory behind.
mod harness {
    use std::sync::Mutex;
    use std::time::Duration;

    use baton_tests::{
        Agent, Cluster, ClusterOpts, journal, journal_command, pids_with_marker, wait_until,
    };

    #[test]
    fn a_failing_test_leaves_nothing_behind() {
        let marker = Mutex::new(String::new());
        let result = std::panic::catch_unwind(|| {
            let c = Cluster::start(1, ClusterOpts::lease(Duration::from_secs(1)));
            let j = c.journal("journal");
            let _agent = Agent::start(&c, "srv-a", &[("default", &journal_command(&j))]);
            c.wait_servers_up(&["srv-a"], Duration::from_secs(20));
            c.json(&["role", "create", "h1", "--servers", "srv-a"]);
            wait_until(Duration::from_secs(10), "h1 to run", || {
                journal::read(&j).first().cloned()
            });
            let m = c.dir().display().to_string();
            // Directory node, agent, role wrapper and role shell all name the directory.
            assert!(
                pids_with_marker(&m).len() >= 4,
                "{:?}",
                pids_with_marker(&m)
            );
            *marker.lock().unwrap() = m;
            panic!("deliberate failure to exercise the cleanup");
        });
        assert!(result.is_err());
        let m = marker.lock().unwrap().clone();
        assert!(!m.is_empty());
        let left = pids_with_marker(&m);
        assert!(left.is_empty(), "processes left behind: {left:?}");
        assert!(!std::path::Path::new(&m).exists(), "{m} left behind");
    }
}
