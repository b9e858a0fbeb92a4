//! The demo token issuer: `POST /oauth/token` for the client-credentials grant, in JSON or form
//! encoding, with `client_secret_post` or `client_secret_basic`, issuing HS256 JWTs; `GET /stats`
//! counts the token requests it answered, so that a benchmark can check who asked how often.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{json, Map, Value};

use crate::secret::Secret;
use crate::serve::{self, Body};

use super::jwt;

pub struct Issuer {
    pub client_id: String,
    pub client_secret: Secret,
    pub signing_key: Secret,
    pub lifetime: Duration,
    /// The `iss` claim.
    pub issuer: String,
    /// Token requests answered, whatever the outcome.
    requests: AtomicU64,
    issued: AtomicU64,
}

impl Issuer {
    pub fn new(
        client_id: &str,
        client_secret: Secret,
        signing_key: Secret,
        lifetime: Duration,
        issuer: String,
    ) -> Self {
        Issuer {
            client_id: client_id.to_string(),
            client_secret,
            signing_key,
            lifetime,
            issuer,
            requests: AtomicU64::new(0),
            issued: AtomicU64::new(0),
        }
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => serve::json(200, &json!({ "status": "ok" })),
            (&Method::GET, "/stats") => serve::json(
                200,
                &json!({
                    "token_requests": self.requests.load(Ordering::Relaxed),
                    "tokens_issued": self.issued(),
                }),
            ),
            (&Method::POST, "/oauth/token") => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                self.token(req).await
            }
            _ => serve::json(404, &json!({ "error": "not_found" })),
        }
    }

    async fn token(&self, req: Request<Incoming>) -> Response<Body> {
        let basic = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_basic);
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return oauth_error(400, "invalid_request", "body too large or unreadable"),
        };
        let Some(params) = parse_params(&content_type, &body) else {
            return oauth_error(400, "invalid_request", "body must be JSON or form-encoded");
        };
        let get = |k: &str| params.get(k).and_then(Value::as_str);
        if get("grant_type") != Some("client_credentials") {
            return oauth_error(
                400,
                "unsupported_grant_type",
                "only client_credentials is supported",
            );
        }
        let (id, secret) = match (&basic, get("client_id"), get("client_secret")) {
            (Some((id, secret)), _, _) => (id.clone(), secret.clone()),
            (None, Some(id), Some(secret)) => (id.to_string(), secret.to_string()),
            _ => return oauth_error(401, "invalid_client", "client authentication missing"),
        };
        if id != self.client_id || secret != self.client_secret.expose() {
            return oauth_error(401, "invalid_client", "unknown client or wrong secret");
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut claims = json!({
            "iss": self.issuer,
            "sub": format!("{id}@clients"),
            "aud": get("audience").unwrap_or("demo-api"),
            "iat": now,
            "exp": now + self.lifetime.as_secs(),
            "gty": "client-credentials",
        });
        if let Some(scope) = get("scope") {
            claims["scope"] = json!(scope);
        }
        let token = jwt::sign(self.signing_key.expose().as_bytes(), &claims);
        self.issued.fetch_add(1, Ordering::Relaxed);
        let mut answer = json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.lifetime.as_secs(),
        });
        if let Some(scope) = get("scope") {
            answer["scope"] = json!(scope);
        }
        serve::json(200, &answer)
    }
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response<Body> {
    serve::json(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

/// The id and secret of a `Basic` header, form-decoded as RFC 6749 §2.3.1 encodes them.
fn parse_basic(v: &str) -> Option<(String, String)> {
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let dec = |s: &str| -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((dec(id), dec(secret)))
}

/// The request's parameters from a JSON or form body, as string values.
pub fn parse_params(content_type: &str, body: &Bytes) -> Option<Map<String, Value>> {
    if content_type.starts_with("application/json") {
        match serde_json::from_slice::<Value>(body).ok()? {
            Value::Object(m) => Some(m),
            _ => None,
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        Some(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect(),
        )
    } else {
        None
    }
}
