//! The one Baton client, used by the CLI, the agent, tests and benches.
//!
//! It hides which directory node leads: writes, linearizable reads and membership calls
//! go to the node believed to lead, follow `UNAVAILABLE` + `baton-leader-addr` redirects
//! at once, and otherwise walk the address list with bounded, jittered backoff until an
//! overall retry budget runs out. Stale reads and watch/session channels may use any node.
//! Keeping this logic in one place means every caller fails over the same way.

mod address;
mod backoff;
mod error;

pub use address::parse_address;
pub use backoff::Backoff;
pub use baton_proto::v1;
pub use error::{ClientError, Disposition, classify, leader_hint, leader_hint_in};

use rand::RngExt;
use rand::seq::SliceRandom;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;
use v1::directory_client::DirectoryClient;

/// Timeouts and retry policy. The defaults suit an operator's CLI and an agent alike.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Longest wait for a TCP connection to one node, so a dead host costs little.
    pub connect_timeout: Duration,
    /// Longest wait for one RPC on one node; a hung node is then treated like a dead one.
    pub rpc_timeout: Duration,
    /// Overall time one call may spend retrying (all attempts and backoff together),
    /// so that no caller waits forever on a cluster without quorum.
    pub retry_budget: Duration,
    /// First backoff delay, after every address has failed once.
    pub backoff_initial: Duration,
    /// Cap of the backoff delay, so retries stay frequent enough to catch a new leader.
    pub backoff_max: Duration,
    /// HTTP/2 keep-alive ping interval on channels from [`Client::channel_to_any`], so a
    /// long-lived stream to a node that vanished (no FIN/RST) fails instead of hanging.
    pub keepalive_interval: Duration,
    /// HTTP/2 ping interval (and answer deadline) on the channels of the client's own
    /// calls, while a call is in flight (an idle channel sends none). A node cut off the
    /// network without a FIN or RST (a partitioned leader) then fails the call within
    /// about twice this, and it is retried on another node, instead of waiting out
    /// `rpc_timeout`.
    pub call_keepalive: Duration,
    /// Mutual TLS (the CA, this client's certificate and key) or plain text. The
    /// library's default is plain text; Baton's binaries refuse to start without one or
    /// the other being asked for.
    pub security: baton_tls::Security,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(1),
            rpc_timeout: Duration::from_secs(5),
            retry_budget: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(50),
            // Short: while no node leads (an election, under a second) a long pause
            // would only add to the write gap.
            backoff_max: Duration::from_millis(250),
            keepalive_interval: Duration::from_secs(2),
            // Twice this bounds how long a write waits on a leader that was cut off; a
            // busy node still answers a ping in far less (pings are answered by the
            // connection task, not behind the writes).
            call_keepalive: Duration::from_secs(1),
            security: baton_tls::Security::Insecure,
        }
    }
}

/// Where a call should go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// To the node believed to lead (writes, linearizable reads, membership).
    Leader,
    /// To any node (stale reads); starts at a random one to spread load.
    Any,
}

/// Largest `Snapshot` reply this client accepts (the directory's Raft message limit).
pub const SNAPSHOT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// At most this many redirects in a row are followed without backoff, so two nodes that
/// name each other during an election cannot make the client spin.
const MAX_IMMEDIATE_REDIRECTS: u32 = 3;

/// A handle on the directory cluster. Cheap to clone; clones share the known leader and
/// the connection cache.
#[derive(Clone)]
pub struct Client {
    /// Shared state, so clones (one per task) learn the leader from each other.
    inner: Arc<Inner>,
}

/// What all clones of a [`Client`] share.
struct Inner {
    /// The configured directory nodes in canonical `host:port` form, deduplicated, in the
    /// order given: the rotation order when looking for a node that answers.
    addrs: Vec<String>,
    /// Timeouts and retry policy.
    config: ClientConfig,
    /// The last node that served a leader-routed call or was named leader by a node:
    /// where the next leader-routed call goes first. May be outside `addrs` (a node
    /// added to the cluster later).
    leader: Mutex<Option<String>>,
    /// One lazily connecting channel per node, reused across calls (tonic reconnects
    /// a broken channel on the next call).
    channels: Mutex<HashMap<String, Channel>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &self.inner.addrs)
            .field("leader", &self.leader())
            .finish()
    }
}

impl Client {
    /// A client for these directory nodes (`127.0.0.1:7001` or `http://127.0.0.1:7001`),
    /// with the default [`ClientConfig`]. Does not connect yet.
    pub fn new(addrs: Vec<String>) -> Result<Client, ClientError> {
        Client::with_config(addrs, ClientConfig::default())
    }

    /// A client with an explicit configuration. Fails if the list is empty or an address
    /// is malformed.
    pub fn with_config(addrs: Vec<String>, config: ClientConfig) -> Result<Client, ClientError> {
        let mut canonical: Vec<String> = Vec::new();
        for a in &addrs {
            let c = parse_address(a)?;
            if !canonical.contains(&c) {
                canonical.push(c);
            }
        }
        if canonical.is_empty() {
            return Err(ClientError::InvalidAddress {
                address: String::new(),
                problem: "no directory address given".to_string(),
            });
        }
        Ok(Client {
            inner: Arc::new(Inner {
                addrs: canonical,
                config,
                leader: Mutex::new(None),
                channels: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configured node addresses, canonical and deduplicated.
    pub fn addresses(&self) -> &[String] {
        &self.inner.addrs
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The node the client currently believes leads, if any.
    pub fn leader(&self) -> Option<String> {
        self.inner.leader.lock().expect("leader lock").clone()
    }

    // ---------------------------------------------------------------------------------
    // Directory service
    // ---------------------------------------------------------------------------------

    /// Applies one command through the leader.
    ///
    /// Retry semantics: a write whose outcome is unknown (the RPC timed out, or the
    /// connection broke after the request was sent) is retried like any other failure,
    /// under one request id for all its attempts (a random one, unless `command` names
    /// its own). The directory remembers the outcome of recent ids, so if an earlier
    /// attempt did commit, the retry changes nothing and gets that attempt's answer: a
    /// `CreateRole` is not reported `ALREADY_EXISTS`, a `MoveRoleServer` is not applied
    /// twice.
    pub async fn apply(&self, mut command: v1::Command) -> Result<v1::WriteReply, ClientError> {
        if command.request_id.is_empty() {
            command.request_id = new_request_id();
        }
        self.call(Route::Leader, "apply", move |mut c| {
            let command = command.clone();
            async move { c.apply(command).await }
        })
        .await
    }

    /// One role. `stale`: read any node's local copy instead of a linearizable read.
    pub async fn get_role(&self, name: &str, stale: bool) -> Result<v1::Role, ClientError> {
        let req = v1::GetRoleRequest {
            name: name.to_string(),
            read: Some(v1::ReadOptions { stale }),
        };
        self.call(route(stale), "get_role", move |mut c| {
            let req = req.clone();
            async move { c.get_role(req).await }
        })
        .await
    }

    /// Every role, with the revision it was read at.
    pub async fn list_roles(&self, stale: bool) -> Result<v1::RoleList, ClientError> {
        let req = v1::ListRequest {
            read: Some(v1::ReadOptions { stale }),
        };
        self.call(route(stale), "list_roles", move |mut c| async move {
            c.list_roles(req).await
        })
        .await
    }

    /// The known servers not yet in the role's list.
    pub async fn candidates(&self, role: &str, stale: bool) -> Result<Vec<String>, ClientError> {
        let req = v1::GetRoleRequest {
            name: role.to_string(),
            read: Some(v1::ReadOptions { stale }),
        };
        let reply = self
            .call(route(stale), "candidates", move |mut c| {
                let req = req.clone();
                async move { c.candidates(req).await }
            })
            .await?;
        Ok(reply.servers)
    }

    /// Every known server, with the revision it was read at.
    pub async fn list_servers(&self, stale: bool) -> Result<v1::ServerList, ClientError> {
        let req = v1::ListRequest {
            read: Some(v1::ReadOptions { stale }),
        };
        self.call(route(stale), "list_servers", move |mut c| async move {
            c.list_servers(req).await
        })
        .await
    }

    /// The assignment history, optionally of one role, oldest first as the server sends it.
    pub async fn events(
        &self,
        role: Option<&str>,
        stale: bool,
    ) -> Result<Vec<v1::Event>, ClientError> {
        Ok(self.event_list(role, stale).await?.events)
    }

    /// Like [`Client::events`], with the directory revision the list was read at (0 from
    /// nodes that do not report it): a watch after that revision misses nothing.
    pub async fn event_list(
        &self,
        role: Option<&str>,
        stale: bool,
    ) -> Result<v1::EventList, ClientError> {
        let req = v1::EventsRequest {
            role: role.map(str::to_string),
            read: Some(v1::ReadOptions { stale }),
        };
        self.call(route(stale), "events", move |mut c| {
            let req = req.clone();
            async move { c.events(req).await }
        })
        .await
    }

    /// The directory cluster's membership and replication state, as the leader sees it.
    pub async fn cluster_status(&self) -> Result<v1::ClusterStatusReply, ClientError> {
        self.call(Route::Leader, "cluster_status", |mut c| async move {
            c.cluster_status(v1::ClusterStatusRequest::default()).await
        })
        .await
    }

    /// The cluster status as any reachable node sees it (useful when there is no leader).
    /// A node that prefers not to answer may still redirect to the leader.
    pub async fn cluster_status_any(&self) -> Result<v1::ClusterStatusReply, ClientError> {
        self.call(Route::Any, "cluster_status", |mut c| async move {
            c.cluster_status(v1::ClusterStatusRequest::default()).await
        })
        .await
    }

    /// A consistent copy of the directory state as backup file bytes (admin), read on
    /// the leader after a read-index round. Replies up to [`SNAPSHOT_MAX_BYTES`].
    pub async fn snapshot(&self) -> Result<v1::SnapshotReply, ClientError> {
        self.call(Route::Leader, "snapshot", |c| async move {
            c.max_decoding_message_size(SNAPSHOT_MAX_BYTES)
                .snapshot(v1::SnapshotRequest {})
                .await
        })
        .await
    }

    /// Adds a directory node (as a learner, promoted once caught up).
    pub async fn add_node(
        &self,
        id: u64,
        address: &str,
    ) -> Result<v1::MembershipReply, ClientError> {
        let req = v1::AddNodeRequest {
            id,
            address: address.to_string(),
            cluster_id: String::new(),
        };
        self.call(Route::Leader, "add_node", move |mut c| {
            let req = req.clone();
            async move { c.add_node(req).await }
        })
        .await
    }

    /// Removes a directory node from the cluster.
    pub async fn remove_node(&self, id: u64) -> Result<v1::MembershipReply, ClientError> {
        self.call(Route::Leader, "remove_node", move |mut c| async move {
            c.remove_node(v1::RemoveNodeRequest { id }).await
        })
        .await
    }

    /// Asks the leader to hand leadership to node `id`.
    pub async fn transfer_leader(&self, id: u64) -> Result<v1::MembershipReply, ClientError> {
        self.call(Route::Leader, "transfer_leader", move |mut c| async move {
            c.transfer_leader(v1::TransferLeaderRequest { id }).await
        })
        .await
    }

    // ---------------------------------------------------------------------------------
    // Channels for streams
    // ---------------------------------------------------------------------------------

    /// A freshly connected channel to some reachable node, with its canonical address.
    ///
    /// Connects to every node at once and keeps the first that answers, so a dead or
    /// cut-off node costs nothing (an agent re-attaching after its node died must renew
    /// with the new leader within a lease; a sequence of connect timeouts would eat it).
    /// The nodes are raced in random order, which spreads sessions over nodes that answer
    /// equally fast. After a round in which none answers it backs off and races again,
    /// until the retry budget runs out. The channel is dedicated to the caller (not
    /// shared with unary calls) and pings the node every `keepalive_interval`, so a
    /// stream on it fails when the node vanishes.
    pub async fn channel_to_any(&self) -> Result<(String, Channel), ClientError> {
        self.channel_avoiding(None).await
    }

    /// [`Client::channel_to_any`], but the node `avoid` (one that stopped answering on
    /// an earlier stream) is raced only in rounds after one in which no other node
    /// answered, or when it is the only node.
    pub async fn channel_avoiding(
        &self,
        avoid: Option<&str>,
    ) -> Result<(String, Channel), ClientError> {
        let cfg = &self.inner.config;
        let deadline = Instant::now() + cfg.retry_budget;
        let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
        let mut last_error = String::from("no attempt made");
        let mut first_round = true;
        loop {
            let mut candidates: Vec<String> = self
                .inner
                .addrs
                .iter()
                .filter(|a| !(first_round && avoid == Some(a.as_str())))
                .cloned()
                .collect();
            if candidates.is_empty() {
                candidates = self.inner.addrs.clone();
            }
            first_round = false;
            candidates.shuffle(&mut rand::rng());
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeout = cfg
                .connect_timeout
                .min(remaining.max(Duration::from_millis(1)));
            let mut racing = tokio::task::JoinSet::new();
            for addr in candidates {
                let endpoint = self
                    .endpoint(&addr)?
                    .connect_timeout(timeout)
                    .http2_keep_alive_interval(cfg.keepalive_interval)
                    .keep_alive_timeout(cfg.keepalive_interval)
                    .keep_alive_while_idle(true);
                let security = cfg.security.clone();
                racing.spawn(async move {
                    // The connect timeout bounds the TCP handshake only; this bounds the
                    // whole attempt (HTTP/2 preface included) against a hung node.
                    let r = tokio::time::timeout(timeout, security.connect(endpoint, None)).await;
                    (addr, r)
                });
            }
            // Dropping the set aborts the attempts still running.
            while let Some(joined) = racing.join_next().await {
                match joined {
                    Ok((addr, Ok(Ok(channel)))) => return Ok((addr, channel)),
                    Ok((addr, Ok(Err(e)))) => {
                        last_error = format!("{addr}: {}", error_chain(&e));
                        debug!(%addr, error = %last_error, "connect failed");
                    }
                    Ok((addr, Err(_))) => {
                        last_error = format!("{addr}: no connection within {timeout:?}");
                        debug!(%addr, error = %last_error, "connect failed");
                    }
                    Err(e) => last_error = format!("connect task failed: {e}"),
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.unavailable(&self.inner.addrs, &last_error));
            }
            tokio::time::sleep(backoff.next_delay().min(remaining)).await;
        }
    }

    // ---------------------------------------------------------------------------------
    // The retry loop
    // ---------------------------------------------------------------------------------

    /// Runs `attempt` against nodes until one answers definitively or the budget is spent.
    ///
    /// Order: the believed leader (for [`Route::Leader`]) or a random node, then the
    /// configured addresses in rotation. A redirect is followed at once (up to
    /// [`MAX_IMMEDIATE_REDIRECTS`] in a row); moving to an address already tried since
    /// the last pause first waits a backoff delay. Every attempt is bounded by
    /// `rpc_timeout`, the whole call by `retry_budget`.
    async fn call<T, F, Fut>(
        &self,
        route: Route,
        what: &'static str,
        attempt: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(DirectoryClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let cfg = &self.inner.config;
        let addrs = &self.inner.addrs;
        let n = addrs.len();
        let deadline = Instant::now() + cfg.retry_budget;
        let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);

        let mut rotation = rand::rng().random_range(0..n);
        let mut target = addrs[rotation].clone();
        if route == Route::Leader
            && let Some(leader) = self.leader()
        {
            if let Some(i) = addrs.iter().position(|a| *a == leader) {
                rotation = i;
            }
            target = leader;
        }

        let mut tried: Vec<String> = Vec::new();
        let mut since_pause: HashSet<String> = HashSet::new();
        let mut redirects_in_row = 0u32;
        let mut last_error;
        // What a node that did answer said (e.g. "the leader cannot reach a quorum"):
        // more useful to an operator than the last connection refused.
        let mut answered: Option<String> = None;

        loop {
            if !tried.contains(&target) {
                tried.push(target.clone());
            }
            since_pause.insert(target.clone());
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeout = cfg.rpc_timeout.min(remaining).max(Duration::from_millis(1));
            let channel = self.channel(&target)?;
            let result =
                tokio::time::timeout(timeout, attempt(DirectoryClient::new(channel))).await;

            let mut redirect_to = None;
            match result {
                Ok(Ok(response)) => {
                    if route == Route::Leader {
                        // A follower that forwarded the call names the leader: go there
                        // directly next time, one hop fewer. Only to a configured address:
                        // the call succeeded, so nothing needs an address this client was
                        // not given, which it may not reach (a container's name, a
                        // private network) and would then try before every write.
                        let next = error::leader_hint_in(response.metadata())
                            .filter(|hint| addrs.contains(hint))
                            .unwrap_or(target);
                        self.set_leader(Some(next));
                    }
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => match classify(&status) {
                    Disposition::GiveUp => return Err(ClientError::from_status(&status)),
                    d if status.metadata().contains_key(baton_proto::REASON_KEY)
                        && answered.is_none() =>
                    {
                        let described = format!("{target}: {}", error::describe_status(&status));
                        answered = Some(described.clone());
                        last_error = described;
                        if let Disposition::Redirect(addr) = d
                            && addr != target
                        {
                            redirect_to = Some(addr);
                        }
                    }
                    Disposition::Redirect(addr) => {
                        last_error = format!("{target}: {}", error::describe_status(&status));
                        if addr != target {
                            redirect_to = Some(addr);
                        }
                    }
                    Disposition::NextNode => {
                        last_error = format!("{target}: {}", error::describe_status(&status));
                    }
                },
                Err(_elapsed) => {
                    last_error = format!("{target}: no answer within {timeout:?}");
                }
            }
            debug!(call = what, error = %last_error, redirect = ?redirect_to, "attempt failed");

            if Instant::now() >= deadline {
                return Err(self.unavailable(&tried, answered.as_ref().unwrap_or(&last_error)));
            }
            // The target failed: it is not (or no longer) a leader worth starting at.
            self.forget_leader(&target);

            if let Some(addr) = redirect_to
                && redirects_in_row < MAX_IMMEDIATE_REDIRECTS
            {
                redirects_in_row += 1;
                self.set_leader(Some(addr.clone()));
                target = addr;
                continue;
            }

            rotation = (rotation + 1) % n;
            target = addrs[rotation].clone();
            if since_pause.contains(&target) || redirects_in_row >= MAX_IMMEDIATE_REDIRECTS {
                let remaining = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.next_delay().min(remaining)).await;
                if Instant::now() >= deadline {
                    return Err(self.unavailable(&tried, answered.as_ref().unwrap_or(&last_error)));
                }
                since_pause.clear();
                redirects_in_row = 0;
            }
        }
    }

    /// The cached channel to `addr`, created (lazily connecting) on first use.
    fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        let mut channels = self.inner.channels.lock().expect("channel cache lock");
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let cfg = &self.inner.config;
        let endpoint = self
            .endpoint(addr)?
            .connect_timeout(cfg.connect_timeout)
            .http2_keep_alive_interval(cfg.call_keepalive)
            .keep_alive_timeout(cfg.call_keepalive)
            .keep_alive_while_idle(false);
        let channel = self.inner.config.security.channel(endpoint, None);
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// The tonic endpoint for a canonical address.
    fn endpoint(&self, addr: &str) -> Result<Endpoint, ClientError> {
        Endpoint::from_shared(address::endpoint_uri(addr)).map_err(|e| {
            ClientError::InvalidAddress {
                address: addr.to_string(),
                problem: e.to_string(),
            }
        })
    }

    fn set_leader(&self, leader: Option<String>) {
        *self.inner.leader.lock().expect("leader lock") = leader;
    }

    /// Forgets the believed leader if it is `addr`.
    fn forget_leader(&self, addr: &str) {
        let mut leader = self.inner.leader.lock().expect("leader lock");
        if leader.as_deref() == Some(addr) {
            *leader = None;
        }
    }

    /// The error returned when the budget ran out.
    fn unavailable(&self, tried: &[String], last_error: &str) -> ClientError {
        ClientError::Unavailable(format!(
            "no directory node answered within {} (tried {}); last error: {last_error}",
            humanize(self.inner.config.retry_budget),
            tried.join(", "),
        ))
    }
}

/// The route of a read.
fn route(stale: bool) -> Route {
    if stale { Route::Any } else { Route::Leader }
}

/// "10s", "500ms": short durations for messages.
fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// An error and its sources on one line ("transport error: tcp connect error: Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text.replace(['\n', '\r'], " ")
}

/// A request id for one write: 128 random bits in hex, so two clients never pick the
/// same one.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_canonicalizes_and_deduplicates() {
        let c = Client::new(vec![
            "http://127.0.0.1:7001".into(),
            "127.0.0.1:7001".into(),
            "127.0.0.1:7002/".into(),
        ])
        .unwrap();
        assert_eq!(c.addresses(), ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert_eq!(c.leader(), None);
    }

    #[test]
    fn new_refuses_empty_and_malformed_lists() {
        let e = Client::new(vec![]).unwrap_err();
        assert!(e.to_string().contains("no directory address"), "{e}");
        let e = Client::new(vec!["127.0.0.1:7001".into(), "nope".into()]).unwrap_err();
        assert!(e.to_string().contains("\"nope\""), "{e}");
    }

    #[test]
    fn defaults_match_the_documented_policy() {
        let c = ClientConfig::default();
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.rpc_timeout, Duration::from_secs(5));
        assert_eq!(c.call_keepalive, Duration::from_secs(1));
        assert_eq!(c.retry_budget, Duration::from_secs(10));
        assert_eq!(c.backoff_initial, Duration::from_millis(50));
        assert_eq!(c.backoff_max, Duration::from_millis(250));
    }

    /// The agent and watchers spawn these calls on tokio tasks: they must stay `Send`.
    #[test]
    fn client_and_its_futures_are_send_and_sync() {
        fn send<T: Send>(_: &T) {}
        fn send_sync<T: Send + Sync + Clone + 'static>() {}
        send_sync::<Client>();
        send_sync::<ClientConfig>();
        let c = Client::new(vec!["127.0.0.1:1".into()]).unwrap();
        send(&c.apply(v1::Command::default()));
        send(&c.get_role("r", false));
        send(&c.events(None, true));
        send(&c.cluster_status());
        send(&c.channel_to_any());
    }

    #[test]
    fn humanize_is_short() {
        assert_eq!(humanize(Duration::from_secs(10)), "10s");
        assert_eq!(humanize(Duration::from_millis(300)), "300ms");
    }
}
