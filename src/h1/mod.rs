//! The lean HTTP/1.1 path: for each connection, serves the common request (HTTP/1.1, origin
//! form, no body or a small `Content-Length` one, a usable token, an HTTP/1.1 upstream, plain or
//! TLS) itself, relaying the upstream's response bytes as they come; hands any other request to
//! pingora's proxy ([`crate::proxy`]), which has the same semantics with the general machinery.
//!
//! pingora spends most of its per-request CPU on what a sidecar does not need (a task pair and
//! channels per request, header maps rebuilt and re-serialized, a boxed future per phase); this
//! path does one parse, one write upstream, one write downstream per small request.

pub mod limits;
pub mod pool;
mod timer;
pub mod tls;
pub mod wire;

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use crate::config::CallerLimits;
use crate::forward::{self, Answer, Plan};
use crate::metrics::METRICS;
use crate::proxy::{record, TokenProxy};
use crate::routes::{RouteState, RouteTable};
use crate::shutdown::InFlight;
use crate::verify::Check;
use limits::{write_to_caller, ConnSlot};
use timer::LazyTimer;
use tls::{Handshake, UpStream};
use wire::{Framing, ResponseHead, Rewrite, WireError};

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

/// One caller connection and the buffers reused by each of its requests.
struct Conn {
    io: Stream,
    /// Bytes read from the caller and not yet consumed.
    buf: BytesMut,
    /// The request as it goes upstream: head, then body.
    out: Vec<u8>,
    /// Where the token header line starts in `out`, to put a fresh one in for a replay.
    token_at: Option<usize>,
    /// The upstream's response bytes, read `relay_len` at a time.
    relay: Vec<u8>,
    /// When the caller's connection last became idle: the keep-alive time counts from here.
    idle_since: Instant,
    /// Times out waits for the caller.
    caller_timer: LazyTimer,
    /// Times out waits for the upstream.
    upstream_timer: LazyTimer,
    shutdown: Shutdown,
    /// The caller limits in force when the connection was accepted.
    limits: CallerLimits,
    /// When the request head being read must be complete; `None` while the connection idles
    /// between requests (from the accept, the first request's head counts).
    head_deadline: Option<tokio::time::Instant>,
}

/// The server's shutdown signal, with one future per connection rather than one per wait.
struct Shutdown {
    watch: ShutdownWatch,
    /// Done once the signal came; `None` after that.
    signal: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Shutdown {
    fn new(watch: &ShutdownWatch) -> Self {
        let mut changes = watch.clone();
        Shutdown {
            watch: watch.clone(),
            signal: Some(Box::pin(async move {
                // A closed channel means the server is gone: shut down as well.
                let _ = changes.changed().await;
            })),
        }
    }

    fn is_set(&self) -> bool {
        *self.watch.borrow()
    }

    fn poll_signal(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(signal) = self.signal.as_mut() {
            if signal.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.signal = None;
        }
        Poll::Ready(())
    }
}

/// What the connection does after a request.
enum Next {
    KeepAlive,
    Close,
    /// The request at the front of `buf`, this many bytes of it, is for pingora.
    Pingora(usize),
}

/// What the bytes at the front of `conn.buf` are.
enum Step {
    /// Not yet a whole head.
    Partial,
    /// The proxy answers the request itself, and the connection closes.
    Refuse(Refusal),
    /// The lean path serves it: its upstream head is in `conn.out`, its head consumed.
    Lean(Exchange, Arc<RouteState>),
    /// pingora serves it; `len` bytes of `conn.buf` are this request's (the rest, pipelined
    /// requests, stay for after it).
    Pingora {
        reason: &'static str,
        len: usize,
        route: Arc<RouteState>,
    },
}

/// A request refused by the policy.
struct Refusal {
    answer: Answer,
    route: Option<Arc<RouteState>>,
    method_path: Option<(String, String)>,
    /// The body's `reason` and the `WWW-Authenticate` challenge, for a refused token.
    reason: Option<&'static str>,
    challenge: Option<http::HeaderValue>,
}

/// How relaying a response failed.
enum Relayed {
    /// Nothing reached the caller yet: it can still be answered.
    Unsent(Answer),
    /// The caller got part of the response; its connection must close.
    Broken,
}

/// Why no upstream response arrived; decides the caller's status and the error metric.
#[derive(Debug, thiserror::Error)]
enum UpstreamFailure {
    #[error("the upstream host has not resolved yet")]
    NotResolved,
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    #[error("timed out waiting for the upstream")]
    ReadTimeout,
    #[error("{0}")]
    Io(#[source] io::Error),
    #[error("the upstream closed the connection before answering")]
    Closed,
    #[error("{0}")]
    Wire(#[source] WireError),
    #[error("no fresh token for the replay")]
    NoFreshToken,
}

impl UpstreamFailure {
    /// What the caller is told.
    fn answer(&self) -> Answer {
        match self {
            UpstreamFailure::NotResolved | UpstreamFailure::Connect(_) => Answer::UpstreamConnect,
            UpstreamFailure::Tls(_) => Answer::UpstreamTls,
            UpstreamFailure::ConnectTimeout | UpstreamFailure::ReadTimeout => {
                Answer::UpstreamTimeout
            }
            UpstreamFailure::Io(_) | UpstreamFailure::Closed | UpstreamFailure::Wire(_) => {
                Answer::UpstreamOther
            }
            UpstreamFailure::NoFreshToken => Answer::TokenUnavailable,
        }
    }
}

/// A request the lean path took, from its parsed head.
struct Exchange {
    started: Instant,
    /// When the request could go upstream: `started`, or when the last body bytes came.
    sent_at: Instant,
    idempotent: bool,
    is_head: bool,
    close: bool,
    /// The token generation injected, `None` when the caller's own header was kept.
    generation: Option<u64>,
    body_len: usize,
    /// Method and path, kept only when the access log is on.
    method_path: Option<(String, String)>,
    replayed: bool,
    replay_outcome: Option<&'static str>,
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
        let now = Instant::now();
        let far = tokio::time::Instant::from_std(now) + KEEPALIVE;
        let mut conn = Conn {
            io: stream,
            buf: BytesMut::with_capacity(READ_BUF),
            out: Vec::new(),
            token_at: None,
            relay: Vec::new(),
            idle_since: now,
            caller_timer: LazyTimer::new(far),
            upstream_timer: LazyTimer::new(far),
            shutdown: Shutdown::new(shutdown),
            limits,
            head_deadline: Some(tokio::time::Instant::from_std(now) + limits.header_timeout),
        };
        loop {
            match self.serve(&mut conn, local).await {
                Next::KeepAlive => {}
                Next::Close => return None,
                Next::Pingora(len) => conn = self.to_pingora(conn, len, shutdown).await?,
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
    #[allow(clippy::too_many_lines)] // to be split with the rest of this file (issue 17)
    async fn serve(&self, conn: &mut Conn, local: Option<SocketAddr>) -> Next {
        let step = loop {
            if !conn.buf.is_empty() {
                match self.prepare(conn, local) {
                    Step::Partial => {
                        // The head began with the bytes just read (or left by the request
                        // before): its time counts from now.
                        conn.head_deadline.get_or_insert_with(|| {
                            tokio::time::Instant::now() + conn.limits.header_timeout
                        });
                    }
                    step => {
                        conn.head_deadline = None;
                        break step;
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
                    return Next::Close;
                }
                _ => return Next::Close,
            }
        };
        let (head, route) = match step {
            Step::Lean(head, route) => (head, route),
            Step::Pingora { reason, len, route } => {
                let name = route.route.name.as_str();
                debug!(route = name, reason, "request handed to pingora");
                METRICS
                    .pingora_handoffs
                    .with_label_values(&[name, reason])
                    .inc();
                return Next::Pingora(len);
            }
            Step::Refuse(refusal) => {
                let started = Instant::now();
                let name = refusal.route.as_ref().map_or("", |r| r.route.name.as_str());
                let status = refusal.answer.status();
                let body = refusal.answer.body(name, refusal.reason);
                let challenge = refusal.challenge.as_ref();
                let _ = answer(conn, refusal.route.as_deref(), status, &body, challenge).await;
                if let Some(route) = refusal.route.as_ref() {
                    let took = started.elapsed();
                    record(
                        &self.routes,
                        route,
                        refusal.method_path.as_ref(),
                        status,
                        took,
                        None,
                    );
                }
                return Next::Close;
            }
            Step::Partial => return Next::Close,
        };
        let _in_flight = InFlight::start();
        let mut ex = head;
        // The body comes whole before anything goes upstream, so that it can be sent again.
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
                _ => {
                    record(
                        &self.routes,
                        &route,
                        ex.method_path.as_ref(),
                        0,
                        ex.started.elapsed(),
                        None,
                    );
                    return Next::Close;
                }
            }
        }
        if waited {
            // The upstream's time counts from when the whole request can go.
            ex.sent_at = Instant::now();
        }
        conn.out.extend_from_slice(&conn.buf[..ex.body_len]);
        conn.buf.advance(ex.body_len);

        let (status, next) = match self.exchange(conn, &route, &mut ex).await {
            Ok((upstream, resp)) => {
                let keep = !ex.close && resp.framing != Framing::Close && !conn.shutdown.is_set();
                match relay(conn, upstream, &resp, keep, &route, ex.started).await {
                    Ok(()) if keep => (resp.status, Next::KeepAlive),
                    Ok(()) | Err(Relayed::Broken) => (resp.status, Next::Close),
                    Err(Relayed::Unsent(kind)) => {
                        let name = route.route.name.as_str();
                        let body = kind.body(name, None);
                        let _ = answer(conn, Some(&route), kind.status(), &body, None).await;
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
                let _ = answer(conn, Some(&route), kind.status(), &body, None).await;
                (kind.status(), Next::Close)
            }
        };
        let done = Instant::now();
        conn.idle_since = done;
        let took = done.saturating_duration_since(ex.started);
        record(
            &self.routes,
            &route,
            ex.method_path.as_ref(),
            status,
            took,
            ex.replay_outcome,
        );
        next
    }

    /// Sends the request upstream and reads the response head, reconnecting once for a stale
    /// pooled connection or a failed connect (for requests that are safe to repeat), and sending
    /// it again once with a fresh token if the upstream rejects the token.
    async fn exchange(
        &self,
        conn: &mut Conn,
        route: &RouteState,
        ex: &mut Exchange,
    ) -> Result<(UpStream, ResponseHead), UpstreamFailure> {
        let target = &route.target;
        let addr = target.addr().ok_or(UpstreamFailure::NotResolved)?;
        let mut connect_retried = false;
        let mut reuse_retried = false;
        loop {
            let pooled = target.pool.take(ex.started);
            let reused = pooled.is_some();
            let mut up = match pooled {
                Some(c) => c,
                None => match connect(addr, route).await {
                    Ok(c) => c,
                    Err(_) if !connect_retried && ex.idempotent => {
                        connect_retried = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            // A new connection may have taken a while: the upstream's time starts after it.
            let sent_at = if reused { ex.sent_at } else { Instant::now() };
            let timeout = target.read_timeout();
            let deadline = tokio::time::Instant::from_std(sent_at) + timeout;
            let resp = match send(&mut up, conn, ex.is_head, deadline, timeout).await {
                Ok(resp) => resp,
                // A pooled connection the upstream closed meanwhile: nothing was processed.
                Err(UpstreamFailure::Closed | UpstreamFailure::Io(_))
                    if reused && !reuse_retried && ex.idempotent =>
                {
                    reuse_retried = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(replay) = route.route.replay.as_ref() {
                if replay.on_status.contains(&resp.status) {
                    if ex.replayed {
                        ex.replay_outcome = Some("rejected_again");
                    } else if let Some(generation) = ex.generation {
                        if ex.body_len > replay.max_body {
                            ex.replay_outcome = Some("not_replayable");
                        } else {
                            // The rejected response is dropped with its connection.
                            drop(up);
                            ex.replayed = true;
                            let Some(slot) = route.slot.as_ref() else {
                                return Err(UpstreamFailure::NoFreshToken);
                            };
                            slot.invalidate(generation);
                            let fresh = slot
                                .wait_newer(generation, route.format_index, route.fetch_timeout)
                                .await;
                            let Some(fresh) = fresh else {
                                ex.replay_outcome = Some("no_token");
                                return Err(UpstreamFailure::NoFreshToken);
                            };
                            debug!(route = %route.route.name, "replaying with a fresh token");
                            ex.generation = Some(fresh.generation);
                            ex.sent_at = Instant::now();
                            replace_token(conn, route, fresh.value.as_bytes(), ex.body_len);
                            continue;
                        }
                    }
                } else if ex.replayed {
                    ex.replay_outcome = Some("success");
                }
            }
            return Ok((up, resp));
        }
    }

    /// Hands the connection to pingora's proxy for the request in `conn.buf`; returns it if
    /// pingora keeps it open.
    async fn to_pingora(&self, conn: Conn, len: usize, shutdown: &ShutdownWatch) -> Option<Conn> {
        let Conn {
            io,
            mut buf,
            out,
            relay,
            caller_timer,
            upstream_timer,
            shutdown: signal,
            limits,
            ..
        } = conn;
        let mut session = ServerSession::new_http1(io);
        session.set_keepalive((!*shutdown.borrow()).then_some(KEEPALIVE.as_secs()));
        session.set_write_timeout(Some(limits.write_timeout));
        // pingora gets this request's bytes only: pipelined requests after it stay here, for the
        // lean path to read once pingora gives the connection back.
        let prefix = buf.split_to(len.min(buf.len()));
        if !prefix.is_empty() {
            let mut settings = HttpPersistentSettings::for_session(&session);
            settings.set_pipelined_prefix(prefix);
            settings.apply_to_session(&mut session);
        }
        let reused = self.proxy.process_new_http(session, shutdown).await?;
        let (io, _) = reused.consume();
        if buf.capacity() == 0 {
            buf = BytesMut::with_capacity(READ_BUF);
        }
        Some(Conn {
            io,
            buf,
            out,
            token_at: None,
            relay,
            idle_since: Instant::now(),
            caller_timer,
            upstream_timer,
            shutdown: signal,
            limits,
            head_deadline: None,
        })
    }
}

impl H1App {
    /// Looks at the head at the front of `conn.buf`: refuses it, leaves it to pingora, or, when
    /// this path takes it, writes the upstream head into `conn.out` and consumes the head from
    /// `conn.buf` (the body stays).
    fn prepare(&self, conn: &mut Conn, local: Option<SocketAddr>) -> Step {
        let mut headers = [httparse::EMPTY_HEADER; forward::MAX_HEADERS];
        let refuse = |answer, route, method_path| {
            Step::Refuse(Refusal {
                answer,
                route,
                method_path,
                reason: None,
                challenge: None,
            })
        };
        let (head_len, req) = match forward::parse_head(&conn.buf, &mut headers) {
            Ok(Some(head)) => head,
            Ok(None) => return Step::Partial,
            Err(answer) => {
                return refuse(answer, local.and_then(|l| self.routes.lookup(&l)), None);
            }
        };
        let Some(route) = local.and_then(|l| self.routes.lookup(&l)) else {
            return refuse(Answer::RouteNotConfigured, None, None);
        };
        let method_path = self.routes.access_log().then(|| {
            let path = req.path.unwrap_or("/");
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            (req.method.unwrap_or("").to_string(), path.to_string())
        });
        let view = route.view();
        let plan = match forward::plan(&req, &view) {
            Ok(plan) => plan,
            Err(answer) => return refuse(answer, Some(route.clone()), method_path),
        };
        let started = Instant::now();
        let r = &route.route;
        let lean = self.lean_refusal(&plan, &route);
        // A verify route's check ([`crate::verify`]), for the requests this path serves; pingora's
        // path makes the same check on the others.
        let mut claims = Vec::new();
        if let (None, Some(v)) = (lean, route.verifier.as_ref()) {
            match v.check(req.headers, plan.method, plan.path_and_query, true) {
                Check::Allowed(ok) => claims = v.claim_fields(&ok),
                Check::Denied(d) => {
                    return Step::Refuse(Refusal {
                        answer: d.answer(),
                        challenge: d.challenge(&route.route.name),
                        reason: Some(d.description()),
                        route: Some(route),
                        method_path,
                    })
                }
                // pingora's path waits for the keys to be fetched.
                Check::NeedKeys => {
                    let len = request_len(&conn.buf, head_len, &plan);
                    return Step::Pingora {
                        reason: "jwks_refetch",
                        len,
                        route,
                    };
                }
            }
        }
        let injection = match lean {
            Some(reason) => None.ok_or(reason),
            None if !plan.inject => Ok(None),
            None => match route.slot.as_ref() {
                // A verify route that strips the caller's token injects none.
                None => Ok(None),
                Some(slot) => {
                    let now = tokio::time::Instant::from_std(started);
                    // pingora's path waits for a token being replaced, or answers 503.
                    slot.header_value(route.format_index, now)
                        .map(Some)
                        .ok_or("no_token")
                }
            },
        };
        let injection = match injection {
            Ok(injection) => injection,
            Err(reason) => {
                let len = request_len(&conn.buf, head_len, &plan);
                return Step::Pingora { reason, len, route };
            }
        };
        let up = &route.target.upstream;
        let rewrite = Rewrite {
            host: route.target.host_header.as_bytes(),
            base_path: up.base_path.as_bytes(),
            inject: injection.as_ref().map(|i| (&r.header, i.value.as_bytes())),
            claims: &claims,
        };
        conn.token_at = wire::write_upstream_head(&req, &plan, &rewrite, &mut conn.out);
        let exchange = Exchange {
            started,
            sent_at: started,
            idempotent: plan.idempotent,
            is_head: plan.is_head,
            close: plan.close,
            generation: injection.as_ref().map(|i| i.generation),
            body_len: match plan.body {
                forward::Body::Length(n) => usize::try_from(n).unwrap_or(usize::MAX),
                _ => 0,
            },
            method_path,
            replayed: false,
            replay_outcome: None,
        };
        conn.buf.advance(head_len);
        Step::Lean(exchange, route)
    }

    /// Why the lean path leaves an accepted request to pingora, as a metric label; `None` when
    /// it serves it.
    fn lean_refusal(&self, plan: &Plan<'_>, route: &RouteState) -> Option<&'static str> {
        if !self.routes.lean_path() {
            return Some("disabled");
        }
        if let Some(reason) = route.target.lean_refusal() {
            return Some(reason);
        }
        Some(if plan.http10 {
            "http_version"
        } else if plan.absolute_form {
            "absolute_form"
        } else if plan.has_upgrade {
            "upgrade"
        } else if plan.expect_continue {
            "expect"
        } else {
            match plan.body {
                forward::Body::Chunked => "transfer_encoding",
                forward::Body::Length(n) if n > wire::MAX_BODY as u64 => "large_body",
                _ => return None,
            }
        })
    }
}

/// How many bytes at the front of `buf` belong to the request whose head is `head_len` long: the
/// head and as much of its body as has come. An upgrade takes everything after it.
fn request_len(buf: &[u8], head_len: usize, plan: &Plan<'_>) -> usize {
    if plan.has_upgrade {
        return buf.len();
    }
    let body = &buf[head_len..];
    head_len
        + match plan.body {
            forward::Body::None => 0,
            forward::Body::Length(n) => body.len().min(usize::try_from(n).unwrap_or(usize::MAX)),
            forward::Body::Chunked => {
                let mut scanner = wire::ChunkedScanner::default();
                scanner.scan(body).unwrap_or(body.len())
            }
        }
}

/// Puts a fresh token in place of the one in `conn.out`, keeping the body after the head.
fn replace_token(conn: &mut Conn, route: &RouteState, value: &[u8], body_len: usize) {
    let Some(at) = conn.token_at else { return };
    let body_start = conn.out.len() - body_len;
    let body = conn.out.split_off(body_start);
    conn.out.truncate(at);
    conn.out
        .extend_from_slice(route.route.header.as_str().as_bytes());
    conn.out.extend_from_slice(b": ");
    conn.out.extend_from_slice(value);
    conn.out.extend_from_slice(b"\r\n\r\n");
    conn.out.extend_from_slice(&body);
}

/// Reads more of the caller's bytes. `Ok(false)`: the caller closed, the connection idled out
/// between requests, or the server is shutting down while it was idle. `TimedOut`: the head
/// being read was not complete by its deadline.
async fn read_more(conn: &mut Conn) -> io::Result<bool> {
    let idle = conn.buf.is_empty();
    if idle && conn.shutdown.is_set() {
        return Ok(false);
    }
    conn.buf.reserve(READ_BUF / 2);
    let Conn {
        io,
        buf,
        idle_since,
        caller_timer,
        shutdown,
        head_deadline,
        ..
    } = conn;
    // A head, once begun, has one deadline for all of its reads: a byte now and then must not
    // keep it open.
    let head = *head_deadline;
    caller_timer.set(match head {
        Some(deadline) => deadline,
        None => tokio::time::Instant::from_std(*idle_since) + KEEPALIVE,
    });
    let mut read = pin!(io.read_buf(buf));
    poll_fn(|cx| {
        if let Poll::Ready(read) = read.as_mut().poll(cx) {
            return Poll::Ready(read.map(|n| n > 0));
        }
        if idle && shutdown.poll_signal(cx).is_ready() {
            return Poll::Ready(Ok(false));
        }
        caller_timer.poll_expired(cx).map(|()| match head {
            Some(_) => Err(io::ErrorKind::TimedOut.into()),
            None => Ok(false),
        })
    })
    .await
}

/// Opens a connection to the route's upstream, with the TLS handshake for an `https://` one;
/// `connect_timeout` bounds both together, as on pingora's path.
async fn connect(addr: SocketAddr, route: &RouteState) -> Result<UpStream, UpstreamFailure> {
    let target = &route.target;
    let metrics = &route.metrics;
    let deadline = tokio::time::Instant::now() + target.connect_timeout();
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(UpstreamFailure::Connect(e)),
        Err(_) => return Err(UpstreamFailure::ConnectTimeout),
    };
    let _ = tcp.set_nodelay(true);
    metrics.upstream_connection_opened();
    let Some(tls) = target.lean_tls() else {
        return Ok(UpStream::Plain(tcp));
    };
    match tokio::time::timeout_at(deadline, tls.handshake(tcp)).await {
        Ok(Ok((stream, kind))) => {
            metrics.tls_handshake(match kind {
                Handshake::Full => "full",
                Handshake::Resumed => "resumed",
            });
            Ok(stream)
        }
        Ok(Err(e)) => {
            metrics.tls_handshake("failed");
            Err(UpstreamFailure::Tls(e))
        }
        Err(_) => {
            metrics.tls_handshake("failed");
            Err(UpstreamFailure::ConnectTimeout)
        }
    }
}

/// Writes `conn.out` to the upstream and reads the response head into `conn.relay` (skipping
/// interim 1xx responses); the head and whatever body bytes came with it stay there.
///
/// The write and the first read end by `deadline`; each further read gets `timeout` of its own.
async fn send(
    up: &mut UpStream,
    conn: &mut Conn,
    is_head: bool,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<ResponseHead, UpstreamFailure> {
    let Conn {
        out,
        relay,
        upstream_timer: timer,
        ..
    } = conn;
    // A TLS stream may keep the end of what it encrypted until flushed (nothing to do for TCP).
    let write = async {
        up.write_all(out).await?;
        up.flush().await
    };
    match timer.run(deadline, write).await {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(UpstreamFailure::Io(e)),
        None => return Err(UpstreamFailure::ReadTimeout),
    }
    relay.clear();
    let mut deadline = deadline;
    loop {
        if relay.capacity() - relay.len() < 1024 {
            relay.reserve(RELAY_BUF);
        }
        match timer.run(deadline, up.read_buf(relay)).await {
            Some(Ok(0)) => return Err(UpstreamFailure::Closed),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(UpstreamFailure::Io(e)),
            None => return Err(UpstreamFailure::ReadTimeout),
        }
        deadline = tokio::time::Instant::now() + timeout;
        loop {
            match wire::parse_response(relay, is_head) {
                Ok(Some(head)) if (100..200).contains(&head.status) => {
                    // Interim responses are not relayed: the caller did not ask for them.
                    relay.drain(..head.head_len);
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) => break,
                Err(e) => return Err(UpstreamFailure::Wire(e)),
            }
        }
    }
}

/// Relays the response whose head is in `conn.relay`, then returns the upstream connection to
/// the pool if it can carry another request. An error means the caller got an incomplete
/// response and its connection must close.
async fn relay(
    conn: &mut Conn,
    mut up: UpStream,
    resp: &ResponseHead,
    keep_caller: bool,
    route: &RouteState,
    started: Instant,
) -> Result<(), Relayed> {
    let Conn {
        io,
        relay,
        upstream_timer: timer,
        caller_timer,
        limits,
        ..
    } = conn;
    let write_timeout = limits.write_timeout;
    let head_len = resp.head_len;
    let name = route.route.name.as_str();
    // A body that is broken from its first bytes is answered with a 502 instead.
    let mut body = BodyEnd::new(resp.framing);
    let first = match body.accept(&relay[head_len..]) {
        Ok(n) => n,
        Err(e) => {
            debug!(route = name, error = %e, "upstream response unusable");
            Answer::UpstreamOther.count_upstream(name);
            return Err(Relayed::Unsent(Answer::UpstreamOther));
        }
    };
    let mut rendered = Vec::new();
    let head = if resp.as_is {
        &relay[..head_len]
    } else {
        if let Err(e) = wire::write_response_head(&relay[..head_len], &mut rendered) {
            Answer::UpstreamOther.count_upstream(name);
            debug!(route = name, error = %e, "upstream response unusable");
            return Err(Relayed::Unsent(Answer::UpstreamOther));
        }
        &rendered[..]
    };
    let broken = |_| Relayed::Broken;
    let add_close = !(keep_caller || resp.has_connection);
    let mut out = Vec::new();
    let parts: &[&[u8]] = if resp.as_is && !add_close && resp.has_date {
        // The common case: the head and the first body bytes as they came, in one write.
        &[&relay[..head_len + first]]
    } else {
        out.reserve(head.len() + 64 + first.min(SMALL_BODY));
        out.extend_from_slice(&head[..head.len() - 2]);
        if add_close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        if !resp.has_date {
            out.extend_from_slice(&wire::date_line());
        }
        out.extend_from_slice(b"\r\n");
        let body = &relay[head_len..head_len + first];
        if body.len() <= SMALL_BODY {
            out.extend_from_slice(body);
            &[&out]
        } else {
            &[&out, body]
        }
    };
    let metrics = Some(&route.metrics);
    write_to_caller(io, caller_timer, write_timeout, metrics, parts)
        .await
        .map_err(broken)?;
    let mut clean = head_len + first == relay.len();
    let timeout = route.target.read_timeout();
    let mut want = RELAY_BUF;
    while !body.done() {
        relay.clear();
        relay.reserve(want);
        let deadline = tokio::time::Instant::now() + timeout;
        let n = match timer.run(deadline, up.read_buf(relay)).await {
            Some(Ok(0)) if body.framing == Framing::Close => break,
            Some(Ok(0)) => {
                return Err(upstream_error(
                    route,
                    Answer::UpstreamOther,
                    io::ErrorKind::UnexpectedEof.into(),
                ))
            }
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(upstream_error(route, Answer::UpstreamOther, e)),
            None => {
                return Err(upstream_error(
                    route,
                    Answer::UpstreamTimeout,
                    io::ErrorKind::TimedOut.into(),
                ))
            }
        };
        let used = body
            .accept(&relay[..n])
            .map_err(|e| upstream_error(route, Answer::UpstreamOther, invalid(e)))?;
        clean = used == n;
        write_to_caller(io, caller_timer, write_timeout, metrics, &[&relay[..used]])
            .await
            .map_err(broken)?;
        if n == relay.capacity() && want < RELAY_BUF_MAX {
            want *= 2;
        }
    }
    if relay.capacity() > RELAY_BUF {
        relay.clear();
        relay.shrink_to(RELAY_BUF);
    }
    if clean && resp.reusable {
        // Idle since the request began, for the pool's age limit: a little early, never late.
        route.target.pool.put(up, started);
    }
    Ok(())
}

fn invalid(e: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Counts and logs an upstream failure in the middle of a body; the caller's response is broken.
fn upstream_error(route: &RouteState, kind: Answer, e: io::Error) -> Relayed {
    let name = route.route.name.as_str();
    debug!(route = name, error = %e, "upstream failed while relaying the body");
    kind.count_upstream(name);
    Relayed::Broken
}

/// Tracks how much of a response body is still to come.
struct BodyEnd {
    framing: Framing,
    left: u64,
    chunked: wire::ChunkedScanner,
    finished: bool,
}

impl BodyEnd {
    fn new(framing: Framing) -> Self {
        BodyEnd {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunked: wire::ChunkedScanner::default(),
            finished: matches!(framing, Framing::Empty | Framing::Length(0)),
        }
    }

    /// Takes the body bytes at the start of `data`; returns how many belong to this body.
    fn accept(&mut self, data: &[u8]) -> Result<usize, WireError> {
        if self.finished {
            return Ok(0);
        }
        let used = match self.framing {
            Framing::Empty => 0,
            Framing::Length(_) => {
                let n = data
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= n as u64;
                self.finished = self.left == 0;
                n
            }
            Framing::Chunked => {
                let n = self.chunked.scan(data)?;
                self.finished = self.chunked.done();
                n
            }
            Framing::Close => data.len(),
        };
        Ok(used)
    }

    fn done(&self) -> bool {
        self.finished
    }
}

/// Answers the caller with a JSON error; the connection closes after it.
async fn answer(
    conn: &mut Conn,
    route: Option<&RouteState>,
    status: u16,
    body: &[u8],
    challenge: Option<&http::HeaderValue>,
) -> io::Result<()> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n",
        body.len()
    )
    .into_bytes();
    if let Some(c) = challenge {
        head.extend_from_slice(b"www-authenticate: ");
        head.extend_from_slice(c.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(&wire::date_line());
    head.extend_from_slice(b"\r\n");
    let parts: &[&[u8]] = &[&head, body];
    let timeout = conn.limits.write_timeout;
    write_to_caller(
        &mut conn.io,
        &mut conn.caller_timer,
        timeout,
        route.map(|r| &r.metrics),
        parts,
    )
    .await
}
