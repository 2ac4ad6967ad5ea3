//! Bounded exponential backoff with jitter, shared by every retry loop of the client
//! (and reusable by callers such as the agent's session reconnect loop).
//!
//! Jitter matters here: after a leader failure, every agent and client retries at the
//! same moment; spreading the retries keeps the new leader from a thundering herd.

use rand::RngExt;
use std::time::Duration;

/// Delays that start at `initial`, double on every step up to `max`, each one drawn
/// uniformly from `[base/2, base]` ("equal jitter"): never longer than `max`, never
/// shorter than half of `initial`.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First base delay; also what `reset` returns to.
    initial: Duration,
    /// Cap of the base delay, so a long outage never makes retries sparse.
    max: Duration,
    /// Base of the next delay (before jitter).
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max` (`max` below `initial` is raised to it).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay to wait, then doubles the base (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = base.saturating_mul(2).min(self.max);
        jitter(base)
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// A random duration in `[base/2, base]`.
fn jitter(base: Duration) -> Duration {
    let half = base / 2;
    let spread = (base - half).as_nanos().min(u64::MAX as u128) as u64;
    if spread == 0 {
        return base;
    }
    half + Duration::from_nanos(rand::rng().random_range(0..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_bounds_and_grow_to_the_cap() {
        let initial = Duration::from_millis(50);
        let max = Duration::from_secs(1);
        for _ in 0..200 {
            let mut b = Backoff::new(initial, max);
            let mut base = initial;
            for _ in 0..12 {
                let d = b.next_delay();
                assert!(
                    d >= base / 2 && d <= base,
                    "{d:?} outside [{:?}, {base:?}]",
                    base / 2
                );
                assert!(d <= max);
                assert!(d >= initial / 2);
                base = (base * 2).min(max);
            }
        }
    }

    #[test]
    fn reaches_the_cap_and_reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        for _ in 0..10 {
            b.next_delay();
        }
        // 50 -> 100 -> 200 -> 400 -> 800 -> 1000: capped.
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(500) && d <= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(50));
    }

    #[test]
    fn degenerate_configurations_do_not_panic() {
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.next_delay(), Duration::ZERO);
        let mut inverted = Backoff::new(Duration::from_millis(100), Duration::from_millis(10));
        assert!(inverted.next_delay() <= Duration::from_millis(100));
        let mut huge = Backoff::new(Duration::MAX, Duration::MAX);
        huge.next_delay();
        huge.next_delay();
    }
}
