//! The admin commands of the `baton` binary (`server`, `role`, `cluster`, `events`), as a
//! library: clap definitions, calls through `baton-client`, and table or JSON output.
//!
//! A library rather than code in the binary so that parsing and the output contract can
//! be unit-tested, and so that the binary's `main` stays a thin shell:
//!
//! ```ignore
//! match baton_cli::run(&global, cmd).await {
//!     Ok(()) => 0,
//!     Err(e) => baton_cli::report_error(&e),
//! }
//! ```

mod args;
mod follow;
pub mod render;

pub use args::{
    ClusterCmd, EventsArgs, ReadArgs, RoleCmd, ServerCmd, parse_duration, parse_on_off,
};
pub use follow::EventCursor;

use anyhow::Result;
use baton_client::{Client, ClientError};
use baton_proto::v1;
use baton_proto::v1::command::Command as Cmd;
use std::io::Write;

/// Options every admin command accepts, before or after the subcommand.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct GlobalOpts {
    /// Directory node addresses, comma-separated (any subset of the cluster will do).
    #[arg(
        long,
        global = true,
        env = "BATON_DIRECTORY",
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
        value_delimiter = ','
    )]
    pub directory: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, default_value = "table")]
    pub output: Output,
    /// The cluster CA certificate (PEM): the nodes' certificates must chain to it.
    #[arg(long, global = true, env = "BATON_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// This process's certificate (PEM), signed by the cluster CA (`baton cert issue`).
    #[arg(long, global = true, env = "BATON_CERT", value_name = "FILE")]
    pub cert: Option<std::path::PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, global = true, env = "BATON_KEY", value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
    /// Plain text instead of mutual TLS: nobody is authenticated and anyone who reaches a
    /// port may do anything. For experiments on a trusted host only.
    #[arg(long, global = true, env = "BATON_INSECURE")]
    pub insecure: bool,
}

impl GlobalOpts {
    /// Mutual TLS from --ca/--cert/--key, or plain text with --insecure.
    pub fn security(&self) -> Result<baton_tls::Security> {
        Ok(baton_tls::Security::from_files(
            self.ca.clone(),
            self.cert.clone(),
            self.key.clone(),
            self.insecure,
        )?)
    }
}

/// Output format of every admin command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for tools (stable keys; `events --follow` prints one object per line).
    Json,
}

/// The admin commands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum AdminCommand {
    /// Servers that agents run on.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Roles: create, inspect, reorder, move.
    #[command(subcommand)]
    Role(RoleCmd),
    /// The directory cluster: status and membership.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// The assignment history (who ran what, when, and why).
    Events(EventsArgs),
}

/// Exit code of a successful command.
pub const EXIT_OK: i32 = 0;
/// Exit code for a refusal or any other failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code of a usage error (unknown command or flag, missing argument): clap's own.
pub const EXIT_USAGE: i32 = 2;
/// Exit code when no directory node could be reached.
pub const EXIT_UNAVAILABLE: i32 = 3;

/// The exit codes as `baton --help` prints them (after the commands). A test checks that
/// it names every `EXIT_*` constant with its value, and the end-to-end tests check the
/// binary against it.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failure: a refusal from the directory, bad input, a node or agent that refused to
     start or stopped on an error
  2  usage error: unknown command or flag, missing argument
  3  unavailable: no directory node could be reached";

/// stdout was closed (`baton events --follow | head`): end quietly, not an error to report.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes one block of output (a newline is added if missing) and flushes it, so that
/// `--follow` output reaches pipes at once.
pub(crate) fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let result = if text.ends_with('\n') {
        out.write_all(text.as_bytes())
    } else {
        writeln!(out, "{text}")
    }
    .and_then(|()| out.flush());
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

/// A client for the addresses in `global`.
pub fn client(global: &GlobalOpts) -> Result<Client> {
    let config = baton_client::ClientConfig {
        security: global.security()?,
        ..Default::default()
    };
    Ok(Client::with_config(global.directory.clone(), config)?)
}

/// Runs one admin command and prints its result on stdout.
pub async fn run(global: &GlobalOpts, cmd: AdminCommand) -> Result<()> {
    let client = client(global)?;
    let output = global.output;
    match cmd {
        AdminCommand::Server(cmd) => server(&client, output, cmd).await,
        AdminCommand::Role(cmd) => role(&client, output, cmd).await,
        AdminCommand::Cluster(cmd) => cluster(&client, output, cmd).await,
        AdminCommand::Events(args) => events(&client, output, args).await,
    }
}

/// Prints the one-line `error: ...` message for a failed command on stderr and returns
/// the process exit code: [`EXIT_UNAVAILABLE`] when no directory node could be reached,
/// [`EXIT_FAILURE`] otherwise (0, silently, when stdout was closed by a pager or `head`).
pub fn report_error(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<StdoutClosed>().is_some() {
        return 0;
    }
    eprintln!("{}", error_line(e));
    exit_code(e)
}

/// The exit code for an error (see [`report_error`]).
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Unavailable(_)) => EXIT_UNAVAILABLE,
        _ => EXIT_FAILURE,
    }
}

/// `error: <message>` on one line: the server's message for refusals, the addresses
/// tried for an unavailable cluster, context and cause for anything else.
pub fn error_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let text = text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    format!("error: {text}")
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// Sends one directory command and prints its reply.
async fn write(client: &Client, output: Output, command: Cmd) -> Result<()> {
    let reply = client
        .apply(v1::Command {
            request_id: String::new(),
            command: Some(command),
        })
        .await?;
    print_write(
        output,
        render::WriteView {
            revision: Some(reply.revision),
            summary: reply.summary,
        },
    )
}

/// Prints the reply of a write: the summary line, or `{"revision", "summary"}`.
fn print_write(output: Output, view: render::WriteView) -> Result<()> {
    match output {
        Output::Json => emit(&render::json(&view)),
        Output::Table => emit(&view.summary),
    }
}

async fn server(client: &Client, output: Output, cmd: ServerCmd) -> Result<()> {
    match cmd {
        ServerCmd::Add { name, main, kinds } => {
            write(
                client,
                output,
                Cmd::AddServer(v1::AddServer { name, main, kinds }),
            )
            .await
        }
        ServerCmd::Remove { name } => {
            write(client, output, Cmd::RemoveServer(v1::RemoveServer { name })).await
        }
        ServerCmd::Drain { name } => {
            write(client, output, Cmd::DrainServer(v1::DrainServer { name })).await
        }
        ServerCmd::Resume { name } => {
            write(client, output, Cmd::ResumeServer(v1::ResumeServer { name })).await
        }
        ServerCmd::List { read } => {
            let mut servers = client.list_servers(read.stale).await?.servers;
            servers.sort_by(|a, b| a.name.cmp(&b.name));
            match output {
                Output::Json => {
                    let views: Vec<_> = servers.iter().map(render::ServerView::from).collect();
                    emit(&render::json(&views))
                }
                Output::Table => emit(&render::servers_table(&servers)),
            }
        }
    }
}

async fn role(client: &Client, output: Output, cmd: RoleCmd) -> Result<()> {
    match cmd {
        RoleCmd::Create {
            role,
            servers,
            kind,
            failback,
            failback_delay,
            database,
        } => {
            let create = v1::CreateRole {
                name: role,
                kind: kind.unwrap_or_default(),
                servers,
                failback,
                failback_delay_ms: failback_delay.map(args::millis).transpose()?.unwrap_or(0),
                database,
            };
            write(client, output, Cmd::CreateRole(create)).await
        }
        RoleCmd::Delete { role } => {
            write(
                client,
                output,
                Cmd::DeleteRole(v1::DeleteRole { name: role }),
            )
            .await
        }
        RoleCmd::AddServer {
            role,
            server,
            position,
        } => {
            let add = v1::AddRoleServer {
                role,
                server,
                position,
            };
            write(client, output, Cmd::AddRoleServer(add)).await
        }
        RoleCmd::RemoveServer { role, server } => {
            let remove = v1::RemoveRoleServer { role, server };
            write(client, output, Cmd::RemoveRoleServer(remove)).await
        }
        RoleCmd::MoveUp { role, server } => {
            let up = v1::MoveRoleServer {
                role,
                server,
                up: true,
            };
            write(client, output, Cmd::MoveRoleServer(up)).await
        }
        RoleCmd::MoveDown { role, server } => {
            let down = v1::MoveRoleServer {
                role,
                server,
                up: false,
            };
            write(client, output, Cmd::MoveRoleServer(down)).await
        }
        RoleCmd::Set {
            role,
            failback,
            failback_delay,
            database,
            no_database,
        } => {
            let set = v1::SetRole {
                role,
                failback,
                failback_delay_ms: failback_delay.map(args::millis).transpose()?,
                // Present and empty clears the database.
                database: if no_database {
                    Some(String::new())
                } else {
                    database
                },
            };
            write(client, output, Cmd::SetRole(set)).await
        }
        RoleCmd::Move { role, server } => {
            write(client, output, Cmd::MoveRole(v1::MoveRole { role, server })).await
        }
        RoleCmd::Show { role, read } => {
            let role = client.get_role(&role, read.stale).await?;
            match output {
                Output::Json => emit(&render::json(&render::RoleView::from(&role))),
                Output::Table => emit(&render::role_text(&role)),
            }
        }
        RoleCmd::List { read } => {
            let mut roles = client.list_roles(read.stale).await?.roles;
            roles.sort_by(|a, b| a.name.cmp(&b.name));
            match output {
                Output::Json => {
                    let views: Vec<_> = roles.iter().map(render::RoleView::from).collect();
                    emit(&render::json(&views))
                }
                Output::Table => emit(&render::roles_table(&roles)),
            }
        }
        RoleCmd::Candidates { role, read } => {
            let servers = client.candidates(&role, read.stale).await?;
            match output {
                Output::Json => emit(&render::json(&servers)),
                Output::Table => emit(&render::candidates_text(&servers)),
            }
        }
    }
}

async fn cluster(client: &Client, output: Output, cmd: ClusterCmd) -> Result<()> {
    let reply = match cmd {
        ClusterCmd::Status { read } => {
            let status = if read.stale {
                client.cluster_status_any().await?
            } else {
                client.cluster_status().await?
            };
            return match output {
                Output::Json => emit(&render::json(&render::ClusterView::from(&status))),
                Output::Table => emit(&render::cluster_text(&status)),
            };
        }
        ClusterCmd::AddNode { id, addr } => client.add_node(id, &addr).await?,
        ClusterCmd::RemoveNode { id } => client.remove_node(id).await?,
        ClusterCmd::TransferLeader { id } => client.transfer_leader(id).await?,
        ClusterCmd::Set { lease, grace } => {
            let cmd = v1::Command {
                request_id: String::new(),
                command: Some(v1::command::Command::SetLease(v1::SetLease {
                    lease_ms: lease.as_millis() as u64,
                    grace_ms: grace.map_or(0, |g| g.as_millis() as u64),
                })),
            };
            let r = client.apply(cmd).await?;
            return print_write(
                output,
                render::WriteView {
                    revision: Some(r.revision),
                    summary: r.summary,
                },
            );
        }
    };
    print_write(
        output,
        render::WriteView {
            revision: None,
            summary: reply.summary,
        },
    )
}

async fn events(client: &Client, output: Output, args: EventsArgs) -> Result<()> {
    if args.follow {
        return follow::follow(client, args.role, args.read.stale, output).await;
    }
    let mut events = client.events(args.role.as_deref(), args.read.stale).await?;
    events.sort_by_key(|e| e.revision);
    match output {
        Output::Json => {
            let views: Vec<_> = events.iter().map(render::EventView::from).collect();
            emit(&render::json(&views))
        }
        Output::Table => emit(&render::events_table(&events)),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod follow_tests;
