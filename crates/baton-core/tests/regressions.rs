//! One test per bug found in baton-core; each failed before its fix.

mod common;

use baton_core::controller::next_tick_ms;
use baton_core::{Cause, Command, RefusalKind};
use common::*;

/// A database name whose 7th byte falls inside a multi-byte character made
/// `is_local_database` slice through a char boundary: `apply` panicked, on every node
/// (the same entry replays after a restart, so the directory could never come back).
#[test]
fn database_name_with_multibyte_characters_does_not_panic() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    // "(local" + 'é' (2 bytes) puts byte 7 in the middle of 'é'.
    for db in ["(localé", "データベース", "db-ü-1"] {
        d.ok(create_role_full("r", "", &["a", "b"], false, 0, Some(db)));
        assert_eq!(d.get("r").database.as_deref(), Some(db));
        d.ok(delete_role("r"));
        d.release("r");
    }
    // Still local when the prefix is `(local)` followed by non-ASCII.
    d.refuse_with(
        create_role_full("r", "", &["a", "b"], false, 0, Some("(LOCAL)\\ÉTÉ")),
        RefusalKind::FailedPrecondition,
        "role \"r\" has 2 servers and its database \"(LOCAL)\\\\ÉTÉ\" lives on one of them: move the role database to a remote server first",
    );
}

/// Removing a server that a role was still being handed over from (it had just been taken
/// out of the role's list) was accepted. The role then waited for an acknowledgement from
/// a server the directory no longer knew: the controller never declares an unknown server
/// down, so if that agent was gone the role stayed unassigned forever (invariant 3).
#[test]
fn cannot_remove_a_server_that_still_holds_a_role() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    let epoch = d.epoch("r");
    d.ok(remove_role_server("r", "a"));
    assert!(d.in_handover("r"));
    assert_eq!(d.active("r"), Some("a"));
    d.refuse_with(
        remove_server("a"),
        RefusalKind::FailedPrecondition,
        "server \"a\" still runs role(s) r (being handed over); wait until they have moved",
    );
    // The lease path still completes the move, after which the server may go.
    d.ok(servers_down(&["a"]));
    assert_eq!(d.active("r"), Some("b"));
    assert!(d.epoch("r") > epoch);
    d.ok(remove_server("a"));
}

/// `next_tick_ms` counted a higher-priority server that does not run the role's kind as a
/// failback target: the time it returned stayed in the past forever, so a controller that
/// ticks when the time is due would write a Tick on every loop.
#[test]
fn next_tick_ignores_servers_that_do_not_run_the_kind() {
    let mut d = Dir::new();
    d.ok(register("a", &["other"]));
    d.ok(register("b", &[]));
    d.ok(create_role_full("r", "cam", &["a", "b"], true, 5_000, None));
    assert_eq!(d.active("r"), Some("b"));
    d.advance(60_000).tick();
    assert_eq!(d.active("r"), Some("b"));
    assert!(!d.in_handover("r"));
    assert_eq!(next_tick_ms(&d.state), None);
}

/// A lease expiring during a handover ends that handover: the history must keep the
/// handover's cause (maintenance here), not say "lease expired". A transient edit of
/// mine (mutation testing in the shared work tree) was swept into an unrelated commit
/// (552235e) and recorded every such move as lease_expired until it was restored.
#[test]
fn servers_down_during_a_handover_keeps_the_handover_cause() {
    let mut d = Dir::new();
    d.up(&["a"]).role("r", &["a"]);
    d.ok(drain("a"));
    d.ok(servers_down(&["a"]));
    let e = d.last_event();
    assert_eq!(ev(e), (Cause::Maintenance, Some("a"), None, 1));
    assert_eq!(e.detail, "lease expired");
}

/// A primary that comes back from a quarantine must wait out the failback delay like any
/// other returning server (anti-flap). The quarantine entry used to be forgotten when it
/// ended, and with it the time from which the delay counts, so the role failed back at
/// once.
#[test]
fn failback_after_a_quarantine_waits_for_the_delay() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    d.ok(create_role_full("r", "", &["a", "b"], true, 60_000, None));
    let e = d.epoch("r");
    d.ok(role_failed("r", "a", e, 30_000));
    assert_eq!(d.active("r"), Some("b"));
    // The quarantine ends: a is eligible again, but only from now on.
    d.advance(30_000);
    d.tick();
    assert_eq!(
        d.active("r"),
        Some("b"),
        "failed back as soon as the quarantine ended"
    );
    assert!(!d.in_handover("r"));
    d.advance(59_000);
    d.tick();
    assert!(!d.in_handover("r"), "failed back before the delay ran out");
    d.advance(1_000);
    d.tick();
    assert!(d.in_handover("r"), "no failback once the delay ran out");
    d.release("r");
    assert_eq!(d.active("r"), Some("a"));
}

/// The history bound is a cluster-wide setting carried by the log.
#[test]
fn configure_bounds_the_history_and_refuses_silly_sizes() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    for i in 0..30 {
        d.role(&format!("r{i}"), &["a", "b"]);
    }
    assert_eq!(d.state.history.len(), 30);
    d.ok(Command::Configure { history_max: 10 });
    assert_eq!(d.state.history_max, 10);
    assert_eq!(d.state.history.len(), 10);
    assert_eq!(d.state.history.back().unwrap().role, "r29");
    let refused = d.refuse(Command::Configure { history_max: 5 });
    assert!(
        refused.message.contains("outside 10..=1000000"),
        "{}",
        refused.message
    );
    assert_eq!(d.state.history_max, 10);
}

/// The cluster id is set once: the same id again changes nothing, another id is refused,
/// and a malformed one is refused before it is looked at.
#[test]
fn the_cluster_id_is_set_once() {
    let mut d = Dir::new();
    assert_eq!(d.state.cluster_id, None);
    let id = "0123456789abcdef0123456789abcdef".to_string();
    d.ok(Command::SetClusterId { id: id.clone() });
    assert_eq!(d.state.cluster_id.as_deref(), Some(id.as_str()));
    let again = d.ok(Command::SetClusterId { id: id.clone() });
    assert!(again.summary.contains("already"), "{}", again.summary);
    let other = d.refuse(Command::SetClusterId { id: "ab".into() });
    assert!(
        other.message.contains("cannot become ab"),
        "{}",
        other.message
    );
    for bad in ["", "ABCD", "xyz", &"a".repeat(65)] {
        let r = d.refuse(Command::SetClusterId { id: bad.into() });
        assert!(r.message.contains("hexadecimal"), "{bad:?}: {}", r.message);
    }
    assert_eq!(d.state.cluster_id.as_deref(), Some(id.as_str()));
}
