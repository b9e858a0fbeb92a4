//! One exchange with the upstream on the lean path: connecting (TCP, and TLS for an `https://`
//! upstream), sending the request, reading the response head, and the retries: once on a stale
//! pooled connection or a failed connect for a request safe to repeat, once with a fresh token
//! when the upstream rejects the token.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::conn::Conn;
use super::tls::{Handshake, UpStream};
use super::wire::{self, ResponseHead, WireError};
use super::RELAY_BUF;
use crate::forward::Answer;
use crate::routes::RouteState;

/// A request the lean path took, from its parsed head.
pub(super) struct Exchange {
    pub(super) started: Instant,
    /// When the request could go upstream: `started`, or when the last body bytes came.
    pub(super) sent_at: Instant,
    pub(super) idempotent: bool,
    pub(super) is_head: bool,
    pub(super) close: bool,
    /// The token generation injected, `None` when the caller's own header was kept.
    pub(super) generation: Option<u64>,
    pub(super) body_len: usize,
    /// Method and path, kept only when the access log is on.
    pub(super) method_path: Option<(String, String)>,
    pub(super) replayed: bool,
    pub(super) replay_outcome: Option<&'static str>,
}

/// Why no upstream response arrived; decides the caller's status and the error metric.
#[derive(Debug, thiserror::Error)]
pub(super) enum UpstreamFailure {
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
    pub(super) fn answer(&self) -> Answer {
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

/// Sends the request upstream and reads the response head, reconnecting once for a stale
/// pooled connection or a failed connect (for requests that are safe to repeat), and sending
/// it again once with a fresh token if the upstream rejects the token.
pub(super) async fn exchange(
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

/// Puts a fresh token in place of the one in `conn.out`, keeping the body after the head.
pub(super) fn replace_token(conn: &mut Conn, route: &RouteState, value: &[u8], body_len: usize) {
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
