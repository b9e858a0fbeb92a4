//! Configuration: loading the YAML file, `${VAR}` substitution, and validation into a [`Config`]
//! that the rest of the program uses. Every error names the key that is wrong.

mod credentials;
mod duration;
mod env;
mod file;
mod shared_cache;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use url::Url;

use crate::credentials::Credential;
use crate::secret::Secret;
use crate::token::schedule::RefreshPolicy;
use crate::token::TokenKey;
use file::{FileConfig, FileProvider, FileRefresh, FileRoute};

pub use credentials::{check_url, Endpoint, Issuer};
pub use duration::parse as parse_duration;
pub use shared_cache::SharedCacheConfig;

/// Token-request parameters that come from the provider or the route, never from `params`.
const RESERVED_PARAMS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "audience",
    "scope",
    "resource",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid YAML: {0}")]
    Syntax(String),
    #[error("{key}: environment variable {var} is not set")]
    UnsetEnv { key: String, var: String },
    #[error("{key}: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub admin_listen: SocketAddr,
    pub log: LogConfig,
    pub shutdown_grace: Duration,
    /// Worker threads of the proxy.
    pub threads: usize,
    /// Serve plain HTTP/1.1 requests to plain-HTTP upstreams on the lean path ([`crate::h1`]).
    pub lean_path: bool,
    pub callers: CallerLimits,
    pub providers: BTreeMap<String, Arc<Provider>>,
    pub routes: Vec<Route>,
    /// Tokens shared by the replicas through Redis; `None` fetches every token locally.
    pub shared_cache: Option<SharedCacheConfig>,
}

/// What a caller connection may take of the proxy, on every listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerLimits {
    /// Longest time for a whole request head, from its first byte (from the accept for the
    /// first request of a connection).
    pub header_timeout: Duration,
    /// Longest time one write towards the caller may wait for it to read.
    pub write_timeout: Duration,
    /// Open caller connections per listener; more are closed when accepted.
    pub max_connections: usize,
}

/// Bounds of `client_header_timeout` and `client_write_timeout`.
const CALLER_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(600));
/// Bounds of `max_connections`.
const MAX_CONNECTIONS_RANGE: (usize, usize) = (1, 1_000_000);

impl Default for CallerLimits {
    fn default() -> Self {
        CallerLimits {
            header_timeout: Duration::from_secs(20),
            write_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing` filter directive; `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
    pub access: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `client_id` and `client_secret` in the request body.
    ClientSecretPost,
    /// HTTP Basic with the form-encoded id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// A JWT signed with the client's private key (RFC 7523 §2.2, OIDC Core §9).
    PrivateKeyJwt,
    /// A JWT minted by someone else, read from a file (e.g. a Kubernetes service-account token).
    ClientAssertion,
    /// A TLS client certificate issued by a CA the IdP trusts (RFC 8705 §2.1).
    TlsClientAuth,
    /// A self-signed TLS client certificate registered with the IdP (RFC 8705 §2.2).
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    /// The name in the config, in discovery documents and in `/tokens`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::ClientAssertion => "client_assertion",
            AuthMethod::TlsClientAuth => "tls_client_auth",
            AuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }

    /// True for the methods that authenticate with a TLS client certificate.
    pub fn is_mtls(self) -> bool {
        matches!(
            self,
            AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Form,
    Json,
}

/// Where the client secret comes from. A file is read again for every token request, so a
/// rotated secret is used without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(Secret),
    File(PathBuf),
}

impl SecretSource {
    pub fn read(&self) -> std::io::Result<Secret> {
        match self {
            SecretSource::Inline(s) => Ok(s.clone()),
            SecretSource::File(path) => {
                let raw = std::fs::read_to_string(path)?;
                let value = raw.trim_end_matches(['\n', '\r']);
                if value.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the file is empty",
                    ));
                }
                Ok(Secret::new(value))
            }
        }
    }
}

/// Extra trust roots read from a PEM file.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFile {
    pub path: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for CaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CaFile({}, {} certs)",
            self.path.display(),
            self.certs.len()
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    pub endpoint: Endpoint,
    pub client_id: String,
    pub credential: Credential,
    pub auth_method: AuthMethod,
    pub body: BodyEncoding,
    pub params: Vec<(String, String)>,
    pub timeout: Duration,
    pub ca_file: Option<Arc<CaFile>>,
    pub refresh: RefreshPolicy,
}

impl Provider {
    /// True when a token fetched with `self` is as good as one fetched with `other`: everything
    /// that shapes the token request except the secret (a rotated secret keeps the token).
    pub fn same_token_source(&self, other: &Provider) -> bool {
        self.endpoint == other.endpoint
            && self.client_id == other.client_id
            && self.auth_method == other.auth_method
            && self.body == other.body
            && self.params == other.params
            && self.credential.same_source(&other.credential)
    }
}

/// When and what to replay after the upstream rejected a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub on_status: Vec<u16>,
    /// Largest request body replayed; larger bodies are not (the caller gets the rejection).
    pub max_body: usize,
}

/// pingora keeps at most this much of a request body for a retry.
pub const MAX_REPLAY_BUFFER: usize = 64 * 1024;

/// What to do with a header of the same name that the caller sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Replace,
    Keep,
}

/// The injected header's value: `prefix` + token + `suffix`, from a format like `Bearer {token}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderFormat {
    prefix: String,
    suffix: String,
}

impl HeaderFormat {
    pub fn parse(format: &str) -> Result<Self, String> {
        let Some((prefix, suffix)) = format.split_once("{token}") else {
            return Err(format!("\"{format}\" must contain {{token}}"));
        };
        if suffix.contains("{token}") {
            return Err(format!("\"{format}\" must contain {{token}} once"));
        }
        let ok = |s: &str| HeaderValue::from_str(s).is_ok();
        if !ok(prefix) || !ok(suffix) {
            return Err(format!(
                "\"{format}\" has characters not allowed in a header value"
            ));
        }
        Ok(HeaderFormat {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
        })
    }

    /// The header value for `token`, marked sensitive so that HTTP/2 never indexes it.
    pub fn render(&self, token: &Secret) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
        let mut v =
            String::with_capacity(self.prefix.len() + token.expose().len() + self.suffix.len());
        v.push_str(&self.prefix);
        v.push_str(token.expose());
        v.push_str(&self.suffix);
        let mut value = HeaderValue::from_str(&v)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// Where a route forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub tls: bool,
    /// Host name or IP address, without IPv6 brackets: used for SNI and certificate checks.
    pub host: String,
    pub port: u16,
    /// The value of the `Host` header sent upstream.
    pub authority: String,
    /// Prefix for every request path, without a trailing slash (empty for none).
    pub base_path: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    /// Replay a request once with a fresh token when the upstream answers one of these.
    pub replay: Option<Replay>,
    pub http2: bool,
    pub listen: SocketAddr,
    pub upstream: Upstream,
    pub token: TokenKey,
    pub header: HeaderName,
    pub format: HeaderFormat,
    pub existing: Existing,
    pub ca_file: Option<Arc<CaFile>>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

impl Config {
    /// Reads, substitutes and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates YAML text, taking `${VAR}` values from `lookup`.
    pub fn from_yaml(
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        if value.is_null() {
            return Err(ConfigError::Syntax("the file is empty".into()));
        }
        env::substitute(&mut value, "", lookup)?;
        let raw: FileConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." {
                "(top level)".to_string()
            } else {
                path
            };
            ConfigError::key(key, e.into_inner().to_string())
        })?;
        validate(raw)
    }

    /// A one-line description for `tokenproxy check`.
    pub fn summary(&self) -> String {
        let tokens: HashSet<&TokenKey> = self.routes.iter().map(|r| &r.token).collect();
        format!(
            "config ok: {} provider(s), {} route(s), {} distinct token(s), admin on {}",
            self.providers.len(),
            self.routes.len(),
            tokens.len(),
            self.admin_listen
        )
    }
}

fn validate(raw: FileConfig) -> Result<Config, ConfigError> {
    let admin_listen = match raw.admin.listen {
        Some(s) => parse_listen("admin.listen", &s)?,
        None => SocketAddr::from(([127, 0, 0, 1], 9901)),
    };
    let log = LogConfig {
        level: raw.log.level.unwrap_or_else(|| "info".into()),
        format: match raw.log.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::key(
                    "log.format",
                    format!("unknown format \"{other}\" (use text or json)"),
                ))
            }
        },
        access: raw.log.access,
    };
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.level) {
        return Err(ConfigError::key(
            "log.level",
            format!("invalid level \"{}\": {e}", log.level),
        ));
    }
    let shutdown_grace = opt_duration("shutdown_grace", raw.shutdown_grace.as_deref(), 10_000)?;
    let threads = raw.threads.unwrap_or(1);
    if !(1..=64).contains(&threads) {
        return Err(ConfigError::key(
            "threads",
            format!("{threads} is not in 1..=64"),
        ));
    }

    let callers = validate_callers(
        raw.client_header_timeout.as_deref(),
        raw.client_write_timeout.as_deref(),
        raw.max_connections,
    )?;

    let mut providers = BTreeMap::new();
    for (name, p) in raw.providers {
        let provider = validate_provider(&name, p)?;
        providers.insert(name, Arc::new(provider));
    }

    if raw.routes.is_empty() {
        return Err(ConfigError::key("routes", "at least one route is required"));
    }
    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut names = HashSet::new();
    let mut listens = HashSet::new();
    listens.insert(admin_listen);
    for (i, r) in raw.routes.into_iter().enumerate() {
        let route = validate_route(&format!("routes[{i}]"), r, &providers)?;
        if !names.insert(route.name.clone()) {
            return Err(ConfigError::key(
                format!("routes[{i}].name"),
                format!("duplicate route name \"{}\"", route.name),
            ));
        }
        if !listens.insert(route.listen) {
            return Err(ConfigError::key(
                format!("routes[{i}].listen"),
                format!(
                    "address {} is already used by another route or the admin listener",
                    route.listen
                ),
            ));
        }
        routes.push(route);
    }
    let shared_cache = raw.shared_cache.map(shared_cache::validate).transpose()?;
    Ok(Config {
        admin_listen,
        log,
        shutdown_grace,
        threads,
        lean_path: raw.lean_path.unwrap_or(true),
        callers,
        providers,
        routes,
        shared_cache,
    })
}

fn validate_callers(
    header_timeout: Option<&str>,
    write_timeout: Option<&str>,
    max_connections: Option<usize>,
) -> Result<CallerLimits, ConfigError> {
    let d = CallerLimits::default();
    let (min, max) = CALLER_TIMEOUT_RANGE;
    let timeout = |key: &str, value: Option<&str>, default: Duration| {
        let v = match value {
            None => default,
            Some(s) => parse_duration(s).map_err(|m| ConfigError::key(key, m))?,
        };
        if !(min..=max).contains(&v) {
            return Err(ConfigError::key(key, "must be between 1s and 10m"));
        }
        Ok(v)
    };
    let header_timeout = timeout("client_header_timeout", header_timeout, d.header_timeout)?;
    let write_timeout = timeout("client_write_timeout", write_timeout, d.write_timeout)?;
    let max_connections = max_connections.unwrap_or(d.max_connections);
    let (lo, hi) = MAX_CONNECTIONS_RANGE;
    if !(lo..=hi).contains(&max_connections) {
        return Err(ConfigError::key(
            "max_connections",
            format!("{max_connections} is not in {lo}..={hi}"),
        ));
    }
    Ok(CallerLimits {
        header_timeout,
        write_timeout,
        max_connections,
    })
}

fn validate_provider(name: &str, mut p: FileProvider) -> Result<Provider, ConfigError> {
    let key = |k: &str| format!("providers.{name}.{k}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ConfigError::key(
            format!("providers.{name}"),
            "provider names may contain only letters, digits, '-', '_' and '.'",
        ));
    }
    let endpoint = credentials::validate_endpoint(name, &p)?;
    if p.client_id.is_empty() {
        return Err(ConfigError::key(key("client_id"), "must not be empty"));
    }
    let (auth_method, credential) = credentials::validate_credential(name, &mut p, &endpoint)?;
    let body = match p.body.as_deref() {
        None | Some("form") => BodyEncoding::Form,
        Some("json") => BodyEncoding::Json,
        Some(other) => {
            return Err(ConfigError::key(
                key("body"),
                format!("unknown encoding \"{other}\" (use form or json)"),
            ))
        }
    };
    for k in p.params.keys() {
        if RESERVED_PARAMS.contains(&k.as_str()) {
            return Err(ConfigError::key(
                format!("providers.{name}.params.{k}"),
                format!("\"{k}\" cannot be set in params (it is set from the provider or the route's token)"),
            ));
        }
    }
    let timeout = opt_duration(&key("timeout"), p.timeout.as_deref(), 10_000)?;
    if timeout.is_zero() {
        return Err(ConfigError::key(key("timeout"), "must be greater than 0"));
    }
    let ca_file = p
        .ca_file
        .as_deref()
        .map(|f| load_ca_file(&key("ca_file"), f))
        .transpose()?;
    let refresh = validate_refresh(&format!("providers.{name}.refresh"), p.refresh)?;
    Ok(Provider {
        name: name.to_string(),
        endpoint,
        client_id: p.client_id,
        credential,
        auth_method,
        body,
        params: p.params.into_iter().collect(),
        timeout,
        ca_file,
        refresh,
    })
}

fn validate_refresh(prefix: &str, r: FileRefresh) -> Result<RefreshPolicy, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let d = RefreshPolicy::default();
    let ratio = r.ratio.unwrap_or(d.ratio);
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(ConfigError::key(
            key("ratio"),
            format!("{ratio} is not in (0, 1]"),
        ));
    }
    let jitter = r.jitter.unwrap_or(d.jitter);
    if !(0.0..ratio).contains(&jitter) {
        return Err(ConfigError::key(
            key("jitter"),
            format!("{jitter} is not in [0, ratio) = [0, {ratio})"),
        ));
    }
    let dur = |k: &str, v: Option<&str>, default: Duration| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|m| ConfigError::key(key(k), m)),
        }
    };
    let expiry_skew = dur("expiry_skew", r.expiry_skew.as_deref(), d.expiry_skew)?;
    let retry_initial = dur("retry_initial", r.retry_initial.as_deref(), d.retry_initial)?;
    let retry_max = dur("retry_max", r.retry_max.as_deref(), d.retry_max)?;
    let default_lifetime = dur(
        "default_lifetime",
        r.default_lifetime.as_deref(),
        d.default_lifetime,
    )?;
    if retry_initial.is_zero() {
        return Err(ConfigError::key(
            key("retry_initial"),
            "must be greater than 0",
        ));
    }
    if retry_max < retry_initial {
        return Err(ConfigError::key(
            key("retry_max"),
            "must be at least retry_initial",
        ));
    }
    if default_lifetime.is_zero() {
        return Err(ConfigError::key(
            key("default_lifetime"),
            "must be greater than 0",
        ));
    }
    Ok(RefreshPolicy {
        ratio,
        jitter,
        expiry_skew,
        retry_initial,
        retry_max,
        default_lifetime,
    })
}

fn validate_route(
    prefix: &str,
    r: FileRoute,
    providers: &BTreeMap<String, Arc<Provider>>,
) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    if r.name.is_empty()
        || !r
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ConfigError::key(
            key("name"),
            format!(
                "\"{}\" is not a valid route name (letters, digits, '-', '_', '.')",
                r.name
            ),
        ));
    }
    let listen = parse_listen(&key("listen"), &r.listen)?;
    let upstream = parse_upstream(&key("upstream"), &r.upstream)?;
    let provider = providers.get(&r.token.provider).ok_or_else(|| {
        ConfigError::key(
            key("token.provider"),
            format!("unknown provider \"{}\"", r.token.provider),
        )
    })?;
    let non_empty = |k: &str, v: Option<String>| -> Result<Option<String>, ConfigError> {
        match v {
            Some(s) if s.is_empty() => Err(ConfigError::key(
                key(k),
                "must not be empty (omit it instead)",
            )),
            other => Ok(other),
        }
    };
    let token = TokenKey {
        provider: provider.name.clone(),
        audience: non_empty("token.audience", r.token.audience)?,
        scope: non_empty("token.scope", r.token.scope)?,
        resource: non_empty("token.resource", r.token.resource)?,
    };
    let header_name = r.header.as_deref().unwrap_or("Authorization");
    let header = HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
        ConfigError::key(
            key("header"),
            format!("invalid header name \"{header_name}\""),
        )
    })?;
    if [
        http::header::HOST,
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::CONNECTION,
        http::header::UPGRADE,
        http::header::TE,
    ]
    .contains(&header)
    {
        return Err(ConfigError::key(
            key("header"),
            format!("\"{header_name}\" cannot carry the token"),
        ));
    }
    let format = HeaderFormat::parse(r.format.as_deref().unwrap_or("Bearer {token}"))
        .map_err(|m| ConfigError::key(key("format"), m))?;
    let existing = match r.existing.as_deref() {
        None | Some("replace") => Existing::Replace,
        Some("keep") => Existing::Keep,
        Some(other) => {
            return Err(ConfigError::key(
                key("existing"),
                format!("unknown value \"{other}\" (use replace or keep)"),
            ))
        }
    };
    let ca_file = r
        .ca_file
        .as_deref()
        .map(|f| load_ca_file(&key("ca_file"), f))
        .transpose()?;
    let connect_timeout =
        opt_duration(&key("connect_timeout"), r.connect_timeout.as_deref(), 5_000)?;
    let read_timeout = opt_duration(&key("read_timeout"), r.read_timeout.as_deref(), 60_000)?;
    for (k, v) in [
        ("connect_timeout", connect_timeout),
        ("read_timeout", read_timeout),
    ] {
        if v.is_zero() {
            return Err(ConfigError::key(key(k), "must be greater than 0"));
        }
    }
    let on_status = r.retry_on_status.unwrap_or_else(|| vec![401]);
    for code in &on_status {
        if !(400..=599).contains(code) {
            return Err(ConfigError::key(
                key("retry_on_status"),
                format!("{code} is not an error status (400-599)"),
            ));
        }
    }
    let max_body = r.replay_buffer.unwrap_or(MAX_REPLAY_BUFFER);
    if max_body > MAX_REPLAY_BUFFER {
        return Err(ConfigError::key(
            key("replay_buffer"),
            format!("{max_body} is more than {MAX_REPLAY_BUFFER} bytes, the most a request body is kept for a replay"),
        ));
    }
    let replay = match r.replay {
        Some(false) => None,
        _ if on_status.is_empty() => None,
        _ => Some(Replay {
            on_status,
            max_body,
        }),
    };
    let http2 = match r.http2.as_deref() {
        None | Some("auto") => true,
        Some("off") => false,
        Some(other) => {
            return Err(ConfigError::key(
                key("http2"),
                format!("unknown value \"{other}\" (use auto or off)"),
            ))
        }
    };
    Ok(Route {
        replay,
        http2,
        name: r.name,
        listen,
        upstream,
        token,
        header,
        format,
        existing,
        ca_file,
        connect_timeout,
        read_timeout,
    })
}

fn parse_listen(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let addr: SocketAddr = value.parse().map_err(|_| {
        ConfigError::key(
            key,
            format!("\"{value}\" is not an IP:port address (e.g. 127.0.0.1:8081 or [::1]:8081)"),
        )
    })?;
    if addr.port() == 0 {
        return Err(ConfigError::key(key, "port 0 is not allowed; pick a port"));
    }
    Ok(addr)
}

fn parse_upstream(key: &str, value: &str) -> Result<Upstream, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| ConfigError::key(key, format!("invalid URL \"{value}\": {e}")))?;
    let tls = match url.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(ConfigError::key(
                key,
                format!("unsupported scheme \"{other}\" (use http or https)"),
            ))
        }
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(ConfigError::key(key, format!("\"{value}\" has no host"))),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::key(
            key,
            "credentials in the URL are not allowed",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::key(
            key,
            "a query or fragment is not allowed in the upstream URL",
        ));
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| ConfigError::key(key, "no port"))?;
    let host_part = url.host_str().unwrap_or_default();
    let authority = match url.port() {
        Some(p) => format!("{host_part}:{p}"),
        None => host_part.to_string(),
    };
    Ok(Upstream {
        tls,
        host,
        port,
        authority,
        base_path: url.path().trim_end_matches('/').to_string(),
    })
}

fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        url::Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

fn opt_duration(key: &str, value: Option<&str>, default_ms: u64) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(Duration::from_millis(default_ms)),
        Some(s) => parse_duration(s).map_err(|m| ConfigError::key(key, m)),
    }
}

fn load_ca_file(key: &str, path: &str) -> Result<Arc<CaFile>, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::key(key, format!("cannot read \"{path}\": {e}")))?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let cert =
            item.map_err(|e| ConfigError::key(key, format!("\"{path}\" is not valid PEM: {e}")))?;
        // pingora parses these again when it connects and panics on a bad one: check them here.
        if x509_parser::parse_x509_certificate(&cert).is_err() {
            return Err(ConfigError::key(
                key,
                format!("\"{path}\" contains a certificate that cannot be parsed"),
            ));
        }
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(ConfigError::key(
            key,
            format!("\"{path}\" contains no certificate"),
        ));
    }
    Ok(Arc::new(CaFile {
        path: PathBuf::from(path),
        certs,
    }))
}

/// True when `addr` is reachable only from this host.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests;
