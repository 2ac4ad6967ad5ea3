//! Standby readiness, case by case: each case builds a directory, then compares the
//! role's readiness, rendered as one line per standby, with the expected text.

mod common;

use baton_core::readiness::reason;
use baton_core::{Command, State};
use common::*;

/// `ready/total [AT RISK]` then `server:ready` or `server:<reason>` per standby.
fn golden(state: &State, role: &str) -> String {
    let r = state.standby_readiness(role).expect("known role");
    let mut out = format!(
        "{}/{}{}",
        r.ready(),
        r.total(),
        if r.at_risk() { " AT RISK" } else { "" }
    );
    for s in &r.standbys {
        assert_eq!(s.ready, s.reason.is_none(), "{s:?}");
        out.push_str(&format!(" {}:{}", s.server, s.reason.unwrap_or("ready")));
    }
    out
}

fn three_up() -> Dir {
    let mut d = Dir::new();
    d.up(&["a", "b", "c"]).role("r", &["a", "b", "c"]);
    d
}

#[test]
fn every_standby_up_is_ready() {
    let d = three_up();
    assert_eq!(d.active("r"), Some("a"));
    assert_eq!(golden(&d.state, "r"), "2/2 b:ready c:ready");
}

#[test]
fn a_standby_declared_down_then_one_drained_leaves_the_role_at_risk() {
    let mut d = three_up();
    d.ok(servers_down(&["b"]));
    assert_eq!(golden(&d.state, "r"), "1/2 b:down c:ready");
    d.ok(drain("c"));
    assert_eq!(golden(&d.state, "r"), "0/2 AT RISK b:down c:maintenance");
    // The agent comes back: ready again.
    d.ok(register("b", &[]));
    assert_eq!(golden(&d.state, "r"), "1/2 b:ready c:maintenance");
}

#[test]
fn the_active_server_is_never_its_own_standby_and_moves_with_the_role() {
    let mut d = three_up();
    d.ok(servers_down(&["a"]));
    assert_eq!(d.active("r"), Some("b"));
    assert_eq!(golden(&d.state, "r"), "1/2 a:down c:ready");
}

#[test]
fn a_server_without_an_agent_yet_is_not_ready() {
    let mut d = Dir::new();
    d.up(&["a"]);
    d.ok(add_server("b"));
    d.role("r", &["a", "b"]);
    assert_eq!(
        golden(&d.state, "r"),
        format!("0/1 AT RISK b:{}", reason::UNKNOWN)
    );
}

#[test]
fn a_standby_that_does_not_run_the_kind_is_not_ready() {
    let mut d = Dir::new();
    d.up(&["a"]);
    d.ok(register("b", &["other"]));
    d.ok(register("c", &["cam"]));
    d.ok(create_role_full(
        "r",
        "cam",
        &["a", "b", "c"],
        false,
        0,
        None,
    ));
    assert_eq!(
        golden(&d.state, "r"),
        format!("1/2 b:{} c:ready", reason::KIND)
    );
}

#[test]
fn a_quarantined_standby_is_ready_again_once_its_cooldown_ends() {
    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    d.ok(role_failed("r", "a", 1, 30_000));
    assert_eq!(d.active("r"), Some("b"));
    assert_eq!(golden(&d.state, "r"), "0/1 AT RISK a:quarantined");
    d.advance(29_999).tick();
    assert_eq!(golden(&d.state, "r"), "0/1 AT RISK a:quarantined");
    d.advance(1).tick();
    assert_eq!(golden(&d.state, "r"), "1/1 a:ready");
}

#[test]
fn a_single_server_role_has_no_standby_and_is_at_risk() {
    let mut d = Dir::new();
    d.up(&["a"]).role("r", &["a"]);
    assert_eq!(golden(&d.state, "r"), "0/0 AT RISK");
}

#[test]
fn a_role_that_runs_nowhere_counts_every_listed_server() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    d.ok(drain("a"));
    d.ok(drain("b"));
    d.role("r", &["a", "b"]);
    assert_eq!(d.active("r"), None);
    assert_eq!(
        golden(&d.state, "r"),
        "0/2 AT RISK a:maintenance b:maintenance"
    );
}

#[test]
fn a_main_server_without_directory_failover_is_not_ready() {
    let mut d = Dir::new();
    d.up(&["a"]);
    d.ok(Command::RegisterAgent {
        server: s("m"),
        kinds: vec![],
        main: true,
        instance: Default::default(),
        replaces: None,
    });
    d.role("r", &["a", "m"]);
    assert_eq!(golden(&d.state, "r"), "1/1 m:ready");
    d.index += 1;
    d.state.apply_membership(d.index, 1);
    assert_eq!(
        golden(&d.state, "r"),
        format!("0/1 AT RISK m:{}", reason::MAIN_WITHOUT_FAILOVER)
    );
}

#[test]
fn a_role_being_deleted_has_no_standbys_and_an_unknown_role_has_no_answer() {
    let mut d = three_up();
    d.ok(delete_role("r"));
    assert!(d.get("r").deleting, "still stopping on a");
    assert_eq!(golden(&d.state, "r"), "0/0");
    assert!(d.state.standby_readiness("nope").is_none());
}
