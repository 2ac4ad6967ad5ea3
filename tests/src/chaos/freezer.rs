//! Freezing a whole server: cgroup v1 freezer, cgroup v2 `cgroup.freeze`, or SIGSTOP.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::sys::{proc_stat, signal};
use crate::all_pids;

#[derive(Clone, Debug)]
pub(crate) enum Freezer {
    /// cgroup v1 freezer: one cgroup per server under this root.
    V1(PathBuf),
    /// cgroup v2: one cgroup per server under this root, `cgroup.freeze`.
    V2(PathBuf),
    /// No freezer: SIGSTOP the agent and every role process group it started.
    Sigstop,
}

impl Freezer {
    pub(crate) fn detect() -> Freezer {
        let v1 = PathBuf::from("/sys/fs/cgroup/freezer");
        if v1.join("cgroup.procs").exists() {
            return Freezer::V1(v1);
        }
        let v2 = PathBuf::from("/sys/fs/cgroup");
        if v2.join("cgroup.controllers").exists() {
            return Freezer::V2(v2);
        }
        Freezer::Sigstop
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Freezer::V1(_) => "cgroup v1 freezer",
            Freezer::V2(_) => "cgroup v2 freeze",
            Freezer::Sigstop => "SIGSTOP of agent and role process groups",
        }
    }

    pub(crate) fn dir(&self, prefix: &str, host: &str) -> Option<PathBuf> {
        match self {
            Freezer::V1(root) | Freezer::V2(root) => Some(root.join(format!("{prefix}-{host}"))),
            Freezer::Sigstop => None,
        }
    }

    /// Creates the server's cgroup; returns its `cgroup.procs`, which the agent joins
    /// between fork and exec.
    pub(crate) fn create(&self, prefix: &str, host: &str) -> Result<Option<PathBuf>> {
        let Some(dir) = self.dir(prefix, host) else {
            return Ok(None);
        };
        if !dir.exists() {
            fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        }
        Ok(Some(dir.join("cgroup.procs")))
    }

    pub(crate) fn freeze(&self, prefix: &str, host: &str, agent_pid: Option<u32>) -> Result<()> {
        match self {
            Freezer::V1(_) => {
                let d = self.dir(prefix, host).unwrap();
                fs::write(d.join("freezer.state"), "FROZEN")?;
                // Wait (bounded) until the kernel says every task is frozen.
                for _ in 0..100 {
                    if fs::read_to_string(d.join("freezer.state"))?.trim() == "FROZEN" {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(())
            }
            Freezer::V2(_) => {
                let d = self.dir(prefix, host).unwrap();
                fs::write(d.join("cgroup.freeze"), "1")?;
                Ok(())
            }
            Freezer::Sigstop => {
                let Some(agent) = agent_pid else {
                    return Ok(());
                };
                // The agent first (it can then start nothing new), then every role group.
                signal(agent as i32, libc::SIGSTOP);
                for pid in all_pids() {
                    if proc_stat(pid).is_some_and(|(_, ppid, _)| ppid == agent) {
                        signal(-(pid as i32), libc::SIGSTOP);
                    }
                }
                Ok(())
            }
        }
    }

    pub(crate) fn thaw(&self, prefix: &str, host: &str, agent_pid: Option<u32>) -> Result<()> {
        match self {
            Freezer::V1(_) => {
                let d = self.dir(prefix, host).unwrap();
                fs::write(d.join("freezer.state"), "THAWED")?;
                Ok(())
            }
            Freezer::V2(_) => {
                let d = self.dir(prefix, host).unwrap();
                fs::write(d.join("cgroup.freeze"), "0")?;
                Ok(())
            }
            Freezer::Sigstop => {
                let Some(agent) = agent_pid else {
                    return Ok(());
                };
                for pid in all_pids() {
                    if proc_stat(pid).is_some_and(|(_, ppid, _)| ppid == agent) {
                        signal(-(pid as i32), libc::SIGCONT);
                    }
                }
                signal(agent as i32, libc::SIGCONT);
                Ok(())
            }
        }
    }

    /// Whether the server's cgroup is frozen (or freezing). Always false for SIGSTOP
    /// (the sampler sees state `T` instead).
    pub(crate) fn is_frozen(&self, prefix: &str, host: &str) -> bool {
        match self {
            Freezer::V1(_) => {
                fs::read_to_string(self.dir(prefix, host).unwrap().join("freezer.state"))
                    .is_ok_and(|s| s.trim() != "THAWED")
            }
            Freezer::V2(_) => {
                fs::read_to_string(self.dir(prefix, host).unwrap().join("cgroup.freeze"))
                    .is_ok_and(|s| s.trim() == "1")
            }
            Freezer::Sigstop => false,
        }
    }
}
