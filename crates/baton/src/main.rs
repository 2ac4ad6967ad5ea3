//! `baton`: one binary for the directory node, the agent, the demo and the admin
//! commands.

mod agent_cmd;
mod cert_cmd;
mod demo;
mod directory_cmd;
mod settings;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Baton keeps each role running on exactly one server of its ordered list, and moves it when that server goes away.",
    propagate_version = true
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
            Top::RoleExec { .. } => unreachable!("handled before the runtime"),
        };
        match result {
            Ok(()) => 0,
            Err(e) => baton_cli::report_error(&e),
        }
    });
    std::process::exit(code);
}

/// Log to stderr; `RUST_LOG` overrides the default level.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
