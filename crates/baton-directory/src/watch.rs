//! The `Watch` service: a stream of history events, served by any node from its applied
//! state. Spreads watchers over the cluster; each event carries its revision, so a client
//! that reconnects elsewhere resumes after the last revision it saw (invariant 5).

use std::pin::Pin;
use std::sync::Arc;

use baton_proto::v1 as pb;
use baton_proto::v1::watch_server::Watch;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert::event_to_proto;
use crate::node::Node;

/// Events buffered per watcher; a watcher that falls this far behind waits (the stream
/// applies back-pressure), it does not make the node buffer without bound.
const WATCH_BUFFER: usize = 256;

pub struct WatchService {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl Watch for WatchService {
    type EventsStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

    async fn events(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let pb::WatchRequest {
            role,
            after_revision,
        } = req.into_inner();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let node = self.node.clone();
        tokio::spawn(async move {
            let mut applied = node.subscribe();
            let mut after = after_revision;
            loop {
                // New events are at the back of the history: walk back only over them, so
                // a wake-up costs what changed, not the length of the history.
                let mut batch: Vec<pb::Event> = node.read(|s| {
                    s.history
                        .iter()
                        .rev()
                        .take_while(|e| e.revision > after)
                        .filter(|e| role.as_ref().is_none_or(|r| &e.role == r))
                        .map(event_to_proto)
                        .collect()
                });
                batch.reverse();
                for e in batch {
                    after = after.max(e.revision);
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
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
