//! `baton agent`: run the agent of one server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use baton_agent::AgentConfig;
use serde::Deserialize;

use crate::settings::{Dur, load, parse_duration};

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// TOML config file; flags and BATON_* variables override it.
    #[arg(long, env = "BATON_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// This server's name, as role server lists name it.
    #[arg(long, env = "BATON_SERVER")]
    server: Option<String>,
    /// A role kind this server runs, and the shell command that runs it: KIND=COMMAND.
    /// Repeat for several kinds.
    #[arg(long = "run", value_name = "KIND=COMMAND")]
    run: Vec<String>,
    /// This server also hosts a directory node.
    #[arg(long)]
    main: bool,
    /// SIGTERM-to-SIGKILL grace for a graceful handover (default 5s).
    #[arg(long, value_parser = parse_duration)]
    handover_grace: Option<Duration>,
    /// Crashes within --crash-window after which the role is reported failed (default 3).
    #[arg(long)]
    crash_limit: Option<u32>,
    /// Window for --crash-limit (default 30s).
    #[arg(long, value_parser = parse_duration)]
    crash_window: Option<Duration>,
    /// Do not put role processes in cgroups of their own; track them by process group
    /// only (a process that calls setsid then escapes the role's stop).
    #[arg(long)]
    no_cgroups: bool,
    /// Serve /healthz and /metrics in plain HTTP: PORT (on 127.0.0.1) or HOST:PORT.
    /// Off when unset.
    #[arg(long, env = "BATON_AGENT_HTTP")]
    http: Option<String>,
    /// Log lines as text (colours only on a terminal) or as one JSON object per line.
    #[arg(long, env = "BATON_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: crate::LogFormat,
}

/// Keys of an agent config file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    server: Option<String>,
    directory: Option<Vec<String>>,
    /// kind = "command"
    run: Option<BTreeMap<String, String>>,
    main: Option<bool>,
    handover_grace: Option<Dur>,
    crash_limit: Option<u32>,
    crash_window: Option<Dur>,
    /// Put each role process in a cgroup of its own where cgroup v2 is writable (default true).
    cgroups: Option<bool>,
    /// PORT (on 127.0.0.1) or HOST:PORT for /healthz and /metrics.
    http: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    insecure: Option<bool>,
}

pub fn agent_config(global: &baton_cli::GlobalOpts, args: AgentArgs) -> Result<AgentConfig> {
    let file: AgentFile = match &args.config {
        Some(p) => load(p)?,
        None => AgentFile::default(),
    };
    let server = args
        .server
        .or(file.server)
        .ok_or_else(|| anyhow!("missing --server (this server's name)"))?;
    let mut runs = file.run.unwrap_or_default();
    for r in &args.run {
        let Some((kind, cmd)) = r.split_once('=') else {
            return Err(anyhow!("--run {r:?} is not of the form KIND=COMMAND"));
        };
        runs.insert(kind.trim().to_string(), cmd.to_string());
    }
    // The file's directory list applies only when neither the flag nor the environment
    // set one (the global option always has a default).
    let directory = if std::env::args().any(|a| a == "--directory" || a.starts_with("--directory="))
        || std::env::var_os("BATON_DIRECTORY").is_some()
    {
        global.directory.clone()
    } else {
        file.directory.unwrap_or_else(|| global.directory.clone())
    };
    let mut c = AgentConfig::new(server, directory, runs);
    c.main = args.main || file.main.unwrap_or(false);
    if let Some(d) = args.handover_grace.or(file.handover_grace.map(|d| d.0)) {
        c.handover_grace = d;
    }
    if let Some(n) = args.crash_limit.or(file.crash_limit) {
        c.crash_limit = n;
    }
    if let Some(d) = args.crash_window.or(file.crash_window.map(|d| d.0)) {
        c.crash_window = d;
    }
    c.cgroups = !args.no_cgroups && file.cgroups.unwrap_or(true);
    if let Some(h) = args.http.or(file.http) {
        c.http = Some(http_addr(&h)?);
    }
    c.security = crate::settings::security(global, file.ca, file.cert, file.key, file.insecure)?;
    c.validate().map_err(|e| anyhow!("{e}"))?;
    Ok(c)
}

pub async fn run(global: &baton_cli::GlobalOpts, args: AgentArgs) -> Result<()> {
    crate::init_logging("info,h2=warn,tower=warn", args.log_format);
    let config = agent_config(global, args)?;
    baton_agent::run(config, crate::termination())
        .await
        .map_err(|e| anyhow!("{e}"))
}

/// `--http`: a bare port binds loopback; an address binds where it says.
fn http_addr(s: &str) -> Result<std::net::SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        anyhow!("--http {s:?} is neither a port nor HOST:PORT (e.g. 9464 or 127.0.0.1:9464)")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_port_alone_binds_loopback() {
        assert_eq!(
            super::http_addr("9464").unwrap().to_string(),
            "127.0.0.1:9464"
        );
        assert_eq!(
            super::http_addr("0.0.0.0:80").unwrap().to_string(),
            "0.0.0.0:80"
        );
        assert!(
            super::http_addr("nine")
                .unwrap_err()
                .to_string()
                .contains("HOST:PORT")
        );
    }
}
