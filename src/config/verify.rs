//! A route's `verify:` block: the file struct, its checks, and the validated [`VerifyConfig`]
//! that [`crate::verify`] applies to inbound tokens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use url::Url;

use super::validate::load_ca_file;
use super::{check_url, parse_duration, CaFile, ConfigError};

/// `routes[i].verify` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileVerify {
    pub issuer: String,
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub algorithms: Option<Vec<String>>,
    pub leeway: Option<String>,
    #[serde(default)]
    pub required_scopes: Vec<String>,
    #[serde(default)]
    pub rules: Vec<FileScopeRule>,
    pub forward_claims: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub strip_authorization: bool,
    pub ca_file: Option<String>,
    #[serde(default)]
    pub allow_http: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileScopeRule {
    pub path_prefix: Option<String>,
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// How inbound tokens are checked on a verify route.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyConfig {
    /// The tokens' `iss` must equal this exactly.
    pub issuer: String,
    /// Where the keys are; `None`: the `jwks_uri` of the issuer's discovery document.
    pub jwks_url: Option<Url>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub required_scopes: Vec<String>,
    pub rules: Vec<ScopeRule>,
    /// Claim name and the request header its verified value goes in, in the file's order.
    pub forward_claims: Vec<(String, HeaderName)>,
    pub strip_authorization: bool,
    pub ca_file: Option<Arc<CaFile>>,
}

/// Extra scopes for requests matching a path prefix and methods (first match wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRule {
    pub path_prefix: String,
    /// Upper-case method names; empty: every method.
    pub methods: Vec<String>,
    pub scopes: Vec<String>,
}

/// The algorithms a verify route may accept: asymmetric only, never `none` or HMAC.
const ALGORITHMS: &[(&str, Algorithm)] = &[
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// Fields a claim may not be forwarded in: they frame, route or authorize the request.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "authorization",
];

/// Checks `routes[i].verify` (`prefix` is its key).
pub fn validate(prefix: &str, v: FileVerify) -> Result<VerifyConfig, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let issuer_url = check_url(&key("issuer"), &v.issuer, v.allow_http)?;
    if issuer_url.query().is_some() || issuer_url.fragment().is_some() {
        return Err(ConfigError::key(
            key("issuer"),
            "an issuer has no query or fragment",
        ));
    }
    let jwks_url = v
        .jwks_url
        .as_deref()
        .map(|u| check_url(&key("jwks_url"), u, v.allow_http))
        .transpose()?;
    if v.audiences.is_empty() || v.audiences.iter().any(String::is_empty) {
        return Err(ConfigError::key(
            key("audiences"),
            "at least one non-empty audience is required",
        ));
    }
    let algorithms = match v.algorithms {
        None => vec![Algorithm::RS256, Algorithm::ES256],
        Some(names) if names.is_empty() => {
            return Err(ConfigError::key(key("algorithms"), "must not be empty"))
        }
        Some(names) => names
            .iter()
            .map(|n| {
                ALGORITHMS
                    .iter()
                    .find(|(name, _)| name == n)
                    .map(|(_, a)| *a)
                    .ok_or_else(|| {
                        ConfigError::key(
                            key("algorithms"),
                            format!(
                                "\"{n}\" is not allowed (use RS256/384/512, PS256/384/512, ES256/384 or EdDSA; never none or HS*)"
                            ),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let leeway = match v.leeway.as_deref() {
        None => Duration::from_secs(30),
        Some(s) => parse_duration(s).map_err(|m| ConfigError::key(key("leeway"), m))?,
    };
    if leeway > Duration::from_secs(600) {
        return Err(ConfigError::key(key("leeway"), "must be at most 10m"));
    }
    check_scopes(&key("required_scopes"), &v.required_scopes)?;
    let rules = validate_rules(prefix, v.rules)?;
    let forward_claims = validate_forward_claims(prefix, v.forward_claims)?;
    let ca_file = v
        .ca_file
        .as_deref()
        .map(|f| load_ca_file(&key("ca_file"), f))
        .transpose()?;
    Ok(VerifyConfig {
        issuer: v.issuer,
        jwks_url,
        audiences: v.audiences,
        algorithms,
        leeway,
        required_scopes: v.required_scopes,
        rules,
        forward_claims,
        strip_authorization: v.strip_authorization,
        ca_file,
    })
}

fn validate_rules(prefix: &str, file: Vec<FileScopeRule>) -> Result<Vec<ScopeRule>, ConfigError> {
    let mut rules = Vec::with_capacity(file.len());
    for (i, r) in file.into_iter().enumerate() {
        let rkey = |k: &str| format!("{prefix}.rules[{i}].{k}");
        let path_prefix = r.path_prefix.unwrap_or_else(|| "/".into());
        if !path_prefix.starts_with('/') {
            return Err(ConfigError::key(
                rkey("path_prefix"),
                format!("\"{path_prefix}\" must start with /"),
            ));
        }
        let methods = r.methods.unwrap_or_default();
        for m in &methods {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(ConfigError::key(
                    rkey("methods"),
                    format!("\"{m}\" is not an upper-case method name"),
                ));
            }
        }
        if r.scopes.is_empty() {
            return Err(ConfigError::key(rkey("scopes"), "must not be empty"));
        }
        check_scopes(&rkey("scopes"), &r.scopes)?;
        rules.push(ScopeRule {
            path_prefix,
            methods,
            scopes: r.scopes,
        });
    }
    Ok(rules)
}

fn validate_forward_claims(
    prefix: &str,
    file: Option<BTreeMap<String, String>>,
) -> Result<Vec<(String, HeaderName)>, ConfigError> {
    let claims = file.unwrap_or_else(|| {
        BTreeMap::from([
            ("sub".to_string(), "X-Auth-Subject".to_string()),
            ("scope".to_string(), "X-Auth-Scope".to_string()),
        ])
    });
    let mut forward_claims = Vec::with_capacity(claims.len());
    for (claim, header) in claims {
        let ckey = format!("{prefix}.forward_claims.{claim}");
        if claim.is_empty() {
            return Err(ConfigError::key(ckey, "a claim name must not be empty"));
        }
        let name = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| ConfigError::key(&ckey, format!("invalid header name \"{header}\"")))?;
        if RESERVED_HEADERS.contains(&name.as_str())
            || crate::forward::HOP_BY_HOP.contains(&name.as_str())
        {
            return Err(ConfigError::key(
                ckey,
                format!("\"{header}\" cannot carry a claim"),
            ));
        }
        if forward_claims.iter().any(|(_, n)| *n == name) {
            return Err(ConfigError::key(
                ckey,
                format!("\"{header}\" already carries another claim"),
            ));
        }
        forward_claims.push((claim, name));
    }
    Ok(forward_claims)
}

fn check_scopes(key: &str, scopes: &[String]) -> Result<(), ConfigError> {
    for s in scopes {
        // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        {
            return Err(ConfigError::key(
                key,
                format!("\"{s}\" is not a scope (no spaces, quotes or backslashes)"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(yaml: &str) -> FileVerify {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn err(yaml: &str) -> String {
        validate("routes[0].verify", file(yaml))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults() {
        let c = validate(
            "v",
            file("issuer: https://idp.example/\naudiences: [https://api/]"),
        )
        .unwrap();
        assert_eq!(c.algorithms, vec![Algorithm::RS256, Algorithm::ES256]);
        assert_eq!(c.leeway, Duration::from_secs(30));
        assert_eq!(c.forward_claims.len(), 2);
        assert!(!c.strip_authorization);
    }

    #[test]
    fn errors_name_the_key() {
        let base = "issuer: https://idp.example/\naudiences: [a]\n";
        assert!(err("issuer: idp\naudiences: [a]").starts_with("routes[0].verify.issuer:"));
        assert!(err("issuer: https://idp.example/\naudiences: []")
            .starts_with("routes[0].verify.audiences:"));
        for bad in ["none", "HS256", "rs256"] {
            let e = err(&format!("{base}algorithms: [{bad}]"));
            assert!(e.starts_with("routes[0].verify.algorithms:"), "{e}");
            assert!(e.contains(bad), "{e}");
        }
        assert!(err(&format!(
            "{base}rules: [{{path_prefix: admin, scopes: [a]}}]"
        ))
        .starts_with("routes[0].verify.rules[0].path_prefix:"));
        assert!(
            err(&format!("{base}rules: [{{methods: [post], scopes: [a]}}]"))
                .starts_with("routes[0].verify.rules[0].methods:")
        );
        assert!(err(&format!("{base}rules: [{{path_prefix: /a}}]"))
            .starts_with("routes[0].verify.rules[0].scopes:"));
        assert!(err(&format!("{base}required_scopes: [\"a b\"]"))
            .starts_with("routes[0].verify.required_scopes:"));
        assert!(err(&format!("{base}forward_claims: {{sub: Host}}"))
            .starts_with("routes[0].verify.forward_claims.sub:"));
        assert!(err(&format!("{base}leeway: 1h")).starts_with("routes[0].verify.leeway:"));
        assert!(err("issuer: http://idp.example/\naudiences: [a]")
            .starts_with("routes[0].verify.issuer:"));
    }
}
