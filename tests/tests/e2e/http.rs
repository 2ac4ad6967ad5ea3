//! The `--http` port of the directory nodes: `/metrics` scraped and parsed, `/readyz`
//! and the gRPC health service following readiness, the refusals of the TLS port, and
//! the status page in a real browser (headless Chromium).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_tests::http::{Sample, Via, get, parse_metrics, value};
use baton_tests::{Agent, Cluster, ClusterOpts, free_port, journal_command, wait_until};
use baton_tls::Permission;
use baton_tls::make::Subject;

const LEASE: Duration = Duration::from_secs(1);

/// Options for `n` nodes that each serve `--http` on a free port; the ports by node id.
fn with_http(n: u64, mut opts: ClusterOpts) -> (ClusterOpts, BTreeMap<u64, String>) {
    let mut http = BTreeMap::new();
    for id in 1..=n {
        let addr = format!("127.0.0.1:{}", free_port());
        opts.per_node
            .entry(id)
            .or_default()
            .extend(["--http".to_string(), addr.clone()]);
        http.insert(id, addr);
    }
    (opts, http)
}

fn scrape(addr: &str, via: &Via) -> Vec<Sample> {
    let (code, body) = get(addr, "/metrics", via).expect("GET /metrics");
    assert_eq!(code, 200, "/metrics at {addr}: {body}");
    assert!(
        body.trim_end().ends_with("# EOF"),
        "not an OpenMetrics exposition: {body}"
    );
    parse_metrics(&body).expect("parse /metrics")
}

/// `/readyz` at `addr` until it answers `want`; returns its body.
fn wait_readyz(addr: &str, via: &Via, want: u16, limit: Duration) -> String {
    wait_until(limit, &format!("/readyz {want} at {addr}"), || {
        get(addr, "/readyz", via)
            .ok()
            .filter(|(code, _)| *code == want)
            .map(|(_, body)| body)
    })
}

/// The gRPC health status of `service` at a node's client port.
fn grpc_health(c: &Cluster, id: u64, service: &str) -> Option<i32> {
    let certs = c.certs()?;
    let tls = baton_tls::Tls::load(baton_tls::TlsPaths {
        ca: certs.dir.join("ca.pem"),
        cert: certs.dir.join("client-viewer.pem"),
        key: certs.dir.join("client-viewer.key"),
    })
    .ok()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", c.node(id).addr))
                .ok()?
                .connect_timeout(Duration::from_secs(2));
        let channel = baton_tls::Security::Tls(tls).channel(endpoint, None);
        let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        });
        req.set_timeout(Duration::from_secs(3));
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(req)
            .await
            .ok()
            .map(|r| r.into_inner().status)
    })
}

/// A TLS cluster with `--http`: a viewer scrapes the leader's and a follower's metrics,
/// sees a failover counted after an agent is killed, `/readyz` (and gRPC health) turns
/// 503 (NOT_SERVING) on a node whose two peers are killed and 200 again when they are
/// back; a connection without a client certificate, or with an agent's, is refused.
#[test]
fn metrics_readiness_and_refusals_over_tls() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let (opts, http) = with_http(3, ClusterOpts::lease(LEASE));
    let mut c = Cluster::start(3, opts);
    let certs = c.certs().expect("a TLS cluster").dir.clone();
    c.certs().unwrap().args(Subject::Client {
        name: "viewer".into(),
        permission: Permission::Viewer,
        server: None,
    });
    let viewer = Via::cert(&certs, "client-viewer").expect("viewer client");
    let journal = c.journal("journal");
    let cmd = journal_command(&journal);
    // srv-b's agent serves its own metrics (plain HTTP, loopback).
    let agent_http = format!("127.0.0.1:{}", free_port());
    let mut agents = [
        Agent::start(&c, "srv-a", &[("default", &cmd)]),
        Agent::start_with(&c, "srv-b", &[("default", &cmd)], &["--http", &agent_http]),
    ];
    c.wait_servers_up(&["srv-a", "srv-b"], Duration::from_secs(20));
    let out = c.cli(&["role", "create", "r1", "--servers", "srv-a,srv-b"]);
    assert!(out.ok(), "{out:?}");
    wait_until(Duration::from_secs(20), "r1 on srv-a", || {
        c.active("r1").filter(|(s, _)| s == "srv-a")
    });
    for id in c.ids() {
        wait_readyz(&http[&id], &viewer, 200, Duration::from_secs(20));
    }

    let (leader, m) = leader_and_follower_metrics(&c, &http, &viewer);
    failover_metrics(&c, &mut agents, &http, &viewer, &agent_http, leader, &m);
    status_json_and_refusals(&http, &viewer, &certs, leader);
    // gRPC health follows readiness: SERVING now ...
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;
    for svc in ["baton.v1.Directory", "baton.v1.Agent", "baton.v1.Watch"] {
        assert_eq!(grpc_health(&c, leader, svc), Some(serving), "{svc}");
    }
    // ... and a node cut from its quorum (both peers killed) is not ready.
    let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
    for id in &others {
        c.kill9(*id);
    }
    let started = Instant::now();
    let why = wait_readyz(&http[&leader], &viewer, 503, Duration::from_secs(15));
    println!(
        "/readyz 503 on node {leader} {:?} after its peers died: {}",
        started.elapsed(),
        why.trim()
    );
    assert!(why.contains("not ready"), "{why}");
    wait_until(Duration::from_secs(10), "health NOT_SERVING", || {
        (grpc_health(&c, leader, "baton.v1.Directory") == Some(not_serving)).then_some(())
    });
    for svc in ["baton.v1.Agent", "baton.v1.Watch"] {
        assert_eq!(grpc_health(&c, leader, svc), Some(not_serving), "{svc}");
    }
    let (code, _) = get(&http[&leader], "/healthz", &viewer).unwrap();
    assert_eq!(code, 200, "/healthz answers while the process serves");

    // Peers back: ready again.
    for id in &others {
        c.restart(*id);
    }
    for id in c.ids() {
        wait_readyz(&http[&id], &viewer, 200, Duration::from_secs(30));
    }
    wait_until(Duration::from_secs(10), "health SERVING again", || {
        (grpc_health(&c, leader, "baton.v1.Directory") == Some(serving)).then_some(())
    });
}

/// The leader's metrics, a follower's view of the same leader, and renewals counted
/// by whichever node the agents attached to. Returns the leader and its scrape.
fn leader_and_follower_metrics(
    c: &Cluster,
    http: &BTreeMap<u64, String>,
    viewer: &Via,
) -> (u64, Vec<Sample>) {
    // The leader's metrics, and a follower's view of the same leader.
    let leader = c.leader().expect("a leader");
    let m = scrape(&http[&leader], viewer);
    assert_eq!(value(&m, "baton_raft_is_leader", &[]), Some(1.0));
    assert_eq!(value(&m, "baton_raft_leader_id", &[]), Some(leader as f64));
    assert!(value(&m, "baton_raft_term", &[]).unwrap() >= 1.0);
    let applied = value(&m, "baton_raft_applied_index", &[]).unwrap();
    assert!(applied >= 1.0);
    // The leader commits before it applies; a scrape reads committed after applied.
    let committed = value(&m, "baton_raft_committed_index", &[]).unwrap();
    assert!(
        committed >= applied,
        "committed {committed} < applied {applied}"
    );
    // Every write so far went through this leader's disk and its commit path.
    for h in [
        "baton_raft_append_duration_seconds_count",
        "baton_raft_commit_duration_seconds_count",
    ] {
        assert!(value(&m, h, &[]).unwrap_or(0.0) >= 1.0, "{h}: {m:?}");
    }
    assert_eq!(value(&m, "baton_ready", &[]), Some(1.0));
    for peer in c.ids().into_iter().filter(|id| *id != leader) {
        let lag = value(
            &m,
            "baton_raft_replication_lag_entries",
            &[("peer", &peer.to_string())],
        );
        assert!(lag.is_some(), "no lag for peer {peer}: {m:?}");
    }
    assert_eq!(value(&m, "baton_servers", &[("status", "up")]), Some(2.0));
    assert_eq!(value(&m, "baton_roles", &[("state", "running")]), Some(1.0));
    // r1 on srv-a with srv-b ready behind it: not at risk.
    assert_eq!(value(&m, "baton_roles_at_risk", &[]), Some(0.0));
    assert!(
        value(&m, "baton_client_write_duration_seconds_count", &[]).is_some(),
        "{m:?}"
    );
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let f = scrape(&http[&follower], viewer);
    assert_eq!(value(&f, "baton_raft_is_leader", &[]), Some(0.0));
    assert_eq!(value(&f, "baton_raft_leader_id", &[]), Some(leader as f64));
    // Agents renew through whichever node they attached to.
    wait_until(Duration::from_secs(10), "renewals counted", || {
        let total: f64 = c
            .ids()
            .iter()
            .map(|id| value(&scrape(&http[id], viewer), "baton_renewals_total", &[]).unwrap())
            .sum();
        (total > 0.0).then_some(())
    });
    (leader, m)
}

/// kill -9 the agent running r1: the role moves, the leader counts a failover and its
/// server down, and the agent that took r1 over says so on its own port.
fn failover_metrics(
    c: &Cluster,
    agents: &mut [Agent],
    http: &BTreeMap<u64, String>,
    viewer: &Via,
    agent_http: &str,
    leader: u64,
    m: &[Sample],
) {
    let failovers = |m: &[Sample]| {
        value(m, "baton_failovers_total", &[("cause", "lease_expired")]).expect("failovers")
    };
    let before = failovers(m);

    // kill -9 the agent running r1: the role moves, and the leader counts a failover.
    agents[0].kill9();
    wait_until(Duration::from_secs(20), "r1 on srv-b", || {
        c.active("r1").filter(|(s, _)| s == "srv-b")
    });
    let after = wait_until(Duration::from_secs(10), "the failover counted", || {
        let m = scrape(&http[&leader], viewer);
        (failovers(&m) > before).then_some(m)
    });
    assert_eq!(
        value(&after, "baton_servers", &[("status", "down")]),
        Some(1.0)
    );
    // r1 now on srv-b, its only standby (srv-a) down: at risk.
    assert_eq!(value(&after, "baton_roles_at_risk", &[]), Some(1.0));
    // The agent that took r1 over says so on its own port.
    let a = wait_until(Duration::from_secs(10), "srv-b's agent running r1", || {
        let (code, body) = get(agent_http, "/metrics", &Via::Plain).ok()?;
        assert_eq!(code, 200, "{body}");
        let m = parse_metrics(&body).expect("parse the agent's metrics");
        (value(
            &m,
            "baton_agent_roles",
            &[("role", "r1"), ("state", "running")],
        ) == Some(1.0))
        .then_some(m)
    });
    assert_eq!(value(&a, "baton_agent_session", &[]), Some(1.0));
    let margin = value(&a, "baton_agent_fence_margin_seconds", &[]).unwrap();
    assert!(margin > 0.0 && margin <= LEASE.as_secs_f64(), "{margin}");
    let age = value(&a, "baton_agent_last_renewal_ack_age_seconds", &[]).unwrap();
    assert!((0.0..LEASE.as_secs_f64()).contains(&age), "{age}");
    assert_eq!(get(agent_http, "/healthz", &Via::Plain).unwrap().0, 200);
    assert!(
        value(
            &after,
            "baton_history_events_total",
            &[("cause", "lease_expired")]
        )
        .unwrap()
            >= 1.0
    );
    println!(
        "failovers_total{{lease_expired}} on the leader: {before} -> {}",
        failovers(&after)
    );
}

/// The status JSON names the move; no client certificate fails the handshake, an
/// agent may not read, an unknown path is 404.
fn status_json_and_refusals(http: &BTreeMap<u64, String>, viewer: &Via, certs: &Path, leader: u64) {
    // The status JSON names the move too.
    let (code, body) = get(&http[&leader], "/api/status", viewer).unwrap();
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON status");
    let r1 = status["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "r1")
        .expect("r1 in the status");
    assert_eq!(r1["active"], "srv-b");
    assert_eq!(status["cluster"]["leader"], leader);
    assert_eq!(
        (&r1["standbys_ready"], &r1["standbys"], &r1["at_risk"]),
        (
            &serde_json::json!(0),
            &serde_json::json!(1),
            &serde_json::json!(true)
        ),
        "{r1}"
    );

    // Refusals: no client certificate fails the handshake; an agent may not read.
    let anonymous = Via::no_client_cert(certs).unwrap();
    match get(&http[&leader], "/metrics", &anonymous) {
        Ok((code, body)) => panic!("served {code} without a client certificate: {body}"),
        Err(e) => println!("without a client certificate: refused ({e})"),
    }
    let agent = Via::cert(certs, "agent-srv-b").unwrap();
    let (code, body) = get(&http[&leader], "/metrics", &agent).unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("viewer"), "{body}");
    let (code, _) = get(&http[&leader], "/nothing-here", viewer).unwrap();
    assert_eq!(code, 404);
}

/// Chromium, if installed: `BATON_CHROMIUM`, else `chromium` or `chromium-browser` on
/// the PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BATON_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
        .find(|p| p.is_file())
}

/// Run headless Chromium with `args` and `url`, killed after a bound; its stdout.
fn run_chromium(exe: &Path, profile: &Path, args: &[String], url: &str) -> String {
    let mut cmd = Command::new(exe);
    cmd.args([
        "--headless",
        // Root in a container: the sandbox needs namespaces a container may not give.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let child = cmd.spawn().expect("start chromium");
    let pid = child.id();
    // The bound: a hung browser must not hang the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => String::from_utf8_lossy(&out.expect("chromium output").stdout).into_owned(),
        Err(_) => {
            // SAFETY: a plain kill of our own child.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            panic!("chromium did not finish within 60 s");
        }
    }
}

/// The DOM of the page after its script ran (a virtual-time budget lets the first poll
/// of `/api/status` finish and render).
fn dump_dom(exe: &Path, profile: &Path, url: &str) -> String {
    run_chromium(
        exe,
        profile,
        &["--virtual-time-budget=4000".into(), "--dump-dom".into()],
        url,
    )
}

/// The status page in headless Chromium: it shows the servers and roles; after an agent
/// is killed its LED turns red and its role moves to the next server, on the page; a
/// drained server turns amber. The screenshot is left in the target dir.
/// The cluster runs with `--insecure`: a headless browser cannot present a client
/// certificate, and the TLS port (same handlers) is tested above.
#[test]
fn status_page_in_headless_chromium() {
    let Some(exe) = chromium() else {
        println!(
            "skipped: chromium is not installed (apt-get install -y chromium, or set BATON_CHROMIUM)"
        );
        return;
    };
    let (opts, http) = with_http(
        3,
        ClusterOpts {
            lease: Some(LEASE),
            insecure: true,
            ..Default::default()
        },
    );
    let c = Cluster::start(3, opts);
    let journal = c.journal("journal");
    let cmd = journal_command(&journal);
    let mut agents: Vec<Agent> = ["srv-a", "srv-b", "srv-c"]
        .iter()
        .map(|s| Agent::start(&c, s, &[("default", &cmd)]))
        .collect();
    c.wait_servers_up(&["srv-a", "srv-b", "srv-c"], Duration::from_secs(20));
    for (role, list) in [
        ("camera-gateway", "srv-a,srv-b,srv-c"),
        ("sensor-bridge", "srv-b,srv-c,srv-a"),
    ] {
        let out = c.cli(&["role", "create", role, "--servers", list]);
        assert!(out.ok(), "{out:?}");
    }
    wait_until(Duration::from_secs(20), "camera-gateway on srv-a", || {
        c.active("camera-gateway").filter(|(s, _)| s == "srv-a")
    });
    let leader = c.leader().expect("a leader");
    let url = format!("http://{}/", http[&leader]);
    let profile = c.dir().join("chromium-profile");

    let dom = wait_until(
        Duration::from_secs(60),
        "the page to show the cluster",
        || {
            let dom = dump_dom(&exe, &profile, &url);
            (dom.contains(r#"data-server="srv-a" data-led="up""#)
                && dom.contains(r#"data-role="camera-gateway" data-active="srv-a""#)
                && dom.contains(r#"data-role="sensor-bridge" data-active="srv-b""#))
            .then_some(dom)
        },
    );
    assert!(
        dom.contains(r#"class="chip active""#),
        "no active server highlighted"
    );
    assert!(dom.contains("(leader)"), "no leader shown");

    agents[0].kill9();
    let started = Instant::now();
    let dom = wait_until(
        Duration::from_secs(60),
        "srv-a red and the role moved, on the page",
        || {
            let dom = dump_dom(&exe, &profile, &url);
            (dom.contains(r#"data-server="srv-a" data-led="down""#)
                && dom.contains(r#"data-role="camera-gateway" data-active="srv-b""#))
            .then_some(dom)
        },
    );
    println!(
        "the page showed srv-a down and camera-gateway on srv-b {:?} after the kill",
        started.elapsed()
    );
    assert!(
        dom.contains("lease_expired"),
        "the event's cause is not on the page"
    );

    // A drained server shows amber; its role moves on.
    let out = c.cli(&["server", "drain", "srv-c"]);
    assert!(out.ok(), "{out:?}");
    // camera-gateway, on srv-b, is then left with no ready standby (srv-a down, srv-c
    // drained): the page flags it at risk.
    wait_until(
        Duration::from_secs(60),
        "srv-c amber and camera-gateway at risk, on the page",
        || {
            let dom = dump_dom(&exe, &profile, &url);
            (dom.contains(r#"data-server="srv-c" data-led="maintenance""#)
                && dom.contains(r#"data-at-risk="true" class="at-risk">0/2 AT RISK"#))
            .then_some(())
        },
    );

    let artifacts = baton_tests::baton_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("e2e-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &exe,
        &profile,
        &[
            "--virtual-time-budget=4000".into(),
            "--window-size=1280,1000".into(),
            format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    println!("screenshot: {}", shot.display());
}
