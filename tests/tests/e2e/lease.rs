//! One lease for the cluster, held in the replicated state: nodes started with different
//! `--lease` flags serve one lease (the first leader's seeds a new cluster), and a
//! shorter lease set while an agent may still hold an acknowledgement of the longer one
//! moves nothing before that acknowledgement has run out.

use std::time::Duration;

use baton_tests::{
    Agent, Cluster, ClusterOpts, check_journal, first_line_by, journal_command, now_ns,
    try_wait_until, wait_until,
};
use serde_json::Value;

/// The lease every node reports from its own copy of the state.
fn leases(c: &Cluster) -> Vec<Option<(u64, u64)>> {
    c.ids()
        .into_iter()
        .map(|id| {
            let v: Value = c
                .cli_at(&[id], &["cluster", "status", "--stale"])
                .try_json()
                .ok()?;
            Some((v["lease_ms"].as_u64()?, v["expiry_lease_ms"].as_u64()?))
        })
        .collect()
}

#[test]
fn nodes_with_different_lease_flags_serve_one_cluster_lease() {
    let mut opts = ClusterOpts::default();
    for (id, lease) in [(1, "1s"), (2, "10s"), (3, "3s")] {
        opts.per_node
            .insert(id, vec!["--lease".into(), lease.into()]);
    }
    let c = Cluster::start(3, opts);
    let agreed = wait_until(Duration::from_secs(20), "one lease on every node", || {
        let l = leases(&c);
        let first = l.first().cloned().flatten()?;
        l.iter().all(|x| *x == Some(first)).then_some(first)
    });
    assert!(
        [1_000, 10_000, 3_000].contains(&agreed.0),
        "the cluster's lease is one node's flag: {agreed:?}"
    );
    assert_eq!(agreed.0, agreed.1);
    // Changed for the whole cluster by one command.
    c.json(&["cluster", "set", "--lease", "5s"]);
    wait_until(
        Duration::from_secs(10),
        "the new lease on every node",
        || {
            leases(&c)
                .iter()
                .all(|l| l.is_some_and(|(lease, _)| lease == 5_000))
                .then_some(())
        },
    );
    // Bad values are refused, naming the problem, and change nothing.
    let out = c.cli(&["cluster", "set", "--lease", "100ms"]);
    assert!(!out.ok());
    assert!(
        out.error_line()
            .contains("lease 100 ms is outside 500..=3600000 ms"),
        "{}",
        out.error_line()
    );
    assert!(
        leases(&c)
            .iter()
            .all(|l| l.is_some_and(|(lease, _)| lease == 5_000))
    );
}

#[test]
fn a_shorter_lease_moves_nothing_before_the_longer_one_has_run_out() {
    let lease = Duration::from_secs(4);
    let c = Cluster::start(3, ClusterOpts::lease(lease));
    let journal = c.journal("journal");
    let cmd = journal_command(&journal);
    let agents: Vec<Agent> = ["srv-a", "srv-b"]
        .iter()
        .map(|s| Agent::start(&c, s, &[("default", &cmd)]))
        .collect();
    c.wait_servers_up(&["srv-a", "srv-b"], Duration::from_secs(20));
    let t0 = now_ns();
    c.json(&["role", "create", "l1", "--servers", "srv-a,srv-b"]);
    try_wait_until(Duration::from_secs(10), || {
        first_line_by(&journal, "l1", "srv-a", t0)
    })
    .unwrap_or_else(|| panic!("l1 never ran: {:?}", c.role("l1")));
    // srv-a's agent freezes holding a 4 s lease (its role wrapper fences on that), and
    // the cluster's lease becomes 1 s at once.
    let t = now_ns();
    agents[0].sigstop();
    c.json(&["cluster", "set", "--lease", "1s"]);
    let moved = try_wait_until(Duration::from_secs(30), || {
        first_line_by(&journal, "l1", "srv-b", t)
    })
    .unwrap_or_else(|| panic!("l1 never moved: {:?}", c.role("l1")));
    let after_ms = (moved.t_ns - t) / 1_000_000;
    eprintln!("MEASURED l1 moved {after_ms} ms after the freeze and the lease change");
    // Then the shorter lease settles for failovers too: by then the frozen agent's role
    // has long been fenced by its wrapper, so the journal holds its whole life.
    wait_until(Duration::from_secs(30), "the lease to settle", || {
        leases(&c)
            .iter()
            .all(|l| *l == Some((1_000, 1_000)))
            .then_some(())
    });
    check_journal(&journal).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        after_ms >= 3_000,
        "moved {after_ms} ms after the freeze: before the 4 s acknowledgement ran out"
    );
    agents[0].sigcont();
}
