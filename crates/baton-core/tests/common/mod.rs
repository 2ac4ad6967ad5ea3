//! A small harness around `State::apply` shared by the integration tests: it owns the log
//! index and the proposer's clock, builds commands tersely, and checks that every refusal
//! leaves the state exactly as it was (apart from `revision`).

#![allow(dead_code)]

use baton_core::state::Assignment;
use baton_core::{Cause, Command, Entry, Event, Outcome, Refusal, RefusalKind, Role, State};

/// The directory as one node applies it: a state, the next log index, and the leader's
/// two clocks.
pub struct Dir {
    pub state: State,
    pub index: u64,
    /// The proposer's wall clock, stamped as `now_ms`.
    pub now: u64,
    /// The leader's monotonic clock: every entry carries what it measured since the
    /// previous one (`advance_ms`), so directory time follows it.
    pub mono: u64,
}

impl Default for Dir {
    fn default() -> Self {
        Self::new()
    }
}

impl Dir {
    /// A directory with failover (3 voters), at time 1000 ms.
    pub fn new() -> Self {
        let mut d = Dir {
            state: State::default(),
            index: 0,
            now: 1_000,
            mono: 1_000,
        };
        d.index += 1;
        d.state.apply_membership(d.index, 3);
        d
    }

    /// A directory with `voters` voters.
    pub fn with_voters(voters: u32) -> Self {
        let mut d = Dir::new();
        d.index += 1;
        d.state.apply_membership(d.index, voters);
        d
    }

    /// Let `ms` pass: both clocks move.
    pub fn advance(&mut self, ms: u64) -> &mut Self {
        self.now += ms;
        self.mono += ms;
        self
    }

    /// Step the wall clock by `ms` (forward or back) without any time passing: NTP, a
    /// VM resume, or a leader whose clock differs from the previous one's.
    pub fn step_wall(&mut self, ms: i64) -> &mut Self {
        self.now = self
            .now
            .checked_add_signed(ms)
            .expect("wall clock before 1970");
        self
    }

    /// Let `ms` pass on the wall clock only (the monotonic clock the leader measures
    /// directory time with stands still): what directory time must not follow.
    pub fn advance_wall_only(&mut self, ms: u64) -> &mut Self {
        self.now += ms;
        self
    }

    /// The monotonic time the leader measured and has not proposed yet.
    pub fn unproposed(&self) -> u64 {
        self.mono - self.state.elapsed_ms
    }

    /// Apply `cmd` at the next index and the current time. Like the leader does while a
    /// timer is pending, time that does not fit in one entry's advance reaches the log
    /// in `Tick`s first, each stamped with the wall time it was proposed at.
    pub fn apply(&mut self, cmd: Command) -> Result<Outcome, Refusal> {
        while self.unproposed() > baton_core::ADVANCE_MAX_MS {
            self.index += 1;
            let rest = self.unproposed() - baton_core::ADVANCE_MAX_MS;
            let entry = Entry {
                by: Default::default(),
                request: Default::default(),
                now_ms: self.now.saturating_sub(rest),
                cmd: Command::Tick,
                advance_ms: baton_core::ADVANCE_MAX_MS,
                batch: Vec::new(),
            };
            self.state.apply(self.index, &entry).expect("a tick");
        }
        self.index += 1;
        let entry = Entry {
            by: Default::default(),
            request: Default::default(),
            now_ms: self.now,
            cmd,
            advance_ms: self.unproposed(),
            batch: Vec::new(),
        };
        self.state.apply(self.index, &entry)
    }

    /// Apply `cmd` as an entry carrying exactly `advance_ms` of directory time (whatever
    /// the monotonic clock says), at the current wall time.
    pub fn apply_advancing(&mut self, cmd: Command, advance_ms: u64) -> Result<Outcome, Refusal> {
        self.index += 1;
        let entry = Entry {
            by: Default::default(),
            request: Default::default(),
            now_ms: self.now,
            cmd,
            advance_ms,
            batch: Vec::new(),
        };
        let r = self.state.apply(self.index, &entry);
        self.mono = self.mono.max(self.state.elapsed_ms);
        r
    }

    /// Apply `cmd`, which must be accepted.
    #[track_caller]
    pub fn ok(&mut self, cmd: Command) -> Outcome {
        let shown = format!("{cmd:?}");
        match self.apply(cmd) {
            Ok(o) => {
                assert_eq!(self.state.revision, self.index);
                o
            }
            Err(r) => panic!("{shown} was refused: {}", r.message),
        }
    }

    /// Apply `cmd`, which must be refused without changing anything but `revision`.
    #[track_caller]
    pub fn refuse(&mut self, cmd: Command) -> Refusal {
        let before = self.state.clone();
        let shown = format!("{cmd:?}");
        match self.apply(cmd) {
            Ok(o) => panic!("{shown} was accepted: {}", o.summary),
            Err(r) => {
                let mut expected = before;
                expected.revision = self.index;
                // Time passes whatever the command: directory time moves on a refusal.
                expected.elapsed_ms = self.state.elapsed_ms;
                assert_eq!(self.state, expected, "refused {shown} changed the state");
                assert!(!r.message.is_empty());
                r
            }
        }
    }

    /// Apply `cmd`; it must be refused with `kind` and exactly `message`.
    #[track_caller]
    pub fn refuse_with(&mut self, cmd: Command, kind: RefusalKind, message: &str) {
        let r = self.refuse(cmd);
        assert_eq!(r.message, message);
        assert_eq!(r.kind, kind, "kind of {message:?}");
    }

    /// Register agents (any kind) for these servers.
    pub fn up(&mut self, servers: &[&str]) -> &mut Self {
        for s in servers {
            self.ok(register(s, &[]));
        }
        self
    }

    /// Create a role over `servers` (failback off, default kind, no database).
    pub fn role(&mut self, name: &str, servers: &[&str]) -> &mut Self {
        self.ok(create_role(name, servers));
        self
    }

    pub fn get(&self, role: &str) -> &Role {
        self.state.role(role).expect("role exists")
    }

    pub fn active(&self, role: &str) -> Option<&str> {
        self.get(role).active.as_deref()
    }

    pub fn epoch(&self, role: &str) -> u64 {
        self.get(role).epoch
    }

    pub fn in_handover(&self, role: &str) -> bool {
        self.get(role).release.is_some()
    }

    /// The roles (with epochs) `server`'s agent must run.
    pub fn running(&self, server: &str) -> Vec<(String, u64)> {
        self.state
            .assignments(server)
            .into_iter()
            .map(|a: Assignment| (a.role, a.epoch))
            .collect()
    }

    /// The roles (with epochs) `server`'s agent must stop and acknowledge.
    pub fn stopping(&self, server: &str) -> Vec<(String, u64)> {
        self.state
            .releasing(server)
            .into_iter()
            .map(|a: Assignment| (a.role, a.epoch))
            .collect()
    }

    /// Role names `server`'s agent must run.
    pub fn running_roles(&self, server: &str) -> Vec<String> {
        self.running(server).into_iter().map(|(r, _)| r).collect()
    }

    pub fn last_event(&self) -> &Event {
        self.state.history.back().expect("history is not empty")
    }

    /// Acknowledge the pending release of `role` with the right epoch.
    #[track_caller]
    pub fn release(&mut self, role: &str) -> Outcome {
        assert!(self.in_handover(role), "{role} is not being released");
        let epoch = self.epoch(role);
        let cmd = released_at(self, role, epoch);
        self.ok(cmd)
    }

    pub fn tick(&mut self) -> Outcome {
        self.ok(Command::Tick)
    }
}

// --- command constructors ------------------------------------------------------------

pub fn s(v: &str) -> String {
    v.to_string()
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

pub fn add_server(name: &str) -> Command {
    Command::AddServer {
        name: s(name),
        main: false,
        kinds: vec![],
    }
}

pub fn add_main_server(name: &str) -> Command {
    Command::AddServer {
        name: s(name),
        main: true,
        kinds: vec![],
    }
}

pub fn remove_server(name: &str) -> Command {
    Command::RemoveServer { name: s(name) }
}

pub fn create_role(name: &str, servers: &[&str]) -> Command {
    Command::CreateRole {
        name: s(name),
        kind: String::new(),
        servers: strings(servers),
        failback: false,
        failback_delay_ms: 0,
        database: None,
    }
}

pub fn create_role_full(
    name: &str,
    kind: &str,
    servers: &[&str],
    failback: bool,
    failback_delay_ms: u64,
    database: Option<&str>,
) -> Command {
    Command::CreateRole {
        name: s(name),
        kind: s(kind),
        servers: strings(servers),
        failback,
        failback_delay_ms,
        database: database.map(s),
    }
}

pub fn delete_role(name: &str) -> Command {
    Command::DeleteRole { name: s(name) }
}

pub fn add_role_server(role: &str, server: &str, position: Option<u32>) -> Command {
    Command::AddRoleServer {
        role: s(role),
        server: s(server),
        position,
    }
}

pub fn remove_role_server(role: &str, server: &str) -> Command {
    Command::RemoveRoleServer {
        role: s(role),
        server: s(server),
    }
}

pub fn move_up(role: &str, server: &str) -> Command {
    Command::MoveRoleServer {
        role: s(role),
        server: s(server),
        up: true,
    }
}

pub fn move_down(role: &str, server: &str) -> Command {
    Command::MoveRoleServer {
        role: s(role),
        server: s(server),
        up: false,
    }
}

pub fn set_failback(role: &str, on: bool, delay_ms: Option<u64>) -> Command {
    Command::SetRole {
        role: s(role),
        failback: Some(on),
        failback_delay_ms: delay_ms,
        database: None,
    }
}

pub fn set_database(role: &str, db: Option<&str>) -> Command {
    Command::SetRole {
        role: s(role),
        failback: None,
        failback_delay_ms: None,
        database: Some(db.map(s)),
    }
}

pub fn drain(name: &str) -> Command {
    Command::DrainServer { name: s(name) }
}

pub fn resume(name: &str) -> Command {
    Command::ResumeServer { name: s(name) }
}

pub fn move_role(role: &str, server: &str) -> Command {
    Command::MoveRole {
        role: s(role),
        server: s(server),
    }
}

pub fn register(server: &str, kinds: &[&str]) -> Command {
    Command::RegisterAgent {
        server: s(server),
        kinds: strings(kinds),
        main: false,
        instance: Default::default(),
        replaces: None,
    }
}

pub fn servers_down(servers: &[&str]) -> Command {
    Command::ServersDown {
        servers: strings(servers),
    }
}

pub fn released(role: &str, server: &str, epoch: u64) -> Command {
    Command::Released {
        role: s(role),
        server: s(server),
        epoch,
    }
}

/// An acknowledgement from whichever server holds `role` now (any server if none).
pub fn released_at(d: &Dir, role: &str, epoch: u64) -> Command {
    let holder = d
        .state
        .roles
        .get(role)
        .and_then(|r| r.active.clone())
        .unwrap_or_else(|| s("a"));
    released(role, &holder, epoch)
}

pub fn role_failed(role: &str, server: &str, epoch: u64, cooldown_ms: u64) -> Command {
    Command::RoleFailed {
        role: s(role),
        server: s(server),
        epoch,
        reason: s("exited 5 times in 60s"),
        cooldown_ms,
    }
}

/// (cause, from, to, epoch) of an event, for terse assertions.
pub fn ev(e: &Event) -> (Cause, Option<&str>, Option<&str>, u64) {
    (e.cause, e.from.as_deref(), e.to.as_deref(), e.epoch)
}
