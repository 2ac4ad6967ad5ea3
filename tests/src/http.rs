//! A small blocking HTTP/1.1 client for the tests of the `--http` port: one request per
//! connection (`Connection: close`), over mutual TLS with a certificate of the test
//! cluster's CA, over TLS with no client certificate, or in plain text. Tests parse
//! what it returns: the status code and the body.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// How a test reaches an HTTP port.
#[derive(Clone)]
pub enum Via {
    /// Plain text (`--insecure` nodes).
    Plain,
    /// TLS with this client configuration (with or without a client certificate).
    Tls(Arc<rustls::ClientConfig>),
}

/// Largest response read, in bytes: a runaway answer fails the test instead of eating
/// its memory.
const RESPONSE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Bound on connecting, writing and each read.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

impl Via {
    /// Mutual TLS with the certificate `stem` (`client-viewer`, `agent-srv-a`) of the
    /// certificates in `dir` (a test cluster's `tls` directory). Offers HTTP/2 and
    /// HTTP/1.1 by ALPN, as browsers and curl do: the server must pick the one it speaks.
    pub fn cert(dir: &Path, stem: &str) -> Result<Via> {
        let tls = baton_tls::Tls::load(baton_tls::TlsPaths {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        })?;
        let mut config = (*tls.client_config()).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Via::Tls(Arc::new(config)))
    }

    /// TLS that trusts the cluster's CA but presents no client certificate.
    pub fn no_client_cert(dir: &Path) -> Result<Via> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(dir.join("ca.pem"))? {
            roots.add(c?)?;
        }
        // The ring provider, as baton-tls uses (deprecated in rustls 0.23.48 for lacking
        // post-quantum key exchange; the nodes offer classical ECDHE).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Via::Tls(Arc::new(config)))
    }
}

/// `GET path` at `addr` (`127.0.0.1:PORT`); the status code and the body.
pub fn get(addr: &str, path: &str, via: &Via) -> Result<(u16, String)> {
    let sock: std::net::SocketAddr = addr.parse().with_context(|| format!("address {addr}"))?;
    let tcp = TcpStream::connect_timeout(&sock, IO_TIMEOUT)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: baton-tests\r\n\r\n"
    );
    let mut raw = Vec::new();
    match via {
        Via::Plain => {
            let mut tcp = tcp;
            tcp.write_all(request.as_bytes())?;
            tcp.take(RESPONSE_MAX_BYTES).read_to_end(&mut raw)?;
        }
        Via::Tls(config) => {
            let host = sock.ip().to_string();
            let name = rustls::pki_types::ServerName::try_from(host)?;
            let conn = rustls::ClientConnection::new(config.clone(), name)?;
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            stream.write_all(request.as_bytes())?;
            stream.flush()?;
            // This client speaks HTTP/1.1 whatever was negotiated; a browser would not.
            if let Some(p) = stream.conn.alpn_protocol()
                && p != b"http/1.1"
            {
                bail!(
                    "the server chose {:?} by ALPN; it must choose http/1.1",
                    String::from_utf8_lossy(p)
                );
            }
            match stream.take(RESPONSE_MAX_BYTES).read_to_end(&mut raw) {
                Ok(_) => {}
                // A server that closes without close_notify after a complete response.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    parse(&raw)
}

fn parse(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no complete response head in {} bytes: {text:?}", raw.len());
    };
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// One sample of a Prometheus/OpenMetrics text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    /// `key="value"` pairs, in order.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parse the samples of a text exposition; `# ` lines are skipped. Refuses a line it
/// cannot read, so a malformed exposition fails the test that scrapes it.
pub fn parse_metrics(text: &str) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| anyhow!("metric line without a value: {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().with_context(|| format!("value of {line:?}"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Vec::new()),
            Some((name, rest)) => {
                let rest = rest
                    .strip_suffix('}')
                    .ok_or_else(|| anyhow!("unclosed labels in {line:?}"))?;
                let mut labels = Vec::new();
                for pair in rest.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .ok_or_else(|| anyhow!("bad label {pair:?} in {line:?}"))?;
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .ok_or_else(|| anyhow!("unquoted label value in {line:?}"))?;
                    labels.push((k.to_string(), v.to_string()));
                }
                (name.to_string(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    Ok(out)
}

/// The value of the sample `name` whose labels include every pair of `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
}
