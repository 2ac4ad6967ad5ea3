//! Redirect and failover tests of the client against FAKE directory nodes: tiny tonic
//! `Directory` servers in this file that play "leader", "follower with a leader hint",
//! "no leader", "hung" or "dead". They test the client's retry loop only, not the real
//! directory (which has its own tests).

use baton_client::{Client, ClientConfig, ClientError, v1};
use baton_proto::{LEADER_ADDR_KEY, REASON_KEY};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use v1::directory_server::{Directory, DirectoryServer};

/// How a fake node behaves.
#[derive(Clone)]
enum Mode {
    /// Serves everything; `get_role("missing")` is NOT_FOUND.
    Leader,
    /// Serves stale reads; refuses the rest with UNAVAILABLE naming this leader.
    Follower { leader: String },
    /// Serves everything (as a follower that forwards to its leader does) and names this
    /// leader on every reply.
    Forwarder { leader: String },
    /// Refuses everything except stale reads with UNAVAILABLE and no hint (an election).
    NoLeader,
    /// Never answers.
    Hang,
}

/// A fake directory node that counts the calls it received.
struct Fake {
    /// Its behaviour.
    mode: Mode,
    /// Its address, put in replies so tests see who served them.
    addr: String,
    /// Every RPC received, to check where the client went.
    calls: Arc<AtomicUsize>,
    /// The request id of every write received, to check retries share one.
    request_ids: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    /// Common prologue: count the call, then refuse it unless this node may serve it.
    async fn gate(&self, stale: bool) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.mode {
            Mode::Leader | Mode::Forwarder { .. } => Ok(()),
            Mode::Follower { .. } | Mode::NoLeader if stale => Ok(()),
            Mode::Follower { leader } => {
                let mut s = Status::unavailable(format!("node {} is not the leader", self.addr));
                s.metadata_mut().insert(
                    LEADER_ADDR_KEY,
                    MetadataValue::try_from(leader.as_str()).unwrap(),
                );
                Err(s)
            }
            Mode::NoLeader => Err(Status::unavailable("no leader elected yet")),
            Mode::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Err(Status::internal("unreachable"))
            }
        }
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake"))
}

#[tonic::async_trait]
impl Directory for Fake {
    async fn apply(&self, r: Request<v1::Command>) -> Result<Response<v1::WriteReply>, Status> {
        self.request_ids
            .lock()
            .unwrap()
            .push(r.get_ref().request_id.clone());
        self.gate(false).await?;
        let mut reply = Response::new(v1::WriteReply {
            revision: 7,
            summary: format!("applied on {}", self.addr),
        });
        if let Mode::Forwarder { leader } = &self.mode {
            reply.metadata_mut().insert(
                LEADER_ADDR_KEY,
                MetadataValue::try_from(leader.as_str()).unwrap(),
            );
        }
        Ok(reply)
    }
    async fn get_role(&self, r: Request<v1::GetRoleRequest>) -> Result<Response<v1::Role>, Status> {
        let r = r.into_inner();
        self.gate(r.read.unwrap_or_default().stale).await?;
        if r.name == "missing" {
            let mut s = Status::not_found("role \"missing\" does not exist");
            s.metadata_mut()
                .insert(REASON_KEY, MetadataValue::from_static("NOT_FOUND"));
            return Err(s);
        }
        Ok(Response::new(v1::Role {
            name: r.name,
            reason: format!("served by {}", self.addr),
            ..Default::default()
        }))
    }
    async fn list_roles(
        &self,
        _r: Request<v1::ListRequest>,
    ) -> Result<Response<v1::RoleList>, Status> {
        unimplemented()
    }
    async fn candidates(
        &self,
        _r: Request<v1::GetRoleRequest>,
    ) -> Result<Response<v1::CandidatesReply>, Status> {
        unimplemented()
    }
    async fn list_servers(
        &self,
        _r: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ServerList>, Status> {
        unimplemented()
    }
    async fn events(
        &self,
        _r: Request<v1::EventsRequest>,
    ) -> Result<Response<v1::EventList>, Status> {
        unimplemented()
    }
    async fn cluster_status(
        &self,
        _r: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusReply>, Status> {
        unimplemented()
    }
    async fn add_node(
        &self,
        _r: Request<v1::AddNodeRequest>,
    ) -> Result<Response<v1::MembershipReply>, Status> {
        unimplemented()
    }
    async fn remove_node(
        &self,
        _r: Request<v1::RemoveNodeRequest>,
    ) -> Result<Response<v1::MembershipReply>, Status> {
        unimplemented()
    }
    async fn transfer_leader(
        &self,
        _r: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::MembershipReply>, Status> {
        unimplemented()
    }
    async fn snapshot(
        &self,
        _r: Request<v1::SnapshotRequest>,
    ) -> Result<Response<v1::SnapshotReply>, Status> {
        unimplemented()
    }
}

/// A running fake node.
struct Node {
    addr: String,
    calls: Arc<AtomicUsize>,
    request_ids: Arc<Mutex<Vec<String>>>,
}

impl Node {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn request_ids(&self) -> Vec<String> {
        self.request_ids.lock().unwrap().clone()
    }
}

/// Reserves a loopback port and binds it, so the fake's address is known before it runs.
async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn serve(l: tokio::net::TcpListener, addr: String, mode: Mode) -> Node {
    let calls = Arc::new(AtomicUsize::new(0));
    let request_ids = Arc::new(Mutex::new(Vec::new()));
    let fake = Fake {
        mode,
        addr: addr.clone(),
        calls: calls.clone(),
        request_ids: request_ids.clone(),
    };
    tokio::spawn(
        Server::builder()
            .add_service(DirectoryServer::new(fake))
            .serve_with_incoming(TcpIncoming::from(l)),
    );
    Node {
        addr,
        calls,
        request_ids,
    }
}

async fn start(mode: Mode) -> Node {
    let (l, addr) = listener().await;
    serve(l, addr, mode)
}

/// An address where nothing listens (connection refused at once).
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn fast_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(300),
        rpc_timeout: Duration::from_millis(500),
        retry_budget: Duration::from_millis(1500),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        ..ClientConfig::default()
    }
}

fn create(name: &str) -> v1::Command {
    v1::Command {
        request_id: String::new(),
        command: Some(v1::command::Command::CreateRole(v1::CreateRole {
            name: name.to_string(),
            servers: vec!["srv-a".into()],
            ..Default::default()
        })),
    }
}

#[tokio::test]
async fn follows_the_leader_hint_and_remembers_the_leader() {
    let leader = start(Mode::Leader).await;
    let follower = start(Mode::Follower {
        leader: format!("http://{}", leader.addr),
    })
    .await;
    // The client only knows the follower: the leader is reachable through the hint alone.
    let client = Client::with_config(vec![follower.addr.clone()], fast_config()).unwrap();

    let reply = client.apply(create("r1")).await.unwrap();
    assert_eq!(reply.revision, 7);
    assert_eq!(reply.summary, format!("applied on {}", leader.addr));
    assert_eq!((follower.calls(), leader.calls()), (1, 1));
    assert_eq!(client.leader().as_deref(), Some(leader.addr.as_str()));

    // Next write goes straight to the remembered leader; so do linearizable reads.
    client.apply(create("r2")).await.unwrap();
    let role = client.get_role("r2", false).await.unwrap();
    assert_eq!(role.reason, format!("served by {}", leader.addr));
    assert_eq!((follower.calls(), leader.calls()), (1, 3));

    // Clones share what was learnt.
    assert_eq!(client.clone().leader(), client.leader());
}

/// A follower that served a write by forwarding it names the leader on its reply: the
/// client's next calls go to the leader directly, instead of paying the extra hop on
/// every write. Only a configured address is followed: a hint that is not an address,
/// or names a node the client was not given, leaves it where it is.
#[tokio::test]
async fn a_forwarded_reply_moves_the_next_calls_to_the_leader_it_names() {
    let leader = start(Mode::Leader).await;
    let forwarder = start(Mode::Forwarder {
        leader: format!("http://{}", leader.addr),
    })
    .await;
    // A new client's first write goes to either node (it starts at a random one); from
    // then on, every write goes to the leader. Clients until one started at the forwarder
    // (each does with probability 1/2).
    for attempt in 1.. {
        assert!(attempt <= 64, "no client started at the forwarder");
        let client = Client::with_config(
            vec![forwarder.addr.clone(), leader.addr.clone()],
            fast_config(),
        )
        .unwrap();
        let forwarded_before = forwarder.calls();
        for name in ["r1", "r2", "r3"] {
            client.apply(create(name)).await.unwrap();
            assert_eq!(client.leader().as_deref(), Some(leader.addr.as_str()));
        }
        let forwarded = forwarder.calls() - forwarded_before;
        assert!(
            forwarded <= 1,
            "{forwarded} writes went through the forwarder"
        );
        if forwarded == 1 {
            break;
        }
    }

    for hint in ["not an address".to_string(), leader.addr.clone()] {
        let other = start(Mode::Forwarder { leader: hint }).await;
        let client = Client::with_config(vec![other.addr.clone()], fast_config()).unwrap();
        client.apply(create("r5")).await.unwrap();
        client.apply(create("r6")).await.unwrap();
        assert_eq!(client.leader().as_deref(), Some(other.addr.as_str()));
        assert_eq!(other.calls(), 2);
    }
}

/// Every attempt of one write carries the same request id, so the directory can answer a
/// retry of a write that already committed with its first outcome; another write gets
/// another id, and an id the caller chose is kept.
#[tokio::test]
async fn every_attempt_of_a_write_carries_one_request_id() {
    let leader = start(Mode::Leader).await;
    let follower = start(Mode::Follower {
        leader: format!("http://{}", leader.addr),
    })
    .await;
    let client = Client::with_config(vec![follower.addr.clone()], fast_config()).unwrap();
    client.apply(create("r1")).await.unwrap();
    let (first, second) = (follower.request_ids(), leader.request_ids());
    assert_eq!((first.len(), second.len()), (1, 1));
    assert_eq!(first[0].len(), 32, "{first:?}");
    assert_eq!(first, second, "the retry went out under another id");

    client.apply(create("r2")).await.unwrap();
    let ids = leader.request_ids();
    assert_ne!(ids[1], ids[0], "two writes shared an id");

    let mut own = create("r3");
    own.request_id = "mine-1".into();
    client.apply(own).await.unwrap();
    assert_eq!(leader.request_ids()[2], "mine-1");
}

#[tokio::test]
async fn stale_reads_are_served_by_any_node() {
    let leader = start(Mode::Leader).await;
    let follower = start(Mode::Follower {
        leader: leader.addr.clone(),
    })
    .await;
    let client = Client::with_config(vec![follower.addr.clone()], fast_config()).unwrap();
    let role = client.get_role("r", true).await.unwrap();
    assert_eq!(role.reason, format!("served by {}", follower.addr));
    assert_eq!(leader.calls(), 0);
    // A stale read teaches nothing about the leader.
    assert_eq!(client.leader(), None);
}

#[tokio::test]
async fn fails_over_past_dead_and_leaderless_nodes() {
    let leader = start(Mode::Leader).await;
    let electing = start(Mode::NoLeader).await;
    for _ in 0..5 {
        // Random start: repeat so that every order is likely exercised.
        let client = Client::with_config(
            vec![dead_addr(), electing.addr.clone(), leader.addr.clone()],
            fast_config(),
        )
        .unwrap();
        client.apply(create("r")).await.unwrap();
        assert_eq!(client.leader().as_deref(), Some(leader.addr.as_str()));
    }
}

#[tokio::test]
async fn a_hung_node_costs_one_rpc_timeout() {
    let hung = start(Mode::Hang).await;
    let leader = start(Mode::Leader).await;
    let client = Client::with_config(
        vec![hung.addr.clone(), leader.addr.clone()],
        ClientConfig {
            rpc_timeout: Duration::from_millis(200),
            ..fast_config()
        },
    )
    .unwrap();
    let t = std::time::Instant::now();
    client.apply(create("r")).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

/// A TCP relay to `target` that can go silent: from then on it forwards nothing, in
/// either direction, and keeps every socket open (no FIN, no RST), as a node cut off by
/// a partition looks to its clients. Returns its address and the switch.
async fn silenceable_relay(target: String) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (l, addr) = listener().await;
    let s = silent.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = l.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            for (mut from, mut to) in [(ri, wo), (ro, wi)] {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if s.load(Ordering::SeqCst) {
                            // Hold both halves open and forward nothing, for good.
                            std::future::pending::<()>().await;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (addr, silent)
}

/// A call in flight to a leader that goes silent (cut off without a FIN or RST) fails
/// after the HTTP/2 pings of `call_keepalive` go unanswered, and is retried on another
/// node, well before `rpc_timeout` (10 s here) would have ended it.
#[tokio::test]
async fn a_call_to_a_node_that_goes_silent_moves_on_after_the_keepalive() {
    let leader = start(Mode::Leader).await;
    let (relay, silent) = silenceable_relay(leader.addr.clone()).await;
    // The other node serves by forwarding and names the relay as the leader, so the
    // client believes the relay leads whichever node it tries first.
    let other = start(Mode::Forwarder {
        leader: relay.clone(),
    })
    .await;
    let client = Client::with_config(
        vec![relay.clone(), other.addr.clone()],
        ClientConfig {
            rpc_timeout: Duration::from_secs(10),
            retry_budget: Duration::from_secs(20),
            call_keepalive: Duration::from_millis(200),
            ..fast_config()
        },
    )
    .unwrap();
    client.apply(create("r1")).await.unwrap();
    assert_eq!(client.leader().as_deref(), Some(relay.as_str()));
    let before = leader.calls();

    silent.store(true, Ordering::SeqCst);
    let t = std::time::Instant::now();
    let reply = client.apply(create("r2")).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(reply.summary, format!("applied on {}", other.addr));
    // The silent relay forwarded nothing more to the node behind it.
    assert_eq!(leader.calls(), before);
}

#[tokio::test]
async fn refusals_return_at_once_with_code_reason_and_message() {
    let leader = start(Mode::Leader).await;
    let client = Client::with_config(vec![leader.addr.clone()], fast_config()).unwrap();
    let err = client.get_role("missing", false).await.unwrap_err();
    match &err {
        ClientError::Status {
            code,
            reason,
            message,
        } => {
            assert_eq!(*code, Code::NotFound);
            assert_eq!(reason.as_deref(), Some("NOT_FOUND"));
            assert_eq!(message, "role \"missing\" does not exist");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(err.to_string(), "role \"missing\" does not exist");
    assert_eq!(leader.calls(), 1, "a refusal must not be retried");
}

#[tokio::test]
async fn gives_up_within_the_budget_naming_every_address() {
    let (a, b) = (dead_addr(), dead_addr());
    let client = Client::with_config(vec![a.clone(), b.clone()], fast_config()).unwrap();
    let t = std::time::Instant::now();
    let err = client.apply(create("r")).await.unwrap_err();
    let elapsed = t.elapsed();
    assert!(err.is_unavailable(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&a) && text.contains(&b), "{text}");
    assert!(text.contains("last error"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
}

#[tokio::test]
async fn keeps_retrying_a_leaderless_cluster_with_backoff_until_the_budget() {
    let electing = start(Mode::NoLeader).await;
    let client = Client::with_config(vec![electing.addr.clone()], fast_config()).unwrap();
    let err = client.apply(create("r")).await.unwrap_err();
    assert!(err.to_string().contains("no leader elected yet"), "{err}");
    // Retried, but with backoff: 1.5 s at 10..100 ms gives roughly 15-40 attempts.
    let calls = electing.calls();
    assert!((5..=100).contains(&calls), "{calls} attempts");
}

#[tokio::test]
async fn two_nodes_naming_each_other_do_not_spin() {
    let (la, a) = listener().await;
    let (lb, b) = listener().await;
    let na = serve(la, a.clone(), Mode::Follower { leader: b.clone() });
    let nb = serve(lb, b.clone(), Mode::Follower { leader: a.clone() });
    let client = Client::with_config(vec![a.clone()], fast_config()).unwrap();
    let err = client.apply(create("r")).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let calls = na.calls() + nb.calls();
    assert!(calls < 200, "{calls} attempts: redirect loop not damped");
}

#[tokio::test]
async fn a_leader_hint_that_turns_out_dead_falls_back_to_the_list() {
    let leader = start(Mode::Leader).await;
    let follower = start(Mode::Follower {
        leader: dead_addr(),
    })
    .await;
    let client = Client::with_config(
        vec![follower.addr.clone(), leader.addr.clone()],
        fast_config(),
    )
    .unwrap();
    client.apply(create("r")).await.unwrap();
    assert_eq!(client.leader().as_deref(), Some(leader.addr.as_str()));
}

#[tokio::test]
async fn channel_to_any_skips_dead_nodes() {
    let leader = start(Mode::Leader).await;
    let client = Client::with_config(
        vec![dead_addr(), leader.addr.clone(), dead_addr()],
        fast_config(),
    )
    .unwrap();
    for _ in 0..5 {
        let (addr, channel) = client.channel_to_any().await.unwrap();
        assert_eq!(addr, leader.addr);
        let mut dc = v1::directory_client::DirectoryClient::new(channel);
        let role = dc
            .get_role(v1::GetRoleRequest {
                name: "r".into(),
                read: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(role.name, "r");
    }
}

#[tokio::test]
async fn channel_to_any_gives_up_within_the_budget() {
    let a = dead_addr();
    let client = Client::with_config(vec![a.clone()], fast_config()).unwrap();
    let err = client.channel_to_any().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains(&a), "{err}");
}
