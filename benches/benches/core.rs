//! Criterion benchmarks of the directory's hot pure code (baton-core): `State::apply` of
//! typical commands, placement over 10,000 roles, the controller's expiry scan over
//! 10,000 servers, and the agent sessions' assignment sets at 100,000 roles.
//! `cargo bench -p baton-benches --bench core`.
//!
//! States are built through `apply` only (RegisterAgent, CreateRole), so these benches
//! follow the core's types as they change.

use std::collections::BTreeMap;
use std::hint::black_box;

use baton_core::controller::expired_servers;
use baton_core::state::State;
use baton_core::{Command, Entry};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const NOW: u64 = 1_700_000_000_000;

fn register(s: &mut State, name: String) {
    apply(
        s,
        Command::RegisterAgent {
            server: name,
            kinds: vec![],
            main: false,
            instance: Default::default(),
            replaces: None,
        },
    );
}

/// `servers` servers, all up; `roles` roles with three servers each. The first
/// `on_first` roles list srv-0 first; the others are spread over the rest. All placed.
fn state(servers: usize, roles: usize, on_first: usize, failback: bool) -> State {
    let mut s = State::default();
    s.apply_membership(1, 3);
    for i in 0..servers {
        register(&mut s, format!("srv-{i}"));
    }
    for i in 0..roles {
        let list: Vec<String> = if i < on_first {
            vec![0, 1 + i % (servers - 1), 1 + (i + 1) % (servers - 1)]
        } else {
            vec![1 + i % (servers - 1), 1 + (i + 1) % (servers - 1), 0]
        }
        .into_iter()
        .map(|n| format!("srv-{n}"))
        .collect();
        apply(
            &mut s,
            Command::CreateRole {
                name: format!("role-{i:05}"),
                kind: String::new(),
                servers: list,
                failback,
                failback_delay_ms: 0,
                database: None,
            },
        );
    }
    assert!(s.roles.values().all(|r| r.active.is_some()), "all placed");
    s
}

fn apply(s: &mut State, cmd: Command) {
    let index = s.revision + 1;
    s.apply(
        index,
        &Entry {
            by: Default::default(),
            request: Default::default(),
            now_ms: NOW,
            advance_ms: 0,
            cmd,
            batch: Vec::new(),
        },
    )
    .expect("accepted");
}

fn set_role(role: &str, delay: u64) -> Command {
    Command::SetRole {
        role: role.into(),
        failback: None,
        failback_delay_ms: Some(delay),
        database: None,
    }
}

fn bench_apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    for roles in [100usize, 1_000, 10_000] {
        let mut s = state(10, roles, roles * 3 / 10, false);
        let mut toggle = 0u64;
        g.bench_function(format!("set_role/{roles}_roles"), |b| {
            b.iter(|| {
                toggle ^= 1;
                apply(&mut s, set_role("role-00000", toggle));
            })
        });
    }
    let base = state(10, 1_000, 300, false);
    let mut n = 0u64;
    g.bench_function("create_role/1000_roles", |b| {
        b.iter_batched(
            || base.clone(),
            |mut s| {
                n += 1;
                apply(
                    &mut s,
                    Command::CreateRole {
                        name: format!("new-{n}"),
                        kind: String::new(),
                        servers: vec!["srv-1".into(), "srv-2".into()],
                        failback: false,
                        failback_delay_ms: 0,
                        database: None,
                    },
                );
                s
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("tick/10000_roles", |b| {
        let mut s = state(10, 10_000, 3_000, false);
        b.iter(|| apply(&mut s, Command::Tick))
    });
    g.finish();
}

fn bench_placement(c: &mut Criterion) {
    let mut g = c.benchmark_group("placement");
    g.sample_size(20);
    // srv-0 hosts 3,000 of 10,000 roles and goes down: every one moves.
    let base = state(10, 10_000, 3_000, false);
    assert_eq!(base.roles_on("srv-0").len(), 3_000);
    g.bench_function("servers_down_3k_of_10k", |b| {
        b.iter_batched(
            || base.clone(),
            |mut s| {
                apply(
                    &mut s,
                    Command::ServersDown {
                        servers: vec!["srv-0".into()],
                    },
                );
                s
            },
            BatchSize::LargeInput,
        )
    });
    // The same with failback on: srv-0 registers again and its 3,000 roles start a
    // graceful handover back to it.
    let mut down = state(10, 10_000, 3_000, true);
    apply(
        &mut down,
        Command::ServersDown {
            servers: vec!["srv-0".into()],
        },
    );
    assert!(down.roles_on("srv-0").is_empty());
    g.bench_function("register_agent_replacing_3k_of_10k", |b| {
        b.iter_batched(
            || down.clone(),
            |mut s| {
                apply(
                    &mut s,
                    Command::RegisterAgent {
                        server: "srv-0".into(),
                        kinds: vec![],
                        main: false,
                        instance: Default::default(),
                        replaces: None,
                    },
                );
                s
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_controller(c: &mut Criterion) {
    let mut g = c.benchmark_group("controller");
    let mut s = State::default();
    let mut last_seen = BTreeMap::new();
    for i in 0..10_000u64 {
        let name = format!("srv-{i:05}");
        register(&mut s, name.clone());
        // One in a hundred has not renewed for 10 s.
        last_seen.insert(name, if i % 100 == 0 { 0 } else { 9_500 });
    }
    g.bench_function("expired_servers/10000_servers", |b| {
        b.iter(|| {
            let down = expired_servers(black_box(&s), &last_seen, 0, 10_000, 3_000, 300);
            assert_eq!(down.len(), 100);
            down
        })
    });
    g.finish();
}

/// What a node does for its agent sessions after each applied change, at 10,000 servers
/// and 100,000 roles: one server's sets by scanning every role (what each session did
/// on its own), against every server's sets in one pass (built once per change and
/// shared). With N sessions woken, a change costs N of the first or one of the second.
fn bench_sessions(c: &mut Criterion) {
    let mut g = c.benchmark_group("sessions");
    g.sample_size(20);
    let s = state(10_000, 100_000, 0, false);
    g.bench_function("one_server_by_scan/100000_roles", |b| {
        b.iter(|| {
            let run = s.assignments(black_box("srv-5"));
            let stop = s.releasing(black_box("srv-5"));
            assert!(!run.is_empty() && stop.is_empty());
            (run, stop)
        })
    });
    g.bench_function("every_server_in_one_pass/100000_roles", |b| {
        b.iter(|| {
            let sets = black_box(&s).server_sets();
            assert!(sets.len() > 9_000);
            sets
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_apply,
    bench_placement,
    bench_controller,
    bench_sessions
);
criterion_main!(benches);
