//! Pure rules of the shared refresh: when a shared token is refreshed, when a replica stops
//! waiting for another one and fetches its own, how often it looks, and when a token in Redis
//! replaces the one a replica holds. Times are arguments, so the rules are tested without waiting.

use std::time::{Duration, SystemTime};

use crate::secret::Secret;
use crate::shared_cache::seal::SharedToken;
use crate::token::schedule::RefreshPolicy;

/// The times every replica derives from a shared token's `fetched_at`/`expires_at`, so that they
/// agree whichever fetched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Not injected from here on (expiry minus the skew); also the end of its Redis TTL.
    pub usable_until: SystemTime,
    /// When this replica tries to refresh: the shared refresh time minus its own jitter draw.
    pub refresh_at: SystemTime,
    /// A replica still waiting for another one's new token at this point fetches its own:
    /// halfway between the refresh time without jitter and the end of the usable time.
    pub fallback_at: SystemTime,
}

fn lifetime(t: &SharedToken) -> Duration {
    t.expires_at
        .duration_since(t.fetched_at)
        .unwrap_or_default()
}

/// The plan for `token` with this replica's jitter `draw` (uniform in `[0, 1)`).
pub fn plan(token: &SharedToken, policy: &RefreshPolicy, draw: f64) -> Plan {
    let life = lifetime(token);
    let usable_for = policy.usable_for(life);
    let nominal = policy.refresh_after(life, 0.0);
    Plan {
        usable_until: token.fetched_at + usable_for,
        refresh_at: token.fetched_at + policy.refresh_after(life, draw),
        fallback_at: token.fetched_at + nominal + (usable_for.saturating_sub(nominal)) / 2,
    }
}

/// How long a replica waits between two looks at Redis while another one holds the fetch lock:
/// a hundredth of the lifetime, between 20 ms and 500 ms.
pub fn poll_interval(lifetime: Duration) -> Duration {
    (lifetime / 100).clamp(Duration::from_millis(20), Duration::from_millis(500))
}

/// The token a replica holds, as far as the shared refresh cares.
pub struct Held<'a> {
    pub token: &'a Secret,
    pub expires_at: SystemTime,
    /// The upstream rejected it.
    pub revoked: bool,
}

/// Whether `found` in Redis replaces what the replica holds at `now`: it must be usable, and be
/// another token than the held one; a held token that was not rejected is replaced only by one
/// that lives longer.
pub fn takes_over(
    found: &SharedToken,
    held: Option<&Held<'_>>,
    now: SystemTime,
    policy: &RefreshPolicy,
) -> bool {
    if now >= plan(found, policy, 0.0).usable_until {
        return false;
    }
    match held {
        None => true,
        Some(h) if *h.token == found.token => false,
        Some(h) if h.revoked => true,
        Some(h) => found.expires_at > h.expires_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn token(name: &str, fetched: u64, life: u64) -> SharedToken {
        SharedToken {
            token: Secret::new(name),
            fetched_at: UNIX_EPOCH + secs(fetched),
            expires_at: UNIX_EPOCH + secs(fetched + life),
        }
    }

    #[test]
    fn replicas_agree_on_the_times_of_a_shared_token() {
        let p = RefreshPolicy::default();
        let t = token("a", 1_000, 1_000);
        let at = |s: u64| UNIX_EPOCH + secs(s);
        assert_eq!(
            plan(&t, &p, 0.0),
            Plan {
                usable_until: at(1_990),
                refresh_at: at(1_800),
                fallback_at: at(1_895),
            }
        );
        // The draw moves only this replica's first try, never the shared times.
        let late = plan(&t, &p, 0.5);
        assert_eq!(late.refresh_at, at(1_775));
        assert_eq!(late.usable_until, at(1_990));
        assert_eq!(late.fallback_at, at(1_895));
        // A short token: skew 10% of the lifetime.
        let short = plan(&token("b", 0, 10), &p, 0.0);
        assert_eq!(short.usable_until, at(9));
        assert_eq!(short.refresh_at, at(8));
        assert_eq!(short.fallback_at, UNIX_EPOCH + Duration::from_millis(8_500));
        // ratio 1: refresh at the end of the usable time, and the fallback there too.
        let eager = RefreshPolicy {
            ratio: 1.0,
            jitter: 0.0,
            ..p
        };
        let e = plan(&t, &eager, 0.3);
        assert_eq!((e.refresh_at, e.fallback_at), (at(1_990), at(1_990)));
    }

    #[test]
    fn poll_interval_is_a_hundredth_of_the_lifetime_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(poll_interval(secs(1)), ms(20));
        assert_eq!(poll_interval(secs(3)), ms(30));
        assert_eq!(poll_interval(secs(30)), ms(300));
        assert_eq!(poll_interval(secs(3600)), ms(500));
        assert_eq!(poll_interval(Duration::ZERO), ms(20));
    }

    #[test]
    fn what_replaces_the_held_token() {
        let p = RefreshPolicy::default();
        let now = UNIX_EPOCH + secs(1_500);
        let newer = token("new", 1_400, 1_000);
        let old_secret = Secret::new("old");
        let held = |revoked| Held {
            token: &old_secret,
            expires_at: UNIX_EPOCH + secs(2_000),
            revoked,
        };
        assert!(takes_over(&newer, None, now, &p), "nothing held");
        assert!(takes_over(&newer, Some(&held(false)), now, &p));
        assert!(takes_over(&newer, Some(&held(true)), now, &p));
        let same = token("old", 1_000, 1_000);
        assert!(!takes_over(&same, Some(&held(false)), now, &p));
        assert!(
            !takes_over(&same, Some(&held(true)), now, &p),
            "the rejected token is never taken again"
        );
        let shorter = token("other", 900, 1_000);
        assert!(!takes_over(&shorter, Some(&held(false)), now, &p));
        assert!(takes_over(&shorter, Some(&held(true)), now, &p));
        // Past its usable time a token is no use, whatever is held.
        let stale = token("stale", 0, 1_000);
        assert!(!takes_over(&stale, None, now, &p));
        let edge = token("edge", 510, 1_000); // usable until 1_500
        assert!(!takes_over(&edge, None, now, &p));
        let edge = token("edge", 511, 1_000);
        assert!(takes_over(&edge, None, now, &p));
    }
}
