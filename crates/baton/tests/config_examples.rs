//! The example configuration files in `deploy/` work as shipped: a directory node and an
//! agent start from them (flags override only what must differ on a test machine), a
//! role gets placed and its process runs; a bad config file is refused at start with an
//! `error:` line that names the key and the problem.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BATON: &str = env!("CARGO_BIN_EXE_baton");

fn deploy_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(name)
}

/// A `baton` command that ignores the caller's `BATON_*` environment, so only the config
/// file and the flags given here count.
fn baton() -> Command {
    let mut c = Command::new(BATON);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("BATON_") {
            c.env_remove(k);
        }
    }
    c.env("NO_COLOR", "1").stdin(Stdio::null());
    c
}

/// A child process leading its own process group. Dropping it sends SIGTERM to the
/// group (the agent then stops its roles itself), waits a bounded time, then SIGKILLs
/// the group.
struct Proc {
    name: &'static str,
    pid: i32,
    child: Mutex<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Proc {
        let err = std::fs::File::create(&log).expect("log file");
        cmd.stderr(err).process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name,
            pid: child.id() as i32,
            child: Mutex::new(child),
            log,
        }
    }

    fn try_wait(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    /// Panics with the process's log if it has exited.
    fn assert_alive(&self) {
        if let Some(status) = self.try_wait() {
            panic!(
                "{} exited early ({status}); its log:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    fn signal_group(&self, signal: i32) {
        // SAFETY: plain syscall on the process group this struct created.
        unsafe {
            libc::kill(-self.pid, signal);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.try_wait().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left of the group (nothing, normally).
        self.signal_group(libc::SIGKILL);
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Poll `f` every 100 ms until it returns `Some`, or panic with `what` and `context()`.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `baton --directory ADDR -o json ARGS...`: the parsed JSON on success.
/// The admin client's TLS flags (set by the test that made the certificates).
static ADMIN_TLS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// `--ca --cert --key` of `stem` in `dir`, made by the same code as `baton cert`.
fn tls_flags(dir: &std::path::Path, subject: baton_tls::make::Subject) -> Vec<String> {
    use baton_tls::make;
    if !dir.join("ca.pem").exists() {
        let ca = make::make_ca("test CA", make::Validity::for_(make::CA_VALID_FOR)).unwrap();
        make::write(dir, "ca", &ca, false).unwrap();
    }
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let issued = make::issue(
        &read("ca.pem"),
        &read("ca.key"),
        &subject,
        make::Validity::for_(make::LEAF_VALID_FOR),
    )
    .unwrap();
    let stem = subject.file_stem();
    make::write(dir, &stem, &issued, true).unwrap();
    let path = |f: String| dir.join(f).display().to_string();
    vec![
        "--ca".into(),
        path("ca.pem".into()),
        "--cert".into(),
        path(format!("{stem}.pem")),
        "--key".into(),
        path(format!("{stem}.key")),
    ]
}

fn admin_json(addr: &str, args: &[&str]) -> Option<serde_json::Value> {
    let out = baton()
        .args(["--directory", addr, "-o", "json"])
        .args(ADMIN_TLS.get().expect("admin certificate made"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn logs(procs: &[&Proc]) -> String {
    procs
        .iter()
        .map(|p| {
            format!(
                "--- {} log:\n{}",
                p.name,
                std::fs::read_to_string(&p.log).unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn directory_and_agent_start_from_the_example_configs() {
    let tmp = tempfile::tempdir().unwrap();
    let port = baton_tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    let peer = format!("127.0.0.1:{}", baton_tests::free_port());
    let tls = tmp.path().join("tls");
    use baton_tls::make::Subject;
    let node_tls = tls_flags(
        &tls,
        Subject::Node {
            id: 1,
            hosts: vec![],
        },
    );
    let agent_tls = tls_flags(
        &tls,
        Subject::Agent {
            server: "srv-a".into(),
        },
    );
    let admin_tls = tls_flags(
        &tls,
        Subject::Client {
            name: "admin".into(),
            permission: baton_tls::Permission::Admin,
            server: None,
        },
    );
    let _ = ADMIN_TLS.set(admin_tls.clone());

    // The directory: a copy of deploy/directory.toml, parsed as shipped (id, the TLS paths,
    // the [peers] table; the tuning keys are commented out); flags replace what points at other hosts.
    let dir_config = tmp.path().join("directory.toml");
    std::fs::copy(deploy_file("directory.toml"), &dir_config).unwrap();
    let mut cmd = baton();
    cmd.arg("directory")
        .arg("--config")
        .arg(&dir_config)
        .args([
            "--listen",
            &addr,
            "--advertise",
            &addr,
            "--peer-listen",
            &peer,
            "--http",
            &format!("127.0.0.1:{}", baton_tests::free_port()),
        ])
        .args(&node_tls)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["--peers", &format!("1={peer}")])
        .stdout(Stdio::null());
    let directory = Proc::spawn("directory", cmd, tmp.path().join("directory.log"));

    wait_for(
        "the single-node directory to elect itself",
        Duration::from_secs(30),
        || {
            directory.assert_alive();
            let s = admin_json(&addr, &["cluster", "status"])?;
            (s["leader"] == 1).then_some(())
        },
        || logs(&[&directory]),
    );

    // The agent: a copy of deploy/agent.toml as shipped (server srv-a, its [run] table
    // with the demo kind, grace and crash settings); only the directory address differs.
    let agent_config = tmp.path().join("agent.toml");
    std::fs::copy(deploy_file("agent.toml"), &agent_config).unwrap();
    let mut cmd = baton();
    cmd.arg("agent")
        .arg("--config")
        .arg(&agent_config)
        .args(["--directory", &addr])
        .args(&agent_tls)
        .stdout(Stdio::piped());
    let agent = Proc::spawn("agent", cmd, tmp.path().join("agent.log"));
    // Role processes write to the agent's stdout: collect it.
    let output = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let stdout = agent.child.lock().unwrap().stdout.take().unwrap();
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                output.lock().unwrap().push(line);
            }
        });
    }

    wait_for(
        "the agent to register srv-a",
        Duration::from_secs(30),
        || {
            directory.assert_alive();
            agent.assert_alive();
            let s = admin_json(&addr, &["server", "list"])?;
            s.as_array()?
                .iter()
                .any(|v| v["name"] == "srv-a" && v["status"] == "up")
                .then_some(())
        },
        || logs(&[&directory, &agent]),
    );

    let created = baton()
        .args(["--directory", &addr])
        .args(&admin_tls)
        .args(["role", "create", "example"])
        .args(["--kind", "demo", "--servers", "srv-a"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "role create failed: {}",
        String::from_utf8_lossy(&created.stderr)
    );

    let epoch = wait_for(
        "role example to be running on srv-a",
        Duration::from_secs(30),
        || {
            let r = admin_json(&addr, &["role", "show", "example"])?;
            (r["state"] == "running" && r["active_server"] == "srv-a")
                .then(|| r["epoch"].as_u64())
                .flatten()
        },
        || logs(&[&directory, &agent]),
    );
    assert!(epoch >= 1, "epoch {epoch}");

    // The example's demo command prints "role ROLE epoch N on SERVER" once a second.
    let expected = format!("role example epoch {epoch} on srv-a");
    wait_for(
        "the role's process to write its line",
        Duration::from_secs(30),
        || {
            agent.assert_alive();
            output
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(&expected))
                .then_some(())
        },
        || {
            format!(
                "stdout so far: {:?}\n{}",
                output.lock().unwrap(),
                logs(&[&directory, &agent])
            )
        },
    );
    drop(agent);
    drop(directory);
}

/// Run `baton SUBCOMMAND --config FILE` with `contents` in FILE; it must exit non-zero
/// (and soon). Returns its output.
fn refused(subcommand: &str, contents: &str) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.toml");
    std::fs::write(&file, contents).unwrap();
    let mut child = baton()
        .arg(subcommand)
        .arg("--config")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            // SAFETY: plain syscall on the group we created.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
            panic!("baton {subcommand} with a bad config did not exit:\n{contents}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "baton {subcommand} accepted a bad config:\n{contents}"
    );
    out
}

/// The `error:` line of a refused start; it must name every one of `words`.
fn assert_error_names(out: &Output, words: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no `error:` line in:\n{stderr}"));
    for w in words {
        assert!(
            line.contains(w),
            "the error line does not name {w:?}: {line}"
        );
    }
}

#[test]
fn bad_config_files_are_refused_with_the_key_named() {
    // An unknown key (a typo of `lease`).
    let out = refused(
        "directory",
        "id = 1\nlisten = \"127.0.0.1:1\"\nleese = \"3s\"\n",
    );
    assert_error_names(&out, &["leese", "bad.toml"]);

    // A value that is not a duration.
    let out = refused(
        "directory",
        "id = 1\nlisten = \"127.0.0.1:1\"\nlease = \"three\"\n",
    );
    assert_error_names(&out, &["lease", "three", "invalid duration"]);

    // A valid file whose values break a rule: grace below lease * rho.
    let example = std::fs::read_to_string(deploy_file("directory.toml")).unwrap();
    let out = refused(
        "directory",
        &example.replace("# grace = \"50ms\"", "grace = \"1ms\""),
    );
    assert_error_names(&out, &["grace"]);

    // The agent's file: an unknown key, and a bad duration.
    let out = refused("agent", "server = \"srv-a\"\ncrash_limt = 3\n");
    assert_error_names(&out, &["crash_limt"]);
    let out = refused("agent", "server = \"srv-a\"\nhandover_grace = 5\n");
    assert_error_names(&out, &["handover_grace"]);
}
