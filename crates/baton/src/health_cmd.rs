//! `baton health ADDR`: the standard gRPC health check of one directory node, for
//! container health checks where the image has no shell and no curl.
//!
//! Exit codes: 0 when the node says SERVING for the `Directory` service, 1 when it
//! answers anything else, 3 ([`baton_cli::EXIT_UNAVAILABLE`]) when it cannot be reached
//! within the timeout. TLS comes from the usual flags or `BATON_CA`/`BATON_CERT`/`BATON_KEY`
//! (or `--insecure`).

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The service whose status is asked: the node's public API.
const SERVICE: &str = "baton.v1.Directory";

#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    /// The node's client address, e.g. 127.0.0.1:7001.
    addr: String,
    /// How long to wait for the answer (connection included).
    #[arg(long, default_value = "3s", value_parser = crate::settings::parse_duration)]
    timeout: Duration,
}

pub async fn run(global: &baton_cli::GlobalOpts, args: HealthArgs) -> Result<()> {
    let security = global.security()?;
    // Plain `http://` either way: with TLS, `Security::connect` runs the handshake itself.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", args.addr))
        .map_err(|e| anyhow!("bad address {:?}: {e}", args.addr))?
        .connect_timeout(args.timeout)
        .timeout(args.timeout);
    let ask = async {
        let channel = security.connect(endpoint, None).await?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: SERVICE.into(),
            })
            .await?;
        anyhow::Ok(reply.into_inner().status)
    };
    let status = match tokio::time::timeout(args.timeout, ask).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(
                baton_client::ClientError::Unavailable(format!("{}: {e:#}", args.addr)).into(),
            );
        }
        Err(_) => {
            return Err(baton_client::ClientError::Unavailable(format!(
                "{}: no answer within {:?}",
                args.addr, args.timeout
            ))
            .into());
        }
    };
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => {
            println!("{}: SERVING", args.addr);
            Ok(())
        }
        Ok(other) => bail!("{}: {}", args.addr, other.as_str_name()),
        Err(_) => bail!("{}: unknown health status {status}", args.addr),
    }
}
