//! Child processes in their own process groups, free ports, /proc readings.
//!
//! Every process the driver starts here (etcd members, agents) leads its own process
//! group and is remembered in a registry; [`kill_all`] (called on exit, on a panic and on
//! SIGINT/SIGTERM) SIGKILLs every group still alive, so nothing outlives the driver. The
//! Baton directory nodes are started by the test harness's launcher
//! ([`baton_tests::launch`]) instead, and die with the driver by `PR_SET_PDEATHSIG`.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// SIGKILL every process group the driver started and has not reaped.
pub fn kill_all() {
    let groups: Vec<i32> = GROUPS
        .lock()
        .map(|g| g.iter().copied().collect())
        .unwrap_or_default();
    for g in groups {
        // SAFETY: plain syscall; a negative pid addresses the process group.
        unsafe {
            libc::kill(-g, libc::SIGKILL);
        }
    }
}

/// A free loopback TCP port (the test harness's: never the same one twice in a process).
pub use baton_tests::free_port;

/// A started process: its program and arguments (to start it again), its log file.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    /// The group id it runs with, where one was given ([`Proc::spawn_as`]).
    gid: Option<u32>,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(
        name: &str,
        program: &Path,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
    ) -> Result<Proc> {
        Proc::spawn_as(name, program, args, envs, log, None)
    }

    /// [`Proc::spawn`] with the group id `gid`, where one is given (the user stays the
    /// driver's): a workload cuts the process off by its group (`crate::cut`).
    pub fn spawn_as(
        name: &str,
        program: &Path,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
        gid: Option<u32>,
    ) -> Result<Proc> {
        let mut p = Proc {
            name: name.to_string(),
            program: program.to_path_buf(),
            args,
            envs,
            log,
            gid,
            child: None,
        };
        p.start()?;
        Ok(p)
    }

    /// Start (again), appending to the same log.
    pub fn start(&mut self) -> Result<()> {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(g) = self.gid {
            std::os::unix::process::CommandExt::gid(&mut cmd, g);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.program.display()))?;
        GROUPS.lock().expect("groups").insert(child.id() as i32);
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL the process itself (not its group: children that must die with it do so
    /// by their own means, as a Baton role dies with its agent), and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain syscall.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
            let _ = c.wait();
            self.forget_group_later(c.id() as i32);
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL the group.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            // SAFETY: plain syscall.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // SAFETY: plain syscall.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = c.wait();
            GROUPS.lock().expect("groups").remove(&pid);
        }
    }

    /// The group may still hold children for a moment (a role process finishing its
    /// shutdown); keep it registered a little, then forget it.
    fn forget_group_later(&self, pgid: i32) {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(10));
            // SAFETY: plain syscall.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            GROUPS.lock().expect("groups").remove(&pgid);
        });
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            // SAFETY: plain syscall.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
            let _ = c.wait();
            GROUPS.lock().expect("groups").remove(&pid);
        }
    }
}

/// VmRSS of a process, in kB.
pub fn rss_kb(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// Bytes of all files under `dir` (apparent size, as `du -sb`).
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// `uptime`'s load averages and the number of CPUs.
pub fn machine() -> serde_json::Value {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")
                .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
        })
        .unwrap_or_default();
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "mem_total_kb": mem_kb.parse::<u64>().unwrap_or(0),
        "loadavg": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}
