//! Role journals and the outside observer that checks invariant 1 on them.
//!
//! Every role process started by the tests runs [`journal_command`]: a shell loop that
//! appends `time_ns role epoch server pid` to one journal file every ~20 ms. The journal
//! is the role processes' own testimony of when they were alive, on the one host clock
//! all of them share. [`check`] reads it back and reports
//! - **overlaps**: two instances (different pid or epoch) of one role whose write
//!   intervals `[first, last]` intersect by more than the clock granularity;
//! - **epoch regressions**: in time order, a line of a role with a smaller epoch than one
//!   already written (epochs must increase over time);
//! - **epoch reuse**: one epoch of a role written by two different servers.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Tolerance for "at the same time": the granularity of `date +%s%N` plus scheduling
/// noise between taking the timestamp and writing the line is far above this, so two
/// intervals that intersect by more than this really were both alive.
pub const OVERLAP_TOLERANCE_NS: u64 = 1_000_000;

/// The shell loop a journaling role runs. `$$` is the role shell's pid.
pub fn journal_command(journal: &Path) -> String {
    format!(
        "while true; do echo \"$(date +%s%N) $BATON_ROLE $BATON_EPOCH $BATON_SERVER $$\" >> '{}'; sleep 0.02; done",
        journal.display()
    )
}

/// A role whose worker ignores SIGTERM: the role's shell starts the journaling loop as a
/// background `sh` that traps TERM (as a daemon that handles TERM badly would) and waits
/// for it. SIGTERM to the group kills the waiting shell at once and leaves the worker; only
/// SIGKILL stops it. The worker's `$$` is its own pid, and its command line names the
/// journal, so [`crate::live_role_pids`] finds it.
pub fn stubborn_journal_command(journal: &Path) -> String {
    format!(
        "sh -c 'trap \"\" TERM; while true; do echo \"$(date +%s%N) $BATON_ROLE $BATON_EPOCH $BATON_SERVER $$\" >> \"{}\"; sleep 0.02; done' & wait",
        journal.display()
    )
}

/// One journal line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Wall-clock nanoseconds since the Unix epoch.
    pub t_ns: u64,
    pub role: String,
    pub epoch: u64,
    pub server: String,
    pub pid: u32,
}

/// Parses one line; `None` for a torn or foreign line.
pub fn parse_line(s: &str) -> Option<Line> {
    let mut f = s.split_whitespace();
    let line = Line {
        t_ns: f.next()?.parse().ok()?,
        role: f.next()?.to_string(),
        epoch: f.next()?.parse().ok()?,
        server: f.next()?.to_string(),
        pid: f.next()?.parse().ok()?,
    };
    if f.next().is_some() {
        return None;
    }
    Some(line)
}

/// Parses a whole journal text (unparsable lines, e.g. one torn by a SIGKILL, are skipped).
pub fn parse(text: &str) -> Vec<Line> {
    text.lines().filter_map(parse_line).collect()
}

/// Reads and parses a journal file; a missing file is an empty journal.
pub fn read(path: &Path) -> Vec<Line> {
    std::fs::read_to_string(path)
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// One role process's life as seen in the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub role: String,
    pub epoch: u64,
    pub server: String,
    pub pid: u32,
    /// First and last write, ns.
    pub first: u64,
    pub last: u64,
    pub lines: usize,
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} epoch {} on {} pid {} [{} .. {}] ({} lines)",
            self.role, self.epoch, self.server, self.pid, self.first, self.last, self.lines
        )
    }
}

/// Instances per (role, epoch, server, pid), ordered by role then first write.
pub fn instances(lines: &[Line]) -> Vec<Instance> {
    let mut map: BTreeMap<(String, u64, String, u32), Instance> = BTreeMap::new();
    for l in lines {
        let key = (l.role.clone(), l.epoch, l.server.clone(), l.pid);
        let e = map.entry(key).or_insert_with(|| Instance {
            role: l.role.clone(),
            epoch: l.epoch,
            server: l.server.clone(),
            pid: l.pid,
            first: l.t_ns,
            last: l.t_ns,
            lines: 0,
        });
        e.first = e.first.min(l.t_ns);
        e.last = e.last.max(l.t_ns);
        e.lines += 1;
    }
    let mut v: Vec<Instance> = map.into_values().collect();
    v.sort_by(|a, b| (a.role.as_str(), a.first).cmp(&(b.role.as_str(), b.first)));
    v
}

/// What the checker found. Empty means invariant 1 held as far as the journal can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub overlaps: Vec<String>,
    pub regressions: Vec<String>,
    pub reused_epochs: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.overlaps.is_empty() && self.regressions.is_empty() && self.reused_epochs.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in &self.overlaps {
            writeln!(f, "OVERLAP: {o}")?;
        }
        for r in &self.regressions {
            writeln!(f, "EPOCH REGRESSION: {r}")?;
        }
        for r in &self.reused_epochs {
            writeln!(f, "EPOCH REUSE: {r}")?;
        }
        if self.is_clean() {
            writeln!(f, "clean")?;
        }
        Ok(())
    }
}

/// Checks a journal for two live instances of one role, epochs going back, and epochs
/// used by two servers.
pub fn check(lines: &[Line]) -> Report {
    let mut report = Report::default();
    let inst = instances(lines);
    // Overlaps, per role.
    for (i, a) in inst.iter().enumerate() {
        for b in inst[i + 1..].iter().filter(|b| b.role == a.role) {
            let start = a.first.max(b.first);
            let end = a.last.min(b.last);
            if end > start + OVERLAP_TOLERANCE_NS {
                report.overlaps.push(format!(
                    "{a} and {b} were both alive for {:.1} ms",
                    (end - start) as f64 / 1e6
                ));
            }
        }
    }
    // Epoch order over time, per role.
    let mut by_role: BTreeMap<&str, Vec<&Line>> = BTreeMap::new();
    for l in lines {
        by_role.entry(l.role.as_str()).or_default().push(l);
    }
    for (role, mut ls) in by_role {
        ls.sort_by_key(|l| l.t_ns);
        let mut max: Option<&Line> = None;
        for l in ls {
            match max {
                Some(m) if l.epoch < m.epoch => {
                    // Report once per (pid, epoch) to keep the report readable.
                    let msg = format!(
                        "role {role}: epoch {} written by {} pid {} at {} after epoch {} was written by {} pid {} at {}",
                        l.epoch, l.server, l.pid, l.t_ns, m.epoch, m.server, m.pid, m.t_ns
                    );
                    let key = format!(
                        "role {role}: epoch {} written by {} pid {} ",
                        l.epoch, l.server, l.pid
                    );
                    if !report.regressions.iter().any(|r| r.starts_with(&key)) {
                        report.regressions.push(msg);
                    }
                }
                Some(m) if l.epoch == m.epoch => {}
                _ => max = Some(l),
            }
        }
    }
    // One epoch, one server.
    let mut owner: BTreeMap<(&str, u64), &str> = BTreeMap::new();
    for l in lines {
        match owner.get(&(l.role.as_str(), l.epoch)) {
            None => {
                owner.insert((l.role.as_str(), l.epoch), l.server.as_str());
            }
            Some(s) if *s != l.server => {
                let msg = format!(
                    "role {} epoch {} used by {} and by {}",
                    l.role, l.epoch, s, l.server
                );
                if !report.reused_epochs.contains(&msg) {
                    report.reused_epochs.push(msg);
                }
            }
            Some(_) => {}
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn line(t_ms: u64, role: &str, epoch: u64, server: &str, pid: u32) -> String {
        format!(
            "{} {role} {epoch} {server} {pid}\n",
            1_700_000_000_000 * MS + t_ms * MS
        )
    }

    /// A role instance writing every 20 ms from `from` to `to` (ms).
    fn run(from: u64, to: u64, role: &str, epoch: u64, server: &str, pid: u32) -> String {
        (from..=to)
            .step_by(20)
            .map(|t| line(t, role, epoch, server, pid))
            .collect()
    }

    #[test]
    fn parses_lines_and_skips_torn_ones() {
        let text = format!(
            "{}1700000000000000000 r1 3\ngarbage\n{}",
            line(0, "r1", 1, "srv-a", 10),
            line(20, "r1", 1, "srv-a", 10)
        );
        let lines = parse(&text);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].role, "r1");
        assert_eq!(lines[0].epoch, 1);
        assert_eq!(lines[0].server, "srv-a");
        assert_eq!(lines[0].pid, 10);
        assert_eq!(lines[1].t_ns - lines[0].t_ns, 20 * MS);
        let i = instances(&lines);
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].lines, 2);
    }

    #[test]
    fn a_clean_handover_is_clean() {
        let text = run(0, 1000, "r1", 1, "srv-a", 10)
            + &run(1500, 3000, "r1", 2, "srv-b", 20)
            // A restart after a crash: same epoch, new pid, after the old one.
            + &run(3100, 3500, "r1", 2, "srv-b", 21)
            // Another role, running alongside: not an overlap.
            + &run(0, 3500, "r2", 1, "srv-c", 30);
        let r = check(&parse(&text));
        assert!(r.is_clean(), "{r}");
    }

    #[test]
    fn detects_an_overlap() {
        let text = run(0, 1000, "r1", 1, "srv-a", 10) + &run(900, 2000, "r1", 2, "srv-b", 20);
        let r = check(&parse(&text));
        assert_eq!(r.overlaps.len(), 1, "{r}");
        assert!(r.overlaps[0].contains("srv-a") && r.overlaps[0].contains("srv-b"));
        // Interleaved writes of epochs 1 and 2 are also epochs going back in time.
        assert!(!r.regressions.is_empty(), "{r}");
    }

    #[test]
    fn detects_an_overlap_of_two_processes_of_one_epoch() {
        // Same role, same epoch, same server, two pids alive together (a restart that did
        // not wait for the old process).
        let text = run(0, 1000, "r1", 1, "srv-a", 10) + &run(500, 1500, "r1", 1, "srv-a", 11);
        let r = check(&parse(&text));
        assert_eq!(r.overlaps.len(), 1, "{r}");
    }

    #[test]
    fn touching_intervals_within_a_millisecond_are_not_an_overlap() {
        let mut text = run(0, 1000, "r1", 1, "srv-a", 10);
        // The new instance's first line 0.5 ms before the old one's last.
        text.push_str(&format!(
            "{} r1 2 srv-b 20\n",
            1_700_000_000_000 * MS + 1000 * MS - MS / 2
        ));
        text += &run(1020, 1500, "r1", 2, "srv-b", 20);
        let r = check(&parse(&text));
        assert!(r.overlaps.is_empty(), "{r}");
        // But 2 ms is.
        let mut text = run(0, 1000, "r1", 1, "srv-a", 10);
        text.push_str(&format!(
            "{} r1 2 srv-b 20\n",
            1_700_000_000_000 * MS + 998 * MS
        ));
        text += &run(1020, 1500, "r1", 2, "srv-b", 20);
        assert_eq!(check(&parse(&text)).overlaps.len(), 1);
    }

    #[test]
    fn detects_an_epoch_regression() {
        // Epoch 2 runs, then epoch 1 runs again later (no overlap in time).
        let text = run(0, 1000, "r1", 1, "srv-a", 10)
            + &run(1200, 2000, "r1", 2, "srv-b", 20)
            + &run(2200, 3000, "r1", 1, "srv-a", 11);
        let r = check(&parse(&text));
        assert!(r.overlaps.is_empty(), "{r}");
        assert_eq!(r.regressions.len(), 1, "{r}");
        assert!(r.regressions[0].contains("epoch 1"), "{r}");
    }

    #[test]
    fn detects_an_epoch_used_by_two_servers() {
        let text = run(0, 1000, "r1", 1, "srv-a", 10) + &run(1200, 2000, "r1", 1, "srv-b", 20);
        let r = check(&parse(&text));
        assert_eq!(r.reused_epochs.len(), 1, "{r}");
        assert!(!r.is_clean());
    }

    #[test]
    fn the_journal_command_writes_parsable_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let cmd = journal_command(&path);
        // Run three iterations of the loop body by hand (the loop itself never ends).
        let body = cmd
            .trim_start_matches("while true; do ")
            .trim_end_matches("; done")
            .to_string();
        let script = format!("{body}; {body}; {body}");
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("BATON_ROLE", "r9")
            .env("BATON_EPOCH", "7")
            .env("BATON_SERVER", "srv-q")
            .status()
            .unwrap();
        assert!(st.success());
        let lines = read(&path);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines
                .iter()
                .all(|l| l.role == "r9" && l.epoch == 7 && l.server == "srv-q")
        );
        assert!(lines[2].t_ns > lines[0].t_ns + 30 * MS);
    }
}
