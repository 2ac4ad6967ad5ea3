//! Loaded TLS material, reloaded in place, and the rustls configurations built on it.
//!
//! One [`Tls`] per process: the cluster CA (trusted for both directions: a node
//! verifies its clients against it, a client verifies the node it dials) and this
//! process's own certificate and key. The certificate and key are behind a lock that
//! [`Tls::reload`] swaps, and both rustls configurations ask for them at every handshake
//! through a resolver. So a rotation takes effect for the next connection, while
//! connections already open keep the session they negotiated. The CA is read once: a
//! new CA means a restart (and, for a CA rotation without downtime, a bundle holding
//! the old and the new CA in the CA file).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;
use crate::identity::Identity;

/// Where a process's TLS files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPaths {
    /// The cluster CA certificate (PEM; may hold several, all trusted).
    pub ca: PathBuf,
    /// This process's certificate (PEM; leaf first, then any intermediates).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// The certificate and key in use, what they say, and the bytes they came from (to
/// notice a change).
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    identity: Identity,
    files: (Vec<u8>, Vec<u8>),
}

/// Hands the current certificate to every new handshake, either side.
#[derive(Debug)]
struct Current(RwLock<Arc<Loaded>>);

impl Current {
    fn get(&self) -> Arc<Loaded> {
        self.0.read().expect("certificate lock").clone()
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get().key.clone())
    }
}

impl ResolvesClientCert for Current {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get().key.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// A process's TLS: CA, own certificate (reloadable), and the configs built on them.
pub struct Tls {
    paths: TlsPaths,
    current: Arc<Current>,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    /// Serializes reloads (a file watch and a SIGHUP may race).
    reloading: Mutex<()>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("paths", &self.paths)
            .field("identity", &self.identity())
            .finish_non_exhaustive()
    }
}

/// The ring provider, the one tonic's `tls-ring` builds (rustls panics when it finds two).
/// rustls 0.23.48 deprecated it for lacking post-quantum key exchange, which its
/// aws-lc-rs provider has; that provider needs a C toolchain and cmake to build, and
/// classical ECDHE is what the rest of the stack (tonic's own TLS) offers today.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::file(path, e))
}

fn certs(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::pem(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::pem(path, "holds no CERTIFICATE block"));
    }
    Ok(certs)
}

fn load(paths: &TlsPaths) -> Result<Loaded, TlsError> {
    let cert_bytes = read(&paths.cert)?;
    let key_bytes = read(&paths.key)?;
    let chain = certs(&paths.cert, &cert_bytes)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|e| TlsError::pem(paths.key.clone(), e.to_string()))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::pem(paths.key.clone(), e.to_string()))?;
    let identity = Identity::from_der(&chain[0])
        .map_err(|e| TlsError::pem(paths.cert.clone(), e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        TlsError::pem(
            paths.key.clone(),
            format!("is not the key of {}: {e}", paths.cert.display()),
        )
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        identity,
        files: (cert_bytes, key_bytes),
    })
}

impl Tls {
    /// Read the CA, the certificate and the key, and build both configurations.
    pub fn load(paths: TlsPaths) -> Result<Arc<Tls>, TlsError> {
        let ca_bytes = read(&paths.ca)?;
        let mut roots = RootCertStore::empty();
        for c in certs(&paths.ca, &ca_bytes)? {
            roots
                .add(c)
                .map_err(|e| TlsError::pem(paths.ca.clone(), e.to_string()))?;
        }
        let roots = Arc::new(roots);
        let current = Arc::new(Current(RwLock::new(Arc::new(load(&paths)?))));
        let bad = |e: rustls::Error| TlsError::Config(e.to_string());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(current.clone());
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .with_root_certificates(roots)
            .with_client_cert_resolver(current.clone());
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(Tls {
            paths,
            current,
            server: Arc::new(server),
            client: Arc::new(client),
            reloading: Mutex::new(()),
        }))
    }

    /// What this process's own certificate says it is.
    pub fn identity(&self) -> Identity {
        self.current.get().identity.clone()
    }

    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// Read the certificate and key again; use them for new connections if they
    /// changed. Returns whether they did. A new certificate must name the same identity
    /// (a node does not become another node by a file copy); on any error the old pair
    /// stays in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let _one = self.reloading.lock().expect("reload lock");
        let old = self.current.get();
        let (cert, key) = (read(&self.paths.cert)?, read(&self.paths.key)?);
        if (&cert, &key) == (&old.files.0, &old.files.1) {
            return Ok(false);
        }
        let new = load(&self.paths)?;
        if new.identity != old.identity {
            return Err(TlsError::Config(format!(
                "the new certificate names {}, the running one {}: restart to change identity",
                new.identity, old.identity
            )));
        }
        *self.current.0.write().expect("certificate lock") = Arc::new(new);
        Ok(true)
    }

    /// Reload every `every` and on SIGHUP, until the process ends. Failures are logged
    /// (the running certificate stays); a file caught half-written is retried next time.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = match &mut hup {
                    Some(h) => tokio::select! {
                        _ = tick.tick() => "file check",
                        _ = h.recv() => "SIGHUP",
                    },
                    None => {
                        tick.tick().await;
                        "file check"
                    }
                };
                match tls.reload() {
                    Ok(true) => tracing::info!(
                        cert = %tls.paths.cert.display(),
                        identity = %tls.identity(),
                        "reloaded the TLS certificate and key ({why}); new connections use them"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        "TLS reload ({why}) failed, keeping the running certificate: {e}"
                    ),
                }
            }
        });
    }
}
