//! A role is stopped only when no process of it is left. Every role here runs
//! [`stubborn_journal_command`]: its shell waits on a worker that ignores SIGTERM, so the
//! shell dies on the first SIGTERM and the worker lives on until SIGKILL. Through a drain,
//! a kill -9 of the agent and a frozen agent, the worker must be gone before the next
//! server starts the role: the journal shows no two writers at once, and no process of
//! the old epoch is alive once the new one writes.

use std::path::Path;
use std::time::Duration;

use baton_tests::{
    Agent, Cluster, ClusterOpts, check_journal, first_line_by, live_role_pids, now_ns,
    role_pid_alive, stubborn_journal_command, try_wait_until, wait_until,
};

const LEASE: Duration = Duration::from_secs(1);

/// Three agents (srv-a, srv-b, srv-c) running the stubborn role with a 1 s handover grace;
/// role `role` created on them in that order and running on srv-a. Returns the worker pid.
fn setup(role: &str) -> (Cluster, Vec<Agent>, std::path::PathBuf, u32) {
    let c = Cluster::start(3, ClusterOpts::lease(LEASE));
    let journal = c.journal("journal");
    let cmd = stubborn_journal_command(&journal);
    let agents: Vec<Agent> = ["srv-a", "srv-b", "srv-c"]
        .iter()
        .map(|s| Agent::start_with(&c, s, &[("default", &cmd)], &["--handover-grace", "1s"]))
        .collect();
    c.wait_servers_up(&["srv-a", "srv-b", "srv-c"], Duration::from_secs(20));
    let t0 = now_ns();
    c.json(&["role", "create", role, "--servers", "srv-a,srv-b,srv-c"]);
    try_wait_until(Duration::from_secs(10), || {
        first_line_by(&journal, role, "srv-a", t0)
    })
    .unwrap_or_else(|| panic!("{role} never wrote from srv-a: {:?}", c.role(role)));
    let pids = live_role_pids(&journal, role, t0);
    assert_eq!(pids.len(), 1, "one worker of {role}: {pids:?}");
    let worker = *pids.iter().next().expect("one pid");
    (c, agents, journal, worker)
}

/// Waits for `role` to write from `server` after `after_ns`, then checks that the old
/// worker was already dead when it did, and that the journal is clean.
fn assert_moved_cleanly(
    c: &Cluster,
    journal: &Path,
    role: &str,
    server: &str,
    after_ns: u64,
    worker: u32,
) {
    let first = try_wait_until(LEASE + Duration::from_secs(15), || {
        first_line_by(journal, role, server, after_ns)
    })
    .unwrap_or_else(|| {
        panic!(
            "{role} never wrote from {server}: {:?}\nevents: {}",
            c.role(role),
            c.cli(&["events", "--role", role]).stdout
        )
    });
    let worker_alive = role_pid_alive(journal, worker);
    if let Err(e) = check_journal(journal) {
        panic!("two writers of {role} at once (worker {worker} alive: {worker_alive}):\n{e}");
    }
    assert!(
        !worker_alive,
        "the old worker {worker} of {role} is still alive after {server} started the role at {}",
        first.t_ns
    );
}

#[test]
fn a_drain_stops_a_worker_that_ignores_sigterm() {
    let (c, _agents, journal, worker) = setup("d1");
    let t = now_ns();
    c.json(&["server", "drain", "srv-a"]);
    assert_moved_cleanly(&c, &journal, "d1", "srv-b", t, worker);
}

#[test]
fn a_killed_agent_leaves_no_worker_that_ignores_sigterm() {
    let (c, mut agents, journal, worker) = setup("k1");
    let t = now_ns();
    agents[0].kill9();
    assert_moved_cleanly(&c, &journal, "k1", "srv-b", t, worker);
}

#[test]
fn a_frozen_agent_leaves_no_worker_that_ignores_sigterm() {
    let (c, agents, journal, worker) = setup("f1");
    let t = now_ns();
    agents[0].sigstop();
    assert_moved_cleanly(&c, &journal, "f1", "srv-b", t, worker);
    agents[0].sigcont();
    // Thawed, the agent finds its lease long gone and runs nothing of f1.
    wait_until(Duration::from_secs(10), "srv-a to register again", || {
        (c.server("srv-a")?["status"] == "up").then_some(())
    });
    check_journal(&journal).unwrap_or_else(|e| panic!("{e}"));
}
