//! The demo API: accepts a request only with a valid bearer JWT from the demo issuer, and echoes
//! what it received as JSON (the token itself shown only by its length).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{json, Map, Value};

use crate::secret::Secret;
use crate::serve::{self, Body};

use super::jwt;

pub struct Api {
    pub signing_key: Secret,
}

impl Api {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if req.method() == Method::GET && req.uri().path() == "/healthz" {
            return serve::json(200, &json!({ "status": "ok" }));
        }
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let Some(token) = auth.strip_prefix("Bearer ") else {
            return serve::json(401, &json!({ "error": "missing bearer token" }));
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = match jwt::verify(self.signing_key.expose().as_bytes(), token, now) {
            Ok(c) => c,
            Err(e) => return serve::json(401, &json!({ "error": e.to_string() })),
        };
        let authorization_count = req
            .headers()
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .count();
        let mut headers = Map::new();
        for (name, value) in req.headers() {
            let shown = if name == http::header::AUTHORIZATION {
                format!("Bearer <JWT, {} characters>", token.len())
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            headers.insert(name.as_str().to_string(), Value::String(shown));
        }
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(str::to_string);
        let body_len = match Limited::new(req.into_body(), 16 * 1024 * 1024)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes().len(),
            Err(_) => return serve::json(413, &json!({ "error": "body too large" })),
        };
        serve::json(
            200,
            &json!({
                "method": method,
                "path": path,
                "query": query,
                "headers": headers,
                "authorization_headers": authorization_count,
                "token_claims": claims,
                "body_bytes": body_len,
            }),
        )
    }
}
