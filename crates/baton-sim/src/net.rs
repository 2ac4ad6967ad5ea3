//! tonic over turmoil's simulated TCP: a channel factory for clients (and for the
//! directory's own peer channels, through `NodeEnv::connect`) and an incoming-connection
//! stream for servers.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use baton_directory::env::ChannelFactory;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

/// Port every simulated directory node listens on.
pub const PORT: u16 = 7000;

/// Channels whose connections are turmoil TCP streams.
pub fn channel_factory() -> ChannelFactory {
    Arc::new(|e: Endpoint| {
        e.connect_with_connector_lazy(tower::service_fn(|uri: Uri| async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::other(format!("no host in {uri}")))?
                .to_string();
            let port = uri.port_u16().unwrap_or(80);
            let s = turmoil::net::TcpStream::connect(format!("{host}:{port}")).await?;
            Ok::<_, io::Error>(TokioIo::new(s))
        }))
    })
}

/// A lazy channel to `host` (a turmoil host name) on [`PORT`].
pub fn channel(host: &str) -> Channel {
    let e = Endpoint::from_shared(format!("http://{host}:{PORT}"))
        .expect("static URI")
        .connect_timeout(Duration::from_millis(300));
    (channel_factory())(e)
}

/// A server-side turmoil connection that tonic can serve.
pub struct Conn(pub turmoil::net::TcpStream);

impl Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections accepted by `listener`, as the stream `baton_directory::serve` takes.
pub fn incoming(
    listener: turmoil::net::TcpListener,
) -> impl futures::Stream<Item = io::Result<Conn>> + Send + 'static {
    futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| Conn(s));
        Some((next, l))
    })
}
