//! A JWKS document parsed into verification keys (encryption and symmetric keys left out), and
//! the pure timing rules of the key set: how long until the next refresh, and whether an unknown
//! `kid` may trigger a fetch now.

use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::time::Instant;

/// A `kid` not in the set makes us ask the IdP again at most this often (per issuer).
pub const MISS_REFETCH_EVERY: Duration = Duration::from_secs(30);
/// Bounds of the background refresh period taken from `Cache-Control: max-age`.
pub const REFRESH_MIN: Duration = Duration::from_secs(300);
pub const REFRESH_MAX: Duration = Duration::from_secs(24 * 3600);
/// The refresh period when the answer has no `max-age`.
pub const REFRESH_DEFAULT: Duration = Duration::from_secs(3600);
/// The key family a JWS algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Okp,
}

fn family(alg: Algorithm) -> Option<Family> {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some(Family::Rsa),
        Algorithm::ES256 | Algorithm::ES384 => Some(Family::Ec),
        Algorithm::EdDSA => Some(Family::Okp),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
    }
}

/// One verification key.
pub struct Key {
    pub kid: Option<String>,
    family: Family,
    /// The key's own `alg`, when the JWKS names one: a token must use exactly that.
    alg: Option<Algorithm>,
    pub decoding: DecodingKey,
}

impl Key {
    /// Whether this key may check a signature made with `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        family(alg) == Some(self.family) && self.alg.is_none_or(|a| a == alg)
    }
}

/// A parsed JWKS and when it was fetched.
pub struct KeySet {
    pub keys: Vec<Key>,
    pub fetched_at: SystemTime,
}

impl KeySet {
    /// The keys that may check a token with `kid` (all fitting keys when it names none).
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys
            .iter()
            .filter(move |k| kid.is_none_or(|id| k.kid.as_deref() == Some(id)) && k.fits(alg))
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Parses a JWKS document. Keys marked `use: enc`, symmetric (`oct`) keys, keys whose `alg` is
/// not a signature algorithm and keys that do not parse are left out; a document that is not a
/// JWKS is an error.
pub fn parse_jwks(body: &[u8], fetched_at: SystemTime) -> Result<KeySet, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut keys = Vec::new();
    for raw in list {
        // One key of a kind we do not know must not cost us the others.
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let fam = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(_) => Family::Ec,
            AlgorithmParameters::OctetKeyPair(_) => Family::Okp,
            AlgorithmParameters::OctetKey(_) => continue,
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => match format!("{a:?}").parse::<Algorithm>() {
                Ok(alg) if family(alg) == Some(fam) => Some(alg),
                _ => continue,
            },
        };
        let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            family: fam,
            alg,
            decoding,
        });
    }
    Ok(KeySet { keys, fetched_at })
}

/// How long until the next background refresh: `max-age` from `Cache-Control`, clamped to
/// [`REFRESH_MIN`, `REFRESH_MAX`]; [`REFRESH_DEFAULT`] without one.
pub fn refresh_after(cache_control: Option<&str>) -> Duration {
    let max_age = cache_control.and_then(|v| {
        v.split(',').find_map(|d| {
            let (name, value) = d.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())?
        })
    });
    match max_age {
        Some(s) => Duration::from_secs(s).clamp(REFRESH_MIN, REFRESH_MAX),
        None => REFRESH_DEFAULT,
    }
}

/// Whether a kid-miss fetch may happen at `now`, after the last one at `last`.
pub fn miss_refetch_allowed(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|l| now.saturating_duration_since(l) >= MISS_REFETCH_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_clamped() {
        assert_eq!(refresh_after(None), REFRESH_DEFAULT);
        assert_eq!(refresh_after(Some("public, max-age=60")), REFRESH_MIN);
        assert_eq!(
            refresh_after(Some("max-age=7200")),
            Duration::from_secs(7200)
        );
        assert_eq!(refresh_after(Some("max-age=999999999")), REFRESH_MAX);
        assert_eq!(refresh_after(Some("no-store")), REFRESH_DEFAULT);
    }

    #[test]
    fn kid_miss_fetches_at_most_every_30s() {
        let t0 = Instant::now();
        assert!(miss_refetch_allowed(None, t0));
        assert!(!miss_refetch_allowed(Some(t0), t0));
        assert!(!miss_refetch_allowed(
            Some(t0),
            t0 + MISS_REFETCH_EVERY - Duration::from_millis(1)
        ));
        assert!(miss_refetch_allowed(Some(t0), t0 + MISS_REFETCH_EVERY));
    }

    #[test]
    fn encryption_symmetric_and_unknown_keys_are_left_out() {
        let doc = br#"{"keys":[
            {"kty":"EC","crv":"P-256","kid":"sig","use":"sig","alg":"ES256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256","kid":"enc","use":"enc",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
            {"kty":"EC","crv":"P-256","kid":"wrongalg","alg":"RS256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"XYZ","kid":"future"}
        ]}"#;
        let set = parse_jwks(doc, SystemTime::now()).unwrap();
        let kids: Vec<_> = set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, ["sig"]);
        assert_eq!(set.candidates(Some("sig"), Algorithm::ES256).count(), 1);
        assert_eq!(set.candidates(Some("sig"), Algorithm::ES384).count(), 0);
        assert_eq!(set.candidates(Some("sig"), Algorithm::RS256).count(), 0);
        assert!(parse_jwks(b"{}", SystemTime::now()).is_err());
    }
}
