//! The lease from the agent's side: when an agent renews, and when it must stop its roles
//! if no renewal is acknowledged. Pure arithmetic, shared by the agent (which acts on it)
//! and the directory (which warns when a leader failure would not fit inside it).

/// An agent's fencing arithmetic, for lease `lease_ms` and clock-rate bound `rho_ppm`:
/// when it renews and when it must stop its roles. The agent acts on it; the directory
/// checks its election timing against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    pub lease_ms: u64,
    pub rho_ppm: u64,
}

impl Fence {
    /// Time reserved to stop every role: the SIGTERM grace plus the SIGKILL and reaping.
    /// An eighth of the lease, at most 500 ms (250 ms at a 2 s lease: a 200 ms SIGTERM
    /// grace). A fence is the emergency stop of an agent cut off from the directory;
    /// every millisecond reserved here is one less to ride out a directory leader
    /// failure without stopping the roles at all (planned stops use the handover grace).
    pub fn stop_bound_ms(&self) -> u64 {
        (self.lease_ms / 8).min(500)
    }

    /// How often to renew: five times per lease, so the last acknowledged renewal is
    /// never more than a fifth of a lease old when the directory goes quiet (what a
    /// leader failure has left to fit in, see docs/architecture.md).
    pub fn renew_every_ms(&self) -> u64 {
        self.lease_ms / 5
    }

    /// The SIGTERM grace used when fencing (and by the wrapper when the agent dies).
    pub fn fence_grace_ms(&self) -> u64 {
        self.stop_bound_ms() * 4 / 5
    }

    /// When to start stopping every role, given the send time of the last acknowledged
    /// renewal (CLOCK_BOOTTIME ms).
    pub fn stop_at_ms(&self, t_send_ms: u64) -> u64 {
        let usable = self.lease_ms - self.lease_ms * self.rho_ppm / 1_000_000;
        (t_send_ms + usable).saturating_sub(self.stop_bound_ms())
    }
}
