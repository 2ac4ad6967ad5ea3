//! The workloads, each written once over [`System`] and run against Baton and etcd.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
// Role processes stamp their start with `date +%s%N`, so failover times are measured
// on the same wall clock as the harness's journals.
use baton_tests::now_ns as wall_ns;

use crate::baton_sys::BatonCluster;
use crate::etcd_sys::EtcdCluster;
use crate::journal::Journal;
use crate::procs::{dir_bytes, rss_kb};
use crate::report::{Goal, Row, TlsRow};
use crate::stats::{max, percentile};
use crate::syscalls::FsyncCounter;
use crate::system::{Arrivals, Sessions, System, Writer, channels_over};

pub struct Ctx {
    pub baton_bin: PathBuf,
    pub etcd_bin: PathBuf,
    pub driver_bin: PathBuf,
    pub work: PathBuf,
    pub quick: bool,
    pub rows: Vec<Row>,
    /// The `tls_cost` workload's rows: Baton with mutual TLS against Baton in plain text.
    pub tls_rows: Vec<TlsRow>,
    pub notes: BTreeMap<String, String>,
    pub params: BTreeMap<String, serde_json::Value>,
    /// Extra flags for every `baton directory` (experiments: `--election-timeout 150ms`).
    pub baton_args: Vec<String>,
}

impl Ctx {
    pub(crate) fn row(
        &mut self,
        metric: &str,
        unit: &str,
        baton: Option<f64>,
        etcd: Option<f64>,
        goal: Goal,
    ) {
        let r = Row::new(metric, unit, baton, etcd, goal);
        eprintln!(
            "  {metric}: baton {:?} etcd {:?} goal {} met {}",
            r.baton, r.etcd, r.goal, r.met
        );
        self.rows.push(r);
    }
    fn tls_row(&mut self, metric: &str, unit: &str, plain: Option<f64>, tls: Option<f64>) {
        let r = TlsRow::new(metric, unit, plain, tls);
        eprintln!(
            "  {metric}: plain {:?} tls {:?} ratio {:?}",
            r.plain, r.tls, r.ratio
        );
        self.tls_rows.push(r);
    }
    pub(crate) fn note(&mut self, key: &str, text: impl Into<String>) {
        let t = text.into();
        eprintln!("  note {key}: {t}");
        self.notes.insert(key.into(), t);
    }
    pub(crate) fn param(&mut self, key: &str, v: impl Into<serde_json::Value>) {
        self.params.insert(key.into(), v.into());
    }
    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        let d = self.work.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("work dir");
        d
    }
}

/// Log an error of one system's half of a workload and go on with `None`.
fn soft<T>(ctx: &mut Ctx, what: &str, r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            ctx.note(&format!("error_{what}"), format!("{e:#}"));
            None
        }
    }
}

// ---------------------------------------------------------------------------------------
// Writers: the same closed-loop harness for both systems
// ---------------------------------------------------------------------------------------

struct LoopResult {
    /// Writes acknowledged in the measured window.
    ops: u64,
    /// Writes acknowledged in all, warm-up and the last in-flight ones included (what a
    /// count of the servers' work over the whole level divides by).
    all_ops: u64,
    secs: f64,
    lat_ms: Vec<f64>,
    errors: u64,
}

/// `c` writers in a closed loop: `warmup`, then `dur` measured (or until `total` writes).
async fn closed_loop<W: Writer>(
    w: &W,
    c: usize,
    warmup: Duration,
    dur: Duration,
    total: Option<u64>,
) -> LoopResult {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let all_ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let issued = Arc::new(AtomicU64::new(0));
    let lats = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..c {
        let (w, measuring, stop, ops, all_ops, errors, issued, lats) = (
            w.clone(),
            measuring.clone(),
            stop.clone(),
            ops.clone(),
            all_ops.clone(),
            errors.clone(),
            issued.clone(),
            lats.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(t) = total
                    && issued.fetch_add(1, Ordering::Relaxed) >= t
                {
                    break;
                }
                n += 1;
                let t0 = Instant::now();
                let r = w.write(i, n).await;
                let m = measuring.load(Ordering::Relaxed);
                if r.is_ok() {
                    all_ops.fetch_add(1, Ordering::Relaxed);
                }
                match r {
                    Ok(()) if m => {
                        ops.fetch_add(1, Ordering::Relaxed);
                        if c <= 4 {
                            mine.push(t0.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    Ok(()) => {}
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lats.lock().expect("lats").extend(mine);
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    if total.is_some() {
        let mut last = 0;
        let mut report = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tasks.iter().all(|t| t.is_finished()) {
                break;
            }
            if report.elapsed() > Duration::from_secs(15) {
                let now = ops.load(Ordering::Relaxed);
                eprintln!(
                    "    {} writes done ({:.0}/s)",
                    issued.load(Ordering::Relaxed).min(total.unwrap_or(0)),
                    (now - last) as f64 / report.elapsed().as_secs_f64()
                );
                last = now;
                report = Instant::now();
            }
        }
    } else {
        tokio::time::sleep(dur).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let ops_n = ops.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let lat_ms = std::mem::take(&mut *lats.lock().expect("lats"));
    LoopResult {
        ops: ops_n,
        all_ops: all_ops.load(Ordering::Relaxed),
        secs,
        lat_ms,
        errors: errors.load(Ordering::Relaxed),
    }
}

/// A cluster of `S` started as `{prefix}-{name}`, with writers for the closed-loop
/// workloads (Baton: on `roles` running roles).
async fn with_writer<S: System>(
    ctx: &Ctx,
    prefix: &str,
    roles: usize,
    sessions: Sessions,
) -> Result<(S, S::Writer)> {
    let name = format!("{prefix}-{}", S::NAME);
    let mut c = S::start(ctx, &name, Duration::from_secs(3), sessions).await?;
    let w = c.bulk_writer(&name, roles).await?;
    Ok((c, w))
}

// ---------------------------------------------------------------------------------------
// 1. Write throughput and commit latency
// ---------------------------------------------------------------------------------------

/// What one system's throughput levels measured.
struct Levels {
    /// Per level (writers): the closed loop's result.
    results: BTreeMap<usize, LoopResult>,
    /// fsync-family calls of the leader over the whole c64 level, per acknowledged write.
    fsyncs_c64: Option<f64>,
}

async fn throughput_on<S: System>(
    ctx: &Ctx,
    levels: &[usize],
    warm: Duration,
    dur: Duration,
) -> Result<Levels> {
    eprintln!("== write throughput: {}", S::NAME);
    let (c, w) = with_writer::<S>(ctx, "tp", 256, Sessions::Shared).await?;
    let leader = c.leader().await?;
    let pid = c.pid(leader);
    let mut out = Levels {
        results: BTreeMap::new(),
        fsyncs_c64: None,
    };
    for &n in levels {
        let counter = match (n, pid) {
            (64, Some(pid)) => FsyncCounter::start(pid, &c.dir().join("perf-fsync-c64.csv")).await,
            _ => None,
        };
        let r = closed_loop(&w, n, warm, dur, None).await;
        if let Some(counter) = counter
            && let Some(calls) = counter.stop().await
            && r.all_ops > 0
            && c.leader().await.ok() == Some(leader)
        {
            out.fsyncs_c64 = Some(calls as f64 / r.all_ops as f64);
        }
        eprintln!(
            "  c{n}: {:.0}/s ({} errors)",
            r.ops as f64 / r.secs,
            r.errors
        );
        out.results.insert(n, r);
    }
    Ok(out)
}

pub async fn throughput(ctx: &mut Ctx) -> Result<()> {
    let (warm, dur) = if ctx.quick {
        (Duration::from_millis(500), Duration::from_secs(2))
    } else {
        (Duration::from_secs(2), Duration::from_secs(10))
    };
    ctx.param("throughput_seconds_per_level", dur.as_secs());
    let levels = [1usize, 64, 256];
    let b = throughput_on::<BatonCluster>(ctx, &levels, warm, dur).await?;
    let e = throughput_on::<EtcdCluster>(ctx, &levels, warm, dur).await?;
    let tput = |s: &Levels, n: usize| s.results.get(&n).map(|r| r.ops as f64 / r.secs);
    ctx.row(
        "write_throughput_c1",
        "writes/s",
        tput(&b, 1),
        tput(&e, 1),
        Goal::AtLeastTimesEtcd(1.0),
    );
    ctx.row(
        "write_throughput_c64",
        "writes/s",
        tput(&b, 64),
        tput(&e, 64),
        Goal::AtLeastTimesEtcd(1.5),
    );
    ctx.row(
        "write_throughput_c256",
        "writes/s",
        tput(&b, 256),
        tput(&e, 256),
        Goal::AtLeastTimesEtcd(1.5),
    );
    let lat = |s: &Levels, p: f64| s.results.get(&1).and_then(|r| percentile(&r.lat_ms, p));
    ctx.row(
        "commit_latency_p50_c1",
        "ms",
        lat(&b, 50.0),
        lat(&e, 50.0),
        Goal::AtMostTimesEtcd(1.0),
    );
    ctx.row(
        "commit_latency_p99_c1",
        "ms",
        lat(&b, 99.0),
        lat(&e, 99.0),
        Goal::AtMostTimesEtcd(1.5),
    );
    ctx.row(
        "fsyncs_per_write_c64",
        "calls",
        b.fsyncs_c64,
        e.fsyncs_c64,
        Goal::None,
    );
    ctx.note(
        "write_throughput",
        "Baton: SetRole{failback_delay_ms} toggling on 256 running roles (one per writer), through baton-client (leader-routed). etcd: 256-byte puts over 10,000 keys, sent to the leader. One client connection per 32 writers on both sides; closed loop.",
    );
    ctx.note(
        "fsyncs_per_write_c64",
        "fsync + fdatasync calls of the leader process over the whole 64-writer level (warm-up included), counted by `perf stat -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -p PID`, divided by the writes acknowledged over the level; no value when perf cannot count or the leader changed.",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Role failover after kill -9 of the active agent
// ---------------------------------------------------------------------------------------

const LEASE_S: u64 = 2;

pub async fn failover(ctx: &mut Ctx) -> Result<()> {
    let runs = if ctx.quick { 3 } else { 20 };
    ctx.param("failover_runs", runs);
    eprintln!("== role failover: baton ({runs} runs)");
    let b = failover_on::<BatonCluster>(ctx, runs).await;
    let b = soft(ctx, "failover_baton", b);
    eprintln!("== role failover: etcd recipe ({runs} runs)");
    let e = failover_on::<EtcdCluster>(ctx, runs).await;
    let e = soft(ctx, "failover_etcd", e);
    let p = |v: &Option<Vec<f64>>, q: f64| v.as_ref().and_then(|v| percentile(v, q));
    ctx.row(
        "role_failover_over_lease_p50",
        "x lease",
        p(&b, 50.0),
        p(&e, 50.0),
        Goal::None,
    );
    ctx.row(
        "role_failover_over_lease_p99",
        "x lease",
        p(&b, 99.0),
        p(&e, 99.0),
        Goal::AtMost(1.1),
    );
    ctx.note(
        "role_failover",
        format!("lease = etcd TTL = {LEASE_S} s; Baton grace = 300 ms (default{}), renewals every lease/3; etcd keep-alive every TTL/3. Time from kill -9 of the holder's agent to the next holder's role process writing its start line, divided by the lease.",
            if ctx.baton_args.is_empty() { String::new() } else { format!("; directory flags: {}", ctx.baton_args.join(" ")) }),
    );
    Ok(())
}

/// Role `fo` on three servers; `runs` times: kill -9 the holder's agent, time until the
/// next holder's role process starts, in leases; bring the agent back as a standby.
async fn failover_on<S: System>(ctx: &Ctx, runs: usize) -> Result<Vec<f64>> {
    let mut c = S::start(
        ctx,
        &format!("fo-{}", S::NAME),
        Duration::from_secs(LEASE_S),
        Sessions::Shared,
    )
    .await?;
    let j = Journal::new(&c.dir().join("journal"));
    c.start_roles(&["srv-a", "srv-b", "srv-c"], &["fo"], &j)
        .await?;
    let mut out = Vec::new();
    for run in 0..runs {
        let holder = j.last("fo").expect("started");
        // A random phase against the renewal rhythm.
        tokio::time::sleep(Duration::from_millis(
            300 + (wall_ns() % 700_000_000) / 1_000_000,
        ))
        .await;
        let t_kill = wall_ns();
        c.kill_agent(&holder.server);
        let next = j
            .wait_for("fo", Duration::from_secs(20), |s| {
                s.epoch > holder.epoch && s.server != holder.server
            })
            .await
            .ok_or_else(|| anyhow!("run {run}: {} role fo did not move within 20 s", S::NAME))?;
        let x = (next.ns.saturating_sub(t_kill)) as f64 / 1e9 / LEASE_S as f64;
        eprintln!(
            "  run {run}: {} -> {}: {:.3} x lease",
            holder.server, next.server, x
        );
        out.push(x);
        // Bring the killed agent back as a standby.
        c.restart_agent(&holder.server).await?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// 3. Leader kill: write gap and false failovers
// ---------------------------------------------------------------------------------------

/// A sequential writer that records (start, end) of every successful write.
struct GapWriter {
    successes: Arc<Mutex<Vec<(u64, u64)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl GapWriter {
    fn start<W: Writer>(w: W) -> GapWriter {
        let successes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (successes.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut n = 0;
            while !st2.load(Ordering::Relaxed) {
                n += 1;
                let start = wall_ns();
                if w.write(0, n).await.is_ok() {
                    s2.lock().expect("lock").push((start, wall_ns()));
                }
            }
        });
        GapWriter {
            successes,
            stop,
            task,
        }
    }

    /// When a write first succeeded after `t` (wall ns), waiting up to `timeout`. A write
    /// counts if it started after `t`, or if it started before but finished more than
    /// 10 ms after `t` (it survived the kill through a retry). A reply the dead leader had
    /// already put on the wire arrives within microseconds and does not count.
    async fn first_after(&self, t: u64, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self
                .successes
                .lock()
                .expect("lock")
                .iter()
                .find(|(start, end)| *start > t || *end > t + 10_000_000)
            {
                return Some(s.1);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

/// When an agent starts stopping its roles at a 2 s lease, counted from its last
/// acknowledged renewal: `lease × (1 − ρ) − min(lease / 8, 500 ms)` with ρ = 1 % (the
/// agent's `Fence::stop_at_ms`), i.e. 1,730 ms. A renewal gap at or beyond it is a fence.
const FENCE_AFTER_MS_AT_2S: f64 = 1_730.0;

/// What one system's leader failures measured.
struct Failures {
    /// Per kill: ms from the kill to the first write completed after it.
    gaps: Vec<f64>,
    /// Per partition: ms from the cut to the first write completed after it.
    cut_gaps: Vec<f64>,
    /// Role moves seen in the journal during the failures.
    moves: usize,
    /// Role restarts in place seen in the journal during the failures.
    restarts: usize,
    /// Per failure (when seen): ms from the failure until a survivor reports a new leader.
    elections: Vec<f64>,
    /// Per failure: the longest any agent went without an acknowledged renewal, ms, as
    /// its metrics said (empty where the agents have none: etcd).
    renewal_gaps: Vec<f64>,
    /// Follower partitions after which another node led: the rejoining follower's raised
    /// term deposed a healthy leader (what pre-vote would prevent).
    deposed: usize,
}

/// How the leader fails.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Failure {
    /// kill -9, then started again.
    Kill,
    /// Cut off from every peer and client (iptables on loopback) for a lease and a half,
    /// then reconnected.
    Partition,
    /// A follower cut off the same way: it campaigns alone, raising its term, and
    /// rejoins with it.
    FollowerPartition,
}

pub async fn leader_kill(ctx: &mut Ctx) -> Result<()> {
    let (kills, cuts): (usize, usize) = if ctx.quick { (2, 1) } else { (20, 10) };
    // Follower partitions: as many as half the leader partitions, at least one.
    let follower_cuts = cuts.div_ceil(2);
    // Partitions need root and iptables; without them the kills still run.
    let cuts = match crate::cut::available() {
        Ok(()) => cuts,
        Err(why) => {
            eprintln!("  leader partitions skipped: {why:#}");
            ctx.note("leader_kill_partitions", format!("skipped: {why:#}"));
            0
        }
    };
    let follower_cuts = if cuts == 0 { 0 } else { follower_cuts };
    ctx.param("leader_kills", kills);
    ctx.param("leader_partitions", cuts);
    ctx.param("follower_partitions", follower_cuts);
    let plan: Vec<Failure> = std::iter::repeat_n(Failure::Kill, kills)
        .chain(std::iter::repeat_n(Failure::Partition, cuts))
        .chain(std::iter::repeat_n(
            Failure::FollowerPartition,
            follower_cuts,
        ))
        .collect();
    eprintln!(
        "== leader failures: baton ({kills} kills, {cuts} partitions, {follower_cuts} follower partitions)"
    );
    let b = leader_kill_on::<BatonCluster>(ctx, &plan).await;
    let b = soft(ctx, "leader_kill_baton", b);
    eprintln!(
        "== leader failures: etcd ({kills} kills, {cuts} partitions, {follower_cuts} follower partitions)"
    );
    let e = leader_kill_on::<EtcdCluster>(ctx, &plan).await;
    let e = soft(ctx, "leader_kill_etcd", e);
    type Stat = fn(&Failures) -> Option<f64>;
    // (row, unit, statistic, whether etcd has it, goal)
    let rows: [(&str, &str, Stat, bool, Goal); 6] = [
        (
            "leader_kill_write_gap_p50",
            "ms",
            |v| percentile(&v.gaps, 50.0),
            true,
            Goal::AtMostTimesEtcd(0.5),
        ),
        (
            "leader_kill_write_gap_max",
            "ms",
            |v| max(&v.gaps),
            true,
            Goal::AtMostTimesEtcd(0.7),
        ),
        (
            "false_failovers",
            "moves",
            |v| Some(v.moves as f64),
            true,
            Goal::AtMost(0.0),
        ),
        (
            "leader_failure_role_restarts",
            "restarts",
            |v| Some(v.restarts as f64),
            true,
            Goal::AtMost(0.0),
        ),
        // etcd's agents have no renewal gauge.
        (
            "leader_failure_renewal_gap_p50",
            "ms",
            |v| percentile(&v.renewal_gaps, 50.0),
            false,
            Goal::None,
        ),
        (
            "leader_failure_renewal_gap_max",
            "ms",
            |v| max(&v.renewal_gaps),
            false,
            Goal::Below(FENCE_AFTER_MS_AT_2S),
        ),
    ];
    for (name, unit, stat, etcd_has_it, goal) in rows {
        let etcd = if etcd_has_it {
            e.as_ref().and_then(stat)
        } else {
            None
        };
        ctx.row(name, unit, b.as_ref().and_then(stat), etcd, goal);
    }
    let dist = |v: &[f64]| {
        format!(
            "p50 {:.0} ms, max {:.0} ms",
            percentile(v, 50.0).unwrap_or(f64::NAN),
            max(v).unwrap_or(f64::NAN)
        )
    };
    let both = |f: &dyn Fn(&Failures) -> String| {
        format!(
            "baton {}, etcd {}",
            b.as_ref().map_or("-".into(), f),
            e.as_ref().map_or("-".into(), f)
        )
    };
    let details = format!(
        "time from the failure until a surviving node reports a new leader (kills and leader partitions): {}; write gap after a leader partition (cut to the first write completed): {}; follower partitions after which another node led: {}",
        both(&|v| dist(&v.elections)),
        both(&|v| dist(&v.cut_gaps)),
        both(&|v| v.deposed.to_string()),
    );
    ctx.note(
        "leader_kill",
        format!(
            "Election timing: Baton: the directory defaults (NodeConfig::new){}; etcd --heartbeat-interval={} --election-timeout={} (etcd's defaults). {kills} leader kills (kill -9, then started again), {cuts} leader partitions (for 1.5 leases, iptables drops everything the leader sends, matched by its group id, and every TCP packet to its client and peer ports; then the rules are removed) and {follower_cuts} follower partitions (the same for a follower), with 3 roles on 3 agents running, lease/TTL {LEASE_S} s. Writer: one sequential client writing in a loop (Baton: baton-client with its default retry policy; etcd: 500 ms per attempt, next endpoint on failure, as clientv3's balancer). Gap = kill -9 of the leader to the first write completed after it. false_failovers and leader_failure_role_restarts: role moves and restarts in place seen in the role journal during all the failures. Renewal gap (Baton): per failure, the largest `baton_agent_last_renewal_ack_age_seconds` any agent reported, read every 20 ms from the failure until 2 s after the cluster was whole again; an agent fences at {FENCE_AFTER_MS_AT_2S} ms. {details}.",
            if ctx.baton_args.is_empty() {
                String::new()
            } else {
                format!(", overridden by: {}", ctx.baton_args.join(" "))
            },
            crate::etcd_sys::HEARTBEAT_MS,
            crate::etcd_sys::ELECTION_MS
        ),
    );
    Ok(())
}

/// Three roles on three agents and one sequential writer; each failure of `plan` in
/// turn: time the write gap, the election and the agents' renewal gap, make the cluster
/// whole again and let it settle.
async fn leader_kill_on<S: System>(ctx: &Ctx, plan: &[Failure]) -> Result<Failures> {
    let lease = Duration::from_secs(LEASE_S);
    let mut c = S::start(ctx, &format!("lk-{}", S::NAME), lease, Sessions::Shared).await?;
    let j = Journal::new(&c.dir().join("journal"));
    c.start_roles(&["srv-a", "srv-b", "srv-c"], &["lk-1", "lk-2", "lk-3"], &j)
        .await?;
    let from = j.starts().len();
    let gw = GapWriter::start(c.single_writer("lk-1").await?);
    let ages = AckAges::start(c.agent_metrics_addrs());
    let mut out = Failures {
        gaps: Vec::new(),
        cut_gaps: Vec::new(),
        moves: 0,
        restarts: 0,
        elections: Vec::new(),
        renewal_gaps: Vec::new(),
        deposed: 0,
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (k, failure) in plan.iter().copied().enumerate() {
        let leader = c.leader().await?;
        if failure == Failure::FollowerPartition {
            let follower = (leader + 1) % 3;
            let t_fail = wall_ns();
            let cut = crate::cut::Cut::apply(&c.net(follower))?;
            tokio::time::sleep(lease * 3 / 2).await;
            cut.heal()?;
            c.wait_healthy(Duration::from_secs(30)).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now_leader = c.leader().await?;
            out.deposed += usize::from(now_leader != leader);
            let renewal = ages.as_ref().and_then(|a| a.max_between(t_fail, wall_ns()));
            out.renewal_gaps.extend(renewal);
            eprintln!(
                "  {failure:?} {k}: {} cut off; leader before {}, after {}; longest renewal gap {renewal:?} ms",
                c.describe(follower),
                c.describe(leader),
                c.describe(now_leader)
            );
            continue;
        }
        tokio::time::sleep(Duration::from_millis((wall_ns() % 300_000_000) / 1_000_000)).await;
        let watch = c.new_leader_watch(leader).await?;
        let mut t_fail = wall_ns();
        // A leader failure (follower partitions were handled above): killed, or cut off.
        let cut = if failure == Failure::Kill {
            c.kill_node(leader);
            None
        } else {
            let cut = crate::cut::Cut::apply(&c.net(leader))?;
            // The cut is in place once its rules are (a few ms of iptables calls).
            t_fail = wall_ns();
            Some(cut)
        };
        let elected = tokio::spawn(watch);
        let ok = gw
            .first_after(t_fail, Duration::from_secs(30))
            .await
            .ok_or_else(|| {
                anyhow!(
                    "{failure:?} {k}: no {} write succeeded within 30 s",
                    S::NAME
                )
            })?;
        let gap = (ok - t_fail) as f64 / 1e6;
        let el = elected
            .await
            .ok()
            .flatten()
            .map(|t| (t.saturating_sub(t_fail)) as f64 / 1e6);
        match cut {
            None => {
                out.gaps.push(gap);
                c.start_node(leader)?;
            }
            Some(cut) => {
                out.cut_gaps.push(gap);
                // Hold the cut for a lease and a half: an agent still attached to the
                // cut-off node by then has fenced.
                let held = Duration::from_nanos(wall_ns().saturating_sub(t_fail));
                tokio::time::sleep((lease * 3 / 2).saturating_sub(held)).await;
                cut.heal()?;
            }
        }
        out.elections.extend(el);
        c.wait_healthy(Duration::from_secs(30)).await?;
        // Let the node that failed catch up and agents settle before the next failure.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let renewal = ages.as_ref().and_then(|a| a.max_between(t_fail, wall_ns()));
        out.renewal_gaps.extend(renewal);
        eprintln!(
            "  {failure:?} {k}: {}: write gap {gap:.0} ms, new leader after {el:?} ms, longest renewal gap {renewal:?} ms",
            c.describe(leader)
        );
    }
    gw.finish().await;
    tokio::time::sleep(Duration::from_secs(LEASE_S + 1)).await;
    (out.moves, out.restarts) = j.moves_since(from);
    Ok(out)
}

/// Reads every agent's `baton_agent_last_renewal_ack_age_seconds` every 20 ms on a
/// thread of its own and keeps, per reading, the largest over the agents (wall ns, ms):
/// how long the worst-off agent has gone without an acknowledged renewal.
struct AckAges {
    samples: Arc<Mutex<Vec<(u64, f64)>>>,
    stop: Arc<AtomicBool>,
}

impl AckAges {
    /// `None` when there are no agents with metrics to read.
    fn start(addrs: Vec<String>) -> Option<AckAges> {
        if addrs.is_empty() {
            return None;
        }
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            use baton_tests::http::{Via, get, parse_metrics, value};
            while !st2.load(Ordering::Relaxed) {
                let worst = addrs
                    .iter()
                    .filter_map(|a| {
                        let (code, body) = get(a, "/metrics", &Via::Plain).ok()?;
                        let m = parse_metrics(&body).ok().filter(|_| code == 200)?;
                        value(&m, "baton_agent_last_renewal_ack_age_seconds", &[])
                    })
                    .fold(None, |w: Option<f64>, v| Some(w.map_or(v, |w| w.max(v))));
                if let Some(w) = worst {
                    s2.lock().expect("lock").push((wall_ns(), w * 1000.0));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Some(AckAges { samples, stop })
    }

    /// The largest reading between `from` and `to` (wall ns).
    fn max_between(&self, from: u64, to: u64) -> Option<f64> {
        let s = self.samples.lock().expect("lock");
        let v: Vec<f64> = s
            .iter()
            .filter(|(t, _)| (from..=to).contains(t))
            .map(|(_, v)| *v)
            .collect();
        max(&v)
    }
}

impl Drop for AckAges {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------
// 4. Fan-out: one change until the last of N subscribers has it
// ---------------------------------------------------------------------------------------

pub async fn fanout(ctx: &mut Ctx) -> Result<()> {
    let (sizes, changes) = if ctx.quick {
        ([200usize, 1000], 5)
    } else {
        ([1000usize, 10_000], 20)
    };
    ctx.param("fanout_subscribers", serde_json::json!(sizes));
    ctx.param("fanout_changes", changes);
    eprintln!("== fan-out: baton");
    let b = fanout_on::<BatonCluster>(ctx, &sizes, changes).await;
    let b = soft(ctx, "fanout_baton", b);
    eprintln!("== fan-out: etcd");
    let e = fanout_on::<EtcdCluster>(ctx, &sizes, changes).await;
    let e = soft(ctx, "fanout_etcd", e);
    let p99 = |v: &Option<Vec<Vec<f64>>>, i: usize| {
        v.as_ref()
            .and_then(|v| v.get(i))
            .and_then(|l| percentile(l, 99.0))
    };
    ctx.row(
        "fanout_p99_1000",
        "ms",
        p99(&b, 0),
        p99(&e, 0),
        Goal::AtMostTimesEtcd(1.0),
    );
    ctx.row(
        "fanout_p99_10000",
        "ms",
        p99(&b, 1),
        p99(&e, 1),
        Goal::AtMostTimesEtcd(1.0),
    );
    ctx.note(
        "fanout",
        format!("Subscribers spread round-robin over the three nodes/members, 100 streams per client connection. Baton: Watch.Events streams; the change is a CreateRole placed on a live server (one history event). etcd: one watcher per Watch stream on one key; the change is a put. Time from issuing the write to the last subscriber receiving it; p99 over {changes} changes; sizes {sizes:?}."),
    );
    Ok(())
}

/// Per size (in order): the ms from publishing each change until its last subscriber
/// had it.
async fn fanout_on<S: System>(ctx: &Ctx, sizes: &[usize], changes: usize) -> Result<Vec<Vec<f64>>> {
    let mut c = S::start(
        ctx,
        &format!("fan-{}", S::NAME),
        Duration::from_secs(3),
        Sessions::Shared,
    )
    .await?;
    let mut out = Vec::new();
    for &n in sizes {
        let arr = Arrivals::new(n, changes);
        let topic = c.topic(n).await?;
        let chans = channels_over(&c.addrs(), n).await?;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let ch = chans[i % chans.len()].clone();
                tokio::spawn(S::subscribe(topic.clone(), ch, arr.clone()))
            })
            .collect();
        arr.wait_ready(Duration::from_secs(120)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut lats = Vec::new();
        for k in 0..changes {
            let t0 = Instant::now();
            c.publish(&topic, k).await?;
            let done = arr
                .wait(k, Duration::from_secs(60))
                .await
                .ok_or_else(|| anyhow!("change {k} did not reach all {n} {} watchers", S::NAME))?;
            lats.push((done - t0).as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "  n={n}: p50 {:.1} ms p99 {:.1} ms",
            percentile(&lats, 50.0).unwrap_or(0.0),
            percentile(&lats, 99.0).unwrap_or(0.0)
        );
        for t in tasks {
            t.abort();
        }
        out.push(lats);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// 5. Memory per idle session
// ---------------------------------------------------------------------------------------

async fn settle_rss(pid: u32) -> Result<u64> {
    let mut v = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        v.push(rss_kb(pid)?);
    }
    Ok(*v.iter().max().expect("3"))
}

pub async fn rss(ctx: &mut Ctx) -> Result<()> {
    let n = if ctx.quick { 1000 } else { 10_000 };
    ctx.param("rss_sessions", n);
    eprintln!("== memory per session: baton ({n} sessions)");
    let b = rss_on::<BatonCluster>(ctx, n, Sessions::Shared).await;
    let b = soft(ctx, "rss_baton", b);
    eprintln!("== memory per session: etcd ({n} lease+keepalive+watch sessions)");
    let e = rss_on::<EtcdCluster>(ctx, n, Sessions::Shared)
        .await
        .map(|r| r.kb_per_session);
    let e = soft(ctx, "rss_etcd", e);
    ctx.row(
        "rss_kb_per_session_10000",
        "kB",
        b.as_ref().map(|r| r.kb_per_session),
        e,
        Goal::AtMost(10.0),
    );
    // Every agent of a site connecting at once (a restart of the whole site): how long
    // until all are registered. Baton only: etcd's recipe has no registration.
    ctx.row(
        "register_s_10000",
        "s",
        b.as_ref().map(|r| r.register_s),
        None,
        Goal::None,
    );
    ctx.note(
        "rss",
        format!("VmRSS growth of the leader's process per idle session, {n} sessions attached to the leader, 100 sessions per client connection, renewing every lease/3 (3 s lease). Baton: an Agent.Session (Hello + Renew). etcd: the recipe's per-agent state, a granted lease with a keep-alive stream (TTL 3 s, every 1 s) plus a watch stream on the agent's key."),
    );
    if let Some(r) = &b {
        ctx.note(
            "register",
            format!("register_s_10000: {n} Baton agent sessions started together (at most 256 opening at a time, 100 per client connection) against the leader, until every one is registered (its RegisterAgent committed) and live. {} had to be opened again; the leader was {} before and after.", r.reopened, if r.same_leader { "the same node" } else { "NOT the same node" }),
        );
    }
    Ok(())
}

/// What [`rss_on`] measured.
struct RssRun {
    /// The leader's VmRSS growth per idle session, kB.
    kb_per_session: f64,
    /// Seconds from starting the sessions until all were open (registered, for Baton).
    register_s: f64,
    /// Sessions that had to be opened again (a refusal or a broken stream).
    reopened: u64,
    /// Whether the same node led before and after the sessions were opened.
    same_leader: bool,
    /// Seconds spent on client certificates (0 without TLS), not counted in `register_s`.
    issue_s: f64,
}

/// The leader's VmRSS growth per idle session with `n` sessions on it, and how the
/// sessions opened.
async fn rss_on<S: System>(ctx: &Ctx, n: usize, mode: Sessions) -> Result<RssRun> {
    let c = S::start(
        ctx,
        &format!("rss-{}-{mode:?}", S::NAME).to_lowercase(),
        Duration::from_secs(3),
        mode,
    )
    .await?;
    let leader = c.leader().await?;
    let pid = c
        .pid(leader)
        .ok_or_else(|| anyhow!("the leader is not running"))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = settle_rss(pid).await?;
    let started = std::time::Instant::now();
    let sessions = c.idle_sessions(leader, n).await?;
    let register_s = started.elapsed().as_secs_f64() - sessions.issue_s;
    let same_leader = c.leader().await? == leader;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = settle_rss(pid).await?;
    eprintln!(
        "  rss {before} kB -> {after} kB, {} sessions on {}",
        sessions.open,
        c.describe(leader)
    );
    let opened = sessions
        .stats
        .opened
        .load(std::sync::atomic::Ordering::Relaxed);
    Ok(RssRun {
        kb_per_session: (after as f64 - before as f64) / sessions.open.max(1) as f64,
        register_s,
        reopened: opened.saturating_sub(sessions.open as u64),
        same_leader,
        issue_s: sessions.issue_s,
    })
}

// ---------------------------------------------------------------------------------------
// 6. Renewal throughput and Raft entries per renewal
// ---------------------------------------------------------------------------------------

pub async fn renewals(ctx: &mut Ctx) -> Result<()> {
    let (k, window) = if ctx.quick {
        (200, Duration::from_secs(2))
    } else {
        (1000, Duration::from_secs(10))
    };
    ctx.param("renewal_sessions", k);
    ctx.param("renewal_window_s", window.as_secs());
    eprintln!("== renewals: baton ({k} sessions renewing back to back)");
    let b = renewals_on::<BatonCluster>(ctx, k, window, Sessions::Shared).await;
    let b = soft(ctx, "renewals_baton", b);
    eprintln!("== renewals: etcd ({k} keep-alive streams back to back)");
    let e = renewals_on::<EtcdCluster>(ctx, k, window, Sessions::Shared).await;
    let e = soft(ctx, "renewals_etcd", e);
    ctx.row(
        "renewals_per_s_max",
        "renewals/s",
        b.map(|v| v.0),
        e.map(|v| v.0),
        Goal::None,
    );
    ctx.row(
        "raft_entries_per_renewal",
        "entries",
        b.map(|v| v.1),
        e.map(|v| v.1),
        Goal::AtMost(0.0),
    );
    ctx.note(
        "renewals",
        format!("{k} sessions on the leader, each sending its next renewal as soon as the previous one is acknowledged, for {} s. Raft entries from the leader's last_applied (Baton, cluster status) or raftIndex (etcd, Maintenance.Status) before and after.", window.as_secs()),
    );
    Ok(())
}

/// Renewals per second with `k` sessions renewing back to back on the leader, Raft
/// entries per renewal, and the seconds spent on client certificates.
async fn renewals_on<S: System>(
    ctx: &Ctx,
    k: usize,
    window: Duration,
    mode: Sessions,
) -> Result<(f64, f64, f64)> {
    let c = S::start(
        ctx,
        &format!("ren-{}-{mode:?}", S::NAME).to_lowercase(),
        Duration::from_secs(3),
        mode,
    )
    .await?;
    let leader = c.leader().await?;
    let sessions = c.busy_sessions(leader, k).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acks = &sessions.stats.acks;
    let i0 = c.raft_index(leader).await?;
    let a0 = acks.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let a1 = acks.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let i1 = c.raft_index(leader).await?;
    let issue_s = sessions.issue_s;
    drop(sessions);
    let n = (a1 - a0) as f64;
    eprintln!("  {n} renewals in {secs:.1} s, raft index {i0} -> {i1}");
    Ok((n / secs, i1.saturating_sub(i0) as f64 / n.max(1.0), issue_s))
}

// ---------------------------------------------------------------------------------------
// 7. Restart after 1,000,000 applied commands
// ---------------------------------------------------------------------------------------

pub async fn restart(ctx: &mut Ctx) -> Result<()> {
    let total: u64 = if ctx.quick { 20_000 } else { 1_000_000 };
    ctx.param("restart_commands", total);
    eprintln!("== restart after {total} commands: baton");
    let b = restart_on::<BatonCluster>(ctx, total).await;
    let b = soft(ctx, "restart_baton", b);
    eprintln!("== restart after {total} commands: etcd");
    let e = restart_on::<EtcdCluster>(ctx, total).await;
    let e = soft(ctx, "restart_etcd", e);
    ctx.row(
        "restart_ms_1m",
        "ms",
        b.map(|v| v.0),
        e.map(|v| v.0),
        Goal::Below(2000.0),
    );
    ctx.row(
        "restart_disk_bytes_1m",
        "bytes",
        b.map(|v| v.1),
        e.map(|v| v.1),
        Goal::None,
    );
    ctx.note(
        "restart",
        format!("{total} writes by 256 writers (Baton: SetRole on 256 running roles, snapshot every 10,000 entries (default); etcd: 256-byte puts over 10,000 keys, no compaction, snapshot-count 100,000 (default)); then a follower is stopped with SIGTERM and started again; time from spawn until it answers a local read (Baton: stale ListRoles; etcd: serializable Range) at a revision at least the one it had before the stop. Disk: the follower's data directory."),
    );
    Ok(())
}

/// `total` writes, then a caught-up follower stopped and started again: ms until it
/// serves its revision again, and its data directory's bytes.
async fn restart_on<S: System>(ctx: &Ctx, total: u64) -> Result<(f64, f64)> {
    let (mut c, w) = with_writer::<S>(ctx, "rs", 256, Sessions::Shared).await?;
    let t0 = Instant::now();
    let r = closed_loop(&w, 256, Duration::ZERO, Duration::ZERO, Some(total)).await;
    eprintln!(
        "  {} writes in {:.0} s ({} errors)",
        r.ops,
        t0.elapsed().as_secs_f64(),
        r.errors
    );
    let leader = c.leader().await?;
    let f = (leader + 1) % 3;
    let target = c.revision(leader).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let rev = loop {
        let s = c.revision(f).await?;
        if s >= target {
            break s;
        }
        if Instant::now() > deadline {
            bail!("{} follower {} did not catch up", S::NAME, c.describe(f));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    c.stop_node(f);
    let disk = dir_bytes(&c.data_dir(f));
    let t = Instant::now();
    c.start_node(f)?;
    c.wait_serving(f, rev, Duration::from_secs(120)).await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    eprintln!(
        "  {}: revision {rev}, {disk} bytes on disk, serving {ms:.0} ms after start",
        c.describe(f)
    );
    Ok((ms, disk as f64))
}

// ---------------------------------------------------------------------------------------
// 8. The cost of TLS: Baton with mutual TLS against Baton in plain text
// ---------------------------------------------------------------------------------------

pub async fn tls_cost(ctx: &mut Ctx) -> Result<()> {
    let (warm, dur) = if ctx.quick {
        (Duration::from_millis(500), Duration::from_secs(2))
    } else {
        (Duration::from_secs(2), Duration::from_secs(10))
    };
    let n = if ctx.quick { 1000 } else { 10_000 };
    let (k, window) = if ctx.quick {
        (200, Duration::from_secs(2))
    } else {
        (1000, Duration::from_secs(10))
    };
    ctx.param("tls_cost_seconds_per_level", dur.as_secs());
    ctx.param("tls_cost_rss_sessions", n);
    ctx.param("tls_cost_renewal_sessions", k);
    let label = |tls: bool| if tls { "tls" } else { "plain" };

    let mut writes: BTreeMap<bool, (LoopResult, LoopResult)> = BTreeMap::new();
    for tls in [false, true] {
        eprintln!("== tls cost: writes, {}", label(tls));
        let r = async {
            let mode = if tls {
                Sessions::OwnTls
            } else {
                Sessions::Shared
            };
            let prefix = format!("tls-tp-{}", label(tls));
            let (c, w) = with_writer::<BatonCluster>(ctx, &prefix, 256, mode).await?;
            let r1 = closed_loop(&w, 1, warm, dur, None).await;
            let r64 = closed_loop(&w, 64, warm, dur, None).await;
            for (c, r) in [(1, &r1), (64, &r64)] {
                eprintln!(
                    "  c{c}: {:.0}/s ({} errors)",
                    r.ops as f64 / r.secs,
                    r.errors
                );
            }
            drop(c);
            Ok::<_, anyhow::Error>((r1, r64))
        }
        .await;
        if let Some(r) = soft(ctx, &format!("tls_cost_writes_{}", label(tls)), r) {
            writes.insert(tls, r);
        }
    }
    let mut rss: BTreeMap<bool, (f64, f64)> = BTreeMap::new();
    let mut renewals: BTreeMap<bool, (f64, f64, f64)> = BTreeMap::new();
    for (tls, mode) in [(false, Sessions::OwnPlain), (true, Sessions::OwnTls)] {
        eprintln!(
            "== tls cost: memory per session, {} ({n} sessions, a connection each)",
            label(tls)
        );
        let r = rss_on::<BatonCluster>(ctx, n, mode).await;
        if let Some(r) = soft(ctx, &format!("tls_cost_rss_{}", label(tls)), r) {
            rss.insert(tls, (r.kb_per_session, r.issue_s));
        }
        eprintln!(
            "== tls cost: renewals, {} ({k} sessions, a connection each)",
            label(tls)
        );
        let r = renewals_on::<BatonCluster>(ctx, k, window, mode).await;
        if let Some(r) = soft(ctx, &format!("tls_cost_renewals_{}", label(tls)), r) {
            renewals.insert(tls, r);
        }
    }

    let lat = |tls: bool, p: f64| writes.get(&tls).and_then(|r| percentile(&r.0.lat_ms, p));
    let tput = |tls: bool| writes.get(&tls).map(|r| r.1.ops as f64 / r.1.secs);
    ctx.tls_row(
        "commit_latency_p50_c1",
        "ms",
        lat(false, 50.0),
        lat(true, 50.0),
    );
    ctx.tls_row(
        "commit_latency_p99_c1",
        "ms",
        lat(false, 99.0),
        lat(true, 99.0),
    );
    ctx.tls_row("write_throughput_c64", "writes/s", tput(false), tput(true));
    ctx.tls_row(
        "renewals_per_s_max",
        "renewals/s",
        renewals.get(&false).map(|r| r.0),
        renewals.get(&true).map(|r| r.0),
    );
    ctx.tls_row(
        &format!("rss_kb_per_session_{n}"),
        "kB",
        rss.get(&false).map(|r| r.0),
        rss.get(&true).map(|r| r.0),
    );
    let certs = rss
        .get(&true)
        .map(|r| (n, r.1))
        .into_iter()
        .chain(renewals.get(&true).map(|r| (k, r.2)));
    let certs: Vec<String> = certs
        .map(|(m, s)| {
            format!(
                "{m} in {s:.2} s ({:.2} ms each)",
                s * 1000.0 / m.max(1) as f64
            )
        })
        .collect();
    ctx.note(
        "tls_cost",
        format!(
            "Baton with mutual TLS (a CA and certificates made by baton_tls::make in the cluster directory; the bench's clients as an admin client, each session with an agent certificate for its server name) against Baton with --insecure, the same workloads one after the other in one run. Writes as write_throughput (256 running roles, one client connection per 32 writers); p50/p99 at 1 writer. Sessions (rss, renewals) as those rows but with one client connection per session in both columns, as real agents connect: with TLS a connection carries one certificate, so sessions of different servers cannot share one. Agent certificates issued, written and loaded: {}.",
            if certs.is_empty() {
                "-".to_string()
            } else {
                certs.join("; ")
            }
        ),
    );
    Ok(())
}
