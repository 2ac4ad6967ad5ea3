//! A linearizability checker for one register (Wing & Gong's search with memoization).
//!
//! The admin clients use a role's failback delay as a register: writes are `SetRole`
//! with a unique value, reads are linearizable `GetRole`s. A write whose reply was lost
//! (any error) has an unknown outcome: it may take effect at any time after its
//! invocation, or never. Operation A precedes B only if A completed strictly before B
//! was invoked (simulated ms).

use std::collections::HashSet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Write(u64),
    Read(u64),
}

#[derive(Clone, Debug)]
pub struct Op {
    pub client: String,
    pub kind: Kind,
    pub invoke_ms: u64,
    /// `None`: the outcome is unknown (only for writes; failed reads are not recorded).
    pub complete_ms: Option<u64>,
}

/// Most operations per register the search handles (a bit mask).
pub const OPS_MAX: usize = 128;

/// Whether `ops` (at most [`OPS_MAX`]) is linearizable for a register starting at
/// `initial`. `None` when the history is too long to check.
pub fn linearizable(ops: &[Op], initial: u64) -> Option<bool> {
    if ops.len() > OPS_MAX {
        return None;
    }
    let all: u128 = if ops.len() == 128 {
        u128::MAX
    } else {
        (1u128 << ops.len()) - 1
    };
    let mut seen: HashSet<(u128, u64)> = HashSet::new();
    Some(search(ops, all, initial, &mut seen))
}

/// `left`: the operations not linearized yet.
fn search(ops: &[Op], left: u128, value: u64, seen: &mut HashSet<(u128, u64)>) -> bool {
    // Done when only writes of unknown outcome are left (they may never take effect).
    if (0..ops.len())
        .filter(|i| left & (1 << i) != 0)
        .all(|i| ops[i].complete_ms.is_none())
    {
        return true;
    }
    if !seen.insert((left, value)) {
        return false;
    }
    // Candidates: operations invoked no later than the earliest completion left.
    let earliest = (0..ops.len())
        .filter(|i| left & (1 << i) != 0)
        .filter_map(|i| ops[i].complete_ms)
        .min()
        .unwrap_or(u64::MAX);
    for i in (0..ops.len()).filter(|i| left & (1 << i) != 0) {
        let op = &ops[i];
        if op.invoke_ms > earliest {
            continue;
        }
        let rest = left & !(1 << i);
        let ok = match op.kind {
            Kind::Write(v) => search(ops, rest, v, seen),
            Kind::Read(v) => v == value && search(ops, rest, value, seen),
        };
        if ok {
            return true;
        }
        // A write of unknown outcome may also never take effect.
        if op.complete_ms.is_none() && search(ops, rest, value, seen) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, invoke_ms: u64, complete_ms: Option<u64>) -> Op {
        Op {
            client: "c".into(),
            kind,
            invoke_ms,
            complete_ms,
        }
    }

    #[test]
    fn sequential_histories() {
        let ok = [
            op(Kind::Write(1), 0, Some(1)),
            op(Kind::Read(1), 2, Some(3)),
        ];
        assert_eq!(linearizable(&ok, 0), Some(true));
        let stale = [
            op(Kind::Write(1), 0, Some(1)),
            op(Kind::Read(0), 2, Some(3)),
        ];
        assert_eq!(linearizable(&stale, 0), Some(false));
    }

    #[test]
    fn concurrent_and_unknown_writes() {
        // A read concurrent with a write may see either value.
        let h = [
            op(Kind::Write(1), 0, Some(10)),
            op(Kind::Read(0), 1, Some(2)),
            op(Kind::Read(1), 3, Some(4)),
        ];
        assert_eq!(linearizable(&h, 0), Some(true));
        // Once a read saw the new value, a later read may not see the old one.
        let h = [
            op(Kind::Write(1), 0, Some(10)),
            op(Kind::Read(1), 1, Some(2)),
            op(Kind::Read(0), 3, Some(4)),
        ];
        assert_eq!(linearizable(&h, 0), Some(false));
        // A write of unknown outcome may take effect late, or never.
        let h = [
            op(Kind::Write(1), 0, None),
            op(Kind::Read(0), 5, Some(6)),
            op(Kind::Read(1), 7, Some(8)),
        ];
        assert_eq!(linearizable(&h, 0), Some(true));
        let h = [op(Kind::Write(1), 0, None), op(Kind::Read(0), 5, Some(6))];
        assert_eq!(linearizable(&h, 0), Some(true));
        // A value nobody wrote is never linearizable.
        let h = [op(Kind::Read(7), 0, Some(1))];
        assert_eq!(linearizable(&h, 0), Some(false));
    }
}
