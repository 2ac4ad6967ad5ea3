//! The `Watch` service: a stream of history events, served by any node from its applied
//! state. Spreads watchers over the cluster; each event carries its position (revision,
//! then index within the revision), so a client that reconnects elsewhere resumes right
//! after the last event it received, even in the middle of a revision (invariant 5).
//!
//! Resume positions: `WatchRequest.after` is "after the event at (revision, index)";
//! without it, `after_revision = R` is "after every event of revision R" (0: from the
//! oldest event kept). See `baton_core::history` for how positions are ordered.
//!
//! Trimming: a node keeps the newest `history_max` events, and its state records the
//! position of the newest event ever dropped (`trimmed`). A request whose position is
//! older than that would miss events, so it is refused with OUT_OF_RANGE (naming the
//! requested position and the oldest event kept) instead of skipping them silently. A
//! request at or after the newest dropped event is served, and so is any request on a
//! history that never dropped anything (an empty one, or `after_revision = 0`); a state
//! loaded from a snapshot older than this tracking assumes everything before its oldest
//! kept event may have been dropped, until it next drops one. The same check runs
//! on every wake-up of an open stream: a watcher so slow that trimming overtakes it gets
//! OUT_OF_RANGE as the stream's last item. The check covers every role even for a
//! filtered watcher (the state does not keep which roles the dropped events were about).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use baton_core::Position;
use baton_proto::v1 as pb;
use baton_proto::v1::watch_server::Watch;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::convert::event_to_proto;
use crate::error::history_trimmed;
use crate::node::Node;

/// Events one read of the state takes for a watcher: a watcher far behind (resuming from
/// an old position) reads the history in steps of this many, between which it sends
/// (and may wait on its client), so the node holds at most this many per stream.
const WATCH_READ_MAX: usize = 256;

pub struct WatchService {
    pub node: Arc<Node>,
}

/// The position a request resumes after: `after` if set, else the end of `after_revision`.
fn resume_position(after: Option<pb::EventPosition>, after_revision: u64) -> Position {
    match after {
        Some(p) => Position::at(p.revision, p.index),
        None => Position::end_of(after_revision),
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type EventsStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

    async fn events(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        crate::auth::Caller::of(&req)?
            .require(baton_tls::Permission::Viewer, "watching the history")?;
        let pb::WatchRequest {
            role,
            after_revision,
            after,
        } = req.into_inner();
        let after = resume_position(after, after_revision);
        // Refuse the call itself when events are already gone: the client sees the
        // status at once, not after an empty stream.
        self.node
            .read(|s| s.check_resume(after))
            .map_err(|gap| history_trimmed(&gap))?;
        let watcher = Watcher {
            applied: self.node.subscribe(),
            node: self.node.clone(),
            role,
            after,
            pending: VecDeque::new(),
            ended: false,
        };
        Ok(Response::new(Box::pin(futures::stream::unfold(
            watcher,
            |mut w| async move { w.next().await.map(|item| (item, w)) },
        ))))
    }
}

/// One open stream. No task of its own: the response stream *is* the watcher, polled by
/// the connection when it can send, so an event reaches the client with one wake-up
/// (the applied revision's) instead of two (a task's, then the stream's behind a
/// channel), and a stream whose client stopped reading is simply not polled: it holds
/// at most one read's events ([`WATCH_READ_MAX`]), and the node buffers nothing more.
struct Watcher {
    node: Arc<Node>,
    /// Wakes the stream when a revision is applied.
    applied: watch::Receiver<u64>,
    /// Only this role's events (all if `None`).
    role: Option<String>,
    /// Every event up to here was sent or filtered out.
    after: Position,
    /// Events read from the state and not yet sent.
    pending: VecDeque<pb::Event>,
    /// The stream's last item was sent (a refusal), or the node is stopping.
    ended: bool,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<pb::Event, Status>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(Ok(e));
            }
            if self.ended {
                return None;
            }
            // New events are at the back of the history: a binary search finds them, so
            // a wake-up costs what changed, not the length of the history.
            let role = &self.role;
            let read = self.node.read(|s| {
                s.check_resume(self.after)?;
                let mut batch = VecDeque::new();
                let mut examined = None;
                for e in s.events_after(self.after) {
                    examined = Some(e.position());
                    if role.as_ref().is_none_or(|r| &e.role == r) {
                        batch.push_back(event_to_proto(e));
                        if batch.len() == WATCH_READ_MAX {
                            break;
                        }
                    }
                }
                Ok((batch, examined))
            });
            match read {
                Ok((batch, examined)) => {
                    // Every event up to the last examined was sent or filtered out.
                    if let Some(p) = examined {
                        self.after = self.after.max(p);
                    }
                    self.pending = batch;
                    // A full read may have more behind it: read again before waiting.
                    if examined.is_some() {
                        continue;
                    }
                }
                Err(gap) => {
                    self.ended = true;
                    return Some(Err(history_trimmed(&gap)));
                }
            }
            if self.applied.changed().await.is_err() {
                self.ended = true;
            }
        }
    }
}
