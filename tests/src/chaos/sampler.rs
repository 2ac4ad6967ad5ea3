//! The `/proc` sampler: every 50 ms, the role processes alive and whether two of one
//! role run at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::freezer::Freezer;
use super::report::ms;
use super::sys::{proc_env, proc_stat, proc_stat_comm};
use super::{SAMPLE_PERIOD, SERVERS, STALE_BOUND_NS};
use crate::all_pids;
use crate::dup_agent::DUP_ENV;
use crate::now_ns;
use crate::stubborn::{self, StubbornStats};

#[derive(Clone, Debug)]
pub(crate) struct Tracked {
    pub(crate) pid: u32,
    pub(crate) start: u64,
    pub(crate) role: String,
    pub(crate) epoch: u64,
    pub(crate) server: String,
    pub(crate) first_seen_ns: u64,
    pub(crate) frozen_since_ns: Option<u64>,
    /// Longest single frozen stretch seen.
    pub(crate) frozen_max_ns: u64,
    pub(crate) thawed_ns: Option<u64>,
    /// A stubborn role's writer (ignores SIGTERM).
    pub(crate) stubborn: bool,
    /// Its parent when first seen, and when it was first seen with another one (its
    /// shell died: SIGTERM reached the role and the writer ignored it).
    pub(crate) ppid: u32,
    pub(crate) orphaned_ns: Option<u64>,
}

#[derive(Default)]
pub(crate) struct SamplerOut {
    pub(crate) samples: u64,
    /// Confirmed instants with two running (not frozen) processes of one role, outside
    /// the post-thaw allowance.
    pub(crate) overlap_samples: u64,
    pub(crate) overlaps: Vec<String>,
    /// Instants where an old-epoch process ran next to a newer one within its first
    /// second after a thaw.
    pub(crate) post_thaw_samples: u64,
    /// Processes frozen longer than the lease: time from thaw until they were gone (ms).
    pub(crate) stop_after_thaw_ms: Vec<f64>,
    /// Processes frozen longer than the lease that ran on past STALE_BOUND after thaw.
    pub(crate) lingering: Vec<String>,
    /// Live role processes per role at the latest sample: (pid, epoch, server, frozen).
    pub(crate) current: BTreeMap<String, Vec<(u32, u64, String, bool)>>,
    /// Every role process seen: pid -> (role, epoch, server, frozen_max_ns).
    pub(crate) seen: BTreeMap<u32, (String, u64, String, u64)>,
    pub(crate) stubborn: StubbornStats,
    /// Role processes of duplicate agents, described.
    pub(crate) dup_procs: Vec<String>,
}

pub(crate) struct Sampler {
    /// When the runner last thawed each server (ns), so that a process that dies between
    /// two samples right after a thaw is still timed.
    pub(crate) thawed: Arc<Mutex<HashMap<String, u64>>>,
    pub(crate) out: Arc<Mutex<SamplerOut>>,
    pub(crate) worker: crate::Worker,
}

impl Sampler {
    pub(crate) fn start(
        marker: String,
        freezer: Freezer,
        prefix: String,
        lease_ns: u64,
    ) -> Sampler {
        let out = Arc::new(Mutex::new(SamplerOut::default()));
        let thawed: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::new()));
        let (o, th) = (out.clone(), thawed.clone());
        let worker = crate::Worker::spawn(move |s| {
            let mut watch = Watch {
                marker,
                lease_ns,
                ..Watch::default()
            };
            while !s.load(Ordering::SeqCst) {
                let t_sample = Instant::now();
                let now = now_ns();
                let frozen_host: HashMap<&str, bool> = SERVERS
                    .iter()
                    .map(|(srv, h)| (*srv, freezer.is_frozen(&prefix, h)))
                    .collect();
                let mut scan = watch.scan(now);
                let thaws = th.lock().unwrap().clone();
                let mut o = o.lock().unwrap();
                o.stubborn.seen += scan.new_stubborn;
                o.dup_procs.append(&mut scan.new_dups);
                watch.forget_ended(&scan, &thaws, now, &mut o);
                let by_role = watch.update(&scan, &frozen_host, now, &mut o);
                o.current = watch.current(&by_role);
                watch.check_overlaps(&by_role, now, &mut o);
                o.samples += 1;
                drop(o);
                if let Some(rest) = SAMPLE_PERIOD.checked_sub(t_sample.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        });
        Sampler {
            thawed,
            out,
            worker,
        }
    }

    pub(crate) fn stop(&mut self) {
        self.worker.stop();
    }
}

/// The sampler thread's memory from one sample to the next.
#[derive(Default)]
struct Watch {
    /// The journal socket's path, which every role writer of this run names.
    marker: String,
    lease_ns: u64,
    /// Role writers alive at the last sample.
    tracked: HashMap<u32, Tracked>,
    /// Pids known not to be role writers, with their (start time, command name): a
    /// process caught between fork and exec is looked at again once it has exec'd.
    others: HashMap<u32, (u64, String)>,
    /// Pairs of pids already reported as overlapping.
    reported: BTreeSet<(u32, u32)>,
    /// Pids already reported as lingering after a thaw.
    lingered: BTreeSet<u32>,
}

/// What one pass over `/proc` found.
#[derive(Default)]
struct Scan {
    /// State letter of every tracked writer seen in this pass.
    states: HashMap<u32, char>,
    /// Parent of every tracked writer seen in this pass.
    ppids: HashMap<u32, u32>,
    /// Stubborn writers first seen in this pass.
    new_stubborn: usize,
    /// Role processes of duplicate agents first seen in this pass, described.
    new_dups: Vec<String>,
}

/// Live role processes of one role: (pid, frozen now).
type ByRole = BTreeMap<String, Vec<(u32, bool)>>;

impl Watch {
    /// One pass over `/proc`: the state of every tracked writer, and new writers of this
    /// run tracked from now on.
    fn scan(&mut self, now: u64) -> Scan {
        let pids = all_pids();
        let listed: BTreeSet<u32> = pids.iter().copied().collect();
        self.others.retain(|p, _| listed.contains(p));
        let mut scan = Scan::default();
        for pid in pids {
            let Some((state, start, comm, ppid)) = proc_stat_comm(pid) else {
                continue;
            };
            if self
                .others
                .get(&pid)
                .is_some_and(|(st, c)| *st == start && *c == comm)
            {
                continue;
            }
            if let Some(t) = self.tracked.get(&pid)
                && t.start == start
            {
                scan.states.insert(pid, state);
                scan.ppids.insert(pid, ppid);
                continue;
            }
            if self.track_new(pid, start, comm, ppid, now, &mut scan) {
                scan.states.insert(pid, state);
                scan.ppids.insert(pid, ppid);
            }
        }
        scan
    }

    /// A process not seen before: tracks it if it is a role writer of this run (and says
    /// so), else remembers it as another process.
    fn track_new(
        &mut self,
        pid: u32,
        start: u64,
        comm: String,
        ppid: u32,
        now: u64,
        scan: &mut Scan,
    ) -> bool {
        // argv = [chaos, role-writer, --socket, PATH] exactly (the wrapper
        // `baton role-exec` also names the command, as one argument).
        let argv: Vec<String> = fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_writer = argv.get(1).is_some_and(|a| a == "role-writer")
            && argv.get(3).is_some_and(|a| *a == self.marker);
        // An empty command line is a process in the middle of exec (the kernel names it
        // before it sets up its arguments): look again next time rather than remember it
        // as not a writer.
        if !is_writer {
            let kernel_thread = pid == 2 || ppid == 2;
            if kernel_thread || argv.iter().any(|a| !a.is_empty()) {
                self.others.insert(pid, (start, comm));
            }
            return false;
        }
        let stubborn = argv.get(4).is_some_and(|a| a == stubborn::IGNORE_TERM_FLAG);
        let env = proc_env(pid);
        let (Some(role), Some(epoch), Some(server)) = (
            env.get("BATON_ROLE"),
            env.get("BATON_EPOCH").and_then(|e| e.parse().ok()),
            env.get("BATON_SERVER"),
        ) else {
            return false;
        };
        if let Some(n) = env.get(DUP_ENV) {
            scan.new_dups.push(format!(
                "role {role} epoch {epoch} on {server} pid {pid} (duplicate agent of \
                 fault {n}) seen in /proc"
            ));
        }
        self.tracked.insert(
            pid,
            Tracked {
                pid,
                start,
                role: role.clone(),
                epoch,
                server: server.clone(),
                first_seen_ns: now,
                frozen_since_ns: None,
                frozen_max_ns: 0,
                thawed_ns: None,
                stubborn,
                ppid,
                orphaned_ns: None,
            },
        );
        scan.new_stubborn += usize::from(stubborn);
        true
    }

    /// Stops tracking the writers that ended (or turned zombie), timing how long a
    /// stubborn one outlived its shell and how long after its thaw a long-frozen one
    /// stopped.
    fn forget_ended(
        &mut self,
        scan: &Scan,
        thaws: &HashMap<String, u64>,
        now: u64,
        o: &mut SamplerOut,
    ) {
        let mut gone = Vec::new();
        for (pid, t) in &self.tracked {
            let alive = scan
                .states
                .get(pid)
                .is_some_and(|st| *st != 'Z' && *st != 'X');
            if alive {
                continue;
            }
            gone.push(*pid);
            if let Some(orphaned) = t.orphaned_ns {
                o.stubborn.outlived_shell_ms.push(ms(now - orphaned));
            }
            // Frozen when last seen, or thawed since: time its stop from the thaw (to
            // within a sample period).
            let thaw = thaws.get(&t.server).copied();
            let frozen = match (t.frozen_since_ns, thaw) {
                (Some(since), Some(th)) if th > since => th - since,
                _ => t.frozen_max_ns,
            };
            if frozen > self.lease_ns
                && let Some(th) = thaw.or(t.thawed_ns)
            {
                o.stop_after_thaw_ms.push(ms(now.saturating_sub(th)));
            }
        }
        for pid in gone {
            self.tracked.remove(&pid);
        }
    }

    /// Brings every live writer's frozen, thawed and orphaned marks up to date, records
    /// it as seen, reports one that still runs well after a long freeze, and returns the
    /// writers by role.
    fn update(
        &mut self,
        scan: &Scan,
        frozen_host: &HashMap<&str, bool>,
        now: u64,
        o: &mut SamplerOut,
    ) -> ByRole {
        let lease_ns = self.lease_ns;
        let mut by_role = ByRole::new();
        for t in self.tracked.values_mut() {
            if t.stubborn
                && t.orphaned_ns.is_none()
                && scan.ppids.get(&t.pid).is_some_and(|p| *p != t.ppid)
            {
                t.orphaned_ns = Some(now);
            }
            let st = scan.states.get(&t.pid).copied().unwrap_or('?');
            let frozen = st == 'T'
                || st == 't'
                || frozen_host.get(t.server.as_str()).copied().unwrap_or(false);
            if frozen {
                t.frozen_since_ns.get_or_insert(now);
                t.thawed_ns = None;
            } else if let Some(since) = t.frozen_since_ns.take() {
                t.frozen_max_ns = t.frozen_max_ns.max(now - since);
                t.thawed_ns = Some(now);
            }
            let frozen_for = t
                .frozen_since_ns
                .map(|s| now - s)
                .unwrap_or(0)
                .max(t.frozen_max_ns);
            o.seen.insert(
                t.pid,
                (t.role.clone(), t.epoch, t.server.clone(), frozen_for),
            );
            by_role
                .entry(t.role.clone())
                .or_default()
                .push((t.pid, frozen));
            // Frozen past its lease, thawed, and still running a second later.
            if let Some(thaw) = t.thawed_ns
                && t.frozen_max_ns > lease_ns
                && now - thaw > STALE_BOUND_NS
                && self.lingered.insert(t.pid)
            {
                o.lingering.push(format!(
                    "role {} epoch {} on {} pid {}: frozen {:.0} ms (lease {:.0} ms), \
                     still running {:.0} ms after the thaw",
                    t.role,
                    t.epoch,
                    t.server,
                    t.pid,
                    ms(t.frozen_max_ns),
                    ms(lease_ns),
                    ms(now - thaw)
                ));
            }
        }
        by_role
    }

    /// The live role processes per role, for the end-state check.
    fn current(&self, by_role: &ByRole) -> BTreeMap<String, Vec<(u32, u64, String, bool)>> {
        by_role
            .iter()
            .map(|(r, ps)| {
                (
                    r.clone(),
                    ps.iter()
                        .map(|(p, f)| {
                            let t = &self.tracked[p];
                            (*p, t.epoch, t.server.clone(), *f)
                        })
                        .collect(),
                )
            })
            .collect()
    }

    /// Two running at once? Per role, the running (not frozen) writers that are still
    /// the same live processes after the scan; a pair of them is a violation unless the
    /// older epoch's process is in its first second after a thaw.
    fn check_overlaps(&mut self, by_role: &ByRole, now: u64, o: &mut SamplerOut) {
        for (role, ps) in by_role {
            let running: Vec<&Tracked> = ps
                .iter()
                .filter(|(_, f)| !f)
                .map(|(p, _)| &self.tracked[p])
                .collect();
            if running.len() < 2 {
                continue;
            }
            // Confirm: each is still the same live process after the scan. A pid read
            // alive before and after another one was read alive was alive when that one
            // was.
            let confirmed: Vec<&Tracked> = running
                .into_iter()
                .filter(|t| {
                    proc_stat(t.pid)
                        .is_some_and(|(st, _, start)| start == t.start && st != 'Z' && st != 'X')
                })
                .collect();
            if confirmed.len() < 2 {
                continue;
            }
            let (violation, post_thaw) = judge_pairs(role, &confirmed, now, &mut self.reported, o);
            if violation {
                o.overlap_samples += 1;
            } else if post_thaw {
                o.post_thaw_samples += 1;
            }
        }
    }
}

/// Judges every pair of `role`'s confirmed running writers: returns (some pair is a
/// violation, some pair was allowed as just after a thaw); reports each violating pair
/// once.
fn judge_pairs(
    role: &str,
    confirmed: &[&Tracked],
    now: u64,
    reported: &mut BTreeSet<(u32, u32)>,
    o: &mut SamplerOut,
) -> (bool, bool) {
    let newest = confirmed.iter().map(|t| t.epoch).max().unwrap();
    let mut violation = false;
    let mut post_thaw = false;
    for a in confirmed {
        for b in confirmed {
            if a.pid >= b.pid {
                continue;
            }
            // The older one of the pair, when their epochs differ.
            let old = if a.epoch < b.epoch {
                Some(a)
            } else if b.epoch < a.epoch {
                Some(b)
            } else {
                None
            };
            let allowed = old.is_some_and(|t| {
                t.epoch < newest && t.thawed_ns.is_some_and(|th| now - th <= STALE_BOUND_NS)
            });
            if allowed {
                post_thaw = true;
                continue;
            }
            violation = true;
            if reported.insert((a.pid, b.pid)) && o.overlaps.len() < 100 {
                o.overlaps.push(format!(
                    "role {role}: pid {} (epoch {} on {}, up since {}) and pid {} \
                     (epoch {} on {}, up since {}) both running at {now}",
                    a.pid,
                    a.epoch,
                    a.server,
                    a.first_seen_ns,
                    b.pid,
                    b.epoch,
                    b.server,
                    b.first_seen_ns
                ));
            }
        }
    }
    (violation, post_thaw)
}
