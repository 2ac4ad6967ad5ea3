//! `baton demo`: the first thing a user runs. It must show the cluster and the roles, exit
//! 0 when asked to, and leave no process behind.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Pids of processes whose command line mentions `marker` (the demo's data dir).
fn pids_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmd).contains(marker)
        {
            pids.push(pid);
        }
    }
    pids
}

/// The demos of this file take the default ports 7001-7003 when free: one at a time.
static ONE_DEMO: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run the demo with `args` and a data dir of its own; return (exit ok, stdout, stderr).
fn run_demo(dir: &Path, args: &[&str], limit: Duration) -> (bool, String, String) {
    let _one = ONE_DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("demo")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("baton demo {args:?} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    (
        status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// After the demo exited, none of its children may remain (a short grace for the kernel
/// to reap what the demo already killed).
fn assert_nothing_left(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = pids_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn demo_runs_for_its_duration_shows_the_cluster_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let (ok, out, err) = run_demo(&dir, &["--duration", "20s"], Duration::from_secs(90));
    assert!(ok, "demo failed\nstdout:\n{out}\nstderr:\n{err}");
    // The nodes, with a leader marked.
    assert!(out.contains("DIRECTORY NODES"), "{out}");
    assert!(out.contains(" leader "), "no leader shown:\n{out}");
    // The roles, each with an active server (marked with `*` without a terminal).
    for role in ["camera-gateway", "sensor-bridge", "alarm-plugin"] {
        let line = out
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with(role))
            .unwrap_or_else(|| panic!("{role} not shown:\n{out}"));
        assert!(line.contains("running"), "{role} not running: {line}");
        assert!(
            line.contains("*srv-"),
            "{role} has no active server marked: {line}"
        );
    }
    // The commands to try, and every pid.
    assert!(out.contains("kill -9"), "{out}");
    assert!(out.contains("pid"), "{out}");
    assert_nothing_left(&dir.display().to_string());
}

#[test]
fn demo_tour_measures_a_failover_and_moves_nothing_on_a_leader_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tour");
    let (ok, out, err) = run_demo(&dir, &["--tour"], Duration::from_secs(180));
    assert!(ok, "tour failed\nstdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("SUMMARY"), "{out}");
    let failover = out
        .lines()
        .find(|l| l.contains("agent kill -9"))
        .unwrap_or_else(|| panic!("no failover line:\n{out}"));
    assert!(failover.contains(" s (lease"), "{failover}");
    assert!(out.contains("roles moved: 0"), "{out}");
    assert_nothing_left(&dir.display().to_string());
}
