use super::*;
use crate::credentials::test_keys;

fn tls(dir: &Path) -> Credential {
    Credential::TlsClient(TlsClient {
        certificate_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
    })
}

// On tokio's paused clock: the pauses between reads pass at once, and in a fixed order.
#[tokio::test(start_paused = true)]
async fn a_key_and_certificate_rotated_one_after_the_other_are_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let old = test_keys::p256(true);
    let new = test_keys::p256(false);
    // The key is already the new one; the certificate follows a moment later.
    std::fs::write(dir.path().join("tls.key"), &new.private_pem).unwrap();
    std::fs::write(dir.path().join("tls.crt"), test_keys::self_signed(&old)).unwrap();
    let new_cert = test_keys::self_signed(&new);
    let cert_path = dir.path().join("tls.crt");
    let writer = tokio::spawn(async move {
        // Between the second read (after one pause) and the third.
        tokio::time::sleep(MISMATCH_PAUSE * 3 / 2).await;
        std::fs::write(cert_path, new_cert).unwrap();
    });
    let proof = tls(dir.path())
        .prove("p", "c", SystemTime::now())
        .await
        .expect("the pair matches once the certificate is written");
    writer.await.unwrap();
    let Proof::Tls(identity) = proof else {
        panic!("a TLS identity")
    };
    assert!(format!("{identity:?}") == "TlsIdentity([redacted])");

    // A pair that never matches is an error naming the certificate key.
    std::fs::write(dir.path().join("tls.crt"), test_keys::self_signed(&old)).unwrap();
    let e = tls(dir.path())
        .prove("p", "c", SystemTime::now())
        .await
        .err()
        .expect("a mismatch");
    assert!(matches!(e, ProofError::Mismatch { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("providers.p.client_certificate_file: "),
        "{e}"
    );
}

#[tokio::test]
async fn private_key_jwt_makes_a_fresh_assertion_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let k = test_keys::p384(true);
    std::fs::write(dir.path().join("k.pem"), &k.private_pem).unwrap();
    let cred = Credential::PrivateKeyJwt(PrivateKeyJwt {
        key_file: dir.path().join("k.pem"),
        algorithm: None,
        audience: "https://idp.example/".into(),
        key_id: None,
        certificate_file: None,
        lifetime: Duration::from_secs(60),
    });
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let Proof::Assertion {
            assertion_type,
            assertion,
        } = cred.prove("p", "c", SystemTime::now()).await.unwrap()
        else {
            panic!("an assertion")
        };
        assert_eq!(assertion_type, assertion::JWT_BEARER);
        let header = jsonwebtoken::decode_header(assertion.expose()).unwrap();
        assert_eq!(
            header.alg,
            jsonwebtoken::Algorithm::ES384,
            "default for P-384"
        );
        assert!(seen.insert(assertion.expose().to_string()));
    }
    // A key file that disappears is a named error, not a panic.
    std::fs::remove_file(dir.path().join("k.pem")).unwrap();
    let e = cred.prove("p", "c", SystemTime::now()).await.err().unwrap();
    assert!(
        e.to_string()
            .starts_with("providers.p.private_key_file: cannot read"),
        "{e}"
    );
}
