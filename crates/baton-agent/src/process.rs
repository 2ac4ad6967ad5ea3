//! Role processes: how they are started, how they are stopped, and why they cannot
//! outlive their agent.
//!
//! A role runs as `sh -c COMMAND` under a small wrapper, `baton role-exec`, which is the
//! agent's direct child:
//!
//! ```text
//! baton agent ── baton role-exec (own process group, PDEATHSIG=SIGUSR2) ── sh -c COMMAND ── ...
//! ```
//!
//! - The wrapper leads a new process group; the shell and everything it starts inherit it,
//!   so one `kill(-pgid)` reaches the whole role, however deep its process tree.
//! - The wrapper asks the kernel for SIGUSR2 when its parent (the agent) dies
//!   (`PR_SET_PDEATHSIG`), and checks its parent after setting it (the agent may have
//!   died in between). On that signal it sends SIGTERM to the group, waits the grace,
//!   then SIGKILLs the group. So a role dies with its agent, even under `kill -9` of the
//!   agent, within the grace, which the agent sets no longer than its fencing stop bound.
//! - The agent stops a role itself by signalling the group: SIGTERM, then SIGKILL at its
//!   own deadline (a long grace for a graceful handover, a short one when fencing). The
//!   wrapper ignores SIGTERM (it is meant for the role) and exits when the shell does.
//! - The wrapper is also the fence's dead-man switch. It knows the agent's current fence
//!   time (when the agent must start stopping every role, on CLOCK_BOOTTIME): the first
//!   one in `BATON_FENCE_AT_MS`, and every extension as an 8-byte little-endian record on
//!   a pipe (fd 3) that the agent writes after each acknowledged renewal. If that time
//!   passes, the wrapper stops the role by itself, exactly as the agent would. So an agent
//!   that is frozen (SIGSTOP, a hung runtime, a debugger) cannot keep its roles past the
//!   lease: self-fencing does not depend on the agent being scheduled.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use crate::clock::boot_ms;
use crate::tree::{RoleCgroup, kill_remaining, remaining};

/// Environment variable naming the agent's pid, checked by the wrapper after it armed
/// its parent-death signal.
pub const AGENT_PID_ENV: &str = "BATON_AGENT_PID";
/// Environment variable with the fence time (CLOCK_BOOTTIME ms) at spawn.
pub const FENCE_AT_ENV: &str = "BATON_FENCE_AT_MS";
/// The file descriptor on which the wrapper reads fence extensions.
pub const FENCE_FD: i32 = 3;
/// The wrapper's exit code when it stopped the role because the fence time passed.
pub const FENCED_EXIT: i32 = 86;
/// Environment variable naming the role's cgroup directory, where the agent made one
/// (the wrapper has joined it before it runs; it lists the role's processes there).
pub const CGROUP_ENV: &str = "BATON_CGROUP_DIR";

/// What a role process is told about itself.
#[derive(Clone, Debug)]
pub struct RoleEnv {
    pub role: String,
    pub epoch: u64,
    pub server: String,
    pub database: Option<String>,
}

/// The two SIGTERM-to-SIGKILL graces a wrapper knows.
#[derive(Clone, Copy, Debug)]
pub struct Grace {
    /// When the agent dies or the fence time passes (inside the fence's stop bound).
    pub fence: Duration,
    /// When the role's shell exits while the agent lives (what is left of the role gets
    /// the handover grace, as the agent gives it on a graceful stop).
    pub handover: Duration,
}

/// Spawn `command` for a role under the wrapper `exe role-exec`. Returns the child; its
/// pid is also its process group id.
pub fn spawn_role(
    exe: &Path,
    command: &str,
    env: &RoleEnv,
    grace: Grace,
    fence_at_ms: u64,
    cgroup: Option<&RoleCgroup>,
) -> std::io::Result<(tokio::process::Child, FenceWriter)> {
    // Prepared before the fork: nothing may allocate between fork and exec.
    let join = cgroup
        .map(|cg| std::ffi::CString::new(cg.procs_file().as_os_str().as_encoded_bytes()))
        .transpose()
        .map_err(std::io::Error::other)?;
    let mut fds = [0i32; 2];
    // SAFETY: plain syscall; both ends close on exec (fd 3 is made by dup2, which clears
    // the flag for the child only).
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    let writer = FenceWriter { fd: write_fd };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("role-exec")
        .arg("--grace-ms")
        .arg(grace.fence.as_millis().to_string())
        .arg("--handover-grace-ms")
        .arg(grace.handover.as_millis().to_string())
        .arg("--")
        .arg(command)
        .env("BATON_ROLE", &env.role)
        .env("BATON_EPOCH", env.epoch.to_string())
        .env("BATON_SERVER", &env.server)
        .env("BATON_DATABASE", env.database.clone().unwrap_or_default())
        .env(AGENT_PID_ENV, std::process::id().to_string())
        .env(FENCE_AT_ENV, fence_at_ms.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(false)
        .process_group(0);
    if let Some(cg) = cgroup {
        cmd.env(CGROUP_ENV, cg.dir());
    }
    // SAFETY: only async-signal-safe calls (prctl, open, write, close, dup2) between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR2) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Join the role's cgroup before anything of the role exists, so every
            // process it ever starts is born inside it.
            if let Some(path) = &join {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::dup2(read_fd, FENCE_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    // SAFETY: our copy of the read end; the child has its own (fd 3).
    unsafe {
        libc::close(read_fd);
    }
    Ok((child?, writer))
}

/// The agent's end of a role's fence pipe. Dropping it closes the pipe (the wrapper then
/// keeps the last fence time it read).
#[derive(Debug)]
pub struct FenceWriter {
    fd: i32,
}

impl FenceWriter {
    /// Tell the wrapper the new fence time. Never blocks: if the pipe is full (the
    /// wrapper is not reading, so it is frozen too), the record is dropped, which only
    /// makes the wrapper fence earlier.
    pub fn extend(&self, fence_at_ms: u64) {
        let buf = fence_at_ms.to_le_bytes();
        // SAFETY: writing 8 bytes from a valid buffer to our own fd. Writes of at most
        // PIPE_BUF bytes are atomic, so records never interleave.
        unsafe {
            libc::write(self.fd, buf.as_ptr().cast(), buf.len());
        }
    }
}

impl Drop for FenceWriter {
    fn drop(&mut self) {
        // SAFETY: closing our own fd once.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// The wrapper's end: the latest fence time read from fd 3.
struct FenceReader {
    fence_at_ms: u64,
    /// False when no pipe was given (a wrapper started by hand): no fencing then.
    enabled: bool,
}

impl FenceReader {
    fn open() -> FenceReader {
        let fence_at_ms = std::env::var(FENCE_AT_ENV)
            .ok()
            .and_then(|v| v.parse().ok());
        // SAFETY: inspecting and flagging fd 3; it must not leak into the role.
        let valid = unsafe { libc::fcntl(FENCE_FD, libc::F_GETFD) } >= 0;
        if valid {
            unsafe {
                libc::fcntl(FENCE_FD, libc::F_SETFD, libc::FD_CLOEXEC);
                let fl = libc::fcntl(FENCE_FD, libc::F_GETFL);
                libc::fcntl(FENCE_FD, libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
        }
        FenceReader {
            fence_at_ms: fence_at_ms.unwrap_or(u64::MAX),
            enabled: valid && fence_at_ms.is_some(),
        }
    }

    /// Read every pending record; keep the latest.
    fn poll(&mut self) {
        if !self.enabled {
            return;
        }
        let mut buf = [0u8; 8 * 64];
        loop {
            // SAFETY: reading into a valid buffer from our own non-blocking fd.
            let n = unsafe { libc::read(FENCE_FD, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return; // EAGAIN (nothing new) or EOF (agent closed it: keep the last)
            }
            let n = n as usize - n as usize % 8;
            if n >= 8 {
                let last: [u8; 8] = buf[n - 8..n].try_into().expect("8 bytes");
                self.fence_at_ms = u64::from_le_bytes(last);
            }
        }
    }

    fn expired(&mut self) -> bool {
        self.poll();
        self.enabled && boot_ms() >= self.fence_at_ms
    }
}

/// Send `signal` to the process group led by `pgid`. Errors (already gone) are ignored.
pub fn signal_group(pgid: u32, signal: i32) {
    if pgid > 1 {
        // SAFETY: plain syscall; a negative pid addresses the process group.
        unsafe {
            libc::kill(-(pgid as i32), signal);
        }
    }
}

/// Send `signal` to one process.
pub fn signal_pid(pid: u32, signal: i32) {
    if pid > 1 {
        // SAFETY: plain syscall.
        unsafe {
            libc::kill(pid as i32, signal);
        }
    }
}

/// The `baton role-exec` wrapper (see the module essay). Runs `sh -c command` in this
/// process's group and returns the exit code to exit with, once *nothing* of the role is
/// left: the shell exiting is not enough while a worker it started lives on (one that
/// ignores SIGTERM, say). Synchronous on purpose: it runs before any runtime exists and
/// must stay tiny.
///
/// Deadlines, each a bound on how long anything of the role may live (boot ms):
/// - the shell exited (on its own, or on the agent's SIGTERM): the rest of the group gets
///   SIGTERM, and SIGKILL `handover_grace` later (the agent, while it lives, escalates on
///   its own schedule too);
/// - the agent died: SIGTERM now, SIGKILL `grace` later;
/// - the fence time passed: SIGTERM, and SIGKILL `grace` after the *fence time*, not
///   after the moment it was noticed (a thawed freeze or a resume from suspend notices it
///   late, and then kills at once).
pub fn role_exec(command: &str, grace: Duration, handover_grace: Duration) -> i32 {
    // Block the signals we wait for, so they queue for sigtimedwait instead of killing us.
    // SAFETY: plain signal-mask manipulation on the only thread of this process.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // The agent may have died before our PDEATHSIG was armed (it was armed in pre_exec,
    // before exec): if our parent is no longer the agent, stop at once.
    let agent_pid: Option<i32> = std::env::var(AGENT_PID_ENV)
        .ok()
        .and_then(|p| p.parse().ok());
    let orphaned = || agent_pid.is_some_and(|p| unsafe { libc::getppid() } != p);
    let cgroup = std::env::var_os(CGROUP_ENV).map(|d| RoleCgroup::at(d.into()));
    let mut fence = FenceReader::open();
    if orphaned() {
        return 143;
    }
    if fence.expired() {
        return FENCED_EXIT;
    }
    let mut child = std::process::Command::new("/bin/sh");
    child.arg("-c").arg(command);
    child.env_remove(AGENT_PID_ENV);
    child.env_remove(CGROUP_ENV);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        child.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            // If the wrapper is SIGKILLed, the shell dies with it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = match child.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("baton role-exec: cannot start /bin/sh: {e}");
            return 127;
        }
    };
    let me = std::process::id();
    let child_pid = child.id() as i32;
    let pgid = unsafe { libc::getpgrp() } as u32;
    let grace_ms = grace.as_millis() as u64;
    // The shell's exit code, once reaped.
    let mut shell_code: Option<i32> = None;
    // When the rest of the role gets SIGKILL; `None` while nothing asked it to stop.
    let mut kill_at: Option<u64> = None;
    let mut fenced = false;
    let mut agent_gone = false;
    loop {
        let timeout = libc::timespec {
            tv_sec: 0,
            // 10 ms: the fence check's resolution, well inside the stop bound's margin.
            tv_nsec: 10_000_000,
        };
        // SAFETY: `set` is initialised; a null info pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        let now = boot_ms();
        if shell_code.is_none() {
            let mut status = 0;
            // SAFETY: waiting on our own child.
            let r = unsafe { libc::waitpid(child_pid, &mut status, libc::WNOHANG) };
            if r == child_pid {
                shell_code = Some(if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                });
            }
        }
        // SIGTERM/SIGINT are the agent's (or an operator's) signal to the whole group: the
        // role handles them, and the agent escalates. Only the agent's death is ours, and
        // the fence time passing without an extension (the agent is frozen).
        let mut deadlines = Vec::new();
        if let Some(t) = kill_at {
            deadlines.push(t);
        }
        if shell_code.is_some() {
            deadlines.push(now + handover_grace.as_millis() as u64);
        }
        if !agent_gone && (sig == libc::SIGUSR2 || orphaned()) {
            agent_gone = true;
            deadlines.push(now + grace_ms);
        }
        if !fenced && fence.expired() {
            fenced = true;
            deadlines.push(fence.fence_at_ms.saturating_add(grace_ms));
        }
        if kill_at.is_none() && !deadlines.is_empty() {
            // First reason to stop: SIGTERM to the whole role (ours is blocked).
            signal_group(pgid, libc::SIGTERM);
            if let Some(cg) = &cgroup {
                for pid in cg.members(me) {
                    signal_pid(pid, libc::SIGTERM);
                }
            }
        }
        kill_at = deadlines.into_iter().min();
        let left = remaining(pgid, cgroup.as_ref(), me);
        if shell_code.is_some() && left.is_empty() {
            return if fenced {
                FENCED_EXIT
            } else {
                shell_code.unwrap_or(0)
            };
        }
        if kill_at.is_some_and(|t| now >= t) {
            // Everything of the role but the wrapper, which must outlive it to say so.
            kill_remaining(pgid, cgroup.as_ref(), me);
        }
    }
}
