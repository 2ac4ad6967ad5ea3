//! Crash and corruption campaigns, with the real `baton`
//! binary on loopback.
//!
//! **crash**: a three-node cluster; in-process writers add servers (`s-W-N`) continuously
//! (`--rate`, 30 writes/s by default, so that a long campaign stays within the directory's
//! limits) and record every acknowledged write with its revision, while
//! the campaign kill -9s a random node (the leader about half the time), waits a short
//! random time and restarts it. Every restart must come back: the node reaches `follower`
//! or `leader` and applies at least the last write acknowledged before it restarted (else
//! it is a failed restart and its log is printed). Every `--check-every` kills, at the end,
//! and after a final kill -9 of all three nodes, everything is read back linearizably:
//! every acknowledged write must be there (zero lost acks), nothing that was never sent
//! may be, and at the end every node's local copy must equal the leader's.
//!
//! **corrupt**: for each case a fresh three-node cluster takes some writes (with small
//! `--snapshot-every` in some cases, so that snapshots and purges exist), one node is
//! stopped (SIGTERM or kill -9) and its data damaged, either logically (one stored value,
//! through `baton_store::fault`) or raw (bits flipped in, or the tail cut off, sled's own
//! files). The node is then started again and must refuse to serve (exit non-zero, an
//! `error:` line naming the problem and saying how to re-add the node), or, if it starts,
//! must converge on exactly the leader's data. Meanwhile the other two keep taking writes
//! and serving linearizable reads, and no acknowledged write may be lost. A refused node
//! is then re-added the way its message says (remove-node, data dir moved aside, started
//! empty with `--join`), which must bring it back as a caught-up voter. Before and after
//! the damage a copy of the node's data is opened in-process with `baton_store::open`, so
//! the report can say what the store itself sees (raw damage may be invisible to it).
//! `--kinds logical`, `--kinds raw` or a list picks the damage kinds (`crashes kinds`).
//!
//! **rollback** and **stuck** demonstrate, each in one run, what undetected raw damage
//! costs: a follower whose sled `db` tail is cut just enough to forget recent writes,
//! followed by the loss of the leader (are acknowledged writes lost?), or cut behind the
//! leader's purge point (does it ever catch up?).
//!
//! ```text
//! cargo run --release -p baton-tests --bin crashes -- crash --kills 1000
//! cargo run --release -p baton-tests --bin crashes -- corrupt --cases 100
//! ```
//! Flags: `--seed N` replays a campaign's random choices (the timing of real processes
//! still varies), `-v` prints every step. A release build of this binary builds and uses
//! the release `baton` unless `BATON_BIN` is set.
//!
//! The campaigns are a module of the test harness: the `crashes` binary
//! (`src/bin/crashes.rs`) is its command line, and the end-to-end tests
//! (`tests/e2e/durability.rs`) run small versions of both.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::tools::{Rng, parse_duration};
use crate::{Cluster, ClusterOpts, strip_ansi, try_wait_until};
use anyhow::{Context, Result, anyhow, bail};
use baton_client::{Client, ClientConfig, v1};
use baton_store::Verified;
use baton_store::fault::{self, Damage, Target};

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

const USAGE: &str = "\
crashes crash   [--kills N] [--writers N] [--rate W/S] [--check-every N] [--down-max DUR]
                [--snapshot-every N] [--lease DUR] [--seed N] [-v]
crashes corrupt [--cases N] [--kinds K,K,...] [--no-readd] [--lease DUR] [--seed N] [-v]
crashes kinds   (lists the damage kinds of the corruption campaign)
crashes rollback (one follower's sled tail cut, then the leader lost: are acks lost?)
crashes stuck    (one follower's sled tail cut behind the leader's purge point: does it catch up?)";

/// The `crashes` binary's command line (see the module docs and `USAGE`).
pub fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(mode) = args.next() else {
        println!("{USAGE}");
        bail!("say which campaign: crash or corrupt");
    };
    let rest: Vec<String> = args.collect();
    let clean = match mode.as_str() {
        "crash" => {
            let cfg = CrashConfig::parse(&rest)?;
            let copy = use_release_binary()?;
            println!(
                "crash campaign: {} kills, {} writers, seed {}, binary {}",
                cfg.kills,
                cfg.writers,
                cfg.seed,
                crate::baton_bin().display()
            );
            let report = crash_campaign(&cfg);
            if let Some(p) = copy {
                let _ = std::fs::remove_file(p);
            }
            let report = report?;
            println!("{report}");
            report.clean()
        }
        "corrupt" => {
            let cfg = CorruptConfig::parse(&rest)?;
            let copy = use_release_binary()?;
            println!(
                "corruption campaign: {} cases, seed {}, binary {}",
                cfg.cases,
                cfg.seed,
                crate::baton_bin().display()
            );
            let report = corrupt_campaign(&cfg);
            if let Some(p) = copy {
                let _ = std::fs::remove_file(p);
            }
            let report = report?;
            println!("{report}");
            report.clean()
        }
        "rollback" => {
            let copy = use_release_binary()?;
            let report = rollback_demo();
            if let Some(p) = copy {
                let _ = std::fs::remove_file(p);
            }
            let report = report?;
            println!("{report}");
            report.lost.is_empty()
        }
        "stuck" => {
            let copy = use_release_binary()?;
            let report = stuck_demo(Duration::from_secs(60));
            if let Some(p) = copy {
                let _ = std::fs::remove_file(p);
            }
            let report = report?;
            println!("{report}");
            report.caught_up
        }
        "kinds" => {
            for k in Kind::ALL.into_iter().chain(Kind::EXTRA) {
                println!("{:<18} {}", k.name(), k.about());
            }
            true
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            true
        }
        other => bail!("unknown campaign {other:?}\n{USAGE}"),
    };
    if !clean {
        std::process::exit(1);
    }
    Ok(())
}

/// In a release build of this binary, run the release `baton` too (built here once and
/// copied aside; the copy is returned for removal), unless `BATON_BIN` says otherwise.
fn use_release_binary() -> Result<Option<PathBuf>> {
    if cfg!(debug_assertions) || std::env::var_os("BATON_BIN").is_some() {
        return Ok(None);
    }
    let workspace = crate::workspace_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "baton", "--bin", "baton"])
        .current_dir(&workspace)
        .status()
        .context("running cargo build --release -p baton")?;
    if !status.success() {
        bail!("cargo build --release -p baton failed: {status}");
    }
    let target = crate::target_dir();
    // A private copy: other builds in this workspace may replace target/release/baton
    // while the campaign restarts nodes.
    let bin = target.join("release").join("baton");
    let copy = std::env::temp_dir().join(format!("baton-crashes-{}", std::process::id()));
    std::fs::copy(&bin, &copy).with_context(|| format!("copying {}", bin.display()))?;
    // SAFETY: called from main before any other thread exists.
    unsafe { std::env::set_var("BATON_BIN", &copy) };
    Ok(Some(copy))
}

fn default_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// Walks `--flag value` pairs, calling `f(flag, value)`; `-v` sets `verbose`.
fn parse_flags(
    args: &[String],
    verbose: &mut bool,
    mut f: impl FnMut(&str, &str) -> Result<bool>,
) -> Result<()> {
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-v" | "--verbose" => *verbose = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--no-readd" => {
                f("--no-readd", "")?;
            }
            _ => {
                let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
                if !f(flag, value)? {
                    bail!("unknown argument {flag:?}\n{USAGE}");
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Small tools
// ---------------------------------------------------------------------------------------

/// A multi-threaded runtime for the in-process clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A client for `addrs` whose calls give up after `budget`.
fn client(addrs: Vec<String>, budget: Duration) -> Client {
    Client::with_config(
        addrs,
        ClientConfig {
            connect_timeout: Duration::from_millis(500),
            rpc_timeout: budget.min(Duration::from_secs(5)),
            retry_budget: budget,
            ..ClientConfig::default()
        },
    )
    .expect("valid addresses")
}

fn addrs_of(c: &Cluster, ids: &[u64]) -> Vec<String> {
    ids.iter().map(|id| c.node(*id).addr.clone()).collect()
}

fn add_server(name: &str) -> v1::Command {
    v1::Command {
        request_id: String::new(),
        command: Some(v1::command::Command::AddServer(v1::AddServer {
            name: name.to_string(),
            main: false,
            kinds: Vec::new(),
        })),
    }
}

/// The state and last applied index node `id` reports (through its own address, so the
/// node must be serving).
fn node_state(rt: &tokio::runtime::Runtime, addr: &str, id: u64) -> Option<(String, u64)> {
    let c = client(vec![addr.to_string()], Duration::from_secs(2));
    let st = rt.block_on(c.cluster_status_any()).ok()?;
    let n = st.nodes.into_iter().find(|n| n.id == id)?;
    Some((n.state, n.last_applied))
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// (p50, p99, max) in milliseconds, nearest rank (0s for none).
fn percentiles(v: &[Duration]) -> (u128, u128, u128) {
    let ms: Vec<f64> = v.iter().map(|d| d.as_millis() as f64).collect();
    let at = |p: f64| crate::stats::percentile(&ms, p).unwrap_or(0.0) as u128;
    (at(50.0), at(99.0), at(100.0))
}

fn secs(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

// ---------------------------------------------------------------------------------------
// Writers and what they were told
// ---------------------------------------------------------------------------------------

/// What the writers sent and what they were told.
#[derive(Default, Debug)]
pub struct Ledger {
    /// Every name sent (whatever came of it), recorded before sending.
    pub attempted: BTreeSet<String>,
    /// Acknowledged writes: name and the revision the directory gave it.
    pub acked: BTreeMap<String, u64>,
    /// Refused as `ALREADY_EXISTS` on the client's own retry: an earlier attempt committed,
    /// so these must be present too.
    pub confirmed: BTreeSet<String>,
    /// The client gave up (no quorum within its budget): may or may not be present.
    pub unknown: BTreeSet<String>,
    /// Failed without a reason from the directory (e.g. `transport error`: a follower's
    /// forward to a leader that died): outcome unknown too. Count and a few samples.
    pub unexplained: usize,
    pub unexplained_samples: Vec<String>,
    /// Any other refusal (none expected).
    pub refused: Vec<String>,
    /// The highest acknowledged revision.
    pub max_revision: u64,
}

impl Ledger {
    fn record(&mut self, name: String, result: Result<v1::WriteReply, baton_client::ClientError>) {
        match result {
            Ok(reply) => {
                self.max_revision = self.max_revision.max(reply.revision);
                self.acked.insert(name, reply.revision);
            }
            Err(e) if e.reason() == Some("ALREADY_EXISTS") => {
                self.confirmed.insert(name);
            }
            Err(e) if e.is_unavailable() => {
                self.unknown.insert(name);
            }
            Err(e) if e.reason().is_none() => {
                self.unexplained += 1;
                if self.unexplained_samples.len() < 3 {
                    self.unexplained_samples.push(format!("{name}: {e}"));
                }
                self.unknown.insert(name);
            }
            Err(e) => self.refused.push(format!("{name}: {e}")),
        }
    }
}

type SharedLedger = Arc<Mutex<Ledger>>;

/// Writers running on a runtime until stopped.
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// `n` writers sharing `rate` writes per second (0: as fast as acknowledged).
    fn start(
        rt: &tokio::runtime::Runtime,
        addrs: Vec<String>,
        n: usize,
        rate: f64,
        prefix: &str,
        ledger: &SharedLedger,
    ) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let c = client(addrs, Duration::from_secs(10));
        let tasks = (0..n)
            .map(|w| {
                let c = c.clone();
                let stop = stop.clone();
                let ledger = ledger.clone();
                let prefix = format!("{prefix}{w}-");
                let every = (rate > 0.0).then(|| Duration::from_secs_f64(n as f64 / rate));
                rt.spawn(async move {
                    let mut seq = 0u64;
                    let mut next = tokio::time::Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(every) = every {
                            tokio::time::sleep_until(next).await;
                            next = (next + every).max(tokio::time::Instant::now());
                        }
                        seq += 1;
                        let name = format!("{prefix}{seq}");
                        ledger.lock().unwrap().attempted.insert(name.clone());
                        let r = c.apply(add_server(&name)).await;
                        ledger.lock().unwrap().record(name, r);
                    }
                })
            })
            .collect();
        Writers { stop, tasks }
    }

    fn stop(self, rt: &tokio::runtime::Runtime) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = rt.block_on(t);
        }
    }
}

/// One write through `addrs`, recorded; returns its revision when acknowledged.
fn write_one(
    rt: &tokio::runtime::Runtime,
    addrs: Vec<String>,
    name: &str,
    ledger: &SharedLedger,
) -> Result<u64> {
    let c = client(addrs, Duration::from_secs(10));
    ledger.lock().unwrap().attempted.insert(name.to_string());
    let r = rt.block_on(c.apply(add_server(name)));
    let out = match &r {
        Ok(reply) => Ok(reply.revision),
        Err(e) => Err(anyhow!("write {name} failed: {e}")),
    };
    ledger.lock().unwrap().record(name.to_string(), r);
    out
}

/// What one read-back found.
#[derive(Debug, Default)]
struct Readback {
    revision: u64,
    names: BTreeSet<String>,
}

/// Reads every server linearizably through `addrs` (retried for up to `limit`).
fn read_all(rt: &tokio::runtime::Runtime, addrs: Vec<String>, limit: Duration) -> Result<Readback> {
    let c = client(addrs, Duration::from_secs(10));
    let deadline = Instant::now() + limit;
    loop {
        match rt.block_on(c.list_servers(false)) {
            Ok(list) => {
                return Ok(Readback {
                    revision: list.revision,
                    names: list.servers.into_iter().map(|s| s.name).collect(),
                });
            }
            Err(e) if Instant::now() >= deadline => bail!("linearizable read failed: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Reads node `addr`'s local copy (`--stale`).
fn read_stale(rt: &tokio::runtime::Runtime, addr: &str) -> Option<Readback> {
    let c = client(vec![addr.to_string()], Duration::from_secs(2));
    let list = rt.block_on(c.list_servers(true)).ok()?;
    Some(Readback {
        revision: list.revision,
        names: list.servers.into_iter().map(|s| s.name).collect(),
    })
}

/// Reads everything back linearizably and checks it against the ledger: every
/// acknowledged (or confirmed) write present, nothing present that was never sent, and a
/// revision no older than the newest acknowledgement. Returns the lost names (empty when
/// all is well) and the read.
fn check_ledger(
    rt: &tokio::runtime::Runtime,
    addrs: Vec<String>,
    ledger: &SharedLedger,
    prefix: &str,
) -> Result<(Vec<String>, Readback)> {
    let (acked, confirmed, max_rev) = {
        let l = ledger.lock().unwrap();
        (l.acked.clone(), l.confirmed.clone(), l.max_revision)
    };
    let read = read_all(rt, addrs, Duration::from_secs(60))?;
    let attempted = ledger.lock().unwrap().attempted.clone();
    let mut lost: Vec<String> = acked
        .iter()
        .filter(|(n, _)| !read.names.contains(*n))
        .map(|(n, r)| format!("{n} (acknowledged at revision {r})"))
        .collect();
    lost.extend(
        confirmed
            .iter()
            .filter(|n| !read.names.contains(*n))
            .map(|n| format!("{n} (confirmed by ALREADY_EXISTS)")),
    );
    let phantom: Vec<&String> = read
        .names
        .iter()
        .filter(|n| n.starts_with(prefix) && !attempted.contains(*n))
        .collect();
    if !phantom.is_empty() {
        bail!("the directory holds servers nobody wrote: {phantom:?}");
    }
    if read.revision < max_rev {
        bail!(
            "a linearizable read at revision {} is older than the acknowledged revision {max_rev}",
            read.revision
        );
    }
    Ok((lost, read))
}

// ---------------------------------------------------------------------------------------
// Crash campaign
// ---------------------------------------------------------------------------------------

/// Settings of the crash campaign.
#[derive(Clone, Debug)]
pub struct CrashConfig {
    pub kills: usize,
    /// Concurrent writers.
    pub writers: usize,
    /// Writes per second, all writers together (0: as fast as acknowledged). Bounded so
    /// that the directory (one server per write) stays well within its limits and the
    /// read-back within one gRPC message over a long campaign.
    pub rate: f64,
    /// Read everything back every this many kills.
    pub check_every: usize,
    /// A killed node stays down for a random time up to this.
    pub down_max: Duration,
    /// `--snapshot-every` of the nodes (small, so that kills also hit snapshots and purges).
    pub snapshot_every: u64,
    pub lease: Option<Duration>,
    /// How long a restarted node may take to serve and catch up.
    pub restart_limit: Duration,
    pub seed: u64,
    pub verbose: bool,
}

impl Default for CrashConfig {
    fn default() -> Self {
        CrashConfig {
            kills: 1000,
            writers: 4,
            rate: 30.0,
            check_every: 50,
            down_max: Duration::from_millis(1000),
            snapshot_every: 500,
            lease: None,
            restart_limit: Duration::from_secs(30),
            seed: default_seed(),
            verbose: false,
        }
    }
}

impl CrashConfig {
    fn parse(args: &[String]) -> Result<CrashConfig> {
        let mut c = CrashConfig::default();
        let mut verbose = false;
        parse_flags(args, &mut verbose, |flag, v| {
            match flag {
                "--kills" => c.kills = v.parse()?,
                "--writers" => c.writers = v.parse()?,
                "--rate" => c.rate = v.parse()?,
                "--check-every" => c.check_every = v.parse()?,
                "--down-max" => c.down_max = parse_duration(v).map_err(anyhow::Error::msg)?,
                "--snapshot-every" => c.snapshot_every = v.parse()?,
                "--lease" => c.lease = Some(parse_duration(v).map_err(anyhow::Error::msg)?),
                "--restart-limit" => {
                    c.restart_limit = parse_duration(v).map_err(anyhow::Error::msg)?
                }
                "--seed" => c.seed = v.parse()?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        c.verbose = verbose;
        if c.writers == 0 || c.check_every == 0 {
            bail!("--writers and --check-every must be at least 1");
        }
        Ok(c)
    }
}

/// One failed restart.
#[derive(Debug, Clone)]
pub struct FailedRestart {
    pub kill: usize,
    pub node: u64,
    pub what: String,
    pub log_tail: String,
}

/// What the crash campaign found.
#[derive(Debug, Default)]
pub struct CrashReport {
    pub seed: u64,
    pub kills: usize,
    pub leader_kills: usize,
    pub acked: usize,
    pub confirmed: usize,
    pub unknown: usize,
    pub unexplained: usize,
    pub unexplained_samples: Vec<String>,
    pub refused: Vec<String>,
    pub checks: usize,
    /// Acknowledged writes missing from a read-back (must be empty).
    pub lost: Vec<String>,
    pub failed_restarts: Vec<FailedRestart>,
    /// Nodes whose local copy differed from the leader's at the end.
    pub diverged: Vec<String>,
    /// Restart to caught up, per restart.
    pub restart_times: Vec<Duration>,
    /// Kill -9 of all three and restart done (and checked).
    pub full_restart: bool,
    pub full_restart_time: Duration,
    pub elapsed: Duration,
    /// Set when the campaign could not go on.
    pub aborted: Option<String>,
}

impl CrashReport {
    pub fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.failed_restarts.is_empty()
            && self.diverged.is_empty()
            && self.refused.is_empty()
            && self.aborted.is_none()
    }
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p50, p99, max) = percentiles(&self.restart_times);
        writeln!(f, "crash campaign (seed {})", self.seed)?;
        writeln!(
            f,
            "  kills done:        {} (leader {}, follower {}), plus a final kill -9 of all nodes: {}",
            self.kills,
            self.leader_kills,
            self.kills - self.leader_kills,
            if self.full_restart {
                "done"
            } else {
                "not reached"
            }
        )?;
        writeln!(
            f,
            "  writes acked:      {} ({:.0}/s; +{} confirmed by ALREADY_EXISTS on retry, {} outcome unknown)",
            self.acked,
            self.acked as f64 / self.elapsed.as_secs_f64().max(0.001),
            self.confirmed,
            self.unknown
        )?;
        if self.unexplained > 0 {
            writeln!(
                f,
                "    of which {} failed without a reason from the directory, e.g. {:?}",
                self.unexplained, self.unexplained_samples
            )?;
        }
        writeln!(f, "  read-backs:        {}", self.checks)?;
        writeln!(f, "  lost acks:         {}", self.lost.len())?;
        for l in self.lost.iter().take(20) {
            writeln!(f, "    lost: {l}")?;
        }
        writeln!(f, "  failed restarts:   {}", self.failed_restarts.len())?;
        for r in &self.failed_restarts {
            writeln!(f, "    kill {} node {}: {}", r.kill, r.node, r.what)?;
        }
        writeln!(f, "  diverged copies:   {}", self.diverged.len())?;
        for d in &self.diverged {
            writeln!(f, "    {d}")?;
        }
        if !self.refused.is_empty() {
            writeln!(f, "  unexpected refusals: {:?}", self.refused)?;
        }
        writeln!(
            f,
            "  restart to caught up: p50 {p50} ms, p99 {p99} ms, max {max} ms; all three: {} ms",
            self.full_restart_time.as_millis()
        )?;
        if let Some(a) = &self.aborted {
            writeln!(f, "  ABORTED: {a}")?;
        }
        write!(f, "  time taken:        {}", secs(self.elapsed))
    }
}

/// Waits until node `id` serves as follower or leader and has applied `revision`.
/// Err: what went wrong (exited, or not caught up in time).
fn wait_caught_up(
    rt: &tokio::runtime::Runtime,
    c: &mut Cluster,
    id: u64,
    revision: u64,
    limit: Duration,
) -> std::result::Result<Duration, String> {
    let start = Instant::now();
    let addr = c.node(id).addr.clone();
    let mut last = None;
    loop {
        if !c.is_running(id) {
            return Err(format!(
                "node {id} exited {:?} after its restart",
                start.elapsed()
            ));
        }
        if let Some((state, applied)) = node_state(rt, &addr, id) {
            if (state == "follower" || state == "leader") && applied >= revision {
                return Ok(start.elapsed());
            }
            last = Some((state, applied));
        }
        if start.elapsed() >= limit {
            return Err(format!(
                "node {id} did not catch up to revision {revision} within {limit:?} (last seen: {last:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the crash campaign.
pub fn crash_campaign(cfg: &CrashConfig) -> Result<CrashReport> {
    let started = Instant::now();
    let mut rng = Rng::new(cfg.seed);
    let mut report = CrashReport {
        seed: cfg.seed,
        ..CrashReport::default()
    };
    let opts = ClusterOpts {
        lease: cfg.lease,
        extra: vec!["--snapshot-every".into(), cfg.snapshot_every.to_string()],
        // Plain text: this campaign drives the nodes with in-process clients and is
        // about storage, not about who may speak.
        insecure: true,
        ..ClusterOpts::default()
    };
    let mut c = Cluster::start(3, opts);
    let ids = c.ids();
    let all = addrs_of(&c, &ids);
    let rt = runtime();
    let admin = client(all.clone(), Duration::from_secs(3));
    let ledger: SharedLedger = Arc::default();
    let prefix = "s-";
    let writers = Writers::start(&rt, all.clone(), cfg.writers, cfg.rate, prefix, &ledger);
    let log = |s: String| {
        if cfg.verbose {
            println!("{s}");
        }
    };

    let outcome = (|| -> std::result::Result<(), String> {
        for k in 1..=cfg.kills {
            let leader = rt
                .block_on(admin.cluster_status())
                .ok()
                .and_then(|s| s.leader);
            let victim = match leader {
                Some(l) if rng.chance(0.5) => l,
                Some(l) => {
                    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != l).collect();
                    *rng.pick(&others)
                }
                None => *rng.pick(&ids),
            };
            let was_leader = leader == Some(victim);
            // Let writes flow, then kill in the middle of them.
            std::thread::sleep(rng.millis(0, 300));
            c.kill9(victim);
            let down = rng.millis(0, cfg.down_max.as_millis() as u64);
            std::thread::sleep(down);
            let target = ledger.lock().unwrap().max_revision;
            c.restart(victim);
            report.kills = k;
            if was_leader {
                report.leader_kills += 1;
            }
            let mut back = wait_caught_up(&rt, &mut c, victim, target, cfg.restart_limit);
            if let Err(what) = &back {
                let log_tail = strip_ansi(&tail(c.node(victim).proc.log(), 80));
                eprintln!(
                    "FAILED RESTART at kill {k}: {what}\n----- node {victim} log -----\n{log_tail}\n-----"
                );
                report.failed_restarts.push(FailedRestart {
                    kill: k,
                    node: victim,
                    what: what.clone(),
                    log_tail,
                });
                // Try once more, so that one failure does not end the campaign.
                c.restart(victim);
                back = wait_caught_up(&rt, &mut c, victim, target, cfg.restart_limit);
                if let Err(again) = back {
                    return Err(format!(
                        "node {victim} did not come back after a second restart: {again}"
                    ));
                }
            }
            let took = back.expect("checked");
            report.restart_times.push(took);
            let acked = ledger.lock().unwrap().acked.len();
            log(format!(
                "kill {k}: node {victim}{} down {down:?}, caught up to {target} in {took:?}; {acked} acked",
                if was_leader { " (leader)" } else { "" },
            ));
            if !cfg.verbose && k % 25 == 0 {
                println!(
                    "  {k}/{} kills, {acked} writes acked, {} lost, {} failed restarts, {}",
                    cfg.kills,
                    report.lost.len(),
                    report.failed_restarts.len(),
                    secs(started.elapsed())
                );
            }
            if k % cfg.check_every == 0 || k == cfg.kills {
                let (lost, read) =
                    check_ledger(&rt, all.clone(), &ledger, prefix).map_err(|e| e.to_string())?;
                report.checks += 1;
                log(format!(
                    "check after kill {k}: {} servers at revision {}, {} lost",
                    read.names.len(),
                    read.revision,
                    lost.len()
                ));
                for l in lost {
                    if !report.lost.contains(&l) {
                        eprintln!("LOST ACK after kill {k}: {l}");
                        report.lost.push(l);
                    }
                }
            }
        }

        // The final blow: kill -9 every node at once, with writes in flight, and restart.
        let target = ledger.lock().unwrap().max_revision;
        for id in &ids {
            c.kill9(*id);
        }
        std::thread::sleep(rng.millis(100, 1000));
        let t = Instant::now();
        for id in &ids {
            c.restart(*id);
        }
        for id in &ids {
            if let Err(what) = wait_caught_up(&rt, &mut c, *id, target, cfg.restart_limit * 2) {
                let log_tail = strip_ansi(&tail(c.node(*id).proc.log(), 80));
                eprintln!(
                    "FAILED RESTART after kill -9 of all: {what}\n----- node {id} log -----\n{log_tail}\n-----"
                );
                report.failed_restarts.push(FailedRestart {
                    kill: cfg.kills + 1,
                    node: *id,
                    what,
                    log_tail,
                });
                return Err("a node did not come back after kill -9 of all nodes".into());
            }
        }
        report.full_restart_time = t.elapsed();
        report.full_restart = true;
        log(format!("all three back in {:?}", t.elapsed()));
        Ok(())
    })();

    writers.stop(&rt);
    if let Err(e) = outcome {
        report.aborted = Some(e);
    } else {
        // Final read-back, and every node's local copy equals the leader's.
        match check_ledger(&rt, all.clone(), &ledger, prefix) {
            Ok((lost, read)) => {
                report.checks += 1;
                for l in lost {
                    if !report.lost.contains(&l) {
                        eprintln!("LOST ACK at the end: {l}");
                        report.lost.push(l);
                    }
                }
                for id in &ids {
                    let addr = c.node(*id).addr.clone();
                    let copy = try_wait_until(Duration::from_secs(30), || {
                        read_stale(&rt, &addr).filter(|r| r.revision >= read.revision)
                    });
                    match copy {
                        None => report.diverged.push(format!(
                            "node {id} never reached revision {}",
                            read.revision
                        )),
                        Some(r) if r.revision == read.revision && r.names != read.names => {
                            report.diverged.push(format!(
                                "node {id} at revision {} holds {} servers, the leader {}",
                                r.revision,
                                r.names.len(),
                                read.names.len()
                            ))
                        }
                        Some(r) if !read.names.is_subset(&r.names) => {
                            report.diverged.push(format!(
                                "node {id} at revision {} lacks servers the leader has",
                                r.revision
                            ))
                        }
                        Some(_) => {}
                    }
                }
            }
            Err(e) => report.aborted = Some(format!("final read-back: {e}")),
        }
    }
    {
        let l = ledger.lock().unwrap();
        report.acked = l.acked.len();
        report.confirmed = l.confirmed.len();
        report.unknown = l.unknown.len();
        report.unexplained = l.unexplained;
        report.unexplained_samples = l.unexplained_samples.clone();
        report.refused = l.refused.clone();
    }
    report.elapsed = started.elapsed();
    if !report.clean() {
        c.dump_logs();
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// Corruption campaign
// ---------------------------------------------------------------------------------------

/// A kind of damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    LogFlip,
    LogTruncate,
    VoteFlip,
    VoteTruncate,
    CommittedFlip,
    CommittedTruncate,
    PurgedFlip,
    PurgedTruncate,
    FormatFlip,
    FormatTruncate,
    SnapMetaFlip,
    SnapMetaTruncate,
    SnapDataFlip,
    SnapDataTruncate,
    SledFlip1,
    SledFlip8,
    SledTruncSmall,
    SledTruncLarge,
    SledSnapFlip,
    SledConfFlip,
    // Not in the default cycle (not a flipped bit or a truncated tail): a whole value gone.
    VoteRemove,
    LogRemoveLast,
}

impl Kind {
    /// The default cycle: flipped bits and truncated tails.
    pub const ALL: [Kind; 20] = [
        Kind::LogFlip,
        Kind::LogTruncate,
        Kind::VoteFlip,
        Kind::VoteTruncate,
        Kind::CommittedFlip,
        Kind::CommittedTruncate,
        Kind::PurgedFlip,
        Kind::PurgedTruncate,
        Kind::FormatFlip,
        Kind::FormatTruncate,
        Kind::SnapMetaFlip,
        Kind::SnapMetaTruncate,
        Kind::SnapDataFlip,
        Kind::SnapDataTruncate,
        Kind::SledFlip1,
        Kind::SledFlip8,
        Kind::SledTruncSmall,
        Kind::SledTruncLarge,
        Kind::SledSnapFlip,
        Kind::SledConfFlip,
    ];

    /// Further kinds, chosen only by name: a stored value removed outright.
    pub const EXTRA: [Kind; 2] = [Kind::VoteRemove, Kind::LogRemoveLast];

    /// The logical kinds (one stored value, through `baton_store::fault`).
    pub fn logical() -> Vec<Kind> {
        Kind::ALL.into_iter().filter(|k| !k.is_raw()).collect()
    }

    /// The raw kinds (sled's own files).
    pub fn raw() -> Vec<Kind> {
        Kind::ALL.into_iter().filter(|k| k.is_raw()).collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::LogFlip => "log-flip",
            Kind::LogTruncate => "log-truncate",
            Kind::VoteFlip => "vote-flip",
            Kind::VoteTruncate => "vote-truncate",
            Kind::CommittedFlip => "committed-flip",
            Kind::CommittedTruncate => "committed-truncate",
            Kind::PurgedFlip => "purged-flip",
            Kind::PurgedTruncate => "purged-truncate",
            Kind::FormatFlip => "format-flip",
            Kind::FormatTruncate => "format-truncate",
            Kind::SnapMetaFlip => "snapmeta-flip",
            Kind::SnapMetaTruncate => "snapmeta-truncate",
            Kind::SnapDataFlip => "snapdata-flip",
            Kind::SnapDataTruncate => "snapdata-truncate",
            Kind::SledFlip1 => "sled-flip-1",
            Kind::SledFlip8 => "sled-flip-8",
            Kind::SledTruncSmall => "sled-trunc-small",
            Kind::SledTruncLarge => "sled-trunc-large",
            Kind::SledSnapFlip => "sled-snap-flip",
            Kind::SledConfFlip => "sled-conf-flip",
            Kind::VoteRemove => "vote-remove",
            Kind::LogRemoveLast => "log-remove-last",
        }
    }

    pub fn about(self) -> &'static str {
        match self {
            Kind::LogFlip => "one bit of a stored log entry (checksum included)",
            Kind::LogTruncate => "a stored log entry cut short",
            Kind::VoteFlip => "one bit of the stored vote",
            Kind::VoteTruncate => "the stored vote cut short",
            Kind::CommittedFlip => "one bit of the stored committed log id",
            Kind::CommittedTruncate => "the stored committed log id cut short",
            Kind::PurgedFlip => "one bit of the purge mark",
            Kind::PurgedTruncate => "the purge mark cut short",
            Kind::FormatFlip => "one bit of the format marker",
            Kind::FormatTruncate => "the format marker cut short",
            Kind::SnapMetaFlip => "one bit of the stored snapshot's metadata",
            Kind::SnapMetaTruncate => "the stored snapshot's metadata cut short",
            Kind::SnapDataFlip => "one bit of the stored snapshot's bytes",
            Kind::SnapDataTruncate => "the stored snapshot's bytes cut short",
            Kind::SledFlip1 => "one bit flipped in the written part of sled's `db` file",
            Kind::SledFlip8 => "eight bits flipped in the written part of sled's `db` file",
            Kind::SledTruncSmall => "the last 1..512 written bytes of sled's `db` file cut off",
            Kind::SledTruncLarge => "up to half of the written part of sled's `db` file cut off",
            Kind::SledSnapFlip => {
                "one bit of sled's own page-table snapshot (`snap.*`, written when sled reopens)"
            }
            Kind::SledConfFlip => "one bit of sled's `conf` file",
            Kind::VoteRemove => "the stored vote removed (extra kind)",
            Kind::LogRemoveLast => "the last stored log entry removed (extra kind)",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .chain(Kind::EXTRA)
            .find(|k| k.name() == s)
    }

    pub fn is_raw(self) -> bool {
        matches!(
            self,
            Kind::SledFlip1
                | Kind::SledFlip8
                | Kind::SledTruncSmall
                | Kind::SledTruncLarge
                | Kind::SledSnapFlip
                | Kind::SledConfFlip
        )
    }

    /// Needs a stored snapshot (and, for the purge mark, a purge).
    fn needs_snapshot(self) -> bool {
        matches!(
            self,
            Kind::PurgedFlip
                | Kind::PurgedTruncate
                | Kind::SnapMetaFlip
                | Kind::SnapMetaTruncate
                | Kind::SnapDataFlip
                | Kind::SnapDataTruncate
        )
    }

    /// The stored value a logical kind damages (`None` for raw kinds; log entries are
    /// chosen per case).
    fn target(self) -> Option<Target> {
        Some(match self {
            Kind::VoteFlip | Kind::VoteTruncate | Kind::VoteRemove => Target::Vote,
            Kind::CommittedFlip | Kind::CommittedTruncate => Target::Committed,
            Kind::PurgedFlip | Kind::PurgedTruncate => Target::LastPurged,
            Kind::FormatFlip | Kind::FormatTruncate => Target::Format,
            Kind::SnapMetaFlip | Kind::SnapMetaTruncate => Target::SnapshotMeta,
            Kind::SnapDataFlip | Kind::SnapDataTruncate => Target::SnapshotData,
            _ => return None,
        })
    }

    fn is_flip(self) -> bool {
        matches!(
            self,
            Kind::LogFlip
                | Kind::VoteFlip
                | Kind::CommittedFlip
                | Kind::PurgedFlip
                | Kind::FormatFlip
                | Kind::SnapMetaFlip
                | Kind::SnapDataFlip
        )
    }
}

/// Settings of the corruption campaign.
#[derive(Clone, Debug)]
pub struct CorruptConfig {
    pub cases: usize,
    /// Kinds to cycle through, in order (each case takes the next one).
    pub kinds: Vec<Kind>,
    /// Re-add a refusing node the way its message says, and check it comes back.
    pub readd: bool,
    pub lease: Option<Duration>,
    pub seed: u64,
    pub verbose: bool,
}

impl Default for CorruptConfig {
    fn default() -> Self {
        CorruptConfig {
            cases: 100,
            kinds: Kind::ALL.to_vec(),
            readd: true,
            lease: None,
            seed: default_seed(),
            verbose: false,
        }
    }
}

impl CorruptConfig {
    fn parse(args: &[String]) -> Result<CorruptConfig> {
        let mut c = CorruptConfig::default();
        let mut verbose = false;
        parse_flags(args, &mut verbose, |flag, v| {
            match flag {
                "--cases" => c.cases = v.parse()?,
                "--kinds" => {
                    c.kinds = match v {
                        "logical" => Kind::logical(),
                        "raw" => Kind::raw(),
                        _ => v
                            .split(',')
                            .map(|k| {
                                Kind::from_name(k.trim()).ok_or_else(|| {
                                    anyhow!("unknown kind {k:?} (see `crashes kinds`)")
                                })
                            })
                            .collect::<Result<_>>()?,
                    }
                }
                "--no-readd" => c.readd = false,
                "--lease" => c.lease = Some(parse_duration(v).map_err(anyhow::Error::msg)?),
                "--seed" => c.seed = v.parse()?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        c.verbose = verbose;
        if c.kinds.is_empty() {
            bail!("--kinds is empty");
        }
        Ok(c)
    }
}

/// How a damaged node behaved when started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exited non-zero with an `error:` line that names the problem and says "re-add".
    Refused { line: String },
    /// Exited non-zero, but its message does not say how to re-add the node.
    RefusedWithoutRemedy { code: i32, line: String },
    /// Panicked instead of refusing.
    Panicked { code: i32, text: String },
    /// Neither served nor exited in time.
    Hung,
    /// Started and converged on the leader's data; its store still holds everything Raft
    /// needs that it held before the damage (the damaged bytes held nothing live, or sled
    /// rolled back to an earlier point that differs only in what Raft can do without: an
    /// older committed hint, snapshot or purge point; see `Verified::keeps_everything_of`).
    StartedIntact,
    /// Started and converged on the leader's data, but its store silently lost data (sled
    /// dropped what followed the damage, or a removed value was not missed): undetected
    /// damage, repaired by Raft.
    StartedLostData { detail: String },
    /// Started but never caught up with the leader: it keeps serving an old state.
    Stuck { detail: String },
    /// Started and served data that differs from the leader's at the same revision.
    WrongData { detail: String },
}

impl Outcome {
    fn column(&self) -> usize {
        match self {
            Outcome::Refused { .. } => 0,
            Outcome::RefusedWithoutRemedy { .. } => 1,
            Outcome::StartedIntact => 2,
            Outcome::StartedLostData { .. } => 3,
            Outcome::Stuck { .. } => 4,
            Outcome::WrongData { .. } => 5,
            Outcome::Panicked { .. } | Outcome::Hung => 6,
        }
    }

    /// Detected and refused as the issue asks.
    pub fn refused_with_remedy(&self) -> bool {
        matches!(self, Outcome::Refused { .. })
    }
}

/// One case of the corruption campaign.
#[derive(Clone, Debug)]
pub struct Case {
    pub n: usize,
    pub kind: Kind,
    /// What was damaged, exactly.
    pub damage: String,
    pub node: u64,
    /// How the node was stopped: "SIGTERM" or "kill -9".
    pub stop: &'static str,
    pub snapshot_every: u64,
    pub writes: usize,
    /// What `baton_store::open` saw before and after the damage.
    pub before: String,
    pub after: String,
    pub outcome: Outcome,
    /// The other two nodes took a write and served a linearizable read while the damaged
    /// node was down and while it was refusing or catching up.
    pub cluster_served: bool,
    /// Acknowledged writes missing cluster-wide at the end of the case.
    pub lost: Vec<String>,
    /// The final read-back through the other two nodes failed (why).
    pub unavailable: Option<String>,
    /// Panics in the logs of the other two (healthy) nodes.
    pub panics: Vec<String>,
    /// Re-adding a refusing node as its message says: None if not tried.
    pub readd: Option<std::result::Result<Duration, String>>,
    pub elapsed: Duration,
}

impl Case {
    /// Everything asked of this case: safe, and the damage either refused with the
    /// remedy or harmless (it hit bytes that held nothing live, the store is intact, and
    /// starting was right). A campaign that counted an intact store as a failure exited
    /// 1 on a case with nothing to detect.
    pub fn ok(&self) -> bool {
        self.safe()
            && matches!(
                self.outcome,
                Outcome::Refused { .. } | Outcome::StartedIntact
            )
    }

    /// The weaker property that holds even for damage the store cannot see: the cluster
    /// serves, nothing acknowledged is lost, and a node that starts converges on the
    /// leader's data (or refuses cleanly).
    pub fn safe(&self) -> bool {
        self.cluster_served
            && self.lost.is_empty()
            && self.unavailable.is_none()
            && self.panics.is_empty()
            && !matches!(self.readd, Some(Err(_)))
            && matches!(
                self.outcome,
                Outcome::Refused { .. } | Outcome::StartedIntact | Outcome::StartedLostData { .. }
            )
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match &self.outcome {
            Outcome::Refused { line } => format!("refused: {line}"),
            Outcome::RefusedWithoutRemedy { code, line } => {
                format!("refused WITHOUT remedy (exit {code}): {line}")
            }
            Outcome::Panicked { code, text } => format!("PANICKED (exit {code}): {text}"),
            Outcome::Hung => "HUNG (neither served nor exited)".into(),
            Outcome::StartedIntact => "started; store unchanged by the damage; converged".into(),
            Outcome::StartedLostData { detail } => {
                format!("started UNDETECTED, the store lost data ({detail}); converged")
            }
            Outcome::Stuck { detail } => format!("STUCK on old data: {detail}"),
            Outcome::WrongData { detail } => format!("WRONG DATA: {detail}"),
        };
        write!(
            f,
            "case {:>3} {:<18} node {} ({}, {} writes, snapshot every {}): {}\n      store before: {}\n      store after:  {}\n      -> {outcome}",
            self.n,
            self.kind.name(),
            self.node,
            self.stop,
            self.writes,
            self.snapshot_every,
            self.damage,
            self.before,
            self.after,
        )?;
        if !self.cluster_served {
            write!(f, "\n      the other nodes did NOT keep serving")?;
        }
        if !self.lost.is_empty() {
            write!(f, "\n      LOST ACKS: {:?}", self.lost)?;
        }
        if let Some(u) = &self.unavailable {
            write!(f, "\n      UNAVAILABLE at the end: {u}")?;
        }
        for p in &self.panics {
            write!(f, "\n      PANIC on a healthy node: {p}")?;
        }
        match &self.readd {
            Some(Ok(d)) => write!(
                f,
                "\n      re-added as its message says, caught up in {d:?}"
            )?,
            Some(Err(e)) => write!(f, "\n      RE-ADD FAILED: {e}")?,
            None => {}
        }
        write!(f, " [{}]", secs(self.elapsed))
    }
}

/// What the corruption campaign found.
#[derive(Debug, Default)]
pub struct CorruptReport {
    pub seed: u64,
    pub cases: Vec<Case>,
    pub elapsed: Duration,
}

impl CorruptReport {
    /// Every case detected, refused with the remedy, cluster served, nothing lost.
    pub fn clean(&self) -> bool {
        self.cases.iter().all(Case::ok)
    }
}

impl fmt::Display for CorruptReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "corruption campaign (seed {})", self.seed)?;
        writeln!(
            f,
            "  {:<18} {:>5} {:>8} {:>9} {:>7} {:>15} {:>6} {:>10} {:>10} {:>7}",
            "kind",
            "cases",
            "refused",
            "no-remedy",
            "intact",
            "lost-undetected",
            "stuck",
            "wrong-data",
            "panic/hang",
            "re-add"
        )?;
        let mut by_kind: BTreeMap<Kind, Vec<&Case>> = BTreeMap::new();
        for c in &self.cases {
            by_kind.entry(c.kind).or_default().push(c);
        }
        let mut totals = [0usize; 7];
        let mut readd_total = (0, 0);
        for (kind, cases) in &by_kind {
            let mut cols = [0usize; 7];
            for c in cases {
                cols[c.outcome.column()] += 1;
            }
            let tried = cases.iter().filter(|c| c.readd.is_some()).count();
            let worked = cases
                .iter()
                .filter(|c| matches!(c.readd, Some(Ok(_))))
                .count();
            readd_total.0 += worked;
            readd_total.1 += tried;
            for i in 0..7 {
                totals[i] += cols[i];
            }
            writeln!(
                f,
                "  {:<18} {:>5} {:>8} {:>9} {:>7} {:>15} {:>6} {:>10} {:>10} {:>7}",
                kind.name(),
                cases.len(),
                cols[0],
                cols[1],
                cols[2],
                cols[3],
                cols[4],
                cols[5],
                cols[6],
                format!("{worked}/{tried}")
            )?;
        }
        writeln!(
            f,
            "  {:<18} {:>5} {:>8} {:>9} {:>7} {:>15} {:>6} {:>10} {:>10} {:>7}",
            "total",
            self.cases.len(),
            totals[0],
            totals[1],
            totals[2],
            totals[3],
            totals[4],
            totals[5],
            totals[6],
            format!("{}/{}", readd_total.0, readd_total.1)
        )?;
        let served = self.cases.iter().filter(|c| c.cluster_served).count();
        let lost: usize = self.cases.iter().map(|c| c.lost.len()).sum();
        let unavailable = self
            .cases
            .iter()
            .filter(|c| c.unavailable.is_some())
            .count();
        let panics = self.cases.iter().filter(|c| !c.panics.is_empty()).count();
        writeln!(
            f,
            "  the other two nodes kept serving in {served}/{} cases; lost acks: {lost}",
            self.cases.len()
        )?;
        writeln!(
            f,
            "  cases where a healthy node panicked: {panics}; cluster unavailable at the end: {unavailable}"
        )?;
        let bad: Vec<&Case> = self.cases.iter().filter(|c| !c.ok()).collect();
        if !bad.is_empty() {
            writeln!(f, "  cases not detected-and-refused-with-remedy:")?;
            for c in bad {
                writeln!(f, "  {c}")?;
            }
        }
        write!(f, "  time taken: {}", secs(self.elapsed))
    }
}

/// The arguments a running process was started with (from /proc), program name excluded.
fn proc_args(pid: u32) -> Result<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// A `baton` process this campaign started itself (so that it can see its exit code),
/// killed with its process group on drop.
struct OwnNode {
    child: Child,
    log: PathBuf,
}

impl OwnNode {
    fn spawn(args: &[String], log: PathBuf) -> Result<OwnNode> {
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(crate::baton_bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
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
        let child = cmd.spawn().context("starting baton directory")?;
        Ok(OwnNode { child, log })
    }

    fn exited(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| s.code().unwrap_or(-1))
    }

    fn output(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        // SAFETY: plain syscall on our own child's process group.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// Opens a copy of the store in `dir` with `baton_store::open` (which verifies all of it)
/// and says what sled holds. The copy leaves out the high-water mark (`mark-*`), which
/// would refuse a rolled-back store: this looks at sled's own contents.
fn inspect(dir: &Path, scratch: &Path) -> std::result::Result<Verified, String> {
    let _ = std::fs::remove_dir_all(scratch);
    copy_dir(dir, scratch).map_err(|e| format!("cannot copy {}: {e}", dir.display()))?;
    for slot in ["mark-0", "mark-1"] {
        let _ = std::fs::remove_file(scratch.join(slot));
    }
    let s = scratch.to_path_buf();
    let r = std::panic::catch_unwind(move || {
        baton_store::open(&s)
            .and_then(|(log, _sm)| log.verify())
            .map_err(|e| e.to_string())
    });
    let _ = std::fs::remove_dir_all(scratch);
    match r {
        Ok(r) => r,
        Err(p) => Err(format!(
            "PANIC in baton_store::open: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

fn describe(v: &std::result::Result<Verified, String>) -> String {
    match v {
        Ok(v) => format!("verifies: {v}"),
        Err(e) => format!("refuses: {}", e.chars().take(300).collect::<String>()),
    }
}

/// The length of one stored value (sled opened directly; the store must be closed).
fn stored_len(dir: &Path, target: &Target) -> Result<usize> {
    let (tree, key): (&str, Vec<u8>) = match target {
        Target::LogEntry(i) => ("log", i.to_be_bytes().to_vec()),
        Target::Vote => ("meta", b"vote".to_vec()),
        Target::Committed => ("meta", b"committed".to_vec()),
        Target::LastPurged => ("meta", b"last_purged".to_vec()),
        Target::Format => ("meta", b"format".to_vec()),
        Target::Identity => ("meta", b"identity".to_vec()),
        Target::PeersWithData => ("meta", b"peers_with_data".to_vec()),
        Target::SnapshotMeta => ("sm", b"snapshot_meta".to_vec()),
        Target::SnapshotData => ("sm", b"snapshot_data".to_vec()),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let db = loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => break db,
            Err(e) if Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => bail!("sled cannot open {}: {e}", dir.display()),
        }
    };
    let v = db
        .open_tree(tree)?
        .get(&key)?
        .ok_or_else(|| anyhow!("{target:?} is not stored"))?;
    Ok(v.len())
}

/// The end of the written part of a file (after it, only zero bytes).
fn written_len(path: &Path) -> Result<u64> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    Ok(data
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |p| p as u64 + 1))
}

fn flip_bits(path: &Path, offsets: &[(u64, u8)]) -> Result<()> {
    let mut f = File::options().read(true).write(true).open(path)?;
    for (off, bit) in offsets {
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(*off))?;
        f.read_exact(&mut b)?;
        b[0] ^= 1 << (bit % 8);
        f.seek(SeekFrom::Start(*off))?;
        f.write_all(&b)?;
    }
    f.sync_all()?;
    Ok(())
}

/// Applies the case's damage to the closed store in `dir`; returns what was done.
fn apply_damage(rng: &mut Rng, kind: Kind, dir: &Path, before: &Verified) -> Result<String> {
    if kind.is_raw() {
        return raw_damage(rng, kind, dir);
    }
    let target = match kind.target() {
        Some(t) => t,
        None => {
            let (first, last) = match (before.first_log_id, before.last_log_id) {
                (Some(f), Some(l)) => (f.index, l.index),
                _ => bail!("the store holds no log entry"),
            };
            // The last entry (a truncated tail) a third of the time, else any.
            let i = if kind == Kind::LogRemoveLast || rng.chance(0.33) {
                last
            } else {
                rng.range(first, last)
            };
            Target::LogEntry(i)
        }
    };
    let len = stored_len(dir, &target)?;
    let damage = if matches!(kind, Kind::VoteRemove | Kind::LogRemoveLast) {
        Damage::Remove
    } else if kind.is_flip() {
        Damage::FlipBit {
            byte: rng.below(len as u64) as usize,
            bit: rng.below(8) as u8,
        }
    } else {
        Damage::Truncate(rng.below(len as u64) as usize)
    };
    let what = format!("{target:?} ({len} bytes): {damage:?}");
    fault::damage(dir, target, damage).with_context(|| format!("damaging {what}"))?;
    Ok(what)
}

fn raw_damage(rng: &mut Rng, kind: Kind, dir: &Path) -> Result<String> {
    let db = dir.join("db");
    let used = written_len(&db)?;
    let size = std::fs::metadata(&db)?.len();
    if used == 0 {
        bail!("{} holds nothing", db.display());
    }
    Ok(match kind {
        Kind::SledFlip1 | Kind::SledFlip8 => {
            let n = if kind == Kind::SledFlip1 { 1 } else { 8 };
            let offsets: Vec<(u64, u8)> = (0..n)
                .map(|_| (rng.below(used), rng.below(8) as u8))
                .collect();
            flip_bits(&db, &offsets)?;
            format!("db ({size} bytes, {used} written): bits flipped at {offsets:?}")
        }
        Kind::SledTruncSmall | Kind::SledTruncLarge => {
            let cut = if kind == Kind::SledTruncSmall {
                rng.range(1, 512.min(used))
            } else {
                rng.range(1, (used / 2).max(1))
            };
            let f = File::options().write(true).open(&db)?;
            f.set_len(used - cut)?;
            f.sync_all()?;
            format!(
                "db ({size} bytes, {used} written): cut to {} bytes ({cut} written bytes lost)",
                used - cut
            )
        }
        Kind::SledSnapFlip | Kind::SledConfFlip => {
            let snap = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("snap."))
                })
                .max();
            let (p, note) = match snap {
                Some(p) if kind == Kind::SledSnapFlip => (p, ""),
                _ if kind == Kind::SledSnapFlip => (dir.join("conf"), "no snap.* file; "),
                _ => (dir.join("conf"), ""),
            };
            let len = std::fs::metadata(&p)?.len();
            let at = (rng.below(len), rng.below(8) as u8);
            flip_bits(&p, &[at])?;
            format!(
                "{note}{} ({len} bytes): bit flipped at {at:?}",
                p.file_name().unwrap_or_default().to_string_lossy()
            )
        }
        _ => unreachable!("logical kind {kind:?}"),
    })
}

/// Runs the corruption campaign.
pub fn corrupt_campaign(cfg: &CorruptConfig) -> Result<CorruptReport> {
    let started = Instant::now();
    let mut rng = Rng::new(cfg.seed);
    let rt = runtime();
    let mut report = CorruptReport {
        seed: cfg.seed,
        ..CorruptReport::default()
    };
    for n in 1..=cfg.cases {
        let kind = cfg.kinds[(n - 1) % cfg.kinds.len()];
        let case = corrupt_case(cfg, &rt, &mut rng, n, kind)
            .with_context(|| format!("case {n} ({})", kind.name()))?;
        if cfg.verbose || !case.ok() {
            println!("{case}");
        } else {
            println!(
                "case {:>3} {:<18} ok: {}",
                case.n,
                case.kind.name(),
                match &case.outcome {
                    Outcome::Refused { line } => line.chars().take(150).collect::<String>(),
                    _ => String::new(),
                }
            );
        }
        report.cases.push(case);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Writes `n` servers named `{prefix}{i}` through `addrs`.
fn write_many(
    rt: &tokio::runtime::Runtime,
    addrs: &[String],
    prefix: &str,
    n: usize,
    ledger: &SharedLedger,
) -> Result<()> {
    let c = client(addrs.to_vec(), Duration::from_secs(10));
    for i in 0..n {
        let name = format!("{prefix}{i}");
        ledger.lock().unwrap().attempted.insert(name.clone());
        let r = rt.block_on(c.apply(add_server(&name)));
        if let Err(e) = &r {
            bail!("write {name}: {e}");
        }
        ledger.lock().unwrap().record(name, r);
    }
    Ok(())
}

/// One write and one linearizable read-back through `addrs` (the healthy nodes).
fn serves(
    rt: &tokio::runtime::Runtime,
    addrs: &[String],
    name: &str,
    ledger: &SharedLedger,
) -> bool {
    write_one(rt, addrs.to_vec(), name, ledger).is_ok()
        && check_ledger(rt, addrs.to_vec(), ledger, "c-").is_ok_and(|(lost, _)| lost.is_empty())
}

/// Waits until node `addr`'s local copy equals a linearizable read of the healthy nodes at
/// the same revision. Err: the difference, or that it never got there.
fn converges(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    healthy: &[String],
    limit: Duration,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no read");
    loop {
        let leader = read_all(rt, healthy.to_vec(), Duration::from_secs(10))
            .map_err(|e| format!("the healthy nodes stopped answering: {e}"))?;
        if let Some(mine) = read_stale(rt, addr) {
            if mine.revision == leader.revision {
                if mine.names == leader.names {
                    return Ok(());
                }
                let missing: Vec<_> = leader.names.difference(&mine.names).take(5).collect();
                let extra: Vec<_> = mine.names.difference(&leader.names).take(5).collect();
                return Err(format!(
                    "at revision {} the node holds {} servers, the leader {} (missing {missing:?}, extra {extra:?})",
                    mine.revision,
                    mine.names.len(),
                    leader.names.len()
                ));
            }
            last = format!(
                "node at revision {}, leader at {}",
                mine.revision, leader.revision
            );
        }
        if Instant::now() >= deadline {
            return Err(format!("did not converge within {limit:?}: {last}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts the damaged node and watches what it does.
fn start_damaged(
    rt: &tokio::runtime::Runtime,
    args: &[String],
    log: PathBuf,
    addr: &str,
    id: u64,
) -> Result<(OwnNode, Option<(i32, String)>)> {
    let mut node = OwnNode::spawn(args, log)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(code) = node.exited() {
            let out = node.output();
            return Ok((node, Some((code, out))));
        }
        if let Some((state, _)) = node_state(rt, addr, id)
            && (state == "follower" || state == "leader")
        {
            return Ok((node, None));
        }
        if Instant::now() >= deadline {
            return Ok((node, Some((i32::MIN, String::new()))));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn corrupt_case(
    cfg: &CorruptConfig,
    rt: &tokio::runtime::Runtime,
    rng: &mut Rng,
    n: usize,
    kind: Kind,
) -> Result<Case> {
    let started = Instant::now();
    let snapshot = kind.needs_snapshot() || rng.chance(0.5);
    let snapshot_every = if snapshot { 20 } else { 10_000 };
    let writes = if snapshot {
        rng.range(60, 90) as usize
    } else {
        rng.range(20, 60) as usize
    };
    let opts = ClusterOpts {
        lease: cfg.lease,
        extra: vec!["--snapshot-every".into(), snapshot_every.to_string()],
        // Plain text: this campaign drives the nodes with in-process clients and is
        // about storage, not about who may speak.
        insecure: true,
        ..ClusterOpts::default()
    };
    let mut c = Cluster::start(3, opts);
    let ids = c.ids();
    let all = addrs_of(&c, &ids);
    let ledger: SharedLedger = Arc::default();
    write_many(rt, &all, &format!("c-{n}-"), writes, &ledger)?;

    let victim = *rng.pick(&ids);
    let healthy_ids: Vec<u64> = ids.iter().copied().filter(|i| *i != victim).collect();
    let healthy = addrs_of(&c, &healthy_ids);
    let addr = c.node(victim).addr.clone();
    let data_dir = c.node(victim).data_dir.clone();
    if kind == Kind::SledSnapFlip {
        // sled writes its page-table snapshot (snap.*) when it reopens a database.
        c.stop(victim);
        c.restart(victim);
    }
    let stop_mode: &'static str = if rng.chance(0.5) {
        "SIGTERM"
    } else {
        "kill -9"
    };
    let scratch = c.dir().join("inspect");
    let mut extra = 0;
    let (args, before) = loop {
        // Make sure the victim holds everything, then stop it.
        let target = ledger.lock().unwrap().max_revision;
        try_wait_until(Duration::from_secs(10), || {
            node_state(rt, &addr, victim).filter(|(_, a)| *a >= target)
        });
        let pid = c.node(victim).proc.pid().context("victim not running")?;
        let args = proc_args(pid)?;
        if stop_mode == "SIGTERM" {
            c.stop(victim);
        } else {
            c.kill9(victim);
        }
        let before = inspect(&data_dir, &scratch);
        let Ok(v) = &before else {
            bail!(
                "node {victim}'s store does not verify before any damage ({stop_mode}): {}",
                describe(&before)
            );
        };
        // Snapshot kinds need a stored snapshot and a purge mark: write more until the
        // victim has both.
        if !kind.needs_snapshot() || (v.snapshot.is_some() && v.last_purged.is_some()) {
            break (args, before);
        }
        if extra >= 3 {
            bail!(
                "no snapshot or purge mark on node {victim} after {} writes: {}",
                writes + 25 * extra,
                describe(&before)
            );
        }
        extra += 1;
        c.restart(victim);
        write_many(rt, &all, &format!("c-{n}-more{extra}-"), 25, &ledger)?;
    };
    let stop = stop_mode;
    let mut cluster_served = serves(rt, &healthy, &format!("c-{n}-down"), &ledger);
    let before_v = before.as_ref().expect("checked");
    let damage = apply_damage(rng, kind, &data_dir, before_v)?;
    let after = inspect(&data_dir, &scratch);

    let (mut node, exit) = start_damaged(
        rt,
        &args,
        c.dir().join(format!("node{victim}-damaged.log")),
        &addr,
        victim,
    )?;
    cluster_served &= serves(rt, &healthy, &format!("c-{n}-damaged"), &ledger);
    let outcome = match exit {
        Some((i32::MIN, _)) => Outcome::Hung,
        Some((code, out)) => {
            let line = out
                .lines()
                .rev()
                .find(|l| l.starts_with("error: "))
                .unwrap_or_default()
                .to_string();
            if out.contains("panicked at") {
                Outcome::Panicked {
                    code,
                    text: out
                        .lines()
                        .filter(|l| l.contains("panicked at") || l.contains("error"))
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" | "),
                }
            } else if code != 0 && line.contains("re-add") && line.contains("storage") {
                Outcome::Refused { line }
            } else {
                Outcome::RefusedWithoutRemedy {
                    code,
                    line: if line.is_empty() {
                        tail(&node.log, 3)
                    } else {
                        line
                    },
                }
            }
        }
        None => match converges(rt, &addr, &healthy, Duration::from_secs(30)) {
            Err(detail) if !detail.starts_with("at revision") => Outcome::Stuck { detail },
            Err(detail) => Outcome::WrongData { detail },
            Ok(()) => match (&before, &after) {
                (Ok(b), Ok(a)) if a.keeps_everything_of(b) => Outcome::StartedIntact,
                (Ok(b), Ok(a)) => Outcome::StartedLostData {
                    detail: format!(
                        "{} -> {} log entries, last {:?} -> {:?}, vote {} -> {}, snapshot at {:?} -> {:?}, purged {:?} -> {:?}",
                        b.entries,
                        a.entries,
                        b.last_log_id.map(|l| l.index),
                        a.last_log_id.map(|l| l.index),
                        b.vote.map_or("none".into(), |v| v.to_string()),
                        a.vote.map_or("none".into(), |v| v.to_string()),
                        b.snapshot.as_ref().map(|s| s.last_log_id.map(|l| l.index)),
                        a.snapshot.as_ref().map(|s| s.last_log_id.map(|l| l.index)),
                        b.last_purged.map(|l| l.index),
                        a.last_purged.map(|l| l.index),
                    ),
                },
                (_, Err(e)) => Outcome::WrongData {
                    detail: format!(
                        "the store refuses the damaged copy ({e}) but the node started"
                    ),
                },
                (Err(_), _) => unreachable!("checked above"),
            },
        },
    };
    if matches!(
        outcome,
        Outcome::StartedIntact | Outcome::StartedLostData { .. }
    ) {
        // It must stay up, too: damage found later stops the node.
        if let Some(code) = node.exited() {
            bail!(
                "node {victim} started, converged, then exited with {code}:\n{}",
                tail(&node.log, 20)
            );
        }
    }

    // Re-add a refusing node as its message says: remove it, move its data aside, start
    // it empty with --join.
    drop(node);
    let mut readded = None;
    let mut readd = None;
    if cfg.readd && matches!(outcome, Outcome::Refused { .. }) {
        let log = c.dir().join(format!("node{victim}-readded.log"));
        readd = Some(
            match readd_node(rt, victim, &args, &data_dir, &addr, &healthy, log) {
                Ok((node, took)) => {
                    readded = Some(node);
                    Ok(took)
                }
                Err(e) => Err(format!("{e:#}")),
            },
        );
    }

    let (lost, unavailable) = match check_ledger(rt, healthy.clone(), &ledger, "c-") {
        Ok((lost, _)) => (lost, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    drop(readded);
    let panics = healthy_ids
        .iter()
        .filter_map(|id| {
            let text =
                strip_ansi(&std::fs::read_to_string(c.node(*id).proc.log()).unwrap_or_default());
            let mut lines = text.lines().skip_while(|l| !l.contains("panicked at"));
            let at = lines.next()?;
            let what = lines.next().unwrap_or_default();
            Some(format!("node {id}: {at} {what}"))
        })
        .collect();
    Ok(Case {
        n,
        kind,
        damage,
        node: victim,
        stop,
        snapshot_every,
        writes,
        before: describe(&before),
        after: describe(&after),
        outcome,
        cluster_served,
        lost,
        unavailable,
        panics,
        readd,
        elapsed: started.elapsed(),
    })
}

/// Re-adds node `id` the way its refusal says: `cluster remove-node ID`, its data dir
/// moved aside, started empty with `--join`; returns it once it is a caught-up voter whose
/// local copy equals the leader's.
fn readd_node(
    rt: &tokio::runtime::Runtime,
    id: u64,
    args: &[String],
    data_dir: &Path,
    addr: &str,
    healthy: &[String],
    log: PathBuf,
) -> Result<(OwnNode, Duration)> {
    let t = Instant::now();
    let admin = client(healthy.to_vec(), Duration::from_secs(30));
    rt.block_on(admin.remove_node(id))
        .with_context(|| format!("cluster remove-node {id}"))?;
    let aside = data_dir.with_extension("damaged");
    std::fs::rename(data_dir, &aside)
        .with_context(|| format!("moving {} aside", data_dir.display()))?;
    let mut args = args.to_vec();
    let at = args
        .iter()
        .position(|a| a == "--peers")
        .context("the node was started without --peers")?;
    args[at] = "--join".into();
    args[at + 1] = healthy[0].clone();
    let mut node = OwnNode::spawn(&args, log)?;
    let revision = read_all(rt, healthy.to_vec(), Duration::from_secs(10))?.revision;
    let voter = try_wait_until(Duration::from_secs(45), || {
        if node.exited().is_some() {
            return Some(false);
        }
        let st = rt.block_on(admin.cluster_status()).ok()?;
        let n = st.nodes.iter().find(|n| n.id == id)?;
        (n.voter && n.state == "follower" && n.last_applied >= revision).then_some(true)
    });
    match voter {
        Some(true) => {}
        Some(false) => bail!("the re-added node exited:\n{}", tail(&node.log, 20)),
        None => bail!(
            "node {id} did not become a caught-up voter within 45 s:\n{}",
            tail(&node.log, 20)
        ),
    }
    converges(rt, addr, healthy, Duration::from_secs(20)).map_err(|e| anyhow!(e))?;
    Ok((node, t.elapsed()))
}

// ---------------------------------------------------------------------------------------
// What undetected damage costs
// ---------------------------------------------------------------------------------------

/// What [`rollback_demo`] found.
#[derive(Debug, Default)]
pub struct RollbackReport {
    /// Writes acknowledged while the follower and the leader formed the quorum.
    pub acked: usize,
    /// Of those, missing after the leader was lost and the cut follower came back.
    pub lost: Vec<String>,
    /// What the damaged follower's store held before and after its tail was cut.
    pub before: String,
    pub after: String,
    /// How the survivors answered in the end.
    pub end: String,
}

impl fmt::Display for RollbackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rollback demonstration")?;
        writeln!(f, "  follower's store before the cut: {}", self.before)?;
        writeln!(f, "  follower's store after the cut:  {}", self.after)?;
        writeln!(f, "  survivors: {}", self.end)?;
        write!(
            f,
            "  acknowledged while it was in the quorum: {}, lost: {}{}",
            self.acked,
            self.lost.len(),
            if self.lost.is_empty() {
                String::new()
            } else {
                format!(" (e.g. {:?})", &self.lost[..self.lost.len().min(5)])
            }
        )
    }
}

/// Shows what a silent rollback of one node's sled files costs once a second fault
/// follows: with node C down, the leader L and follower F acknowledge writes X; F is
/// stopped and the tail of its sled `db` file is cut just enough to drop X; L is lost;
/// C and F come back. If F's store noticed the damage, F would refuse and C alone could
/// not elect a leader (unavailable, nothing lost); if not, C and F elect a leader
/// without X and acknowledged writes are gone.
pub fn rollback_demo() -> Result<RollbackReport> {
    let rt = runtime();
    let mut c = Cluster::start(
        3,
        ClusterOpts {
            insecure: true,
            ..ClusterOpts::default()
        },
    );
    let ids = c.ids();
    let all = addrs_of(&c, &ids);
    let ledger: SharedLedger = Arc::default();
    write_many(&rt, &all, "r-base-", 20, &ledger)?;
    let admin = client(all.clone(), Duration::from_secs(10));
    let leader = rt
        .block_on(admin.cluster_status())?
        .leader
        .context("no leader")?;
    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    let (f_id, c_id) = (others[0], others[1]);
    c.kill9(c_id);
    let quorum = addrs_of(&c, &[leader, f_id]);
    let x = Arc::new(Mutex::new(Ledger::default()));
    write_many(&rt, &quorum, "r-x-", 30, &x)?;
    let (x_names, x_first) = {
        let l = x.lock().unwrap();
        let first = l.acked.values().copied().min().unwrap_or(0);
        (l.acked.keys().cloned().collect::<Vec<_>>(), first)
    };
    let f_addr = c.node(f_id).addr.clone();
    let x_last = x.lock().unwrap().max_revision;
    try_wait_until(Duration::from_secs(10), || {
        node_state(&rt, &f_addr, f_id).filter(|(_, a)| *a >= x_last)
    });
    c.stop(f_id);

    // Cut the tail of F's db file: the smallest cut (found on copies) that drops X.
    let dir = c.node(f_id).data_dir.clone();
    let scratch = c.dir().join("inspect");
    let before = inspect(&dir, &scratch);
    cut_below(&dir, &c.dir().join("trial"), &scratch, x_first)?;
    let after = inspect(&dir, &scratch);

    // Lose the leader; bring back C and the damaged F.
    c.kill9(leader);
    c.restart(c_id);
    c.restart(f_id);
    let survivors = addrs_of(&c, &[c_id, f_id]);
    let mut report = RollbackReport {
        acked: x_names.len(),
        before: describe(&before),
        after: describe(&after),
        ..RollbackReport::default()
    };
    match read_all(&rt, survivors, Duration::from_secs(30)) {
        Ok(read) => {
            report.end = format!(
                "C and F elected a leader and serve revision {} ({} servers)",
                read.revision,
                read.names.len()
            );
            report.lost = x_names
                .into_iter()
                .filter(|n| !read.names.contains(n))
                .collect();
        }
        Err(e) => {
            report.end = format!(
                "no linearizable read within 30 s ({e}); node {f_id} running: {}",
                c.is_running(f_id)
            );
        }
    }
    Ok(report)
}

/// Cuts the tail of the `db` file of the closed store in `dir` by the smallest amount
/// (searched on copies in `trial`) after which the store's last log index is below
/// `index`. Returns the bytes cut.
fn cut_below(dir: &Path, trial: &Path, scratch: &Path, index: u64) -> Result<u64> {
    let db = dir.join("db");
    let used = written_len(&db)?;
    let last_after_cut = |cut: u64| -> Option<u64> {
        let _ = std::fs::remove_dir_all(trial);
        copy_dir(dir, trial).ok()?;
        File::options()
            .write(true)
            .open(trial.join("db"))
            .ok()?
            .set_len(used - cut)
            .ok()?;
        let v = inspect(trial, scratch).ok()?;
        Some(v.last_log_id.map_or(0, |l| l.index))
    };
    let (mut lo, mut hi) = (1u64, used - 1);
    if last_after_cut(hi).is_none_or(|l| l >= index) {
        bail!(
            "no cut of {} brings its last log index below {index}",
            db.display()
        );
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        match last_after_cut(mid) {
            Some(l) if l < index => hi = mid,
            _ => lo = mid + 1,
        }
    }
    let _ = std::fs::remove_dir_all(trial);
    File::options().write(true).open(&db)?.set_len(used - hi)?;
    Ok(hi)
}

/// What [`stuck_demo`] found.
#[derive(Debug, Default)]
pub struct StuckReport {
    pub before: String,
    pub after: String,
    /// The follower's applied revision and the leader's, after the wait.
    pub follower_revision: u64,
    pub leader_revision: u64,
    pub waited: Duration,
    pub caught_up: bool,
}

impl fmt::Display for StuckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rolled-back follower behind the leader's purge point")?;
        writeln!(f, "  follower's store before the cut: {}", self.before)?;
        writeln!(f, "  follower's store after the cut:  {}", self.after)?;
        write!(
            f,
            "  after {:?}: follower at revision {}, leader at {}: {}",
            self.waited,
            self.follower_revision,
            self.leader_revision,
            if self.caught_up { "caught up" } else { "STUCK" }
        )
    }
}

/// A follower whose sled `db` tail is cut so that its log ends before the leader's purge
/// point (the leader must send it a snapshot): does it catch up?
pub fn stuck_demo(wait: Duration) -> Result<StuckReport> {
    let rt = runtime();
    let opts = ClusterOpts {
        extra: vec!["--snapshot-every".into(), "20".into()],
        // Plain text: this campaign drives the nodes with in-process clients and is
        // about storage, not about who may speak.
        insecure: true,
        ..ClusterOpts::default()
    };
    let mut c = Cluster::start(3, opts);
    let ids = c.ids();
    let all = addrs_of(&c, &ids);
    let ledger: SharedLedger = Arc::default();
    write_many(&rt, &all, "k-", 80, &ledger)?;
    let admin = client(all.clone(), Duration::from_secs(10));
    let leader = rt
        .block_on(admin.cluster_status())?
        .leader
        .context("no leader")?;
    let f_id = *ids.iter().find(|i| **i != leader).expect("a follower");
    let f_addr = c.node(f_id).addr.clone();
    let target = ledger.lock().unwrap().max_revision;
    try_wait_until(Duration::from_secs(10), || {
        node_state(&rt, &f_addr, f_id).filter(|(_, a)| *a >= target)
    });
    c.stop(f_id);
    let dir = c.node(f_id).data_dir.clone();
    let scratch = c.dir().join("inspect");
    let before = inspect(&dir, &scratch);
    cut_below(&dir, &c.dir().join("trial"), &scratch, 15)?;
    let after = inspect(&dir, &scratch);
    c.restart(f_id);
    let t = Instant::now();
    let caught_up = try_wait_until(wait, || {
        node_state(&rt, &f_addr, f_id).filter(|(_, a)| *a >= target)
    })
    .is_some();
    let follower_revision = node_state(&rt, &f_addr, f_id).map_or(0, |(_, a)| a);
    let leader_revision = read_all(&rt, all, Duration::from_secs(10))?.revision;
    Ok(StuckReport {
        before: describe(&before),
        after: describe(&after),
        follower_revision,
        leader_revision,
        waited: t.elapsed(),
        caught_up,
    })
}

#[cfg(test)]
mod case_tests {
    use super::*;

    fn case(outcome: Outcome) -> Case {
        Case {
            n: 1,
            kind: Kind::LogFlip,
            damage: String::new(),
            node: 1,
            stop: "kill -9",
            snapshot_every: 10,
            writes: 1,
            before: String::new(),
            after: String::new(),
            outcome,
            cluster_served: true,
            lost: Vec::new(),
            unavailable: None,
            panics: Vec::new(),
            readd: None,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn an_intact_store_is_a_clean_case_and_undetected_loss_is_not() {
        assert!(case(Outcome::StartedIntact).ok());
        assert!(case(Outcome::Refused { line: "x".into() }).ok());
        assert!(!case(Outcome::StartedLostData { detail: "x".into() }).ok());
        let mut lost = case(Outcome::StartedIntact);
        lost.lost.push("w1".into());
        assert!(!lost.ok(), "a lost write is never clean");
        let report = CorruptReport {
            seed: 1,
            cases: vec![case(Outcome::StartedIntact)],
            elapsed: Duration::ZERO,
        };
        assert!(report.clean());
    }
}
