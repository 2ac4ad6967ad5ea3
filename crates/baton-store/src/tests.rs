//! Tests of the store: openraft's conformance suite, restart, snapshots, corruption.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use baton_core::{Command, Outcome, RefusalKind};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    AnyError, BasicNode, CommittedLeaderId, EntryPayload, RaftLogReader, RaftSnapshotBuilder,
    StorageIOError,
};
use tempfile::TempDir;

use crate::codec::{encode, frame};
use crate::disk::Disk;
use crate::fault::{Damage, Target, damage};
use crate::{
    LogEntry, LogId, LogStore, Membership, StateMachineStore, StorageError, StoreError,
    StoredMembership, TypeConfig, Vote, open,
};

// --- helpers ----------------------------------------------------------------------------

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> LogEntry {
    LogEntry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn normal(term: u64, index: u64, cmd: Command) -> LogEntry {
    LogEntry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(baton_core::Entry {
            by: Default::default(),
            request: Default::default(),
            now_ms: 1_000 + index,
            cmd,
            advance_ms: 0,
            batch: Vec::new(),
        }),
    }
}

fn nodes(ids: &[u64]) -> BTreeMap<u64, BasicNode> {
    ids.iter()
        .map(|i| (*i, BasicNode::new(format!("127.0.0.1:{}", 7000 + i))))
        .collect()
}

fn membership_of(configs: &[&[u64]]) -> Membership {
    let all: Vec<u64> = configs.iter().flat_map(|c| c.iter().copied()).collect();
    Membership::new(
        configs
            .iter()
            .map(|c| c.iter().copied().collect::<BTreeSet<u64>>())
            .collect(),
        nodes(&all),
    )
}

fn membership(term: u64, index: u64, voters: &[u64]) -> LogEntry {
    LogEntry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(membership_of(&[voters])),
    }
}

fn add_server(name: &str) -> Command {
    Command::AddServer {
        name: name.into(),
        main: false,
        kinds: vec![],
    }
}

/// Entries 0..=n: membership {1,2,3} at 0, then servers s1..sn.
fn sample_log(n: u64) -> Vec<LogEntry> {
    let mut v = vec![membership(1, 0, &[1, 2, 3])];
    v.extend((1..=n).map(|i| normal(1 + i / 4, i, add_server(&format!("s{i}")))));
    v
}

fn fresh() -> (TempDir, LogStore, StateMachineStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, sm) = open(dir.path()).expect("open");
    (dir, log, sm)
}

/// Append `entries` and close the store.
async fn write_and_close(dir: &Path, entries: Vec<LogEntry>) {
    let (mut log, _sm) = open(dir).expect("open");
    log.blocking_append(entries).await.expect("append");
}

/// Open must fail with corruption; returns the message.
fn open_corrupt(dir: &Path) -> String {
    match open(dir) {
        Ok(_) => panic!("open succeeded on a damaged store"),
        Err(e) => {
            assert!(e.is_corruption(), "not reported as corruption: {e}");
            let msg = e.to_string();
            eprintln!("{msg}");
            assert!(msg.contains("re-add"), "no remedy in: {msg}");
            assert!(
                msg.contains("baton cluster remove-node"),
                "no remedy in: {msg}"
            );
            let canonical = std::fs::canonicalize(dir).unwrap();
            assert!(
                msg.contains(&canonical.display().to_string()),
                "no data dir in: {msg}"
            );
            msg
        }
    }
}

// --- openraft's conformance suite ---------------------------------------------------------

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (log, sm) = open(dir.path()).map_err(StoreError::write_store)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

// --- encoding -------------------------------------------------------------------------------

#[test]
fn entries_round_trip_through_json() {
    let entries = vec![
        blank(3, 7),
        normal(
            3,
            8,
            Command::CreateRole {
                name: "cam-1".into(),
                kind: "".into(),
                servers: vec!["a".into(), "b".into()],
                failback: true,
                failback_delay_ms: 5_000,
                database: Some("db-1".into()),
            },
        ),
        membership(4, 9, &[1, 2, 3]),
        LogEntry {
            log_id: log_id(4, 10),
            payload: EntryPayload::Membership(membership_of(&[&[1, 2, 3], &[3, 4, 5]])),
        },
    ];
    for e in entries {
        let bytes = encode("entry", &e).unwrap();
        let back: LogEntry = crate::codec::decode(&bytes).unwrap();
        assert_eq!(format!("{e:?}"), format!("{back:?}"));
        assert_eq!(e.log_id, back.log_id);
    }
}

// --- state machine --------------------------------------------------------------------------

#[tokio::test]
async fn apply_normal_membership_and_blank_entries() {
    let (_dir, _log, mut sm) = fresh();
    let mut rx = sm.subscribe();
    assert_eq!(*rx.borrow(), 0);

    let out = sm
        .apply(vec![
            membership(1, 0, &[1, 2, 3]),
            blank(1, 1),
            normal(1, 2, add_server("a")),
            normal(1, 3, add_server("a")),
            LogEntry {
                log_id: log_id(2, 4),
                payload: EntryPayload::Membership(membership_of(&[&[1, 2, 3], &[3, 4]])),
            },
        ])
        .await
        .unwrap();
    assert_eq!(out.len(), 5);
    // Membership and blank entries carry no write; a normal entry one outcome per write.
    assert!(out[0].is_empty() && out[1].is_empty() && out[4].is_empty());
    assert_eq!(out[2].len(), 1);
    assert_eq!(out[2][0].as_ref().unwrap().summary, "server a added");
    assert_eq!(
        out[3][0].as_ref().unwrap_err().kind,
        RefusalKind::AlreadyExists
    );

    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 4);
    assert_eq!(sm.last_applied(), Some(log_id(2, 4)));
    sm.read(|s| {
        assert_eq!(s.revision, 4);
        assert_eq!(s.voters, 4, "voters of a joint config counted once each");
        assert!(s.servers.contains_key("a"));
    });
    let (applied, mem) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(2, 4)));
    assert_eq!(mem.log_id(), &Some(log_id(2, 4)));
    assert_eq!(sm.state().read().unwrap().servers.len(), 1);
}

#[tokio::test]
async fn snapshot_transfers_and_bad_snapshot_is_refused() {
    let (_d1, _l1, mut leader) = fresh();
    let (_d2, _l2, mut follower) = fresh();
    leader.apply(sample_log(5)).await.unwrap();
    let snap = leader.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(2, 5)));
    let bytes = snap.snapshot.get_ref().clone();

    // A damaged copy is refused and changes nothing.
    for broken in [
        {
            let mut b = bytes.clone();
            let n = b.len();
            b[n / 2] ^= 0x10;
            b
        },
        bytes[..3].to_vec(),
        frame(b"{\"not\": \"a snapshot\"}"),
    ] {
        let err = follower
            .install_snapshot(&snap.meta, Box::new(Cursor::new(broken)))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("received snapshot is invalid"),
            "{err}"
        );
        assert_eq!(follower.last_applied(), None);
        assert!(follower.get_current_snapshot().await.unwrap().is_none());
    }

    // Metadata that disagrees with the contents is refused too.
    let mut wrong = snap.meta.clone();
    wrong.last_log_id = Some(log_id(2, 6));
    assert!(
        follower
            .install_snapshot(&wrong, Box::new(Cursor::new(bytes.clone())))
            .await
            .is_err()
    );

    let mut rx = follower.subscribe();
    follower
        .install_snapshot(&snap.meta, Box::new(Cursor::new(bytes.clone())))
        .await
        .unwrap();
    assert_eq!(*rx.borrow_and_update(), 5);
    assert_eq!(follower.last_applied(), Some(log_id(2, 5)));
    assert_eq!(
        follower.read(|s| s.clone()),
        leader.read(|s| s.clone()),
        "follower state equals leader state"
    );
    let cur = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(cur.meta, snap.meta);
    assert_eq!(cur.snapshot.get_ref(), &bytes);
}

#[tokio::test]
async fn an_older_snapshot_never_replaces_a_newer_one() {
    let (_d1, _l1, mut leader) = fresh();
    let (_d2, _l2, mut follower) = fresh();
    follower.apply(sample_log(2)).await.unwrap();
    let old = follower.build_snapshot().await.unwrap();
    leader.apply(sample_log(6)).await.unwrap();
    let new = leader.build_snapshot().await.unwrap();
    follower
        .install_snapshot(&new.meta, new.snapshot.clone())
        .await
        .unwrap();
    // A build that copied the state before the install finishes after it.
    let stored = follower
        .store_snapshot_unless_older(&old.meta, old.snapshot.get_ref())
        .await
        .unwrap();
    assert!(!stored);
    let cur = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(cur.meta, new.meta);
}

// --- restart --------------------------------------------------------------------------------

#[tokio::test]
async fn restart_brings_back_vote_log_committed_snapshot_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let entries = sample_log(8);
    let vote = Vote::new_committed(2, 1);
    let snapshot_meta;
    let state_at_5;
    {
        let (mut log, mut sm) = open(dir.path()).unwrap();
        log.save_vote(&vote).await.unwrap();
        log.blocking_append(entries[..=5].to_vec()).await.unwrap();
        sm.apply(entries[..=3].to_vec()).await.unwrap();
        let snap = sm.build_snapshot().await.unwrap();
        snapshot_meta = snap.meta;
        assert_eq!(snapshot_meta.last_log_id, Some(log_id(1, 3)));
        log.purge(log_id(1, 2)).await.unwrap();
        log.blocking_append(entries[6..].to_vec()).await.unwrap();
        sm.apply(entries[4..=5].to_vec()).await.unwrap();
        log.save_committed(Some(log_id(2, 5))).await.unwrap();
        state_at_5 = sm.read(|s| s.clone());
        assert_eq!(state_at_5.revision, 5);
    }

    let (mut log, mut sm) = open(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 5)));
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(st.last_log_id, Some(log_id(3, 8)));
    let got = log.try_get_log_entries(0..).await.unwrap();
    assert_eq!(
        got.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>(),
        entries[3..]
            .iter()
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>()
    );

    // The state machine comes back at the snapshot...
    let cur = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(cur.meta, snapshot_meta);
    let (applied, mem) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 3)));
    assert_eq!(
        mem,
        StoredMembership::new(Some(log_id(1, 0)), membership_of(&[&[1, 2, 3]]))
    );
    assert_eq!(*sm.subscribe().borrow(), 3);
    sm.read(|s| {
        assert_eq!(s.revision, 3);
        assert_eq!(s.voters, 3);
        assert_eq!(s.servers.len(), 3);
    });
    // ...and re-applying the log up to the committed index (as openraft does on start)
    // gives the state it had.
    let replay = log.try_get_log_entries(4..=5).await.unwrap();
    sm.apply(replay).await.unwrap();
    assert_eq!(sm.read(|s| s.clone()), state_at_5);

    let verified = log.verify().unwrap();
    assert_eq!(verified.entries, 6);
    assert_eq!(verified.first_log_id, Some(log_id(1, 3)));
    assert_eq!(verified.last_log_id, Some(log_id(3, 8)));
}

#[tokio::test]
async fn interrupted_purge_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    write_and_close(dir.path(), sample_log(6)).await;
    {
        // The purge mark is durable but the entries were not removed yet.
        let disk = Disk::open(dir.path()).unwrap();
        disk.put_last_purged(&log_id(1, 3)).unwrap();
    }
    let (mut log, _sm) = open(dir.path()).unwrap();
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(st.last_log_id, Some(log_id(2, 6)));
    let got = log.try_get_log_entries(0..).await.unwrap();
    assert_eq!(got.first().unwrap().log_id.index, 4);
    assert_eq!(got.len(), 3);
}

#[tokio::test]
async fn second_open_of_the_same_dir_is_refused() {
    let (dir, _log, _sm) = fresh();
    match open(dir.path()) {
        Err(StoreError::Open { .. }) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a second open succeeded"),
    }
}

#[tokio::test]
async fn oversized_entry_is_refused() {
    let (_dir, mut log, _sm) = fresh();
    let huge = Command::RoleFailed {
        role: "r".into(),
        server: "s".into(),
        epoch: 1,
        reason: "x".repeat(crate::ENTRY_MAX_BYTES),
        cooldown_ms: 0,
    };
    let err = log
        .blocking_append(vec![normal(1, 0, huge)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("over the limit"), "{err}");
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, None);
}

#[tokio::test]
async fn oversized_entry_is_refused_before_it_reaches_the_log() {
    let (_dir, mut log, _sm) = fresh();
    let entry = baton_core::Entry {
        by: Default::default(),
        request: Default::default(),
        now_ms: 1,
        cmd: Command::RoleFailed {
            role: "r".into(),
            server: "s".into(),
            epoch: 1,
            reason: "x".repeat(crate::ENTRY_MAX_BYTES),
            cooldown_ms: 0,
        },
        advance_ms: 0,
        batch: Vec::new(),
    };
    let err = crate::check_entry_size(&entry).unwrap_err();
    let msg = err.to_string();
    let StoreError::TooLarge { len, max, .. } = err else {
        panic!("{msg}")
    };
    assert!(len > crate::ENTRY_MAX_BYTES && max == crate::ENTRY_MAX_BYTES);
    assert_eq!(
        msg,
        format!(
            "a role_failed command encoded as a log entry is {len} bytes, over the limit of 8388608 bytes"
        )
    );
    // Nothing reached the log, and a normal entry is measured like the log measures it.
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, None);
    let small = baton_core::Entry {
        by: Default::default(),
        request: Default::default(),
        now_ms: u64::MAX,
        cmd: Command::Tick,
        advance_ms: u64::MAX,
        batch: Vec::new(),
    };
    let measured = crate::check_entry_size(&small).unwrap();
    let stored = encode(
        "",
        &LogEntry {
            log_id: LogId::new(CommittedLeaderId::new(u64::MAX, u64::MAX), u64::MAX),
            payload: EntryPayload::Normal(small),
        },
    )
    .unwrap();
    assert_eq!(measured, stored.len());
}

/// The validation limits of baton-core bound every valid command far below what the log
/// accepts: the largest valid command of each kind, with the worst JSON escaping (every
/// character of every name and text a `"`), the longest lists and the largest numbers.
#[test]
fn the_largest_valid_commands_fit_in_the_log_many_times_over() {
    use baton_core::{
        DATABASE_MAX_BYTES, KINDS_PER_SERVER_MAX, NAME_MAX_BYTES, REASON_MAX_BYTES,
        SERVERS_DOWN_MAX, SERVERS_PER_ROLE_MAX,
    };
    // A `"` is one byte and encodes as two: the largest expansion of any character a
    // valid name or text may hold (control characters are refused).
    let name = |i: usize| {
        let tag = format!("{i}");
        format!("{tag}{}", "\"".repeat(NAME_MAX_BYTES - tag.len()))
    };
    let names = |n: usize| (0..n).map(name).collect::<Vec<_>>();
    let text = |n: usize| "\"".repeat(n);
    let big = u64::MAX;
    let commands = vec![
        Command::AddServer {
            name: name(0),
            main: true,
            kinds: names(KINDS_PER_SERVER_MAX),
        },
        Command::RemoveServer { name: name(0) },
        Command::CreateRole {
            name: name(0),
            kind: name(1),
            servers: names(SERVERS_PER_ROLE_MAX),
            failback: true,
            failback_delay_ms: baton_core::FAILBACK_DELAY_MAX_MS,
            database: Some(text(DATABASE_MAX_BYTES)),
        },
        Command::DeleteRole { name: name(0) },
        Command::AddRoleServer {
            role: name(0),
            server: name(1),
            position: Some(u32::MAX),
        },
        Command::RemoveRoleServer {
            role: name(0),
            server: name(1),
        },
        Command::MoveRoleServer {
            role: name(0),
            server: name(1),
            up: false,
        },
        Command::SetRole {
            role: name(0),
            failback: Some(false),
            failback_delay_ms: Some(baton_core::FAILBACK_DELAY_MAX_MS),
            database: Some(Some(text(DATABASE_MAX_BYTES))),
        },
        Command::DrainServer { name: name(0) },
        Command::ResumeServer { name: name(0) },
        Command::MoveRole {
            role: name(0),
            server: name(1),
        },
        Command::RegisterAgent {
            server: name(0),
            kinds: names(KINDS_PER_SERVER_MAX),
            main: true,
            instance: baton_core::AgentInstance {
                id: text(baton_core::command::INSTANCE_ID_MAX),
                address: text(baton_core::command::ADDRESS_MAX),
            },
            replaces: Some(text(baton_core::command::INSTANCE_ID_MAX)),
        },
        Command::ServersDown {
            servers: names(SERVERS_DOWN_MAX),
        },
        Command::Released {
            role: name(0),
            server: name(1),
            epoch: big,
        },
        Command::RoleFailed {
            role: name(0),
            server: name(1),
            epoch: big,
            reason: text(REASON_MAX_BYTES),
            cooldown_ms: big,
        },
        Command::Tick,
        Command::Configure {
            history_max: *baton_core::HISTORY_MAX_RANGE.end(),
        },
        Command::SetLease {
            lease_ms: *baton_core::LEASE_MS_RANGE.end(),
            grace_ms: *baton_core::LEASE_MS_RANGE.end(),
        },
        Command::SettleLease {
            expiry_lease_ms: big,
            lease_ms: big,
        },
        Command::ReportFenced {
            server: name(0),
            instance: text(baton_core::command::INSTANCE_ID_MAX),
            number: big,
            role: name(1),
            epoch: big,
            ago_ms: big,
        },
    ];
    let mut kinds = BTreeSet::new();
    let mut largest = 0;
    for cmd in commands {
        every_kind(&cmd);
        cmd.validate()
            .unwrap_or_else(|r| panic!("{} is not valid: {r}", cmd.name()));
        kinds.insert(cmd.name());
        let len = crate::check_entry_size(&baton_core::Entry {
            by: Default::default(),
            request: Default::default(),
            now_ms: big,
            cmd,
            advance_ms: big,
            batch: Vec::new(),
        })
        .unwrap();
        largest = largest.max(len);
    }
    assert_eq!(kinds.len(), 20, "one command of each kind: {kinds:?}");
    // ServersDown is the largest (10,000 names of 64 escaped bytes: about 1.3 MB).
    assert!(
        largest < crate::COMMAND_MAX_BYTES,
        "largest valid command: {largest} bytes"
    );
    // One more server in the list, or one more byte of reason, is refused by validation.
    assert!(
        Command::ServersDown {
            servers: names(SERVERS_DOWN_MAX + 1)
        }
        .validate()
        .is_err()
    );
    assert!(
        Command::RoleFailed {
            role: name(0),
            server: name(1),
            epoch: big,
            reason: text(REASON_MAX_BYTES + 1),
            cooldown_ms: big,
        }
        .validate()
        .is_err()
    );
}

/// Does not compile when a command is added: add its largest form to the test above.
fn every_kind(cmd: &Command) {
    match cmd {
        Command::AddServer { .. }
        | Command::RemoveServer { .. }
        | Command::CreateRole { .. }
        | Command::DeleteRole { .. }
        | Command::AddRoleServer { .. }
        | Command::RemoveRoleServer { .. }
        | Command::MoveRoleServer { .. }
        | Command::SetRole { .. }
        | Command::DrainServer { .. }
        | Command::ResumeServer { .. }
        | Command::MoveRole { .. }
        | Command::RegisterAgent { .. }
        | Command::ServersDown { .. }
        | Command::Released { .. }
        | Command::RoleFailed { .. }
        | Command::Tick
        | Command::Configure { .. }
        | Command::SetLease { .. }
        | Command::SettleLease { .. }
        | Command::SetClusterId { .. }
        | Command::ReportFenced { .. } => {}
    }
}

// --- corruption -----------------------------------------------------------------------------

#[tokio::test]
async fn flipped_bit_in_a_log_entry_is_caught() {
    for byte in [0usize, 2, 4, 20] {
        let dir = tempfile::tempdir().unwrap();
        write_and_close(dir.path(), sample_log(5)).await;
        damage(
            dir.path(),
            Target::LogEntry(3),
            Damage::FlipBit { byte, bit: 3 },
        )
        .unwrap();
        let msg = open_corrupt(dir.path());
        assert!(msg.contains("log entry 3"), "{msg}");
        assert!(msg.contains("checksum mismatch"), "{msg}");
    }
}

#[tokio::test]
async fn truncated_log_entry_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    write_and_close(dir.path(), sample_log(5)).await;
    damage(dir.path(), Target::LogEntry(2), Damage::Truncate(3)).unwrap();
    let msg = open_corrupt(dir.path());
    assert!(msg.contains("log entry 2"), "{msg}");
    assert!(msg.contains("shorter than its 4-byte checksum"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    write_and_close(dir.path(), sample_log(5)).await;
    damage(dir.path(), Target::LogEntry(4), Damage::Truncate(12)).unwrap();
    let msg = open_corrupt(dir.path());
    assert!(msg.contains("log entry 4"), "{msg}");
}

#[tokio::test]
async fn entry_with_valid_checksum_but_bad_payload_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    write_and_close(dir.path(), sample_log(5)).await;
    damage(
        dir.path(),
        Target::LogEntry(5),
        Damage::Replace(frame(b"{\"log_id\": 12")),
    )
    .unwrap();
    let msg = open_corrupt(dir.path());
    assert!(msg.contains("log entry 5"), "{msg}");
    assert!(msg.contains("does not decode"), "{msg}");
}

#[tokio::test]
async fn entry_under_the_wrong_index_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    write_and_close(dir.path(), sample_log(5)).await;
    let other = encode("entry", &sample_log(5)[4]).unwrap();
    damage(dir.path(), Target::LogEntry(3), Damage::Replace(other)).unwrap();
    let msg = open_corrupt(dir.path());
    assert!(msg.contains("log entry 3"), "{msg}");
    assert!(msg.contains("instead of index 3"), "{msg}");
}

#[tokio::test]
async fn hole_in_the_log_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    write_and_close(dir.path(), sample_log(5)).await;
    damage(dir.path(), Target::LogEntry(2), Damage::Remove).unwrap();
    let msg = open_corrupt(dir.path());
    assert!(msg.contains("hole"), "{msg}");
    assert!(msg.contains("log entry 3"), "{msg}");
}

#[tokio::test]
async fn term_going_back_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    write_and_close(dir.path(), vec![blank(1, 0), blank(3, 1), blank(2, 2)]).await;
    let msg = open_corrupt(dir.path());
    assert!(msg.contains("log entry 2"), "{msg}");
    assert!(msg.contains("term 2 is lower"), "{msg}");
}

#[tokio::test]
async fn corrupt_vote_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path()).unwrap();
        log.save_vote(&Vote::new(5, 2)).await.unwrap();
    }
    damage(
        dir.path(),
        Target::Vote,
        Damage::FlipBit { byte: 6, bit: 0 },
    )
    .unwrap();
    let msg = open_corrupt(dir.path());
    assert!(msg.contains("`vote`"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path()).unwrap();
        log.save_vote(&Vote::new(5, 2)).await.unwrap();
    }
    damage(dir.path(), Target::Vote, Damage::Truncate(0)).unwrap();
    let msg = open_corrupt(dir.path());
    assert!(msg.contains("`vote`"), "{msg}");
    assert!(msg.contains("0 byte(s)"), "{msg}");
}

#[tokio::test]
async fn corrupt_committed_and_purge_mark_are_caught() {
    for target in [Target::Committed, Target::LastPurged] {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _sm) = open(dir.path()).unwrap();
            log.blocking_append(sample_log(4)).await.unwrap();
            log.save_committed(Some(log_id(1, 3))).await.unwrap();
            log.purge(log_id(1, 1)).await.unwrap();
        }
        damage(
            dir.path(),
            target.clone(),
            Damage::FlipBit { byte: 9, bit: 7 },
        )
        .unwrap();
        let msg = open_corrupt(dir.path());
        let key = if target == Target::Committed {
            "`committed`"
        } else {
            "`last_purged`"
        };
        assert!(msg.contains(key), "{msg}");
    }
}

#[tokio::test]
async fn identity_and_peers_with_data_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _sm, verified) = crate::open_verified(dir.path()).unwrap();
        assert!(verified.is_blank(), "{verified}");
        assert_eq!(verified.identity, None);
        assert_eq!(log.identity().unwrap(), None);
        let id = crate::Identity {
            node_id: 3,
            cluster_id: Some("00ff".into()),
        };
        log.save_identity(&id).await.unwrap();
        assert!(log.add_peer_with_data(1).await.unwrap());
        assert!(!log.add_peer_with_data(1).await.unwrap());
        assert!(log.add_peer_with_data(2).await.unwrap());
    }
    let (mut log, _sm, verified) = crate::open_verified(dir.path()).unwrap();
    // An identity alone is not Raft state: the store is still blank.
    assert!(verified.is_blank(), "{verified}");
    let identity = verified.identity.clone().unwrap();
    assert_eq!(identity.node_id, 3);
    assert_eq!(identity.cluster_id.as_deref(), Some("00ff"));
    assert!(
        verified.to_string().contains("node 3 of cluster 00ff"),
        "{verified}"
    );
    assert_eq!(log.peers_with_data().unwrap(), BTreeSet::from([1, 2]));
    log.blocking_append(sample_log(2)).await.unwrap();
    drop((log, _sm));
    let (_log, _sm, verified) = crate::open_verified(dir.path()).unwrap();
    assert!(!verified.is_blank(), "{verified}");
}

#[tokio::test]
async fn corrupt_identity_and_peers_with_data_are_caught() {
    for (target, key) in [
        (Target::Identity, "`identity`"),
        (Target::PeersWithData, "`peers_with_data`"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _sm) = open(dir.path()).unwrap();
            log.save_identity(&crate::Identity {
                node_id: 1,
                cluster_id: Some("abc".into()),
            })
            .await
            .unwrap();
            log.add_peer_with_data(2).await.unwrap();
        }
        damage(dir.path(), target, Damage::FlipBit { byte: 6, bit: 1 }).unwrap();
        let msg = open_corrupt(dir.path());
        assert!(msg.contains(key), "{msg}");
    }
}

#[tokio::test]
async fn corrupt_snapshot_is_caught() {
    for target in [Target::SnapshotData, Target::SnapshotMeta] {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_log, mut sm) = open(dir.path()).unwrap();
            sm.apply(sample_log(4)).await.unwrap();
            sm.build_snapshot().await.unwrap();
        }
        damage(
            dir.path(),
            target.clone(),
            Damage::FlipBit { byte: 30, bit: 1 },
        )
        .unwrap();
        let msg = open_corrupt(dir.path());
        assert!(msg.contains("snapshot"), "{msg}");
    }
    // One half of the snapshot missing.
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = open(dir.path()).unwrap();
        sm.apply(sample_log(4)).await.unwrap();
        sm.build_snapshot().await.unwrap();
    }
    damage(dir.path(), Target::SnapshotData, Damage::Remove).unwrap();
    let msg = open_corrupt(dir.path());
    assert!(msg.contains("`snapshot_data`"), "{msg}");
}

#[tokio::test]
async fn other_format_is_refused_and_missing_marker_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_and_close(dir.path(), sample_log(2)).await;
    damage(
        dir.path(),
        Target::Format,
        Damage::Replace(encode("format", "baton-store/99").unwrap()),
    )
    .unwrap();
    match open(dir.path()) {
        Err(StoreError::Format { found, .. }) => assert_eq!(found, "baton-store/99"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("opened a store of another format"),
    }
    damage(dir.path(), Target::Format, Damage::Remove).unwrap();
    let msg = open_corrupt(dir.path());
    assert!(msg.contains("format marker"), "{msg}");
}

/// Corruption found while running (not at open) is an openraft `StorageError` carrying the
/// same message, never a panic.
#[tokio::test]
async fn corruption_found_at_runtime_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    write_and_close(dir.path(), sample_log(5)).await;
    damage(
        dir.path(),
        Target::LogEntry(4),
        Damage::FlipBit { byte: 10, bit: 2 },
    )
    .unwrap();
    // Skip open's verification, as if the damage happened after it.
    let mut log = LogStore::new(Arc::new(Disk::open(dir.path()).unwrap()));
    let err = log.try_get_log_entries(2..6).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("log entry 4"), "{msg}");
    assert!(msg.contains("re-add"), "{msg}");
    // Entries before the damage still read.
    assert_eq!(log.try_get_log_entries(0..4).await.unwrap().len(), 4);
    // The last entry is fine; the log state still reads.
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(2, 5))
    );
    let err = log.verify().unwrap_err();
    assert!(err.is_corruption());
}

// --- durability and its cost --------------------------------------------------------------

/// Every append is made durable twice before it is reported (sled's data file, then the
/// mark), and so is a vote: the count the benchmark's `fsyncs_per_write` row measures.
#[tokio::test]
async fn an_append_costs_two_fsyncs_and_so_does_a_vote() {
    let (_dir, mut log, _sm) = fresh();
    let before = log.fsyncs();
    for e in sample_log(3) {
        log.blocking_append([e]).await.unwrap();
    }
    assert_eq!(log.fsyncs() - before, 2 * 4);
    let before = log.fsyncs();
    log.save_vote(&Vote::new(1, 1)).await.unwrap();
    assert_eq!(log.fsyncs() - before, 2);
}

/// An append whose fsync fails is reported as failed and does not raise the mark: the
/// entries were never durable, so nothing may count them as such.
#[tokio::test]
async fn an_append_whose_fsync_fails_is_not_reported_durable() {
    let (dir, mut log, _sm) = fresh();
    let entries = sample_log(3);
    log.blocking_append(entries[..2].to_vec()).await.unwrap();
    log.disk_for_tests()
        .fail_syncs
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = log
        .blocking_append(entries[2..].to_vec())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected fsync failure"), "{err}");
    let err = log.save_vote(&Vote::new(5, 1)).await.unwrap_err();
    assert!(err.to_string().contains("injected fsync failure"), "{err}");
    drop(log);
    drop(_sm);
    let mark = crate::mark::MarkFile::load(dir.path());
    assert_eq!(mark.current().last_log, Some(log_id(1, 1)));
    assert_eq!(mark.current().vote, None);
}

/// The mark's slots keep one size once written, so rewriting them is a data-only fsync;
/// a slot written by an older version (unpadded) still reads.
#[tokio::test]
async fn mark_slots_keep_their_size_and_old_slots_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let entries = sample_log(6);
    write_and_close(dir.path(), entries[..=3].to_vec()).await;
    write_and_close(dir.path(), entries[4..].to_vec()).await;
    for slot in ["mark-0", "mark-1"] {
        let len = std::fs::metadata(dir.path().join(slot)).unwrap().len();
        assert_eq!(len, crate::mark::RECORD_BYTES as u64, "{slot}");
    }
    // An unpadded slot, as written before padding, with a higher sequence number.
    let old = serde_json::json!({
        "seq": 1000,
        "vote": null,
        "last_log": log_id(2, 6),
    });
    std::fs::write(
        dir.path().join("mark-0"),
        frame(&serde_json::to_vec(&old).unwrap()),
    )
    .unwrap();
    let mark = crate::mark::MarkFile::load(dir.path());
    assert_eq!(mark.current().seq, 1000);
    assert_eq!(mark.current().last_log, Some(log_id(2, 6)));
    let (mut log, _sm) = open(dir.path()).unwrap();
    log.blocking_append([blank(3, 7)]).await.unwrap();
    drop(log);
    drop(_sm);
    let mark = crate::mark::MarkFile::load(dir.path());
    assert_eq!(mark.current().last_log, Some(log_id(3, 7)));
    assert!(mark.current().seq > 1000);
}

// --- a real (single-node) Raft on top of the store -----------------------------------------

mod single_node {
    use std::time::Duration;

    use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    };
    use openraft::{BasicNode, Config, ServerState};

    use super::*;
    use crate::Raft;

    /// A network to nobody: a single voter never sends anything.
    struct NoNetwork;
    struct NoConnection;

    fn unreachable<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
        RPCError::Unreachable(Unreachable::new(&std::io::Error::other("single node")))
    }

    impl RaftNetworkFactory<TypeConfig> for NoNetwork {
        type Network = NoConnection;
        async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoConnection {
            NoConnection
        }
    }

    impl RaftNetwork<TypeConfig> for NoConnection {
        async fn append_entries(
            &mut self,
            _rpc: AppendEntriesRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
            Err(unreachable())
        }
        async fn install_snapshot(
            &mut self,
            _rpc: InstallSnapshotRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<
            InstallSnapshotResponse<u64>,
            RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
        > {
            Err(unreachable())
        }
        async fn vote(
            &mut self,
            _rpc: VoteRequest<u64>,
            _option: RPCOption,
        ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
            Err(unreachable())
        }
    }

    async fn start(dir: &Path) -> (Raft, StateMachineStore) {
        let (log, sm) = open(dir).unwrap();
        let config = Config {
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            // Purge everything a snapshot covers, to exercise purge + restart.
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..Default::default()
        };
        let raft = Raft::new(
            1,
            Arc::new(config.validate().unwrap()),
            NoNetwork,
            log,
            sm.clone(),
        )
        .await
        .unwrap();
        (raft, sm)
    }

    /// Propose one write and return its outcome.
    async fn write(raft: &Raft, cmd: Command) -> Result<Outcome, baton_core::Refusal> {
        let mut outcomes = raft
            .client_write(baton_core::Entry::new(5, cmd))
            .await
            .unwrap()
            .data;
        assert_eq!(outcomes.len(), 1, "one write, one outcome");
        outcomes.remove(0)
    }

    const WAIT: Option<Duration> = Some(Duration::from_secs(10));

    /// A write whose fsync fails on the (single) leader is never acknowledged: the
    /// failed append stops Raft instead of counting the entry.
    #[tokio::test]
    async fn a_write_whose_fsync_fails_is_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (log, sm) = open(dir.path()).unwrap();
        let disk = log.disk_for_tests().clone();
        let config = Config {
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            ..Default::default()
        };
        let raft = Raft::new(
            1,
            Arc::new(config.validate().unwrap()),
            NoNetwork,
            log,
            sm.clone(),
        )
        .await
        .unwrap();
        raft.initialize(nodes(&[1])).await.unwrap();
        raft.wait(WAIT)
            .state(ServerState::Leader, "leader")
            .await
            .unwrap();
        assert!(write(&raft, add_server("a")).await.is_ok());
        let applied = sm.last_applied();
        disk.fail_syncs
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            raft.client_write(baton_core::Entry {
                by: Default::default(),
                request: Default::default(),
                now_ms: 6,
                cmd: add_server("b"),
                advance_ms: 0,
                batch: Vec::new(),
            }),
        )
        .await
        .expect("the write returns (with an error) instead of hanging");
        assert!(r.is_err(), "acknowledged although its fsync failed: {r:?}");
        assert_eq!(sm.last_applied(), applied, "applied without being durable");
        assert!(sm.read(|s| !s.servers.contains_key("b")));
        let _ = raft.shutdown().await;
    }

    #[tokio::test]
    async fn writes_snapshot_purge_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let last;
        {
            let (raft, sm) = start(dir.path()).await;
            raft.initialize(nodes(&[1])).await.unwrap();
            raft.wait(WAIT)
                .state(ServerState::Leader, "leader")
                .await
                .unwrap();
            for s in ["a", "b", "c"] {
                assert!(write(&raft, add_server(s)).await.is_ok());
            }
            let refused = write(&raft, add_server("a")).await.unwrap_err();
            assert_eq!(refused.kind, RefusalKind::AlreadyExists);

            raft.trigger().snapshot().await.unwrap();
            raft.wait(WAIT)
                .metrics(
                    |m| m.snapshot.is_some() && m.purged.is_some(),
                    "snapshot and purge",
                )
                .await
                .unwrap();
            for s in ["d", "e"] {
                assert!(write(&raft, add_server(s)).await.is_ok());
            }
            last = raft.metrics().borrow().last_applied.unwrap();
            assert_eq!(*sm.subscribe().borrow(), last.index);
            raft.shutdown().await.unwrap();
        }

        let (raft, sm) = start(dir.path()).await;
        // openraft re-applies the log after the snapshot up to the saved committed id,
        // inside `Raft::new`, before any election.
        assert_eq!(sm.last_applied(), Some(last));
        raft.wait(WAIT)
            .metrics(|m| m.last_applied == Some(last), "re-applied")
            .await
            .unwrap();
        sm.read(|s| {
            assert_eq!(s.revision, last.index);
            assert_eq!(
                s.servers.keys().cloned().collect::<Vec<_>>(),
                vec!["a", "b", "c", "d", "e"]
            );
            assert_eq!(s.voters, 1);
        });
        raft.wait(WAIT)
            .state(ServerState::Leader, "leader again")
            .await
            .unwrap();
        assert!(write(&raft, add_server("f")).await.is_ok());
        raft.shutdown().await.unwrap();
    }
}

// --- the high-water mark ------------------------------------------------------------------

/// Copy sled's files (everything but the mark) from `from` to `to`, replacing what is there.
fn copy_sled_files(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("mark-") {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            let _ = std::fs::remove_dir_all(&target);
            std::fs::create_dir_all(&target).unwrap();
            copy_sled_files(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// sled silently dropping its newest records looks, to our checksums, like a perfectly
/// good older store. Replaying an older copy of sled's files under the current mark is
/// exactly that, and open must refuse it.
#[tokio::test]
async fn a_log_that_rolled_back_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = tempfile::tempdir().unwrap();
    let entries = sample_log(8);
    write_and_close(dir.path(), entries[..=4].to_vec()).await;
    copy_sled_files(dir.path(), old.path());
    write_and_close(dir.path(), entries[5..].to_vec()).await;
    copy_sled_files(old.path(), dir.path());
    let msg = open_corrupt(dir.path());
    assert!(msg.contains("rolled back"), "{msg}");
    assert!(msg.contains(&log_id(3, 8).to_string()), "{msg}");
}

#[tokio::test]
async fn a_vote_that_rolled_back_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path()).unwrap();
        log.save_vote(&Vote::new(2, 1)).await.unwrap();
    }
    copy_sled_files(dir.path(), old.path());
    {
        let (mut log, _sm) = open(dir.path()).unwrap();
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
    }
    copy_sled_files(old.path(), dir.path());
    let msg = open_corrupt(dir.path());
    assert!(msg.contains("older than the vote"), "{msg}");
}

/// Truncation lowers the mark before the log shrinks, so a store that truncated and
/// then crashed opens; and an intact store always opens, however often it restarts.
#[tokio::test]
async fn truncation_and_restarts_keep_the_mark_a_lower_bound() {
    let dir = tempfile::tempdir().unwrap();
    let entries = sample_log(8);
    write_and_close(dir.path(), entries.clone()).await;
    {
        let (mut log, _sm) = open(dir.path()).unwrap();
        log.truncate(log_id(2, 5)).await.unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(log_id(2, 4)));
    }
    let (mut log, _sm) = open(dir.path()).unwrap();
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(2, 4))
    );
    // Entries from a newer term replace the truncated ones; the mark rises again.
    let newer: Vec<LogEntry> = (5..=6).map(|i| blank(4, i)).collect();
    log.blocking_append(newer).await.unwrap();
    drop(log);
    drop(_sm);
    let (mut log, _sm) = open(dir.path()).unwrap();
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(4, 6))
    );
}

/// A crash while the mark is written tears one slot; the other, older one still bounds
/// the log from below, so the store opens.
#[tokio::test]
async fn a_torn_mark_slot_falls_back_to_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let entries = sample_log(6);
    write_and_close(dir.path(), entries[..=3].to_vec()).await;
    write_and_close(dir.path(), entries[4..].to_vec()).await;
    let slots: Vec<_> = ["mark-0", "mark-1"]
        .iter()
        .map(|s| dir.path().join(s))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(slots.len(), 2, "both mark slots written: {slots:?}");
    let newest = slots
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    std::fs::write(newest, b"torn").unwrap();
    let (mut log, _sm) = open(dir.path()).expect("opens on the older slot");
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(2, 6))
    );
}

// --- what a rolled-back store keeps -----------------------------------------------------

/// A verified store as the crash campaign sees it: log `first..=last`, purged up to
/// `first - 1`, a snapshot at `snapshot`, committed `committed`.
fn verified(first: u64, last: u64, snapshot: Option<u64>, committed: u64) -> crate::Verified {
    crate::Verified {
        entries: last + 1 - first,
        first_log_id: Some(log_id(1, first)),
        last_log_id: Some(log_id(1, last)),
        last_purged: (first > 1).then(|| log_id(1, first - 1)),
        committed: Some(log_id(1, committed)),
        vote: Some(Vote::new_committed(1, 3)),
        snapshot: snapshot.map(|at| openraft::SnapshotMeta {
            last_log_id: Some(log_id(1, at)),
            last_membership: StoredMembership::new(None, membership_of(&[&[1, 2, 3]])),
            snapshot_id: format!("s-{at}"),
        }),
        identity: None,
    }
}

#[test]
fn a_rolled_back_compaction_keeps_everything_raft_needs() {
    // The case a truncated sled file produced: the newest snapshot (at 81) and the purge
    // up to 61 were lost; the store went back to the snapshot at 59 with the log from 60.
    let before = verified(62, 81, Some(81), 81);
    let after = verified(60, 81, Some(59), 81);
    assert!(after.keeps_everything_of(&before));
    assert!(before.keeps_everything_of(&before));
    // An older committed hint is harmless; a newer one claims commits that never happened.
    assert!(verified(62, 81, Some(81), 70).keeps_everything_of(&before));
    assert!(!before.keeps_everything_of(&verified(62, 81, Some(81), 70)));
}

#[test]
fn a_store_that_lost_entries_votes_or_purged_ones_keeps_nothing() {
    let before = verified(62, 81, Some(81), 81);
    // The log's tail is gone.
    assert!(!verified(62, 80, Some(81), 80).keeps_everything_of(&before));
    // A different vote.
    let mut vote = before.clone();
    vote.vote = Some(Vote::new_committed(2, 1));
    assert!(!vote.keeps_everything_of(&before));
    // Entries purged beyond the snapshot: 60..=61 are in neither.
    assert!(!verified(62, 81, Some(59), 81).keeps_everything_of(&before));
    // No snapshot at all but a purged prefix.
    assert!(!verified(62, 81, None, 81).keeps_everything_of(&before));
    // A newer snapshot than before is not a rollback but a different store.
    let mut newer = before.clone();
    newer.snapshot = verified(1, 81, Some(90), 81).snapshot;
    assert!(!newer.keeps_everything_of(&before));
}
