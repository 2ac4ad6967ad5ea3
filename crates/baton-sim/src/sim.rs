//! One simulated run: build the turmoil world from a seed, inject the seed's faults,
//! heal, check liveness and read-back, and return the violations and the trace.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use baton_directory::{Faults, NodeConfig, NodeEnv};

use crate::agent::{self, AgentOpts};
use crate::checker::{Checker, Shared, lock, now_ms};
use crate::client::{self, ClientOpts};
use crate::net;
use crate::rng::Prng;
use crate::store::Disk;

pub const NODES: [&str; 3] = ["n1", "n2", "n3"];
pub const AGENTS: [&str; 3] = ["a1", "a2", "a3"];
pub const CLIENTS: [&str; 2] = ["c1", "c2"];
/// The host of a duplicate agent (same server name as `AGENTS[0]`), in some seeds.
pub const DUPLICATE: &str = "d1";
/// When the duplicate starts (simulated ms): after every agent registered.
const DUPLICATE_FROM_MS: u64 = 2_500;

/// The simulation's lease (simulated time is cheap, but not free).
pub const LEASE_MS: u64 = 2_000;
/// Clock-rate bound given to nodes and agents.
pub const RHO_PPM: u64 = 10_000;
const HEARTBEAT_MS: u64 = 50;
/// Entries between snapshots (a run writes about a hundred).
const SNAPSHOT_EVERY: u64 = 10;
/// Simulated time per step: every host runs, every link delivers, once per tick.
const TICK_MS: u64 = 2;
/// When faults start, and how long the fault phase lasts.
const FAULTS_FROM_MS: u64 = 3_000;
const FAULT_PHASE_MS: u64 = 14_000;
/// No drop fault ends later than this before the end of the fault phase: time for HTTP/2
/// keepalive to replace the connections it wedged.
const DROP_CLEAR_MS: u64 = 11_000;

/// Bugs planted on purpose, to show the checkers see them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// The store reports log entries persisted before they are flushed.
    pub ack_before_flush: bool,
    /// Agents never fence on lease expiry.
    pub no_self_fence: bool,
    /// A new leader does not restart liveness clocks (needs the `planted-bugs` feature).
    pub no_clock_restart: bool,
}

/// The result of one seed.
pub struct Outcome {
    pub seed: u64,
    pub directory_only: bool,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
}

/// A fault of the plan.
#[derive(Clone, Debug)]
pub enum Fault {
    CrashNode(usize),
    /// Every directory node crashes; all restart together (a directory restart).
    CrashAllNodes,
    CrashAgent(usize),
    /// Cut these hosts off from every other host: a blackhole. Segments sent meanwhile
    /// are held and delivered when it heals (what TCP retransmission achieves; turmoil's
    /// TCP has none), new connections time out meanwhile.
    Partition(Vec<&'static str>),
    /// The same on the single link between two hosts (a partial partition).
    Hold(&'static str, &'static str),
    /// Drop every message between two hosts (turmoil's explicit partition). turmoil's TCP
    /// never retransmits, so a stream that lost a segment stays wedged until HTTP/2
    /// keepalive (5 s + 5 s) replaces the connection; new connects fail at once.
    Drop(&'static str, &'static str),
    /// The leader loses its quorum but keeps its term: one follower crashes and the
    /// link to the other is blackholed. At the end the crashed follower restarts; the
    /// link heals `LATE_MS` later, so the leader regains its quorum in the same term.
    LeaderQuorumLoss,
    /// The wall clock of the node leading at the start steps by this many ms (NTP, a VM
    /// resume) and stays stepped. Node wall clocks also differ by a per-seed skew from
    /// the start. Only history timestamps may follow them.
    ClockStep(i64),
}

/// One fault of a plan: from `start_ms` for `len_ms` (simulated).
#[derive(Clone, Debug)]
pub struct Planned {
    pub start_ms: u64,
    pub len_ms: u64,
    pub fault: Fault,
}

/// How long after its end a `LeaderQuorumLoss` heals the blackholed link.
const LATE_MS: u64 = 1_000;

impl Planned {
    fn end_ms(&self) -> u64 {
        self.start_ms + self.len_ms
    }
    /// When the fault is completely over.
    fn over_ms(&self) -> u64 {
        match self.fault {
            Fault::LeaderQuorumLoss => self.end_ms() + LATE_MS,
            _ => self.end_ms(),
        }
    }
}

fn all_hosts() -> Vec<&'static str> {
    NODES
        .iter()
        .chain(&AGENTS)
        .chain(&CLIENTS)
        .copied()
        .collect()
}

fn pick<T: Copy>(rng: &mut Prng, v: &[T]) -> T {
    v[rng.below(v.len() as u64) as usize]
}

/// The seed's fault plan: faults one after the other, each 1-5 s.
fn plan(rng: &mut Prng, directory_only: bool) -> Vec<Planned> {
    let mut out = Vec::new();
    let mut t = FAULTS_FROM_MS;
    while t < FAULTS_FROM_MS + FAULT_PHASE_MS {
        let len = rng.between(1_000, 5_000);
        let kinds = if directory_only { 6 } else { 8 };
        let mut kind = rng.below(kinds);
        // Dropped segments wedge a turmoil TCP stream for good (no retransmission), and
        // the directory's cached forwarding/confirmation channels have no HTTP/2
        // keepalive: a wedged confirmation channel under a healthy Raft quorum lets
        // leases run out (seen with seed 364). Real TCP retransmits, so directory-only
        // runs, which check that no role moves, use holds instead of drops.
        if kind == 3
            && (directory_only || t + len + DROP_CLEAR_MS > FAULTS_FROM_MS + FAULT_PHASE_MS)
        {
            // Wedged streams must be replaced before the liveness deadline (see `Drop`).
            kind = 2;
        }
        let fault = match kind {
            0 => Fault::CrashNode(rng.below(3) as usize),
            1 if directory_only => {
                // One node cut off from everything: agents can still reach a majority.
                Fault::Partition(vec![pick(rng, &NODES)])
            }
            1 => {
                // A minority or a majority of the directory, cut off from everything
                // (a majority cut off from the agents is, for them, the directory gone:
                // not a directory-only fault).
                let mut n = NODES.to_vec();
                rng.shuffle(&mut n);
                n.truncate(rng.between(1, 2) as usize);
                Fault::Partition(n)
            }
            4 if directory_only => Fault::CrashAllNodes,
            5 if directory_only => Fault::LeaderQuorumLoss,
            7 => Fault::LeaderQuorumLoss,
            2 => {
                let mut n = NODES.to_vec();
                rng.shuffle(&mut n);
                Fault::Hold(n[0], n[1])
            }
            3 => {
                let mut n = NODES.to_vec();
                rng.shuffle(&mut n);
                Fault::Drop(n[0], n[1])
            }
            4 => Fault::CrashAllNodes,
            5 => Fault::CrashAgent(rng.below(3) as usize),
            _ => {
                // Any set of hosts.
                let mut h = all_hosts();
                rng.shuffle(&mut h);
                h.truncate(rng.between(1, 4) as usize);
                if rng.chance(50) {
                    Fault::Partition(vec![pick(rng, &AGENTS)])
                } else {
                    Fault::Partition(h)
                }
            }
        };
        let p = Planned {
            start_ms: t,
            len_ms: len,
            fault,
        };
        t = p.over_ms() + rng.between(300, 1_500);
        out.push(p);
    }
    out
}

fn node_config(id: u64, rng: &mut Prng) -> NodeConfig {
    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), net::PORT);
    let mut c = NodeConfig::new(id, listen, "/nonexistent-sim".into());
    c.advertise = format!("{}:{}", NODES[id as usize - 1], net::PORT);
    c.peers = NODES
        .iter()
        .enumerate()
        .map(|(i, n)| (i as u64 + 1, format!("{n}:{}", net::PORT)))
        .collect();
    c.lease_ms = LEASE_MS;
    c.rho_ppm = RHO_PPM;
    c.grace_ms = baton_directory::config::default_grace_ms(LEASE_MS, RHO_PPM);
    c.heartbeat_ms = HEARTBEAT_MS;
    // Snapshots (and purging the log behind them) every few dozen entries, so that
    // restarts and lagging followers go through snapshot install.
    c.snapshot_every = SNAPSHOT_EVERY;
    // openraft draws the election timeout from [min, max) with its own unseeded RNG: a
    // range of one millisecond makes the draw fixed, and the seed picks the value.
    c.election_timeout_min_ms = 250 + 80 * (id - 1) + rng.below(60);
    c.election_timeout_max_ms = c.election_timeout_min_ms + 1;
    c
}

/// Run one seed.
pub fn run_seed(seed: u64, bugs: Bugs) -> Outcome {
    run_with(seed, bugs, None)
}

/// Run one seed with the given fault plan instead of the seed's own (for regression
/// tests of a precise scenario). A given plan counts as directory-only when it has no
/// agent crash and no partition of more than one host.
pub fn run_with(seed: u64, bugs: Bugs, plan_override: Option<Vec<Planned>>) -> Outcome {
    run_scenario(seed, bugs, plan_override, None)
}

/// The role a failback run watches, its primary, and its failback delay.
pub const FAILBACK_ROLE: &str = "fb";
pub const FAILBACK_DELAY_MS: u64 = 6_000;

/// A failback under a wall-clock step: role [`FAILBACK_ROLE`] (over a1, a2, a3, failback
/// after [`FAILBACK_DELAY_MS`]) runs on a1; a1's agent crashes long enough for the role
/// to fail over, and comes back; a second later the leader's wall clock steps by
/// `step_ms`. The checker wants the role back on a1 no sooner than the delay after a1's
/// agent restarted, and not much later.
pub fn run_failback_clock_step(seed: u64, step_ms: i64) -> Outcome {
    let plan = vec![
        Planned {
            start_ms: 4_000,
            len_ms: 3_000,
            fault: Fault::CrashAgent(0),
        },
        // Long, so that the run lasts well past the failback.
        Planned {
            start_ms: 8_000,
            len_ms: 8_000,
            fault: Fault::ClockStep(step_ms),
        },
    ];
    run_scenario(seed, Bugs::default(), Some(plan), Some(FAILBACK_DELAY_MS))
}

fn run_scenario(
    seed: u64,
    bugs: Bugs,
    plan_override: Option<Vec<Planned>>,
    failback_delay_ms: Option<u64>,
) -> Outcome {
    let mut rng = Prng::new(seed);
    // Wall clocks come from their own stream, so that they change nothing else a seed
    // does: every node's is skewed by up to 30 s, and a seed's own plan steps the
    // leader's once, by up to an hour either way.
    let mut clock_rng = Prng::new(seed ^ 0xC10C_5EED_C10C_5EED);
    let clocks: Vec<Arc<AtomicI64>> = NODES
        .iter()
        .map(|_| Arc::new(AtomicI64::new(clock_rng.between(0, 60_000) as i64 - 30_000)))
        .collect();
    let mut directory_only = seed.is_multiple_of(4);
    let mut c = Checker::default();
    c.forbid_moves = directory_only;
    if let Some(delay_ms) = failback_delay_ms {
        c.failback = Some(crate::checker::FailbackWatch {
            role: FAILBACK_ROLE.to_string(),
            primary: AGENTS[0].to_string(),
            delay_ms,
            slack_ms: 3_000,
            back_ms: None,
            returned_ms: None,
        });
    }
    let checker: Shared = Arc::new(Mutex::new(c));
    let mut faults = plan(&mut rng, directory_only);
    let by = clock_rng.between(1_000, 3_600_000) as i64;
    faults.push(Planned {
        start_ms: FAULTS_FROM_MS + clock_rng.below(FAULT_PHASE_MS),
        len_ms: 0,
        fault: Fault::ClockStep(if clock_rng.chance(50) { by } else { -by }),
    });
    if let Some(p) = plan_override {
        directory_only = p.iter().all(|f| match &f.fault {
            Fault::CrashAgent(_) => false,
            Fault::Partition(side) => side.len() == 1 && NODES.contains(&side[0]),
            _ => true,
        });
        faults = p;
    }
    lock(&checker).forbid_moves = directory_only;
    let heal_ms = faults
        .iter()
        .map(Planned::over_ms)
        .max()
        .unwrap_or(FAULTS_FROM_MS);
    let max_election_ms = 250 + 80 * 2 + 60 + 1;
    let election_ms = 2 * max_election_ms + HEARTBEAT_MS;
    let live_ms = heal_ms + 2 * LEASE_MS + election_ms;
    let read_ms = heal_ms + 1_000;
    let end_ms = live_ms + 1_000;

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(client::EPOCH_MS))
        .tick_duration(Duration::from_millis(TICK_MS))
        .simulation_duration(Duration::from_millis(end_ms + 60_000))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(4))
        .build();

    {
        let mut c = lock(&checker);
        c.event(
            0,
            format!(
                "seed {seed}: {} faults, heal at {heal_ms} ms, liveness deadline {live_ms} ms{}{}",
                faults.len(),
                if directory_only {
                    ", directory faults only"
                } else {
                    ""
                },
                if bugs == Bugs::default() {
                    String::new()
                } else {
                    format!(", planted {bugs:?}")
                }
            ),
        );
    }

    // Which nodes lead, as their own metrics say (node id -> term).
    let leaders: Leaders = Arc::default();
    let mut disks = Vec::new();
    for (i, name) in NODES.iter().enumerate() {
        let tracer = checker.clone();
        let disk = Disk::new(
            bugs.ack_before_flush,
            Arc::new(move |m| lock(&tracer).event(now_ms(), format!("{name}: {m}"))),
        );
        disks.push(disk.clone());
        let mut config = node_config(i as u64 + 1, &mut rng);
        if seed % 3 == 1 {
            // Nodes configured with different leases: the cluster serves one (its first
            // leader's), and a client changes it during the run.
            config.lease_ms = [LEASE_MS, LEASE_MS * 3 / 4, LEASE_MS / 2][i];
            config.grace_ms = baton_directory::config::default_grace_ms(config.lease_ms, RHO_PPM);
        }
        let checker = checker.clone();
        let leaders = leaders.clone();
        let clock = clocks[i].clone();
        let env = NodeEnv {
            connect: net::channel_factory(),
            wall_ms: Arc::new(move || {
                let sim = turmoil::since_epoch().map_or(0, |d| d.as_millis() as u64);
                sim.saturating_add_signed(clock.load(Ordering::SeqCst))
            }),
            #[cfg(feature = "planted-bugs")]
            planted: baton_directory::env::Planted {
                no_clock_restart: bugs.no_clock_restart,
            },
        };
        sim.host(*name, move || {
            let (disk, config, checker, env, leaders) = (
                disk.clone(),
                config.clone(),
                checker.clone(),
                env.clone(),
                leaders.clone(),
            );
            async move {
                disk.reopen();
                lock(&checker).event(
                    now_ms(),
                    format!(
                        "n{} starts, durable log up to {:?}",
                        config.id,
                        disk.flushed_last_index()
                    ),
                );
                let (log, sm, view) = disk.open();
                let node =
                    baton_directory::Node::open_with(config, Faults::default(), log, sm, view, env)
                        .await?;
                // Trace leadership as this node sees it.
                let mut metrics = node.raft.metrics();
                let (id, tracer) = (node.id, checker.clone());
                tokio::spawn(async move {
                    let mut last = None;
                    loop {
                        let now = {
                            let m = metrics.borrow_and_update();
                            (m.state == openraft::ServerState::Leader, m.current_term)
                        };
                        if now.0 && last != Some(now) {
                            lock(&tracer).event(now_ms(), format!("n{id} leads, term {}", now.1));
                        }
                        {
                            let mut l = leaders.lock().unwrap_or_else(PoisonError::into_inner);
                            if now.0 {
                                l.insert(id, now.1);
                            } else {
                                l.remove(&id);
                            }
                        }
                        last = Some(now);
                        if metrics.changed().await.is_err() {
                            return;
                        }
                    }
                });
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", net::PORT)).await?;
                let _running =
                    baton_directory::serve_one_port(node, net::incoming(listener)).await?;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }
    for (i, name) in AGENTS.iter().enumerate() {
        let checker = checker.clone();
        let first = rng.below(3) as usize;
        sim.host(*name, move || {
            let opts = AgentOpts {
                server: name.to_string(),
                host: name.to_string(),
                nodes: NODES.iter().map(|s| s.to_string()).collect(),
                lease_ms: LEASE_MS,
                rho_ppm: RHO_PPM,
                first: first + i,
                no_self_fence: bugs.no_self_fence,
            };
            agent::run(opts, checker.clone())
        });
    }
    // Every third seed, a second agent under a1's name (a cloned VM) starts on a host of
    // its own while a1 runs. It must be refused and run nothing; if a1 is down when it
    // comes, it may take the name over, and then a1's own restart is refused. The
    // checker's single-active rule sees each instance as a holder of its own. No random
    // draw here, so every seed keeps the fault plan it had.
    if seed % 3 == 2 {
        let checker = checker.clone();
        sim.host(DUPLICATE, move || {
            let opts = AgentOpts {
                server: AGENTS[0].to_string(),
                host: DUPLICATE.to_string(),
                nodes: NODES.iter().map(|s| s.to_string()).collect(),
                lease_ms: LEASE_MS,
                rho_ppm: RHO_PPM,
                first: 1,
                no_self_fence: bugs.no_self_fence,
            };
            let checker = checker.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(DUPLICATE_FROM_MS)).await;
                lock(&checker).event(now_ms(), format!("{DUPLICATE} starts as {}", AGENTS[0]));
                agent::run(opts, checker).await
            }
        });
    }
    for (i, name) in CLIENTS.iter().enumerate() {
        let opts = ClientOpts {
            name: name.to_string(),
            index: i as u64 + 1,
            nodes: NODES.iter().map(|s| s.to_string()).collect(),
            agents: AGENTS.iter().map(|s| s.to_string()).collect(),
            seed: rng.next_u64(),
            start_ms: 2_000,
            stop_ms: heal_ms,
            read_ms,
            lease_changes: seed % 3 == 1 && i == 1,
        };
        sim.client(*name, client::run(opts, checker.clone()));
    }
    if let Some(delay_ms) = failback_delay_ms {
        sim.client(
            "fb-admin",
            client::create_failback_role(
                NODES.iter().map(|s| s.to_string()).collect(),
                FAILBACK_ROLE.to_string(),
                AGENTS.iter().map(|s| s.to_string()).collect(),
                delay_ms,
                1_500,
                checker.clone(),
            ),
        );
    }

    // Start and end actions of the faults, in time order.
    let mut actions: Vec<(u64, Phase, usize)> = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        actions.push((f.start_ms, Phase::Start, i));
        actions.push((f.end_ms(), Phase::End, i));
        if f.over_ms() > f.end_ms() {
            actions.push((f.over_ms(), Phase::Late, i));
        }
    }
    let mut resolved: BTreeMap<usize, [&'static str; 3]> = BTreeMap::new();
    actions.sort();
    let mut next = 0;
    let mut live_checked = false;
    loop {
        let now = sim.elapsed().as_millis() as u64;
        if now >= end_ms {
            break;
        }
        while next < actions.len() && actions[next].0 <= now {
            let (_, phase, i) = actions[next];
            next += 1;
            apply(
                &mut sim,
                &checker,
                &leaders,
                &mut resolved,
                now,
                (i, &faults[i].fault),
                phase,
            );
            if phase == Phase::Start
                && let Fault::ClockStep(by) = faults[i].fault
            {
                step_leader_clock(&checker, &leaders, &clocks, now, by);
            }
            if next == actions.len() {
                heal(&mut sim);
                lock(&checker).event(now, "healed: every link repaired, every host up");
            }
        }
        if !live_checked && now >= live_ms {
            live_checked = true;
            let mut c = lock(&checker);
            let held = c.held_roles(now);
            c.event(now, format!("liveness deadline: {} roles held", held.len()));
            c.held_at_deadline = Some(held);
        }
        match sim.step() {
            Ok(_) => {}
            Err(e) => {
                lock(&checker).violation(now, format!("a host failed: {e}"));
                break;
            }
        }
    }
    let mut c = lock(&checker);
    let now = sim.elapsed().as_millis() as u64;
    for name in CLIENTS {
        if !c.read_back.contains(name) {
            c.violation(now, format!("{name} did not finish reading back"));
        }
    }
    let held = c.held_at_deadline.clone().unwrap_or_default();
    let mut expected: BTreeSet<String> = c.found_roles.clone();
    for a in c.acked.values() {
        expected.extend(a.iter().cloned());
    }
    for r in expected.difference(&held).cloned().collect::<Vec<_>>() {
        c.violation(
            now,
            format!("liveness: {r} not running at the deadline ({live_ms} ms)"),
        );
    }
    let registers = c.registers.clone();
    for (role, ops) in registers {
        let result = crate::linear::linearizable(&ops, 0);
        c.event(
            now,
            format!(
                "register {role}: {} operations, linearizable: {result:?}",
                ops.len()
            ),
        );
        if result == Some(false) {
            let h: Vec<String> = ops
                .iter()
                .map(|o| {
                    format!(
                        "{} {:?} [{}, {:?}]",
                        o.client, o.kind, o.invoke_ms, o.complete_ms
                    )
                })
                .collect();
            c.violation(now, format!("register {role} not linearizable: {h:?}"));
        }
    }
    c.failback_end(now);
    for p in crate::take_panics() {
        c.violation(now, format!("a task panicked: {p}"));
    }
    let n = c.violations.len();
    c.event(now, format!("end: {n} violations"));
    Outcome {
        seed,
        directory_only,
        violations: c.violations.clone(),
        trace: c.trace.clone(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Start,
    End,
    Late,
}

type Leaders = Arc<Mutex<BTreeMap<u64, u64>>>;

fn apply(
    sim: &mut turmoil::Sim<'_>,
    checker: &Shared,
    leaders: &Leaders,
    resolved: &mut BTreeMap<usize, [&'static str; 3]>,
    now: u64,
    (i, f): (usize, &Fault),
    phase: Phase,
) {
    let start = phase == Phase::Start;
    let what = match phase {
        Phase::Start => "starts",
        Phase::End => "ends",
        Phase::Late => "heals its link",
    };
    lock(checker).event(now, format!("fault {what} {f:?}"));
    if let Fault::LeaderQuorumLoss = f {
        if start {
            // The leader with the highest term, if any.
            let leader = leaders
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .max_by_key(|(_, term)| **term)
                .map(|(id, _)| *id as usize - 1);
            let Some(l) = leader else {
                lock(checker).event(now, "no leader: nothing to do");
                return;
            };
            let others: Vec<usize> = (0..3).filter(|n| *n != l).collect();
            let hosts = [NODES[l], NODES[others[0]], NODES[others[1]]];
            lock(checker).event(
                now,
                format!(
                    "{} leads: {} crashes, link to {} cut",
                    hosts[0], hosts[1], hosts[2]
                ),
            );
            leaders
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&(others[0] as u64 + 1));
            sim.crash(hosts[1]);
            sim.hold(hosts[0], hosts[2]);
            resolved.insert(i, hosts);
        } else if let Some(hosts) = resolved.get(&i) {
            if phase == Phase::End {
                sim.bounce(hosts[1]);
            } else {
                sim.release(hosts[0], hosts[2]);
            }
        }
        return;
    }
    if start && let Fault::CrashNode(n) = f {
        leaders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(*n as u64 + 1));
    }
    if start && let Fault::CrashAllNodes = f {
        leaders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
    match (f, start) {
        (Fault::CrashNode(i), true) => sim.crash(NODES[*i]),
        (Fault::CrashNode(i), false) => sim.bounce(NODES[*i]),
        (Fault::CrashAllNodes, true) => {
            for n in NODES {
                sim.crash(n);
            }
        }
        (Fault::CrashAllNodes, false) => {
            for n in NODES {
                sim.bounce(n);
            }
        }
        (Fault::CrashAgent(i), true) => {
            sim.crash(AGENTS[*i]);
            lock(checker).agent_crashed(now, AGENTS[*i]);
        }
        (Fault::CrashAgent(i), false) => {
            sim.bounce(AGENTS[*i]);
            lock(checker).agent_restarted(now, AGENTS[*i]);
        }
        (Fault::Partition(side), true) => {
            for a in side {
                for b in all_hosts().into_iter().filter(|h| !side.contains(h)) {
                    sim.hold(*a, b);
                }
            }
        }
        (Fault::Partition(side), false) => {
            for a in side {
                for b in all_hosts().into_iter().filter(|h| !side.contains(h)) {
                    sim.release(*a, b);
                }
            }
        }
        (Fault::Hold(a, b), true) => sim.hold(*a, *b),
        (Fault::Hold(a, b), false) => sim.release(*a, *b),
        (Fault::Drop(a, b), true) => sim.partition(*a, *b),
        (Fault::Drop(a, b), false) => sim.repair(*a, *b),
        (Fault::LeaderQuorumLoss, _) | (Fault::ClockStep(_), _) => {}
    }
}

/// Step the wall clock of the node leading now (the highest term) by `by` ms.
fn step_leader_clock(
    checker: &Shared,
    leaders: &Leaders,
    clocks: &[Arc<AtomicI64>],
    now: u64,
    by: i64,
) {
    let leader = leaders
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .max_by_key(|(_, term)| **term)
        .map(|(id, _)| *id as usize - 1);
    match leader {
        Some(l) => {
            clocks[l].fetch_add(by, Ordering::SeqCst);
            lock(checker).event(now, format!("{}'s wall clock steps by {by} ms", NODES[l]));
        }
        None => lock(checker).event(now, "no leader: no clock stepped"),
    }
}

/// Repair and release every link (faults end one by one already; this is the safety net).
fn heal(sim: &mut turmoil::Sim<'_>) {
    let hosts = all_hosts();
    for (i, a) in hosts.iter().enumerate() {
        for b in &hosts[i + 1..] {
            sim.repair(*a, *b);
            sim.release(*a, *b);
        }
    }
}
