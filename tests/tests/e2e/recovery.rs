//! Backup and disaster recovery with the real binary over mutual TLS: `snapshot save`,
//! the whole cluster destroyed and restored from the file; a quorum lost for good and
//! `recover` from the survivor; and the refusals (a damaged backup, a recovery while
//! other voters answer).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use baton_tests::{Agent, CLI_TIMEOUT, CliOutput, Cluster, ClusterOpts, run_baton, wait_until};
use serde_json::Value;

/// Long enough that agents reattach to a restored or recovered cluster before their
/// servers could be declared down (so no role moves), short enough for the failover
/// after it.
const LEASE: Duration = Duration::from_secs(5);
const SERVERS: [&str; 3] = ["srv-a", "srv-b", "srv-c"];

/// `baton ARGS` with the cluster's admin TLS flags and no `--directory`.
fn offline(c: &Cluster, args: &[&str]) -> CliOutput {
    let mut full = c.admin_tls_args();
    full.extend(args.iter().map(|s| s.to_string()));
    run_baton(&full, CLI_TIMEOUT)
}

/// `baton --directory ALL snapshot save FILE`.
fn save(c: &Cluster, file: &Path) -> CliOutput {
    let mut full = vec!["--directory".to_string(), c.addrs()];
    full.extend(c.admin_tls_args());
    full.extend(["snapshot".into(), "save".into(), file.display().to_string()]);
    run_baton(&full, CLI_TIMEOUT)
}

/// role -> (active server, epoch), linearizable.
fn placements(c: &Cluster) -> BTreeMap<String, (Option<String>, u64)> {
    c.json(&["role", "list"])
        .as_array()
        .expect("role list is an array")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                (
                    r["active_server"].as_str().map(str::to_string),
                    r["epoch"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

fn setup() -> (Cluster, Vec<Agent>) {
    let c = Cluster::start(3, ClusterOpts::lease(LEASE));
    let agents: Vec<Agent> = SERVERS
        .iter()
        .map(|s| Agent::start(&c, s, &[("default", "sleep 600")]))
        .collect();
    c.wait_servers_up(&SERVERS, Duration::from_secs(30));
    c.json(&["role", "create", "r1", "--servers", "srv-a,srv-b,srv-c"]);
    c.json(&["role", "create", "r2", "--servers", "srv-b,srv-c,srv-a"]);
    c.json(&["role", "create", "r3", "--servers", "srv-c,srv-a"]);
    wait_until(Duration::from_secs(15), "every role placed", || {
        placements(&c)
            .values()
            .all(|(active, _)| active.is_some())
            .then_some(())
    });
    (c, agents)
}

fn peers_arg(c: &Cluster) -> String {
    c.ids()
        .iter()
        .map(|id| format!("{id}={}", c.node(*id).peer_addr))
        .collect::<Vec<_>>()
        .join(",")
}

/// Save, destroy every node (kill -9, data dirs deleted), restore on three new dirs:
/// every role back where it was with its epoch, and the next failover's epoch is
/// higher than any before. A damaged backup is refused and creates nothing.
#[test]
fn a_cluster_destroyed_is_restored_from_a_snapshot() {
    let (mut c, mut agents) = setup();
    // A move first, so the epochs are not just 1, 2, 3.
    c.json(&["role", "move", "r1", "srv-b"]);
    wait_until(Duration::from_secs(15), "r1 moved to srv-b", || {
        c.active("r1").filter(|(s, _)| s == "srv-b")
    });
    let file = c.dir().join("backup.baton");
    let out = save(&c, &file);
    assert!(out.ok(), "snapshot save: {}", out.stderr);
    assert!(out.stdout.contains("snapshot saved to"), "{}", out.stdout);
    let before = placements(&c);
    let last_epoch = before.values().map(|(_, e)| *e).max().unwrap();

    // A damaged copy is refused, and nothing is created.
    let bad = c.dir().join("damaged.baton");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&bad, &bytes).unwrap();
    let target = c.dir().join("never");
    let out = offline(
        &c,
        &[
            "snapshot",
            "restore",
            bad.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
            "--id",
            "1",
            "--peers",
            &peers_arg(&c),
        ],
    );
    assert!(!out.ok());
    assert!(
        out.error_line().contains("checksum mismatch"),
        "{}",
        out.stderr
    );
    assert!(!target.exists(), "a refused restore creates nothing");

    // Destroy the whole cluster.
    let peers = peers_arg(&c);
    for id in c.ids() {
        c.kill9(id);
        std::fs::remove_dir_all(&c.node(id).data_dir).unwrap();
    }
    // Restore every node on a new, empty data dir (same addresses), then start them.
    for id in c.ids() {
        let dir = c.node(id).data_dir.clone();
        let out = offline(
            &c,
            &[
                "snapshot",
                "restore",
                file.to_str().unwrap(),
                "--data-dir",
                dir.to_str().unwrap(),
                "--id",
                &id.to_string(),
                "--peers",
                &peers,
            ],
        );
        assert!(out.ok(), "restore node {id}: {}", out.stderr);
    }
    for id in c.ids() {
        c.restart(id);
    }
    c.wait_ready(Duration::from_secs(30));
    assert_eq!(placements(&c), before, "every role and epoch back");
    c.wait_servers_up(&SERVERS, Duration::from_secs(30));
    assert_eq!(
        placements(&c),
        before,
        "no role moved while agents reattached"
    );

    // The next failover's epoch is higher than every epoch of the backup.
    let (on, _) = c.active("r2").unwrap();
    let agent = agents.iter_mut().find(|a| a.server == on).unwrap();
    agent.kill9();
    let (to, epoch) = wait_until(LEASE + Duration::from_secs(20), "r2 failed over", || {
        c.active("r2").filter(|(s, _)| *s != on)
    });
    assert_ne!(to, on);
    assert!(
        epoch > last_epoch,
        "epoch {epoch} after the restore, {last_epoch} in the backup"
    );
}

/// Quorum lost for good: recover refuses while the other voters answer; once two
/// nodes are destroyed, recover the third (the leader, which holds every acknowledged
/// write); the write made before is there, no role moved, and two nodes wiped and
/// started with --join make it three voters again.
#[test]
fn a_survivor_recovers_the_cluster_after_losing_its_quorum() {
    let (mut c, _agents) = setup();
    c.json(&["role", "create", "last-write", "--servers", "srv-a,srv-b"]);
    let survivor = c.leader().expect("a leader");
    let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != survivor).collect();
    let before = placements(&c);
    assert!(before.contains_key("last-write"));
    let dir = c.node(survivor).data_dir.clone();
    let recover = |c: &Cluster| {
        offline(
            c,
            &[
                "recover",
                "--data-dir",
                dir.to_str().unwrap(),
                "--id",
                &survivor.to_string(),
            ],
        )
    };

    // Stopped, but its peers still answer: refused, nothing changed.
    c.kill9(survivor);
    let out = recover(&c);
    let line = out.error_line();
    assert!(line.contains("refusing to recover"), "{line}");
    for id in &others {
        assert!(line.contains(&format!("node {id} at")), "{line}");
    }
    let siblings = |dir: &Path| {
        std::fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.contains("recover"))
            .collect::<Vec<_>>()
    };
    assert!(
        siblings(&dir).is_empty(),
        "a refused recovery changes nothing"
    );

    // The other two are destroyed.
    for id in &others {
        c.kill9(*id);
        std::fs::remove_dir_all(&c.node(*id).data_dir).unwrap();
    }
    let out = recover(&c);
    assert!(out.ok(), "recover: {}{}", out.stderr, out.stdout);
    assert!(
        out.stdout.contains("recovered as a one-node cluster"),
        "{}",
        out.stdout
    );
    assert_eq!(
        siblings(&dir).len(),
        1,
        "the old data directory is kept beside"
    );
    for id in &others {
        c.forget(*id);
    }
    c.restart(survivor);
    c.wait_ready(Duration::from_secs(30));
    assert_eq!(placements(&c), before, "no write lost, no role moved");
    c.wait_servers_up(&SERVERS, Duration::from_secs(30));
    assert_eq!(
        placements(&c),
        before,
        "no role moved while agents reattached"
    );

    // Wiped nodes come back with --join.
    for id in &others {
        c.join(*id, survivor);
    }
    wait_until(Duration::from_secs(60), "three voters again", || {
        let s = c
            .cli_at(&[survivor], &["cluster", "status"])
            .try_json()
            .ok()?;
        let nodes = s["nodes"].as_array()?;
        let voters = nodes
            .iter()
            .filter(|n| n["voter"] == Value::Bool(true) && n["state"] != "unreachable")
            .count();
        (voters == 3).then_some(())
    });
    for id in &others {
        let r = wait_until(
            Duration::from_secs(30),
            "the joined node has the state",
            || {
                c.cli_at(&[*id], &["role", "show", "last-write", "--stale"])
                    .try_json()
                    .ok()
            },
        );
        assert_eq!(r["name"], "last-write");
    }
    assert_eq!(placements(&c), before);
}
