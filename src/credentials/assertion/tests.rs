use std::collections::HashSet;

use super::*;
use crate::credentials::keys::{CertChain, KeyKind};
use crate::credentials::test_keys::{self, TestKey};

const NOW: u64 = 1_800_000_000;

fn verify(
    token: &str,
    alg: Algorithm,
    public_pem: &str,
    aud: &str,
) -> (jsonwebtoken::Header, Claims2) {
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            jsonwebtoken::DecodingKey::from_ec_pem(public_pem.as_bytes()).unwrap()
        }
        _ => jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap(),
    };
    let mut v = jsonwebtoken::Validation::new(alg.jws());
    v.set_audience(&[aud]);
    // The claims are stamped at a fixed instant: check the signature, not the clock.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.required_spec_claims = HashSet::new();
    let data = jsonwebtoken::decode::<Claims2>(token, &key, &v).expect("signature verifies");
    (data.header, data.claims)
}

#[derive(Debug, serde::Deserialize, PartialEq)]
struct Claims2 {
    iss: String,
    sub: String,
    aud: String,
    jti: String,
    iat: u64,
    nbf: u64,
    exp: u64,
}

fn key_for(pem: &str) -> PrivateKey {
    PrivateKey::from_pem("test.pem", pem.as_bytes()).unwrap()
}

#[test]
fn every_algorithm_signs_an_assertion_that_verifies_with_the_public_key() {
    let rsa = test_keys::rsa(2048, true);
    let rsa8 = test_keys::rsa(2048, false);
    let ec256 = test_keys::p256(true);
    let ec384 = test_keys::p384(false);
    let cases: Vec<(Algorithm, &TestKey)> = vec![
        (Algorithm::RS256, &rsa),
        (Algorithm::RS384, &rsa8),
        (Algorithm::RS512, &rsa),
        (Algorithm::PS256, &rsa8),
        (Algorithm::PS384, &rsa),
        (Algorithm::ES256, &ec256),
        (Algorithm::ES384, &ec384),
    ];
    for (alg, k) in cases {
        let key = key_for(&k.private_pem);
        let c = claims(
            "client-1",
            "https://idp.test/",
            NOW,
            DEFAULT_LIFETIME,
            new_jti(),
        );
        let extras = HeaderExtras {
            kid: Some("kid-1".into()),
            certificate: None,
        };
        let jwt = sign(&key, alg, &extras, &c).unwrap();
        let (header, got) = verify(jwt.expose(), alg, &k.public_pem, "https://idp.test/");
        assert_eq!(header.alg, alg.jws(), "{alg:?}");
        assert_eq!(header.kid.as_deref(), Some("kid-1"));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert!(header.x5t_s256.is_none() && header.x5t.is_none());
        assert_eq!(got.iss, "client-1");
        assert_eq!(got.sub, "client-1");
        assert_eq!(got.aud, "https://idp.test/");
        assert_eq!((got.iat, got.nbf, got.exp), (NOW, NOW, NOW + 60));
        assert_eq!(got.jti, c.jti);
        // The signature covers the claims: a changed payload does not verify.
        let parts: Vec<&str> = jwt.expose().split('.').collect();
        let other = claims(
            "client-2",
            "https://idp.test/",
            NOW,
            DEFAULT_LIFETIME,
            new_jti(),
        );
        let forged_payload = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&other).unwrap())
        };
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        let dk = match alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                jsonwebtoken::DecodingKey::from_ec_pem(k.public_pem.as_bytes()).unwrap()
            }
            _ => jsonwebtoken::DecodingKey::from_rsa_pem(k.public_pem.as_bytes()).unwrap(),
        };
        let mut v = jsonwebtoken::Validation::new(alg.jws());
        v.validate_aud = false;
        v.validate_exp = false;
        v.required_spec_claims = HashSet::new();
        assert!(
            jsonwebtoken::decode::<Claims2>(&forged, &dk, &v).is_err(),
            "{alg:?}"
        );
    }
}

#[test]
fn an_algorithm_that_does_not_fit_the_key_is_refused() {
    let ec = key_for(&test_keys::p256(false).private_pem);
    let c = claims("c", "a", NOW, DEFAULT_LIFETIME, new_jti());
    let e = sign(&ec, Algorithm::RS256, &HeaderExtras::default(), &c).unwrap_err();
    assert!(
        e.to_string().contains("RS256 does not fit an EC P-256 key"),
        "{e}"
    );
    assert!(sign(&ec, Algorithm::ES384, &HeaderExtras::default(), &c).is_err());
    assert!(!Algorithm::ES256.fits(KeyKind::Rsa { bits: 2048 }));
    assert!(Algorithm::PS384.fits(KeyKind::Rsa { bits: 4096 }));
    assert_eq!(
        Algorithm::default_for(KeyKind::Rsa { bits: 2048 }),
        Algorithm::RS256
    );
    assert_eq!(Algorithm::default_for(KeyKind::P256), Algorithm::ES256);
    assert_eq!(Algorithm::default_for(KeyKind::P384), Algorithm::ES384);
}

#[test]
fn a_certificate_adds_its_thumbprints_to_the_header() {
    use sha2::Digest as _;
    let k = test_keys::p256(false);
    let cert_pem = test_keys::self_signed(&k);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pem");
    std::fs::write(&path, &cert_pem).unwrap();
    let chain = CertChain::read(&path).unwrap();
    let key = key_for(&k.private_pem);
    assert!(key.matches(chain.leaf()));
    let extras = HeaderExtras {
        kid: None,
        certificate: Some(chain.clone()),
    };
    let c = claims("c", "aud", NOW, DEFAULT_LIFETIME, new_jti());
    let jwt = sign(&key, Algorithm::ES256, &extras, &c).unwrap();
    let (header, _) = verify(jwt.expose(), Algorithm::ES256, &k.public_pem, "aud");
    use base64::Engine as _;
    let b64 = |d: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d);
    let der: &[u8] = chain.leaf();
    assert_eq!(header.x5t_s256, Some(b64(&sha2::Sha256::digest(der))));
    assert_eq!(header.x5t, Some(b64(&sha1::Sha1::digest(der))));
    assert!(header.kid.is_none());
}

#[test]
fn jti_is_unique_and_unguessable_in_size() {
    let set: HashSet<String> = (0..10_000).map(|_| new_jti()).collect();
    assert_eq!(set.len(), 10_000);
    assert!(set.iter().all(|j| j.len() == 22), "128 bits in base64url");
}

#[test]
fn lifetime_sets_exp() {
    for (lifetime, exp) in [(60, NOW + 60), (1, NOW + 1), (600, NOW + 600)] {
        let c = claims("c", "a", NOW, Duration::from_secs(lifetime), "j".into());
        assert_eq!(c.exp, exp);
        assert_eq!(c.nbf, c.iat);
    }
}

#[test]
fn the_key_never_prints() {
    let k = test_keys::p256(false);
    let key = key_for(&k.private_pem);
    let dbg = format!("{key:?}");
    assert_eq!(dbg, "PrivateKey(an EC P-256 key, [redacted])");
    let c = claims("c", "a", NOW, DEFAULT_LIFETIME, new_jti());
    let jwt = sign(&key, Algorithm::ES256, &HeaderExtras::default(), &c).unwrap();
    assert_eq!(format!("{jwt:?}"), "[redacted]");
}

#[test]
fn an_external_assertion_is_checked_for_expiry() {
    use base64::Engine as _;
    let jwt = |exp: u64| {
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            r#"{{"exp":{exp},"sub":"system:serviceaccount:a:b"}}"#
        ));
        format!("eyJhbGciOiJSUzI1NiJ9.{p}.c2ln")
    };
    assert_eq!(check_external(&jwt(NOW + 1), NOW), Ok(()));
    assert_eq!(
        check_external(&jwt(NOW), NOW),
        Err(AssertionProblem::Expired { exp: NOW })
    );
    assert_eq!(
        check_external(&jwt(NOW - 100), NOW),
        Err(AssertionProblem::Expired { exp: NOW - 100 })
    );
    assert_eq!(check_external("", NOW), Err(AssertionProblem::Empty));
    // Not a JWT, or no exp: sent as it is; the IdP judges it.
    assert_eq!(check_external("opaque", NOW), Ok(()));
}
