//! # baton-sim: deterministic simulation of a Baton cluster
//!
//! One run (a *seed*) builds a [turmoil] world of
//! - three directory nodes running the real `baton-directory` code (real tonic services,
//!   real openraft, the real Directory Manager) over turmoil's simulated TCP, each on an
//!   in-memory store that models durability ([`store`]);
//! - three simulated agents ([`agent`]: the real session protocol and the real
//!   `baton_agent::Fence` arithmetic, not the real agent binary);
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

pub use sim::{Bugs, Fault, Outcome, Planned, run_seed, run_with};

/// Run `seed` and catch a panic inside the simulation as a violation.
pub fn run_seed_caught(seed: u64, bugs: Bugs) -> Outcome {
    match std::panic::catch_unwind(|| run_seed(seed, bugs)) {
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
