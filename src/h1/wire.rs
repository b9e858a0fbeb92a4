//! HTTP/1.1 on the wire for the lean path: the request head it sends upstream (as the
//! [`crate::forward`] plan says), how an upstream response is framed and whether its head is
//! relayed as it came. Pure functions over byte slices; no I/O.

use http::HeaderName;

use crate::forward::{header_slots, parse_decimal, response, Plan};

/// Largest request body the lean path takes; it is read whole before anything is sent, so that
/// it can be sent again. Larger bodies stream through pingora.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest upstream response head.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How the upstream request differs from the caller's, beyond what the plan drops.
pub struct Rewrite<'a> {
    /// The `Host` value: the upstream's authority.
    pub host: &'a [u8],
    /// Prefixed to the caller's path (the upstream URL's path, without a trailing slash).
    pub base_path: &'a [u8],
    /// The header the token goes in, and its value; `None` keeps the caller's own header.
    pub inject: Option<(&'a HeaderName, &'a [u8])>,
    /// A verify route's verified claim fields (the plan drops the caller's copies).
    pub claims: &'a [(HeaderName, http::HeaderValue)],
}

/// Writes the head to send upstream into `out` (cleared first), as `plan` says: the request line
/// with the base path prefixed, `Host` replaced, the fields the plan forwards in the caller's
/// order, the WebSocket pair for a handshake, then our token header last. Returns where the
/// token line starts in `out`, so that a replay can put a fresh token in its place.
pub fn write_upstream_head(
    req: &httparse::Request<'_, '_>,
    plan: &Plan<'_>,
    rw: &Rewrite<'_>,
    out: &mut Vec<u8>,
) -> Option<usize> {
    out.clear();
    out.extend_from_slice(plan.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(rw.base_path);
    out.extend_from_slice(plan.path_and_query.as_bytes());
    out.extend_from_slice(if plan.http10 {
        &b" HTTP/1.0\r\nHost: "[..]
    } else {
        &b" HTTP/1.1\r\nHost: "[..]
    });
    out.extend_from_slice(rw.host);
    out.extend_from_slice(b"\r\n");
    for h in req.headers.iter() {
        if plan.forwards(h.name.as_bytes()) {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    for (name, value) in rw.claims {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if plan.websocket {
        out.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: websocket\r\n");
    }
    let token_at = rw.inject.map(|(name, value)| {
        let at = out.len();
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
        at
    });
    out.extend_from_slice(b"\r\n");
    token_at
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, 1xx, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub head_len: usize,
    pub framing: Framing,
    /// The upstream connection can carry another request after this body.
    pub reusable: bool,
    /// The head has a `Connection` field (so it cannot simply be extended with another).
    pub has_connection: bool,
    /// The head has a `Date` field; otherwise the proxy adds its own (RFC 9110 §6.6.1).
    pub has_date: bool,
    /// The head's bytes can be relayed as they came; otherwise [`write_response_head`] renders
    /// it anew.
    pub as_is: bool,
}

/// An upstream response that cannot be relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("malformed response head")]
    MalformedHead,
    #[error("response head over {MAX_RESPONSE_HEAD} bytes")]
    LargeHead,
    #[error("invalid Content-Length in the response")]
    BadLength,
    #[error("malformed chunked body")]
    BadChunk,
    #[error("status {0} cannot be relayed")]
    BadStatus(u16),
}

/// The parser settings for upstream response heads: those of pingora's client, so that both
/// request paths accept the same heads (a space before the colon, obsolete line folding).
fn response_parser() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config.allow_spaces_after_header_name_in_responses(true);
    config.allow_obsolete_multiline_headers_in_responses(true);
    config
}

/// Parses an upstream response head. `None` means more bytes are needed.
pub fn parse_response(
    buf: &[u8],
    request_was_head: bool,
) -> Result<Option<ResponseHead>, WireError> {
    let mut headers = header_slots();
    let mut resp = httparse::Response::new(&mut []);
    let head_len =
        match response_parser().parse_response_with_uninit_headers(&mut resp, buf, &mut headers) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
                return Err(WireError::LargeHead)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(WireError::MalformedHead),
        };
    let status = resp.code.unwrap_or(0);
    // The lean path never forwards a WebSocket handshake, so a 101 is never asked for here.
    if response::check_status(status, false).is_err() {
        return Err(WireError::BadStatus(status));
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = resp.version != Some(1);
    let mut has_connection = false;
    let mut has_date = false;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(h.value).ok_or(WireError::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(WireError::BadLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            // Only the last coding decides whether the body is chunked.
            chunked = last_token_is(h.value, b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            has_connection = true;
            close |= has_token(h.value, b"close");
        } else if name.eq_ignore_ascii_case(b"date") {
            has_date = true;
        }
    }
    let framing =
        if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
            Framing::Empty
        } else if transfer_encoding {
            if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::Close
        };
    let both = response::drops_content_length(transfer_encoding, length.is_some());
    // Both framings at once is how responses get smuggled: never reuse the connection it came
    // on (RFC 9112 §6.3).
    let reusable = !close && framing != Framing::Close && !both;
    let as_is = !both && is_plain_head(&buf[..head_len]);
    Ok(Some(ResponseHead {
        status,
        head_len,
        framing,
        reusable,
        has_connection,
        has_date,
        as_is,
    }))
}

/// Whether a head uses CRLF line ends only, with no folded line and no white space in or after a
/// field name: then its bytes are what a re-rendered head would be, and it is relayed as it came.
/// `head` is a whole head, up to and including its blank line. Runs once per response, so it
/// finds the line ends with `memchr` and looks at each field's name only.
fn is_plain_head(head: &[u8]) -> bool {
    // Where the current field line starts; `None` in the status line, which has no name.
    let mut field_start = None;
    for lf in memchr::memchr_iter(b'\n', head) {
        if lf == 0 || head[lf - 1] != b'\r' {
            return false;
        }
        if let Some(start) = field_start {
            // The name runs to the first colon (all of a line without one). A folded line
            // starts with white space, so it fails here too.
            for &b in &head[start..lf - 1] {
                match b {
                    b':' => break,
                    b' ' | b'\t' => return false,
                    _ => {}
                }
            }
        }
        field_start = Some(lf + 1);
    }
    true
}

/// Writes a response head the way pingora's path sends it on: the status line as it came, then
/// `name: value` per field in order (a folded value on one line), `Content-Length` left out when `Transfer-Encoding` is there
/// too (RFC 9112 §6.3), CRLF line ends. For heads that [`ResponseHead::as_is`] says cannot be
/// relayed byte for byte.
pub fn write_response_head(head: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    let mut headers = header_slots();
    let mut resp = httparse::Response::new(&mut []);
    match response_parser().parse_response_with_uninit_headers(&mut resp, head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(WireError::MalformedHead),
    }
    let has_te = resp
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    out.clear();
    out.extend_from_slice(if resp.version == Some(0) {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    let mut code = itoa::Buffer::new();
    out.extend_from_slice(code.format(resp.code.unwrap_or(0)).as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        if has_te && h.name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        response::unfold(h.value, out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Whether a comma-separated field value lists `token` (case-insensitively).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn last_token_is(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .rev()
        .map(<[u8]>::trim_ascii)
        .find(|t| !t.is_empty())
        .is_some_and(|t| t.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests;

/// `Date: <now>\r\n` in the IMF-fixdate form, formatted at most once a second per thread.
pub fn date_line() -> [u8; 37] {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, [u8; 37])> = const { RefCell::new((u64::MAX, [0; 37])) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let mut line = [0u8; 37];
            let text = format!("Date: {}\r\n", httpdate::fmt_http_date(now));
            // IMF-fixdate always has 29 characters.
            let n = text.len().min(line.len());
            line[..n].copy_from_slice(&text.as_bytes()[..n]);
            *cached = (second, line);
        }
        cached.1
    })
}
