//! Failback delays and quarantine cooldowns count on directory time (the leaders' measured
//! monotonic time, carried by entries as `advance_ms`), never on the proposers' wall
//! clocks: a wall clock stepped forward or back by an hour between entries (NTP, a VM
//! resume, a new leader whose clock differs) neither fires them early nor holds them.

mod common;

use baton_core::controller::next_tick_ms;
use baton_core::{ADVANCE_MAX_MS, Cause};
use common::*;

const HOUR: i64 = 3_600_000;

/// A directory whose proposers' wall clocks read a real date (so they can step back).
fn dir() -> Dir {
    let mut d = Dir::new();
    d.now = 1_700_000_000_000;
    d
}

/// r over [a, b], failback after `delay`: it runs on b because a was down, and a has just
/// come back. Returns the directory time since which a is eligible.
fn failback_pending(delay: u64) -> (Dir, u64) {
    let mut d = dir();
    d.up(&["a", "b"]);
    d.ok(create_role_full("r", "", &["a", "b"], true, delay, None));
    assert_eq!(d.active("r"), Some("a"));
    d.ok(servers_down(&["a"]));
    assert_eq!(d.active("r"), Some("b"));
    d.advance(1_000);
    d.ok(register("a", &[]));
    let since = d.state.elapsed_ms;
    assert!(!d.in_handover("r"));
    (d, since)
}

#[test]
fn a_wall_clock_step_forward_does_not_end_a_failback_delay() {
    let (mut d, since) = failback_pending(60_000);
    // The leader's wall clock jumps an hour ahead: no time passed.
    d.step_wall(HOUR).tick();
    assert!(!d.in_handover("r"), "failback fired at a wall-clock step");
    assert_eq!(next_tick_ms(&d.state), Some(since + 60_000));
    // And back again, between entries, while the delay runs.
    d.advance(30_000).step_wall(-HOUR).tick();
    assert!(!d.in_handover("r"));
    d.step_wall(HOUR).advance(29_999).tick();
    assert!(!d.in_handover("r"), "failback fired 1 ms early");
    d.advance(1).tick();
    assert_eq!(release_cause(&d), Some(Cause::Failback));
    d.release("r");
    assert_eq!(d.active("r"), Some("a"));
}

#[test]
fn a_wall_clock_step_back_does_not_hold_a_failback() {
    let (mut d, _) = failback_pending(60_000);
    d.step_wall(-HOUR);
    d.advance(59_999).tick();
    assert!(!d.in_handover("r"));
    // The wall clock is still an hour behind where it was: the delay is over anyway.
    d.advance(1).tick();
    assert_eq!(release_cause(&d), Some(Cause::Failback));
}

#[test]
fn time_passing_on_the_wall_clock_only_does_not_count() {
    // A new leader whose wall clock is ahead, or a wall clock that runs while the
    // leader measures nothing (its monotonic clock stood still): the wall time proposed
    // moves, directory time does not.
    let (mut d, _) = failback_pending(60_000);
    d.advance_wall_only(120_000).tick();
    assert!(!d.in_handover("r"));
    d.advance(60_000).tick();
    assert_eq!(release_cause(&d), Some(Cause::Failback));
}

#[test]
fn the_failback_delay_starts_on_directory_time_whatever_the_wall_clock_says() {
    let mut d = dir();
    d.up(&["a", "b"]);
    d.ok(create_role_full("r", "", &["a", "b"], true, 10_000, None));
    d.ok(servers_down(&["a"]));
    // a comes back through a leader whose wall clock is an hour ahead.
    d.step_wall(HOUR);
    d.ok(register("a", &[]));
    let since = d.state.elapsed_ms;
    assert_eq!(next_tick_ms(&d.state), Some(since + 10_000));
    // The next leader's wall clock is an hour behind the first one's.
    d.step_wall(-2 * HOUR).advance(10_000).tick();
    assert_eq!(release_cause(&d), Some(Cause::Failback));
}

/// A single-server role r on a that failed there, quarantined for `cooldown`.
fn quarantined(cooldown: u64) -> Dir {
    let mut d = dir();
    d.up(&["a"]);
    d.role("r", &["a"]);
    let epoch = d.epoch("r");
    d.ok(role_failed("r", "a", epoch, cooldown));
    assert_eq!(d.active("r"), None);
    d
}

#[test]
fn a_wall_clock_step_forward_does_not_end_a_quarantine() {
    let mut d = quarantined(30_000);
    let until = d.state.elapsed_ms + 30_000;
    assert_eq!(d.get("r").quarantine.get("a"), Some(&until));
    d.step_wall(HOUR).tick();
    assert_eq!(d.active("r"), None, "quarantine ended at a wall-clock step");
    d.advance(15_000).step_wall(-HOUR).tick();
    d.step_wall(HOUR).advance(14_999).tick();
    assert_eq!(d.active("r"), None, "quarantine ended 1 ms early");
    assert_eq!(next_tick_ms(&d.state), Some(until));
    d.advance(1).tick();
    assert_eq!(d.active("r"), Some("a"));
}

#[test]
fn a_wall_clock_step_back_does_not_stretch_a_quarantine() {
    let mut d = quarantined(30_000);
    d.step_wall(-HOUR).advance(29_999).tick();
    assert_eq!(d.active("r"), None);
    d.advance(1).tick();
    assert_eq!(d.active("r"), Some("a"));
}

#[test]
fn an_operator_move_to_a_quarantined_server_is_refused_on_directory_time() {
    let mut d = dir();
    d.up(&["a", "b"]);
    d.role("r", &["a", "b"]);
    let epoch = d.epoch("r");
    d.ok(role_failed("r", "a", epoch, 30_000));
    assert_eq!(d.active("r"), Some("b"));
    // An hour later on the wall clock only: still quarantined.
    d.step_wall(HOUR).tick();
    d.refuse(move_role("r", "a"));
    d.advance(30_000);
    d.ok(move_role("r", "a"));
}

#[test]
fn one_entry_advances_directory_time_by_at_most_the_bound() {
    // A stalled leader (or a bug) proposing an hour in one entry ends no failback delay
    // of a minute: the entry moves directory time by ADVANCE_MAX_MS.
    let (mut d, since) = failback_pending(60_000);
    d.apply_advancing(baton_core::Command::Tick, 3_600_000)
        .unwrap();
    assert_eq!(d.state.elapsed_ms, since + ADVANCE_MAX_MS);
    assert!(!d.in_handover("r"));
    d.apply_advancing(baton_core::Command::Tick, u64::MAX)
        .unwrap();
    assert_eq!(d.state.elapsed_ms, since + 2 * ADVANCE_MAX_MS);
    assert!(!d.in_handover("r"));
}

#[test]
fn a_refused_entry_still_carries_its_time() {
    let (mut d, since) = failback_pending(5_000);
    d.advance(5_000);
    d.refuse(delete_role("nope"));
    assert_eq!(d.state.elapsed_ms, since + 5_000);
    assert!(!d.in_handover("r"));
    d.apply_advancing(baton_core::Command::Tick, 0).unwrap();
    assert_eq!(release_cause(&d), Some(Cause::Failback));
}

fn release_cause(d: &Dir) -> Option<Cause> {
    d.get("r").release.as_ref().map(|r| r.cause)
}

#[test]
fn the_leader_ticks_when_a_timer_is_due_in_directory_time_and_while_one_is_pending() {
    use baton_core::TIMER_TICK_EVERY_MS;
    use baton_core::controller::tick_due;
    let (d, since) = failback_pending(60_000);
    let st = &d.state;
    assert_eq!(st.elapsed_ms, since);
    // Pending, not due: a keepalive tick once enough time is unproposed.
    assert!(!tick_due(st, 0));
    assert!(!tick_due(st, TIMER_TICK_EVERY_MS - 1));
    assert!(tick_due(st, TIMER_TICK_EVERY_MS));
    // Nothing pending: nothing to write, however long the leader waited.
    let mut idle = dir();
    idle.up(&["a"]).role("r", &["a"]);
    assert!(!tick_due(&idle.state, 3_600_000));
    // Due: a failback delay shorter than the keepalive period.
    let (d, _) = failback_pending(1_000);
    assert!(!tick_due(&d.state, 999));
    assert!(tick_due(&d.state, 1_000));
}

#[test]
fn a_snapshot_from_before_directory_time_loads_with_its_timers_moved_onto_it() {
    let mut d = dir();
    d.up(&["a", "b"]);
    d.ok(create_role_full("r", "", &["a", "b"], true, 60_000, None));
    let epoch = d.epoch("r");
    d.ok(role_failed("r", "a", epoch, 30_000));
    assert_eq!(d.active("r"), Some("b"));
    // What a snapshot looked like before directory time: timers on the wall clock
    // (the last entry applied was at `wall`), and no `elapsed_ms`.
    let wall = d.now;
    let mut v = serde_json::to_value(&d.state).unwrap();
    let obj = v.as_object_mut().unwrap();
    obj.remove("elapsed_ms");
    obj.insert("now_ms".into(), wall.into());
    obj["roles"]["r"]["quarantine"]["a"] = (wall + 20_000).into();
    for srv in ["a", "b"] {
        obj["servers"][srv]["eligible_since_ms"] = (wall - 5_000).into();
    }
    let st: baton_core::State = serde_json::from_value(v).unwrap();
    assert_eq!(st.elapsed_ms, 0);
    // The quarantine keeps the 20 s it had left; eligibility counts from the upgrade.
    assert_eq!(st.roles["r"].quarantine.get("a"), Some(&20_000));
    assert_eq!(st.servers["a"].eligible_since_ms, 0);
    assert_eq!(next_tick_ms(&st), Some(20_000));
    // A snapshot written now round-trips as it is.
    let again: baton_core::State =
        serde_json::from_value(serde_json::to_value(&d.state).unwrap()).unwrap();
    assert_eq!(again, d.state);
}
