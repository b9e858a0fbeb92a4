//! The token cache: one [`TokenSlot`] per token key, holding the current token with its header
//! values already rendered, read by the proxy with one lock-free load.

use std::sync::Mutex;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use std::sync::Arc;
use tokio::time::Instant;

use crate::config::HeaderFormat;
use crate::secret::Secret;
use crate::token::client::{ErrorClass, FetchError};
use crate::token::TokenKey;

/// A token ready to inject.
pub struct CachedToken {
    /// Header values for the slot's formats, index for index, rendered when the token was stored.
    values: Vec<HeaderValue>,
    raw: Secret,
    /// Not injected from this instant on (expiry minus the skew).
    pub usable_until: Instant,
    pub fetched_at: SystemTime,
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("fetched_at", &self.fetched_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What `/tokens` and `/readyz` show about a slot.
#[derive(Debug, Clone, Default)]
pub struct SlotStatus {
    pub next_refresh_at: Option<SystemTime>,
    pub consecutive_failures: u32,
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone)]
pub struct LastError {
    pub class: ErrorClass,
    pub message: String,
    pub idp_error: Option<String>,
    pub idp_description: Option<String>,
    pub at: SystemTime,
}

impl LastError {
    pub fn from_fetch(e: &FetchError, at: SystemTime) -> Self {
        LastError {
            class: e.class,
            message: e.message.clone(),
            idp_error: e.idp_error.clone(),
            idp_description: e.idp_description.clone(),
            at,
        }
    }
}

/// The cached token for one key.
pub struct TokenSlot {
    pub key: TokenKey,
    current: ArcSwapOption<CachedToken>,
    /// Append-only, so that an index handed to a route stays valid for the slot's life.
    formats: Mutex<Vec<HeaderFormat>>,
    status: Mutex<SlotStatus>,
    stored: tokio::sync::Notify,
}

impl TokenSlot {
    pub fn new(key: TokenKey) -> Self {
        TokenSlot {
            key,
            current: ArcSwapOption::empty(),
            formats: Mutex::new(Vec::new()),
            status: Mutex::new(SlotStatus::default()),
            stored: tokio::sync::Notify::new(),
        }
    }

    /// The index of `format` in this slot, registering it (and rendering the current token for it)
    /// if it is new.
    pub fn format_index(&self, format: &HeaderFormat) -> usize {
        let mut formats = lock(&self.formats);
        if let Some(i) = formats.iter().position(|f| f == format) {
            return i;
        }
        formats.push(format.clone());
        let index = formats.len() - 1;
        if let Some(cur) = self.current.load_full() {
            let token = render(
                &formats,
                &cur.raw,
                cur.usable_until,
                cur.fetched_at,
                cur.expires_at,
            );
            self.current.store(token.map(Arc::new));
        }
        index
    }

    /// Stores a newly fetched token. Returns false if the token cannot be put in a header.
    pub fn store(
        &self,
        raw: Secret,
        usable_until: Instant,
        fetched_at: SystemTime,
        expires_at: SystemTime,
    ) -> bool {
        let formats = lock(&self.formats);
        match render(&formats, &raw, usable_until, fetched_at, expires_at) {
            Some(token) => {
                self.current.store(Some(Arc::new(token)));
                self.stored.notify_waiters();
                true
            }
            None => false,
        }
    }

    /// The header value to inject for format `index`, or `None` when there is no token usable at
    /// `now`. This is the request path: one lock-free load, no allocation.
    pub fn header_value(&self, index: usize, now: Instant) -> Option<HeaderValue> {
        let guard = self.current.load();
        let token = guard.as_ref()?;
        if now >= token.usable_until {
            return None;
        }
        match token.values.get(index) {
            Some(v) => Some(v.clone()),
            // A format registered while this token was being stored: render it now.
            None => lock(&self.formats).get(index)?.render(&token.raw).ok(),
        }
    }

    /// The current token's metadata, whether or not it is still usable.
    pub fn current(&self) -> Option<Arc<CachedToken>> {
        self.current.load_full()
    }

    /// True when a token is usable at `now`.
    pub fn is_usable(&self, now: Instant) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|t| now < t.usable_until)
    }

    /// Waits until a token is usable, for at most `timeout`; returns whether one is.
    pub async fn wait_usable(&self, timeout: std::time::Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let stored = self.stored.notified();
            if self.is_usable(Instant::now()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, stored).await.is_err() {
                return self.is_usable(Instant::now());
            }
        }
    }

    pub fn status(&self) -> SlotStatus {
        lock(&self.status).clone()
    }

    pub fn update_status(&self, f: impl FnOnce(&mut SlotStatus)) {
        f(&mut lock(&self.status));
    }
}

fn render(
    formats: &[HeaderFormat],
    raw: &Secret,
    usable_until: Instant,
    fetched_at: SystemTime,
    expires_at: SystemTime,
) -> Option<CachedToken> {
    let values = formats
        .iter()
        .map(|f| f.render(raw).ok())
        .collect::<Option<Vec<_>>>()?;
    Some(CachedToken {
        values,
        raw: raw.clone(),
        usable_until,
        fetched_at,
        expires_at,
    })
}

/// Locks a mutex, recovering the data if a thread panicked while holding it: the data here is
/// always left consistent, so a poisoned lock must not take the proxy down.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key() -> TokenKey {
        TokenKey {
            provider: "p".into(),
            audience: None,
            scope: None,
            resource: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn serves_until_usable_until_and_not_after() {
        let slot = TokenSlot::new(key());
        let i = slot.format_index(&HeaderFormat::parse("Bearer {token}").unwrap());
        let now = Instant::now();
        assert!(slot.header_value(i, now).is_none(), "no token yet");
        let until = now + Duration::from_secs(10);
        assert!(slot.store(
            Secret::new("abc"),
            until,
            SystemTime::now(),
            SystemTime::now()
        ));
        assert_eq!(slot.header_value(i, now).unwrap(), "Bearer abc");
        assert!(slot
            .header_value(i, until - Duration::from_nanos(1))
            .is_some());
        assert!(
            slot.header_value(i, until).is_none(),
            "expired at usable_until"
        );
        assert!(!slot.is_usable(until));
    }

    #[tokio::test(start_paused = true)]
    async fn formats_added_later_are_rendered_for_the_current_token() {
        let slot = TokenSlot::new(key());
        let a = slot.format_index(&HeaderFormat::parse("Bearer {token}").unwrap());
        let until = Instant::now() + Duration::from_secs(10);
        slot.store(
            Secret::new("abc"),
            until,
            SystemTime::now(),
            SystemTime::now(),
        );
        let b = slot.format_index(&HeaderFormat::parse("Token {token};x").unwrap());
        assert_ne!(a, b);
        assert_eq!(
            slot.format_index(&HeaderFormat::parse("Bearer {token}").unwrap()),
            a
        );
        assert_eq!(slot.header_value(b, Instant::now()).unwrap(), "Token abc;x");
        assert!(slot.header_value(b, Instant::now()).unwrap().is_sensitive());
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let slot = TokenSlot::new(key());
        slot.format_index(&HeaderFormat::parse("Bearer {token}").unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            slot.store(
                Secret::new("sekrit-token"),
                Instant::now(),
                SystemTime::now(),
                SystemTime::now(),
            );
        });
        let dbg = format!("{:?}", slot.current().unwrap());
        assert!(!dbg.contains("sekrit-token"), "{dbg}");
    }
}
