//! Agents' fence reports (`Command::ReportFenced`): one `fenced` history event per
//! report, nothing moved, a resent report recorded once, and the refusals.

mod common;

use baton_core::{AgentInstance, Cause, Command, RefusalKind, State};
use common::*;

/// Register `server`'s agent as instance `instance` (any kind).
fn register_as(server: &str, instance: &str) -> Command {
    Command::RegisterAgent {
        server: server.into(),
        kinds: vec![],
        main: false,
        instance: AgentInstance {
            id: instance.into(),
            address: String::new(),
        },
        replaces: None,
    }
}

fn fenced(server: &str, instance: &str, number: u64, role: &str, epoch: u64) -> Command {
    Command::ReportFenced {
        server: server.into(),
        instance: instance.into(),
        number,
        role: role.into(),
        epoch,
        ago_ms: 1_250,
    }
}

/// `a` (instance i1) and `b` up, role `r` running on `a`.
fn setup() -> Dir {
    let mut d = Dir::new();
    d.ok(register_as("a", "i1"));
    d.ok(register_as("b", "i2"));
    d.role("r", &["a", "b"]);
    assert_eq!(d.active("r"), Some("a"));
    d
}

/// The state apart from what a fence report may change (the revision, the history, the
/// servers' fence tables).
fn without_reports(st: &State) -> State {
    let mut st = st.clone();
    st.revision = 0;
    st.history.clear();
    for s in st.servers.values_mut() {
        s.fence_reports = Default::default();
    }
    st
}

#[test]
fn a_report_records_one_event_and_moves_nothing() {
    let mut d = setup();
    let epoch = d.epoch("r");
    let before = d.state.clone();
    let out = d.ok(fenced("a", "i1", 1, "r", epoch));
    assert_eq!(out.summary, format!("role r epoch {epoch} fenced on a"));
    assert_eq!(d.state.history.len(), before.history.len() + 1);
    let e = d.state.history.back().expect("an event");
    assert_eq!(e.cause, Cause::Fenced);
    assert_eq!(e.cause.as_str(), "fenced");
    assert_eq!((e.role.as_str(), e.epoch), ("r", epoch));
    assert_eq!((e.from.as_deref(), e.to.as_deref()), (Some("a"), None));
    assert_eq!(e.revision, d.index);
    assert_eq!(
        e.detail,
        "the agent on a stopped the role: no renewal acknowledged within its lease (1.2 s before it could report it)"
    );
    assert_eq!(without_reports(&d.state), without_reports(&before));
    assert_eq!(d.active("r"), Some("a"));
    assert_eq!(d.running("a"), vec![("r".to_string(), epoch)]);
    assert_eq!(d.state.fences_recorded("a", "i1"), (vec![1], 0));
    assert_eq!(d.state.fences_recorded("a", "other"), (vec![], 0));
}

#[test]
fn a_resent_report_is_recorded_once_whatever_the_order() {
    let mut d = setup();
    let epoch = d.epoch("r");
    d.ok(fenced("a", "i1", 2, "r", epoch));
    let after_first = d.state.clone();
    // The same report again (another session, after another ack): nothing but the
    // revision changes.
    let out = d.ok(fenced("a", "i1", 2, "r", epoch));
    assert_eq!(out.summary, "fence report 2 of server a already recorded");
    let mut expected = after_first;
    expected.revision = d.index;
    assert_eq!(d.state, expected);
    // An older number that arrives later is a fence of its own, recorded once too.
    d.ok(fenced("a", "i1", 1, "r", epoch));
    d.ok(fenced("a", "i1", 1, "r", epoch));
    let fences = d
        .state
        .history
        .iter()
        .filter(|e| e.cause == Cause::Fenced)
        .count();
    assert_eq!(fences, 2);
    assert_eq!(d.state.fences_recorded("a", "i1"), (vec![1, 2], 0));
}

#[test]
fn a_new_agent_instance_numbers_its_fences_anew() {
    let mut d = setup();
    let epoch = d.epoch("r");
    d.ok(fenced("a", "i1", 1, "r", epoch));
    // i1 is declared down; a restarted agent (i3) takes the name and fences too.
    d.ok(servers_down(&["a"]));
    d.ok(register_as("a", "i3"));
    let events = d.state.history.len();
    d.ok(fenced("a", "i3", 1, "r", epoch));
    assert_eq!(d.state.history.len(), events + 1);
    assert_eq!(d.state.fences_recorded("a", "i3"), (vec![1], 0));
    assert_eq!(d.state.fences_recorded("a", "i1"), (vec![], 0));
}

#[test]
fn reports_of_a_moved_or_deleted_role_are_recorded_as_they_are() {
    let mut d = setup();
    let old = d.epoch("r");
    // r moved to b meanwhile (a's lease ran out): a's fence of the old epoch is still
    // a fact, recorded with the epoch it names, and r stays on b.
    d.ok(servers_down(&["a"]));
    assert_eq!(d.active("r"), Some("b"));
    let now = d.epoch("r");
    d.ok(register_as("a", "i1"));
    d.ok(fenced("a", "i1", 1, "r", old));
    let e = d.state.history.back().unwrap();
    assert_eq!((e.cause, e.epoch), (Cause::Fenced, old));
    assert_eq!((d.active("r"), d.epoch("r")), (Some("b"), now));
    // Deleted since: recorded, saying so.
    d.ok(delete_role("r"));
    d.release("r");
    assert!(d.state.role("r").is_err());
    d.ok(fenced("a", "i1", 2, "r", now));
    let e = d.state.history.back().unwrap();
    assert_eq!(e.cause, Cause::Fenced);
    assert!(
        e.detail.ends_with("; the role no longer exists"),
        "{}",
        e.detail
    );
}

#[test]
fn reports_that_cannot_be_true_are_refused_and_change_nothing() {
    let mut d = setup();
    let epoch = d.epoch("r");
    d.refuse_with(
        fenced("z", "i1", 1, "r", epoch),
        RefusalKind::NotFound,
        "server \"z\" does not exist",
    );
    d.refuse_with(
        fenced("a", "i9", 1, "r", epoch),
        RefusalKind::FailedPrecondition,
        "fence report of server \"a\" from agent instance \"i9\", but instance \"i1\" holds that name",
    );
    d.refuse_with(
        fenced("a", "i1", 1, "r", epoch + 1),
        RefusalKind::InvalidArgument,
        &format!(
            "fence report of role \"r\" at epoch {}, but role \"r\" never handed out an epoch beyond {epoch}",
            epoch + 1
        ),
    );
    let last = d.state.last_epoch;
    d.refuse_with(
        fenced("a", "i1", 1, "gone", last + 1),
        RefusalKind::InvalidArgument,
        &format!(
            "fence report of role \"gone\" at epoch {}, but the directory never handed out an epoch beyond {last}",
            last + 1
        ),
    );
    d.refuse_with(
        fenced("a", "i1", 0, "r", epoch),
        RefusalKind::InvalidArgument,
        "fence report number 0: agents number their fences from 1",
    );
    d.refuse_with(
        fenced("a", "i1", 1, "r", 0),
        RefusalKind::InvalidArgument,
        "fence report of role \"r\" at epoch 0: no role ever runs at epoch 0",
    );
    let r = d.refuse(fenced("a", "i1", 1, "bad name!", 1));
    assert_eq!(r.kind, RefusalKind::InvalidArgument);
    let r = d.refuse(fenced("a", "i1\n", 1, "r", epoch));
    assert_eq!(r.kind, RefusalKind::InvalidArgument);
    assert!(
        d.state.history.iter().all(|e| e.cause != Cause::Fenced),
        "a refusal recorded an event"
    );
}

/// Snapshots keep the table; one written before it existed loads with empty tables.
#[test]
fn snapshots_keep_the_fence_tables() {
    let mut d = setup();
    let epoch = d.epoch("r");
    d.ok(fenced("a", "i1", 1, "r", epoch));
    let json = serde_json::to_value(&d.state).unwrap();
    let back: State = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, d.state);
    let mut old = json;
    for s in old["servers"].as_object_mut().unwrap().values_mut() {
        s.as_object_mut().unwrap().remove("fence_reports");
    }
    let old: State = serde_json::from_value(old).unwrap();
    assert!(old.servers.values().all(|s| s.fence_reports.is_empty()));
}
