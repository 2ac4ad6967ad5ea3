//! Positions in the history, and whether a watcher can resume from one without loss.
//!
//! One log entry (one revision) may record several events: a `ServersDown` that moves
//! three roles records three. So the revision alone does not say how far a watcher got;
//! each event also carries its `index`, 0-based, within its revision, and the pair
//! ([`Position`]) orders the whole history: events are kept in strictly increasing
//! position order. A watcher that has seen the event at `(revision, index)` resumes
//! "after `(revision, index)`" and gets exactly the events it has not seen. Resuming
//! "after revision R" (the older, revision-only form) means after *every* event of R:
//! [`Position::end_of`].
//!
//! ## Trimming
//!
//! The history keeps at most `history_max` events; the oldest are dropped first. The state
//! remembers what has been dropped in [`Trimmed`]: `Through(p)` is the position of the
//! newest event ever dropped (every dropped event is at or before `p`, every kept event
//! after it). A watcher resuming after position `a` can be served without loss exactly
//! when no dropped event is newer than `a`, that is when `a >= p`; otherwise some events
//! it has not seen are gone and [`State::check_resume`] answers with a [`ResumeGap`]
//! rather than skipping them. With nothing ever dropped (`Nothing`) every position is
//! fine, including "after revision 0" (everything) and an empty history.
//!
//! A state loaded from a snapshot written before trimming was tracked does not know what
//! was dropped (`Unknown`): it assumes that everything before its oldest kept event may
//! have been, so a resume is accepted only from just before that event on. The first
//! event dropped after loading makes it exact again.
//!
//! The check is about the whole history, even for a watcher that filters one role: an
//! event dropped from another role still makes the answer a gap, because the state does
//! not remember which role the dropped events were about. A gap is never silent; the
//! watcher lists the events and resumes from the oldest one kept.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::state::{Event, State};

/// Where an event sits in the history: its revision, then its index within the revision.
/// Ordered by revision, then index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The log index of the entry that recorded the event.
    pub revision: u64,
    /// 0 for the entry's first event, 1 for its second, ...; `u32::MAX` stands for
    /// "after every event of the revision" and is never an event's own index.
    pub index: u32,
}

impl Position {
    /// The position of the event at `index` of `revision`.
    pub fn at(revision: u64, index: u32) -> Self {
        Position { revision, index }
    }

    /// After every event of `revision`: what resuming "after revision R" means.
    pub fn end_of(revision: u64) -> Self {
        Position {
            revision,
            index: u32::MAX,
        }
    }

    /// The last position a watcher must have reached for nothing at or after `self` to
    /// be missed by resuming from it.
    pub fn just_before(self) -> Self {
        match self.index {
            0 => Position::end_of(self.revision.saturating_sub(1)),
            i => Position::at(self.revision, i - 1),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.index == u32::MAX {
            write!(f, "revision {}", self.revision)
        } else {
            write!(f, "revision {} index {}", self.revision, self.index)
        }
    }
}

/// What the history has lost to trimming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trimmed {
    /// No event was ever dropped: the history holds every event since revision 1.
    Nothing,
    /// Events were dropped; this is the position of the newest one dropped.
    Through(Position),
    /// Loaded from a snapshot that did not record it: anything before the oldest kept
    /// event may have been dropped.
    Unknown,
}

impl Trimmed {
    /// What an older snapshot without the field is read as.
    pub(crate) fn unknown() -> Self {
        Trimmed::Unknown
    }

    /// The newest position that may have been dropped, if any, given the oldest kept
    /// event.
    fn newest_dropped(self, oldest_kept: Option<Position>) -> Option<Position> {
        match self {
            Trimmed::Nothing => None,
            Trimmed::Through(p) => Some(p),
            // Nothing kept and nothing known: nothing to lose by resuming anywhere (a
            // history is never trimmed to empty, `history_max` is at least 10).
            Trimmed::Unknown => oldest_kept.map(Position::just_before),
        }
    }
}

/// A resume position older than what the history still holds: events after it may be gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeGap {
    /// The position the watcher asked to resume after.
    pub requested: Position,
    /// The newest position that was (or may have been) dropped.
    pub trimmed_through: Position,
    /// The oldest event still kept, if any: the first one a resumed watcher would get.
    pub oldest_kept: Option<Position>,
    /// The oldest position that can be resumed from (just before the oldest kept event).
    pub resume_after: Position,
}

impl fmt::Display for ResumeGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot resume after {}: events after it have been trimmed from the history \
             (trimmed through {}; ",
            self.requested, self.trimmed_through
        )?;
        match self.oldest_kept {
            Some(p) => write!(f, "the oldest event kept is at {p}")?,
            None => write!(f, "no event is kept")?,
        }
        write!(
            f,
            "); list the events and resume after {} instead",
            self.resume_after
        )
    }
}

impl std::error::Error for ResumeGap {}

impl Event {
    /// Where this event sits in the history.
    pub fn position(&self) -> Position {
        Position::at(self.revision, self.index)
    }
}

impl State {
    /// The position of the oldest event kept, if any.
    pub fn oldest_kept(&self) -> Option<Position> {
        self.history.front().map(Event::position)
    }

    /// Whether a watcher that has seen every event up to `after` can be given all the
    /// events after it: `Err` when some of them may have been trimmed away.
    pub fn check_resume(&self, after: Position) -> Result<(), ResumeGap> {
        let oldest_kept = self.oldest_kept();
        match self.trimmed.newest_dropped(oldest_kept) {
            Some(dropped) if after < dropped => Err(ResumeGap {
                requested: after,
                trimmed_through: dropped,
                oldest_kept,
                resume_after: oldest_kept.map_or(dropped, Position::just_before),
            }),
            _ => Ok(()),
        }
    }

    /// The events kept after `after`, oldest first. Does not check for a gap: see
    /// [`State::check_resume`].
    pub fn events_after(&self, after: Position) -> impl DoubleEndedIterator<Item = &Event> {
        // Positions increase along the history: a binary search finds the first new one.
        let start = self.history.partition_point(|e| e.position() <= after);
        self.history.range(start..)
    }

    /// Append an event recorded at the current revision, numbering it within the
    /// revision, then trim the history to `history_max`.
    pub(crate) fn push_event(&mut self, mut ev: Event) {
        ev.index = match self.history.back() {
            Some(last) if last.revision == ev.revision => last.index + 1,
            _ => 0,
        };
        self.history.push_back(ev);
        self.trim_history();
    }

    /// Drop the oldest events beyond `history_max`, remembering the newest dropped.
    pub(crate) fn trim_history(&mut self) {
        while self.history.len() > self.history_max {
            if let Some(dropped) = self.history.pop_front() {
                self.trimmed = Trimmed::Through(dropped.position());
            }
        }
    }
}

/// Reads a history, numbering the events of a snapshot written before events carried
/// their index (all 0): each event after the first of its revision gets the next index.
pub(crate) fn deserialize_history<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<VecDeque<Event>, D::Error> {
    let mut history = VecDeque::<Event>::deserialize(d)?;
    for i in 1..history.len() {
        let prev = history[i - 1].position();
        let e = &mut history[i];
        if e.revision == prev.revision && e.index <= prev.index {
            e.index = prev.index.saturating_add(1);
        }
    }
    Ok(history)
}
