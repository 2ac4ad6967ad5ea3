//! `baton cert`: make a cluster CA and the certificates it signs.
//!
//! `init` writes `ca.pem` and `ca.key` into a directory; `issue` reads them from there
//! and writes `node-ID`, `agent-SERVER` or `client-NAME` `.pem` and `.key` next to them.
//! Keys get mode 0600; nothing is overwritten without `--force`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use baton_tls::Permission;
use baton_tls::make::{self, Subject, Validity};

use crate::settings::parse_duration;

#[derive(clap::Subcommand, Debug)]
pub enum CertCmd {
    /// Make the cluster CA (ca.pem, ca.key) in --dir.
    Init {
        #[command(flatten)]
        common: Common,
        /// The CA's common name.
        #[arg(long, default_value = "Baton cluster CA")]
        name: String,
    },
    /// Issue a certificate signed by the CA in --dir.
    #[command(subcommand)]
    Issue(IssueCmd),
}

#[derive(clap::Subcommand, Debug)]
pub enum IssueCmd {
    /// A directory node's certificate (node-ID.pem): the only kind that serves TLS.
    Node {
        #[command(flatten)]
        common: Common,
        /// The node's Raft id.
        #[arg(long)]
        id: u64,
        /// Host names or IP addresses clients and nodes dial this node at (repeat;
        /// localhost, 127.0.0.1 and ::1 are always included).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// An agent's certificate (agent-SERVER.pem): it may claim that server name only.
    Agent {
        #[command(flatten)]
        common: Common,
        /// The server name the agent runs as.
        #[arg(long)]
        server: String,
    },
    /// An operator's or tool's certificate (client-NAME.pem) with one permission.
    Client {
        #[command(flatten)]
        common: Common,
        /// Who holds it (shown in the audit trail).
        #[arg(long)]
        name: String,
        /// viewer (reads, watch), operator (also roles and servers) or admin (also
        /// membership, leadership, cluster settings).
        #[arg(long, value_parser = parse_permission)]
        permission: Permission,
        /// Also allow it to run the agent of this server.
        #[arg(long)]
        server: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct Common {
    /// Where the CA lives and the files are written.
    #[arg(long, env = "BATON_CERT_DIR", value_name = "DIR")]
    dir: PathBuf,
    /// How long the certificate is valid (default: 10 years for the CA, 1 year otherwise).
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    valid_for: Option<Duration>,
    /// Start the validity this long ago (a backdate longer than --valid-for makes an
    /// expired certificate, for testing that it is refused).
    #[arg(long, value_parser = parse_duration, value_name = "DUR", hide = true)]
    backdate: Option<Duration>,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

impl Common {
    fn validity(&self, default: Duration) -> Validity {
        Validity {
            valid_for: self.valid_for.unwrap_or(default),
            backdate: self.backdate.unwrap_or(Duration::ZERO),
        }
    }
}

fn parse_permission(s: &str) -> Result<Permission, String> {
    Permission::parse(s).ok_or_else(|| format!("{s:?} is not viewer, operator or admin"))
}

pub fn run(cmd: CertCmd) -> Result<()> {
    match cmd {
        CertCmd::Init { common, name } => {
            let ca = make::make_ca(&name, common.validity(make::CA_VALID_FOR))?;
            make::write(&common.dir, "ca", &ca, common.force)?;
            println!(
                "wrote {} and {} (keep ca.key offline once the certificates are issued)",
                common.dir.join("ca.pem").display(),
                common.dir.join("ca.key").display()
            );
            Ok(())
        }
        CertCmd::Issue(issue) => {
            let (common, subject) = match issue {
                IssueCmd::Node { common, id, hosts } => {
                    if id == 0 {
                        return Err(anyhow!("node id 0 is reserved; ids start at 1"));
                    }
                    (common, Subject::Node { id, hosts })
                }
                IssueCmd::Agent { common, server } => {
                    baton_core::names::check_name("server", &server)
                        .map_err(|r| anyhow!("{}", r.message))?;
                    (common, Subject::Agent { server })
                }
                IssueCmd::Client {
                    common,
                    name,
                    permission,
                    server,
                } => {
                    baton_core::names::check_name("client", &name)
                        .map_err(|r| anyhow!("{}", r.message))?;
                    if let Some(s) = &server {
                        baton_core::names::check_name("server", s)
                            .map_err(|r| anyhow!("{}", r.message))?;
                    }
                    (
                        common,
                        Subject::Client {
                            name,
                            permission,
                            server,
                        },
                    )
                }
            };
            let read = |f: &str| {
                let p = common.dir.join(f);
                std::fs::read_to_string(&p).with_context(|| {
                    format!(
                        "{} (make the CA first: baton cert init --dir {})",
                        p.display(),
                        common.dir.display()
                    )
                })
            };
            let (ca_pem, ca_key) = (read("ca.pem")?, read("ca.key")?);
            let issued = make::issue(
                &ca_pem,
                &ca_key,
                &subject,
                common.validity(make::LEAF_VALID_FOR),
            )?;
            let stem = subject.file_stem();
            make::write(&common.dir, &stem, &issued, common.force)?;
            println!(
                "wrote {} and {}",
                common.dir.join(format!("{stem}.pem")).display(),
                common.dir.join(format!("{stem}.key")).display()
            );
            Ok(())
        }
    }
}
