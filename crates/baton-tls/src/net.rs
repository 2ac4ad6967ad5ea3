//! TLS on the wire: the server's accept loop and the client's connector, both for tonic.
//!
//! tonic's own TLS settings are fixed when a server or endpoint is built; Baton's
//! certificates rotate, so both sides run the handshake themselves with the rustls
//! configurations of [`Tls`], which resolve the certificate per handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::identity::Identity;
use crate::tls::Tls;

/// How long a client has to finish its handshake. A peer that opens a connection and
/// says nothing holds a slot only this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once, per listener; more connections wait in the kernel's
/// backlog instead of costing memory here.
pub const HANDSHAKES_MAX: usize = 256;
/// Handshaken connections waiting for the server to take them.
const READY_MAX: usize = 64;

/// The TLS connections accepted on `listener`, as the stream tonic's
/// `serve_with_incoming` takes. A failed or slow handshake is logged and dropped: it
/// never reaches the server, and never stops the listener.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<Tls>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    incoming_with(listener, tls.server_config())
}

/// [`incoming`] for an HTTP/1.1 server (the status page and metrics): the node's server
/// configuration (same certificates, rotation and client verification) with ALPN
/// offering `http/1.1` only, so that a browser or curl does not pick HTTP/2 (which the
/// gRPC ports negotiate).
pub fn incoming_http1(
    listener: TcpListener,
    tls: Arc<Tls>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let mut config = (*tls.server_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    incoming_with(listener, Arc::new(config))
}

fn incoming_with(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(READY_MAX);
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => log_refused(peer, &e.to_string()),
                    Err(_) => log_refused(peer, "handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The plain-text (`--insecure`) connections accepted on `listener`, as the stream
/// tonic's `serve_with_incoming` takes, each with `TCP_NODELAY` set as on the TLS path.
///
/// Why not tonic's own: a server given its connections (`serve_with_incoming`) ignores
/// the builder's `tcp_nodelay`, and tonic's listener stream sets nothing. Without it,
/// Nagle's algorithm holds a reply written right behind another one on the same
/// connection until the peer acknowledges the first, and the peer delays that ACK by up
/// to 40 ms: a follower forwarding a write while its readiness check (every 500 ms) was
/// answered on the same channel saw its write take 42-45 ms, every 500 ms, which was the
/// whole of the plain-text benchmark's commit-latency p99 at one writer.
///
/// Accept errors (out of file descriptors and the like) are logged and retried after a
/// pause instead of spinning, as [`incoming`] does.
pub fn plain_incoming(
    listener: TcpListener,
) -> tokio_stream::wrappers::ReceiverStream<Result<TcpStream, std::io::Error>> {
    let (tx, rx) = mpsc::channel(READY_MAX);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    if tx.send(Ok(tcp)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn log_refused(peer: SocketAddr, why: &str) {
    tracing::info!(%peer, "TLS connection refused: {why}");
}

/// A lazily connecting channel over TLS to `endpoint`'s host. The node's certificate
/// must name the host dialed (or its address). With `expect_node`, the server must also
/// be that directory node: a node dialing its peers checks it reached the member it
/// meant, not just some node.
pub fn channel(endpoint: Endpoint, tls: &Arc<Tls>, expect_node: Option<u64>) -> Channel {
    endpoint.connect_with_connector_lazy(connector(tls, expect_node))
}

/// [`channel`], connected now (the TCP connection and the handshake).
pub async fn connect(
    endpoint: Endpoint,
    tls: &Arc<Tls>,
    expect_node: Option<u64>,
) -> Result<Channel, tonic::transport::Error> {
    endpoint
        .connect_with_connector(connector(tls, expect_node))
        .await
}

/// Dials a URI's host and port and runs the TLS handshake as the client.
fn connector(
    tls: &Arc<Tls>,
    expect_node: Option<u64>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let connector = TlsConnector::from(tls.client_config());
    tower::service_fn(move |uri: Uri| {
        let connector = connector.clone();
        async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| std::io::Error::other(format!("{host:?}: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let stream = connector.connect(name, tcp).await?;
            if let Some(want) = expect_node {
                let (_, session) = stream.get_ref();
                let got = session
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| Identity::from_der(c));
                match got {
                    Some(Ok(id)) if id.node == Some(want) => {}
                    Some(Ok(id)) => {
                        return Err(std::io::Error::other(format!(
                            "{host}:{port} is {id}, not node {want}"
                        )));
                    }
                    Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                    None => return Err(std::io::Error::other("the server sent no certificate")),
                }
            }
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    })
}

/// The certificate `addr` serves (the leaf, DER), after a full handshake with `tls`'s
/// client certificate: what a new connection to that node gets now.
pub async fn server_certificate(addr: &str, tls: &Arc<Tls>) -> Result<Vec<u8>, std::io::Error> {
    let (host, _) = addr
        .rsplit_once(':')
        .ok_or_else(|| std::io::Error::other(format!("{addr:?} is not HOST:PORT")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = ServerName::try_from(host).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr).await?;
    let stream = TlsConnector::from(tls.client_config())
        .connect(name, tcp)
        .await?;
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| std::io::Error::other("the server sent no certificate"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    /// Every plain connection reaches the server with Nagle's algorithm off (see
    /// [`plain_incoming`]): the socket the server gets, not the client's, is checked.
    #[tokio::test]
    async fn plain_connections_are_accepted_with_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut incoming = plain_incoming(listener);
        for _ in 0..3 {
            let client = TcpStream::connect(addr).await.expect("connect");
            let accepted = tokio::time::timeout(Duration::from_secs(10), incoming.next())
                .await
                .expect("a connection within 10 s")
                .expect("the stream goes on")
                .expect("accepted");
            assert!(accepted.nodelay().expect("read TCP_NODELAY"));
            assert_eq!(accepted.peer_addr().ok(), client.local_addr().ok());
        }
    }
}
