//! Authorization-server discovery: a provider configured by `issuer` gets its token endpoint from
//! `{issuer}/.well-known/openid-configuration` (OIDC Discovery 1.0), else from the RFC 8414
//! `/.well-known/oauth-authorization-server{path}`. The document's `issuer` must equal the
//! configured one exactly. The last good document is kept while a refresh fails.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tracing::{info, warn};
use url::Url;

use crate::config::{check_url, AuthMethod, Issuer};

/// A document older than this is fetched again before the next token request.
pub const REFRESH_EVERY: Duration = Duration::from_secs(3600);
/// After a failed refresh with a good document at hand, the next try waits this long.
pub const RETRY_WITH_DOCUMENT: Duration = Duration::from_secs(60);
/// Largest discovery document read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// What tokenproxy uses from a discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub issuer: String,
    pub token_endpoint: Url,
    /// `mtls_endpoint_aliases.token_endpoint` (RFC 8705 §5).
    pub mtls_token_endpoint: Option<Url>,
    /// `token_endpoint_auth_methods_supported`, when present.
    pub auth_methods: Option<Vec<String>>,
}

impl Document {
    /// The token endpoint for `method`: the mTLS alias for the TLS client methods when there is one.
    pub fn token_endpoint_for(&self, method: AuthMethod) -> &Url {
        match (&self.mtls_token_endpoint, method.is_mtls()) {
            (Some(alias), true) => alias,
            _ => &self.token_endpoint,
        }
    }

    /// True when the document says it does not support `method`.
    pub fn lacks(&self, method: AuthMethod) -> bool {
        // client_assertion is private_key_jwt (or client_secret_jwt) to the IdP.
        let name = match method {
            AuthMethod::ClientAssertion => "private_key_jwt",
            m => m.as_str(),
        };
        self.auth_methods
            .as_ref()
            .is_some_and(|m| !m.iter().any(|s| s == name))
    }
}

/// The metadata URLs to try, in order: OIDC's, then RFC 8414's.
pub fn metadata_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut oidc = issuer.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    let mut oauth = issuer.clone();
    oauth.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    vec![oidc, oauth]
}

/// Parses a discovery document for `issuer`.
pub fn parse(body: &[u8], issuer: &Issuer) -> Result<Document, String> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err("the discovery document is not a JSON object".into());
    };
    let got = match map.get("issuer") {
        Some(Value::String(s)) => s,
        _ => return Err("the discovery document has no issuer".into()),
    };
    if *got != issuer.id {
        let shown: String = got.chars().filter(|c| !c.is_control()).take(256).collect();
        return Err(format!(
            "the discovery document's issuer \"{shown}\" is not the configured issuer \"{}\" (they must be equal, OIDC Discovery §4.3)",
            issuer.id
        ));
    }
    let endpoint = |v: Option<&Value>, name: &str| -> Result<Option<Url>, String> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => check_url(name, s, issuer.allow_http)
                .map(Some)
                .map_err(|e| format!("in the discovery document: {e}")),
            Some(_) => Err(format!("{name} in the discovery document is not a string")),
        }
    };
    let token_endpoint = endpoint(map.get("token_endpoint"), "token_endpoint")?
        .ok_or("the discovery document has no token_endpoint")?;
    let mtls_token_endpoint = match map.get("mtls_endpoint_aliases") {
        Some(Value::Object(a)) => endpoint(
            a.get("token_endpoint"),
            "mtls_endpoint_aliases.token_endpoint",
        )?,
        _ => None,
    };
    let auth_methods = match map.get("token_endpoint_auth_methods_supported") {
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    };
    Ok(Document {
        issuer: got.clone(),
        token_endpoint,
        mtls_token_endpoint,
        auth_methods,
    })
}

struct State {
    document: Option<Arc<Document>>,
    /// When to fetch again.
    next_fetch: Instant,
}

/// One provider's discovery state, shared by its token keys.
pub struct Discovery {
    provider: String,
    issuer: Issuer,
    method: AuthMethod,
    refresh_every: Duration,
    state: Mutex<State>,
}

impl Discovery {
    pub fn new(provider: &str, issuer: Issuer, method: AuthMethod) -> Self {
        Discovery {
            provider: provider.to_string(),
            issuer,
            method,
            refresh_every: REFRESH_EVERY,
            state: Mutex::new(State {
                document: None,
                next_fetch: Instant::now(),
            }),
        }
    }

    /// The current document, fetched when there is none or it is due for a refresh. A failed
    /// refresh keeps the last good document; with none, it is an error.
    pub async fn document(&self, http: &reqwest::Client) -> Result<Arc<Document>, String> {
        let (cached, due) = {
            let s = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (s.document.clone(), Instant::now() >= s.next_fetch)
        };
        if let (Some(doc), false) = (&cached, due) {
            return Ok(doc.clone());
        }
        let fetched = self.fetch(http).await;
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match fetched {
            Ok(doc) => {
                let doc = Arc::new(doc);
                if s.document.as_deref() != Some(&doc) {
                    info!(
                        provider = %self.provider,
                        issuer = %self.issuer.id,
                        token_endpoint = %doc.token_endpoint_for(self.method),
                        "discovery document fetched"
                    );
                    if doc.lacks(self.method) {
                        warn!(
                            provider = %self.provider,
                            auth_method = self.method.as_str(),
                            supported = ?doc.auth_methods,
                            "the issuer's token_endpoint_auth_methods_supported does not list the configured auth_method"
                        );
                    }
                }
                s.document = Some(doc.clone());
                s.next_fetch = Instant::now() + self.refresh_every;
                Ok(doc)
            }
            Err(e) => match s.document.clone() {
                Some(doc) => {
                    warn!(provider = %self.provider, error = %e, "discovery refresh failed; keeping the last good document");
                    s.next_fetch = Instant::now() + RETRY_WITH_DOCUMENT;
                    Ok(doc)
                }
                None => Err(e),
            },
        }
    }

    /// The same, refreshing whenever the document is older than `every` (tests use zero).
    pub fn with_refresh_every(mut self, every: Duration) -> Self {
        self.refresh_every = every;
        self
    }

    fn has_document(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .document
            .is_some()
    }

    /// When the document is due to be fetched again.
    pub fn next_fetch(&self) -> Instant {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next_fetch
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<Document, String> {
        let mut errors = Vec::new();
        for url in metadata_urls(&self.issuer.url) {
            match get(http, &url).await {
                Ok(body) => match parse(&body, &self.issuer) {
                    Ok(doc) => return Ok(doc),
                    Err(e) => {
                        errors.push(format!("{url}: {e}"));
                        // A document for another issuer is an error, not a reason to look elsewhere.
                        if e.contains("is not the configured issuer") {
                            break;
                        }
                    }
                },
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        Err(errors.join("; "))
    }
}

/// Refreshes `discovery` in the background whenever it is due, whether or not a token is being
/// fetched; ends once the discovery state is dropped (its provider was reloaded away).
pub async fn refresh_in_background(discovery: std::sync::Weak<Discovery>, http: reqwest::Client) {
    loop {
        let Some(next) = discovery.upgrade().map(|d| d.next_fetch()) else {
            return;
        };
        // Before the first document, the token fetches drive discovery (with their backoff).
        tokio::time::sleep_until(next.max(Instant::now() + RETRY_WITH_DOCUMENT)).await;
        let Some(d) = discovery.upgrade() else {
            return;
        };
        if d.has_document() && Instant::now() >= d.next_fetch() {
            let _ = d.document(&http).await;
        }
    }
}

async fn get(http: &reqwest::Client, url: &Url) -> Result<Vec<u8>, String> {
    let mut resp = http
        .get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("answered {}", resp.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading: {e}"))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err("document larger than 1 MiB".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests;
