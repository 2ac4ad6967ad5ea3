//! Fault injection for in-process cluster tests: cut and restore Raft links by node id.
//!
//! In production the set is empty and never changes; the check is one uncontended read
//! lock per RPC. Real-process tests cut links with network namespaces instead.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

/// Shared switchboard of cut links `(from, to)`.
#[derive(Clone, Default, Debug)]
pub struct Faults {
    cut: Arc<RwLock<BTreeSet<(u64, u64)>>>,
}

impl Faults {
    /// Cut both directions between `a` and `b`.
    pub fn cut(&self, a: u64, b: u64) {
        let mut cut = self.cut.write().expect("faults lock");
        cut.insert((a, b));
        cut.insert((b, a));
    }

    /// Cut every link of `node` to the `others`.
    pub fn isolate(&self, node: u64, others: &[u64]) {
        for o in others {
            self.cut(node, *o);
        }
    }

    /// Restore every link.
    pub fn heal(&self) {
        self.cut.write().expect("faults lock").clear();
    }

    pub fn is_cut(&self, from: u64, to: u64) -> bool {
        self.cut.read().expect("faults lock").contains(&(from, to))
    }
}
