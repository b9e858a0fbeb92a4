//! Validation of a provider's token endpoint (`token_url` or `issuer`) and of its client
//! credential (secret, private key, assertion file or TLS client certificate). Key and
//! certificate files are read and checked here, so `tokenproxy check` reports them.

use std::path::PathBuf;

use url::Url;

use super::file::{FileAssertion, FileProvider};
use super::validate::is_loopback_host;
use super::{parse_duration, AuthMethod, ConfigError, SecretSource};
use crate::credentials::assertion::{DEFAULT_LIFETIME, JWT_BEARER, MAX_LIFETIME};
use crate::credentials::keys::{read_pair, Algorithm, CertChain, PrivateKey};
use crate::credentials::{ClientAssertion, Credential, PrivateKeyJwt, TlsClient};
use crate::secret::Secret;

/// Where the token endpoint comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `token_url`, as configured.
    TokenUrl(Url),
    /// `issuer`: the token endpoint comes from its discovery document.
    Issuer(Issuer),
}

/// A configured issuer. `id` is kept exactly as written, since the discovery document's
/// `issuer` must equal it character for character (OIDC Discovery §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    pub id: String,
    pub url: Url,
    /// Plain http allowed to a non-loopback host (`allow_http`), for the discovered endpoints too.
    pub allow_http: bool,
}

impl Endpoint {
    /// The configured URL, for the default assertion audience and for logs.
    pub fn configured(&self) -> &str {
        match self {
            Endpoint::TokenUrl(u) => u.as_str(),
            Endpoint::Issuer(i) => &i.id,
        }
    }
}

/// Checks a token endpoint or issuer URL: https, or http to loopback or with `allow_http`; a
/// host; no credentials in it.
pub fn check_url(key: &str, raw: &str, allow_http: bool) -> Result<Url, ConfigError> {
    let url = Url::parse(raw)
        .map_err(|e| ConfigError::key(key, format!("invalid URL \"{raw}\": {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = url.host().is_some_and(|h| is_loopback_host(&h));
            if !loopback && !allow_http {
                return Err(ConfigError::key(
                    key,
                    format!(
                        "\"{raw}\" is plain http to a non-loopback host, which would send the client credentials in clear text; use https or set allow_http: true"
                    ),
                ));
            }
        }
        other => {
            return Err(ConfigError::key(
                key,
                format!("unsupported scheme \"{other}\" (use https)"),
            ))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::key(key, "the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::key(
            key,
            "credentials in the URL are not allowed; use client_id and the credential keys",
        ));
    }
    Ok(url)
}

pub(super) fn validate_endpoint(name: &str, p: &FileProvider) -> Result<Endpoint, ConfigError> {
    let key = |k: &str| format!("providers.{name}.{k}");
    match (&p.token_url, &p.issuer) {
        (Some(_), Some(_)) => Err(ConfigError::key(
            format!("providers.{name}"),
            "set exactly one of token_url and issuer, not both",
        )),
        (None, None) => Err(ConfigError::key(
            format!("providers.{name}"),
            "one of token_url or issuer is required",
        )),
        (Some(t), None) => Ok(Endpoint::TokenUrl(check_url(
            &key("token_url"),
            t,
            p.allow_http,
        )?)),
        (None, Some(i)) => {
            let url = check_url(&key("issuer"), i, p.allow_http)?;
            if url.query().is_some() || url.fragment().is_some() {
                return Err(ConfigError::key(
                    key("issuer"),
                    "an issuer has no query or fragment (OIDC Discovery §3)",
                ));
            }
            Ok(Endpoint::Issuer(Issuer {
                id: i.clone(),
                url,
                allow_http: p.allow_http,
            }))
        }
    }
}

/// The keys each method uses, to reject those it does not.
const SECRET_KEYS: [&str; 2] = ["client_secret", "client_secret_file"];
const JWT_KEYS: [&str; 2] = ["private_key_file", "assertion"];
const ASSERTION_KEYS: [&str; 2] = ["client_assertion_file", "client_assertion_type"];
const TLS_KEYS: [&str; 2] = ["client_certificate_file", "client_key_file"];

fn present(p: &FileProvider) -> Vec<&'static str> {
    let set = [
        ("client_secret", p.client_secret.is_some()),
        ("client_secret_file", p.client_secret_file.is_some()),
        ("private_key_file", p.private_key_file.is_some()),
        ("assertion", p.assertion.is_some()),
        ("client_assertion_file", p.client_assertion_file.is_some()),
        ("client_assertion_type", p.client_assertion_type.is_some()),
        (
            "client_certificate_file",
            p.client_certificate_file.is_some(),
        ),
        ("client_key_file", p.client_key_file.is_some()),
    ];
    set.into_iter()
        .filter(|(_, s)| *s)
        .map(|(k, _)| k)
        .collect()
}

pub(super) fn validate_credential(
    name: &str,
    p: &mut FileProvider,
    endpoint: &Endpoint,
) -> Result<(AuthMethod, Credential), ConfigError> {
    let key = |k: &str| format!("providers.{name}.{k}");
    let method = p.auth_method;
    let allowed: &[&str] = match method {
        AuthMethod::ClientSecretPost | AuthMethod::ClientSecretBasic => &SECRET_KEYS,
        AuthMethod::PrivateKeyJwt => &JWT_KEYS,
        AuthMethod::ClientAssertion => &ASSERTION_KEYS,
        AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth => &TLS_KEYS,
    };
    if let Some(k) = present(p).into_iter().find(|k| !allowed.contains(k)) {
        return Err(ConfigError::key(
            key(k),
            format!("is not used by auth_method {}", method.as_str()),
        ));
    }
    let credential = match method {
        AuthMethod::ClientSecretPost | AuthMethod::ClientSecretBasic => {
            Credential::Secret(secret(name, p)?)
        }
        AuthMethod::PrivateKeyJwt => {
            let Some(file) = p.private_key_file.take() else {
                return Err(ConfigError::key(
                    key("private_key_file"),
                    "is required with auth_method private_key_jwt",
                ));
            };
            Credential::PrivateKeyJwt(private_key_jwt(
                name,
                file,
                p.assertion.take().unwrap_or_default(),
                endpoint,
            )?)
        }
        AuthMethod::ClientAssertion => {
            let Some(file) = p.client_assertion_file.take() else {
                return Err(ConfigError::key(
                    key("client_assertion_file"),
                    "is required with auth_method client_assertion",
                ));
            };
            if let Err(e) = std::fs::metadata(&file) {
                return Err(ConfigError::key(
                    key("client_assertion_file"),
                    format!("cannot read \"{file}\": {e}"),
                ));
            }
            let assertion_type = p
                .client_assertion_type
                .take()
                .unwrap_or_else(|| JWT_BEARER.to_string());
            if assertion_type.is_empty() {
                return Err(ConfigError::key(
                    key("client_assertion_type"),
                    "must not be empty (omit it for the JWT bearer type)",
                ));
            }
            Credential::ClientAssertion(ClientAssertion {
                file: PathBuf::from(file),
                assertion_type,
            })
        }
        AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth => {
            let (Some(cert), Some(k)) =
                (p.client_certificate_file.take(), p.client_key_file.take())
            else {
                return Err(ConfigError::key(
                    format!("providers.{name}"),
                    format!(
                        "client_certificate_file and client_key_file are required with auth_method {}",
                        method.as_str()
                    ),
                ));
            };
            if let Endpoint::TokenUrl(u) = endpoint {
                if u.scheme() != "https" {
                    return Err(ConfigError::key(
                        key("token_url"),
                        format!(
                            "auth_method {} needs an https token endpoint",
                            method.as_str()
                        ),
                    ));
                }
            }
            let tls = TlsClient {
                certificate_file: PathBuf::from(cert),
                key_file: PathBuf::from(k),
            };
            PrivateKey::read(&tls.key_file)
                .map_err(|e| ConfigError::key(key("client_key_file"), e.to_string()))?;
            CertChain::read(&tls.certificate_file)
                .map_err(|e| ConfigError::key(key("client_certificate_file"), e.to_string()))?;
            read_pair(&tls.key_file, &tls.certificate_file)
                .map_err(|e| ConfigError::key(key("client_certificate_file"), e.to_string()))?;
            Credential::TlsClient(tls)
        }
    };
    Ok((method, credential))
}

fn secret(name: &str, p: &mut FileProvider) -> Result<SecretSource, ConfigError> {
    let key = |k: &str| format!("providers.{name}.{k}");
    match (p.client_secret.take(), p.client_secret_file.take()) {
        (Some(_), Some(_)) => Err(ConfigError::key(
            format!("providers.{name}"),
            "set exactly one of client_secret and client_secret_file, not both",
        )),
        (None, None) => Err(ConfigError::key(
            format!("providers.{name}"),
            "one of client_secret or client_secret_file is required (or choose another auth_method)",
        )),
        (Some(s), None) => {
            if s.is_empty() {
                return Err(ConfigError::key(key("client_secret"), "must not be empty"));
            }
            Ok(SecretSource::Inline(Secret::new(s)))
        }
        (None, Some(path)) => {
            let source = SecretSource::File(PathBuf::from(&path));
            if let Err(e) = source.read() {
                return Err(ConfigError::key(
                    key("client_secret_file"),
                    format!("cannot read \"{path}\": {e}"),
                ));
            }
            Ok(source)
        }
    }
}

fn private_key_jwt(
    name: &str,
    file: String,
    a: FileAssertion,
    endpoint: &Endpoint,
) -> Result<PrivateKeyJwt, ConfigError> {
    let key = |k: &str| format!("providers.{name}.{k}");
    let private = PrivateKey::read(file.as_ref())
        .map_err(|e| ConfigError::key(key("private_key_file"), e.to_string()))?;
    let algorithm = match a.algorithm.as_deref() {
        None => None,
        Some(s) => {
            let alg = Algorithm::parse(s).ok_or_else(|| {
                ConfigError::key(
                    key("assertion.algorithm"),
                    format!(
                        "unknown algorithm \"{s}\" (use RS256, RS384, RS512, PS256, PS384, ES256 or ES384)"
                    ),
                )
            })?;
            if !alg.fits(private.kind) {
                return Err(ConfigError::key(
                    key("assertion.algorithm"),
                    format!(
                        "{s} does not fit the key in \"{file}\", which is {}",
                        private.kind
                    ),
                ));
            }
            Some(alg)
        }
    };
    let audience = match a.audience {
        Some(s) if s.is_empty() => {
            return Err(ConfigError::key(
                key("assertion.audience"),
                "must not be empty (omit it for the default)",
            ))
        }
        Some(s) => s,
        None => endpoint.configured().to_string(),
    };
    if a.key_id.as_deref() == Some("") {
        return Err(ConfigError::key(
            key("assertion.key_id"),
            "must not be empty (omit it for no kid)",
        ));
    }
    let certificate_file = match a.certificate_file {
        None => None,
        Some(c) => {
            let chain = CertChain::read(c.as_ref())
                .map_err(|e| ConfigError::key(key("assertion.certificate_file"), e.to_string()))?;
            if !private.matches(chain.leaf()) {
                return Err(ConfigError::key(
                    key("assertion.certificate_file"),
                    format!(
                        "the certificate in \"{c}\" does not hold the public key of private_key_file \"{file}\""
                    ),
                ));
            }
            Some(PathBuf::from(c))
        }
    };
    let lifetime = match a.lifetime.as_deref() {
        None => DEFAULT_LIFETIME,
        Some(s) => parse_duration(s).map_err(|m| ConfigError::key(key("assertion.lifetime"), m))?,
    };
    if lifetime.as_secs() < 1 || lifetime > MAX_LIFETIME {
        return Err(ConfigError::key(
            key("assertion.lifetime"),
            format!(
                "{} is not between 1s and 10m",
                humantime::format_duration(lifetime)
            ),
        ));
    }
    Ok(PrivateKeyJwt {
        key_file: PathBuf::from(file),
        algorithm,
        audience,
        key_id: a.key_id,
        certificate_file,
        lifetime,
    })
}

#[cfg(test)]
mod tests;
