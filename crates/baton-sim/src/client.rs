//! A simulated admin client: creates roles through the real `Directory/Apply` API,
//! records which creations were acknowledged, and reads them all back (linearizable
//! `ListRoles`) after the faults healed. It uses the generated gRPC client directly,
//! rotating through the nodes itself (baton-client picks nodes with an unseeded RNG).

use std::collections::BTreeSet;
use std::time::Duration;

use baton_proto::v1 as pb;
use baton_proto::v1::directory_client::DirectoryClient;

use crate::agent::KIND;
use crate::checker::{Shared, lock, now_ms};
use crate::net;
use crate::rng::Prng;

/// The simulated wall clock at the start of a run (turmoil's epoch), in Unix ms.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

pub struct ClientOpts {
    pub name: String,
    /// 1, 2, ...: makes this client's register values unique.
    pub index: u64,
    pub nodes: Vec<String>,
    pub agents: Vec<String>,
    pub seed: u64,
    /// Writes from this time (simulated ms) ...
    pub start_ms: u64,
    /// ... until this one; read back after `read_ms`.
    pub stop_ms: u64,
    pub read_ms: u64,
    /// Change the cluster's lease now and then (longer and shorter), while agents hold
    /// acknowledgements of the previous one.
    pub lease_changes: bool,
}

/// The leases a client cycles through when it changes the cluster's lease.
const LEASES_MS: [u64; 3] = [1_000, 2_000, 1_500];

async fn sleep_until_ms(t: u64) {
    let now = now_ms();
    if t > now {
        tokio::time::sleep(Duration::from_millis(t - now)).await;
    }
}

/// Create `role`; `true` when acknowledged (or found to exist on a retry).
async fn create(o: &ClientOpts, rng: &mut Prng, role: &str, servers: Vec<String>) -> bool {
    let cmd = pb::Command {
        request_id: String::new(),
        command: Some(pb::command::Command::CreateRole(pb::CreateRole {
            name: role.to_string(),
            kind: KIND.to_string(),
            servers,
            failback: false,
            failback_delay_ms: 0,
            database: None,
        })),
    };
    let first = rng.below(o.nodes.len() as u64) as usize;
    for (attempt, node) in (first..first + 8).enumerate() {
        let mut c = DirectoryClient::new(net::channel(&o.nodes[node % o.nodes.len()]));
        let mut req = tonic::Request::new(cmd.clone());
        req.set_timeout(Duration::from_millis(1500));
        match c.apply(req).await {
            Ok(_) => return true,
            Err(s) if s.code() == tonic::Code::AlreadyExists && attempt > 0 => return true,
            Err(s) if s.code() == tonic::Code::AlreadyExists => return false,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100 + rng.below(200))).await;
        if now_ms() > o.stop_ms {
            return false;
        }
    }
    false
}

/// Roles every client also uses as registers (their failback delay), see [`crate::linear`].
pub const REGISTERS: [&str; 2] = ["reg-0", "reg-1"];

/// Make sure the register role exists (created by whichever client gets there first).
async fn ensure_register(o: &ClientOpts, rng: &mut Prng, role: &str) -> bool {
    while now_ms() < o.stop_ms {
        let cmd = pb::Command {
            request_id: String::new(),
            command: Some(pb::command::Command::CreateRole(pb::CreateRole {
                name: role.to_string(),
                kind: KIND.to_string(),
                servers: o.agents.clone(),
                failback: false,
                failback_delay_ms: 0,
                database: None,
            })),
        };
        let node = &o.nodes[rng.below(o.nodes.len() as u64) as usize];
        let mut req = tonic::Request::new(cmd);
        req.set_timeout(Duration::from_millis(1500));
        match DirectoryClient::new(net::channel(node)).apply(req).await {
            Ok(_) => return true,
            Err(s) if s.code() == tonic::Code::AlreadyExists => return true,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    false
}

/// `cluster set --lease`, through node `index`'s choice of node; traced, not checked
/// here: what it must not break is single active (the checker) and liveness.
async fn set_lease(o: &ClientOpts, checker: &Shared, lease_ms: u64) {
    let node = &o.nodes[(now_ms() % o.nodes.len() as u64) as usize];
    let mut c = DirectoryClient::new(net::channel(node));
    let cmd = pb::Command {
        request_id: String::new(),
        command: Some(pb::command::Command::SetLease(pb::SetLease {
            lease_ms,
            grace_ms: 0,
        })),
    };
    let mut req = tonic::Request::new(cmd);
    req.set_timeout(Duration::from_millis(1500));
    let r = c.apply(req).await;
    lock(checker).event(
        now_ms(),
        format!(
            "{} set the lease to {lease_ms} ms: {}",
            o.name,
            match r {
                Ok(w) => w.into_inner().summary,
                Err(s) => s.message().to_string(),
            }
        ),
    );
}

/// One register operation, recorded with its invocation and completion times.
async fn register_op(o: &ClientOpts, rng: &mut Prng, checker: &Shared, value: &mut u64) {
    let role = REGISTERS[rng.below(REGISTERS.len() as u64) as usize];
    let node = &o.nodes[rng.below(o.nodes.len() as u64) as usize];
    let mut c = DirectoryClient::new(net::channel(node));
    let invoke_ms = now_ms();
    let op = if rng.chance(50) {
        *value += 1;
        let v = *value;
        let cmd = pb::Command {
            request_id: String::new(),
            command: Some(pb::command::Command::SetRole(pb::SetRole {
                role: role.to_string(),
                failback: None,
                failback_delay_ms: Some(v),
                database: None,
            })),
        };
        let mut req = tonic::Request::new(cmd);
        req.set_timeout(Duration::from_millis(1500));
        let done = c.apply(req).await.is_ok();
        Some(crate::linear::Op {
            client: o.name.clone(),
            kind: crate::linear::Kind::Write(v),
            invoke_ms,
            complete_ms: done.then(now_ms),
        })
    } else {
        let mut req = tonic::Request::new(pb::GetRoleRequest {
            name: role.to_string(),
            read: None,
        });
        req.set_timeout(Duration::from_millis(1500));
        c.get_role(req).await.ok().map(|r| crate::linear::Op {
            client: o.name.clone(),
            kind: crate::linear::Kind::Read(r.into_inner().failback_delay_ms),
            invoke_ms,
            complete_ms: Some(now_ms()),
        })
    };
    if let Some(op) = op {
        lock(checker)
            .registers
            .entry(role.to_string())
            .or_default()
            .push(op);
    }
}

/// Every role name, by a linearizable read from any node that can serve it.
async fn read_all(o: &ClientOpts) -> Option<BTreeSet<String>> {
    for attempt in 0..30 {
        let mut c = DirectoryClient::new(net::channel(&o.nodes[attempt % o.nodes.len()]));
        let mut req = tonic::Request::new(pb::ListRequest { read: None });
        req.set_timeout(Duration::from_millis(1000));
        if let Ok(r) = c.list_roles(req).await {
            return Some(r.into_inner().roles.into_iter().map(|r| r.name).collect());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The directory's assignment history (linearizable read), oldest first.
async fn read_history(o: &ClientOpts) -> Option<Vec<pb::Event>> {
    for attempt in 0..30 {
        let mut c = DirectoryClient::new(net::channel(&o.nodes[attempt % o.nodes.len()]));
        let mut req = tonic::Request::new(pb::EventsRequest {
            role: None,
            read: None,
        });
        req.set_timeout(Duration::from_millis(1000));
        if let Ok(r) = c.events(req).await {
            let mut events = r.into_inner().events;
            events.sort_by_key(|e| e.revision);
            return Some(events);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Epochs in the directory's own history: an epoch given to a server belongs to that
/// server only, and each assignment of a role has a larger epoch than every earlier one.
fn check_history(events: &[pb::Event]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut last: std::collections::BTreeMap<&str, (u64, &str)> = Default::default();
    for e in events {
        let Some(to) = e.to.as_deref() else { continue };
        match last.get(e.role.as_str()) {
            Some((epoch, server)) if e.epoch < *epoch || (e.epoch == *epoch && to != *server) => {
                bad.push(format!(
                    "history: {} assigned to {to} at epoch {} (revision {}) after epoch {epoch} on {server}",
                    e.role, e.epoch, e.revision
                ));
            }
            _ => {}
        }
        last.insert(&e.role, (e.epoch, to));
    }
    bad
}

pub async fn run(o: ClientOpts, checker: Shared) -> turmoil::Result {
    let mut rng = Prng::new(o.seed);
    sleep_until_ms(o.start_ms).await;
    let mut registers = true;
    for r in REGISTERS {
        registers &= ensure_register(&o, &mut rng, r).await;
    }
    // Unique values: this client's number in the high digits.
    let mut value = o.index * 10_000_000;
    let mut i = 0;
    while now_ms() < o.stop_ms {
        let role = format!("{}-r{i}", o.name);
        i += 1;
        let mut servers = o.agents.clone();
        rng.shuffle(&mut servers);
        if create(&o, &mut rng, &role, servers.clone()).await {
            let mut c = lock(&checker);
            c.event(
                now_ms(),
                format!("{} acked create {role} {servers:?}", o.name),
            );
            c.acked.entry(o.name.clone()).or_default().insert(role);
        }
        for _ in 0..rng.between(1, 3) {
            if registers && now_ms() < o.stop_ms {
                register_op(&o, &mut rng, &checker, &mut value).await;
            }
        }
        if o.lease_changes && i % 3 == 0 {
            // No random draw: the seed's schedule stays what it was.
            set_lease(&o, &checker, LEASES_MS[(i / 3) as usize % LEASES_MS.len()]).await;
        }
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
    }
    sleep_until_ms(o.read_ms).await;
    let found = read_all(&o).await;
    let history = read_history(&o).await;
    let mut c = lock(&checker);
    let now = now_ms();
    match history {
        None => c.violation(now, format!("{} could not read the history", o.name)),
        Some(events) => {
            let assigned = events.iter().filter(|e| e.to.is_some()).count();
            c.event(
                now,
                format!(
                    "{} read {} history events, {assigned} assignments",
                    o.name,
                    events.len()
                ),
            );
            if o.index == 1 {
                for e in &events {
                    c.event(
                        now,
                        format!(
                            "  history rev {} at {} ms: {} {:?} -> {:?} @{} ({}) {}",
                            e.revision,
                            e.time_ms.saturating_sub(EPOCH_MS),
                            e.role,
                            e.from,
                            e.to,
                            e.epoch,
                            e.cause,
                            e.detail
                        ),
                    );
                }
            }
            for v in check_history(&events) {
                c.violation(now, v);
            }
        }
    }
    match found {
        None => c.violation(now, format!("{} could not read the roles back", o.name)),
        Some(found) => {
            let acked = c.acked.get(&o.name).cloned().unwrap_or_default();
            for r in acked.difference(&found) {
                c.violation(
                    now,
                    format!("acknowledged write lost: {} created {r}", o.name),
                );
            }
            c.event(
                now,
                format!(
                    "{} read back {} roles, {} acked by it",
                    o.name,
                    found.len(),
                    acked.len()
                ),
            );
            c.found_roles.extend(found);
            c.read_back.insert(o.name.clone());
        }
    }
    Ok(())
}

/// Create `role` over `servers` with failback on after `delay_ms`, from `start_ms` on,
/// retrying through every node until it exists (for a run that watches a failback).
pub async fn create_failback_role(
    nodes: Vec<String>,
    role: String,
    servers: Vec<String>,
    delay_ms: u64,
    start_ms: u64,
    checker: Shared,
) -> turmoil::Result {
    sleep_until_ms(start_ms).await;
    let cmd = pb::Command {
        request_id: String::new(),
        command: Some(pb::command::Command::CreateRole(pb::CreateRole {
            name: role.clone(),
            kind: KIND.to_string(),
            servers,
            failback: true,
            failback_delay_ms: delay_ms,
            database: None,
        })),
    };
    loop {
        for node in &nodes {
            let mut req = tonic::Request::new(cmd.clone());
            req.set_timeout(Duration::from_millis(1500));
            match DirectoryClient::new(net::channel(node)).apply(req).await {
                Ok(_) => {
                    lock(&checker).event(now_ms(), format!("created {role} (failback)"));
                    return Ok(());
                }
                Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}
