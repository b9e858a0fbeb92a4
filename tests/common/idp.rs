//! A programmable OAuth2 token endpoint: records every request, issues opaque or JWT tokens
//! whose expiry it remembers, and can be switched into the failure modes the proxy must survive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Clone, Debug)]
pub enum Mode {
    /// Issue tokens living this long (`expires_in`, whole seconds or fractional).
    Ok { lifetime: Duration },
    /// Issue JWTs whose only lifetime information is the `exp` claim.
    JwtWithoutExpiresIn { lifetime: Duration },
    /// Answer with this status and body.
    Status(u16, String),
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 JSON without `access_token`.
    NoAccessToken,
    /// Accept the request and never answer.
    Hang,
    /// 429 with `Retry-After: <secs>`.
    RateLimited { retry_after: u64 },
    /// 200 with a JSON body of this many bytes.
    Huge(usize),
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub content_type: String,
    pub authorization: Option<String>,
    pub body: String,
    /// The body's parameters, decoded from JSON or form.
    pub params: HashMap<String, String>,
}

impl Recorded {
    /// The id and secret of a Basic header, form-decoded (RFC 6749 §2.3.1).
    pub fn basic(&self) -> Option<(String, String)> {
        let b64 = self.authorization.as_deref()?.strip_prefix("Basic ")?;
        let raw =
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok()?;
        let (id, secret) = raw.split_once(':')?;
        let dec = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        Some((dec(id), dec(secret)))
    }
}

struct State {
    mode: Mutex<Mode>,
    requests: Mutex<Vec<Recorded>>,
    /// Issued token -> the instant it really expires.
    issued: Mutex<HashMap<String, Instant>>,
    /// When set, only this client secret is accepted (401 invalid_client otherwise).
    accepted_secret: Mutex<Option<String>>,
    /// When set, only a `client_assertion` equal to this file's current (trimmed) content is
    /// accepted (401 invalid_client otherwise).
    assertion_file: Mutex<Option<std::path::PathBuf>>,
    /// Sent as `Auth0-Client-Quota-Limit` on every answer when set.
    quota_header: Mutex<Option<String>>,
    counter: AtomicU64,
}

pub struct Idp {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Idp {
    pub async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            mode: Mutex::new(mode),
            requests: Mutex::new(Vec::new()),
            issued: Mutex::new(HashMap::new()),
            accepted_secret: Mutex::new(None),
            assertion_file: Mutex::new(None),
            quota_header: Mutex::new(None),
            counter: AtomicU64::new(0),
        });
        let task = tokio::spawn(serve(listener, state.clone()));
        Idp {
            addr,
            state,
            task: Mutex::new(Some(task)),
        }
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/oauth/token", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn accept_only_secret(&self, secret: &str) {
        *self.state.accepted_secret.lock().unwrap() = Some(secret.to_string());
    }

    /// Accepts only a `client_assertion` that is exactly `path`'s content when it arrives.
    pub fn accept_only_assertion_from(&self, path: &std::path::Path) {
        *self.state.assertion_file.lock().unwrap() = Some(path.to_path_buf());
    }

    pub fn set_quota_header(&self, value: &str) {
        *self.state.quota_header.lock().unwrap() = Some(value.to_string());
    }

    /// Closes the listener: connections are refused until [`Idp::restart`].
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        self.stop();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                // The aborted task may take a moment to drop the old socket.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        *self.task.lock().unwrap() = Some(tokio::spawn(serve(listener, self.state.clone())));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Every token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().keys().cloned().collect()
    }

    /// Whether `token` was issued here and has not yet expired.
    pub fn checker(&self) -> TokenChecker {
        TokenChecker(self.state.clone())
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Checks tokens against what the IdP issued; handed to the upstream.
#[derive(Clone)]
pub struct TokenChecker(Arc<State>);

impl TokenChecker {
    /// `Some(true)` valid now, `Some(false)` issued but expired, `None` never issued here.
    pub fn check(&self, token: &str) -> Option<bool> {
        let issued = self.0.issued.lock().unwrap();
        issued.get(token).map(|exp| Instant::now() < *exp)
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    // Connections live in this set, so that aborting the server also drops kept-alive ones.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        let state = state.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn json(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let quota = state.quota_header.lock().unwrap().clone();
    let mut resp = answer(state, req).await;
    if let Some(q) = quota {
        resp.headers_mut()
            .insert("auth0-client-quota-limit", q.parse().unwrap());
    }
    resp
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    let authorization = header("authorization");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    let params: HashMap<String, String> = if content_type.starts_with("application/json") {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&body)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect()
    } else {
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    };
    let recorded = Recorded {
        content_type,
        authorization,
        body,
        params,
    };
    state.requests.lock().unwrap().push(recorded.clone());

    let mode = state.mode.lock().unwrap().clone();
    if let Some(want) = state.accepted_secret.lock().unwrap().clone() {
        let got = recorded
            .basic()
            .map(|(_, s)| s)
            .or_else(|| recorded.params.get("client_secret").cloned());
        if got.as_deref() != Some(want.as_str()) {
            return json(
                401,
                r#"{"error":"invalid_client","error_description":"Unauthorized"}"#.into(),
            );
        }
    }
    if let Some(path) = state.assertion_file.lock().unwrap().clone() {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if recorded.params.get("client_assertion").map(String::as_str) != Some(current.trim()) {
            return json(
                401,
                r#"{"error":"invalid_client","error_description":"not the current assertion"}"#
                    .into(),
            );
        }
    }
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    match mode {
        Mode::Ok { lifetime } => {
            let token = format!("tok-{n}-{:016x}", rand_u64());
            state
                .issued
                .lock()
                .unwrap()
                .insert(token.clone(), Instant::now() + lifetime);
            json(
                200,
                serde_json::json!({
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": lifetime.as_secs_f64(),
                })
                .to_string(),
            )
        }
        Mode::JwtWithoutExpiresIn { lifetime } => {
            let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + lifetime;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let payload = b64.encode(
                serde_json::json!({ "sub": "client", "exp": exp.as_secs(), "n": n }).to_string(),
            );
            let token = format!("eyJhbGciOiJub25lIn0.{payload}.c2ln");
            // The claim has whole seconds: the token is valid until then.
            let valid_for = Duration::from_secs(exp.as_secs())
                .saturating_sub(SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
            state
                .issued
                .lock()
                .unwrap()
                .insert(token.clone(), Instant::now() + valid_for);
            json(
                200,
                serde_json::json!({ "access_token": token, "token_type": "Bearer" }).to_string(),
            )
        }
        Mode::Status(code, body) => json(code, body),
        Mode::Garbage => json(200, "<html>surprise</html>".into()),
        Mode::NoAccessToken => json(200, r#"{"token_type":"Bearer","expires_in":60}"#.into()),
        Mode::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Mode::RateLimited { retry_after } => {
            let mut r = json(429, r#"{"error":"too_many_requests"}"#.into());
            r.headers_mut().insert("retry-after", retry_after.into());
            r
        }
        Mode::Huge(n) => {
            let pad = "x".repeat(n.saturating_sub(64));
            json(
                200,
                format!(r#"{{"access_token":"huge","token_type":"Bearer","pad":"{pad}"}}"#),
            )
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}
