//! Measured figures for the issue notes, with the real binary on loopback:
//! - failover time after `kill -9` of the active agent, as a ratio of the lease (from the
//!   kill to the first journal line written by the new server), median and worst;
//! - drain handover gap (last line of the old instance to the first of the new one);
//! - the write gap after `kill -9` of the directory leader (first successful CLI write);
//! - the round trip of one CLI write (process start included), median.
//!
//! `cargo run -p baton-tests --bin measure -- [--runs 10] [--lease 1s] [--writes 200]`
//! (`BATON_BIN` picks a prebuilt binary, e.g. a release build).
//!
//! `--leader-kills N` measures only the directory's own failover: three nodes,
//! six agents, six journaling roles, and N kill -9 of the leader (the killed node is
//! restarted and caught up, and the agents quiet for a lease, before the next kill).
//! Per kill: the write gap (kill to the first successful CLI write through the
//! survivors), role moves (changes of a role's server or epoch in `role list` and in the
//! history: must be 0), role processes restarted in place (a fenced agent restarting a
//! role with the same epoch: a new pid in the journal), and how the agents' sessions
//! were spread over the nodes before and after.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use baton_tests::tools::parse_duration;
use baton_tests::{
    Agent, Cluster, ClusterOpts, Line, check_journal, journal, journal_command, ms_between, now_ns,
    role_instances, role_pid_alive, try_wait_until, wait_quiet, wait_until,
};

struct Args {
    runs: usize,
    lease: Duration,
    writes: usize,
    /// `--leader-kills N`: only the leader-kill figures, with N kills.
    leader_kills: Option<usize>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        runs: 10,
        lease: Duration::from_secs(1),
        writes: 200,
        leader_kills: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--runs" => a.runs = value()?.parse()?,
            "--lease" => a.lease = parse_duration(&value()?).map_err(anyhow::Error::msg)?,
            "--writes" => a.writes = value()?.parse()?,
            "--leader-kills" => a.leader_kills = Some(value()?.parse()?),
            "-h" | "--help" => {
                println!("measure [--runs N] [--lease DUR] [--writes N] [--leader-kills N]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if a.leader_kills == Some(0) {
        bail!("--leader-kills must be at least 1");
    }
    Ok(a)
}

/// (median, worst) of a sample, in the sample's unit.
fn stats(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (median, s[n - 1])
}

fn main() -> Result<()> {
    let a = args()?;
    if let Some(kills) = a.leader_kills {
        return leader_kill_figures(kills, a.lease);
    }
    println!(
        "baton measure: {} run(s), lease {:?}, binary {}",
        a.runs,
        a.lease,
        baton_tests::baton_bin().display()
    );
    agent_figures(&a)?;
    directory_figures(&a)?;
    Ok(())
}

/// Failover after kill -9 of the active agent, drain handover gaps (also to a server
/// whose agent just came back), and whether the journal stayed clean.
fn agent_figures(a: &Args) -> Result<()> {
    let mut bench = AgentBench::start(a.lease);
    let failovers: Vec<f64> = (1..=a.runs)
        .map(|run| bench.failover(run, a.lease))
        .collect();
    let gaps: Vec<f64> = (1..=a.runs).map(|run| bench.drain(run)).collect();
    let fresh_gaps: Vec<f64> = (1..=a.runs.min(5))
        .map(|run| bench.drain_to_returned(run))
        .collect();
    let clean = check_journal(&bench.journal);

    let (fm, fw) = stats(&failovers);
    let (gm, gw) = stats(&gaps);
    println!();
    println!(
        "FAILOVER after kill -9 (lease {:?}, {} runs): median {fm:.2} x lease ({:.0} ms), worst {fw:.2} x lease ({:.0} ms)",
        a.lease,
        failovers.len(),
        fm * a.lease.as_secs_f64() * 1e3,
        fw * a.lease.as_secs_f64() * 1e3
    );
    println!(
        "DRAIN handover gap ({} runs): median {gm:.1} ms, worst {gw:.1} ms",
        gaps.len()
    );
    let (fgm, fgw) = stats(&fresh_gaps);
    println!(
        "DRAIN handover gap to a server whose agent just came back ({} runs): median {fgm:.1} ms, worst {fgw:.1} ms",
        fresh_gaps.len()
    );
    match clean {
        Ok(()) => println!("journal: clean (no overlap, epochs increasing)"),
        Err(e) => println!("journal: NOT CLEAN\n{e}"),
    }
    Ok(())
}

/// Three nodes, three agents and one journaling role, m1.
struct AgentBench {
    // Field order matters for drop: the agents before the cluster that sweeps up.
    agents: Vec<Agent>,
    c: Cluster,
    journal: PathBuf,
}

const AGENT_SERVERS: [&str; 3] = ["srv-a", "srv-b", "srv-c"];

impl AgentBench {
    fn start(lease: Duration) -> AgentBench {
        let c = Cluster::start(3, ClusterOpts::lease(lease));
        let journal = c.journal("journal");
        let cmd = journal_command(&journal);
        let agents: Vec<Agent> = AGENT_SERVERS
            .iter()
            .map(|s| Agent::start(&c, s, &[("default", &cmd)]))
            .collect();
        c.wait_servers_up(&AGENT_SERVERS, Duration::from_secs(20));
        c.json(&["role", "create", "m1", "--servers", "srv-a,srv-b,srv-c"]);
        wait_until(Duration::from_secs(10), "m1 to run", || {
            journal::read(&journal).into_iter().find(|l| l.role == "m1")
        });
        AgentBench { agents, c, journal }
    }

    fn agent(&mut self, server: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|x| x.server == server)
            .expect("agent")
    }

    /// m1's first line written by another server than `active` at or after `since`.
    fn first_line_elsewhere(&self, active: &str, since: u64, limit: Duration, what: &str) -> Line {
        wait_until(limit, what, || {
            journal::read(&self.journal)
                .into_iter()
                .filter(|l| l.role == "m1" && l.server != active && l.t_ns >= since)
                .min_by_key(|l| l.t_ns)
        })
    }

    /// Failover run `run`: kill -9 of m1's active agent; returns the time from the kill
    /// to the new server's first line, in leases.
    fn failover(&mut self, run: usize, lease: Duration) -> f64 {
        let c = &self.c;
        let (active, epoch) = wait_until(Duration::from_secs(10), "m1 active", || c.active("m1"));
        // Make sure it is writing before the kill.
        let t_before = now_ns();
        let line = wait_until(Duration::from_secs(10), "m1 writing", || {
            journal::read(&self.journal)
                .into_iter()
                .find(|l| l.role == "m1" && l.server == active && l.t_ns >= t_before)
        });
        let t_kill = now_ns();
        self.agent(&active).kill9();
        let limit = lease * 10 + Duration::from_secs(10);
        let next = self.first_line_elsewhere(&active, t_kill, limit, "a new server to run m1");
        let took = Duration::from_nanos(next.t_ns - t_kill);
        let ratio = took.as_secs_f64() / lease.as_secs_f64();
        let old_gone = try_wait_until(Duration::from_secs(3), || {
            (!role_pid_alive(&self.journal, line.pid)).then_some(())
        })
        .is_some();
        println!(
            "failover {run:>2}: {active} (epoch {epoch}) -> {} (epoch {}): {:>7.1} ms = {ratio:.2} x lease{}",
            next.server,
            next.epoch,
            took.as_secs_f64() * 1e3,
            if old_gone {
                ""
            } else {
                "  OLD ROLE PROCESS STILL ALIVE"
            }
        );
        self.agent(&active).restart();
        self.c
            .wait_servers_up(&[active.as_str()], Duration::from_secs(20));
        ratio
    }

    /// Drains m1's active server: returns (that server, the new server's first line, the
    /// gap since the old instance's last line in ms, the time since the drain in ms);
    /// resumes the server after.
    fn drain_gap(&self) -> (String, Line, f64, f64) {
        let c = &self.c;
        let (active, epoch) = wait_until(Duration::from_secs(10), "m1 active", || c.active("m1"));
        let t_drain = now_ns();
        c.json(&["server", "drain", &active]);
        let next = self.first_line_elsewhere(
            &active,
            t_drain,
            Duration::from_secs(15),
            "the drain handover",
        );
        let old = role_instances(&self.journal, "m1")
            .into_iter()
            .filter(|i| i.server == active && i.epoch == epoch)
            .max_by_key(|i| i.last)
            .expect("the old instance");
        let gap = ms_between(old.last, next.t_ns);
        let to_first = ms_between(t_drain, next.t_ns);
        c.json(&["server", "resume", &active]);
        (active, next, gap, to_first)
    }

    /// Drain run `run`: the handover gap in ms.
    fn drain(&mut self, run: usize) -> f64 {
        let (active, next, gap, to_first) = self.drain_gap();
        println!(
            "drain    {run:>2}: {active} -> {}: gap {gap:>6.1} ms (drain to first write {to_first:.1} ms)",
            next.server,
        );
        gap
    }

    /// A drain to a server whose agent has just come back after being declared down:
    /// the handover gap in ms.
    fn drain_to_returned(&mut self, run: usize) -> f64 {
        let (active, _) = wait_until(Duration::from_secs(10), "m1 active", || self.c.active("m1"));
        let target = AGENT_SERVERS
            .iter()
            .find(|s| **s != active)
            .expect("another server")
            .to_string();
        self.agent(&target).kill9();
        wait_until(Duration::from_secs(20), "the target declared down", || {
            (self.c.server(&target)?.get("status")?.as_str()? == "down").then_some(())
        });
        self.agent(&target).restart();
        self.c
            .wait_servers_up(&[target.as_str()], Duration::from_secs(20));
        let (_, next, gap, _) = self.drain_gap();
        println!(
            "drain to a just-returned server {run}: {active} -> {}: gap {gap:>6.1} ms",
            next.server
        );
        gap
    }
}

fn directory_figures(a: &Args) -> Result<()> {
    let mut c = Cluster::start(3, ClusterOpts::default());
    // CLI write round trip (process start, connect, leader write, fsync on a quorum).
    let mut lat = Vec::new();
    for i in 0..a.writes {
        let name = format!("lat-{i}");
        let t = Instant::now();
        let out = c.cli(&["server", "add", &name]);
        if !out.ok() {
            bail!("write {name} failed: {}", out.stderr);
        }
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (lm, lw) = stats(&lat);
    println!();
    println!(
        "CLI write round trip ({} writes, one client, process start included): median {lm:.1} ms, worst {lw:.1} ms",
        lat.len()
    );
    // Write gap after kill -9 of the leader (a few runs; the node comes back in between).
    let runs = a.runs.min(5);
    let mut gaps = Vec::new();
    for run in 1..=runs {
        let leader = c.wait_ready(Duration::from_secs(30));
        let survivors: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
        let (elected, gap, k) = kill_leader(&mut c, leader, &survivors, run)?;
        let gap = gap.as_secs_f64() * 1e3;
        println!(
            "leader kill {run}: node {leader} killed, new leader seen after {} ms, first write after {gap:.0} ms ({k} attempt(s))",
            elected.map_or("?".to_string(), |d| d.as_millis().to_string())
        );
        gaps.push(gap);
        c.restart(leader);
    }
    let (gm, gw) = stats(&gaps);
    println!(
        "WRITE GAP after kill -9 of the leader ({runs} runs): median {gm:.0} ms, worst {gw:.0} ms"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// --leader-kills: the directory's own failover
// ---------------------------------------------------------------------------------------

/// `/proc/loadavg`, to record with the figures (the machine may be shared).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// role -> (active server, epoch), from a linearizable `role list`.
fn placement(c: &Cluster) -> Result<BTreeMap<String, (String, u64)>> {
    let list = c.cli(&["role", "list"]).try_json()?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                (
                    r["active_server"].as_str().unwrap_or("-").to_string(),
                    r["epoch"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect())
}

/// Sessions per node, from `cluster status`, once the agents hold `n` in all.
fn sessions_settled(c: &Cluster, n: u64) -> BTreeMap<u64, u64> {
    wait_until(
        Duration::from_secs(30),
        &format!("{n} agent sessions"),
        || {
            let st = c.status_at(&c.ids())?;
            let per = Cluster::sessions_per_node(&st);
            (per.values().sum::<u64>() == n).then_some(per)
        },
    )
}

fn spread(per: &BTreeMap<u64, u64>) -> String {
    per.iter()
        .map(|(id, n)| format!("n{id}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Role instances (role, epoch, server, pid) in the journal so far.
fn instance_count(journal: &Path) -> usize {
    journal::instances(&journal::read(journal)).len()
}

/// kill -9 of the leader (the `n`th kill): returns when a survivor first saw a new
/// leader, when the first write through the survivors succeeded, and after how many
/// attempts.
fn kill_leader(
    c: &mut Cluster,
    leader: u64,
    survivors: &[u64],
    n: usize,
) -> Result<(Option<Duration>, Duration, usize)> {
    let t = Instant::now();
    c.kill9(leader);
    // When a survivor first reports a new leader (its local view).
    let elected = try_wait_until(Duration::from_secs(30), || {
        survivors.iter().find_map(|s| {
            let st = c
                .cli_at(&[*s], &["cluster", "status", "--stale"])
                .try_json()
                .ok()?;
            let l = st.get("leader")?.as_u64()?;
            (l != leader).then_some(t.elapsed())
        })
    });
    let mut attempts = 0;
    loop {
        attempts += 1;
        let out = c.cli_at(
            survivors,
            &["server", "add", &format!("gap-{n}-{attempts}")],
        );
        if out.ok() {
            return Ok((elected, t.elapsed(), attempts));
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("no write succeeded within 60 s of the leader kill");
        }
    }
}

/// Waits until every role of `roles` has written to `journal` at or after `since`.
fn wait_roles_write(journal: &Path, roles: &[String], since: u64, limit: Duration, what: &str) {
    wait_until(limit, what, || {
        let lines = journal::read(journal);
        roles
            .iter()
            .all(|r| lines.iter().any(|l| &l.role == r && l.t_ns >= since))
            .then_some(())
    });
}

/// `--leader-kills`: the directory's own failover, kill after kill, then the summary.
fn leader_kill_figures(kills: usize, lease: Duration) -> Result<()> {
    println!(
        "baton measure --leader-kills {kills}: lease {lease:?}, binary {}, load average {}",
        baton_tests::baton_bin().display(),
        loadavg()
    );
    let mut b = KillBench::start(lease);
    let initial = placement(&b.c)?;
    let events_before = b.c.events().len();
    let spread_before = sessions_settled(&b.c, KILL_SERVERS.len() as u64);
    println!(
        "roles placed: {initial:?}\nsessions before the first kill: {}",
        spread(&spread_before)
    );
    let mut tally = KillTally {
        spread_after: spread_before.clone(),
        ..KillTally::default()
    };
    for k in 1..=kills {
        b.kill(k, lease, &mut tally)?;
    }
    let final_placement = placement(&b.c)?;
    let history_moves = b.c.events().len() - events_before;
    if final_placement != initial {
        println!("placement changed: {initial:?} -> {final_placement:?}");
    }
    tally.print(lease, history_moves, b.roles.len(), &spread_before);
    match check_journal(&b.journal) {
        Ok(()) => println!("journal: clean (no overlap, epochs increasing)"),
        Err(e) => println!("journal: NOT CLEAN\n{e}"),
    }
    println!("load average at the end: {}", loadavg());
    Ok(())
}

const KILL_SERVERS: [&str; 6] = ["srv-a", "srv-b", "srv-c", "srv-d", "srv-e", "srv-f"];

/// Three nodes, six agents, six journaling roles.
struct KillBench {
    // Field order matters for drop: the agents before the cluster that sweeps up.
    agents: Vec<Agent>,
    c: Cluster,
    journal: PathBuf,
    roles: Vec<String>,
}

/// What the kills added up to.
#[derive(Default)]
struct KillTally {
    /// Kill to the first successful write (ms).
    gaps: Vec<f64>,
    /// Kill to a new leader seen by a survivor (ms).
    elections: Vec<f64>,
    /// Role moves in `role list`.
    moves: usize,
    /// Role processes restarted in place.
    restarts: usize,
    spread_after: BTreeMap<u64, u64>,
    /// Kills made while the agents were still warning.
    unsettled: usize,
}

impl KillBench {
    fn start(lease: Duration) -> KillBench {
        let c = Cluster::start(3, ClusterOpts::lease(lease));
        let journal = c.journal("journal");
        let cmd = journal_command(&journal);
        let agents: Vec<Agent> = KILL_SERVERS
            .iter()
            .map(|s| Agent::start(&c, s, &[("default", &cmd)]))
            .collect();
        c.wait_servers_up(&KILL_SERVERS, Duration::from_secs(30));
        // Six roles, each first on a different server, with two more servers behind it.
        let n = KILL_SERVERS.len();
        let roles: Vec<String> = (0..n).map(|i| format!("k{}", i + 1)).collect();
        for (i, role) in roles.iter().enumerate() {
            let list: Vec<&str> = (0..3).map(|k| KILL_SERVERS[(i + k) % n]).collect();
            c.json(&["role", "create", role, "--servers", &list.join(",")]);
        }
        let t0 = now_ns();
        wait_roles_write(
            &journal,
            &roles,
            t0,
            Duration::from_secs(20),
            "every role to run",
        );
        KillBench {
            agents,
            c,
            journal,
            roles,
        }
    }

    /// Kill `k` of the leader, from a steady state; the killed node comes back and
    /// catches up, and every role writes again, before the next one.
    fn kill(&mut self, k: usize, lease: Duration, tally: &mut KillTally) -> Result<()> {
        let n = KILL_SERVERS.len() as u64;
        let leader = self.c.wait_ready(Duration::from_secs(30));
        // Kill from a steady state: no agent warned (session lost, no renewal
        // acknowledged for half a lease) for a whole lease, so every agent holds a fresh
        // renewal.
        let logs: Vec<&Path> = self.agents.iter().map(Agent::log).collect();
        if !wait_quiet(&logs, " WARN ", lease, Duration::from_secs(60)) {
            tally.unsettled += 1;
            println!("kill {k:>2}: the agents kept warning for 60 s; killing anyway");
        }
        let c = &mut self.c;
        let survivors: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
        let before = placement(c)?;
        let sessions_before = sessions_settled(c, n);
        let instances_before = instance_count(&self.journal);
        let (elected, gap, attempts) =
            kill_leader(c, leader, &survivors, k).with_context(|| format!("kill {k}"))?;
        let after = placement(c)?;
        let moved: Vec<String> = after
            .iter()
            .filter(|(r, p)| before.get(*r) != Some(*p))
            .map(|(r, p)| format!("{r}: {:?} -> {p:?}", before.get(r)))
            .collect();
        tally.moves += moved.len();
        // The killed node comes back and catches up before the next kill.
        let target = wait_until(Duration::from_secs(15), "the leader's index", || {
            let st = c.status_at(&survivors)?;
            let l = st["leader"].as_u64()?;
            Cluster::node_status(&st, l)?["last_applied"].as_u64()
        });
        c.restart(leader);
        c.wait_follower(&c.ids(), leader, target, Duration::from_secs(60));
        let sessions_after = sessions_settled(c, n);
        // Every role writes again (after a fence, it runs again once a renewal is acked).
        let t_check = now_ns();
        let limit = Duration::from_secs(30);
        wait_roles_write(
            &self.journal,
            &self.roles,
            t_check,
            limit,
            "every role to write again",
        );
        let restarted = instance_count(&self.journal) - instances_before;
        tally.restarts += restarted;
        println!(
            "kill {k:>2}: node {leader} (leader) killed; new leader seen after {} ms; first write after {:.0} ms ({attempts} attempt(s)); role moves {}{}; role processes restarted in place {restarted}; sessions {} -> {}",
            elected.map_or("?".to_string(), |d| d.as_millis().to_string()),
            gap.as_secs_f64() * 1e3,
            moved.len(),
            if moved.is_empty() {
                String::new()
            } else {
                format!(" {moved:?}")
            },
            spread(&sessions_before),
            spread(&sessions_after),
        );
        tally.gaps.push(gap.as_secs_f64() * 1e3);
        if let Some(e) = elected {
            tally.elections.push(e.as_secs_f64() * 1e3);
        }
        tally.spread_after = sessions_after;
        Ok(())
    }
}

impl KillTally {
    fn print(
        &self,
        lease: Duration,
        history_moves: usize,
        roles: usize,
        spread_before: &BTreeMap<u64, u64>,
    ) {
        let (gm, gw) = stats(&self.gaps);
        println!();
        println!(
            "WRITE GAP after kill -9 of the leader ({} kills, lease {lease:?}): median {gm:.0} ms, worst {gw:.0} ms",
            self.gaps.len()
        );
        if !self.elections.is_empty() {
            let (em, ew) = stats(&self.elections);
            println!("NEW LEADER seen by a survivor: median {em:.0} ms, worst {ew:.0} ms");
        }
        println!(
            "ROLE MOVES during the kills: {} in role list, {history_moves} in the history (must be 0)",
            self.moves
        );
        println!(
            "ROLE PROCESSES restarted in place (fenced, same epoch and server): {} over {} kills x {roles} roles",
            self.restarts,
            self.gaps.len(),
        );
        if self.unsettled > 0 {
            println!(
                "{} kill(s) came while agents were still warning",
                self.unsettled
            );
        }
        println!(
            "SESSIONS per node: before the first kill {}, after the last {}",
            spread(spread_before),
            spread(&self.spread_after)
        );
    }
}
