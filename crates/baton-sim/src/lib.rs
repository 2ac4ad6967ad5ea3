//! # baton-sim: deterministic simulation of a Baton cluster
//!
//! One run (a *seed*) builds a [turmoil] world of
//! - three directory nodes running the real `baton-directory` code (real tonic services,
//!   real openraft, the real Directory Manager) over turmoil's simulated TCP, each on an
//!   in-memory store that models durability ([`store`]);
//! - three agents ([`agent`]) whose every decision is the real agent's
//!   `baton_agent::AgentCore`, with simulated time, network and role processes;
//! - two admin clients ([`client`]) creating roles and reading them back;
//!
//! injects the seed's faults (crash and restart of a node or an agent, partitions of any
//! set of hosts, held links, dropped messages; each 1-5 simulated seconds), heals
//! everything, and checks the invariants ([`checker`]). Everything the run does is a
//! function of the seed, so a failing seed replays with the same trace.

pub mod agent;
pub mod checker;
pub mod client;
pub mod linear;
pub mod net;
pub mod rng;
pub mod sim;
pub mod store;

pub use sim::{Bugs, Fault, Outcome, Planned, run_failback_clock_step, run_seed, run_with};

thread_local! {
    /// The seed this thread is simulating, and the panics seen meanwhile (a turmoil world
    /// runs on one thread; tokio catches a panic inside a spawned task, so the checker
    /// would not see it otherwise).
    static RUN: std::cell::RefCell<(Option<u64>, Vec<String>)> =
        const { std::cell::RefCell::new((None, Vec::new())) };
}

/// Install (once) a panic hook that records panics for [`take_panics`] and prints the
/// seed to replay first: a panic while the world unwinds can abort the process.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.to_string();
            let seed = RUN
                .try_with(|r| {
                    r.try_borrow_mut().ok().and_then(|mut r| {
                        let first = r.1.is_empty();
                        r.1.push(msg.clone());
                        r.0.filter(|_| first)
                    })
                })
                .ok()
                .flatten();
            if let Some(seed) = seed {
                println!("seed {seed}: the simulation panicked: {msg}");
                println!(
                    "  replay: cargo run --release -p baton-sim -- --from {seed} --seeds 1 --trace"
                );
            }
            previous(info);
        }));
    });
}

/// The panics recorded on this thread since the last call.
pub(crate) fn take_panics() -> Vec<String> {
    RUN.with(|r| std::mem::take(&mut r.borrow_mut().1))
}

/// Run `seed` and catch a panic inside the simulation as a violation. Panics inside
/// tasks (which tokio catches) are violations too.
pub fn run_seed_caught(seed: u64, bugs: Bugs) -> Outcome {
    install_panic_hook();
    RUN.with(|r| *r.borrow_mut() = (Some(seed), Vec::new()));
    let result = std::panic::catch_unwind(|| run_seed(seed, bugs));
    RUN.with(|r| r.borrow_mut().0 = None);
    match result {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Outcome {
                seed,
                directory_only: false,
                violations: vec![format!("the simulation panicked: {msg}")],
                trace: vec![format!("panic: {msg}")],
            }
        }
    }
}
