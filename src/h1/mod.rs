//! The lean HTTP/1.1 path: for each connection, serves the common request (HTTP/1.1, origin
//! form, no body or a small `Content-Length` one, a usable token, an HTTP/1.1 upstream, plain or
//! TLS) itself, relaying the upstream's response bytes as they come; hands any other request to
//! pingora's proxy ([`crate::proxy`]), which has the same semantics with the general machinery.
//!
//! pingora spends most of its per-request CPU on what a sidecar does not need (a task pair and
//! channels per request, header maps rebuilt and re-serialized, a boxed future per phase); this
//! path does one parse, one write upstream, one write downstream per small request.

pub mod body;
mod conn;
mod decide;
mod exchange;
pub mod limits;
pub mod pool;
mod relay;
mod tickets;
mod timer;
pub mod tls;
pub mod wire;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Buf;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;
use tracing::debug;

use crate::forward::Answer;
use crate::metrics::METRICS;
use crate::proxy::{record, TokenProxy};
use crate::routes::{RouteState, RouteTable};
use crate::shutdown::InFlight;
use conn::{answer, read_more, Conn};
use decide::{Refusal, Step};
use exchange::Exchange;
use limits::ConnSlot;
use relay::{relay, Relayed};
use wire::Framing;

/// How long a connection may sit between requests (pingora's default keep-alive).
const KEEPALIVE: Duration = Duration::from_secs(60);
const READ_BUF: usize = 8 * 1024;
const RELAY_BUF: usize = 32 * 1024;
/// First body bytes up to this size go out in the same write as a head the proxy changed.
const SMALL_BODY: usize = 16 * 1024;
/// A body that keeps filling the relay buffer gets a bigger one, up to this: fewer, larger writes
/// for the caller to read. Given back after the response.
const RELAY_BUF_MAX: usize = 256 * 1024;

/// pingora's service application: the lean path in front of pingora's proxy.
pub struct H1App {
    proxy: Arc<HttpProxy<TokenProxy>>,
    routes: Arc<RouteTable>,
}

impl H1App {
    pub fn new(proxy: HttpProxy<TokenProxy>, routes: Arc<RouteTable>) -> Self {
        H1App {
            proxy: Arc::new(proxy),
            routes,
        }
    }
}

/// What the connection does after a request.
enum Next {
    KeepAlive,
    Close,
    /// The request at the front of `buf`, this many bytes of it, is for pingora.
    Pingora(usize),
}

#[async_trait]
impl ServerApp for H1App {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
        let limits = self.routes.callers();
        let listener = local.and_then(|l| self.routes.listener(&l));
        // Held for as long as this connection is open, whichever path serves it.
        let _slot = match listener {
            Some(listener) => {
                let route = listener.route();
                let metrics = route.as_ref().map(|r| &r.metrics);
                let Some(slot) = ConnSlot::take(listener, limits.max_connections, metrics) else {
                    debug!(
                        route = route.as_ref().map_or("", |r| r.route.name.as_str()),
                        max_connections = limits.max_connections,
                        "connection refused: the listener has max_connections open"
                    );
                    if let Some(m) = metrics {
                        m.connection_refused();
                    }
                    return None;
                };
                Some(slot)
            }
            None => None,
        };
        let mut conn = Conn::new(stream, shutdown, limits);
        loop {
            match self.serve(&mut conn, local).await {
                Next::KeepAlive => {}
                Next::Close => return None,
                Next::Pingora(len) => {
                    conn = conn.hand_to_pingora(&self.proxy, len, shutdown).await?;
                }
            }
        }
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await;
    }
}

impl H1App {
    /// Reads a whole request head, decides on it with the request policy ([`crate::forward`]),
    /// and answers it, serves it, or leaves it at the front of `conn.buf` for pingora.
    async fn serve(&self, conn: &mut Conn, local: Option<SocketAddr>) -> Next {
        let Some(step) = self.next_head(conn, local).await else {
            return Next::Close;
        };
        match step {
            Step::Lean(ex, route) => self.serve_lean(conn, ex, &route).await,
            Step::Pingora { reason, len, route } => {
                let name = route.route.name.as_str();
                debug!(route = name, reason, "request handed to pingora");
                METRICS
                    .pingora_handoffs
                    .with_label_values(&[name, reason])
                    .inc();
                Next::Pingora(len)
            }
            Step::Refuse(refusal) => {
                self.refuse(conn, refusal).await;
                Next::Close
            }
            Step::Partial => Next::Close,
        }
    }

    /// Reads until the bytes at the front of `conn.buf` are a whole head the policy decided on;
    /// `None` when the connection is to close first (the caller left, idled out, or did not send
    /// the head in time).
    async fn next_head(&self, conn: &mut Conn, local: Option<SocketAddr>) -> Option<Step> {
        loop {
            if !conn.buf.is_empty() {
                match decide::prepare(&self.routes, conn, local) {
                    Step::Partial => {
                        // The head began with the bytes just read (or left by the request
                        // before): its time counts from now.
                        conn.head_deadline.get_or_insert_with(|| {
                            tokio::time::Instant::now() + conn.limits.header_timeout
                        });
                    }
                    step => {
                        conn.head_deadline = None;
                        return Some(step);
                    }
                }
            }
            match read_more(conn).await {
                Ok(true) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    if let Some(route) = local.and_then(|l| self.routes.lookup(&l)) {
                        debug!(route = %route.route.name, "no whole request head within client_header_timeout; closing");
                        route.metrics.header_timeout();
                    }
                    return None;
                }
                _ => return None,
            }
        }
    }

    /// Answers a request the policy refused; the connection closes after it.
    async fn refuse(&self, conn: &mut Conn, refusal: Refusal) {
        let started = Instant::now();
        let name = refusal.route.as_ref().map_or("", |r| r.route.name.as_str());
        let status = refusal.answer.status();
        let body = refusal.answer.body(name, refusal.reason);
        let challenge = refusal.challenge.as_ref();
        let _ = answer(conn, refusal.route.as_deref(), status, &body, challenge).await;
        if let Some(route) = refusal.route.as_ref() {
            let took = started.elapsed();
            let method_path = refusal.method_path.as_ref();
            record(&self.routes, route, method_path, status, took, None);
        }
    }

    /// Serves a request the lean path took: its body, the exchange with the upstream, and the
    /// response relayed to the caller (or an error answered in its place).
    async fn serve_lean(&self, conn: &mut Conn, mut ex: Exchange, route: &RouteState) -> Next {
        let _in_flight = InFlight::start();
        if !read_body(conn, &mut ex).await {
            let took = ex.started.elapsed();
            record(&self.routes, route, ex.method_path.as_ref(), 0, took, None);
            return Next::Close;
        }
        let (status, next) = match exchange::exchange(conn, route, &mut ex).await {
            Ok((upstream, resp)) => {
                let keep = !ex.close && resp.framing != Framing::Close && !conn.shutdown.is_set();
                match relay(conn, upstream, &resp, keep, route, ex.started).await {
                    Ok(()) if keep => (resp.status, Next::KeepAlive),
                    Ok(()) | Err(Relayed::Broken) => (resp.status, Next::Close),
                    Err(Relayed::Unsent(kind)) => {
                        let name = route.route.name.as_str();
                        let body = kind.body(name, None);
                        let _ = answer(conn, Some(route), kind.status(), &body, None).await;
                        (kind.status(), Next::Close)
                    }
                }
            }
            Err(failure) => {
                let name = route.route.name.as_str();
                let kind = failure.answer();
                let reason = if kind == Answer::TokenUnavailable {
                    route.metrics.token_unavailable();
                    route.slot.as_ref().map(|s| s.unavailable_reason())
                } else {
                    debug!(route = name, error = %failure, "upstream request failed");
                    kind.count_upstream(name);
                    None
                };
                let body = kind.body(name, reason);
                let _ = answer(conn, Some(route), kind.status(), &body, None).await;
                (kind.status(), Next::Close)
            }
        };
        let done = Instant::now();
        conn.idle_since = done;
        let took = done.saturating_duration_since(ex.started);
        let method_path = ex.method_path.as_ref();
        record(
            &self.routes,
            route,
            method_path,
            status,
            took,
            ex.replay_outcome,
        );
        next
    }
}

/// Reads the rest of the request's body and appends it to `conn.out`: the body comes whole
/// before anything goes upstream, so that it can be sent again. `false`: the caller left or
/// stalled first.
async fn read_body(conn: &mut Conn, ex: &mut Exchange) -> bool {
    conn.buf.reserve(ex.body_len.saturating_sub(conn.buf.len()));
    let mut waited = false;
    while conn.buf.len() < ex.body_len {
        let Conn {
            io,
            buf,
            caller_timer,
            ..
        } = conn;
        let deadline = tokio::time::Instant::now() + KEEPALIVE;
        waited = true;
        match caller_timer.run(deadline, io.read_buf(buf)).await {
            Some(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
    if waited {
        // The upstream's time counts from when the whole request can go.
        ex.sent_at = Instant::now();
    }
    conn.out.extend_from_slice(&conn.buf[..ex.body_len]);
    conn.buf.advance(ex.body_len);
    true
}
