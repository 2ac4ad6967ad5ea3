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
//!
//! ## The modules
//!
//! `args` reads the command line; `net` makes the hosts and cuts and heals their
//! links; `freezer` freezes a server; `managed` starts a process in a namespace;
//! `writer` is the role process and `fenced_journal` the observer's database;
//! `sampler` watches `/proc`, `stalls` the observer's own host, `admin` writes
//! through the CLI; `world` owns all of it, `faults` and `dup` inject and heal;
//! `run` is the whole run, `analysis` turns what was observed into figures and
//! violations, `report` prints and writes them; `cleanup` removes a run's leftovers.

mod admin;
mod analysis;
mod args;
mod cleanup;
mod dup;
mod faults;
mod fenced_journal;
mod freezer;
mod managed;
mod net;
mod report;
mod run;
mod sampler;
mod stalls;
mod sys;
mod world;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Role processes write this often.
pub(crate) const WRITE_INTERVAL: Duration = Duration::from_millis(20);
/// The `/proc` sampler's period.
pub(crate) const SAMPLE_PERIOD: Duration = Duration::from_millis(50);
/// How long after its server thaws an old-epoch role process may still run (and write):
/// the wrapper checks its fence every 10 ms and the role dies on SIGTERM; a second is
/// generous on a loaded two-core machine, and anything beyond it is a stale holder.
pub(crate) const STALE_BOUND_NS: u64 = 1_000_000_000;
/// A gap this long between two writes of one and the same role process is a stall.
pub(crate) const OUTAGE_NS: u64 = 250_000_000;
/// A gap is charged to the fault whose start precedes the gap's start by at most this
/// much less (a frozen writer's last line is up to one write interval before the freeze).
pub(crate) const WINDOW_LEAD_NS: u64 = 100_000_000;
/// Liveness budget after the final heal, on top of lease + grace.
pub(crate) const LIVENESS_EXTRA: Duration = Duration::from_secs(5);
/// An upper bound of the directory's grace (`--grace`, which this runner does not set;
/// its default is lease x 1%, at least 50 ms): the liveness budget and the window in
/// which a fault's effects are expected use it, so they err on the generous side.
pub(crate) const GRACE: Duration = Duration::from_millis(300);
/// Each directory node listens on this port of its own address.
pub(crate) const PORT: u16 = 7001;
/// Server names, and the host suffix of each one's namespace.
pub(crate) const SERVERS: [(&str, &str); 3] = [("srv-a", "a"), ("srv-b", "b"), ("srv-c", "c")];

/// Set by SIGINT, SIGTERM or SIGHUP: the run stops injecting, heals and reports.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub(crate) fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// The `chaos` command: runs the subcommand named by the first argument and exits with
/// its status (see the module documentation).
pub fn main() {
    // Every node, agent and CLI call of a chaos run speaks plain text: the run is about
    // failures, and its in-process clients and planted faults predate TLS. (The e2e
    // tests run with mutual TLS.)
    // SAFETY: set before any thread starts; every child process inherits it.
    unsafe { std::env::set_var("BATON_INSECURE", "true") };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]).to_vec();
    let code = match args.first().map(String::as_str) {
        Some("run") => match run::run_cmd(&rest) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("chaos: {e:#}");
                2
            }
        },
        Some("cleanup") => match cleanup::cleanup_cmd(&rest) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("chaos cleanup: {e:#}");
                1
            }
        },
        Some("role-writer") => writer::role_writer(&rest),
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

pub(crate) fn install_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Polls `f` every 100 ms until it returns `Some`, `limit` has passed or the run is
/// being interrupted.
pub(crate) fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
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
