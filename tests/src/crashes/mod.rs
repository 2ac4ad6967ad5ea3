//! Crash and corruption campaigns, with the real `baton`
//! binary on loopback.
//!
//! **crash**: a three-node cluster; in-process writers add servers (`s-W-N`) continuously
//! (`--rate`, 30 writes/s by default, so that a long campaign stays within the directory's
//! limits) and record every acknowledged write with its revision, while
//! the campaign kill -9s a random node (the leader about half the time), waits a short
//! random time and restarts it. Every restart must come back: the node reaches `follower`
//! or `leader` and applies at least the last write acknowledged before it restarted (else
//! it is a failed restart and its log is printed). Every `--check-every` kills, at the end,
//! and after a final kill -9 of all three nodes, everything is read back linearizably:
//! every acknowledged write must be there (zero lost acks), nothing that was never sent
//! may be, and at the end every node's local copy must equal the leader's.
//!
//! **corrupt**: for each case a fresh three-node cluster takes some writes (with small
//! `--snapshot-every` in some cases, so that snapshots and purges exist), one node is
//! stopped (SIGTERM or kill -9) and its data damaged, either logically (one stored value,
//! through `baton_store::fault`) or raw (bits flipped in, or the tail cut off, sled's own
//! files). The node is then started again and must refuse to serve (exit non-zero, an
//! `error:` line naming the problem and saying how to re-add the node), or, if it starts,
//! must converge on exactly the leader's data. Meanwhile the other two keep taking writes
//! and serving linearizable reads, and no acknowledged write may be lost. A refused node
//! is then re-added the way its message says (remove-node, data dir moved aside, started
//! empty with `--join`), which must bring it back as a caught-up voter. Before and after
//! the damage a copy of the node's data is opened in-process with `baton_store::open`, so
//! the report can say what the store itself sees (raw damage may be invisible to it).
//! `--kinds logical`, `--kinds raw` or a list picks the damage kinds (`crashes kinds`).
//!
//! **rollback** and **stuck** demonstrate, each in one run, what undetected raw damage
//! costs: a follower whose sled `db` tail is cut just enough to forget recent writes,
//! followed by the loss of the leader (are acknowledged writes lost?), or cut behind the
//! leader's purge point (does it ever catch up?).
//!
//! ```text
//! cargo run --release -p baton-tests --bin crashes -- crash --kills 1000
//! cargo run --release -p baton-tests --bin crashes -- corrupt --cases 100
//! ```
//! Flags: `--seed N` replays a campaign's random choices (the timing of real processes
//! still varies), `-v` prints every step. A release build of this binary builds and uses
//! the release `baton` unless `BATON_BIN` is set.
//!
//! The campaigns are a module of the test harness: the `crashes` binary
//! (`src/bin/crashes.rs`) is its command line, and the end-to-end tests
//! (`tests/e2e/durability.rs`) run small versions of both.
//!
//! The modules: `cli` (the command line), `crash` and `corrupt` (the two
//! campaigns), `damage` (what is done to a node's files), `ledger` (the writers and
//! the read-backs), `report` (what the campaigns found), `demos` (rollback and
//! stuck), `common` (clients and figures).

mod cli;
mod common;
mod corrupt;
mod crash;
mod damage;
mod demos;
mod ledger;
mod report;

pub use cli::main;
pub use common::runtime;
pub use corrupt::{CorruptConfig, corrupt_campaign};
pub use crash::{CrashConfig, crash_campaign};
pub use damage::Kind;
pub use demos::{RollbackReport, StuckReport, rollback_demo, stuck_demo};
pub use ledger::Ledger;
pub use report::{Case, CorruptReport, CrashReport, FailedRestart, Outcome};
