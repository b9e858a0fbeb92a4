//! One caller connection of the lean path: its buffers and timers, reading the caller's bytes,
//! the server's shutdown signal, answering the caller with an error, and handing the connection
//! to pingora's proxy (and taking it back).

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use super::limits::write_to_caller;
use super::timer::LazyTimer;
use super::{wire, KEEPALIVE, READ_BUF};
use crate::config::CallerLimits;
use crate::proxy::TokenProxy;
use crate::routes::RouteState;

/// One caller connection and the buffers reused by each of its requests.
pub(super) struct Conn {
    pub(super) io: Stream,
    /// Bytes read from the caller and not yet consumed.
    pub(super) buf: BytesMut,
    /// The request as it goes upstream: head, then body.
    pub(super) out: Vec<u8>,
    /// Where the token header line starts in `out`, to put a fresh one in for a replay.
    pub(super) token_at: Option<usize>,
    /// The upstream's response bytes, read `relay_len` at a time.
    pub(super) relay: Vec<u8>,
    /// When the caller's connection last became idle: the keep-alive time counts from here.
    pub(super) idle_since: Instant,
    /// Times out waits for the caller.
    pub(super) caller_timer: LazyTimer,
    /// Times out waits for the upstream.
    pub(super) upstream_timer: LazyTimer,
    pub(super) shutdown: Shutdown,
    /// The caller limits in force when the connection was accepted.
    pub(super) limits: CallerLimits,
    /// When the request head being read must be complete; `None` while the connection idles
    /// between requests (from the accept, the first request's head counts).
    pub(super) head_deadline: Option<tokio::time::Instant>,
}

impl Conn {
    /// A connection just accepted, with the caller limits in force now.
    pub(super) fn new(io: Stream, shutdown: &ShutdownWatch, limits: CallerLimits) -> Self {
        let now = Instant::now();
        let far = tokio::time::Instant::from_std(now) + KEEPALIVE;
        Conn {
            io,
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
        }
    }

    /// Hands the connection to pingora's proxy for the request at the front of `buf`; returns
    /// it if pingora keeps it open.
    pub(super) async fn hand_to_pingora(
        self,
        proxy: &Arc<HttpProxy<TokenProxy>>,
        len: usize,
        shutdown: &ShutdownWatch,
    ) -> Option<Conn> {
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
        } = self;
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
        let reused = proxy.process_new_http(session, shutdown).await?;
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

/// The server's shutdown signal, with one future per connection rather than one per wait.
pub(super) struct Shutdown {
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

    pub(super) fn is_set(&self) -> bool {
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

/// Reads more of the caller's bytes. `Ok(false)`: the caller closed, the connection idled out
/// between requests, or the server is shutting down while it was idle. `TimedOut`: the head
/// being read was not complete by its deadline.
pub(super) async fn read_more(conn: &mut Conn) -> io::Result<bool> {
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

/// Answers the caller with a JSON error; the connection closes after it.
pub(super) async fn answer(
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
