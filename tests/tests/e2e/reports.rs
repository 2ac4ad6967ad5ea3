//! What an agent reports (a role released for a handover, a role that failed) is sent
//! again until the directory has committed it. Here the release is written while the
//! directory cannot write: during a leader transfer (writes paused) and during an
//! election (the leader killed). The role's process takes 400 ms to stop after SIGTERM,
//! so its release falls inside that window; the handover must still complete.
//!
//! A self-fence, which the directory cannot see, is reported once the agent is back: a
//! frozen agent's role is fenced, and after the thaw the history shows a `fenced` event
//! (once) and `/metrics` counts it.

use std::time::Duration;

use baton_tests::http::{Via, get, parse_metrics, value};
use baton_tests::{
    Agent, Cluster, ClusterOpts, check_journal, first_line_by, free_port, journal_command, now_ns,
    try_wait_until, wait_until,
};
use serde_json::Value;

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

/// The `fenced` events of `role` in the history.
fn fenced_events(c: &Cluster, role: &str) -> Vec<Value> {
    c.events()
        .into_iter()
        .filter(|e| e["cause"] == "fenced" && e["role"] == role)
        .collect()
}

#[test]
fn a_fence_is_reported_once_the_agent_is_back() {
    // Plain text, so /metrics is read without a client certificate (the TLS port is
    // tested in `http`); every node serves it.
    let mut opts = ClusterOpts {
        lease: Some(LEASE),
        insecure: true,
        ..Default::default()
    };
    let mut http = Vec::new();
    for id in 1..=3u64 {
        let addr = format!("127.0.0.1:{}", free_port());
        opts.per_node
            .entry(id)
            .or_default()
            .extend(["--http".to_string(), addr.clone()]);
        http.push(addr);
    }
    let c = Cluster::start(3, opts);
    let journal = c.journal("journal");
    let cmd = journal_command(&journal);
    let agent = Agent::start(&c, "srv-a", &[("default", &cmd)]);
    c.wait_servers_up(&["srv-a"], Duration::from_secs(20));
    let t0 = now_ns();
    c.json(&["role", "create", "f1", "--servers", "srv-a"]);
    try_wait_until(Duration::from_secs(10), || {
        first_line_by(&journal, "f1", "srv-a", t0)
    })
    .unwrap_or_else(|| panic!("f1 never ran on srv-a: {:?}", c.role("f1")));
    let (_, epoch) = c.active("f1").expect("f1 is active");
    assert!(fenced_events(&c, "f1").is_empty());

    // Frozen past its lease: its role's wrapper fences, and the directory declares the
    // server down (it cannot tell that the agent fenced).
    agent.sigstop();
    wait_until(Duration::from_secs(15), "srv-a declared down", || {
        (c.server("srv-a")?["status"] == "down").then_some(())
    });
    agent.sigcont();
    let thawed = now_ns();

    // Back: the agent registers again, its first acknowledged renewal lets the report
    // out, and the history records it.
    let events = wait_until(Duration::from_secs(20), "a fenced event for f1", || {
        let evs = fenced_events(&c, "f1");
        (!evs.is_empty()).then_some(evs)
    });
    eprintln!(
        "MEASURED fenced event {} ms after the thaw",
        (now_ns() - thawed) / 1_000_000
    );
    let e = &events[0];
    assert_eq!(e["from"], "srv-a", "{e}");
    assert!(e["to"].is_null(), "a fence moves nothing: {e}");
    assert_eq!(e["epoch"].as_u64(), Some(epoch), "{e}");
    let detail = e["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(
            "the agent on srv-a stopped the role: no renewal acknowledged within its lease"
        ),
        "{detail}"
    );
    // Every node counts it as it applies the event.
    for addr in &http {
        wait_until(
            Duration::from_secs(10),
            &format!("baton_fences_reported_total at {addr}"),
            || {
                let (code, body) = get(addr, "/metrics", &Via::Plain).ok()?;
                let m = parse_metrics(&body).ok()?;
                (code == 200 && value(&m, "baton_fences_reported_total", &[])? >= 1.0).then_some(())
            },
        );
    }
    // f1 runs again on srv-a under a new epoch; by then the agent has had several
    // acknowledgements, each of which would have resent an unrecorded report: the
    // history holds the fence once.
    let t = now_ns();
    try_wait_until(Duration::from_secs(15), || {
        first_line_by(&journal, "f1", "srv-a", t)
    })
    .unwrap_or_else(|| panic!("f1 never ran again: {:?}", c.role("f1")));
    let (_, again) = c.active("f1").expect("f1 is active again");
    assert!(again > epoch);
    assert_eq!(fenced_events(&c, "f1").len(), 1, "{:?}", c.events());
    // The status page's data lists it among the events, as it lists every cause.
    let (code, body) = get(&http[0], "/api/status", &Via::Plain).expect("GET /api/status");
    assert_eq!(code, 200, "{body}");
    let status: Value = serde_json::from_str(&body).expect("/api/status is JSON");
    let shown = status["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["cause"] == "fenced" && e["role"] == "f1" && e["from"] == "srv-a")
        .count();
    assert_eq!(shown, 1, "{body}");
    let text = c.cli(&["events", "--role", "f1"]);
    assert!(text.ok() && text.stdout.contains("fenced"), "{text:?}");
    check_journal(&journal).unwrap_or_else(|e| panic!("{e}"));
}
