//! An upstream API for tests: records what reached it (the Authorization headers, Host, path,
//! SNI, a hash of the body) and checks every bearer token against the IdP that issued it; counts
//! its TLS handshakes (and the resumed ones) and open connections, and closes idle ones on demand.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use super::idp::TokenChecker;
use super::tls::TestCa;

#[derive(Clone, Debug)]
pub struct Seen {
    pub authorization: Vec<String>,
    pub host: String,
    pub path_and_query: String,
    pub sni: Option<String>,
    pub body_len: usize,
    pub body_sha256: String,
    /// Per the IdP: `Some(true)` valid, `Some(false)` expired, `None` unknown or no bearer.
    pub token_valid: Option<bool>,
    pub version: http::Version,
    pub method: String,
}

struct State {
    seen: Mutex<Vec<Seen>>,
    checker: Option<TokenChecker>,
    /// Bearer tokens answered with 401.
    revoked: Mutex<std::collections::HashSet<String>>,
    /// TLS handshakes completed, and how many of them resumed an earlier session.
    handshakes: AtomicUsize,
    resumed: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    /// Bumped to make every connection close once it is idle.
    close_idle: tokio::sync::watch::Sender<u64>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    /// Plain HTTP on 127.0.0.1.
    pub async fn http(checker: Option<TokenChecker>) -> Self {
        Self::start(checker, None).await
    }

    /// HTTPS with a certificate for `localhost` from `ca`; also on [::1] with the same port when
    /// this host has IPv6, since `localhost` may resolve there.
    pub async fn https(checker: Option<TokenChecker>, ca: &TestCa) -> Self {
        Self::start(
            checker,
            Some(tokio_rustls::TlsAcceptor::from(ca.server_config.clone())),
        )
        .await
    }

    /// HTTPS that offers h2 and http/1.1 by ALPN.
    pub async fn https_h2(checker: Option<TokenChecker>, ca: &TestCa) -> Self {
        let mut config = (*ca.server_config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start(
            checker,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn start(checker: Option<TokenChecker>, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let state = Arc::new(State {
            seen: Mutex::new(Vec::new()),
            checker,
            revoked: Mutex::new(Default::default()),
            handshakes: AtomicUsize::new(0),
            resumed: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            close_idle: tokio::sync::watch::channel(0).0,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tasks = vec![tokio::spawn(serve(listener, state.clone(), tls.clone()))];
        if tls.is_some() {
            if let Ok(l6) = TcpListener::bind(("::1", addr.port())).await {
                tasks.push(tokio::spawn(serve(l6, state.clone(), tls)));
            }
        }
        Upstream { addr, state, tasks }
    }

    /// From now on, requests carrying `token` get 401.
    pub fn revoke(&self, token: &str) {
        self.state.revoked.lock().unwrap().insert(token.to_string());
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.state.handshakes.load(Ordering::SeqCst)
    }

    /// TLS handshakes so far that resumed an earlier session.
    pub fn resumed(&self) -> usize {
        self.state.resumed.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Closes every connection as soon as it is idle (a keep-alive connection between requests
    /// closes now), as a server's idle timeout does.
    pub fn close_idle(&self) {
        self.state.close_idle.send_modify(|n| *n += 1);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve(listener: TcpListener, state: Arc<State>, tls: Option<tokio_rustls::TlsAcceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            state.open.fetch_add(1, Ordering::SeqCst);
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let conn = stream.get_ref().1;
                        state.handshakes.fetch_add(1, Ordering::SeqCst);
                        if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                            state.resumed.fetch_add(1, Ordering::SeqCst);
                        }
                        let sni = conn.server_name().map(str::to_string);
                        serve_conn(TokioIo::new(stream), state.clone(), sni).await;
                    }
                }
                None => serve_conn(TokioIo::new(stream), state.clone(), None).await,
            }
            state.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn serve_conn<I>(io: I, state: Arc<State>, sni: Option<String>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut close_idle = state.close_idle.subscribe();
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let sni = sni.clone();
        async move { Ok::<_, Infallible>(handle(state, sni, req).await) }
    });
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let mut conn = std::pin::pin!(builder.serve_connection(io, svc));
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = close_idle.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The deterministic content of an `n`-byte `/big` response.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A response body of `remaining` pattern bytes, produced in 64 KiB chunks as it is read.
struct PatternBody {
    offset: usize,
    remaining: usize,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(64 * 1024);
        let chunk: Vec<u8> = (self.offset..self.offset + n)
            .map(|i| ((i * 31 + 7) % 251) as u8)
            .collect();
        self.offset += n;
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

fn query_value(query: &str, key: &str) -> Option<u64> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
}

async fn handle(
    state: Arc<State>,
    sni: Option<String>,
    req: Request<Incoming>,
) -> Response<BoxBody<Bytes, Infallible>> {
    let authorization: Vec<String> = req
        .headers()
        .get_all("authorization")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let host = req
        .headers()
        .get("host")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let path = req.uri().path().to_string();
    let version = req.version();
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let token_valid = match (
        &state.checker,
        authorization
            .first()
            .and_then(|a| a.strip_prefix("Bearer ")),
    ) {
        (Some(c), Some(t)) => c.check(t),
        _ => None,
    };
    // Hash the body as it streams in, without holding it.
    let mut hasher = Sha256::new();
    let mut body_len = 0;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            body_len += data.len();
            hasher.update(data);
        }
    }
    let seen = Seen {
        authorization,
        host,
        path_and_query,
        sni,
        body_len,
        body_sha256: hex(&hasher.finalize()),
        token_valid,
        version,
        method,
    };
    state.seen.lock().unwrap().push(seen.clone());
    let bearer = seen
        .authorization
        .first()
        .and_then(|a| a.strip_prefix("Bearer "));
    if bearer.is_some_and(|t| state.revoked.lock().unwrap().contains(t)) {
        return Response::builder()
            .status(401)
            .header("www-authenticate", "Bearer error=\"invalid_token\"")
            .body(Full::new(Bytes::from_static(b"{\"error\":\"invalid_token\"}")).boxed())
            .unwrap();
    }

    if path.ends_with("/hang") {
        std::future::pending::<()>().await;
    }
    if let Some(ms) = query_value(&query, "sleep_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path.ends_with("/big") {
        let n = query_value(&query, "bytes").unwrap_or(0) as usize;
        return Response::builder()
            .header("content-type", "application/octet-stream")
            .body(
                PatternBody {
                    offset: 0,
                    remaining: n,
                }
                .boxed(),
            )
            .unwrap();
    }
    let echo = serde_json::json!({
        "authorization": seen.authorization,
        "host": seen.host,
        "path": seen.path_and_query,
        "sni": seen.sni,
        "body_len": seen.body_len,
        "body_sha256": seen.body_sha256,
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(echo.to_string())).boxed())
        .unwrap()
}
