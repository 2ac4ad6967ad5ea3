//! The report: printed, and written as JSON.

use std::collections::BTreeMap;
use std::fs;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::OUTAGE_NS;
use super::analysis::{Analysis, Observed};
use super::world::World;

/// Nanoseconds as milliseconds.
pub(crate) fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Rounded to one decimal.
pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// p50/p99/max of a sample in ms, as JSON (nulls when empty).
pub(crate) fn stats_json(v: &[f64]) -> Value {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    json!({
        "n": s.len(),
        "p50_ms": crate::stats::percentile(&s, 50.0).map(round1),
        "p99_ms": crate::stats::percentile(&s, 99.0).map(round1),
        "max_ms": s.last().copied().map(round1),
    })
}

/// p50/p99/max of a sample in ms, as text.
pub(crate) fn stats_text(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match (
        crate::stats::percentile(&s, 50.0),
        crate::stats::percentile(&s, 99.0),
        s.last(),
    ) {
        (Some(p50), Some(p99), Some(max)) => {
            format!(
                "p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms (n={})",
                s.len()
            )
        }
        _ => "n=0".to_string(),
    }
}

/// Faults per kind.
fn by_kind(o: &Observed) -> BTreeMap<&'static str, usize> {
    let mut by_kind = BTreeMap::new();
    for f in &o.chaos.faults {
        *by_kind.entry(f.kind.name()).or_default() += 1;
    }
    by_kind
}

/// The run's report as JSON (`report.json`, and `--report FILE`).
pub(crate) fn json(o: &Observed, an: &Analysis) -> Value {
    let (w, js, so, rec) = (o.world, o.js, o.so, &an.recovery);
    let stubborn_roles = &o.roles.stubborn;
    json!({
        "seed": w.a.seed,
        "prefix": w.a.prefix,
        "workdir": w.a.workdir.display().to_string(),
        "lease_ms": w.a.lease.as_millis() as u64,
        "duration_s": round1(w.a.duration.as_secs_f64()),
        "chaos_s": round1(o.chaos.secs),
        "interrupted": o.chaos.interrupted,
        "freezer": w.freezer.name(),
        "roles": o.roles.all.iter().map(|(r, s, fb)| json!({"name": r, "servers": s, "failback": fb, "stubborn": stubborn_roles.contains(r)})).collect::<Vec<_>>(),
        "dup_agent": an.dups.json(),
        "stubborn": so.stubborn.json(stubborn_roles, stats_json(&so.stubborn.outlived_shell_ms)),
        "faults": {
            "total": o.chaos.faults.len(),
            "by_kind": by_kind(o),
            "log": o.chaos.faults.iter().map(|f| json!({
                "n": f.n,
                "kind": f.kind.name(),
                "target": f.target,
                "detail": f.detail,
                "start_s": round1(ms(f.start_ns - w.t0_ns) / 1e3),
                "held_s": round1(ms(f.heal_ns - f.start_ns) / 1e3),
            })).collect::<Vec<_>>(),
        },
        "overlaps": an.journal_overlaps() + so.overlaps.len(),
        "journal": {
            "accepted": js.accepted.len(),
            "rejected_stale_writes": js.rejected.len(),
            "rejected_after_freeze": an.rej_freeze,
            "rejected_in_flight": an.rej_flight,
            "rejected_unexplained": an.rej_other,
            "malformed": js.malformed,
            "overlaps": an.jr.overlaps,
            "regressions": an.jr.regressions,
            "reused_epochs": an.jr.reused_epochs,
        },
        "proc": {
            "samples": so.samples,
            "role_processes_seen": so.seen.len(),
            "journal_writers": an.writer_pids,
            "journal_writers_not_seen": an.unsampled,
            "overlap_samples": so.overlap_samples,
            "overlaps": so.overlaps,
            "post_thaw_samples": so.post_thaw_samples,
            "stop_after_thaw": stats_json(&so.stop_after_thaw_ms),
            "lingering": so.lingering,
        },
        "admin_writes": {
            "attempted": o.writes.len(),
            "acked": an.admin.acked,
            "lost": an.admin.lost.len(),
            "lost_names": an.admin.lost,
            "unacked_but_present": an.admin.unacked_present,
            "ack_latency": stats_json(&an.admin.latency),
            "errors": an.admin.errors,
        },
        "recovery": {
            "outages": stats_json(&rec.outages),
            "by_kind": rec.by_kind.iter().map(|(k, v)| (k.to_string(), stats_json(v))).collect::<BTreeMap<_, _>>(),
            "moved_and_in_place_by_kind": rec.outcome_by_kind.iter().map(|(k, (m, i))| (k.to_string(), json!({"moved": m, "in_place": i}))).collect::<BTreeMap<_, _>>(),
            "roles_stopped_by_directory_faults": rec.dir_fault_stops,
            "cadence": stats_json(&rec.all_gaps),
            "same_process_gaps": stats_json(&rec.same_process_gaps),
        },
        "host_stalls": stats_json(&stall_ms(o)),
        "moves_by_cause": an.moves_by_cause,
        "false_failovers": an.false_failovers,
        "liveness": {
            "all_running_after_heal_ms": o.end.live_after_ms.map(round1),
            "budget_ms": o.end.budget.as_millis() as u64,
            "not_running": o.end.not_live,
        },
        "process_starts": w.nodes.iter().chain(w.agents.iter()).map(|p| (p.name.clone(), p.starts)).collect::<BTreeMap<_, _>>(),
        "unexpected_exits": w.unexpected,
        "violations": an.violations,
        "ok": an.violations.is_empty() && !o.chaos.interrupted,
    })
}

/// The observer's host stalls, in ms.
fn stall_ms(o: &Observed) -> Vec<f64> {
    o.end.stalls.iter().map(|(_, d)| ms(*d)).collect()
}

/// Prints the report's summary: what was done, what the observer saw, recovery, and the
/// verdict.
pub(crate) fn print(o: &Observed, an: &Analysis) {
    print_run(o, an);
    print_observer(o, an);
    print_recovery(o, an);
    print_verdict(o, an);
}

/// The run and its faults, and the overlaps.
fn print_run(o: &Observed, an: &Analysis) {
    let (w, so) = (o.world, o.so);
    println!();
    println!("===== chaos report =====");
    println!(
        "seed {}  lease {} ms  chaos {:.0} s of {:.0} s{}",
        w.a.seed,
        w.a.lease.as_millis(),
        o.chaos.secs,
        w.a.duration.as_secs_f64(),
        if o.chaos.interrupted {
            "  (INTERRUPTED)"
        } else {
            ""
        }
    );
    println!(
        "faults injected: {} ({})",
        o.chaos.faults.len(),
        by_kind(o)
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let journal_overlaps = an.journal_overlaps();
    println!(
        "overlaps: {} (journal {journal_overlaps}, /proc {} in {} samples)",
        journal_overlaps + so.overlaps.len(),
        so.overlaps.len(),
        so.samples
    );
}

/// The journal, the /proc sampler, the stubborn roles and the admin writes.
fn print_observer(o: &Observed, an: &Analysis) {
    let (js, so) = (o.js, o.so);
    println!(
        "journal: {} accepted writes, {} rejected stale writes ({} right after a freeze, {} in flight, {} unexplained)",
        js.accepted.len(),
        js.rejected.len(),
        an.rej_freeze,
        an.rej_flight,
        an.rej_other
    );
    println!(
        "/proc: {} role processes seen; {} wrote to the journal, {} of them (10+ lines) never seen in /proc",
        so.seen.len(),
        an.writer_pids,
        an.unsampled.len()
    );
    println!(
        "stubborn roles ({}; writer ignores SIGTERM): {} writers seen in /proc, {} outlived \
         their shell until SIGKILL (time frozen included): {}",
        o.roles.stubborn.join(","),
        so.stubborn.seen,
        so.stubborn.outlived_shell_ms.len(),
        stats_text(&so.stubborn.outlived_shell_ms)
    );
    println!(
        "after a thaw: old-epoch process next to the new one in {} samples; processes frozen past the lease stopped after thaw: {}",
        so.post_thaw_samples,
        stats_text(&so.stop_after_thaw_ms)
    );
    println!(
        "admin writes: {} attempted, {} acked, {} lost ({} unacked but applied); ack latency {}",
        o.writes.len(),
        an.admin.acked,
        an.admin.lost.len(),
        an.admin.unacked_present,
        stats_text(&an.admin.latency)
    );
}

/// Recovery per fault kind, interruptions by directory-only faults, duplicates, gaps
/// and stalls, moves.
fn print_recovery(o: &Observed, an: &Analysis) {
    let rec = &an.recovery;
    println!(
        "recovery (per fault and interrupted role, the longest time without a writer): {}",
        stats_text(&rec.outages)
    );
    for (k, v) in &rec.by_kind {
        let (m, i) = rec.outcome_by_kind.get(k).copied().unwrap_or_default();
        println!(
            "    {k:<17} {}; {m} moved, {i} restarted in place",
            stats_text(v)
        );
    }
    println!(
        "roles interrupted by directory-only faults (agent self-fenced) or dup-agent faults; \
         nothing should stop: {}",
        rec.dir_fault_stops.len()
    );
    println!(
        "{}; exited after {}",
        an.dups.summary(),
        stats_text(&an.dups.exit_times())
    );
    println!("write cadence (all gaps): {}", stats_text(&rec.all_gaps));
    println!(
        "gaps > {} ms within one process (stalls, not failovers): {}; observer host stalls > 100 ms: {}",
        OUTAGE_NS / 1_000_000,
        stats_text(&rec.same_process_gaps),
        stats_text(&stall_ms(o))
    );
    println!(
        "moves by cause: {}",
        an.moves_by_cause
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// False failovers, liveness, unexpected exits and the violations.
fn print_verdict(o: &Observed, an: &Analysis) {
    println!("false failovers: {}", an.false_failovers.len());
    let budget = o.end.budget.as_millis();
    match o.end.live_after_ms {
        Some(t) => println!(
            "liveness: every role running {t:.0} ms after the final heal (budget {budget} ms)"
        ),
        None => println!("liveness: NOT every role running within {budget} ms"),
    }
    println!("unexpected process exits: {}", o.world.unexpected.len());
    if an.violations.is_empty() {
        println!("violations: 0");
    } else {
        println!("VIOLATIONS: {}", an.violations.len());
        for v in &an.violations {
            println!("  - {v}");
        }
    }
}

/// Writes the report to `--report FILE` (saying so) and to the work directory.
pub(crate) fn write(w: &World, report: &Value) -> Result<()> {
    if let Some(path) = &w.a.report {
        fs::write(path, serde_json::to_string_pretty(report)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    let _ = fs::write(
        w.a.workdir.join("report.json"),
        serde_json::to_string_pretty(report)? + "\n",
    );
    Ok(())
}
