//! Relaying an upstream response to the caller on the lean path: the head as it came (or
//! rendered anew when it must change), the body's bytes as they arrive up to the end its framing
//! gives, and the upstream connection back to the pool when it can carry another request.

use std::io;
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tracing::debug;

use super::body::BodyEnd;
use super::conn::Conn;
use super::limits::write_to_caller;
use super::tls::UpStream;
use super::wire::{self, Framing, ResponseHead, WireError};
use super::{RELAY_BUF, RELAY_BUF_MAX, SMALL_BODY};
use crate::forward::Answer;
use crate::routes::RouteState;

/// How relaying a response failed.
pub(super) enum Relayed {
    /// Nothing reached the caller yet: it can still be answered.
    Unsent(Answer),
    /// The caller got part of the response; its connection must close.
    Broken,
}

/// Relays the response whose head is in `conn.relay`, then returns the upstream connection to
/// the pool if it can carry another request. An error means the caller got an incomplete
/// response and its connection must close.
pub(super) async fn relay(
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
            Some(Ok(0)) if resp.framing == Framing::Close => break,
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
