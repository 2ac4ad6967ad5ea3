//! The simulation suite: many seeds without violations, exact replay, and the planted
//! bugs found. Seeds run on every available core; each seed is independent.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use baton_sim::{Bugs, Outcome, run_seed_caught};

/// Run `seeds` on all cores; the outcomes in seed order.
fn run_many(seeds: std::ops::Range<u64>, bugs: Bugs) -> Vec<Outcome> {
    let next = AtomicU64::new(seeds.start);
    let out = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= seeds.end {
                        return;
                    }
                    let o = run_seed_caught(seed, bugs);
                    out.lock().unwrap().push(o);
                }
            });
        }
    });
    let mut v = out.into_inner().unwrap();
    v.sort_by_key(|o| o.seed);
    v
}

fn report(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    for o in outcomes.iter().filter(|o| !o.violations.is_empty()) {
        s.push_str(&format!(
            "seed {}: {:?}\n  replay: cargo run --release -p baton-sim -- --from {} --seeds 1 --trace\n",
            o.seed,
            o.violations.iter().take(3).collect::<Vec<_>>(),
            o.seed
        ));
    }
    s
}

#[test]
fn two_hundred_seeds_without_violations() {
    let outcomes = run_many(0..200, Bugs::default());
    assert_eq!(outcomes.len(), 200);
    let bad = report(&outcomes);
    assert!(bad.is_empty(), "violations found:\n{bad}");
    // The runs did something: roles were created, run, and faults injected.
    for o in &outcomes {
        assert!(
            o.trace.iter().any(|l| l.contains("acked create")),
            "seed {}",
            o.seed
        );
        assert!(
            o.trace.iter().any(|l| l.contains("fault starts")),
            "seed {}",
            o.seed
        );
    }
}

/// A seed replays with the same trace, each run in a process of its own: how a failing
/// seed is replayed. (Known gap: on a heavily loaded machine, replays have been seen to
/// differ by a few simulated milliseconds: seed 2 with the planted `no-self-fence` bug
/// around a snapshot, and once this seed 7 around an agent's restart, at a load average
/// above 10 with other builds running. Runs on an ordinary load have matched. Something
/// outside the simulated clock still reaches the run; it is not found yet. Only the
/// unplanted replay is asserted here.)
#[test]
fn a_seed_replays_with_the_same_trace() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton-sim"))
            .args(args)
            .output()
            .expect("run baton-sim");
        assert!(
            out.status.success() || out.status.code() == Some(1),
            "baton-sim {args:?}: {:?}",
            out.status
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plain = ["--from", "7", "--seeds", "1", "--trace"];
    let a = run(&plain);
    assert!(a.lines().count() > 20, "trace too short: {a}");
    assert_eq!(a, run(&plain));
}

/// Regression: a leader that lost its quorum without losing its term (one follower
/// crashed, the link to the other blackholed) declared every server down when the
/// crashed follower came back, while the agents had only lost the directory: a false
/// failover with directory faults only. First seen with seed 380 (of an earlier version
/// of the simulator); replayed here with a scripted fault. Without the fix in the
/// Directory Manager (restart liveness clocks on regaining a quorum), seeds 3 to 7 of
/// this plan each move roles.
#[test]
fn regression_leader_regaining_quorum_does_not_fail_over() {
    use baton_sim::{Fault, Planned, run_with};
    for seed in 3..=7 {
        let plan = vec![Planned {
            start_ms: 4_000,
            len_ms: 3_500,
            fault: Fault::LeaderQuorumLoss,
        }];
        let o = run_with(seed, Bugs::default(), Some(plan));
        assert!(o.directory_only);
        assert!(
            o.trace.iter().any(|l| l.contains(" leads: ")),
            "seed {seed}: no leader was found to cut off: {:?}",
            o.trace
        );
        assert!(o.violations.is_empty(), "seed {seed}: {:?}", o.violations);
    }
}

/// The command line's replay: the same seed run twice by the binary prints the same
/// trace, byte for byte (separate processes, so nothing is shared but the seed).
#[test]
fn the_binary_replays_a_seed_byte_for_byte() {
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton-sim"))
            .args(["--from", "11", "--seeds", "1", "--trace"])
            .output()
            .expect("run baton-sim");
        assert!(out.status.success() || out.status.code() == Some(1));
        out.stdout
    };
    let a = run();
    let b = run();
    let text = String::from_utf8_lossy(&a);
    assert!(
        text.ends_with("simulated 1 seeds, 0 violations\n"),
        "unexpected end of output: {text}"
    );
    assert!(text.lines().count() > 20, "trace too short: {text}");
    assert!(
        a == b,
        "the two runs differ:\n{text}\n---\n{}",
        String::from_utf8_lossy(&b)
    );
}

/// Run the binary with a planted bug until the first seed with a violation (at most
/// 500 seeds) and return that seed. In a separate process: a planted bug can make
/// openraft panic, and a panic while a turmoil world unwinds may abort the process (the
/// panic hook prints the seed first).
fn first_failing_seed(plant: &str) -> Option<u64> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton-sim"))
        .args(["--seeds", "500", "--plant", plant, "--stop-on-violation"])
        .output()
        .expect("run baton-sim");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("seed "))?;
    let seed: u64 = line
        .trim_start_matches("seed ")
        .split(':')
        .next()?
        .parse()
        .ok()?;
    eprintln!(
        "{plant}: found at seed {seed} ({} seeds run): {line}",
        seed + 1
    );
    Some(seed)
}

#[test]
fn planted_ack_before_flush_is_found() {
    assert!(
        first_failing_seed("ack-before-flush").is_some(),
        "not found in 500 seeds"
    );
}

#[test]
fn planted_no_self_fence_is_found() {
    assert!(
        first_failing_seed("no-self-fence").is_some(),
        "not found in 500 seeds"
    );
}

#[cfg(feature = "planted-bugs")]
#[test]
fn planted_no_clock_restart_is_found() {
    assert!(
        first_failing_seed("no-clock-restart").is_some(),
        "not found in 500 seeds"
    );
}

/// A failback delay counts on the directory's own time: the leader's wall clock stepping
/// an hour forward (or back) while the delay runs neither ends it at once nor holds the
/// role away from its primary. The checker flags a return to the primary sooner than the
/// delay after its agent restarted, or much later.
#[test]
fn failback_delay_survives_a_leader_clock_step() {
    use baton_sim::run_failback_clock_step;
    for (seed, step) in [
        (1, 3_600_000),
        (2, -3_600_000),
        (3, 3_600_000),
        (4, -3_600_000),
    ] {
        let o = run_failback_clock_step(seed, step);
        assert!(
            o.trace.iter().any(|l| l.contains("wall clock steps by")),
            "seed {seed}: no clock was stepped: {:?}",
            o.trace
        );
        assert!(
            o.trace.iter().any(|l| l.contains("failback of fb to a1")),
            "seed {seed}: the role never came back: {:?}",
            o.violations
        );
        assert!(
            o.violations.is_empty(),
            "seed {seed} (step {step} ms): {:?}",
            o.violations
        );
    }
}
