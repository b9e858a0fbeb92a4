//! The refresher of a token shared through Redis: takes a usable token from Redis when there is
//! one, otherwise lets the lock elect the one replica that asks the IdP and writes the result for
//! the others; whenever Redis fails, it fetches from the IdP itself, exactly as without the cache.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics;
use crate::shared_cache::client::{ttl, Found, Lock, SharedCache};
use crate::shared_cache::key::{self, RedisKeys};
use crate::shared_cache::plan::{self, Held};
use crate::shared_cache::seal::SharedToken;
use crate::token::cache::{LastError, TokenSlot};
use crate::token::client::{ErrorClass, FetchError};
use crate::token::refresher::{self, Source};

/// The token this replica serves, with the bytes Redis holds it as (when it is there), so that a
/// rejection deletes exactly that value.
struct Current {
    token: SharedToken,
    sealed: Option<Vec<u8>>,
}

/// What one round ends with.
enum Obtained {
    /// Another replica's token from Redis.
    Shared(Found),
    /// Ask the IdP, holding the fleet's lock or (Redis failing, or the wait too long) not.
    Fetch(Option<Lock>),
}

struct Refresher {
    slot: Arc<TokenSlot>,
    cache: Arc<SharedCache>,
    current: Option<Current>,
    failures: u32,
    last_logged: Option<(ErrorClass, Option<String>)>,
}

/// Runs until `cancel` fires; [`TokenSlot::request_refresh`] makes it start a round at once.
pub async fn run(
    slot: Arc<TokenSlot>,
    source: Arc<ArcSwap<Source>>,
    cache: Arc<SharedCache>,
    cancel: CancellationToken,
) {
    let mut r = Refresher {
        slot,
        cache,
        current: None,
        failures: 0,
        last_logged: None,
    };
    loop {
        let src = source.load_full();
        let keys = key::derive(&r.cache.config.key_prefix, &src.provider, &r.slot.key);
        let next = tokio::select! {
            n = r.round(&src, &keys) => n,
            _ = cancel.cancelled() => return,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = r.slot.refresh_requested() => debug!(token = %r.slot.key, "refresh requested"),
            _ = cancel.cancelled() => return,
        }
    }
}

fn instant_at(t: SystemTime) -> Instant {
    Instant::now() + t.duration_since(SystemTime::now()).unwrap_or_default()
}

impl Refresher {
    /// One round: a usable token ends up in the slot (or the failure is recorded). Returns when
    /// the next round is due.
    async fn round(&mut self, src: &Source, keys: &RedisKeys) -> Instant {
        let revoked = self.slot.is_revoked();
        if revoked {
            // Out of Redis only if Redis still holds the rejected token: a newer one stays.
            if let Some(sealed) = self.current.as_ref().and_then(|c| c.sealed.as_ref()) {
                if let Ok(true) = self.cache.delete_if(keys, sealed).await {
                    debug!(token = %self.slot.key, "rejected token removed from the shared cache");
                }
            }
        }
        let (give_up, poll) = self.waits(src, revoked);
        // Redis gets until the fallback point in all, however slowly it answers: past it this
        // replica asks the IdP itself, so that its token never runs out waiting for Redis.
        let obtained = match tokio::time::timeout_at(give_up, self.obtain(src, keys, revoked, poll))
            .await
        {
            Ok(o) => o,
            Err(_) => {
                info!(token = %self.slot.key, "no new token from the shared cache in time; fetching one from the IdP");
                Obtained::Fetch(None)
            }
        };
        match obtained {
            Obtained::Shared(found) => match self.adopt(src, found) {
                Ok(next) => next,
                Err(e) => self.failed(src, e),
            },
            Obtained::Fetch(lock) => self.fetch(src, keys, lock).await,
        }
    }

    /// How long this round may wait for Redis and another replica, and how often it looks.
    fn waits(&self, src: &Source, revoked: bool) -> (Instant, Duration) {
        let policy = &src.provider.refresh;
        let usable_now = !revoked && self.slot.is_usable(Instant::now());
        match self.current.as_ref() {
            Some(c) if usable_now => {
                let p = plan::plan(&c.token, policy, 0.0);
                let life = c
                    .token
                    .expires_at
                    .duration_since(c.token.fetched_at)
                    .unwrap_or_default();
                (instant_at(p.fallback_at), plan::poll_interval(life))
            }
            // Nothing to serve meanwhile: wait at most as long as a lock can be held.
            _ => (
                Instant::now() + self.cache.config.lock_ttl,
                plan::poll_interval(policy.default_lifetime).min(Duration::from_millis(100)),
            ),
        }
    }

    /// Looks in Redis, then takes the lock or waits for the replica that holds it, looking again
    /// every `poll` until the caller's deadline.
    async fn obtain(
        &self,
        src: &Source,
        keys: &RedisKeys,
        revoked: bool,
        poll: Duration,
    ) -> Obtained {
        let policy = &src.provider.refresh;
        let held = self.current.as_ref().map(|c| Held {
            token: &c.token.token,
            expires_at: c.token.expires_at,
            revoked,
        });
        let takes =
            |f: &Found| plan::takes_over(&f.token, held.as_ref(), SystemTime::now(), policy);
        loop {
            match self.cache.get(keys).await {
                Ok(Some(f)) if takes(&f) => return Obtained::Shared(f),
                Ok(_) => {}
                Err(_) => return Obtained::Fetch(None),
            }
            match self.cache.lock(keys).await {
                Ok(Some(lock)) => {
                    // Another replica may have written and let go between the look and the lock.
                    if let Ok(Some(f)) = self.cache.get(keys).await {
                        if takes(&f) {
                            let _ = self.cache.unlock(keys, lock).await;
                            return Obtained::Shared(f);
                        }
                    }
                    return Obtained::Fetch(Some(lock));
                }
                // Another replica is fetching: look again shortly (the caller's deadline ends
                // the wait).
                Ok(None) => tokio::time::sleep(poll).await,
                Err(_) => return Obtained::Fetch(None),
            }
        }
    }

    /// Serves a token another replica wrote.
    fn adopt(&mut self, src: &Source, found: Found) -> Result<Instant, FetchError> {
        let policy = &src.provider.refresh;
        let p = plan::plan(&found.token, policy, fastrand::f64());
        let t = &found.token;
        if !self.slot.store(
            t.token.clone(),
            instant_at(p.usable_until),
            t.fetched_at,
            t.expires_at,
        ) {
            return Err(FetchError::new(
                ErrorClass::BadResponse,
                "the token cannot be put in the configured header format",
            ));
        }
        metrics::token_stored(&self.slot.key, t.fetched_at, t.expires_at);
        self.succeeded(p.refresh_at, "shared_cache");
        debug!(
            provider = %self.slot.key.provider,
            audience = self.slot.key.audience.as_deref().unwrap_or(""),
            next_refresh_in_s = p.refresh_at.duration_since(SystemTime::now()).unwrap_or_default().as_secs_f64(),
            "token taken from the shared cache"
        );
        self.current = Some(Current {
            token: found.token,
            sealed: Some(found.sealed),
        });
        Ok(instant_at(p.refresh_at))
    }

    /// Asks the IdP; on success serves the token, then writes it to Redis for the fleet.
    async fn fetch(&mut self, src: &Source, keys: &RedisKeys, lock: Option<Lock>) -> Instant {
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let result = refresher::fetch(src, &self.slot).await;
        let elapsed = started.elapsed();
        let stored = result.and_then(|resp| {
            let token = resp.access_token.clone();
            refresher::store(&self.slot, &src.provider, resp, started, started_wall)
                .map(|refresh_in| (token, refresh_in))
        });
        let (token, refresh_in) = match stored {
            Ok(v) => v,
            Err(e) => {
                metrics::token_fetched(&self.slot.key, elapsed, Some(&e));
                let next = self.failed(src, e);
                if let Some(lock) = lock {
                    // The fleet waits as long as this replica would before asking again (at
                    // most lock_ttl).
                    let hold = next
                        .saturating_duration_since(Instant::now())
                        .min(self.cache.config.lock_ttl);
                    let _ = self.cache.hold(keys, lock, hold).await;
                }
                return next;
            }
        };
        metrics::token_fetched(&self.slot.key, elapsed, None);
        let Some(cur) = self.slot.current() else {
            return Instant::now();
        };
        let shared = SharedToken {
            token,
            fetched_at: cur.fetched_at,
            expires_at: cur.expires_at,
        };
        let refresh_at = started_wall + refresh_in;
        self.succeeded(refresh_at, "idp");
        info!(
            provider = %self.slot.key.provider,
            audience = self.slot.key.audience.as_deref().unwrap_or(""),
            duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            next_refresh_in_s = refresh_in.as_secs_f64(),
            for_the_fleet = lock.is_some(),
            "token fetched"
        );
        let usable_until =
            shared.fetched_at + src.provider.refresh.usable_for(refresh_life(&shared));
        let sealed = match ttl(usable_until, SystemTime::now()) {
            Some(ttl) => self.cache.set(keys, &shared, ttl).await.ok(),
            None => None,
        };
        if let Some(lock) = lock {
            let _ = self.cache.unlock(keys, lock).await;
        }
        self.current = Some(Current {
            token: shared,
            sealed,
        });
        started + refresh_in
    }

    fn succeeded(&mut self, next_refresh: SystemTime, source: &'static str) {
        self.failures = 0;
        if self.last_logged.take().is_some() {
            info!(token = %self.slot.key, "token endpoint recovered");
        }
        self.slot.update_status(|s| {
            s.consecutive_failures = 0;
            s.next_refresh_at = Some(next_refresh);
            s.source = Some(source);
        });
    }

    /// Records a failed round like the local refresher does; returns when to try again.
    fn failed(&mut self, src: &Source, e: FetchError) -> Instant {
        let policy = src.provider.refresh;
        self.failures = self.failures.saturating_add(1);
        let mut wait = policy.backoff(self.failures, fastrand::f64());
        if let Some(ra) = e.retry_after {
            wait = wait.max(ra.min(policy.retry_max));
        }
        let now_wall = SystemTime::now();
        let failures = self.failures;
        self.slot.update_status(|s| {
            s.consecutive_failures = failures;
            s.next_refresh_at = Some(now_wall + wait);
            s.last_error = Some(LastError::from_fetch(&e, now_wall));
        });
        let signature = (e.class, e.idp_error.clone());
        if self.last_logged.as_ref() != Some(&signature) {
            warn!(
                token = %self.slot.key,
                error = %e,
                failures,
                retry_in_s = wait.as_secs_f64(),
                serving_cached_token = self.slot.is_usable(Instant::now()),
                "token fetch failed"
            );
            self.last_logged = Some(signature);
        } else {
            debug!(token = %self.slot.key, error = %e, failures, retry_in_s = wait.as_secs_f64(), "token fetch failed again");
        }
        Instant::now() + wait
    }
}

fn refresh_life(t: &SharedToken) -> Duration {
    t.expires_at
        .duration_since(t.fetched_at)
        .unwrap_or_default()
}
