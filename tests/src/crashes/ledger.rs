//! Writers and what they were told: every write sent and its outcome, and the
//! read-backs that check no acknowledged write was lost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use baton_client::v1;

use super::common::{add_server, client};

/// What the writers sent and what they were told.
#[derive(Default, Debug)]
pub struct Ledger {
    /// Every name sent (whatever came of it), recorded before sending.
    pub attempted: BTreeSet<String>,
    /// Acknowledged writes: name and the revision the directory gave it.
    pub acked: BTreeMap<String, u64>,
    /// Refused as `ALREADY_EXISTS` on the client's own retry: an earlier attempt committed,
    /// so these must be present too.
    pub confirmed: BTreeSet<String>,
    /// The client gave up (no quorum within its budget): may or may not be present.
    pub unknown: BTreeSet<String>,
    /// Failed without a reason from the directory (e.g. `transport error`: a follower's
    /// forward to a leader that died): outcome unknown too. Count and a few samples.
    pub unexplained: usize,
    pub unexplained_samples: Vec<String>,
    /// Any other refusal (none expected).
    pub refused: Vec<String>,
    /// The highest acknowledged revision.
    pub max_revision: u64,
}

impl Ledger {
    pub(crate) fn record(
        &mut self,
        name: String,
        result: Result<v1::WriteReply, baton_client::ClientError>,
    ) {
        match result {
            Ok(reply) => {
                self.max_revision = self.max_revision.max(reply.revision);
                self.acked.insert(name, reply.revision);
            }
            Err(e) if e.reason() == Some("ALREADY_EXISTS") => {
                self.confirmed.insert(name);
            }
            Err(e) if e.is_unavailable() => {
                self.unknown.insert(name);
            }
            Err(e) if e.reason().is_none() => {
                self.unexplained += 1;
                if self.unexplained_samples.len() < 3 {
                    self.unexplained_samples.push(format!("{name}: {e}"));
                }
                self.unknown.insert(name);
            }
            Err(e) => self.refused.push(format!("{name}: {e}")),
        }
    }
}

pub(crate) type SharedLedger = Arc<Mutex<Ledger>>;

/// Writers running on a runtime until stopped.
pub(crate) struct Writers {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// `n` writers sharing `rate` writes per second (0: as fast as acknowledged).
    pub(crate) fn start(
        rt: &tokio::runtime::Runtime,
        addrs: Vec<String>,
        n: usize,
        rate: f64,
        prefix: &str,
        ledger: &SharedLedger,
    ) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let c = client(addrs, Duration::from_secs(10));
        let tasks = (0..n)
            .map(|w| {
                let c = c.clone();
                let stop = stop.clone();
                let ledger = ledger.clone();
                let prefix = format!("{prefix}{w}-");
                let every = (rate > 0.0).then(|| Duration::from_secs_f64(n as f64 / rate));
                rt.spawn(async move {
                    let mut seq = 0u64;
                    let mut next = tokio::time::Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(every) = every {
                            tokio::time::sleep_until(next).await;
                            next = (next + every).max(tokio::time::Instant::now());
                        }
                        seq += 1;
                        let name = format!("{prefix}{seq}");
                        ledger.lock().unwrap().attempted.insert(name.clone());
                        let r = c.apply(add_server(&name)).await;
                        ledger.lock().unwrap().record(name, r);
                    }
                })
            })
            .collect();
        Writers { stop, tasks }
    }

    pub(crate) fn stop(self, rt: &tokio::runtime::Runtime) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = rt.block_on(t);
        }
    }
}

/// One write through `addrs`, recorded; returns its revision when acknowledged.
pub(crate) fn write_one(
    rt: &tokio::runtime::Runtime,
    addrs: Vec<String>,
    name: &str,
    ledger: &SharedLedger,
) -> Result<u64> {
    let c = client(addrs, Duration::from_secs(10));
    ledger.lock().unwrap().attempted.insert(name.to_string());
    let r = rt.block_on(c.apply(add_server(name)));
    let out = match &r {
        Ok(reply) => Ok(reply.revision),
        Err(e) => Err(anyhow!("write {name} failed: {e}")),
    };
    ledger.lock().unwrap().record(name.to_string(), r);
    out
}

/// What one read-back found.
#[derive(Debug, Default)]
pub(crate) struct Readback {
    pub(crate) revision: u64,
    pub(crate) names: BTreeSet<String>,
}

/// Reads every server linearizably through `addrs` (retried for up to `limit`).
pub(crate) fn read_all(
    rt: &tokio::runtime::Runtime,
    addrs: Vec<String>,
    limit: Duration,
) -> Result<Readback> {
    let c = client(addrs, Duration::from_secs(10));
    let deadline = Instant::now() + limit;
    loop {
        match rt.block_on(c.list_servers(false)) {
            Ok(list) => {
                return Ok(Readback {
                    revision: list.revision,
                    names: list.servers.into_iter().map(|s| s.name).collect(),
                });
            }
            Err(e) if Instant::now() >= deadline => bail!("linearizable read failed: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Reads node `addr`'s local copy (`--stale`).
pub(crate) fn read_stale(rt: &tokio::runtime::Runtime, addr: &str) -> Option<Readback> {
    let c = client(vec![addr.to_string()], Duration::from_secs(2));
    let list = rt.block_on(c.list_servers(true)).ok()?;
    Some(Readback {
        revision: list.revision,
        names: list.servers.into_iter().map(|s| s.name).collect(),
    })
}

/// Reads everything back linearizably and checks it against the ledger: every
/// acknowledged (or confirmed) write present, nothing present that was never sent, and a
/// revision no older than the newest acknowledgement. Returns the lost names (empty when
/// all is well) and the read.
pub(crate) fn check_ledger(
    rt: &tokio::runtime::Runtime,
    addrs: Vec<String>,
    ledger: &SharedLedger,
    prefix: &str,
) -> Result<(Vec<String>, Readback)> {
    let (acked, confirmed, max_rev) = {
        let l = ledger.lock().unwrap();
        (l.acked.clone(), l.confirmed.clone(), l.max_revision)
    };
    let read = read_all(rt, addrs, Duration::from_secs(60))?;
    let attempted = ledger.lock().unwrap().attempted.clone();
    let mut lost: Vec<String> = acked
        .iter()
        .filter(|(n, _)| !read.names.contains(*n))
        .map(|(n, r)| format!("{n} (acknowledged at revision {r})"))
        .collect();
    lost.extend(
        confirmed
            .iter()
            .filter(|n| !read.names.contains(*n))
            .map(|n| format!("{n} (confirmed by ALREADY_EXISTS)")),
    );
    let phantom: Vec<&String> = read
        .names
        .iter()
        .filter(|n| n.starts_with(prefix) && !attempted.contains(*n))
        .collect();
    if !phantom.is_empty() {
        bail!("the directory holds servers nobody wrote: {phantom:?}");
    }
    if read.revision < max_rev {
        bail!(
            "a linearizable read at revision {} is older than the acknowledged revision {max_rev}",
            read.revision
        );
    }
    Ok((lost, read))
}
