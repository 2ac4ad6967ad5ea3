//! `baton events --follow`: print the history, then new events as they happen, across
//! directory node failures.
//!
//! New events come from the Watch stream of any node (reconnecting through
//! `Client::channel_to_any` and resuming right after the last event printed: its
//! revision and its index within the revision, so the rest of a revision that moved
//! several roles is not lost); if the node does not implement Watch, the command falls
//! back to polling `Events`. A cursor makes sure nothing is printed twice and the
//! revision never goes backwards on screen. When the node no longer holds the events
//! after that position (its history was trimmed), the command ends with the node's
//! OUT_OF_RANGE message instead of retrying.

use crate::{Output, emit, render};
use anyhow::Result;
use baton_client::{Backoff, Client, ClientError, Disposition, classify};
use baton_proto::v1;
use baton_proto::v1::watch_client::WatchClient;
use std::time::Duration;
use tonic::Code;

/// How often the polling fallback asks for the history.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What has been printed so far: the highest revision, and the events printed at it
/// (one directory revision may record several moves, so the revision alone is not a
/// unique key).
#[derive(Debug, Default, Clone)]
pub struct EventCursor {
    /// Highest revision printed.
    revision: u64,
    /// Events printed at `revision`, to drop them when a resumed stream repeats them.
    at_revision: Vec<v1::Event>,
    /// The directory revision the printed history was listed at: every event up to it
    /// has been printed, even if none was about the role followed (0 if unknown).
    listed_through: u64,
}

/// The same event, whatever index a node gave it (nodes that predate indexes send 0).
fn same_event(a: &v1::Event, b: &v1::Event) -> bool {
    v1::Event {
        index: 0,
        ..a.clone()
    } == v1::Event {
        index: 0,
        ..b.clone()
    }
}

impl EventCursor {
    /// True if `e` is new and should be printed (and records it); false for an event
    /// already printed or older than the last one printed.
    pub fn admit(&mut self, e: &v1::Event) -> bool {
        if e.revision < self.revision {
            return false;
        }
        if e.revision > self.revision {
            self.revision = e.revision;
            self.at_revision.clear();
        }
        if self.at_revision.iter().any(|p| same_event(p, e)) {
            return false;
        }
        self.at_revision.push(e.clone());
        true
    }

    /// Records that the history was listed at directory revision `revision`.
    pub fn listed_at(&mut self, revision: u64) {
        self.listed_through = self.listed_through.max(revision);
    }

    /// The `after_revision` to resume a watch with, for nodes that predate `after`: one
    /// before the last printed revision, so that events sharing that revision but not
    /// yet received are not lost (the repeated ones are dropped by [`EventCursor::admit`]).
    /// The listing revision once nothing newer has been printed.
    pub fn resume_after(&self) -> u64 {
        if self.listed_through >= self.revision {
            self.listed_through
        } else {
            self.revision.saturating_sub(1)
        }
    }

    /// The exact position to resume after: the last event printed (nodes that know it
    /// then send only what follows), or `None` when `resume_after` alone is exact (nothing
    /// printed beyond the listing).
    pub fn resume_position(&self) -> Option<v1::EventPosition> {
        if self.listed_through >= self.revision {
            return None;
        }
        let index = self.at_revision.iter().map(|e| e.index).max()?;
        Some(v1::EventPosition {
            revision: self.revision,
            index,
        })
    }
}

/// Prints one event in the chosen output form.
fn print_event(e: &v1::Event, output: Output) -> Result<()> {
    match output {
        Output::Json => emit(&render::json_line(&render::EventView::from(e))),
        Output::Table => emit(&render::event_line(e)),
    }
}

/// Runs `events --follow` until the cluster stays unreachable for a whole retry budget,
/// a node refuses the request, or stdout closes.
pub async fn follow(
    client: &Client,
    role: Option<String>,
    stale: bool,
    output: Output,
) -> Result<()> {
    follow_with(client, role, stale, |e| print_event(e, output)).await
}

/// The follow loop, handing each new event to `sink` (which ends the loop by failing).
pub(crate) async fn follow_with(
    client: &Client,
    role: Option<String>,
    stale: bool,
    mut sink: impl FnMut(&v1::Event) -> Result<()>,
) -> Result<()> {
    let mut cursor = EventCursor::default();
    let listed = client.event_list(role.as_deref(), stale).await?;
    cursor.listed_at(listed.revision);
    let mut history = listed.events;
    history.sort_by_key(|e| (e.revision, e.index));
    for e in &history {
        if cursor.admit(e) {
            sink(e)?;
        }
    }

    let cfg = client.config();
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    loop {
        // Bounded by the client's retry budget: a cluster that stays down ends the command.
        let (_addr, channel) = client.channel_to_any().await?;
        let request = v1::WatchRequest {
            role: role.clone(),
            after_revision: cursor.resume_after(),
            after: cursor.resume_position(),
        };
        match WatchClient::new(channel).events(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                // Ends when the node goes away or closes the stream: then reconnect.
                loop {
                    match stream.message().await {
                        Ok(Some(e)) => {
                            backoff.reset();
                            if cursor.admit(&e) {
                                sink(&e)?;
                            }
                        }
                        // Trimming overtook this watcher: events were lost; say so.
                        Err(status) if status.code() == Code::OutOfRange => {
                            return Err(ClientError::from_status(&status).into());
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            Err(status) if status.code() == Code::Unimplemented => {
                return poll(client, role, stale, cursor, sink).await;
            }
            Err(status) if classify(&status) == Disposition::GiveUp => {
                return Err(ClientError::from_status(&status).into());
            }
            Err(_) => {}
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// The fallback for nodes without Watch: ask for the history every [`POLL_INTERVAL`].
async fn poll(
    client: &Client,
    role: Option<String>,
    stale: bool,
    mut cursor: EventCursor,
    mut sink: impl FnMut(&v1::Event) -> Result<()>,
) -> Result<()> {
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let mut events = client.events(role.as_deref(), stale).await?;
        events.sort_by_key(|e| (e.revision, e.index));
        for e in &events {
            if cursor.admit(e) {
                sink(e)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(revision: u64, role: &str) -> v1::Event {
        v1::Event {
            revision,
            role: role.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn cursor_prints_each_event_once_in_revision_order() {
        let mut c = EventCursor::default();
        assert!(c.admit(&ev(3, "a")));
        assert!(c.admit(&ev(3, "b")), "same revision, another role");
        assert!(!c.admit(&ev(3, "a")), "repeat after a resume");
        assert!(!c.admit(&ev(2, "z")), "older than what was printed");
        assert_eq!(c.resume_after(), 2);
        assert!(c.admit(&ev(5, "a")));
        assert!(!c.admit(&ev(3, "b")));
        assert_eq!(c.resume_after(), 4);
    }

    fn evi(revision: u64, index: u32, role: &str) -> v1::Event {
        v1::Event {
            index,
            ..ev(revision, role)
        }
    }

    #[test]
    fn cursor_resumes_after_the_last_event_printed() {
        let mut c = EventCursor::default();
        c.listed_at(5);
        assert!(c.admit(&evi(5, 0, "a")));
        // Everything up to the listing revision was printed: after all of it.
        assert_eq!((c.resume_after(), c.resume_position()), (5, None));
        assert!(c.admit(&evi(7, 0, "a")));
        assert!(c.admit(&evi(7, 1, "b")));
        assert_eq!(c.resume_after(), 6, "for nodes that ignore the position");
        assert_eq!(
            c.resume_position(),
            Some(v1::EventPosition {
                revision: 7,
                index: 1
            })
        );
        // An older node repeats revision 7 with index 0: still recognised.
        assert!(!c.admit(&evi(7, 0, "b")));
        assert!(c.admit(&evi(7, 2, "c")));
    }

    #[test]
    fn empty_cursor_resumes_from_the_start() {
        let mut c = EventCursor::default();
        assert_eq!(c.resume_after(), 0);
        assert!(c.admit(&ev(1, "a")));
        assert_eq!(c.resume_after(), 0);
    }
}
