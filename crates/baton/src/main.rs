//! `baton`: one binary for the directory node, the agent, the demo and the admin
//! commands.

mod agent_cmd;
mod backup_cmd;
mod cert_cmd;
mod demo;
mod directory_cmd;
mod health_cmd;
mod settings;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Baton keeps each role running on exactly one server of its ordered list, and moves it when that server goes away.",
    propagate_version = true,
    after_help = baton_cli::EXIT_CODES_HELP
)]
struct Cli {
    #[command(flatten)]
    global: baton_cli::GlobalOpts,
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Run a directory node (a Raft member with its own sled database).
    Directory(Box<directory_cmd::DirectoryArgs>),
    /// Run the agent of one server: hold a lease, run the roles assigned to it.
    Agent(agent_cmd::AgentArgs),
    /// Start a local three-node cluster with three agents and watch roles move.
    Demo(demo::DemoArgs),
    /// Certificates: a cluster CA, and node, agent and client certificates it signs.
    #[command(subcommand)]
    Cert(cert_cmd::CertCmd),
    #[command(flatten)]
    Admin(baton_cli::AdminCommand),
    /// Backups: save a consistent copy of the directory state, restore it into a new cluster.
    #[command(subcommand)]
    Snapshot(backup_cmd::SnapshotCmd),
    /// Quorum lost for good: turn a stopped surviving node into a one-node cluster that
    /// keeps everything it holds (refused while other voters answer).
    Recover(backup_cmd::RecoverArgs),
    /// Ask a directory node's gRPC health service whether it is serving: exit 0 only
    /// when it says SERVING (for container health checks; uses the TLS flags).
    Health(health_cmd::HealthArgs),
    /// Print a shell completion script (generated from this binary's commands).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff, generated from this binary's commands).
    Man,
    /// Internal: the wrapper a role process runs under (see baton-agent's process module).
    #[command(hide = true, name = "role-exec")]
    RoleExec {
        #[arg(long = "grace-ms", default_value_t = 5000)]
        grace_ms: u64,
        #[arg(long = "handover-grace-ms", default_value_t = 5000)]
        handover_grace_ms: u64,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

fn main() {
    // The role wrapper must stay minimal: no runtime, no logging.
    let cli = Cli::parse();
    match &cli.command {
        Top::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "baton", &mut std::io::stdout());
            return;
        }
        Top::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            if let Err(e) = clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                eprintln!("error: cannot write the man page: {e}");
                std::process::exit(baton_cli::EXIT_FAILURE);
            }
            return;
        }
        _ => {}
    }
    if let Top::RoleExec {
        grace_ms,
        handover_grace_ms,
        command,
    } = &cli.command
    {
        let code = baton_agent::process::role_exec(
            &command.join(" "),
            std::time::Duration::from_millis(*grace_ms),
            std::time::Duration::from_millis(*handover_grace_ms),
        );
        std::process::exit(code);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        let result = match cli.command {
            Top::Directory(args) => directory_cmd::run(&cli.global, *args).await,
            Top::Agent(args) => agent_cmd::run(&cli.global, args).await,
            Top::Demo(args) => demo::run(args).await,
            Top::Cert(cmd) => cert_cmd::run(cmd),
            Top::Admin(cmd) => baton_cli::run(&cli.global, cmd).await,
            Top::Snapshot(cmd) => backup_cmd::snapshot(&cli.global, cmd).await,
            Top::Recover(args) => backup_cmd::recover(args).await,
            Top::Health(args) => health_cmd::run(&cli.global, args).await,
            Top::Completion { .. } | Top::Man => unreachable!("handled before the runtime"),
            Top::RoleExec { .. } => unreachable!("handled before the runtime"),
        };
        match result {
            Ok(()) => 0,
            Err(e) => baton_cli::report_error(&e),
        }
    });
    std::process::exit(code);
}

/// How `baton directory` and `baton agent` write their logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (colours only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Log to stderr in `format`; `RUST_LOG` overrides the default level. ANSI colours only
/// when stderr is a terminal (never in a journal, a file or a pipe).
pub fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
