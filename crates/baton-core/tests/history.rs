//! Positions of history events and resuming after them: one entry that records several
//! events numbers them, a resume in the middle of a revision gets exactly the rest, and a
//! resume from before what trimming dropped is a gap, never a silent skip.

mod common;

use baton_core::{Command, Position, ResumeGap, State, Trimmed};
use common::*;

/// Three roles running on `a` (standby `b`), then `a` goes down: one entry, three events.
fn three_moves_in_one_entry() -> (Dir, u64) {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    for r in ["r1", "r2", "r3"] {
        d.role(r, &["a", "b"]);
    }
    d.ok(servers_down(&["a"]));
    let rev = d.index;
    (d, rev)
}

fn positions<'a>(events: impl Iterator<Item = &'a baton_core::Event>) -> Vec<(u64, u32)> {
    events.map(|e| (e.revision, e.index)).collect()
}

#[test]
fn events_of_one_entry_are_numbered_from_zero() {
    let (d, rev) = three_moves_in_one_entry();
    let at_rev: Vec<_> = d
        .state
        .history
        .iter()
        .filter(|e| e.revision == rev)
        .map(|e| (e.role.as_str(), e.index))
        .collect();
    assert_eq!(at_rev, [("r1", 0), ("r2", 1), ("r3", 2)]);
    // The entries that placed each role recorded one event each: index 0.
    assert!(
        d.state
            .history
            .iter()
            .filter(|e| e.revision != rev)
            .all(|e| e.index == 0)
    );
    // Positions increase strictly along the history.
    let ps: Vec<Position> = d.state.history.iter().map(|e| e.position()).collect();
    assert!(ps.windows(2).all(|w| w[0] < w[1]), "{ps:?}");
}

#[test]
fn resuming_in_the_middle_of_a_revision_gets_exactly_the_rest() {
    let (d, rev) = three_moves_in_one_entry();
    let after_first = Position::at(rev, 0);
    assert_eq!(d.state.check_resume(after_first), Ok(()));
    assert_eq!(
        positions(d.state.events_after(after_first)),
        [(rev, 1), (rev, 2)]
    );
    // "After revision R" still means after all of it.
    assert_eq!(positions(d.state.events_after(Position::end_of(rev))), []);
    assert_eq!(
        positions(d.state.events_after(Position::end_of(rev - 1))),
        [(rev, 0), (rev, 1), (rev, 2)]
    );
    // After revision 0: everything.
    assert_eq!(
        d.state.events_after(Position::end_of(0)).count(),
        d.state.history.len()
    );
}

#[test]
fn an_untrimmed_history_resumes_from_anywhere() {
    assert_eq!(State::default().check_resume(Position::end_of(0)), Ok(()));
    let (d, _) = three_moves_in_one_entry();
    assert_eq!(d.state.trimmed, Trimmed::Nothing);
    assert_eq!(d.state.check_resume(Position::end_of(0)), Ok(()));
    assert_eq!(d.state.check_resume(Position::at(1, 0)), Ok(()));
}

#[test]
fn resuming_from_before_what_was_trimmed_is_a_gap() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    for i in 0..10 {
        d.role(&format!("r{i}"), &["a", "b"]);
    }
    d.ok(Command::Configure { history_max: 10 });
    assert_eq!(d.state.trimmed, Trimmed::Nothing, "10 events fit");
    // `a` goes down: its 10 moves, in one revision, push out all 10 placement events.
    d.ok(servers_down(&["a"]));
    let rev = d.index;
    assert_eq!(d.state.history.len(), 10);
    assert_eq!(d.state.oldest_kept(), Some(Position::at(rev, 0)));
    let dropped = d.state.trimmed;
    let Trimmed::Through(t) = dropped else {
        panic!("nothing recorded as trimmed: {dropped:?}");
    };
    assert!(t.revision < rev, "{t:?}");

    // The last dropped event was seen: nothing lost.
    assert_eq!(d.state.check_resume(t), Ok(()));
    assert_eq!(d.state.check_resume(Position::end_of(t.revision)), Ok(()));
    assert_eq!(d.state.check_resume(Position::end_of(rev - 1)), Ok(()));
    // Anything older is a gap, naming the request and what is still kept.
    for requested in [Position::end_of(0), Position::end_of(t.revision - 1)] {
        let gap = d.state.check_resume(requested).unwrap_err();
        assert_eq!(
            gap,
            ResumeGap {
                requested,
                trimmed_through: t,
                oldest_kept: Some(Position::at(rev, 0)),
                resume_after: Position::end_of(rev - 1),
            }
        );
        let text = gap.to_string();
        assert!(
            text.contains(&format!(
                "cannot resume after revision {}",
                requested.revision
            )) && text.contains(&format!("oldest event kept is at revision {rev} index 0"))
                && text.contains(&format!("resume after revision {}", rev - 1)),
            "{text}"
        );
    }
}

#[test]
fn trimming_inside_a_revision_is_exact_to_the_index() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    for i in 0..12 {
        d.role(&format!("r{i}"), &["a", "b"]);
    }
    d.ok(Command::Configure { history_max: 10 });
    // 12 moves in one revision, 10 kept: indexes 0 and 1 of it are dropped.
    d.ok(servers_down(&["a"]));
    let rev = d.index;
    assert_eq!(d.state.trimmed, Trimmed::Through(Position::at(rev, 1)));
    assert_eq!(d.state.oldest_kept(), Some(Position::at(rev, 2)));
    assert_eq!(d.state.check_resume(Position::at(rev, 1)), Ok(()));
    let gap = d.state.check_resume(Position::at(rev, 0)).unwrap_err();
    assert_eq!(gap.resume_after, Position::at(rev, 1));
    assert!(
        gap.to_string()
            .contains(&format!("resume after revision {rev} index 1")),
        "{gap}"
    );
    // "After revision rev - 1" would miss indexes 0 and 1 of rev.
    assert!(d.state.check_resume(Position::end_of(rev - 1)).is_err());
}

#[test]
fn an_old_snapshot_loads_numbered_and_conservative() {
    let (d, rev) = three_moves_in_one_entry();
    // A snapshot as written before events had an index and trimming was tracked.
    let mut json: serde_json::Value = serde_json::to_value(&d.state).unwrap();
    json.as_object_mut().unwrap().remove("trimmed");
    for e in json["history"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("index");
    }
    let loaded: State = serde_json::from_value(json).unwrap();
    assert_eq!(loaded.history, d.state.history, "indexes are restored");
    assert_eq!(loaded.trimmed, Trimmed::Unknown);
    let oldest = loaded.oldest_kept().unwrap();
    // Unknown: only from just before the oldest kept event on.
    assert_eq!(loaded.check_resume(oldest.just_before()), Ok(()));
    assert_eq!(loaded.check_resume(Position::at(rev, 0)), Ok(()));
    if oldest.revision > 1 {
        assert!(
            loaded
                .check_resume(Position::end_of(oldest.revision - 2))
                .is_err()
        );
    }
    // A new snapshot round-trips exactly.
    let again: State = serde_json::from_str(&serde_json::to_string(&d.state).unwrap()).unwrap();
    assert_eq!(again, d.state);
}
