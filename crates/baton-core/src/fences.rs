//! # Fence reports: the self-fences agents tell the directory about
//!
//! An agent fences itself (stops its roles) when no renewal is acknowledged within its
//! lease. The directory cannot see that happen: the agent could not reach it. So the
//! agent remembers each fence and reports it once a renewal is acknowledged again
//! (`Command::ReportFenced`), and the directory records it as one history event with
//! the cause `fenced`. A report moves, starts and stops nothing.
//!
//! ## Once per fence
//!
//! Reports are resent (after every acknowledged renewal, on every new session) until
//! the directory has recorded them, so the same report can arrive several times, from
//! several sessions, in any order. Each agent instance numbers its fences 1, 2, 3, ...;
//! the server's [`FenceReports`] remembers which numbers of its current instance were
//! recorded: the newest [`FENCE_NUMBERS_KEPT`], and a watermark below which every number
//! counts as settled. A number already recorded (or settled) records nothing again. The
//! session sends the table to the agent with every assignment set, so the agent stops
//! resending a report once the set sent ahead of an acknowledgement lists it.
//!
//! The agent keeps at most [`FENCE_NUMBERS_KEPT`] reports pending (dropping the oldest),
//! so a number it still sends is never older than every number remembered here unless
//! it was recorded: the watermark cannot settle a report that was never recorded.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Fence numbers remembered per server (and pending per agent): the most recent ones.
pub const FENCE_NUMBERS_KEPT: usize = 64;

/// The fence reports of a server's agent instance the directory has recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceReports {
    /// The agent instance the numbers belong to: numbers start again at 1 with every
    /// agent start, so a new instance's first report starts a new table.
    pub instance: String,
    /// The most recent numbers recorded, at most [`FENCE_NUMBERS_KEPT`].
    pub numbers: BTreeSet<u64>,
    /// Every number up to this one is settled: recorded, or older than every number
    /// kept (the newest number forgotten). 0: none.
    pub settled_through: u64,
}

impl FenceReports {
    /// No report was ever recorded (what snapshots without the field load as).
    pub fn is_empty(&self) -> bool {
        self.instance.is_empty() && self.numbers.is_empty() && self.settled_through == 0
    }

    /// Whether report `number` of `instance` was recorded already (or is settled).
    pub fn is_recorded(&self, instance: &str, number: u64) -> bool {
        self.instance == instance
            && (number <= self.settled_through || self.numbers.contains(&number))
    }

    /// Remember that report `number` of `instance` was recorded, forgetting the oldest
    /// number beyond [`FENCE_NUMBERS_KEPT`]. A report of another instance than the one
    /// remembered starts a new table.
    pub(crate) fn record(&mut self, instance: &str, number: u64) {
        if self.instance != instance {
            *self = FenceReports {
                instance: instance.to_string(),
                ..FenceReports::default()
            };
        }
        self.numbers.insert(number);
        while self.numbers.len() > FENCE_NUMBERS_KEPT {
            if let Some(old) = self.numbers.pop_first() {
                self.settled_through = self.settled_through.max(old);
            }
        }
    }
}

/// Milliseconds as seconds with one decimal ("1.2 s"), for event details.
pub(crate) fn seconds_text(ms: u64) -> String {
    format!("{}.{} s", ms / 1_000, (ms % 1_000) / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_recorded_once_per_instance_and_the_oldest_are_settled() {
        let mut f = FenceReports::default();
        assert!(f.is_empty());
        f.record("i1", 2);
        assert!(f.is_recorded("i1", 2));
        assert!(
            !f.is_recorded("i1", 1),
            "out of order: 1 is not recorded yet"
        );
        assert!(
            !f.is_recorded("i2", 2),
            "another instance's numbers are its own"
        );
        for n in 3..=(FENCE_NUMBERS_KEPT as u64 + 1) {
            f.record("i1", n);
        }
        assert_eq!(f.numbers.len(), FENCE_NUMBERS_KEPT);
        assert_eq!(f.settled_through, 0);
        f.record("i1", FENCE_NUMBERS_KEPT as u64 + 2);
        assert_eq!(f.numbers.len(), FENCE_NUMBERS_KEPT);
        assert_eq!(f.settled_through, 2);
        assert!(f.is_recorded("i1", 1), "below the watermark: settled");
        // A new instance starts a new table.
        f.record("i2", 1);
        assert_eq!(f.numbers, BTreeSet::from([1]));
        assert_eq!(f.settled_through, 0);
        assert!(!f.is_recorded("i1", 2));
    }

    #[test]
    fn seconds_have_one_decimal() {
        assert_eq!(seconds_text(0), "0.0 s");
        assert_eq!(seconds_text(1_299), "1.2 s");
        assert_eq!(seconds_text(u64::MAX), format!("{}.6 s", u64::MAX / 1_000));
    }
}
