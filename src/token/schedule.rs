//! Pure rules for token lifetime, expiry, refresh time and retry backoff. The clock and the random
//! draw are arguments, so every rule is tested at its boundaries without waiting.

use std::time::Duration;

/// Per-provider refresh settings (`providers.*.refresh` in the config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshPolicy {
    /// Fraction of the lifetime after which the token is refreshed.
    pub ratio: f64,
    /// Up to this fraction of the lifetime is subtracted at random from the refresh time, so that
    /// replicas do not all ask the IdP at once.
    pub jitter: f64,
    /// The token counts as expired this long before its real expiry (capped at 10% of the lifetime).
    pub expiry_skew: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Lifetime assumed when the response has no `expires_in` and the token is not a JWT with `exp`.
    pub default_lifetime: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            ratio: 0.8,
            jitter: 0.05,
            expiry_skew: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            default_lifetime: Duration::from_secs(300),
        }
    }
}

/// How long a token obtained at `now_unix` (time since the epoch) lives: `expires_in` if the
/// response had it, else the JWT `exp` claim, else the policy's default. An `exp` in the past gives
/// zero.
pub fn lifetime(
    expires_in: Option<Duration>,
    jwt_exp: Option<u64>,
    now_unix: Duration,
    default: Duration,
) -> Duration {
    if let Some(d) = expires_in {
        return d;
    }
    if let Some(exp) = jwt_exp {
        return Duration::from_secs(exp).saturating_sub(now_unix);
    }
    default
}

impl RefreshPolicy {
    /// The skew actually applied: `expiry_skew`, but never more than 10% of the lifetime, so that a
    /// short-lived token is still usable for most of its life.
    pub fn skew(&self, lifetime: Duration) -> Duration {
        self.expiry_skew.min(lifetime / 10)
    }

    /// How long after it was requested a token may be injected.
    pub fn usable_for(&self, lifetime: Duration) -> Duration {
        lifetime.checked_sub(self.skew(lifetime)).unwrap()
    }

    /// How long after it was requested a token is refreshed. `draw` is uniform in `[0, 1)`.
    /// Never later than the end of its usable time.
    pub fn refresh_after(&self, lifetime: Duration, draw: f64) -> Duration {
        let secs = lifetime.as_secs_f64();
        let at = secs * self.ratio - secs * self.jitter * draw.clamp(0.0, 1.0);
        Duration::from_secs_f64(at.max(0.0)).min(self.usable_for(lifetime))
    }

    /// Wait before retry number `failures` (1 for the first retry): exponential from
    /// `retry_initial`, capped at `retry_max`, with full jitter (`draw` uniform in `[0, 1)`).
    /// The result is at least a tenth of `retry_initial`, so no draw gives a hot loop.
    pub fn backoff(&self, failures: u32, draw: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(32);
        let ceiling = self
            .retry_initial
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.retry_max)
            .min(self.retry_max);
        let floor = self.retry_initial / 10;
        ceiling.mul_f64(draw.clamp(0.0, 1.0)).max(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn lifetime_prefers_expires_in_then_jwt_then_default() {
        let d = secs(300);
        let ms = Duration::from_millis;
        let cases = [
            (Some(secs(3600)), Some(2_000), secs(1_000), secs(3600)),
            (None, Some(2_000), secs(1_000), secs(1000)),
            // Part of a second already gone counts: never longer than the claim allows.
            (None, Some(2_000), ms(1_000_900), ms(999_100)),
            (None, Some(1_000), secs(1_000), Duration::ZERO),
            (None, Some(500), secs(1_000), Duration::ZERO),
            (None, None, secs(1_000), d),
        ];
        for (expires_in, exp, now, want) in cases {
            assert_eq!(
                lifetime(expires_in, exp, now, d),
                want,
                "{expires_in:?} {exp:?} {now:?}"
            );
        }
    }

    #[test]
    fn skew_is_capped_at_a_tenth_of_the_lifetime() {
        let p = RefreshPolicy::default();
        assert_eq!(p.skew(secs(3600)), secs(10));
        assert_eq!(p.skew(secs(100)), secs(10));
        assert_eq!(p.skew(secs(99)), Duration::from_millis(9900));
        assert_eq!(p.skew(secs(3)), Duration::from_millis(300));
        assert_eq!(p.usable_for(secs(3600)), secs(3590));
        assert_eq!(p.usable_for(secs(3)), Duration::from_millis(2700));
        assert_eq!(p.usable_for(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn refresh_at_eighty_percent_minus_jitter() {
        let p = RefreshPolicy::default();
        assert_eq!(p.refresh_after(secs(1000), 0.0), secs(800));
        // Largest jitter: 5% of the lifetime earlier.
        let latest_jitter = p.refresh_after(secs(1000), 0.999_999);
        assert!(
            latest_jitter >= secs(750) && latest_jitter < secs(751),
            "{latest_jitter:?}"
        );
        assert_eq!(p.refresh_after(secs(1000), 0.5), secs(775));
    }

    #[test]
    fn refresh_never_after_the_usable_time() {
        let p = RefreshPolicy {
            ratio: 1.0,
            jitter: 0.0,
            ..RefreshPolicy::default()
        };
        assert_eq!(p.refresh_after(secs(1000), 0.0), secs(990));
        assert_eq!(p.refresh_after(secs(2), 0.0), Duration::from_millis(1800));
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter() {
        let p = RefreshPolicy::default();
        let top = 0.999_999_999;
        let ceilings = [
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 8),
            (5, 16),
            (6, 32),
            (7, 60),
            (8, 60),
            (40, 60),
        ];
        for (failures, ceiling) in ceilings {
            let hi = p.backoff(failures, top);
            assert!(
                hi <= secs(ceiling)
                    && hi > secs(ceiling).checked_sub(Duration::from_millis(1)).unwrap(),
                "{failures}: {hi:?}"
            );
            let mid = p.backoff(failures, 0.5);
            assert_eq!(mid, secs(ceiling) / 2, "{failures}");
        }
    }

    #[test]
    fn backoff_has_a_floor() {
        let p = RefreshPolicy::default();
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.backoff(u32::MAX, 0.0), Duration::from_millis(100));
        assert_eq!(p.backoff(0, 0.5), Duration::from_millis(500));
    }
}
