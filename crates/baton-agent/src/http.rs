//! The agent's optional `--http` port: `/healthz` and `/metrics` (OpenMetrics text).
//!
//! Plain HTTP, read-only (GET and HEAD), for a local scraper: the `baton` binary binds
//! it to loopback unless given another host (see `baton agent --help`). It serves
//! nothing that changes the agent, and nothing secret: role names, their states, lease
//! timing. Bounded like the directory's HTTP port: [`CONNECTIONS_MAX`] connections,
//! request heads of at most [`HEAD_MAX_BYTES`], no request bodies.
//!
//! | metric | meaning |
//! |---|---|
//! | `baton_agent_roles{role,state}` | 1 per role process the agent holds, by state (`running`, `stopping`, `backoff`, `failed`) |
//! | `baton_agent_session` | 1 while a session with a directory node is open |
//! | `baton_agent_last_renewal_ack_age_seconds` | time since the last acknowledged renewal (-1: none yet) |
//! | `baton_agent_fence_margin_seconds` | time left before the agent must start stopping its roles (negative: fenced) |
//! | `baton_agent_fences_total` | roles stopped because the lease ran out |
//! | `baton_agent_restarts_total` | role restarts scheduled after a crash |
//! | `baton_agent_fence_reports_dropped_total` | fence reports dropped unsent (more than 64 pending) |

use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::clock::boot_ms;

/// Connections served at once; more wait in the kernel's backlog.
pub const CONNECTIONS_MAX: usize = 16;
/// Largest request head read, in bytes.
pub const HEAD_MAX_BYTES: usize = 16 * 1024;
/// How long a client has to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

type Label = Vec<(&'static str, String)>;

/// What the agent's loop publishes after every step, for the next scrape.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// (role, state) of every role process held.
    pub roles: Vec<(String, &'static str)>,
    /// When the last renewal was acknowledged (boot ms), if one was.
    pub last_ack_ms: Option<u64>,
    /// When the agent must start stopping its roles (boot ms; 0: no valid lease).
    pub stop_at_ms: u64,
    /// Whether a session is open.
    pub session: bool,
}

/// The agent's metrics.
pub struct AgentMetrics {
    registry: Registry,
    /// Roles stopped because the lease ran out.
    pub fences: Counter,
    /// Role restarts scheduled after a crash.
    pub restarts: Counter,
    /// Fence reports dropped before the directory recorded them (too many pending).
    pub fence_reports_dropped: Counter,
    roles: Family<Label, Gauge>,
    session: Gauge,
    last_ack_age: Gauge<f64, AtomicU64>,
    fence_margin: Gauge<f64, AtomicU64>,
    /// The latest view the loop published.
    view: Mutex<View>,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentMetrics")
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut m = AgentMetrics {
            registry: Registry::default(),
            fences: Counter::default(),
            restarts: Counter::default(),
            fence_reports_dropped: Counter::default(),
            roles: Family::default(),
            session: Gauge::default(),
            last_ack_age: Gauge::default(),
            fence_margin: Gauge::default(),
            view: Mutex::new(View::default()),
        };
        let r = &mut m.registry;
        r.register(
            "baton_agent_roles",
            "Role processes held, by state",
            m.roles.clone(),
        );
        r.register(
            "baton_agent_session",
            "1 while a session with a directory node is open",
            m.session.clone(),
        );
        r.register(
            "baton_agent_last_renewal_ack_age_seconds",
            "Time since the last acknowledged renewal (-1: none yet)",
            m.last_ack_age.clone(),
        );
        r.register(
            "baton_agent_fence_margin_seconds",
            "Time left before the agent must stop its roles (negative: fenced)",
            m.fence_margin.clone(),
        );
        r.register(
            "baton_agent_fences",
            "Roles stopped because the lease ran out",
            m.fences.clone(),
        );
        r.register(
            "baton_agent_restarts",
            "Role restarts scheduled after a crash",
            m.restarts.clone(),
        );
        r.register(
            "baton_agent_fence_reports_dropped",
            "Fence reports dropped before the directory recorded them (too many pending)",
            m.fence_reports_dropped.clone(),
        );
        m
    }
}

impl AgentMetrics {
    /// Record the loop's latest view.
    pub fn publish(&self, view: View) {
        *self.view.lock().expect("view lock") = view;
    }

    /// The OpenMetrics text, gauges computed from the latest view.
    pub fn encode(&self) -> String {
        let view = self.view.lock().expect("view lock").clone();
        let now = boot_ms();
        self.roles.clear();
        for (role, state) in &view.roles {
            self.roles
                .get_or_create(&vec![("role", role.clone()), ("state", state.to_string())])
                .set(1);
        }
        self.session.set(i64::from(view.session));
        self.last_ack_age.set(match view.last_ack_ms {
            Some(t) => now.saturating_sub(t) as f64 / 1000.0,
            None => -1.0,
        });
        self.fence_margin
            .set((view.stop_at_ms as f64 - now as f64) / 1000.0);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn reply(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

fn answer<B>(metrics: &AgentMetrics, req: &Request<B>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "read-only: only GET and HEAD\n".into(),
        );
    }
    if req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || req.headers().contains_key(hyper::header::TRANSFER_ENCODING)
    {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            TEXT,
            "requests to this port carry no body\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n".into()),
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        p => reply(StatusCode::NOT_FOUND, TEXT, format!("no page at {p}\n")),
    }
}

/// Serve `/healthz` and `/metrics` on `listener` until the task is dropped.
pub fn spawn(listener: TcpListener, metrics: Arc<AgentMetrics>) -> tokio::task::JoinHandle<()> {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req| {
                    let r = answer(&metrics, &req);
                    async move { Ok::<_, Infallible>(r) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .max_buf_size(HEAD_MAX_BYTES)
                    .serve_connection(TokioIo::new(tcp), service);
                if let Err(e) = conn.await {
                    tracing::debug!("http connection: {e}");
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_documented() {
        let doc = include_str!("../../../docs/operating.md");
        let start = doc.find("**Agents.**").expect("the agents' section");
        let mut doc: Vec<String> = doc[start..]
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`'))
            .map(|(name, _)| name.to_string())
            .collect();
        doc.sort();
        let m = AgentMetrics::default();
        // A family without series is not shown: hold one role.
        m.publish(View {
            roles: vec![("cam".into(), "running")],
            ..View::default()
        });
        let mut served: Vec<String> = m
            .encode()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_string(),
            })
            .collect();
        served.sort();
        assert_eq!(
            served, doc,
            "docs/operating.md and the agent's metrics differ"
        );
    }

    #[test]
    fn the_view_becomes_gauges() {
        let m = AgentMetrics::default();
        let now = boot_ms();
        m.publish(View {
            roles: vec![("cam".into(), "running")],
            last_ack_ms: Some(now),
            stop_at_ms: now + 60_000,
            session: true,
        });
        m.fences.inc();
        let text = m.encode();
        assert!(
            text.contains("baton_agent_roles{role=\"cam\",state=\"running\"} 1"),
            "{text}"
        );
        assert!(text.contains("baton_agent_session 1"), "{text}");
        assert!(text.contains("baton_agent_fences_total 1"), "{text}");
        let margin: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("baton_agent_fence_margin_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(margin > 50.0 && margin <= 60.0, "{margin}");
    }
}
