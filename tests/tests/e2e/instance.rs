//! One agent instance per server name. A second agent started under a name that a live
//! agent holds (a cloned VM, a copied unit file) is refused and exits without running
//! anything; an agent killed and restarted at once gets its roles back on the same
//! server, with the same epoch, once the old instance's lease has run out: no failover,
//! and never two instances' role processes at once.

use std::time::{Duration, Instant};

use baton_tests::{
    Agent, Cluster, ClusterOpts, check_journal, first_line_by, journal_command, now_ns,
    try_wait_until, wait_until,
};

const LEASE: Duration = Duration::from_secs(1);

fn setup(role: &str) -> (Cluster, Agent, std::path::PathBuf, String, u64) {
    let c = Cluster::start(3, ClusterOpts::lease(LEASE));
    let journal = c.journal("journal");
    let cmd = journal_command(&journal);
    let a = Agent::start(&c, "srv-a", &[("default", &cmd)]);
    c.wait_servers_up(&["srv-a"], Duration::from_secs(20));
    let t0 = now_ns();
    c.json(&["role", "create", role, "--servers", "srv-a"]);
    try_wait_until(Duration::from_secs(10), || {
        first_line_by(&journal, role, "srv-a", t0)
    })
    .unwrap_or_else(|| panic!("{role} never ran: {:?}", c.role(role)));
    let (_, epoch) = c.active(role).expect("active");
    (c, a, journal, cmd, epoch)
}

#[test]
fn a_second_agent_under_a_held_name_is_refused_and_runs_nothing() {
    let (c, mut first, journal, cmd, epoch) = setup("h1");
    let holder = c.server("srv-a").expect("srv-a listed");
    let holder_instance = holder["instance"].as_str().unwrap_or_default().to_string();
    let mut second = Agent::start_with(&c, "srv-a", &[("default", &cmd)], &[]);
    let code = wait_until(
        LEASE * 6 + Duration::from_secs(10),
        "the second agent to exit",
        || {
            if second.is_running() {
                None
            } else {
                Some(second.exit_code())
            }
        },
    );
    assert_ne!(code, Some(0), "the refused agent exits non-zero");
    let log = std::fs::read_to_string(second.log()).unwrap_or_default();
    assert!(
        log.contains("is held by another live agent instance")
            && log.contains(&format!("{holder_instance:?}")),
        "the refusal names the holder: {log}"
    );
    assert!(first.is_running(), "the holder keeps running");
    // Nothing moved, nothing ran twice.
    assert_eq!(c.active("h1"), Some(("srv-a".to_string(), epoch)));
    check_journal(&journal).unwrap_or_else(|e| panic!("{e}"));
    let servers: Vec<u32> = baton_tests::journal::read(&journal)
        .iter()
        .map(|l| l.pid)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(servers.len(), 1, "one role process ever: {servers:?}");
    // `server list` says which instance holds the name, from where.
    assert_eq!(holder_instance.len(), 32, "instance id shown: {holder}");
    assert!(
        holder["agent_address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "agent address shown: {holder}"
    );
    assert_eq!(
        c.server("srv-a").expect("listed")["instance"],
        holder_instance
    );
}

#[test]
fn a_restarted_agent_gets_its_roles_back_without_a_failover() {
    let (c, mut agent, journal, _cmd, epoch) = setup("q1");
    let before = c.server("srv-a").expect("listed")["instance"].clone();
    let old_pid = baton_tests::journal::read(&journal)
        .last()
        .map(|l| l.pid)
        .expect("q1 wrote");
    let t_kill = now_ns();
    let started = Instant::now();
    agent.kill9();
    agent.restart();
    // Back: a new role process (new pid) writes after the kill.
    let back = try_wait_until(LEASE * 4 + Duration::from_secs(10), || {
        baton_tests::journal::read(&journal)
            .iter()
            .any(|l| l.t_ns > t_kill && l.pid != old_pid)
            .then_some(())
    });
    assert!(back.is_some(), "q1 did not run again: {:?}", c.role("q1"));
    eprintln!(
        "MEASURED q1 back after a kill -9 and restart: {:?}",
        started.elapsed()
    );
    // The same server, the same epoch: the name was taken over, not failed over.
    assert_eq!(c.active("q1"), Some(("srv-a".to_string(), epoch)));
    let now = c.server("srv-a").expect("listed");
    assert_eq!(now["status"], "up");
    assert_ne!(now["instance"], before, "the new instance holds the name");
    assert!(
        !c.events().iter().any(|e| e["cause"] == "lease_expired"),
        "no failover: {:?}",
        c.events()
    );
    check_journal(&journal).unwrap_or_else(|e| panic!("{e}"));
}
