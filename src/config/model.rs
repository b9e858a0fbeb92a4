//! The checked configuration the rest of the program uses: what [`super::validate`] makes of
//! the file. It may change freely; the file format is the stable interface.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use super::{Endpoint, SharedCacheConfig};
use crate::credentials::Credential;
use crate::secret::Secret;
use crate::token::schedule::RefreshPolicy;
use crate::token::TokenKey;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// `client_id` and `client_secret` in the request body.
    #[default]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyEncoding {
    #[default]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Existing {
    #[default]
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
    /// The token injected (`token:`); `None` on a verify route.
    pub token: Option<TokenKey>,
    /// How inbound tokens are checked (`verify:`); `None` on an injecting route.
    pub verify: Option<Arc<super::VerifyConfig>>,
    pub header: HeaderName,
    pub format: HeaderFormat,
    pub existing: Existing,
    pub ca_file: Option<Arc<CaFile>>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}
