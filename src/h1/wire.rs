//! HTTP/1.1 on the wire for the lean path: which requests it takes, the request head it sends
//! upstream, how an upstream response is framed, and where a chunked body ends. Pure functions
//! over byte slices; no I/O.

use http::HeaderName;

/// Header fields a head may carry before it is left to pingora (which answers 431 or 400).
pub const MAX_HEADERS: usize = 128;
/// Request heads larger than this go to pingora, which refuses those over 32 KiB of fields.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Largest request body the lean path takes; it is read whole before anything is sent, so that
/// it can be sent again. Larger bodies stream through pingora.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest upstream response head.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The outcome of looking at the bytes of a head read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// More bytes are needed.
    Partial,
    Done(T),
    /// Well-formed or not, this one is not for the lean path; the reason is a metric label.
    Unsupported(&'static str),
}

/// What the lean path needs to know about a request it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head, the blank line included; the body (if any) starts here.
    pub head_len: usize,
    pub content_length: usize,
    /// The caller asked to close the connection after this exchange.
    pub close: bool,
    /// GET, HEAD, OPTIONS, TRACE, PUT, DELETE: safe to send again on a fresh connection.
    pub idempotent: bool,
    pub is_head: bool,
}

/// Parses a request head from `buf` into `headers`. Anything but a plain HTTP/1.1 request in
/// origin form with no body or a small `Content-Length` body is `Unsupported`: pingora handles
/// it (absolute-form targets, chunked or conflicting framing, upgrades, `Expect`, CONNECT,
/// HTTP/1.0, big heads and bodies, malformed input).
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
) -> (Parsed<RequestHead>, Option<httparse::Request<'h, 'b>>) {
    let mut req = httparse::Request::new(headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_REQUEST_HEAD => {
            return (Parsed::Unsupported("large_head"), None)
        }
        Ok(httparse::Status::Partial) => return (Parsed::Partial, None),
        Err(httparse::Error::TooManyHeaders) => {
            return (Parsed::Unsupported("too_many_headers"), None)
        }
        Err(_) => return (Parsed::Unsupported("malformed"), None),
    };
    if head_len > MAX_REQUEST_HEAD {
        return (Parsed::Unsupported("large_head"), None);
    }
    if req.version != Some(1) {
        return (Parsed::Unsupported("http_version"), None);
    }
    let method = req.method.unwrap_or("");
    if method == "CONNECT" {
        return (Parsed::Unsupported("connect_method"), None);
    }
    if !req.path.is_some_and(|p| p.starts_with('/')) {
        return (Parsed::Unsupported("absolute_form"), None);
    }
    let mut content_length = None;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return (Parsed::Unsupported("content_length_repeated"), None);
            }
            match parse_decimal(h.value) {
                Some(n) if n <= MAX_BODY as u64 => content_length = Some(n as usize),
                Some(_) => return (Parsed::Unsupported("large_body"), None),
                None => return (Parsed::Unsupported("content_length_invalid"), None),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return (Parsed::Unsupported("transfer_encoding"), None);
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            return (Parsed::Unsupported("upgrade"), None);
        } else if name.eq_ignore_ascii_case(b"expect") {
            return (Parsed::Unsupported("expect"), None);
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(h.value, b"close");
        }
    }
    let head = RequestHead {
        head_len,
        content_length: content_length.unwrap_or(0),
        close,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        is_head: method == "HEAD",
    };
    (Parsed::Done(head), Some(req))
}

/// Whether the request carries a field called `name`.
pub fn has_header(req: &httparse::Request<'_, '_>, name: &HeaderName) -> bool {
    req.headers.iter().any(|h| {
        h.name
            .as_bytes()
            .eq_ignore_ascii_case(name.as_str().as_bytes())
    })
}

/// How the upstream request differs from the caller's.
pub struct Rewrite<'a> {
    /// The `Host` value: the upstream's authority.
    pub host: &'a [u8],
    /// Prefixed to the caller's path (the upstream URL's path, without a trailing slash).
    pub base_path: &'a [u8],
    /// The header the token goes in, and its value; `None` keeps the caller's own header.
    pub inject: Option<(&'a HeaderName, &'a [u8])>,
}

/// Writes the head to send upstream into `out` (cleared first): the caller's request line with
/// the base path prefixed, `Host` replaced, the token header replaced by ours, and the
/// hop-by-hop fields (`Connection`, those it names, `Keep-Alive`, `Proxy-Connection`, `TE`)
/// left out, since they describe the caller's connection, not ours.
pub fn write_upstream_head(req: &httparse::Request<'_, '_>, rw: &Rewrite<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(rw.base_path);
    out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(rw.host);
    out.extend_from_slice(b"\r\n");
    // Fields the caller's `Connection` names are hop-by-hop too (RFC 9110 §7.6.1). Most
    // requests have no `Connection` field: one pass to know, none to look things up in it.
    let is_connection = |h: &httparse::Header<'_>| h.name.eq_ignore_ascii_case("connection");
    let has_connection = req.headers.iter().any(is_connection);
    let named_by_connection = |name: &[u8]| {
        has_connection
            && req
                .headers
                .iter()
                .any(|c| is_connection(c) && has_token(c.value, name))
    };
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let drop = name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(b"connection")
            || name.eq_ignore_ascii_case(b"keep-alive")
            || name.eq_ignore_ascii_case(b"proxy-connection")
            || name.eq_ignore_ascii_case(b"te")
            || rw
                .inject
                .is_some_and(|(n, _)| name.eq_ignore_ascii_case(n.as_str().as_bytes()))
            || named_by_connection(name);
        if drop {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some((name, value)) = rw.inject {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
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
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedUpgrade,
}

/// Parses an upstream response head. `None` means more bytes are needed.
pub fn parse_response(
    buf: &[u8],
    request_was_head: bool,
) -> Result<Option<ResponseHead>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(WireError::LargeHead)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(WireError::MalformedHead),
    };
    let status = resp.code.unwrap_or(0);
    if status == 101 {
        return Err(WireError::UnexpectedUpgrade);
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = resp.version != Some(1);
    let mut has_connection = false;
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
    // Both framings at once is how responses get smuggled: relay it, but never reuse the
    // connection it came on (RFC 9112 §6.3).
    let reusable = !close && framing != Framing::Close && !(transfer_encoding && length.is_some());
    Ok(Some(ResponseHead {
        status,
        head_len,
        framing,
        reusable,
        has_connection,
    }))
}

/// Finds the end of a chunked body in bytes handed to it piece by piece, without decoding it:
/// the bytes are relayed as they came.
#[derive(Debug, Clone, Default)]
pub struct ChunkedScanner {
    state: ChunkState,
    /// Data bytes left in the current chunk, or the size being read.
    size: u64,
    digits: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

impl ChunkedScanner {
    /// Consumes bytes of the body up to its end; returns how many of `data` belong to it (all of
    /// them unless the body ended inside `data`).
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, WireError> {
        use ChunkState::*;
        let mut i = 0;
        while i < data.len() && self.state != Done {
            if self.state == Data {
                let take = (data.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits == 15 {
                        return Err(WireError::BadChunk);
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from(hex_value(b));
                    Size
                }
                (Size, b';' | b' ' | b'\t') if self.digits > 0 => Extension,
                (Size, b'\r') if self.digits > 0 => SizeLf,
                (Extension, b'\r') => SizeLf,
                (Extension, b'\n') => return Err(WireError::BadChunk),
                (Extension, _) => Extension,
                (SizeLf, b'\n') if self.size == 0 => TrailerStart,
                (SizeLf, b'\n') => Data,
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    self.digits = 0;
                    Size
                }
                (TrailerStart, b'\r') => FinalLf,
                (TrailerStart, b'\n') => return Err(WireError::BadChunk),
                (TrailerLine, b'\r') => TrailerLf,
                (TrailerStart | TrailerLine, _) => TrailerLine,
                (TrailerLf, b'\n') => TrailerStart,
                (FinalLf, b'\n') => Done,
                _ => return Err(WireError::BadChunk),
            };
        }
        Ok(i)
    }

    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// A `Content-Length` value: digits only (at most 18, so it cannot overflow).
fn parse_decimal(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
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
