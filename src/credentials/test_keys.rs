//! Keys and certificates generated for unit tests (never shipped).

use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::pkcs1::EncodeRsaPrivateKey;

/// A generated key as PEM: the private key in the requested encoding and the public key (SPKI).
pub struct TestKey {
    pub private_pem: String,
    pub public_pem: String,
    /// The private key as PKCS#8 PEM (what rcgen reads to make a certificate).
    pub pkcs8_pem: String,
}

pub fn rsa(bits: usize, pkcs1: bool) -> TestKey {
    let k = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits).unwrap();
    let pkcs8_pem = k.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    TestKey {
        private_pem: if pkcs1 {
            k.to_pkcs1_pem(LineEnding::LF).unwrap().to_string()
        } else {
            pkcs8_pem.clone()
        },
        public_pem: k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap(),
        pkcs8_pem,
    }
}

pub fn p256(sec1: bool) -> TestKey {
    let k = p256::SecretKey::random(&mut rand_core::OsRng);
    let pkcs8_pem = k.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    TestKey {
        private_pem: if sec1 {
            k.to_sec1_pem(LineEnding::LF).unwrap().to_string()
        } else {
            pkcs8_pem.clone()
        },
        public_pem: k.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
        pkcs8_pem,
    }
}

pub fn p384(sec1: bool) -> TestKey {
    let k = p384::SecretKey::random(&mut rand_core::OsRng);
    let pkcs8_pem = k.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    TestKey {
        private_pem: if sec1 {
            k.to_sec1_pem(LineEnding::LF).unwrap().to_string()
        } else {
            pkcs8_pem.clone()
        },
        public_pem: k.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
        pkcs8_pem,
    }
}

/// A self-signed certificate (PEM) for `key`.
pub fn self_signed(key: &TestKey) -> String {
    let kp = rcgen::KeyPair::from_pem(&key.pkcs8_pem).unwrap();
    rcgen::CertificateParams::new(vec!["client.test".to_string()])
        .unwrap()
        .self_signed(&kp)
        .unwrap()
        .pem()
}
