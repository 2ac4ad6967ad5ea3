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
    /// A cut armed to happen when a node's controller starts a write of a kind.
    armed: Arc<RwLock<Option<Armed>>>,
}

/// See [`Faults::isolate_at_controller_write`].
#[derive(Debug)]
struct Armed {
    node: u64,
    others: Vec<u64>,
    kind: &'static str,
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

    /// Cut every link of `node` to the `others` at the moment its controller next starts
    /// a write of its own of this kind (`Command::name`, e.g. `"servers_down"`): a
    /// quorum lost while a controller write is in flight.
    pub fn isolate_at_controller_write(&self, node: u64, others: &[u64], kind: &'static str) {
        *self.armed.write().expect("faults lock") = Some(Armed {
            node,
            others: others.to_vec(),
            kind,
        });
    }

    /// Called by `node`'s controller as it starts a write of `kind`.
    pub fn controller_write(&self, node: u64, kind: &str) {
        let fire = self
            .armed
            .read()
            .expect("faults lock")
            .as_ref()
            .is_some_and(|a| a.node == node && a.kind == kind);
        if fire && let Some(a) = self.armed.write().expect("faults lock").take() {
            self.isolate(a.node, &a.others);
        }
    }

    pub fn is_cut(&self, from: u64, to: u64) -> bool {
        self.cut.read().expect("faults lock").contains(&(from, to))
    }
}
