//! The token client: one client-credentials request (RFC 6749 §4.4), sent with the provider's
//! client authentication; the answer is read by [`crate::token::answer`]. It follows no
//! redirects and reads at most 1 MiB.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::{Map, Value};
use url::Url;

use crate::config::{AuthMethod, BodyEncoding, Endpoint, Provider};
use crate::credentials::{Credential, Proof, ProofError, TlsIdentity};
use crate::secret::Secret;
use crate::token::discovery::Discovery;
use crate::token::TokenKey;

pub use crate::token::answer::{
    jwt_exp, parse_quota, parse_response, quota, retry_after, QuotaBucket, TokenResponse,
};

/// Largest token response read; anything longer is refused.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why a token fetch failed, as reported in logs, `/tokens` and 503 bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection refused, DNS, TLS or timeout: the IdP did not answer.
    IdpUnreachable,
    /// The IdP answered with an error other than the ones below.
    IdpError,
    /// The IdP rejected the client credentials.
    InvalidClient,
    /// The IdP answered 429.
    RateLimited,
    /// The answer was not a usable token (not JSON, no `access_token`, wrong `token_type`, too big).
    BadResponse,
    /// The client secret file could not be read.
    SecretUnreadable,
    /// A private key, certificate or assertion file is missing, unreadable or unusable.
    CredentialUnreadable,
    /// A private key and its certificate do not match (also when read again).
    CredentialMismatch,
    /// The `client_assertion` file holds an expired JWT, which is not sent.
    AssertionExpired,
    /// The issuer's discovery document could not be fetched or is not valid.
    DiscoveryFailed,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::IdpUnreachable => "idp_unreachable",
            ErrorClass::IdpError => "idp_error",
            ErrorClass::InvalidClient => "invalid_client",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::BadResponse => "bad_response",
            ErrorClass::SecretUnreadable => "secret_unreadable",
            ErrorClass::CredentialUnreadable => "credential_unreadable",
            ErrorClass::CredentialMismatch => "credential_mismatch",
            ErrorClass::AssertionExpired => "assertion_expired",
            ErrorClass::DiscoveryFailed => "discovery_failed",
        }
    }
}

/// A failed fetch. Holds the IdP's RFC 6749 §5.2 `error` and `error_description` when it sent
/// them; never the request's secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}{}", class.as_str(), idp_suffix(.idp_error, .idp_description))]
pub struct FetchError {
    pub class: ErrorClass,
    pub message: String,
    pub status: Option<u16>,
    pub idp_error: Option<String>,
    pub idp_description: Option<String>,
    /// The IdP's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

fn idp_suffix(error: &Option<String>, description: &Option<String>) -> String {
    match (error, description) {
        (Some(e), Some(d)) => format!(" (error={e}, error_description={d})"),
        (Some(e), None) => format!(" (error={e})"),
        _ => String::new(),
    }
}

impl FetchError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        FetchError {
            class,
            message: message.into(),
            status: None,
            idp_error: None,
            idp_description: None,
            retry_after: None,
        }
    }
}

/// What one fetch attempt produced, besides the token: the IdP's quota and the endpoint used.
pub struct Fetched {
    pub result: Result<TokenResponse, FetchError>,
    pub quota: Vec<QuotaBucket>,
    /// The token endpoint the request went to (none when it failed before that was known).
    pub endpoint: Option<Url>,
}

/// An HTTP client for one provider's token endpoint, with its discovery state and, for the TLS
/// client methods, a client built for the identity on disk (rebuilt when the files change).
#[derive(Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    discovery: Option<Arc<Discovery>>,
    mtls: Arc<Mutex<Option<MtlsClient>>>,
}

/// An HTTP client with a TLS client identity, and the digest of the identity it was built with.
type MtlsClient = ([u8; 32], reqwest::Client);

fn builder(provider: &Provider) -> Result<reqwest::ClientBuilder, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(provider.timeout)
        .connect_timeout(provider.timeout)
        .user_agent(concat!("tokenproxy/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(30));
    if let Some(ca) = &provider.ca_file {
        for cert in &ca.certs {
            builder = builder.add_root_certificate(reqwest::Certificate::from_der(cert)?);
        }
    }
    Ok(builder)
}

impl TokenClient {
    /// With `issuer`, also starts the background refresh of the discovery document, so this
    /// must run inside a tokio runtime.
    pub fn new(provider: &Provider) -> Result<Self, reqwest::Error> {
        let discovery = match &provider.endpoint {
            Endpoint::Issuer(i) => Some(Arc::new(Discovery::new(
                &provider.name,
                i.clone(),
                provider.auth_method,
            ))),
            Endpoint::TokenUrl(_) => None,
        };
        let http = builder(provider)?.build()?;
        if let Some(d) = &discovery {
            tokio::spawn(crate::token::discovery::refresh_in_background(
                Arc::downgrade(d),
                http.clone(),
            ));
        }
        Ok(TokenClient {
            http,
            discovery,
            mtls: Arc::new(Mutex::new(None)),
        })
    }

    /// Asks `provider` for the token `key` describes. The credential is read (or signed) afresh
    /// for this request, and with `issuer` the endpoint comes from the discovery document.
    pub async fn fetch(&self, provider: &Provider, key: &TokenKey) -> Fetched {
        let mut fetched = Fetched {
            result: Err(FetchError::new(ErrorClass::IdpUnreachable, "not sent")),
            quota: Vec::new(),
            endpoint: None,
        };
        let endpoint = match (&provider.endpoint, &self.discovery) {
            (Endpoint::TokenUrl(u), _) => u.clone(),
            (Endpoint::Issuer(_), Some(d)) => match d.document(&self.http).await {
                Ok(doc) => doc.token_endpoint_for(provider.auth_method).clone(),
                Err(e) => {
                    fetched.result = Err(FetchError::new(ErrorClass::DiscoveryFailed, e));
                    return fetched;
                }
            },
            (Endpoint::Issuer(_), None) => {
                fetched.result = Err(FetchError::new(
                    ErrorClass::DiscoveryFailed,
                    "no discovery state for this issuer",
                ));
                return fetched;
            }
        };
        fetched.endpoint = Some(endpoint.clone());
        let proof = match provider
            .credential
            .prove(&provider.name, &provider.client_id, SystemTime::now())
            .await
        {
            Ok(p) => p,
            Err(e) => {
                fetched.result = Err(proof_error(&provider.credential, e));
                return fetched;
            }
        };
        let http = match &proof {
            Proof::Tls(identity) => match self.mtls_client(provider, identity) {
                Ok(c) => c,
                Err(e) => {
                    fetched.result = Err(FetchError::new(
                        ErrorClass::CredentialUnreadable,
                        format!(
                            "providers.{}: the TLS client identity cannot be used: {e}",
                            provider.name
                        ),
                    ));
                    return fetched;
                }
            },
            _ => self.http.clone(),
        };
        fetched.result = send(&http, provider, key, &proof, endpoint, &mut fetched.quota).await;
        fetched
    }

    /// The HTTP client for `identity`, built again only when the identity changed.
    fn mtls_client(
        &self,
        provider: &Provider,
        identity: &TlsIdentity,
    ) -> Result<reqwest::Client, reqwest::Error> {
        let mut cached = self
            .mtls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((digest, client)) = cached.as_ref() {
            if *digest == identity.digest {
                return Ok(client.clone());
            }
        }
        let client = builder(provider)?
            .identity(reqwest::Identity::from_pem(identity.pem())?)
            .build()?;
        *cached = Some((identity.digest, client.clone()));
        Ok(client)
    }
}

fn proof_error(credential: &Credential, e: ProofError) -> FetchError {
    let class = match (&e, credential) {
        (ProofError::Unreadable { .. }, Credential::Secret(_)) => ErrorClass::SecretUnreadable,
        (
            ProofError::Unreadable { .. }
            | ProofError::AssertionEmpty { .. }
            | ProofError::Sign { .. },
            _,
        ) => ErrorClass::CredentialUnreadable,
        (ProofError::Mismatch { .. }, _) => ErrorClass::CredentialMismatch,
        (ProofError::AssertionExpired { .. }, _) => ErrorClass::AssertionExpired,
    };
    FetchError::new(class, e.to_string())
}

async fn send(
    http: &reqwest::Client,
    provider: &Provider,
    key: &TokenKey,
    proof: &Proof,
    endpoint: Url,
    quota_seen: &mut Vec<QuotaBucket>,
) -> Result<TokenResponse, FetchError> {
    let params = request_params(provider, key, proof);
    let mut req = http
        .post(endpoint)
        .header(http::header::ACCEPT, "application/json");
    if let (AuthMethod::ClientSecretBasic, Proof::Secret(secret)) = (provider.auth_method, proof) {
        let mut value = http::HeaderValue::from_str(&basic_auth(&provider.client_id, secret))
            .map_err(|_| {
                FetchError::new(
                    ErrorClass::SecretUnreadable,
                    "the client secret cannot be sent in a header",
                )
            })?;
        value.set_sensitive(true);
        req = req.header(http::header::AUTHORIZATION, value);
    }
    req = match provider.body {
        BodyEncoding::Form => req.form(&params),
        BodyEncoding::Json => {
            let map: Map<String, Value> = params
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect();
            req.json(&map)
        }
    };
    let mut resp = req
        .send()
        .await
        .map_err(|e| FetchError::new(ErrorClass::IdpUnreachable, describe_reqwest_error(&e)))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    *quota_seen = quota(&headers);
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    let mut e = FetchError::new(
                        ErrorClass::BadResponse,
                        "token response larger than 1 MiB",
                    );
                    e.status = Some(status.as_u16());
                    return Err(e);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(FetchError::new(
                    ErrorClass::IdpUnreachable,
                    format!("reading the token response: {}", describe_reqwest_error(&e)),
                ))
            }
        }
    }
    parse_response(status, &headers, &body)
}

/// The token request's parameters, in the order they are sent.
pub fn request_params<'a>(
    provider: &'a Provider,
    key: &'a TokenKey,
    proof: &'a Proof,
) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![("grant_type", "client_credentials")];
    match proof {
        Proof::Secret(secret) => {
            if provider.auth_method == AuthMethod::ClientSecretPost {
                params.push(("client_id", provider.client_id.as_str()));
                params.push(("client_secret", secret.expose()));
            }
        }
        Proof::Assertion {
            assertion_type,
            assertion,
        } => {
            params.push(("client_id", provider.client_id.as_str()));
            params.push(("client_assertion_type", assertion_type.as_str()));
            params.push(("client_assertion", assertion.expose()));
        }
        // RFC 8705 §2: the client is identified by client_id; the certificate proves it.
        Proof::Tls(_) => params.push(("client_id", provider.client_id.as_str())),
    }
    if let Some(a) = &key.audience {
        params.push(("audience", a));
    }
    if let Some(s) = &key.scope {
        params.push(("scope", s));
    }
    if let Some(r) = &key.resource {
        params.push(("resource", r));
    }
    for (k, v) in &provider.params {
        params.push((k, v));
    }
    params
}

/// `Basic` credentials as RFC 6749 §2.3.1 asks: id and secret form-encoded, then base64.
pub fn basic_auth(client_id: &str, secret: &Secret) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(client_id), enc(secret.expose()));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The chain of sources says why (refused, DNS, certificate); the URL carries no secret.
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests;
