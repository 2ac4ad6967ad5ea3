//! The admin subcommands of `baton`, as clap definitions.
//!
//! Kept apart from execution and rendering so that parsing can be tested on its own and
//! the `baton` binary can embed these commands next to its own (`directory`, `agent`...).

use clap::{ArgGroup, Args, Subcommand};
use std::time::Duration;

/// `--stale`, shared by every read command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Args)]
pub struct ReadArgs {
    /// Read the contacted node's local copy instead of a linearizable read through the
    /// leader (faster, works without a leader, may lag).
    #[arg(long)]
    pub stale: bool,
}

/// `baton server ...`: the servers agents run on.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ServerCmd {
    /// Register a server.
    Add {
        /// Server name, e.g. srv-a.
        #[arg(value_name = "NAME")]
        name: String,
        /// The server also hosts a directory node.
        #[arg(long)]
        main: bool,
        /// Role kinds the server can run (comma-separated); none means any kind.
        #[arg(long, value_delimiter = ',', value_name = "KINDS")]
        kinds: Vec<String>,
    },
    /// Unregister a server.
    Remove {
        /// Server name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// List servers with their status and the roles they run.
    List {
        /// Read options.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Put a server in maintenance: its roles move away gracefully, nothing new lands on it.
    Drain {
        /// Server name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Take a server out of maintenance.
    Resume {
        /// Server name.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// `baton role ...`: roles and their server lists.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum RoleCmd {
    /// Create a role with its servers in priority order.
    Create {
        /// Role name.
        #[arg(value_name = "ROLE")]
        role: String,
        /// Servers in priority order, the first is the primary (comma-separated).
        #[arg(long, value_delimiter = ',', required = true, value_name = "SERVERS")]
        servers: Vec<String>,
        /// Role kind (default: "default"); only servers advertising it can run the role.
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// Return the role to a higher-priority server when that server is healthy again.
        #[arg(long)]
        failback: bool,
        /// How long a higher-priority server must stay healthy before failback (e.g. 30s, 500ms).
        #[arg(long, value_parser = parse_duration, value_name = "DUR")]
        failback_delay: Option<Duration>,
        /// The role's database server (never one of the role's own servers).
        #[arg(long, value_name = "DB")]
        database: Option<String>,
    },
    /// Delete a role.
    Delete {
        /// Role name.
        #[arg(value_name = "ROLE")]
        role: String,
    },
    /// Show one role: servers in priority order, the active one marked.
    Show {
        /// Role name.
        #[arg(value_name = "ROLE")]
        role: String,
        /// Read options.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// List every role.
    List {
        /// Read options.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Known servers not yet in the role's list.
    Candidates {
        /// Role name.
        #[arg(value_name = "ROLE")]
        role: String,
        /// Read options.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Add a server to a role's list.
    AddServer {
        /// Role name.
        #[arg(value_name = "ROLE")]
        role: String,
        /// Server name.
        #[arg(value_name = "SERVER")]
        server: String,
        /// 1-based position in the list (default: at the end).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
        position: Option<u32>,
    },
    /// Remove a server from a role's list.
    RemoveServer {
        /// Role name.
        #[arg(value_name = "ROLE")]
        role: String,
        /// Server name.
        #[arg(value_name = "SERVER")]
        server: String,
    },
    /// Move a server one place towards the primary.
    MoveUp {
        /// Role name.
        #[arg(value_name = "ROLE")]
        role: String,
        /// Server name.
        #[arg(value_name = "SERVER")]
        server: String,
    },
    /// Move a server one place away from the primary.
    MoveDown {
        /// Role name.
        #[arg(value_name = "ROLE")]
        role: String,
        /// Server name.
        #[arg(value_name = "SERVER")]
        server: String,
    },
    /// Change a role's options.
    #[command(group(
        ArgGroup::new("change")
            .required(true)
            .multiple(true)
            .args(["failback", "failback_delay", "database", "no_database"])
    ))]
    Set {
        /// Role name.
        #[arg(value_name = "ROLE")]
        role: String,
        /// Failback on or off.
        #[arg(long, value_parser = parse_on_off, value_name = "on|off")]
        failback: Option<bool>,
        /// Failback delay (e.g. 30s, 500ms).
        #[arg(long, value_parser = parse_duration, value_name = "DUR")]
        failback_delay: Option<Duration>,
        /// Set the role's database server.
        #[arg(long, value_name = "DB", conflicts_with = "no_database")]
        database: Option<String>,
        /// Clear the role's database.
        #[arg(long)]
        no_database: bool,
    },
    /// Move a role to one of its servers now (graceful handover).
    Move {
        /// Role name.
        #[arg(value_name = "ROLE")]
        role: String,
        /// Server name (must be in the role's list).
        #[arg(value_name = "SERVER")]
        server: String,
    },
}

/// `baton cluster ...`: the directory cluster itself.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ClusterCmd {
    /// Leader, term, and every directory node's state and replication lag.
    Status {
        /// Read options (`--stale`: ask any node, not necessarily the leader).
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Add a directory node (as a learner, promoted once caught up).
    AddNode {
        /// Node id.
        #[arg(value_name = "ID")]
        id: u64,
        /// Its gRPC address, host:port.
        #[arg(value_name = "ADDR", value_parser = parse_node_address)]
        addr: String,
    },
    /// Remove a directory node.
    RemoveNode {
        /// Node id.
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Hand leadership to another node.
    TransferLeader {
        /// Node id.
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Change cluster-wide settings: the lease agents renew and fence on, and the grace
    /// added before a failover. A shorter lease applies to failovers only once every
    /// agent has renewed under it.
    Set {
        /// The new lease (at least 500ms, at most 1h).
        #[arg(long, value_parser = parse_duration, value_name = "DUR")]
        lease: Duration,
        /// The grace (default: the smallest safe value for the lease, at least 50ms).
        #[arg(long, value_parser = parse_duration, value_name = "DUR")]
        grace: Option<Duration>,
    },
}

/// `baton events`: the assignment history.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct EventsArgs {
    /// Only this role's events.
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// Keep running and print new events as they happen.
    #[arg(long)]
    pub follow: bool,
    /// Read options (for the history printed first).
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Parses a duration like `30s`, `500ms`, `2m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 30s, 500ms, 2m)"))
}

/// Parses `on`/`off` (also `true`/`false`, `yes`/`no`).
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("expected on or off, got {s:?}")),
    }
}

/// Validates a node address and returns it in canonical `host:port` form.
fn parse_node_address(s: &str) -> Result<String, String> {
    baton_client::parse_address(s).map_err(|e| e.to_string())
}

/// Milliseconds of a duration, refusing absurd values instead of wrapping.
pub(crate) fn millis(d: Duration) -> anyhow::Result<u64> {
    u64::try_from(d.as_millis()).map_err(|_| anyhow::anyhow!("duration {d:?} is too long"))
}
