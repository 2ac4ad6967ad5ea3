//! The corruption campaign: a node's data damaged, then the node started again.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use baton_store::Verified;

use super::cli::{default_seed, parse_flags};
use super::common::{add_server, addrs_of, client, node_state, runtime};
use super::damage::{Kind, apply_damage, describe, inspect};
use super::ledger::{SharedLedger, check_ledger, read_all, read_stale, write_one};
use super::report::{Case, CorruptReport, Outcome};
use crate::tools::{Rng, parse_duration};
use crate::{Cluster, ClusterOpts, strip_ansi, tail, try_wait_until};

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
    pub(crate) fn parse(args: &[String]) -> Result<CorruptConfig> {
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

/// The arguments a running process was started with (from /proc), program name excluded.
pub(crate) fn proc_args(pid: u32) -> Result<Vec<String>> {
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
pub(crate) struct OwnNode {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl OwnNode {
    pub(crate) fn spawn(args: &[String], log: PathBuf) -> Result<OwnNode> {
        let child = crate::baton_command(args, File::create(&log)?)?
            .spawn()
            .context("starting baton directory")?;
        Ok(OwnNode { child, log })
    }

    pub(crate) fn exited(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| s.code().unwrap_or(-1))
    }

    pub(crate) fn output(&self) -> String {
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
pub(crate) fn write_many(
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
pub(crate) fn serves(
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
pub(crate) fn converges(
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
pub(crate) fn start_damaged(
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

/// One case: a fresh cluster takes writes, a random node is stopped and its data
/// damaged, then it is started again and judged; a refusing node is re-added.
pub(crate) fn corrupt_case(
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
    let c = Cluster::start(3, opts);
    let ids = c.ids();
    let all = addrs_of(&c, &ids);
    let ledger: SharedLedger = Arc::default();
    write_many(rt, &all, &format!("c-{n}-"), writes, &ledger)?;
    let victim = *rng.pick(&ids);
    let healthy_ids: Vec<u64> = ids.iter().copied().filter(|i| *i != victim).collect();
    let mut run = CaseRun {
        rt,
        n,
        kind,
        healthy: addrs_of(&c, &healthy_ids),
        healthy_ids,
        addr: c.node(victim).addr.clone(),
        data_dir: c.node(victim).data_dir.clone(),
        victim,
        c,
        all,
        ledger,
    };
    if kind == Kind::SledSnapFlip {
        // sled writes its page-table snapshot (snap.*) when it reopens a database.
        run.c.stop(victim);
        run.c.restart(victim);
    }
    let stop: &'static str = if rng.chance(0.5) {
        "SIGTERM"
    } else {
        "kill -9"
    };
    let (args, before) = run.stop_victim(stop, writes)?;
    let mut cluster_served = run.serves("down");
    let before_v = before.as_ref().expect("checked");
    let damage = apply_damage(rng, kind, &run.data_dir, before_v)?;
    let after = inspect(&run.data_dir, &run.scratch());
    let log = run.c.dir().join(format!("node{victim}-damaged.log"));
    let (node, exit) = start_damaged(rt, &args, log, &run.addr, victim)?;
    cluster_served &= run.serves("damaged");
    let outcome = run.judge(node, exit, &before, &after)?;
    let readd = (cfg.readd && matches!(outcome, Outcome::Refused { .. })).then(|| run.readd(&args));
    let (lost, unavailable) = match check_ledger(rt, run.healthy.clone(), &run.ledger, "c-") {
        Ok((lost, _)) => (lost, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    let readd = readd.map(|r| r.map(|(_node, took)| took));
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
        panics: run.panics(),
        readd,
        elapsed: started.elapsed(),
    })
}

/// A corruption case under way: its cluster, the victim node and the healthy two.
struct CaseRun<'a> {
    rt: &'a tokio::runtime::Runtime,
    n: usize,
    kind: Kind,
    c: Cluster,
    /// Every node's address.
    all: Vec<String>,
    ledger: SharedLedger,
    victim: u64,
    addr: String,
    data_dir: PathBuf,
    healthy_ids: Vec<u64>,
    healthy: Vec<String>,
}

/// The damaged store as read in-process, or why it cannot be.
type Inspected = std::result::Result<Verified, String>;

impl CaseRun<'_> {
    /// Where the victim's data is copied to be opened in-process.
    fn scratch(&self) -> PathBuf {
        self.c.dir().join("inspect")
    }

    /// One write and one read-back through the healthy nodes, named for `step`.
    fn serves(&self, step: &str) -> bool {
        let name = format!("c-{}-{step}", self.n);
        serves(self.rt, &self.healthy, &name, &self.ledger)
    }

    /// Stops the victim (`stop`: "SIGTERM" or "kill -9") once it holds every write, and
    /// reads its store; snapshot kinds write more until the store has a snapshot and a
    /// purge mark. Returns the victim's arguments and its store before the damage.
    fn stop_victim(&mut self, stop: &str, writes: usize) -> Result<(Vec<String>, Inspected)> {
        let (victim, n) = (self.victim, self.n);
        let mut extra = 0;
        loop {
            // Make sure the victim holds everything, then stop it.
            let target = self.ledger.lock().unwrap().max_revision;
            try_wait_until(Duration::from_secs(10), || {
                node_state(self.rt, &self.addr, victim).filter(|(_, a)| *a >= target)
            });
            let pid = self
                .c
                .node(victim)
                .proc
                .pid()
                .context("victim not running")?;
            let args = proc_args(pid)?;
            if stop == "SIGTERM" {
                self.c.stop(victim);
            } else {
                self.c.kill9(victim);
            }
            let before = inspect(&self.data_dir, &self.scratch());
            let Ok(v) = &before else {
                bail!(
                    "node {victim}'s store does not verify before any damage ({stop}): {}",
                    describe(&before)
                );
            };
            // Snapshot kinds need a stored snapshot and a purge mark: write more until
            // the victim has both.
            if !self.kind.needs_snapshot() || (v.snapshot.is_some() && v.last_purged.is_some()) {
                return Ok((args, before));
            }
            if extra >= 3 {
                bail!(
                    "no snapshot or purge mark on node {victim} after {} writes: {}",
                    writes + 25 * extra,
                    describe(&before)
                );
            }
            extra += 1;
            self.c.restart(victim);
            let prefix = format!("c-{n}-more{extra}-");
            write_many(self.rt, &self.all, &prefix, 25, &self.ledger)?;
        }
    }

    /// What the damaged node did: refused (how), hung, or started (and then whether it
    /// converged, with what data). A node that started must also stay up.
    fn judge(
        &self,
        mut node: OwnNode,
        exit: Option<(i32, String)>,
        before: &Inspected,
        after: &Inspected,
    ) -> Result<Outcome> {
        let outcome = match exit {
            Some((i32::MIN, _)) => Outcome::Hung,
            Some((code, out)) => refusal(code, &out, &node.log),
            None => match converges(self.rt, &self.addr, &self.healthy, Duration::from_secs(30)) {
                Err(detail) if !detail.starts_with("at revision") => Outcome::Stuck { detail },
                Err(detail) => Outcome::WrongData { detail },
                Ok(()) => started(before, after),
            },
        };
        if matches!(
            outcome,
            Outcome::StartedIntact | Outcome::StartedLostData { .. }
        ) {
            // It must stay up, too: damage found later stops the node.
            if let Some(code) = node.exited() {
                bail!(
                    "node {} started, converged, then exited with {code}:\n{}",
                    self.victim,
                    tail(&node.log, 20)
                );
            }
        }
        Ok(outcome)
    }

    /// Re-adds the refusing node as its message says: remove it, move its data aside,
    /// start it empty with --join. The node is returned so that it keeps running while
    /// the ledger is checked.
    fn readd(&self, args: &[String]) -> std::result::Result<(OwnNode, Duration), String> {
        let log = self
            .c
            .dir()
            .join(format!("node{}-readded.log", self.victim));
        readd_node(
            self.rt,
            self.victim,
            args,
            &self.data_dir,
            &self.addr,
            &self.healthy,
            log,
        )
        .map_err(|e| format!("{e:#}"))
    }

    /// Panics the healthy nodes logged.
    fn panics(&self) -> Vec<String> {
        self.healthy_ids
            .iter()
            .filter_map(|id| {
                let log = std::fs::read_to_string(self.c.node(*id).proc.log()).unwrap_or_default();
                let text = strip_ansi(&log);
                let mut lines = text.lines().skip_while(|l| !l.contains("panicked at"));
                let at = lines.next()?;
                let what = lines.next().unwrap_or_default();
                Some(format!("node {id}: {at} {what}"))
            })
            .collect()
    }
}

/// How a damaged node that exited by itself refused: with the remedy, without it, or by
/// panicking.
fn refusal(code: i32, out: &str, log: &Path) -> Outcome {
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
            line: if line.is_empty() { tail(log, 3) } else { line },
        }
    }
}

/// A damaged node that started and converged: whether its store reads back as before
/// the damage, lost data, or is refused in-process though the node runs.
fn started(before: &Inspected, after: &Inspected) -> Outcome {
    match (before, after) {
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
            detail: format!("the store refuses the damaged copy ({e}) but the node started"),
        },
        (Err(_), _) => unreachable!("checked above"),
    }
}

/// Re-adds node `id` the way its refusal says: `cluster remove-node ID`, its data dir
/// moved aside, started empty with `--join`; returns it once it is a caught-up voter whose
/// local copy equals the leader's.
pub(crate) fn readd_node(
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
