//! The `--http` port of a directory node: what operators and their tools watch.
//!
//! | path          | answers                                                           |
//! |---------------|-------------------------------------------------------------------|
//! | `/healthz`    | 200 while the process serves                                      |
//! | `/readyz`     | 200 when ready, else 503 and the reason (see [`crate::readiness`]) |
//! | `/metrics`    | the metrics, OpenMetrics text (see [`crate::metrics`])            |
//! | `/api/status` | nodes, servers, roles and the latest events, as JSON              |
//! | `/`           | the status page: HTML + CSS + a small script polling `/api/status` |
//!
//! Security is the client port's: with TLS, the node's certificate serves, a client
//! certificate signed by the cluster CA is required by the handshake, and every path
//! needs the `viewer` permission (a viewer, operator or admin client, or a node; an agent
//! certificate gets 403). In plain text (`--insecure`) anyone who reaches the port reads.
//! Everything is read-only: only `GET` and `HEAD` are served.
//!
//! Bounded: at most [`CONNECTIONS_MAX`] connections are served at once (more wait in the
//! kernel's backlog), request heads are at most [`HEAD_MAX_BYTES`], a request with a
//! body is refused (413) unread, and a client has [`HEAD_TIMEOUT`] to send each request
//! head. The page and its script are compiled into the binary: no CDN, no build step.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_proto::v1 as pb;
use baton_proto::v1::directory_server::Directory;
use baton_tls::{Identity, Permission, Tls};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;

use crate::auth::Caller;
use crate::node::Node;
use crate::service::DirectoryService;

/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 64;
/// Largest request head (request line and headers) read, in bytes.
pub const HEAD_MAX_BYTES: usize = 16 * 1024;
/// How long a client has to send a request head, the first or the next on a kept-alive
/// connection: an idle or slow client frees its slot after this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Events shown on the status page, newest first.
pub const PAGE_EVENTS_MAX: usize = 30;

const PAGE: &str = include_str!("status.html");

type Body = Full<Bytes>;

/// Serve the HTTP port on `listener` until the node shuts down: TLS with `tls`, plain
/// text without.
pub fn spawn(node: Arc<Node>, listener: TcpListener, tls: Option<Arc<Tls>>) {
    let addr = listener.local_addr().ok();
    tracing::info!(node = node.id, http = ?addr, tls = tls.is_some(), "status page, metrics and health served");
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    match tls {
        Some(tls) => {
            let mut incoming = baton_tls::net::incoming_http1(listener, tls);
            tokio::spawn(async move {
                let mut shutdown = node.manager.shutdown_signal();
                loop {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let stream = tokio::select! {
                        s = incoming.next() => s,
                        _ = crate::until_shutdown(&mut shutdown) => return,
                    };
                    let stream = match stream {
                        Some(Ok(s)) => s,
                        // A failed handshake is logged where it happens.
                        Some(Err(_)) => continue,
                        None => return,
                    };
                    let caller = {
                        let (_, session) = stream.get_ref();
                        match session.peer_certificates().and_then(|c| c.first()) {
                            Some(der) => Identity::from_der(der)
                                .map(Caller::Is)
                                .map_err(|e| format!("client {e}")),
                            None => Err("no client certificate".to_string()),
                        }
                    };
                    let node = node.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        connection(node, TokioIo::new(stream), caller).await;
                    });
                }
            });
        }
        None => {
            tokio::spawn(async move {
                let mut shutdown = node.manager.shutdown_signal();
                loop {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = crate::until_shutdown(&mut shutdown) => return,
                    };
                    let tcp = match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, do not spin.
                            tracing::warn!("http accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let node = node.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        connection(node, TokioIo::new(tcp), Ok(Caller::Anyone)).await;
                    });
                }
            });
        }
    }
}

/// Serve one connection's requests until it closes, or the node shuts down.
async fn connection<IO>(node: Arc<Node>, io: TokioIo<IO>, caller: Result<Caller, String>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut shutdown = node.manager.shutdown_signal();
    let service = hyper::service::service_fn(move |req| {
        let node = node.clone();
        let caller = caller.clone();
        async move { Ok::<_, Infallible>(handle(&node, caller, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(HEAD_MAX_BYTES)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r {
            tracing::debug!("http connection: {e}");
        },
        _ = crate::until_shutdown(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

fn reply(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

fn text(code: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    reply(code, "text/plain; charset=utf-8", body)
}

/// Answer one request.
async fn handle(
    node: &Arc<Node>,
    caller: Result<Caller, String>,
    req: Request<Incoming>,
) -> Response<Body> {
    let caller = match caller {
        Ok(c) => c,
        Err(e) => return text(StatusCode::UNAUTHORIZED, e),
    };
    let path = req.uri().path().to_string();
    if let Err(s) = caller.require(Permission::Viewer, &format!("reading {path}")) {
        return text(StatusCode::FORBIDDEN, s.message());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is read-only: only GET and HEAD", path),
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    let has_body = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || req.headers().contains_key(hyper::header::TRANSFER_ENCODING);
    if has_body {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "requests to this port carry no body",
        );
    }
    match path.as_str() {
        "/healthz" => text(StatusCode::OK, "ok"),
        "/readyz" => match node.readiness.get() {
            Ok(()) => text(StatusCode::OK, "ready"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
        },
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            node.metrics.encode(node),
        ),
        "/api/status" => reply(
            StatusCode::OK,
            "application/json",
            status_json(node, &caller).await.to_string(),
        ),
        "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        _ => text(StatusCode::NOT_FOUND, format!("no page at {path}")),
    }
}

/// Everything the status page shows, as JSON: the cluster's nodes (as `cluster status`
/// assembles them), and this node's applied view of servers, roles and history.
pub async fn status_json(node: &Arc<Node>, caller: &Caller) -> serde_json::Value {
    let service = DirectoryService { node: node.clone() };
    let mut req = tonic::Request::new(pb::ClusterStatusRequest { local: false });
    req.extensions_mut().insert(caller.clone());
    let cluster = match service.cluster_status(req).await {
        Ok(r) => {
            let r = r.into_inner();
            json!({
                "leader": r.leader,
                "term": r.term,
                "lease_ms": r.lease_ms,
                "grace_ms": r.grace_ms,
                "nodes": r.nodes.iter().map(|n| json!({
                    "id": n.id,
                    "address": n.address,
                    "voter": n.voter,
                    "state": n.state,
                    "term": n.term,
                    "last_applied": n.last_applied,
                    "lag": n.lag,
                    "sessions": n.sessions,
                })).collect::<Vec<_>>(),
            })
        }
        Err(e) => json!({ "error": e.message() }),
    };
    let ready = node.readiness.get();
    let mut view = node.read(|st| {
        json!({
            "revision": st.revision,
            "servers": st.servers.values().map(|s| {
                let led = if s.maintenance { "maintenance" } else { s.status.as_str() };
                json!({
                    "name": s.name,
                    "status": s.status.as_str(),
                    "maintenance": s.maintenance,
                    "led": led,
                    "main": s.main,
                    "kinds": s.kinds,
                    "roles": st.roles_on(&s.name),
                })
            }).collect::<Vec<_>>(),
            "roles": st.roles.values().map(|r| {
                // Which listed servers could take the role now (see `standby_readiness`).
                let readiness = st.standby_readiness(&r.name);
                json!({
                    "name": r.name,
                    "kind": r.kind,
                    "servers": r.servers,
                    "active": r.active,
                    "epoch": r.epoch,
                    "state": r.state().as_str(),
                    "reason": r.reason,
                    "failback": r.failback,
                    "standbys_ready": readiness.as_ref().map_or(0, |x| x.ready()),
                    "standbys": readiness.as_ref().map_or(0, |x| x.total()),
                    "at_risk": readiness.as_ref().is_some_and(|x| x.at_risk()),
                })
            }).collect::<Vec<_>>(),
            "events": st.history.iter().rev().take(PAGE_EVENTS_MAX).map(|e| json!({
                "revision": e.revision,
                "index": e.index,
                "time_ms": e.time_ms,
                "role": e.role,
                "cause": e.cause.as_str(),
                "from": e.from,
                "to": e.to,
                "epoch": e.epoch,
                "detail": e.detail,
            })).collect::<Vec<_>>(),
        })
    });
    view["node"] = json!(node.id);
    view["ready"] = json!(ready.is_ok());
    view["not_ready_reason"] = json!(ready.err());
    view["cluster"] = cluster;
    view
}

/// Where a node's HTTP port listens, for log lines and the demo.
pub fn url(addr: SocketAddr, tls: bool) -> String {
    format!("{}://{addr}/", if tls { "https" } else { "http" })
}
