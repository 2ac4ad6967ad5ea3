//! CLI conventions of the real binary: completion scripts and the man page generated
//! from the command definitions, exit codes as `--help` documents them, `baton health`,
//! and log output (`--log-format json`, no colours when stderr is not a terminal).

use std::time::Duration;

use baton_tests::{CLI_TIMEOUT, Cluster, ClusterOpts, free_port, run_baton, wait_until};

fn baton(args: &[&str]) -> baton_tests::CliOutput {
    run_baton(
        &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        CLI_TIMEOUT,
    )
}

/// Top-level commands every generated document must name.
const COMMANDS: [&str; 10] = [
    "directory",
    "agent",
    "server",
    "role",
    "cluster",
    "events",
    "snapshot",
    "recover",
    "health",
    "completion",
];

#[test]
fn completion_scripts_parse_and_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = baton(&["completion", shell]);
        assert!(out.ok(), "completion {shell}: {}", out.stderr);
        for c in COMMANDS {
            assert!(out.stdout.contains(c), "completion {shell} lacks {c}");
        }
    }
    // bash checks the syntax of the bash script without running it.
    let bash = baton(&["completion", "bash"]).stdout;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baton.bash");
    std::fs::write(&file, &bash).unwrap();
    let status = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .status()
        .expect("run bash -n");
    assert!(status.success(), "bash -n rejects the completion script");
    // A shell that cannot be generated is a usage error.
    assert_eq!(
        baton(&["completion", "cmd.exe"]).code,
        baton_cli::EXIT_USAGE
    );
}

#[test]
fn the_man_page_is_roff_and_names_the_commands() {
    let out = baton(&["man"]);
    assert!(out.ok(), "{}", out.stderr);
    assert!(
        out.stdout.starts_with(".ie \\n(.g") || out.stdout.contains(".TH baton"),
        "not roff: {}",
        &out.stdout[..out.stdout.len().min(200)]
    );
    assert!(out.stdout.contains(".TH baton"), "no title header");
    for c in COMMANDS {
        assert!(out.stdout.contains(c), "man page lacks {c}");
    }
}

/// `--help` documents the exit codes, and the binary exits with them.
#[test]
fn exit_codes_match_the_help() {
    let help = baton(&["--help"]);
    assert_eq!(help.code, baton_cli::EXIT_OK);
    assert!(
        help.stdout.contains(baton_cli::EXIT_CODES_HELP),
        "--help lacks the exit codes:\n{}",
        help.stdout
    );
    // 2: usage.
    assert_eq!(baton(&["no-such-command"]).code, baton_cli::EXIT_USAGE);
    assert_eq!(
        baton(&["role", "list", "--no-such-flag"]).code,
        baton_cli::EXIT_USAGE
    );
    // 3: nothing listens there.
    let nobody = format!("127.0.0.1:{}", free_port());
    let out = baton(&["--insecure", "--directory", &nobody, "role", "list"]);
    assert_eq!(out.code, baton_cli::EXIT_UNAVAILABLE, "{}", out.stderr);
    let out = baton(&["--insecure", "health", &nobody, "--timeout", "500ms"]);
    assert_eq!(out.code, baton_cli::EXIT_UNAVAILABLE, "{}", out.stderr);
    // 1: a refusal.
    let c = Cluster::start(1, ClusterOpts::default());
    let mut args = vec!["--directory".to_string(), c.addrs()];
    args.extend(c.admin_tls_args());
    args.extend(["role", "show", "no-such-role"].map(String::from));
    let out = run_baton(&args, CLI_TIMEOUT);
    assert_eq!(out.code, baton_cli::EXIT_FAILURE, "{}", out.stderr);
    // 0: health of a serving node, over mutual TLS. Health follows readiness, which
    // the node checks every 500 ms: until its first check it answers NOT_SERVING (exit 1).
    let addr = c.node(1).addr.clone();
    let mut args = c.admin_tls_args();
    args.extend(["health".to_string(), addr.clone()]);
    let out = wait_until(
        Duration::from_secs(20),
        "the node to answer SERVING",
        || {
            let out = run_baton(&args, CLI_TIMEOUT);
            assert!(
                [baton_cli::EXIT_OK, baton_cli::EXIT_FAILURE].contains(&out.code),
                "health exited {}: {}",
                out.code,
                out.stderr
            );
            (out.code == baton_cli::EXIT_OK).then_some(out)
        },
    );
    assert!(out.stdout.contains("SERVING"), "{}", out.stdout);
}

/// `--log-format json`: every line of the node's log is one JSON object; the default
/// text format writes no ANSI colour codes to a file.
#[test]
fn logs_are_json_on_request_and_never_coloured_in_a_file() {
    let json = Cluster::start(
        1,
        ClusterOpts {
            extra: vec!["--log-format".into(), "json".into()],
            ..Default::default()
        },
    );
    let text = Cluster::start(1, ClusterOpts::default());
    let log = |c: &Cluster| std::fs::read_to_string(c.dir().join("node1.log")).unwrap();
    wait_until(Duration::from_secs(20), "a few log lines", || {
        (log(&json).lines().count() >= 3).then_some(())
    });
    for line in log(&json).lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    let text_log = log(&text);
    assert!(!text_log.is_empty());
    assert!(
        !text_log.contains('\u{1b}'),
        "ANSI escape in a log file:\n{text_log}"
    );
    assert!(!log(&json).contains('\u{1b}'));
}
