//! Who may speak to Baton: mutual TLS, identities in certificates, three permissions.
//!
//! ## The model
//!
//! One cluster CA signs every certificate: directory nodes', agents', operators'. Every
//! connection is mutual TLS; a peer without a certificate signed by the CA does not get
//! past the handshake. What a peer may do then follows from the identity its certificate
//! names ([`identity`]), never from what it says in a request:
//!
//! - A **node** certificate (`baton://node/ID`) is the only one the peer port accepts,
//!   and a node may speak there only as the node its certificate names. On the client
//!   port it may read, and ask to join as itself.
//! - An **agent** certificate (`baton://server/NAME`) may open an agent session for that
//!   server name and no other; it may not call the admin API.
//! - A **client** certificate (`baton://viewer|operator|admin/NAME`) may call the admin
//!   API up to its permission: `viewer` reads, watches and asks for status; `operator`
//!   also writes roles and servers (drain, resume, move); `admin` also changes
//!   membership, moves leadership and sets cluster settings.
//!
//! Only node certificates carry `serverAuth` and host names, so only a node can serve:
//! an agent's stolen key cannot stand in for a directory node.
//!
//! Plain text is possible ([`Security::Insecure`]), only when asked for: then nobody is
//! authenticated and every caller may do everything.

pub mod identity;
pub mod make;
pub mod net;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use identity::{Identity, Permission};
pub use tls::{Tls, TlsPaths};
use tonic::transport::{Channel, Endpoint};

/// Everything that can go wrong with certificates, keys and TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", .path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {detail}", .path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("certificate {0}")]
    Certificate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("making a certificate: {0}")]
    Make(String),
}

impl TlsError {
    pub fn pem(path: impl AsRef<Path>, detail: impl Into<String>) -> TlsError {
        TlsError::Pem {
            path: path.as_ref().to_path_buf(),
            detail: detail.into(),
        }
    }

    pub fn file(path: &Path, source: std::io::Error) -> TlsError {
        TlsError::File {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How a process talks to others and serves: mutual TLS (the default) or plain text.
#[derive(Clone, Debug)]
pub enum Security {
    Tls(Arc<Tls>),
    /// Plain text, unauthenticated: only when asked for (`--insecure`).
    Insecure,
}

impl Security {
    /// Mutual TLS from these files, or plain text when `insecure`. Without files and
    /// without `insecure`, an error that says how to get either.
    pub fn from_files(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        insecure: bool,
    ) -> Result<Security, TlsError> {
        match (ca, cert, key, insecure) {
            (None, None, None, true) => Ok(Security::Insecure),
            (_, _, _, true) => Err(TlsError::Config(
                "--insecure turns TLS off; it cannot be combined with --ca, --cert or --key"
                    .into(),
            )),
            (Some(ca), Some(cert), Some(key), false) => {
                Ok(Security::Tls(Tls::load(TlsPaths { ca, cert, key })?))
            }
            (None, None, None, false) => Err(TlsError::Config(
                "TLS is on by default: give --ca, --cert and --key (make them with `baton cert init` and `baton cert issue`), or --insecure for plain text"
                    .into(),
            )),
            (ca, cert, key, false) => {
                let missing: Vec<&str> = [("--ca", ca.is_none()), ("--cert", cert.is_none()), ("--key", key.is_none())]
                    .into_iter()
                    .filter(|(_, m)| *m)
                    .map(|(f, _)| f)
                    .collect();
                Err(TlsError::Config(format!(
                    "TLS needs --ca, --cert and --key; missing {}",
                    missing.join(", ")
                )))
            }
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Security::Tls(_))
    }

    /// This process's own identity (None in plain text).
    pub fn identity(&self) -> Option<Identity> {
        match self {
            Security::Tls(t) => Some(t.identity()),
            Security::Insecure => None,
        }
    }

    /// A lazily connecting channel to `endpoint` (see [`net::channel`]).
    pub fn channel(&self, endpoint: Endpoint, expect_node: Option<u64>) -> Channel {
        match self {
            Security::Tls(t) => net::channel(endpoint, t, expect_node),
            Security::Insecure => endpoint.connect_lazy(),
        }
    }

    /// [`Security::channel`], connected now.
    pub async fn connect(
        &self,
        endpoint: Endpoint,
        expect_node: Option<u64>,
    ) -> Result<Channel, tonic::transport::Error> {
        match self {
            Security::Tls(t) => net::connect(endpoint, t, expect_node).await,
            Security::Insecure => endpoint.connect().await,
        }
    }

    /// The URI scheme clients should show for this security.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }
}

/// Who sent `req`, from the client certificate of its connection. `UNAUTHENTICATED`
/// when the connection carries no certificate naming a Baton identity.
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Result<Identity, tonic::Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        tonic::Status::unauthenticated("no client certificate: this port requires mutual TLS")
    })?;
    let leaf = certs.first().ok_or_else(|| {
        tonic::Status::unauthenticated("no client certificate: this port requires mutual TLS")
    })?;
    Identity::from_der(leaf).map_err(|e| tonic::Status::unauthenticated(format!("client {e}")))
}
