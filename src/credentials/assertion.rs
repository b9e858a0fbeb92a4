//! Client assertions: the signed JWT of `private_key_jwt` (RFC 7523 §2.2, OIDC Core §9), and the
//! check of a JWT minted by someone else (`client_assertion`) before it is sent.

use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;

use crate::credentials::keys::{Algorithm, CertChain, PrivateKey};
use crate::secret::Secret;

/// The default `exp - iat`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// The longest `exp - iat` allowed: an assertion is a one-time proof, not a credential to keep.
pub const MAX_LIFETIME: Duration = Duration::from_secs(600);

/// The `client_assertion_type` of a JWT assertion (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The claims of one assertion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub jti: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// The claims for `client_id` at `now_unix` (seconds): `iss` = `sub` = client_id, `nbf` = `iat`.
pub fn claims(
    client_id: &str,
    aud: &str,
    now_unix: u64,
    lifetime: Duration,
    jti: String,
) -> Claims {
    Claims {
        iss: client_id.to_string(),
        sub: client_id.to_string(),
        aud: aud.to_string(),
        jti,
        iat: now_unix,
        nbf: now_unix,
        exp: now_unix + lifetime.as_secs(),
    }
}

/// A fresh `jti`: 128 bits from the operating system's random source, base64url.
pub fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What goes in the JWS header besides `alg` and `typ`.
#[derive(Debug, Clone, Default)]
pub struct HeaderExtras {
    pub kid: Option<String>,
    /// Adds `x5t#S256` and `x5t` of this certificate's leaf.
    pub certificate: Option<CertChain>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot sign the client assertion: {0}")]
pub struct SignError(String);

/// Signs `claims` with `key`. The result is a secret: it is never logged.
pub fn sign(
    key: &PrivateKey,
    algorithm: Algorithm,
    extras: &HeaderExtras,
    claims: &Claims,
) -> Result<Secret, SignError> {
    if !algorithm.fits(key.kind) {
        return Err(SignError(format!(
            "{} does not fit {}",
            algorithm.as_str(),
            key.kind
        )));
    }
    let mut header = jsonwebtoken::Header::new(algorithm.jws());
    header.kid = extras.kid.clone();
    if let Some(c) = &extras.certificate {
        header.x5t_s256 = Some(c.x5t_s256());
        header.x5t = Some(c.x5t());
    }
    jsonwebtoken::encode(&header, claims, key.signing_key())
        .map(Secret::new)
        .map_err(|e| SignError(e.to_string()))
}

/// Why a `client_assertion` file's content is not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssertionProblem {
    Empty,
    /// `exp` is at or before now.
    Expired {
        exp: u64,
    },
}

/// Checks the content of a `client_assertion` file at `now_unix`: not empty and, when it is a
/// JWT with an `exp` claim, not expired. The signature is the IdP's business, not ours.
pub fn check_external(assertion: &str, now_unix: u64) -> Result<(), AssertionProblem> {
    if assertion.is_empty() {
        return Err(AssertionProblem::Empty);
    }
    match crate::token::client::jwt_exp(assertion) {
        Some(exp) if exp <= now_unix => Err(AssertionProblem::Expired { exp }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
