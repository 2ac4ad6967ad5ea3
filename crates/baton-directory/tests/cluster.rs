//! Tier 3: three directory nodes in one process, over real gRPC on loopback, with links
//! cut by the in-process fault switchboard ([`baton_directory::Faults`], a test-only fake
//! network partition: it blocks Raft RPCs and renewal forwarding between node ids).
//!
//! The agent here is a scripted gRPC client of the real `Agent` service: these tests
//! check the directory's side of the lease protocol (docs/safety.md, invariant 1),
//! which is what keeps invariant 1 when the network splits:
//! - a node cut off from the leader must not keep an agent's lease alive;
//! - a deposed leader on the minority side must not acknowledge renewals;
//! - the majority declares the agent's server down only after lease + grace;
//! - a leader change alone moves no role (invariant 4).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use baton_directory::{Faults, NodeConfig, RunningNode};
use baton_proto::v1 as pb;
use baton_proto::v1::agent_client::AgentClient;
use baton_proto::v1::agent_message::Msg as Out;
use baton_proto::v1::directory_client::DirectoryClient;
use baton_proto::v1::directory_message::Msg as In;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const LEASE_MS: u64 = 1_000;

struct Cluster {
    /// Every node's `write_batch_max`.
    write_batch_max: usize,
    /// Every node's lease.
    lease_ms: u64,
    nodes: BTreeMap<u64, RunningNode>,
    addrs: BTreeMap<u64, String>,
    faults: Faults,
    dirs: BTreeMap<u64, tempfile::TempDir>,
}

impl Cluster {
    async fn start() -> Cluster {
        let defaults = NodeConfig::new(0, "127.0.0.1:1".parse().unwrap(), "unused".into());
        Cluster::start_with(defaults.write_batch_max).await
    }

    /// [`Cluster::start`] with a lease of `lease_ms`.
    async fn start_with_lease(lease_ms: u64) -> Cluster {
        let defaults = NodeConfig::new(0, "127.0.0.1:1".parse().unwrap(), "unused".into());
        Cluster::start_opts(defaults.write_batch_max, lease_ms).await
    }

    /// [`Cluster::start`] with every node packing at most `write_batch_max` writes per
    /// log entry.
    async fn start_with(write_batch_max: usize) -> Cluster {
        Cluster::start_opts(write_batch_max, LEASE_MS).await
    }

    async fn start_opts(write_batch_max: usize, lease_ms: u64) -> Cluster {
        let faults = Faults::default();
        let addrs: BTreeMap<u64, String> = (1..=3)
            .map(|id| (id, format!("127.0.0.1:{}", baton_tests::free_port())))
            .collect();
        let mut cluster = Cluster {
            write_batch_max,
            lease_ms,
            nodes: BTreeMap::new(),
            dirs: addrs
                .keys()
                .map(|id| (*id, tempfile::tempdir().unwrap()))
                .collect(),
            addrs,
            faults,
        };
        for id in 1..=3 {
            cluster.start_node(id).await;
        }
        cluster
            .wait_leader(&[1, 2, 3], Duration::from_secs(20))
            .await;
        // The first leader gives the cluster its id (one log entry): wait for it on every
        // node, so that tests counting log entries start from a formed cluster.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cluster
            .nodes
            .values()
            .all(|n| n.node.read(|st| st.cluster_id.is_some()))
        {
            assert!(Instant::now() < deadline, "no cluster id within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster
    }

    /// Node `id`'s configuration: its own data directory, every node in `--peers`.
    fn config(&self, id: u64) -> NodeConfig {
        let mut c = NodeConfig::new(
            id,
            self.addrs[&id].parse().unwrap(),
            self.dirs[&id].path().to_path_buf(),
        );
        c.peers = self.addrs.clone();
        c.lease_ms = self.lease_ms;
        c.grace_ms = baton_core::controller::min_grace_ms(self.lease_ms, c.rho_ppm).max(200);
        c.write_batch_max = self.write_batch_max;
        c
    }

    /// Start node `id` (again) over its data directory.
    async fn start_node(&mut self, id: u64) {
        let node = baton_directory::start(self.config(id), self.faults.clone())
            .await
            .unwrap();
        self.nodes.insert(id, node);
    }

    /// Stop node `id` (its data stays).
    async fn stop_node(&mut self, id: u64) {
        if let Some(n) = self.nodes.remove(&id) {
            n.shutdown().await;
        }
    }

    /// The leader that every node in `among` agrees on, waited for.
    async fn wait_leader(&self, among: &[u64], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders: Vec<Option<u64>> = among
                .iter()
                .map(|id| self.nodes[id].node.raft.metrics().borrow().current_leader)
                .collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && among.contains(l)
                && self.nodes[l].node.is_leader()
            {
                return *l;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {among:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn write(&self, cmd: baton_core::Command) -> pb::WriteReply {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for n in self.nodes.values() {
                if n.node.is_leader()
                    && let Ok(r) = n.node.write(cmd.clone(), false).await
                {
                    return r;
                }
            }
            assert!(Instant::now() < deadline, "write {cmd:?} did not succeed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(self) {
        for (_, n) in self.nodes {
            n.shutdown().await;
        }
    }
}

/// What a scripted agent saw, each with its arrival time.
#[derive(Default)]
struct Seen {
    acks: Vec<(Instant, u64)>,
    sets: Vec<(Instant, pb::AssignmentSet)>,
}

/// A scripted agent: opens a session on `addr` for `server`, renews every `every`, and
/// records what comes back. Returns the time each renewal was sent, keyed by seq.
struct FakeAgent {
    sent: std::sync::Arc<std::sync::Mutex<BTreeMap<u64, Instant>>>,
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAgent {
    async fn start(addr: &str, server: &str, every: Duration) -> FakeAgent {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        tx.send(pb::AgentMessage {
            msg: Some(Out::Hello(pb::Hello {
                server: server.into(),
                kinds: vec![],
                main: false,
                min_revision: 0,
                instance: String::new(),
            })),
        })
        .await
        .unwrap();
        let mut inbound = AgentClient::new(channel)
            .session(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let sent = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
        let (sent2, seen2) = (sent.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            let mut seq = 0;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        seq += 1;
                        sent2.lock().unwrap().insert(seq, Instant::now());
                        let m = pb::AgentMessage { msg: Some(Out::Renew(pb::Renew { seq })) };
                        if tx.send(m).await.is_err() { return }
                    }
                    m = inbound.message() => match m {
                        Ok(Some(pb::DirectoryMessage { msg: Some(In::RenewAck(a)) })) => {
                            seen2.lock().unwrap().acks.push((Instant::now(), a.seq));
                        }
                        Ok(Some(pb::DirectoryMessage { msg: Some(In::Assignments(s)) })) => {
                            seen2.lock().unwrap().sets.push((Instant::now(), s));
                        }
                        _ => return,
                    }
                }
            }
        });
        FakeAgent { sent, seen, task }
    }

    /// Send times of the renewals acknowledged after `after`.
    fn acked_sends_after(&self, after: Instant) -> Vec<Instant> {
        let sent = self.sent.lock().unwrap();
        let seen = self.seen.lock().unwrap();
        seen.acks
            .iter()
            .filter(|(at, _)| *at > after)
            .filter_map(|(_, seq)| sent.get(seq).copied())
            .collect()
    }

    async fn wait_acks(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.seen.lock().unwrap().acks.len() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} acks within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn others(id: u64) -> Vec<u64> {
    (1..=3).filter(|x| *x != id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_cut_off_from_the_leader_stops_acknowledging_renewals() {
    let c = Cluster::start().await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let follower = others(leader)[0];
    let agent = FakeAgent::start(
        &c.addrs[&follower],
        "srv-f",
        Duration::from_millis(LEASE_MS / 3),
    )
    .await;
    agent.wait_acks(3, Duration::from_secs(10)).await;

    // Cut the follower off from both other nodes: it can no longer reach the leader.
    let cut_at = Instant::now();
    c.faults.isolate(follower, &others(follower));
    // Give in-flight renewals (sent before the cut, confirmed before it) time to land,
    // then watch for a few leases: no renewal sent after the cut may be acknowledged.
    let watch_until = Instant::now() + Duration::from_millis(4 * LEASE_MS);
    while Instant::now() < watch_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let late: Vec<Instant> = agent
        .acked_sends_after(cut_at)
        .into_iter()
        .filter(|sent| *sent > cut_at)
        .collect();
    assert!(
        late.is_empty(),
        "{} renewal(s) sent after the follower was cut off were acknowledged",
        late.len()
    );
    // The majority, which no longer hears from srv-f, declares it down.
    let majority = others(follower);
    let new_leader = c.wait_leader(&majority, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let down = c.nodes[&new_leader].node.read(|s| {
            s.servers.get("srv-f").map(|x| x.status) == Some(baton_core::ServerStatus::Down)
        });
        if down {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "srv-f never declared down by the majority"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.faults.heal();
    drop(agent);
    c.shutdown().await;
}

/// A follower cut off for a while comes back with a term raised by its failed elections
/// (openraft has no pre-vote) and answers the leader's confirmation rounds with that
/// higher vote until the leader's replication sees it and steps down. The leader and the
/// other follower are still a majority, so while the leader leads, every round must
/// confirm: a round that gave up on the first higher vote stopped renewals for seconds
/// after every heal and made agents fence for nothing (found by tests/chaos).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_rejoining_with_a_higher_term_does_not_fail_confirmation_rounds() {
    let c = Cluster::start().await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let f = others(leader)[0];
    let node = c.nodes[&leader].node.clone();
    let term_of = |id: u64| c.nodes[&id].node.raft.metrics().borrow().current_term;
    let leader_term = term_of(leader);
    node.liveness
        .round(&node)
        .await
        .expect("a round confirms before any fault");

    c.faults.isolate(f, &others(f));
    let deadline = Instant::now() + Duration::from_secs(20);
    while term_of(f) < leader_term + 3 {
        assert!(
            Instant::now() < deadline,
            "the cut-off follower never raised its term (at {})",
            term_of(f)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.faults.heal();

    // Rounds back to back until the leader steps down (or 5 s): each that started and
    // ended while this node led at its old term must have confirmed.
    let leads = || {
        let m = node.raft.metrics().borrow().clone();
        m.state == openraft::ServerState::Leader && m.current_term == leader_term
    };
    let (mut confirmed, mut failed) = (0u32, Vec::new());
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && leads() {
        let r = node.liveness.round(&node).await;
        match r {
            Ok(_) => confirmed += 1,
            Err(e) if leads() => failed.push(e.message().to_string()),
            Err(_) => {}
        }
    }
    assert!(
        confirmed > 0 || !failed.is_empty(),
        "node {leader} stepped down before any round ran after the heal: nothing was tested"
    );
    assert!(
        failed.is_empty(),
        "{} of {} rounds failed while node {leader} still led term {leader_term} with a \
         majority behind it; first: {}",
        failed.len(),
        failed.len() as u32 + confirmed,
        failed[0]
    );
    eprintln!("{confirmed} rounds confirmed after the heal while node {leader} led");
    c.shutdown().await;
}

/// Renewals share the leader's confirmation rounds: the batch of sessions on the leader
/// and the batches each follower forwards join the round that starts next, rather than
/// one round each, so the leader runs fewer rounds than it confirms renewals (what lets
/// many thousands of agents renew at one round per batch interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewals_from_every_node_share_the_leaders_confirmation_rounds() {
    let c = Cluster::start().await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let mut agents = Vec::new();
    for i in 0..30u64 {
        let id = 1 + i % 3;
        let server = format!("srv-{i:02}");
        agents.push(FakeAgent::start(&c.addrs[&id], &server, Duration::from_millis(5)).await);
    }
    for a in &agents {
        a.wait_acks(1, Duration::from_secs(10)).await;
    }
    let liveness = &c.nodes[&leader].node.liveness;
    let acks = || -> usize {
        agents
            .iter()
            .map(|a| a.seen.lock().unwrap().acks.len())
            .sum()
    };
    let (rounds0, acks0) = (liveness.rounds_started(), acks());
    let deadline = Instant::now() + Duration::from_secs(20);
    while acks() < acks0 + 1_000 {
        assert!(
            Instant::now() < deadline,
            "only {} renewals acknowledged in 20 s",
            acks() - acks0
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (rounds, renewals) = (liveness.rounds_started() - rounds0, acks() - acks0);
    eprintln!("{renewals} renewals from 30 sessions on 3 nodes confirmed by {rounds} rounds");
    assert!(
        rounds > 0 && (rounds as usize) < renewals,
        "{rounds} rounds for {renewals} renewals: renewals did not share rounds"
    );
    drop(agents);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leader_on_the_minority_side_acknowledges_nothing() {
    let c = Cluster::start().await;
    let old = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    // A role running on the agent's server, to see that the majority moves it only after
    // lease + grace, and that the agent could not have renewed meanwhile.
    c.write(baton_core::Command::AddServer {
        name: "srv-b".into(),
        main: false,
        kinds: vec![],
    })
    .await;
    let agent =
        FakeAgent::start(&c.addrs[&old], "srv-l", Duration::from_millis(LEASE_MS / 3)).await;
    agent.wait_acks(3, Duration::from_secs(10)).await;
    c.write(baton_core::Command::CreateRole {
        name: "r".into(),
        kind: String::new(),
        servers: vec!["srv-l".into(), "srv-b".into()],
        failback: false,
        failback_delay_ms: 0,
        database: None,
    })
    .await;
    // The agent sees the role assigned to it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent
        .seen
        .lock()
        .unwrap()
        .sets
        .iter()
        .any(|(_, s)| s.assignments.iter().any(|a| a.role == "r"))
    {
        assert!(Instant::now() < deadline, "role r never assigned to srv-l");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let cut_at = Instant::now();
    c.faults.isolate(old, &others(old));
    let majority = others(old);
    let new_leader = c.wait_leader(&majority, Duration::from_secs(10)).await;
    assert_ne!(new_leader, old);
    // srv-b registers with the new majority, so the role has somewhere to go.
    let _b = FakeAgent::start(
        &c.addrs[&new_leader],
        "srv-b",
        Duration::from_millis(LEASE_MS / 3),
    )
    .await;
    // Wait until the majority moved the role.
    let deadline = Instant::now() + Duration::from_secs(15);
    let moved_at = loop {
        let on_b = c.nodes[&new_leader]
            .node
            .read(|s| s.roles.get("r").and_then(|r| r.active.clone()) == Some("srv-b".into()));
        if on_b {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "role r never moved to srv-b");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Safety: every renewal the deposed side acknowledged was sent before the cut, so
    // the agent's fence (last acked send + lease) falls before the move.
    let acked = agent.acked_sends_after(cut_at - Duration::from_secs(60));
    let last_acked_send = acked.into_iter().max().expect("some acks");
    assert!(
        last_acked_send <= cut_at,
        "a renewal sent {:?} after the cut was acknowledged by the deposed leader",
        last_acked_send - cut_at
    );
    assert!(
        moved_at >= last_acked_send + Duration::from_millis(LEASE_MS),
        "role moved {:?} after the last acknowledged renewal, inside the lease",
        moved_at - last_acked_send
    );
    c.faults.heal();
    drop(agent);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_change_alone_moves_no_role() {
    let c = Cluster::start().await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    // Agents attached to a follower, so that they keep renewing through the change.
    let f = others(leader)[0];
    let a = FakeAgent::start(&c.addrs[&f], "srv-a", Duration::from_millis(LEASE_MS / 3)).await;
    let b = FakeAgent::start(&c.addrs[&f], "srv-b", Duration::from_millis(LEASE_MS / 3)).await;
    a.wait_acks(2, Duration::from_secs(10)).await;
    b.wait_acks(2, Duration::from_secs(10)).await;
    let created = c
        .write(baton_core::Command::CreateRole {
            name: "r".into(),
            kind: String::new(),
            servers: vec!["srv-a".into(), "srv-b".into()],
            failback: false,
            failback_delay_ms: 0,
            database: None,
        })
        .await
        .revision;
    let placed = c.nodes[&leader].node.read(|s| {
        let r = &s.roles["r"];
        (r.active.clone(), r.epoch)
    });
    assert_eq!(placed.0.as_deref(), Some("srv-a"));
    // Change leadership three times: once by cutting the leader off from both other
    // nodes (a real election, which the agents' node f may win), then by controlled
    // transfers to a node that is neither the leader nor f. f itself is never cut off,
    // so the agents keep renewing through it.
    let mut current = leader;
    for round in 0..3 {
        if round == 0 {
            c.faults.isolate(current, &others(current));
            let next = c
                .wait_leader(&others(current), Duration::from_secs(10))
                .await;
            c.faults.heal();
            current = next;
        } else {
            let target = others(current).into_iter().find(|x| *x != f).unwrap();
            let n = &c.nodes[&current].node;
            n.manager
                .transfer_leader(n, target, &baton_directory::auth::Caller::Anyone)
                .await
                .unwrap();
            current = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
            assert_eq!(current, target);
        }
        // A new leader has every committed entry but may still be applying them.
        c.nodes[&current]
            .node
            .wait_applied(created, Duration::from_secs(5))
            .await
            .unwrap();
        // Observe for longer than lease + grace: the role must stay put.
        let until = Instant::now() + Duration::from_millis(LEASE_MS * 2);
        while Instant::now() < until {
            let now = c.nodes[&current].node.read(|s| {
                let r = &s.roles["r"];
                (r.active.clone(), r.epoch)
            });
            assert_eq!(now, placed, "a leader change moved role r");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop((a, b));
    c.shutdown().await;
}

/// Stock gRPC tools work (health checking, reflection), and malformed or oversized
/// requests are refused with a precise status before anything reaches the log
/// (invariant 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_reflection_and_malformed_requests() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let c = Cluster::start().await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addrs[&leader]))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // Health follows readiness (checked every 500 ms): SERVING once the leader has
    // seen its quorum, within a bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let health = HealthClient::new(channel.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: "baton.v1.Directory".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if health.status == ServingStatus::Serving as i32 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health still {} after 10 s",
            health.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (tx, rx) = mpsc::channel(1);
    tx.send(tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    })
    .await
    .unwrap();
    let mut replies = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.message().await.unwrap().unwrap().message_response
    else {
        panic!("reflection did not list services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in ["baton.v1.Directory", "baton.v1.Agent", "baton.v1.Watch"] {
        assert!(names.iter().any(|n| n == s), "{s} missing from {names:?}");
    }

    let mut dir = DirectoryClient::new(channel);
    let before = c.nodes[&leader].node.revision();
    let empty = dir.apply(pb::Command::default()).await.unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    assert_eq!(empty.message(), "the request carries no command");

    let huge = "x".repeat(2 * 1024 * 1024);
    let too_big = dir
        .apply(pb::Command {
            request_id: String::new(),
            command: Some(pb::command::Command::AddServer(pb::AddServer {
                name: huge,
                main: false,
                kinds: vec![],
            })),
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), tonic::Code::OutOfRange, "{too_big:?}");
    assert!(
        too_big.message().contains("message length too large"),
        "{}",
        too_big.message()
    );

    let long = dir
        .apply(pb::Command {
            request_id: String::new(),
            command: Some(pb::command::Command::AddServer(pb::AddServer {
                name: "y".repeat(65),
                main: false,
                kinds: vec![],
            })),
        })
        .await
        .unwrap_err();
    assert_eq!(long.code(), tonic::Code::InvalidArgument);
    assert!(long.message().contains("limit is 64"), "{}", long.message());
    // Malformed input never reached the log: nothing changed, not even the revision.
    assert!(c.nodes[&leader].node.read(|s| s.servers.is_empty()));
    assert_eq!(c.nodes[&leader].node.revision(), before);
    c.shutdown().await;
}

/// A write retried under its request id applies once, through the leader or a follower's
/// forward alike: the retry gets the first outcome (not ALREADY_EXISTS), a refusal is
/// repeated as it was, and every node remembers the id. A malformed id changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_write_applies_once_through_leader_and_follower() {
    let c = Cluster::start().await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let f = others(leader)[0];
    let connect = |id: u64| {
        let addr = format!("http://{}", c.addrs[&id]);
        async move {
            let ch = tonic::transport::Endpoint::from_shared(addr)
                .unwrap()
                .connect()
                .await
                .unwrap();
            DirectoryClient::new(ch)
        }
    };
    let (mut to_leader, mut to_follower) = (connect(leader).await, connect(f).await);
    let add = |name: &str, id: &str| pb::Command {
        request_id: id.into(),
        command: Some(pb::command::Command::AddServer(pb::AddServer {
            name: name.into(),
            main: false,
            kinds: vec![],
        })),
    };

    let first = to_follower.apply(add("srv-x", "retry-1")).await.unwrap();
    // The follower's reply names the leader, so a client sends its next write there
    // directly; the leader's own replies name no one.
    let hint = first.metadata().get(baton_proto::LEADER_ADDR_KEY);
    assert_eq!(
        hint.and_then(|h| h.to_str().ok()),
        Some(c.addrs[&leader].to_string().as_str()),
        "{:?}",
        first.metadata()
    );
    let first = first.into_inner();
    for (client, through_follower) in [(&mut to_leader, false), (&mut to_follower, true)] {
        let again = client.apply(add("srv-x", "retry-1")).await.unwrap();
        let hinted = again.metadata().contains_key(baton_proto::LEADER_ADDR_KEY);
        assert_eq!(hinted, through_follower, "{:?}", again.metadata());
        assert_eq!(again.into_inner().summary, first.summary);
    }
    // Without the id, or under another, it is a new write, refused as before.
    for id in ["", "retry-2", "retry-2"] {
        let refused = to_leader.apply(add("srv-x", id)).await.unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::AlreadyExists,
            "{id:?}: {refused:?}"
        );
    }
    let revision = c.nodes[&leader].node.revision();
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in c.addrs.keys() {
        let node = &c.nodes[id].node;
        while node.revision() < revision {
            assert!(Instant::now() < deadline, "node {id} did not catch up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node.read(|s| {
            assert_eq!(s.servers.len(), 1, "node {id}: {:?}", s.servers.keys());
            assert!(s.requests.get("retry-1").is_some_and(|r| r.is_ok()));
            assert!(s.requests.get("retry-2").is_some_and(|r| r.is_err()));
        });
    }
    for bad in ["has space", &"x".repeat(baton_core::REQUEST_ID_MAX + 1)] {
        let refused = to_follower.apply(add("srv-y", bad)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("request id"), "{refused:?}");
    }
    assert_eq!(c.nodes[&leader].node.revision(), revision);
    assert!(
        c.nodes[&leader]
            .node
            .read(|s| !s.servers.contains_key("srv-y"))
    );
    c.shutdown().await;
}

/// `writes` concurrent `AddServer`s, a third of them through a follower (forwarded one by
/// one), `names` distinct names among them: each name is added exactly once and every
/// other attempt is refused ALREADY_EXISTS, whatever entry carried it. Returns the
/// revisions of the accepted writes.
async fn concurrent_adds(c: &Cluster, writes: usize, names: usize) -> Vec<u64> {
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let follower = others(leader)[0];
    let mut tasks = Vec::new();
    for i in 0..writes {
        let via = if i % 3 == 2 { follower } else { leader };
        let node = c.nodes[&via].node.clone();
        let name = format!("srv-{}", i % names);
        tasks.push(tokio::spawn(async move {
            let cmd = baton_core::Command::AddServer {
                name: name.clone(),
                main: false,
                kinds: vec![],
            };
            (name, node.write(cmd, false).await)
        }));
    }
    let mut accepted: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let (name, r) = t.await.unwrap();
        match r {
            Ok(reply) => {
                let again = accepted.insert(name.clone(), reply.revision);
                assert!(again.is_none(), "{name} added twice");
            }
            Err(s) => assert_eq!(s.code(), tonic::Code::AlreadyExists, "{name}: {s:?}"),
        }
    }
    assert_eq!(accepted.len(), names, "every name added once");
    // Every node ends with the same servers.
    let revision = c.nodes[&leader].node.revision();
    let deadline = Instant::now() + Duration::from_secs(10);
    for (id, n) in &c.nodes {
        while n.node.revision() < revision {
            assert!(Instant::now() < deadline, "node {id} did not catch up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n.node.read(|s| {
            assert_eq!(s.servers.len(), names, "node {id}");
            for name in accepted.keys() {
                assert!(s.servers.contains_key(name), "node {id} lacks {name}");
            }
        });
    }
    accepted.into_values().collect()
}

/// Group commit on a real cluster: concurrent writes share log entries (fewer distinct
/// revisions than writes), each gets its own outcome, and every node applies the same.
/// With `write_batch_max = 1` every write has an entry of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_entries_and_each_gets_its_own_outcome() {
    let c = Cluster::start().await;
    let revisions = concurrent_adds(&c, 300, 200).await;
    let distinct: BTreeSet<u64> = revisions.iter().copied().collect();
    assert!(
        distinct.len() < revisions.len(),
        "{} writes in {} entries: nothing was batched",
        revisions.len(),
        distinct.len()
    );
    c.shutdown().await;

    let c = Cluster::start_with(1).await;
    let revisions = concurrent_adds(&c, 60, 40).await;
    let distinct: BTreeSet<u64> = revisions.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        revisions.len(),
        "batched although the limit is 1"
    );
    c.shutdown().await;
}

fn create_role(name: &str, servers: &[&str]) -> baton_core::Command {
    baton_core::Command::CreateRole {
        name: name.into(),
        kind: String::new(),
        servers: servers.iter().map(|s| s.to_string()).collect(),
        failback: false,
        failback_delay_ms: 0,
        database: None,
    }
}

async fn watch_client(
    addr: &str,
) -> baton_proto::v1::watch_client::WatchClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    baton_proto::v1::watch_client::WatchClient::new(channel)
}

/// The next event of a watch stream, waited for with a deadline.
async fn next_event(stream: &mut tonic::Streaming<pb::Event>) -> pb::Event {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("no event within 10 s")
        .expect("the stream failed")
        .expect("the stream ended")
}

/// A watcher that received only part of a revision's events resumes, on another node,
/// with exactly the rest of them; a watcher asking for events that trimming dropped gets
/// OUT_OF_RANGE instead of a silent skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_resumes_inside_a_revision_and_refuses_trimmed_positions() {
    let c = Cluster::start().await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let (f1, f2) = (others(leader)[0], others(leader)[1]);
    let every = Duration::from_millis(LEASE_MS / 3);
    let a = FakeAgent::start(&c.addrs[&leader], "srv-a", every).await;
    let b = FakeAgent::start(&c.addrs[&leader], "srv-b", every).await;
    a.wait_acks(2, Duration::from_secs(10)).await;
    b.wait_acks(2, Duration::from_secs(10)).await;
    for r in ["r1", "r2", "r3"] {
        c.write(create_role(r, &["srv-a", "srv-b"])).await;
    }
    // srv-a's agent goes away: after lease + grace one ServersDown entry moves its three
    // roles to srv-b, recording three events at one revision.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(15);
    let moved = loop {
        let moved: Vec<(u64, u32, String)> = c.nodes[&f1].node.read(|s| {
            s.history
                .iter()
                .filter(|e| e.to.as_deref() == Some("srv-b"))
                .map(|e| (e.revision, e.index, e.role.clone()))
                .collect()
        });
        if moved.len() == 3 {
            break moved;
        }
        assert!(Instant::now() < deadline, "roles did not move: {moved:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rev = moved[0].0;
    assert_eq!(
        moved,
        [
            (rev, 0, "r1".to_string()),
            (rev, 1, "r2".to_string()),
            (rev, 2, "r3".to_string())
        ]
    );
    // A marker after it, so "nothing else" is shown by the next event being the marker.
    let marker = c.write(create_role("r4", &["srv-b"])).await.revision;

    // A watcher on f1 receives only the first event of the revision, then loses the node.
    let mut first = watch_client(&c.addrs[&f1])
        .await
        .events(pb::WatchRequest {
            role: None,
            after_revision: rev - 1,
            after: None,
        })
        .await
        .unwrap()
        .into_inner();
    let e = next_event(&mut first).await;
    assert_eq!((e.revision, e.index, e.role.as_str()), (rev, 0, "r1"));
    drop(first);

    // It resumes on f2 after exactly that event (`after_revision` is what an older client
    // would have sent, and is overridden): the rest of the revision, then the marker.
    c.nodes[&f2]
        .node
        .wait_applied(marker, Duration::from_secs(5))
        .await
        .unwrap();
    let mut resumed = watch_client(&c.addrs[&f2])
        .await
        .events(pb::WatchRequest {
            role: None,
            after_revision: rev,
            after: Some(pb::EventPosition {
                revision: e.revision,
                index: e.index,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    for expected in [(rev, 1, "r2"), (rev, 2, "r3"), (marker, 0, "r4")] {
        let e = next_event(&mut resumed).await;
        assert_eq!((e.revision, e.index, e.role.as_str()), expected);
    }
    drop(resumed);

    // `after_revision` alone still means after all of that revision.
    let mut whole = watch_client(&c.addrs[&f2])
        .await
        .events(pb::WatchRequest {
            role: None,
            after_revision: rev,
            after: None,
        })
        .await
        .unwrap()
        .into_inner();
    let e = next_event(&mut whole).await;
    assert_eq!((e.revision, e.index, e.role.as_str()), (marker, 0, "r4"));
    drop(whole);

    // Keep 10 events, then record 10 more (ten roles placed on srv-b): every event up to
    // the marker is dropped.
    c.write(baton_core::Command::Configure { history_max: 10 })
        .await;
    let mut last = 0;
    for i in 0..10 {
        last = c
            .write(create_role(&format!("t{i}"), &["srv-b"]))
            .await
            .revision;
    }
    c.nodes[&f1]
        .node
        .wait_applied(last, Duration::from_secs(5))
        .await
        .unwrap();
    let oldest = c.nodes[&f1]
        .node
        .read(|s| s.history.front().unwrap().revision);
    assert!(oldest > marker, "oldest kept {oldest}, marker {marker}");
    let mut w = watch_client(&c.addrs[&f1]).await;
    for (after_revision, after) in [
        (rev, None),
        (0, None),
        (
            0,
            Some(pb::EventPosition {
                revision: rev,
                index: 0,
            }),
        ),
    ] {
        let err = w
            .events(pb::WatchRequest {
                role: None,
                after_revision,
                after,
            })
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
        let requested = after.map_or(after_revision, |p| p.revision);
        assert!(
            err.message()
                .contains(&format!("cannot resume after revision {requested}"))
                && err
                    .message()
                    .contains(&format!("the oldest event kept is at revision {oldest}"))
                && err.message().contains("list the events and resume after"),
            "{}",
            err.message()
        );
    }
    // From just before the oldest kept event, nothing is missing: served.
    let mut ok = w
        .events(pb::WatchRequest {
            role: None,
            after_revision: oldest - 1,
            after: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_event(&mut ok).await.revision, oldest);
    drop(ok);
    drop(b);
    c.shutdown().await;
}

/// A watcher far behind (resuming from the oldest event, 600 events back) receives every
/// event kept, in order and without a gap, although a watcher reads the history in steps
/// of at most 256; a filtered watcher gets exactly its role's events; both then follow
/// new writes live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_far_behind_catches_up_in_order_and_then_follows() {
    let c = Cluster::start().await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let f = others(leader)[0];
    let every = Duration::from_millis(LEASE_MS / 3);
    let a = FakeAgent::start(&c.addrs[&leader], "srv-a", every).await;
    a.wait_acks(2, Duration::from_secs(10)).await;
    // 600 roles placed on srv-a, 50 writes at a time: an event each.
    let mut last = 0;
    for chunk in 0..12 {
        let writes =
            (0..50).map(|i| c.write(create_role(&format!("w{}", chunk * 50 + i), &["srv-a"])));
        for r in futures::future::join_all(writes).await {
            last = last.max(r.revision);
        }
    }
    c.nodes[&f]
        .node
        .wait_applied(last, Duration::from_secs(10))
        .await
        .unwrap();
    let kept: Vec<(u64, u32, String)> = c.nodes[&f].node.read(|s| {
        s.history
            .iter()
            .map(|e| (e.revision, e.index, e.role.clone()))
            .collect()
    });
    let placed = kept.iter().filter(|(_, _, r)| r.starts_with('w')).count();
    assert!(placed >= 600, "{placed} placement events of 600 roles");

    let w = watch_client(&c.addrs[&f]).await;
    // A stream from the oldest event kept, of one role or of all.
    let from_start = |role: Option<&str>| {
        let mut w = w.clone();
        let role = role.map(str::to_string);
        async move {
            w.events(pb::WatchRequest {
                role,
                after_revision: 0,
                after: None,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let mut all = from_start(None).await;
    let mut got = Vec::new();
    while got.len() < kept.len() {
        let e = next_event(&mut all).await;
        got.push((e.revision, e.index, e.role));
    }
    assert_eq!(got, kept, "the catch-up differs from the history kept");
    let mut one = from_start(Some("w321")).await;
    let mine: Vec<_> = kept
        .iter()
        .filter(|(_, _, r)| r == "w321")
        .cloned()
        .collect();
    assert!(!mine.is_empty());
    for expected in &mine {
        let e = next_event(&mut one).await;
        assert_eq!(&(e.revision, e.index, e.role), expected);
    }
    // A role watcher of a role created later.
    let mut late = from_start(Some("late")).await;

    // Live: new events reach the watcher of everything; the role watcher skips the
    // other role's event and gets its own.
    c.write(create_role("live", &["srv-a"])).await;
    c.write(create_role("late", &["srv-a"])).await;
    for role in ["live", "late"] {
        let e = next_event(&mut all).await;
        assert_eq!(e.role, role, "{e:?}");
        assert!(e.revision > last);
    }
    let e = next_event(&mut late).await;
    assert_eq!(e.role, "late", "{e:?}");
    drop(a);
    c.shutdown().await;
}

/// The internal propose path (agent sessions, the controller, and what a follower
/// forwards to the leader) refuses malformed commands as the public `Apply` does, before
/// they take a log entry; a command too large for the log is refused with its size and
/// the limit instead of failing the append (which would stop the leader's Raft); and the
/// controller's declarations longer than one entry may hold are split.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_writes_are_validated_and_bounded_before_the_log() {
    use baton_core::Command;
    use baton_proto::v1::raft_client::RaftClient;

    let c = Cluster::start().await;
    c.write(Command::AddServer {
        name: "a".into(),
        main: false,
        kinds: vec![],
    })
    .await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let logs = || -> Vec<Option<u64>> {
        c.nodes
            .values()
            .map(|n| n.node.raft.metrics().borrow().last_log_index)
            .collect()
    };
    // Every node holds the same log before the refusals.
    let deadline = Instant::now() + Duration::from_secs(10);
    while logs().windows(2).any(|w| w[0] != w[1]) {
        assert!(
            Instant::now() < deadline,
            "logs did not converge: {:?}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = logs();
    let revision = c.nodes[&leader].node.revision();

    // Malformed commands, on the leader and through a follower's forward.
    let bad_name = Command::AddServer {
        name: "a b".into(),
        main: false,
        kinds: vec![],
    };
    let forged = Command::RoleFailed {
        role: "r".into(),
        server: "a".into(),
        epoch: 1,
        reason: "ok\r\u{1b}[2Kall good".into(),
        cooldown_ms: 1_000,
    };
    for id in [leader, follower] {
        let node = &c.nodes[&id].node;
        let err = node.write(bad_name.clone(), false).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert_eq!(
            err.message(),
            "server name \"a b\" contains ' '; names may not contain whitespace, control characters or commas"
        );
        assert_eq!(
            err.metadata().get(baton_proto::REASON_KEY).unwrap(),
            "INVALID_ARGUMENT"
        );
        let err = node.write(forged.clone(), false).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert_eq!(
            err.message(),
            "failure reason \"ok\\r\\u{1b}[2Kall good\" contains '\\r'; it may not contain control characters"
        );
    }
    assert_eq!(logs(), before, "a malformed command took a log entry");
    assert_eq!(c.nodes[&leader].node.revision(), revision);

    // An oversized command, proposed to the leader over the internal Raft service (whose
    // messages may be far larger than the log's entries): refused for its size before it
    // is decoded. Parsing it first took hundreds of milliseconds in a debug build, long
    // enough for the leader's heartbeats to stall and a follower to take over.
    let huge = Command::RoleFailed {
        role: "r".into(),
        server: "a".into(),
        epoch: 1,
        reason: "x".repeat(baton_store::ENTRY_MAX_BYTES),
        cooldown_ms: 1_000,
    };
    let term = c.nodes[&leader].node.raft.metrics().borrow().current_term;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addrs[&leader]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raft = RaftClient::new(channel);
    let data = serde_json::to_vec(&huge).unwrap();
    let len = data.len();
    let mut req = tonic::Request::new(pb::RaftPayload { data });
    req.set_timeout(Duration::from_secs(10));
    let err = raft.propose(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.message(),
        format!(
            "a forwarded command of {len} bytes is over the limit of 2097152 bytes (no valid \
             command encodes larger)"
        )
    );
    assert_eq!(logs(), before, "an oversized command reached the log");

    // The leader still works, and a declaration of more servers than one entry may hold
    // is split into entries that each fit.
    let servers: Vec<String> = (0..=baton_core::SERVERS_DOWN_MAX)
        .map(|i| format!("gone-{i}"))
        .collect();
    let node = &c.nodes[&leader].node;
    let reply = node
        .write(Command::ServersDown { servers }, true)
        .await
        .unwrap();
    assert_eq!(reply.revision, before[0].unwrap() + 2, "{reply:?}");
    assert!(node.is_leader());
    assert_eq!(
        node.raft.metrics().borrow().current_term,
        term,
        "an election during the refusals"
    );
    c.shutdown().await;
}

/// A leadership transfer whose caller gives up midway (its handler is dropped while the
/// followers' elections and the leader's heartbeats are off and writes are paused)
/// leaves nothing off: writes resume at once, and the followers can elect a new leader
/// when the leader is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_leader_transfer_leaves_writes_and_elections_on() {
    use baton_proto::v1::directory_client::DirectoryClient;
    let c = Cluster::start().await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let target = others(leader)[0];
    let mut client = DirectoryClient::connect(format!("http://{}", c.addrs[&leader]))
        .await
        .unwrap();
    // The transfer first waits out the followers' leader lease (the maximum election
    // timeout): 300 ms in, everything is switched off.
    let mut r = tonic::Request::new(pb::TransferLeaderRequest { id: target });
    r.set_timeout(Duration::from_millis(300));
    let gave_up = client.transfer_leader(r).await;
    assert!(
        gave_up.is_err(),
        "the transfer answered in 300 ms: {gave_up:?}"
    );
    // Writes resume well before the pause's own bound (several seconds).
    let t = Instant::now();
    let node = &c.nodes[&leader].node;
    let resumed = loop {
        match node
            .write(
                baton_core::Command::AddServer {
                    name: "after-transfer".into(),
                    main: false,
                    kinds: vec![],
                },
                false,
            )
            .await
        {
            Ok(_) => break true,
            Err(e) if t.elapsed() < Duration::from_secs(3) => {
                tracing::debug!("write refused: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => break false,
        }
    };
    assert!(
        resumed,
        "writes still paused 3 s after the transfer was abandoned"
    );
    // Elections are back on at the followers: cut the leader off, and they elect.
    c.faults.isolate(leader, &others(leader));
    let new = c.wait_leader(&others(leader), Duration::from_secs(5)).await;
    assert_ne!(new, leader);
    c.faults.heal();
    c.shutdown().await;
}

/// A node that led when it stopped comes back as a follower and leads again only by an
/// election, whose blank entry makes every later read include every write acknowledged
/// before. openraft would restore it as the leader at once, with the commit index it had
/// stored as its read index; that index is written after an entry is acknowledged and not
/// fsynced, so after a kill -9 it can stop short of acknowledged entries, and a read could
/// miss them (invariant 2). Here the restarted nodes are cut off from each other: a
/// restored leader would stay leader at its old term; an elected one campaigns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_leader_is_elected_again_before_it_serves_reads() {
    use openraft::RaftLogReader;
    use openraft::storage::RaftLogStorage;
    let mut c = Cluster::start().await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let acked = c
        .write(baton_core::Command::AddServer {
            name: "acked".into(),
            main: false,
            kinds: vec![],
        })
        .await
        .revision;
    for id in [1, 2, 3] {
        c.stop_node(id).await;
    }
    // The leader's stored commit index stops short of the acknowledged entry, as a kill -9
    // right after the acknowledgement can leave it.
    let term = {
        let (mut log, _sm) = baton_store::open(c.dirs[&leader].path()).unwrap();
        let vote = log.read_vote().await.unwrap().expect("a stored vote");
        assert!(
            vote.is_committed() && vote.leader_id().voted_for() == Some(leader),
            "node {leader} stopped as the leader: {vote}"
        );
        let before = log.try_get_log_entries(acked - 1..acked).await.unwrap();
        log.save_committed(Some(before[0].log_id)).await.unwrap();
        log.save_vote(&vote).await.unwrap(); // flushes the commit index too
        vote.leader_id().get_term()
    };
    c.faults.isolate(1, &[2, 3]);
    c.faults.isolate(2, &[3]);
    for id in [1, 2, 3] {
        c.start_node(id).await;
    }
    // Cut off, the former leader does not lead: it campaigns, at a higher term.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = c.nodes[&leader].node.raft.metrics().borrow().clone();
        assert!(
            m.state != openraft::ServerState::Leader,
            "node {leader} leads again without an election: {m:?}"
        );
        if m.current_term > term {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {leader} did not campaign within 10 s: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Together again: a linearizable read at the leader sees the acknowledged write.
    c.faults.heal();
    let now_leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(20)).await;
    let node = &c.nodes[&now_leader].node;
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = node.confirm_leadership().await {
        assert!(
            Instant::now() < deadline,
            "no linearizable read at node {now_leader}: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        node.read(|st| st.servers.contains_key("acked")),
        "node {now_leader} served a read without the acknowledged write"
    );
    c.shutdown().await;
}

/// The controller's own writes are bounded. A leader that loses its quorum while one is
/// in flight (here: cut off from both followers the moment it starts declaring a dead
/// server down) does not wait on it forever: it gets back to watching its quorum, counts
/// itself without one, and restarts every liveness clock when the quorum returns, so a
/// server whose agent kept renewing to a reachable node is not declared down for the time
/// the leader could not hear it (invariant 4). The followers hold no election, so the
/// same leader meets its quorum again, as when followers come back from a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quorum_loss_during_a_controller_write_declares_no_live_server_down() {
    let c = Cluster::start().await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let followers = others(leader);
    for f in &followers {
        c.nodes[f].node.raft.runtime_config().elect(false);
    }
    let every = Duration::from_millis(LEASE_MS / 4);
    let live = FakeAgent::start(&c.addrs[&followers[0]], "srv-live", every).await;
    let gone = FakeAgent::start(&c.addrs[&followers[0]], "srv-gone", every).await;
    live.wait_acks(2, Duration::from_secs(10)).await;
    gone.wait_acks(2, Duration::from_secs(10)).await;
    c.faults
        .isolate_at_controller_write(leader, &followers, "servers_down");
    drop(gone);
    let node = &c.nodes[&leader].node;
    let status = |name: &str| node.read(|st| st.servers.get(name).map(|s| s.status));
    // srv-gone's lease runs out; the declaration starts, and the leader is cut off.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.faults.is_cut(leader, followers[0]) {
        assert!(
            Instant::now() < deadline,
            "the controller did not start declaring srv-gone down within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cut_at = Instant::now();
    // The write cannot commit; the controller, not stuck on it, sees the quorum gone
    // (the bound is one lease, the quorum counts as lost after the maximum election
    // timeout).
    let deadline = cut_at + Duration::from_secs(5);
    while !node.manager.without_quorum() {
        assert!(
            Instant::now() < deadline,
            "5 s after losing its quorum during a controller write, the leader still \
             does not count itself without one"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The cut outlasts lease + grace of srv-live's last renewal the leader saw.
    while cut_at.elapsed() < Duration::from_millis(2 * LEASE_MS) {
        assert!(
            node.is_leader(),
            "node {leader} lost leadership while cut off"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status("srv-gone"),
        Some(baton_core::ServerStatus::Up),
        "committed without a quorum"
    );
    // The quorum returns (to the same leader): the clocks restart, srv-live renews in
    // time and stays up, and the dead server is declared down as it should be.
    c.faults.heal();
    let healed = Instant::now();
    let deadline = healed + Duration::from_secs(10);
    loop {
        assert_eq!(
            status("srv-live"),
            Some(baton_core::ServerStatus::Up),
            "srv-live, whose agent kept renewing through node {}, was declared down \
             {:?} after the quorum returned",
            followers[0],
            healed.elapsed()
        );
        let gone_down = status("srv-gone") != Some(baton_core::ServerStatus::Up);
        if gone_down
            && !node.manager.without_quorum()
            && healed.elapsed() > Duration::from_millis(2 * LEASE_MS)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "10 s after the quorum returned: srv-gone down {gone_down}, leader without a \
             quorum {}",
            node.manager.without_quorum()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        node.is_leader(),
        "the leader changed: the test needs the same one"
    );
    drop(live);
    c.shutdown().await;
}

/// A cut-off leader's packets are dropped, so a follower's renewals in flight to it get
/// no answer at all. The follower gives them up as soon as it sees the leader change,
/// not when the batch times out a third of a lease later: its agents would otherwise go
/// that much longer without an acknowledgement after every leader partition (up to
/// 667 ms more at a 2 s lease). Here the lease is 30 s, so the timeout would be 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewals_in_flight_to_a_cut_off_leader_are_given_up_when_it_is_replaced() {
    let c = Cluster::start_with_lease(30_000).await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let f = others(leader)[0];
    let agent = FakeAgent::start(&c.addrs[&f], "srv-f", Duration::from_millis(100)).await;
    agent.wait_acks(3, Duration::from_secs(10)).await;

    c.faults.isolate(leader, &others(leader));
    let new_leader = c
        .wait_leader(&others(leader), Duration::from_secs(10))
        .await;
    let elected = Instant::now();
    let deadline = elected + Duration::from_secs(3);
    while agent.acked_sends_after(elected).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no renewal on node {f} acknowledged within 3 s of node {new_leader}'s election \
             (a batch stuck on the cut-off leader times out only after 10 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.faults.heal();
    drop(agent);
    c.shutdown().await;
}

/// A follower that restarts with its data does not depose a healthy leader. While it was
/// down the leader's replication to it backed off (500 ms between attempts), so for a
/// while after its restart nothing reaches it (here: a cut link for 600 ms after the
/// restart); with its own election timer running it campaigned, and its higher term
/// deposed the leader. It now listens first
/// (`Node::listen_before_campaigning`): the leader and the term stay, and it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_follower_does_not_depose_the_leader() {
    let mut c = Cluster::start().await;
    let leader = c.wait_leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let f = others(leader)[0];
    let term = c.nodes[&leader].node.raft.metrics().borrow().current_term;
    for round in 0..3 {
        c.stop_node(f).await;
        // The scenario: the follower stays down long enough for the leader's
        // replication to it to fail and back off.
        tokio::time::sleep(Duration::from_millis(800)).await;
        c.start_node(f).await;
        // And after its restart the leader does not reach it for a while (on real
        // machines: the replication's back-off, then a first append that times out
        // while the connection is set up).
        c.faults.cut(leader, f);
        tokio::time::sleep(Duration::from_millis(600)).await;
        c.faults.heal();
        let applied = c.nodes[&leader].node.revision();
        // Watch for twice the node's listening window: no election, and it catches up.
        let window = Duration::from_millis(2 * c.nodes[&f].node.listen_first_ms());
        let start = Instant::now();
        let mut caught_up = false;
        while start.elapsed() < window {
            for (id, n) in &c.nodes {
                // (A node just restarted shows term 0 until its store is loaded.)
                let m = n.node.raft.metrics().borrow().clone();
                assert!(
                    m.current_term <= term,
                    "round {round}: node {id} moved to term {} (leader {:?})",
                    m.current_term,
                    m.current_leader
                );
            }
            caught_up |= c.nodes[&f].node.revision() >= applied;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(caught_up, "round {round}: node {f} did not catch up");
        assert!(c.nodes[&leader].node.is_leader());
        assert_eq!(c.nodes[&f].node.raft.metrics().borrow().current_term, term);
    }
    c.shutdown().await;
}
