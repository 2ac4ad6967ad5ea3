//! The controller's decisions as pure functions of (state, last-seen times, now).
//!
//! The controller runs on the leader only. It keeps, in memory, when it last heard from
//! each server's agent (on the leader's *monotonic* clock), and turns that into Raft
//! writes: [`crate::Command::ServersDown`] when a lease has run out plus a grace, and
//! [`crate::Command::Tick`] when a time-based placement decision (failback delay,
//! quarantine end) falls due. These functions decide; the directory crate acts.
//!
//! ## Directory time
//!
//! Failback delays and quarantine cooldowns count on directory time
//! ([`State::elapsed_ms`]), which only leaders move: each entry a leader proposes carries
//! the monotonic time it measured since its previous proposal in its term
//! ([`crate::Entry::advance_ms`]). A leader therefore knows directory time *now* without
//! writing anything: the state's `elapsed_ms` plus what it measured and has not proposed
//! yet. It proposes a `Tick` when that reaches [`next_tick_ms`], and, while a timer is
//! pending, at least every [`crate::TIMER_TICK_EVERY_MS`] so that its measured time
//! reaches the log before one entry could no longer carry it ([`tick_due`]). With no
//! timer pending it writes nothing, and the time it does not pass on is not counted: no
//! timer was running. A new leader starts measuring when it takes over: the time
//! between the old leader's last proposal and that moment is not counted either, so a
//! leadership change can only stretch a timer (by about an election), never shorten it.
//!
//! ## Why `lease + grace` is safe (invariant 1)
//!
//! Let every clock's rate be within `[1 - rho, 1 + rho]` of real time. The agent stops
//! all roles by agent-clock time `t_send + lease * (1 - rho)`, where `t_send` is when it
//! sent its last acknowledged renewal (see `baton-agent`). Even if its clock runs slow
//! (rate `1 - rho`), real time elapsed since `t_send` is at most `lease`.
//!
//! The leader declares the server down at leader-clock time `t_recv + lease + grace`,
//! where `t_recv >= t_send` (in real time) is when it received that renewal or any later
//! one. Even if its clock runs fast (rate `1 + rho`), real time elapsed since `t_recv` is
//! at least `(lease + grace) / (1 + rho)`, which is `>= lease` whenever
//! `grace >= rho * lease`. [`min_grace_ms`] computes that bound; the directory refuses a
//! configuration below it. The new assignment then still has to commit and reach the new
//! agent, which only adds margin.

use std::collections::BTreeMap;

use crate::state::{ServerStatus, State};

/// The smallest grace that keeps `lease + grace` safe under clock-rate error `rho_ppm`
/// (parts per million), rounded up.
pub fn min_grace_ms(lease_ms: u64, rho_ppm: u64) -> u64 {
    (lease_ms * rho_ppm).div_ceil(1_000_000)
}

/// Servers that the directory holds as up but whose last renewal (leader's monotonic ms)
/// is `lease_ms + grace_ms` or more in the past. A server missing from `last_seen_ms`
/// counts as seen at `leader_since_ms` (when this node became leader): a new leader
/// restarts every clock at its own "now", so leadership changes only lengthen leases.
pub fn expired_servers(
    state: &State,
    last_seen_ms: &BTreeMap<String, u64>,
    leader_since_ms: u64,
    now_ms: u64,
    lease_ms: u64,
    grace_ms: u64,
) -> Vec<String> {
    state
        .servers
        .values()
        .filter(|s| s.status == ServerStatus::Up)
        .filter(|s| {
            let seen = last_seen_ms
                .get(&s.name)
                .copied()
                .unwrap_or(leader_since_ms)
                .max(leader_since_ms);
            now_ms.saturating_sub(seen) >= lease_ms + grace_ms
        })
        .map(|s| s.name.clone())
        .collect()
}

/// The earliest directory time ([`State::elapsed_ms`]) at which a
/// [`crate::Command::Tick`] would change placement: a failback delay running out or a
/// quarantine ending. `None` when nothing time-based is pending.
pub fn next_tick_ms(state: &State) -> Option<u64> {
    let mut due: Option<u64> = None;
    let mut consider = |t: u64| due = Some(due.map_or(t, |d| d.min(t)));
    for role in state.roles.values() {
        for until in role.quarantine.values() {
            consider(*until);
        }
        if !role.failback || role.release.is_some() {
            continue;
        }
        let Some(active) = &role.active else { continue };
        for s in role.servers.iter().take_while(|s| *s != active) {
            let Some(srv) = state.servers.get(s) else {
                continue;
            };
            // The same conditions as `failback_target` (quarantine is in
            // `eligible_since`): a server that can never take the role must not count,
            // or the time would stay in the past and the controller tick forever.
            if srv.status == ServerStatus::Up
                && !srv.maintenance
                && !state.main_without_failover(srv)
                && srv.runs_kind(&role.kind)
            {
                consider(
                    state
                        .eligible_since(&role.name, s)
                        .saturating_add(role.failback_delay_ms),
                );
            }
        }
    }
    due
}

/// Whether the leader should propose a `Tick` now, having measured `unproposed_ms` of
/// monotonic time since the last advance it proposed: a timer is due at directory time
/// `elapsed_ms + unproposed_ms`, or a timer is pending and the time measured should
/// reach the log before it grows past what one entry carries.
pub fn tick_due(state: &State, unproposed_ms: u64) -> bool {
    let Some(due) = next_tick_ms(state) else {
        return false;
    };
    let now = state
        .elapsed_ms
        .saturating_add(unproposed_ms.min(crate::ADVANCE_MAX_MS));
    due <= now || unproposed_ms >= crate::TIMER_TICK_EVERY_MS
}
