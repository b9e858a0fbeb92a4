//! The token cache: one [`TokenSlot`] per token key, holding the current token with its header
//! values already rendered, read by the proxy with one lock-free load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::HeaderFormat;
use crate::secret::Secret;
use crate::token::client::{ErrorClass, FetchError, QuotaBucket};
use crate::token::TokenKey;

/// A token ready to inject.
#[derive(Clone)]
pub struct CachedToken {
    /// Header values for the slot's formats, index for index, rendered when the token was stored.
    values: Vec<HeaderValue>,
    raw: Secret,
    /// Not injected from this instant on (expiry minus the skew).
    pub usable_until: Instant,
    pub fetched_at: SystemTime,
    pub expires_at: SystemTime,
    /// Counts the tokens stored in this slot; tells a request which token it carried.
    pub generation: u64,
    /// Set when the upstream rejected this token: it is no longer injected.
    pub revoked: bool,
}

/// The header value a request carries, and which token it came from.
pub struct Injection {
    pub value: HeaderValue,
    pub generation: u64,
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
    /// The IdP's quota as of the last answer that carried it (Auth0-Client-Quota-Limit).
    pub quota: Vec<QuotaBucket>,
    /// How the client authenticated at the last fetch.
    pub auth_method: Option<&'static str>,
    /// The token endpoint of the last fetch (with discovery, the one the document named).
    pub token_endpoint: Option<String>,
    /// Where the current token came from: `idp` or `shared_cache`.
    pub source: Option<&'static str>,
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
    /// Fires whenever a token is stored.
    stored: Notify,
    generations: AtomicU64,
    /// Wakes the refresher; `refresh_requested` says it should fetch now.
    wake: Notify,
    refresh_requested: AtomicBool,
}

impl TokenSlot {
    pub fn new(key: TokenKey) -> Self {
        TokenSlot {
            key,
            current: ArcSwapOption::empty(),
            formats: Mutex::new(Vec::new()),
            status: Mutex::new(SlotStatus::default()),
            stored: Notify::new(),
            generations: AtomicU64::new(0),
            wake: Notify::new(),
            refresh_requested: AtomicBool::new(false),
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
            if let Some(values) = render(&formats, &cur.raw) {
                let updated = CachedToken {
                    values,
                    ..(*cur).clone()
                };
                self.current.store(Some(Arc::new(updated)));
            }
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
        match render(&formats, &raw) {
            Some(values) => {
                let token = CachedToken {
                    values,
                    raw,
                    usable_until,
                    fetched_at,
                    expires_at,
                    generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
                    revoked: false,
                };
                self.current.store(Some(Arc::new(token)));
                self.stored.notify_waiters();
                true
            }
            None => false,
        }
    }

    /// The header value to inject for format `index`, or `None` when there is no token usable at
    /// `now`. This is the request path: one lock-free load, no allocation.
    pub fn header_value(&self, index: usize, now: Instant) -> Option<Injection> {
        let guard = self.current.load();
        let token = guard.as_ref()?;
        if now >= token.usable_until || token.revoked {
            return None;
        }
        let value = match token.values.get(index) {
            Some(v) => v.clone(),
            // A format registered while this token was being stored: render it now.
            None => lock(&self.formats).get(index)?.render(&token.raw).ok()?,
        };
        Some(Injection {
            value,
            generation: token.generation,
        })
    }

    /// The upstream rejected token `generation`: stop injecting it and fetch a new one, but only
    /// if it is still the current token (a newer one from another request is kept). Returns
    /// whether this call revoked it; concurrent callers for the same token cause one fetch.
    pub fn invalidate(&self, generation: u64) -> bool {
        let cur = self.current.load_full();
        let Some(token) = cur.as_ref() else {
            return false;
        };
        if token.generation != generation || token.revoked {
            return false;
        }
        let revoked = Arc::new(CachedToken {
            revoked: true,
            ..(**token).clone()
        });
        let prev = self.current.compare_and_swap(&cur, Some(revoked));
        let swapped = match (&*prev, &cur) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if swapped {
            self.request_refresh();
        }
        swapped
    }

    /// True while the current token was revoked and its replacement is being fetched.
    pub fn is_revoked(&self) -> bool {
        self.current.load().as_ref().is_some_and(|t| t.revoked)
    }

    /// Waits for a usable token newer than `generation`, for at most `timeout`.
    pub async fn wait_newer(
        &self,
        generation: u64,
        index: usize,
        timeout: Duration,
    ) -> Option<Injection> {
        let deadline = Instant::now() + timeout;
        loop {
            let stored = self.stored.notified();
            if let Some(i) = self.header_value(index, Instant::now()) {
                if i.generation > generation {
                    return Some(i);
                }
            }
            tokio::time::timeout_at(deadline, stored).await.ok()?;
        }
    }

    /// Asks the refresher to fetch now.
    pub fn request_refresh(&self) {
        self.refresh_requested.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// For the refresher: waits until a fetch is requested.
    pub async fn refresh_requested(&self) {
        loop {
            self.wake.notified().await;
            if self.refresh_requested.swap(false, Ordering::AcqRel) {
                return;
            }
        }
    }

    /// Why there is no token, as the `reason` of a 503: the last fetch error's class while
    /// fetches fail, else that the token was revoked, expired while its refresh is still under
    /// way, or was never fetched yet.
    pub fn unavailable_reason(&self) -> &'static str {
        let status = lock(&self.status);
        match (&status.last_error, status.consecutive_failures) {
            (Some(e), n) if n > 0 => e.class.as_str(),
            _ if self.is_revoked() => "token_revoked",
            _ if self.current.load().is_some() => "token_expired",
            _ => "token_pending",
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
            .is_some_and(|t| now < t.usable_until && !t.revoked)
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

fn render(formats: &[HeaderFormat], raw: &Secret) -> Option<Vec<HeaderValue>> {
    formats.iter().map(|f| f.render(raw).ok()).collect()
}

/// Locks a mutex, recovering the data if a thread panicked while holding it: the data here is
/// always left consistent, so a poisoned lock must not take the proxy down.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        assert_eq!(slot.header_value(i, now).unwrap().value, "Bearer abc");
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
        assert_eq!(
            slot.header_value(b, Instant::now()).unwrap().value,
            "Token abc;x"
        );
        assert!(slot
            .header_value(b, Instant::now())
            .unwrap()
            .value
            .is_sensitive());
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_revokes_only_the_token_the_request_carried() {
        let slot = TokenSlot::new(key());
        let i = slot.format_index(&HeaderFormat::parse("Bearer {token}").unwrap());
        let until = Instant::now() + Duration::from_secs(60);
        slot.store(
            Secret::new("one"),
            until,
            SystemTime::now(),
            SystemTime::now(),
        );
        let first = slot.header_value(i, Instant::now()).unwrap().generation;
        slot.store(
            Secret::new("two"),
            until,
            SystemTime::now(),
            SystemTime::now(),
        );
        assert!(!slot.invalidate(first), "a newer token is not thrown away");
        assert_eq!(
            slot.header_value(i, Instant::now()).unwrap().value,
            "Bearer two"
        );
        let second = slot.header_value(i, Instant::now()).unwrap().generation;
        assert!(slot.invalidate(second));
        assert!(
            !slot.invalidate(second),
            "a second 401 for the same token changes nothing"
        );
        assert!(
            slot.header_value(i, Instant::now()).is_none(),
            "a revoked token is not injected"
        );
        assert!(slot.is_revoked());
        // The refresher is asked once.
        tokio::time::timeout(Duration::from_millis(10), slot.refresh_requested())
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(10), slot.refresh_requested())
                .await
                .is_err()
        );
        // A waiting request gets the next token.
        let waiter = slot.wait_newer(second, i, Duration::from_secs(5));
        let store = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            slot.store(
                Secret::new("three"),
                until,
                SystemTime::now(),
                SystemTime::now(),
            );
        };
        let (got, ()) = tokio::join!(waiter, store);
        assert_eq!(got.unwrap().value, "Bearer three");
        assert!(slot
            .wait_newer(second + 1, i, Duration::from_secs(1))
            .await
            .is_none());
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
