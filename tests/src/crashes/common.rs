//! Small tools the campaigns share: the runtime and clients, node state, figures.

use std::time::Duration;

use baton_client::{Client, ClientConfig, v1};

use crate::Cluster;

/// A multi-threaded runtime for the in-process clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A client for `addrs` whose calls give up after `budget`.
pub(crate) fn client(addrs: Vec<String>, budget: Duration) -> Client {
    Client::with_config(
        addrs,
        ClientConfig {
            connect_timeout: Duration::from_millis(500),
            rpc_timeout: budget.min(Duration::from_secs(5)),
            retry_budget: budget,
            ..ClientConfig::default()
        },
    )
    .expect("valid addresses")
}

pub(crate) fn addrs_of(c: &Cluster, ids: &[u64]) -> Vec<String> {
    ids.iter().map(|id| c.node(*id).addr.clone()).collect()
}

pub(crate) fn add_server(name: &str) -> v1::Command {
    v1::Command {
        request_id: String::new(),
        command: Some(v1::command::Command::AddServer(v1::AddServer {
            name: name.to_string(),
            main: false,
            kinds: Vec::new(),
        })),
    }
}

/// The state and last applied index node `id` reports (through its own address, so the
/// node must be serving).
pub(crate) fn node_state(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    id: u64,
) -> Option<(String, u64)> {
    let c = client(vec![addr.to_string()], Duration::from_secs(2));
    let st = rt.block_on(c.cluster_status_any()).ok()?;
    let n = st.nodes.into_iter().find(|n| n.id == id)?;
    Some((n.state, n.last_applied))
}

/// (p50, p99, max) in milliseconds, nearest rank (0s for none).
pub(crate) fn percentiles(v: &[Duration]) -> (u128, u128, u128) {
    let ms: Vec<f64> = v.iter().map(|d| d.as_millis() as f64).collect();
    let at = |p: f64| crate::stats::percentile(&ms, p).unwrap_or(0.0) as u128;
    (at(50.0), at(99.0), at(100.0))
}

pub(crate) fn secs(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
