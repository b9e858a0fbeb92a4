//! The background refresher: one task per token key that fetches the token, stores it, sleeps
//! until the refresh time, and on failure keeps the last good token and retries with backoff.
//! It returns only when cancelled.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Provider;
use crate::metrics;
use crate::token::cache::{LastError, TokenSlot};
use crate::token::client::{ErrorClass, FetchError, TokenClient, TokenResponse};
use crate::token::schedule;

/// Where a slot's tokens come from; replaced in place on reload when only the secret or the
/// timeouts changed.
pub struct Source {
    pub provider: Arc<Provider>,
    pub client: TokenClient,
}

/// Runs until `cancel` fires. [`TokenSlot::request_refresh`] makes it fetch at once (a revoked
/// token, a changed secret file). It is the only fetcher of its key, so there is never more than
/// one token request in flight per key.
pub async fn run(slot: Arc<TokenSlot>, source: Arc<ArcSwap<Source>>, cancel: CancellationToken) {
    let mut failures: u32 = 0;
    let mut last_logged: Option<(ErrorClass, Option<String>)> = None;
    loop {
        let src = source.load_full();
        let policy = src.provider.refresh;
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let result = tokio::select! {
            r = fetch(&src, &slot) => r,
            _ = cancel.cancelled() => return,
        };
        let elapsed = started.elapsed();
        let outcome =
            result.and_then(|resp| store(&slot, &src.provider, resp, started, started_wall));
        let next = match outcome {
            Ok(refresh_in) => {
                metrics::token_fetched(&slot.key, elapsed, None);
                failures = 0;
                if last_logged.take().is_some() {
                    info!(token = %slot.key, "token endpoint recovered");
                }
                let next_wall = started_wall + refresh_in;
                slot.update_status(|s| {
                    s.consecutive_failures = 0;
                    s.next_refresh_at = Some(next_wall);
                    s.source = Some("idp");
                });
                info!(
                    provider = %slot.key.provider,
                    auth_method = src.provider.auth_method.as_str(),
                    audience = slot.key.audience.as_deref().unwrap_or(""),
                    duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                    next_refresh_in_s = refresh_in.as_secs_f64(),
                    "token fetched"
                );
                started + refresh_in
            }
            Err(e) => {
                metrics::token_fetched(&slot.key, elapsed, Some(&e));
                failures = failures.saturating_add(1);
                let mut wait = policy.backoff(failures, fastrand::f64());
                if let Some(ra) = e.retry_after {
                    wait = wait.max(ra.min(policy.retry_max));
                }
                let now_wall = SystemTime::now();
                slot.update_status(|s| {
                    s.consecutive_failures = failures;
                    s.next_refresh_at = Some(now_wall + wait);
                    s.last_error = Some(LastError::from_fetch(&e, now_wall));
                });
                let signature = (e.class, e.idp_error.clone());
                let usable = slot.is_usable(Instant::now());
                // One warning per distinct failure, not one per retry.
                if last_logged.as_ref() != Some(&signature) {
                    warn!(
                        token = %slot.key,
                        error = %e,
                        failures,
                        retry_in_s = wait.as_secs_f64(),
                        serving_cached_token = usable,
                        "token fetch failed"
                    );
                    last_logged = Some(signature);
                } else {
                    debug!(token = %slot.key, error = %e, failures, retry_in_s = wait.as_secs_f64(), "token fetch failed again");
                }
                Instant::now() + wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = slot.refresh_requested() => debug!(token = %slot.key, "refresh requested"),
            _ = cancel.cancelled() => return,
        }
    }
}

pub(crate) async fn fetch(src: &Source, slot: &TokenSlot) -> Result<TokenResponse, FetchError> {
    // The credential is read (or signed) for every fetch, so rotated files are used at once.
    let fetched = src.client.fetch(&src.provider, &slot.key).await;
    if !fetched.quota.is_empty() {
        metrics::idp_quota(&src.provider.name, &fetched.quota);
    }
    slot.update_status(|s| {
        if !fetched.quota.is_empty() {
            s.quota = fetched.quota;
        }
        s.auth_method = Some(src.provider.auth_method.as_str());
        if let Some(e) = fetched.endpoint {
            s.token_endpoint = Some(e.to_string());
        }
    });
    fetched.result
}

/// Stores a fetched token and returns how long after `started` to refresh it.
pub(crate) fn store(
    slot: &TokenSlot,
    provider: &Provider,
    resp: TokenResponse,
    started: Instant,
    started_wall: SystemTime,
) -> Result<Duration, FetchError> {
    let policy = provider.refresh;
    let now_unix = started_wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let lifetime = schedule::lifetime(
        resp.expires_in,
        resp.jwt_exp,
        now_unix,
        policy.default_lifetime,
    );
    if lifetime.is_zero() {
        return Err(FetchError::new(
            ErrorClass::BadResponse,
            "the token is already expired",
        ));
    }
    let usable_until = started + policy.usable_for(lifetime);
    let expires_at = started_wall + lifetime;
    if !slot.store(resp.access_token, usable_until, started_wall, expires_at) {
        return Err(FetchError::new(
            ErrorClass::BadResponse,
            "the token cannot be put in the configured header format",
        ));
    }
    metrics::token_stored(&slot.key, started_wall, expires_at);
    Ok(policy.refresh_after(lifetime, fastrand::f64()))
}
