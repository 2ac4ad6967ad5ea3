//! Output of the admin commands: JSON views with a fixed set of keys (a contract that
//! tests and tools rely on) and aligned human tables.
//!
//! Everything here is a pure function from replies to text, so that the output contract
//! is tested without a server.

use baton_proto::v1;
use serde::Serialize;
use std::time::{Duration, UNIX_EPOCH};

/// A role as printed with `-o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleView {
    /// Role name.
    pub name: String,
    /// Role kind.
    pub kind: String,
    /// Server names in priority order.
    pub servers: Vec<String>,
    /// Where the role runs now, if anywhere.
    pub active_server: Option<String>,
    /// Fencing token of the current assignment.
    pub epoch: u64,
    /// Whether the role returns to a higher-priority server.
    pub failback: bool,
    /// Anti-flap delay before failback.
    pub failback_delay_ms: u64,
    /// The role's database server, if any.
    pub database: Option<String>,
    /// "unassigned" | "running" | "handover" | "failed".
    pub state: String,
    /// Why the role is where it is.
    pub reason: String,
    /// Servers the role is quarantined on.
    pub quarantined: Vec<QuarantineView>,
    /// Every server of the list other than the active one, in priority order, and
    /// whether it could take the role over now.
    pub standbys: Vec<StandbyView>,
    /// How many of `standbys` are ready.
    pub standbys_ready: usize,
    /// No standby is ready: losing the active server would leave the role stopped.
    pub at_risk: bool,
}

/// One standby of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StandbyView {
    /// The server's name.
    pub server: String,
    /// It could take the role over now (up, not in maintenance, runs the kind, not
    /// quarantined).
    pub ready: bool,
    /// Why not, when not ready; null when ready.
    pub reason: Option<String>,
}

/// One quarantine of a role on a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineView {
    /// The server the role crashed on too often.
    pub server: String,
    /// End of the cooldown, milliseconds since the Unix epoch.
    pub until_ms: u64,
}

impl From<&v1::Role> for RoleView {
    fn from(r: &v1::Role) -> Self {
        RoleView {
            name: r.name.clone(),
            kind: r.kind.clone(),
            servers: r.servers.clone(),
            active_server: r.active_server.clone(),
            epoch: r.epoch,
            failback: r.failback,
            failback_delay_ms: r.failback_delay_ms,
            database: r.database.clone(),
            state: r.state.clone(),
            reason: r.reason.clone(),
            quarantined: r
                .quarantined
                .iter()
                .map(|q| QuarantineView {
                    server: q.server.clone(),
                    until_ms: q.until_ms,
                })
                .collect(),
            standbys: r
                .standbys
                .iter()
                .map(|s| StandbyView {
                    server: s.server.clone(),
                    ready: s.ready,
                    reason: (!s.ready).then(|| s.reason.clone()),
                })
                .collect(),
            standbys_ready: r.standbys.iter().filter(|s| s.ready).count(),
            at_risk: r.at_risk,
        }
    }
}

/// A server as printed with `-o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerView {
    /// Server name.
    pub name: String,
    /// "up" | "down" | "unknown".
    pub status: String,
    /// In maintenance (drained).
    pub maintenance: bool,
    /// Hosts a directory node.
    pub main: bool,
    /// Kinds it can run; empty means any.
    pub kinds: Vec<String>,
    /// Roles it is the active server of.
    pub roles: Vec<String>,
    /// The agent instance holding the server name ("" before any agent registered).
    pub instance: String,
    /// That agent's session address, as a directory node saw it.
    pub agent_address: String,
    /// Wall-clock ms since which that instance holds the name (0: never held).
    pub instance_since_ms: u64,
}

impl From<&v1::Server> for ServerView {
    fn from(s: &v1::Server) -> Self {
        ServerView {
            name: s.name.clone(),
            status: s.status.clone(),
            maintenance: s.maintenance,
            main: s.main,
            kinds: s.kinds.clone(),
            roles: s.roles.clone(),
            instance: s.instance.clone(),
            agent_address: s.agent_address.clone(),
            instance_since_ms: s.instance_since_ms,
        }
    }
}

/// `cluster status` as printed with `-o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// Id of the leader, if there is one.
    pub leader: Option<u64>,
    /// Current Raft term.
    pub term: u64,
    /// Every node of the membership.
    pub nodes: Vec<NodeView>,
    /// The cluster's lease and grace (ms).
    pub lease_ms: u64,
    pub grace_ms: u64,
    /// The lease failovers wait now: longer than `lease_ms` for a while after a
    /// shortening, until every agent has renewed under the new lease.
    pub expiry_lease_ms: u64,
}

/// One directory node in `cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// Node id.
    pub id: u64,
    /// Client port address (what agents and this CLI dial).
    pub address: String,
    /// Peer port address (Raft, node to node).
    pub peer_address: String,
    /// Voter (false: learner).
    pub voter: bool,
    /// "leader" | "follower" | "learner" | "candidate" | "unreachable".
    pub state: String,
    /// Last log index applied to its state machine.
    pub last_applied: u64,
    /// Replication lag behind the leader's log, if the leader knows it.
    pub lag: Option<u64>,
    /// Agent sessions attached to it.
    pub sessions: u64,
    /// The term it is in (extra field).
    pub term: u64,
}

impl From<&v1::ClusterStatusReply> for ClusterView {
    fn from(c: &v1::ClusterStatusReply) -> Self {
        ClusterView {
            leader: c.leader,
            term: c.term,
            lease_ms: c.lease_ms,
            grace_ms: c.grace_ms,
            expiry_lease_ms: c.expiry_lease_ms,
            nodes: c
                .nodes
                .iter()
                .map(|n| NodeView {
                    id: n.id,
                    address: n.address.clone(),
                    peer_address: n.peer_address.clone(),
                    voter: n.voter,
                    state: n.state.clone(),
                    last_applied: n.last_applied,
                    lag: n.lag,
                    sessions: n.sessions,
                    term: n.term,
                })
                .collect(),
        }
    }
}

/// A history event as printed with `-o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventView {
    /// Directory revision of the change.
    pub revision: u64,
    /// When it happened, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The role concerned.
    pub role: String,
    /// Why it happened ("lease_expired", "maintenance", "failback", ...).
    pub cause: String,
    /// Server the role left, if any.
    pub from: Option<String>,
    /// Server the role went to, if any.
    pub to: Option<String>,
    /// Epoch of the new assignment.
    pub epoch: u64,
    /// Free-form detail.
    pub detail: String,
    /// Who asked for the change, as their certificate names them ("operator bob");
    /// empty when the directory decided it itself.
    pub by: String,
}

impl From<&v1::Event> for EventView {
    fn from(e: &v1::Event) -> Self {
        EventView {
            revision: e.revision,
            time_ms: e.time_ms,
            role: e.role.clone(),
            cause: e.cause.clone(),
            from: e.from.clone(),
            to: e.to.clone(),
            epoch: e.epoch,
            detail: e.detail.clone(),
            by: e.by.clone(),
        }
    }
}

/// The reply of a write command as printed with `-o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteView {
    /// Directory revision after the change; null for membership changes, which are not
    /// directory commands.
    pub revision: Option<u64>,
    /// What changed, in words.
    pub summary: String,
}

/// Pretty JSON of any view.
pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("views always serialize")
}

/// One-line JSON of any view (for `--follow`).
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("views always serialize")
}

// ---------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------

/// Rows of cells under a header, rendered with aligned columns (two spaces between
/// columns, no trailing spaces).
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Column titles; empty for a key/value block without a header line.
    header: Vec<String>,
    /// Cells, one row per line.
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The aligned text, one line per row (after the header line, if there are titles),
    /// each ending with a newline.
    pub fn render(&self) -> String {
        let cols = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; cols];
        let header = (!self.header.is_empty()).then_some(&self.header);
        for line in header.into_iter().chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in header.into_iter().chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                let pad = widths[i] - cell.chars().count();
                text.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn or_dash(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "-".to_string(),
    }
}

/// "2026-01-02T03:04:05.678Z".
pub fn format_time_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// "30s", "1m 30s", "500ms", "0s".
pub fn format_delay_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// The server list with the active one marked: `srv-a*,srv-b,srv-c`.
pub fn servers_marked(role: &v1::Role) -> String {
    role.servers
        .iter()
        .map(|s| {
            if role.active_server.as_deref() == Some(s.as_str()) {
                format!("{s}*")
            } else {
                s.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A role's standby readiness in a few characters: `2/2`, `0/2 AT RISK`, or `-` for a
/// role with no standby that is not at risk (being deleted, or read from a node that
/// predates readiness).
pub fn standbys_short(r: &v1::Role) -> String {
    let ready = r.standbys.iter().filter(|s| s.ready).count();
    match (r.standbys.len(), r.at_risk) {
        (0, false) => "-".to_string(),
        (total, false) => format!("{ready}/{total}"),
        (total, true) => format!("{ready}/{total} AT RISK"),
    }
}

/// `role list` as a table (active server marked with `*` in SERVERS; STANDBYS: how many
/// standbys are ready, `AT RISK` when none is).
pub fn roles_table(roles: &[v1::Role]) -> String {
    let mut t = Table::new(&[
        "ROLE", "KIND", "STATE", "ACTIVE", "EPOCH", "FAILBACK", "SERVERS", "STANDBYS",
    ]);
    for r in roles {
        t.row(vec![
            r.name.clone(),
            r.kind.clone(),
            r.state.clone(),
            or_dash(r.active_server.as_deref()),
            r.epoch.to_string(),
            yes_no(r.failback),
            servers_marked(r),
            standbys_short(r),
        ]);
    }
    t.render()
}

/// `role show` as text: options, then the servers in priority order, the active one marked.
pub fn role_text(r: &v1::Role) -> String {
    let failback = if r.failback {
        format!("yes (delay {})", format_delay_ms(r.failback_delay_ms))
    } else {
        "no".to_string()
    };
    let mut t = Table::default();
    for (k, v) in [
        ("role:", r.name.clone()),
        ("kind:", r.kind.clone()),
        ("state:", r.state.clone()),
        ("active server:", or_dash(r.active_server.as_deref())),
        ("epoch:", r.epoch.to_string()),
        ("failback:", failback),
        ("database:", or_dash(r.database.as_deref())),
        ("reason:", or_dash(Some(&r.reason))),
        ("standbys:", standbys_long(r)),
    ] {
        t.row(vec![k.to_string(), v]);
    }
    let mut out = t.render();
    out.push_str("servers (priority order):\n");
    let mut s = Table::default();
    for (i, name) in r.servers.iter().enumerate() {
        let mut notes = Vec::new();
        if r.active_server.as_deref() == Some(name.as_str()) {
            notes.push("active".to_string());
        }
        for q in r.quarantined.iter().filter(|q| q.server == *name) {
            notes.push(format!("quarantined until {}", format_time_ms(q.until_ms)));
        }
        if let Some(sb) = r.standbys.iter().find(|sb| sb.server == *name) {
            notes.push(if sb.ready {
                "standby, ready".to_string()
            } else {
                format!("standby, not ready: {}", sb.reason)
            });
        }
        let marker = if notes.first().is_some_and(|n| n == "active") {
            "*"
        } else {
            " "
        };
        s.row(vec![
            format!("  {marker} {}.", i + 1),
            name.clone(),
            notes.join(", "),
        ]);
    }
    out.push_str(&s.render());
    out
}

/// `role show`'s standby line: `2/2 ready`, `0/2 ready, AT RISK`.
fn standbys_long(r: &v1::Role) -> String {
    let ready = r.standbys.iter().filter(|s| s.ready).count();
    let total = r.standbys.len();
    match (total, r.at_risk) {
        (0, false) => "-".to_string(),
        (_, false) => format!("{ready}/{total} ready"),
        (_, true) => format!("{ready}/{total} ready, AT RISK"),
    }
}

/// `server list` as a table.
pub fn servers_table(servers: &[v1::Server]) -> String {
    let mut t = Table::new(&[
        "SERVER",
        "STATUS",
        "MAINTENANCE",
        "MAIN",
        "KINDS",
        "ROLES",
        "AGENT",
    ]);
    for s in servers {
        t.row(vec![
            s.name.clone(),
            s.status.clone(),
            yes_no(s.maintenance),
            yes_no(s.main),
            if s.kinds.is_empty() {
                "any".to_string()
            } else {
                s.kinds.join(",")
            },
            if s.roles.is_empty() {
                "-".to_string()
            } else {
                s.roles.join(",")
            },
            // Which agent instance holds the name, from where: two agents configured
            // with one server name show up here (the second is refused).
            if s.instance.is_empty() && s.agent_address.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "{}@{}",
                    s.instance.get(..8).unwrap_or(&s.instance),
                    if s.agent_address.is_empty() {
                        "?"
                    } else {
                        &s.agent_address
                    }
                )
            },
        ]);
    }
    t.render()
}

/// `cluster status` as text: leader and term, then one line per node.
pub fn cluster_text(c: &v1::ClusterStatusReply) -> String {
    let leader = c
        .leader
        .map(|l| l.to_string())
        .unwrap_or_else(|| "none".to_string());
    let mut out = format!("leader: {leader}  term: {}", c.term);
    if c.lease_ms > 0 {
        out.push_str(&format!(
            "  lease: {} ms  grace: {} ms",
            c.lease_ms, c.grace_ms
        ));
        if c.expiry_lease_ms > c.lease_ms {
            out.push_str(&format!(
                " (failovers wait {} ms until every agent renewed)",
                c.expiry_lease_ms
            ));
        }
    }
    out.push('\n');
    let mut t = Table::new(&[
        "ID",
        "ADDRESS",
        "VOTER",
        "STATE",
        "LAST APPLIED",
        "LAG",
        "SESSIONS",
    ]);
    for n in &c.nodes {
        t.row(vec![
            n.id.to_string(),
            n.address.clone(),
            yes_no(n.voter),
            n.state.clone(),
            n.last_applied.to_string(),
            n.lag
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".to_string()),
            n.sessions.to_string(),
        ]);
    }
    out.push_str(&t.render());
    out
}

/// `events` as a table.
pub fn events_table(events: &[v1::Event]) -> String {
    let mut t = Table::new(&[
        "REVISION", "TIME", "ROLE", "CAUSE", "FROM", "TO", "EPOCH", "DETAIL",
    ]);
    for e in events {
        t.row(vec![
            e.revision.to_string(),
            format_time_ms(e.time_ms),
            e.role.clone(),
            e.cause.clone(),
            or_dash(e.from.as_deref()),
            or_dash(e.to.as_deref()),
            e.epoch.to_string(),
            e.detail.clone(),
        ]);
    }
    t.render()
}

/// One event on one line, for `events --follow` without `-o json`.
pub fn event_line(e: &v1::Event) -> String {
    let mut line = format!(
        "{}  rev {}  {}  {} -> {}  epoch {}  {}",
        format_time_ms(e.time_ms),
        e.revision,
        e.role,
        or_dash(e.from.as_deref()),
        or_dash(e.to.as_deref()),
        e.epoch,
        e.cause,
    );
    if !e.detail.is_empty() {
        line.push_str("  ");
        line.push_str(&e.detail);
    }
    line.replace(['\n', '\r'], " ")
}

/// `role candidates` as text: one server per line, or a note when there is none.
pub fn candidates_text(servers: &[String]) -> String {
    if servers.is_empty() {
        return "(no candidates)\n".to_string();
    }
    let mut out = servers.join("\n");
    out.push('\n');
    out
}
