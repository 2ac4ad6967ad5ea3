//! Everything a run owns, and what every step does with it: say, ask, hold, pick.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::admin::cli;
use super::args::RunArgs;
use super::cleanup::cleanup;
use super::freezer::Freezer;
use super::managed::Managed;
use super::net::{Cut, Net};
use super::sys::have;
use super::{SERVERS, stopping};
use crate::dup_agent::DupTally;
use crate::tools::Rng;
use crate::{CliOutput, now_ns};

/// Everything the run owns. Dropping it tears everything down.
pub(crate) struct World {
    pub(crate) a: RunArgs,
    pub(crate) net: Net,
    pub(crate) freezer: Freezer,
    pub(crate) iptables: bool,
    pub(crate) nodes: Vec<Managed>,
    pub(crate) agents: Vec<Managed>,
    pub(crate) rng: Rng,
    pub(crate) t0: Instant,
    /// The same instant on the wall clock (the journal's), for the fault log.
    pub(crate) t0_ns: u64,
    pub(crate) log: File,
    pub(crate) unexpected: Vec<String>,
    pub(crate) torn_down: bool,
    /// The sampler's record of thaws.
    pub(crate) thawed: Arc<Mutex<HashMap<String, u64>>>,
    /// This binary and the journal socket (for a planted rogue writer).
    pub(crate) exe: PathBuf,
    pub(crate) socket: PathBuf,
    /// What became of each dup-agent fault's duplicate.
    pub(crate) dups: DupTally,
}

impl World {
    /// The run's world, before anything is set up: the work directory (made, and
    /// canonical from now on), the run's log and subnet, the freezer to use. Logs the
    /// run's parameters.
    pub(crate) fn new(mut a: RunArgs) -> Result<World> {
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
        a.workdir = workdir.clone();
        let mut w = World {
            net,
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
            t0_ns: 0,
            log,
            unexpected: Vec::new(),
            torn_down: false,
            thawed: Arc::new(Mutex::new(HashMap::new())),
            exe,
            socket: workdir.join("journal.sock"),
            dups: DupTally::default(),
            a,
        };
        w.t0_ns = now_ns();
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
        Ok(w)
    }

    /// Prints a line, prefixed with the time since the start and the time of day (UTC),
    /// and appends it to the run's log.
    pub(crate) fn say(&mut self, msg: &str) {
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

    /// Every node's address, for `--directory`.
    pub(crate) fn directory(&self) -> String {
        self.net.directory()
    }

    /// `baton --directory ALL ARGS -o json`.
    pub(crate) fn cli(&self, args: &[&str], timeout: Duration) -> CliOutput {
        cli(&self.directory(), args, timeout)
    }

    /// Restarts whatever exited without being told to, and records it.
    pub(crate) fn reap_unexpected(&mut self) {
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
    pub(crate) fn hold(&mut self, d: Duration) -> bool {
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

    /// The leader, as `cluster status` reports it.
    pub(crate) fn leader(&self) -> Option<usize> {
        self.cli(&["cluster", "status"], Duration::from_secs(8))
            .try_json()
            .ok()?
            .get("leader")?
            .as_u64()
            .map(|l| l as usize)
    }

    /// How to cut a host off: iptables DROP (when it works) 60% of the time, else link
    /// down.
    pub(crate) fn pick_cut(&mut self) -> Cut {
        if self.iptables && self.rng.chance(0.6) {
            Cut::Drop
        } else {
            Cut::LinkDown
        }
    }

    /// A server to fault: most of the time one that is the active server of some role
    /// (so the fault moves something), else any.
    pub(crate) fn pick_server(&mut self) -> usize {
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

    /// How long to hold a freeze or a partition: 1.5-3 leases.
    pub(crate) fn hold_time(&mut self) -> Duration {
        self.a.lease.mul_f64(self.rng.between(1.5, 3.0))
    }

    /// Thaws and kills everything, then removes what the run made (idempotent).
    pub(crate) fn teardown(&mut self) {
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

// The dup-agent fault (checks and report in `crate::dup_agent`).
