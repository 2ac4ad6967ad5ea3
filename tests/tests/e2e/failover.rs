//! Role failover with three directory nodes (`--lease 1s`) and three agents whose
//! role command writes a journal; the journal checker is the outside observer of
//! invariant 1 (never two instances of a role at once, epochs only go up).

use std::path::Path;
use std::time::{Duration, Instant};

use baton_tests::{
    Agent, Cluster, ClusterOpts, check_journal, first_line_by, journal, journal_command,
    live_role_pids, ms_between, now_ms, now_ns, role_instances, role_pid_alive, wait_until,
};
use serde_json::Value;

const LEASE: Duration = Duration::from_secs(1);
const SERVERS: [&str; 3] = ["srv-a", "srv-b", "srv-c"];

/// A cluster with `--lease 1s` and agents srv-a, srv-b, srv-c running kind `default` with
/// the journaling command and kind `crash` with `exit 1`.
fn setup() -> (Cluster, Vec<Agent>, std::path::PathBuf) {
    let c = Cluster::start(3, ClusterOpts::lease(LEASE));
    let journal = c.journal("journal");
    let cmd = journal_command(&journal);
    let agents: Vec<Agent> = SERVERS
        .iter()
        .map(|s| Agent::start(&c, s, &[("default", &cmd), ("crash", "exit 1")]))
        .collect();
    c.wait_servers_up(&SERVERS, Duration::from_secs(20));
    (c, agents, journal)
}

fn agent<'a>(agents: &'a mut [Agent], server: &str) -> &'a mut Agent {
    agents
        .iter_mut()
        .find(|a| a.server == server)
        .unwrap_or_else(|| panic!("no agent {server}"))
}

/// Waits until `role` is active on `server` in the directory and its process there has
/// written to the journal after `after_ns`; returns the epoch and the first such line.
fn wait_running(
    c: &Cluster,
    journal: &std::path::Path,
    role: &str,
    server: &str,
    after_ns: u64,
    limit: Duration,
) -> (u64, journal::Line) {
    let line = baton_tests::try_wait_until(limit, || first_line_by(journal, role, server, after_ns))
        .unwrap_or_else(|| {
            panic!(
                "timed out after {limit:?} waiting for {role} to write from {server}\nrole show: {:?}\nevents: {:?}\nservers: {:?}",
                c.role(role),
                c.cli(&["events", "--role", role]).stdout,
                c.servers()
            )
        });
    let (active, epoch) = wait_until(
        Duration::from_secs(10),
        &format!("{role} active on {server}"),
        || c.active(role).filter(|(s, _)| s == server),
    );
    assert_eq!(active, server);
    assert_eq!(
        line.epoch, epoch,
        "the role process runs with the assignment's epoch"
    );
    (epoch, line)
}

fn assert_clean(journal: &std::path::Path) {
    if let Err(e) = check_journal(journal) {
        panic!("{e}");
    }
}

/// Events of `role` with `cause`.
fn events_with(c: &Cluster, role: &str, cause: &str) -> Vec<Value> {
    c.events()
        .into_iter()
        .filter(|e| e["role"] == role && e["cause"] == cause)
        .collect()
}

/// kill -9 of the active agent, failback off then on, drain and resume, with the journal
/// checked after every step and the history at the end.
#[test]
fn kill_failback_drain_with_a_clean_journal() {
    let (c, mut agents, journal) = setup();
    let t0 = now_ns();
    c.json(&["role", "create", "r1", "--servers", "srv-a,srv-b,srv-c"]);
    let (e1, _) = wait_running(&c, &journal, "r1", "srv-a", t0, Duration::from_secs(10));

    let e2 = kill_the_active_agent(&c, &mut agents, &journal, t0, e1);
    let e3 = failback_off_then_on(&c, &mut agents, &journal, e2);
    let (e4, e5) = drain_then_resume(&c, &journal, e3);
    history_then_list_edits(&c, &journal, [e1, e2, e3, e4, e5]);
}

/// kill -9 the active agent: srv-b takes over within lease + a bit, and the killed
/// agent's role process died with it. Returns the new epoch.
fn kill_the_active_agent(
    c: &Cluster,
    agents: &mut [Agent],
    journal: &Path,
    t0: u64,
    e1: u64,
) -> u64 {
    // --- kill -9 the active agent: srv-b takes over within lease + a bit -----------------
    let old_pids = live_role_pids(journal, "r1", t0);
    assert_eq!(
        old_pids.len(),
        1,
        "one r1 process before the kill: {old_pids:?}"
    );
    let t_kill = now_ns();
    agent(agents, "srv-a").kill9();
    let (e2, first_b) = wait_running(
        c,
        journal,
        "r1",
        "srv-b",
        t_kill,
        LEASE + Duration::from_secs(8),
    );
    let failover = Duration::from_nanos(first_b.t_ns - t_kill);
    eprintln!(
        "MEASURED failover after kill -9: {failover:?} = {:.2} x lease",
        failover.as_secs_f64() / LEASE.as_secs_f64()
    );
    assert!(
        failover <= LEASE + Duration::from_secs(5),
        "failover took {failover:?}, lease {LEASE:?}"
    );
    assert!(e2 > e1, "epoch {e2} after {e1}");
    // The killed agent's role process died with it.
    for pid in &old_pids {
        let gone = baton_tests::try_wait_until(Duration::from_secs(2), || {
            (!role_pid_alive(journal, *pid)).then_some(())
        });
        assert!(
            gone.is_some(),
            "role process {pid} of the killed agent srv-a is still alive"
        );
    }
    assert_clean(journal);
    e2
}

/// The old primary comes back with failback off: the role stays; failback on: back to
/// srv-a after the delay, gracefully. Returns the new epoch.
fn failback_off_then_on(c: &Cluster, agents: &mut [Agent], journal: &Path, e2: u64) -> u64 {
    // --- the old primary comes back, failback off: the role stays -----------------------
    let t_back = now_ms();
    agent(agents, "srv-a").restart();
    c.wait_servers_up(&["srv-a"], Duration::from_secs(15));
    let watch_from = now_ns();
    let until = Instant::now() + 2 * LEASE;
    while Instant::now() < until {
        let (s, e) = c.active("r1").expect("r1 has an active server");
        assert_eq!(
            (s.as_str(), e),
            ("srv-b", e2),
            "r1 moved although failback is off"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        first_line_by(journal, "r1", "srv-a", watch_from).is_none(),
        "r1 ran on srv-a again with failback off"
    );

    // --- failback on: back to srv-a after the delay, graceful ----------------------------
    // srv-a has been eligible for ~2 s already; a 4 s delay shows the delay is honoured.
    let delay_ms = 4_000u64;
    let t_set = now_ns();
    c.json(&[
        "role",
        "set",
        "r1",
        "--failback",
        "on",
        "--failback-delay",
        "4s",
    ]);
    let (e3, first_a) = wait_running(c, journal, "r1", "srv-a", t_set, Duration::from_secs(15));
    assert!(e3 > e2, "epoch {e3} after {e2}");
    let fb = events_with(c, "r1", "failback");
    let fb = fb.last().expect("a failback event");
    assert_eq!(fb["from"], "srv-b", "{fb}");
    assert_eq!(fb["to"], "srv-a", "{fb}");
    assert_eq!(fb["epoch"], e3, "{fb}");
    let fb_time = fb["time_ms"].as_u64().unwrap();
    assert!(
        fb_time >= t_back + delay_ms,
        "failback at {fb_time} ms, srv-a came back at {t_back} ms: before the {delay_ms} ms delay"
    );
    let b = role_instances(journal, "r1")
        .into_iter()
        .filter(|i| i.server == "srv-b" && i.epoch == e2)
        .max_by_key(|i| i.last)
        .expect("srv-b instance");
    eprintln!(
        "MEASURED failback handover gap: {:.1} ms",
        ms_between(b.last, first_a.t_ns)
    );
    assert_clean(journal);
    e3
}

/// Drain the active server: a graceful handover with a short gap, nothing lands there
/// while drained; resume: failback brings the role back. Returns both new epochs.
fn drain_then_resume(c: &Cluster, journal: &Path, e3: u64) -> (u64, u64) {
    // --- drain the active server: graceful handover with a short gap; resume -------------
    let t_drain = now_ns();
    c.json(&["server", "drain", "srv-a"]);
    let (e4, first_b2) = wait_running(c, journal, "r1", "srv-b", t_drain, Duration::from_secs(10));
    assert!(e4 > e3, "epoch {e4} after {e3}");
    let a = role_instances(journal, "r1")
        .into_iter()
        .filter(|i| i.server == "srv-a" && i.epoch == e3)
        .max_by_key(|i| i.last)
        .expect("srv-a instance");
    let gap_ms = ms_between(a.last, first_b2.t_ns);
    eprintln!("MEASURED drain handover gap: {gap_ms:.1} ms");
    assert!(gap_ms < 2_000.0, "drain handover gap {gap_ms} ms");
    let srv_a = c.server("srv-a").expect("srv-a listed");
    assert_eq!(srv_a["maintenance"], true, "{srv_a}");
    assert_clean(journal);
    // Nothing lands on a drained server, failback or not: watch for a while.
    let until = Instant::now() + LEASE;
    while Instant::now() < until {
        let (s, _) = c.active("r1").expect("r1 active");
        assert_ne!(s, "srv-a", "r1 returned to a drained server");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t_resume = now_ns();
    c.json(&["server", "resume", "srv-a"]);
    assert_eq!(c.server("srv-a").unwrap()["maintenance"], false);
    // Failback is on: after the delay, back to srv-a.
    let (e5, _) = wait_running(c, journal, "r1", "srv-a", t_resume, Duration::from_secs(15));
    assert!(e5 > e4);
    assert_clean(journal);
    (e4, e5)
}

/// The role's history names each move's cause, in revision order; then list edits and
/// an operator move while it runs, each a graceful handover, recorded after it.
fn history_then_list_edits(c: &Cluster, journal: &Path, [e1, e2, e3, e4, e5]: [u64; 5]) {
    // --- history: causes where they happened ----------------------------------------------
    let ev = c.events();
    let r1: Vec<&Value> = ev.iter().filter(|e| e["role"] == "r1").collect();
    let causes: Vec<&str> = r1
        .iter()
        .map(|e| e["cause"].as_str().unwrap_or("?"))
        .collect();
    eprintln!("r1 history: {causes:?}");
    let expect = [
        ("placement", Value::Null, "srv-a", e1),
        ("lease_expired", Value::from("srv-a"), "srv-b", e2),
        ("failback", Value::from("srv-b"), "srv-a", e3),
        ("maintenance", Value::from("srv-a"), "srv-b", e4),
        ("failback", Value::from("srv-b"), "srv-a", e5),
    ];
    assert_eq!(r1.len(), expect.len(), "r1 history: {r1:?}");
    for (e, (cause, from, to, epoch)) in r1.iter().zip(expect.clone()) {
        assert_eq!(e["cause"], cause, "{e}");
        assert_eq!(e["from"], from, "{e}");
        assert_eq!(e["to"], to, "{e}");
        assert_eq!(e["epoch"], epoch, "{e}");
    }
    let revs: Vec<u64> = r1.iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "revisions {revs:?}");
    // --role filters.
    let only = c.json(&["events", "--role", "r1"]);
    assert_eq!(only.as_array().map(Vec::len), Some(expect.len()));

    // --- list edits while it runs, and an operator move: graceful handovers --------------
    let t_edit = now_ns();
    c.json(&["role", "remove-server", "r1", "srv-a"]);
    let (e6, _) = wait_running(c, journal, "r1", "srv-b", t_edit, Duration::from_secs(10));
    assert!(e6 > e5);
    // (With failback on, an operator move down the list is undone at once by failback.)
    c.json(&["role", "set", "r1", "--failback", "off"]);
    let t_move = now_ns();
    c.json(&["role", "move", "r1", "srv-c"]);
    let (e7, _) = wait_running(c, journal, "r1", "srv-c", t_move, Duration::from_secs(10));
    assert!(e7 > e6);
    let out = c.cli(&["role", "move", "r1", "srv-a"]);
    assert!(out.error_line().contains("not in role"), "{out:?}");
    assert_clean(journal);
    let tail: Vec<(String, String)> = c
        .json(&["events", "--role", "r1"])
        .as_array()
        .unwrap()
        .iter()
        .skip(expect.len())
        .map(|e| {
            (
                e["cause"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert_eq!(
        tail,
        [
            ("placement".to_string(), "srv-b".to_string()),
            ("operator".to_string(), "srv-c".to_string())
        ],
        "history of the edit and the move"
    );
}

/// A role that crashes at once is quarantined and moves on; then the directory freezes
/// (SIGSTOP on all three nodes) for longer than the lease: every role stops by its
/// agent's deadline, and runs again where it was after SIGCONT.
#[test]
fn crash_quarantine_and_directory_freeze() {
    let (c, _agents, journal) = setup();

    // --- role health -----------------------------------------------------------------------
    c.json(&[
        "role",
        "create",
        "c1",
        "--kind",
        "crash",
        "--servers",
        "srv-a,srv-b,srv-c",
    ]);
    let moved = wait_until(
        Duration::from_secs(20),
        "c1 to leave srv-a after crashing",
        || {
            let e = events_with(&c, "c1", "role_failed");
            e.into_iter().find(|e| e["from"] == "srv-a")
        },
    );
    eprintln!("c1 left srv-a: {moved}");
    assert_eq!(moved["to"], "srv-b", "{moved}");
    let r = c.role("c1").expect("c1");
    let reason = r["reason"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        reason.contains("crash") || reason.contains("fail") || reason.contains("exited"),
        "role show c1 should say why it moved: {r}"
    );
    let q = r["quarantined"].as_array().cloned().unwrap_or_default();
    assert!(
        q.iter().any(|q| q["server"] == "srv-a" && q["until_ms"].as_u64().is_some_and(|u| u > now_ms())),
        "c1 should be quarantined on srv-a: {r}"
    );
    // Eventually it has crashed everywhere: quarantined on all, running nowhere, and the
    // status says so.
    let r = wait_until(Duration::from_secs(30), "c1 quarantined everywhere", || {
        let r = c.role("c1")?;
        (r["quarantined"].as_array()?.len() == 3).then_some(r)
    });
    eprintln!("c1 after crashing everywhere: {r}");
    assert_eq!(r["active_server"], Value::Null, "{r}");
    let reason = r["reason"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        reason.contains("quarantined") || reason.contains("crash"),
        "{r}"
    );
    c.json(&["role", "delete", "c1"]);

    // --- directory freeze ----------------------------------------------------------------
    let t0 = now_ns();
    c.json(&["role", "create", "f1", "--servers", "srv-a,srv-b,srv-c"]);
    c.json(&["role", "create", "f2", "--servers", "srv-b,srv-c,srv-a"]);
    let (ef1, _) = wait_running(&c, &journal, "f1", "srv-a", t0, Duration::from_secs(10));
    let (ef2, _) = wait_running(&c, &journal, "f2", "srv-b", t0, Duration::from_secs(10));
    let t_stop = now_ns();
    let stopped_at = Instant::now();
    for id in c.ids() {
        c.sigstop(id);
    }
    // Every role process is gone by lease + 1 s.
    let gone = baton_tests::try_wait_until(LEASE + Duration::from_secs(2), || {
        (live_role_pids(&journal, "f1", t0).is_empty()
            && live_role_pids(&journal, "f2", t0).is_empty())
        .then(|| stopped_at.elapsed())
    });
    let Some(gone) = gone else {
        for id in c.ids() {
            c.sigcont(id);
        }
        panic!(
            "role processes still alive {:?} after the directory froze",
            stopped_at.elapsed()
        );
    };
    eprintln!("MEASURED every role stopped {gone:?} after the directory froze (lease {LEASE:?})");
    let last_f1 = journal::read(&journal)
        .iter()
        .filter(|l| l.role == "f1")
        .map(|l| l.t_ns)
        .max()
        .unwrap();
    let last_f2 = journal::read(&journal)
        .iter()
        .filter(|l| l.role == "f2")
        .map(|l| l.t_ns)
        .max()
        .unwrap();
    eprintln!(
        "last writes after the freeze: f1 {:.0} ms, f2 {:.0} ms",
        ms_between(t_stop, last_f1),
        ms_between(t_stop, last_f2)
    );
    // Keep the directory frozen for twice the lease; nothing may run meanwhile.
    while stopped_at.elapsed() < 2 * LEASE + Duration::from_millis(500) {
        assert!(
            live_role_pids(&journal, "f1", t0).is_empty()
                && live_role_pids(&journal, "f2", t0).is_empty(),
            "a role restarted while the directory was frozen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for id in c.ids() {
        c.sigcont(id);
    }
    assert!(
        gone <= LEASE + Duration::from_secs(1),
        "role processes lived {gone:?} after the directory froze, lease {LEASE:?}"
    );
    let t_cont = now_ns();
    let f1_back = wait_until(Duration::from_secs(15), "f1 to run again", || {
        journal::read(&journal)
            .into_iter()
            .find(|l| l.role == "f1" && l.t_ns >= t_cont)
    });
    let f2_back = wait_until(Duration::from_secs(15), "f2 to run again", || {
        journal::read(&journal)
            .into_iter()
            .find(|l| l.role == "f2" && l.t_ns >= t_cont)
    });
    eprintln!(
        "after SIGCONT: f1 on {} epoch {} (was srv-a epoch {ef1}) after {:.0} ms, f2 on {} epoch {} (was srv-b epoch {ef2}) after {:.0} ms",
        f1_back.server,
        f1_back.epoch,
        ms_between(t_cont, f1_back.t_ns),
        f2_back.server,
        f2_back.epoch,
        ms_between(t_cont, f2_back.t_ns)
    );
    assert_clean(&journal);
    assert_eq!(f1_back.server, "srv-a", "f1 should run again where it was");
    assert_eq!(f2_back.server, "srv-b", "f2 should run again where it was");
    // The agents' fence reports (`fenced`) record pauses, not moves.
    let ev = c.events();
    let moves: Vec<&Value> = ev
        .iter()
        .filter(|e| {
            (e["role"] == "f1" || e["role"] == "f2")
                && e["cause"] != "placement"
                && e["cause"] != "fenced"
        })
        .collect();
    assert!(
        moves.is_empty(),
        "a directory freeze alone moved roles: {moves:?}"
    );
}

/// A frozen agent (SIGSTOP: a hung process, a stuck runtime) cannot stop its roles itself;
/// its lease runs out at the directory and the role moves. Invariant 1 still requires that
/// the frozen agent's role is gone before the new server starts it.
#[test]
fn frozen_agent_does_not_leave_its_role_running() {
    let (c, mut agents, journal) = setup();
    let t0 = now_ns();
    c.json(&["role", "create", "z1", "--servers", "srv-a,srv-b,srv-c"]);
    let (e1, _) = wait_running(&c, &journal, "z1", "srv-a", t0, Duration::from_secs(10));
    let old = live_role_pids(&journal, "z1", t0);
    let t_stop = now_ns();
    agent(&mut agents, "srv-a").sigstop();
    let (e2, first_b) = wait_running(
        &c,
        &journal,
        "z1",
        "srv-b",
        t_stop,
        LEASE + Duration::from_secs(8),
    );
    assert!(e2 > e1);
    let still: Vec<u32> = old
        .iter()
        .copied()
        .filter(|p| role_pid_alive(&journal, *p))
        .collect();
    eprintln!(
        "z1 moved to srv-b after {:.0} ms; srv-a's role processes still alive: {still:?}",
        ms_between(t_stop, first_b.t_ns)
    );
    agent(&mut agents, "srv-a").sigcont();
    assert_clean(&journal);
    assert!(
        still.is_empty(),
        "the frozen agent's role {still:?} still ran when srv-b started it"
    );
}

/// Largest pause (ms) between consecutive journal writes of `role` after `from_ns`.
fn largest_pause_ms(journal: &std::path::Path, role: &str, from_ns: u64) -> f64 {
    let mut t: Vec<u64> = journal::read(journal)
        .into_iter()
        .filter(|l| l.role == role && l.t_ns >= from_ns)
        .map(|l| l.t_ns)
        .collect();
    t.sort();
    t.windows(2)
        .map(|w| ms_between(w[0], w[1]))
        .fold(0.0, f64::max)
}

/// Invariant 4: a directory leader kill, and a kill -9 and restart of every directory
/// node, never move a role (it may pause while no lease can be renewed, and must run
/// again on the same server with the same epoch).
#[test]
fn directory_failures_alone_move_no_role() {
    let (mut c, _agents, journal) = setup();
    let t0 = now_ns();
    c.json(&["role", "create", "g1", "--servers", "srv-a,srv-b,srv-c"]);
    c.json(&["role", "create", "g2", "--servers", "srv-b,srv-c,srv-a"]);
    let (eg1, _) = wait_running(&c, &journal, "g1", "srv-a", t0, Duration::from_secs(10));
    let (eg2, _) = wait_running(&c, &journal, "g2", "srv-b", t0, Duration::from_secs(10));
    let placed = c.events().iter().filter(|e| e["cause"] != "fenced").count();

    // --- leader kill -------------------------------------------------------------------------
    let leader = c.leader().expect("leader");
    let survivors: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
    let t_kill = now_ns();
    c.kill9(leader);
    let new_leader = c.wait_leader_among(&survivors, Duration::from_secs(15));
    eprintln!(
        "leader {leader} killed; node {new_leader} leads after {:.0} ms",
        ms_between(t_kill, now_ns())
    );
    // Watch for three leases after the election: nothing moves, both roles run.
    let until = Instant::now() + 3 * LEASE;
    while Instant::now() < until {
        if let Some((s, e)) = c.active("g1") {
            assert_eq!(
                (s.as_str(), e),
                ("srv-a", eg1),
                "g1 moved after a leader kill"
            );
        }
        if let Some((s, e)) = c.active("g2") {
            assert_eq!(
                (s.as_str(), e),
                ("srv-b", eg2),
                "g2 moved after a leader kill"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let t_check = now_ns();
    wait_running(
        &c,
        &journal,
        "g1",
        "srv-a",
        t_check,
        Duration::from_secs(10),
    );
    wait_running(
        &c,
        &journal,
        "g2",
        "srv-b",
        t_check,
        Duration::from_secs(10),
    );
    eprintln!(
        "MEASURED role pause around the leader kill (lease {LEASE:?}): g1 {:.0} ms, g2 {:.0} ms",
        largest_pause_ms(&journal, "g1", t_kill - 1_000_000_000),
        largest_pause_ms(&journal, "g2", t_kill - 1_000_000_000)
    );
    assert_clean(&journal);
    c.restart(leader);
    c.wait_ready(Duration::from_secs(30));

    // --- kill -9 of every node, restart ------------------------------------------------------
    let t_all = now_ns();
    for id in c.ids() {
        c.kill9(id);
    }
    for id in c.ids() {
        c.restart(id);
    }
    c.wait_ready(Duration::from_secs(30));
    let t_up = now_ns();
    wait_running(&c, &journal, "g1", "srv-a", t_up, Duration::from_secs(15));
    wait_running(&c, &journal, "g2", "srv-b", t_up, Duration::from_secs(15));
    assert_eq!(c.active("g1"), Some(("srv-a".to_string(), eg1)));
    assert_eq!(c.active("g2"), Some(("srv-b".to_string(), eg2)));
    eprintln!(
        "MEASURED role pause around a full directory restart: g1 {:.0} ms, g2 {:.0} ms",
        largest_pause_ms(&journal, "g1", t_all - 1_000_000_000),
        largest_pause_ms(&journal, "g2", t_all - 1_000_000_000)
    );
    assert_clean(&journal);
    // The agents' fence reports (`fenced`) record the pauses; they move nothing.
    let ev: Vec<Value> = c
        .events()
        .into_iter()
        .filter(|e| e["cause"] != "fenced")
        .collect();
    assert_eq!(
        ev.len(),
        placed,
        "directory failures alone changed assignments: {:?}",
        &ev[placed..]
    );
}

/// A drain whose next server has just come back (its agent was declared down and
/// restarted) should hand over as fast as any other drain (~50 ms here).
#[test]
fn drain_to_a_server_that_just_came_back() {
    let (c, mut agents, journal) = setup();
    let t0 = now_ns();
    c.json(&["role", "create", "d1", "--servers", "srv-a,srv-b,srv-c"]);
    wait_running(&c, &journal, "d1", "srv-a", t0, Duration::from_secs(10));
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let (active, epoch) = c.active("d1").expect("d1 active");
        let target = if active == "srv-a" { "srv-b" } else { "srv-a" };
        agent(&mut agents, target).kill9();
        wait_until(Duration::from_secs(20), "the target declared down", || {
            (c.server(target)?.get("status")?.as_str()? == "down").then_some(())
        });
        agent(&mut agents, target).restart();
        c.wait_servers_up(&[target], Duration::from_secs(20));
        let t_drain = now_ns();
        c.json(&["server", "drain", &active]);
        let (_, first) = wait_running(&c, &journal, "d1", target, t_drain, Duration::from_secs(10));
        let old = role_instances(&journal, "d1")
            .into_iter()
            .filter(|i| i.server == active && i.epoch == epoch)
            .max_by_key(|i| i.last)
            .expect("old instance");
        gaps.push(ms_between(old.last, first.t_ns));
        c.json(&["server", "resume", &active]);
    }
    eprintln!("drain gaps to a just-returned server: {gaps:?} ms");
    assert_clean(&journal);
    assert!(
        gaps.iter().all(|g| *g < 500.0),
        "drain handover gaps {gaps:?} ms (others are ~50 ms)"
    );
}

/// A planned stop of an agent (SIGTERM, as systemd does): it stops its roles, then tells
/// the directory it is leaving, so the role moves at once, not after lease + grace, and
/// never runs twice.
#[test]
fn a_stopped_agent_hands_its_roles_over_at_once() {
    // A long lease, so that a move within it can only come from the agent's goodbye.
    let c = Cluster::start(3, ClusterOpts::lease(Duration::from_secs(10)));
    let journal = c.journal("journal");
    let cmd = journal_command(&journal);
    let mut agents: Vec<Agent> = SERVERS
        .iter()
        .map(|s| Agent::start(&c, s, &[("default", &cmd)]))
        .collect();
    c.wait_servers_up(&SERVERS, Duration::from_secs(20));
    let t0 = now_ns();
    c.json(&["role", "create", "s1", "--servers", "srv-a,srv-b,srv-c"]);
    wait_running(&c, &journal, "s1", "srv-a", t0, Duration::from_secs(10));
    let t_stop = Instant::now();
    let stop_ns = now_ns();
    assert!(
        agent(&mut agents, "srv-a").stop(),
        "srv-a did not stop on SIGTERM"
    );
    let (_, first) = wait_running(&c, &journal, "s1", "srv-b", stop_ns, Duration::from_secs(8));
    let moved_after = t_stop.elapsed();
    eprintln!("role moved {moved_after:?} after SIGTERM of its agent (lease 10 s)");
    assert!(
        moved_after < Duration::from_secs(8),
        "moved only after {moved_after:?}"
    );
    assert!(first.t_ns > stop_ns);
    assert_eq!(
        c.server("srv-a")
            .and_then(|s| s["status"].as_str().map(str::to_string)),
        Some("down".to_string())
    );
    assert_clean(&journal);
}
