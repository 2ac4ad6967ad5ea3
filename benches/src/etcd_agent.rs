//! The common etcd failover recipe, as one process per server (`bench-driver etcd-agent`),
//! so that it can be killed with SIGKILL exactly like a Baton agent:
//!
//! - grant a lease with the TTL and keep it alive every TTL/3 (clientv3's rhythm);
//! - per role, try to create the role's key bound to the lease (a transaction on
//!   `create_revision == 0`); the winner runs the role process, with the key's create
//!   revision as its epoch;
//! - a loser watches the key from the revision it read and tries again when the key is
//!   deleted, which etcd does when the holder's lease expires;
//! - the holder stops everything when a keep-alive says the lease is gone, or when no
//!   keep-alive has been answered for a TTL (self-fencing, as clientv3's session does
//!   through its `Done()` channel).
//!
//! The role process gets the same environment as a Baton role (`BATON_ROLE`,
//! `BATON_SERVER`, `BATON_EPOCH`) and dies with the agent (PR_SET_PDEATHSIG). This runs on
//! a current-thread runtime, on the main thread, so the death signal fires exactly when
//! the process dies.

use std::collections::VecDeque;
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::etcdpb as pb;

pub struct AgentArgs {
    pub server: String,
    pub endpoints: Vec<String>,
    pub roles: Vec<String>,
    pub ttl_s: i64,
    pub run: String,
}

fn lazy(endpoint: &str) -> Result<Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(300))
            .connect_lazy(),
    )
}

struct Shared {
    channels: Vec<Channel>,
    /// Send time of the last answered keep-alive.
    last_ack: Mutex<Instant>,
}

impl Shared {
    fn ch(&self, i: usize) -> Channel {
        self.channels[i % self.channels.len()].clone()
    }
}

pub async fn run(args: AgentArgs) -> Result<()> {
    let channels = args
        .endpoints
        .iter()
        .map(|e| lazy(e))
        .collect::<Result<Vec<_>>>()?;
    let shared = Arc::new(Shared {
        channels,
        last_ack: Mutex::new(Instant::now()),
    });
    let ttl = Duration::from_secs(args.ttl_s as u64);
    // Grant the lease (any member).
    let mut at = 0usize;
    let lease = loop {
        let mut c = pb::lease_client::LeaseClient::new(shared.ch(at));
        let mut req = tonic::Request::new(pb::LeaseGrantRequest {
            ttl: args.ttl_s,
            id: 0,
        });
        req.set_timeout(Duration::from_secs(2));
        match c.lease_grant(req).await {
            Ok(r) => break r.into_inner().id,
            Err(e) => {
                eprintln!("lease grant via {at}: {e}");
                at += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    *shared.last_ack.lock().expect("lock") = Instant::now();
    eprintln!("{}: lease {lease:x}", args.server);
    tokio::spawn(keep_alive(shared.clone(), lease, ttl, at));
    for role in &args.roles {
        tokio::spawn(contend(
            shared.clone(),
            role.clone(),
            args.server.clone(),
            args.run.clone(),
            lease,
            at,
        ));
    }
    // The fence: no answered keep-alive for a TTL means the lease may be gone.
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if shared.last_ack.lock().expect("lock").elapsed() > ttl {
            eprintln!(
                "{}: lease not renewed for {ttl:?}: fencing (exit)",
                args.server
            );
            std::process::exit(3);
        }
    }
}

async fn keep_alive(shared: Arc<Shared>, lease: i64, ttl: Duration, mut at: usize) {
    loop {
        let (tx, rx) = mpsc::channel(8);
        let mut sent: VecDeque<Instant> = VecDeque::new();
        // etcd (grpc-go) sends the response headers with the first response: the first
        // request must be on its way before the call can return.
        sent.push_back(Instant::now());
        let _ = tx.try_send(pb::LeaseKeepAliveRequest { id: lease });
        let mut c = pb::lease_client::LeaseClient::new(shared.ch(at));
        let mut stream = match c.lease_keep_alive(ReceiverStream::new(rx)).await {
            Ok(s) => s.into_inner(),
            Err(_) => {
                at += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let mut ticker = tokio::time::interval(ttl / 3);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    sent.push_back(Instant::now());
                    if tx.send(pb::LeaseKeepAliveRequest { id: lease }).await.is_err() {
                        break;
                    }
                }
                m = stream.message() => match m {
                    Ok(Some(r)) => {
                        if r.ttl <= 0 {
                            eprintln!("lease {lease:x} expired: fencing (exit)");
                            std::process::exit(3);
                        }
                        if let Some(t) = sent.pop_front() {
                            *shared.last_ack.lock().expect("lock") = t;
                        }
                    }
                    _ => break,
                }
            }
        }
        at += 1;
    }
}

async fn contend(
    shared: Arc<Shared>,
    role: String,
    server: String,
    run: String,
    lease: i64,
    mut at: usize,
) {
    let key = format!("/baton-bench/roles/{role}").into_bytes();
    loop {
        match try_acquire(&shared, at, &key, &server, lease).await {
            Ok(Ok(epoch)) => {
                let mut cmd = std::process::Command::new("sh");
                let spawned = cmd
                    .arg("-c")
                    .arg(&run)
                    .env("BATON_ROLE", &role)
                    .env("BATON_SERVER", &server)
                    .env("BATON_EPOCH", epoch.to_string())
                    .stdin(std::process::Stdio::null());
                // SAFETY: only prctl between fork and exec.
                unsafe {
                    spawned.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                match spawned.spawn() {
                    Ok(child) => {
                        // Held until the agent dies or fences (exits).
                        std::mem::forget(child);
                        return;
                    }
                    Err(e) => {
                        eprintln!("{server}: cannot start role {role}: {e}");
                        std::process::exit(4);
                    }
                }
            }
            Ok(Err(rev)) => {
                // Somebody holds it: wait for the key's deletion.
                if let Err(e) = wait_deleted(&shared, &mut at, &key, rev).await {
                    eprintln!("{server}: watching {role}: {e}");
                    at += 1;
                }
            }
            Err(e) => {
                eprintln!("{server}: acquiring {role} via {at}: {e}");
                at += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// `Ok(epoch)` when acquired, `Err(revision)` of the read when somebody else holds it.
async fn try_acquire(
    shared: &Shared,
    at: usize,
    key: &[u8],
    server: &str,
    lease: i64,
) -> Result<std::result::Result<i64, i64>> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let mut c = pb::kv_client::KvClient::new(shared.ch(at));
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: key.to_vec(),
            target_union: Some(TargetUnion::CreateRevision(0)),
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.to_vec(),
                value: server.as_bytes().to_vec(),
                lease,
            })),
        }],
        failure: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })),
        }],
    };
    let mut req = tonic::Request::new(txn);
    req.set_timeout(Duration::from_secs(3));
    let r = c.txn(req).await?.into_inner();
    let rev = r.header.map_or(0, |h| h.revision);
    Ok(if r.succeeded { Ok(rev) } else { Err(rev) })
}

async fn wait_deleted(shared: &Shared, at: &mut usize, key: &[u8], rev: i64) -> Result<()> {
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.to_vec(),
                range_end: vec![],
                start_revision: rev + 1,
            },
        )),
    })
    .await?;
    let mut c = pb::watch_client::WatchClient::new(shared.ch(*at));
    let mut stream = c.watch(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(r) = stream.message().await? {
        if r.canceled {
            bail!("watch canceled: {}", r.cancel_reason);
        }
        if r.events
            .iter()
            .any(|e| e.r#type == pb::event::EventType::Delete as i32)
        {
            return Ok(());
        }
    }
    drop(tx);
    bail!("watch stream ended")
}
