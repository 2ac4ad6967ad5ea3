//! `chaos cleanup`: removes everything a run with a prefix may have left.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use super::args::valid_prefix;
use super::sys::{sh, signal};

pub(crate) fn cleanup_cmd(args: &[String]) -> Result<()> {
    let mut prefix = None;
    let mut workdir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--prefix" => prefix = it.next().cloned(),
            "--workdir" => workdir = it.next().map(PathBuf::from),
            other => bail!("unknown argument {other:?}"),
        }
    }
    let prefix = prefix.ok_or_else(|| anyhow!("--prefix is required"))?;
    if !valid_prefix(&prefix) {
        bail!("refusing prefix {prefix:?}");
    }
    cleanup(&prefix, workdir.as_deref());
    Ok(())
}

/// Removes everything of the run `prefix`: its cgroups (thawed, emptied, removed), every
/// process that names its work directory or lives in one of its namespaces, the
/// namespaces, and the root namespace's link. Only ever touches names with the prefix.
pub(crate) fn cleanup(prefix: &str, workdir: Option<&Path>) {
    if !valid_prefix(prefix) {
        return;
    }
    let tag = format!("{prefix}-");
    // Cgroups.
    for root in ["/sys/fs/cgroup/freezer", "/sys/fs/cgroup"] {
        let Ok(dir) = fs::read_dir(root) else {
            continue;
        };
        for e in dir.flatten() {
            if !e.file_name().to_string_lossy().starts_with(&tag) {
                continue;
            }
            let d = e.path();
            let _ = fs::write(d.join("freezer.state"), "THAWED");
            let _ = fs::write(d.join("cgroup.freeze"), "0");
            for _ in 0..100 {
                let pids: Vec<i32> = fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
                if pids.is_empty() {
                    break;
                }
                for p in pids {
                    signal(p, libc::SIGCONT);
                    signal(p, libc::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = fs::remove_dir(&d);
        }
    }
    // Processes naming the work directory (nodes, agents, role processes).
    if let Some(w) = workdir {
        let marker = w.display().to_string();
        if marker.len() > 8 {
            for p in crate::pids_with_marker(&marker) {
                signal(p as i32, libc::SIGCONT);
            }
            crate::kill_marked(&marker);
        }
    }
    // Namespaces (and anything still inside them), then the root link.
    let list = sh("ip", &["netns", "list"]).unwrap_or_default();
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !name.starts_with(&tag) {
            continue;
        }
        if let Ok(pids) = sh("ip", &["netns", "pids", name]) {
            for p in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                signal(p, libc::SIGCONT);
                signal(p, libc::SIGKILL);
            }
        }
        let _ = sh("ip", &["netns", "del", name]);
    }
    let _ = sh("ip", &["link", "del", &format!("{prefix}-h")]);
}
