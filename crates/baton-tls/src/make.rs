//! Making a cluster CA and the certificates it signs (`baton cert`).
//!
//! Keys are ECDSA P-256. Only node certificates may serve TLS (extended key usage
//! `serverAuth`, and the host names and addresses clients dial); agent and client
//! certificates are for client authentication only, so a stolen agent key cannot
//! impersonate a directory node. Private keys are written with mode 0600 and files are
//! never overwritten unless asked.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::TlsError;
use crate::identity::{Identity, Permission};

/// Default validity of the cluster CA.
pub const CA_VALID_FOR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default validity of a node, agent or client certificate.
pub const LEAF_VALID_FOR: Duration = Duration::from_secs(365 * 24 * 3600);
/// Host names every node certificate carries, so local clients can dial it.
pub const LOCAL_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    /// The certificate again, DER (what a TLS handshake carries).
    pub cert_der: Vec<u8>,
    pub key_pem: String,
}

/// Whom a certificate is for.
#[derive(Clone, Debug)]
pub enum Subject {
    /// Directory node `id`, reachable at `hosts` (names or IP addresses).
    Node { id: u64, hosts: Vec<String> },
    /// The agent of server `server`.
    Agent { server: String },
    /// An admin client `name` with `permission`, optionally also allowed to run the
    /// agent of `server`.
    Client {
        name: String,
        permission: Permission,
        server: Option<String>,
    },
}

impl Subject {
    fn identity(&self) -> Identity {
        match self {
            Subject::Node { id, .. } => Identity {
                node: Some(*id),
                ..Identity::default()
            },
            Subject::Agent { server } => Identity {
                server: Some(server.clone()),
                ..Identity::default()
            },
            Subject::Client {
                name,
                permission,
                server,
            } => Identity {
                server: server.clone(),
                client: Some((*permission, name.clone())),
                ..Identity::default()
            },
        }
    }

    /// The file stem `baton cert issue` writes: `node-1`, `agent-srv-a`, `client-alice`.
    pub fn file_stem(&self) -> String {
        match self {
            Subject::Node { id, .. } => format!("node-{id}"),
            Subject::Agent { server } => format!("agent-{server}"),
            Subject::Client { name, .. } => format!("client-{name}"),
        }
    }
}

/// When a certificate is valid: from `now - backdate` for `valid_for`. A backdate
/// longer than the validity makes an already expired certificate (for tests of refusal).
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub valid_for: Duration,
    pub backdate: Duration,
}

impl Validity {
    pub fn for_(valid_for: Duration) -> Validity {
        Validity {
            valid_for,
            backdate: Duration::ZERO,
        }
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<(), TlsError> {
        let now = time::OffsetDateTime::now_utc();
        let as_time = |d: Duration| {
            time::Duration::try_from(d)
                .map_err(|_| TlsError::Make(format!("duration {d:?} is out of range")))
        };
        // Back a minute off by default: a verifier whose clock is a little behind would
        // otherwise refuse a certificate made a moment ago as "not yet valid".
        let start = now - as_time(self.backdate.max(Duration::from_secs(60)))?;
        params.not_before = start;
        params.not_after = start + as_time(self.valid_for)?;
        Ok(())
    }
}

fn err(what: &str) -> impl Fn(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Make(format!("{what}: {e}"))
}

/// A new self-signed cluster CA.
pub fn make_ca(common_name: &str, validity: Validity) -> Result<Issued, TlsError> {
    let key = KeyPair::generate().map_err(err("generating the CA key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err("CA parameters"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity.apply(&mut params)?;
    let cert = params.self_signed(&key).map_err(err("signing the CA"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
    })
}

/// A certificate for `subject`, signed by the CA given as PEM.
pub fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    subject: &Subject,
    validity: Validity,
) -> Result<Issued, TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(err("reading the CA key"))?;
    let issuer =
        Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(err("reading the CA certificate"))?;
    let key = KeyPair::generate().map_err(err("generating the key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err("parameters"))?;
    let identity = subject.identity();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.to_string());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    for uri in identity.uris() {
        params.subject_alt_names.push(SanType::URI(
            uri.clone()
                .try_into()
                .map_err(|_| TlsError::Make(format!("{uri:?} is not an ASCII URI")))?,
        ));
    }
    if let Subject::Node { hosts, .. } = subject {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
        let mut all: Vec<&str> = LOCAL_HOSTS.to_vec();
        all.extend(hosts.iter().map(String::as_str));
        all.dedup();
        for h in all {
            let san = match h.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    h.to_string()
                        .try_into()
                        .map_err(|_| TlsError::Make(format!("host {h:?} is not a DNS name")))?,
                ),
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
    }
    validity.apply(&mut params)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(err("signing the certificate"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
    })
}

/// Write `issued` as `dir/stem.pem` and `dir/stem.key` (mode 0600). Refuses to replace
/// an existing file unless `overwrite`.
pub fn write(dir: &Path, stem: &str, issued: &Issued, overwrite: bool) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| TlsError::file(dir, e))?;
    write_file(
        &dir.join(format!("{stem}.key")),
        &issued.key_pem,
        0o600,
        overwrite,
    )?;
    write_file(
        &dir.join(format!("{stem}.pem")),
        &issued.cert_pem,
        0o644,
        overwrite,
    )
}

fn write_file(path: &Path, text: &str, mode: u32, overwrite: bool) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(mode);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::Make(format!(
                "{} exists; remove it or pass --force to replace it",
                path.display()
            ))
        } else {
            TlsError::file(path, e)
        }
    })?;
    // The mode given to open applies only to a new file; a replaced one keeps its own.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| TlsError::file(path, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| TlsError::file(path, e))
}
