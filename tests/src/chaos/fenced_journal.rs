//! The fenced journal: the outside world's database, which rejects a write whose epoch
//! is smaller than one it has accepted for that role.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::dup_agent::DUP_LINE_PREFIX;
use crate::{journal, now_ns};

#[derive(Clone, Debug)]
pub(crate) struct Write {
    /// The role process's own time stamp.
    pub(crate) t_ns: u64,
    /// When the journal received it.
    pub(crate) recv_ns: u64,
    pub(crate) role: String,
    pub(crate) epoch: u64,
    pub(crate) server: String,
    pub(crate) pid: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct Rejected {
    pub(crate) w: Write,
    /// The highest epoch accepted for the role when it arrived.
    pub(crate) max_epoch: u64,
}

#[derive(Default)]
pub(crate) struct JournalState {
    pub(crate) max_epoch: HashMap<String, u64>,
    pub(crate) accepted: Vec<Write>,
    pub(crate) rejected: Vec<Rejected>,
    /// Writes by a duplicate agent's role process (also fenced and journaled as usual).
    pub(crate) dup: Vec<Write>,
    pub(crate) malformed: u64,
    pub(crate) files: HashMap<String, File>,
}

pub(crate) struct JournalServer {
    pub(crate) state: Arc<Mutex<JournalState>>,
    pub(crate) worker: crate::Worker,
}

pub(crate) fn parse_write(s: &str, recv_ns: u64) -> Option<Write> {
    let l = journal::parse_line(s)?;
    Some(Write {
        t_ns: l.t_ns,
        recv_ns,
        role: l.role,
        epoch: l.epoch,
        server: l.server,
        pid: l.pid,
    })
}

impl JournalServer {
    pub(crate) fn start(socket: &Path, dir: &Path) -> Result<JournalServer> {
        let _ = fs::remove_file(socket);
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("bind journal socket {}", socket.display()))?;
        listener.set_nonblocking(true)?;
        fs::create_dir_all(dir)?;
        let state = Arc::new(Mutex::new(JournalState::default()));
        let (st, dir) = (state.clone(), dir.to_path_buf());
        let worker = crate::Worker::spawn(move |sp| {
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let (st, sp, dir) = (st.clone(), sp.clone(), dir.clone());
                        std::thread::spawn(move || {
                            for line in BufReader::new(conn).lines() {
                                let Ok(line) = line else { break };
                                if sp.load(Ordering::SeqCst) {
                                    break;
                                }
                                JournalServer::append(&st, &dir, &line);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(JournalServer { state, worker })
    }

    /// The fence: accept `text` unless its epoch is smaller than the highest accepted
    /// for its role.
    pub(crate) fn append(st: &Mutex<JournalState>, dir: &Path, text: &str) {
        let recv_ns = now_ns();
        let mut s = st.lock().unwrap();
        let (dup, text) = match text.strip_prefix(DUP_LINE_PREFIX) {
            Some(t) => (true, t),
            None => (false, text),
        };
        let Some(w) = parse_write(text, recv_ns) else {
            s.malformed += 1;
            return;
        };
        if dup {
            s.dup.push(w.clone());
        }
        let max = s.max_epoch.get(&w.role).copied().unwrap_or(0);
        let line = if w.epoch < max {
            s.rejected.push(Rejected {
                w: w.clone(),
                max_epoch: max,
            });
            format!("REJECTED {text} (highest epoch {max})\n")
        } else {
            s.max_epoch.insert(w.role.clone(), w.epoch);
            s.accepted.push(w.clone());
            format!("{text}\n")
        };
        let file = s.files.entry(w.role.clone()).or_insert_with(|| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{}.log", w.role)))
                .expect("open journal file")
        });
        let _ = file.write_all(line.as_bytes());
    }

    pub(crate) fn stop(&mut self) {
        self.worker.stop();
    }

    /// Time of the latest accepted write per role.
    pub(crate) fn last_write(&self) -> BTreeMap<String, u64> {
        let s = self.state.lock().unwrap();
        let mut m = BTreeMap::new();
        for w in s.accepted.iter().rev().take(2000) {
            let e = m.entry(w.role.clone()).or_insert(0);
            *e = (*e).max(w.t_ns);
        }
        m
    }

    pub(crate) fn counts(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        (s.accepted.len(), s.rejected.len())
    }
}
