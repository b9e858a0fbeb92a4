//! One test rig: the test IdP, an upstream (recording, plain or TLS, or raw bytes) and the real
//! proxy in front of it, set up in a few lines, with helpers to send requests and read metrics.
//!
//! Config lines may name `{up}` (the upstream's base URL: `http://127.0.0.1:P`, or
//! `https://localhost:P` over TLS; `{tls_up}` for a second, HTTPS one), `{ca_file}` (a `ca_file:`
//! line naming the test CA, written into the proxy's directory), `{ca_path}` (that file's path
//! alone), `{token_url}` (the IdP's) and `{dir}` (the proxy's directory).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::config::Cfg;
use super::idp::{Idp, Mode};
use super::proxy::Proxy;
use super::rawup::{RawUpstream, Received, Reply};
use super::tls::TestCa;
use super::upstream::Upstream;

type Handler = Box<dyn Fn(&Received) -> Reply + Send + Sync>;
type BeforeStart = Box<dyn FnOnce(&Idp, &Path)>;

enum UpKind {
    Http,
    Https,
    HttpsH2,
    Raw(Handler),
    RawTls(Handler),
    None,
}

/// What the proxy's config holds besides the provider's URL and credentials: top-level lines,
/// provider lines and routes, with the placeholders above still in them.
#[derive(Clone, Default)]
pub struct Layout {
    top: Vec<String>,
    provider: Vec<String>,
    routes: Vec<(String, String, Vec<String>)>,
}

impl Layout {
    pub fn new() -> Self {
        Self::default()
    }

    /// A top-level line, e.g. `lean_path: false`.
    pub fn top(mut self, line: &str) -> Self {
        self.top.push(line.to_string());
        self
    }

    /// A line under provider `idp`, e.g. `timeout: 1s`.
    pub fn provider(mut self, line: &str) -> Self {
        self.provider.push(line.to_string());
        self
    }

    /// A route to the rig's upstream, with `extra` lines under it (see [`Cfg::route`]).
    pub fn route(self, name: &str, extra: &[&str]) -> Self {
        self.route_to(name, "{up}", extra)
    }

    /// A route to `target` (which may hold `{up}`).
    pub fn route_to(mut self, name: &str, target: &str, extra: &[&str]) -> Self {
        let extra = extra.iter().map(|l| l.to_string()).collect();
        self.routes.push((name.into(), target.into(), extra));
        self
    }
}

pub struct RigBuilder {
    mode: Mode,
    secret: String,
    checker: bool,
    up: UpKind,
    also_https: bool,
    ca_names: Vec<String>,
    head: Option<Vec<String>>,
    label: &'static str,
    layout: Layout,
    env: Vec<(String, String)>,
    before_start: Option<BeforeStart>,
}

/// The parts of a started rig that a config is rendered against.
struct Env {
    token_url: String,
    secret: String,
    head: Option<Vec<String>>,
    dir: PathBuf,
    up_url: String,
    tls_up_url: String,
    ca_path: PathBuf,
}

impl Env {
    fn fill(&self, s: &str) -> String {
        s.replace("{up}", &self.up_url)
            .replace("{tls_up}", &self.tls_up_url)
            .replace("{ca_file}", &format!("ca_file: {}", self.ca_path.display()))
            .replace("{ca_path}", &self.ca_path.display().to_string())
            .replace("{token_url}", &self.token_url)
            .replace("{dir}", &self.dir.display().to_string())
    }

    fn render(&self, layout: &Layout) -> String {
        let mut cfg = match &self.head {
            Some(head) => {
                let head: Vec<String> = head.iter().map(|l| self.fill(l)).collect();
                Cfg::with_head(0, &head.iter().map(String::as_str).collect::<Vec<_>>())
            }
            None => Cfg::new(0, &self.token_url, &self.secret),
        };
        for line in &layout.top {
            cfg = cfg.top(&self.fill(line));
        }
        for line in &layout.provider {
            cfg = cfg.provider(&self.fill(line));
        }
        for (name, target, extra) in &layout.routes {
            let extra: Vec<String> = extra.iter().map(|l| self.fill(l)).collect();
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            cfg = cfg.route(name, 0, &self.fill(target), &extra);
        }
        cfg.build()
    }
}

impl RigBuilder {
    /// The IdP's behaviour (default: tokens for 300 s).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Runs `setup` with the IdP and the proxy's directory before the proxy starts (to give the
    /// IdP a quota header, or write credential files).
    pub fn before_start(mut self, setup: impl FnOnce(&Idp, &Path) + 'static) -> Self {
        self.before_start = Some(Box::new(setup));
        self
    }

    /// Provider `idp` opens with `lines` instead of the token URL, client `cid` and the secret;
    /// they may name `{token_url}` and `{dir}` (the proxy's directory).
    pub fn provider_head(mut self, lines: &[&str]) -> Self {
        self.head = Some(lines.iter().map(|l| l.to_string()).collect());
        self
    }

    /// Provider `idp`'s client secret.
    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = secret.into();
        self
    }

    /// The upstream records requests without checking their tokens against the IdP.
    pub fn no_checker(mut self) -> Self {
        self.checker = false;
        self
    }

    /// An HTTPS upstream (HTTP/1.1 only) with a certificate from a generated CA.
    pub fn https(mut self) -> Self {
        self.up = UpKind::Https;
        self
    }

    /// An HTTPS upstream that offers h2 and http/1.1.
    pub fn https_h2(mut self) -> Self {
        self.up = UpKind::HttpsH2;
        self
    }

    /// A second, HTTPS recording upstream beside the first: `{tls_up}`, [`Rig::tls_up`].
    pub fn also_https(mut self) -> Self {
        self.also_https = true;
        self
    }

    /// The CA's server certificate carries only `names` (default `localhost`, 127.0.0.1).
    pub fn cert_names(mut self, names: &[&str]) -> Self {
        self.ca_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// A raw upstream that answers each request with `handler` (see `rawup`).
    pub fn raw<F>(mut self, handler: F) -> Self
    where
        F: Fn(&Received) -> Reply + Send + Sync + 'static,
    {
        self.up = UpKind::Raw(Box::new(handler));
        self
    }

    /// The same over TLS with the rig's CA (`https://127.0.0.1:P`).
    pub fn raw_tls<F>(mut self, handler: F) -> Self
    where
        F: Fn(&Received) -> Reply + Send + Sync + 'static,
    {
        self.up = UpKind::RawTls(Box::new(handler));
        self
    }

    /// Names the proxy in the log a failing test prints (default `proxy`).
    pub fn label(mut self, label: &'static str) -> Self {
        self.label = label;
        self
    }

    /// No upstream of the rig's own: every route names its target.
    pub fn no_upstream(mut self) -> Self {
        self.up = UpKind::None;
        self
    }

    pub fn top(mut self, line: &str) -> Self {
        self.layout = self.layout.top(line);
        self
    }

    pub fn provider(mut self, line: &str) -> Self {
        self.layout = self.layout.provider(line);
        self
    }

    pub fn route(mut self, name: &str, extra: &[&str]) -> Self {
        self.layout = self.layout.route(name, extra);
        self
    }

    pub fn route_to(mut self, name: &str, target: &str, extra: &[&str]) -> Self {
        self.layout = self.layout.route_to(name, target, extra);
        self
    }

    /// Replaces the config lines given so far.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// An environment variable for the proxy (`RUST_LOG` defaults to `debug`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts everything and waits until the proxy is ready (every route has its token).
    pub async fn start(self) -> Rig {
        let mut rig = self.spawn().await;
        rig.proxy.ready().await;
        rig
    }

    /// Starts everything and waits until the proxy listens, tokens or not.
    pub async fn start_listening(self) -> Rig {
        let mut rig = self.spawn().await;
        rig.proxy.listening().await;
        rig
    }

    /// Starts everything without waiting for the proxy.
    pub async fn spawn(self) -> Rig {
        let names: Vec<&str> = self.ca_names.iter().map(String::as_str).collect();
        let ca = TestCa::for_names(&names);
        let idp = Idp::start(self.mode).await;
        let checker = self.checker.then(|| idp.checker());
        let (mut up, mut raw) = (None, None);
        let up_url = match self.up {
            UpKind::Http => {
                let u = Upstream::http(checker).await;
                let url = format!("http://{}", u.addr);
                up = Some(u);
                url
            }
            UpKind::Https | UpKind::HttpsH2 => {
                let u = if matches!(self.up, UpKind::Https) {
                    Upstream::https(checker, &ca).await
                } else {
                    Upstream::https_h2(checker, &ca).await
                };
                let url = format!("https://localhost:{}", u.addr.port());
                up = Some(u);
                url
            }
            UpKind::Raw(handler) => {
                let r = RawUpstream::start(handler).await;
                let url = r.url();
                raw = Some(r);
                url
            }
            UpKind::RawTls(handler) => {
                let r = RawUpstream::start_tls(handler, &ca).await;
                let url = r.url();
                raw = Some(r);
                url
            }
            UpKind::None => "http://127.0.0.1:9".into(),
        };
        let tls_up = match self.also_https {
            true => Some(Upstream::https(self.checker.then(|| idp.checker()), &ca).await),
            false => None,
        };
        let tls_up_url = tls_up.as_ref().map_or(String::new(), |u| {
            format!("https://localhost:{}", u.addr.port())
        });
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca.ca_pem).unwrap();
        let env = Env {
            token_url: idp.token_url(),
            secret: self.secret,
            head: self.head,
            dir: dir.path().to_path_buf(),
            up_url,
            tls_up_url,
            ca_path,
        };
        let proxy_env: Vec<(String, String)> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), env.fill(v)))
            .collect();
        let proxy_env: Vec<(&str, &str)> = proxy_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(setup) = self.before_start {
            setup(&idp, dir.path());
        }
        let proxy = Proxy::start_in(dir, &env.render(&self.layout), 0, &proxy_env);
        Rig {
            idp,
            up,
            tls_up,
            raw,
            ca,
            proxy,
            env,
            label: self.label,
        }
    }
}

/// A started rig. Dropping it stops everything; a failing test prints the proxy's log.
pub struct Rig {
    pub idp: Idp,
    up: Option<Upstream>,
    tls_up: Option<Upstream>,
    raw: Option<RawUpstream>,
    pub ca: TestCa,
    pub proxy: Proxy,
    env: Env,
    label: &'static str,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{} stderr:\n{}", self.label, self.proxy.stderr());
        }
    }
}

impl Rig {
    /// A rig with an IdP issuing tokens for 300 s and a plain recording upstream that checks
    /// them; add routes and settings before `start`.
    pub fn builder() -> RigBuilder {
        RigBuilder {
            mode: Mode::Ok {
                lifetime: Duration::from_secs(300),
            },
            secret: "rig-secret".into(),
            checker: true,
            up: UpKind::Http,
            also_https: false,
            ca_names: vec!["localhost".into(), "127.0.0.1".into()],
            head: None,
            label: "proxy",
            layout: Layout::new(),
            env: Vec::new(),
            before_start: None,
        }
    }

    /// The recording upstream (panics for a raw one).
    pub fn up(&self) -> &Upstream {
        self.up.as_ref().expect("this rig has a recording upstream")
    }

    /// The second, HTTPS upstream (see [`RigBuilder::also_https`]).
    pub fn tls_up(&self) -> &Upstream {
        self.tls_up
            .as_ref()
            .expect("this rig has a second upstream")
    }

    /// The raw upstream (panics for a recording one).
    pub fn raw(&self) -> &RawUpstream {
        self.raw.as_ref().expect("this rig has a raw upstream")
    }

    /// The upstream's base URL, as `{up}` in a layout.
    pub fn up_url(&self) -> &str {
        &self.env.up_url
    }

    /// The config `layout` renders to against this rig's IdP, upstream and CA.
    pub fn yaml(&self, layout: &Layout) -> String {
        self.env.render(layout)
    }

    pub fn admin(&self) -> u16 {
        self.proxy.admin
    }

    pub fn port(&self, route: &str) -> u16 {
        self.proxy.port(route)
    }
}
