//! The role process: `chaos role-writer`.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::WRITE_INTERVAL;
use crate::dup_agent::{DUP_ENV, DUP_LINE_PREFIX};
use crate::now_ns;
use crate::stubborn;

/// `chaos role-writer --socket PATH [--ignore-term]`: what every role runs. Sends one
/// journal line every 20 ms until killed; it has no signal handler, so the wrapper's
/// SIGTERM ends it at once, unless `--ignore-term` (a stubborn role's worker) makes it
/// ignore SIGTERM, when only SIGKILL does.
pub(crate) fn role_writer(args: &[String]) -> i32 {
    let mut socket = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--socket" {
            socket = it.next().cloned();
        } else if a == stubborn::IGNORE_TERM_FLAG {
            // SAFETY: plain syscall, before any other thread exists.
            unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
            }
        }
    }
    let Some(socket) = socket else {
        eprintln!("role-writer: --socket is required");
        return 2;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let (role, epoch, server) = (var("BATON_ROLE"), var("BATON_EPOCH"), var("BATON_SERVER"));
    if role.is_empty() || epoch.parse::<u64>().is_err() || server.is_empty() {
        eprintln!("role-writer: BATON_ROLE, BATON_EPOCH and BATON_SERVER must be set");
        return 2;
    }
    let pid = std::process::id();
    // A duplicate agent's role process says so in every line.
    let mark = if std::env::var_os(DUP_ENV).is_some() {
        DUP_LINE_PREFIX
    } else {
        ""
    };
    let mut conn: Option<UnixStream> = None;
    let mut failing_since: Option<Instant> = None;
    loop {
        let line = format!("{mark}{} {role} {epoch} {server} {pid}\n", now_ns());
        if conn.is_none() {
            conn = UnixStream::connect(&socket).ok();
            if let Some(c) = &conn {
                let _ = c.set_write_timeout(Some(Duration::from_millis(500)));
            }
        }
        let sent = conn
            .as_mut()
            .is_some_and(|c| c.write_all(line.as_bytes()).is_ok());
        if sent {
            failing_since = None;
        } else {
            conn = None;
            // The observer is gone (the run ended): do not linger.
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(30) {
                return 0;
            }
        }
        std::thread::sleep(WRITE_INTERVAL);
    }
}
