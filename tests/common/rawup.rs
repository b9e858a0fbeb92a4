//! Raw HTTP/1.1 over TCP for wire-level tests: a buffered reader that frames heads and bodies,
//! a client connection that writes exact bytes and parses what comes back, and an upstream (plain
//! or TLS) that answers with scripted bytes while recording every request and counting its
//! connections.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How long any single read of the test client, or any wait of a test, may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest head either side accepts before calling the peer broken.
const MAX_HEAD: usize = 64 * 1024;

/// A parsed message head: the start line and the header fields in wire order, duplicates kept.
#[derive(Clone, Debug)]
pub struct Head {
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// Parses the bytes before the blank line (the final CRLF CRLF may be included or not).
    pub fn parse(raw: &[u8]) -> io::Result<Head> {
        let text = std::str::from_utf8(raw).map_err(|e| malformed(format!("head: {e}")))?;
        let mut lines = text.trim_end_matches("\r\n").split("\r\n");
        let start = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .map(|line| {
                let (name, value) = line
                    .split_once(':')
                    .ok_or_else(|| malformed(format!("header line {line:?}")))?;
                Ok((name.to_string(), value.trim().to_string()))
            })
            .collect::<io::Result<_>>()?;
        Ok(Head { start, headers })
    }

    /// Every value of `name` (compared case-insensitively), in wire order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// Whether `Transfer-Encoding` ends in `chunked`.
    pub fn chunked(&self) -> bool {
        self.all("transfer-encoding").last().is_some_and(|te| {
            te.rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        })
    }

    pub fn content_length(&self) -> io::Result<Option<usize>> {
        self.get("content-length")
            .map(|v| {
                v.parse()
                    .map_err(|_| malformed(format!("content-length {v:?}")))
            })
            .transpose()
    }

    /// Whether a `Connection` header lists `token`.
    pub fn connection_has(&self, token: &str) -> bool {
        self.all("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

fn malformed(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A TCP stream with a read buffer and the HTTP/1.1 framing rules on top. With a `timeout`,
/// every read that waits longer fails with `TimedOut`, so a hang fails a test instead of
/// blocking it.
pub struct Wire<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
    timeout: Option<Duration>,
}

/// A connection the raw upstream serves: TCP, or TLS over it.
pub trait RawIo: AsyncRead + AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &TcpStream;
}

impl RawIo for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl RawIo for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub fn new(stream: S, timeout: Option<Duration>) -> Self {
        Wire {
            stream,
            buf: Vec::new(),
            timeout,
        }
    }

    /// Reads up to 16 KiB more into the buffer; `Ok(0)` at the end of the stream.
    async fn fill(&mut self) -> io::Result<usize> {
        let mut piece = [0u8; 16 * 1024];
        let read = self.stream.read(&mut piece);
        let n = match self.timeout {
            Some(t) => tokio::time::timeout(t, read)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "read timed out"))??,
            None => read.await?,
        };
        self.buf.extend_from_slice(&piece[..n]);
        Ok(n)
    }

    fn eof(what: &str, got: usize) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("connection closed in the {what} after {got} bytes"),
        )
    }

    /// The next head (without its blank line), or `None` when the stream ends cleanly before
    /// one starts.
    pub async fn head(&mut self) -> io::Result<Option<Head>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Head::parse(&raw[..end]).map(Some);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(malformed("head too large".into()));
            }
            if self.fill().await? == 0 {
                return match self.buf.len() {
                    0 => Ok(None),
                    n => Err(Self::eof("head", n)),
                };
            }
        }
    }

    /// Exactly `n` body bytes; `UnexpectedEof` if the stream ends first.
    pub async fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(Self::eof("body", self.buf.len()));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Like [`Wire::exact`], but reading at most 16 KiB at a time and pausing `pace` between
    /// reads, as a slow consumer would.
    pub async fn exact_paced(&mut self, n: usize, pace: Duration) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Err(Self::eof("body", out.len()));
            }
            let take = self.buf.len().min(n - out.len()).min(16 * 1024);
            out.extend(self.buf.drain(..take));
            tokio::time::sleep(pace).await;
        }
        Ok(out)
    }

    /// One CRLF-terminated line, without the CRLF.
    async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                return String::from_utf8(raw[..end].to_vec())
                    .map_err(|e| malformed(format!("line: {e}")));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(malformed("line too long".into()));
            }
            if self.fill().await? == 0 {
                return Err(Self::eof("chunked body", self.buf.len()));
            }
        }
    }

    /// A chunked body, decoded; returns the data and the trailer fields.
    pub async fn chunked(&mut self) -> io::Result<(Vec<u8>, Vec<(String, String)>)> {
        let mut data = Vec::new();
        loop {
            let size_line = self.line().await?;
            let size = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| malformed(format!("chunk size line {size_line:?}")))?;
            if size == 0 {
                break;
            }
            data.extend(self.exact(size).await?);
            if !self.line().await?.is_empty() {
                return Err(malformed("chunk data not followed by CRLF".into()));
            }
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Ok((data, trailers));
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| malformed(format!("trailer line {line:?}")))?;
            trailers.push((name.to_string(), value.trim().to_string()));
        }
    }

    /// Everything up to the end of the stream.
    pub async fn until_eof(&mut self) -> io::Result<Vec<u8>> {
        while self.fill().await? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// Whether the peer has closed: `Ok(true)` at EOF (or a reset), `Ok(false)` if more bytes
    /// arrived instead; times out like any read.
    pub async fn closed(&mut self) -> io::Result<bool> {
        if !self.buf.is_empty() {
            return Ok(false);
        }
        match self.fill().await {
            Ok(0) => Ok(true),
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(true),
            Err(e) => Err(e),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How the body of a response the client read was delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length,
    Chunked,
    Close,
}

/// A response as the client read it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub head: Head,
    pub body: Vec<u8>,
    pub framing: Framing,
    pub trailers: Vec<(String, String)>,
    /// Statuses of the 1xx responses that came before this one.
    pub interim: Vec<u16>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A downstream connection that writes exact bytes and reads responses.
pub struct Client {
    pub wire: Wire,
}

impl Client {
    pub async fn connect(port: u16) -> Client {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("connect timed out")
            .expect("connect");
        Client {
            wire: Wire::new(stream, Some(IO_TIMEOUT)),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(IO_TIMEOUT, self.wire.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write");
    }

    /// Reads the next final response (skipping 1xx), its body framed as RFC 9112 §6.3 says.
    /// `head_request` says the request was a HEAD, whose response has no body.
    pub async fn response(&mut self, head_request: bool) -> io::Result<Response> {
        let mut interim = Vec::new();
        loop {
            let head = self
                .wire
                .head()
                .await?
                .ok_or_else(|| Wire::<TcpStream>::eof("status line", 0))?;
            let mut parts = head.start.splitn(3, ' ');
            let version = parts.next().unwrap_or_default().to_string();
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| malformed(format!("status line {:?}", head.start)))?;
            if !version.starts_with("HTTP/1.") {
                return Err(malformed(format!("status line {:?}", head.start)));
            }
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            let mut trailers = Vec::new();
            let (body, framing) = if head_request || status == 204 || status == 304 {
                (Vec::new(), Framing::None)
            } else if head.chunked() {
                let (data, t) = self.wire.chunked().await?;
                trailers = t;
                (data, Framing::Chunked)
            } else if let Some(n) = head.content_length()? {
                (self.wire.exact(n).await?, Framing::Length)
            } else {
                (self.wire.until_eof().await?, Framing::Close)
            };
            return Ok(Response {
                status,
                version,
                head,
                body,
                framing,
                trailers,
                interim,
            });
        }
    }

    /// Sends `GET path` with a Host header and reads the answer, which must arrive.
    pub async fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: proxy.test\r\n\r\n").as_bytes())
            .await;
        self.response(false)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Whether the proxy closed the connection (EOF or reset) rather than sending more.
    pub async fn closed(&mut self) -> bool {
        self.wire.closed().await.expect("waiting for the close")
    }
}

/// A request as the upstream read it off the wire.
#[derive(Clone, Debug)]
pub struct Received {
    /// Which accepted connection it came on, counting from 0.
    pub conn: usize,
    pub method: String,
    pub target: String,
    pub version: String,
    pub head: Head,
    /// The body, de-chunked if it came chunked.
    pub body: Vec<u8>,
}

/// What the upstream does after writing a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Wait for the next request on the connection.
    KeepAlive,
    /// Close the connection cleanly (FIN).
    Close,
    /// Close with zero linger, so the peer gets a reset.
    Reset,
}

/// The bytes to answer one request with, written in `parts` (one write each), then `then`.
pub struct Reply {
    pub parts: Vec<Vec<u8>>,
    pub then: Then,
}

impl Reply {
    pub fn new(bytes: impl Into<Vec<u8>>, then: Then) -> Reply {
        Reply {
            parts: vec![bytes.into()],
            then,
        }
    }

    /// `200` with `body` and a Content-Length, connection kept open.
    pub fn ok(body: impl AsRef<[u8]>) -> Reply {
        Reply::new(
            with_length("HTTP/1.1 200 OK\r\n", body.as_ref()),
            Then::KeepAlive,
        )
    }
}

/// `start` (a status line with its CRLF, maybe more header lines), a Content-Length, and `body`.
pub fn with_length(start: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{start}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

type Handler = dyn Fn(&Received) -> Reply + Send + Sync;

struct State {
    handler: Box<Handler>,
    accepts: AtomicUsize,
    received: Mutex<Vec<Received>>,
    /// How many connections have ended (closed by either side), for tests that must wait for
    /// the upstream's own close.
    ended: watch::Sender<usize>,
}

/// An upstream that answers each request with whatever `handler` returns for it.
pub struct RawUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
    tls: bool,
}

impl RawUpstream {
    pub async fn start<F>(handler: F) -> RawUpstream
    where
        F: Fn(&Received) -> Reply + Send + Sync + 'static,
    {
        Self::start_with(handler, None).await
    }

    /// The same over TLS, with the certificate of `ca` (valid for 127.0.0.1).
    pub async fn start_tls<F>(handler: F, ca: &super::tls::TestCa) -> RawUpstream
    where
        F: Fn(&Received) -> Reply + Send + Sync + 'static,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config.clone());
        Self::start_with(handler, Some(acceptor)).await
    }

    async fn start_with<F>(handler: F, tls: Option<tokio_rustls::TlsAcceptor>) -> RawUpstream
    where
        F: Fn(&Received) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            handler: Box::new(handler),
            accepts: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
            ended: watch::Sender::new(0),
        });
        let is_tls = tls.is_some();
        let task = tokio::spawn(accept_loop(listener, state.clone(), tls));
        RawUpstream {
            addr,
            state,
            task,
            tls: is_tls,
        }
    }

    /// `http://127.0.0.1:port` (`https://` over TLS), for the route's `upstream`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.state.accepts.load(Ordering::SeqCst)
    }

    /// Every request read so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` connections have ended; panics after [`IO_TIMEOUT`].
    pub async fn wait_ended(&self, n: usize) {
        let mut rx = self.state.ended.subscribe();
        tokio::time::timeout(IO_TIMEOUT, rx.wait_for(|ended| *ended >= n))
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} upstream connections ended"))
            .expect("upstream state dropped");
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    // Connections live in this set, so that aborting the accept loop also drops them.
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        let conn = state.accepts.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            // The proxy may keep an idle connection as long as it likes: no read timeout here.
            let _ = match tls {
                None => serve(Wire::new(stream, None), conn, &state).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve(Wire::new(stream, None), conn, &state).await,
                    Err(e) => Err(e),
                },
            };
            state.ended.send_modify(|n| *n += 1);
        });
    }
}

async fn serve<S: RawIo>(mut wire: Wire<S>, conn: usize, state: &State) -> io::Result<()> {
    while let Some(head) = wire.head().await? {
        let mut start = head.start.split(' ');
        let method = start.next().unwrap_or_default().to_string();
        let target = start.next().unwrap_or_default().to_string();
        let version = start.next().unwrap_or_default().to_string();
        let body = if head.chunked() {
            wire.chunked().await?.0
        } else {
            let n = head.content_length()?.unwrap_or(0);
            wire.exact(n).await?
        };
        let received = Received {
            conn,
            method,
            target,
            version,
            head,
            body,
        };
        state.received.lock().unwrap().push(received.clone());
        let reply = (state.handler)(&received);
        for part in &reply.parts {
            wire.stream.write_all(part).await?;
            wire.stream.flush().await?;
        }
        match reply.then {
            Then::KeepAlive => {}
            Then::Close => {
                wire.stream.shutdown().await?;
                return Ok(());
            }
            Then::Reset => {
                #[allow(deprecated)]
                wire.stream.tcp().set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
        }
    }
    Ok(())
}
