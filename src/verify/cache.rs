//! Tokens already verified, keyed by a SHA-256 of the token, kept until they expire and bounded
//! in number: a caller reusing its token costs a hash and a lookup, not a signature check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::claims::Verified;

/// Most tokens remembered per route.
pub const MAX_ENTRIES: usize = 10_000;

pub type TokenHash = [u8; 32];

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Default)]
pub struct VerifiedCache {
    entries: Mutex<HashMap<TokenHash, Arc<Verified>>>,
}

impl VerifiedCache {
    /// The verified token with hash `h`, if it is remembered and still good at `now` (Unix
    /// seconds).
    pub fn get(&self, h: &TokenHash, now: u64) -> Option<Arc<Verified>> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(h).filter(|v| now < v.valid_until).cloned()
    }

    /// Remembers a verified token. When full, expired entries go first; if none has expired,
    /// everything goes (a flood of fresh tokens cannot grow the map past the bound).
    pub fn insert(&self, h: TokenHash, v: Arc<Verified>, now: u64) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&h) {
            entries.retain(|_, e| now < e.valid_until);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(h, v);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(valid_until: u64) -> Arc<Verified> {
        Arc::new(Verified {
            valid_until,
            scopes: vec![],
            forwarded: vec![],
        })
    }

    #[test]
    fn entries_last_until_expiry_and_the_size_is_bounded() {
        let c = VerifiedCache::default();
        c.insert(hash("a"), v(100), 0);
        assert!(c.get(&hash("a"), 99).is_some());
        assert!(c.get(&hash("a"), 100).is_none());
        assert!(c.get(&hash("b"), 0).is_none());
        for i in 0..MAX_ENTRIES + 5 {
            c.insert(hash(&i.to_string()), v(1000), 10);
        }
        assert!(c.len() <= MAX_ENTRIES);
    }
}
