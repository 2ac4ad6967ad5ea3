//! A node-to-node channel recovers from a connection that went silent.
//!
//! A peer can vanish without a FIN or RST: its host is gone, a route is blackholed, a
//! middlebox drops its state. The TCP connection then looks alive to the sender until its
//! retransmissions give up, minutes later, and every call on the cached channel waits out
//! its own timeout. `peer_endpoint` turns on HTTP/2 keepalive so the dead connection is
//! closed and the next call reconnects.
//!
//! The test puts a TCP relay between a real tonic client and server. After one good call,
//! the relay goes silent on every connection it already has (it keeps the sockets open
//! and forwards nothing, in either direction) while connections made afterwards are
//! relayed normally. Calls over the same channel must then succeed again within a
//! deadline; without keepalive they time out forever (checked by hand: removing the three
//! keepalive lines from `peer_endpoint` makes this test fail at its deadline).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_directory::node::peer_endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Per-call deadline: far above a loopback round trip, far below the test's deadline.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the channel may take to notice the silent connection and reconnect:
/// keepalive interval + answer deadline is 4 s; the rest is slack for a loaded machine.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);

/// A relay whose existing connections can be made silent.
struct Relay {
    /// Connections accepted so far (each gets the next number).
    accepted: Arc<AtomicU64>,
    /// Connections numbered below this forward nothing any more.
    silent_below: Arc<AtomicU64>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> (Relay, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let silent_below = Arc::new(AtomicU64::new(0));
        let (acc, silent) = (accepted.clone(), silent_below.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let n = acc.fetch_add(1, Ordering::SeqCst);
                let Ok(outbound) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(n, ri, wo, silent.clone()));
                tokio::spawn(pump(n, ro, wi, silent.clone()));
            }
        });
        (
            Relay {
                accepted,
                silent_below,
            },
            addr,
        )
    }

    /// Every connection accepted so far goes silent; later ones are relayed.
    fn silence_existing(&self) {
        self.silent_below
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Copies bytes one way until the connection ends or goes silent. A silent connection
/// keeps both sockets open and forwards nothing: no FIN, no RST, as with a vanished host.
async fn pump(
    n: u64,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent_below: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            r = from.read(&mut buf) => r,
            // Re-check the switch now and then even when nothing arrives.
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if n < silent_below.load(Ordering::SeqCst) {
                    break;
                }
                continue;
            }
        };
        if n < silent_below.load(Ordering::SeqCst) {
            break;
        }
        match read {
            Ok(0) | Err(_) => return,
            Ok(k) => {
                if to.write_all(&buf[..k]).await.is_err() {
                    return;
                }
            }
        }
    }
    // Silent: hold both halves open until the test ends.
    let _held = (from, to);
    std::future::pending::<()>().await;
}

async fn check(client: &mut HealthClient<tonic::transport::Channel>) -> Result<(), String> {
    match tokio::time::timeout(
        CALL_TIMEOUT,
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(format!("status {status}")),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_channel_reconnects_after_its_connection_goes_silent() {
    // A real gRPC server (the health service every node serves).
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind server");
    let server_addr = server.local_addr().expect("server addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(server)),
    );

    let (relay, relay_addr) = Relay::start(server_addr).await;
    let channel = peer_endpoint(&relay_addr.to_string())
        .expect("endpoint")
        .connect_lazy();
    let mut client = HealthClient::new(channel);

    // One good call over the relay: the channel now has a live connection.
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    loop {
        match check(&mut client).await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => panic!("first call never succeeded: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 1, "one connection");

    // The connection goes silent: the next call cannot be answered over it.
    relay.silence_existing();
    let first = check(&mut client).await;
    assert!(
        first.is_err(),
        "a call over a silent connection was answered: the relay did not silence it"
    );

    // The same channel must get through again, over a new connection.
    let silenced_at = Instant::now();
    let deadline = silenced_at + RECOVERY_DEADLINE;
    loop {
        let error = match check(&mut client).await {
            Ok(()) => break,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "the channel stayed on its silent connection for {RECOVERY_DEADLINE:?} \
             (last error: {error}); is HTTP/2 keepalive on in peer_endpoint?"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        relay.accepted.load(Ordering::SeqCst) >= 2,
        "recovered without a new connection"
    );
    eprintln!(
        "recovered {:?} after the connection went silent",
        silenced_at.elapsed()
    );
}
