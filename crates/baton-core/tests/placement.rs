//! Placement and failover scenarios, step by step: where a role runs, with which epoch,
//! what the agents are told (`assignments`), and what the history records.

mod common;

use baton_core::Cause::{Failback, LeaseExpired, Maintenance, Operator, Placement, RoleFailed};
use baton_core::controller::next_tick_ms;
use baton_core::{Cause, HISTORY_MAX_DEFAULT, Release, RoleState, ServerStatus};
use common::*;

fn release_of(d: &Dir, role: &str) -> Option<Release> {
    d.get(role).release.clone()
}

fn pending(cause: Cause, to: Option<&str>) -> Option<Release> {
    Some(Release {
        cause,
        to: to.map(s),
    })
}

/// Asserts that applying `cmd` changes nothing but `revision` (stale acknowledgements).
#[track_caller]
fn no_op(d: &mut Dir, cmd: baton_core::Command) -> String {
    let before = d.state.clone();
    let summary = d.ok(cmd).summary;
    let mut expected = before;
    expected.revision = d.index;
    expected.elapsed_ms = d.state.elapsed_ms;
    assert_eq!(d.state, expected, "{summary}");
    summary
}

// --- first placement ------------------------------------------------------------------------

#[test]
fn first_placement_picks_the_first_eligible_server() {
    let mut d = Dir::new();
    d.ok(add_server("a")); // known, but no agent yet
    d.up(&["b", "c"]);
    d.ok(drain("b"));
    d.role("r", &["a", "b", "c"]);
    assert_eq!(d.active("r"), Some("c"));
    assert_eq!(d.epoch("r"), 1);
    assert_eq!(d.state.last_epoch, 1);
    assert_eq!(d.get("r").state(), RoleState::Running);
    assert_eq!(d.get("r").reason, "placed on c (was not running)");
    assert_eq!(d.running("c"), vec![(s("r"), 1)]);
    assert!(d.running("a").is_empty() && d.running("b").is_empty());
    assert_eq!(d.state.history.len(), 1);
    assert_eq!(ev(d.last_event()), (Placement, None, Some("c"), 1));
    assert_eq!(d.last_event().revision, d.index);
    assert_eq!(d.last_event().time_ms, d.now);
    assert_eq!(d.last_event().role, "r");
}

#[test]
fn a_role_with_no_eligible_server_waits_with_a_reason_then_starts() {
    let mut d = Dir::new();
    d.ok(add_server("a"));
    d.up(&["b", "c"]);
    d.ok(drain("b"));
    d.ok(servers_down(&["c"]));
    d.role("r", &["a", "b", "c"]);
    assert_eq!(d.active("r"), None);
    assert_eq!(d.get("r").state(), RoleState::Unassigned);
    assert_eq!(
        d.get("r").reason,
        "no eligible server: server a is unknown; server b is in maintenance; server c is down"
    );
    assert!(
        d.state.history.is_empty(),
        "nothing moved, nothing recorded"
    );
    assert_eq!(d.state.last_epoch, 0);
    // The first server to become eligible gets it, whatever its position.
    d.up(&["c"]);
    assert_eq!(d.active("r"), Some("c"));
    assert_eq!(ev(d.last_event()), (Placement, None, Some("c"), 1));
}

#[test]
fn epochs_come_from_one_counter_shared_by_all_roles() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    d.role("r1", &["a", "b"]).role("r2", &["b", "a"]);
    assert_eq!((d.epoch("r1"), d.epoch("r2")), (1, 2));
    d.ok(servers_down(&["a"]));
    assert_eq!(d.active("r1"), Some("b"));
    assert_eq!(d.epoch("r1"), 3);
    assert_eq!(d.epoch("r2"), 2, "r2 did not move");
    // Deleting and re-creating a role never reuses an epoch.
    d.ok(delete_role("r1"));
    assert!(d.running("b").iter().all(|(r, _)| r != "r1"));
    d.release("r1");
    d.role("r1", &["b"]);
    assert_eq!(d.epoch("r1"), 4);
    assert_eq!(d.state.last_epoch, 4);
}

// --- lease expiry ---------------------------------------------------------------------------

#[test]
fn servers_down_moves_roles_at_once_with_larger_epochs() {
    let mut d = Dir::new();
    d.up(&["a", "b", "c"]).role("r", &["a", "b", "c"]);
    d.role("q", &["b", "c"]);
    assert_eq!((d.active("r"), d.epoch("r")), (Some("a"), 1));
    d.advance(1_000);
    d.ok(servers_down(&["a"]));
    assert_eq!(d.state.servers["a"].status, ServerStatus::Down);
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 3));
    assert!(d.running("a").is_empty());
    assert_eq!(d.running("b"), vec![(s("q"), 2), (s("r"), 3)]);
    let e = d.last_event();
    assert_eq!(ev(e), (LeaseExpired, Some("a"), Some("b"), 3));
    assert_eq!(e.detail, "lease expired");
    assert_eq!(e.time_ms, d.now);
    assert_eq!(
        d.get("r").reason,
        "moved to b after its server's lease expired (from a)"
    );
    // Declaring it down again changes nothing.
    no_op(&mut d, servers_down(&["a"]));
    // Both roles leave b at once, in one entry, each with a fresh epoch.
    d.ok(servers_down(&["b"]));
    assert_eq!((d.active("r"), d.epoch("r")), (Some("c"), 5));
    assert_eq!((d.active("q"), d.epoch("q")), (Some("c"), 4));
    assert_eq!(d.running("c").len(), 2);
    // The last server goes: the role stops, and says why.
    d.ok(servers_down(&["c"]));
    assert_eq!(d.active("r"), None);
    assert_eq!(ev(d.last_event()), (LeaseExpired, Some("c"), None, 5));
    assert_eq!(
        d.get("r").reason,
        "no eligible server: server a is down; server b is down; server c is down"
    );
    assert_eq!(d.state.last_epoch, 5, "an unassignment takes no epoch");
    // An agent coming back restarts it there (no failback needed: it ran nowhere).
    d.up(&["b"]);
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 7));
    assert_eq!(ev(d.last_event()), (Placement, None, Some("b"), 7));
}

#[test]
fn sticky_without_failback() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    d.ok(servers_down(&["a"]));
    assert_eq!(d.active("r"), Some("b"));
    let events = d.state.history.len();
    d.up(&["a"]);
    d.advance(10 * 86_400_000).tick();
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 2));
    assert!(!d.in_handover("r"));
    assert_eq!(d.state.history.len(), events);
    assert_eq!(next_tick_ms(&d.state), None);
}

// --- failback ---------------------------------------------------------------------------------

#[test]
fn failback_waits_for_the_delay_then_hands_over_gracefully() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    d.ok(create_role_full("r", "", &["a", "b"], true, 10_000, None));
    assert_eq!(d.active("r"), Some("a"));
    d.ok(servers_down(&["a"]));
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 2));

    d.advance(5_000);
    let back = d.now;
    d.up(&["a"]);
    assert_eq!(d.state.servers["a"].eligible_since_ms, back);
    assert_eq!(next_tick_ms(&d.state), Some(back + 10_000));
    d.advance(9_999).tick();
    assert_eq!(d.active("r"), Some("b"));
    assert!(!d.in_handover("r"));
    assert_eq!(d.running("b"), vec![(s("r"), 2)]);

    // Due: b is asked to stop; nobody may run the role until b acknowledges.
    d.advance(1).tick();
    assert_eq!(release_of(&d, "r"), pending(Failback, Some("a")));
    assert_eq!(d.get("r").state(), RoleState::Handover);
    assert_eq!(d.get("r").reason, "handing over from b (failback) to a");
    assert_eq!(d.active("r"), Some("b"));
    assert!(d.running("a").is_empty());
    assert!(d.running("b").is_empty());
    assert_eq!(d.stopping("b"), vec![(s("r"), 2)]);
    assert!(d.stopping("a").is_empty());
    assert_eq!(d.state.roles_on("b"), vec![s("r")]);
    assert_eq!(next_tick_ms(&d.state), None, "a handover waits for an ack");

    // A stale acknowledgement (the epoch before) changes nothing.
    let summary = {
        let c = released_at(&d, "r", 1);
        no_op(&mut d, c)
    };
    assert_eq!(summary, "stale release of r epoch 1");
    {
        let c = released_at(&d, "r", 3);
        no_op(&mut d, c)
    };

    d.ok(released_at(&d, "r", 2));
    assert_eq!((d.active("r"), d.epoch("r")), (Some("a"), 3));
    assert!(!d.in_handover("r"));
    assert!(d.stopping("b").is_empty());
    assert_eq!(d.running("a"), vec![(s("r"), 3)]);
    assert_eq!(ev(d.last_event()), (Failback, Some("b"), Some("a"), 3));
    assert_eq!(d.get("r").reason, "returned to a (failback) (from b)");
    // A duplicate of the acknowledgement is stale now.
    {
        let c = released_at(&d, "r", 2);
        no_op(&mut d, c)
    };
}

#[test]
fn failback_delay_restarts_when_the_primary_flaps() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    d.ok(create_role_full("r", "", &["a", "b"], true, 10_000, None));
    d.ok(servers_down(&["a"]));
    d.up(&["a"]);
    let t1 = d.now;
    d.advance(5_000).ok(servers_down(&["a"]));
    assert_eq!(next_tick_ms(&d.state), None);
    d.advance(1_000).up(&["a"]);
    let t2 = d.now;
    assert_eq!(next_tick_ms(&d.state), Some(t2 + 10_000));
    d.advance(t1 + 10_000 - d.now).tick();
    assert!(!d.in_handover("r"), "the first period was interrupted");
    d.advance(t2 + 10_000 - d.now).tick();
    assert_eq!(release_of(&d, "r"), pending(Failback, Some("a")));
}

#[test]
fn maintenance_of_the_primary_also_restarts_the_failback_delay() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    d.ok(create_role_full("r", "", &["a", "b"], true, 10_000, None));
    d.ok(drain("a"));
    d.release("r");
    assert_eq!(d.active("r"), Some("b"));
    d.advance(60_000).ok(resume("a"));
    let resumed = d.now;
    assert_eq!(d.state.servers["a"].eligible_since_ms, resumed);
    assert!(!d.in_handover("r"));
    assert_eq!(next_tick_ms(&d.state), Some(resumed + 10_000));
    d.advance(10_000).tick();
    assert_eq!(release_of(&d, "r"), pending(Failback, Some("a")));
    d.release("r");
    assert_eq!(d.active("r"), Some("a"));
}

#[test]
fn failback_with_no_delay_hands_over_on_the_same_entry() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    d.ok(create_role_full("r", "", &["a", "b"], true, 0, None));
    d.ok(servers_down(&["a"]));
    d.up(&["a"]);
    assert_eq!(release_of(&d, "r"), pending(Failback, Some("a")));
    d.release("r");
    assert_eq!((d.active("r"), d.epoch("r")), (Some("a"), 3));
}

#[test]
fn failback_goes_to_the_highest_ready_server_and_a_target_lost_meanwhile_is_skipped() {
    let mut d = Dir::new();
    d.up(&["a", "b", "c"]);
    d.ok(create_role_full(
        "r",
        "",
        &["a", "b", "c"],
        true,
        1_000,
        None,
    ));
    d.ok(servers_down(&["a", "b"]));
    assert_eq!(d.active("r"), Some("c"));
    d.up(&["b"]);
    d.advance(500).up(&["a"]);
    d.advance(500).tick();
    // b has waited its delay, a not yet.
    assert_eq!(release_of(&d, "r"), pending(Failback, Some("b")));
    // b is lost before c acknowledges. Once c has stopped the role it runs nowhere, and
    // a role that runs nowhere goes to its first eligible server: a, although a has not
    // yet been up for the failback delay (the delay only guards moving a running role).
    d.ok(servers_down(&["b"]));
    let e = d.epoch("r");
    d.ok(released_at(&d, "r", e));
    assert_eq!(d.active("r"), Some("a"));
    assert!(d.epoch("r") > e);
    assert_eq!(
        ev(d.last_event()),
        (Failback, Some("c"), Some("a"), d.epoch("r"))
    );
}

#[test]
fn failback_target_lost_with_nothing_better_returns_to_the_releasing_server() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    d.ok(create_role_full("r", "", &["a", "b"], true, 1_000, None));
    d.ok(servers_down(&["a"]));
    d.up(&["a"]);
    d.advance(1_000).tick();
    assert_eq!(release_of(&d, "r"), pending(Failback, Some("a")));
    d.ok(servers_down(&["a"]));
    // b stopped the role; the only eligible server is b itself: a new epoch there.
    d.ok(released_at(&d, "r", 2));
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 3));
    assert_eq!(ev(d.last_event()), (Failback, Some("b"), Some("b"), 3));
    assert_eq!(d.running("b"), vec![(s("r"), 3)]);
}

#[test]
fn turning_failback_on_or_reordering_the_list_starts_a_failback() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    d.ok(servers_down(&["a"]));
    d.up(&["a"]);
    d.advance(1_000);
    assert!(!d.in_handover("r"));
    d.ok(set_failback("r", true, Some(500)));
    assert_eq!(release_of(&d, "r"), pending(Failback, Some("a")));
    d.release("r");
    assert_eq!(d.active("r"), Some("a"));
    // b moves to the top: it has been up long enough, so the role follows.
    d.ok(move_up("r", "b"));
    assert_eq!(release_of(&d, "r"), pending(Failback, Some("b")));
    d.release("r");
    assert_eq!(d.active("r"), Some("b"));
    assert_eq!(ev(d.last_event()).0, Failback);
    // Adding a new first server that has been up long enough does the same.
    d.up(&["c"]);
    d.advance(1_000);
    d.ok(add_role_server("r", "c", Some(1)));
    assert_eq!(release_of(&d, "r"), pending(Failback, Some("c")));
}

// --- maintenance -------------------------------------------------------------------------------

#[test]
fn drain_hands_over_to_the_next_server() {
    let mut d = Dir::new();
    d.up(&["a", "b", "c"]).role("r", &["a", "b", "c"]);
    d.ok(drain("a"));
    assert!(d.state.servers["a"].maintenance);
    assert_eq!(release_of(&d, "r"), pending(Maintenance, Some("b")));
    assert_eq!(d.get("r").reason, "handing over from a (maintenance) to b");
    assert_eq!(d.active("r"), Some("a"));
    assert!(d.running("a").is_empty() && d.running("b").is_empty());
    assert_eq!(d.stopping("a"), vec![(s("r"), 1)]);
    // Draining again changes nothing.
    no_op(&mut d, drain("a"));
    d.ok(released_at(&d, "r", 1));
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 2));
    assert_eq!(ev(d.last_event()), (Maintenance, Some("a"), Some("b"), 2));
    assert_eq!(d.get("r").reason, "moved to b for maintenance (from a)");
    // Nothing new lands on a drained server.
    d.role("q", &["a", "c"]);
    assert_eq!(d.active("q"), Some("c"));
    // Resume: failback is off, so r stays on b.
    d.ok(resume("a"));
    assert!(!d.state.servers["a"].maintenance);
    assert_eq!(d.active("r"), Some("b"));
    assert_eq!(d.active("q"), Some("c"));
}

#[test]
fn drain_with_no_other_eligible_server_stops_the_role_until_resume() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    d.ok(servers_down(&["b"]));
    d.ok(drain("a"));
    assert_eq!(release_of(&d, "r"), pending(Maintenance, None));
    assert_eq!(d.get("r").reason, "handing over from a (maintenance)");
    d.release("r");
    assert_eq!(d.active("r"), None);
    assert_eq!(d.get("r").state(), RoleState::Unassigned);
    assert_eq!(ev(d.last_event()), (Maintenance, Some("a"), None, 1));
    assert_eq!(
        d.get("r").reason,
        "no eligible server: server a is in maintenance; server b is down"
    );
    d.ok(resume("a"));
    assert_eq!((d.active("r"), d.epoch("r")), (Some("a"), 2));
    assert_eq!(ev(d.last_event()), (Placement, None, Some("a"), 2));
}

#[test]
fn resume_during_a_handover_does_not_cancel_it() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    d.ok(drain("a"));
    d.ok(resume("a"));
    // a's agent has been told to stop and may already have: the handover goes on.
    assert_eq!(release_of(&d, "r"), pending(Maintenance, Some("b")));
    d.release("r");
    assert_eq!(d.active("r"), Some("b"));
}

#[test]
fn a_drained_target_is_skipped_when_the_ack_arrives() {
    let mut d = Dir::new();
    d.up(&["a", "b", "c"]).role("r", &["a", "b", "c"]);
    d.ok(drain("a"));
    d.ok(drain("b"));
    d.release("r");
    assert_eq!(d.active("r"), Some("c"));
}

// --- operator moves ----------------------------------------------------------------------------

#[test]
fn move_role_hands_over_gracefully() {
    let mut d = Dir::new();
    d.up(&["a", "b", "c"]).role("r", &["a", "b", "c"]);
    d.ok(move_role("r", "c"));
    assert_eq!(release_of(&d, "r"), pending(Operator, Some("c")));
    assert_eq!(d.get("r").reason, "operator move from a to c");
    assert!(d.running("a").is_empty() && d.running("c").is_empty());
    d.release("r");
    assert_eq!((d.active("r"), d.epoch("r")), (Some("c"), 2));
    assert_eq!(ev(d.last_event()), (Operator, Some("a"), Some("c"), 2));
    assert_eq!(d.get("r").reason, "moved to c by an operator (from a)");
    // Sticky afterwards (failback off).
    d.advance(86_400_000).tick();
    assert_eq!(d.active("r"), Some("c"));
}

#[test]
fn move_role_retargets_a_pending_handover() {
    let mut d = Dir::new();
    d.up(&["a", "b", "c"]).role("r", &["a", "b", "c"]);
    d.ok(drain("a"));
    assert_eq!(release_of(&d, "r"), pending(Maintenance, Some("b")));
    d.ok(move_role("r", "c"));
    assert_eq!(release_of(&d, "r"), pending(Operator, Some("c")));
    assert_eq!(d.epoch("r"), 1, "no new epoch before the acknowledgement");
    d.release("r");
    assert_eq!(d.active("r"), Some("c"));
}

// --- role health -------------------------------------------------------------------------------

#[test]
fn role_failed_quarantines_and_moves_on_then_fails_back_after_the_cooldown() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    d.ok(create_role_full("r", "", &["a", "b"], true, 0, None));
    let failed_at = d.now;
    d.ok(role_failed("r", "a", 1, 30_000));
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 2));
    assert_eq!(d.get("r").quarantine.get("a"), Some(&(failed_at + 30_000)));
    let e = d.last_event();
    assert_eq!(ev(e), (RoleFailed, Some("a"), Some("b"), 2));
    assert_eq!(e.detail, "exited 5 times in 60s");
    assert_eq!(d.get("r").reason, "moved to b after crashing (from a)");
    assert_eq!(next_tick_ms(&d.state), Some(failed_at + 30_000));
    // Still quarantined one millisecond before the end.
    d.advance(29_999).tick();
    assert_eq!(d.active("r"), Some("b"));
    assert!(!d.in_handover("r"));
    // Cooldown over: the quarantine is forgotten and, failback being on, the role returns.
    d.advance(1).tick();
    assert!(d.get("r").quarantine.is_empty());
    assert_eq!(release_of(&d, "r"), pending(Failback, Some("a")));
    d.release("r");
    assert_eq!((d.active("r"), d.epoch("r")), (Some("a"), 3));
}

#[test]
fn role_failed_without_failback_stays_and_the_quarantine_is_forgotten() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    d.ok(role_failed("r", "a", 1, 30_000));
    assert_eq!(d.active("r"), Some("b"));
    d.advance(30_000).tick();
    assert!(d.get("r").quarantine.is_empty());
    assert_eq!(d.active("r"), Some("b"));
    assert_eq!(next_tick_ms(&d.state), None);
}

#[test]
fn role_failed_everywhere_waits_for_the_first_cooldown() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    d.ok(role_failed("r", "a", 1, 10_000));
    d.advance(1_000).ok(role_failed("r", "b", 2, 5_000));
    assert_eq!(d.active("r"), None);
    assert_eq!(ev(d.last_event()), (RoleFailed, Some("b"), None, 2));
    assert_eq!(
        d.get("r").reason,
        "no eligible server: role r is quarantined on a (it crashed too often); role r is quarantined on b (it crashed too often)"
    );
    // b's quarantine ends first (t0 + 6 s), a's at t0 + 10 s.
    let due = next_tick_ms(&d.state).expect("a quarantine ends");
    assert_eq!(due, d.now + 5_000);
    d.advance(4_999).tick();
    assert_eq!(d.active("r"), None);
    d.advance(1).tick();
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 3));
    assert_eq!(ev(d.last_event()), (Placement, None, Some("b"), 3));
}

#[test]
fn role_failed_while_being_released_completes_the_move() {
    let mut d = Dir::new();
    d.up(&["a", "b", "c"]).role("r", &["a", "b", "c"]);
    d.ok(drain("a"));
    d.ok(role_failed("r", "a", 1, 10_000));
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 2));
    assert!(!d.in_handover("r"));
    {
        let c = released_at(&d, "r", 1);
        no_op(&mut d, c)
    };
}

#[test]
fn stale_failure_reports_are_ignored() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    d.ok(servers_down(&["a"]));
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 2));
    // From the old holder with its old epoch, from the holder with an old epoch, from
    // another server with the current epoch, and a future epoch.
    for cmd in [
        role_failed("r", "a", 1, 10_000),
        role_failed("r", "b", 1, 10_000),
        role_failed("r", "a", 2, 10_000),
        role_failed("r", "b", 3, 10_000),
    ] {
        let summary = no_op(&mut d, cmd);
        assert!(
            summary.starts_with("stale failure report of r"),
            "{summary}"
        );
    }
    assert_eq!(
        {
            let c = released_at(&d, "gone", 2);
            no_op(&mut d, c)
        },
        "role gone is gone"
    );
    assert_eq!(
        no_op(&mut d, role_failed("gone", "b", 2, 1)),
        "role gone is gone"
    );
    // Released of the current epoch while nothing is being released: stale too.
    {
        let c = released_at(&d, "r", 2);
        no_op(&mut d, c)
    };
}

// --- list edits --------------------------------------------------------------------------------

#[test]
fn removing_the_active_server_from_the_list_releases_the_role() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    d.ok(remove_role_server("r", "a"));
    assert_eq!(d.get("r").servers, strings(&["b"]));
    // Until a acknowledges, the role is still held by a, outside its list.
    assert_eq!(d.active("r"), Some("a"));
    assert_eq!(release_of(&d, "r"), pending(Placement, Some("b")));
    assert!(d.running("a").is_empty() && d.running("b").is_empty());
    assert_eq!(d.stopping("a"), vec![(s("r"), 1)]);
    d.release("r");
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 2));
    assert_eq!(ev(d.last_event()), (Placement, Some("a"), Some("b"), 2));
}

#[test]
fn adding_the_server_back_during_its_release_does_not_cancel_it() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    d.ok(remove_role_server("r", "a"));
    d.ok(add_role_server("r", "a", Some(1)));
    assert_eq!(release_of(&d, "r"), pending(Placement, Some("b")));
    d.release("r");
    // The recorded target is still eligible: the handover goes there.
    assert_eq!(d.active("r"), Some("b"));
}

#[test]
fn removing_a_quarantined_server_forgets_its_quarantine() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    d.ok(role_failed("r", "a", 1, 60_000));
    assert!(d.get("r").quarantine.contains_key("a"));
    d.ok(remove_role_server("r", "a"));
    assert!(d.get("r").quarantine.is_empty());
    // Added back, it is eligible at once (and failback is off, so r stays on b).
    d.ok(add_role_server("r", "a", Some(1)));
    d.ok(servers_down(&["b"]));
    assert_eq!(d.active("r"), Some("a"));
}

#[test]
fn deleting_a_role_takes_it_off_its_server() {
    let mut d = Dir::new();
    d.up(&["a"]).role("r", &["a"]).role("q", &["a"]);
    d.ok(delete_role("r"));
    // It leaves the server's set at once, but exists (deleting) until `a` has stopped it.
    assert_eq!(d.running_roles("a"), vec![s("q")]);
    assert_eq!(d.stopping("a"), vec![(s("r"), 1)]);
    assert_eq!(d.state.role("r").unwrap().state(), RoleState::Deleting);
    d.release("r");
    assert!(d.state.role("r").is_err());
    assert!(d.stopping("a").is_empty());
}

#[test]
fn a_deleted_role_cannot_be_created_again_until_its_holder_stopped_it() {
    // Otherwise the new role could start on b while a, cut off, still runs the old one.
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    d.ok(delete_role("r"));
    let refused = d.refuse(create_role("r", &["b"]));
    assert!(
        refused.message.contains("being deleted"),
        "{}",
        refused.message
    );
    assert!(
        d.refuse(set_failback("r", true, None))
            .message
            .contains("being deleted")
    );
    // The holder's lease running out completes the delete as well.
    d.ok(servers_down(&["a"]));
    assert!(d.state.role("r").is_err());
    d.role("r", &["b"]);
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 2));
}

// --- kinds -------------------------------------------------------------------------------------

#[test]
fn a_server_not_advertising_the_kind_is_never_chosen() {
    let mut d = Dir::new();
    d.ok(register("a", &["sensor"]));
    d.ok(register("b", &["cam", "sensor"]));
    d.ok(register("c", &[]));
    d.ok(create_role_full(
        "r",
        "cam",
        &["a", "b", "c"],
        true,
        0,
        None,
    ));
    assert_eq!(d.active("r"), Some("b"));
    d.ok(servers_down(&["b"]));
    assert_eq!(d.active("r"), Some("c"), "no kinds means any kind");
    d.ok(servers_down(&["c"]));
    assert_eq!(d.active("r"), None);
    assert_eq!(
        d.get("r").reason,
        "no eligible server: server a does not run kind cam; server b is down; server c is down"
    );
    d.ok(move_down("r", "a"));
    d.advance(86_400_000).tick();
    assert_eq!(d.active("r"), None);
    assert_eq!(next_tick_ms(&d.state), None);
}

#[test]
fn an_agent_that_stops_advertising_the_kind_releases_the_role() {
    let mut d = Dir::new();
    d.ok(register("a", &["cam"]));
    d.ok(register("b", &[]));
    d.ok(create_role_full("r", "cam", &["a", "b"], false, 0, None));
    assert_eq!(d.active("r"), Some("a"));
    // The agent re-registers (it was never declared down) with other kinds.
    d.ok(register("a", &["sensor"]));
    assert_eq!(d.state.servers["a"].status, ServerStatus::Up);
    assert_eq!(release_of(&d, "r"), pending(Placement, Some("b")));
    d.release("r");
    assert_eq!(d.active("r"), Some("b"));
}

#[test]
fn re_registering_an_up_agent_keeps_its_roles_and_epochs() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    let since = d.state.servers["a"].eligible_since_ms;
    d.advance(5_000).up(&["a"]);
    assert_eq!(d.running("a"), vec![(s("r"), 1)]);
    assert_eq!(d.state.servers["a"].eligible_since_ms, since);
    // An agent that registers for an unknown server creates it.
    d.up(&["new"]);
    assert_eq!(d.state.servers["new"].status, ServerStatus::Up);
    assert_eq!(d.state.servers["new"].eligible_since_ms, d.now);
}

// --- lease expiry during a handover -------------------------------------------------------------

#[test]
fn servers_down_during_a_release_completes_the_move() {
    let mut d = Dir::new();
    d.up(&["a", "b", "c"]).role("r", &["a", "b", "c"]);
    d.ok(drain("a"));
    assert!(d.in_handover("r"));
    d.ok(servers_down(&["a"]));
    assert!(!d.in_handover("r"));
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 2));
    // The history keeps the reason of the handover; the detail says how it ended.
    let e = d.last_event();
    assert_eq!(ev(e), (Maintenance, Some("a"), Some("b"), 2));
    assert_eq!(e.detail, "lease expired");
    // The old agent's late acknowledgement is stale.
    {
        let c = released_at(&d, "r", 1);
        no_op(&mut d, c)
    };
}

#[test]
fn the_target_going_down_during_a_release_is_skipped_by_placement() {
    let mut d = Dir::new();
    d.up(&["a", "b", "c"]).role("r", &["a", "b", "c"]);
    d.ok(move_role("r", "b"));
    d.ok(servers_down(&["b"]));
    assert!(d.in_handover("r"));
    d.release("r");
    // a stopped the role; the first eligible server is a again (a new epoch).
    assert_eq!((d.active("r"), d.epoch("r")), (Some("a"), 2));
    assert_eq!(ev(d.last_event()), (Operator, Some("a"), Some("a"), 2));
    // With a drained as well, the next eligible server takes it.
    d.up(&["b"]);
    d.ok(move_role("r", "b"));
    d.ok(drain("a"));
    d.ok(servers_down(&["b"]));
    d.release("r");
    assert_eq!((d.active("r"), d.epoch("r")), (Some("c"), 3));
}

// --- history -----------------------------------------------------------------------------------

#[test]
fn history_is_bounded_by_history_max() {
    let mut d = Dir::new();
    assert_eq!(d.state.history_max, HISTORY_MAX_DEFAULT);
    d.state.history_max = 3;
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    for _ in 0..5 {
        let from = d.active("r").unwrap().to_string();
        d.ok(servers_down(&[&from]));
        d.up(&[&from]);
    }
    assert_eq!(d.state.history.len(), 3);
    let epochs: Vec<u64> = d.state.history.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs, vec![4, 5, 6], "the oldest events are dropped");
}

#[test]
fn default_history_keeps_the_last_thousand_events() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    for _ in 0..HISTORY_MAX_DEFAULT {
        let from = d.active("r").unwrap().to_string();
        d.ok(servers_down(&[&from]));
        d.up(&[&from]);
    }
    assert_eq!(d.state.history.len(), HISTORY_MAX_DEFAULT);
    assert_eq!(d.last_event().epoch, d.state.last_epoch);
    assert_eq!(
        d.state.history.front().unwrap().epoch,
        d.state.last_epoch - HISTORY_MAX_DEFAULT as u64 + 1
    );
}

/// With failback on, an operator move to a lower server is undone at once: the role is
/// assigned there and, in the same entry, released back to the primary. The new holder
/// never sees it among the roles to run, only among those to stop and acknowledge
/// (`releasing`), which is what lets the handover complete. (Whether such a move should
/// be refused instead is an open question, see the test report.)
#[test]
fn operator_move_below_the_primary_with_failback_on_is_refused() {
    // With failback on the primary would take the role straight back: refuse the move
    // and say why, instead of bouncing the role (two handovers for nothing).
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    d.ok(create_role_full("r", "", &["a", "b"], true, 0, None));
    let refused = d.refuse(move_role("r", "b"));
    assert!(
        refused.message.contains("failback on"),
        "{}",
        refused.message
    );
    assert_eq!((d.active("r"), d.epoch("r")), (Some("a"), 1));
    // With failback off the move goes through, gracefully.
    d.ok(set_failback("r", false, None));
    d.ok(move_role("r", "b"));
    d.release("r");
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), 2));
}
