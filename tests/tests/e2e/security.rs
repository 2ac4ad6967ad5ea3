//! Who may speak: the refusals of the security model, by the real binary with real
//! certificates. Every attempt is turned away (a failed handshake, `UNAUTHENTICATED` or
//! `PERMISSION_DENIED` naming the reason) and leaves the directory as it was. One
//! cluster serves all the cases; what they could have changed is compared before and
//! after them.

use std::path::Path;
use std::time::Duration;

use baton_client::v1;
use baton_tests::{CLI_TIMEOUT, Cluster, ClusterOpts, run_baton};
use baton_tls::Permission;
use baton_tls::make::{self, Subject, Validity};
use serde_json::Value;

/// Roles, servers, authored events, membership: see [`footprint`].
type Footprint = (Vec<Value>, Vec<Value>, Vec<Value>, Vec<(u64, bool)>);

/// What a refused call could have changed, and nothing else: each role's and server's
/// configuration, the events an identified caller wrote, and the membership. Not what
/// liveness moves on its own (status, agent addresses, an election under load), which a
/// busy machine may change while the test runs.
fn footprint(c: &Cluster) -> Footprint {
    let status = c.json(&["cluster", "status"]);
    let members = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| (n["id"].as_u64().unwrap(), n["voter"].as_bool().unwrap()))
        .collect();
    let pick = |list: Value, keys: &[&str]| -> Vec<Value> {
        list.as_array()
            .expect("a list")
            .iter()
            .map(|item| keys.iter().map(|k| item[*k].clone()).collect())
            .collect()
    };
    let roles = pick(
        c.json(&["role", "list"]),
        &[
            "name",
            "kind",
            "servers",
            "failback",
            "failback_delay_ms",
            "database",
        ],
    );
    let servers = pick(
        c.json(&["server", "list"]),
        &["name", "main", "kinds", "maintenance"],
    );
    let authored = c
        .events()
        .into_iter()
        .filter(|e| !e["by"].as_str().unwrap_or_default().is_empty())
        .collect();
    (roles, servers, authored, members)
}

/// The cluster's current term, as its leader reports it.
fn term(c: &Cluster) -> u64 {
    c.json(&["cluster", "status"])["term"]
        .as_u64()
        .expect("a term")
}

/// `baton --directory ALL <tls> ARGS -o json`.
fn cli_with(c: &Cluster, tls: &[String], args: &[&str]) -> baton_tests::CliOutput {
    let mut full = vec!["--directory".to_string(), c.addrs()];
    full.extend(tls.iter().cloned());
    full.extend(args.iter().map(|s| s.to_string()));
    full.extend(["-o".into(), "json".into()]);
    run_baton(&full, CLI_TIMEOUT)
}

fn tls_files(dir: &Path, stem: &str) -> Vec<String> {
    vec![
        "--ca".into(),
        dir.join("ca.pem").display().to_string(),
        "--cert".into(),
        dir.join(format!("{stem}.pem")).display().to_string(),
        "--key".into(),
        dir.join(format!("{stem}.key")).display().to_string(),
    ]
}

/// A refused CLI call: non-zero exit, and stderr containing every one of `words`.
fn refused(out: &baton_tests::CliOutput, words: &[&str]) {
    assert!(!out.ok(), "accepted: {out:?}");
    for w in words {
        assert!(
            out.stderr.contains(w),
            "the refusal does not say {w:?}: {}",
            out.stderr
        );
    }
}

fn client_security(dir: &Path, stem: &str) -> baton_tls::Security {
    baton_tls::Security::Tls(
        baton_tls::Tls::load(baton_tls::TlsPaths {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        })
        .expect("load test certificate"),
    )
}

fn endpoint(addr: &str) -> tonic::transport::Endpoint {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
}

/// The callers the security test turns away: the TLS flags (`--ca --cert --key`) of each.
struct Credentials {
    /// The cluster's certificate directory.
    certs: std::path::PathBuf,
    /// The cluster CA's certificate (PEM).
    ca_pem: String,
    /// A viewer client, `vera`.
    viewer: Vec<String>,
    /// An operator client, `otto`.
    operator: Vec<String>,
    /// The agent of `srv-b`.
    agent_b: Vec<String>,
    /// An admin client whose certificate expired an hour ago.
    expired: Vec<String>,
    /// An admin client of another CA (that trusts ours).
    foreign_args: Vec<String>,
}

#[test]
fn every_unauthorised_call_is_refused_and_changes_nothing() {
    let mut c = Cluster::start(3, ClusterOpts::default());
    let journal = c.journal("journal");
    let _agent = baton_tests::Agent::start(
        &c,
        "srv-a",
        &[("default", &baton_tests::journal_command(&journal))],
    );
    c.wait_servers_up(&["srv-a"], Duration::from_secs(20));
    c.json(&["role", "create", "r1", "--servers", "srv-a"]);
    baton_tests::wait_until(Duration::from_secs(20), "r1 running", || c.active("r1"));
    let Credentials {
        certs,
        ca_pem,
        viewer,
        operator,
        agent_b,
        expired,
        foreign_args,
    } = credentials(&c);

    let before = footprint(&c);
    let leader = c.leader().expect("a leader");
    let write = ["role", "create", "r-evil", "--servers", "srv-a"];

    // 2. A certificate from another CA: the handshake fails.
    refused(&cli_with(&c, &foreign_args, &write), &[]);
    // 3. An expired certificate: the handshake fails.
    refused(&cli_with(&c, &expired, &write), &[]);
    // 9. Plain text to a TLS port.
    refused(&cli_with(&c, &["--insecure".into()], &write), &[]);
    // 5. A viewer writing (reads work).
    let read = cli_with(&c, &viewer, &["role", "list"]);
    assert!(read.ok(), "a viewer could not read: {read:?}");
    refused(
        &cli_with(&c, &viewer, &write),
        &["permission", "operator", "viewer vera"],
    );
    // 6. An operator adding a node or transferring leadership.
    refused(
        &cli_with(&c, &operator, &["cluster", "add-node", "9", "127.0.0.1:1"]),
        &["admin", "operator otto"],
    );
    let target = c.ids().into_iter().find(|id| *id != leader).unwrap();
    refused(
        &cli_with(
            &c,
            &operator,
            &["cluster", "transfer-leader", &target.to_string()],
        ),
        &["admin", "operator otto"],
    );
    // 7. An agent certificate calling an admin write.
    refused(
        &cli_with(&c, &agent_b, &write),
        &["agent srv-b", "not an admin client"],
    );

    refusals_over_grpc(&c, &certs, &ca_pem);

    assert_eq!(
        footprint(&c),
        before,
        "a refused call changed the directory"
    );
    // The forged vote asked for term 1000: had any node granted it, the term would be
    // there now. (The refused transfer is checked by its refusal: a leader change under
    // load is an election like any other and proves nothing either way.)
    let term = term(&c);
    assert!(term < 1000, "a refused vote moved the term to {term}");
    // The admin write that is allowed is recorded with its author.
    c.json(&["role", "create", "r-ok", "--servers", "srv-a"]);
    let by: Vec<String> = c
        .events()
        .iter()
        .filter(|e| e["role"] == "r-ok")
        .map(|e| e["by"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        by.iter().any(|b| b == "admin e2e"),
        "r-ok's events do not name their author: {by:?}"
    );
    c.kill9(1);
}

/// The certificates of the refused callers, issued by the cluster's CA (and one by
/// another CA).
fn credentials(c: &Cluster) -> Credentials {
    let certs = c
        .certs()
        .expect("the harness runs TLS by default")
        .dir
        .clone();
    let ca_pem = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let ca_key = std::fs::read_to_string(certs.join("ca.key")).unwrap();
    let leaf = Validity::for_(make::LEAF_VALID_FOR);
    let issue = |subject: Subject, validity: Validity| {
        let issued = make::issue(&ca_pem, &ca_key, &subject, validity).unwrap();
        make::write(&certs, &subject.file_stem(), &issued, true).unwrap();
        tls_files(&certs, &subject.file_stem())
    };
    let viewer = issue(
        Subject::Client {
            name: "vera".into(),
            permission: Permission::Viewer,
            server: None,
        },
        leaf,
    );
    let operator = issue(
        Subject::Client {
            name: "otto".into(),
            permission: Permission::Operator,
            server: None,
        },
        leaf,
    );
    let agent_b = issue(
        Subject::Agent {
            server: "srv-b".into(),
        },
        leaf,
    );
    let expired = issue(
        Subject::Client {
            name: "old".into(),
            permission: Permission::Admin,
            server: None,
        },
        Validity {
            valid_for: Duration::from_secs(3600),
            backdate: Duration::from_secs(7200),
        },
    );
    // A second CA with an admin certificate of its own.
    let other = c.dir().join("other-ca");
    let other_ca = make::make_ca("Another CA", Validity::for_(make::CA_VALID_FOR)).unwrap();
    make::write(&other, "ca", &other_ca, true).unwrap();
    let foreign = make::issue(
        &other_ca.cert_pem,
        &other_ca.key_pem,
        &Subject::Client {
            name: "mallory".into(),
            permission: Permission::Admin,
            server: None,
        },
        leaf,
    )
    .unwrap();
    make::write(&other, "client-mallory", &foreign, true).unwrap();
    let mut foreign_args = tls_files(&other, "client-mallory");
    foreign_args[1] = certs.join("ca.pem").display().to_string(); // trusts our CA, is not trusted
    Credentials {
        certs,
        ca_pem,
        viewer,
        operator,
        agent_b,
        expired,
        foreign_args,
    }
}

/// The refusals a CLI cannot provoke: no client certificate, an agent claiming another
/// server, a client speaking Raft, a node certificate claiming another node's id.
fn refusals_over_grpc(c: &Cluster, certs: &Path, ca_pem: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node1 = c.node(1).addr.clone();
    let peer1 = c.node(1).peer_addr.clone();
    rt.block_on(async {
        // 1. No client certificate: the server requires one; the handshake fails.
        let roots = tonic::transport::Certificate::from_pem(ca_pem);
        let no_cert = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(roots)
            .domain_name("127.0.0.1");
        let ch = tonic::transport::Endpoint::from_shared(format!("https://{node1}"))
            .unwrap()
            .tls_config(no_cert)
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        let r = match ch.connect().await {
            Err(e) => Err(e.to_string()),
            Ok(ch) => v1::directory_client::DirectoryClient::new(ch)
                .list_roles(v1::ListRequest::default())
                .await
                .map(|_| ())
                .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
        };
        assert!(r.is_err(), "a call without a client certificate was served");

        // 4. An agent certificate for srv-b claiming srv-a.
        let ch = client_security(certs, "agent-srv-b").channel(endpoint(&node1), None);
        let hello = v1::AgentMessage {
            msg: Some(v1::agent_message::Msg::Hello(v1::Hello {
                server: "srv-a".into(),
                kinds: vec![],
                main: false,
                min_revision: 0,
                instance: "intruder".into(),
            })),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(hello).await.unwrap();
        let r = v1::agent_client::AgentClient::new(ch)
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let Err(s) = r else {
            panic!("a session claiming another server's name was opened");
        };
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
        assert!(
            s.message().contains("\"srv-b\"") && s.message().contains("\"srv-a\""),
            "{s:?}"
        );

        // 8. A client (non-node) certificate calling the Raft service on the peer port.
        let ch = client_security(certs, "client-otto").channel(endpoint(&peer1), None);
        let s = v1::raft_client::RaftClient::new(ch)
            .control(v1::ControlRequest {
                elect: Some(false),
                heartbeat: Some(false),
                trigger_elect: false,
                off_for_ms: 60_000,
            })
            .await
            .expect_err("an operator certificate spoke Raft");
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
        assert!(s.message().contains("directory nodes only"), "{s:?}");

        // 10. A node certificate whose id does not match the node it claims to be: node
        // 3's key asks for a vote as candidate 1 at a term far ahead.
        let ch = client_security(certs, "node-3").channel(endpoint(&peer1), None);
        let vote = serde_json::json!({
            "vote": {"leader_id": {"term": 1000, "node_id": 2}, "committed": false},
            "last_log_id": null
        });
        let s = v1::raft_client::RaftClient::new(ch)
            .vote(v1::RaftPayload {
                data: serde_json::to_vec(&vote).unwrap(),
            })
            .await
            .expect_err("node 3's certificate campaigned as node 2");
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
        assert!(
            s.message().contains("node 3") && s.message().contains("node 2"),
            "{s:?}"
        );
    });
}

/// A node and an agent pick up a new certificate and key from their files without a
/// restart: sessions opened before keep working, new connections get the new one.
#[test]
fn certificates_rotate_without_a_restart() {
    let c = Cluster::start(3, ClusterOpts::lease(Duration::from_secs(2)));
    let journal = c.journal("journal");
    let agent = baton_tests::Agent::start(
        &c,
        "srv-a",
        &[("default", &baton_tests::journal_command(&journal))],
    );
    c.wait_servers_up(&["srv-a"], Duration::from_secs(20));
    c.json(&["role", "create", "r1", "--servers", "srv-a"]);
    let (_, epoch) =
        baton_tests::wait_until(Duration::from_secs(20), "r1 running", || c.active("r1"));
    let certs = c.certs().expect("TLS").dir.clone();
    let agent_log = c.dir().join("agent-srv-a.log");
    let sessions = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("session open")
            .count()
    };
    let opened = sessions(&agent_log);
    assert!(opened >= 1, "the agent never opened a session");

    // New certificates (same identities, new keys) for every node and the agent.
    let ca_pem = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let ca_key = std::fs::read_to_string(certs.join("ca.key")).unwrap();
    let mut subjects: Vec<Subject> = c
        .ids()
        .into_iter()
        .map(|id| Subject::Node { id, hosts: vec![] })
        .collect();
    subjects.push(Subject::Agent {
        server: "srv-a".into(),
    });
    let mut new_node1 = Vec::new();
    for s in &subjects {
        let issued =
            make::issue(&ca_pem, &ca_key, s, Validity::for_(make::LEAF_VALID_FOR)).unwrap();
        // Key first, then certificate: a reload that catches the pair half-written sees a
        // mismatch, keeps the running pair and tries again.
        make::write(&certs, &s.file_stem(), &issued, true).unwrap();
        if s.file_stem() == "node-1" {
            new_node1 = issued.cert_der.clone();
        }
    }
    // Every process says it reloaded.
    for (name, log) in c
        .ids()
        .into_iter()
        .map(|id| (format!("node {id}"), c.dir().join(format!("node{id}.log"))))
        .chain([("agent".to_string(), agent_log.clone())])
    {
        baton_tests::wait_until(
            Duration::from_secs(20),
            &format!("{name} to reload"),
            || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("reloaded the TLS certificate")
                    .then_some(())
            },
        );
    }
    // A new connection to node 1 gets its new certificate.
    let admin = client_security(&certs, "client-e2e");
    let baton_tls::Security::Tls(admin) = admin else {
        unreachable!()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let served = rt
        .block_on(baton_tls::net::server_certificate(&c.node(1).addr, &admin))
        .expect("handshake with node 1");
    assert_eq!(served, new_node1, "node 1 still serves its old certificate");
    // The agent's session from before is still the one it uses: no new session, the
    // role was never stopped, and writes still work (nodes talk to each other anew).
    assert_eq!(sessions(&agent_log), opened, "the agent had to reconnect");
    c.json(&["server", "add", "srv-z"]);
    assert_eq!(c.active("r1"), Some(("srv-a".to_string(), epoch)));
    let log = std::fs::read_to_string(&agent_log).unwrap();
    assert!(!log.contains("role stopped"), "the role was stopped: {log}");
    drop(agent);
}
