//! `baton events --follow`: print the history, then new events as they happen, across
//! directory node failures.
//!
//! New events come from the Watch stream of any node (reconnecting through
//! `Client::channel_to_any` and resuming after the last revision printed); if the node
//! does not implement Watch, the command falls back to polling `Events`. A cursor makes
//! sure nothing is printed twice and the revision never goes backwards on screen.

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
        if self.at_revision.contains(e) {
            return false;
        }
        self.at_revision.push(e.clone());
        true
    }

    /// The `after_revision` to resume a watch with: one before the last printed revision,
    /// so that events sharing that revision but not yet received are not lost.
    pub fn resume_after(&self) -> u64 {
        self.revision.saturating_sub(1)
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
    let mut history = client.events(role.as_deref(), stale).await?;
    history.sort_by_key(|e| e.revision);
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
        };
        match WatchClient::new(channel).events(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                // Ends when the node goes away or closes the stream: then reconnect.
                while let Ok(Some(e)) = stream.message().await {
                    backoff.reset();
                    if cursor.admit(&e) {
                        sink(&e)?;
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
        events.sort_by_key(|e| e.revision);
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

    #[test]
    fn empty_cursor_resumes_from_the_start() {
        let mut c = EventCursor::default();
        assert_eq!(c.resume_after(), 0);
        assert!(c.admit(&ev(1, "a")));
        assert_eq!(c.resume_after(), 0);
    }
}
