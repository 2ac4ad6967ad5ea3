//! # What is left of a role
//!
//! A role is *stopped* only when no process of it is left: not when its main process
//! exits, not when its wrapper exits. A role's processes are found in two ways:
//!
//! - **Its process group.** The wrapper (`baton role-exec`) leads a group of its own, and
//!   the shell and everything it starts inherit it, double forks included. A process that
//!   calls `setsid` or `setpgid` leaves the group: the group alone cannot see it.
//! - **Its cgroup (v2), where the agent can make one.** The wrapper is moved into a
//!   cgroup of its own before it runs anything; every descendant stays in it whatever it
//!   does (setsid, double fork, a daemon), `cgroup.kill` kills all of them at once, and an
//!   empty `cgroup.procs` proves that nothing of the role is left. The agent makes one
//!   per role process under `<its own cgroup>/baton-<server>-<pid>/` when the cgroup v2
//!   hierarchy is mounted and writable; otherwise it says so at start and relies on the
//!   process group.
//!
//! Zombies are not counted: they run nothing, and whoever inherited them reaps them.

use std::path::{Path, PathBuf};

/// One line of `/proc/PID/stat` that matters here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) is in parentheses and
/// may itself hold spaces and parentheses, so fields are counted after the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some(ProcStat { state, ppid, pgrp })
}

fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` is a process that can still run (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Live processes of process group `pgid`, except `except` (the caller itself).
pub fn group_members(pgid: u32, except: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != except)
        .filter(|pid| {
            stat(*pid).is_some_and(|s| s.pgrp == pgid && s.state != 'Z' && s.state != 'X')
        })
        .collect()
}

/// A role process's cgroup (see the module essay).
#[derive(Clone, Debug)]
pub struct RoleCgroup {
    dir: PathBuf,
}

impl RoleCgroup {
    /// The cgroup at `dir` (made by [`CgroupBase::make`], or named to the wrapper).
    pub fn at(dir: PathBuf) -> RoleCgroup {
        RoleCgroup { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a process writes `0` to in order to join.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Live processes in the cgroup, except `except`.
    pub fn members(&self, except: u32) -> Vec<u32> {
        std::fs::read_to_string(self.procs_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .filter(|pid| *pid != except && alive(*pid))
            .collect()
    }

    /// SIGKILL to every process in the cgroup at once (`cgroup.kill`, Linux 5.14+).
    /// Returns false where the kernel has no `cgroup.kill`; the caller then kills the
    /// members one by one.
    pub fn kill_all(&self) -> bool {
        std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok()
    }

    /// Removes the (empty) cgroup. Fails harmlessly while processes remain.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Where this agent makes its roles' cgroups: `<own cgroup v2>/baton-<server>-<pid>`.
#[derive(Clone, Debug)]
pub struct CgroupBase {
    dir: PathBuf,
    next: u64,
}

impl CgroupBase {
    /// Makes the base cgroup, or says why it cannot.
    pub fn make(server: &str) -> Result<CgroupBase, String> {
        let mount = cgroup2_mount().ok_or("no cgroup v2 hierarchy is mounted")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
            })
            .ok_or("this process is in no cgroup v2")?;
        let parent = mount.join(own.trim_start_matches('/'));
        clean_stale(&parent, server);
        let dir = parent.join(format!("baton-{server}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        if !dir.join("cgroup.procs").exists() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!("{} is not a cgroup", dir.display()));
        }
        Ok(CgroupBase { dir, next: 0 })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty cgroup for one role process. Names never repeat within the agent's
    /// life, so a cgroup still being emptied is never reused.
    pub fn make_role(&mut self, role: &str, epoch: u64) -> Result<RoleCgroup, String> {
        self.next += 1;
        let dir = self.dir.join(format!("{role}-e{epoch}-{}", self.next));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        Ok(RoleCgroup { dir })
    }

    /// Removes the base (and any empty role cgroup left in it): on a clean exit.
    pub fn remove(&self) {
        remove_tree(&self.dir);
    }
}

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(left.split_whitespace().nth(4)?))
    })
}

/// Removes empty cgroups of earlier agents of this server whose process is gone (an
/// agent killed with SIGKILL leaves its base behind). A cgroup that still holds
/// processes is kept: removing it is impossible anyway, and they are not this agent's.
fn clean_stale(parent: &Path, server: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!("baton-{server}-");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !alive(pid) {
            remove_tree(&e.path());
        }
    }
}

/// Removes a cgroup and its empty children (cgroups are removed with rmdir, leaves first).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Everything of a role that is still alive: its group's members and its cgroup's.
pub fn remaining(pgid: u32, cgroup: Option<&RoleCgroup>, except: u32) -> Vec<u32> {
    let mut left = group_members(pgid, except);
    if let Some(cg) = cgroup {
        for pid in cg.members(except) {
            if !left.contains(&pid) {
                left.push(pid);
            }
        }
    }
    left
}

/// SIGKILL to everything of a role: the cgroup at once where there is one, the group,
/// and each remaining process by pid (except `except`, the caller).
pub fn kill_remaining(pgid: u32, cgroup: Option<&RoleCgroup>, except: u32) {
    for pid in remaining(pgid, cgroup, except) {
        crate::process::signal_pid(pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_last_parenthesis() {
        let s = parse_stat("1234 (we) ird (name)) S 77 1200 1200 0 -1 4194560").unwrap();
        assert_eq!(
            s,
            ProcStat {
                state: 'S',
                ppid: 77,
                pgrp: 1200
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) Z"), None);
    }

    #[test]
    fn this_process_is_found_in_its_own_group() {
        let me = std::process::id();
        let pgrp = unsafe { libc::getpgrp() } as u32;
        assert!(group_members(pgrp, 0).contains(&me));
        assert!(!group_members(pgrp, me).contains(&me));
    }
}
