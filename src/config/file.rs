//! The config file as written by users: serde structs that mirror the YAML, nothing checked yet.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::model::{AuthMethod, BodyEncoding, Existing, LogFormat};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub admin: FileAdmin,
    #[serde(default)]
    pub log: FileLog,
    pub shutdown_grace: Option<String>,
    pub threads: Option<usize>,
    pub lean_path: Option<bool>,
    pub client_header_timeout: Option<String>,
    pub client_write_timeout: Option<String>,
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub providers: BTreeMap<String, FileProvider>,
    #[serde(default)]
    pub routes: Vec<FileRoute>,
    pub shared_cache: Option<FileSharedCache>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    pub level: Option<String>,
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default)]
    pub access: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProvider {
    pub token_url: Option<String>,
    pub issuer: Option<String>,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    #[serde(default)]
    pub auth_method: AuthMethod,
    #[serde(default)]
    pub body: BodyEncoding,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub timeout: Option<String>,
    pub ca_file: Option<String>,
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default)]
    pub refresh: FileRefresh,
    pub private_key_file: Option<String>,
    pub assertion: Option<FileAssertion>,
    pub client_assertion_file: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_certificate_file: Option<String>,
    pub client_key_file: Option<String>,
}

/// `providers.NAME.assertion`: how the `private_key_jwt` assertion is made.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAssertion {
    pub algorithm: Option<String>,
    pub audience: Option<String>,
    pub key_id: Option<String>,
    pub certificate_file: Option<String>,
    pub lifetime: Option<String>,
}

// Hand-written so that a debug print of the raw file never shows an inline secret.
impl std::fmt::Debug for FileProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileProvider")
            .field("token_url", &self.token_url)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("client_secret_file", &self.client_secret_file)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRefresh {
    pub ratio: Option<f64>,
    pub jitter: Option<f64>,
    pub expiry_skew: Option<String>,
    pub retry_initial: Option<String>,
    pub retry_max: Option<String>,
    pub default_lifetime: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: String,
    pub listen: String,
    pub upstream: String,
    pub token: Option<FileRouteToken>,
    pub verify: Option<super::verify::FileVerify>,
    pub header: Option<String>,
    pub format: Option<String>,
    #[serde(default)]
    pub existing: Existing,
    pub ca_file: Option<String>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub replay: Option<bool>,
    pub retry_on_status: Option<Vec<u16>>,
    pub replay_buffer: Option<usize>,
    #[serde(default)]
    pub http2: Http2,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRouteToken {
    pub provider: String,
    pub audience: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSharedCache {
    pub redis: FileRedis,
    pub encryption_key_file: String,
    pub timeout: Option<String>,
    pub lock_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedis {
    pub url: String,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub ca_file: Option<String>,
    pub key_prefix: Option<String>,
}

/// `routes[].http2`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Http2 {
    /// Offer h2 by ALPN to a TLS upstream.
    #[default]
    Auto,
    Off,
}
