//! `bench-driver`: runs the cluster benchmarks (see `benches/run`), or, as
//! `bench-driver etcd-agent ...`, one agent of the etcd failover recipe.
//!
//! ```text
//! bench-driver [--quick] [--keep] [--out FILE] [--baton-args "FLAGS"] [--baton-bin PATH] [--etcd-bin PATH]
//!              [--only throughput,failover,leader_kill,fanout,rss,renewals,restart,tls_cost,scale]
//! bench-driver etcd-agent --server S --endpoints A,B,C --roles R1,R2 --ttl SECS --run CMD
//! bench-driver check --report FILE --thresholds FILE
//! ```
//!
//! `check` compares a report's Baton/etcd ratios with the thresholds file (see
//! `baton_benches::check`) and exits 1 naming every row out of bounds.
//!
//! `BENCH_LEADER_ONLY=1` gives the Baton writers only the leader's address (an experiment:
//! otherwise a writer's first write may go through a follower, which forwards it and names
//! the leader, and baton-client moves to the leader from then on).

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use baton_benches::workloads::{self, Ctx};
use baton_benches::{check, etcd_agent, procs, report};

const ALL: [&str; 9] = [
    "throughput",
    "failover",
    "leader_kill",
    "fanout",
    "rss",
    "renewals",
    "restart",
    "tls_cost",
    "scale",
];

fn value(args: &mut std::vec::IntoIter<String>, flag: &str) -> Result<String> {
    args.next().ok_or_else(|| anyhow!("{flag} needs a value"))
}

/// The driver's command line.
struct Opts {
    quick: bool,
    keep: bool,
    baton_args: Vec<String>,
    out: PathBuf,
    baton_bin: PathBuf,
    etcd_bin: PathBuf,
    only: Vec<String>,
}

/// Parse the flags; `None` after printing the usage for `--help`.
fn parse_opts(mut args: std::vec::IntoIter<String>) -> Result<Option<Opts>> {
    let mut o = Opts {
        quick: false,
        keep: false,
        baton_args: Vec::new(),
        out: PathBuf::from("target/bench/report.json"),
        baton_bin: PathBuf::from("target/release/baton"),
        etcd_bin: PathBuf::from("etcd"),
        only: ALL.iter().map(|s| s.to_string()).collect(),
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--keep" => o.keep = true,
            "--baton-args" => {
                o.baton_args = value(&mut args, "--baton-args")?
                    .split_whitespace()
                    .map(String::from)
                    .collect()
            }
            "--out" => o.out = value(&mut args, "--out")?.into(),
            "--baton-bin" => o.baton_bin = value(&mut args, "--baton-bin")?.into(),
            "--etcd-bin" => o.etcd_bin = value(&mut args, "--etcd-bin")?.into(),
            "--only" => {
                o.only = value(&mut args, "--only")?
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench-driver [--quick] [--keep] [--out FILE] [--baton-args FLAGS] [--baton-bin PATH] [--etcd-bin PATH] [--only {}]",
                    ALL.join(",")
                );
                return Ok(None);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    for w in &o.only {
        if !ALL.contains(&w.as_str()) {
            bail!("unknown workload {w:?}; known: {}", ALL.join(","));
        }
    }
    o.etcd_bin = which(&o.etcd_bin).context("etcd not found (install etcd-server)")?;
    o.baton_bin = std::fs::canonicalize(&o.baton_bin).with_context(|| {
        format!(
            "{} not found (cargo build --release -p baton)",
            o.baton_bin.display()
        )
    })?;
    Ok(Some(o))
}

fn main() -> Result<()> {
    let mut args: std::vec::IntoIter<String> =
        std::env::args().skip(1).collect::<Vec<_>>().into_iter();
    if args.as_slice().first().map(String::as_str) == Some("etcd-agent") {
        args.next();
        return agent_main(args);
    }
    if args.as_slice().first().map(String::as_str) == Some("check") {
        args.next();
        return check_main(args);
    }
    let Some(o) = parse_opts(args)? else {
        return Ok(());
    };

    // Nothing started here may outlive the driver: on a panic or a signal, kill it all.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        procs::kill_all();
        default_hook(info);
    }));
    let work = std::env::temp_dir().join(format!("baton-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    let load_before = procs::machine();
    let mut ctx = Ctx {
        baton_bin: o.baton_bin.clone(),
        etcd_bin: o.etcd_bin.clone(),
        driver_bin: std::env::current_exe()?,
        work: work.clone(),
        quick: o.quick,
        rows: Vec::new(),
        tls_rows: Vec::new(),
        notes: Default::default(),
        params: Default::default(),
        baton_args: o.baton_args.clone(),
    };
    let result = rt.block_on(async {
        tokio::select! {
            () = run_workloads(&mut ctx, &o.only) => Ok(()),
            _ = signal() => {
                procs::kill_all();
                Err(anyhow!("interrupted"))
            }
        }
    });
    procs::kill_all();
    result?;
    let loads = (load_before, procs::machine());
    write_report(&o, &ctx, started, loads)?;
    if o.keep || ctx.notes.keys().any(|k| k.starts_with("error_")) {
        println!("work directory kept: {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}

/// Run the chosen workloads in their fixed order; a failed one is noted and the rest run.
async fn run_workloads(ctx: &mut Ctx, only: &[String]) {
    for w in ALL.iter().filter(|w| only.iter().any(|o| o == *w)) {
        let r = match *w {
            "throughput" => workloads::throughput(ctx).await,
            "failover" => workloads::failover(ctx).await,
            "leader_kill" => workloads::leader_kill(ctx).await,
            "fanout" => workloads::fanout(ctx).await,
            "rss" => workloads::rss(ctx).await,
            "renewals" => workloads::renewals(ctx).await,
            "restart" => workloads::restart(ctx).await,
            "tls_cost" => workloads::tls_cost(ctx).await,
            "scale" => baton_benches::scale::scale(ctx).await,
            _ => unreachable!("checked against ALL"),
        };
        if let Err(e) = r {
            eprintln!("workload {w} failed: {e:#}");
            ctx.notes.insert(format!("error_{w}"), format!("{e:#}"));
        }
    }
}

/// The JSON report to `o.out`, and the markdown tables and a summary line on stdout.
fn write_report(
    o: &Opts,
    ctx: &Ctx,
    started: std::time::Instant,
    (load_before, load_after): (serde_json::Value, serde_json::Value),
) -> Result<()> {
    let etcd_version = std::process::Command::new(&o.etcd_bin)
        .arg("--version")
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let report = serde_json::json!({
        "generated_unix_s": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "quick": o.quick,
        "duration_s": started.elapsed().as_secs(),
        "machine": { "before": load_before, "after": load_after },
        "etcd": etcd_version,
        "parameters": ctx.params,
        "baton_directory_args": ctx.baton_args,
        "notes": ctx.notes,
        "rows": ctx.rows,
        "tls_cost": ctx.tls_rows,
    });
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&report)? + "\n")?;
    if !ctx.rows.is_empty() {
        println!("{}", report::markdown(&ctx.rows));
    }
    if !ctx.tls_rows.is_empty() {
        println!("TLS cost (Baton with mutual TLS against Baton in plain text):\n");
        println!("{}", report::tls_markdown(&ctx.tls_rows));
    }
    println!(
        "report: {} ({} s, load before: {}, after: {})",
        o.out.display(),
        started.elapsed().as_secs(),
        report["machine"]["before"]["loadavg"]
            .as_str()
            .unwrap_or(""),
        report["machine"]["after"]["loadavg"].as_str().unwrap_or("")
    );
    Ok(())
}

async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn which(p: &std::path::Path) -> Result<PathBuf> {
    if p.components().count() > 1 {
        return Ok(p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
        .ok_or_else(|| anyhow!("{} not on PATH", p.display()))
}

fn check_main(mut args: std::vec::IntoIter<String>) -> Result<()> {
    let (mut report, mut thresholds) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--report" => report = Some(PathBuf::from(value(&mut args, "--report")?)),
            "--thresholds" => thresholds = Some(PathBuf::from(value(&mut args, "--thresholds")?)),
            other => bail!("unknown argument {other:?} (check --report FILE --thresholds FILE)"),
        }
    }
    let report = report.ok_or_else(|| anyhow!("check needs --report FILE"))?;
    let thresholds = thresholds.ok_or_else(|| anyhow!("check needs --thresholds FILE"))?;
    let t = std::fs::read_to_string(&thresholds)
        .with_context(|| format!("reading {}", thresholds.display()))?;
    let t = check::parse_thresholds(&t).map_err(|e| anyhow!("{}: {e}", thresholds.display()))?;
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&report)
            .with_context(|| format!("reading {}", report.display()))?,
    )
    .with_context(|| format!("{} is not JSON", report.display()))?;
    let rows: Vec<check::ReportRow> = serde_json::from_value(r["rows"].clone())
        .with_context(|| format!("{} has no rows", report.display()))?;
    let o = check::check(&t, &rows);
    for line in &o.passed {
        println!("check ok:      {line}");
    }
    for line in &o.skipped {
        println!("check skipped: {line}");
    }
    for line in &o.failed {
        println!("check FAILED:  {line}");
    }
    if !o.failed.is_empty() {
        eprintln!(
            "{} row(s) fell outside {}: {}",
            o.failed.len(),
            thresholds.display(),
            o.failed
                .iter()
                .map(|l| l.split(':').next().unwrap_or(l))
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::process::exit(1);
    }
    Ok(())
}

fn agent_main(mut args: std::vec::IntoIter<String>) -> Result<()> {
    let (mut server, mut endpoints, mut roles, mut ttl, mut run) = (None, None, None, 2i64, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--server" => server = Some(value(&mut args, &a)?),
            "--endpoints" => endpoints = Some(value(&mut args, &a)?),
            "--roles" => roles = Some(value(&mut args, &a)?),
            "--ttl" => ttl = value(&mut args, &a)?.parse()?,
            "--run" => run = Some(value(&mut args, &a)?),
            other => bail!("unknown etcd-agent argument {other:?}"),
        }
    }
    let split = |s: String| s.split(',').map(String::from).collect::<Vec<_>>();
    let a = etcd_agent::AgentArgs {
        server: server.ok_or_else(|| anyhow!("--server"))?,
        endpoints: split(endpoints.ok_or_else(|| anyhow!("--endpoints"))?),
        roles: split(roles.ok_or_else(|| anyhow!("--roles"))?),
        ttl_s: ttl,
        run: run.ok_or_else(|| anyhow!("--run"))?,
    };
    // Current-thread runtime on the main thread: PR_SET_PDEATHSIG of role processes
    // fires when this thread, that is the process, dies.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(etcd_agent::run(a))
}
