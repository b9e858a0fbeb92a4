//! The token client: one client-credentials request (RFC 6749 §4.4) and the strict parsing of
//! its answer. It follows no redirects and reads at most 1 MiB.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use url::Url;

use crate::config::{AuthMethod, BodyEncoding, Endpoint, Provider};
use crate::credentials::{Credential, Proof, ProofError, TlsIdentity};
use crate::secret::Secret;
use crate::token::discovery::Discovery;
use crate::token::TokenKey;

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

/// One bucket of the `Auth0-Client-Quota-Limit` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaBucket {
    /// The bucket's name, e.g. `per_hour`.
    pub bucket: String,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the bucket resets.
    pub reset_in: u64,
}

/// Parses `b=per_hour;q=100;r=98;t=3600,b=per_day;q=1000;r=996;t=86400`. A malformed bucket is
/// skipped (and logged at debug), never an error.
pub fn parse_quota(value: &str) -> Vec<QuotaBucket> {
    value
        .split(',')
        .filter(|b| !b.trim().is_empty())
        .filter_map(|b| {
            let (mut name, mut q, mut r, mut t) = (None, None, None, None);
            for field in b.split(';') {
                match field.trim().split_once('=') {
                    Some(("b", v)) if !v.is_empty() => name = Some(v.trim().to_string()),
                    Some(("q", v)) => q = v.trim().parse().ok(),
                    Some(("r", v)) => r = v.trim().parse().ok(),
                    Some(("t", v)) => t = v.trim().parse().ok(),
                    _ => {}
                }
            }
            let bucket = match (name, q, r) {
                (Some(bucket), Some(limit), Some(remaining)) if bucket.len() <= 32 => {
                    Some(QuotaBucket {
                        bucket,
                        limit,
                        remaining,
                        reset_in: t.unwrap_or(0),
                    })
                }
                _ => None,
            };
            if bucket.is_none() {
                tracing::debug!(
                    bucket = b,
                    "ignoring a malformed Auth0-Client-Quota-Limit bucket"
                );
            }
            bucket
        })
        .collect()
}

/// The quota buckets an answer carried, if any.
pub fn quota(headers: &HeaderMap) -> Vec<QuotaBucket> {
    headers
        .get_all("auth0-client-quota-limit")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_quota)
        .collect()
}

/// A token as the IdP issued it.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    pub access_token: Secret,
    pub expires_in: Option<Duration>,
    /// The `exp` claim, when the token is a JWT that has one.
    pub jwt_exp: Option<u64>,
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

/// Parses a token endpoint's answer. A token only if: 200, a JSON object, a non-empty
/// `access_token`, `token_type` absent or `Bearer` (any case), and no `error` field.
pub fn parse_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TokenResponse, FetchError> {
    let json: Option<Map<String, Value>> =
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            });
    let idp_error = json.as_ref().and_then(|m| short_string(m.get("error")));
    let idp_description = json
        .as_ref()
        .and_then(|m| short_string(m.get("error_description")));

    if status != StatusCode::OK || idp_error.is_some() {
        let class = if status == StatusCode::TOO_MANY_REQUESTS {
            ErrorClass::RateLimited
        } else if idp_error.as_deref() == Some("invalid_client")
            || status == StatusCode::UNAUTHORIZED
        {
            ErrorClass::InvalidClient
        } else {
            ErrorClass::IdpError
        };
        let message = if status == StatusCode::OK {
            "token endpoint answered 200 with an error".to_string()
        } else {
            format!("token endpoint answered {}", status.as_u16())
        };
        return Err(FetchError {
            class,
            message,
            status: Some(status.as_u16()),
            idp_error,
            idp_description,
            retry_after: retry_after(headers),
        });
    }

    let bad = |msg: &str| {
        let mut e = FetchError::new(ErrorClass::BadResponse, msg);
        e.status = Some(status.as_u16());
        e
    };
    let Some(map) = json else {
        return Err(bad("token response is not a JSON object"));
    };
    let token = match map.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => return Err(bad("access_token is empty")),
        Some(_) => return Err(bad("access_token is not a string")),
        None => return Err(bad("no access_token in the token response")),
    };
    if !token.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(bad("access_token has characters not allowed in a header"));
    }
    match map.get("token_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(Value::String(t)) => {
            let t: String = t.chars().take(32).collect();
            return Err(bad(&format!("token_type \"{t}\" is not Bearer")));
        }
        Some(_) => return Err(bad("token_type is not a string")),
    }
    let expires_in = match map.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(v) => {
            Some(parse_expires_in(v).ok_or_else(|| bad("expires_in is not a positive number"))?)
        }
    };
    Ok(TokenResponse {
        jwt_exp: jwt_exp(token),
        access_token: Secret::new(token.clone()),
        expires_in,
    })
}

/// `expires_in` as a number or a numeric string, in seconds; must be positive.
fn parse_expires_in(v: &Value) -> Option<Duration> {
    let secs = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if secs.is_finite() && secs > 0.0 && secs < 1e12 {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

/// The `exp` claim of a JWT, read without checking the signature (it only tells us when to refresh).
pub fn jwt_exp(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    match claims.get("exp")? {
        Value::Number(n) => n
            .as_u64()
            // A float `exp` (seconds with a fraction): non-negative, and `as` saturates.
            .or_else(|| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)
            }),
        _ => None,
    }
}

/// A string field from an error body, cut to 256 characters and stripped of control characters,
/// since it ends up in logs.
fn short_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.chars().filter(|c| !c.is_control()).take(256).collect()),
        _ => None,
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests;
