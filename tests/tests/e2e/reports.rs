//! What an agent reports (a role released for a handover, a role that failed) is sent
//! again until the directory has committed it. Here the release is written while the
//! directory cannot write: during a leader transfer (writes paused) and during an
//! election (the leader killed). The role's process takes 400 ms to stop after SIGTERM,
//! so its release falls inside that window; the handover must still complete.

use std::time::Duration;

use baton_tests::{
    Agent, Cluster, ClusterOpts, check_journal, first_line_by, now_ns, try_wait_until,
};

const LEASE: Duration = Duration::from_secs(1);

/// A journaling role that stops 400 ms after SIGTERM.
fn slow_stop_command(journal: &std::path::Path) -> String {
    format!(
        "trap 'sleep 0.4; exit 0' TERM; {}",
        baton_tests::journal_command(journal)
    )
}

fn setup() -> (Cluster, Vec<Agent>, std::path::PathBuf) {
    let c = Cluster::start(3, ClusterOpts::lease(LEASE));
    let journal = c.journal("journal");
    let cmd = slow_stop_command(&journal);
    let agents = ["srv-a", "srv-b"]
        .iter()
        .map(|s| Agent::start(&c, s, &[("default", &cmd)]))
        .collect();
    c.wait_servers_up(&["srv-a", "srv-b"], Duration::from_secs(20));
    let t0 = now_ns();
    c.json(&["role", "create", "m1", "--servers", "srv-a,srv-b"]);
    try_wait_until(Duration::from_secs(10), || {
        first_line_by(&journal, "m1", "srv-a", t0)
    })
    .unwrap_or_else(|| panic!("m1 never ran on srv-a: {:?}", c.role("m1")));
    (c, agents, journal)
}

/// Drains srv-a, runs `disrupt` at once, and requires m1 to run on srv-b.
fn drain_while(c: &mut Cluster, journal: &std::path::Path, disrupt: impl FnOnce(&mut Cluster)) {
    let t = now_ns();
    c.json(&["server", "drain", "srv-a"]);
    disrupt(c);
    let moved = try_wait_until(Duration::from_secs(20), || {
        first_line_by(journal, "m1", "srv-b", t)
    });
    assert!(
        moved.is_some(),
        "the handover did not complete: {:?}\nevents: {}",
        c.role("m1"),
        c.cli(&["events", "--role", "m1"]).stdout
    );
    check_journal(journal).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_release_lost_in_a_leader_transfer_is_sent_again() {
    let (mut c, _agents, journal) = setup();
    let leader = c.wait_ready(Duration::from_secs(10));
    let target = c
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    drain_while(&mut c, &journal, |c| {
        // Writes pause for the transfer (about a second), which covers the release.
        let out = c.cli(&["cluster", "transfer-leader", &target.to_string()]);
        eprintln!("transfer: {} {}", out.stdout.trim(), out.stderr.trim());
    });
}

#[test]
fn a_release_lost_in_an_election_is_sent_again() {
    let (mut c, _agents, journal) = setup();
    let leader = c.wait_ready(Duration::from_secs(10));
    // The election (about a second) starts at once and covers the release at ~400 ms.
    drain_while(&mut c, &journal, |c| c.kill9(leader));
}
