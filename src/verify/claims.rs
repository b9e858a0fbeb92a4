//! The checks on a token's claims once its signature holds: time (`exp`, `nbf`, `iat` with
//! leeway), issuer, audience, and the scopes a request needs. Pure functions of the claims, the
//! route's settings and the time, which is passed in.

use serde_json::Value;

use super::Denial;
use crate::config::{ScopeRule, VerifyConfig};

/// What is kept of a verified token: until when it is good, its scopes, and the claim values
/// for the `forward_claims` headers (in the config's order; `None` when the token lacks one).
#[derive(Debug, Clone)]
pub struct Verified {
    /// Unix seconds after which the token is expired (its `exp` plus the leeway).
    pub valid_until: u64,
    pub scopes: Vec<String>,
    pub forwarded: Vec<Option<http::HeaderValue>>,
}

/// Checks `claims` (a JSON object) at `now` (Unix seconds).
pub fn check(claims: &Value, c: &VerifyConfig, now: u64) -> Result<Verified, Denial> {
    let leeway = c.leeway.as_secs();
    let num = |name: &str| -> Result<Option<u64>, Denial> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_f64().and_then(whole_seconds))
                .map(Some)
                .ok_or(Denial::Invalid("a time claim is not a number")),
        }
    };
    let exp = num("exp")?.ok_or(Denial::Invalid("the token has no exp"))?;
    let valid_until = exp.saturating_add(leeway);
    if now >= valid_until {
        return Err(Denial::Expired);
    }
    if num("nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(Denial::Invalid("the token is not valid yet (nbf)"));
    }
    if num("iat")?.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(Denial::Invalid("the token was issued in the future (iat)"));
    }
    if claims.get("iss").and_then(Value::as_str) != Some(c.issuer.as_str()) {
        return Err(Denial::WrongIssuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => c.audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| c.audiences.iter().any(|x| x == a)),
        _ => false,
    };
    if !aud_ok {
        return Err(Denial::WrongAudience);
    }
    let forwarded = c
        .forward_claims
        .iter()
        .map(|(claim, _)| claims.get(claim).and_then(header_value))
        .collect();
    Ok(Verified {
        valid_until,
        scopes: scopes(claims),
        forwarded,
    })
}

/// A NumericDate with a fraction (RFC 7519 §2 allows one), in whole seconds; `None` when
/// negative or beyond any real date.
fn whole_seconds(f: f64) -> Option<u64> {
    // Checked to be in 0..1e12, so the cast neither truncates nor loses a sign.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (0.0..1e12).contains(&f).then(|| f.trunc() as u64)
}

/// The token's scopes: the space-separated `scope` claim, and the `scp` and `permissions` arrays
/// (or strings).
pub fn scopes(claims: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in ["scope", "scp", "permissions"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_ascii_whitespace().map(str::to_string)),
            Some(Value::Array(list)) => {
                out.extend(list.iter().filter_map(Value::as_str).map(str::to_string));
            }
            _ => {}
        }
    }
    out
}

/// A claim's value as a header value: strings as they are, arrays joined with spaces, numbers
/// and booleans as written; objects and values a header cannot carry give none.
fn header_value(v: &Value) -> Option<http::HeaderValue> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(list) => list
            .iter()
            .map(|x| match x {
                Value::String(s) => Some(s.clone()),
                Value::Number(_) | Value::Bool(_) => Some(x.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?
            .join(" "),
        Value::Number(_) | Value::Bool(_) => v.to_string(),
        _ => return None,
    };
    http::HeaderValue::from_str(&text).ok()
}

/// The scopes a request with `method` on `path` needs: the route's required scopes, then those
/// of the first rule that matches.
pub fn needed<'c>(c: &'c VerifyConfig, method: &str, path: &str) -> Vec<&'c str> {
    let mut need: Vec<&str> = c.required_scopes.iter().map(String::as_str).collect();
    if let Some(rule) = c.rules.iter().find(|r| matches(r, method, path)) {
        need.extend(rule.scopes.iter().map(String::as_str));
    }
    need
}

fn matches(rule: &ScopeRule, method: &str, path: &str) -> bool {
    path.starts_with(&rule.path_prefix)
        && (rule.methods.is_empty() || rule.methods.iter().any(|m| m == method))
}

/// The scopes of `need` that `have` lacks, space-separated; `None` when none is missing.
pub fn missing(need: &[&str], have: &[String]) -> Option<String> {
    let lacking: Vec<&str> = need
        .iter()
        .copied()
        .filter(|n| !have.iter().any(|h| h == n))
        .collect();
    (!lacking.is_empty()).then(|| need.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn config() -> VerifyConfig {
        VerifyConfig {
            issuer: "https://idp/".into(),
            jwks_url: None,
            audiences: vec!["api".into()],
            algorithms: vec![jsonwebtoken::Algorithm::RS256],
            leeway: Duration::from_secs(30),
            required_scopes: vec!["read".into()],
            rules: vec![ScopeRule {
                path_prefix: "/admin/".into(),
                methods: vec!["POST".into()],
                scopes: vec!["admin".into()],
            }],
            forward_claims: vec![
                (
                    "sub".into(),
                    http::HeaderName::from_static("x-auth-subject"),
                ),
                (
                    "scope".into(),
                    http::HeaderName::from_static("x-auth-scope"),
                ),
            ],
            strip_authorization: false,
            ca_file: None,
        }
    }

    fn claims() -> Value {
        json!({"iss": "https://idp/", "aud": "api", "exp": 1000, "nbf": 900, "iat": 900,
               "sub": "svc", "scope": "read write"})
    }

    #[test]
    fn time_checks_with_leeway_at_the_boundaries() {
        let c = config();
        let t = claims();
        assert!(check(&t, &c, 1029).is_ok());
        assert!(matches!(check(&t, &c, 1030), Err(Denial::Expired)));
        assert!(check(&t, &c, 870).is_ok());
        assert!(matches!(check(&t, &c, 869), Err(Denial::Invalid(_))));
        let mut no_exp = claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(matches!(check(&no_exp, &c, 950), Err(Denial::Invalid(_))));
    }

    #[test]
    fn issuer_and_audience() {
        let c = config();
        let mut t = claims();
        t["iss"] = json!("https://idp");
        assert!(matches!(check(&t, &c, 950), Err(Denial::WrongIssuer)));
        let mut t = claims();
        t["aud"] = json!("other");
        assert!(matches!(check(&t, &c, 950), Err(Denial::WrongAudience)));
        t["aud"] = json!(["other", "api"]);
        assert!(check(&t, &c, 950).is_ok());
        t["aud"] = json!(["other"]);
        assert!(matches!(check(&t, &c, 950), Err(Denial::WrongAudience)));
    }

    #[test]
    fn scopes_and_rules() {
        let c = config();
        let v = check(&claims(), &c, 950).unwrap();
        assert_eq!(missing(&needed(&c, "GET", "/x"), &v.scopes), None);
        assert_eq!(
            missing(&needed(&c, "POST", "/admin/x"), &v.scopes).as_deref(),
            Some("read admin")
        );
        assert_eq!(missing(&needed(&c, "GET", "/admin/x"), &v.scopes), None);
        let t = json!({"scp": ["a"], "permissions": ["b"], "scope": "c"});
        assert_eq!(scopes(&t), ["c", "a", "b"]);
    }

    #[test]
    fn forwarded_values() {
        let mut t = claims();
        t["scope"] = json!(["read", "write"]);
        let v = check(&t, &config(), 950).unwrap();
        assert_eq!(v.forwarded[0].as_ref().unwrap(), "svc");
        assert_eq!(v.forwarded[1].as_ref().unwrap(), "read write");
        t["sub"] = json!("bad\nvalue");
        let v = check(&t, &config(), 950).unwrap();
        assert!(v.forwarded[0].is_none());
    }
}
