//! # baton-tests: the end-to-end harness
//!
//! Spawns the real `baton` binary: directory nodes on loopback ports with data in a
//! temporary directory, agents whose roles write a journal, and admin commands through
//! the CLI with `-o json`. Used by the end-to-end tests in `tests/`, the `measure`
//! binary and the benches; the chaos runner ([`chaos`]) and the crash and corruption
//! campaigns ([`crashes`]) are modules of it, each with a thin binary. The cluster of a
//! test and everything asked of it is [`Cluster`] (`cluster.rs`).
//!
//! Rules the harness keeps:
//! - every process it starts leads its own process group and is SIGKILLed (group and
//!   all) when its handle is dropped; a [`Cluster`] also sweeps `/proc` on drop for any
//!   process whose command line names its temporary directory (role processes live in
//!   process groups of their own), so a failing test leaves nothing behind;
//! - directory nodes and agents also get `PR_SET_PDEATHSIG = SIGKILL`, so they die with
//!   the thread that started them even if the test process is killed outright;
//! - waiting is polling a condition with a deadline ([`wait_until`]), never a fixed sleep;
//! - logs of every process go to files in the temporary directory and are printed when
//!   the handle is dropped during a panic. `BATON_E2E_KEEP=1` keeps the directory.

pub mod chaos;
mod cluster;
pub mod crashes;
pub mod dup_agent;
pub mod http;
pub mod journal;
pub mod stats;
pub mod stubborn;
pub mod tools;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

pub use cluster::{Certs, Cluster, ClusterOpts, DirNode, launch};
pub use journal::{Line, Report, check, journal_command, stubborn_journal_command};

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

/// The `baton` binary: `BATON_BIN` if set, else the workspace's `target/debug/baton`,
/// built first with `$CARGO build -p baton --bin baton` unless it is newer than every
/// source (as after `cargo test --workspace`, which builds it).
pub fn baton_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("BATON_BIN") {
            return PathBuf::from(p);
        }
        let workspace = workspace_dir();
        let bin = target_dir().join("debug").join("baton");
        // `cargo test --workspace` has just built this binary with the workspace's
        // features; building it again with `-p baton` resolves features for that package
        // alone and rebuilds ring, rustls and their dependents (minutes on two cores),
        // twice per run. So build only when a source is newer than the binary.
        if !is_fresh(&bin, &workspace) {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(&cargo)
                .args(["build", "-p", "baton", "--bin", "baton"])
                .current_dir(&workspace)
                .status()
                .expect("cannot run cargo to build the baton binary");
            assert!(status.success(), "cargo build -p baton failed: {status}");
        }
        assert!(bin.exists(), "no binary at {}", bin.display());
        bin
    })
}

/// The workspace's root directory (the parent of `tests/`).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace) or
/// `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    let workspace = workspace_dir();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_relative() {
                workspace.join(t)
            } else {
                t
            }
        })
        .unwrap_or_else(|| workspace.join("target"))
}

/// Whether `bin` exists and is newer than every file it is built from: the workspace
/// manifests and lock file, and everything under `crates/` and `proto/`.
fn is_fresh(bin: &Path, workspace: &Path) -> bool {
    fn newest(path: &Path, depth_left: u32) -> Option<std::time::SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_dir() {
            return meta.modified().ok();
        }
        if depth_left == 0 {
            return None;
        }
        std::fs::read_dir(path)
            .ok()?
            .flatten()
            .filter(|e| e.file_name() != "target")
            .filter_map(|e| newest(&e.path(), depth_left - 1))
            .max()
    }
    let Some(built) = std::fs::metadata(bin).and_then(|m| m.modified()).ok() else {
        return false;
    };
    // Sources sit at most 6 levels deep (crates/X/src/a/b/c.rs); 8 leaves a margin.
    const DEPTH_MAX: u32 = 8;
    ["Cargo.toml", "Cargo.lock", "crates", "proto"]
        .iter()
        .filter_map(|p| newest(&workspace.join(p), DEPTH_MAX))
        .all(|source| source <= built)
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// A free loopback port (bound, then released). Never hands out the same port twice in
/// one process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        drop(l);
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Wall-clock nanoseconds since the Unix epoch (the journal's clock).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// Wall-clock milliseconds since the Unix epoch (the directory's history clock).
pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// Polls `f` every 25 ms until it returns `Some`, or panics naming `what` after `limit`.
pub fn wait_until<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    match try_wait_until(limit, f) {
        Some(v) => v,
        None => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `f` every 25 ms until it returns `Some` or `limit` has passed.
pub fn try_wait_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Whether a process exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Command line of a process (arguments joined by spaces), if it exists.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Every pid in `/proc` (empty when it cannot be read).
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Live (non-zombie) processes whose command line contains `marker`, this process excluded.
pub fn pids_with_marker(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    all_pids()
        .into_iter()
        .filter(|pid| *pid != me)
        .filter(|pid| cmdline(*pid).is_some_and(|c| c.contains(marker)))
        .filter(|pid| pid_alive(*pid))
        .collect()
}

/// SIGKILL every process whose command line contains `marker`, until none is left
/// (bounded).
pub fn kill_marked(marker: &str) {
    for _ in 0..50 {
        let pids = pids_with_marker(marker);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: plain syscall.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, group: bool, sig: i32) {
    let target = if group { -(pid as i32) } else { pid as i32 };
    // SAFETY: plain syscall; errors (already gone) are ignored.
    unsafe {
        libc::kill(target, sig);
    }
}

/// The last `max_lines` lines of a file (empty when it cannot be read).
pub fn tail(path: &Path, max_lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// A background thread that runs until asked to stop: the flag it polls, and its handle.
/// `stop` sets the flag and joins it (a second call does nothing).
pub struct Worker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Run `body` on a new thread; it gets the stop flag to poll.
    pub fn spawn(
        body: impl FnOnce(std::sync::Arc<std::sync::atomic::AtomicBool>) + Send + 'static,
    ) -> Worker {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        Worker {
            stop,
            thread: Some(std::thread::spawn(move || body(flag))),
        }
    }

    /// Ask the thread to stop and wait for it.
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `baton ARGS` with its output (stdout and stderr) going to `log`, no stdin, no
/// `BATON_DIRECTORY` from the test's environment, leading its own process group (so a
/// kill reaches its children) and killed if the test process dies (PR_SET_PDEATHSIG).
pub fn baton_command(args: &[String], log: File) -> std::io::Result<Command> {
    baton_command_of(baton_bin(), args, log)
}

/// [`baton_command`] with the binary `bin` (the benches run a release build).
pub fn baton_command_of(bin: &Path, args: &[String], log: File) -> std::io::Result<Command> {
    let err = log.try_clone()?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .env_remove("BATON_DIRECTORY")
        .process_group(0);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Ok(cmd)
}

/// A long-running `baton` process in its own process group, killed (group and all) on drop.
pub struct Proc {
    name: String,
    /// The binary it runs (the harness's [`baton_bin`] unless the caller chose one).
    bin: PathBuf,
    args: Vec<String>,
    /// Environment variables set for it on top of the harness's (e.g. `RUST_LOG`).
    envs: Vec<(String, String)>,
    log: PathBuf,
    /// The group id it runs with (its user stays the harness's), where one was asked
    /// for: a benchmark cuts one node's traffic off by it (iptables' owner match).
    gid: Option<u32>,
    child: Option<Child>,
}

impl Proc {
    /// Starts `baton ARGS` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, args: Vec<String>, log: PathBuf) -> Proc {
        Proc::try_spawn(baton_bin(), name, args, Vec::new(), log)
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
    }

    /// Starts `BIN ARGS` with `envs` set and stdout and stderr appended to `log`; an error
    /// (no such binary, an unwritable log) is returned, not a panic.
    pub fn try_spawn(
        bin: &Path,
        name: &str,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
    ) -> std::io::Result<Proc> {
        Proc::try_spawn_as(bin, name, args, envs, log, None)
    }

    /// [`Proc::try_spawn`], running with the group id `gid` when one is given.
    pub fn try_spawn_as(
        bin: &Path,
        name: &str,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
        gid: Option<u32>,
    ) -> std::io::Result<Proc> {
        let mut p = Proc {
            name: name.to_string(),
            bin: bin.to_path_buf(),
            args,
            envs,
            log,
            gid,
            child: None,
        };
        p.try_start()?;
        Ok(p)
    }

    fn start(&mut self) {
        self.try_start()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
    }

    /// Starts it again with the same arguments, after a kill or stop (panics if it
    /// still runs).
    pub fn try_start(&mut self) -> std::io::Result<()> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let out = File::options().create(true).append(true).open(&self.log)?;
        let mut cmd = baton_command_of(&self.bin, &self.args, out)?;
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(g) = self.gid {
            std::os::unix::process::CommandExt::gid(&mut cmd, g);
        }
        self.child = Some(cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("{} ({}): {e}", self.name, self.bin.display()),
            )
        })?);
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The pid (= process group id) while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// The exit code, once the process has exited by itself (`None` while it runs or
    /// when a signal ended it).
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.as_mut()?.try_wait().ok()??.code()
    }

    /// SIGKILL to the whole process group; reaps.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), true, libc::SIGKILL);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL to the group if it has not exited within `grace`. Returns
    /// whether it exited by itself.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        signal(c.id(), false, libc::SIGCONT);
        signal(c.id(), false, libc::SIGTERM);
        let exited = try_wait_until(grace, || c.try_wait().ok().flatten()).is_some();
        if !exited {
            signal(c.id(), true, libc::SIGKILL);
            let _ = c.wait();
        }
        // Anything left in its group.
        signal(c.id(), true, libc::SIGKILL);
        exited
    }

    /// SIGSTOP (freeze) the process.
    pub fn sigstop(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, false, libc::SIGSTOP);
        }
    }

    /// SIGCONT (thaw) the process.
    pub fn sigcont(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, false, libc::SIGCONT);
        }
    }

    /// Starts it again with the same arguments (after a kill or stop).
    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} ({}), last lines of {} -----\n{}\n-----",
                self.name,
                self.args.join(" "),
                self.log.display(),
                tail(&self.log, 60)
            );
        }
        self.kill9();
    }
}

// ---------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------

/// The result of one CLI run.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub args: Vec<String>,
    /// Exit code; -1 when killed by a signal or by the harness's timeout.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CliOutput {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// The JSON on stdout of a successful run; panics with the whole output otherwise.
    pub fn json(&self) -> Value {
        self.try_json().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The JSON on stdout of a successful run.
    pub fn try_json(&self) -> Result<Value> {
        if !self.ok() {
            bail!(
                "baton {} failed (exit {}): {}{}",
                self.args.join(" "),
                self.code,
                self.stderr.trim(),
                self.stdout.trim()
            );
        }
        serde_json::from_str(&self.stdout).with_context(|| {
            format!(
                "baton {}: stdout is not JSON: {}",
                self.args.join(" "),
                self.stdout
            )
        })
    }

    /// The single `error: ...` line of a refusal; panics if the run succeeded or stderr
    /// is not exactly one such line.
    pub fn error_line(&self) -> String {
        assert!(
            !self.ok(),
            "baton {} should have failed but printed {}",
            self.args.join(" "),
            self.stdout
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "baton {}: stderr should be one line, got {:?}",
            self.args.join(" "),
            self.stderr
        );
        assert!(
            lines[0].starts_with("error: "),
            "baton {}: stderr should start with 'error: ', got {:?}",
            self.args.join(" "),
            lines[0]
        );
        lines[0].to_string()
    }
}

/// How long one CLI invocation may take before the harness kills it (the client's own
/// retry budget is 10 s).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(25);

/// Runs `baton ARGS` (no `--directory` added) with a timeout.
pub fn run_baton(args: &[String], timeout: Duration) -> CliOutput {
    // The binary first (the first call may build it): the timeout is the command's own.
    let bin = baton_bin();
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("BATON_DIRECTORY")
        .spawn()
        .expect("cannot run baton");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let mut stderr = t_err.join().unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\n[harness: killed after {timeout:?}]"));
    }
    CliOutput {
        args: args.to_vec(),
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout,
        stderr,
        elapsed: start.elapsed(),
    }
}

// ---------------------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------------------

/// One `baton agent --server NAME --directory ADDRS --run KIND=COMMAND ...`.
pub struct Agent {
    pub server: String,
    proc: Proc,
}

impl Agent {
    /// Starts an agent for `server` with `runs` (kind, command).
    pub fn start(cluster: &Cluster, server: &str, runs: &[(&str, &str)]) -> Agent {
        Agent::start_with(cluster, server, runs, &[])
    }

    /// Same, with extra agent flags (`--crash-limit 3`, `--handover-grace 1s`...).
    pub fn start_with(
        cluster: &Cluster,
        server: &str,
        runs: &[(&str, &str)],
        extra: &[&str],
    ) -> Agent {
        let mut args = vec![
            "agent".to_string(),
            "--server".into(),
            server.into(),
            "--directory".into(),
            cluster.addrs(),
        ];
        args.extend(cluster.tls_args(baton_tls::make::Subject::Agent {
            server: server.to_string(),
        }));
        for (kind, cmd) in runs {
            args.push("--run".into());
            args.push(format!("{kind}={cmd}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(
            &format!("agent {server}"),
            args,
            cluster.dir().join(format!("agent-{server}.log")),
        );
        Agent {
            server: server.to_string(),
            proc,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    pub fn exit_code(&mut self) -> Option<i32> {
        self.proc.exit_code()
    }

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// SIGTERM (the agent stops its roles gracefully); returns whether it exited in 15 s.
    pub fn stop(&mut self) -> bool {
        self.proc.stop(Duration::from_secs(15))
    }

    pub fn restart(&mut self) {
        self.proc.restart();
    }

    pub fn sigstop(&self) {
        self.proc.sigstop();
    }

    pub fn sigcont(&self) {
        self.proc.sigcont();
    }

    pub fn log(&self) -> &Path {
        self.proc.log()
    }
}

/// Waits until none of `logs` has gained a line containing `pattern` for `quiet` in a
/// row, watching only what is written from now on (e.g. agents' ` WARN ` lines: no
/// agent lost its session or went half a lease without an acknowledged renewal).
/// Returns whether that happened within `limit`.
pub fn wait_quiet(logs: &[&Path], pattern: &str, quiet: Duration, limit: Duration) -> bool {
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len() as usize);
    let mut offsets: Vec<usize> = logs.iter().map(|p| len(p)).collect();
    let deadline = Instant::now() + limit;
    let mut since = Instant::now();
    loop {
        for (p, off) in logs.iter().zip(offsets.iter_mut()) {
            let text = std::fs::read(p).unwrap_or_default();
            if text.len() > *off {
                if String::from_utf8_lossy(&text[*off..]).contains(pattern) {
                    since = Instant::now();
                }
                *off = text.len();
            }
        }
        if since.elapsed() >= quiet {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Removes ANSI escape sequences (`ESC [ ... letter`) from a log line.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The agent sessions a directory node's log says it opened (after registering the
/// agent), as (log time, server), in log order. Log times are RFC 3339 in UTC, so they
/// compare as text.
pub fn sessions_opened(log: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains("agent session opened"))
        .filter_map(|l| {
            let time = l.split_whitespace().next()?.to_string();
            let server = l
                .split_whitespace()
                .find_map(|f| f.strip_prefix("server="))?
                .to_string();
            Some((time, server))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Observations
// ---------------------------------------------------------------------------------------

/// The journal's last line, if any.
pub fn last_line(journal: &Path) -> Option<Line> {
    journal::read(journal).into_iter().max_by_key(|l| l.t_ns)
}

/// The first journal line of `role` written by `server` at or after `after_ns`.
pub fn first_line_by(journal: &Path, role: &str, server: &str, after_ns: u64) -> Option<Line> {
    journal::read(journal)
        .into_iter()
        .filter(|l| l.role == role && l.server == server && l.t_ns >= after_ns)
        .min_by_key(|l| l.t_ns)
}

/// Pids of `role`'s shells that wrote to the journal at or after `after_ns` and are still
/// alive (checked against the journal path in their command line, so a reused pid is not
/// mistaken for a role).
pub fn live_role_pids(journal: &Path, role: &str, after_ns: u64) -> BTreeSet<u32> {
    let marker = journal.display().to_string();
    journal::read(journal)
        .into_iter()
        .filter(|l| l.role == role && l.t_ns >= after_ns)
        .map(|l| l.pid)
        .filter(|pid| pid_alive(*pid) && cmdline(*pid).is_some_and(|c| c.contains(&marker)))
        .collect()
}

/// Whether the role process `pid` of `journal` is still alive.
pub fn role_pid_alive(journal: &Path, pid: u32) -> bool {
    let marker = journal.display().to_string();
    pid_alive(pid) && cmdline(pid).is_some_and(|c| c.contains(&marker))
}

/// Checks the journal and returns an error with the report when it is not clean.
pub fn check_journal(journal: &Path) -> Result<()> {
    let lines = journal::read(journal);
    let report = check(&lines);
    if report.is_clean() {
        Ok(())
    } else {
        let inst = journal::instances(&lines);
        let mut s = String::new();
        for i in inst {
            s.push_str(&format!("  {i}\n"));
        }
        Err(anyhow!(
            "journal {}:\n{report}instances:\n{s}",
            journal.display()
        ))
    }
}

/// The journal instances of `role`, in order of first write.
pub fn role_instances(journal: &Path, role: &str) -> Vec<journal::Instance> {
    journal::instances(&journal::read(journal))
        .into_iter()
        .filter(|i| i.role == role)
        .collect()
}

/// Milliseconds between two journal times, as a float, for printing.
pub fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e6
}
