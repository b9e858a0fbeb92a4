//! What an IdP's answer to a token request means: a token (with `expires_in` as number or
//! string, and the JWT `exp` as a fallback), or an RFC 6749 §5.2 error with its class, and the
//! Auth0 quota and `Retry-After` headers that come with either. Pure functions of the status,
//! the headers and the body.

use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use crate::secret::Secret;
use crate::token::client::{ErrorClass, FetchError};

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
