//! Private keys and certificates read from PEM files: which kind of key it is, whether an
//! algorithm fits it, whether a certificate holds its public key. Parsing is done by the `rsa`,
//! `p256`, `p384` and `x509-parser` crates; signing by `jsonwebtoken`.

use std::fmt;
use std::path::Path;

use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::Digest;

/// RSA keys shorter than this are refused.
pub const MIN_RSA_BITS: usize = 2048;

/// What went wrong with a key or certificate file. The message names the file, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read \"{path}\": {message}")]
    Unreadable { path: String, message: String },
    #[error("\"{path}\" {message}")]
    Invalid { path: String, message: String },
}

/// The kind of a private key, which decides the algorithms it can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    P256,
    P384,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "an RSA key ({bits} bits)"),
            KeyKind::P256 => f.write_str("an EC P-256 key"),
            KeyKind::P384 => f.write_str("an EC P-384 key"),
        }
    }
}

/// JWS algorithms for a client assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    ES256,
    ES384,
}

impl Algorithm {
    pub const ALL: [Algorithm; 7] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::ES256,
        Algorithm::ES384,
    ];

    pub fn parse(s: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
        }
    }

    /// The algorithm used when none is configured.
    pub fn default_for(kind: KeyKind) -> Algorithm {
        match kind {
            KeyKind::Rsa { .. } => Algorithm::RS256,
            KeyKind::P256 => Algorithm::ES256,
            KeyKind::P384 => Algorithm::ES384,
        }
    }

    /// Whether a key of `kind` can sign with this algorithm.
    pub fn fits(self, kind: KeyKind) -> bool {
        match self {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384 => matches!(kind, KeyKind::Rsa { .. }),
            Algorithm::ES256 => kind == KeyKind::P256,
            Algorithm::ES384 => kind == KeyKind::P384,
        }
    }

    pub(crate) fn jws(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::RS384 => jsonwebtoken::Algorithm::RS384,
            Algorithm::RS512 => jsonwebtoken::Algorithm::RS512,
            Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
            Algorithm::PS384 => jsonwebtoken::Algorithm::PS384,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
        }
    }
}

/// A parsed private key. Its `Debug` shows the kind only, never key material.
pub struct PrivateKey {
    pub kind: KeyKind,
    /// The subjectPublicKey bits (PKCS#1 `RSAPublicKey` or the uncompressed EC point), to compare
    /// with a certificate's.
    public: Vec<u8>,
    signing: jsonwebtoken::EncodingKey,
    /// The key as PEM, for a TLS client identity.
    pem: Vec<u8>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, [redacted])", self.kind)
    }
}

impl PrivateKey {
    /// Parses a PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC P-256/P-384).
    pub fn from_pem(path: &str, pem: &[u8]) -> Result<PrivateKey, KeyError> {
        let invalid = |message: &str| KeyError::Invalid {
            path: path.to_string(),
            message: message.to_string(),
        };
        let text = std::str::from_utf8(pem).map_err(|_| invalid("is not a PEM file"))?;
        let label = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("-----BEGIN ")
                    .and_then(|r| r.strip_suffix("-----"))
            })
            .ok_or_else(|| invalid("holds no PEM private key"))?;
        let key = match label {
            "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_pem(text)
                .map_err(|_| invalid("holds an RSA PRIVATE KEY that cannot be parsed"))
                .and_then(|k| rsa_key(&k, text, path)),
            "EC PRIVATE KEY" => {
                if let Ok(k) = p256::SecretKey::from_sec1_pem(text) {
                    ec_key(KeyKind::P256, k.to_pkcs8_der(), public_p256(&k), text, path)
                } else if let Ok(k) = p384::SecretKey::from_sec1_pem(text) {
                    ec_key(KeyKind::P384, k.to_pkcs8_der(), public_p384(&k), text, path)
                } else {
                    Err(invalid(
                        "holds an EC key that is not on P-256 or P-384, or cannot be parsed",
                    ))
                }
            }
            "PRIVATE KEY" => {
                if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(text) {
                    rsa_key(&k, text, path)
                } else if let Ok(k) = p256::SecretKey::from_pkcs8_pem(text) {
                    ec_key(KeyKind::P256, k.to_pkcs8_der(), public_p256(&k), text, path)
                } else if let Ok(k) = p384::SecretKey::from_pkcs8_pem(text) {
                    ec_key(KeyKind::P384, k.to_pkcs8_der(), public_p384(&k), text, path)
                } else {
                    Err(invalid(
                        "holds a key that is not RSA or EC (P-256/P-384), or cannot be parsed",
                    ))
                }
            }
            "ENCRYPTED PRIVATE KEY" => Err(invalid(
                "holds an encrypted private key; give the key unencrypted (protect the file instead)",
            )),
            other => Err(invalid(&format!(
                "holds a \"{other}\", not a private key (PKCS#8, PKCS#1 RSA or SEC1 EC)"
            ))),
        }?;
        Ok(key)
    }

    /// Reads and parses the key at `path`.
    pub fn read(path: &Path) -> Result<PrivateKey, KeyError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| KeyError::Unreadable {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        PrivateKey::from_pem(&shown, &bytes)
    }

    pub(crate) fn signing_key(&self) -> &jsonwebtoken::EncodingKey {
        &self.signing
    }

    pub(crate) fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// True when `cert` holds this key's public key.
    pub fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        match x509_parser::parse_x509_certificate(cert) {
            Ok((_, c)) => c.public_key().subject_public_key.data.as_ref() == self.public.as_slice(),
            Err(_) => false,
        }
    }
}

fn rsa_key(k: &rsa::RsaPrivateKey, pem: &str, path: &str) -> Result<PrivateKey, KeyError> {
    let invalid = |message: String| KeyError::Invalid {
        path: path.to_string(),
        message,
    };
    let bits = k.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(invalid(format!(
            "holds an RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"
        )));
    }
    let der = k
        .to_pkcs1_der()
        .map_err(|_| invalid("holds an RSA key that cannot be encoded".into()))?;
    let public = k
        .to_public_key()
        .to_pkcs1_der()
        .map_err(|_| invalid("holds an RSA key whose public key cannot be encoded".into()))?;
    Ok(PrivateKey {
        kind: KeyKind::Rsa { bits },
        public: public.as_bytes().to_vec(),
        signing: jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()),
        pem: pem.as_bytes().to_vec(),
    })
}

fn public_p256(k: &p256::SecretKey) -> Vec<u8> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    k.public_key().to_encoded_point(false).as_bytes().to_vec()
}

fn public_p384(k: &p384::SecretKey) -> Vec<u8> {
    use p384::elliptic_curve::sec1::ToEncodedPoint;
    k.public_key().to_encoded_point(false).as_bytes().to_vec()
}

fn ec_key(
    kind: KeyKind,
    pkcs8: p256::pkcs8::Result<p256::pkcs8::SecretDocument>,
    public: Vec<u8>,
    pem: &str,
    path: &str,
) -> Result<PrivateKey, KeyError> {
    let der = pkcs8.map_err(|_| KeyError::Invalid {
        path: path.to_string(),
        message: "holds an EC key that cannot be encoded".into(),
    })?;
    Ok(PrivateKey {
        kind,
        public,
        signing: jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
        pem: pem.as_bytes().to_vec(),
    })
}

/// A PEM certificate chain, leaf first.
#[derive(Clone)]
pub struct CertChain {
    pub certs: Vec<CertificateDer<'static>>,
    pub pem: Vec<u8>,
}

impl fmt::Debug for CertChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertChain({} certs)", self.certs.len())
    }
}

impl CertChain {
    pub fn read(path: &Path) -> Result<CertChain, KeyError> {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| KeyError::Unreadable {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let invalid = |message: &str| KeyError::Invalid {
            path: shown.clone(),
            message: message.to_string(),
        };
        let mut certs = Vec::new();
        for item in CertificateDer::pem_slice_iter(&pem) {
            let cert = item.map_err(|_| invalid("is not valid PEM"))?;
            if x509_parser::parse_x509_certificate(&cert).is_err() {
                return Err(invalid("holds a certificate that cannot be parsed"));
            }
            certs.push(cert);
        }
        if certs.is_empty() {
            return Err(invalid("holds no certificate"));
        }
        Ok(CertChain { certs, pem })
    }

    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.certs[0]
    }

    /// `x5t#S256`: base64url of the leaf's SHA-256 digest (RFC 7515 §4.1.8).
    pub fn x5t_s256(&self) -> String {
        b64(&sha2::Sha256::digest(self.leaf()))
    }

    /// `x5t`: base64url of the leaf's SHA-1 digest (RFC 7515 §4.1.7), which Entra ID still reads.
    pub fn x5t(&self) -> String {
        b64(&sha1::Sha1::digest(self.leaf()))
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads a key and a certificate and checks that the certificate holds the key's public key.
pub fn read_pair(key: &Path, cert: &Path) -> Result<(PrivateKey, CertChain), KeyError> {
    let k = PrivateKey::read(key)?;
    let c = CertChain::read(cert)?;
    if !k.matches(c.leaf()) {
        return Err(KeyError::Invalid {
            path: cert.display().to_string(),
            message: format!(
                "holds a certificate whose public key does not match the private key in \"{}\"",
                key.display()
            ),
        });
    }
    Ok((k, c))
}
