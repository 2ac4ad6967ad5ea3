//! # Exactly-once writes: the outcome of every recent request id
//!
//! A client that sends a write and hears nothing back (its RPC timed out, the connection
//! broke, the leader it reached died while forwarding) cannot know whether the write
//! committed. It retries, as it must to be available. Without help from the state machine
//! the retry of a committed `server add` is refused as `ALREADY_EXISTS`, and the retry of a
//! committed `role move` moves the role a second time.
//!
//! So a client names each write with a request id of its own choosing, the same on every
//! retry of that write (`Entry::request`). The state keeps the outcome (accepted, with its
//! summary, or refused) of the last [`REQUESTS_KEPT`] ids it applied. An entry whose id is
//! already there changes nothing and returns the first outcome again: the write takes
//! effect once however many times it is retried, and the client gets the answer of the
//! attempt that committed.
//!
//! Being part of [`crate::State`], the table is replicated, snapshotted and deterministic:
//! every node answers a retry the same way, before and after a leader change or a restart.
//!
//! ## Limits
//!
//! - The table is bounded: the oldest id is forgotten when a new one arrives at
//!   [`REQUESTS_KEPT`]. A retry that arrives after that many other identified writes is
//!   applied again (as without ids). A client retries for at most its retry budget (10 s by
//!   default); at the write rates measured on two cores (under 1,000 writes/s) that is
//!   well under [`REQUESTS_KEPT`] writes.
//! - An id is at most [`REQUEST_ID_MAX`] bytes; longer ones are refused at the edge (and
//!   never recorded here, so a bad entry cannot grow the table).
//! - An empty id means "no deduplication": the directory's own writes and agents' reports,
//!   which are idempotent or re-derived, carry none.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{Outcome, Refusal};

/// How many request ids (with their outcomes) the state remembers.
pub const REQUESTS_KEPT: usize = 10_000;
/// Longest request id accepted, in bytes.
pub const REQUEST_ID_MAX: usize = 64;

/// The outcomes of the last [`REQUESTS_KEPT`] identified writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    /// Ids in the order they were applied, oldest first: what to forget first.
    order: VecDeque<String>,
    /// Each id's outcome as first applied.
    outcomes: BTreeMap<String, Result<Outcome, Refusal>>,
}

impl Requests {
    /// The outcome `id` had when it was first applied, if it is still remembered.
    pub fn get(&self, id: &str) -> Option<&Result<Outcome, Refusal>> {
        if id.is_empty() {
            return None;
        }
        self.outcomes.get(id)
    }

    /// Remember the outcome of `id`, forgetting the oldest id beyond [`REQUESTS_KEPT`].
    /// An empty or over-long id, or one already remembered, is not recorded.
    pub fn record(&mut self, id: &str, outcome: &Result<Outcome, Refusal>) {
        if id.is_empty() || id.len() > REQUEST_ID_MAX || self.outcomes.contains_key(id) {
            return;
        }
        while self.order.len() >= REQUESTS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.outcomes.remove(&old);
            }
        }
        self.order.push_back(id.to_string());
        self.outcomes.insert(id.to_string(), outcome.clone());
        debug_assert_eq!(self.order.len(), self.outcomes.len());
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Whether `id` may name a request: at most [`REQUEST_ID_MAX`] bytes of printable ASCII.
/// The detail of what is wrong otherwise.
pub fn check_request_id(id: &str) -> Result<(), String> {
    if id.len() > REQUEST_ID_MAX {
        return Err(format!(
            "request id is {} bytes, longer than {REQUEST_ID_MAX}",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "request id holds {c:?}: only printable ASCII without spaces is allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Result<Outcome, Refusal> {
        Ok(Outcome { summary: s.into() })
    }

    #[test]
    fn remembers_the_first_outcome_and_forgets_the_oldest_beyond_the_limit() {
        let mut r = Requests::default();
        r.record("a", &ok("first"));
        r.record("a", &ok("second"));
        assert_eq!(r.get("a"), Some(&ok("first")));
        assert_eq!(r.get(""), None);
        for i in 0..REQUESTS_KEPT {
            r.record(&format!("id-{i}"), &Err(Refusal::exists("x")));
        }
        assert_eq!(r.len(), REQUESTS_KEPT);
        assert_eq!(r.get("a"), None, "the oldest id is forgotten");
        assert!(r.get("id-0").is_some());
        assert!(r.get(&format!("id-{}", REQUESTS_KEPT - 1)).is_some());
    }

    /// The state machine's side: a retried entry returns the first outcome and moves
    /// nothing but the revision; a refusal is remembered too; snapshots keep the table,
    /// and one written before the table existed loads with an empty one.
    #[test]
    fn a_state_applies_a_retried_entry_once() {
        use crate::{Command, Entry, State};
        let entry = |name: &str, request: &str| Entry {
            now_ms: 1,
            cmd: Command::AddServer {
                name: name.into(),
                main: false,
                kinds: vec![],
            },
            advance_ms: 0,
            by: String::new(),
            request: request.into(),
            batch: Vec::new(),
        };
        let mut st = State::default();
        let first = st.apply(1, &entry("a", "q1"));
        assert!(first.is_ok(), "{first:?}");
        let mut expected = st.clone();
        assert_eq!(st.apply(2, &entry("a", "q1")), first);
        expected.revision = 2;
        assert_eq!(st, expected, "the retry changed the state");
        let refused = st.apply(3, &entry("a", "q2"));
        assert!(refused.is_err());
        assert_eq!(st.apply(4, &entry("a", "q2")), refused);
        assert!(
            st.apply(5, &entry("a", "")).is_err(),
            "no id, no deduplication"
        );

        let json = serde_json::to_value(&st).unwrap();
        let back: State = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, st);
        let mut old = json;
        old.as_object_mut().unwrap().remove("requests");
        let old: State = serde_json::from_value(old).unwrap();
        assert!(old.requests.is_empty());
    }

    #[test]
    fn empty_and_overlong_ids_are_never_recorded() {
        let mut r = Requests::default();
        r.record("", &ok("x"));
        r.record(&"x".repeat(REQUEST_ID_MAX + 1), &ok("x"));
        assert!(r.is_empty());
        assert!(check_request_id(&"x".repeat(REQUEST_ID_MAX)).is_ok());
        let long = check_request_id(&"x".repeat(REQUEST_ID_MAX + 1)).unwrap_err();
        assert!(long.contains("65 bytes"), "{long}");
        let space = check_request_id("a b").unwrap_err();
        assert!(space.contains("' '"), "{space}");
    }
}
