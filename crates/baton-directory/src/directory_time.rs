//! The leader's measure of directory time.
//!
//! Failback delays and quarantine cooldowns count on directory time
//! (`baton_core::State::elapsed_ms`), which moves only by the `advance_ms` of applied
//! entries. The leader fills it in: every entry it proposes carries the monotonic time it
//! measured since the previous advance it proposed in its term, at most
//! `baton_core::ADVANCE_MAX_MS`. A node starts measuring when its controller starts for a
//! term (it became leader); entries proposed by a node that does not lead carry 0 (they
//! are forwarded to the leader, which proposes them with its own measure).
//!
//! The clock is tokio's `Instant` (monotonic, and simulated in the simulator), never the
//! wall clock: a wall-clock step on the leader, or a new leader whose wall clock differs,
//! moves no timer. The measure never crosses terms, so the time between one leader's last
//! proposal and the next leader's start is not counted: leadership changes only stretch
//! timers. Time taken for an entry that is then lost (a write that fails) is not given
//! back: that too only stretches timers.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct DirectoryTime {
    /// The term this node measures for, and up to when it has proposed.
    measure: Mutex<Option<(u64, Instant)>>,
}

impl DirectoryTime {
    /// Start measuring from now, as the leader of `term`.
    pub fn lead(&self, term: u64) {
        *self.measure.lock().expect("directory time lock") = Some((term, Instant::now()));
    }

    /// Monotonic ms measured as the leader of `term` and not proposed yet (0 when this
    /// node does not measure for `term`).
    pub fn unproposed_ms(&self, term: u64) -> u64 {
        match *self.measure.lock().expect("directory time lock") {
            Some((t, since)) if t == term => since.elapsed().as_millis() as u64,
            _ => 0,
        }
    }

    /// The advance for an entry this node proposes as the leader of `term`: what it
    /// measured since the previous one, at most `baton_core::ADVANCE_MAX_MS` (the rest is
    /// dropped, see that constant). 0 when this node does not measure for `term`.
    pub fn take(&self, term: u64) -> u64 {
        let mut m = self.measure.lock().expect("directory time lock");
        let Some((t, since)) = m.as_mut() else {
            return 0;
        };
        if *t != term {
            return 0;
        }
        let now = Instant::now();
        let measured = now.saturating_duration_since(*since).as_millis() as u64;
        if measured > baton_core::ADVANCE_MAX_MS {
            *since = now;
            baton_core::ADVANCE_MAX_MS
        } else {
            // Whole milliseconds only: the fraction stays for the next entry.
            *since += Duration::from_millis(measured);
            measured
        }
    }
}
