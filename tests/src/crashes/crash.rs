//! The crash campaign: kill -9 of random nodes under continuous writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use baton_client::Client;

use super::cli::{default_seed, parse_flags};
use super::common::{addrs_of, client, node_state, runtime, secs};
use super::ledger::{SharedLedger, Writers, check_ledger, read_stale};
use super::report::{CrashReport, FailedRestart};
use crate::tools::{Rng, parse_duration};
use crate::{Cluster, ClusterOpts, strip_ansi, tail, try_wait_until};

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
    pub(crate) fn parse(args: &[String]) -> Result<CrashConfig> {
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

/// Waits until node `id` serves as follower or leader and has applied `revision`.
/// Err: what went wrong (exited, or not caught up in time).
pub(crate) fn wait_caught_up(
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
    let mut run = CrashRun::start(cfg);
    let outcome = run.kills().and_then(|()| run.kill_all());
    if let Some(writers) = run.writers.take() {
        writers.stop(&run.rt);
    }
    match outcome {
        Err(e) => run.report.aborted = Some(e),
        Ok(()) => run.final_check(),
    }
    run.tally();
    if !run.report.clean() {
        run.c.dump_logs();
    }
    Ok(run.report)
}

/// A crash campaign under way: the cluster, the writers and their ledger, the report so
/// far.
struct CrashRun<'a> {
    cfg: &'a CrashConfig,
    started: Instant,
    rng: Rng,
    report: CrashReport,
    c: Cluster,
    ids: Vec<u64>,
    /// Every node's address.
    all: Vec<String>,
    rt: tokio::runtime::Runtime,
    admin: Client,
    ledger: SharedLedger,
    /// Stopped (taken) once the kills are over.
    writers: Option<Writers>,
}

/// The prefix of the writers' server names.
const PREFIX: &str = "s-";

impl<'a> CrashRun<'a> {
    /// Starts the cluster and the writers.
    fn start(cfg: &'a CrashConfig) -> CrashRun<'a> {
        let started = Instant::now();
        let rng = Rng::new(cfg.seed);
        let report = CrashReport {
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
        let c = Cluster::start(3, opts);
        let ids = c.ids();
        let all = addrs_of(&c, &ids);
        let rt = runtime();
        let admin = client(all.clone(), Duration::from_secs(3));
        let ledger: SharedLedger = Arc::default();
        let writers = Writers::start(&rt, all.clone(), cfg.writers, cfg.rate, PREFIX, &ledger);
        CrashRun {
            cfg,
            started,
            rng,
            report,
            c,
            ids,
            all,
            rt,
            admin,
            ledger,
            writers: Some(writers),
        }
    }

    /// Prints a step with `-v`.
    fn log(&self, s: String) {
        if self.cfg.verbose {
            println!("{s}");
        }
    }

    /// Every kill, with a progress line every 25 and a read-back every `check_every`.
    /// Err: why the campaign cannot go on.
    fn kills(&mut self) -> std::result::Result<(), String> {
        for k in 1..=self.cfg.kills {
            let acked = self.kill_one(k)?;
            if !self.cfg.verbose && k % 25 == 0 {
                println!(
                    "  {k}/{} kills, {acked} writes acked, {} lost, {} failed restarts, {}",
                    self.cfg.kills,
                    self.report.lost.len(),
                    self.report.failed_restarts.len(),
                    secs(self.started.elapsed())
                );
            }
            if k % self.cfg.check_every == 0 || k == self.cfg.kills {
                self.check(k)?;
            }
        }
        Ok(())
    }

    /// Kill `k`: a random node (the leader half of the time) killed in the middle of the
    /// writes, down for a random time, restarted and caught up (restarted once more if it
    /// was not). Returns the number of writes acknowledged so far.
    fn kill_one(&mut self, k: usize) -> std::result::Result<usize, String> {
        let leader = self
            .rt
            .block_on(self.admin.cluster_status())
            .ok()
            .and_then(|s| s.leader);
        let victim = match leader {
            Some(l) if self.rng.chance(0.5) => l,
            Some(l) => {
                let others: Vec<u64> = self.ids.iter().copied().filter(|i| *i != l).collect();
                *self.rng.pick(&others)
            }
            None => *self.rng.pick(&self.ids),
        };
        let was_leader = leader == Some(victim);
        // Let writes flow, then kill in the middle of them.
        std::thread::sleep(self.rng.millis(0, 300));
        self.c.kill9(victim);
        let down = self.rng.millis(0, self.cfg.down_max.as_millis() as u64);
        std::thread::sleep(down);
        let target = self.ledger.lock().unwrap().max_revision;
        self.c.restart(victim);
        self.report.kills = k;
        if was_leader {
            self.report.leader_kills += 1;
        }
        let took = self.come_back(k, victim, target)?;
        self.report.restart_times.push(took);
        let acked = self.ledger.lock().unwrap().acked.len();
        self.log(format!(
            "kill {k}: node {victim}{} down {down:?}, caught up to {target} in {took:?}; {acked} acked",
            if was_leader { " (leader)" } else { "" },
        ));
        Ok(acked)
    }

    /// Waits until the restarted `victim` has caught up to `target`; a failed restart is
    /// recorded and the node restarted once more, so that one failure does not end the
    /// campaign. Returns how long it took.
    fn come_back(
        &mut self,
        k: usize,
        victim: u64,
        target: u64,
    ) -> std::result::Result<Duration, String> {
        let limit = self.cfg.restart_limit;
        let back = wait_caught_up(&self.rt, &mut self.c, victim, target, limit);
        let Err(what) = back else {
            return back;
        };
        let log_tail = strip_ansi(&tail(self.c.node(victim).proc.log(), 80));
        eprintln!(
            "FAILED RESTART at kill {k}: {what}\n----- node {victim} log -----\n{log_tail}\n-----"
        );
        self.report.failed_restarts.push(FailedRestart {
            kill: k,
            node: victim,
            what,
            log_tail,
        });
        self.c.restart(victim);
        wait_caught_up(&self.rt, &mut self.c, victim, target, limit).map_err(|again| {
            format!("node {victim} did not come back after a second restart: {again}")
        })
    }

    /// Reads everything back after kill `k`; new lost acknowledgements go to the report.
    fn check(&mut self, k: usize) -> std::result::Result<(), String> {
        let (lost, read) = check_ledger(&self.rt, self.all.clone(), &self.ledger, PREFIX)
            .map_err(|e| e.to_string())?;
        self.report.checks += 1;
        self.log(format!(
            "check after kill {k}: {} servers at revision {}, {} lost",
            read.names.len(),
            read.revision,
            lost.len()
        ));
        for l in lost {
            if !self.report.lost.contains(&l) {
                eprintln!("LOST ACK after kill {k}: {l}");
                self.report.lost.push(l);
            }
        }
        Ok(())
    }

    /// The final blow: kill -9 every node at once, with writes in flight, and restart.
    fn kill_all(&mut self) -> std::result::Result<(), String> {
        let target = self.ledger.lock().unwrap().max_revision;
        for id in &self.ids {
            self.c.kill9(*id);
        }
        std::thread::sleep(self.rng.millis(100, 1000));
        let t = Instant::now();
        for id in &self.ids {
            self.c.restart(*id);
        }
        for id in self.ids.clone() {
            let limit = self.cfg.restart_limit * 2;
            if let Err(what) = wait_caught_up(&self.rt, &mut self.c, id, target, limit) {
                let log_tail = strip_ansi(&tail(self.c.node(id).proc.log(), 80));
                eprintln!(
                    "FAILED RESTART after kill -9 of all: {what}\n----- node {id} log -----\n{log_tail}\n-----"
                );
                self.report.failed_restarts.push(FailedRestart {
                    kill: self.cfg.kills + 1,
                    node: id,
                    what,
                    log_tail,
                });
                return Err("a node did not come back after kill -9 of all nodes".into());
            }
        }
        self.report.full_restart_time = t.elapsed();
        self.report.full_restart = true;
        self.log(format!("all three back in {:?}", t.elapsed()));
        Ok(())
    }

    /// Final read-back, and every node's local copy equals the leader's.
    fn final_check(&mut self) {
        let read = match check_ledger(&self.rt, self.all.clone(), &self.ledger, PREFIX) {
            Ok((lost, read)) => {
                self.report.checks += 1;
                for l in lost {
                    if !self.report.lost.contains(&l) {
                        eprintln!("LOST ACK at the end: {l}");
                        self.report.lost.push(l);
                    }
                }
                read
            }
            Err(e) => {
                self.report.aborted = Some(format!("final read-back: {e}"));
                return;
            }
        };
        for id in &self.ids {
            let addr = self.c.node(*id).addr.clone();
            let copy = try_wait_until(Duration::from_secs(30), || {
                read_stale(&self.rt, &addr).filter(|r| r.revision >= read.revision)
            });
            match copy {
                None => self.report.diverged.push(format!(
                    "node {id} never reached revision {}",
                    read.revision
                )),
                Some(r) if r.revision == read.revision && r.names != read.names => {
                    self.report.diverged.push(format!(
                        "node {id} at revision {} holds {} servers, the leader {}",
                        r.revision,
                        r.names.len(),
                        read.names.len()
                    ))
                }
                Some(r) if !read.names.is_subset(&r.names) => self.report.diverged.push(format!(
                    "node {id} at revision {} lacks servers the leader has",
                    r.revision
                )),
                Some(_) => {}
            }
        }
    }

    /// The writers' figures into the report, and the time taken.
    fn tally(&mut self) {
        {
            let l = self.ledger.lock().unwrap();
            self.report.acked = l.acked.len();
            self.report.confirmed = l.confirmed.len();
            self.report.unknown = l.unknown.len();
            self.report.unexplained = l.unexplained;
            self.report.unexplained_samples = l.unexplained_samples.clone();
            self.report.refused = l.refused.clone();
        }
        self.report.elapsed = self.started.elapsed();
    }
}
