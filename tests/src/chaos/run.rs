//! `chaos run`, step by step: hosts, observers, directory, agents, roles, faults, the
//! final heal and liveness, then the analysis and the report.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::admin::AdminWriter;
use super::analysis::{Analysis, Observed};
use super::args::run_args;
use super::faults::{Fault, Kind};
use super::fenced_journal::JournalServer;
use super::freezer::Freezer;
use super::managed::Managed;
use super::report;
use super::report::ms;
use super::sampler::Sampler;
use super::stalls::StallMeter;
use super::sys::sh;
use super::world::World;
use super::{GRACE, LIVENESS_EXTRA, SERVERS, install_signals, wait_for};
use crate::now_ns;
use crate::stubborn;

/// A role: its name, its servers in order of preference, whether failback is on.
pub(crate) type RoleSpec = (String, Vec<&'static str>, bool);

/// Role names and server lists: every order of the three servers, so each server is
/// first for some role; every third role has failback on (delay 3 s).
pub(crate) fn roles(n: usize) -> Vec<RoleSpec> {
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

/// The observer's threads: the fenced journal, the host stall meter and the `/proc`
/// sampler.
pub(crate) struct Observers {
    pub(crate) journal: JournalServer,
    pub(crate) stall_meter: StallMeter,
    pub(crate) sampler: Sampler,
}

/// The roles the run created.
pub(crate) struct Roles {
    pub(crate) all: Vec<RoleSpec>,
    /// The stubborn ones (their writer ignores SIGTERM).
    pub(crate) stubborn: Vec<String>,
}

/// What the fault phase left behind.
pub(crate) struct Chaos {
    pub(crate) admin: AdminWriter,
    pub(crate) faults: Vec<Fault>,
    pub(crate) interrupted: bool,
    /// When the faults began (the admin writer's start).
    pub(crate) t_chaos: u64,
    pub(crate) secs: f64,
}

/// What the run saw after the final heal.
pub(crate) struct End {
    pub(crate) t_heal: u64,
    /// The liveness budget after the heal.
    pub(crate) budget: Duration,
    /// How long after the heal every role was writing again, if it was in time.
    pub(crate) live_after_ms: Option<f64>,
    /// The roles that were not, described.
    pub(crate) not_live: Vec<String>,
    pub(crate) role_list: Option<Value>,
    pub(crate) events: Option<Value>,
    /// `server list`, read back linearizably (None when interrupted or unanswered).
    pub(crate) server_list: Option<Value>,
    /// The host stalls the stall meter saw: (when, how long) in ns.
    pub(crate) stalls: Vec<(u64, u64)>,
}

/// `chaos run`: sets up the hosts, the directory, the agents and the roles, injects
/// faults for the duration, heals, checks liveness, then analyses and reports. Returns
/// the exit status: 0 clean, 1 a violation, 130 interrupted (an error is 2).
pub(crate) fn run_cmd(args: &[String]) -> Result<i32> {
    let a = run_args(args)?;
    install_signals();
    // The harness's CLI runner takes the binary from BATON_BIN.
    // SAFETY: no other thread exists yet.
    unsafe {
        std::env::set_var("BATON_BIN", &a.baton);
    }
    let mut w = World::new(a)?;
    w.setup_hosts()?;
    let obs = w.start_observers()?;
    w.start_directory()?;
    w.start_agents()?;
    let roles = w.create_roles(&obs.journal)?;
    let chaos = w.chaos(&obs)?;
    w.finish(&roles, chaos, obs)
}

impl World {
    /// The network, the iptables probe and a cgroup per server, falling back to link
    /// down and to SIGSTOP where those do not work.
    fn setup_hosts(&mut self) -> Result<()> {
        self.net.setup().context("network setup")?;
        // iptables may be installed and still not work inside a namespace (no nf_tables
        // in the kernel): then partitions use link down only.
        if self.iptables {
            let ns = self.net.ns("n1");
            let probe = sh(
                "ip",
                &[
                    "netns", "exec", &ns, "iptables", "-w", "-A", "INPUT", "-i", "lo", "-j",
                    "ACCEPT",
                ],
            )
            .and_then(|_| {
                sh(
                    "ip",
                    &["netns", "exec", &ns, "iptables", "-w", "-F", "INPUT"],
                )
            });
            if let Err(e) = probe {
                self.iptables = false;
                self.say(&format!(
                    "iptables does not work in a namespace ({e:#}); partitions use link down only"
                ));
            }
        }
        // A cgroup per server; where none can be made (read-only cgroupfs in a
        // container), freeze with SIGSTOP instead.
        for (_, host) in SERVERS {
            if let Err(e) = self.freezer.create(&self.a.prefix, host) {
                self.say(&format!(
                    "cannot make a cgroup ({e:#}); freezing with SIGSTOP of process groups instead"
                ));
                self.freezer = Freezer::Sigstop;
                break;
            }
        }
        Ok(())
    }

    fn start_observers(&mut self) -> Result<Observers> {
        let journal = JournalServer::start(&self.socket, &self.a.workdir.join("journal"))?;
        let stall_meter = StallMeter::start();
        let sampler = Sampler::start(
            self.socket.display().to_string(),
            self.freezer.clone(),
            self.a.prefix.clone(),
            self.a.lease.as_nanos() as u64,
        );
        self.thawed = sampler.thawed.clone();
        Ok(Observers {
            journal,
            stall_meter,
            sampler,
        })
    }

    /// Three directory nodes, one per host, and a leader that sees them all.
    fn start_directory(&mut self) -> Result<()> {
        let net = self.net.clone();
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
                    self.a
                        .workdir
                        .join(format!("node{id}"))
                        .display()
                        .to_string(),
                    "--peers".into(),
                    peers.clone(),
                    "--lease".into(),
                    format!("{}ms", self.a.lease.as_millis()),
                    "--history-max".into(),
                    "1000000".into(),
                ],
                log: self.a.workdir.join(format!("node{id}.log")),
                cgroup_procs: None,
                child: None,
                starts: 0,
                env: Vec::new(),
            };
            m.start(&self.a.baton)?;
            self.nodes.push(m);
        }
        let ready = wait_for(Duration::from_secs(60), || {
            let st = self
                .cli(&["cluster", "status"], Duration::from_secs(10))
                .try_json()
                .ok()?;
            let leader = st.get("leader")?.as_u64()?;
            let nodes = st.get("nodes")?.as_array()?;
            (nodes.len() == 3 && nodes.iter().all(|n| n["state"] != "unreachable"))
                .then_some(leader)
        });
        let Some(leader) = ready else {
            for n in &self.nodes {
                eprintln!("--- {} ---\n{}", n.name, n.log_tail(40));
            }
            bail!("the directory did not come up within 60 s");
        };
        self.say(&format!("directory up, leader node {leader}"));
        Ok(())
    }

    /// An agent per server, each in its server's cgroup, and every server up.
    fn start_agents(&mut self) -> Result<()> {
        let net = self.net.clone();
        let role_cmd = format!(
            "exec '{}' role-writer --socket '{}'",
            self.exe.display(),
            self.socket.display()
        );
        for (srv, host) in SERVERS {
            let cg = self.freezer.create(&self.a.prefix, host)?;
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
                    format!(
                        "{}={}",
                        stubborn::KIND,
                        stubborn::command(&self.exe, &self.socket)
                    ),
                ],
                log: self.a.workdir.join(format!("agent-{srv}.log")),
                cgroup_procs: cg,
                child: None,
                starts: 0,
                env: Vec::new(),
            };
            m.start(&self.a.baton)?;
            self.agents.push(m);
        }
        let up = wait_for(Duration::from_secs(60), || {
            let list = self
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
            for n in &self.agents {
                eprintln!("--- {} ---\n{}", n.name, n.log_tail(40));
            }
            bail!("the agents did not come up within 60 s");
        }
        Ok(())
    }

    /// Creates the roles and waits until each one writes to the journal.
    fn create_roles(&mut self, journal: &JournalServer) -> Result<Roles> {
        let roles = roles(self.a.roles);
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
            self.cli(&args, crate::CLI_TIMEOUT)
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
        self.say(&format!(
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
        Ok(Roles {
            all: roles,
            stubborn: stubborn_roles,
        })
    }

    /// The fault phase: admin writes all along, a fault every 5-15 s, a status line
    /// at most every 30 s, until the duration has passed or the run is interrupted.
    fn chaos(&mut self, obs: &Observers) -> Result<Chaos> {
        let admin = AdminWriter::start(self.net.directory());
        let t_chaos = now_ns();
        let chaos_start = Instant::now();
        let mut faults: Vec<Fault> = Vec::new();
        let mut interrupted = false;
        let mut next_at = Instant::now() + Duration::from_secs_f64(self.rng.between(5.0, 15.0));
        let mut last_status = Instant::now();
        while chaos_start.elapsed() < self.a.duration {
            let wait = next_at.saturating_duration_since(Instant::now());
            let left = self.a.duration.saturating_sub(chaos_start.elapsed());
            if !self.hold(wait.min(left)) {
                interrupted = true;
                break;
            }
            if chaos_start.elapsed() >= self.a.duration {
                break;
            }
            if Instant::now() < next_at {
                continue;
            }
            let kind = self.next_kind(faults.len());
            let started = Instant::now();
            match self.inject(faults.len() + 1, kind)? {
                Some(f) => faults.push(f),
                None => {
                    interrupted = true;
                    break;
                }
            }
            // The next fault 5-15 s after this one started, and at least a second after
            // it healed.
            next_at = (started + Duration::from_secs_f64(self.rng.between(5.0, 15.0)))
                .max(Instant::now() + Duration::from_secs(1));
            if last_status.elapsed() > Duration::from_secs(30) {
                last_status = Instant::now();
                self.say_status(faults.len(), obs, &admin);
            }
        }
        let mut chaos = Chaos {
            admin,
            faults,
            interrupted,
            t_chaos,
            secs: 0.0,
        };
        chaos.admin.stop();
        chaos.secs = chaos_start.elapsed().as_secs_f64();
        Ok(chaos)
    }

    /// The kind of the next fault: a planted one second when asked for, else a draw.
    fn next_kind(&mut self, injected: usize) -> Kind {
        if self.a.plant_rogue && injected == 1 {
            Kind::PlantedRogue
        } else if self.a.plant_dup && injected == 1 {
            Kind::DupAgent
        } else {
            Kind::pick(&mut self.rng, &self.a.kinds)
        }
    }

    fn say_status(&mut self, faults: usize, obs: &Observers, admin: &AdminWriter) {
        let (acc, rej) = obs.journal.counts();
        let (ov, samples) = {
            let o = obs.sampler.out.lock().unwrap();
            (o.overlaps.len(), o.samples)
        };
        let acked = admin
            .writes
            .lock()
            .unwrap()
            .iter()
            .filter(|x| x.acked)
            .count();
        self.say(&format!(
            "status: {faults} faults, journal {acc} accepted / {rej} rejected, /proc overlaps \
             {ov} in {samples} samples, {acked} admin writes acked"
        ));
    }

    /// Heals everything, checks liveness, reads the end state back, stops the
    /// observers, then analyses, reports, tears down and returns the exit status.
    fn finish(&mut self, roles: &Roles, chaos: Chaos, mut obs: Observers) -> Result<i32> {
        self.heal_all()?;
        let t_heal = now_ns();
        self.say("healed everything; checking liveness");
        let budget = self.a.lease + GRACE + LIVENESS_EXTRA;
        let (mut live_after_ms, mut not_live) = (None, Vec::new());
        if !chaos.interrupted {
            (live_after_ms, not_live) = self.liveness(&roles.all, &obs.journal, t_heal, budget);
            // Stay up a little, so the end state is a steady one.
            self.hold(Duration::from_secs(3));
            self.reap_unexpected();
        }
        let role_list = self
            .cli(&["role", "list"], crate::CLI_TIMEOUT)
            .try_json()
            .ok();
        let events = self.cli(&["events"], crate::CLI_TIMEOUT).try_json().ok();
        // Acknowledged writes read back (linearizable), retried until the directory
        // answers.
        let server_list = if chaos.interrupted {
            None
        } else {
            wait_for(Duration::from_secs(60), || {
                self.cli(&["server", "list"], crate::CLI_TIMEOUT)
                    .try_json()
                    .ok()
            })
        };
        obs.sampler.stop();
        obs.journal.stop();
        let end = End {
            t_heal,
            budget,
            live_after_ms,
            not_live,
            role_list,
            events,
            server_list,
            stalls: obs.stall_meter.stop(),
        };
        let js = obs.journal.state.lock().unwrap();
        let so = obs.sampler.out.lock().unwrap();
        let writes = chaos.admin.writes.lock().unwrap().clone();
        let seen = Observed {
            world: self,
            roles,
            chaos: &chaos,
            end: &end,
            js: &js,
            so: &so,
            writes: &writes,
        };
        let analysis = Analysis::new(&seen);
        let report = report::json(&seen, &analysis);
        report::print(&seen, &analysis);
        report::write(self, &report)?;
        let ok = analysis.violations.is_empty() && !chaos.interrupted;
        if !analysis.unsampled.is_empty() {
            println!("observer warning: role processes that wrote but were never seen in /proc:");
            for u in &analysis.unsampled {
                println!("  - {u}");
            }
        }
        drop(js);
        drop(so);
        self.teardown();
        let workdir = &self.a.workdir;
        if ok && !self.a.keep && analysis.unsampled.is_empty() {
            let _ = fs::remove_dir_all(workdir);
        } else {
            println!("kept {} (logs, journals, node data)", workdir.display());
        }
        Ok(if chaos.interrupted {
            130
        } else if ok {
            0
        } else {
            1
        })
    }

    /// Waits (within `budget`) until every role has written since the heal and within
    /// the last 300 ms: (how long after the heal, if it happened; the roles that did
    /// not, described).
    fn liveness(
        &self,
        roles: &[RoleSpec],
        journal: &JournalServer,
        t_heal: u64,
        budget: Duration,
    ) -> (Option<f64>, Vec<String>) {
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
        if let Some(t) = got {
            return (Some(ms(t - t_heal)), Vec::new());
        }
        let now = now_ns();
        let last = journal.last_write();
        let mut not_live = Vec::new();
        for (r, _, _) in roles {
            let t = last.get(r).copied().unwrap_or(0);
            if t <= t_heal || now.saturating_sub(t) >= 300_000_000 {
                not_live.push(format!(
                    "role {r}: last accepted write {:.1} s ago, not running {:.1} s after the heal",
                    ms(now.saturating_sub(t)) / 1e3,
                    ms(now - t_heal) / 1e3
                ));
            }
        }
        (None, not_live)
    }
}
