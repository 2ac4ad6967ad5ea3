//! The role journal: every role process (Baton's and the etcd recipe's alike) appends one
//! line when it starts, `ROLE SERVER EPOCH UNIX_NS`, and then sleeps. The driver reads it
//! to see who runs what since when, from the role processes' own point of view.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    pub role: String,
    pub server: String,
    pub epoch: u64,
    pub ns: u64,
}

#[derive(Clone, Debug)]
pub struct Journal {
    pub path: PathBuf,
}

impl Journal {
    pub fn new(path: &Path) -> Journal {
        let _ = std::fs::write(path, b"");
        Journal {
            path: path.to_path_buf(),
        }
    }

    /// The shell command a role runs: record the start, then idle.
    pub fn role_command(&self) -> String {
        format!(
            "echo \"$BATON_ROLE $BATON_SERVER $BATON_EPOCH $(date +%s%N)\" >> {}; exec sleep 1000000",
            self.path.display()
        )
    }

    pub fn starts(&self) -> Vec<Start> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some(Start {
                    role: it.next()?.to_string(),
                    server: it.next()?.to_string(),
                    epoch: it.next()?.parse().ok()?,
                    ns: it.next()?.parse().ok()?,
                })
            })
            .collect()
    }

    /// The latest start of `role`, if any.
    pub fn last(&self, role: &str) -> Option<Start> {
        self.starts().into_iter().rev().find(|s| s.role == role)
    }

    /// Wait (polling every 2 ms) for a start of `role` that satisfies `pred`.
    pub async fn wait_for(
        &self,
        role: &str,
        timeout: Duration,
        pred: impl Fn(&Start) -> bool,
    ) -> Option<Start> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self
                .starts()
                .into_iter()
                .rev()
                .find(|s| s.role == role && pred(s))
            {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Role starts after `from` (an index into `starts()`) whose server differs from the
    /// role's previous holder: moves, as opposed to restarts in place.
    pub fn moves_since(&self, from: usize) -> (usize, usize) {
        let all = self.starts();
        let mut holder: std::collections::BTreeMap<String, String> = Default::default();
        for s in &all[..from.min(all.len())] {
            holder.insert(s.role.clone(), s.server.clone());
        }
        let (mut moves, mut restarts) = (0, 0);
        for s in all.iter().skip(from) {
            match holder.insert(s.role.clone(), s.server.clone()) {
                Some(prev) if prev == s.server => restarts += 1,
                _ => moves += 1,
            }
        }
        (moves, restarts)
    }
}
