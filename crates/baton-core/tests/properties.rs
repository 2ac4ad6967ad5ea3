//! Property tests over random runs of commands: operator edits mixed with what agents and
//! the controller write (registrations, lease expiries, acknowledgements with right and
//! wrong epochs, failures, ticks), at increasing log indexes and times.
//!
//! The invariants checked after every step are written once, in `Checker`, as the
//! directory-level statement of the invariants 1 (single active), 3 (liveness)
//! and 6 (clear refusal), plus the graceful handover rule of the placement code.

use std::collections::{BTreeMap, BTreeSet};

use baton_core::controller::next_tick_ms;
use baton_core::{Cause, Command, Entry, Outcome, Refusal, Role, ServerStatus, State};
use proptest::prelude::*;

// --- the universe of a run ------------------------------------------------------------------

/// The last name is malformed, so that refusals of bad names are exercised too.
const SERVERS: [&str; 6] = ["s0", "s1", "s2", "s3", "s4", "bad name"];
const ROLES: [&str; 4] = ["r0", "r1", "r2", "bad,role"];
const KINDS: [&str; 2] = ["k0", "k1"];
/// "" is the default kind.
const ROLE_KINDS: [&str; 3] = ["", "k0", "k1"];
const DELAYS: [u64; 4] = [0, 1_000, 5_000, 30_000];
const COOLDOWNS: [u64; 4] = [0, 500, 3_000, 20_000];
/// History kept by the runs' state (the default is 1000, more than a run records).
const HISTORY_MAX: usize = 12;
/// Longer than any delay or cooldown above.
const LATE_MS: u64 = 3_600_000;

#[derive(Clone, Debug)]
enum Db {
    Remote,
    Local,
    /// The name of server `i`.
    OnServer(usize),
    Empty,
}

impl Db {
    fn name(&self) -> String {
        match self {
            Db::Remote => "db-host\\INST".into(),
            Db::Local => "(LOCAL)\\SQLEXPRESS".into(),
            Db::OnServer(i) => SERVERS[*i].into(),
            Db::Empty => String::new(),
        }
    }
}

/// Which epoch an acknowledgement or a failure report names, resolved against the state
/// when it is applied.
#[derive(Clone, Debug)]
enum EpochSel {
    Current,
    Offset(i8),
}

#[derive(Clone, Debug)]
enum Op {
    AddServer {
        s: usize,
        main: bool,
        kinds: Vec<usize>,
    },
    RemoveServer(usize),
    CreateRole {
        r: usize,
        kind: usize,
        servers: Vec<usize>,
        failback: bool,
        delay: u64,
        db: Option<Db>,
    },
    DeleteRole(usize),
    AddRoleServer {
        r: usize,
        s: usize,
        position: Option<u32>,
    },
    RemoveRoleServer {
        r: usize,
        s: usize,
    },
    MoveRoleServer {
        r: usize,
        s: usize,
        up: bool,
    },
    SetRole {
        r: usize,
        failback: Option<bool>,
        delay: Option<u64>,
        db: Option<Option<Db>>,
    },
    Drain(usize),
    Resume(usize),
    MoveRole {
        r: usize,
        s: usize,
    },
    Register {
        s: usize,
        kinds: Vec<usize>,
        main: bool,
    },
    ServersDown(Vec<usize>),
    Released {
        r: usize,
        epoch: EpochSel,
    },
    RoleFailed {
        r: usize,
        /// `None`: the role's active server.
        s: Option<usize>,
        epoch: EpochSel,
        cooldown: u64,
    },
    Tick,
    /// A Raft membership entry with this many voters.
    Membership(u32),
    /// A leader's blank entry (a new term): it must move nothing (invariant 4).
    Blank,
    /// Every pending release acknowledged, one entry each.
    AckAll,
}

fn idx(n: usize) -> impl Strategy<Value = usize> {
    0..n
}

/// Mostly the well-formed names.
fn server_idx() -> impl Strategy<Value = usize> {
    prop_oneof![12 => 0..5usize, 1 => Just(5usize)]
}

fn role_idx() -> impl Strategy<Value = usize> {
    prop_oneof![12 => 0..3usize, 1 => Just(3usize)]
}

fn kinds() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![3 => Just(vec![]), 1 => prop::collection::vec(idx(KINDS.len()), 1..=2)]
}

fn db() -> impl Strategy<Value = Db> {
    prop_oneof![
        3 => Just(Db::Remote),
        1 => Just(Db::Local),
        1 => server_idx().prop_map(Db::OnServer),
        1 => Just(Db::Empty),
    ]
}

fn epoch_sel() -> impl Strategy<Value = EpochSel> {
    prop_oneof![4 => Just(EpochSel::Current), 1 => (-2i8..=2).prop_map(EpochSel::Offset)]
}

fn delay() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => prop::sample::select(DELAYS.to_vec()),
        1 => Just(baton_core::FAILBACK_DELAY_MAX_MS + 1),
    ]
}

fn create_role() -> impl Strategy<Value = Op> {
    (
        role_idx(),
        prop_oneof![3 => Just(0usize), 1 => 1..3usize],
        prop::collection::vec(server_idx(), 0..5),
        any::<bool>(),
        delay(),
        prop::option::weighted(0.2, db()),
    )
        .prop_map(|(r, kind, servers, failback, delay, db)| Op::CreateRole {
            r,
            kind,
            servers,
            failback,
            delay,
            db,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (server_idx(), prop::bool::weighted(0.2), kinds())
            .prop_map(|(s, main, kinds)| Op::AddServer { s, main, kinds }),
        1 => server_idx().prop_map(Op::RemoveServer),
        3 => create_role(),
        1 => role_idx().prop_map(Op::DeleteRole),
        3 => (role_idx(), server_idx(), prop::option::weighted(0.3, 0..5u32))
            .prop_map(|(r, s, position)| Op::AddRoleServer { r, s, position }),
        2 => (role_idx(), server_idx()).prop_map(|(r, s)| Op::RemoveRoleServer { r, s }),
        2 => (role_idx(), server_idx(), any::<bool>())
            .prop_map(|(r, s, up)| Op::MoveRoleServer { r, s, up }),
        2 => (
            role_idx(),
            prop::option::of(any::<bool>()),
            prop::option::of(delay()),
            prop::option::weighted(0.3, prop::option::of(db())),
        )
            .prop_map(|(r, failback, delay, db)| Op::SetRole { r, failback, delay, db }),
        3 => server_idx().prop_map(Op::Drain),
        3 => server_idx().prop_map(Op::Resume),
        3 => (role_idx(), server_idx()).prop_map(|(r, s)| Op::MoveRole { r, s }),
        6 => (server_idx(), kinds(), prop::bool::weighted(0.1))
            .prop_map(|(s, kinds, main)| Op::Register { s, kinds, main }),
        5 => prop::collection::vec(server_idx(), 0..3).prop_map(Op::ServersDown),
        6 => (role_idx(), epoch_sel()).prop_map(|(r, epoch)| Op::Released { r, epoch }),
        3 => (
            role_idx(),
            prop::option::weighted(0.2, server_idx()),
            epoch_sel(),
            prop::sample::select(COOLDOWNS.to_vec()),
        )
            .prop_map(|(r, s, epoch, cooldown)| Op::RoleFailed { r, s, epoch, cooldown }),
        5 => Just(Op::Tick),
        1 => prop::sample::select(vec![1u32, 2, 3, 5]).prop_map(Op::Membership),
        1 => Just(Op::Blank),
        3 => Just(Op::AckAll),
    ]
}

/// A run: a setup that makes placement interesting (agents up, roles created), then
/// random steps, each after a random wait.
fn run_strategy(steps: std::ops::Range<usize>) -> impl Strategy<Value = Vec<(u64, Op)>> {
    let setup = (
        prop::collection::vec(kinds(), 4),
        prop::collection::vec(create_role(), 3),
    )
        .prop_map(|(kinds, roles)| {
            let mut ops = vec![(0, Op::Membership(3))];
            for (s, kinds) in kinds.into_iter().enumerate() {
                ops.push((
                    0,
                    Op::Register {
                        s,
                        kinds,
                        main: false,
                    },
                ));
            }
            for (i, mut role) in roles.into_iter().enumerate() {
                if let Op::CreateRole { r, servers, .. } = &mut role {
                    *r = i;
                    servers.push(i);
                }
                ops.push((0, role));
            }
            ops
        });
    let wait = prop_oneof![2 => Just(0u64), 5 => 1..2_000u64, 1 => 2_000..40_000u64];
    (setup, prop::collection::vec((wait, op()), steps)).prop_map(|(mut setup, steps)| {
        setup.extend(steps);
        setup
    })
}

// --- turning ops into log entries ---------------------------------------------------------------

fn strings(ix: &[usize], names: &[&str]) -> Vec<String> {
    ix.iter().map(|&i| names[i].to_string()).collect()
}

fn resolve_epoch(state: &State, role: &str, sel: &EpochSel) -> u64 {
    let current = state.roles.get(role).map_or(0, |r| r.epoch);
    match sel {
        EpochSel::Current => current,
        EpochSel::Offset(o) => current.saturating_add_signed(i64::from(*o)),
    }
}

/// One entry of the log as a run produced it, so that it can be replayed.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // a test's log: clarity over size
enum Logged {
    Cmd(u64, Entry),
    Membership(u64, u32),
    Blank(u64),
}

/// The commands an op stands for in `state` (several for `AckAll`; none for membership).
fn commands(state: &State, op: &Op) -> Vec<Command> {
    let one = |c| vec![c];
    match op {
        Op::AddServer { s, main, kinds } => one(Command::AddServer {
            name: SERVERS[*s].into(),
            main: *main,
            kinds: strings(kinds, &KINDS),
        }),
        Op::RemoveServer(s) => one(Command::RemoveServer {
            name: SERVERS[*s].into(),
        }),
        Op::CreateRole {
            r,
            kind,
            servers,
            failback,
            delay,
            db,
        } => one(Command::CreateRole {
            name: ROLES[*r].into(),
            kind: ROLE_KINDS[*kind].into(),
            servers: strings(servers, &SERVERS),
            failback: *failback,
            failback_delay_ms: *delay,
            database: db.as_ref().map(Db::name),
        }),
        Op::DeleteRole(r) => one(Command::DeleteRole {
            name: ROLES[*r].into(),
        }),
        Op::AddRoleServer { r, s, position } => one(Command::AddRoleServer {
            role: ROLES[*r].into(),
            server: SERVERS[*s].into(),
            position: *position,
        }),
        Op::RemoveRoleServer { r, s } => one(Command::RemoveRoleServer {
            role: ROLES[*r].into(),
            server: SERVERS[*s].into(),
        }),
        Op::MoveRoleServer { r, s, up } => one(Command::MoveRoleServer {
            role: ROLES[*r].into(),
            server: SERVERS[*s].into(),
            up: *up,
        }),
        Op::SetRole {
            r,
            failback,
            delay,
            db,
        } => one(Command::SetRole {
            role: ROLES[*r].into(),
            failback: *failback,
            failback_delay_ms: *delay,
            database: db.as_ref().map(|d| d.as_ref().map(Db::name)),
        }),
        Op::Drain(s) => one(Command::DrainServer {
            name: SERVERS[*s].into(),
        }),
        Op::Resume(s) => one(Command::ResumeServer {
            name: SERVERS[*s].into(),
        }),
        Op::MoveRole { r, s } => one(Command::MoveRole {
            role: ROLES[*r].into(),
            server: SERVERS[*s].into(),
        }),
        Op::Register { s, kinds, main } => one(Command::RegisterAgent {
            server: SERVERS[*s].into(),
            kinds: strings(kinds, &KINDS),
            main: *main,
            instance: Default::default(),
            replaces: None,
        }),
        Op::ServersDown(ss) => one(Command::ServersDown {
            servers: strings(ss, &SERVERS),
        }),
        Op::Released { r, epoch } => one(Command::Released {
            role: ROLES[*r].into(),
            server: state
                .roles
                .get(ROLES[*r])
                .and_then(|x| x.active.clone())
                .unwrap_or_else(|| SERVERS[0].into()),
            epoch: resolve_epoch(state, ROLES[*r], epoch),
        }),
        Op::RoleFailed {
            r,
            s,
            epoch,
            cooldown,
        } => {
            let role = ROLES[*r];
            let server = match s {
                Some(i) => SERVERS[*i].to_string(),
                None => state
                    .roles
                    .get(role)
                    .and_then(|x| x.active.clone())
                    .unwrap_or_else(|| SERVERS[0].into()),
            };
            one(Command::RoleFailed {
                role: role.into(),
                server,
                epoch: resolve_epoch(state, role, epoch),
                reason: "crashed 5 times".into(),
                cooldown_ms: *cooldown,
            })
        }
        Op::Tick => one(Command::Tick),
        Op::Membership(_) | Op::Blank => vec![],
        Op::AckAll => acks(state),
    }
}

/// A correct acknowledgement for every role being released.
fn acks(state: &State) -> Vec<Command> {
    state
        .roles
        .values()
        .filter(|r| r.release.is_some())
        .map(|r| Command::Released {
            role: r.name.clone(),
            server: r.active.clone().unwrap_or_default(),
            epoch: r.epoch,
        })
        .collect()
}

// --- the invariants -----------------------------------------------------------------------------

/// Can `server` run `role` at `now`, by docs/safety.md's definition of eligible (computed here
/// independently of the code under test).
fn eligible(state: &State, role: &Role, server: &str, now: u64) -> bool {
    let Some(s) = state.servers.get(server) else {
        return false;
    };
    role.servers.iter().any(|x| x == server)
        && s.status == ServerStatus::Up
        && !s.maintenance
        && (!s.main || state.voters >= baton_core::MAIN_VOTERS_MIN)
        && (s.kinds.is_empty() || s.kinds.contains(&role.kind))
        && role
            .quarantine
            .get(server)
            .is_none_or(|until| *until <= now)
}

fn eligible_servers(state: &State, role: &Role, now: u64) -> Vec<String> {
    role.servers
        .iter()
        .filter(|s| eligible(state, role, s, now))
        .cloned()
        .collect()
}

/// What one run has seen so far, to check the invariants that span steps.
#[derive(Default)]
struct Checker {
    /// Every epoch ever handed out, and the (role, server) it named.
    epochs: BTreeMap<u64, (String, String)>,
    last_epoch: u64,
    /// The largest epoch of an assignment event recorded so far.
    max_event_epoch: u64,
    /// Per role: the (server, epoch) holding it after the previous step.
    holders: BTreeMap<String, (String, u64)>,
    /// Per server: since when it has been up and out of maintenance, as observed from
    /// outside (the failback delay counts from here).
    eligible_since: BTreeMap<String, u64>,
}

impl Checker {
    /// Check `state` after `cmd` was applied to `before` at `now`, with `result`.
    fn step(
        &mut self,
        before: &State,
        state: &State,
        index: u64,
        now: u64,
        cmd: &Command,
        result: &Result<Outcome, Refusal>,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(state.revision, index);
        match result {
            Err(refusal) => {
                // Invariant 6: a refusal changes nothing but the revision.
                let mut expected = before.clone();
                expected.revision = index;
                expected.elapsed_ms = state.elapsed_ms;
                prop_assert_eq!(state, &expected, "refusal {:?} changed the state", refusal);
                prop_assert!(!refusal.message.is_empty());
            }
            Ok(outcome) => prop_assert!(!outcome.summary.is_empty()),
        }
        self.structure(state)?;
        self.single_active(state)?;
        self.epochs(state)?;
        self.history(state, index)?;
        self.handover(state, cmd)?;
        self.eligibility_clock(state, now)?;
        self.releases(before, state, now, cmd)?;
        self.causes(before, state, index, now, cmd)?;
        // Placement runs for the roles a command touches; what only the passing of time
        // can change (a quarantine ending, a failback delay running out) waits for the
        // controller's Tick, which places every role. So the full check follows a Tick,
        // and any other entry applied while no Tick was due (`next_tick_ms` of the state
        // before it is still ahead): then nothing time-based is pending, and placement
        // must be complete whichever roles the entry touched.
        if result.is_ok() {
            let tick_due = next_tick_ms(before).is_some_and(|t| t <= now);
            if matches!(cmd, Command::Tick) || !tick_due {
                self.placed(state, now)?;
            }
            if matches!(cmd, Command::Tick) {
                // Placement is a fixed point: a second Tick at the same time moves nothing.
                let mut again = state.clone();
                again
                    .apply(
                        index + 1,
                        &Entry {
                            by: Default::default(),
                            request: Default::default(),
                            now_ms: now,
                            cmd: Command::Tick,
                            advance_ms: 0,
                            batch: Vec::new(),
                        },
                    )
                    .expect("a tick is never refused");
                again.revision = index;
                prop_assert_eq!(&again, state, "a second tick changed the state");
            }
            effects(before, state, index, now, cmd)?;
        }
        Ok(())
    }

    /// Each event this step recorded carries the cause of what happened, and a failure
    /// report quarantines the pair it names.
    fn causes(
        &self,
        before: &State,
        state: &State,
        index: u64,
        now: u64,
        cmd: &Command,
    ) -> Result<(), TestCaseError> {
        for e in state.history.iter().filter(|e| e.revision == index) {
            prop_assert_eq!(e.time_ms, now);
            let old = before.roles.get(&e.role);
            let pending = old.and_then(|o| o.release.as_ref()).map(|r| r.cause);
            let expected = match (cmd, &e.from) {
                // A delete completes when the holder stops (ack, lease, failure).
                _ if e.detail == "deleted" => {
                    prop_assert!(old.is_some_and(|o| o.deleting));
                    prop_assert!(!state.roles.contains_key(&e.role));
                    Cause::Operator
                }
                (Command::MoveRole { role, .. }, None) if *role == e.role => Cause::Operator,
                (_, None) => Cause::Placement,
                (Command::Released { .. }, Some(_)) => pending.expect("an acknowledged release"),
                (Command::ServersDown { .. }, Some(_)) => pending.unwrap_or(Cause::LeaseExpired),
                (Command::RoleFailed { .. }, Some(_)) => Cause::RoleFailed,
                (_, Some(_)) => {
                    return Err(TestCaseError::fail(format!(
                        "{e:?} moved a role on {cmd:?}"
                    )));
                }
            };
            prop_assert_eq!(e.cause, expected, "{:?} on {:?}", e, cmd);
            if let Some(from) = &e.from {
                prop_assert_eq!(old.and_then(|o| o.active.as_ref()), Some(from));
            }
        }
        if let Command::RoleFailed {
            role,
            server,
            epoch,
            cooldown_ms,
            ..
        } = cmd
            && let Some(old) = before.roles.get(role)
            && old.active.as_ref() == Some(server)
            && old.epoch == *epoch
            && !old.deleting
        {
            let r = &state.roles[role];
            if *cooldown_ms > 0 {
                prop_assert_eq!(r.quarantine.get(server), Some(&(now + cooldown_ms)));
                prop_assert_ne!(
                    r.active.as_ref(),
                    Some(server),
                    "back on a quarantined server"
                );
            }
            prop_assert!(
                state.history.iter().any(|e| e.revision == index
                    && e.role == *role
                    && e.cause == Cause::RoleFailed
                    && e.from.as_ref() == Some(server)),
                "the failure of {} on {} is not in the history",
                role,
                server
            );
        }
        Ok(())
    }

    /// `eligible_since_ms` is the time the server last became up and out of maintenance.
    fn eligibility_clock(&mut self, state: &State, now: u64) -> Result<(), TestCaseError> {
        let mut next = BTreeMap::new();
        for (name, s) in &state.servers {
            if s.status == ServerStatus::Up && !s.maintenance {
                let since = self.eligible_since.get(name).copied().unwrap_or(now);
                prop_assert_eq!(s.eligible_since_ms, since, "eligible_since of {}", name);
                next.insert(name.clone(), since);
            }
        }
        self.eligible_since = next;
        Ok(())
    }

    /// Every handover that starts has a reason: the holder was drained, dropped from the
    /// list or stopped advertising the kind; an operator moved the role; or failback is on
    /// and the target, above the holder, has been eligible for the failback delay. Without
    /// one of these a running role stays where it is (stickiness).
    fn releases(
        &self,
        before: &State,
        state: &State,
        now: u64,
        cmd: &Command,
    ) -> Result<(), TestCaseError> {
        for (name, role) in &state.roles {
            let Some(rel) = &role.release else { continue };
            let old = before.roles.get(name);
            if old.is_some_and(|o| o.release.as_ref() == Some(rel) && o.epoch == role.epoch) {
                continue; // the same handover, still waiting
            }
            let active = role.active.as_ref().expect("a release has a holder");
            let holder = &state.servers[active];
            let operator = matches!(cmd, Command::MoveRole { role: r, .. } if r == name)
                || (role.deleting && matches!(cmd, Command::DeleteRole { name: r } if r == name));
            let ok = match rel.cause {
                Cause::Maintenance => holder.maintenance,
                Cause::Placement => {
                    let became_main = matches!(cmd, Command::RegisterAgent { server, main: true, .. }
                        if server == active && !before.servers[active].main)
                        && state.voters < baton_core::MAIN_VOTERS_MIN;
                    !role.servers.contains(active)
                        || !(holder.kinds.is_empty() || holder.kinds.contains(&role.kind))
                        || became_main
                }
                Cause::Operator => operator,
                Cause::Failback => {
                    let to = rel.to.as_ref().expect("failback has a target");
                    let pos = |s: &String| role.servers.iter().position(|x| x == s);
                    role.failback
                        && eligible(state, role, to, now)
                        && pos(to) < pos(active)
                        && self.eligible_since[to] + role.failback_delay_ms <= now
                }
                // A fence report never starts a handover.
                Cause::LeaseExpired | Cause::RoleFailed | Cause::Fenced => false,
            };
            prop_assert!(
                ok,
                "{} released from {} with {:?} on {:?}",
                name,
                active,
                rel,
                cmd
            );
            if let Some(to) = &rel.to
                && rel.cause != Cause::Operator
            {
                prop_assert!(
                    eligible(state, role, to, now),
                    "{} released to {}",
                    name,
                    to
                );
            }
        }
        Ok(())
    }

    /// Membership and blank entries change the voters and the revision only: a leader
    /// election or a membership change alone never moves a role (invariant 4). The one
    /// exception: when the voters reach the number main servers need, roles that ran
    /// nowhere may be placed; running roles still do not move.
    fn membership(&mut self, before: &State, state: &State, index: u64, voters: u32) {
        let mut expected = before.clone();
        expected.revision = index;
        expected.voters = voters;
        let min = baton_core::MAIN_VOTERS_MIN;
        if before.voters < min && voters >= min {
            for (name, role) in &before.roles {
                if role.active.is_some() || role.deleting {
                    assert_eq!(&state.roles[name], role, "{name} changed");
                }
            }
            assert_eq!(state.servers, expected.servers);
            // The placements take fresh epochs and are recorded like any other.
            self.structure(state).unwrap();
            self.single_active(state).unwrap();
            self.epochs(state).unwrap();
            self.history(state, index).unwrap();
            return;
        }
        assert_eq!(state, &expected);
    }

    fn structure(&self, state: &State) -> Result<(), TestCaseError> {
        for (name, role) in &state.roles {
            prop_assert_eq!(name, &role.name);
            prop_assert!(!role.servers.is_empty(), "{} has no server", name);
            prop_assert!(role.servers.len() <= baton_core::SERVERS_PER_ROLE_MAX);
            let unique: BTreeSet<&String> = role.servers.iter().collect();
            prop_assert_eq!(
                unique.len(),
                role.servers.len(),
                "{} lists a server twice",
                name
            );
            for s in &role.servers {
                prop_assert!(
                    state.servers.contains_key(s),
                    "{} lists unknown {}",
                    name,
                    s
                );
            }
            prop_assert!(role.failback_delay_ms <= baton_core::FAILBACK_DELAY_MAX_MS);
            if let Some(db) = &role.database
                && role.servers.len() > 1
            {
                prop_assert!(!baton_core::names::is_local_database(db));
                prop_assert!(
                    !role.servers.contains(db),
                    "{}'s database is on {}",
                    name,
                    db
                );
            }
        }
        Ok(())
    }

    /// Invariant 1 at the directory level.
    fn single_active(&self, state: &State) -> Result<(), TestCaseError> {
        let mut assigned: BTreeMap<String, String> = BTreeMap::new();
        // The one-pass sets agents are served from are the per-server ones.
        let sets = state.server_sets();
        for server in state.servers.keys() {
            let set = sets.get(server).cloned().unwrap_or_default();
            prop_assert_eq!(&set.run, &state.assignments(server));
            prop_assert_eq!(&set.stop, &state.releasing(server));
        }
        prop_assert!(sets.keys().all(|s| state.servers.contains_key(s)));
        for server in state.servers.keys() {
            // What the agent must run and what it must stop and acknowledge are disjoint
            // and together are the roles held by the server.
            let mut held: Vec<String> = state
                .assignments(server)
                .into_iter()
                .map(|a| a.role)
                .collect();
            for a in state.releasing(server) {
                let role = &state.roles[&a.role];
                prop_assert_eq!(role.active.as_deref(), Some(server.as_str()));
                prop_assert!(role.release.is_some());
                prop_assert_eq!(a.epoch, role.epoch);
                held.push(a.role);
            }
            held.sort();
            prop_assert_eq!(held, state.roles_on(server));
            for a in state.assignments(server) {
                let role = &state.roles[&a.role];
                prop_assert_eq!(role.active.as_deref(), Some(server.as_str()));
                prop_assert!(role.release.is_none());
                prop_assert_eq!(a.epoch, role.epoch);
                prop_assert_eq!(&a.kind, &role.kind);
                prop_assert_eq!(&a.database, &role.database);
                if let Some(other) = assigned.insert(a.role.clone(), server.clone()) {
                    prop_assert!(false, "{} assigned to {} and {}", a.role, other, server);
                }
            }
        }
        let mut active_epochs = BTreeSet::new();
        for (name, role) in &state.roles {
            prop_assert!(role.release.is_none() || role.active.is_some());
            let Some(active) = &role.active else { continue };
            // Active means the server has not been declared down: its agent may be
            // running the role (or stopping it), so nobody else may.
            let server = state.servers.get(active);
            prop_assert!(server.is_some(), "{} active on unknown {}", name, active);
            prop_assert_eq!(server.unwrap().status, ServerStatus::Up);
            // Outside its list only while being released from there (graceful handover).
            prop_assert!(
                role.servers.contains(active) || role.release.is_some(),
                "{} runs on {} outside its list",
                name,
                active
            );
            if role.release.is_none() {
                prop_assert_eq!(assigned.get(name), Some(active));
            }
            prop_assert!(role.epoch > 0 && role.epoch <= state.last_epoch);
            prop_assert!(
                active_epochs.insert(role.epoch),
                "epoch {} twice",
                role.epoch
            );
        }
        Ok(())
    }

    fn epochs(&mut self, state: &State) -> Result<(), TestCaseError> {
        prop_assert!(state.last_epoch >= self.last_epoch, "last_epoch went back");
        self.last_epoch = state.last_epoch;
        for (name, role) in &state.roles {
            prop_assert!(role.epoch <= state.last_epoch);
            if let Some(active) = &role.active {
                self.name_epoch(role.epoch, name, active)?;
            }
        }
        Ok(())
    }

    /// An epoch names one (role, server) pair for the whole run.
    fn name_epoch(&mut self, epoch: u64, role: &str, server: &str) -> Result<(), TestCaseError> {
        let pair = (role.to_string(), server.to_string());
        match self.epochs.get(&epoch) {
            Some(seen) => prop_assert_eq!(seen, &pair, "epoch {} reused", epoch),
            None => {
                self.epochs.insert(epoch, pair);
            }
        }
        Ok(())
    }

    fn history(&mut self, state: &State, index: u64) -> Result<(), TestCaseError> {
        prop_assert!(state.history.len() <= state.history_max);
        let mut last = 0;
        let mut new_max = self.max_event_epoch;
        for e in &state.history {
            prop_assert!(
                e.from.is_some() || e.to.is_some(),
                "an event that moved nothing"
            );
            let Some(to) = &e.to else { continue };
            prop_assert!(e.epoch > last, "history epochs not increasing: {:?}", e);
            last = e.epoch;
            self.name_epoch(e.epoch, &e.role, to)?;
            if e.revision == index {
                // Recorded by this step: larger than every assignment before it.
                prop_assert!(e.epoch > self.max_event_epoch, "{:?} is not newer", e);
                new_max = new_max.max(e.epoch);
            } else {
                prop_assert!(e.revision < index);
            }
        }
        self.max_event_epoch = new_max;
        Ok(())
    }

    /// The graceful handover / fencing rule: a role leaves the (server, epoch) holding it
    /// only on that holder's acknowledgement, its lease running out, or its failure
    /// report (or when the role is deleted).
    fn handover(&mut self, state: &State, cmd: &Command) -> Result<(), TestCaseError> {
        let now: BTreeMap<String, (String, u64)> = state
            .roles
            .values()
            .filter_map(|r| Some((r.name.clone(), (r.active.clone()?, r.epoch))))
            .collect();
        for (role, (server, epoch)) in &self.holders {
            if now.get(role) == Some(&(server.clone(), *epoch)) {
                continue;
            }
            let justified = match cmd {
                Command::Released {
                    role: r, epoch: e, ..
                } => r == role && e == epoch,
                Command::ServersDown { servers } => servers.contains(server),
                Command::RoleFailed {
                    role: r,
                    server: s,
                    epoch: e,
                    ..
                } => r == role && s == server && e == epoch,
                Command::DeleteRole { name } => name == role && !state.roles.contains_key(role),
                _ => false,
            };
            prop_assert!(
                justified,
                "{} left {} (epoch {}) for {:?} on {:?} without an ack, a lease expiry or a failure",
                role,
                server,
                epoch,
                now.get(role),
                cmd
            );
        }
        self.holders = now;
        Ok(())
    }

    /// After an accepted entry at `now`, placement has done all it can do at `now`.
    fn placed(&self, state: &State, now: u64) -> Result<(), TestCaseError> {
        for (name, role) in &state.roles {
            match (&role.active, &role.release) {
                (None, _) => {
                    // Liveness: unassigned only while no server is eligible.
                    let el = eligible_servers(state, role, now);
                    prop_assert!(el.is_empty(), "{} unassigned but {:?} eligible", name, el);
                    prop_assert!(
                        role.reason.starts_with("no eligible server"),
                        "{}: {}",
                        name,
                        role.reason
                    );
                }
                (Some(active), None) => {
                    // A running role is where it may run (quarantine aside: an operator
                    // may place it on a quarantined server).
                    let s = &state.servers[active];
                    prop_assert!(role.servers.contains(active));
                    prop_assert!(!s.maintenance, "{} runs on drained {}", name, active);
                    prop_assert!(s.kinds.is_empty() || s.kinds.contains(&role.kind));
                }
                (Some(_), Some(_)) => {}
            }
            for until in role.quarantine.values() {
                prop_assert!(*until > now, "expired quarantine kept");
            }
        }
        // The controller ticks when this is due: it must not be due already, or it would
        // tick forever.
        if let Some(t) = next_tick_ms(state) {
            prop_assert!(t > now, "next tick {} is not after now {}", t, now);
        }
        Ok(())
    }
}

/// Every run starts from this state: a short history, so that its bound is exercised.
fn fresh_state() -> State {
    State {
        history_max: HISTORY_MAX,
        ..State::default()
    }
}

/// A finished run: the final state, the log, every entry's result, the last time.
type Run = (State, Vec<Logged>, Vec<Result<Outcome, Refusal>>, u64);

/// An accepted operator or agent command did what it says.
fn effects(
    before: &State,
    state: &State,
    index: u64,
    now: u64,
    cmd: &Command,
) -> Result<(), TestCaseError> {
    // A role may list a main server only while the directory has failover.
    let main_ok =
        |servers: &[String]| state.voters >= 3 || servers.iter().all(|s| !state.servers[s].main);
    let kinds_of = |kinds: &[String]| kinds.iter().cloned().collect::<BTreeSet<_>>();
    match cmd {
        Command::AddServer { name, main, kinds } => {
            let s = &state.servers[name];
            prop_assert_eq!(s.main, *main);
            prop_assert_eq!(&s.kinds, &kinds_of(kinds));
            prop_assert!(!s.maintenance);
            prop_assert_eq!(s.status, ServerStatus::Unknown);
        }
        Command::RemoveServer { name } => prop_assert!(!state.servers.contains_key(name)),
        Command::CreateRole {
            name,
            kind,
            servers,
            failback,
            failback_delay_ms,
            database,
        } => {
            let r = &state.roles[name];
            let kind = if kind.is_empty() {
                baton_core::DEFAULT_KIND
            } else {
                kind
            };
            prop_assert_eq!(&r.kind, kind);
            prop_assert_eq!(&r.servers, servers);
            prop_assert_eq!(r.failback, *failback);
            prop_assert_eq!(r.failback_delay_ms, *failback_delay_ms);
            prop_assert_eq!(&r.database, database);
            prop_assert!(main_ok(servers), "{} lists a main server", name);
        }
        Command::DeleteRole { name } => match state.roles.get(name) {
            // Gone at once if nothing ran it; otherwise deleting, off its holder's
            // assignment set, until the holder acknowledges (or its lease runs out).
            None => {
                prop_assert!(before.roles[name].active.is_none() || before.roles[name].deleting)
            }
            Some(r) => {
                prop_assert!(r.deleting && r.release.is_some() && r.active.is_some());
                let holder = r.active.as_ref().unwrap();
                prop_assert!(state.assignments(holder).iter().all(|a| &a.role != name));
            }
        },
        Command::AddRoleServer {
            role,
            server,
            position,
        } => {
            let mut list = before.roles[role].servers.clone();
            let at = position.map_or(list.len(), |p| p as usize - 1);
            list.insert(at, server.clone());
            prop_assert_eq!(&state.roles[role].servers, &list);
            // The added server; main servers listed before the voters dropped may stay.
            prop_assert!(
                main_ok(std::slice::from_ref(server)),
                "{} lists a main server",
                role
            );
        }
        Command::RemoveRoleServer { role, server } => {
            let mut list = before.roles[role].servers.clone();
            list.retain(|s| s != server);
            prop_assert_eq!(&state.roles[role].servers, &list);
            prop_assert!(!state.roles[role].quarantine.contains_key(server));
        }
        Command::MoveRoleServer { role, server, up } => {
            let mut list = before.roles[role].servers.clone();
            let i = list.iter().position(|s| s == server).expect("listed");
            list.swap(i, if *up { i - 1 } else { i + 1 });
            prop_assert_eq!(&state.roles[role].servers, &list);
        }
        Command::SetRole {
            role,
            failback,
            failback_delay_ms,
            database,
        } => {
            let (old, r) = (&before.roles[role], &state.roles[role]);
            prop_assert_eq!(r.failback, failback.unwrap_or(old.failback));
            prop_assert_eq!(
                r.failback_delay_ms,
                failback_delay_ms.unwrap_or(old.failback_delay_ms)
            );
            prop_assert_eq!(&r.database, database.as_ref().unwrap_or(&old.database));
        }
        Command::DrainServer { name } => prop_assert!(state.servers[name].maintenance),
        Command::ResumeServer { name } => {
            let (old, s) = (&before.servers[name], &state.servers[name]);
            prop_assert!(!s.maintenance);
            if old.maintenance {
                prop_assert_eq!(s.eligible_since_ms, now);
            }
        }
        Command::MoveRole { role, server } => {
            // Either the role is handed over to `server`, or (it ran nowhere) it was
            // assigned there at once.
            let r = &state.roles[role];
            let handing_over = r
                .release
                .as_ref()
                .is_some_and(|rel| rel.cause == Cause::Operator && rel.to.as_ref() == Some(server));
            let assigned = state.history.iter().any(|e| {
                e.revision == index
                    && e.role == *role
                    && e.cause == Cause::Operator
                    && e.to.as_ref() == Some(server)
            });
            prop_assert!(
                handing_over || assigned,
                "{} not moving to {}",
                role,
                server
            );
        }
        Command::RegisterAgent {
            server,
            kinds,
            main,
            ..
        } => {
            let s = &state.servers[server];
            prop_assert_eq!(s.status, ServerStatus::Up);
            prop_assert_eq!(&s.kinds, &kinds_of(kinds));
            let old = before.servers.get(server);
            prop_assert_eq!(s.main, old.is_some_and(|s| s.main) || *main);
            if old.is_none_or(|s| s.status != ServerStatus::Up) {
                prop_assert_eq!(s.eligible_since_ms, now);
            }
        }
        Command::ServersDown { servers } => {
            for (name, old) in &before.servers {
                let expected = if servers.contains(name) && old.status == ServerStatus::Up {
                    ServerStatus::Down
                } else {
                    old.status
                };
                prop_assert_eq!(state.servers[name].status, expected, "{}", name);
            }
        }
        Command::Released { .. }
        | Command::RoleFailed { .. }
        | Command::Tick
        | Command::Configure { .. }
        | Command::SetLease { .. }
        | Command::SettleLease { .. }
        | Command::SetClusterId { .. } => {}
        // Not generated (agents' fence reports have tests of their own); were it, it
        // must move nothing.
        Command::ReportFenced { .. } => prop_assert_eq!(&state.roles, &before.roles),
    }
    Ok(())
}

/// Apply a run, checking every step when `check` is set.
fn execute(ops: &[(u64, Op)], check: bool) -> Result<Run, TestCaseError> {
    let mut state = fresh_state();
    let mut checker = Checker::default();
    let mut log = Vec::new();
    let mut results = Vec::new();
    let mut index = 0;
    let mut now = 1_000;
    for (wait, op) in ops {
        now += wait;
        if let Op::Membership(voters) = op {
            index += 1;
            let before = state.clone();
            state.apply_membership(index, *voters);
            checker.membership(&before, &state, index, *voters);
            log.push(Logged::Membership(index, *voters));
            continue;
        }
        if let Op::Blank = op {
            index += 1;
            let before = state.clone();
            state.apply_blank(index);
            checker.membership(&before, &state, index, before.voters);
            log.push(Logged::Blank(index));
            continue;
        }
        // The wall clock and the leader's monotonic clock agree here: every entry moves
        // directory time to `now`, a wait longer than one entry may carry in `Tick`s
        // first, as the leader does while a timer is pending.
        while now - state.elapsed_ms > baton_core::ADVANCE_MAX_MS {
            index += 1;
            let before = state.clone();
            let at = state.elapsed_ms + baton_core::ADVANCE_MAX_MS;
            let entry = Entry {
                by: Default::default(),
                request: Default::default(),
                now_ms: at,
                cmd: Command::Tick,
                advance_ms: baton_core::ADVANCE_MAX_MS,
                batch: Vec::new(),
            };
            let result = state.apply(index, &entry);
            if check {
                checker.step(&before, &state, index, at, &entry.cmd, &result)?;
            }
            log.push(Logged::Cmd(index, entry));
            results.push(result);
        }
        for cmd in commands(&state, op) {
            index += 1;
            let before = state.clone();
            let entry = Entry {
                by: Default::default(),
                request: Default::default(),
                now_ms: now,
                cmd,
                advance_ms: now - state.elapsed_ms,
                batch: Vec::new(),
            };
            let result = state.apply(index, &entry);
            if check {
                checker.step(&before, &state, index, now, &entry.cmd, &result)?;
            }
            log.push(Logged::Cmd(index, entry));
            results.push(result);
        }
    }
    Ok((state, log, results, now))
}

fn replay(log: &[Logged]) -> (State, Vec<Result<Outcome, Refusal>>) {
    let mut state = fresh_state();
    let mut results = Vec::new();
    for l in log {
        match l {
            Logged::Cmd(index, entry) => results.push(state.apply(*index, entry)),
            Logged::Membership(index, voters) => state.apply_membership(*index, *voters),
            Logged::Blank(index) => state.apply_blank(*index),
        }
    }
    (state, results)
}

/// `log` packed the way the leader's group commit packs writes: an entry joins the
/// previous entry's batch when it carries no directory time of its own (a write proposed
/// at the same instant as the one before it), the previous entry is a write too, and
/// `joins` (cycled) says so. Entries are renumbered, as the packed log is shorter.
fn packed(log: &[Logged], joins: &[bool]) -> Vec<Logged> {
    let mut out: Vec<Logged> = Vec::new();
    for (i, l) in log.iter().enumerate() {
        if let (Logged::Cmd(_, e), Some(Logged::Cmd(_, prev))) = (l, out.last_mut())
            && e.advance_ms == 0
            && joins[i % joins.len()]
            && prev.writes() < baton_core::WRITES_PER_ENTRY_MAX
        {
            prev.batch.push(e.head());
            continue;
        }
        let index = out.len() as u64 + 1;
        out.push(match l {
            Logged::Cmd(_, e) => Logged::Cmd(index, e.clone()),
            Logged::Membership(_, v) => Logged::Membership(index, *v),
            Logged::Blank(_) => Logged::Blank(index),
        });
    }
    out
}

/// [`replay`] of a packed log: every write's outcome, in order.
fn replay_all(log: &[Logged]) -> (State, Vec<Result<Outcome, Refusal>>) {
    let mut state = fresh_state();
    let mut results = Vec::new();
    for l in log {
        match l {
            Logged::Cmd(index, entry) => results.extend(state.apply_all(*index, entry)),
            Logged::Membership(index, voters) => state.apply_membership(*index, *voters),
            Logged::Blank(index) => state.apply_blank(*index),
        }
    }
    (state, results)
}

/// What two runs must agree on whatever log indexes they ran at: everything but the
/// revision and the events' positions.
fn without_positions(state: &State) -> State {
    let mut s = state.clone();
    s.revision = 0;
    s.trimmed = baton_core::Trimmed::Nothing;
    for e in &mut s.history {
        e.revision = 0;
        e.index = 0;
    }
    s
}

/// `cases` per property, or `PROPTEST_CASES` from the environment for a deeper run.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        max_shrink_iters: 4_096,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Structure, refusals, single active, epochs, history, the handover rule, and
    /// placement at every step.
    #[test]
    fn invariants_hold_after_every_step(ops in run_strategy(10..80)) {
        execute(&ops, true)?;
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// `apply` is a function of the log: replaying it gives the same results and state,
    /// and a snapshot (serde_json, as the directory stores it) restores an equal state
    /// from which the rest of the log applies identically.
    #[test]
    fn apply_is_deterministic_and_snapshots_round_trip(
        ops in run_strategy(10..80),
        cut in any::<prop::sample::Index>(),
    ) {
        let (state, log, results, _) = execute(&ops, false)?;
        let (again, again_results) = replay(&log);
        prop_assert_eq!(&again, &state);
        prop_assert_eq!(&again_results, &results);

        let json = serde_json::to_string(&state).unwrap();
        let restored: State = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&restored, &state);

        // Snapshot at an arbitrary point, restore, apply the rest.
        let at = cut.index(log.len() + 1);
        let (head, _) = replay(&log[..at]);
        let mut resumed: State =
            serde_json::from_slice(&serde_json::to_vec(&head).unwrap()).unwrap();
        for l in &log[at..] {
            match l {
                Logged::Cmd(index, entry) => { let _ = resumed.apply(*index, entry); }
                Logged::Membership(index, voters) => resumed.apply_membership(*index, *voters),
                Logged::Blank(index) => resumed.apply_blank(*index),
            }
        }
        prop_assert_eq!(&resumed, &state);
    }

    /// Group commit changes nothing but positions: the same writes packed into batches
    /// (each batch one entry, one log index) give every write the same outcome and leave
    /// the same state as one entry per write, and each batch's events sit at its index.
    #[test]
    fn batches_apply_like_their_writes_one_by_one(
        ops in run_strategy(10..80),
        joins in prop::collection::vec(any::<bool>(), 1..16),
    ) {
        let (state, log, results, _) = execute(&ops, false)?;
        let packed_log = packed(&log, &joins);
        let (again, again_results) = replay_all(&packed_log);
        prop_assert_eq!(&again_results, &results);
        prop_assert_eq!(without_positions(&again), without_positions(&state));
        prop_assert_eq!(again.revision, packed_log.len() as u64);
        let positions: Vec<_> = again.history.iter().map(|e| (e.revision, e.index)).collect();
        prop_assert!(positions.windows(2).all(|w| w[0] < w[1]), "events out of order: {:?}", positions);
    }

    /// Liveness at the state-machine level: once every pending release is acknowledged
    /// and a Tick comes late enough for every delay and cooldown to have run out, every
    /// role with an eligible server runs on one (its first with failback on), and every
    /// other role is unassigned and says why.
    #[test]
    fn quiescence_places_every_role_that_can_run(ops in run_strategy(10..80)) {
        let (mut state, log, _, now) = execute(&ops, false)?;
        let mut index = match log.last() {
            Some(Logged::Cmd(i, _) | Logged::Membership(i, _) | Logged::Blank(i)) => *i,
            None => 0,
        };
        let late = now + LATE_MS;
        let mut apply = |state: &mut State, cmd: Command| {
            index += 1;
            let advance_ms = (late - state.elapsed_ms).min(baton_core::ADVANCE_MAX_MS);
            let entry = Entry { by: Default::default(), request: Default::default(), now_ms: late, cmd, advance_ms, batch: Vec::new() };
            state.apply(index, &entry).unwrap();
        };
        while state.elapsed_ms < late {
            apply(&mut state, Command::Tick);
        }
        // Each round completes the handovers in flight; a completed one may start one
        // failback, so a few rounds always suffice.
        for _ in 0..4 {
            let pending = acks(&state);
            if pending.is_empty() {
                break;
            }
            for cmd in pending {
                apply(&mut state, cmd);
            }
            apply(&mut state, Command::Tick);
        }
        prop_assert!(acks(&state).is_empty(), "handovers still pending");
        for (name, role) in &state.roles {
            let el = eligible_servers(&state, role, late);
            match &role.active {
                Some(active) => {
                    // A role placed on a main server before the voters dropped keeps
                    // running there (a membership change moves no role).
                    let mut with_main = state.clone();
                    with_main.voters = with_main.voters.max(baton_core::MAIN_VOTERS_MIN);
                    let stays = state.servers[active].main
                        && eligible(&with_main, role, active, late);
                    prop_assert!(
                        el.contains(active) || stays,
                        "{} on ineligible {}",
                        name,
                        active
                    );
                    if role.failback && !stays {
                        prop_assert_eq!(active, &el[0], "{} not on its first eligible", name);
                    }
                }
                None => {
                    prop_assert!(el.is_empty(), "{} unassigned, {:?} eligible", name, el);
                    prop_assert!(role.reason.starts_with("no eligible server"));
                }
            }
        }
        prop_assert_eq!(next_tick_ms(&state), None);
    }
}
