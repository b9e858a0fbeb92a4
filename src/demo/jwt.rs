//! HS256 JWTs for the demo issuer and the demo API (signing and checking).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("hmac accepts any key length"))
}

/// Signs `claims` with HS256.
pub fn sign(key: &[u8], claims: &Value) -> String {
    let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = B64.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(key);
    m.update(signing_input.as_bytes());
    let sig = B64.encode(m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
}

/// Checks the signature and `exp` (against `now_unix`) and returns the claims.
pub fn verify(key: &[u8], token: &str, now_unix: u64) -> Result<Value, JwtError> {
    let (signing_input, sig) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (header, payload) = signing_input.split_once('.').ok_or(JwtError::Malformed)?;
    let sig = B64.decode(sig).map_err(|_| JwtError::Malformed)?;
    let mut m = mac(key);
    m.update(signing_input.as_bytes());
    m.verify_slice(&sig).map_err(|_| JwtError::BadSignature)?;
    let header: Value =
        serde_json::from_slice(&B64.decode(header).map_err(|_| JwtError::Malformed)?)
            .map_err(|_| JwtError::Malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::Malformed);
    }
    let claims: Value =
        serde_json::from_slice(&B64.decode(payload).map_err(|_| JwtError::Malformed)?)
            .map_err(|_| JwtError::Malformed)?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(JwtError::Malformed)?;
    if now_unix >= exp {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_rejections() {
        let t = sign(b"k", &json!({"sub": "a", "exp": 100}));
        assert_eq!(verify(b"k", &t, 99).unwrap()["sub"], "a");
        assert_eq!(verify(b"k", &t, 100), Err(JwtError::Expired));
        assert_eq!(verify(b"other", &t, 99), Err(JwtError::BadSignature));
        assert_eq!(verify(b"k", "abc", 99), Err(JwtError::Malformed));
        assert_eq!(crate::token::client::jwt_exp(&t), Some(100));
    }
}
