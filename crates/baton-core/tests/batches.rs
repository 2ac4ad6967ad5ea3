//! Entries that carry several writes (group commit): each write is applied, refused,
//! deduplicated and audited on its own, at the entry's log index, and directory time
//! advances once per entry. The property that a packed log applies like the same writes
//! one per entry is in `properties.rs`.

mod common;

use baton_core::{Command, Entry, RefusalKind, Write};
use common::*;

fn write(cmd: Command, by: &str, request: &str) -> Write {
    Write {
        now_ms: 1_000,
        cmd,
        by: by.into(),
        request: request.into(),
    }
}

/// Apply `writes` as one entry at the next index.
fn apply_batch(
    d: &mut Dir,
    writes: Vec<Write>,
    advance_ms: u64,
) -> Vec<Result<String, RefusalKind>> {
    d.index += 1;
    let entry = Entry::of_writes(writes, advance_ms).expect("writes");
    d.state
        .apply_all(d.index, &entry)
        .into_iter()
        .map(|r| r.map(|o| o.summary).map_err(|r| r.kind))
        .collect()
}

#[test]
fn a_refused_write_leaves_the_others_of_its_entry_applied() {
    let mut d = Dir::new();
    let out = apply_batch(
        &mut d,
        vec![
            write(add_server("a"), "", ""),
            write(add_server("a"), "", ""),
            write(add_server("b"), "", ""),
            write(remove_server("nope"), "", ""),
        ],
        0,
    );
    assert_eq!(
        out,
        vec![
            Ok("server a added".into()),
            Err(RefusalKind::AlreadyExists),
            Ok("server b added".into()),
            Err(RefusalKind::NotFound),
        ]
    );
    assert_eq!(d.state.revision, d.index);
    assert!(d.state.servers.contains_key("a") && d.state.servers.contains_key("b"));
}

#[test]
fn a_retry_inside_the_same_entry_applies_once() {
    let mut d = Dir::new();
    let out = apply_batch(
        &mut d,
        vec![
            write(add_server("a"), "", "req-1"),
            write(add_server("a"), "", "req-1"),
        ],
        0,
    );
    // The second is the same write retried: the first outcome, not "already exists".
    assert_eq!(
        out,
        vec![Ok("server a added".into()), Ok("server a added".into())]
    );
    // And a later retry of it, in another entry, too.
    let out = apply_batch(&mut d, vec![write(add_server("a"), "", "req-1")], 0);
    assert_eq!(out, vec![Ok("server a added".into())]);
}

#[test]
fn each_write_of_an_entry_signs_only_its_own_events() {
    let mut d = Dir::new();
    d.up(&["a", "b"]);
    let before = d.state.history.len();
    // Two operators create a role each, in one entry: each role is placed at once (an
    // event each, at one revision), and each event is signed by the operator whose
    // write caused it.
    let out = apply_batch(
        &mut d,
        vec![
            write(create_role("r1", &["a", "b"]), "operator alice", ""),
            write(create_role("r2", &["b", "a"]), "operator bob", ""),
        ],
        0,
    );
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    let new: Vec<_> = d.state.history.iter().skip(before).collect();
    assert!(!new.is_empty());
    for e in &new {
        assert_eq!(e.revision, d.index);
        let expected = if e.role == "r1" {
            "operator alice"
        } else {
            "operator bob"
        };
        assert_eq!(e.by, expected, "{e:?}");
    }
    assert!(new.iter().any(|e| e.role == "r1") && new.iter().any(|e| e.role == "r2"));
    let ranks: Vec<u32> = new.iter().map(|e| e.index).collect();
    assert_eq!(ranks, (0..new.len() as u32).collect::<Vec<_>>());
}

#[test]
fn directory_time_advances_once_per_entry() {
    let mut d = Dir::new();
    let elapsed = d.state.elapsed_ms;
    apply_batch(
        &mut d,
        vec![
            write(add_server("a"), "", ""),
            write(add_server("b"), "", ""),
            write(add_server("c"), "", ""),
        ],
        700,
    );
    assert_eq!(d.state.elapsed_ms, elapsed + 700);
}

#[test]
fn entries_without_a_batch_are_stored_as_before() {
    // A single write's entry has no `batch` key (older nodes read it), and an entry
    // stored before batches existed reads with none.
    let single = Entry::new(5, add_server("a"));
    let json = serde_json::to_string(&single).unwrap();
    assert!(!json.contains("batch"), "{json}");
    let old: Entry = serde_json::from_str(
        r#"{"now_ms":5,"cmd":{"AddServer":{"name":"a","main":false,"kinds":[]}},"advance_ms":0}"#,
    )
    .unwrap();
    assert!(old.batch.is_empty());
    let packed = Entry::of_writes(
        vec![
            write(add_server("a"), "", ""),
            write(add_server("b"), "", "r"),
        ],
        3,
    )
    .unwrap();
    assert_eq!(packed.writes(), 2);
    let back: Entry = serde_json::from_str(&serde_json::to_string(&packed).unwrap()).unwrap();
    assert_eq!(back, packed);
    assert!(Entry::of_writes(Vec::new(), 0).is_none());
}
