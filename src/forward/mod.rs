//! The request policy, decided once for both request paths: from the raw request head and the
//! route, a [`Plan`] says whether the request is refused (and with which [`Answer`]) or what goes
//! upstream: the target, which fields are kept or dropped, whether our token replaces the
//! caller's header, the body's framing, and whether the request may be sent twice. The lean path
//! ([`crate::h1`]) renders a plan as bytes, pingora's path ([`crate::proxy`]) as a
//! `RequestHeader`; neither decides anything of this on its own.
//!
//! Both paths parse the same bytes with [`parse_head`]: the lean path reads every request head
//! itself and hands pingora only heads that parsed, so pingora's parser sees exactly them.

mod answer;
pub mod response;

use std::mem::MaybeUninit;
use std::net::SocketAddr;

use http::HeaderName;

pub use answer::Answer;

/// A request head (request line and fields) larger than this is refused with 431.
pub const MAX_HEAD: usize = 32 * 1024;
/// More header fields than this are refused with 431.
pub const MAX_HEADERS: usize = 128;
/// Room for the fields of one head, [`MAX_HEADERS`] of them. Left uninitialised: the parser
/// writes the fields it finds, so a request does not first fill 4 KiB of empty slots.
pub type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// Fresh [`HeaderSlots`].
pub const fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// `Connection` may list at most this many options.
const MAX_CONNECTION_OPTIONS: usize = 16;

/// Fields that describe the caller's connection to the proxy (RFC 9110 §7.6.1, plus the
/// proxy-only `Proxy-*` fields and HTTP/2's `HTTP2-Settings`). None is forwarded; framing is the
/// proxy's own, and a WebSocket handshake gets its `Connection`/`Upgrade` pair written anew.
pub const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Fields that frame or route the request: `Connection` may not name them (nor the route's token
/// header). Dropping one because the caller named it would let the body be read upstream as
/// another request, so such a request is refused instead.
pub const PROTECTED: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// What the plan needs to know about the route.
pub struct RouteView<'a> {
    /// The header that carries the token.
    pub token_header: &'a HeaderName,
    /// `existing: keep`: a caller's own token header is forwarded untouched.
    pub keep_callers: bool,
    /// The upstream's authority as configured (`host` or `host:port`) and its port.
    pub upstream_authority: &'a str,
    pub upstream_port: u16,
    /// The route's listen address: an absolute-form target may name it too.
    pub listen: SocketAddr,
    /// A verify route: `Some(strip_authorization)`. It injects nothing; the caller's token
    /// header goes upstream unless stripped.
    pub verify: Option<bool>,
    /// A verify route's `forward_claims` headers: the caller's copies are never forwarded.
    pub claim_headers: &'a [(String, HeaderName)],
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
}

/// What goes upstream for an accepted request.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub method: &'a str,
    /// The path and query to send, before the upstream's base path (always starts with `/`).
    pub path_and_query: &'a str,
    pub http10: bool,
    /// The caller used an absolute-form target (for this route's own authority).
    pub absolute_form: bool,
    pub body: Body,
    /// The caller's connection closes after this exchange.
    pub close: bool,
    /// Safe to send twice: GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
    pub idempotent: bool,
    pub is_head: bool,
    /// Our token replaces whatever the caller sent in the token header; `false` when the caller's
    /// own header is kept (`existing: keep`, or a verify route that does not strip it). On a
    /// verify route with `strip_authorization`, the caller's header is dropped and none written.
    pub inject: bool,
    /// The request has an `Upgrade` field.
    pub has_upgrade: bool,
    /// A WebSocket handshake (HTTP/1.1, `Upgrade: websocket`, `Connection: upgrade`): it goes
    /// upstream with `Connection: Upgrade` and `Upgrade: websocket`.
    pub websocket: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Field names the caller's `Connection` lists (other than `close`, `keep-alive`, `upgrade`).
    nominated: [&'a [u8]; MAX_CONNECTION_OPTIONS],
    nominated_len: usize,
    token_header: &'a HeaderName,
    claim_headers: &'a [(String, HeaderName)],
}

/// Parses a request head at the start of `buf`. `Ok(None)`: more bytes are needed. On success,
/// the head's length (the blank line included) and the parsed request.
pub fn parse_head<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<(usize, httparse::Request<'h, 'b>)>, Answer> {
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => Err(Answer::HeadersTooLarge),
        Ok(httparse::Status::Complete(n)) => Ok(Some((n, req))),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(Answer::HeadersTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(Answer::HeadersTooLarge),
        Err(_) => Err(Answer::BadRequest),
    }
}

/// Decides what happens to a parsed request on `route`.
pub fn plan<'a>(
    req: &httparse::Request<'_, 'a>,
    route: &RouteView<'a>,
) -> Result<Plan<'a>, Answer> {
    let method = req.method.unwrap_or("");
    if method == "CONNECT" {
        return Err(Answer::MethodNotAllowed);
    }
    let http10 = req.version == Some(0);
    let target = req.path.unwrap_or("");
    let (path_and_query, absolute_form) = match target.as_bytes().first() {
        Some(b'/') => (target, false),
        Some(_) => {
            let (authority, rest) = split_absolute(target).ok_or(Answer::InvalidTarget)?;
            if !is_own_authority(authority, route) {
                // A request meant for another host must not reach this upstream with our token.
                return Err(Answer::Misdirected);
            }
            (if rest.is_empty() { "/" } else { rest }, true)
        }
        None => return Err(Answer::InvalidTarget),
    };
    if !path_and_query.starts_with('/') || !path_and_query.bytes().all(is_target_byte) {
        return Err(Answer::InvalidTarget);
    }

    let mut hosts = 0;
    let mut length = None;
    let mut transfer_encoding = None;
    let mut upgrade = None;
    let mut expect = None;
    let mut connection_upgrade = false;
    let mut close = http10;
    let mut has_token_header = false;
    let mut nominated: [&'a [u8]; MAX_CONNECTION_OPTIONS] = [&[]; MAX_CONNECTION_OPTIONS];
    let mut nominated_len = 0;
    let mut options = 0;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(Answer::InvalidContentLength);
            }
            length = Some(parse_decimal(h.value).ok_or(Answer::InvalidContentLength)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if transfer_encoding.is_some() {
                return Err(Answer::UnsupportedTransferEncoding);
            }
            transfer_encoding = Some(h.value);
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = Some(h.value);
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect = Some(h.value);
        } else if name.eq_ignore_ascii_case(route.token_header.as_str().as_bytes()) {
            has_token_header = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if option.is_empty() {
                    continue;
                }
                options += 1;
                if options > MAX_CONNECTION_OPTIONS || !option.iter().all(|&b| is_tchar(b)) {
                    return Err(Answer::InvalidConnection);
                }
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                } else if option.eq_ignore_ascii_case(b"upgrade") {
                    connection_upgrade = true;
                } else if PROTECTED
                    .iter()
                    .any(|p| option.eq_ignore_ascii_case(p.as_bytes()))
                    || option.eq_ignore_ascii_case(route.token_header.as_str().as_bytes())
                {
                    return Err(Answer::InvalidConnection);
                } else {
                    nominated[nominated_len] = option;
                    nominated_len += 1;
                }
            }
        }
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1; at most one in HTTP/1.0.
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(Answer::InvalidHost);
    }
    let body = match (transfer_encoding, length) {
        (Some(_), Some(_)) => return Err(Answer::ConflictingFraming),
        (Some(_), None) if http10 => return Err(Answer::ConflictingFraming),
        (Some(te), None) if te.trim_ascii().eq_ignore_ascii_case(b"chunked") => Body::Chunked,
        (Some(_), None) => return Err(Answer::UnsupportedTransferEncoding),
        (None, Some(0) | None) => Body::None,
        (None, Some(n)) => Body::Length(n),
    };
    let expect_continue = match expect {
        None => false,
        Some(v) if v.trim_ascii().eq_ignore_ascii_case(b"100-continue") => true,
        Some(_) => return Err(Answer::ExpectationFailed),
    };
    let websocket = !http10
        && connection_upgrade
        && upgrade.is_some_and(|u| u.trim_ascii().eq_ignore_ascii_case(b"websocket"));
    Ok(Plan {
        method,
        path_and_query,
        http10,
        absolute_form,
        body,
        close,
        idempotent: is_idempotent(method),
        is_head: method == "HEAD",
        inject: route
            .verify
            .unwrap_or(!(route.keep_callers && has_token_header)),
        has_upgrade: upgrade.is_some(),
        websocket,
        expect_continue,
        nominated,
        nominated_len,
        token_header: route.token_header,
        claim_headers: route.claim_headers,
    })
}

impl Plan<'_> {
    /// Whether the caller's field `name` goes upstream as it is. `Host` and, when we inject, the
    /// token header are replaced; hop-by-hop fields and those `Connection` names are dropped, and
    /// so are a verify route's claim headers (their verified values are set instead).
    pub fn forwards(&self, name: &[u8]) -> bool {
        !(name.eq_ignore_ascii_case(b"host")
            || self
                .claim_headers
                .iter()
                .any(|(_, h)| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
            || (self.inject && name.eq_ignore_ascii_case(self.token_header.as_str().as_bytes()))
            || HOP_BY_HOP
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
            || self.nominated[..self.nominated_len]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n)))
    }

    /// Whether the request may be sent again with a fresh token when the upstream rejects it:
    /// its whole body must be at hand, within `max_body`. `buffered` is how much of a chunked
    /// body was kept, `None` when it was not kept whole.
    pub fn replayable(&self, max_body: usize, buffered: Option<usize>) -> bool {
        replayable(self.body, max_body, buffered)
    }
}

/// The replay rule for a body framed as `body`: see [`Plan::replayable`].
pub fn replayable(body: Body, max_body: usize, buffered: Option<usize>) -> bool {
    match body {
        Body::None => true,
        Body::Length(n) => n <= max_body as u64,
        Body::Chunked => buffered.is_some_and(|b| b <= max_body),
    }
}

/// Safe to send twice (RFC 9110 §9.2.2).
fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// Splits an absolute-form target into its authority and the path and query after it.
fn split_absolute(target: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = target.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    if path.starts_with('?') {
        // `http://host?q`: the path is empty, the query stays (RFC 9112 §3.2.2 makes it "/?q").
        return None;
    }
    Some((authority, path))
}

/// Whether an absolute-form request's authority names this route: its upstream, or the listener
/// itself.
fn is_own_authority(authority: &str, route: &RouteView<'_>) -> bool {
    let up = route.upstream_authority;
    if authority.eq_ignore_ascii_case(up) {
        return true;
    }
    if let Some((host, port)) = authority.rsplit_once(':') {
        if port.parse::<u16>().ok() == Some(route.upstream_port) && host.eq_ignore_ascii_case(up) {
            return true;
        }
    }
    let listen = route.listen;
    let Some((host, port)) = authority.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    port.parse::<u16>().ok() == Some(listen.port())
        && (host.eq_ignore_ascii_case("localhost")
            || host.parse::<std::net::IpAddr>().is_ok_and(|ip| {
                ip == listen.ip() || (ip.is_loopback() && listen.ip().is_loopback())
            }))
}

/// A byte allowed in an origin-form target: RFC 3986's unreserved, sub-delims, `:`, `@`, `/`,
/// `?`, `%`, and `[`/`]` (common unescaped in queries). A fragment (`#`), a space, controls,
/// `"<>\^`{|}` and non-ASCII bytes are refused.
fn is_target_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'?'
                | b'%'
                | b'['
                | b']'
        )
}

/// A byte of an HTTP `token` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// A `Content-Length` value: digits only (at most 18, so it cannot overflow).
pub fn parse_decimal(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests;
