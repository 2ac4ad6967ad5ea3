//! Unit tests of the admin commands: parsing, the JSON output contract (exact keys), the
//! tables, and error lines. No server is needed.

use super::*;
use clap::{CommandFactory, Parser};
use std::time::Duration;

/// How the `baton` binary is expected to embed the admin commands.
#[derive(Debug, Parser)]
#[command(name = "baton")]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    cmd: Top,
}

/// Admin commands flattened next to the binary's own subcommands.
#[derive(Debug, clap::Subcommand)]
enum Top {
    /// Stands for `baton directory ...`.
    Directory {
        #[arg(long)]
        id: u64,
    },
    #[command(flatten)]
    Admin(AdminCommand),
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("baton").chain(args.iter().copied()))
}

fn admin(args: &[&str]) -> (GlobalOpts, AdminCommand) {
    let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    match cli.cmd {
        Top::Admin(cmd) => (cli.global, cmd),
        other => panic!("{other:?}"),
    }
}

fn parse_error(args: &[&str]) -> String {
    parse(args).expect_err("should be refused").to_string()
}

#[test]
fn clap_definitions_are_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn global_options_before_or_after_the_subcommand() {
    let want = vec!["10.0.0.1:7001".to_string(), "10.0.0.2:7001".to_string()];
    for args in [
        &[
            "--directory",
            "10.0.0.1:7001,10.0.0.2:7001",
            "-o",
            "json",
            "role",
            "list",
        ][..],
        &[
            "role",
            "list",
            "--directory",
            "10.0.0.1:7001,10.0.0.2:7001",
            "-o",
            "json",
        ],
        &[
            "role",
            "--directory=10.0.0.1:7001,10.0.0.2:7001",
            "list",
            "--output",
            "json",
        ],
    ] {
        let (g, cmd) = admin(args);
        assert_eq!(g.directory, want, "{args:?}");
        assert_eq!(g.output, Output::Json, "{args:?}");
        assert_eq!(
            cmd,
            AdminCommand::Role(RoleCmd::List {
                read: ReadArgs { stale: false }
            })
        );
    }
}

#[test]
fn defaults_are_table_and_the_local_three_nodes() {
    // Skipped when the environment overrides the default.
    if std::env::var_os("BATON_DIRECTORY").is_some() {
        return;
    }
    let (g, _) = admin(&["server", "list"]);
    assert_eq!(g.output, Output::Table);
    assert_eq!(
        g.directory,
        ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
    );
}

#[test]
fn the_binary_keeps_its_own_subcommands() {
    let cli = parse(&["directory", "--id", "2"]).unwrap();
    assert!(matches!(cli.cmd, Top::Directory { id: 2 }));
}

#[test]
fn role_create_parses_every_option() {
    let (_, cmd) = admin(&[
        "role",
        "create",
        "cam-1",
        "--servers",
        "srv-a,srv-b,srv-c",
        "--kind",
        "camera",
        "--failback",
        "--failback-delay",
        "1m 30s",
        "--database",
        "db-1",
    ]);
    assert_eq!(
        cmd,
        AdminCommand::Role(RoleCmd::Create {
            role: "cam-1".into(),
            servers: vec!["srv-a".into(), "srv-b".into(), "srv-c".into()],
            kind: Some("camera".into()),
            failback: true,
            failback_delay: Some(Duration::from_secs(90)),
            database: Some("db-1".into()),
        })
    );
    let (_, cmd) = admin(&[
        "role",
        "create",
        "r",
        "--servers",
        "a",
        "--failback-delay",
        "500ms",
    ]);
    match cmd {
        AdminCommand::Role(RoleCmd::Create {
            failback,
            failback_delay,
            ..
        }) => {
            assert!(!failback);
            assert_eq!(failback_delay, Some(Duration::from_millis(500)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn role_create_requires_servers() {
    let e = parse_error(&["role", "create", "r"]);
    assert!(e.contains("--servers"), "{e}");
}

#[test]
fn bad_durations_are_refused_with_a_clear_message() {
    for bad in ["abc", "30", "1.5.s", "10 parsecs"] {
        let e = parse_error(&[
            "role",
            "create",
            "r",
            "--servers",
            "a",
            "--failback-delay",
            bad,
        ]);
        assert!(e.contains("invalid duration"), "{bad}: {e}");
        assert!(e.contains("--failback-delay"), "{bad}: {e}");
        assert!(e.contains("30s"), "examples are given: {e}");
    }
    let e = parse_error(&["role", "set", "r", "--failback-delay", "soon"]);
    assert!(e.contains("invalid duration \"soon\""), "{e}");
}

#[test]
fn role_set_takes_failback_on_or_off() {
    for (word, want) in [("on", true), ("off", false), ("ON", true), ("no", false)] {
        let (_, cmd) = admin(&["role", "set", "r", "--failback", word]);
        assert_eq!(
            cmd,
            AdminCommand::Role(RoleCmd::Set {
                role: "r".into(),
                failback: Some(want),
                failback_delay: None,
                database: None,
                no_database: false,
            }),
            "{word}"
        );
    }
    let e = parse_error(&["role", "set", "r", "--failback", "maybe"]);
    assert!(e.contains("expected on or off"), "{e}");
}

#[test]
fn role_set_needs_a_change_and_one_database_option() {
    let e = parse_error(&["role", "set", "r"]);
    assert!(e.contains("required"), "{e}");
    let e = parse_error(&["role", "set", "r", "--database", "db", "--no-database"]);
    assert!(e.contains("cannot be used with"), "{e}");
    let (_, cmd) = admin(&[
        "role",
        "set",
        "r",
        "--no-database",
        "--failback-delay",
        "30s",
    ]);
    assert_eq!(
        cmd,
        AdminCommand::Role(RoleCmd::Set {
            role: "r".into(),
            failback: None,
            failback_delay: Some(Duration::from_secs(30)),
            database: None,
            no_database: true,
        })
    );
}

#[test]
fn list_editing_commands_parse() {
    let (_, cmd) = admin(&["role", "add-server", "r", "srv-d", "--position", "2"]);
    assert_eq!(
        cmd,
        AdminCommand::Role(RoleCmd::AddServer {
            role: "r".into(),
            server: "srv-d".into(),
            position: Some(2)
        })
    );
    let e = parse_error(&["role", "add-server", "r", "srv-d", "--position", "0"]);
    assert!(e.contains("--position"), "{e}");
    for (sub, up) in [("move-up", true), ("move-down", false)] {
        let (_, cmd) = admin(&["role", sub, "r", "srv-b"]);
        let ok = match (cmd, up) {
            (AdminCommand::Role(RoleCmd::MoveUp { role, server }), true)
            | (AdminCommand::Role(RoleCmd::MoveDown { role, server }), false) => {
                role == "r" && server == "srv-b"
            }
            _ => false,
        };
        assert!(ok, "{sub}");
    }
    let (_, cmd) = admin(&["role", "move", "r", "srv-c"]);
    assert_eq!(
        cmd,
        AdminCommand::Role(RoleCmd::Move {
            role: "r".into(),
            server: "srv-c".into()
        })
    );
}

#[test]
fn server_and_cluster_commands_parse() {
    let (_, cmd) = admin(&[
        "server",
        "add",
        "srv-a",
        "--main",
        "--kinds",
        "camera,gateway",
    ]);
    assert_eq!(
        cmd,
        AdminCommand::Server(ServerCmd::Add {
            name: "srv-a".into(),
            main: true,
            kinds: vec!["camera".into(), "gateway".into()],
        })
    );
    let (_, cmd) = admin(&["server", "drain", "srv-a"]);
    assert_eq!(
        cmd,
        AdminCommand::Server(ServerCmd::Drain {
            name: "srv-a".into()
        })
    );
    let (_, cmd) = admin(&["cluster", "add-node", "4", "http://127.0.0.1:7004"]);
    assert_eq!(
        cmd,
        AdminCommand::Cluster(ClusterCmd::AddNode {
            id: 4,
            addr: "127.0.0.1:7004".into()
        })
    );
    let e = parse_error(&["cluster", "add-node", "4", "127.0.0.1"]);
    assert!(e.contains("missing port"), "{e}");
    let e = parse_error(&["cluster", "remove-node", "two"]);
    assert!(e.contains("invalid value"), "{e}");
    let (_, cmd) = admin(&["cluster", "transfer-leader", "2"]);
    assert_eq!(
        cmd,
        AdminCommand::Cluster(ClusterCmd::TransferLeader { id: 2 })
    );
}

#[test]
fn every_read_command_takes_stale() {
    for args in [
        &["server", "list", "--stale"][..],
        &["role", "show", "r", "--stale"],
        &["role", "list", "--stale"],
        &["role", "candidates", "r", "--stale"],
        &["cluster", "status", "--stale"],
        &["events", "--stale"],
    ] {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
    let (_, cmd) = admin(&["events", "--role", "cam-1", "--follow", "-o", "json"]);
    assert_eq!(
        cmd,
        AdminCommand::Events(EventsArgs {
            role: Some("cam-1".into()),
            follow: true,
            read: ReadArgs { stale: false },
        })
    );
}

#[test]
fn unknown_output_format_is_refused() {
    let e = parse_error(&["role", "list", "-o", "yaml"]);
    assert!(e.contains("yaml"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Output contract
// ---------------------------------------------------------------------------------------

fn role() -> v1::Role {
    v1::Role {
        name: "cam-1".into(),
        kind: "camera".into(),
        servers: vec!["srv-a".into(), "srv-b".into(), "srv-c".into()],
        active_server: Some("srv-b".into()),
        epoch: 4,
        failback: true,
        failback_delay_ms: 30_000,
        database: None,
        state: "running".into(),
        reason: "srv-a lease expired".into(),
        quarantined: vec![v1::Quarantine {
            server: "srv-c".into(),
            until_ms: 1_700_000_000_000,
        }],
        standbys: vec![
            v1::Standby {
                server: "srv-a".into(),
                ready: true,
                reason: String::new(),
            },
            v1::Standby {
                server: "srv-c".into(),
                ready: false,
                reason: "quarantined".into(),
            },
        ],
        at_risk: false,
    }
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn sorted(k: &[&str]) -> Vec<String> {
    let mut k: Vec<_> = k.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

#[test]
fn role_json_has_the_contract_keys() {
    let v: serde_json::Value =
        serde_json::from_str(&render::json(&render::RoleView::from(&role()))).unwrap();
    assert_eq!(
        keys(&v),
        sorted(&[
            "name",
            "kind",
            "servers",
            "active_server",
            "epoch",
            "failback",
            "failback_delay_ms",
            "database",
            "state",
            "reason",
            "quarantined",
            "standbys",
            "standbys_ready",
            "at_risk"
        ])
    );
    assert_eq!(
        v["standbys"],
        serde_json::json!([
            {"server": "srv-a", "ready": true, "reason": null},
            {"server": "srv-c", "ready": false, "reason": "quarantined"}
        ])
    );
    assert_eq!(v["standbys_ready"], 1);
    assert_eq!(v["at_risk"], false);
    assert_eq!(v["servers"], serde_json::json!(["srv-a", "srv-b", "srv-c"]));
    assert_eq!(v["active_server"], "srv-b");
    assert_eq!(v["epoch"], 4);
    assert_eq!(v["failback"], true);
    assert_eq!(v["failback_delay_ms"], 30_000);
    assert!(v["database"].is_null());
    assert_eq!(v["state"], "running");
    assert_eq!(v["quarantined"][0]["server"], "srv-c");

    let unassigned = v1::Role {
        active_server: None,
        database: Some("db-1".into()),
        ..role()
    };
    let v: serde_json::Value =
        serde_json::from_str(&render::json(&render::RoleView::from(&unassigned))).unwrap();
    assert!(v["active_server"].is_null());
    assert_eq!(v["database"], "db-1");
}

#[test]
fn server_json_has_the_contract_keys() {
    let s = v1::Server {
        name: "srv-a".into(),
        status: "up".into(),
        maintenance: false,
        main: true,
        kinds: vec![],
        roles: vec!["cam-1".into()],
        instance: "3f2a9c01d4e5b6a7".into(),
        agent_address: "10.0.0.5:51234".into(),
        instance_since_ms: 1_700_000_000_000,
    };
    let v: serde_json::Value =
        serde_json::from_str(&render::json(&[render::ServerView::from(&s)])).unwrap();
    let obj = &v[0];
    assert_eq!(
        keys(obj),
        sorted(&[
            "name",
            "status",
            "maintenance",
            "main",
            "kinds",
            "roles",
            "instance",
            "agent_address",
            "instance_since_ms"
        ])
    );
    assert_eq!(obj["instance"], "3f2a9c01d4e5b6a7");
    assert_eq!(obj["agent_address"], "10.0.0.5:51234");
    assert_eq!(obj["status"], "up");
    assert_eq!(obj["main"], true);
    assert_eq!(obj["kinds"], serde_json::json!([]));
    assert_eq!(obj["roles"], serde_json::json!(["cam-1"]));
}

fn cluster_status() -> v1::ClusterStatusReply {
    v1::ClusterStatusReply {
        leader: Some(1),
        term: 3,
        lease_ms: 0,
        grace_ms: 0,
        expiry_lease_ms: 0,
        nodes: vec![
            v1::NodeStatus {
                peer_address: String::new(),
                id: 1,
                address: "127.0.0.1:7001".into(),
                voter: true,
                state: "leader".into(),
                last_applied: 42,
                lag: Some(0),
                sessions: 2,
                term: 3,
            },
            v1::NodeStatus {
                peer_address: String::new(),
                id: 2,
                address: "127.0.0.1:7002".into(),
                voter: true,
                state: "unreachable".into(),
                last_applied: 40,
                lag: None,
                sessions: 0,
                term: 3,
            },
        ],
    }
}

#[test]
fn cluster_json_has_the_contract_keys() {
    let v: serde_json::Value =
        serde_json::from_str(&render::json(&render::ClusterView::from(&cluster_status()))).unwrap();
    assert_eq!(
        keys(&v),
        sorted(&[
            "leader",
            "term",
            "nodes",
            "lease_ms",
            "grace_ms",
            "expiry_lease_ms"
        ])
    );
    assert_eq!(v["leader"], 1);
    assert_eq!(v["term"], 3);
    let node = &v["nodes"][0];
    for k in [
        "id",
        "address",
        "voter",
        "state",
        "last_applied",
        "lag",
        "sessions",
    ] {
        assert!(node.get(k).is_some(), "missing {k}");
    }
    assert_eq!(node["state"], "leader");
    assert_eq!(node["lag"], 0);
    assert!(v["nodes"][1]["lag"].is_null());

    let leaderless = v1::ClusterStatusReply {
        leader: None,
        ..cluster_status()
    };
    let v: serde_json::Value =
        serde_json::from_str(&render::json(&render::ClusterView::from(&leaderless))).unwrap();
    assert!(v["leader"].is_null());
}

#[test]
fn event_json_has_the_contract_keys_and_follow_lines_are_single_lines() {
    let e = v1::Event {
        by: Default::default(),
        revision: 9,
        time_ms: 1_700_000_000_123,
        role: "cam-1".into(),
        cause: "lease_expired".into(),
        from: Some("srv-a".into()),
        to: None,
        epoch: 5,
        detail: "no renewal for 3s\nsecond line".into(),
        index: 0,
    };
    let view = render::EventView::from(&e);
    let v: serde_json::Value =
        serde_json::from_str(&render::json(std::slice::from_ref(&view))).unwrap();
    assert_eq!(
        keys(&v[0]),
        sorted(&[
            "revision", "time_ms", "role", "cause", "from", "to", "epoch", "detail", "by"
        ])
    );
    assert!(v[0]["to"].is_null());
    let line = render::json_line(&view);
    assert!(!line.contains('\n'));
    let back: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(back["revision"], 9);
    let text = render::event_line(&e);
    assert!(!text.contains('\n'));
    assert!(text.contains("srv-a -> -"), "{text}");
    assert!(text.contains("2023-11-14T22:13:20.123Z"), "{text}");
}

#[test]
fn write_json_has_revision_and_summary() {
    let v: serde_json::Value = serde_json::from_str(&render::json(&render::WriteView {
        revision: Some(12),
        summary: "role cam-1 created".into(),
    }))
    .unwrap();
    assert_eq!(keys(&v), sorted(&["revision", "summary"]));
    assert_eq!(v["revision"], 12);
    assert_eq!(v["summary"], "role cam-1 created");
}

#[test]
fn candidates_json_is_an_array_of_names() {
    let v: serde_json::Value =
        serde_json::from_str(&render::json(&vec!["srv-d".to_string()])).unwrap();
    assert_eq!(v, serde_json::json!(["srv-d"]));
    assert_eq!(render::candidates_text(&[]), "(no candidates)\n");
}

// ---------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------

#[test]
fn table_columns_are_aligned_without_trailing_spaces() {
    let mut t = render::Table::new(&["A", "LONG HEADER", "C"]);
    t.row(vec!["xxxx".into(), "y".into(), "".into()]);
    t.row(vec!["z".into(), "".into(), "last".into()]);
    assert_eq!(
        t.render(),
        "A     LONG HEADER  C\n\
         xxxx  y\n\
         z                  last\n"
    );
}

#[test]
fn role_list_table_marks_the_active_server() {
    let other = v1::Role {
        name: "alpha".into(),
        active_server: None,
        failback: false,
        state: "unassigned".into(),
        ..role()
    };
    let text = render::roles_table(&[other, role()]);
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("ROLE "), "{text}");
    assert!(lines[1].starts_with("alpha "), "{text}");
    assert!(
        lines[1].contains(" - "),
        "no active server shown as -: {text}"
    );
    assert!(lines[1].contains(" no "), "{text}");
    assert!(lines[2].contains("srv-a,srv-b*,srv-c"), "{text}");
    assert!(lines[2].contains(" yes "), "{text}");
    // Columns line up: every row's SERVERS column starts where the header's does.
    let col = lines[0].find("SERVERS").unwrap();
    assert_eq!(lines[2].find("srv-a,").unwrap(), col, "{text}");
}

#[test]
fn role_show_lists_servers_in_priority_order_with_the_active_marked() {
    let text = render::role_text(&role());
    assert!(text.contains("role:"), "{text}");
    assert!(
        text.contains("failback:") && text.contains("yes (delay 30s)"),
        "{text}"
    );
    assert!(
        text.contains("database:") && text.contains(" -\n"),
        "{text}"
    );
    let servers: Vec<_> = text
        .lines()
        .skip_while(|l| !l.starts_with("servers"))
        .skip(1)
        .collect();
    assert_eq!(servers.len(), 3, "{text}");
    assert!(
        servers[0].contains("1.") && servers[0].contains("srv-a"),
        "{text}"
    );
    assert!(
        servers[1].contains("* 2.")
            && servers[1].contains("srv-b")
            && servers[1].contains("active"),
        "{text}"
    );
    assert!(
        !servers[0].contains("active") && !servers[2].contains("active"),
        "{text}"
    );
    assert!(
        servers[2].contains("quarantined until 2023-11-14T22:13:20"),
        "{text}"
    );
}

#[test]
fn server_table_uses_yes_no_and_placeholders() {
    let text = render::servers_table(&[
        v1::Server {
            name: "srv-a".into(),
            status: "up".into(),
            maintenance: true,
            main: false,
            kinds: vec![],
            roles: vec![],
            instance: String::new(),
            agent_address: String::new(),
            instance_since_ms: 0,
        },
        v1::Server {
            name: "srv-b".into(),
            status: "down".into(),
            maintenance: false,
            main: true,
            kinds: vec!["camera".into(), "gw".into()],
            roles: vec!["cam-1".into(), "cam-2".into()],
            instance: "0123456789abcdef".into(),
            agent_address: "10.0.0.5:51234".into(),
            instance_since_ms: 1,
        },
    ]);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "SERVER",
            "STATUS",
            "MAINTENANCE",
            "MAIN",
            "KINDS",
            "ROLES",
            "AGENT"
        ]
    );
    assert_eq!(lines[1], ["srv-a", "up", "yes", "no", "any", "-", "-"]);
    assert_eq!(
        lines[2],
        [
            "srv-b",
            "down",
            "no",
            "yes",
            "camera,gw",
            "cam-1,cam-2",
            "01234567@10.0.0.5:51234"
        ]
    );
}

#[test]
fn cluster_table_shows_leader_term_and_nodes() {
    let text = render::cluster_text(&cluster_status());
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines[0], "leader: 1  term: 3");
    assert!(lines[1].starts_with("ID  ADDRESS"), "{text}");
    let node2: Vec<_> = lines[3].split_whitespace().collect();
    assert_eq!(
        node2,
        ["2", "127.0.0.1:7002", "yes", "unreachable", "40", "-", "0"]
    );
    let none = render::cluster_text(&v1::ClusterStatusReply {
        leader: None,
        ..cluster_status()
    });
    assert!(none.starts_with("leader: none"), "{none}");
}

#[test]
fn events_table_has_a_row_per_event() {
    let text = render::events_table(&[v1::Event {
        by: Default::default(),
        revision: 3,
        time_ms: 0,
        role: "cam-1".into(),
        cause: "operator".into(),
        from: None,
        to: Some("srv-a".into()),
        epoch: 1,
        detail: "".into(),
        index: 0,
    }]);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0][0], "REVISION");
    assert_eq!(
        lines[1],
        [
            "3",
            "1970-01-01T00:00:00.000Z",
            "cam-1",
            "operator",
            "-",
            "srv-a",
            "1"
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

#[test]
fn refusals_print_the_servers_message() {
    let e = anyhow::Error::from(ClientError::Status {
        code: tonic::Code::NotFound,
        reason: Some("NOT_FOUND".into()),
        message: "role \"x\" does not exist".into(),
    });
    assert_eq!(error_line(&e), "error: role \"x\" does not exist");
    assert_eq!(exit_code(&e), EXIT_FAILURE);
}

#[test]
fn unavailable_names_the_addresses_and_has_its_own_exit_code() {
    let e = anyhow::Error::from(ClientError::Unavailable(
        "no directory node answered within 10s (tried 127.0.0.1:7001, 127.0.0.1:7002); last error: x".into(),
    ));
    let line = error_line(&e);
    assert!(line.starts_with("error: directory unavailable: "), "{line}");
    assert!(line.contains("127.0.0.1:7001, 127.0.0.1:7002"), "{line}");
    assert_eq!(exit_code(&e), EXIT_UNAVAILABLE);
}

#[test]
fn bad_addresses_and_context_chains_stay_on_one_line() {
    let global = GlobalOpts {
        directory: vec!["nowhere".into()],
        output: Output::Table,
        ca: None,
        cert: None,
        key: None,
        insecure: true,
    };
    let e = client(&global).unwrap_err();
    let line = error_line(&e);
    assert!(
        line.starts_with("error: invalid directory address \"nowhere\""),
        "{line}"
    );
    let chained = anyhow::anyhow!("first\nsecond").context("while doing it");
    assert_eq!(error_line(&chained), "error: while doing it: first second");
}

#[test]
fn parse_helpers_are_exported() {
    assert_eq!(parse_duration(" 2m ").unwrap(), Duration::from_secs(120));
    assert!(parse_on_off("sometimes").is_err());
}

#[test]
fn standby_readiness_renders_in_role_list_and_role_show() {
    let all_ready = v1::Role {
        standbys: vec![
            v1::Standby {
                server: "srv-a".into(),
                ready: true,
                reason: String::new(),
            },
            v1::Standby {
                server: "srv-c".into(),
                ready: true,
                reason: String::new(),
            },
        ],
        quarantined: vec![],
        ..role()
    };
    let none_ready = v1::Role {
        name: "cam-2".into(),
        standbys: vec![
            v1::Standby {
                server: "srv-a".into(),
                ready: false,
                reason: "down".into(),
            },
            v1::Standby {
                server: "srv-c".into(),
                ready: false,
                reason: "maintenance".into(),
            },
        ],
        at_risk: true,
        ..role()
    };
    let deleting = v1::Role {
        name: "cam-3".into(),
        standbys: vec![],
        at_risk: false,
        ..role()
    };
    let text = render::roles_table(&[all_ready.clone(), none_ready.clone(), deleting]);
    let lines: Vec<_> = text.lines().collect();
    let col = lines[0].find("STANDBYS").expect("a STANDBYS column");
    assert_eq!(&lines[1][col..], "2/2", "{text}");
    assert_eq!(&lines[2][col..], "0/2 AT RISK", "{text}");
    assert_eq!(&lines[3][col..], "-", "{text}");

    let text = render::role_text(&all_ready);
    assert!(
        text.contains("standbys:") && text.contains("2/2 ready\n"),
        "{text}"
    );
    let text = render::role_text(&none_ready);
    assert!(text.contains("0/2 ready, AT RISK\n"), "{text}");
    let servers: Vec<_> = text
        .lines()
        .skip_while(|l| !l.starts_with("servers"))
        .skip(1)
        .collect();
    assert!(servers[0].ends_with("standby, not ready: down"), "{text}");
    assert!(servers[1].ends_with("active"), "{text}");
    assert!(
        servers[2].ends_with("standby, not ready: maintenance"),
        "{text}"
    );
    // One server, no standby: at risk too.
    let single = v1::Role {
        servers: vec!["srv-b".into()],
        standbys: vec![],
        at_risk: true,
        ..role()
    };
    assert_eq!(render::standbys_short(&single), "0/0 AT RISK");
}

#[test]
fn the_exit_codes_help_names_every_code() {
    use crate::{EXIT_CODES_HELP, EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE};
    for (code, word) in [
        (EXIT_OK, "success"),
        (EXIT_FAILURE, "failure"),
        (EXIT_USAGE, "usage error"),
        (EXIT_UNAVAILABLE, "unavailable"),
    ] {
        let line = format!("  {code}  {word}");
        assert!(
            EXIT_CODES_HELP.lines().any(|l| l.starts_with(&line)),
            "{line:?} missing from:\n{EXIT_CODES_HELP}"
        );
    }
    // Clap's own exit code for a usage error is the one documented.
    let e = <Cli as clap::Parser>::try_parse_from(["baton", "no-such-command"]).unwrap_err();
    assert_eq!(e.exit_code(), EXIT_USAGE);
}
