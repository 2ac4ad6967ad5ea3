//! Standby readiness as operators read it: `role show` / `role list` count the standbys
//! that could take a role over now, and flag a role with none as at risk.

use std::time::Duration;

use baton_tests::{Agent, Cluster, ClusterOpts, run_baton, wait_until};
use serde_json::Value;

const LEASE: Duration = Duration::from_secs(1);

/// (ready, total, at_risk) of `role` per `role show -o json`, when it answered.
fn readiness(c: &Cluster, role: &str) -> Option<(u64, usize, bool)> {
    let r = c.role(role)?;
    Some((
        r["standbys_ready"].as_u64()?,
        r["standbys"].as_array()?.len(),
        r["at_risk"].as_bool()?,
    ))
}

/// A CLI command's table output (the harness's `cli` asks for JSON).
fn table(c: &Cluster, args: &[&str]) -> String {
    let mut full = vec!["--directory".to_string(), c.addrs()];
    full.extend(c.admin_tls_args());
    full.extend(args.iter().map(|s| s.to_string()));
    full.extend(["-o".to_string(), "table".to_string()]);
    let out = run_baton(&full, Duration::from_secs(20));
    assert!(out.ok(), "{args:?}: {}", out.stderr);
    out.stdout
}

/// The STANDBYS cell of `role` in `role list -o table`.
fn list_cell(c: &Cluster, role: &str) -> String {
    let out = table(c, &["role", "list"]);
    let mut lines = out.lines();
    let header = lines.next().expect("a header");
    let col = header.find("STANDBYS").expect("a STANDBYS column");
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(role))
        .unwrap_or_else(|| panic!("no row for {role}: {out}"));
    row.get(col..).unwrap_or_default().trim().to_string()
}

/// Two standbys: 2/2; kill -9 one standby's agent: 1/2 once it is declared down; drain
/// the other: 0/2 and at risk, in JSON and in both tables.
#[test]
fn standbys_count_down_to_at_risk() {
    let c = Cluster::start(3, ClusterOpts::lease(LEASE));
    let servers = ["srv-a", "srv-b", "srv-c"];
    let mut agents: Vec<Agent> = servers
        .iter()
        .map(|s| Agent::start(&c, s, &[("default", "sleep 600")]))
        .collect();
    c.wait_servers_up(&servers, Duration::from_secs(20));
    c.json(&["role", "create", "r1", "--servers", "srv-a,srv-b,srv-c"]);
    wait_until(Duration::from_secs(10), "r1 on srv-a", || {
        c.active("r1").filter(|(s, _)| s == "srv-a")
    });
    assert_eq!(readiness(&c, "r1"), Some((2, 2, false)));
    assert_eq!(list_cell(&c, "r1"), "2/2");
    let show = table(&c, &["role", "show", "r1"]);
    assert!(show.contains("2/2 ready\n"), "{show}");

    // kill -9 srv-b's agent: one standby left once the directory declares it down.
    agents[1].kill9();
    wait_until(Duration::from_secs(15), "srv-b declared down", || {
        (c.server("srv-b")?["status"] == "down").then_some(())
    });
    assert_eq!(readiness(&c, "r1"), Some((1, 2, false)));
    let r = c.role("r1").expect("role show");
    let b: &Value = &r["standbys"][0];
    assert_eq!(
        (
            b["server"].as_str(),
            b["ready"].as_bool(),
            b["reason"].as_str()
        ),
        (Some("srv-b"), Some(false), Some("down")),
        "{r}"
    );
    assert_eq!(list_cell(&c, "r1"), "1/2");

    // Drain the other standby: none left, the role is at risk (it still runs on srv-a).
    c.json(&["server", "drain", "srv-c"]);
    assert_eq!(readiness(&c, "r1"), Some((0, 2, true)));
    assert_eq!(c.active("r1").map(|(s, _)| s), Some("srv-a".to_string()));
    assert_eq!(list_cell(&c, "r1"), "0/2 AT RISK");
    let show = table(&c, &["role", "show", "r1"]);
    assert!(show.contains("0/2 ready, AT RISK\n"), "{show}");
    assert!(show.contains("standby, not ready: maintenance"), "{show}");
}
