//! Counting one process's fsync-family system calls over a window, with `perf stat` on the
//! kernel's syscall tracepoints (`syscalls:sys_enter_fsync`, `syscalls:sys_enter_fdatasync`).
//!
//! Why perf and not a counter inside the store: it counts what the process really asked of
//! the kernel (sled's own background flushes included), and the same way for etcd. Where
//! `perf` is missing or the tracepoints are not readable (`perf_event_paranoid`, no
//! tracefs), [`FsyncCounter::start`] returns `None` and the row is reported without a value.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tracepoints counted: every call that makes file data durable.
const EVENTS: &str = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync";
/// How long `perf stat` is given to attach before the window starts. perf prints nothing
/// when it is attached, so this is a bound, not a condition; a late attach would only
/// undercount, and nothing writes before the window starts.
const ATTACH_WAIT: Duration = Duration::from_millis(500);
/// How long `perf stat` may take to write its counts after SIGINT.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// A running `perf stat` attached to one process.
pub struct FsyncCounter {
    /// The `perf stat` process.
    child: Child,
    /// Its CSV output file.
    out: PathBuf,
}

impl FsyncCounter {
    /// Attach to `pid`; `out` receives perf's CSV. `None` (with a line on stderr) when perf
    /// cannot count here.
    pub async fn start(pid: u32, out: &Path) -> Option<FsyncCounter> {
        let child = Command::new("perf")
            .args([
                "stat",
                "-x",
                ",",
                "-e",
                EVENTS,
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                eprintln!("  (no fsync count: cannot run perf: {e})");
                return None;
            }
        };
        tokio::time::sleep(ATTACH_WAIT).await;
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "  (no fsync count: perf stat exited at once ({status}); see {})",
                out.display()
            );
            return None;
        }
        Some(FsyncCounter {
            child,
            out: out.to_path_buf(),
        })
    }

    /// Stop perf (SIGINT, as Ctrl-C) and return the calls it counted.
    pub async fn stop(mut self) -> Option<u64> {
        // SAFETY: plain syscall on a child we started and have not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    eprintln!("  (no fsync count: perf stat did not stop)");
                    return None;
                }
            }
        }
        let text = std::fs::read_to_string(&self.out).ok()?;
        let n = parse_counts(&text);
        if n.is_none() {
            eprintln!(
                "  (no fsync count: perf wrote no counts; see {})",
                self.out.display()
            );
        }
        n
    }
}

/// Sum the counts of `perf stat -x ,` output: one line per event, the count first;
/// `<not counted>` / `<not supported>` make the whole count unknown.
pub fn parse_counts(text: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut seen = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split(',');
        let count = fields.next()?;
        let event = fields.nth(1).unwrap_or("");
        if !event.starts_with("syscalls:") {
            continue;
        }
        total += count.trim().parse::<u64>().ok()?;
        seen += 1;
    }
    (seen > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::parse_counts;

    #[test]
    fn perf_csv_is_summed() {
        let text = "# started on Mon Dec  7 03:00:00 2026\n\n\
                    1203,,syscalls:sys_enter_fsync,2000000000,100.00,,\n\
                    410,,syscalls:sys_enter_fdatasync,2000000000,100.00,,\n";
        assert_eq!(parse_counts(text), Some(1613));
    }

    #[test]
    fn unsupported_or_empty_is_unknown() {
        assert_eq!(parse_counts(""), None);
        assert_eq!(
            parse_counts("<not supported>,,syscalls:sys_enter_fsync,0,100.00,,\n"),
            None
        );
    }
}
