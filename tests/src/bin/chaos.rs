//! # chaos: real processes on separate hosts, faults, and an outside observer
//!
//! The real-process tier (docs/testing.md). `tests/chaos/run` builds the binaries and calls
//! `chaos run`; the subcommands are:
//!
//! - `chaos run --prefix P --workdir D --baton BIN [--duration 5m] [--seed N] [--lease 2s]
//!   [--report FILE] [--roles 3..6] [--faults KIND,...] [--keep]`: the whole run (below);
//! - `chaos cleanup --prefix P [--workdir D]`: removes everything a run with that prefix
//!   may have left (cgroups, processes, namespaces, links); idempotent;
//! - `chaos role-writer --socket S [--ignore-term]`: the role process itself (started by
//!   the agents).
//!
//! ## The hosts
//!
//! Six network namespaces `P-n1 P-n2 P-n3` (directory nodes, 10.77.K.1-3) and `P-a P-b
//! P-c` (servers srv-a, srv-b, srv-c with one agent each, 10.77.K.11-13), each with one
//! veth `eth0` plugged into a bridge that lives in another namespace `P-sw` (so bridged
//! traffic never meets the host's own firewall: a Docker host drops bridged frames in its
//! FORWARD chain). The root namespace gets one more veth, `P-h` (10.77.K.254), to reach
//! the nodes with the CLI. A seventh host, `P-d` (10.77.K.14), runs only the duplicate
//! agents of dup-agent faults. K is chosen per run so parallel runs do not collide. Processes
//! enter their namespace with `setns` between fork and exec (what `ip netns exec` does,
//! without its mount-namespace games).
//!
//! Each agent (and so each role process it starts) is placed in a cgroup of its own
//! (v1 freezer, else v2 `cgroup.freeze`, else SIGSTOP of process groups), which is how a
//! whole server is frozen at once.
//!
//! ## The fenced journal
//!
//! Every role runs `chaos role-writer`, which writes `time_ns role epoch server pid` every
//! 20 ms, one line at a time, over its own connection to a Unix socket owned by this
//! process in the root namespace (pathname sockets cross network namespaces; the
//! filesystem and the clock are shared). The observer is the outside world, a database
//! that fences: per role it keeps the highest epoch it has accepted and *rejects* any
//! write with a smaller one. Accepted writes go to `journal/ROLE.log` in the journal
//! format of `baton_tests::journal`; rejected ones to the same file as `REJECTED ...`
//! lines (which that parser skips). The time stamp of a line is the role process's own
//! (its testimony of being alive); acceptance is decided in arrival order, as a database
//! would. A frozen role process holds no lock here (a flock-based journal would let a
//! frozen writer block the new holder), and a stalled observer only delays lines, it
//! does not lose them.
//!
//! ## Stubborn roles
//!
//! Every second role (r2, r4, r6) is of kind `stubborn`: its shell starts the writer in
//! the background with `--ignore-term` (it ignores SIGTERM) and waits for it
//! (`baton_tests::stubborn`). SIGTERM to the role ends the shell and leaves the writer,
//! which only the wrapper's SIGKILL after the grace stops; so every fault that stops a
//! role exercises "a role is stopped only when no process of it is left", and the
//! overlap checks below catch a writer that outlives its role. The sampler finds these
//! writers by the same command-line marker, and times how long each outlived its shell.
//!
//! ## The dup-agent fault
//!
//! A second agent under the name of a server whose agent is alive and settled (the
//! directory's `server list` shows that agent's instance as the holder), with the same
//! arguments and so the same role commands. It runs on host `d`, not in the server's own
//! namespace: two machines given one name by mistake is the case only the directory can
//! catch (on one host a pid file would), and the refusal then names the holder's address,
//! which differs from the duplicate's. It carries `CHAOS_DUP_AGENT` in its environment,
//! which its role processes would inherit: the writer then marks its journal lines and
//! the sampler notes the variable, so a role process of the duplicate is told apart by
//! journal and by `/proc`. It must run no role, exit non-zero within 3 x lease + 10 s
//! (the runner kills it otherwise) and log that the name "is held by another live agent
//! instance" naming the holder's instance id (from the holder's log). A duplicate must
//! not stop or move anything either: a lease_expired move during the fault is a false
//! failover, and any role interruption is reported with those of directory-only faults.
//!
//! ## The checks
//!
//! - single active, from the journal: no two instances (role, epoch, server, pid) of one
//!   role with intersecting accepted-write intervals, no epoch regression, no epoch used
//!   by two servers (`baton_tests::journal::check`);
//! - stale writes: a rejected write is expected right after a frozen server thaws (its
//!   role processes run for a few ms before the wrapper's dead-man switch stops them) and
//!   counted; one that no freeze explains means an old holder was running while a newer
//!   epoch was already writing, a violation;
//! - single active, from `/proc`, every 50 ms: two role processes of one role alive and
//!   not frozen at the same instant (confirmed by re-reading both after the scan) is a
//!   violation, except an old-epoch process in its first second after its server thawed;
//!   a process frozen past the lease that still runs a second after the thaw is one;
//! - durable acknowledgement: a writer thread issues `server add w-N` through the CLI with
//!   every node listed; each acknowledged name must be in `server list` at the end;
//! - recovery: every change of the process writing a role's lines is an interruption;
//!   per fault and interrupted role, the longest time without a writer (normal cadence
//!   20 ms), p50/p99 over all, and per fault kind how many moved (new epoch) and how many
//!   restarted where they were (same epoch, the agent having self-fenced). A gap within
//!   one process is a stall (host, writer or observer), reported apart;
//! - no false failover: a `lease_expired` move while only the directory was faulted;
//! - liveness: after the final heal, every role is writing again within lease + grace + 5 s;
//! - duplicates refused (above): no journal line and no `/proc` role process of a
//!   duplicate agent, each one exited non-zero in time with a log naming the holder;
//! - no process of the cluster exits on its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use baton_tests::dup_agent::{self, DUP_ENV, DUP_LINE_PREFIX, DupOutcome, DupTally};
use baton_tests::stubborn::{self, StubbornStats};
use baton_tests::tools::{Rng, parse_duration};
use baton_tests::{CliOutput, journal, now_ns, run_baton, strip_ansi};
use serde_json::{Value, json};

/// Role processes write this often.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);
/// The `/proc` sampler's period.
const SAMPLE_PERIOD: Duration = Duration::from_millis(50);
/// How long after its server thaws an old-epoch role process may still run (and write):
/// the wrapper checks its fence every 10 ms and the role dies on SIGTERM; a second is
/// generous on a loaded two-core machine, and anything beyond it is a stale holder.
const STALE_BOUND_NS: u64 = 1_000_000_000;
/// A gap this long between two writes of one and the same role process is a stall.
const OUTAGE_NS: u64 = 250_000_000;
/// A gap is charged to the fault whose start precedes the gap's start by at most this
/// much less (a frozen writer's last line is up to one write interval before the freeze).
const WINDOW_LEAD_NS: u64 = 100_000_000;
/// Liveness budget after the final heal, on top of lease + grace.
const LIVENESS_EXTRA: Duration = Duration::from_secs(5);
/// An upper bound of the directory's grace (`--grace`, which this runner does not set;
/// its default is lease x 1%, at least 50 ms): the liveness budget and the window in
/// which a fault's effects are expected use it, so they err on the generous side.
const GRACE: Duration = Duration::from_millis(300);
/// Each directory node listens on this port of its own address.
const PORT: u16 = 7001;
/// Server names, and the host suffix of each one's namespace.
const SERVERS: [(&str, &str); 3] = [("srv-a", "a"), ("srv-b", "b"), ("srv-c", "c")];

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

fn main() {
    // Every node, agent and CLI call of a chaos run speaks plain text: the run is about
    // failures, and its in-process clients and planted faults predate TLS. (The e2e
    // tests run with mutual TLS.)
    // SAFETY: set before any thread starts; every child process inherits it.
    unsafe { std::env::set_var("BATON_INSECURE", "true") };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]).to_vec();
    let code = match args.first().map(String::as_str) {
        Some("run") => match run_cmd(&rest) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("chaos: {e:#}");
                2
            }
        },
        Some("cleanup") => match cleanup_cmd(&rest) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("chaos cleanup: {e:#}");
                1
            }
        },
        Some("role-writer") => role_writer(&rest),
        _ => {
            eprintln!(
                "usage: chaos run --prefix P --workdir D --baton BIN [--duration 5m] [--seed N] \
                 [--lease 2s] [--report FILE] [--roles N] [--faults K1,K2] \
                 [--freezer auto|sigstop] [--plant rogue|dup] [--keep]\n       \
                 chaos cleanup --prefix P [--workdir D]\n       \
                 chaos role-writer --socket PATH\n\
                 (normally called by tests/chaos/run)"
            );
            2
        }
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------
// Small things
// ---------------------------------------------------------------------------------------

/// Runs a command; an error carries its stderr.
fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn signal(pid: i32, sig: i32) {
    if pid != 0 && pid != -1 {
        // SAFETY: plain syscall.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Fields of `/proc/PID/stat` after the command name: (state, ppid, starttime).
fn proc_stat(pid: u32) -> Option<(char, u32, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); starttime is field 22.
    Some((
        f.first()?.chars().next()?,
        f.get(1)?.parse().ok()?,
        f.get(19)?.parse().ok()?,
    ))
}

/// (state, starttime, command name, parent) of `/proc/PID/stat`; the name changes at
/// exec, unlike the pid and the start time.
fn proc_stat_comm(pid: u32) -> Option<(char, u64, String, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let (head, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((
        f.first()?.chars().next()?,
        f.get(19)?.parse().ok()?,
        head.get(open + 1..)?.to_string(),
        f.get(1)?.parse().ok()?,
    ))
}

fn proc_env(pid: u32) -> HashMap<String, String> {
    fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// p50/p99/max of a sample in ms, as JSON (nulls when empty).
fn stats_json(v: &[f64]) -> Value {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    json!({
        "n": s.len(),
        "p50_ms": baton_tests::stats::percentile(&s, 50.0).map(round1),
        "p99_ms": baton_tests::stats::percentile(&s, 99.0).map(round1),
        "max_ms": s.last().copied().map(round1),
    })
}

fn stats_text(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match (
        baton_tests::stats::percentile(&s, 50.0),
        baton_tests::stats::percentile(&s, 99.0),
        s.last(),
    ) {
        (Some(p50), Some(p99), Some(max)) => {
            format!(
                "p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms (n={})",
                s.len()
            )
        }
        _ => "n=0".to_string(),
    }
}

fn valid_prefix(p: &str) -> bool {
    p.len() >= 4
        && p.len() <= 8
        && p.starts_with("bt")
        && p.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------
// The role process
// ---------------------------------------------------------------------------------------

/// `chaos role-writer --socket PATH [--ignore-term]`: what every role runs. Sends one
/// journal line every 20 ms until killed; it has no signal handler, so the wrapper's
/// SIGTERM ends it at once, unless `--ignore-term` (a stubborn role's worker) makes it
/// ignore SIGTERM, when only SIGKILL does.
fn role_writer(args: &[String]) -> i32 {
    let mut socket = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--socket" {
            socket = it.next().cloned();
        } else if a == stubborn::IGNORE_TERM_FLAG {
            // SAFETY: plain syscall, before any other thread exists.
            unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
            }
        }
    }
    let Some(socket) = socket else {
        eprintln!("role-writer: --socket is required");
        return 2;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let (role, epoch, server) = (var("BATON_ROLE"), var("BATON_EPOCH"), var("BATON_SERVER"));
    if role.is_empty() || epoch.parse::<u64>().is_err() || server.is_empty() {
        eprintln!("role-writer: BATON_ROLE, BATON_EPOCH and BATON_SERVER must be set");
        return 2;
    }
    let pid = std::process::id();
    // A duplicate agent's role process says so in every line.
    let mark = if std::env::var_os(DUP_ENV).is_some() {
        DUP_LINE_PREFIX
    } else {
        ""
    };
    let mut conn: Option<UnixStream> = None;
    let mut failing_since: Option<Instant> = None;
    loop {
        let line = format!("{mark}{} {role} {epoch} {server} {pid}\n", now_ns());
        if conn.is_none() {
            conn = UnixStream::connect(&socket).ok();
            if let Some(c) = &conn {
                let _ = c.set_write_timeout(Some(Duration::from_millis(500)));
            }
        }
        let sent = conn
            .as_mut()
            .is_some_and(|c| c.write_all(line.as_bytes()).is_ok());
        if sent {
            failing_since = None;
        } else {
            conn = None;
            // The observer is gone (the run ended): do not linger.
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(30) {
                return 0;
            }
        }
        std::thread::sleep(WRITE_INTERVAL);
    }
}

// ---------------------------------------------------------------------------------------
// The fenced journal (the outside world's database)
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Write {
    /// The role process's own time stamp.
    t_ns: u64,
    /// When the journal received it.
    recv_ns: u64,
    role: String,
    epoch: u64,
    server: String,
    pid: u32,
}

#[derive(Clone, Debug)]
struct Rejected {
    w: Write,
    /// The highest epoch accepted for the role when it arrived.
    max_epoch: u64,
}

#[derive(Default)]
struct JournalState {
    max_epoch: HashMap<String, u64>,
    accepted: Vec<Write>,
    rejected: Vec<Rejected>,
    /// Writes by a duplicate agent's role process (also fenced and journaled as usual).
    dup: Vec<Write>,
    malformed: u64,
    files: HashMap<String, File>,
}

struct JournalServer {
    state: Arc<Mutex<JournalState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn parse_write(s: &str, recv_ns: u64) -> Option<Write> {
    let l = journal::parse_line(s)?;
    Some(Write {
        t_ns: l.t_ns,
        recv_ns,
        role: l.role,
        epoch: l.epoch,
        server: l.server,
        pid: l.pid,
    })
}

impl JournalServer {
    fn start(socket: &Path, dir: &Path) -> Result<JournalServer> {
        let _ = fs::remove_file(socket);
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("bind journal socket {}", socket.display()))?;
        listener.set_nonblocking(true)?;
        fs::create_dir_all(dir)?;
        let state = Arc::new(Mutex::new(JournalState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, dir) = (state.clone(), stop.clone(), dir.to_path_buf());
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let (st, sp, dir) = (st.clone(), sp.clone(), dir.clone());
                        std::thread::spawn(move || {
                            for line in BufReader::new(conn).lines() {
                                let Ok(line) = line else { break };
                                if sp.load(Ordering::SeqCst) {
                                    break;
                                }
                                JournalServer::append(&st, &dir, &line);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(JournalServer {
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// The fence: accept `text` unless its epoch is smaller than the highest accepted
    /// for its role.
    fn append(st: &Mutex<JournalState>, dir: &Path, text: &str) {
        let recv_ns = now_ns();
        let mut s = st.lock().unwrap();
        let (dup, text) = match text.strip_prefix(DUP_LINE_PREFIX) {
            Some(t) => (true, t),
            None => (false, text),
        };
        let Some(w) = parse_write(text, recv_ns) else {
            s.malformed += 1;
            return;
        };
        if dup {
            s.dup.push(w.clone());
        }
        let max = s.max_epoch.get(&w.role).copied().unwrap_or(0);
        let line = if w.epoch < max {
            s.rejected.push(Rejected {
                w: w.clone(),
                max_epoch: max,
            });
            format!("REJECTED {text} (highest epoch {max})\n")
        } else {
            s.max_epoch.insert(w.role.clone(), w.epoch);
            s.accepted.push(w.clone());
            format!("{text}\n")
        };
        let file = s.files.entry(w.role.clone()).or_insert_with(|| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{}.log", w.role)))
                .expect("open journal file")
        });
        let _ = file.write_all(line.as_bytes());
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Time of the latest accepted write per role.
    fn last_write(&self) -> BTreeMap<String, u64> {
        let s = self.state.lock().unwrap();
        let mut m = BTreeMap::new();
        for w in s.accepted.iter().rev().take(2000) {
            let e = m.entry(w.role.clone()).or_insert(0);
            *e = (*e).max(w.t_ns);
        }
        m
    }

    fn counts(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        (s.accepted.len(), s.rejected.len())
    }
}

// ---------------------------------------------------------------------------------------
// Freezing a whole server
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Freezer {
    /// cgroup v1 freezer: one cgroup per server under this root.
    V1(PathBuf),
    /// cgroup v2: one cgroup per server under this root, `cgroup.freeze`.
    V2(PathBuf),
    /// No freezer: SIGSTOP the agent and every role process group it started.
    Sigstop,
}

impl Freezer {
    fn detect() -> Freezer {
        let v1 = PathBuf::from("/sys/fs/cgroup/freezer");
        if v1.join("cgroup.procs").exists() {
            return Freezer::V1(v1);
        }
        let v2 = PathBuf::from("/sys/fs/cgroup");
        if v2.join("cgroup.controllers").exists() {
            return Freezer::V2(v2);
        }
        Freezer::Sigstop
    }

    fn name(&self) -> &'static str {
        match self {
            Freezer::V1(_) => "cgroup v1 freezer",
            Freezer::V2(_) => "cgroup v2 freeze",
            Freezer::Sigstop => "SIGSTOP of agent and role process groups",
        }
    }

    fn dir(&self, prefix: &str, host: &str) -> Option<PathBuf> {
        match self {
            Freezer::V1(root) | Freezer::V2(root) => Some(root.join(format!("{prefix}-{host}"))),
            Freezer::Sigstop => None,
        }
    }

    /// Creates the server's cgroup; returns its `cgroup.procs`, which the agent joins
    /// between fork and exec.
    fn create(&self, prefix: &str, host: &str) -> Result<Option<PathBuf>> {
        let Some(dir) = self.dir(prefix, host) else {
            return Ok(None);
        };
        if !dir.exists() {
            fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        }
        Ok(Some(dir.join("cgroup.procs")))
    }

    fn freeze(&self, prefix: &str, host: &str, agent_pid: Option<u32>) -> Result<()> {
        match self {
            Freezer::V1(_) => {
                let d = self.dir(prefix, host).unwrap();
                fs::write(d.join("freezer.state"), "FROZEN")?;
                // Wait (bounded) until the kernel says every task is frozen.
                for _ in 0..100 {
                    if fs::read_to_string(d.join("freezer.state"))?.trim() == "FROZEN" {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(())
            }
            Freezer::V2(_) => {
                let d = self.dir(prefix, host).unwrap();
                fs::write(d.join("cgroup.freeze"), "1")?;
                Ok(())
            }
            Freezer::Sigstop => {
                let Some(agent) = agent_pid else {
                    return Ok(());
                };
                // The agent first (it can then start nothing new), then every role group.
                signal(agent as i32, libc::SIGSTOP);
                for pid in all_pids() {
                    if proc_stat(pid).is_some_and(|(_, ppid, _)| ppid == agent) {
                        signal(-(pid as i32), libc::SIGSTOP);
                    }
                }
                Ok(())
            }
        }
    }

    fn thaw(&self, prefix: &str, host: &str, agent_pid: Option<u32>) -> Result<()> {
        match self {
            Freezer::V1(_) => {
                let d = self.dir(prefix, host).unwrap();
                fs::write(d.join("freezer.state"), "THAWED")?;
                Ok(())
            }
            Freezer::V2(_) => {
                let d = self.dir(prefix, host).unwrap();
                fs::write(d.join("cgroup.freeze"), "0")?;
                Ok(())
            }
            Freezer::Sigstop => {
                let Some(agent) = agent_pid else {
                    return Ok(());
                };
                for pid in all_pids() {
                    if proc_stat(pid).is_some_and(|(_, ppid, _)| ppid == agent) {
                        signal(-(pid as i32), libc::SIGCONT);
                    }
                }
                signal(agent as i32, libc::SIGCONT);
                Ok(())
            }
        }
    }

    /// Whether the server's cgroup is frozen (or freezing). Always false for SIGSTOP
    /// (the sampler sees state `T` instead).
    fn is_frozen(&self, prefix: &str, host: &str) -> bool {
        match self {
            Freezer::V1(_) => {
                fs::read_to_string(self.dir(prefix, host).unwrap().join("freezer.state"))
                    .is_ok_and(|s| s.trim() != "THAWED")
            }
            Freezer::V2(_) => {
                fs::read_to_string(self.dir(prefix, host).unwrap().join("cgroup.freeze"))
                    .is_ok_and(|s| s.trim() == "1")
            }
            Freezer::Sigstop => false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Net {
    prefix: String,
    subnet: u8,
}

impl Net {
    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn ip(&self, host: &str) -> String {
        let last = match host {
            "n1" => 1,
            "n2" => 2,
            "n3" => 3,
            "a" => 11,
            "b" => 12,
            "c" => 13,
            "d" => 14,
            _ => 254,
        };
        format!("10.77.{}.{last}", self.subnet)
    }

    fn node_addr(&self, id: usize) -> String {
        format!("{}:{PORT}", self.ip(&format!("n{id}")))
    }

    /// The node's peer port (Raft), on the same host as its client port.
    fn peer_addr(&self, id: usize) -> String {
        format!("{}:{}", self.ip(&format!("n{id}")), PORT + 100)
    }

    fn directory(&self) -> String {
        (1..=3)
            .map(|i| self.node_addr(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every host; `d` runs only the duplicate agents of dup-agent faults.
    fn hosts() -> [&'static str; 7] {
        ["n1", "n2", "n3", "a", "b", "c", "d"]
    }

    /// A /24 under 10.77.0.0/16 that no interface or route of this host uses.
    fn pick_subnet(prefix: &str) -> Result<u8> {
        let addrs = sh("ip", &["-4", "-o", "addr", "show"])?;
        let routes = sh("ip", &["-4", "route", "show", "table", "all"])?;
        let h = prefix
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        for i in 0..250u32 {
            let k = ((h + i) % 250 + 1) as u8;
            let net = format!("10.77.{k}.");
            if !addrs.contains(&net) && !routes.contains(&net) {
                return Ok(k);
            }
        }
        bail!("no free /24 under 10.77.0.0/16")
    }

    fn setup(&self) -> Result<()> {
        let sw = self.ns("sw");
        sh("ip", &["netns", "add", &sw])?;
        sh("ip", &["-n", &sw, "link", "set", "lo", "up"])?;
        sh("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        sh("ip", &["-n", &sw, "link", "set", "br0", "up"])?;
        for h in Net::hosts() {
            let ns = self.ns(h);
            let port = format!("v-{h}");
            sh("ip", &["netns", "add", &ns])?;
            sh(
                "ip",
                &[
                    "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            sh(
                "ip",
                &["-n", &sw, "link", "set", &port, "master", "br0", "up"],
            )?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            sh(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", self.ip(h)),
                    "dev",
                    "eth0",
                ],
            )?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        let root = self.ns("h");
        sh(
            "ip",
            &[
                "link", "add", &root, "type", "veth", "peer", "name", "v-root", "netns", &sw,
            ],
        )?;
        sh(
            "ip",
            &["-n", &sw, "link", "set", "v-root", "master", "br0", "up"],
        )?;
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", self.ip("root")),
                "dev",
                &root,
            ],
        )?;
        sh("ip", &["link", "set", &root, "up"])?;
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// iptables DROP of everything but loopback, in and out, inside the namespace.
    Drop,
    /// The namespace's only link down.
    LinkDown,
}

impl Cut {
    fn name(&self) -> &'static str {
        match self {
            Cut::Drop => "iptables DROP",
            Cut::LinkDown => "link down",
        }
    }
}

fn cut(net: &Net, host: &str, how: Cut) -> Result<()> {
    let ns = net.ns(host);
    match how {
        Cut::Drop => {
            let rules: [&[&str]; 4] = [
                &["INPUT", "-i", "lo", "-j", "ACCEPT"],
                &["INPUT", "-j", "DROP"],
                &["OUTPUT", "-o", "lo", "-j", "ACCEPT"],
                &["OUTPUT", "-j", "DROP"],
            ];
            for rule in rules {
                let mut args = vec!["netns", "exec", &ns, "iptables", "-w", "-A"];
                args.extend_from_slice(rule);
                sh("ip", &args)?;
            }
        }
        Cut::LinkDown => {
            sh("ip", &["-n", &ns, "link", "set", "eth0", "down"])?;
        }
    }
    Ok(())
}

fn heal(net: &Net, host: &str, iptables: bool) -> Result<()> {
    let ns = net.ns(host);
    if iptables {
        sh(
            "ip",
            &["netns", "exec", &ns, "iptables", "-w", "-F", "INPUT"],
        )?;
        sh(
            "ip",
            &["netns", "exec", &ns, "iptables", "-w", "-F", "OUTPUT"],
        )?;
    }
    sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Processes in namespaces
// ---------------------------------------------------------------------------------------

/// A `baton` process in a namespace (and maybe a cgroup), restartable with the same
/// arguments. Leads its own process group; dies with the thread that started it
/// (PDEATHSIG), which is always the main thread.
struct Managed {
    name: String,
    ns: String,
    args: Vec<String>,
    log: PathBuf,
    cgroup_procs: Option<PathBuf>,
    child: Option<Child>,
    starts: u32,
    /// Extra environment.
    env: Vec<(String, String)>,
}

fn fmt_decimal(mut v: u32, buf: &mut [u8; 12]) -> usize {
    let mut tmp = [0u8; 12];
    let mut n = 0;
    loop {
        tmp[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        buf[i] = tmp[n - 1 - i];
    }
    n
}

impl Managed {
    fn start(&mut self, bin: &Path) -> Result<()> {
        assert!(self.child.is_none(), "{} is running", self.name);
        let nsfile = File::open(format!("/run/netns/{}", self.ns))
            .with_context(|| format!("open namespace {}", self.ns))?;
        let nsfd = nsfile.as_raw_fd();
        let cg = match &self.cgroup_procs {
            Some(p) => Some(CString::new(p.as_os_str().as_bytes())?),
            None => None,
        };
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(bin);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env_remove("BATON_DIRECTORY")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .process_group(0);
        // SAFETY: only async-signal-safe calls (setns, prctl, getpid, open, write, close)
        // between fork and exec; `cg` and `nsfd` were prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(nsfd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(cg) = &cg {
                    let fd = libc::open(cg.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let mut buf = [0u8; 12];
                    let n = fmt_decimal(libc::getpid() as u32, &mut buf);
                    let w = libc::write(fd, buf.as_ptr().cast(), n);
                    libc::close(fd);
                    if w < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", self.name))?;
        drop(nsfile);
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL (the process only: an agent's role processes lead groups of their own and
    /// must find out from their wrapper), and reap.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id() as i32, libc::SIGCONT);
            signal(c.id() as i32, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// If it exited by itself: how.
    fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => {
                self.child = None;
                Some(st.to_string())
            }
            _ => None,
        }
    }

    fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| format!("    {}", strip_ansi(l)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

// ---------------------------------------------------------------------------------------
// The /proc sampler
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Tracked {
    pid: u32,
    start: u64,
    role: String,
    epoch: u64,
    server: String,
    first_seen_ns: u64,
    frozen_since_ns: Option<u64>,
    /// Longest single frozen stretch seen.
    frozen_max_ns: u64,
    thawed_ns: Option<u64>,
    /// A stubborn role's writer (ignores SIGTERM).
    stubborn: bool,
    /// Its parent when first seen, and when it was first seen with another one (its
    /// shell died: SIGTERM reached the role and the writer ignored it).
    ppid: u32,
    orphaned_ns: Option<u64>,
}

#[derive(Default)]
struct SamplerOut {
    samples: u64,
    /// Confirmed instants with two running (not frozen) processes of one role, outside
    /// the post-thaw allowance.
    overlap_samples: u64,
    overlaps: Vec<String>,
    /// Instants where an old-epoch process ran next to a newer one within its first
    /// second after a thaw.
    post_thaw_samples: u64,
    /// Processes frozen longer than the lease: time from thaw until they were gone (ms).
    stop_after_thaw_ms: Vec<f64>,
    /// Processes frozen longer than the lease that ran on past STALE_BOUND after thaw.
    lingering: Vec<String>,
    /// Live role processes per role at the latest sample: (pid, epoch, server, frozen).
    current: BTreeMap<String, Vec<(u32, u64, String, bool)>>,
    /// Every role process seen: pid -> (role, epoch, server, frozen_max_ns).
    seen: BTreeMap<u32, (String, u64, String, u64)>,
    stubborn: StubbornStats,
    /// Role processes of duplicate agents, described.
    dup_procs: Vec<String>,
}

struct Sampler {
    /// When the runner last thawed each server (ns), so that a process that dies between
    /// two samples right after a thaw is still timed.
    thawed: Arc<Mutex<HashMap<String, u64>>>,
    out: Arc<Mutex<SamplerOut>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    fn start(marker: String, freezer: Freezer, prefix: String, lease_ns: u64) -> Sampler {
        let out = Arc::new(Mutex::new(SamplerOut::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thawed: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::new()));
        let (o, s, th) = (out.clone(), stop.clone(), thawed.clone());
        let thread = std::thread::spawn(move || {
            let mut tracked: HashMap<u32, Tracked> = HashMap::new();
            // Pids known not to be role writers, with their start time.
            // (start time, command name): a process caught between fork and exec is
            // looked at again once it has exec'd.
            let mut others: HashMap<u32, (u64, String)> = HashMap::new();
            let mut reported: BTreeSet<(u32, u32)> = BTreeSet::new();
            let mut lingered: BTreeSet<u32> = BTreeSet::new();
            while !s.load(Ordering::SeqCst) {
                let t_sample = Instant::now();
                let now = now_ns();
                let frozen_host: HashMap<&str, bool> = SERVERS
                    .iter()
                    .map(|(srv, h)| (*srv, freezer.is_frozen(&prefix, h)))
                    .collect();
                let pids = all_pids();
                let listed: BTreeSet<u32> = pids.iter().copied().collect();
                others.retain(|p, _| listed.contains(p));
                let mut gone = Vec::new();
                let mut states: HashMap<u32, char> = HashMap::new();
                let mut ppids: HashMap<u32, u32> = HashMap::new();
                let mut new_stubborn = 0;
                let mut new_dups = Vec::new();
                for pid in pids {
                    let Some((state, start, comm, ppid)) = proc_stat_comm(pid) else {
                        continue;
                    };
                    if others
                        .get(&pid)
                        .is_some_and(|(st, c)| *st == start && *c == comm)
                    {
                        continue;
                    }
                    if let Some(t) = tracked.get(&pid)
                        && t.start == start
                    {
                        states.insert(pid, state);
                        ppids.insert(pid, ppid);
                        continue;
                    }
                    // A new process: is it a role writer of this run?
                    // argv = [chaos, role-writer, --socket, PATH] exactly (the wrapper
                    // `baton role-exec` also names the command, as one argument).
                    let argv: Vec<String> = fs::read(format!("/proc/{pid}/cmdline"))
                        .unwrap_or_default()
                        .split(|b| *b == 0)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect();
                    let is_writer = argv.get(1).is_some_and(|a| a == "role-writer")
                        && argv.get(3).is_some_and(|a| *a == marker);
                    // An empty command line is a process in the middle of exec (the
                    // kernel names it before it sets up its arguments): look again next
                    // time rather than remember it as not a writer.
                    if !is_writer {
                        let kernel_thread = pid == 2 || ppid == 2;
                        if kernel_thread || argv.iter().any(|a| !a.is_empty()) {
                            others.insert(pid, (start, comm));
                        }
                        continue;
                    }
                    let stubborn = argv.get(4).is_some_and(|a| a == stubborn::IGNORE_TERM_FLAG);
                    let env = proc_env(pid);
                    let (Some(role), Some(epoch), Some(server)) = (
                        env.get("BATON_ROLE"),
                        env.get("BATON_EPOCH").and_then(|e| e.parse().ok()),
                        env.get("BATON_SERVER"),
                    ) else {
                        continue;
                    };
                    if let Some(n) = env.get(DUP_ENV) {
                        new_dups.push(format!(
                            "role {role} epoch {epoch} on {server} pid {pid} (duplicate agent of \
                             fault {n}) seen in /proc"
                        ));
                    }
                    tracked.insert(
                        pid,
                        Tracked {
                            pid,
                            start,
                            role: role.clone(),
                            epoch,
                            server: server.clone(),
                            first_seen_ns: now,
                            frozen_since_ns: None,
                            frozen_max_ns: 0,
                            thawed_ns: None,
                            stubborn,
                            ppid,
                            orphaned_ns: None,
                        },
                    );
                    new_stubborn += usize::from(stubborn);
                    states.insert(pid, state);
                    ppids.insert(pid, ppid);
                }
                let thaws = th.lock().unwrap().clone();
                let mut o = o.lock().unwrap();
                o.stubborn.seen += new_stubborn;
                o.dup_procs.extend(new_dups);
                // Processes that ended (or turned zombie).
                for (pid, t) in &tracked {
                    let alive = states.get(pid).is_some_and(|st| *st != 'Z' && *st != 'X');
                    if !alive {
                        gone.push(*pid);
                        if let Some(orphaned) = t.orphaned_ns {
                            o.stubborn.outlived_shell_ms.push(ms(now - orphaned));
                        }
                        // Frozen when last seen, or thawed since: time its stop from the
                        // thaw (to within a sample period).
                        let thaw = thaws.get(&t.server).copied();
                        let frozen = match (t.frozen_since_ns, thaw) {
                            (Some(since), Some(th)) if th > since => th - since,
                            _ => t.frozen_max_ns,
                        };
                        if frozen > lease_ns
                            && let Some(th) = thaw.or(t.thawed_ns)
                        {
                            o.stop_after_thaw_ms.push(ms(now.saturating_sub(th)));
                        }
                    }
                }
                for pid in gone {
                    tracked.remove(&pid);
                }
                // Frozen or running, now.
                let mut by_role: BTreeMap<String, Vec<(u32, bool)>> = BTreeMap::new();
                for t in tracked.values_mut() {
                    if t.stubborn
                        && t.orphaned_ns.is_none()
                        && ppids.get(&t.pid).is_some_and(|p| *p != t.ppid)
                    {
                        t.orphaned_ns = Some(now);
                    }
                    let st = states.get(&t.pid).copied().unwrap_or('?');
                    let frozen = st == 'T'
                        || st == 't'
                        || frozen_host.get(t.server.as_str()).copied().unwrap_or(false);
                    if frozen {
                        t.frozen_since_ns.get_or_insert(now);
                        t.thawed_ns = None;
                    } else if let Some(since) = t.frozen_since_ns.take() {
                        t.frozen_max_ns = t.frozen_max_ns.max(now - since);
                        t.thawed_ns = Some(now);
                    }
                    let frozen_for = t
                        .frozen_since_ns
                        .map(|s| now - s)
                        .unwrap_or(0)
                        .max(t.frozen_max_ns);
                    o.seen.insert(
                        t.pid,
                        (t.role.clone(), t.epoch, t.server.clone(), frozen_for),
                    );
                    by_role
                        .entry(t.role.clone())
                        .or_default()
                        .push((t.pid, frozen));
                    // Frozen past its lease, thawed, and still running a second later.
                    if let Some(thaw) = t.thawed_ns
                        && t.frozen_max_ns > lease_ns
                        && now - thaw > STALE_BOUND_NS
                        && lingered.insert(t.pid)
                    {
                        o.lingering.push(format!(
                            "role {} epoch {} on {} pid {}: frozen {:.0} ms (lease {:.0} ms), \
                             still running {:.0} ms after the thaw",
                            t.role,
                            t.epoch,
                            t.server,
                            t.pid,
                            ms(t.frozen_max_ns),
                            ms(lease_ns),
                            ms(now - thaw)
                        ));
                    }
                }
                o.current = by_role
                    .iter()
                    .map(|(r, ps)| {
                        (
                            r.clone(),
                            ps.iter()
                                .map(|(p, f)| {
                                    let t = &tracked[p];
                                    (*p, t.epoch, t.server.clone(), *f)
                                })
                                .collect(),
                        )
                    })
                    .collect();
                // Two running at once?
                for (role, ps) in &by_role {
                    let running: Vec<&Tracked> = ps
                        .iter()
                        .filter(|(_, f)| !f)
                        .map(|(p, _)| &tracked[p])
                        .collect();
                    if running.len() < 2 {
                        continue;
                    }
                    // Confirm: each is still the same live process after the scan. A pid
                    // read alive before and after another one was read alive was alive
                    // when that one was.
                    let confirmed: Vec<&&Tracked> = running
                        .iter()
                        .filter(|t| {
                            proc_stat(t.pid).is_some_and(|(st, _, start)| {
                                start == t.start && st != 'Z' && st != 'X'
                            })
                        })
                        .collect();
                    if confirmed.len() < 2 {
                        continue;
                    }
                    let newest = confirmed.iter().map(|t| t.epoch).max().unwrap();
                    let mut violation = false;
                    let mut post_thaw = false;
                    for a in &confirmed {
                        for b in &confirmed {
                            if a.pid >= b.pid {
                                continue;
                            }
                            // The older one of the pair, when their epochs differ.
                            let old = if a.epoch < b.epoch {
                                Some(a)
                            } else if b.epoch < a.epoch {
                                Some(b)
                            } else {
                                None
                            };
                            let allowed = old.is_some_and(|t| {
                                t.epoch < newest
                                    && t.thawed_ns.is_some_and(|th| now - th <= STALE_BOUND_NS)
                            });
                            if allowed {
                                post_thaw = true;
                                continue;
                            }
                            violation = true;
                            if reported.insert((a.pid, b.pid)) && o.overlaps.len() < 100 {
                                o.overlaps.push(format!(
                                    "role {role}: pid {} (epoch {} on {}, up since {}) and pid {} \
                                     (epoch {} on {}, up since {}) both running at {now}",
                                    a.pid,
                                    a.epoch,
                                    a.server,
                                    a.first_seen_ns,
                                    b.pid,
                                    b.epoch,
                                    b.server,
                                    b.first_seen_ns
                                ));
                            }
                        }
                    }
                    if violation {
                        o.overlap_samples += 1;
                    } else if post_thaw {
                        o.post_thaw_samples += 1;
                    }
                }
                o.samples += 1;
                drop(o);
                if let Some(rest) = SAMPLE_PERIOD.checked_sub(t_sample.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        });
        Sampler {
            thawed,
            out,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Host stalls
// ---------------------------------------------------------------------------------------

/// A thread that sleeps 10 ms at a time and records every oversleep beyond 100 ms: the
/// host (two cores, debug binaries) not scheduling a runnable thread of the observer.
/// Context for gaps in the journal that no fault explains.
struct StallMeter {
    stalls: Arc<Mutex<Vec<(u64, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StallMeter {
    fn start() -> StallMeter {
        let stalls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (stalls.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                let before = Instant::now();
                let t = now_ns();
                std::thread::sleep(Duration::from_millis(10));
                let over = before.elapsed().saturating_sub(Duration::from_millis(10));
                if over > Duration::from_millis(100) {
                    st.lock().unwrap().push((t, over.as_nanos() as u64));
                }
            }
        });
        StallMeter {
            stalls,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.stalls.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------
// The admin writer
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct AdminWrite {
    name: String,
    acked: bool,
    start_ns: u64,
    end_ns: u64,
    error: String,
}

struct AdminWriter {
    writes: Arc<Mutex<Vec<AdminWrite>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn cli(directory: &str, args: &[&str], timeout: Duration) -> CliOutput {
    let mut full = vec!["--directory".to_string(), directory.to_string()];
    full.extend(args.iter().map(|s| s.to_string()));
    full.extend(["-o".to_string(), "json".to_string()]);
    run_baton(&full, timeout)
}

impl AdminWriter {
    fn start(directory: String) -> AdminWriter {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (w, s) = (writes.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) && !stopping() {
                n += 1;
                let name = format!("w-{n}");
                let start_ns = now_ns();
                let out = cli(
                    &directory,
                    &["server", "add", &name],
                    baton_tests::CLI_TIMEOUT,
                );
                let end_ns = now_ns();
                w.lock().unwrap().push(AdminWrite {
                    name,
                    acked: out.ok(),
                    start_ns,
                    end_ns,
                    error: if out.ok() {
                        String::new()
                    } else {
                        out.stderr.trim().to_string()
                    },
                });
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        AdminWriter {
            writes,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    KillNode,
    KillAgent,
    FreezeServer,
    FreezeAgent,
    PartitionNode,
    PartitionLeader,
    PartitionAgent,
    /// A second agent under a live server's name (on host `d`): it must be refused.
    DupAgent,
    /// Not a fault but a planted bug, to show the observer sees one (`--plant rogue`): a
    /// second process of a role, started outside baton on a server that does not hold
    /// it, with the holder's epoch.
    PlantedRogue,
}

impl Kind {
    const ALL: [(Kind, u32); 8] = [
        (Kind::KillNode, 2),
        (Kind::KillAgent, 2),
        (Kind::FreezeServer, 3),
        (Kind::FreezeAgent, 1),
        (Kind::PartitionNode, 1),
        (Kind::PartitionLeader, 2),
        (Kind::PartitionAgent, 2),
        (Kind::DupAgent, 2),
    ];

    fn name(&self) -> &'static str {
        match self {
            Kind::KillNode => "kill9-node",
            Kind::KillAgent => "kill9-agent",
            Kind::FreezeServer => "freeze-server",
            Kind::FreezeAgent => "freeze-agent",
            Kind::PartitionNode => "partition-node",
            Kind::PartitionLeader => "partition-leader",
            Kind::PartitionAgent => "partition-agent",
            Kind::DupAgent => "dup-agent",
            Kind::PlantedRogue => "planted-rogue",
        }
    }

    /// Whether it touches a server (agent or roles), so that roles may legitimately move.
    /// A dup-agent fault does not: a duplicate must neither move nor stop anything.
    fn touches_server(&self) -> bool {
        matches!(
            self,
            Kind::KillAgent
                | Kind::FreezeServer
                | Kind::FreezeAgent
                | Kind::PartitionAgent
                | Kind::PlantedRogue
        )
    }

    fn pick(rng: &mut Rng, only: &[Kind]) -> Kind {
        let pool: Vec<(Kind, u32)> = Kind::ALL
            .iter()
            .copied()
            .filter(|(k, _)| only.is_empty() || only.contains(k))
            .collect();
        let total: u32 = pool.iter().map(|(_, w)| w).sum();
        let mut x = (rng.next_u64() % total as u64) as u32;
        for (k, w) in pool {
            if x < w {
                return k;
            }
            x -= w;
        }
        unreachable!()
    }
}

#[derive(Clone, Debug)]
struct Fault {
    n: usize,
    kind: Kind,
    target: String,
    /// The server concerned, for server faults.
    server: Option<String>,
    detail: String,
    start_ns: u64,
    heal_ns: u64,
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

struct RunArgs {
    duration: Duration,
    seed: u64,
    lease: Duration,
    report: Option<PathBuf>,
    prefix: String,
    workdir: PathBuf,
    baton: PathBuf,
    roles: usize,
    keep: bool,
    /// Fault kinds to draw from (all when empty).
    kinds: Vec<Kind>,
    /// Force SIGSTOP freezing even where a cgroup freezer exists.
    sigstop: bool,
    /// Plant a rogue role process as the second fault (the run must then fail).
    plant_rogue: bool,
    /// Make the second fault a dup-agent fault whose holder is frozen first, so the
    /// directory rightly hands the name to the duplicate, which runs the roles (the run
    /// must then fail: the observer sees a duplicate that ran).
    plant_dup: bool,
}

fn run_args(args: &[String]) -> Result<RunArgs> {
    let mut a = RunArgs {
        duration: Duration::from_secs(300),
        seed: now_ns() % 1_000_000,
        lease: Duration::from_secs(2),
        report: None,
        prefix: String::new(),
        workdir: PathBuf::new(),
        baton: PathBuf::new(),
        roles: 6,
        keep: false,
        kinds: Vec::new(),
        sigstop: false,
        plant_rogue: false,
        plant_dup: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (flag.clone(), None),
        };
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--duration" => a.duration = parse_duration(&value()?).map_err(anyhow::Error::msg)?,
            "--seed" => a.seed = value()?.parse().context("--seed")?,
            "--lease" => a.lease = parse_duration(&value()?).map_err(anyhow::Error::msg)?,
            "--report" => a.report = Some(PathBuf::from(value()?)),
            "--prefix" => a.prefix = value()?,
            "--workdir" => a.workdir = PathBuf::from(value()?),
            "--baton" => a.baton = PathBuf::from(value()?),
            "--roles" => a.roles = value()?.parse().context("--roles")?,
            "--keep" => a.keep = true,
            "--plant" => match value()?.as_str() {
                "rogue" => a.plant_rogue = true,
                "dup" => a.plant_dup = true,
                other => bail!("--plant takes rogue or dup, not {other:?}"),
            },
            "--freezer" => match value()?.as_str() {
                "sigstop" => a.sigstop = true,
                "auto" => a.sigstop = false,
                other => bail!("--freezer is auto or sigstop, not {other:?}"),
            },
            "--faults" => {
                for name in value()?.split(',').filter(|n| !n.is_empty()) {
                    let k = Kind::ALL
                        .iter()
                        .map(|(k, _)| *k)
                        .find(|k| k.name() == name)
                        .ok_or_else(|| {
                            anyhow!(
                                "unknown fault {name:?}; the kinds are {}",
                                Kind::ALL
                                    .iter()
                                    .map(|(k, _)| k.name())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })?;
                    a.kinds.push(k);
                }
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if !valid_prefix(&a.prefix) {
        bail!("--prefix must be bt followed by 2-6 lowercase letters or digits");
    }
    if a.workdir.as_os_str().is_empty() || a.baton.as_os_str().is_empty() {
        bail!("--workdir and --baton are required");
    }
    if !(3..=6).contains(&a.roles) {
        bail!("--roles must be 3 to 6");
    }
    if a.lease < Duration::from_millis(500) {
        bail!("--lease must be at least 500ms");
    }
    a.baton = fs::canonicalize(&a.baton)
        .with_context(|| format!("no baton binary at {}", a.baton.display()))?;
    Ok(a)
}

/// Everything the run owns. Dropping it tears everything down.
struct World {
    a: RunArgs,
    net: Net,
    freezer: Freezer,
    iptables: bool,
    nodes: Vec<Managed>,
    agents: Vec<Managed>,
    rng: Rng,
    t0: Instant,
    log: File,
    unexpected: Vec<String>,
    torn_down: bool,
    /// The sampler's record of thaws.
    thawed: Arc<Mutex<HashMap<String, u64>>>,
    /// This binary and the journal socket (for a planted rogue writer).
    exe: PathBuf,
    socket: PathBuf,
    /// What became of each dup-agent fault's duplicate.
    dups: DupTally,
}

impl World {
    fn say(&mut self, msg: &str) {
        let now = now_ns();
        let day_ms = (now / 1_000_000) % 86_400_000;
        let line = format!(
            "[{:>8.3}s {:02}:{:02}:{:02}.{:03}Z] {msg}",
            self.t0.elapsed().as_secs_f64(),
            day_ms / 3_600_000,
            day_ms / 60_000 % 60,
            day_ms / 1000 % 60,
            day_ms % 1000
        );
        println!("{line}");
        let _ = writeln!(self.log, "{line}");
    }

    fn directory(&self) -> String {
        self.net.directory()
    }

    fn cli(&self, args: &[&str], timeout: Duration) -> CliOutput {
        cli(&self.directory(), args, timeout)
    }

    /// Restarts whatever exited without being told to, and records it.
    fn reap_unexpected(&mut self) {
        let mut found = Vec::new();
        for p in self.nodes.iter_mut().chain(self.agents.iter_mut()) {
            if let Some(status) = p.exited() {
                found.push((p.name.clone(), status, p.log_tail(30)));
            }
        }
        for (name, status, tail) in found {
            let msg = format!("{name} exited by itself ({status}); last lines of its log:\n{tail}");
            self.say(&format!("UNEXPECTED: {msg}"));
            self.unexpected.push(msg);
            let bin = self.a.baton.clone();
            if let Some(p) = self
                .nodes
                .iter_mut()
                .chain(self.agents.iter_mut())
                .find(|p| p.name == name)
                && let Err(e) = p.start(&bin)
            {
                eprintln!("cannot restart {name}: {e:#}");
            }
        }
    }

    /// Sleeps for `d`, watching for processes that exit and for Ctrl-C. False if the run
    /// is being interrupted.
    fn hold(&mut self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if stopping() {
                return false;
            }
            self.reap_unexpected();
            std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
        }
        !stopping()
    }

    fn leader(&self) -> Option<usize> {
        self.cli(&["cluster", "status"], Duration::from_secs(8))
            .try_json()
            .ok()?
            .get("leader")?
            .as_u64()
            .map(|l| l as usize)
    }

    fn pick_cut(&mut self) -> Cut {
        if self.iptables && self.rng.chance(0.6) {
            Cut::Drop
        } else {
            Cut::LinkDown
        }
    }

    /// A server to fault: most of the time one that is the active server of some role
    /// (so the fault moves something), else any.
    fn pick_server(&mut self) -> usize {
        if self.rng.chance(0.8)
            && let Some(list) = self
                .cli(&["server", "list"], Duration::from_secs(8))
                .try_json()
                .ok()
                .and_then(|v| v.as_array().cloned())
        {
            let busy: Vec<usize> = SERVERS
                .iter()
                .enumerate()
                .filter(|(_, (s, _))| {
                    list.iter().any(|x| {
                        x["name"] == *s && x["roles"].as_array().is_some_and(|r| !r.is_empty())
                    })
                })
                .map(|(i, _)| i)
                .collect();
            if !busy.is_empty() {
                return busy[self.rng.index(busy.len())];
            }
        }
        self.rng.index(3)
    }

    fn hold_time(&mut self) -> Duration {
        self.a.lease.mul_f64(self.rng.between(1.5, 3.0))
    }

    /// Injects one fault, holds it, heals it. Returns None if interrupted midway (the
    /// caller heals everything anyway).
    fn inject(&mut self, n: usize, kind: Kind) -> Result<Option<Fault>> {
        let bin = self.a.baton.clone();
        let lease = self.a.lease;
        let mut f = Fault {
            n,
            kind,
            target: String::new(),
            server: None,
            detail: String::new(),
            start_ns: 0,
            heal_ns: 0,
        };
        let ok = match kind {
            Kind::DupAgent => self.dup_agent(&mut f)?,
            Kind::KillNode => {
                // Half of the time the leader.
                let leader = self.leader();
                let id = match leader {
                    Some(l) if self.rng.chance(0.5) => l,
                    _ => self.rng.index(3) + 1,
                };
                let down = Duration::from_secs_f64(self.rng.between(0.3, 3.0));
                f.target = format!("node {id}");
                f.detail = format!(
                    "{}down {:.1}s",
                    if leader == Some(id) { "leader, " } else { "" },
                    down.as_secs_f64()
                );
                self.say(&format!(
                    "fault {n}: {} {} ({})",
                    kind.name(),
                    f.target,
                    f.detail
                ));
                f.start_ns = now_ns();
                self.nodes[id - 1].kill9();
                let ok = self.hold(down);
                self.nodes[id - 1].start(&bin)?;
                ok
            }
            Kind::KillAgent => {
                let i = self.pick_server();
                let down = lease.mul_f64(self.rng.between(0.1, 2.0));
                f.target = SERVERS[i].0.to_string();
                f.server = Some(f.target.clone());
                f.detail = format!("agent down {:.1}s", down.as_secs_f64());
                self.say(&format!(
                    "fault {n}: {} {} ({})",
                    kind.name(),
                    f.target,
                    f.detail
                ));
                f.start_ns = now_ns();
                self.agents[i].kill9();
                let ok = self.hold(down);
                self.agents[i].start(&bin)?;
                ok
            }
            Kind::FreezeServer | Kind::FreezeAgent => {
                let i = self.pick_server();
                let d = self.hold_time();
                let (srv, host) = SERVERS[i];
                f.target = srv.to_string();
                f.server = Some(srv.to_string());
                let pid = self.agents[i].pid();
                f.detail = if kind == Kind::FreezeServer {
                    format!(
                        "agent and roles, {}, {:.1}s",
                        self.freezer.name(),
                        d.as_secs_f64()
                    )
                } else {
                    format!(
                        "agent only (SIGSTOP), roles keep running, {:.1}s",
                        d.as_secs_f64()
                    )
                };
                self.say(&format!(
                    "fault {n}: {} {} ({})",
                    kind.name(),
                    f.target,
                    f.detail
                ));
                f.start_ns = now_ns();
                if kind == Kind::FreezeServer {
                    self.freezer.freeze(&self.a.prefix, host, pid)?;
                } else if let Some(p) = pid {
                    signal(p as i32, libc::SIGSTOP);
                }
                let ok = self.hold(d);
                if kind == Kind::FreezeServer {
                    self.freezer.thaw(&self.a.prefix, host, pid)?;
                    self.thawed
                        .lock()
                        .unwrap()
                        .insert(srv.to_string(), now_ns());
                } else if let Some(p) = pid {
                    signal(p as i32, libc::SIGCONT);
                }
                ok
            }
            Kind::PlantedRogue => {
                let role = "r1";
                let show = self
                    .cli(&["role", "show", role], baton_tests::CLI_TIMEOUT)
                    .try_json()?;
                let holder = show["active_server"].as_str().unwrap_or("").to_string();
                let epoch = show["epoch"].as_u64().unwrap_or(0);
                let (other, host) = *SERVERS.iter().find(|(s, _)| *s != holder).unwrap();
                f.target = role.to_string();
                f.server = Some(other.to_string());
                f.detail = format!(
                    "a second {role} process with epoch {epoch} (held by {holder}) on {other}, \
                     outside baton, for 1.5s"
                );
                self.say(&format!(
                    "fault {n}: {} {} ({})",
                    kind.name(),
                    f.target,
                    f.detail
                ));
                f.start_ns = now_ns();
                let mut rogue = Managed {
                    name: "rogue".into(),
                    ns: self.net.ns(host),
                    args: vec![
                        "role-writer".into(),
                        "--socket".into(),
                        self.socket.display().to_string(),
                    ],
                    log: self.a.workdir.join("rogue.log"),
                    cgroup_procs: None,
                    child: None,
                    starts: 0,
                    env: vec![
                        ("BATON_ROLE".into(), role.into()),
                        ("BATON_EPOCH".into(), epoch.to_string()),
                        ("BATON_SERVER".into(), other.into()),
                    ],
                };
                let exe = self.exe.clone();
                rogue.start(&exe)?;
                let ok = self.hold(Duration::from_millis(1500));
                rogue.kill9();
                ok
            }
            Kind::PartitionNode | Kind::PartitionLeader | Kind::PartitionAgent => {
                let leader = self.leader();
                let host = match kind {
                    Kind::PartitionLeader => match leader {
                        Some(l) => format!("n{l}"),
                        None => format!("n{}", self.rng.index(3) + 1),
                    },
                    Kind::PartitionNode => {
                        let others: Vec<usize> = (1..=3).filter(|i| Some(*i) != leader).collect();
                        format!("n{}", others[self.rng.index(others.len())])
                    }
                    _ => SERVERS[self.pick_server()].1.to_string(),
                };
                let how = self.pick_cut();
                let d = self.hold_time();
                f.target = match host.strip_prefix('n') {
                    Some(id) => format!("node {id}"),
                    None => {
                        let s = SERVERS.iter().find(|(_, h)| *h == host).unwrap().0;
                        f.server = Some(s.to_string());
                        s.to_string()
                    }
                };
                f.detail = format!(
                    "{}{}, {:.1}s",
                    if kind == Kind::PartitionLeader && leader.is_none() {
                        "no leader known, "
                    } else {
                        ""
                    },
                    how.name(),
                    d.as_secs_f64()
                );
                self.say(&format!(
                    "fault {n}: {} {} ({})",
                    kind.name(),
                    f.target,
                    f.detail
                ));
                f.start_ns = now_ns();
                cut(&self.net, &host, how)?;
                let ok = self.hold(d);
                heal(&self.net, &host, self.iptables)?;
                ok
            }
        };
        f.heal_ns = now_ns();
        self.say(&format!(
            "fault {n}: healed after {:.1}s",
            ms(f.heal_ns - f.start_ns) / 1e3
        ));
        Ok(ok.then_some(f))
    }

    /// Undoes every fault: links up, rules flushed, servers thawed, agents continued,
    /// every process running.
    fn heal_all(&mut self) -> Result<()> {
        for h in Net::hosts() {
            heal(&self.net, h, self.iptables)?;
        }
        for (i, (_, host)) in SERVERS.iter().enumerate() {
            let pid = self.agents[i].pid();
            self.freezer.thaw(&self.a.prefix, host, pid)?;
            if let Some(p) = pid {
                signal(p as i32, libc::SIGCONT);
            }
        }
        let bin = self.a.baton.clone();
        for p in self.nodes.iter_mut().chain(self.agents.iter_mut()) {
            if p.child.is_none() {
                p.start(&bin)?;
            }
        }
        Ok(())
    }

    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for (i, (_, host)) in SERVERS.iter().enumerate() {
            let pid = self.agents.get(i).and_then(|a| a.pid());
            let _ = self.freezer.thaw(&self.a.prefix, host, pid);
        }
        for a in &mut self.agents {
            a.kill9();
        }
        for n in &mut self.nodes {
            n.kill9();
        }
        cleanup(&self.a.prefix, Some(&self.a.workdir));
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.teardown();
    }
}

// The dup-agent fault (checks and report in `baton_tests::dup_agent`).
impl World {
    /// The live agent of server `i`'s instance id, once the directory says that instance
    /// holds the name: its latest start opened a session, and `server list` shows the
    /// server up with that instance.
    fn settled_holder(&self, i: usize) -> Option<String> {
        self.agents[i].child.as_ref()?;
        let log = fs::read_to_string(&self.agents[i].log).ok()?;
        let (id, open) = dup_agent::latest_start(&log)?;
        let list = self
            .cli(&["server", "list"], Duration::from_secs(8))
            .try_json()
            .ok()?;
        let holds = list.as_array()?.iter().any(|s| {
            s["name"] == SERVERS[i].0 && s["status"] == "up" && s["instance"] == id.as_str()
        });
        (open && holds).then_some(id)
    }

    /// Starts a second agent under the name of a server whose agent is alive, with the
    /// same arguments (so the same role commands), on host `d`, and waits until it exits
    /// or the bound passes (then kills it). False if the run is being interrupted.
    fn dup_agent(&mut self, f: &mut Fault) -> Result<bool> {
        let i = self.pick_server();
        let srv = SERVERS[i].0;
        f.target = srv.to_string();
        f.server = Some(srv.to_string());
        let settle = self.a.lease * 4 + Duration::from_secs(5);
        let Some(holder) = wait_for(settle, || self.settled_holder(i)) else {
            f.detail = "not started: the agent's instance never showed as the holder".into();
            self.say(&format!("fault {}: dup-agent {srv} ({})", f.n, f.detail));
            f.start_ns = now_ns();
            self.dups.outcomes.push(DupOutcome {
                fault: f.n,
                server: srv.into(),
                holder: String::new(),
                skipped: Some(f.detail.clone()),
                code: None,
                exited_after_ms: None,
                names_holder: false,
                log_tail: String::new(),
            });
            return Ok(!stopping());
        };
        f.detail = format!("a second agent named {srv} on host d; holder instance {holder}");
        // Planted: the holder frozen (SIGSTOP, roles self-fence) for the whole fault.
        let frozen = (self.a.plant_dup && f.n == 2)
            .then(|| self.agents[i].pid())
            .flatten();
        if frozen.is_some() {
            f.detail += "; PLANTED: the holder agent is frozen, so the duplicate takes over";
        }
        self.say(&format!("fault {}: dup-agent {srv} ({})", f.n, f.detail));
        if let Some(p) = frozen {
            signal(p as i32, libc::SIGSTOP);
        }
        let mut dup = Managed {
            name: format!("dup-agent {}", f.n),
            ns: self.net.ns("d"),
            args: self.agents[i].args.clone(),
            log: self.a.workdir.join(format!("dup-agent-{}.log", f.n)),
            cgroup_procs: None,
            child: None,
            starts: 0,
            env: vec![(DUP_ENV.into(), f.n.to_string())],
        };
        f.start_ns = now_ns();
        dup.start(&self.a.baton.clone())?;
        let status = self.await_exit(&mut dup, dup_agent::exit_bound(self.a.lease));
        let after_ms = ms(now_ns() - f.start_ns);
        if status.is_none() {
            dup.kill9();
        }
        if let Some(p) = frozen {
            signal(p as i32, libc::SIGCONT);
        }
        let log = fs::read_to_string(&dup.log).unwrap_or_default();
        let outcome = DupOutcome {
            fault: f.n,
            server: srv.into(),
            names_holder: dup_agent::names_holder(&log, &holder),
            holder,
            skipped: None,
            code: status.and_then(|s| s.code()),
            exited_after_ms: status.map(|_| after_ms),
            log_tail: dup.log_tail(15),
        };
        self.say(&format!(
            "fault {}: the duplicate {} after {:.1}s; its log {} the holder",
            f.n,
            match status {
                Some(s) => format!("exited ({s})"),
                None => "was still running (killed)".into(),
            },
            after_ms / 1e3,
            if outcome.names_holder {
                "names"
            } else {
                "does NOT name"
            }
        ));
        self.dups.outcomes.push(outcome);
        Ok(!stopping())
    }

    /// Waits until `p` exits, at most `bound`, watching the cluster's own processes
    /// meanwhile. None if it did not exit (or the run is being interrupted).
    fn await_exit(&mut self, p: &mut Managed, bound: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + bound;
        while Instant::now() < end && !stopping() {
            if let Some(Ok(Some(st))) = p.child.as_mut().map(|c| c.try_wait()) {
                p.child = None;
                return Some(st);
            }
            self.reap_unexpected();
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn install_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Role names and server lists: every order of the three servers, so each server is
/// first for some role; every third role has failback on (delay 3 s).
fn roles(n: usize) -> Vec<(String, Vec<&'static str>, bool)> {
    let orders: [[usize; 3]; 6] = [
        [0, 1, 2],
        [1, 2, 0],
        [2, 0, 1],
        [0, 2, 1],
        [1, 0, 2],
        [2, 1, 0],
    ];
    (0..n)
        .map(|i| {
            (
                format!("r{}", i + 1),
                orders[i].iter().map(|j| SERVERS[*j].0).collect(),
                i % 3 == 2,
            )
        })
        .collect()
}

fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end || stopping() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_cmd(args: &[String]) -> Result<i32> {
    let a = run_args(args)?;
    install_signals();
    // The harness's CLI runner takes the binary from BATON_BIN.
    // SAFETY: no other thread exists yet.
    unsafe {
        std::env::set_var("BATON_BIN", &a.baton);
    }
    fs::create_dir_all(&a.workdir)?;
    let workdir = fs::canonicalize(&a.workdir)?;
    let exe = std::env::current_exe()?;
    let log = File::create(workdir.join("chaos.log"))?;
    let subnet = Net::pick_subnet(&a.prefix)?;
    let net = Net {
        prefix: a.prefix.clone(),
        subnet,
    };
    let iptables = have("iptables");
    let mut w = World {
        net: net.clone(),
        freezer: if a.sigstop {
            Freezer::Sigstop
        } else {
            Freezer::detect()
        },
        iptables,
        nodes: Vec::new(),
        agents: Vec::new(),
        rng: Rng::new(a.seed),
        t0: Instant::now(),
        log,
        unexpected: Vec::new(),
        torn_down: false,
        thawed: Arc::new(Mutex::new(HashMap::new())),
        exe: exe.clone(),
        socket: workdir.join("journal.sock"),
        dups: DupTally::default(),
        a,
    };
    w.a.workdir = workdir.clone();
    let t0_ns = now_ns();
    w.say(&format!(
        "chaos: seed {} duration {:.0}s lease {}ms, prefix {}, subnet 10.77.{subnet}.0/24, \
         freezing with {}, partitions with {}, workdir {}",
        w.a.seed,
        w.a.duration.as_secs_f64(),
        w.a.lease.as_millis(),
        w.a.prefix,
        w.freezer.name(),
        if iptables {
            "iptables DROP and link down"
        } else {
            "link down"
        },
        workdir.display()
    ));

    net.setup().context("network setup")?;
    // iptables may be installed and still not work inside a namespace (no nf_tables in
    // the kernel): then partitions use link down only.
    if w.iptables {
        let ns = net.ns("n1");
        let probe = sh(
            "ip",
            &[
                "netns", "exec", &ns, "iptables", "-w", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT",
            ],
        )
        .and_then(|_| {
            sh(
                "ip",
                &["netns", "exec", &ns, "iptables", "-w", "-F", "INPUT"],
            )
        });
        if let Err(e) = probe {
            w.iptables = false;
            w.say(&format!(
                "iptables does not work in a namespace ({e:#}); partitions use link down only"
            ));
        }
    }
    // A cgroup per server; where none can be made (read-only cgroupfs in a container),
    // freeze with SIGSTOP instead.
    for (_, host) in SERVERS {
        if let Err(e) = w.freezer.create(&w.a.prefix, host) {
            w.say(&format!(
                "cannot make a cgroup ({e:#}); freezing with SIGSTOP of process groups instead"
            ));
            w.freezer = Freezer::Sigstop;
            break;
        }
    }
    let socket = workdir.join("journal.sock");
    let mut journal = JournalServer::start(&socket, &workdir.join("journal"))?;
    let mut stall_meter = StallMeter::start();
    let mut sampler = Sampler::start(
        socket.display().to_string(),
        w.freezer.clone(),
        w.a.prefix.clone(),
        w.a.lease.as_nanos() as u64,
    );
    w.thawed = sampler.thawed.clone();

    // Directory nodes.
    let peers = (1..=3)
        .map(|i| format!("{i}={}", net.peer_addr(i)))
        .collect::<Vec<_>>()
        .join(",");
    for id in 1..=3usize {
        let addr = net.node_addr(id);
        let host = format!("n{id}");
        let mut m = Managed {
            name: format!("node {id}"),
            ns: net.ns(&host),
            args: vec![
                "directory".into(),
                "--id".into(),
                id.to_string(),
                "--listen".into(),
                addr.clone(),
                "--advertise".into(),
                addr,
                "--peer-listen".into(),
                net.peer_addr(id),
                "--data-dir".into(),
                workdir.join(format!("node{id}")).display().to_string(),
                "--peers".into(),
                peers.clone(),
                "--lease".into(),
                format!("{}ms", w.a.lease.as_millis()),
                "--history-max".into(),
                "1000000".into(),
            ],
            log: workdir.join(format!("node{id}.log")),
            cgroup_procs: None,
            child: None,
            starts: 0,
            env: Vec::new(),
        };
        m.start(&w.a.baton)?;
        w.nodes.push(m);
    }
    let ready = wait_for(Duration::from_secs(60), || {
        let st = w
            .cli(&["cluster", "status"], Duration::from_secs(10))
            .try_json()
            .ok()?;
        let leader = st.get("leader")?.as_u64()?;
        let nodes = st.get("nodes")?.as_array()?;
        (nodes.len() == 3 && nodes.iter().all(|n| n["state"] != "unreachable")).then_some(leader)
    });
    let Some(leader) = ready else {
        for n in &w.nodes {
            eprintln!("--- {} ---\n{}", n.name, n.log_tail(40));
        }
        bail!("the directory did not come up within 60 s");
    };
    w.say(&format!("directory up, leader node {leader}"));

    // Agents, each in its server's cgroup.
    let role_cmd = format!(
        "exec '{}' role-writer --socket '{}'",
        exe.display(),
        socket.display()
    );
    for (srv, host) in SERVERS {
        let cg = w.freezer.create(&w.a.prefix, host)?;
        let mut m = Managed {
            name: format!("agent {srv}"),
            ns: net.ns(host),
            args: vec![
                "agent".into(),
                "--server".into(),
                srv.into(),
                "--directory".into(),
                net.directory(),
                "--run".into(),
                format!("default={role_cmd}"),
                "--run".into(),
                format!("{}={}", stubborn::KIND, stubborn::command(&exe, &socket)),
            ],
            log: workdir.join(format!("agent-{srv}.log")),
            cgroup_procs: cg,
            child: None,
            starts: 0,
            env: Vec::new(),
        };
        m.start(&w.a.baton)?;
        w.agents.push(m);
    }
    let up = wait_for(Duration::from_secs(60), || {
        let list = w
            .cli(&["server", "list"], Duration::from_secs(10))
            .try_json()
            .ok()?;
        let list = list.as_array()?;
        SERVERS
            .iter()
            .all(|(s, _)| list.iter().any(|x| x["name"] == *s && x["status"] == "up"))
            .then_some(())
    });
    if up.is_none() {
        for n in &w.agents {
            eprintln!("--- {} ---\n{}", n.name, n.log_tail(40));
        }
        bail!("the agents did not come up within 60 s");
    }
    let roles = roles(w.a.roles);
    let stubborn_roles: Vec<String> = (0..roles.len())
        .filter(|i| stubborn::is_stubborn(*i))
        .map(|i| roles[i].0.clone())
        .collect();
    for (name, servers, failback) in &roles {
        let list = servers.join(",");
        let mut args = vec!["role", "create", name.as_str(), "--servers", list.as_str()];
        if *failback {
            args.extend(["--failback", "--failback-delay", "3s"]);
        }
        if stubborn_roles.contains(name) {
            args.extend(["--kind", stubborn::KIND]);
        }
        w.cli(&args, baton_tests::CLI_TIMEOUT)
            .try_json()
            .with_context(|| format!("create role {name}"))?;
    }
    let all_running = wait_for(Duration::from_secs(30), || {
        let last = journal.last_write();
        roles
            .iter()
            .all(|(r, _, _)| last.contains_key(r))
            .then_some(())
    });
    if all_running.is_none() {
        bail!("not every role wrote to the journal within 30 s of its creation");
    }
    w.say(&format!(
        "{} roles running: {}",
        roles.len(),
        roles
            .iter()
            .map(|(r, s, fb)| format!(
                "{r}=[{}]{}{}",
                s.join(","),
                if *fb { " failback" } else { "" },
                if stubborn_roles.contains(r) {
                    " stubborn"
                } else {
                    ""
                }
            ))
            .collect::<Vec<_>>()
            .join(" ")
    ));

    // Chaos.
    let mut admin = AdminWriter::start(net.directory());
    let t_chaos = now_ns();
    let chaos_start = Instant::now();
    let mut faults: Vec<Fault> = Vec::new();
    let mut interrupted = false;
    let mut next_at = Instant::now() + Duration::from_secs_f64(w.rng.between(5.0, 15.0));
    let mut last_status = Instant::now();
    while chaos_start.elapsed() < w.a.duration {
        let wait = next_at.saturating_duration_since(Instant::now());
        let left = w.a.duration.saturating_sub(chaos_start.elapsed());
        if !w.hold(wait.min(left)) {
            interrupted = true;
            break;
        }
        if chaos_start.elapsed() >= w.a.duration {
            break;
        }
        if Instant::now() < next_at {
            continue;
        }
        let kind = if w.a.plant_rogue && faults.len() == 1 {
            Kind::PlantedRogue
        } else if w.a.plant_dup && faults.len() == 1 {
            Kind::DupAgent
        } else {
            Kind::pick(&mut w.rng, &w.a.kinds)
        };
        let started = Instant::now();
        match w.inject(faults.len() + 1, kind)? {
            Some(f) => faults.push(f),
            None => {
                interrupted = true;
                break;
            }
        }
        // The next fault 5-15 s after this one started, and at least a second after it
        // healed.
        next_at = (started + Duration::from_secs_f64(w.rng.between(5.0, 15.0)))
            .max(Instant::now() + Duration::from_secs(1));
        if last_status.elapsed() > Duration::from_secs(30) {
            last_status = Instant::now();
            let (acc, rej) = journal.counts();
            let (ov, samples) = {
                let o = sampler.out.lock().unwrap();
                (o.overlaps.len(), o.samples)
            };
            let acked = admin
                .writes
                .lock()
                .unwrap()
                .iter()
                .filter(|x| x.acked)
                .count();
            w.say(&format!(
                "status: {} faults, journal {acc} accepted / {rej} rejected, /proc overlaps {ov} \
                 in {samples} samples, {acked} admin writes acked",
                faults.len()
            ));
        }
    }
    admin.stop();
    let chaos_secs = chaos_start.elapsed().as_secs_f64();

    // Heal everything, then liveness.
    w.heal_all()?;
    let t_heal = now_ns();
    w.say("healed everything; checking liveness");
    let budget = w.a.lease + GRACE + LIVENESS_EXTRA;
    let mut live_after_ms: Option<f64> = None;
    let mut not_live: Vec<String> = Vec::new();
    if !interrupted {
        let got = wait_for(budget, || {
            let now = now_ns();
            let last = journal.last_write();
            roles
                .iter()
                .all(|(r, _, _)| {
                    last.get(r)
                        .is_some_and(|t| *t > t_heal && now.saturating_sub(*t) < 300_000_000)
                })
                .then_some(now)
        });
        match got {
            Some(t) => live_after_ms = Some(ms(t - t_heal)),
            None => {
                let now = now_ns();
                let last = journal.last_write();
                for (r, _, _) in &roles {
                    let t = last.get(r).copied().unwrap_or(0);
                    if t <= t_heal || now.saturating_sub(t) >= 300_000_000 {
                        not_live.push(format!(
                            "role {r}: last accepted write {:.1} s ago, not running {:.1} s after the heal",
                            ms(now.saturating_sub(t)) / 1e3,
                            ms(now - t_heal) / 1e3
                        ));
                    }
                }
            }
        }
        // Stay up a little, so the end state is a steady one.
        w.hold(Duration::from_secs(3));
        w.reap_unexpected();
    }
    let role_list = w
        .cli(&["role", "list"], baton_tests::CLI_TIMEOUT)
        .try_json()
        .ok();
    let events = w.cli(&["events"], baton_tests::CLI_TIMEOUT).try_json().ok();
    // Acknowledged writes read back (linearizable), retried until the directory answers.
    let server_list = if interrupted {
        None
    } else {
        wait_for(Duration::from_secs(60), || {
            w.cli(&["server", "list"], baton_tests::CLI_TIMEOUT)
                .try_json()
                .ok()
        })
    };
    sampler.stop();
    journal.stop();
    let stalls = stall_meter.stop();
    let stall_ms: Vec<f64> = stalls.iter().map(|(_, d)| ms(*d)).collect();

    // ---- Analysis ----
    let js = journal.state.lock().unwrap();
    let so = sampler.out.lock().unwrap();
    let writes = admin.writes.lock().unwrap().clone();
    let mut violations: Vec<String> = Vec::new();

    // (a) single active, from the journal.
    let lines: Vec<journal::Line> = js
        .accepted
        .iter()
        .map(|w| journal::Line {
            t_ns: w.t_ns,
            role: w.role.clone(),
            epoch: w.epoch,
            server: w.server.clone(),
            pid: w.pid,
        })
        .collect();
    let jr = journal::check(&lines);
    for o in &jr.overlaps {
        violations.push(format!("journal overlap: {o}"));
    }
    for r in &jr.regressions {
        violations.push(format!("journal epoch regression: {r}"));
    }
    for r in &jr.reused_epochs {
        violations.push(format!("journal epoch reuse: {r}"));
    }
    // Stale writes: explained by a freeze of their server, in flight, or not explained.
    let mut first_of_epoch: HashMap<(String, u64), u64> = HashMap::new();
    for w in &js.accepted {
        let e = first_of_epoch
            .entry((w.role.clone(), w.epoch))
            .or_insert(w.t_ns);
        *e = (*e).min(w.t_ns);
    }
    let (mut rej_freeze, mut rej_flight, mut rej_other) = (0usize, 0usize, Vec::new());
    for r in &js.rejected {
        let after_freeze = faults.iter().any(|f| {
            f.kind == Kind::FreezeServer
                && f.server.as_deref() == Some(r.w.server.as_str())
                && r.w.recv_ns >= f.heal_ns.saturating_sub(SAMPLE_PERIOD.as_nanos() as u64)
                && r.w.recv_ns <= f.heal_ns + STALE_BOUND_NS
        });
        let in_flight = first_of_epoch
            .get(&(r.w.role.clone(), r.max_epoch))
            .is_some_and(|first| r.w.t_ns < *first);
        if after_freeze {
            rej_freeze += 1;
        } else if in_flight {
            rej_flight += 1;
        } else {
            rej_other.push(r.clone());
        }
    }
    // (role, epoch, server, pid) -> (lines, first, last, highest epoch then)
    type Instance = (String, u64, String, u32);
    let mut stale_by_pid: BTreeMap<Instance, (usize, u64, u64, u64)> = BTreeMap::new();
    for r in &rej_other {
        let e = stale_by_pid
            .entry((r.w.role.clone(), r.w.epoch, r.w.server.clone(), r.w.pid))
            .or_insert((0, u64::MAX, 0, r.max_epoch));
        e.0 += 1;
        e.1 = e.1.min(r.w.t_ns);
        e.2 = e.2.max(r.w.t_ns);
    }
    for ((role, epoch, server, pid), (n, first, last, max)) in &stale_by_pid {
        let since_new = first_of_epoch
            .get(&(role.clone(), *max))
            .map(|f| {
                format!(
                    "{:.1} ms after epoch {max} first wrote",
                    ms(first.saturating_sub(*f))
                )
            })
            .unwrap_or_default();
        violations.push(format!(
            "stale holder not explained by a freeze: role {role} epoch {epoch} on {server} pid {pid} \
             wrote {n} rejected line(s) from {first} to {last} ({since_new})"
        ));
    }
    // (a) single active, from /proc.
    for o in &so.overlaps {
        violations.push(format!("/proc overlap: {o}"));
    }
    for l in &so.lingering {
        violations.push(format!("stale process after thaw: {l}"));
    }
    // The sampler's coverage: every process that wrote (and lived more than a few
    // sample periods) should have been seen in /proc.
    let mut lines_per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for w in &js.accepted {
        *lines_per_pid.entry(w.pid).or_default() += 1;
    }
    let writer_pids = lines_per_pid.len();
    let unsampled_pids: BTreeSet<u32> = lines_per_pid
        .iter()
        .filter(|(p, n)| **n > 10 && !so.seen.contains_key(p))
        .map(|(p, _)| *p)
        .collect();
    let unsampled: Vec<String> = journal::instances(
        &lines
            .iter()
            .filter(|l| unsampled_pids.contains(&l.pid))
            .cloned()
            .collect::<Vec<_>>(),
    )
    .iter()
    .map(|i| i.to_string())
    .collect();
    // End state: exactly one role process per role.
    if !interrupted {
        for (r, _, _) in &roles {
            let procs = so.current.get(r).cloned().unwrap_or_default();
            if procs.len() != 1 {
                violations.push(format!(
                    "end state: role {r} has {} live role process(es): {procs:?}",
                    procs.len()
                ));
            }
        }
    }

    // (b) acknowledged admin writes.
    let acked: Vec<&AdminWrite> = writes.iter().filter(|x| x.acked).collect();
    let mut lost: Vec<String> = Vec::new();
    let mut unacked_present = 0usize;
    match &server_list {
        Some(list) => {
            let names: BTreeSet<String> = list
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|s| s["name"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for x in &acked {
                if !names.contains(&x.name) {
                    lost.push(format!(
                        "{} (acknowledged at {}, after {:.0} ms)",
                        x.name,
                        x.end_ns,
                        ms(x.end_ns - x.start_ns)
                    ));
                }
            }
            unacked_present = writes
                .iter()
                .filter(|x| !x.acked && names.contains(&x.name))
                .count();
        }
        None if !interrupted => {
            violations.push("could not read the server list back within 60 s".into());
        }
        None => {}
    }
    for l in &lost {
        violations.push(format!("lost acknowledged write: server {l}"));
    }
    let admin_latency: Vec<f64> = acked.iter().map(|x| ms(x.end_ns - x.start_ns)).collect();
    let mut admin_errors: BTreeMap<String, usize> = BTreeMap::new();
    for x in writes.iter().filter(|x| !x.acked) {
        let key: String = x
            .error
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(120)
            .collect();
        *admin_errors.entry(key).or_default() += 1;
    }

    // (c) recovery: gaps between consecutive accepted writes of a role, charged to faults.
    let mut times: BTreeMap<&str, Vec<(u64, u32, u64)>> = BTreeMap::new();
    for w in &js.accepted {
        if w.t_ns >= t_chaos {
            times
                .entry(w.role.as_str())
                .or_default()
                .push((w.t_ns, w.pid, w.epoch));
        }
    }
    let mut all_gaps: Vec<f64> = Vec::new();
    // Gaps longer than an outage with the same process on both sides: not a failover
    // (nothing moved or restarted) but the writer, the observer or the host stalling.
    let mut same_process_gaps: Vec<f64> = Vec::new();
    // (fault index, role) -> (longest gap across a change of process, epoch before, epoch
    // after: a move when they differ, else a restart in place). Every change of process is an
    // interruption of the role, however short.
    let mut outage: BTreeMap<(usize, &str), (u64, u64, u64)> = BTreeMap::new();
    let settle_ns = (w.a.lease + GRACE + Duration::from_secs(2)).as_nanos() as u64;
    let mut pre_fault_outages: Vec<String> = Vec::new();
    for (role, ts) in times.iter_mut() {
        ts.sort_unstable();
        for pair in ts.windows(2) {
            let ((t1, p1, e1), (t2, p2, e2)) = (pair[0], pair[1]);
            let gap = t2 - t1;
            all_gaps.push(ms(gap));
            if p1 == p2 {
                if gap > OUTAGE_NS {
                    same_process_gaps.push(ms(gap));
                }
                continue;
            }
            // The latest fault that started before the gap ended and whose active window
            // [start, heal + settle] overlaps the gap (a fault that starts while a role
            // is already quiet, e.g. after a host stall, is still its cause); else (a
            // late effect) the last fault that started before the gap.
            let idx = faults
                .iter()
                .rposition(|f| f.start_ns <= t2 && f.heal_ns + settle_ns >= t1)
                .or_else(|| {
                    faults
                        .iter()
                        .rposition(|f| f.start_ns <= t1 + WINDOW_LEAD_NS && t1 <= t_heal)
                });
            match idx {
                Some(i) => {
                    let e = outage.entry((i, role)).or_insert((0, 0, 0));
                    if gap > e.0 {
                        *e = (gap, e1, e2);
                    }
                }
                None => pre_fault_outages.push(format!(
                    "role {role}: process {p1} (epoch {e1}) replaced by {p2} (epoch {e2}) after \
                     {:.0} ms without a writer, from {t1}, before any fault",
                    ms(gap)
                )),
            }
        }
    }
    let mut recovery: Vec<f64> = Vec::new();
    let mut recovery_by_kind: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    // Per kind: (outages that moved the role, outages restarting it where it was).
    let mut outcome_by_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    // Roles stopped by a fault of the directory alone (their agent self-fenced because
    // no renewal was acknowledged in time), though nothing moved.
    let mut dir_fault_stops: Vec<String> = Vec::new();
    // Why each epoch came to be, from the directory's history.
    let epoch_cause: HashMap<(String, u64), String> = events
        .as_ref()
        .and_then(Value::as_array)
        .map(|evs| {
            evs.iter()
                .filter_map(|e| {
                    Some((
                        (e["role"].as_str()?.to_string(), e["epoch"].as_u64()?),
                        e["cause"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    for ((i, role), (gap, e_before, e_after)) in &outage {
        let moved = &(e_before != e_after);
        {
            let f = &faults[*i];
            recovery.push(ms(*gap));
            recovery_by_kind
                .entry(f.kind.name())
                .or_default()
                .push(ms(*gap));
            let o = outcome_by_kind.entry(f.kind.name()).or_default();
            if *moved {
                o.0 += 1;
            } else {
                o.1 += 1;
            }
            if !f.kind.touches_server() {
                dir_fault_stops.push(format!(
                    "fault {} {} {} ({}): role {role} stopped {:.0} ms, {}",
                    f.n,
                    f.kind.name(),
                    f.target,
                    f.detail,
                    ms(*gap),
                    if *moved {
                        format!(
                            "moved (epoch {e_before} -> {e_after}, cause {})",
                            epoch_cause
                                .get(&(role.to_string(), *e_after))
                                .map(String::as_str)
                                .unwrap_or("unknown")
                        )
                    } else {
                        format!("restarted in place, same epoch {e_before}")
                    }
                ));
            }
        }
    }
    for p in &pre_fault_outages {
        violations.push(format!("outage without a fault: {p}"));
    }

    // No false failover: a lease_expired move while only the directory was faulted.
    let mut false_failovers: Vec<String> = Vec::new();
    let mut moves_by_cause: BTreeMap<String, usize> = BTreeMap::new();
    if let Some(evs) = events.as_ref().and_then(Value::as_array) {
        let settle = (w.a.lease + GRACE + Duration::from_secs(2)).as_nanos() as u64;
        for e in evs {
            let t = e["time_ms"].as_u64().unwrap_or(0) * 1_000_000;
            if t < t_chaos {
                continue;
            }
            let cause = e["cause"].as_str().unwrap_or("?").to_string();
            *moves_by_cause.entry(cause.clone()).or_default() += 1;
            if cause != "lease_expired" {
                continue;
            }
            // The fault in force (or most recent) at the time.
            let Some(f) = faults.iter().rev().find(|f| f.start_ns <= t) else {
                continue;
            };
            let recent_server_fault = faults
                .iter()
                .any(|g| g.kind.touches_server() && g.start_ns <= t && t <= g.heal_ns + settle);
            if !f.kind.touches_server() && !recent_server_fault {
                false_failovers.push(format!(
                    "role {} moved {} -> {} (epoch {}, lease_expired) {:.1} s into fault {} ({} {})",
                    e["role"].as_str().unwrap_or("?"),
                    e["from"].as_str().unwrap_or("-"),
                    e["to"].as_str().unwrap_or("-"),
                    e["epoch"],
                    ms(t.saturating_sub(f.start_ns)) / 1e3,
                    f.n,
                    f.kind.name(),
                    f.target
                ));
            }
        }
    }
    for f in &false_failovers {
        violations.push(format!("false failover: {f}"));
    }

    // Liveness.
    for n in &not_live {
        violations.push(format!("liveness: {n}"));
    }
    if let Some(list) = role_list.as_ref().and_then(Value::as_array)
        && !interrupted
    {
        for r in list {
            if r["state"] != "running" || r["active_server"].is_null() {
                violations.push(format!(
                    "liveness: role {} is {} (active server {}) at the end",
                    r["name"], r["state"], r["active_server"]
                ));
            }
        }
    }
    for u in &w.unexpected {
        violations.push(format!("process exit: {u}"));
    }
    // The duplicates: refused, and none of their role processes ever seen.
    let mut dups = w.dups.clone();
    dups.journal_lines = js
        .dup
        .iter()
        .map(|x| (x.role.clone(), x.epoch, x.server.clone(), x.pid))
        .collect();
    dups.processes = so.dup_procs.clone();
    violations.extend(dups.violations(w.a.lease));

    // ---- Report ----
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &faults {
        *by_kind.entry(f.kind.name()).or_default() += 1;
    }
    let journal_overlaps = jr.overlaps.len() + jr.regressions.len() + jr.reused_epochs.len();
    let overlaps = journal_overlaps + so.overlaps.len();
    let report = json!({
        "seed": w.a.seed,
        "prefix": w.a.prefix,
        "workdir": workdir.display().to_string(),
        "lease_ms": w.a.lease.as_millis() as u64,
        "duration_s": round1(w.a.duration.as_secs_f64()),
        "chaos_s": round1(chaos_secs),
        "interrupted": interrupted,
        "freezer": w.freezer.name(),
        "roles": roles.iter().map(|(r, s, fb)| json!({"name": r, "servers": s, "failback": fb, "stubborn": stubborn_roles.contains(r)})).collect::<Vec<_>>(),
        "dup_agent": dups.json(),
        "stubborn": so.stubborn.json(&stubborn_roles, stats_json(&so.stubborn.outlived_shell_ms)),
        "faults": {
            "total": faults.len(),
            "by_kind": by_kind,
            "log": faults.iter().map(|f| json!({
                "n": f.n,
                "kind": f.kind.name(),
                "target": f.target,
                "detail": f.detail,
                "start_s": round1(ms(f.start_ns - t0_ns) / 1e3),
                "held_s": round1(ms(f.heal_ns - f.start_ns) / 1e3),
            })).collect::<Vec<_>>(),
        },
        "overlaps": overlaps,
        "journal": {
            "accepted": js.accepted.len(),
            "rejected_stale_writes": js.rejected.len(),
            "rejected_after_freeze": rej_freeze,
            "rejected_in_flight": rej_flight,
            "rejected_unexplained": rej_other.len(),
            "malformed": js.malformed,
            "overlaps": jr.overlaps,
            "regressions": jr.regressions,
            "reused_epochs": jr.reused_epochs,
        },
        "proc": {
            "samples": so.samples,
            "role_processes_seen": so.seen.len(),
            "journal_writers": writer_pids,
            "journal_writers_not_seen": unsampled,
            "overlap_samples": so.overlap_samples,
            "overlaps": so.overlaps,
            "post_thaw_samples": so.post_thaw_samples,
            "stop_after_thaw": stats_json(&so.stop_after_thaw_ms),
            "lingering": so.lingering,
        },
        "admin_writes": {
            "attempted": writes.len(),
            "acked": acked.len(),
            "lost": lost.len(),
            "lost_names": lost,
            "unacked_but_present": unacked_present,
            "ack_latency": stats_json(&admin_latency),
            "errors": admin_errors,
        },
        "recovery": {
            "outages": stats_json(&recovery),
            "by_kind": recovery_by_kind.iter().map(|(k, v)| (k.to_string(), stats_json(v))).collect::<BTreeMap<_, _>>(),
            "moved_and_in_place_by_kind": outcome_by_kind.iter().map(|(k, (m, i))| (k.to_string(), json!({"moved": m, "in_place": i}))).collect::<BTreeMap<_, _>>(),
            "roles_stopped_by_directory_faults": dir_fault_stops,
            "cadence": stats_json(&all_gaps),
            "same_process_gaps": stats_json(&same_process_gaps),
        },
        "host_stalls": stats_json(&stall_ms),
        "moves_by_cause": moves_by_cause,
        "false_failovers": false_failovers,
        "liveness": {
            "all_running_after_heal_ms": live_after_ms.map(round1),
            "budget_ms": budget.as_millis() as u64,
            "not_running": not_live,
        },
        "process_starts": w.nodes.iter().chain(w.agents.iter()).map(|p| (p.name.clone(), p.starts)).collect::<BTreeMap<_, _>>(),
        "unexpected_exits": w.unexpected,
        "violations": violations,
        "ok": violations.is_empty() && !interrupted,
    });

    println!();
    println!("===== chaos report =====");
    println!(
        "seed {}  lease {} ms  chaos {:.0} s of {:.0} s{}",
        w.a.seed,
        w.a.lease.as_millis(),
        chaos_secs,
        w.a.duration.as_secs_f64(),
        if interrupted { "  (INTERRUPTED)" } else { "" }
    );
    println!(
        "faults injected: {} ({})",
        faults.len(),
        by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "overlaps: {overlaps} (journal {journal_overlaps}, /proc {} in {} samples)",
        so.overlaps.len(),
        so.samples
    );
    println!(
        "journal: {} accepted writes, {} rejected stale writes ({} right after a freeze, {} in flight, {} unexplained)",
        js.accepted.len(),
        js.rejected.len(),
        rej_freeze,
        rej_flight,
        rej_other.len()
    );
    println!(
        "/proc: {} role processes seen; {} wrote to the journal, {} of them (10+ lines) never seen in /proc",
        so.seen.len(),
        writer_pids,
        unsampled.len()
    );
    println!(
        "stubborn roles ({}; writer ignores SIGTERM): {} writers seen in /proc, {} outlived \
         their shell until SIGKILL (time frozen included): {}",
        stubborn_roles.join(","),
        so.stubborn.seen,
        so.stubborn.outlived_shell_ms.len(),
        stats_text(&so.stubborn.outlived_shell_ms)
    );
    println!(
        "after a thaw: old-epoch process next to the new one in {} samples; processes frozen past the lease stopped after thaw: {}",
        so.post_thaw_samples,
        stats_text(&so.stop_after_thaw_ms)
    );
    println!(
        "admin writes: {} attempted, {} acked, {} lost ({} unacked but applied); ack latency {}",
        writes.len(),
        acked.len(),
        report["admin_writes"]["lost"],
        unacked_present,
        stats_text(&admin_latency)
    );
    println!(
        "recovery (per fault and interrupted role, the longest time without a writer): {}",
        stats_text(&recovery)
    );
    for (k, v) in &recovery_by_kind {
        let (m, i) = outcome_by_kind.get(k).copied().unwrap_or_default();
        println!(
            "    {k:<17} {}; {m} moved, {i} restarted in place",
            stats_text(v)
        );
    }
    println!(
        "roles interrupted by directory-only faults (agent self-fenced) or dup-agent faults; \
         nothing should stop: {}",
        dir_fault_stops.len()
    );
    println!(
        "{}; exited after {}",
        dups.summary(),
        stats_text(&dups.exit_times())
    );
    println!("write cadence (all gaps): {}", stats_text(&all_gaps));
    println!(
        "gaps > {} ms within one process (stalls, not failovers): {}; observer host stalls > 100 ms: {}",
        OUTAGE_NS / 1_000_000,
        stats_text(&same_process_gaps),
        stats_text(&stall_ms)
    );
    println!(
        "moves by cause: {}",
        moves_by_cause
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("false failovers: {}", false_failovers.len());
    match live_after_ms {
        Some(t) => println!(
            "liveness: every role running {t:.0} ms after the final heal (budget {} ms)",
            budget.as_millis()
        ),
        None => println!(
            "liveness: NOT every role running within {} ms",
            budget.as_millis()
        ),
    }
    println!("unexpected process exits: {}", w.unexpected.len());
    if violations.is_empty() {
        println!("violations: 0");
    } else {
        println!("VIOLATIONS: {}", violations.len());
        for v in &violations {
            println!("  - {v}");
        }
    }
    if let Some(path) = &w.a.report {
        fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    let _ = fs::write(
        workdir.join("report.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    );
    let ok = violations.is_empty() && !interrupted;
    if !unsampled.is_empty() {
        println!("observer warning: role processes that wrote but were never seen in /proc:");
        for u in &unsampled {
            println!("  - {u}");
        }
    }
    drop(js);
    drop(so);
    w.teardown();
    if ok && !w.a.keep && unsampled.is_empty() {
        let _ = fs::remove_dir_all(&workdir);
    } else {
        println!("kept {} (logs, journals, node data)", workdir.display());
    }
    Ok(if interrupted {
        130
    } else if ok {
        0
    } else {
        1
    })
}

// ---------------------------------------------------------------------------------------
// Cleanup
// ---------------------------------------------------------------------------------------

fn cleanup_cmd(args: &[String]) -> Result<()> {
    let mut prefix = None;
    let mut workdir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--prefix" => prefix = it.next().cloned(),
            "--workdir" => workdir = it.next().map(PathBuf::from),
            other => bail!("unknown argument {other:?}"),
        }
    }
    let prefix = prefix.ok_or_else(|| anyhow!("--prefix is required"))?;
    if !valid_prefix(&prefix) {
        bail!("refusing prefix {prefix:?}");
    }
    cleanup(&prefix, workdir.as_deref());
    Ok(())
}

/// Removes everything of the run `prefix`: its cgroups (thawed, emptied, removed), every
/// process that names its work directory or lives in one of its namespaces, the
/// namespaces, and the root namespace's link. Only ever touches names with the prefix.
fn cleanup(prefix: &str, workdir: Option<&Path>) {
    if !valid_prefix(prefix) {
        return;
    }
    let tag = format!("{prefix}-");
    // Cgroups.
    for root in ["/sys/fs/cgroup/freezer", "/sys/fs/cgroup"] {
        let Ok(dir) = fs::read_dir(root) else {
            continue;
        };
        for e in dir.flatten() {
            if !e.file_name().to_string_lossy().starts_with(&tag) {
                continue;
            }
            let d = e.path();
            let _ = fs::write(d.join("freezer.state"), "THAWED");
            let _ = fs::write(d.join("cgroup.freeze"), "0");
            for _ in 0..100 {
                let pids: Vec<i32> = fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
                if pids.is_empty() {
                    break;
                }
                for p in pids {
                    signal(p, libc::SIGCONT);
                    signal(p, libc::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = fs::remove_dir(&d);
        }
    }
    // Processes naming the work directory (nodes, agents, role processes).
    if let Some(w) = workdir {
        let marker = w.display().to_string();
        if marker.len() > 8 {
            for p in baton_tests::pids_with_marker(&marker) {
                signal(p as i32, libc::SIGCONT);
            }
            baton_tests::kill_marked(&marker);
        }
    }
    // Namespaces (and anything still inside them), then the root link.
    let list = sh("ip", &["netns", "list"]).unwrap_or_default();
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !name.starts_with(&tag) {
            continue;
        }
        if let Ok(pids) = sh("ip", &["netns", "pids", name]) {
            for p in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                signal(p, libc::SIGCONT);
                signal(p, libc::SIGKILL);
            }
        }
        let _ = sh("ip", &["netns", "del", name]);
    }
    let _ = sh("ip", &["link", "del", &format!("{prefix}-h")]);
}
