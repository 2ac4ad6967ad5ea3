//! The directory cluster of a test: `n` `baton directory` processes on loopback in one
//! temporary directory, its certificates, and everything a test asks of it (the CLI,
//! the leader, roles, servers, sessions).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::{
    CLI_TIMEOUT, CliOutput, Proc, free_port, kill_marked, run_baton, sessions_opened, tail,
    wait_until,
};

/// Options of the directory nodes of a [`Cluster`].
#[derive(Clone, Debug, Default)]
pub struct ClusterOpts {
    /// `--lease` (default: the binary's, 2 s).
    pub lease: Option<Duration>,
    /// `--grace` (default: the binary's, what clock-rate error needs over the lease, at
    /// least 50 ms).
    pub grace: Option<Duration>,
    /// `--role-cooldown`.
    pub role_cooldown: Option<Duration>,
    /// Any other flags for every node.
    pub extra: Vec<String>,
    /// Flags for one node only, by id (after the others, so they win).
    pub per_node: BTreeMap<u64, Vec<String>>,
    /// Plain text (`--insecure`) instead of the default mutual TLS.
    pub insecure: bool,
    /// The `baton` binary the nodes run (default: [`crate::baton_bin`]; the benches
    /// pass a release build).
    pub bin: Option<PathBuf>,
    /// Environment variables for every node on top of the harness's (the benches quiet
    /// the nodes' logs with `RUST_LOG=warn`).
    pub env: Vec<(String, String)>,
    /// Run node `id` with the group id `gid_base + id` (the user stays the harness's):
    /// a benchmark cuts one node off the network by its group (iptables' owner match).
    pub gid_base: Option<u32>,
}

impl ClusterOpts {
    pub fn lease(lease: Duration) -> Self {
        ClusterOpts {
            lease: Some(lease),
            ..Default::default()
        }
    }
}

/// The certificates of one test cluster: a CA of its own in `DIR/tls`, and a
/// certificate per process, made the first time it is asked for.
pub struct Certs {
    pub dir: PathBuf,
    ca: baton_tls::make::Issued,
}

impl Certs {
    pub fn new(dir: PathBuf) -> Certs {
        use baton_tls::make;
        let ca = make::make_ca("Baton test CA", make::Validity::for_(make::CA_VALID_FOR))
            .expect("make a CA");
        make::write(&dir, "ca", &ca, true).expect("write the CA");
        Certs { dir, ca }
    }

    /// `--ca --cert --key` for `subject`, issued now if it was not yet.
    pub fn args(&self, subject: baton_tls::make::Subject) -> Vec<String> {
        use baton_tls::make;
        let stem = subject.file_stem();
        let cert = self.dir.join(format!("{stem}.pem"));
        if !cert.exists() {
            let issued = make::issue(
                &self.ca.cert_pem,
                &self.ca.key_pem,
                &subject,
                make::Validity::for_(make::LEAF_VALID_FOR),
            )
            .expect("issue a certificate");
            make::write(&self.dir, &stem, &issued, true).expect("write a certificate");
        }
        vec![
            "--ca".into(),
            self.dir.join("ca.pem").display().to_string(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            self.dir.join(format!("{stem}.key")).display().to_string(),
        ]
    }

    /// The admin client certificate the harness's CLI calls use.
    pub fn admin_args(&self) -> Vec<String> {
        self.args(baton_tls::make::Subject::Client {
            name: "e2e".into(),
            permission: baton_tls::Permission::Admin,
            server: None,
        })
    }
}

fn dur_arg(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// One directory node.
pub struct DirNode {
    pub id: u64,
    /// The client port.
    pub addr: String,
    /// The peer port (Raft, node to node).
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub proc: Proc,
}

impl DirNode {
    /// Starts `baton directory --id ID --listen ADDR --data-dir DIR/nodeID` with the
    /// options of `opts` and the TLS flags `tls` (certificate flags or `--insecure`);
    /// `membership` adds `--peers ...` or `--join ...`. Its log is `DIR/nodeID.log`.
    fn spawn(
        dir: &Path,
        opts: &ClusterOpts,
        tls: Vec<String>,
        id: u64,
        addr: String,
        peer_addr: String,
        membership: impl FnOnce(&mut Vec<String>),
    ) -> std::io::Result<DirNode> {
        let data_dir = dir.join(format!("node{id}"));
        let mut args = vec![
            "directory".to_string(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            addr.clone(),
            "--peer-listen".into(),
            peer_addr.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        args.extend(tls);
        membership(&mut args);
        if let Some(l) = opts.lease {
            args.extend(["--lease".into(), dur_arg(l)]);
        }
        if let Some(g) = opts.grace {
            args.extend(["--grace".into(), dur_arg(g)]);
        }
        if let Some(c) = opts.role_cooldown {
            args.extend(["--role-cooldown".into(), dur_arg(c)]);
        }
        args.extend(opts.extra.iter().cloned());
        args.extend(opts.per_node.get(&id).into_iter().flatten().cloned());
        let bin = opts.bin.as_deref().unwrap_or_else(|| crate::baton_bin());
        let proc = Proc::try_spawn_as(
            bin,
            &format!("node {id}"),
            args,
            opts.env.clone(),
            dir.join(format!("node{id}.log")),
            opts.gid_base.map(|g| g + id as u32),
        )?;
        Ok(DirNode {
            id,
            addr,
            peer_addr,
            data_dir,
            proc,
        })
    }
}

/// The TLS flags of node `id`: its certificate's, or `--insecure` without certificates.
fn node_tls(certs: Option<&Certs>, id: u64) -> Vec<String> {
    match certs {
        Some(c) => c.args(baton_tls::make::Subject::Node { id, hosts: vec![] }),
        None => vec!["--insecure".into()],
    }
}

/// Starts `n` directory nodes with ids 1..=n in `dir`, on fresh loopback ports, all with
/// the same `--peers`, the options of `opts` and the TLS flags `tls(id)`; does not wait
/// for anything. The one place a test or a benchmark starts a cluster's nodes.
pub fn launch(
    dir: &Path,
    n: usize,
    opts: &ClusterOpts,
    tls: impl Fn(u64) -> Vec<String>,
) -> std::io::Result<Vec<DirNode>> {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    ports
        .iter()
        .enumerate()
        .map(|(i, (port, peer))| {
            let id = i as u64 + 1;
            DirNode::spawn(
                dir,
                opts,
                tls(id),
                id,
                format!("127.0.0.1:{port}"),
                format!("127.0.0.1:{peer}"),
                |args| {
                    args.extend(["--peers".into(), peers.clone()]);
                },
            )
        })
        .collect()
}

/// n `baton directory` processes on loopback, in one temporary directory.
pub struct Cluster {
    // Field order matters for drop: processes before the directory they live in.
    nodes: Vec<DirNode>,
    opts: ClusterOpts,
    /// None with `insecure`.
    certs: Option<Certs>,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Cluster {
    /// Starts `n` nodes with ids 1..=n and the same `--peers`, and waits until they have
    /// a leader that sees every node.
    pub fn start(n: usize, opts: ClusterOpts) -> Cluster {
        let c = Cluster::spawn(n, opts);
        c.wait_ready(Duration::from_secs(30));
        c
    }

    /// Starts the nodes without waiting for anything.
    pub fn spawn(n: usize, opts: ClusterOpts) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("baton-e2e-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().to_path_buf();
        let certs = (!opts.insecure).then(|| Certs::new(path.join("tls")));
        let nodes = launch(&path, n, &opts, |id| node_tls(certs.as_ref(), id))
            .unwrap_or_else(|e| panic!("cannot start the directory nodes: {e}"));
        Cluster {
            nodes,
            opts,
            certs,
            dir: Some(dir),
            path,
        }
    }

    /// The temporary directory (journals and logs go here; its path marks every process
    /// of this cluster).
    pub fn dir(&self) -> &Path {
        &self.path
    }

    pub fn opts(&self) -> &ClusterOpts {
        &self.opts
    }

    /// The cluster's certificates (None when it runs in plain text).
    pub fn certs(&self) -> Option<&Certs> {
        self.certs.as_ref()
    }

    /// The TLS flags of a process with `subject`'s certificate, or `--insecure`.
    pub fn tls_args(&self, subject: baton_tls::make::Subject) -> Vec<String> {
        match &self.certs {
            Some(c) => c.args(subject),
            None => vec!["--insecure".into()],
        }
    }

    /// The TLS flags of the harness's admin client, or `--insecure`.
    pub fn admin_tls_args(&self) -> Vec<String> {
        match &self.certs {
            Some(c) => c.admin_args(),
            None => vec!["--insecure".into()],
        }
    }

    /// The lease the nodes run with.
    pub fn lease(&self) -> Duration {
        self.opts.lease.unwrap_or(Duration::from_secs(3))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn node(&self, id: u64) -> &DirNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut DirNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Every node's address, comma-separated (for `--directory`).
    pub fn addrs(&self) -> String {
        self.addrs_of(&self.ids())
    }

    pub fn addrs_of(&self, ids: &[u64]) -> String {
        ids.iter()
            .map(|id| self.node(*id).addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn kill9(&mut self, id: u64) {
        self.node_mut(id).proc.kill9();
    }

    /// SIGTERM; returns whether it exited within 10 s (else it was SIGKILLed).
    pub fn stop(&mut self, id: u64) -> bool {
        self.node_mut(id).proc.stop(Duration::from_secs(10))
    }

    pub fn restart(&mut self, id: u64) {
        self.node_mut(id).proc.restart();
    }

    /// Starts a new node `id` on a fresh port with `--join` through node `via` (any
    /// running member) and the cluster's options, and adds it to this handle (so `ids()`,
    /// `addrs()` and `cli()` include it from now on). Does not wait: the node asks the
    /// cluster to add it, which it does as a learner, then as a voter once caught up.
    pub fn join(&mut self, id: u64, via: u64) -> &DirNode {
        assert!(
            self.nodes.iter().all(|n| n.id != id),
            "node {id} is already in this cluster"
        );
        let join = self.node(via).addr.clone();
        let node = DirNode::spawn(
            &self.path,
            &self.opts,
            node_tls(self.certs.as_ref(), id),
            id,
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
            |args| args.extend(["--join".into(), join]),
        )
        .unwrap_or_else(|e| panic!("cannot start node {id}: {e}"));
        self.nodes.push(node);
        self.node(id)
    }

    /// Kills node `id` (SIGKILL) and drops it from this handle, e.g. after `cluster
    /// remove-node`: `ids()`, `addrs()`, `cli()` and `wait_ready` no longer include it.
    /// Its data directory and log stay.
    pub fn forget(&mut self, id: u64) {
        let pos = self
            .nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"));
        let mut node = self.nodes.remove(pos);
        node.proc.kill9();
    }

    /// Node `id`'s exit code once it has exited by itself (see [`Proc::exit_code`]).
    pub fn exit_code(&mut self, id: u64) -> Option<i32> {
        self.node_mut(id).proc.exit_code()
    }

    pub fn sigstop(&self, id: u64) {
        self.node(id).proc.sigstop();
    }

    pub fn sigcont(&self, id: u64) {
        self.node(id).proc.sigcont();
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        self.node_mut(id).proc.is_running()
    }

    /// `baton --directory ALL ARGS -o json`.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_at(&self.ids(), args)
    }

    /// `baton --directory ADDRS(ids) ARGS -o json`.
    pub fn cli_at(&self, ids: &[u64], args: &[&str]) -> CliOutput {
        self.cli_at_timeout(ids, args, CLI_TIMEOUT)
    }

    pub fn cli_at_timeout(&self, ids: &[u64], args: &[&str], timeout: Duration) -> CliOutput {
        let mut full = vec!["--directory".to_string(), self.addrs_of(ids)];
        full.extend(self.admin_tls_args());
        full.extend(args.iter().map(|s| s.to_string()));
        full.extend(["-o".to_string(), "json".to_string()]);
        run_baton(&full, timeout)
    }

    /// A successful command's JSON; panics otherwise.
    pub fn json(&self, args: &[&str]) -> Value {
        self.cli(args).json()
    }

    /// `cluster status -o json` through the given nodes.
    pub fn status_at(&self, ids: &[u64]) -> Option<Value> {
        self.cli_at_timeout(ids, &["cluster", "status"], Duration::from_secs(15))
            .try_json()
            .ok()
    }

    /// The current leader, as `cluster status` reports it, if any.
    pub fn leader(&self) -> Option<u64> {
        self.leader_among(&self.ids())
    }

    /// The leader as seen through the given nodes.
    pub fn leader_among(&self, ids: &[u64]) -> Option<u64> {
        self.status_at(ids)?.get("leader")?.as_u64()
    }

    /// Waits until some node leads and every node answers and has settled (is neither
    /// "unreachable" nor still a "candidate": a node that campaigned while it was still
    /// checking its peers follows only once the leader reaches it).
    pub fn wait_ready(&self, limit: Duration) -> u64 {
        let ids = self.ids();
        wait_until(limit, "a leader that every node follows", || {
            let st = self.status_at(&ids)?;
            let leader = st.get("leader")?.as_u64()?;
            let nodes = st.get("nodes")?.as_array()?;
            // A voter counts once it leads or follows: a node that has not heard from the
            // leader yet (a loaded host, a replication backoff) reports itself a learner
            // at term 0, and a test that starts then finds it outside the cluster.
            let all = nodes.len() == ids.len()
                && nodes.iter().all(|n| {
                    let state = n.get("state").and_then(Value::as_str);
                    if n.get("voter").and_then(Value::as_bool) == Some(true) {
                        matches!(state, Some("leader" | "follower"))
                    } else {
                        !matches!(state, Some("unreachable" | "candidate"))
                    }
                });
            all.then_some(leader)
        })
    }

    /// Waits for a leader among the given (running) nodes, and returns it.
    pub fn wait_leader_among(&self, ids: &[u64], limit: Duration) -> u64 {
        wait_until(limit, "a leader", || {
            let l = self.leader_among(ids)?;
            ids.contains(&l).then_some(l)
        })
    }

    /// One node's entry of a `cluster status` reply.
    pub fn node_status(status: &Value, id: u64) -> Option<&Value> {
        status
            .get("nodes")?
            .as_array()?
            .iter()
            .find(|n| n.get("id").and_then(Value::as_u64) == Some(id))
    }

    /// Agent sessions per node id, from a `cluster status` reply.
    pub fn sessions_per_node(status: &Value) -> BTreeMap<u64, u64> {
        status
            .get("nodes")
            .and_then(Value::as_array)
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| Some((n["id"].as_u64()?, n["sessions"].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `cluster status` (through `via`) shows node `id` as a caught-up
    /// follower: a voter in state `follower` whose `last_applied` is at least `applied`
    /// and whose replication lag, when the leader reports it, is 0. Returns its entry.
    pub fn wait_follower(&self, via: &[u64], id: u64, applied: u64, limit: Duration) -> Value {
        wait_until(
            limit,
            &format!("node {id} to be a caught-up follower at {applied}"),
            || {
                let st = self.status_at(via)?;
                let n = Cluster::node_status(&st, id)?.clone();
                let ok = n["voter"] == true
                    && n["state"] == "follower"
                    && n["last_applied"].as_u64()? >= applied
                    && n["lag"].as_u64().is_none_or(|l| l == 0);
                ok.then_some(n)
            },
        )
    }

    /// `role show R -o json`, linearizable.
    pub fn role(&self, role: &str) -> Option<Value> {
        self.cli(&["role", "show", role]).try_json().ok()
    }

    /// The role's active server and epoch, when it has one.
    pub fn active(&self, role: &str) -> Option<(String, u64)> {
        let r = self.role(role)?;
        let s = r.get("active_server")?.as_str()?.to_string();
        let e = r.get("epoch")?.as_u64()?;
        Some((s, e))
    }

    /// `events -o json` (linearizable).
    pub fn events(&self) -> Vec<Value> {
        self.json(&["events"])
            .as_array()
            .cloned()
            .expect("events is an array")
    }

    /// A journal file in this cluster's directory.
    pub fn journal(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Prints every node's log tail (for a failure diagnosis that is not a panic).
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            eprintln!("----- node {} -----\n{}", n.id, tail(n.proc.log(), 60));
        }
    }

    /// Every session `server`'s agent opened with a node of this handle, as (log time,
    /// node id), oldest first (from the nodes' logs).
    pub fn session_history(&self, server: &str) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .nodes
            .iter()
            .flat_map(|n| {
                sessions_opened(n.proc.log())
                    .into_iter()
                    .filter(|(_, s)| s == server)
                    .map(|(t, _)| (t, n.id))
            })
            .collect();
        v.sort();
        v
    }

    /// The node `server`'s agent last opened a session with, per the nodes' logs.
    pub fn session_node(&self, server: &str) -> Option<u64> {
        self.session_history(server).pop().map(|(_, id)| id)
    }

    /// `server list -o json` (linearizable), as an array.
    pub fn servers(&self) -> Option<Vec<Value>> {
        self.cli(&["server", "list"])
            .try_json()
            .ok()?
            .as_array()
            .cloned()
    }

    /// One server's entry of `server list`.
    pub fn server(&self, name: &str) -> Option<Value> {
        self.servers()?
            .into_iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(name))
    }

    /// Waits until every named server is `up` in `server list`.
    pub fn wait_servers_up(&self, names: &[&str], limit: Duration) {
        wait_until(limit, &format!("servers {names:?} up"), || {
            let list = self.servers()?;
            names
                .iter()
                .all(|n| {
                    list.iter().any(|s| {
                        s.get("name").and_then(Value::as_str) == Some(n)
                            && s.get("status").and_then(Value::as_str) == Some("up")
                    })
                })
                .then_some(())
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.proc.sigcont();
        }
        // Nodes first (their Drop prints logs on panic), then everything that names our
        // directory: agents not yet dropped, role processes in their own groups.
        self.nodes.clear();
        kill_marked(&self.path.display().to_string());
        if std::env::var_os("BATON_E2E_KEEP").is_some()
            && let Some(d) = self.dir.take()
        {
            eprintln!("keeping {}", d.keep().display());
        }
    }
}
