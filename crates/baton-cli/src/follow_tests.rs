//! `events --follow` against FAKE directory nodes (a tiny tonic Directory + Watch server
//! in this file): history first, then the watch stream, resuming after a broken stream
//! without printing anything twice (at the exact event position with nodes that send
//! one), ending with the node's message when it answers OUT_OF_RANGE, and polling when a
//! node has no Watch service.

use crate::follow::follow_with;
use baton_client::{Client, ClientConfig, v1};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::Stream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use v1::directory_server::{Directory, DirectoryServer};
use v1::watch_server::{Watch, WatchServer};

/// A resume position as (revision, index).
type Position = (u64, u32);

/// Shared script and records of a fake node.
#[derive(Clone, Default)]
struct Fake {
    /// What `Events` returns.
    history: Arc<Mutex<Vec<v1::Event>>>,
    /// The revision `Events` says it read at (0: like a node that predates it).
    listed_at: Arc<Mutex<u64>>,
    /// One batch per Watch call; each stream ends after its batch (a broken stream).
    /// Once exhausted, streams stay open and silent.
    batches: Arc<Mutex<VecDeque<Vec<v1::Event>>>>,
    /// `after_revision` of every Watch call, to check resumption.
    watch_calls: Arc<Mutex<Vec<u64>>>,
    /// `after` of every Watch call, as (revision, index).
    watch_after: Arc<Mutex<Vec<Option<Position>>>>,
    /// A status the next stream ends with after its batch (then taken).
    end_with: Arc<Mutex<Option<Status>>>,
    /// A status every Watch call is refused with.
    refuse: Arc<Mutex<Option<Status>>>,
}

fn no<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake"))
}

#[tonic::async_trait]
impl Directory for Fake {
    async fn apply(&self, _: Request<v1::Command>) -> Result<Response<v1::WriteReply>, Status> {
        no()
    }
    async fn get_role(&self, _: Request<v1::GetRoleRequest>) -> Result<Response<v1::Role>, Status> {
        no()
    }
    async fn list_roles(
        &self,
        _: Request<v1::ListRequest>,
    ) -> Result<Response<v1::RoleList>, Status> {
        no()
    }
    async fn candidates(
        &self,
        _: Request<v1::GetRoleRequest>,
    ) -> Result<Response<v1::CandidatesReply>, Status> {
        no()
    }
    async fn list_servers(
        &self,
        _: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ServerList>, Status> {
        no()
    }
    async fn events(
        &self,
        _: Request<v1::EventsRequest>,
    ) -> Result<Response<v1::EventList>, Status> {
        let events = self.history.lock().unwrap().clone();
        let revision = *self.listed_at.lock().unwrap();
        Ok(Response::new(v1::EventList { events, revision }))
    }
    async fn cluster_status(
        &self,
        _: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusReply>, Status> {
        no()
    }
    async fn add_node(
        &self,
        _: Request<v1::AddNodeRequest>,
    ) -> Result<Response<v1::MembershipReply>, Status> {
        no()
    }
    async fn remove_node(
        &self,
        _: Request<v1::RemoveNodeRequest>,
    ) -> Result<Response<v1::MembershipReply>, Status> {
        no()
    }
    async fn transfer_leader(
        &self,
        _: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::MembershipReply>, Status> {
        no()
    }
    async fn snapshot(
        &self,
        _: Request<v1::SnapshotRequest>,
    ) -> Result<Response<v1::SnapshotReply>, Status> {
        no()
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for Fake {
    type EventsStream = EventStream;
    async fn events(&self, r: Request<v1::WatchRequest>) -> Result<Response<EventStream>, Status> {
        let r = r.into_inner();
        self.watch_calls.lock().unwrap().push(r.after_revision);
        self.watch_after
            .lock()
            .unwrap()
            .push(r.after.map(|p| (p.revision, p.index)));
        if let Some(status) = self.refuse.lock().unwrap().clone() {
            return Err(status);
        }
        let stream: EventStream = match self.batches.lock().unwrap().pop_front() {
            Some(batch) => {
                let end = self.end_with.lock().unwrap().take().map(Err);
                Box::pin(tokio_stream::iter(batch.into_iter().map(Ok).chain(end)))
            }
            None => Box::pin(tokio_stream::pending()),
        };
        Ok(Response::new(stream))
    }
}

async fn serve(fake: Fake, with_watch: bool) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let mut router = Server::builder().add_service(DirectoryServer::new(fake.clone()));
    if with_watch {
        router = router.add_service(WatchServer::new(fake));
    }
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(l)));
    addr
}

fn ev(revision: u64, role: &str) -> v1::Event {
    v1::Event {
        revision,
        role: role.to_string(),
        cause: "operator".to_string(),
        ..Default::default()
    }
}

/// An event from a node that numbers events within their revision.
fn evi(revision: u64, index: u32, role: &str) -> v1::Event {
    v1::Event {
        index,
        ..ev(revision, role)
    }
}

fn client(addr: String) -> Client {
    Client::with_config(
        vec![addr],
        ClientConfig {
            retry_budget: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..ClientConfig::default()
        },
    )
    .unwrap()
}

/// Collects events until `last` is seen, then stops the loop with an error.
async fn collect_until(client: &Client, last: u64) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        follow_with(client, None, false, |e| {
            seen.push((e.revision, e.role.clone()));
            if e.revision >= last {
                anyhow::bail!("done");
            }
            Ok(())
        }),
    )
    .await
    .expect("follow did not finish");
    assert_eq!(result.unwrap_err().to_string(), "done");
    seen
}

#[tokio::test]
async fn follow_resumes_after_a_broken_stream_without_duplicates() {
    let fake = Fake::default();
    *fake.history.lock().unwrap() = vec![ev(1, "a")];
    fake.batches.lock().unwrap().extend([
        // First stream repeats the history, brings 2 and half of revision 3, then breaks.
        vec![ev(1, "a"), ev(2, "a"), ev(3, "a")],
        // The resumed stream repeats revision 3 and goes on.
        vec![ev(3, "a"), ev(3, "b"), ev(4, "a")],
    ]);
    let addr = serve(fake.clone(), true).await;
    let seen = collect_until(&client(addr), 4).await;
    assert_eq!(
        seen,
        [
            (1, "a".into()),
            (2, "a".into()),
            (3, "a".into()),
            (3, "b".into()),
            (4, "a".into())
        ]
    );
    assert_eq!(*fake.watch_calls.lock().unwrap(), [0, 2]);
}

#[tokio::test]
async fn follow_polls_when_the_node_has_no_watch_service() {
    let fake = Fake::default();
    *fake.history.lock().unwrap() = vec![ev(1, "a")];
    let addr = serve(fake.clone(), false).await;
    let history = fake.history.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        history.lock().unwrap().extend([ev(2, "a"), ev(3, "b")]);
    });
    let seen = collect_until(&client(addr), 3).await;
    assert_eq!(seen, [(1, "a".into()), (2, "a".into()), (3, "b".into())]);
}

#[tokio::test]
async fn follow_resumes_after_the_exact_position_inside_a_revision() {
    let fake = Fake::default();
    *fake.history.lock().unwrap() = vec![evi(1, 0, "a")];
    *fake.listed_at.lock().unwrap() = 1;
    fake.batches.lock().unwrap().extend([
        // The first event of revision 3 (of three), then the stream breaks.
        vec![evi(2, 0, "a"), evi(3, 0, "a")],
        // A node that honours `after` sends only the rest.
        vec![evi(3, 1, "b"), evi(3, 2, "c"), evi(4, 0, "a")],
    ]);
    let addr = serve(fake.clone(), true).await;
    let seen = collect_until(&client(addr), 4).await;
    assert_eq!(
        seen,
        [
            (1, "a".into()),
            (2, "a".into()),
            (3, "a".into()),
            (3, "b".into()),
            (3, "c".into()),
            (4, "a".into())
        ]
    );
    // First from the listing's revision (all of it printed), then after (3, 0); older
    // nodes would read `after_revision` 2 and repeat revision 3.
    assert_eq!(*fake.watch_calls.lock().unwrap(), [1, 2]);
    assert_eq!(*fake.watch_after.lock().unwrap(), [None, Some((3, 0))]);
}

#[tokio::test]
async fn follow_with_an_empty_listing_watches_from_the_listing_revision() {
    let fake = Fake::default();
    // Nothing about the role is kept, at revision 40: not a reason to ask for revision 0
    // (which a trimmed history refuses).
    *fake.listed_at.lock().unwrap() = 40;
    fake.batches
        .lock()
        .unwrap()
        .push_back(vec![evi(41, 0, "a")]);
    let addr = serve(fake.clone(), true).await;
    let seen = collect_until(&client(addr), 41).await;
    assert_eq!(seen, [(41, "a".into())]);
    assert_eq!(*fake.watch_calls.lock().unwrap(), [40]);
    assert_eq!(*fake.watch_after.lock().unwrap(), [None]);
}

const TRIMMED: &str = "cannot resume after revision 3: events after it have been trimmed";

#[tokio::test]
async fn follow_reports_a_trimmed_history_instead_of_retrying() {
    let fake = Fake::default();
    *fake.history.lock().unwrap() = vec![evi(3, 0, "a")];
    *fake.refuse.lock().unwrap() = Some(Status::out_of_range(TRIMMED));
    let addr = serve(fake.clone(), true).await;
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        follow_with(&client(addr), None, false, |_| Ok(())),
    )
    .await
    .expect("follow kept retrying")
    .unwrap_err();
    assert_eq!(crate::error_line(&err), format!("error: {TRIMMED}"));
    assert_eq!(fake.watch_calls.lock().unwrap().len(), 1, "no retry");
}

#[tokio::test]
async fn follow_reports_a_stream_overtaken_by_trimming() {
    let fake = Fake::default();
    *fake.history.lock().unwrap() = vec![evi(3, 0, "a")];
    fake.batches.lock().unwrap().push_back(vec![evi(4, 0, "a")]);
    *fake.end_with.lock().unwrap() = Some(Status::out_of_range(TRIMMED));
    let addr = serve(fake.clone(), true).await;
    let mut seen = Vec::new();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        follow_with(&client(addr), None, false, |e| {
            seen.push(e.revision);
            Ok(())
        }),
    )
    .await
    .expect("follow kept retrying")
    .unwrap_err();
    assert_eq!(crate::error_line(&err), format!("error: {TRIMMED}"));
    assert_eq!(seen, [3, 4]);
    assert_eq!(fake.watch_calls.lock().unwrap().len(), 1, "no retry");
}
