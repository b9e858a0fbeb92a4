//! How a provider's client proves who it is at the token endpoint: a shared secret, a signed
//! JWT (`private_key_jwt`), a JWT minted by someone else (`client_assertion`), or a TLS client
//! certificate (`tls_client_auth`, `self_signed_tls_client_auth`). Key, certificate and
//! assertion files are read again for every token request, so rotation needs no restart.

pub mod assertion;
pub mod keys;
#[cfg(test)]
pub(crate) mod test_keys;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::Digest;

use crate::config::SecretSource;
use crate::secret::Secret;
use assertion::{AssertionProblem, HeaderExtras};
use keys::{Algorithm, CertChain, KeyError, PrivateKey};

/// How often a key and certificate that do not match are read again within one token request:
/// a rotation that writes the two files one after the other leaves them apart for a moment.
pub const MISMATCH_READS: u32 = 5;
/// The pause between those reads.
pub const MISMATCH_PAUSE: Duration = Duration::from_millis(100);

/// `private_key_jwt` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateKeyJwt {
    pub key_file: PathBuf,
    /// `None`: the default for the key's kind, decided when the key is read.
    pub algorithm: Option<Algorithm>,
    pub audience: String,
    pub key_id: Option<String>,
    pub certificate_file: Option<PathBuf>,
    pub lifetime: Duration,
}

/// `client_assertion` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAssertion {
    pub file: PathBuf,
    pub assertion_type: String,
}

/// `tls_client_auth` / `self_signed_tls_client_auth` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClient {
    pub certificate_file: PathBuf,
    pub key_file: PathBuf,
}

/// Where a client's credential comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Secret(SecretSource),
    PrivateKeyJwt(PrivateKeyJwt),
    ClientAssertion(ClientAssertion),
    TlsClient(TlsClient),
}

/// What one token request carries to authenticate, made fresh for each request.
pub enum Proof {
    /// A client secret (sent in the body or as HTTP Basic, by the auth method).
    Secret(Secret),
    /// `client_assertion_type` and `client_assertion`.
    Assertion {
        assertion_type: String,
        assertion: Secret,
    },
    /// A TLS client identity: the key and certificate chain as PEM.
    Tls(TlsIdentity),
}

/// A TLS client identity as read from disk. Its `Debug` hides the key.
pub struct TlsIdentity {
    pem: Vec<u8>,
    /// Tells a changed identity from the one a cached HTTP client was built with.
    pub digest: [u8; 32],
}

impl TlsIdentity {
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity([redacted])")
    }
}

/// Why no proof could be made; each maps to a reason class of its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// A file is missing, unreadable or does not hold what it should.
    #[error("{key}: {source}")]
    Unreadable {
        key: String,
        #[source]
        source: KeyError,
    },
    /// A key and its certificate do not match (also after reading them again).
    #[error("{key}: {source}")]
    Mismatch {
        key: String,
        #[source]
        source: KeyError,
    },
    /// The `client_assertion` file holds an expired JWT.
    #[error("{key}: the assertion in \"{path}\" expired at {exp} (unix time); it is not sent")]
    AssertionExpired { key: String, path: String, exp: u64 },
    #[error("{key}: \"{path}\" is empty")]
    AssertionEmpty { key: String, path: String },
    #[error("{key}: {message}")]
    Sign { key: String, message: String },
}

impl Credential {
    /// The files this credential reads, to watch for changes.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            Credential::Secret(SecretSource::File(f)) => vec![f.as_path()],
            Credential::Secret(SecretSource::Inline(_)) => vec![],
            Credential::PrivateKeyJwt(p) => {
                let mut v = vec![p.key_file.as_path()];
                v.extend(p.certificate_file.as_deref());
                v
            }
            Credential::ClientAssertion(a) => vec![a.file.as_path()],
            Credential::TlsClient(t) => vec![t.certificate_file.as_path(), t.key_file.as_path()],
        }
    }

    /// True when tokens fetched with `self` are as good as with `other`: a rotated secret, key or
    /// certificate (same files, new content) keeps the tokens; different settings do not.
    pub fn same_source(&self, other: &Credential) -> bool {
        match (self, other) {
            (Credential::Secret(a), Credential::Secret(b)) => {
                std::mem::discriminant(a) == std::mem::discriminant(b)
            }
            (a, b) => a == b,
        }
    }

    /// The proof for one token request by `client_id` at `now`. Files are read here, every time.
    /// `provider` is the config name, used in the keys that errors name.
    pub async fn prove(
        &self,
        provider: &str,
        client_id: &str,
        now: SystemTime,
    ) -> Result<Proof, ProofError> {
        let key = |k: &str| format!("providers.{provider}.{k}");
        match self {
            Credential::Secret(source) => {
                source
                    .read()
                    .map(Proof::Secret)
                    .map_err(|e| ProofError::Unreadable {
                        key: key("client_secret_file"),
                        source: KeyError::Unreadable {
                            path: match source {
                                SecretSource::File(f) => f.display().to_string(),
                                SecretSource::Inline(_) => String::new(),
                            },
                            message: e.to_string(),
                        },
                    })
            }
            Credential::PrivateKeyJwt(p) => {
                let (private, cert) = read_with_retry(
                    &p.key_file,
                    p.certificate_file.as_deref(),
                    &key("private_key_file"),
                    &key("assertion.certificate_file"),
                )
                .await?;
                let algorithm = p
                    .algorithm
                    .unwrap_or_else(|| Algorithm::default_for(private.kind));
                let now_unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                let claims = assertion::claims(
                    client_id,
                    &p.audience,
                    now_unix,
                    p.lifetime,
                    assertion::new_jti(),
                );
                let extras = HeaderExtras {
                    kid: p.key_id.clone(),
                    certificate: cert,
                };
                let jwt = assertion::sign(&private, algorithm, &extras, &claims).map_err(|e| {
                    ProofError::Sign {
                        key: key("private_key_file"),
                        message: e.to_string(),
                    }
                })?;
                Ok(Proof::Assertion {
                    assertion_type: assertion::JWT_BEARER.to_string(),
                    assertion: jwt,
                })
            }
            Credential::ClientAssertion(a) => {
                let k = key("client_assertion_file");
                let shown = a.file.display().to_string();
                let raw = std::fs::read_to_string(&a.file).map_err(|e| ProofError::Unreadable {
                    key: k.clone(),
                    source: KeyError::Unreadable {
                        path: shown.clone(),
                        message: e.to_string(),
                    },
                })?;
                let value = raw.trim();
                let now_unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                match assertion::check_external(value, now_unix) {
                    Ok(()) => Ok(Proof::Assertion {
                        assertion_type: a.assertion_type.clone(),
                        assertion: Secret::new(value),
                    }),
                    Err(AssertionProblem::Empty) => Err(ProofError::AssertionEmpty {
                        key: k,
                        path: shown,
                    }),
                    Err(AssertionProblem::Expired { exp }) => Err(ProofError::AssertionExpired {
                        key: k,
                        path: shown,
                        exp,
                    }),
                }
            }
            Credential::TlsClient(t) => {
                let (private, cert) = read_with_retry(
                    &t.key_file,
                    Some(&t.certificate_file),
                    &key("client_key_file"),
                    &key("client_certificate_file"),
                )
                .await?;
                let mut pem = private.pem().to_vec();
                pem.push(b'\n');
                if let Some(c) = &cert {
                    pem.extend_from_slice(&c.pem);
                }
                let digest = sha2::Sha256::digest(&pem).into();
                Ok(Proof::Tls(TlsIdentity { pem, digest }))
            }
        }
    }
}

/// Reads a key and, when given, a certificate that must hold its public key. A mismatch is read
/// again a few times before it is an error (see [`MISMATCH_READS`]).
async fn read_with_retry(
    key_file: &Path,
    cert_file: Option<&Path>,
    key_name: &str,
    cert_name: &str,
) -> Result<(PrivateKey, Option<CertChain>), ProofError> {
    let mut reads = 0;
    loop {
        reads += 1;
        let private = PrivateKey::read(key_file).map_err(|source| ProofError::Unreadable {
            key: key_name.to_string(),
            source,
        })?;
        let Some(cert_file) = cert_file else {
            return Ok((private, None));
        };
        let cert = CertChain::read(cert_file).map_err(|source| ProofError::Unreadable {
            key: cert_name.to_string(),
            source,
        })?;
        if private.matches(cert.leaf()) {
            return Ok((private, Some(cert)));
        }
        if reads >= MISMATCH_READS {
            return Err(ProofError::Mismatch {
                key: cert_name.to_string(),
                source: KeyError::Invalid {
                    path: cert_file.display().to_string(),
                    message: format!(
                        "holds a certificate whose public key does not match the private key in \"{}\"",
                        key_file.display()
                    ),
                },
            });
        }
        tokio::time::sleep(MISMATCH_PAUSE).await;
    }
}

#[cfg(test)]
mod tests;
