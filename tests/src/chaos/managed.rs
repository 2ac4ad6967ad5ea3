//! Processes in namespaces (and cgroups), restartable with the same arguments.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use super::sys::signal;
use crate::{strip_ansi, tail};

/// A `baton` process in a namespace (and maybe a cgroup), restartable with the same
/// arguments. Leads its own process group; dies with the thread that started it
/// (PDEATHSIG), which is always the main thread.
pub(crate) struct Managed {
    pub(crate) name: String,
    pub(crate) ns: String,
    pub(crate) args: Vec<String>,
    pub(crate) log: PathBuf,
    pub(crate) cgroup_procs: Option<PathBuf>,
    pub(crate) child: Option<Child>,
    pub(crate) starts: u32,
    /// Extra environment.
    pub(crate) env: Vec<(String, String)>,
}

pub(crate) fn fmt_decimal(mut v: u32, buf: &mut [u8; 12]) -> usize {
    let mut tmp = [0u8; 12];
    let mut n = 0;
    loop {
        tmp[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        buf[i] = tmp[n - 1 - i];
    }
    n
}

impl Managed {
    pub(crate) fn start(&mut self, bin: &Path) -> Result<()> {
        assert!(self.child.is_none(), "{} is running", self.name);
        let nsfile = File::open(format!("/run/netns/{}", self.ns))
            .with_context(|| format!("open namespace {}", self.ns))?;
        let nsfd = nsfile.as_raw_fd();
        let cg = match &self.cgroup_procs {
            Some(p) => Some(CString::new(p.as_os_str().as_bytes())?),
            None => None,
        };
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(bin);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env_remove("BATON_DIRECTORY")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .process_group(0);
        // SAFETY: only async-signal-safe calls (setns, prctl, getpid, open, write, close)
        // between fork and exec; `cg` and `nsfd` were prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(nsfd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(cg) = &cg {
                    let fd = libc::open(cg.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let mut buf = [0u8; 12];
                    let n = fmt_decimal(libc::getpid() as u32, &mut buf);
                    let w = libc::write(fd, buf.as_ptr().cast(), n);
                    libc::close(fd);
                    if w < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", self.name))?;
        drop(nsfile);
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL (the process only: an agent's role processes lead groups of their own and
    /// must find out from their wrapper), and reap.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id() as i32, libc::SIGCONT);
            signal(c.id() as i32, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// If it exited by itself: how.
    pub(crate) fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => {
                self.child = None;
                Some(st.to_string())
            }
            _ => None,
        }
    }

    pub(crate) fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
            .lines()
            .map(|l| format!("    {}", strip_ansi(l)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
