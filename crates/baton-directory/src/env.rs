//! The node's environment: how it opens connections to other nodes, reads the wall clock
//! and exposes its applied state. Production uses [`NodeEnv::default`] (tonic's lazy TCP
//! channels, `SystemTime`, the sled state machine); a deterministic simulation passes its
//! own (simulated network, simulated clock, an in-memory store) without this crate
//! knowing about the simulator.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use baton_core::State;
use baton_store::StateMachineStore;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

/// Turns a configured endpoint into a (lazily connecting) channel.
pub type ChannelFactory = Arc<dyn Fn(Endpoint) -> Channel + Send + Sync>;
/// Wall-clock milliseconds since the Unix epoch.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What a node needs from the world around it besides its configuration.
#[derive(Clone)]
pub struct NodeEnv {
    /// Builds every channel to another node (Raft RPCs, forwarding, renewals).
    pub connect: ChannelFactory,
    /// Stamps proposed entries and drives time-based placement.
    pub wall_ms: WallClock,
    /// Bugs planted on purpose (test builds only), see [`Planted`].
    #[cfg(feature = "planted-bugs")]
    pub planted: Planted,
}

impl Default for NodeEnv {
    fn default() -> Self {
        NodeEnv {
            connect: Arc::new(|e: Endpoint| e.connect_lazy()),
            wall_ms: Arc::new(system_wall_ms),
            #[cfg(feature = "planted-bugs")]
            planted: Planted::default(),
        }
    }
}

impl std::fmt::Debug for NodeEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeEnv").finish_non_exhaustive()
    }
}

/// Bugs that a simulation switches on to show that its checkers see them. Only exists
/// with the `planted-bugs` feature, which no production build enables.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Planted {
    /// A new leader does not restart the liveness clocks: every server counts as last
    /// seen when the node started, so a leader elected late declares everyone down.
    pub no_clock_restart: bool,
}

/// `SystemTime` in ms since the Unix epoch (0 before it).
pub fn system_wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The read side of the state machine: the applied state and its revision.
pub trait AppliedState: Send + Sync {
    /// The applied state; hold the lock briefly and never across an `.await`.
    fn state(&self) -> Arc<RwLock<State>>;
    /// The last applied log index (the directory's revision), as a watch.
    fn subscribe(&self) -> watch::Receiver<u64>;
}

impl AppliedState for StateMachineStore {
    fn state(&self) -> Arc<RwLock<State>> {
        StateMachineStore::state(self)
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        StateMachineStore::subscribe(self)
    }
}
