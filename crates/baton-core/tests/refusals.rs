//! Every refusal of every command (invariant 6, clear refusal): the exact message, the
//! kind (which becomes the gRPC status), and no change to the state apart from
//! `revision`, which `Dir::refuse` checks on every call.

mod common;

use baton_core::RefusalKind::{AlreadyExists, FailedPrecondition, InvalidArgument, NotFound};
use baton_core::{
    Command, DATABASE_MAX_BYTES, FAILBACK_DELAY_MAX_MS, KINDS_PER_SERVER_MAX, NAME_MAX_BYTES,
    SERVERS_PER_ROLE_MAX,
};
use common::*;

const REMOTE_DB: &str = "move the role database to a remote server first";

/// Three servers up, role r on [a, b].
fn setup() -> Dir {
    let mut d = Dir::new();
    d.up(&["a", "b", "c"]).role("r", &["a", "b"]);
    d
}

#[test]
fn a_refusal_advances_only_the_revision() {
    let mut d = setup();
    let before = d.state.clone();
    let err = d.apply(delete_role("nope")).unwrap_err();
    assert_eq!(err.message, "role \"nope\" does not exist");
    assert_eq!(d.state.revision, d.index);
    assert!(d.state.revision > before.revision);
    let mut after = d.state.clone();
    after.revision = before.revision;
    after.elapsed_ms = before.elapsed_ms;
    assert_eq!(after, before);
}

// --- unknown and duplicate objects -------------------------------------------------------

#[test]
fn unknown_role() {
    let mut d = setup();
    let msg = "role \"x\" does not exist";
    for cmd in [
        delete_role("x"),
        add_role_server("x", "c", None),
        remove_role_server("x", "a"),
        move_up("x", "b"),
        move_down("x", "a"),
        set_failback("x", true, None),
        set_database("x", None),
        move_role("x", "a"),
    ] {
        d.refuse_with(cmd, NotFound, msg);
    }
    assert!(d.state.candidates("x").is_err());
}

#[test]
fn unknown_server() {
    let mut d = setup();
    let msg = "server \"x\" does not exist";
    for cmd in [
        remove_server("x"),
        drain("x"),
        resume("x"),
        add_role_server("r", "x", None),
        create_role("r2", &["a", "x"]),
        move_role("r", "x"),
    ] {
        d.refuse_with(cmd, NotFound, msg);
    }
}

#[test]
fn duplicate_server_and_role() {
    let mut d = setup();
    d.refuse_with(
        add_server("a"),
        AlreadyExists,
        "server \"a\" already exists",
    );
    d.refuse_with(
        create_role("r", &["c"]),
        AlreadyExists,
        "role \"r\" already exists",
    );
    d.refuse_with(
        add_role_server("r", "b", None),
        AlreadyExists,
        "server \"b\" is already in role \"r\"'s list",
    );
}

#[test]
fn server_listed_twice() {
    let mut d = setup();
    d.refuse_with(
        create_role("r2", &["a", "b", "a"]),
        InvalidArgument,
        "server \"a\" appears twice in role \"r2\"'s list",
    );
    d.refuse_with(
        create_role("r2", &["c", "c"]),
        InvalidArgument,
        "server \"c\" appears twice in role \"r2\"'s list",
    );
}

#[test]
fn empty_server_list() {
    let mut d = setup();
    d.refuse_with(
        create_role("r2", &[]),
        InvalidArgument,
        "role \"r2\" needs at least one server",
    );
}

#[test]
fn too_many_servers_in_a_list() {
    let mut d = Dir::new();
    let names: Vec<String> = (0..=SERVERS_PER_ROLE_MAX)
        .map(|i| format!("s{i}"))
        .collect();
    for n in &names {
        d.ok(add_server(n));
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    d.refuse_with(
        create_role("r", &refs),
        InvalidArgument,
        "role \"r\" lists 33 servers; the limit is 32",
    );
    d.ok(create_role("r", &refs[..SERVERS_PER_ROLE_MAX]));
    d.refuse_with(
        add_role_server("r", "s32", None),
        InvalidArgument,
        "role \"r\" lists 33 servers; the limit is 32",
    );
}

// --- names -------------------------------------------------------------------------------

#[test]
fn bad_names_are_refused_everywhere_a_name_is_created() {
    let long = "x".repeat(NAME_MAX_BYTES + 1);
    let cases: [(&str, String); 7] = [
        ("", "{what} name is empty".into()),
        (
            &long,
            "{what} name is 65 bytes long; the limit is 64".to_string(),
        ),
        (
            "a b",
            "{what} name \"a b\" contains ' '; names may not contain whitespace, control characters or commas".into(),
        ),
        (
            "a\tb",
            "{what} name \"a\\tb\" contains '\\t'; names may not contain whitespace, control characters or commas".into(),
        ),
        (
            "a\u{7}",
            "{what} name \"a\\u{7}\" contains '\\u{7}'; names may not contain whitespace, control characters or commas".into(),
        ),
        (
            "a,b",
            "{what} name \"a,b\" contains ','; names may not contain whitespace, control characters or commas".into(),
        ),
        (
            "a\u{a0}b",
            "{what} name \"a\\u{a0}b\" contains '\\u{a0}'; names may not contain whitespace, control characters or commas".into(),
        ),
    ];
    let mut d = setup();
    for (bad, template) in &cases {
        let server = template.replace("{what}", "server");
        let role = template.replace("{what}", "role");
        let kind = template.replace("{what}", "kind");
        d.refuse_with(add_server(bad), InvalidArgument, &server);
        d.refuse_with(register(bad, &[]), InvalidArgument, &server);
        d.refuse_with(create_role(bad, &["a"]), InvalidArgument, &role);
        if !bad.is_empty() {
            // An empty kind means the default kind.
            d.refuse_with(
                create_role_full("r2", bad, &["a"], false, 0, None),
                InvalidArgument,
                &kind,
            );
        }
        d.refuse_with(
            Command::AddServer {
                name: s("d"),
                main: false,
                kinds: vec![s("ok"), bad.to_string()],
            },
            InvalidArgument,
            &kind,
        );
        d.refuse_with(register("d", &["ok", bad]), InvalidArgument, &kind);
    }
}

#[test]
fn names_at_the_limits_are_accepted() {
    let mut d = Dir::new();
    let longest = "x".repeat(NAME_MAX_BYTES);
    d.ok(add_server(&longest));
    d.ok(register("café-1", &["kind.é"]));
    d.ok(create_role_full(
        &longest,
        &longest,
        &[&longest, "café-1"],
        false,
        0,
        None,
    ));
    assert_eq!(d.get(&longest).kind, longest);
    // An empty kind is the default kind.
    d.ok(create_role("r", &["café-1"]));
    assert_eq!(d.get("r").kind, baton_core::DEFAULT_KIND);
}

#[test]
fn too_many_kinds() {
    let mut d = Dir::new();
    let kinds: Vec<String> = (0..=KINDS_PER_SERVER_MAX)
        .map(|i| format!("k{i}"))
        .collect();
    let refs: Vec<&str> = kinds.iter().map(String::as_str).collect();
    d.refuse_with(
        register("a", &refs),
        InvalidArgument,
        "33 kinds given; the limit is 32",
    );
    d.refuse_with(
        Command::AddServer {
            name: s("a"),
            main: false,
            kinds: kinds.clone(),
        },
        InvalidArgument,
        "33 kinds given; the limit is 32",
    );
    d.ok(register("a", &refs[..KINDS_PER_SERVER_MAX]));
}

// --- list edits ----------------------------------------------------------------------------

#[test]
fn moving_the_first_up_or_the_last_down() {
    let mut d = setup();
    d.ok(add_role_server("r", "c", None));
    d.refuse_with(
        move_up("r", "a"),
        FailedPrecondition,
        "server \"a\" is already first in role \"r\"'s list",
    );
    d.refuse_with(
        move_down("r", "c"),
        FailedPrecondition,
        "server \"c\" is already last in role \"r\"'s list",
    );
    d.refuse_with(
        move_up("r", "x"),
        NotFound,
        "server \"x\" is not in role \"r\"'s list",
    );
    d.ok(move_up("r", "c"));
    d.ok(move_down("r", "a"));
    assert_eq!(d.get("r").servers, strings(&["c", "a", "b"]));
}

#[test]
fn a_single_server_cannot_move_either_way() {
    let mut d = setup();
    d.role("solo", &["c"]);
    d.refuse_with(
        move_up("solo", "c"),
        FailedPrecondition,
        "server \"c\" is already first in role \"solo\"'s list",
    );
    d.refuse_with(
        move_down("solo", "c"),
        FailedPrecondition,
        "server \"c\" is already last in role \"solo\"'s list",
    );
}

#[test]
fn removing_the_last_server_of_a_role() {
    let mut d = setup();
    d.ok(remove_role_server("r", "b"));
    d.refuse_with(
        remove_role_server("r", "a"),
        FailedPrecondition,
        "server \"a\" is the last server of role \"r\"; a role needs at least one (delete the role instead)",
    );
    d.refuse_with(
        remove_role_server("r", "b"),
        NotFound,
        "server \"b\" is not in role \"r\"'s list",
    );
}

#[test]
fn positions_out_of_range() {
    let mut d = setup();
    for p in [0, 4, u32::MAX] {
        d.refuse_with(
            add_role_server("r", "c", Some(p)),
            InvalidArgument,
            &format!(
                "position {p} is out of range: role \"r\" has 2 server(s), so positions run from 1 to 3"
            ),
        );
    }
    d.ok(add_role_server("r", "c", Some(3)));
    assert_eq!(d.get("r").servers, strings(&["a", "b", "c"]));
    d.ok(remove_role_server("r", "c"));
    d.ok(add_role_server("r", "c", Some(1)));
    assert_eq!(d.get("r").servers, strings(&["c", "a", "b"]));
    d.ok(remove_role_server("r", "c"));
    d.ok(add_role_server("r", "c", Some(2)));
    assert_eq!(d.get("r").servers, strings(&["a", "c", "b"]));
}

#[test]
fn removing_a_server_listed_by_roles() {
    let mut d = setup();
    d.role("q", &["c", "b"]);
    d.refuse_with(
        remove_server("b"),
        FailedPrecondition,
        "server \"b\" is listed by role(s) q, r; remove it from them first",
    );
    d.refuse_with(
        remove_server("c"),
        FailedPrecondition,
        "server \"c\" is listed by role(s) q; remove it from them first",
    );
    d.ok(add_server("idle"));
    d.ok(remove_server("idle"));
    assert!(!d.state.servers.contains_key("idle"));
}

// --- role database seed rule ----------------------------------------------------------------

fn local_db_message(role: &str, n: usize, db: &str) -> String {
    format!(
        "role {role:?} has {n} servers and its database {db:?} lives on one of them: {REMOTE_DB}"
    )
}

#[test]
fn local_database_refused_on_create_with_several_servers() {
    let mut d = setup();
    for db in [
        "(local)",
        "(LOCAL)",
        "(Local)\\SQLEXPRESS",
        "(lOcAl)x",
        "a",
        "b",
    ] {
        d.refuse_with(
            create_role_full("r2", "", &["a", "b"], false, 0, Some(db)),
            FailedPrecondition,
            &local_db_message("r2", 2, db),
        );
    }
    // One server: nothing to fail over to, so a local database is fine.
    d.ok(create_role_full(
        "r2",
        "",
        &["a"],
        false,
        0,
        Some("(local)"),
    ));
    d.ok(create_role_full("r3", "", &["a"], false, 0, Some("a")));
    // A remote database is fine with any number of servers; "(loca" is not local.
    d.ok(create_role_full(
        "r4",
        "",
        &["a", "b"],
        false,
        0,
        Some("db-host\\INST"),
    ));
    d.ok(create_role_full(
        "r5",
        "",
        &["a", "b"],
        false,
        0,
        Some("(loca"),
    ));
    d.ok(create_role_full("r6", "", &["a", "b"], false, 0, Some("c")));
}

/// The database rule knows the forms operators write for "this machine" and for a
/// server of the list, not only `(local)` and the bare server name.
#[test]
fn local_database_forms_are_recognised() {
    let mut d = Dir::new();
    d.up(&["srv-a", "srv-b", "srv-c"]);
    for db in [
        "localhost",
        "LOCALHOST:5432",
        ".",
        ".\\SQLEXPRESS",
        "127.0.0.1",
        "127.0.0.1,1433",
        "::1",
        "[::1]:5432",
        "(localdb)\\MSSQLLocalDB",
        "tcp:srv-a,1433",
        "srv-b,1433",
        "SRV-B\\INST",
        "srv-a:5432",
        "srv-a.example.org",
        "tcp:SRV-B.example.org\\INST,1433",
        "postgres://app:pw@srv-a.example.org:5432/app",
    ] {
        d.refuse_with(
            create_role_full("r", "", &["srv-a", "srv-b"], false, 0, Some(db)),
            FailedPrecondition,
            &local_db_message("r", 2, db),
        );
    }
    // Hosts that are neither local nor on the list.
    for (i, db) in [
        "srv-c",
        "srv-c.example.org,1433",
        "srv-ab",
        "db.srv-a",
        "10.0.0.5:5432",
        "tcp:db-host,1433",
    ]
    .iter()
    .enumerate()
    {
        d.ok(create_role_full(
            &format!("r{i}"),
            "",
            &["srv-a", "srv-b"],
            false,
            0,
            Some(db),
        ));
    }
    // Adding the server that hosts the database (by its FQDN) is refused too.
    d.ok(create_role_full(
        "one",
        "",
        &["srv-a"],
        false,
        0,
        Some("srv-c.example.org"),
    ));
    d.refuse_with(
        add_role_server("one", "srv-c", None),
        FailedPrecondition,
        &local_db_message("one", 2, "srv-c.example.org"),
    );
}

#[test]
fn local_database_refused_when_adding_a_second_server() {
    let mut d = setup();
    d.ok(create_role_full(
        "r2",
        "",
        &["a"],
        false,
        0,
        Some("(local)"),
    ));
    d.refuse_with(
        add_role_server("r2", "b", None),
        FailedPrecondition,
        &local_db_message("r2", 2, "(local)"),
    );
    d.ok(create_role_full("r3", "", &["a"], false, 0, Some("a")));
    d.refuse_with(
        add_role_server("r3", "b", Some(1)),
        FailedPrecondition,
        &local_db_message("r3", 2, "a"),
    );
    // A database on the server about to be added is local too.
    d.ok(create_role_full("r4", "", &["a"], false, 0, Some("c")));
    d.refuse_with(
        add_role_server("r4", "c", None),
        FailedPrecondition,
        &local_db_message("r4", 2, "c"),
    );
    // Moving the database away first makes the edit possible.
    d.ok(set_database("r2", Some("db-host")));
    d.ok(add_role_server("r2", "b", None));
}

#[test]
fn local_database_refused_by_set_role() {
    let mut d = setup();
    d.ok(add_role_server("r", "c", None));
    for db in ["(local)\\SQLEXPRESS", "c"] {
        d.refuse_with(
            set_database("r", Some(db)),
            FailedPrecondition,
            &local_db_message("r", 3, db),
        );
    }
    // The refusal is whole: the failback part of the same SetRole is not applied.
    d.refuse_with(
        Command::SetRole {
            role: s("r"),
            failback: Some(true),
            failback_delay_ms: Some(5),
            database: Some(Some(s("(local)"))),
        },
        FailedPrecondition,
        &local_db_message("r", 3, "(local)"),
    );
    assert!(!d.get("r").failback);
    d.ok(set_database("r", Some("db-host")));
    assert_eq!(d.get("r").database.as_deref(), Some("db-host"));
    d.ok(set_database("r", None));
    assert_eq!(d.get("r").database, None);
}

#[test]
fn malformed_database_names() {
    let mut d = setup();
    let long = "d".repeat(DATABASE_MAX_BYTES + 1);
    let cases = [
        ("", "database name is empty".to_string()),
        (
            long.as_str(),
            "database name is 257 bytes long; the limit is 256".to_string(),
        ),
        (
            "a\nb",
            "database name \"a\\nb\" contains a control character".to_string(),
        ),
    ];
    for (db, msg) in &cases {
        d.refuse_with(
            create_role_full("r2", "", &["a"], false, 0, Some(db)),
            InvalidArgument,
            msg,
        );
        d.refuse_with(set_database("r", Some(db)), InvalidArgument, msg);
    }
    // Spaces are allowed in database names, and the longest one.
    d.ok(set_database("r", Some("db host\\SQL EXPRESS")));
    d.ok(set_database("r", Some(&"d".repeat(DATABASE_MAX_BYTES))));
}

// --- main servers and directory failover ----------------------------------------------------

fn main_message(server: &str, voters: u32) -> String {
    format!(
        "server {server:?} hosts a directory node, and the directory has {voters} voter(s): configure directory failover first (3 or more directory nodes) before a role may list a main server"
    )
}

#[test]
fn main_server_needs_directory_failover() {
    for voters in [0, 1, 2] {
        let mut d = Dir::with_voters(voters);
        d.ok(add_main_server("m"));
        d.ok(add_server("a"));
        d.ok(Command::RegisterAgent {
            server: s("m2"),
            kinds: vec![],
            main: true,
            instance: Default::default(),
            replaces: None,
        });
        d.refuse_with(
            create_role("r", &["a", "m"]),
            FailedPrecondition,
            &main_message("m", voters),
        );
        // A single-server role on a main server is refused just the same.
        d.refuse_with(
            create_role("r", &["m2"]),
            FailedPrecondition,
            &main_message("m2", voters),
        );
        d.ok(create_role("r", &["a"]));
        d.refuse_with(
            add_role_server("r", "m", Some(1)),
            FailedPrecondition,
            &main_message("m", voters),
        );
        assert_eq!(d.get("r").servers, strings(&["a"]));
    }
    for voters in [3, 5] {
        let mut d = Dir::with_voters(voters);
        d.ok(add_main_server("m"));
        d.ok(add_server("a"));
        d.ok(create_role("r", &["a", "m"]));
        d.ok(create_role("q", &["a"]));
        d.ok(add_role_server("q", "m", None));
    }
}

// --- role options -------------------------------------------------------------------------

fn register_main(server: &str) -> Command {
    Command::RegisterAgent {
        server: s(server),
        kinds: vec![],
        main: true,
        instance: Default::default(),
        replaces: None,
    }
}

fn set_voters(d: &mut Dir, voters: u32) {
    d.index += 1;
    d.state.apply_membership(d.index, voters);
}

/// The main-server rule holds when the voters drop below 3 after a role listed a main
/// server: nothing moves at the membership change, but no role is placed on the main
/// server, fails over or back to it, or is moved there, until the voters are back; then
/// the roles that ran nowhere are placed at once.
#[test]
fn main_servers_take_no_role_once_the_voters_drop() {
    let mut d = Dir::new();
    d.ok(add_main_server("m"));
    d.ok(register_main("m"));
    d.up(&["b", "c"]);
    d.ok(create_role_full("r", "", &["m", "b"], true, 0, None));
    d.ok(create_role("solo", &["m"]));
    assert_eq!((d.active("r"), d.active("solo")), (Some("m"), Some("m")));
    let epochs = (d.epoch("r"), d.epoch("solo"));

    set_voters(&mut d, 2);
    // A membership change alone moves no role.
    assert_eq!((d.active("r"), d.active("solo")), (Some("m"), Some("m")));
    assert_eq!((d.epoch("r"), d.epoch("solo")), epochs);

    // m goes down: r fails over to b; solo has nowhere to go, and says why.
    d.ok(servers_down(&["m"]));
    assert_eq!(d.active("r"), Some("b"));
    assert_eq!(d.active("solo"), None);
    assert_eq!(d.get("solo").reason, "no eligible server: server m is down");

    // m comes back: no failback to it (failback is on, with no delay), no placement.
    d.ok(register_main("m"));
    d.tick();
    assert_eq!((d.active("r"), d.active("solo")), (Some("b"), None));
    let why = "server m hosts a directory node and the directory has 2 voter(s): roles run on a main server only with directory failover (3 or more voters)";
    assert_eq!(d.get("solo").reason, format!("no eligible server: {why}"));
    assert_eq!(baton_core::controller::next_tick_ms(&d.state), None);
    d.refuse_with(
        move_role("r", "m"),
        FailedPrecondition,
        &format!("cannot move role \"r\" to \"m\": {why}"),
    );
    // A role that still lists m may be edited, and gain a server it can run on; listing
    // m anew is refused as before.
    d.ok(add_role_server("r", "c", None));
    d.refuse_with(
        add_role_server("solo", "x", None),
        NotFound,
        "server \"x\" does not exist",
    );
    d.refuse_with(
        create_role("new", &["c", "m"]),
        FailedPrecondition,
        &main_message("m", 2),
    );

    // Three voters again: solo, which ran nowhere, is placed on m at once; r returns by
    // failback at the next tick.
    set_voters(&mut d, 3);
    assert_eq!(d.active("solo"), Some("m"));
    assert!(d.epoch("solo") > epochs.1);
    assert_eq!(d.last_event().to.as_deref(), Some("m"));
    d.tick();
    assert!(d.in_handover("r"));
    d.release("r");
    assert_eq!(d.active("r"), Some("m"));
}

/// A server already listed by a role that registers as main while the directory has
/// fewer than 3 voters keeps its registration (its agent runs), but hands its roles
/// over; with 3 voters, registering as main changes nothing.
#[test]
fn a_server_registering_as_main_without_directory_failover_hands_its_roles_over() {
    let mut d = Dir::with_voters(2);
    d.up(&["a", "b"])
        .role("r", &["a", "b"])
        .role("only-a", &["a"]);
    assert_eq!((d.active("r"), d.active("only-a")), (Some("a"), Some("a")));
    d.ok(register_main("a"));
    assert!(d.state.servers["a"].main);
    assert_eq!(d.state.servers["a"].status, baton_core::ServerStatus::Up);
    for role in ["r", "only-a"] {
        assert!(d.in_handover(role), "{role}");
        assert_eq!(
            d.get(role).reason,
            "handing over from a: it registered as a main server (it hosts a directory node) and the directory has 2 voter(s)"
        );
    }
    d.release("r");
    assert_eq!(d.active("r"), Some("b"));
    d.release("only-a");
    assert_eq!(d.active("only-a"), None);
    assert!(
        d.get("only-a")
            .reason
            .contains("server a hosts a directory node")
    );
    // Registering again (a reconnect) changes nothing more.
    d.ok(register_main("a"));
    assert_eq!((d.active("r"), d.active("only-a")), (Some("b"), None));

    let mut d = Dir::new();
    d.up(&["a", "b"]).role("r", &["a", "b"]);
    d.ok(register_main("a"));
    assert_eq!(d.active("r"), Some("a"));
    assert!(!d.in_handover("r"));
}

#[test]
fn failback_delay_over_the_limit() {
    let mut d = setup();
    let over = FAILBACK_DELAY_MAX_MS + 1;
    let msg = format!(
        "failback delay {over} ms is longer than the limit of {FAILBACK_DELAY_MAX_MS} ms (a day)"
    );
    d.refuse_with(
        create_role_full("r2", "", &["a"], true, over, None),
        InvalidArgument,
        &msg,
    );
    d.refuse_with(set_failback("r", true, Some(over)), InvalidArgument, &msg);
    d.refuse_with(
        set_failback("r", true, Some(u64::MAX)),
        InvalidArgument,
        &format!(
            "failback delay {} ms is longer than the limit of {FAILBACK_DELAY_MAX_MS} ms (a day)",
            u64::MAX
        ),
    );
    d.ok(create_role_full(
        "r2",
        "",
        &["a"],
        true,
        FAILBACK_DELAY_MAX_MS,
        None,
    ));
    d.ok(set_failback("r", true, Some(FAILBACK_DELAY_MAX_MS)));
    assert_eq!(d.get("r").failback_delay_ms, FAILBACK_DELAY_MAX_MS);
}

// --- operator moves -----------------------------------------------------------------------

#[test]
fn move_role_refusals() {
    let mut d = setup();
    d.ok(add_server("u"));
    d.ok(add_role_server("r", "c", None));
    d.ok(add_role_server("r", "u", None));
    assert_eq!(d.active("r"), Some("a"));
    d.refuse_with(
        move_role("r", "a"),
        FailedPrecondition,
        "role \"r\" already runs on \"a\"",
    );
    d.ok(add_server("x"));
    d.refuse_with(
        move_role("r", "x"),
        FailedPrecondition,
        "server \"x\" is not in role \"r\"'s list; add it first",
    );
    d.refuse_with(
        move_role("r", "u"),
        FailedPrecondition,
        "cannot move role \"r\" to \"u\": server u is unknown",
    );
    d.ok(drain("b"));
    d.refuse_with(
        move_role("r", "b"),
        FailedPrecondition,
        "cannot move role \"r\" to \"b\": server b is in maintenance",
    );
    d.ok(servers_down(&["c"]));
    d.refuse_with(
        move_role("r", "c"),
        FailedPrecondition,
        "cannot move role \"r\" to \"c\": server c is down",
    );
    d.ok(register("c", &["other"]));
    d.refuse_with(
        move_role("r", "c"),
        FailedPrecondition,
        "cannot move role \"r\" to \"c\": server c does not run kind default",
    );
}

// --- agent commands -------------------------------------------------------------------------

#[test]
fn agent_and_controller_commands_about_unknown_things_are_harmless() {
    let mut d = setup();
    let before = d.state.clone();
    for cmd in [
        servers_down(&["nobody"]),
        servers_down(&[]),
        released("nope", "a", 1),
        role_failed("nope", "a", 1, 1_000),
        role_failed("r", "nobody", 1, 1_000),
    ] {
        d.ok(cmd);
    }
    let mut expected = before;
    expected.revision = d.index;
    assert_eq!(d.state, expected);
}

/// Everything an agent sends (its server name and kinds, the role names it acknowledges
/// or reports, the failure reason) is stored in the state or the history and printed to
/// operators' terminals: it is bounded and free of control characters.
#[test]
fn agent_strings_are_bounded_and_printable() {
    use baton_core::REASON_MAX_BYTES;
    let mut d = setup();
    let epoch = d.epoch("r");
    let failed = |role: &str, server: &str, reason: &str| Command::RoleFailed {
        role: s(role),
        server: s(server),
        epoch,
        reason: s(reason),
        cooldown_ms: 1_000,
    };
    let long = "x".repeat(REASON_MAX_BYTES + 1);
    d.refuse_with(
        failed("r", "a", &long),
        InvalidArgument,
        "failure reason is 513 bytes long; the limit is 512",
    );
    for (reason, shown) in [
        (
            "exited\n\u{1b}[2J",
            "\"exited\\n\\u{1b}[2J\" contains '\\n'",
        ),
        ("bell\u{7}", "\"bell\\u{7}\" contains '\\u{7}'"),
        ("del\u{7f}", "\"del\\u{7f}\" contains '\\u{7f}'"),
        ("\u{9b}31m", "\"\\u{9b}31m\" contains '\\u{9b}'"),
    ] {
        d.refuse_with(
            failed("r", "a", reason),
            InvalidArgument,
            &format!("failure reason {shown}; it may not contain control characters"),
        );
    }
    let bad_name = "server name \"a b\" contains ' '; names may not contain whitespace, control characters or commas";
    let bad_role = "role name \"r\\n\" contains '\\n'; names may not contain whitespace, control characters or commas";
    d.refuse_with(failed("r", "a b", "x"), InvalidArgument, bad_name);
    d.refuse_with(failed("r\n", "a", "x"), InvalidArgument, bad_role);
    d.refuse_with(released("r", "a b", epoch), InvalidArgument, bad_name);
    d.refuse_with(released("r\n", "a", epoch), InvalidArgument, bad_role);
    d.refuse_with(servers_down(&["c", "a b"]), InvalidArgument, bad_name);
    d.refuse_with(
        servers_down(&[&"x".repeat(NAME_MAX_BYTES + 1)]),
        InvalidArgument,
        "server name is 65 bytes long; the limit is 64",
    );
    // Nothing was recorded: the role still runs where it did, under the same epoch.
    assert_eq!(d.active("r"), Some("a"));
    assert_eq!(d.epoch("r"), epoch);
    // The longest reason, in any script, is accepted and kept in the history.
    let longest = "é".repeat(REASON_MAX_BYTES / 2);
    d.ok(failed("r", "a", &longest));
    assert_eq!(d.last_event().detail, longest);
}

#[test]
fn object_limits() {
    use baton_core::OBJECTS_MAX;
    let mut d = setup();
    // Fill the directory directly (the fields are public): applying 100 000 entries
    // would only slow the test down.
    let template = d.state.servers["c"].clone();
    for i in d.state.servers.len()..OBJECTS_MAX {
        let name = format!("x{i}");
        let mut srv = template.clone();
        srv.name = name.clone();
        d.state.servers.insert(name, srv);
    }
    assert_eq!(d.state.servers.len(), OBJECTS_MAX);
    let full = "the directory holds 100000 servers, its limit";
    d.refuse_with(add_server("new"), FailedPrecondition, full);
    d.refuse_with(register("new", &[]), FailedPrecondition, full);
    // A known server's agent may still register.
    d.ok(register("c", &[]));

    let template = d.get("r").clone();
    for i in d.state.roles.len()..OBJECTS_MAX {
        let name = format!("q{i}");
        let mut role = template.clone();
        role.name = name.clone();
        role.active = None;
        d.state.roles.insert(name, role);
    }
    d.refuse_with(
        create_role("new", &["a"]),
        FailedPrecondition,
        "the directory holds 100000 roles, its limit",
    );
}

fn register_as(server: &str, id: &str, replaces: Option<&str>) -> Command {
    Command::RegisterAgent {
        server: s(server),
        kinds: vec![],
        main: false,
        instance: baton_core::AgentInstance {
            id: id.into(),
            address: format!("10.0.0.9:{}", id.len()),
        },
        replaces: replaces.map(str::to_string),
    }
}

/// One agent instance holds a server name at a time: a second instance is refused while
/// the server is up, unless it replaces exactly the holder (a takeover the leader
/// proposes once the holder's lease ran out); once the server is down anyone may register.
#[test]
fn a_second_agent_instance_cannot_take_a_held_server_name() {
    let mut d = Dir::new();
    d.ok(register_as("a", "i1", None));
    assert_eq!(d.state.servers["a"].instance.id, "i1");
    let since = d.state.servers["a"].instance_since_ms;
    d.advance(500);
    // The holder re-registering keeps its since-time.
    d.ok(register_as("a", "i1", None));
    assert_eq!(d.state.servers["a"].instance_since_ms, since);
    d.refuse_with(
        register_as("a", "i2", None),
        baton_core::RefusalKind::ServerHeld,
        "server \"a\" is held by agent instance \"i1\" (from 10.0.0.9:2, since 1000 ms) whose lease has not run out; two agents must not run under one server name",
    );
    // A takeover naming another holder than the current one is refused too.
    d.refuse(register_as("a", "i2", Some("i9")));
    d.ok(register_as("a", "i2", Some("i1")));
    assert_eq!(d.state.servers["a"].instance.id, "i2");
    assert_eq!(d.state.servers["a"].instance_since_ms, 1_500);
    // Down: the name is free.
    d.ok(Command::ServersDown {
        servers: vec![s("a")],
    });
    d.ok(register_as("a", "i3", None));
    assert_eq!(d.state.servers["a"].instance.id, "i3");
    // Control characters and oversized ids are refused before the state is read.
    d.refuse(register_as("a", "i\u{1b}[2J", None));
    d.refuse(register_as("a", &"x".repeat(65), None));
}

/// The cluster's lease: bounds, and a shortening that failovers honour only once settled.
#[test]
fn a_shorter_lease_applies_to_failovers_only_once_settled() {
    let set = |lease_ms, grace_ms| Command::SetLease { lease_ms, grace_ms };
    let mut d = Dir::new();
    d.refuse_with(
        set(100, 50),
        InvalidArgument,
        "lease 100 ms is outside 500..=3600000 ms",
    );
    d.refuse_with(
        set(3_000, 0),
        InvalidArgument,
        "grace 0 ms must be more than 0 and at most the lease (3000 ms)",
    );
    d.refuse(set(3_000, 4_000));
    d.ok(set(3_000, 50));
    assert_eq!(
        (d.state.lease_ms, d.state.grace_ms, d.state.expiry_lease_ms),
        (3_000, 50, 3_000)
    );
    // Shorter: agents are told 1 s at once, failovers keep waiting 3 s.
    d.ok(set(1_000, 50));
    assert_eq!((d.state.lease_ms, d.state.expiry_lease_ms), (1_000, 3_000));
    // A settle of another value changes nothing; of the pending one, settles it.
    d.ok(Command::SettleLease {
        expiry_lease_ms: 2_000,
        lease_ms: 1_000,
    });
    assert_eq!(d.state.expiry_lease_ms, 3_000);
    // Shortened again after the leader proposed its settle for (3000, 1000): that
    // settle must not apply the newer, shorter lease to failovers without its own wait.
    d.ok(set(800, 50));
    d.ok(Command::SettleLease {
        expiry_lease_ms: 3_000,
        lease_ms: 1_000,
    });
    assert_eq!((d.state.lease_ms, d.state.expiry_lease_ms), (800, 3_000));
    d.ok(Command::SettleLease {
        expiry_lease_ms: 3_000,
        lease_ms: 800,
    });
    assert_eq!(d.state.expiry_lease_ms, 800);
    // Longer: applies to failovers at once.
    d.ok(set(5_000, 60));
    assert_eq!((d.state.lease_ms, d.state.expiry_lease_ms), (5_000, 5_000));
}
