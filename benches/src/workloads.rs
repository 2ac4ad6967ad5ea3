//! The workloads, each run against Baton and etcd with the same harness.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use baton_client::{Client, v1};
// Role processes stamp their start with `date +%s%N`, so failover times are measured
// on the same wall clock as the harness's journals.
use baton_tests::now_ns as wall_ns;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::baton_sys::{
    BatonCluster, SessionStats, channel, create_role, open_session, secure_channel, set_role,
};
use crate::etcd_sys::{EtcdCluster, Kv};
use crate::etcdpb as pb;
use crate::journal::Journal;
use crate::procs::{dir_bytes, rss_kb};
use crate::report::{Goal, Row, TlsRow};
use crate::stats::{max, percentile};
use crate::syscalls::FsyncCounter;

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

/// One durable write per call: a Baton role change or a 256-byte etcd put.
#[derive(Clone)]
enum Writer {
    /// Clients (one per 32 writers) and the role names the writers toggle.
    Baton(Vec<Client>, Arc<Vec<String>>),
    /// KV clients (one per 32 writers), each aimed at the leader first.
    Etcd(Vec<Kv>, usize, Arc<Vec<u8>>),
}

impl Writer {
    async fn write(&self, i: usize, n: u64) -> Result<()> {
        match self {
            Writer::Baton(clients, roles) => {
                let c = &clients[i / 32 % clients.len()];
                c.apply(v1::Command {
                    request_id: String::new(),
                    command: Some(set_role(&roles[i % roles.len()], n % 2)),
                })
                .await?;
            }
            Writer::Etcd(kvs, leader, value) => {
                let kv = &kvs[i / 32 % kvs.len()];
                let mut at = *leader;
                let key = format!("/bench/k{:05}", (n as usize * 7919 + i) % 10_000);
                kv.put(&mut at, key.as_bytes(), value, Duration::from_secs(10))
                    .await?;
            }
        }
        Ok(())
    }
}

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
async fn closed_loop(
    w: &Writer,
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

/// A Baton cluster with one agent-style session holding server `srv` up and `roles` roles
/// running on it (so writes hit running roles, the common case).
async fn baton_with_roles(
    ctx: &Ctx,
    name: &str,
    roles: usize,
    tls: bool,
) -> Result<(BatonCluster, Writer, mpsc::Sender<v1::AgentMessage>)> {
    let c = BatonCluster::start(
        &ctx.baton_bin,
        &ctx.dir(name),
        Duration::from_secs(3),
        &ctx.baton_args,
        tls,
    )
    .await?;
    let stats = Arc::new(SessionStats::default());
    let srv = format!("{name}-srv");
    let (hold, _) = open_session(
        c.agent_channel(&c.addrs()[0], &srv).await?,
        srv.clone(),
        Some(Duration::from_secs(1)),
        stats,
    )
    .await?;
    c.wait_servers_up(&[&srv], Duration::from_secs(10)).await?;
    let names: Vec<String> = (0..roles).map(|i| format!("{name}-{i:03}")).collect();
    for r in &names {
        c.apply(create_role(r, &[&srv], "")).await?;
    }
    let addrs = if std::env::var_os("BENCH_LEADER_ONLY").is_some() {
        let l = c.leader().await?;
        vec![
            c.nodes
                .iter()
                .find(|n| n.id == l)
                .expect("leader")
                .addr
                .clone(),
        ]
    } else {
        c.addrs()
    };
    let clients = (0..8)
        .map(|_| c.new_client(addrs.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((c, Writer::Baton(clients, Arc::new(names)), hold))
}

async fn etcd_writer(ctx: &Ctx, name: &str) -> Result<(EtcdCluster, Writer)> {
    let e = EtcdCluster::start(&ctx.etcd_bin, &ctx.dir(name)).await?;
    let leader = e.leader().await?;
    let mut kvs = Vec::new();
    for _ in 0..8 {
        kvs.push(Kv::connect(&e.endpoints()).await?);
    }
    Ok((e, Writer::Etcd(kvs, leader, Arc::new(vec![b'x'; 256]))))
}

// ---------------------------------------------------------------------------------------
// 1. Write throughput and commit latency
// ---------------------------------------------------------------------------------------

pub async fn throughput(ctx: &mut Ctx) -> Result<()> {
    let (warm, dur) = if ctx.quick {
        (Duration::from_millis(500), Duration::from_secs(2))
    } else {
        (Duration::from_secs(2), Duration::from_secs(10))
    };
    ctx.param("throughput_seconds_per_level", dur.as_secs());
    let levels = [1usize, 64, 256];
    let mut results: BTreeMap<(&str, usize), LoopResult> = BTreeMap::new();
    // fsync-family calls of the leader over the whole c64 level, per acknowledged write.
    let mut fsyncs: BTreeMap<&str, f64> = BTreeMap::new();
    eprintln!("== write throughput: baton");
    {
        let (c, w, _hold) = baton_with_roles(ctx, "tp-baton", 256, false).await?;
        let leader = c.leader().await?;
        let pid = c
            .nodes
            .iter()
            .find(|n| n.id == leader)
            .and_then(|n| n.proc.pid());
        for &n in &levels {
            let counter = match (n, pid) {
                (64, Some(pid)) => {
                    FsyncCounter::start(pid, &c.dir.join("perf-fsync-c64.csv")).await
                }
                _ => None,
            };
            let r = closed_loop(&w, n, warm, dur, None).await;
            if let Some(counter) = counter
                && let Some(calls) = counter.stop().await
                && r.all_ops > 0
                && c.leader().await.ok() == Some(leader)
            {
                fsyncs.insert("baton", calls as f64 / r.all_ops as f64);
            }
            eprintln!(
                "  c{n}: {:.0}/s ({} errors)",
                r.ops as f64 / r.secs,
                r.errors
            );
            results.insert(("baton", n), r);
        }
        drop(c);
    }
    eprintln!("== write throughput: etcd");
    {
        let (e, w) = etcd_writer(ctx, "tp-etcd").await?;
        let leader = e.leader().await?;
        let pid = e.members[leader].proc.pid();
        for &n in &levels {
            let counter = match (n, pid) {
                (64, Some(pid)) => {
                    FsyncCounter::start(pid, &e.dir.join("perf-fsync-c64.csv")).await
                }
                _ => None,
            };
            let r = closed_loop(&w, n, warm, dur, None).await;
            if let Some(counter) = counter
                && let Some(calls) = counter.stop().await
                && r.all_ops > 0
                && e.leader().await.ok() == Some(leader)
            {
                fsyncs.insert("etcd", calls as f64 / r.all_ops as f64);
            }
            eprintln!(
                "  c{n}: {:.0}/s ({} errors)",
                r.ops as f64 / r.secs,
                r.errors
            );
            results.insert(("etcd", n), r);
        }
        drop(e);
    }
    let tput = |s: &str, n: usize| results.get(&(s, n)).map(|r| r.ops as f64 / r.secs);
    ctx.row(
        "write_throughput_c1",
        "writes/s",
        tput("baton", 1),
        tput("etcd", 1),
        Goal::AtLeastTimesEtcd(1.0),
    );
    ctx.row(
        "write_throughput_c64",
        "writes/s",
        tput("baton", 64),
        tput("etcd", 64),
        Goal::AtLeastTimesEtcd(1.5),
    );
    ctx.row(
        "write_throughput_c256",
        "writes/s",
        tput("baton", 256),
        tput("etcd", 256),
        Goal::AtLeastTimesEtcd(1.5),
    );
    let lat = |s: &str, p: f64| results.get(&(s, 1)).and_then(|r| percentile(&r.lat_ms, p));
    ctx.row(
        "commit_latency_p50_c1",
        "ms",
        lat("baton", 50.0),
        lat("etcd", 50.0),
        Goal::AtMostTimesEtcd(1.0),
    );
    ctx.row(
        "commit_latency_p99_c1",
        "ms",
        lat("baton", 99.0),
        lat("etcd", 99.0),
        Goal::AtMostTimesEtcd(1.5),
    );
    ctx.row(
        "fsyncs_per_write_c64",
        "calls",
        fsyncs.get("baton").copied(),
        fsyncs.get("etcd").copied(),
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
    let b = failover_baton(ctx, runs).await;
    let b = soft(ctx, "failover_baton", b);
    eprintln!("== role failover: etcd recipe ({runs} runs)");
    let e = failover_etcd(ctx, runs).await;
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

async fn failover_baton(ctx: &Ctx, runs: usize) -> Result<Vec<f64>> {
    let mut c = BatonCluster::start(
        &ctx.baton_bin,
        &ctx.dir("fo-baton"),
        Duration::from_secs(LEASE_S),
        &ctx.baton_args,
        false,
    )
    .await?;
    let j = Journal::new(&c.dir.join("journal"));
    let servers = ["srv-a", "srv-b", "srv-c"];
    let mut agents = BTreeMap::new();
    for s in servers {
        agents.insert(s.to_string(), c.spawn_agent(s, &j.role_command())?);
    }
    c.wait_servers_up(&servers, Duration::from_secs(20)).await?;
    c.apply(create_role("fo", &servers, "bench")).await?;
    j.wait_for("fo", Duration::from_secs(10), |_| true)
        .await
        .context("role fo never started")?;
    let mut out = Vec::new();
    for run in 0..runs {
        let holder = j.last("fo").expect("started");
        // A random phase against the renewal rhythm.
        tokio::time::sleep(Duration::from_millis(
            300 + (wall_ns() % 700_000_000) / 1_000_000,
        ))
        .await;
        let t_kill = wall_ns();
        c.agent(agents[&holder.server]).kill9();
        let next = j
            .wait_for("fo", Duration::from_secs(20), |s| {
                s.epoch > holder.epoch && s.server != holder.server
            })
            .await
            .ok_or_else(|| anyhow!("run {run}: role fo did not move within 20 s"))?;
        let x = (next.ns.saturating_sub(t_kill)) as f64 / 1e9 / LEASE_S as f64;
        eprintln!(
            "  run {run}: {} -> {}: {:.3} x lease",
            holder.server, next.server, x
        );
        out.push(x);
        // Bring the killed agent back as a standby.
        c.agent(agents[&holder.server]).start()?;
        c.wait_servers_up(&[&holder.server], Duration::from_secs(20))
            .await?;
    }
    Ok(out)
}

async fn failover_etcd(ctx: &Ctx, runs: usize) -> Result<Vec<f64>> {
    let mut e = EtcdCluster::start(&ctx.etcd_bin, &ctx.dir("fo-etcd")).await?;
    let j = Journal::new(&e.dir.join("journal"));
    let servers = ["srv-a", "srv-b", "srv-c"];
    let mut agents = BTreeMap::new();
    for s in servers {
        agents.insert(
            s.to_string(),
            e.spawn_agent(&ctx.driver_bin, s, &["fo"], &j.role_command(), LEASE_S)?,
        );
        if s == "srv-a" {
            j.wait_for("fo", Duration::from_secs(10), |_| true)
                .await
                .context("etcd role fo never started")?;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut out = Vec::new();
    for run in 0..runs {
        let holder = j.last("fo").expect("started");
        tokio::time::sleep(Duration::from_millis(
            300 + (wall_ns() % 700_000_000) / 1_000_000,
        ))
        .await;
        let t_kill = wall_ns();
        e.agent(agents[&holder.server]).kill9();
        let next = j
            .wait_for("fo", Duration::from_secs(20), |s| {
                s.epoch > holder.epoch && s.server != holder.server
            })
            .await
            .ok_or_else(|| anyhow!("run {run}: etcd role fo did not move within 20 s"))?;
        let x = (next.ns.saturating_sub(t_kill)) as f64 / 1e9 / LEASE_S as f64;
        eprintln!(
            "  run {run}: {} -> {}: {:.3} x lease",
            holder.server, next.server, x
        );
        out.push(x);
        e.agent(agents[&holder.server]).start()?;
        // The new standby has granted its lease and started watching.
        tokio::time::sleep(Duration::from_millis(500)).await;
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
    fn start(w: Writer) -> GapWriter {
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

pub async fn leader_kill(ctx: &mut Ctx) -> Result<()> {
    let kills = if ctx.quick { 2 } else { 10 };
    ctx.param("leader_kills", kills);
    eprintln!("== leader kill: baton ({kills} kills)");
    let b = leader_kill_baton(ctx, kills).await;
    let b = soft(ctx, "leader_kill_baton", b);
    eprintln!("== leader kill: etcd ({kills} kills)");
    let e = leader_kill_etcd(ctx, kills).await;
    let e = soft(ctx, "leader_kill_etcd", e);
    let p50 = |v: &Option<(Vec<f64>, usize, usize, Vec<f64>)>| {
        v.as_ref().and_then(|v| percentile(&v.0, 50.0))
    };
    let mx = |v: &Option<(Vec<f64>, usize, usize, Vec<f64>)>| v.as_ref().and_then(|v| max(&v.0));
    let ff = |v: &Option<(Vec<f64>, usize, usize, Vec<f64>)>| v.as_ref().map(|v| v.1 as f64);
    ctx.row(
        "leader_kill_write_gap_p50",
        "ms",
        p50(&b),
        p50(&e),
        Goal::AtMostTimesEtcd(0.7),
    );
    ctx.row(
        "leader_kill_write_gap_max",
        "ms",
        mx(&b),
        mx(&e),
        Goal::AtMostTimesEtcd(0.7),
    );
    ctx.row(
        "false_failovers",
        "moves",
        ff(&b),
        ff(&e),
        Goal::AtMost(0.0),
    );
    let el = |v: &Option<(Vec<f64>, usize, usize, Vec<f64>)>| {
        v.as_ref().map_or("-".into(), |v| {
            format!(
                "p50 {:.0} ms, max {:.0} ms",
                percentile(&v.3, 50.0).unwrap_or(f64::NAN),
                max(&v.3).unwrap_or(f64::NAN)
            )
        })
    };
    let restarts = format!(
        "role restarts in place during the kills: baton {}, etcd {}; time from the kill until a surviving node reports a new leader: baton {}, etcd {}",
        b.as_ref().map_or("-".into(), |v| v.2.to_string()),
        e.as_ref().map_or("-".into(), |v| v.2.to_string()),
        el(&b),
        el(&e)
    );
    ctx.note(
        "leader_kill",
        format!(
            "Election timing: Baton: the directory defaults (NodeConfig::new){}; etcd --heartbeat-interval={} --election-timeout={} (etcd's defaults). Writer: one sequential client writing in a loop (Baton: baton-client with its default retry policy; etcd: 500 ms per attempt, next endpoint on failure, as clientv3's balancer). Gap = kill -9 of the leader to the first write completed after it. false_failovers: role moves seen in the role journal during the kills (3 roles, 3 agents, lease/TTL {LEASE_S} s); {restarts}.",
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

async fn leader_kill_baton(ctx: &Ctx, kills: usize) -> Result<(Vec<f64>, usize, usize, Vec<f64>)> {
    let mut c = BatonCluster::start(
        &ctx.baton_bin,
        &ctx.dir("lk-baton"),
        Duration::from_secs(LEASE_S),
        &ctx.baton_args,
        false,
    )
    .await?;
    let j = Journal::new(&c.dir.join("journal"));
    let servers = ["srv-a", "srv-b", "srv-c"];
    for s in servers {
        c.spawn_agent(s, &j.role_command())?;
    }
    c.wait_servers_up(&servers, Duration::from_secs(20)).await?;
    let roles = ["lk-1", "lk-2", "lk-3"];
    for (i, r) in roles.iter().enumerate() {
        let mut list = servers.to_vec();
        list.rotate_left(i);
        c.apply(create_role(r, &list, "bench")).await?;
    }
    for r in roles {
        j.wait_for(r, Duration::from_secs(10), |_| true)
            .await
            .ok_or_else(|| anyhow!("role {r} never started"))?;
    }
    let from = j.starts().len();
    let w = Writer::Baton(vec![Client::new(c.addrs())?], Arc::new(vec!["lk-1".into()]));
    let gw = GapWriter::start(w);
    let mut gaps = Vec::new();
    let mut elections = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for k in 0..kills {
        let leader = c.leader().await?;
        tokio::time::sleep(Duration::from_millis((wall_ns() % 300_000_000) / 1_000_000)).await;
        let t_kill = wall_ns();
        let survivors: Vec<String> = c
            .nodes
            .iter()
            .filter(|n| n.id != leader)
            .map(|n| n.addr.clone())
            .collect();
        c.node(leader).proc.kill9();
        let elected = tokio::spawn(baton_new_leader_at(survivors));
        let ok = gw
            .first_after(t_kill, Duration::from_secs(30))
            .await
            .ok_or_else(|| anyhow!("kill {k}: no write succeeded within 30 s"))?;
        let gap = (ok - t_kill) as f64 / 1e6;
        let el = elected
            .await
            .ok()
            .flatten()
            .map(|t| (t.saturating_sub(t_kill)) as f64 / 1e6);
        eprintln!("  kill {k}: node {leader}: gap {gap:.0} ms (new leader after {el:?} ms)");
        gaps.push(gap);
        if let Some(el) = el {
            elections.push(el);
        }
        c.node(leader).proc.start()?;
        c.wait_healthy(Duration::from_secs(30)).await?;
        // Let the restarted node catch up and agents settle before the next kill.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    gw.finish().await;
    tokio::time::sleep(Duration::from_secs(LEASE_S + 1)).await;
    let (moves, restarts) = j.moves_since(from);
    Ok((gaps, moves, restarts, elections))
}

/// When (wall ns) one of `addrs` first reports itself leader.
async fn baton_new_leader_at(addrs: Vec<String>) -> Option<u64> {
    let mut clients = Vec::new();
    for a in &addrs {
        clients.push(v1::directory_client::DirectoryClient::new(
            channel(a).await.ok()?,
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for c in &mut clients {
            if let Ok(r) = c
                .cluster_status(v1::ClusterStatusRequest { local: true })
                .await
                && r.get_ref().nodes.iter().any(|n| n.state == "leader")
            {
                return Some(wall_ns());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// When (wall ns) one of `addrs` first names a leader other than `old`.
async fn etcd_new_leader_at(addrs: Vec<String>, old: u64) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for a in &addrs {
            if let Ok(s) = EtcdCluster::status(a).await
                && s.leader != 0
                && s.leader != old
            {
                return Some(wall_ns());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

async fn leader_kill_etcd(ctx: &Ctx, kills: usize) -> Result<(Vec<f64>, usize, usize, Vec<f64>)> {
    let mut e = EtcdCluster::start(&ctx.etcd_bin, &ctx.dir("lk-etcd")).await?;
    let j = Journal::new(&e.dir.join("journal"));
    let roles = ["lk-1", "lk-2", "lk-3"];
    for s in ["srv-a", "srv-b", "srv-c"] {
        e.spawn_agent(&ctx.driver_bin, s, &roles, &j.role_command(), LEASE_S)?;
    }
    for r in roles {
        j.wait_for(r, Duration::from_secs(10), |_| true)
            .await
            .ok_or_else(|| anyhow!("etcd role {r} never started"))?;
    }
    let from = j.starts().len();
    let mut kv = Kv::connect(&e.endpoints()).await?;
    // A short attempt timeout, so that a put stuck on a member without a leader is
    // retried elsewhere soon: etcd's best case.
    kv.attempt_timeout = Duration::from_millis(500);
    let leader = e.leader().await?;
    let gw = GapWriter::start(Writer::Etcd(vec![kv], leader, Arc::new(vec![b'x'; 256])));
    let mut gaps = Vec::new();
    let mut elections = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for k in 0..kills {
        let leader = e.leader().await?;
        tokio::time::sleep(Duration::from_millis((wall_ns() % 300_000_000) / 1_000_000)).await;
        let old = EtcdCluster::status(&e.members[leader].client_addr)
            .await?
            .leader;
        let survivors: Vec<String> = (0..3)
            .filter(|i| *i != leader)
            .map(|i| e.members[i].client_addr.clone())
            .collect();
        let t_kill = wall_ns();
        e.members[leader].proc.kill9();
        let elected = tokio::spawn(etcd_new_leader_at(survivors, old));
        let ok = gw
            .first_after(t_kill, Duration::from_secs(30))
            .await
            .ok_or_else(|| anyhow!("kill {k}: no etcd write succeeded within 30 s"))?;
        let gap = (ok - t_kill) as f64 / 1e6;
        let el = elected
            .await
            .ok()
            .flatten()
            .map(|t| (t.saturating_sub(t_kill)) as f64 / 1e6);
        eprintln!(
            "  kill {k}: member {}: gap {gap:.0} ms (new leader after {el:?} ms)",
            e.members[leader].name
        );
        gaps.push(gap);
        if let Some(el) = el {
            elections.push(el);
        }
        e.members[leader].proc.start()?;
        e.wait_healthy(Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    gw.finish().await;
    tokio::time::sleep(Duration::from_secs(LEASE_S + 1)).await;
    let (moves, restarts) = j.moves_since(from);
    Ok((gaps, moves, restarts, elections))
}

// ---------------------------------------------------------------------------------------
// 4. Fan-out: one change until the last of N subscribers has it
// ---------------------------------------------------------------------------------------

/// Arrival bookkeeping for `changes` changes and `n` subscribers.
struct Arrivals {
    n: usize,
    count: Vec<AtomicUsize>,
    done: Mutex<Vec<Option<Instant>>>,
    ready: AtomicUsize,
}

impl Arrivals {
    fn new(n: usize, changes: usize) -> Arc<Arrivals> {
        Arc::new(Arrivals {
            n,
            count: (0..changes).map(|_| AtomicUsize::new(0)).collect(),
            done: Mutex::new(vec![None; changes]),
            ready: AtomicUsize::new(0),
        })
    }
    fn arrived(&self, k: usize) {
        if k < self.count.len() && self.count[k].fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.done.lock().expect("lock")[k] = Some(Instant::now());
        }
    }
    async fn wait(&self, k: usize, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.done.lock().expect("lock")[k] {
                return Some(t);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.ready.load(Ordering::Relaxed) < self.n {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} subscribers ready",
                    self.ready.load(Ordering::Relaxed),
                    self.n
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

pub async fn fanout(ctx: &mut Ctx) -> Result<()> {
    let (sizes, changes) = if ctx.quick {
        ([200usize, 1000], 5)
    } else {
        ([1000usize, 10_000], 20)
    };
    ctx.param("fanout_subscribers", serde_json::json!(sizes));
    ctx.param("fanout_changes", changes);
    let mut res: BTreeMap<(&str, usize), Vec<f64>> = BTreeMap::new();
    eprintln!("== fan-out: baton");
    let b = fanout_baton(ctx, &sizes, changes).await;
    if let Some(v) = soft(ctx, "fanout_baton", b) {
        for (n, l) in v {
            res.insert(("baton", n), l);
        }
    }
    eprintln!("== fan-out: etcd");
    let e = fanout_etcd(ctx, &sizes, changes).await;
    if let Some(v) = soft(ctx, "fanout_etcd", e) {
        for (n, l) in v {
            res.insert(("etcd", n), l);
        }
    }
    let p99 = |s: &str, n: usize| res.get(&(s, n)).and_then(|v| percentile(v, 99.0));
    ctx.row(
        "fanout_p99_1000",
        "ms",
        p99("baton", sizes[0]),
        p99("etcd", sizes[0]),
        Goal::AtMostTimesEtcd(0.5),
    );
    ctx.row(
        "fanout_p99_10000",
        "ms",
        p99("baton", sizes[1]),
        p99("etcd", sizes[1]),
        Goal::AtMostTimesEtcd(0.5),
    );
    ctx.note(
        "fanout",
        format!("Subscribers spread round-robin over the three nodes/members, 100 streams per client connection. Baton: Watch.Events streams; the change is a CreateRole placed on a live server (one history event). etcd: one watcher per Watch stream on one key; the change is a put. Time from issuing the write to the last subscriber receiving it; p99 over {changes} changes; sizes {sizes:?}."),
    );
    Ok(())
}

async fn channels_over(addrs: &[String], n: usize) -> Result<Vec<tonic::transport::Channel>> {
    let mut v = Vec::new();
    for i in 0..n.div_ceil(100).max(addrs.len()) {
        v.push(channel(&addrs[i % addrs.len()]).await?);
    }
    Ok(v)
}

async fn fanout_baton(
    ctx: &Ctx,
    sizes: &[usize],
    changes: usize,
) -> Result<Vec<(usize, Vec<f64>)>> {
    let c = BatonCluster::start(
        &ctx.baton_bin,
        &ctx.dir("fan-baton"),
        Duration::from_secs(3),
        &ctx.baton_args,
        false,
    )
    .await?;
    let stats = Arc::new(SessionStats::default());
    let (_hold, _) = open_session(
        channel(&c.addrs()[0]).await?,
        "fan-srv".into(),
        Some(Duration::from_secs(1)),
        stats,
    )
    .await?;
    c.wait_servers_up(&["fan-srv"], Duration::from_secs(10))
        .await?;
    let mut out = Vec::new();
    for &n in sizes {
        let arr = Arrivals::new(n, changes);
        let rev = c
            .status()
            .await?
            .nodes
            .iter()
            .map(|x| x.last_applied)
            .max()
            .unwrap_or(0);
        let chans = channels_over(&c.addrs(), n).await?;
        let mut tasks = Vec::new();
        for i in 0..n {
            let ch = chans[i % chans.len()].clone();
            let arr = arr.clone();
            let prefix = format!("fan{n}-");
            tasks.push(tokio::spawn(async move {
                let mut w = v1::watch_client::WatchClient::new(ch);
                let Ok(s) = w
                    .events(v1::WatchRequest {
                        role: None,
                        after_revision: rev,
                        after: None,
                    })
                    .await
                else {
                    return;
                };
                arr.ready.fetch_add(1, Ordering::Relaxed);
                let mut s = s.into_inner();
                while let Ok(Some(ev)) = s.message().await {
                    if let Some(k) = ev
                        .role
                        .strip_prefix(&prefix)
                        .and_then(|k| k.parse::<usize>().ok())
                    {
                        arr.arrived(k);
                    }
                }
            }));
        }
        arr.wait_ready(Duration::from_secs(120)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut lats = Vec::new();
        for k in 0..changes {
            let t0 = Instant::now();
            c.apply(create_role(&format!("fan{n}-{k}"), &["fan-srv"], ""))
                .await?;
            let done = arr
                .wait(k, Duration::from_secs(60))
                .await
                .ok_or_else(|| anyhow!("change {k} did not reach all {n} watchers"))?;
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
        out.push((n, lats));
    }
    Ok(out)
}

async fn fanout_etcd(ctx: &Ctx, sizes: &[usize], changes: usize) -> Result<Vec<(usize, Vec<f64>)>> {
    let e = EtcdCluster::start(&ctx.etcd_bin, &ctx.dir("fan-etcd")).await?;
    let kv = Kv::connect(&e.endpoints()).await?;
    let leader = e.leader().await?;
    let mut out = Vec::new();
    for &n in sizes {
        let key = format!("/fan/{n}").into_bytes();
        let arr = Arrivals::new(n, changes);
        let chans = channels_over(&e.endpoints(), n).await?;
        let mut tasks = Vec::new();
        for i in 0..n {
            let ch = chans[i % chans.len()].clone();
            let arr = arr.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let (tx, rx) = mpsc::channel(1);
                let _ = tx
                    .send(pb::WatchRequest {
                        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                            pb::WatchCreateRequest {
                                key,
                                range_end: vec![],
                                start_revision: 0,
                            },
                        )),
                    })
                    .await;
                let mut w = pb::watch_client::WatchClient::new(ch);
                let Ok(s) = w.watch(ReceiverStream::new(rx)).await else {
                    return;
                };
                let mut s = s.into_inner();
                while let Ok(Some(r)) = s.message().await {
                    if r.created {
                        arr.ready.fetch_add(1, Ordering::Relaxed);
                    }
                    for ev in r.events {
                        if let Some(k) = ev
                            .kv
                            .and_then(|kv| String::from_utf8(kv.value).ok())
                            .and_then(|v| v.parse::<usize>().ok())
                        {
                            arr.arrived(k);
                        }
                    }
                }
                drop(tx);
            }));
        }
        arr.wait_ready(Duration::from_secs(120)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut lats = Vec::new();
        for k in 0..changes {
            let t0 = Instant::now();
            let mut at = leader;
            kv.put(
                &mut at,
                &key,
                k.to_string().as_bytes(),
                Duration::from_secs(10),
            )
            .await?;
            let done = arr
                .wait(k, Duration::from_secs(60))
                .await
                .ok_or_else(|| anyhow!("change {k} did not reach all {n} etcd watchers"))?;
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
        out.push((n, lats));
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
    let b = rss_baton(ctx, n, Sessions::Shared).await.map(|r| r.0);
    let b = soft(ctx, "rss_baton", b);
    eprintln!("== memory per session: etcd ({n} lease+keepalive+watch sessions)");
    let e = rss_etcd(ctx, n).await;
    let e = soft(ctx, "rss_etcd", e);
    ctx.row("rss_kb_per_session_10000", "kB", b, e, Goal::AtMost(16.0));
    ctx.note(
        "rss",
        format!("VmRSS growth of the leader's process per idle session, {n} sessions attached to the leader, 100 sessions per client connection, renewing every lease/3 (3 s lease). Baton: an Agent.Session (Hello + Renew). etcd: the recipe's per-agent state, a granted lease with a keep-alive stream (TTL 3 s, every 1 s) plus a watch stream on the agent's key."),
    );
    Ok(())
}

/// How the session workloads (rss, renewals) connect their sessions to the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sessions {
    /// Plain text, 100 sessions per client connection (the rss and renewals rows).
    Shared,
    /// One connection per session, as real agents connect: plain text.
    OwnPlain,
    /// One mutual-TLS connection per session, each with an agent certificate for its
    /// server name (the directory refuses a session for a name its certificate lacks).
    OwnTls,
}

impl Sessions {
    fn tls(self) -> bool {
        self == Sessions::OwnTls
    }
}

/// Client security for each of `names` (with TLS: an agent certificate each, issued,
/// written and loaded), and the seconds that took.
fn session_security(
    c: &BatonCluster,
    names: &[String],
    mode: Sessions,
) -> Result<(Vec<baton_tls::Security>, f64)> {
    let t0 = Instant::now();
    let v = match mode {
        Sessions::Shared => vec![baton_tls::Security::Insecure],
        Sessions::OwnPlain | Sessions::OwnTls => names
            .iter()
            .map(|s| c.agent_security(s))
            .collect::<Result<Vec<_>>>()?,
    };
    let secs = t0.elapsed().as_secs_f64();
    if mode == Sessions::OwnTls {
        eprintln!(
            "  {} agent certificates issued, written and loaded in {secs:.2} s ({:.2} ms each)",
            v.len(),
            secs * 1000.0 / v.len().max(1) as f64
        );
    }
    Ok((v, secs))
}

/// The channels the sessions use, connected now: session `i` uses `chans[i % len]`.
async fn session_channels(
    addr: &str,
    n: usize,
    security: Vec<baton_tls::Security>,
    mode: Sessions,
) -> Result<Vec<tonic::transport::Channel>> {
    use futures::StreamExt;
    if mode == Sessions::Shared {
        return channels_over(&[addr.to_string()], n).await;
    }
    futures::stream::iter(security)
        .map(|s| async move { secure_channel(addr, &s).await })
        .buffered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

async fn rss_baton(ctx: &Ctx, n: usize, mode: Sessions) -> Result<(f64, f64)> {
    let mut c = BatonCluster::start(
        &ctx.baton_bin,
        &ctx.dir(&format!("rss-baton-{mode:?}").to_lowercase()),
        Duration::from_secs(3),
        &ctx.baton_args,
        mode.tls(),
    )
    .await?;
    let leader = c.leader().await?;
    let addr = c.node(leader).addr.clone();
    let pid = c.node(leader).proc.pid().expect("running");
    let names: Vec<String> = (0..n).map(|i| format!("idle-{i:05}")).collect();
    let (security, issue_s) = session_security(&c, &names, mode)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = settle_rss(pid).await?;
    let stats = Arc::new(SessionStats::default());
    let t0 = Instant::now();
    let chans = session_channels(&addr, n, security, mode).await?;
    // One supervisor per session: like an agent, it opens the session again when it
    // ends (a registration refused during a leader change, a broken stream).
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut sups = Vec::new();
    for i in 0..n {
        let ch = chans[i % chans.len()].clone();
        let (stats, sem) = (stats.clone(), sem.clone());
        let name = names[i].clone();
        sups.push(tokio::spawn(async move {
            loop {
                let permit = sem.acquire().await;
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    open_session(
                        ch.clone(),
                        name.clone(),
                        Some(Duration::from_secs(1)),
                        stats.clone(),
                    ),
                )
                .await;
                drop(permit);
                if let Ok(Ok((tx, task))) = r {
                    let _ = task.await;
                    drop(tx);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while (stats.live.load(Ordering::Relaxed) as usize) < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} sessions open ({} opened in all)",
                stats.live.load(Ordering::Relaxed),
                stats.opened.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reopened = stats.opened.load(Ordering::Relaxed) as usize - n;
    if reopened > 0 {
        eprintln!("  {reopened} sessions had to be opened again");
    }
    eprintln!(
        "  {n} sessions registered in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = settle_rss(pid).await?;
    let st = c.local_status(leader).await?;
    eprintln!(
        "  rss {before} kB -> {after} kB, {} sessions on node {leader}",
        st.sessions
    );
    for s in sups {
        s.abort();
    }
    Ok(((after as f64 - before as f64) / n as f64, issue_s))
}

async fn rss_etcd(ctx: &Ctx, n: usize) -> Result<f64> {
    let mut e = EtcdCluster::start(&ctx.etcd_bin, &ctx.dir("rss-etcd")).await?;
    let leader = e.leader().await?;
    let addr = e.members[leader].client_addr.clone();
    let pid = e.members[leader].proc.pid().expect("running");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = settle_rss(pid).await?;
    // Two streams per session: 50 sessions per connection keeps 100 streams on each, as
    // for Baton.
    let chans = channels_over(std::slice::from_ref(&addr), 2 * n).await?;
    let ready = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let t0 = Instant::now();
    for i in 0..n {
        let ch = chans[i % chans.len()].clone();
        let ready = ready.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await;
            let setup = async || {
                let mut lc = pb::lease_client::LeaseClient::new(ch.clone());
                let g = lc.lease_grant(pb::LeaseGrantRequest { ttl: 3, id: 0 }).await.ok()?;
                let id = g.into_inner().id;
                let (ktx, krx) = mpsc::channel(2);
                // The first request goes before the call: etcd sends headers with the
                // first response.
                let _ = ktx.try_send(pb::LeaseKeepAliveRequest { id });
                let ka = lc.lease_keep_alive(ReceiverStream::new(krx)).await.ok()?.into_inner();
                let (wtx, wrx) = mpsc::channel(1);
                let _ = wtx.try_send(pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                        pb::WatchCreateRequest {
                            key: format!("/sess/{i}").into_bytes(),
                            range_end: vec![],
                            start_revision: 0,
                        },
                    )),
                });
                let mut wc = pb::watch_client::WatchClient::new(ch.clone());
                let mut ws = wc.watch(ReceiverStream::new(wrx)).await.ok()?.into_inner();
                if !matches!(ws.message().await, Ok(Some(r)) if r.created) {
                    return None;
                }
                Some((id, ktx, ka, wtx, ws))
            };
            // An overloaded member may refuse a grant or a stream: retry, as an agent would.
            let mut got = None;
            for _ in 0..50 {
                got = setup().await;
                if got.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let Some((id, ktx, mut ka, wtx, mut ws)) = got else { return };
            ready.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => if ktx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() { break },
                    m = ka.message() => if !matches!(m, Ok(Some(_))) { break },
                    m = ws.message() => if !matches!(m, Ok(Some(_))) { break },
                }
            }
            drop(wtx);
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while ready.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline || tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n_ready = ready.load(Ordering::Relaxed);
    if n_ready < n * 9 / 10 {
        bail!("only {n_ready} of {n} etcd sessions ready");
    }
    eprintln!(
        "  {n_ready} of {n} etcd sessions ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = settle_rss(pid).await?;
    eprintln!(
        "  rss {before} kB -> {after} kB on {}",
        e.members[leader].name
    );
    for t in tasks {
        t.abort();
    }
    e.shutdown();
    Ok((after as f64 - before as f64) / n_ready as f64)
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
    let b = renewals_baton(ctx, k, window, Sessions::Shared)
        .await
        .map(|r| (r.0, r.1));
    let b = soft(ctx, "renewals_baton", b);
    eprintln!("== renewals: etcd ({k} keep-alive streams back to back)");
    let e = renewals_etcd(ctx, k, window).await;
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

async fn renewals_baton(
    ctx: &Ctx,
    k: usize,
    window: Duration,
    mode: Sessions,
) -> Result<(f64, f64, f64)> {
    let mut c = BatonCluster::start(
        &ctx.baton_bin,
        &ctx.dir(&format!("ren-baton-{mode:?}").to_lowercase()),
        Duration::from_secs(3),
        &ctx.baton_args,
        mode.tls(),
    )
    .await?;
    let leader = c.leader().await?;
    let addr = c.node(leader).addr.clone();
    let stats = Arc::new(SessionStats::default());
    let names: Vec<String> = (0..k).map(|i| format!("ren-{i:05}")).collect();
    let (security, issue_s) = session_security(&c, &names, mode)?;
    let chans = session_channels(&addr, k, security, mode).await?;
    let mut holds = Vec::new();
    for i in 0..k {
        holds.push(
            open_session(
                chans[i % chans.len()].clone(),
                names[i].clone(),
                None,
                stats.clone(),
            )
            .await?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while (stats.opened.load(Ordering::Relaxed) as usize) < k {
        if Instant::now() > deadline {
            bail!("sessions not registered");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let i0 = c.local_status(leader).await?.last_applied;
    let a0 = stats.acks.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let a1 = stats.acks.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let i1 = c.local_status(leader).await?.last_applied;
    drop(holds);
    let n = (a1 - a0) as f64;
    eprintln!("  {n} renewals in {secs:.1} s, raft index {i0} -> {i1}");
    Ok((n / secs, (i1 - i0) as f64 / n.max(1.0), issue_s))
}

async fn renewals_etcd(ctx: &Ctx, k: usize, window: Duration) -> Result<(f64, f64)> {
    let e = EtcdCluster::start(&ctx.etcd_bin, &ctx.dir("ren-etcd")).await?;
    let leader = e.leader().await?;
    let addr = e.members[leader].client_addr.clone();
    let chans = channels_over(std::slice::from_ref(&addr), k).await?;
    let acks = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..k {
        let ch = chans[i % chans.len()].clone();
        let (acks, ready) = (acks.clone(), ready.clone());
        tasks.push(tokio::spawn(async move {
            let mut lc = pb::lease_client::LeaseClient::new(ch);
            let Ok(g) = lc
                .lease_grant(pb::LeaseGrantRequest { ttl: 3, id: 0 })
                .await
            else {
                return;
            };
            let id = g.into_inner().id;
            let (tx, rx) = mpsc::channel(2);
            // The first request goes before the call: etcd sends headers with the first response.
            let _ = tx.try_send(pb::LeaseKeepAliveRequest { id });
            let mut first = true;
            let Ok(s) = lc.lease_keep_alive(ReceiverStream::new(rx)).await else {
                return;
            };
            let mut s = s.into_inner();
            ready.fetch_add(1, Ordering::Relaxed);
            let _ = i;
            loop {
                if !first && tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
                    break;
                }
                first = false;
                match s.message().await {
                    Ok(Some(_)) => {
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready.load(Ordering::Relaxed) < k {
        if Instant::now() > deadline {
            bail!("etcd keep-alive streams not ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let i0 = EtcdCluster::status(&addr).await?.raft_index;
    let a0 = acks.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let a1 = acks.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let i1 = EtcdCluster::status(&addr).await?.raft_index;
    for t in tasks {
        t.abort();
    }
    let n = (a1 - a0) as f64;
    eprintln!("  {n} keep-alives in {secs:.1} s, raft index {i0} -> {i1}");
    Ok((n / secs, (i1 - i0) as f64 / n.max(1.0)))
}

// ---------------------------------------------------------------------------------------
// 7. Restart after 1,000,000 applied commands
// ---------------------------------------------------------------------------------------

pub async fn restart(ctx: &mut Ctx) -> Result<()> {
    let total: u64 = if ctx.quick { 20_000 } else { 1_000_000 };
    ctx.param("restart_commands", total);
    eprintln!("== restart after {total} commands: baton");
    let b = restart_baton(ctx, total).await;
    let b = soft(ctx, "restart_baton", b);
    eprintln!("== restart after {total} commands: etcd");
    let e = restart_etcd(ctx, total).await;
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

async fn restart_baton(ctx: &Ctx, total: u64) -> Result<(f64, f64)> {
    let (mut c, w, _hold) = baton_with_roles(ctx, "rs-baton", 256, false).await?;
    let t0 = Instant::now();
    let r = closed_loop(&w, 256, Duration::ZERO, Duration::ZERO, Some(total)).await;
    eprintln!(
        "  {} writes in {:.0} s ({} errors)",
        r.ops,
        t0.elapsed().as_secs_f64(),
        r.errors
    );
    let leader = c.leader().await?;
    let f = c
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != leader)
        .expect("follower");
    let target = c.local_status(leader).await?.last_applied;
    let deadline = Instant::now() + Duration::from_secs(60);
    let rev = loop {
        let s = c.local_status(f).await?.last_applied;
        if s >= target {
            break s;
        }
        if Instant::now() > deadline {
            bail!("follower {f} did not catch up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let addr = c.node(f).addr.clone();
    c.node(f).proc.stop(Duration::from_secs(10));
    let disk = dir_bytes(&c.node(f).data_dir);
    let t = Instant::now();
    c.node(f).proc.start()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(ch) = channel(&addr).await {
            let mut d = v1::directory_client::DirectoryClient::new(ch);
            if let Ok(r) = d
                .list_roles(v1::ListRequest {
                    read: Some(v1::ReadOptions { stale: true }),
                })
                .await
                && r.get_ref().revision >= rev
            {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("restarted node {f} did not serve revision {rev} within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    eprintln!("  node {f}: revision {rev}, {disk} bytes on disk, serving {ms:.0} ms after start");
    Ok((ms, disk as f64))
}

async fn restart_etcd(ctx: &Ctx, total: u64) -> Result<(f64, f64)> {
    let (mut e, w) = etcd_writer(ctx, "rs-etcd").await?;
    let t0 = Instant::now();
    let r = closed_loop(&w, 256, Duration::ZERO, Duration::ZERO, Some(total)).await;
    eprintln!(
        "  {} writes in {:.0} s ({} errors)",
        r.ops,
        t0.elapsed().as_secs_f64(),
        r.errors
    );
    let leader = e.leader().await?;
    let f = (leader + 1) % 3;
    let kv = Kv::connect(&e.endpoints()).await?;
    let target = kv.local_revision(leader, b"/x").await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let rev = loop {
        let s = kv.local_revision(f, b"/x").await?;
        if s >= target {
            break s;
        }
        if Instant::now() > deadline {
            bail!("etcd follower did not catch up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    e.members[f].proc.stop(Duration::from_secs(10));
    let disk = dir_bytes(&e.members[f].data_dir);
    let t = Instant::now();
    e.members[f].proc.start()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let kv = Kv::connect(&e.endpoints()).await?;
    loop {
        if let Ok(r) = kv.local_revision(f, b"/x").await
            && r >= rev
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("restarted etcd member did not serve within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    eprintln!(
        "  member {}: revision {rev}, {disk} bytes on disk, serving {ms:.0} ms after start",
        e.members[f].name
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
            let name = format!("tls-tp-{}", label(tls));
            let (c, w, _hold) = baton_with_roles(ctx, &name, 256, tls).await?;
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
        let r = rss_baton(ctx, n, mode).await;
        if let Some(r) = soft(ctx, &format!("tls_cost_rss_{}", label(tls)), r) {
            rss.insert(tls, r);
        }
        eprintln!(
            "== tls cost: renewals, {} ({k} sessions, a connection each)",
            label(tls)
        );
        let r = renewals_baton(ctx, k, window, mode).await;
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
