//! Sealing of shared-cache values: AES-256-GCM (ring) with a fresh random nonce per write and the
//! Redis key as associated data, under a keyring whose first key encrypts and all keys decrypt.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::secret::Secret;

/// First byte of every sealed value: the layout below, so that a later layout can be told apart.
const VERSION: u8 = 1;
/// `fetched_at` and `expires_at`, milliseconds since the epoch, big-endian.
const TIMES_LEN: usize = 16;

/// The AEAD keys from `encryption_key_file`. `Debug` shows only how many there are.
pub struct Keyring {
    keys: Vec<LessSafeKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

/// What a sealed value holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedToken {
    pub token: Secret,
    pub fetched_at: SystemTime,
    pub expires_at: SystemTime,
}

impl Keyring {
    /// Parses the key file's text: one base64 key of 32 bytes per line; blank lines and lines
    /// starting with `#` are skipped. The error names the line, never its content.
    pub fn parse(text: &str) -> Result<Keyring, String> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(line)
                .map_err(|_| format!("line {} is not base64", i + 1))?;
            if raw.len() != 32 {
                return Err(format!(
                    "line {} holds {} bytes; a key is 32 random bytes, base64 encoded (e.g. `openssl rand -base64 32`)",
                    i + 1,
                    raw.len()
                ));
            }
            let key = UnboundKey::new(&AES_256_GCM, &raw)
                .map_err(|_| format!("line {} is not a usable AES-256 key", i + 1))?;
            keys.push(LessSafeKey::new(key));
        }
        if keys.is_empty() {
            return Err("the file holds no key".into());
        }
        Ok(Keyring {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// Seals `value` under the first key with `aad` (the Redis key) as associated data.
    pub fn seal(&self, value: &SharedToken, aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError)?;
        let token = value.token.expose().as_bytes();
        let mut body = Vec::with_capacity(TIMES_LEN + token.len() + 16);
        body.extend_from_slice(&unix_ms(value.fetched_at).to_be_bytes());
        body.extend_from_slice(&unix_ms(value.expires_at).to_be_bytes());
        body.extend_from_slice(token);
        self.keys[0]
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| SealError)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a sealed value with any key of the ring; `None` when none opens it (another key,
    /// another Redis key, tampering, or not a value of ours).
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<SharedToken> {
        let (&version, rest) = sealed.split_first()?;
        if version != VERSION || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        self.keys.iter().find_map(|key| {
            let mut buf = ciphertext.to_vec();
            let plain = key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut buf,
                )
                .ok()?;
            if plain.len() <= TIMES_LEN {
                return None;
            }
            let ms = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
            let fetched_at = UNIX_EPOCH + Duration::from_millis(ms(&plain[..8]));
            let expires_at = UNIX_EPOCH + Duration::from_millis(ms(&plain[8..16]));
            let token = std::str::from_utf8(&plain[TIMES_LEN..]).ok()?;
            Some(SharedToken {
                token: Secret::new(token),
                fetched_at,
                expires_at,
            })
        })
    }
}

/// The system's random source failed; the value is not written.
#[derive(Debug, thiserror::Error)]
#[error("cannot seal the value (no random nonce)")]
pub struct SealError;

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_line(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    fn token() -> SharedToken {
        SharedToken {
            token: Secret::new("the-access-token"),
            fetched_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            expires_at: UNIX_EPOCH + Duration::from_millis(1_700_000_300_123),
        }
    }

    #[test]
    fn round_trip_with_a_fresh_nonce_and_no_plaintext() {
        let ring = Keyring::parse(&key_line(1)).unwrap();
        let a = ring.seal(&token(), b"k1").unwrap();
        let b = ring.seal(&token(), b"k1").unwrap();
        assert_ne!(a, b, "a fresh nonce per write");
        assert_eq!(ring.open(&a, b"k1"), Some(token()));
        assert_eq!(ring.open(&b, b"k1"), Some(token()));
        let needle = b"the-access-token";
        assert!(!a.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn another_redis_key_or_a_flipped_bit_does_not_open() {
        let ring = Keyring::parse(&key_line(1)).unwrap();
        let sealed = ring.seal(&token(), b"k1").unwrap();
        assert_eq!(ring.open(&sealed, b"k2"), None, "the Redis key is bound");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(ring.open(&bad, b"k1"), None, "byte {i}");
        }
        assert_eq!(ring.open(&sealed[..10], b"k1"), None);
        assert_eq!(ring.open(b"", b"k1"), None);
    }

    #[test]
    fn rotation_first_key_encrypts_all_decrypt() {
        let old = Keyring::parse(&key_line(1)).unwrap();
        let rotated =
            Keyring::parse(&format!("{}\n\n# old\n{}\n", key_line(2), key_line(1))).unwrap();
        let other = Keyring::parse(&key_line(3)).unwrap();
        let by_old = old.seal(&token(), b"k").unwrap();
        assert_eq!(rotated.open(&by_old, b"k"), Some(token()));
        let by_new = rotated.seal(&token(), b"k").unwrap();
        assert_eq!(old.open(&by_new, b"k"), None, "the first key encrypts");
        assert_eq!(other.open(&by_new, b"k"), None);
    }

    #[test]
    fn bad_key_files_name_the_line_not_the_content() {
        let cases = [
            ("", "no key"),
            ("# only a comment\n", "no key"),
            ("not base64!\n", "line 1 is not base64"),
            (
                &base64::engine::general_purpose::STANDARD.encode([7u8; 16]),
                "line 1 holds 16 bytes",
            ),
            (
                &format!("{}\n{}", key_line(1), "c2hvcnQ="),
                "line 2 holds 5 bytes",
            ),
        ];
        for (text, want) in cases {
            let e = Keyring::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("c2hvcnQ"), "{e}");
        }
        let dbg = format!("{:?}", Keyring::parse(&key_line(9)).unwrap());
        assert_eq!(dbg, "Keyring(1 keys)");
    }
}
