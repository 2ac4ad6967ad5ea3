//! The dup-agent fault (its checks and report are in `crate::dup_agent`).

use std::fs;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::faults::Fault;
use super::managed::Managed;
use super::report::ms;
use super::sys::signal;
use super::world::World;
use super::{SERVERS, stopping, wait_for};
use crate::dup_agent::{self, DUP_ENV, DupOutcome};
use crate::now_ns;

impl World {
    /// The live agent of server `i`'s instance id, once the directory says that instance
    /// holds the name: its latest start opened a session, and `server list` shows the
    /// server up with that instance.
    pub(crate) fn settled_holder(&self, i: usize) -> Option<String> {
        self.agents[i].child.as_ref()?;
        let log = fs::read_to_string(&self.agents[i].log).ok()?;
        let (id, open) = dup_agent::latest_start(&log)?;
        let list = self
            .cli(&["server", "list"], Duration::from_secs(8))
            .try_json()
            .ok()?;
        let holds = list.as_array()?.iter().any(|s| {
            s["name"] == SERVERS[i].0 && s["status"] == "up" && s["instance"] == id.as_str()
        });
        (open && holds).then_some(id)
    }

    /// Starts a second agent under the name of a server whose agent is alive, with the
    /// same arguments (so the same role commands), on host `d`, and waits until it exits
    /// or the bound passes (then kills it). False if the run is being interrupted.
    pub(crate) fn dup_agent(&mut self, f: &mut Fault) -> Result<bool> {
        let i = self.pick_server();
        let srv = SERVERS[i].0;
        f.target = srv.to_string();
        f.server = Some(srv.to_string());
        let settle = self.a.lease * 4 + Duration::from_secs(5);
        let Some(holder) = wait_for(settle, || self.settled_holder(i)) else {
            f.detail = "not started: the agent's instance never showed as the holder".into();
            self.say(&format!("fault {}: dup-agent {srv} ({})", f.n, f.detail));
            f.start_ns = now_ns();
            self.dups.outcomes.push(DupOutcome {
                fault: f.n,
                server: srv.into(),
                holder: String::new(),
                skipped: Some(f.detail.clone()),
                code: None,
                exited_after_ms: None,
                names_holder: false,
                log_tail: String::new(),
            });
            return Ok(!stopping());
        };
        f.detail = format!("a second agent named {srv} on host d; holder instance {holder}");
        // Planted: the holder frozen (SIGSTOP, roles self-fence) for the whole fault.
        let frozen = (self.a.plant_dup && f.n == 2)
            .then(|| self.agents[i].pid())
            .flatten();
        if frozen.is_some() {
            f.detail += "; PLANTED: the holder agent is frozen, so the duplicate takes over";
        }
        self.say(&format!("fault {}: dup-agent {srv} ({})", f.n, f.detail));
        if let Some(p) = frozen {
            signal(p as i32, libc::SIGSTOP);
        }
        let mut dup = Managed {
            name: format!("dup-agent {}", f.n),
            ns: self.net.ns("d"),
            args: self.agents[i].args.clone(),
            log: self.a.workdir.join(format!("dup-agent-{}.log", f.n)),
            cgroup_procs: None,
            child: None,
            starts: 0,
            env: vec![(DUP_ENV.into(), f.n.to_string())],
        };
        f.start_ns = now_ns();
        dup.start(&self.a.baton.clone())?;
        let status = self.await_exit(&mut dup, dup_agent::exit_bound(self.a.lease));
        let after_ms = ms(now_ns() - f.start_ns);
        if status.is_none() {
            dup.kill9();
        }
        if let Some(p) = frozen {
            signal(p as i32, libc::SIGCONT);
        }
        let log = fs::read_to_string(&dup.log).unwrap_or_default();
        let outcome = DupOutcome {
            fault: f.n,
            server: srv.into(),
            names_holder: dup_agent::names_holder(&log, &holder),
            holder,
            skipped: None,
            code: status.and_then(|s| s.code()),
            exited_after_ms: status.map(|_| after_ms),
            log_tail: dup.log_tail(15),
        };
        self.say(&format!(
            "fault {}: the duplicate {} after {:.1}s; its log {} the holder",
            f.n,
            match status {
                Some(s) => format!("exited ({s})"),
                None => "was still running (killed)".into(),
            },
            after_ms / 1e3,
            if outcome.names_holder {
                "names"
            } else {
                "does NOT name"
            }
        ));
        self.dups.outcomes.push(outcome);
        Ok(!stopping())
    }

    /// Waits until `p` exits, at most `bound`, watching the cluster's own processes
    /// meanwhile. None if it did not exit (or the run is being interrupted).
    pub(crate) fn await_exit(&mut self, p: &mut Managed, bound: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + bound;
        while Instant::now() < end && !stopping() {
            if let Some(Ok(Some(st))) = p.child.as_mut().map(|c| c.try_wait()) {
                p.child = None;
                return Some(st);
            }
            self.reap_unexpected();
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}
