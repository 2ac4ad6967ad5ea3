//! The faults: their kinds, and how each is injected, held and healed.

use std::time::Duration;

use anyhow::Result;

use super::SERVERS;
use super::managed::Managed;
use super::net::{Net, cut, heal};
use super::report::ms;
use super::sys::signal;
use super::world::World;
use crate::now_ns;
use crate::tools::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    KillNode,
    KillAgent,
    FreezeServer,
    FreezeAgent,
    PartitionNode,
    PartitionLeader,
    PartitionAgent,
    /// A second agent under a live server's name (on host `d`): it must be refused.
    DupAgent,
    /// Not a fault but a planted bug, to show the observer sees one (`--plant rogue`): a
    /// second process of a role, started outside baton on a server that does not hold
    /// it, with the holder's epoch.
    PlantedRogue,
}

impl Kind {
    pub(crate) const ALL: [(Kind, u32); 8] = [
        (Kind::KillNode, 2),
        (Kind::KillAgent, 2),
        (Kind::FreezeServer, 3),
        (Kind::FreezeAgent, 1),
        (Kind::PartitionNode, 1),
        (Kind::PartitionLeader, 2),
        (Kind::PartitionAgent, 2),
        (Kind::DupAgent, 2),
    ];

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Kind::KillNode => "kill9-node",
            Kind::KillAgent => "kill9-agent",
            Kind::FreezeServer => "freeze-server",
            Kind::FreezeAgent => "freeze-agent",
            Kind::PartitionNode => "partition-node",
            Kind::PartitionLeader => "partition-leader",
            Kind::PartitionAgent => "partition-agent",
            Kind::DupAgent => "dup-agent",
            Kind::PlantedRogue => "planted-rogue",
        }
    }

    /// Whether it touches a server (agent or roles), so that roles may legitimately move.
    /// A dup-agent fault does not: a duplicate must neither move nor stop anything.
    pub(crate) fn touches_server(&self) -> bool {
        matches!(
            self,
            Kind::KillAgent
                | Kind::FreezeServer
                | Kind::FreezeAgent
                | Kind::PartitionAgent
                | Kind::PlantedRogue
        )
    }

    pub(crate) fn pick(rng: &mut Rng, only: &[Kind]) -> Kind {
        let pool: Vec<(Kind, u32)> = Kind::ALL
            .iter()
            .copied()
            .filter(|(k, _)| only.is_empty() || only.contains(k))
            .collect();
        let total: u32 = pool.iter().map(|(_, w)| w).sum();
        let mut x = (rng.next_u64() % total as u64) as u32;
        for (k, w) in pool {
            if x < w {
                return k;
            }
            x -= w;
        }
        unreachable!()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Fault {
    pub(crate) n: usize,
    pub(crate) kind: Kind,
    pub(crate) target: String,
    /// The server concerned, for server faults.
    pub(crate) server: Option<String>,
    pub(crate) detail: String,
    pub(crate) start_ns: u64,
    pub(crate) heal_ns: u64,
}

// Each fault: pick a target, announce it (which starts its clock), hold it, heal it. The
// random draws happen in the same order as they always did, so a seed gives the same
// schedule.
impl World {
    /// Injects one fault, holds it, heals it. Returns None if interrupted midway (the
    /// caller heals everything anyway).
    pub(crate) fn inject(&mut self, n: usize, kind: Kind) -> Result<Option<Fault>> {
        let mut f = Fault {
            n,
            kind,
            target: String::new(),
            server: None,
            detail: String::new(),
            start_ns: 0,
            heal_ns: 0,
        };
        let ok = match kind {
            Kind::DupAgent => self.dup_agent(&mut f)?,
            Kind::KillNode => self.kill_node(&mut f)?,
            Kind::KillAgent => self.kill_agent(&mut f)?,
            Kind::FreezeServer | Kind::FreezeAgent => self.freeze(&mut f)?,
            Kind::PlantedRogue => self.plant_rogue(&mut f)?,
            Kind::PartitionNode | Kind::PartitionLeader | Kind::PartitionAgent => {
                self.partition(&mut f)?
            }
        };
        f.heal_ns = now_ns();
        self.say(&format!(
            "fault {n}: healed after {:.1}s",
            ms(f.heal_ns - f.start_ns) / 1e3
        ));
        Ok(ok.then_some(f))
    }

    /// Logs the fault about to be injected and starts its clock.
    fn announce(&mut self, f: &mut Fault) {
        self.say(&format!(
            "fault {}: {} {} ({})",
            f.n,
            f.kind.name(),
            f.target,
            f.detail
        ));
        f.start_ns = now_ns();
    }

    /// kill -9 of a node (half of the time the leader), restarted after 0.3-3 s.
    fn kill_node(&mut self, f: &mut Fault) -> Result<bool> {
        let leader = self.leader();
        let id = match leader {
            Some(l) if self.rng.chance(0.5) => l,
            _ => self.rng.index(3) + 1,
        };
        let down = Duration::from_secs_f64(self.rng.between(0.3, 3.0));
        f.target = format!("node {id}");
        f.detail = format!(
            "{}down {:.1}s",
            if leader == Some(id) { "leader, " } else { "" },
            down.as_secs_f64()
        );
        self.announce(f);
        self.nodes[id - 1].kill9();
        let ok = self.hold(down);
        let bin = self.a.baton.clone();
        self.nodes[id - 1].start(&bin)?;
        Ok(ok)
    }

    /// kill -9 of a server's agent, restarted after 0.1-2 leases.
    fn kill_agent(&mut self, f: &mut Fault) -> Result<bool> {
        let i = self.pick_server();
        let down = self.a.lease.mul_f64(self.rng.between(0.1, 2.0));
        f.target = SERVERS[i].0.to_string();
        f.server = Some(f.target.clone());
        f.detail = format!("agent down {:.1}s", down.as_secs_f64());
        self.announce(f);
        self.agents[i].kill9();
        let ok = self.hold(down);
        let bin = self.a.baton.clone();
        self.agents[i].start(&bin)?;
        Ok(ok)
    }

    /// Freezes a whole server (agent and roles, with the freezer) or its agent alone
    /// (SIGSTOP), for 1.5-3 leases.
    fn freeze(&mut self, f: &mut Fault) -> Result<bool> {
        let whole = f.kind == Kind::FreezeServer;
        let i = self.pick_server();
        let d = self.hold_time();
        let (srv, host) = SERVERS[i];
        f.target = srv.to_string();
        f.server = Some(srv.to_string());
        let pid = self.agents[i].pid();
        f.detail = if whole {
            format!(
                "agent and roles, {}, {:.1}s",
                self.freezer.name(),
                d.as_secs_f64()
            )
        } else {
            format!(
                "agent only (SIGSTOP), roles keep running, {:.1}s",
                d.as_secs_f64()
            )
        };
        self.announce(f);
        if whole {
            self.freezer.freeze(&self.a.prefix, host, pid)?;
        } else if let Some(p) = pid {
            signal(p as i32, libc::SIGSTOP);
        }
        let ok = self.hold(d);
        if whole {
            self.freezer.thaw(&self.a.prefix, host, pid)?;
            self.thawed
                .lock()
                .unwrap()
                .insert(srv.to_string(), now_ns());
        } else if let Some(p) = pid {
            signal(p as i32, libc::SIGCONT);
        }
        Ok(ok)
    }

    /// The planted bug: a second writer of role r1 with the holder's epoch, started
    /// outside baton on another server's host, for 1.5 s.
    fn plant_rogue(&mut self, f: &mut Fault) -> Result<bool> {
        let role = "r1";
        let show = self
            .cli(&["role", "show", role], crate::CLI_TIMEOUT)
            .try_json()?;
        let holder = show["active_server"].as_str().unwrap_or("").to_string();
        let epoch = show["epoch"].as_u64().unwrap_or(0);
        let (other, host) = *SERVERS.iter().find(|(s, _)| *s != holder).unwrap();
        f.target = role.to_string();
        f.server = Some(other.to_string());
        f.detail = format!(
            "a second {role} process with epoch {epoch} (held by {holder}) on {other}, \
             outside baton, for 1.5s"
        );
        self.announce(f);
        let mut rogue = Managed {
            name: "rogue".into(),
            ns: self.net.ns(host),
            args: vec![
                "role-writer".into(),
                "--socket".into(),
                self.socket.display().to_string(),
            ],
            log: self.a.workdir.join("rogue.log"),
            cgroup_procs: None,
            child: None,
            starts: 0,
            env: vec![
                ("BATON_ROLE".into(), role.into()),
                ("BATON_EPOCH".into(), epoch.to_string()),
                ("BATON_SERVER".into(), other.into()),
            ],
        };
        let exe = self.exe.clone();
        rogue.start(&exe)?;
        let ok = self.hold(Duration::from_millis(1500));
        rogue.kill9();
        Ok(ok)
    }

    /// Cuts a follower, the leader or a server's host off the network (iptables DROP or
    /// link down) for 1.5-3 leases.
    fn partition(&mut self, f: &mut Fault) -> Result<bool> {
        let kind = f.kind;
        let leader = self.leader();
        let host = match kind {
            Kind::PartitionLeader => match leader {
                Some(l) => format!("n{l}"),
                None => format!("n{}", self.rng.index(3) + 1),
            },
            Kind::PartitionNode => {
                let others: Vec<usize> = (1..=3).filter(|i| Some(*i) != leader).collect();
                format!("n{}", others[self.rng.index(others.len())])
            }
            _ => SERVERS[self.pick_server()].1.to_string(),
        };
        let how = self.pick_cut();
        let d = self.hold_time();
        f.target = match host.strip_prefix('n') {
            Some(id) => format!("node {id}"),
            None => {
                let s = SERVERS.iter().find(|(_, h)| *h == host).unwrap().0;
                f.server = Some(s.to_string());
                s.to_string()
            }
        };
        f.detail = format!(
            "{}{}, {:.1}s",
            if kind == Kind::PartitionLeader && leader.is_none() {
                "no leader known, "
            } else {
                ""
            },
            how.name(),
            d.as_secs_f64()
        );
        self.announce(f);
        cut(&self.net, &host, how)?;
        let ok = self.hold(d);
        heal(&self.net, &host, self.iptables)?;
        Ok(ok)
    }

    /// Undoes every fault: links up, rules flushed, servers thawed, agents continued,
    /// every process running.
    pub(crate) fn heal_all(&mut self) -> Result<()> {
        for h in Net::hosts() {
            heal(&self.net, h, self.iptables)?;
        }
        for (i, (_, host)) in SERVERS.iter().enumerate() {
            let pid = self.agents[i].pid();
            self.freezer.thaw(&self.a.prefix, host, pid)?;
            if let Some(p) = pid {
                signal(p as i32, libc::SIGCONT);
            }
        }
        let bin = self.a.baton.clone();
        for p in self.nodes.iter_mut().chain(self.agents.iter_mut()) {
            if p.child.is_none() {
                p.start(&bin)?;
            }
        }
        Ok(())
    }
}
