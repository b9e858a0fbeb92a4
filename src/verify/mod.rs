//! Verification of inbound access tokens on `verify:` routes, decided once for both request
//! paths: [`Verifier::check`] takes the parsed request head and says whether the request goes
//! on (with the verified claim values to forward) or is refused with 401/403 and its
//! `WWW-Authenticate` challenge (RFC 6750 §3).
//!
//! - [`keys`]: the issuer's JWKS, fetched, refreshed and fetched again for an unknown `kid`.
//! - [`claims`]: the claim checks (time, issuer, audience, scopes), pure.
//! - [`cache`]: tokens already verified, by hash, until they expire.

pub mod cache;
pub mod claims;
pub mod jwks;
pub mod keys;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, Validation};

use crate::config::VerifyConfig;
use crate::forward::Answer;
use crate::metrics;
use cache::VerifiedCache;
pub use claims::Verified;
use keys::Keys;

/// A bearer token longer than this is refused without being parsed.
pub const MAX_TOKEN: usize = 16 * 1024;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No `Authorization: Bearer` credentials at all.
    Missing,
    /// Malformed, bad signature, unknown key, disallowed algorithm, not yet valid: which check.
    Invalid(&'static str),
    Expired,
    WrongIssuer,
    WrongAudience,
    /// The scopes the request needs (space-separated).
    InsufficientScope(String),
    /// A path with dot segments or encoded slashes or dots, on a route whose scope rules go by
    /// path: the rule the upstream applies could differ from ours.
    AmbiguousPath,
}

impl Denial {
    /// The `outcome` label of `tokenproxy_inbound_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Denial::Missing => "missing",
            Denial::Invalid(_) | Denial::AmbiguousPath => "invalid",
            Denial::Expired => "expired",
            Denial::WrongIssuer => "wrong_issuer",
            Denial::WrongAudience => "wrong_audience",
            Denial::InsufficientScope(_) => "insufficient_scope",
        }
    }

    pub fn answer(&self) -> Answer {
        match self {
            Denial::Missing => Answer::MissingToken,
            Denial::InsufficientScope(_) => Answer::InsufficientScope,
            Denial::AmbiguousPath => Answer::InvalidTarget,
            _ => Answer::InvalidToken,
        }
    }

    /// The `error_description`: which check failed, never the token.
    pub fn description(&self) -> &'static str {
        match self {
            Denial::Missing => "no bearer token",
            Denial::Invalid(why) => why,
            Denial::Expired => "the token has expired",
            Denial::WrongIssuer => "the token's issuer is not accepted",
            Denial::WrongAudience => "the token is not meant for this audience",
            Denial::InsufficientScope(_) => "the token lacks a scope this request needs",
            Denial::AmbiguousPath => "the path has dot segments or encoded slashes",
        }
    }

    /// The `WWW-Authenticate` value for route `realm` (RFC 6750 §3); `None` for a refusal that
    /// is not about the token.
    pub fn challenge(&self, realm: &str) -> Option<HeaderValue> {
        let v = match self {
            Denial::AmbiguousPath => return None,
            Denial::Missing => format!("Bearer realm=\"{realm}\""),
            Denial::InsufficientScope(scope) => format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"{}\", scope=\"{scope}\"",
                self.description()
            ),
            _ => format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                self.description()
            ),
        };
        HeaderValue::from_str(&v).ok()
    }
}

/// What the check says.
pub enum Check {
    Allowed(Arc<Verified>),
    Denied(Denial),
    /// The token names a key we do not have, and the keys may be fetched again: fetch them
    /// ([`Keys::refetch_for_miss`]) and check again without this allowance.
    NeedKeys,
}

/// A verify route's checker: its settings, its issuer's keys, the tokens it already verified.
pub struct Verifier {
    pub route: String,
    pub config: Arc<VerifyConfig>,
    pub keys: Arc<Keys>,
    cache: VerifiedCache,
}

impl Verifier {
    pub fn new(route: &str, config: Arc<VerifyConfig>, keys: Arc<Keys>) -> Self {
        Verifier {
            route: route.to_string(),
            config,
            keys,
            cache: VerifiedCache::default(),
        }
    }

    /// Checks the request with `headers`, `method` and `path_and_query`. With `may_refetch`,
    /// an unknown `kid` gives [`Check::NeedKeys`] when a fetch is allowed now.
    pub fn check(
        &self,
        headers: &[httparse::Header<'_>],
        method: &str,
        path_and_query: &str,
        may_refetch: bool,
    ) -> Check {
        let result = self.decide(headers, method, path_and_query, may_refetch);
        match &result {
            Check::Allowed(_) => metrics::inbound(&self.route, "allowed"),
            Check::Denied(d) => metrics::inbound(&self.route, d.outcome()),
            Check::NeedKeys => {}
        }
        result
    }

    fn decide(
        &self,
        headers: &[httparse::Header<'_>],
        method: &str,
        path_and_query: &str,
        may_refetch: bool,
    ) -> Check {
        let path = path_and_query
            .split_once('?')
            .map_or(path_and_query, |(p, _)| p);
        if !self.config.rules.is_empty() && is_ambiguous(path) {
            return Check::Denied(Denial::AmbiguousPath);
        }
        let token = match bearer(headers) {
            Ok(t) => t,
            Err(d) => return Check::Denied(d),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let h = cache::hash(token);
        let verified = match self.cache.get(&h, now) {
            Some(v) => v,
            None => match self.verify(token, now, may_refetch) {
                Ok(v) => {
                    let v = Arc::new(v);
                    self.cache.insert(h, v.clone(), now);
                    v
                }
                Err(None) => return Check::NeedKeys,
                Err(Some(d)) => return Check::Denied(d),
            },
        };
        let need = claims::needed(&self.config, method, path);
        match claims::missing(&need, &verified.scopes) {
            Some(scope) => Check::Denied(Denial::InsufficientScope(scope)),
            None => Check::Allowed(verified),
        }
    }

    /// Checks the signature and the claims. `Err(None)`: the keys should be fetched again.
    fn verify(&self, token: &str, now: u64, may_refetch: bool) -> Result<Verified, Option<Denial>> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            Some(Denial::Invalid(
                "the token is not a JWS with a known algorithm",
            ))
        })?;
        if !self.config.algorithms.contains(&header.alg) {
            return Err(Some(Denial::Invalid(
                "the token's algorithm is not allowed",
            )));
        }
        let Some(set) = self.keys.current() else {
            return Err(Some(Denial::Invalid(
                "the issuer's signing keys are not loaded yet",
            )));
        };
        let kid = header.kid.as_deref();
        if let Some(kid) = kid {
            if !set.has_kid(kid) {
                if may_refetch && self.keys.miss_refetch_allowed(tokio::time::Instant::now()) {
                    return Err(None);
                }
                return Err(Some(Denial::Invalid(
                    "the token's kid is not among the issuer's keys",
                )));
            }
        }
        let validation = signature_only(header.alg);
        let mut tried = false;
        for key in set.candidates(kid, header.alg) {
            tried = true;
            if let Ok(data) =
                jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &validation)
            {
                if !data.claims.is_object() {
                    return Err(Some(Denial::Invalid(
                        "the token's payload is not a JSON object",
                    )));
                }
                return claims::check(&data.claims, &self.config, now).map_err(Some);
            }
        }
        Err(Some(Denial::Invalid(if tried {
            "the token's signature does not verify"
        } else {
            "no key of the issuer fits the token's algorithm"
        })))
    }

    /// The headers to set upstream for `verified`: each `forward_claims` header whose claim the
    /// token has.
    pub fn claim_fields(&self, verified: &Verified) -> Vec<(HeaderName, HeaderValue)> {
        self.config
            .forward_claims
            .iter()
            .zip(&verified.forwarded)
            .filter_map(|((_, name), v)| v.clone().map(|v| (name.clone(), v)))
            .collect()
    }
}

/// A validation that checks only the signature with `alg`: the claims are checked by
/// [`claims::check`] with our own clock.
fn signature_only(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    v.leeway = 0;
    v
}

/// The bearer token of the request: exactly one `Authorization` field with the `Bearer` scheme.
fn bearer<'h>(headers: &[httparse::Header<'h>]) -> Result<&'h str, Denial> {
    let mut found = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("authorization") {
            if found.is_some() {
                return Err(Denial::Invalid("more than one Authorization field"));
            }
            found = Some(h.value);
        }
    }
    let value = found.ok_or(Denial::Missing)?.trim_ascii();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], value[i..].trim_ascii()),
        None => (value, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(Denial::Missing);
    }
    if rest.is_empty() {
        return Err(Denial::Invalid("the bearer token is empty"));
    }
    if rest.len() > MAX_TOKEN {
        return Err(Denial::Invalid("the token is larger than 16 KiB"));
    }
    std::str::from_utf8(rest).map_err(|_| Denial::Invalid("the token is not text"))
}

/// Whether a path could mean another path to the upstream: dot segments, empty segments, or
/// percent-encoded `.`, `/` or `\`.
fn is_ambiguous(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.split('/').skip(1).any(|s| s == "." || s == "..")
        || path.contains("//")
        || path.contains('\\')
        || ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a [u8]) -> httparse::Header<'a> {
        httparse::Header { name, value }
    }

    #[test]
    fn bearer_field() {
        assert_eq!(bearer(&[]), Err(Denial::Missing));
        assert_eq!(
            bearer(&[h("Authorization", b"Basic abc")]),
            Err(Denial::Missing)
        );
        assert_eq!(bearer(&[h("authorization", b"bearer  abc ")]), Ok("abc"));
        assert!(matches!(
            bearer(&[
                h("Authorization", b"Bearer a"),
                h("authorization", b"Bearer b")
            ]),
            Err(Denial::Invalid(_))
        ));
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN + 1));
        assert!(matches!(
            bearer(&[h("Authorization", big.as_bytes())]),
            Err(Denial::Invalid(_))
        ));
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(
            Denial::Missing.challenge("api").unwrap(),
            "Bearer realm=\"api\""
        );
        let c = Denial::Expired.challenge("api").unwrap();
        assert_eq!(
            c,
            "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the token has expired\""
        );
        let c = Denial::InsufficientScope("read admin".into())
            .challenge("api")
            .unwrap();
        assert!(c.to_str().unwrap().contains("error=\"insufficient_scope\""));
        assert!(c.to_str().unwrap().ends_with("scope=\"read admin\""));
        assert_eq!(Denial::Missing.answer().status(), 401);
        assert_eq!(Denial::Expired.answer().status(), 401);
        assert_eq!(
            Denial::InsufficientScope(String::new()).answer().status(),
            403
        );
    }

    #[test]
    fn ambiguous_paths() {
        for p in [
            "/a/../admin/",
            "/./admin",
            "//admin",
            "/%2e%2e/admin",
            "/a%2Fb",
            "/a\\b",
        ] {
            assert!(is_ambiguous(p), "{p}");
        }
        for p in ["/admin/x", "/a.b/c", "/..a/b", "/"] {
            assert!(!is_ambiguous(p), "{p}");
        }
    }
}
