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

use std::pin::Pin;
use std::sync::Arc;

use baton_core::Position;
use baton_proto::v1 as pb;
use baton_proto::v1::watch_server::Watch;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert::event_to_proto;
use crate::error::history_trimmed;
use crate::node::Node;

/// Events buffered per watcher; a watcher that falls this far behind waits (the stream
/// applies back-pressure), it does not make the node buffer without bound.
const WATCH_BUFFER: usize = 256;

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
        let mut after = resume_position(after, after_revision);
        // Refuse the call itself when events are already gone: the client sees the
        // status at once, not after an empty stream.
        self.node
            .read(|s| s.check_resume(after))
            .map_err(|gap| history_trimmed(&gap))?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let node = self.node.clone();
        tokio::spawn(async move {
            let mut applied = node.subscribe();
            loop {
                // New events are at the back of the history: a binary search finds them,
                // so a wake-up costs what changed, not the length of the history.
                let read = node.read(|s| {
                    s.check_resume(after)?;
                    let batch: Vec<pb::Event> = s
                        .events_after(after)
                        .filter(|e| role.as_ref().is_none_or(|r| &e.role == r))
                        .map(event_to_proto)
                        .collect();
                    // Every event up to the newest was looked at (filtered out or sent).
                    Ok((batch, s.history.back().map(|e| e.position())))
                });
                let (batch, newest) = match read {
                    Ok(read) => read,
                    Err(gap) => {
                        let _ = tx.send(Err(history_trimmed(&gap))).await;
                        return;
                    }
                };
                for e in batch {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                if let Some(newest) = newest {
                    after = after.max(newest);
                }
                tokio::select! {
                    r = applied.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
